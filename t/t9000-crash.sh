#!/bin/sh
test_description='crash consistency: writing commands killed (SIGKILL) at many points leave consistent repositories and a registry, and complete when run again'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"
. "$GM_SRC_DIR/t/lib-crash.sh"

# make check kills each command at a few points spread over all of them;
# contrib/crash/run.sh runs this script with GM_CRASH_POINTS=all.
K=$(crash_points 3)

F32="$TEST_FIXTURES/models/tiny-qwen3-f32"
A1="$TEST_FIXTURES/lora/tiny-qwen3-f32-a1-r8-all"
POCKET="$TEST_MODELS/pocket-qwen3"
MODELS=home/.local/share/git-model/models

# repo_state NAME: what a registered repository holds (not when it was made):
# its branches and tags with their commits' subjects, the files of each
# branch (git-model.json, which records a time, by name only), and its LFS
# objects
repo_state () {
	git -C "$MODELS/$1" for-each-ref --format="%(refname)" refs/heads refs/tags |
	while read -r ref
	do
		echo "$ref: $(git -C "$MODELS/$1" log --format=%s "$ref" | tr "\n" "|")" &&
		git -C "$MODELS/$1" ls-tree -r "$ref" | sed "s/ [0-9a-f]*\t\(.*git-model.json\)\$/ -\t\1/" ||
		return 1
	done &&
	(cd "$MODELS/$1" && find .git/lfs/objects -type f 2>/dev/null | sort)
}

registered () {
	git model list | awk "{ print \$1 }"
}

test_expect_success CRASHPOINT 'setup: the templates' '
	mkdir -p st/home && cp -R "$F32" st/model &&
	crash_save import &&
	cp -a tmpl.import st && (cd st && HOME=$PWD/home git model import -q model tiny) &&
	crash_save registered &&
	cp -a tmpl.registered st &&
	(cd st && HOME=$PWD/home git adapter add -m tiny --name a1 "$A1") &&
	crash_save with-adapter &&
	mkdir -p st/home && (cd st && HOME=$PWD/home git model import -q "$POCKET" pocket) &&
	for i in 1 2 3 4 5 6 7 8
	do
		echo "{\"prompt\": \"King $i of Tyre gave\", \"completion\": \" $i talents of gold.\"}" || return 1
	done >st/train.jsonl &&
	crash_save train
'

state_import () {
	registered && repo_state tiny
}
test_expect_success CRASHPOINT 'git model import' '
	crash_sweep import $K git model import model tiny
'

state_clone () {
	registered && repo_state copy
}
test_expect_success CRASHPOINT 'git model clone (a local repository)' '
	cp -a tmpl.registered tmpl.clone &&
	crash_sweep clone $K git model clone "$PWD/st/$MODELS/tiny" copy
'

state_adapter_add () {
	repo_state tiny
}
test_expect_success CRASHPOINT 'git adapter add' '
	cp -a tmpl.registered tmpl.adapter_add &&
	crash_sweep adapter_add $K git adapter add -m tiny --name a1 "$A1"
'

state_adapter_rm () {
	repo_state tiny
}
test_expect_success CRASHPOINT 'git adapter rm' '
	cp -a tmpl.with-adapter tmpl.adapter_rm &&
	crash_sweep adapter_rm $K git adapter rm -m tiny a1
'

state_adapter_merge () {
	repo_state tiny
}
test_expect_success CRASHPOINT 'git adapter merge --into a branch' '
	cp -a tmpl.with-adapter tmpl.adapter_merge &&
	crash_sweep adapter_merge $K git adapter merge -m tiny --into merged a1
'

state_rm () {
	registered && ls "$MODELS"
}
test_expect_success CRASHPOINT 'git model rm' '
	cp -a tmpl.with-adapter tmpl.rm &&
	crash_sweep rm $K git model rm --yes tiny
'

state_gc () {
	repo_state tiny
}
test_expect_success CRASHPOINT 'git model gc' '
	rm -rf st && cp -a tmpl.with-adapter st &&
	(cd st && HOME=$PWD/home git adapter rm -m tiny a1 &&
	 HOME=$PWD/home git -C $MODELS/tiny reflog expire --expire=now --all &&
	 HOME=$PWD/home git -C $MODELS/tiny gc -q --prune=now) &&
	crash_save gc &&
	crash_sweep gc $K git model gc tiny
'

state_train () {
	repo_state pocket | grep -v "^refs/heads/train/"
	git -C "$MODELS/pocket" log --format=%s train/kings
}
# an interrupted run is continued with --resume (its branch says where it was)
rerun_train () {
	if git -C "$MODELS/pocket" rev-parse -q --verify train/kings >/dev/null
	then
		"$@" --resume train/kings
	else
		"$@"
	fi
}
test_expect_success CRASHPOINT 'git train with checkpoints, committed' '
	crash_sweep train $K git train -m pocket --adapter kings --data train.jsonl --steps 4 \
		--checkpoint-every 2 --rank 2 --threads 1 -q
'

# git model quantize: two GGUF files written, their LFS objects stored, one
# commit.  Nothing may show under a final name but a complete file, and
# running it again leaves no temporaries and no second commit.
test_expect_success CRASHPOINT 'setup: the pocket model registered, for quantize' '
	rm -rf st && mkdir -p st/home st/out && cp -R "$POCKET" st/src &&
	(cd st && HOME=$PWD/home git model import -q src pocket) &&
	crash_save quantize &&
	cp -a tmpl.quantize tmpl.quantize_o
'

# temporaries: gm_atomic_open's (.NAME.tmp-XXXXXX), the LFS store's
# (lfs/tmp), git's locks; the registry's models/.NAME.lock stays
temporaries () {
	find . \( -name "*.tmp-*" -o -name "*.lock" \) -print | grep -v "/models/\.[^/]*\.lock$"
	find . -path "*/lfs/tmp/*" -print
}

state_quantize () {
	repo_state pocket &&
	(cd "$MODELS/pocket" && sha256sum pocket-*.gguf && git status --porcelain) &&
	echo "registry: $(git model list | awk "\$1 == \"pocket\" { print \$2 }")" &&
	echo "HEAD: $(git -C "$MODELS/pocket" rev-parse --short=12 HEAD)" &&
	temporaries
}
# after a kill: whatever .gguf has its final name is the whole file, at most
# one quantize commit, and git-lfs finds every object HEAD needs
check_quantize () {
	for f in "$MODELS"/pocket/pocket-*.gguf
	do
		test -f "$f" || continue
		grep -qx "$(cd "$MODELS/pocket" && sha256sum "${f##*/}")" ../ref.quantize.state || {
			echo "$f is not the complete file"
			return 1
		}
	done &&
	test "$(git -C "$MODELS/pocket" log --format=%s | grep -c "^quantize ")" -le 1 &&
	if test_have_prereq GIT_LFS
	then
		git -C "$MODELS/pocket" lfs fsck >/dev/null
	fi
}
test_expect_success CRASHPOINT 'git model quantize NAME (two types, one commit)' '
	crash_sweep quantize $K git model quantize -q --type Q8_0 --type Q4_K_M pocket &&
	grep "^refs/heads/main: quantize [0-9a-f]\{12\} to Q8_0 (5.99 MiB), Q4_K_M (3.61 MiB)|Import pocket|\$" \
		ref.quantize.state &&
	grep -c "  pocket-Q.*\.gguf\$" ref.quantize.state >count &&
	echo 2 >expect && test_cmp expect count &&
	grep "^HEAD: " ref.quantize.state | sed "s/HEAD/registry/" >expect &&
	grep "^registry: " ref.quantize.state >actual &&
	test_cmp expect actual
'

# A kill after the commit point (the branch moved) is not told from a
# failure by whoever runs it again: the second run commits nothing.
test_expect_success CRASHPOINT 'git model quantize NAME again: the same files, no second commit' '
	(cd st && HOME=$PWD/home &&
	 git model quantize --type Q8_0 --type Q4_K_M pocket >../out &&
	 state_quantize >../again.state) &&
	test_grep "^already committed in [0-9a-f]\{12\} of pocket (nothing to commit)\$" out &&
	test_cmp ref.quantize.state again.state
'

state_quantize_o () {
	ls -A out && (cd out && sha256sum pocket.gguf)
}
check_quantize_o () {
	ls -A out >.out.ls &&
	if test -s .out.ls
	then
		# a temporary (removed by the next run), or the whole file
		grep -v "^\.pocket\.gguf\.tmp-......\$" .out.ls >.out.final || :
		test ! -s .out.final ||
		{ echo pocket.gguf >.out.expect && cmp -s .out.expect .out.final &&
		  grep -qx "$(cd out && sha256sum pocket.gguf)" ../ref.quantize_o.state; }
	fi
}
test_expect_success CRASHPOINT 'git model quantize -o FILE' '
	crash_sweep quantize_o $K git model quantize -q --type Q4_K_M -o out/pocket.gguf src &&
	head -n 1 ref.quantize_o.state >actual &&
	echo pocket.gguf >expect &&
	test_cmp expect actual
'

test_done
