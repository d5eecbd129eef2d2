#!/bin/sh
test_description='crash consistency of what moves data between repositories and through stock git: push, fetch, pull, a clone from the Hub over HTTP, the LFS filter process (clean and smudge), worktrees (registry updates)'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"
. "$GM_SRC_DIR/t/lib-crash.sh"
. "$GM_SRC_DIR/t/lib-hub.sh"

# Same scheme as t9000-crash.sh (see t/lib-crash.sh); contrib/crash/run.sh
# runs it with GM_CRASH_POINTS=all.
K=$(crash_points 3)

F32="$TEST_FIXTURES/models/tiny-qwen3-f32"
A1="$TEST_FIXTURES/lora/tiny-qwen3-f32-a1-r8-all"
MODELS=home/.local/share/git-model/models

# store_state DIR: the LFS objects of a repository (or bare remote) DIR, each
# with the hash of its content, so a torn or wrong object shows
store_state () {
	(cd "$1" && find lfs/objects .git/lfs/objects -type f 2>/dev/null | sort | xargs -r sha256sum)
}

# store_sound DIR: every object in DIR's LFS store hashes to its name (a
# crash may leave an object missing, never a wrong one under its name)
store_sound () {
	store_state "$1" | while read -r sum path
	do
		test "$sum" = "${path##*/}" || {
			echo "$1: $path holds content hashing to $sum"
			return 1
		}
	done
}

# refs_state DIR: branches, tags and remote-tracking branches with the
# subjects of their commits
refs_state () {
	git -C "$1" for-each-ref --format="%(refname) %(subject)" refs/heads refs/tags refs/remotes
}

test_expect_success CRASHPOINT 'setup: a model with a new commit, a clone of it and a bare remote behind it' '
	mkdir -p st/home && cp -R "$F32" st/model &&
	(cd st && HOME=$PWD/home &&
	 git model import -q model tiny &&
	 git clone -q --bare "$MODELS/tiny" remote.git &&
	 git model clone -q "$PWD/$MODELS/tiny" copy &&
	 git -C "$MODELS/tiny" remote add origin "$PWD/remote.git" &&
	 git adapter add -m tiny --name a1 "$A1" >/dev/null) &&
	crash_save sync
'

state_push () {
	refs_state remote.git && store_state remote.git && refs_state "$MODELS/tiny"
}
check_push () {
	git -C remote.git fsck --no-progress >/dev/null 2>&1 && store_sound remote.git
}
test_expect_success CRASHPOINT 'git model push (LFS objects into a local remote, then the branch)' '
	cp -a tmpl.sync tmpl.push &&
	crash_sweep push $K git model push -q tiny &&
	(cd st && store_state remote.git) >objects &&
	test_line_count = 2 objects
'

state_fetch () {
	refs_state "$MODELS/copy" && store_state "$MODELS/copy"
}
test_expect_success CRASHPOINT 'git model fetch (commits and the LFS objects of the remote branch)' '
	cp -a tmpl.sync tmpl.fetch &&
	crash_sweep fetch $K git model fetch -q copy origin/main &&
	grep "refs/remotes/origin/main adapter: add a1" ref.fetch.state
'

state_pull () {
	refs_state "$MODELS/copy" && store_state "$MODELS/copy" &&
	git -C "$MODELS/copy" status --porcelain &&
	(cd "$MODELS/copy" && find adapters -type f | sort | xargs -r sha256sum)
}
test_expect_success CRASHPOINT 'git model pull (fetch, then fast-forward the branch and the work tree)' '
	cp -a tmpl.sync tmpl.pull &&
	crash_sweep pull $K git model pull -q copy &&
	grep "^refs/heads/main adapter: add a1" ref.pull.state &&
	grep "adapters/.*/adapter_model.safetensors" ref.pull.state
'

# git model clone hf:ORG/NAME from the test Hub (t/lib/hub-server.py on
# 127.0.0.1): git over smart HTTP, then the LFS objects through the Batch
# API, each downloaded to a temporary, hashed and renamed into the store.
state_hfclone () {
	git model list | awk "{ print \$1 }" &&
	refs_state "$MODELS/hub" && store_state "$MODELS/hub" &&
	git -C "$MODELS/hub" status --porcelain &&
	(cd "$MODELS/hub" && git ls-files | sort | xargs -r sha256sum)
}
test_expect_success CRASHPOINT,PYTHON3 'git model clone hf:ORG/NAME (git and the LFS objects over HTTP)' '
	start_hub_server &&
	hub_repo org/tiny &&
	git -C "tmpl.sync/$MODELS/tiny" push -q "$HUB_ROOT/org/tiny.git" "refs/heads/*:refs/heads/*" &&
	mkdir -p "$HUB_ROOT/org/tiny.git/lfs" &&
	cp -R "tmpl.sync/$MODELS/tiny/.git/lfs/objects" "$HUB_ROOT/org/tiny.git/lfs/" &&
	cp -a tmpl.sync tmpl.hfclone &&
	crash_sweep hfclone $K git model clone -q hf:org/tiny hub &&
	grep "^refs/heads/main adapter: add a1" ref.hfclone.state &&
	grep -c "lfs/objects/" ref.hfclone.state >count &&
	echo 2 >expect && test_cmp expect count &&
	test_grep "POST /org/tiny.git/info/lfs/objects/batch 200" "$HUB_LOG"
'

test_expect_success CRASHPOINT 'setup: a plain repository using the filter process, with large files' '
	rm -rf st && mkdir -p st/home &&
	(cd st && HOME=$PWD/home &&
	 git init -q -b main r && cd r &&
	 git model install --local -q && git model track "*.bin" >/dev/null &&
	 git add .gitattributes && git commit -q -m attributes &&
	 head -c 3000000 /dev/urandom >a.bin && head -c 700000 /dev/urandom >b.bin) &&
	crash_save filter_add &&
	cp -a tmpl.filter_add st &&
	(cd st/r && HOME=$PWD/../home && git add a.bin b.bin && git commit -q -m data &&
	 git checkout -q -b base HEAD~1) &&
	crash_save filter_checkout
'

# stock git leaves its index.lock behind when killed, and tells the user to
# remove it: the rerun does what the user would
unlock_git () {
	rm -f r/.git/index.lock r/.git/HEAD.lock r/.git/refs/heads/main.lock
}

state_filter_add () {
	git -C r log --format=%s main && git -C r ls-tree -r main && store_state r
}
check_filter_add () {
	store_sound r
}
rerun_filter_add () {
	unlock_git &&
	(cd r && git add a.bin b.bin && { git diff --cached --quiet || git commit -q -m data; })
}
test_expect_success CRASHPOINT 'git add and commit through the clean filter (git model filter-process)' '
	crash_sweep filter_add $K sh -c "cd r && git add a.bin b.bin && git commit -q -m data" &&
	grep -c "^[0-9a-f]*  .git/lfs/objects/" ref.filter_add.state >count &&
	echo 2 >expect && test_cmp expect count
'

state_filter_checkout () {
	git -C r symbolic-ref HEAD && git -C r status --porcelain && (cd r && sha256sum a.bin b.bin)
}
check_filter_checkout () {
	store_sound r
}
rerun_filter_checkout () {
	unlock_git && git -C r checkout -f -q main
}
test_expect_success CRASHPOINT 'git checkout through the smudge filter (git model filter-process)' '
	crash_sweep filter_checkout $K git -C r checkout -q main &&
	(cd tmpl.filter_add/r && sha256sum a.bin b.bin) >expect &&
	tail -n 2 ref.filter_checkout.state >actual &&
	test_cmp expect actual
'

test_expect_success CRASHPOINT 'setup: a registered model for worktrees' '
	rm -rf st && mkdir -p st/home && cp -R "$F32" st/model &&
	(cd st && HOME=$PWD/home && git model import -q model tiny &&
	 git -C "$MODELS/tiny" branch other) &&
	crash_save wt
'

state_worktree_add () {
	git model worktree list tiny | awk "{ print \$1, \$2 }" | sed "s|$PWD/||" &&
	(cd wt1 && sha256sum model.safetensors config.json)
}
test_expect_success CRASHPOINT 'git model worktree add (a copy-on-write worktree, recorded in the registry)' '
	cp -a tmpl.wt tmpl.worktree_add &&
	crash_sweep worktree_add $K git model worktree add tiny@other --worktree wt1 --driver copy
'

test_done
