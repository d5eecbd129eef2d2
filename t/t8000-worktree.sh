#!/bin/sh
test_description='git model checkout and worktree: overlay worktrees of a 100 MB model share its large files'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"
. "$GM_SRC_DIR/t/lib-worktree.sh"

R="$MODELS/big"
W1="$TRASH_DIRECTORY/wt1"
W2="$TRASH_DIRECTORY/wt2"

if ! test_have_prereq ROOT; then
	skip_all='overlay mounts need root here (t8002 covers unprivileged users)'
	test_done
fi
if ! wt_can_overlay; then
	skip_all='this kernel or filesystem cannot mount overlayfs (mount -t overlay failed)'
	test_done
fi

test_expect_success 'usage: checkout and worktree are git model commands' '
	test_expect_code 129 git model -h >out &&
	test_grep "^  *checkout " out &&
	test_grep "^  *worktree " out &&
	test_expect_code 129 git model worktree -h >out &&
	for s in add list rm prune repair; do test_grep "^  *$s " out || return 1; done &&
	test_expect_code 129 git model checkout &&
	test_expect_code 129 git model checkout big@x --driver zfs 2>err &&
	test_grep "unknown driver .zfs.: expected auto, overlay, fuse, reflink, hardlink or copy" err &&
	test_expect_code 129 git model worktree rm
'

# Interrupted (^C): no mount is left behind.
trap 'wt_umount_all; exit 1' INT TERM HUP

test_expect_success 'setup: a 100 MB model, imported' '
	wt_make_model big &&
	git -C "$R" cat-file blob HEAD:model.safetensors >ptr &&
	test_grep "^oid sha256:" ptr &&
	wt_oid "$R/model.safetensors" >base-oid
'

test_expect_success 'an unregistered model is refused' '
	test_must_fail git model checkout nosuch@x 2>err &&
	test_grep "nosuch" err &&
	test_path_is_missing "$MODELS/nosuch@x"
'

test_expect_success 'two worktrees take far less than 100 MB' '
	test_when_finished "wt_umount_all_on_failure" &&
	before=$(wt_du) &&
	git model checkout big@exp1 --worktree "$W1" >out &&
	test_grep "^worktree $W1 on branch .exp1. (overlay)" out &&
	git model checkout big@exp2 --worktree "$W2" &&
	after=$(wt_du) &&
	echo "disk use grew by $((after - before)) KiB for two worktrees" &&
	test $((after - before)) -lt 2048 &&
	wt_is_mounted "$W1" &&
	wt_is_mounted "$W2" &&
	cmp "$R/model.safetensors" "$W1/model.safetensors" &&
	cmp "$R/tokenizer.json" "$W2/tokenizer.json" &&
	cmp "$R/config.json" "$W2/config.json" &&
	test "$(git -C "$W1" rev-parse --abbrev-ref HEAD)" = exp1 &&
	test "$(git -C "$W2" rev-parse --abbrev-ref HEAD)" = exp2
'
test_expect_success 'the mounts are nosuid, nodev, without redirect_dir or metacopy' '
	wt_mountinfo_line "$W1" >line &&
	cat line &&
	opts=$(cut -d" " -f6 line) &&
	echo "$opts" &&
	case ",$opts," in *,nosuid,*) ;; *) false ;; esac &&
	case ",$opts," in *,nodev,*) ;; *) false ;; esac &&
	test "$(wt_mount_field "$W1" 1)" = overlay &&
	! grep -E "redirect_dir=on|redirect_dir=follow|metacopy=on" line
'

test_expect_success 'worktree list tells the driver, the mount and the disk use' '
	git model worktree list >out &&
	cat out &&
	test_line_count = 2 out &&
	test_grep "^$W1  big@exp1  overlay, mounted  used .* of .* MiB" out &&
	test_grep "^$W2  big@exp2  overlay, mounted" out &&
	used=$(sed -n "s|^$W1 .*(\([0-9]*\) of \([0-9]*\) bytes)\$|\1|p" out) &&
	full=$(sed -n "s|^$W1 .*(\([0-9]*\) of \([0-9]*\) bytes)\$|\2|p" out) &&
	test "$used" -lt 1048576 &&
	test "$full" -gt 100000000 &&
	git model worktree list -v big >out &&
	test_grep "shared lower layer: $R/.git/git-model/cow/lower/" out &&
	test "$(grep -c "shared lower layer" out)" = 2 &&
	test "$(sed -n "s/.*shared lower layer: //p" out | sort -u | wc -l)" = 1
'

test_expect_success 'git sees both worktrees unmodified' '
	git -C "$W1" status --porcelain >st &&
	test_must_be_empty st &&
	git -C "$W2" status --porcelain >st &&
	test_must_be_empty st
'

test_expect_success 'a model in a worktree loads' '
	git infer -m "$W1" --check >out &&
	test_grep "^ok" out
'

test_expect_success 'an edit in one worktree is invisible in the other, the base and the store' '
	printf "changed" | dd of="$W1/model.safetensors" bs=1 seek=1000 conv=notrunc 2>/dev/null &&
	echo new >"$W1/notes.txt" &&
	! cmp -s "$R/model.safetensors" "$W1/model.safetensors" &&
	cmp "$R/model.safetensors" "$W2/model.safetensors" &&
	test_path_is_missing "$W2/notes.txt" &&
	test_path_is_missing "$R/notes.txt" &&
	test "$(wt_oid "$R/model.safetensors")" = "$(cat base-oid)" &&
	oid=$(cat base-oid) &&
	obj="$R/.git/lfs/objects/$(echo $oid | cut -c1-2)/$(echo $oid | cut -c3-4)/$oid" &&
	test "$(wt_oid "$obj")" = "$oid" &&
	git -C "$W1" status --porcelain >st &&
	test_grep "^ M model.safetensors" st &&
	test_grep "^?? notes.txt" st &&
	git -C "$W2" status --porcelain >st &&
	test_must_be_empty st
'

test_expect_success 'only the changed file is charged to the worktree' '
	git model worktree list >out &&
	used=$(sed -n "s|^$W1 .*(\([0-9]*\) of \([0-9]*\) bytes)\$|\1|p" out) &&
	test "$used" -gt 90000000 &&
	used2=$(sed -n "s|^$W2 .*(\([0-9]*\) of \([0-9]*\) bytes)\$|\1|p" out) &&
	test "$used2" -lt 1048576
'

test_expect_success 'a commit in a worktree stays on its branch' '
	git -C "$W1" add notes.txt model.safetensors &&
	git -C "$W1" commit -q -m "experiment 1" &&
	git -C "$W1" status --porcelain >st &&
	test_must_be_empty st &&
	git -C "$R" cat-file blob exp1:model.safetensors >ptr1 &&
	test_grep "^oid sha256:$(wt_oid "$W1/model.safetensors")" ptr1 &&
	test "$(git -C "$R" rev-parse main)" = "$(git -C "$R" rev-parse exp2)"
'

test_expect_success 'reboot: worktree repair re-mounts what is not mounted' '
	umount "$W1" &&
	umount "$W2" &&
	test_path_is_missing "$W1/model.safetensors" &&
	git model worktree list >out &&
	test_grep "^$W1  big@exp1  overlay, not mounted (git model worktree repair)" out &&
	git model worktree repair >out &&
	test_grep "^re-mounted 2" out &&
	wt_is_mounted "$W1" &&
	wt_is_mounted "$W2" &&
	test_path_is_file "$W1/notes.txt" &&
	! cmp -s "$R/model.safetensors" "$W1/model.safetensors" &&
	cmp "$R/model.safetensors" "$W2/model.safetensors" &&
	git -C "$W1" status --porcelain >st &&
	test_must_be_empty st &&
	git model worktree repair >out &&
	test_grep "^re-mounted 0" out
'

test_expect_success 'reboot: the next checkout of a worktree re-mounts it' '
	umount "$W2" &&
	git model checkout big@exp2 --worktree "$W2" &&
	wt_is_mounted "$W2" &&
	cmp "$R/model.safetensors" "$W2/model.safetensors"
'

test_expect_success 'reboot: a lower layer that was deleted is rebuilt' '
	umount "$W2" &&
	lower=$(git model worktree list -v big | sed -n "s/.*shared lower layer: //p" | sort -u | head -1) &&
	umount "$W1" &&
	rm -rf "$lower" &&
	git model worktree repair big &&
	test_path_is_dir "$lower" &&
	cmp "$R/model.safetensors" "$W2/model.safetensors"
'

test_expect_success 'files written into an unmounted worktree are not hidden by a mount' '
	umount "$W2" &&
	echo stray >"$W2/stray" &&
	test_must_fail git model worktree repair "$W2" 2>err &&
	test_grep "is not mounted and not empty" err &&
	! wt_is_mounted "$W2" &&
	rm "$W2/stray" &&
	git model worktree repair "$W2" &&
	wt_is_mounted "$W2"
'

test_expect_success 'a worktree directory that exists and is not empty is refused' '
	mkdir full && echo x >full/x &&
	test_must_fail git model checkout big@exp3 --worktree full 2>err &&
	test_grep "already exists and is not an empty directory" err &&
	test_must_fail git -C "$R" rev-parse --verify -q exp3
'

test_expect_success 'a branch checked out elsewhere is refused' '
	test_must_fail git model checkout big@exp1 --worktree wt3 2>err &&
	cat err &&
	test_path_is_missing wt3 &&
	git model worktree list big >out &&
	test_line_count = 2 out
'

test_expect_success 'rm refuses changes without --force, and keeps the lower layer another worktree uses' '
	echo more >>"$W1/notes.txt" &&
	test_must_fail git model worktree rm "$W1" 2>err &&
	test_grep "has changes that are not committed" err &&
	wt_is_mounted "$W1" &&
	lower=$(git model worktree list -v big | sed -n "s/.*shared lower layer: //p" | sort -u | head -1) &&
	git model worktree rm --force "$W1" &&
	! wt_is_mounted "$W1" &&
	test_path_is_missing "$W1" &&
	test_path_is_missing "$R/.git/worktrees/wt1" &&
	test_path_is_dir "$lower" &&
	cmp "$R/model.safetensors" "$W2/model.safetensors" &&
	git model worktree list big >out &&
	test_line_count = 1 out &&
	git -C "$R" rev-parse --verify -q exp1
'

test_expect_success 'rm of the last worktree of a blob set deletes its lower layer' '
	lower=$(git model worktree list -v big | sed -n "s/.*shared lower layer: //p") &&
	test_path_is_dir "$lower" &&
	git model worktree rm "$W2" &&
	test_path_is_missing "$W2" &&
	test_path_is_missing "$lower" &&
	git model worktree list big >out &&
	test_must_be_empty out &&
	test "$(wt_oid "$R/model.safetensors")" = "$(cat base-oid)"
'

test_expect_success 'prune forgets worktrees whose directory was deleted, unmounting nothing in use' '
	git model checkout big@exp4 &&
	git model checkout big@exp5 &&
	test_path_is_dir "$R@exp4" &&
	umount "$R@exp4" &&
	rm -rf "$R@exp4" &&
	git model worktree prune >out &&
	test_grep "^pruned 1" out &&
	git model worktree list big >out &&
	test_line_count = 1 out &&
	test_grep "big@exp5" out &&
	wt_is_mounted "$R@exp5" &&
	cmp "$R/model.safetensors" "$R@exp5/model.safetensors" &&
	git model worktree rm "$R@exp5" &&
	ls "$R/.git/git-model/cow/lower" >lowers &&
	test_must_be_empty lowers
'

test_expect_success 'nothing is left mounted' '
	wt_mounts >mounts &&
	test_must_be_empty mounts
'

wt_umount_all
test_done
