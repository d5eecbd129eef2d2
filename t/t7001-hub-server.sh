#!/bin/sh
test_description='the test hub server against git-lfs, and LFS transfers over HTTP: retries, resume, corruption, auth, cache reuse, upload'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"
. "$GM_SRC_DIR/t/lib-hub.sh"

test_have_prereq PYTHON3 || { skip_all='the hub server needs python3'; test_done; }

# Transfers give up quickly in tests; the backoff still applies.
GIT_TERMINAL_PROMPT=0
export GIT_TERMINAL_PROMPT

test_expect_success GIT_LFS 'a model repository written with git-lfs' '
	git init -q src &&
	(cd src && git lfs install --local >/dev/null && git lfs track "*.safetensors" "*.gguf" >/dev/null &&
	 head -c 3000000 /dev/urandom >model-00001-of-00002.safetensors &&
	 head -c 2500000 /dev/urandom >model-00002-of-00002.safetensors &&
	 head -c 700000 /dev/urandom >model-q4.gguf &&
	 head -c 900000 /dev/urandom >model-q8.gguf &&
	 echo "{\"model_type\": \"qwen3\"}" >config.json &&
	 git add . && git commit -q -m "weights" && git branch -M main &&
	 test -n "$(lfs_oid HEAD:model-q4.gguf)")
'

oid_of () {
	(cd "$TRASH_DIRECTORY/src" && lfs_oid "HEAD:$1")
}

test_expect_success GIT_LFS 'git lfs push through the server: batch upload, PUT, verify' '
	start_hub_server &&
	hub_repo org/model &&
	(cd src && git push -q "$HUB_URL/org/model" main 2>../push.err) &&
	for f in model-00001-of-00002.safetensors model-00002-of-00002.safetensors model-q4.gguf model-q8.gguf
	do
		test_cmp src/$f "$(hub_object org/model $(oid_of $f))" || return 1
	done &&
	test_grep "^POST /org/model.git/info/lfs/objects/batch 200" "$HUB_LOG" &&
	test_grep "^PUT /_lfs/org/model/" "$HUB_LOG" &&
	test_grep "^POST /_lfs/org/model/verify 200" "$HUB_LOG" &&
	test_grep "^POST /org/model/git-receive-pack 200" "$HUB_LOG"
'

test_expect_success GIT_LFS 'git clone and git lfs pull through the server' '
	start_hub_server &&
	GIT_LFS_SKIP_SMUDGE=1 git clone -q "$HUB_URL/org/model" lfs-clone &&
	(cd lfs-clone && git lfs install --local >/dev/null && git lfs pull && git lfs fsck) &&
	test_cmp src/model-q4.gguf lfs-clone/model-q4.gguf &&
	test_cmp src/model-00001-of-00002.safetensors lfs-clone/model-00001-of-00002.safetensors &&
	test_grep "^GET /_lfs/org/model/$(oid_of model-q4.gguf) 200 bytes=700000" "$HUB_LOG"
'

test_expect_success 'the Hub API: revision, tree and resolve' '
	start_hub_server &&
	commit=$(git -C src rev-parse HEAD) &&
	python3 - "$HUB_URL" "$commit" "$(oid_of model-q4.gguf)" <<-\PY
	import json, sys, urllib.request
	base, commit, oid = sys.argv[1:]
	r = json.load(urllib.request.urlopen(base + "/api/models/org/model/revision/main"))
	assert r["sha"] == commit, r
	assert {"rfilename": "model-q4.gguf"} in r["siblings"], r
	t = json.load(urllib.request.urlopen(base + "/api/models/org/model/tree/main?recursive=true"))
	q4 = [i for i in t if i["path"] == "model-q4.gguf"][0]
	assert q4["lfs"] == {"oid": oid, "size": 700000, "pointerSize": q4["lfs"]["pointerSize"]}, q4
	cfg = [i for i in t if i["path"] == "config.json"][0]
	assert "lfs" not in cfg, cfg
	class NoRedirect(urllib.request.HTTPRedirectHandler):
	    def redirect_request(self, *a): return None
	op = urllib.request.build_opener(NoRedirect)
	try:
	    op.open(base + "/org/model/resolve/main/model-q4.gguf")
	    raise SystemExit("no redirect")
	except urllib.error.HTTPError as e:
	    assert e.code == 302, e.code
	    assert e.headers["X-Linked-Etag"] == "\"%s\"" % oid, dict(e.headers)
	    assert e.headers["X-Linked-Size"] == "700000"
	    assert e.headers["X-Repo-Commit"] == commit
	c = urllib.request.urlopen(base + "/org/model/resolve/%s/config.json" % commit)
	assert c.headers["X-Repo-Commit"] == commit and b"qwen3" in c.read()
	try:
	    urllib.request.urlopen(base + "/api/models/org/model/revision/nope")
	    raise SystemExit("no 404")
	except urllib.error.HTTPError as e:
	    assert e.code == 404
	PY
'

partial_size () {
	if [ -f "$1" ]; then wc -c <"$1"; else echo 0; fi
}

# clone_pointers DIR: a clone with pointers only (no LFS download yet).
clone_pointers () {
	rm -rf "$1" &&
	GIT_LFS_SKIP_SMUDGE=1 git -c filter.lfs.process= -c filter.lfs.smudge= -c filter.lfs.required=false \
		clone -q "$HUB_URL/org/model" "$1" &&
	(cd "$1" && git model install --local -q)
}

test_expect_success 'git model lfs-fetch --checkout: parallel download, verified, in the git-lfs layout' '
	start_hub_server &&
	clone_pointers c1 &&
	(cd c1 && git model lfs-fetch -j 4 --checkout >../out 2>../err && git lfs fsck >/dev/null &&
	 git status --porcelain >../status) &&
	test_must_be_empty status &&
	test_grep "^fetched 4 objects (6.77 MiB in" out &&
	for f in model-00001-of-00002.safetensors model-00002-of-00002.safetensors model-q4.gguf model-q8.gguf
	do
		test_cmp src/$f c1/$f || return 1
	done &&
	test_must_be_empty err &&
	grep -c "objects/batch 200" "$HUB_LOG" >nbatch &&
	echo 1 >expect && test_cmp expect nbatch
'

test_expect_success 'a second fetch downloads nothing' '
	start_hub_server &&
	(cd c1 && git model lfs-fetch >../out) &&
	test_grep "^fetched 0 objects .*; 4 already present" out &&
	test_grep ! "^GET /_lfs" "$HUB_LOG"
'

test_expect_success 'stock git clone with our filter: smudge downloads each object, like git-lfs' '
	start_hub_server &&
	rm -rf c18 &&
	git -c filter.lfs.process="git-model filter-process" -c filter.lfs.required=true \
		clone -q "$HUB_URL/org/model" c18 &&
	(cd c18 && git model install --local -q && git lfs fsck >/dev/null && git status --porcelain >../status) &&
	test_must_be_empty status &&
	test_cmp src/model-q8.gguf c18/model-q8.gguf &&
	test_cmp src/model-00001-of-00002.safetensors c18/model-00001-of-00002.safetensors &&
	grep -c "^GET /_lfs/org/model/.* 200" "$HUB_LOG" >ngets &&
	echo 4 >expect && test_cmp expect ngets
'

test_expect_success '--include and --exclude pick files (one quantization of many)' '
	start_hub_server &&
	clone_pointers c2 &&
	(cd c2 && git model lfs-fetch --include "*.gguf" --exclude "*q8*" --checkout >../out) &&
	test_grep "^fetched 1 object " out &&
	test_cmp src/model-q4.gguf c2/model-q4.gguf &&
	test_grep "^version https://git-lfs" c2/model-q8.gguf &&
	test_grep "^version https://git-lfs" c2/model-00001-of-00002.safetensors
'

test_expect_success 'progress: per-file and total bytes, throughput and ETA with --progress; none with -q' '
	start_hub_server &&
	clone_pointers c3 &&
	echo "{\"delay_ms\": 5}" >"$HUB_FAULTS" &&
	(cd c3 && git model lfs-fetch --progress >../out 2>../err) &&
	tr "\r" "\n" <err >progress &&
	test_grep "^Downloading LFS objects: [0-9]/4, .* / 6.77 MiB, .*/s" progress &&
	test_grep "ETA [0-9]*:[0-9][0-9]  model-.* [0-9]*%" progress &&
	test_grep "^Downloading LFS objects: 4/4, 6.77 MiB / 6.77 MiB" progress &&
	clone_pointers c3 &&
	(cd c3 && git model lfs-fetch -q >../out 2>../err) &&
	test_must_be_empty out &&
	test_must_be_empty err
'

test_expect_success 'server errors (500 on the batch and on objects, 429) are retried with backoff' '
	start_hub_server &&
	clone_pointers c4 &&
	echo "{\"fail_batch\": 1, \"fail_get\": 2, \"status_429\": 1}" >"$HUB_FAULTS" &&
	(cd c4 && git model lfs-fetch --checkout >../out) &&
	test_grep "7 retries" out &&
	test_grep "objects/batch 500" "$HUB_LOG" &&
	test_grep "^GET /_lfs/.* 500" "$HUB_LOG" &&
	test_grep "^GET /_lfs/.* 429" "$HUB_LOG" &&
	test_cmp src/model-q8.gguf c4/model-q8.gguf
'

test_expect_success 'a server that keeps failing: clear error, nothing under a final name' '
	start_hub_server &&
	clone_pointers c5 &&
	echo "{\"fail_get\": 1000}" >"$HUB_FAULTS" &&
	(cd c5 && test_expect_code 1 git model lfs-fetch --retries 2 --include "*q4*" 2>../err) &&
	test_grep "^error: 1 of 1 LFS object could not be downloaded" err &&
	test_grep "model-q4.gguf: giving up after 3 attempts: downloading $(oid_of model-q4.gguf): HTTP 500" err &&
	test_path_is_missing c5/.git/lfs/objects
'

test_expect_success 'a cut transfer resumes from the partial file with a Range request' '
	start_hub_server &&
	clone_pointers c6 &&
	oid=$(oid_of model-00001-of-00002.safetensors) &&
	echo "{\"cut\": {\"$oid\": 1000000}}" >"$HUB_FAULTS" &&
	(cd c6 && git model lfs-fetch --include "model-00001*" >../out) &&
	test_grep "1 resumed" out &&
	test_grep "^GET /_lfs/org/model/$oid 200 bytes=1000000 cut" "$HUB_LOG" &&
	test_grep "^GET /_lfs/org/model/$oid 206 range=bytes=1000000- bytes=2000000" "$HUB_LOG" &&
	test_cmp src/model-00001-of-00002.safetensors "$(echo c6/.git/lfs/objects/*/*/$oid)"
'

test_expect_success 'an interrupted run leaves only a partial file; the next run resumes it' '
	start_hub_server &&
	clone_pointers c7 &&
	oid=$(oid_of model-00002-of-00002.safetensors) &&
	echo "{\"cut\": {\"$oid\": 1500000}}" >"$HUB_FAULTS" &&
	(cd c7 && test_expect_code 1 git model lfs-fetch --retries 0 --include "model-00002*" 2>../err) &&
	test_grep "1500000 of 2500000 bytes kept for resuming" err &&
	test_path_is_missing c7/.git/lfs/objects &&
	test $(test_file_size c7/.git/lfs/tmp/$oid.part) = 1500000 &&
	rm "$HUB_FAULTS" &&
	(cd c7 && git model lfs-fetch --include "model-00002*" --checkout >../out) &&
	test_grep "1 resumed" out &&
	test_grep "206 range=bytes=1500000- bytes=1000000$" "$HUB_LOG" &&
	test_path_is_missing c7/.git/lfs/tmp/$oid.part &&
	test_cmp src/model-00002-of-00002.safetensors c7/model-00002-of-00002.safetensors
'

test_expect_success 'a killed download is resumed by the next run' '
	start_hub_server &&
	clone_pointers c8 &&
	oid=$(oid_of model-00001-of-00002.safetensors) &&
	echo "{\"delay_ms\": 40}" >"$HUB_FAULTS" &&
	{ (cd c8 && exec git-model lfs-fetch -q --include "model-00001*") & } &&
	pid=$! &&
	i=0 &&
	while [ $(partial_size c8/.git/lfs/tmp/$oid.part) -lt 300000 ]
	do
		i=$((i + 1)) && [ $i -lt 200 ] && sleep 0.05 || return 1
	done &&
	kill -9 $pid && { wait $pid 2>/dev/null; true; } &&
	test_path_is_missing c8/.git/lfs/objects &&
	rm "$HUB_FAULTS" &&
	(cd c8 && git model lfs-fetch --include "model-00001*" >../out) &&
	test_grep "1 resumed" out &&
	test_grep "206 range=bytes=[1-9][0-9]*- " "$HUB_LOG" &&
	test_cmp src/model-00001-of-00002.safetensors "$(echo c8/.git/lfs/objects/*/*/$oid)"
'

test_expect_success 'a corrupted object on the server is refused: nothing stored, nothing left' '
	start_hub_server &&
	clone_pointers c9 &&
	oid=$(oid_of model-q8.gguf) &&
	echo "{\"corrupt\": [\"$oid\"]}" >"$HUB_FAULTS" &&
	(cd c9 && test_expect_code 1 git model lfs-fetch --checkout >../out 2>../err) &&
	test_grep "^error: 1 of 4 LFS objects could not be downloaded" err &&
	test_grep "model-q8.gguf: the content downloaded for $oid has sha256 [0-9a-f]*: the server.s copy is corrupt; nothing was stored" err &&
	test_path_is_missing c9/.git/lfs/objects/*/*/$oid &&
	test_path_is_missing c9/.git/lfs/tmp/$oid.part &&
	test_cmp src/model-q4.gguf "$(echo c9/.git/lfs/objects/*/*/$(oid_of model-q4.gguf))"
'

test_expect_success 'an object the server lacks is reported by name; the others arrive' '
	start_hub_server &&
	clone_pointers c10 &&
	oid=$(oid_of model-q4.gguf) &&
	echo "{\"missing\": [\"$oid\"]}" >"$HUB_FAULTS" &&
	(cd c10 && test_expect_code 1 git model lfs-fetch 2>../err) &&
	test_grep "model-q4.gguf: the server has no object $oid (error 404: Object does not exist)" err &&
	ls c10/.git/lfs/objects/*/*/* >have &&
	test_line_count = 3 have
'

test_expect_success 'expired download links are replaced by a new batch request' '
	start_hub_server &&
	clone_pointers c11 &&
	echo "{\"expire\": 2}" >"$HUB_FAULTS" &&
	(cd c11 && git model lfs-fetch --checkout >../out) &&
	grep -c "objects/batch 200" "$HUB_LOG" >nbatch &&
	echo 2 >expect && test_cmp expect nbatch &&
	test_grep ! "^GET /_lfs/.* 403" "$HUB_LOG" &&
	test_grep "2 retries" out &&
	test_cmp src/model-q8.gguf c11/model-q8.gguf
'

test_expect_success 'a download link refused with 403 is replaced by a new batch request' '
	start_hub_server &&
	clone_pointers c11 &&
	echo "{\"revoke\": 1}" >"$HUB_FAULTS" &&
	(cd c11 && git model lfs-fetch --checkout >../out) &&
	grep -c "^GET /_lfs/.* 403" "$HUB_LOG" >n403 &&
	echo 1 >expect && test_cmp expect n403 &&
	grep -c "objects/batch 200" "$HUB_LOG" >nbatch &&
	echo 2 >expect && test_cmp expect nbatch &&
	test_grep "1 retry" out &&
	test_cmp src/model-q8.gguf c11/model-q8.gguf
'

test_expect_success 'HF cache blobs with the same sha256 are reused, not downloaded; bad ones are not' '
	start_hub_server &&
	test_when_finished "rm -rf \"$HOME/.cache/huggingface\"" &&
	clone_pointers c12 &&
	blobs="$HOME/.cache/huggingface/hub/models--org--model/blobs" &&
	mkdir -p "$blobs" &&
	cp src/model-00001-of-00002.safetensors "$blobs/$(oid_of model-00001-of-00002.safetensors)" &&
	cp src/model-q4.gguf "$blobs/$(oid_of model-q8.gguf)" &&
	(cd c12 && git model lfs-fetch --checkout >../out 2>../err) &&
	test_grep "1 from the huggingface_hub cache" out &&
	test_grep "not reusing .*$(oid_of model-q8.gguf).* does not hold LFS object" err &&
	test_grep ! "GET /_lfs/org/model/$(oid_of model-00001-of-00002.safetensors)" "$HUB_LOG" &&
	test_grep "GET /_lfs/org/model/$(oid_of model-q8.gguf)" "$HUB_LOG" &&
	test_cmp src/model-00001-of-00002.safetensors c12/model-00001-of-00002.safetensors &&
	test_cmp src/model-q8.gguf c12/model-q8.gguf
'

test_expect_success 'HF_HUB_CACHE and HF_HOME choose the cache' '
	start_hub_server &&
	clone_pointers c13 &&
	mkdir -p alt/models--x--y/blobs &&
	cp src/model-q4.gguf "alt/models--x--y/blobs/$(oid_of model-q4.gguf)" &&
	(cd c13 && HF_HUB_CACHE="$TRASH_DIRECTORY/alt" git model lfs-fetch --include "*q4*" >../out) &&
	test_grep "1 from the huggingface_hub cache" out &&
	clone_pointers c13 &&
	mkdir -p hfhome && mv alt hfhome/hub &&
	(cd c13 && HF_HOME="$TRASH_DIRECTORY/hfhome" git model lfs-fetch --include "*q4*" >../out) &&
	test_grep "1 from the huggingface_hub cache" out &&
	test_grep ! "GET /_lfs" "$HUB_LOG"
'

test_expect_success 'a token-protected server: 401 without a token, success with HF_TOKEN' '
	start_hub_server --token s3cret &&
	rm -rf c14 &&
	GIT_LFS_SKIP_SMUDGE=1 git clone -q "http://user:s3cret@127.0.0.1:$HUB_PORT/org/model" c14 &&
	(cd c14 && git model install --local -q &&
	 git remote set-url origin "$HUB_URL/org/model" &&
	 test_expect_code 1 git model lfs-fetch 2>../err &&
	 HF_TOKEN=wrong test_expect_code 1 git model lfs-fetch 2>../err-wrong &&
	 HF_TOKEN=s3cret git model lfs-fetch --checkout >../out) &&
	test_grep "answered 401 (authentication required): set HF_TOKEN" err &&
	test_grep "answered 401 (not authorized) to the token that was sent: check that HF_TOKEN" err-wrong &&
	test_grep "^fetched 4 objects" out &&
	test_cmp src/model-q8.gguf c14/model-q8.gguf
'

test_expect_success 'the token file under HF_HOME is used, and never sent to another host' '
	start_hub_server --token s3cret &&
	mkdir -p hfh && echo s3cret >hfh/token &&
	(cd c14 && git remote set-url origin "$HUB_URL/org/model" && rm -rf .git/lfs && HF_HOME="$TRASH_DIRECTORY/hfh" git model lfs-fetch >../out) &&
	test_grep "^fetched 4 objects" out &&
	(cd c14 && rm -rf .git/lfs &&
	 HF_HOME="$TRASH_DIRECTORY/hfh" HF_ENDPOINT=http://other.invalid test_expect_code 1 git model lfs-fetch 2>../err) &&
	test_grep "authentication required" err
'

test_expect_success 'without a Hugging Face token, git credential helpers are asked after a 401' '
	start_hub_server --token s3cret &&
	rm -rf c17 &&
	GIT_LFS_SKIP_SMUDGE=1 git clone -q "http://user:s3cret@127.0.0.1:$HUB_PORT/org/model" c17 &&
	echo "http://user:s3cret@127.0.0.1:$HUB_PORT" >creds &&
	(cd c17 && git model install --local -q &&
	 git remote set-url origin "$HUB_URL/org/model" &&
	 git config credential.helper "store --file=\"$TRASH_DIRECTORY/creds\"" &&
	 git model lfs-fetch >../out) &&
	test_grep "^fetched 4 objects" out &&
	test_grep "^POST /org/model.git/info/lfs/objects/batch 401" "$HUB_LOG" &&
	echo "http://user:wrong@127.0.0.1:$HUB_PORT" >creds &&
	(cd c17 && rm -rf .git/lfs && test_expect_code 1 git model lfs-fetch 2>../err) &&
	test_grep "answered 401" err &&
	test_must_be_empty creds
'

test_expect_success GIT_LFS 'the server'\''s token check applies to git-lfs too' '
	start_hub_server --token s3cret &&
	rm -rf lfs-auth &&
	test_must_fail git clone -q "$HUB_URL/org/model" lfs-auth 2>err &&
	test_grep "401\|Authentication failed\|could not read Username" err &&
	git clone -q "http://user:s3cret@127.0.0.1:$HUB_PORT/org/model" lfs-auth &&
	(cd lfs-auth && git lfs install --local >/dev/null && git lfs pull) &&
	test_cmp src/model-q8.gguf lfs-auth/model-q8.gguf
'

test_expect_success 'git model lfs-push uploads what the server lacks; git-lfs downloads it back' '
	start_hub_server &&
	hub_repo org/tuned &&
	git init -q tuned &&
	(cd tuned && git model install --local -q && git model track "*.safetensors" >/dev/null &&
	 head -c 1200000 /dev/urandom >adapter_model.safetensors &&
	 cp ../src/model-q4.gguf . && git model track "*.gguf" >/dev/null &&
	 git add . && git commit -q -m adapter && git branch -M main &&
	 git remote add origin "$HUB_URL/org/tuned" &&
	 git model lfs-push origin >../out &&
	 git model lfs-push origin >../out2 &&
	 git push -q origin main) &&
	test_grep "^uploaded 2 objects" out &&
	test_grep "^uploaded 0 objects .*; 2 already present" out2 &&
	test_grep "^POST /_lfs/org/tuned/verify 200" "$HUB_LOG" &&
	rm -rf tuned-back &&
	git -c filter.lfs.process="git-lfs filter-process" -c filter.lfs.smudge="git-lfs smudge -- %f" \
		-c filter.lfs.required=true clone -q "$HUB_URL/org/tuned" tuned-back &&
	test_cmp tuned/adapter_model.safetensors tuned-back/adapter_model.safetensors
'

test_expect_success 'lfs-push of an object missing locally is a clear error' '
	start_hub_server &&
	hub_repo org/broken &&
	(cd tuned && git remote add broken "$HUB_URL/org/broken" &&
	 rm -rf .git/lfs/objects/*/*/$(lfs_oid HEAD:adapter_model.safetensors) &&
	 test_expect_code 1 git model lfs-push broken 2>../err) &&
	test_grep "adapter_model.safetensors: LFS object .* is not in .*, so it cannot be uploaded" err
'

test_expect_success 'a write failure (file size limit, as a full disk) leaves nothing under a final name' '
	start_hub_server &&
	clone_pointers c15 &&
	oid=$(oid_of model-00001-of-00002.safetensors) &&
	(cd c15 && trap "" XFSZ && ulimit -f 1000 &&
	 test_expect_code 1 git model lfs-fetch --include "model-00001*" 2>../err) &&
	test_grep "cannot write .*$oid.part" err &&
	test_path_is_missing c15/.git/lfs/objects &&
	(cd c15 && git model lfs-fetch --include "model-00001*" >../out) &&
	test_grep "1 resumed" out
'

test_expect_success 'two fetches at once into one repository: both succeed, objects intact' '
	start_hub_server &&
	clone_pointers c16 &&
	echo "{\"delay_ms\": 10}" >"$HUB_FAULTS" &&
	{ (cd c16 && exec git-model lfs-fetch -q) & } &&
	pid1=$! &&
	{ (cd c16 && exec git-model lfs-fetch -q) & } &&
	pid2=$! &&
	wait $pid1 && wait $pid2 &&
	(cd c16 && git model lfs-fetch --checkout >../out && git lfs fsck) &&
	test_grep "^fetched 0 objects .*; 4 already present" out &&
	test_cmp src/model-00001-of-00002.safetensors c16/model-00001-of-00002.safetensors
'

test_expect_success 'usage errors' '
	test_expect_code 129 git model lfs-fetch a b 2>err &&
	test_grep "too many arguments" err &&
	test_expect_code 129 git model lfs-fetch -j 0 2>err &&
	test_grep "between 1 and 64" err &&
	# from / : the trash directory may lie inside a checkout of this project
	(cd / && test_expect_code 1 git model lfs-fetch) 2>err &&
	test_grep "not in a git repository" err
'

test_done
