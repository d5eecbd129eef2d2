#!/bin/sh
test_description='a full disk (a small tmpfs) during import, clone, training checkpoints and quantize: a clear error, nothing half-written'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

if ! test_have_prereq ROOT; then
	skip_all='mounting a small tmpfs needs root'
	test_expect_success 'unmount the small disk' '
	umount disk
'

test_done
fi
mkdir disk qdisk
if ! mount -t tmpfs -o size=6m tmpfs disk 2>/dev/null; then
	skip_all='cannot mount a tmpfs here'
	test_expect_success 'unmount the small disk' '
	umount disk
'

test_done
fi
# a second one, big enough for the pocket model and its quantized files
# (23 MiB for the model, 20 MiB for Q8_0 and Q4_K_M and their LFS objects)
if ! mount -t tmpfs -o size=48m tmpfs qdisk 2>/dev/null; then
	umount disk
	skip_all='cannot mount a second tmpfs here'
	test_done
fi
# unmounted however the script ends
trap 'umount -l "$TRASH_DIRECTORY/disk" "$TRASH_DIRECTORY/qdisk" 2>/dev/null; gm_exit_trap' EXIT

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

# Quantize stores everything (the GGUF files under temporary names, then
# their LFS objects) before it renames anything into the work tree, so a
# disk that fills at any of those steps leaves the repository as it was.
on_qdisk () {
	HOME="$TRASH_DIRECTORY/qdisk/home" "$@"
}
QMODELS=qdisk/home/.local/share/git-model/models

# qstate: what quantize may change: HEAD, the work tree, the LFS store, the
# registry's revision, temporaries anywhere on the disk
qstate () {
	git -C "$QMODELS/pocket" rev-parse HEAD &&
	git -C "$QMODELS/pocket" status --porcelain --ignored &&
	ls -A "$QMODELS/pocket" &&
	(cd "$QMODELS/pocket" && find .git/lfs -type f | sort) &&
	on_qdisk git model list | awk "{ print \$1, \$2 }" &&
	find qdisk \( -name "*.tmp*" -o -name "*.lock" -o -name "clean-*" \) -print |
		grep -v "/models/\.[^/]*\.lock$" || :
}

# fill_to BYTES: leaves that much free on qdisk
fill_to () {
	rm -f qdisk/filler &&
	head -c $(( $(df -B1 --output=avail qdisk | tail -1) - $1 )) /dev/zero >qdisk/filler
}

test_expect_success 'setup: the pocket model on a 48 MiB disk' '
	mkdir -p qdisk/home &&
	on_qdisk git model import -q "$POCKET" pocket &&
	qstate >qstate.before &&
	df -B1 --output=used qdisk | tail -1 >qused.before
'

# 3 MiB: the Q8_0 file does not fit; 8: Q4_K_M does not; 13: both are
# written, the LFS object of Q8_0 does not fit; 18: that of Q4_K_M does not
for free in 3 8 13 18
do
	test_expect_success "quantize with $free MiB free: the disk named, the repository as it was" '
		fill_to $(('$free' * 1048576)) &&
		test_expect_code 1 on_qdisk git model quantize --type Q8_0 --type Q4_K_M pocket >out 2>err &&
		test_grep -i "no space left on device" err &&
		test_grep "the disk is full" err &&
		test_must_be_empty out &&
		rm qdisk/filler &&
		qstate >qstate.after &&
		test_cmp qstate.before qstate.after &&
		test "$(df -B1 --output=used qdisk | tail -1)" -le "$(($(cat qused.before) + 65536))"
	'
done

test_expect_success 'quantize -o FILE on the full disk: no FILE, no temporary' '
	fill_to $((2 * 1048576)) &&
	test_expect_code 1 git model quantize --type Q4_K_M -o qdisk/pocket.gguf "$POCKET" 2>err &&
	test_grep -i "no space left on device" err &&
	rm qdisk/filler &&
	test_path_is_missing qdisk/pocket.gguf &&
	qstate >qstate.after &&
	test_cmp qstate.before qstate.after
'

test_expect_success 'with the space freed, quantize completes: one commit, the registry follows' '
	on_qdisk git model quantize --type Q8_0 --type Q4_K_M pocket >out &&
	test_grep "^committed [0-9a-f]\{12\} in pocket\$" out &&
	git -C "$QMODELS/pocket" log --format=%s >log &&
	test_line_count = 2 log &&
	test_grep "^quantize [0-9a-f]\{12\} to Q8_0 (5.99 MiB), Q4_K_M (3.61 MiB)\$" log &&
	git -C "$QMODELS/pocket" status --porcelain >st &&
	test_must_be_empty st &&
	on_qdisk git model fsck pocket
'

test_expect_success 'unmount the small disks' '
	umount disk qdisk
'

test_done
