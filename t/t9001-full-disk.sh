#!/bin/sh
test_description='a full disk (a small tmpfs) during import, clone and training checkpoints: a clear error, nothing half-written'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

if ! test_have_prereq ROOT; then
	skip_all='mounting a small tmpfs needs root'
	test_expect_success 'unmount the small disk' '
	umount disk
'

test_done
fi
mkdir disk
if ! mount -t tmpfs -o size=6m tmpfs disk 2>/dev/null; then
	skip_all='cannot mount a tmpfs here'
	test_expect_success 'unmount the small disk' '
	umount disk
'

test_done
fi
# unmounted however the script ends
trap 'umount -l "$TRASH_DIRECTORY/disk" 2>/dev/null; gm_exit_trap' EXIT

POCKET="$TEST_MODELS/pocket-qwen3"
F32="$TEST_FIXTURES/models/tiny-qwen3-f32"
MODELS=disk/home/.local/share/git-model/models

# on_disk CMD...: CMD with its home (registry, models) on the small disk
on_disk () {
	HOME="$TRASH_DIRECTORY/disk/home" "$@"
}

# used: the disk's used bytes
used () {
	df -B1 --output=used disk | tail -1 | tr -d " "
}

# leftovers: files under the disk named as temporaries or git locks (none
# expected; models/.NAME.lock are the registry's lock files, kept)
leftovers () {
	find disk \( -name "*.tmp*" -o -name "*tmp-*" -o -name "*.partial" -o -name "*.lock" \
		-o -name "tmp_*" \) -print | grep -v "/models/\.[^/]*\.lock$" || :
}

test_expect_success 'setup: a registry on a 6 MiB disk with a small model already in it' '
	mkdir -p disk/home &&
	on_disk git model import -q "$F32" tiny &&
	on_disk git model list >list &&
	test_grep "^tiny " list &&
	used >used.before
'

test_expect_success 'importing a 12 MiB model fails with the disk named, and leaves the disk as it was' '
	test_expect_code 1 on_disk git model import "$POCKET" pocket 2>err &&
	test_grep -i "no space left on device" err &&
	on_disk git model list >list &&
	! grep -q "^pocket " list &&
	test_path_is_missing "$MODELS/pocket" &&
	leftovers >left &&
	test_must_be_empty left &&
	test "$(used)" -le "$(($(cat used.before) + 65536))"
'

# A clone keeps what it got in NAME.partial, to resume when run again
# (after space is freed); it says so, and nothing is registered.
test_expect_success 'cloning it from a repository fails the same way, its partial clone announced' '
	git model import -q "$POCKET" pocket &&
	test_expect_code 1 on_disk git model clone "$HOME/.local/share/git-model/models/pocket" copy 2>err &&
	test_grep -i "no space left on device" err &&
	test_grep "the partial clone stays in .*/models/\.copy\.partial: running the same command again resumes it" err &&
	on_disk git model list >list &&
	! grep -q "^copy " list &&
	test_path_is_missing "$MODELS/copy" &&
	leftovers >left &&
	echo "$MODELS/.copy.partial" >expect &&
	test_cmp expect left &&
	rm -rf "$MODELS/.copy.partial"
'

test_expect_success 'training whose checkpoints do not fit: a clear error, the repository still consistent' '
	for i in 1 2 3 4 5 6 7 8
	do
		echo "{\"text\": \"The king $i of Tyre gave gold.\"}" || return 1
	done >train.jsonl &&
	git -C "$MODELS/tiny" rev-parse HEAD >head.before &&
	head -c $(( $(df -B1 --output=avail disk | tail -1) - 400000 )) /dev/zero >disk/filler &&
	test_expect_code 1 on_disk git train -m tiny --adapter big --data train.jsonl --steps 4 \
		--checkpoint-every 1 --rank 64 --threads 1 -q 2>err &&
	cat err &&
	test_grep -i "no space left on device" err &&
	rm disk/filler &&
	git -C "$MODELS/tiny" fsck --full --no-progress &&
	on_disk git model fsck tiny &&
	git -C "$MODELS/tiny" rev-parse HEAD >head.after &&
	test_cmp head.before head.after &&
	leftovers >left &&
	test_must_be_empty left
'

test_expect_success 'unmount the small disk' '
	umount disk
'

test_done
