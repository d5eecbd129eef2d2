#!/bin/sh
test_description='git-model-mount: usage, man page; the helper refuses to run on a registry that is not there'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"
. "$GM_SRC_DIR/t/lib-worktree.sh"

HELPER="$GM_BUILD_DIR/git-model-mount/git-model-mount"

test_expect_success '-h prints the usage and exits 129' '
	test_expect_code 129 "$HELPER" -h >out &&
	test_grep "^usage: git-model-mount mount <lower> <upper> <work> <target>" out &&
	test_grep "^   or: git-model-mount umount <target>" out
'

test_expect_success 'bad usage exits 129 and mounts nothing' '
	before=$(wt_mounts | wc -l) &&
	test_expect_code 129 "$HELPER" 2>err &&
	test_grep "^usage:" err &&
	test_expect_code 129 "$HELPER" mount a b c 2>err &&
	test_expect_code 129 "$HELPER" umount 2>err &&
	test_expect_code 129 "$HELPER" remount /x 2>err &&
	test "$(wt_mounts | wc -l)" = "$before"
'

test_expect_success 'started with standard error closed, it still refuses (and writes nowhere)' '
	git model worktree list >/dev/null &&
	cp "$HOME/.local/share/git-model/registry.db" before.db &&
	mkdir -p l2 u2 w2 t2 &&
	test_must_fail "$HELPER" mount "$PWD/l2" "$PWD/u2" "$PWD/w2" "$PWD/t2" 2>&- &&
	cmp before.db "$HOME/.local/share/git-model/registry.db"
'

test_expect_success 'without a registry nothing is an area: refused' '
	before=$(wt_mounts | wc -l) &&
	mkdir l u w t &&
	test_must_fail env GIT_MODEL_REGISTRY="$PWD/none.db" "$HELPER" mount "$PWD/l" "$PWD/u" "$PWD/w" "$PWD/t" 2>err &&
	test_grep "^git-model-mount: your git-model registry .*none.db: No such file or directory" err &&
	test_path_is_missing none.db &&
	test "$(wt_mounts | wc -l)" = "$before"
'

test_expect_success 'paths outside the registered areas are refused' '
	git model worktree list >/dev/null &&
	before=$(wt_mounts | wc -l) &&
	test_must_fail "$HELPER" mount "$PWD/l" "$PWD/u" "$PWD/w" "$PWD/t" 2>err &&
	test_grep "outside your registered model areas" err &&
	test "$(wt_mounts | wc -l)" = "$before"
'

test_expect_success !ROOT 'an overlay worktree forced without privileges says why it cannot be' '
	git model synth -q tiny src && git model import -q src m >/dev/null &&
	test_must_fail git model checkout m@x --driver overlay 2>err &&
	test_grep "driver overlay is not available here: overlay: not root" err
'

test_expect_success MAN 'the man page renders without warnings and documents every refusal' '
	man --warnings -E UTF-8 -l "$GM_SRC_DIR/man/git-model-mount.1" >out 2>err &&
	test_must_be_empty err &&
	test_grep "^SYNOPSIS" out &&
	test_grep "^EXIT STATUS" out &&
	for w in setfsuid nosuid nodev metacopy redirect_dir "not empty" "owned by" "mount id" syslog setcap; do
		grep -q "$w" "$GM_SRC_DIR/man/git-model-mount.1" || { echo "man page lacks: $w"; return 1; }
	done
'

test_done
