# lib-worktree.sh - shared by the worktree tests (t8000-t8002): a ~100 MB
# model, mount bookkeeping and disk use.  Source it after test-lib.sh.

MODELS="$HOME/.local/share/git-model/models"

# wt_mounts: the mount points under the trash directory, innermost first.
wt_mounts () {
	sed -n 's/^[^ ]* [^ ]* [^ ]* [^ ]* \([^ ]*\) .*/\1/p' /proc/self/mountinfo |
	sed 's/\\040/ /g' |
	while IFS= read -r gm_m; do
		case "$gm_m" in "$TRASH_DIRECTORY"/*) printf '%s\n' "$gm_m" ;; esac
	done | sort -r
}

# wt_umount_all: unmounts everything under the trash directory, so that a
# failed test leaves no mount behind (lazily: a test may still be in it).
wt_umount_all () {
	wt_mounts | while IFS= read -r gm_m; do
		umount -l "$gm_m" 2>/dev/null || fusermount3 -uz "$gm_m" 2>/dev/null ||
			fusermount -uz "$gm_m" 2>/dev/null
	done
	return 0
}

# For test_when_finished: a failed test leaves no mount for the next ones
# to trip on.
wt_umount_all_on_failure () {
	[ "$gm_eval_ret" = 0 ] || wt_umount_all
}

# wt_is_mounted DIR: DIR is a mount point; wt_mount_field DIR N: the Nth
# field after the " - " separator of its mountinfo line (1 type, 2 source).
wt_is_mounted () {
	wt_mounts | grep -qxF "$1"
}

wt_mount_field () {
	wt_mountinfo_line "$1" | awk -v n="$2" '{ for (i = 6; i <= NF; i++) if ($i == "-") { print $(i + n); exit } }'
}

# wt_mountinfo_line DIR: the line of /proc/self/mountinfo mounted at DIR.
wt_mountinfo_line () {
	WT_M=$(printf '%s' "$1" | sed 's/ /\\040/g') awk '$5 == ENVIRON["WT_M"]' /proc/self/mountinfo
}

# wt_du: kilobytes used under the trash directory, not crossing mounts
# (hard links counted once).
wt_du () {
	du -skx "$TRASH_DIRECTORY" | cut -f1
}

# wt_make_model NAME: a synthetic Qwen3 of about 100 MB (98 MB of bf16
# weights, the 11 MB tokenizer) imported as NAME; its source removed.
wt_make_model () {
	git model synth -q tiny --hidden 320 --layers 2 "src-$1" &&
	git model import -q "src-$1" "$1" >/dev/null &&
	rm -rf "src-$1"
}

# wt_can_overlay: root can mount overlayfs here (a throw-away mount).
wt_can_overlay () {
	mkdir -p .probe/l .probe/u .probe/w .probe/m &&
	mount -t overlay overlay -o "lowerdir=$PWD/.probe/l,upperdir=$PWD/.probe/u,workdir=$PWD/.probe/w" \
		"$PWD/.probe/m" 2>/dev/null &&
	umount "$PWD/.probe/m"
	gm_ret=$?
	rm -rf .probe
	return $gm_ret
}

# wt_can_fuse: fuse-overlayfs mounts here (a throw-away mount).
wt_can_fuse () {
	command -v fuse-overlayfs >/dev/null 2>&1 && [ -r /dev/fuse ] && [ -w /dev/fuse ] || return 1
	mkdir -p .probe/l .probe/u .probe/w .probe/m &&
	fuse-overlayfs -o "lowerdir=$PWD/.probe/l,upperdir=$PWD/.probe/u,workdir=$PWD/.probe/w" \
		"$PWD/.probe/m" >/dev/null 2>&1 &&
	{ umount "$PWD/.probe/m" 2>/dev/null || fusermount3 -u "$PWD/.probe/m" 2>/dev/null ||
		fusermount -u "$PWD/.probe/m"; }
	gm_ret=$?
	rm -rf .probe
	return $gm_ret
}

# wt_oid FILE: the sha256 of FILE (what its LFS object is named).
wt_oid () {
	sha256sum <"$1" | cut -d" " -f1
}
