#!/bin/sh
test_description='git model checkout --driver: each way of sharing large files forced in turn'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"
. "$GM_SRC_DIR/t/lib-worktree.sh"

R="$MODELS/big"

# What this machine can do, each with the reason when it cannot.
if test_have_prereq ROOT && wt_can_overlay; then
	test_set_prereq OVERLAY
else
	echo "# overlay: needs root and a kernel that mounts overlayfs here" >&5
fi
if wt_can_fuse; then
	test_set_prereq FUSE
else
	echo "# fuse: fuse-overlayfs is not installed, /dev/fuse is not usable, or it cannot mount here" >&5
fi
echo probe >reflink-probe
if cp --reflink=always reflink-probe reflink-probe.2 2>/dev/null; then
	test_set_prereq REFLINK
else
	echo "# reflink: this filesystem has no reflinks (the refusal is tested instead)" >&5
fi
rm -f reflink-probe reflink-probe.2

# two_worktrees DRIVER MAX_KIB: two worktrees made with DRIVER grow the disk
# use by less than MAX_KIB; the growth is printed for the record.
two_worktrees () {
	before=$(wt_du) &&
	git model checkout "big@$1-a" --driver "$1" >out &&
	test_grep "^worktree $R@$1-a on branch .$1-a. ($1)" out &&
	git model checkout "big@$1-b" --driver "$1" &&
	after=$(wt_du) &&
	echo "$1: two worktrees of a $(($(wt_full) / 1024)) KiB model took $((after - before)) KiB" >>numbers &&
	tail -1 numbers &&
	test $((after - before)) -lt "$2" &&
	git model worktree list big >list &&
	test_grep "^$R@$1-a  big@$1-a  $1" list &&
	test_grep "^$R@$1-b  big@$1-b  $1" list &&
	cmp "$R/model.safetensors" "$R@$1-a/model.safetensors" &&
	cmp "$R/tokenizer.json" "$R@$1-b/tokenizer.json"
}

wt_full () {
	echo $(( $(test_file_size "$R/model.safetensors") + $(test_file_size "$R/tokenizer.json") ))
}

# isolated DRIVER: an edit in worktree a is seen neither in b, nor in the
# base, nor in the LFS object.
isolated () {
	chmod u+w "$R@$1-a/model.safetensors" &&
	printf "changed" | dd of="$R@$1-a/model.safetensors" bs=1 seek=1000 conv=notrunc 2>/dev/null &&
	! cmp -s "$R@$1-a/model.safetensors" "$R/model.safetensors" &&
	cmp "$R@$1-b/model.safetensors" "$R/model.safetensors" &&
	test "$(wt_oid "$R/model.safetensors")" = "$(cat base-oid)" &&
	test "$(wt_oid "$OBJ")" = "$(cat base-oid)" &&
	git -C "$R@$1-a" status --porcelain >st &&
	test_grep "^ M model.safetensors" st &&
	git -C "$R@$1-b" status --porcelain >st &&
	test_must_be_empty st
}

remove_both () {
	git model worktree rm --force "$R@$1-a" &&
	git model worktree rm "$R@$1-b" &&
	test_path_is_missing "$R@$1-a" &&
	test_path_is_missing "$R@$1-b" &&
	git model worktree list big >list &&
	test_must_be_empty list
}

# Interrupted (^C): no mount is left behind.
trap 'wt_umount_all; exit 1' INT TERM HUP

test_expect_success 'setup: a 100 MB model, imported' '
	wt_make_model big &&
	wt_oid "$R/model.safetensors" >base-oid &&
	oid=$(cat base-oid) &&
	echo "$R/.git/lfs/objects/$(echo $oid | cut -c1-2)/$(echo $oid | cut -c3-4)/$oid" >obj-path
'
OBJ=$(cat obj-path 2>/dev/null)

test_expect_success OVERLAY 'overlay, forced: shared, isolated' '
	test_when_finished "wt_umount_all_on_failure" &&
	two_worktrees overlay 2048 &&
	isolated overlay &&
	remove_both overlay
'

test_expect_success FUSE 'fuse (fuse-overlayfs), forced: shared, isolated' '
	test_when_finished "wt_umount_all_on_failure" &&
	two_worktrees fuse 2048 &&
	test "$(wt_mount_field "$R@fuse-a" 1)" = fuse.fuse-overlayfs &&
	wt_mountinfo_line "$R@fuse-a" | cut -d" " -f6 | grep nosuid &&
	isolated fuse &&
	git model worktree list -v big >list &&
	test_grep "shared lower layer" list &&
	umount "$R@fuse-b" &&
	git model worktree repair >out &&
	test_grep "^re-mounted 1" out &&
	remove_both fuse
'

test_expect_success !FUSE 'fuse, forced where it cannot work, fails with the reason' '
	test_must_fail git model checkout big@fuse-a --driver fuse 2>err &&
	test_grep "driver fuse is not available here: fuse: " err &&
	test_path_is_missing "$R@fuse-a"
'

test_expect_success REFLINK 'reflink, forced: shared, isolated' '
	two_worktrees reflink 4096 &&
	isolated reflink &&
	remove_both reflink
'

test_expect_success !REFLINK 'reflink, forced on a filesystem without reflinks, fails with the reason' '
	test_must_fail git model checkout big@reflink-a --driver reflink 2>err &&
	test_grep "driver reflink is not available here: reflink: the filesystem does not support reflinks" err &&
	test_path_is_missing "$R@reflink-a" &&
	test_must_fail git -C "$R" rev-parse --verify -q reflink-a &&
	git model worktree list big >list &&
	test_must_be_empty list
'

# Where this filesystem has no reflinks, a loop-mounted XFS (reflink=1 by
# default) has: the reflink driver is then tested for real there.
if test_have_prereq ROOT,!REFLINK && command -v mkfs.xfs >/dev/null 2>&1 &&
	truncate -s 512M xfs.img && mkfs.xfs -q xfs.img >/dev/null 2>&1 && mkdir xfs &&
	mount -o loop xfs.img xfs 2>/dev/null; then
	umount xfs
	test_set_prereq XFS_LOOP
else
	echo "# reflink on a loop-mounted XFS: needs root, mkfs.xfs (xfsprogs) and loop devices" >&5
fi
rm -f xfs.img

test_expect_success XFS_LOOP 'reflink, forced, on XFS: two worktrees share the blocks, edits stay apart' '
	test_when_finished "umount xfs 2>/dev/null; rm -f xfs.img; true" &&
	truncate -s 512M xfs.img && mkfs.xfs -q xfs.img && mount -o loop xfs.img xfs &&
	X="$TRASH_DIRECTORY/xfs/models/bigx" &&
	GIT_MODEL_HOME="$TRASH_DIRECTORY/xfs/models" wt_make_model bigx &&
	test_path_is_dir "$X/.git" &&
	before=$(df -k --output=used xfs | tail -1) &&
	git model checkout bigx@r1 --driver reflink >out &&
	test_grep "(reflink)" out &&
	git model checkout bigx@r2 --driver reflink &&
	after=$(df -k --output=used xfs | tail -1) &&
	echo "reflink: two worktrees of a $(($(wt_full) / 1024)) KiB model took $((after - before)) KiB (XFS)" >>numbers &&
	tail -1 numbers &&
	test $((after - before)) -lt 4096 &&
	cmp "$X/model.safetensors" "$X@r1/model.safetensors" &&
	git model worktree list bigx >list &&
	cat list &&
	used=$(sed -n "s|^$X@r1 .*(\([0-9]*\) of \([0-9]*\) bytes)\$|\1|p" list) &&
	test "$used" -lt 1048576 &&
	printf "changed" | dd of="$X@r1/model.safetensors" bs=1 seek=1000 conv=notrunc 2>/dev/null &&
	! cmp -s "$X/model.safetensors" "$X@r1/model.safetensors" &&
	cmp "$X/model.safetensors" "$X@r2/model.safetensors" &&
	oid=$(wt_oid "$X/model.safetensors") &&
	test "$(wt_oid "$X/.git/lfs/objects/$(echo $oid | cut -c1-2)/$(echo $oid | cut -c3-4)/$oid")" = "$oid" &&
	git -C "$X@r1" status --porcelain >st &&
	test_grep "^ M model.safetensors" st &&
	git model worktree rm --force "$X@r1" &&
	git model worktree rm "$X@r2" &&
	umount xfs
'

test_expect_success ROOT 'hardlink, forced as root, is refused: root would write through into the store' '
	test_must_fail git model checkout big@hardlink-a --driver hardlink 2>err &&
	test_grep "driver hardlink is not available here: hardlink: running as root" err &&
	test_path_is_missing "$R@hardlink-a"
'

test_expect_success !ROOT 'hardlink, forced: shared, and a write is refused' '
	two_worktrees hardlink 2048 &&
	test_must_fail sh -c "echo x >>\"$R@hardlink-a/model.safetensors\"" &&
	test "$(wt_oid "$OBJ")" = "$(cat base-oid)" &&
	remove_both hardlink
'

test_expect_success 'copy, forced: full copies, isolated' '
	two_worktrees copy 400000 &&
	isolated copy &&
	git model worktree list big >list &&
	used=$(sed -n "s|^$R@copy-b .*(\([0-9]*\) of \([0-9]*\) bytes)\$|\1|p" list) &&
	test "$used" -gt 100000000 &&
	remove_both copy
'

test_expect_success !OVERLAY 'overlay, forced where it cannot work, fails with the reason' '
	test_must_fail git model checkout big@overlay-a --driver overlay 2>err &&
	test_grep "driver overlay is not available here: overlay: " err &&
	test_path_is_missing "$R@overlay-a"
'

test_expect_success 'auto picks the best driver that works, and says why not better ones' '
	git model checkout big@auto >out &&
	driver=$(sed -n "s/^worktree .* (\(.*\))\$/\1/p" out) &&
	if test_have_prereq OVERLAY; then
		test "$driver" = overlay
	elif test_have_prereq FUSE; then
		test "$driver" = fuse && test_grep "not better because: overlay: " out
	else
		test_grep "not better because: overlay: " out
	fi &&
	git model worktree rm "$R@auto"
'

test_expect_success 'the numbers' '
	cat numbers &&
	wt_mounts >mounts &&
	test_must_be_empty mounts
'

wt_umount_all
test_done
