#!/bin/sh
test_description='git model clone hf:ORG/NAME, fetch, pull and push against the test hub server'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"
. "$GM_SRC_DIR/t/lib-hub.sh"

MODELS="$HOME/.local/share/git-model/models"
SRC="$MODELS/src"

# publish ORG/NAME: the local model "src" (all branches and its LFS objects)
# as a repository of the hub, as if uploaded there.
publish () {
	hub_repo "$1" &&
	git -C "$HUB_ROOT/$1.git" config http.receivepack true &&
	git -C "$SRC" push -q "$HUB_ROOT/$1.git" "refs/heads/*:refs/heads/*" &&
	mkdir -p "$HUB_ROOT/$1.git/lfs" &&
	cp -R "$SRC/.git/lfs/objects" "$HUB_ROOT/$1.git/lfs/"
}

oid_of () { # REPO REV:PATH
	git -C "$1" cat-file blob "$2" | sed -n "s/^oid sha256://p"
}

logits () { # MODEL: a digest of the prompt's logits
	git infer -m "$1" --prompt-ids 9,8,7 -n 0 --logits-out logits.out >/dev/null &&
	sha256sum <logits.out
}

test_expect_success PYTHON3 'setup: a model with two commits and a branch v1 on the hub' '
	git model synth -q tiny m1 &&
	git model synth -q --seed 2 tiny m2 &&
	git model import -q m1 src &&
	git -C "$SRC" branch v1 &&
	cp m2/model.safetensors "$SRC/model.safetensors" &&
	git -C "$SRC" commit -q -a -m "new weights" &&
	FIRST=$(git -C "$SRC" rev-parse v1) &&
	SECOND=$(git -C "$SRC" rev-parse main) &&
	OID1=$(oid_of "$SRC" v1:model.safetensors) &&
	OID2=$(oid_of "$SRC" main:model.safetensors) &&
	echo "FIRST=$FIRST SECOND=$SECOND OID1=$OID1 OID2=$OID2" >vars &&
	logits m1 >expect1 &&
	logits m2 >expect2
'
. ./vars 2>/dev/null

test_expect_success PYTHON3 'clone hf:ORG/NAME: the default branch, with its LFS objects' '
	start_hub_server &&
	publish org/tiny &&
	git model clone hf:org/tiny >out &&
	test_grep "^cloned hf:org/tiny as .tiny. at $(echo $SECOND | cut -c1-12) in $MODELS/tiny\$" out &&
	cmp m2/model.safetensors "$MODELS/tiny/model.safetensors" &&
	cmp m1/tokenizer.json "$MODELS/tiny/tokenizer.json" &&
	git -C "$MODELS/tiny" status --porcelain >st &&
	test_must_be_empty st &&
	test_grep "POST /org/tiny.git/info/lfs/objects/batch 200" "$HUB_LOG" &&
	git model list --json >list.json &&
	test_grep "\"source\": \"hf:org/tiny\"" list.json &&
	logits tiny >actual &&
	test_cmp expect2 actual
'

test_expect_success PYTHON3 'clone of a plain git URL (the LFS endpoint derived from it)' '
	start_hub_server &&
	publish org/tiny &&
	git model clone -q "$HUB_URL/org/tiny.git" plain &&
	cmp m2/model.safetensors "$MODELS/plain/model.safetensors" &&
	git model list --json >list.json &&
	test_grep "\"source\": \"$HUB_URL/org/tiny.git\"" list.json
'

test_expect_success PYTHON3 'clone hf:ORG/NAME@BRANCH checks the branch out' '
	start_hub_server &&
	publish org/tiny &&
	git model clone -q hf:org/tiny@v1 tiny-v1 &&
	echo v1 >expect &&
	git -C "$MODELS/tiny-v1" symbolic-ref --short HEAD >actual &&
	test_cmp expect actual &&
	git -C "$MODELS/tiny-v1" branch --format="%(refname:short) %(upstream:short)" >actual &&
	echo "v1 origin/v1" >expect &&
	test_cmp expect actual &&
	git model fsck tiny-v1 &&
	cmp m1/model.safetensors "$MODELS/tiny-v1/model.safetensors" &&
	logits tiny-v1 >actual &&
	test_cmp expect1 actual &&
	git model clone -q hf:org/tiny@main tiny-main &&
	echo main >expect &&
	git -C "$MODELS/tiny-main" symbolic-ref --short HEAD >actual &&
	test_cmp expect actual &&
	cmp m2/model.safetensors "$MODELS/tiny-main/model.safetensors"
'

test_expect_success PYTHON3 'clone hf:ORG/NAME@COMMIT detaches HEAD at it' '
	start_hub_server &&
	publish org/tiny &&
	git model clone -q "hf:org/tiny@$FIRST" tiny-at &&
	git -C "$MODELS/tiny-at" rev-parse HEAD >actual &&
	echo $FIRST >expect &&
	test_cmp expect actual &&
	git -C "$MODELS/tiny-at" for-each-ref refs/heads >branches &&
	test_must_be_empty branches &&
	git model fsck tiny-at &&
	cmp m1/model.safetensors "$MODELS/tiny-at/model.safetensors" &&
	test_expect_code 1 git model clone -q hf:org/tiny@no-such-branch nope 2>err &&
	test_grep "no branch, tag or commit .no-such-branch." err &&
	test_path_is_missing "$MODELS/nope"
'

test_expect_success PYTHON3 'clone --include: other LFS files stay pointers until fetch' '
	start_hub_server &&
	publish org/tiny &&
	git model clone -q --include "*.json" hf:org/tiny part &&
	cmp m1/tokenizer.json "$MODELS/part/tokenizer.json" &&
	test_grep "^oid sha256:$OID2\$" "$MODELS/part/model.safetensors" &&
	git -C "$MODELS/part" status --porcelain >st &&
	test_must_be_empty st &&
	test_expect_code 1 git model fsck part >out &&
	test_grep "^missing: $OID2 model.safetensors" out &&
	test_expect_code 1 git infer -m part --check 2>err &&
	test_grep "model.safetensors is an LFS pointer whose object was not fetched; run .git model fetch part." err &&
	git model fetch part >out &&
	echo "fetched '\''part'\''" >expect &&
	test_cmp expect out &&
	cmp m2/model.safetensors "$MODELS/part/model.safetensors" &&
	git -C "$MODELS/part" status --porcelain >st &&
	test_must_be_empty st &&
	git model fsck part
'

test_expect_success PYTHON3 'fetch NAME REV gets the objects of another revision for NAME@REV' '
	start_hub_server &&
	publish org/tiny &&
	git -C "$MODELS/tiny" remote set-url origin "$HUB_URL/org/tiny" &&
	test_expect_code 1 git infer -m tiny@origin/v1 --check 2>err &&
	test_grep "git model fetch" err &&
	git model fetch -q tiny v1 &&
	logits tiny@origin/v1 >actual &&
	test_cmp expect1 actual
'

test_expect_success PYTHON3 'files already in the huggingface_hub cache are reused, not downloaded' '
	start_hub_server &&
	publish org/tiny &&
	mkdir -p hfcache/models--org--tiny/blobs &&
	cp m2/model.safetensors hfcache/models--org--tiny/blobs/$OID2 &&
	HF_HUB_CACHE="$PWD/hfcache" git model clone -q hf:org/tiny cached &&
	cmp m2/model.safetensors "$MODELS/cached/model.safetensors" &&
	! test_grep "GET /_lfs/org/tiny/$OID2" "$HUB_LOG" &&
	git model fsck cached
'

test_expect_success PYTHON3 'a killed download resumes where it stopped' '
	start_hub_server &&
	publish org/tiny &&
	echo "{\"delay_ms\": 40}" >"$HUB_FAULTS" &&
	{ git-model clone -q hf:org/tiny slow >/dev/null 2>&1 & } &&
	pid=$! &&
	i=0 &&
	while ! ls "$MODELS/.slow.partial/.git/lfs/tmp/" 2>/dev/null | grep -q . || [ $(cat "$MODELS"/.slow.partial/.git/lfs/tmp/* 2>/dev/null | wc -c) -lt 300000 ]
	do
		i=$((i + 1)) && [ $i -lt 300 ] || { kill $pid; false; } || return 1
		sleep 0.1
	done &&
	kill -9 $pid &&
	wait $pid 2>/dev/null
	rm -f "$HUB_FAULTS" &&
	test_path_is_missing "$MODELS/slow" &&
	git model list >out &&
	! test_grep "^slow " out &&
	git -C "$SRC" commit -q --allow-empty -m "moved on meanwhile" &&
	git -C "$SRC" push -q "$HUB_ROOT/org/tiny.git" main &&
	git model clone -q hf:org/tiny slow &&
	cmp m2/model.safetensors "$MODELS/slow/model.safetensors" &&
	git -C "$SRC" rev-parse main >expect &&
	git -C "$MODELS/slow" rev-parse HEAD >actual &&
	test_cmp expect actual &&
	test_grep "GET /_lfs/org/tiny/$OID2 20[06] range=bytes=[1-9][0-9]*-" "$HUB_LOG" &&
	test_path_is_missing "$MODELS/.slow.partial"
'

test_expect_success PYTHON3 'a corrupted object on the server is refused, nothing registered' '
	start_hub_server &&
	publish org/tiny &&
	echo "{\"corrupt\": [\"$OID2\"]}" >"$HUB_FAULTS" &&
	test_expect_code 1 git model clone -q hf:org/tiny bad 2>err &&
	test_grep "$OID2" err &&
	test_grep "sha256" err &&
	test_path_is_missing "$MODELS/bad" &&
	git model list >out &&
	! test_grep "^bad " out &&
	test_path_is_missing "$(ls -d "$MODELS"/.bad.partial/.git/lfs/objects/*/*/$OID2 2>/dev/null || echo none)" &&
	rm -f "$HUB_FAULTS" &&
	git model clone -q hf:org/tiny bad &&
	cmp m2/model.safetensors "$MODELS/bad/model.safetensors"
'

test_expect_success PYTHON3 'an object the server lacks (404): a clear error; a re-run finishes (through a retried 500)' '
	start_hub_server &&
	publish org/tiny &&
	echo "{\"missing\": [\"$OID2\"]}" >"$HUB_FAULTS" &&
	test_expect_code 1 git model clone -q hf:org/tiny gone 2>err &&
	test_grep "$OID2" err &&
	test_path_is_missing "$MODELS/gone" &&
	echo "{\"fail_batch\": 1}" >"$HUB_FAULTS" &&
	rm -f "$HUB_FAULTS" &&
	git model clone -q hf:org/tiny gone &&
	cmp m2/model.safetensors "$MODELS/gone/model.safetensors"
'

test_expect_success PYTHON3 'a private repository: 401 without a token, success with HF_TOKEN' '
	start_hub_server --token s3cret &&
	publish org/tiny &&
	test_expect_code 1 git model clone -q hf:org/tiny private 2>err &&
	test_grep "401\|HF_TOKEN\|authentication" err &&
	test_path_is_missing "$MODELS/private" &&
	HF_TOKEN=s3cret git model clone -q hf:org/tiny private &&
	cmp m2/model.safetensors "$MODELS/private/model.safetensors" &&
	git model synth -q --seed 4 tiny m4 &&
	cp m4/model.safetensors "$MODELS/private/model.safetensors" &&
	git -C "$MODELS/private" commit -q -a -m "private weights" &&
	test_expect_code 1 git model push -q private 2>err &&
	test_grep "401\|HF_TOKEN\|authentication" err &&
	HF_TOKEN=s3cret git model push -q private &&
	OID4=$(oid_of "$MODELS/private" HEAD:model.safetensors) &&
	test_path_is_file "$(hub_object org/tiny $OID4)" &&
	HF_TOKEN=s3cret git model fetch -q private
'

test_expect_success PYTHON3 'push uploads new LFS objects, then the branch; pull brings them to a clone' '
	start_hub_server &&
	publish org/tiny &&
	git model clone -q hf:org/tiny writer &&
	git model clone -q hf:org/tiny reader &&
	git model synth -q --seed 3 tiny m3 &&
	cp m3/model.safetensors "$MODELS/writer/model.safetensors" &&
	git -C "$MODELS/writer" commit -q -a -m "fine-tuned" &&
	OID3=$(oid_of "$MODELS/writer" HEAD:model.safetensors) &&
	git model push writer >out &&
	echo "pushed '\''writer'\'' to origin" >expect &&
	test_cmp expect out &&
	test_path_is_file "$(hub_object org/tiny $OID3)" &&
	test_grep "PUT /_lfs/org/tiny/$OID3" "$HUB_LOG" &&
	git -C "$HUB_ROOT/org/tiny.git" rev-parse main >actual &&
	git -C "$MODELS/writer" rev-parse HEAD >expect &&
	test_cmp expect actual &&
	git model pull reader >out &&
	echo updated >expect &&
	test_cmp expect out &&
	cmp m3/model.safetensors "$MODELS/reader/model.safetensors" &&
	git -C "$MODELS/reader" status --porcelain >st &&
	test_must_be_empty st &&
	git model pull reader >out &&
	echo "already up to date" >expect &&
	test_cmp expect out
'

test_expect_success PYTHON3 'pull refuses a diverged branch and a detached HEAD' '
	start_hub_server &&
	publish org/tiny &&
	git model clone -q hf:org/tiny div &&
	echo x >"$MODELS/div/notes.txt" &&
	git -C "$MODELS/div" add notes.txt &&
	git -C "$MODELS/div" commit -q -m local &&
	git -C "$SRC" commit -q --allow-empty -m upstream &&
	publish org/tiny &&
	test_expect_code 1 git model pull div 2>err &&
	test_grep "diverged" err &&
	test_expect_code 1 git model pull tiny-at 2>err &&
	test_grep "not on a branch" err
'

test_done
