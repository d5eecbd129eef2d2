#!/bin/sh
test_description='worktrees of an unprivileged user: through the setuid mount helper, in a user namespace, with hard links; the helper refuses hostile input'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"
. "$GM_SRC_DIR/t/lib-worktree.sh"

if ! test_have_prereq ROOT; then
	skip_all='creating a user and a setuid helper needs root'
	test_done
fi
for gm_tool in useradd userdel setpriv; do
	if ! command -v $gm_tool >/dev/null 2>&1; then
		skip_all="$gm_tool is not installed"
		test_done
	fi
done
if ! wt_can_overlay; then
	skip_all='this kernel or filesystem cannot mount overlayfs (mount -t overlay failed)'
	test_done
fi

U=gmwt$$
UHOME="$TRASH_DIRECTORY/u"
HELPER="$TRASH_DIRECTORY/helper/git-model-mount"
UMODELS="$UHOME/.local/share/git-model/models"
M="$UMODELS/m"
A="$M/.git/git-model/t"        # scratch directories inside the user's model area

# as_user CMD: runs CMD as the test user, in its home, with its own
# registry, the commands under test and the setuid copy of the helper.
as_user () {
	setpriv --reuid="$U" --regid="$U" --clear-groups \
		env HOME="$UHOME" XDG_CONFIG_HOME="$UHOME/.config" XDG_CACHE_HOME="$UHOME/.cache" \
		GIT_MODEL_MOUNT="$HELPER" sh -c "cd \"\$HOME\" && $1"
}

# helper ARGS: the helper run directly by the user (arguments as given).
helper () {
	setpriv --reuid="$U" --regid="$U" --clear-groups env HOME="$UHOME" "$HELPER" "$@"
}

# mount_count: the mounts under the trash directory, and the mounts made
# for the test user anywhere (the helper marks each with its uid); no
# refusal may change it.  (Not all of /proc/self/mountinfo: tests running
# in parallel mount and unmount too.)
mount_count () {
	{ wt_mounts; grep -F " git-model-mount-$(id -u "$U") " /proc/self/mountinfo; } | wc -l
}

# refused WHY ARGS: the helper refuses ARGS saying WHY, and mounts nothing.
refused () {
	gm_why=$1
	shift
	gm_before=$(mount_count)
	test_must_fail helper "$@" 2>err &&
	cat err &&
	test_grep "$gm_why" err &&
	test "$(mount_count)" = "$gm_before"
}

cleanup_all () {
	wt_umount_all
	userdel "$U" 2>/dev/null
	return 0
}

# Interrupted (^C): no user and no mount is left behind.
trap 'cleanup_all; exit 1' INT TERM HUP

test_expect_success 'setup: a user, its home, a setuid copy of the helper' '
	useradd -M -d "$UHOME" -s /bin/sh "$U" &&
	mkdir "$UHOME" && chown "$U:$U" "$UHOME" &&
	mkdir helper &&
	cp "$GM_BUILD_DIR/git-model-mount/git-model-mount" "$HELPER" &&
	chown root:root "$HELPER" && chmod 4755 "$HELPER" &&
	as_user "test \$(id -u) != 0"
'

test_expect_success 'setup: the user imports a model' '
	as_user "git model synth -q tiny src && git model import -q src m >/dev/null && rm -rf src" &&
	test_path_is_dir "$M/.git" &&
	test "$(stat -c %U "$M")" = "$U" &&
	wt_oid "$M/model.safetensors" >base-oid
'

test_expect_success 'a worktree through the helper is an overlay the user owns' '
	test_when_finished "wt_umount_all_on_failure" &&
	as_user "git model checkout m@h1 >out" &&
	test_grep "(overlay)" "$UHOME/out" &&
	wt_is_mounted "$M@h1" &&
	test "$(wt_mount_field "$M@h1" 1)" = overlay &&
	test "$(wt_mount_field "$M@h1" 2)" = "git-model-mount-$(id -u "$U")" &&
	wt_mountinfo_line "$M@h1" | cut -d" " -f6 >opts &&
	test_grep nosuid opts &&
	test_grep nodev opts &&
	wt_mountinfo_line "$M@h1" >line &&
	! grep -E "redirect_dir=on|redirect_dir=follow|metacopy=on" line &&
	test "$(stat -c %U "$M@h1/model.safetensors")" = "$U" &&
	as_user "git model worktree list" >list &&
	test_grep "^$M@h1  m@h1  overlay, mounted" list
'

test_expect_success 'the user edits a large file in the worktree; base and store untouched' '
	as_user "git model checkout m@h2" &&
	as_user "chmod u+w \"$M@h1/model.safetensors\" && echo x >>\"$M@h1/model.safetensors\"" &&
	! cmp -s "$M/model.safetensors" "$M@h1/model.safetensors" &&
	cmp "$M/model.safetensors" "$M@h2/model.safetensors" &&
	test "$(wt_oid "$M/model.safetensors")" = "$(cat base-oid)" &&
	as_user "git -C \"$M@h1\" status --porcelain" >st &&
	test_grep "^ M model.safetensors" st
'

test_expect_success 'reboot: the user re-mounts through the helper' '
	umount "$M@h1" && umount "$M@h2" &&
	as_user "git model worktree repair" >out &&
	test_grep "^re-mounted 2" out &&
	wt_is_mounted "$M@h1" &&
	! cmp -s "$M/model.safetensors" "$M@h1/model.safetensors"
'

test_expect_success 'rm unmounts through the helper and deletes everything, overlay work dirs included' '
	as_user "git model worktree rm --force \"$M@h1\" && git model worktree rm \"$M@h2\"" &&
	! wt_is_mounted "$M@h1" &&
	test_path_is_missing "$M@h1" &&
	test_path_is_missing "$M@h2" &&
	find "$M/.git/git-model/cow/wt" "$M/.git/git-model/cow/lower" -mindepth 1 >left &&
	test_must_be_empty left
'

test_expect_success 'setup: scratch layers in the user'\''s area, and outside it' '
	as_user "mkdir -p \"$A/l\" \"$A/u\" \"$A/w\" \"$A/t\" \"$A/t2\" \"$A/tm\" \"$A/full\" outside/u outside/t &&
		echo x >\"$A/full/x\" && echo lower >\"$A/l/file\" &&
		ln -s \"$UHOME/outside\" \"$A/link\"" &&
	mkdir "$A/rootdir" "$A/rootdir2"
'

test_expect_success 'the helper mounts and unmounts valid layers (so the refusals below mean something)' '
	helper mount "$A/l" "$A/u" "$A/w" "$A/t" >out &&
	test_grep "^mounted overlay on $A/t" out &&
	test "$(cat "$A/t/file")" = lower &&
	test "$(wt_mount_field "$A/t" 2)" = "git-model-mount-$(id -u "$U")" &&
	refused "already a mount point" mount "$A/l" "$A/u" "$A/w" "$A/t" &&
	helper umount "$A/t" &&
	! wt_is_mounted "$A/t"
'

test_expect_success 'refused: option injection characters' '
	nl="$(printf "%s/n\nx" "$A")" &&
	mkdir "$A/c,x" "$A/c:x" "$A/c=x" "$A/c\\x" "$nl" &&
	chown "$U" "$A/c,x" "$A/c:x" "$A/c=x" "$A/c\\x" "$nl" &&
	refused "option syntax" mount "$A/l,upperdir=/tmp" "$A/u" "$A/w" "$A/t" &&
	refused "option syntax" mount "$A/l" "$A/c,x" "$A/w" "$A/t" &&
	refused "option syntax" mount "$A/l:/etc" "$A/u" "$A/w" "$A/t" &&
	refused "option syntax" mount "$A/l" "$A/u" "$A/c=x" "$A/t" &&
	refused "option syntax" mount "$A/l" "$A/u" "$A/w" "$A/c\\x" &&
	refused "newline" mount "$A/l" "$A/u" "$A/w" "$nl" &&
	refused "not an absolute path" mount l u w t
'

test_expect_success 'refused: traversal and paths outside the registered areas' '
	refused "not normalized" mount "$A/../../../../../../../../etc" "$A/u" "$A/w" "$A/t" &&
	refused "outside your registered model areas" mount "$A/l" "$UHOME/outside/u" "$A/w" "$A/t" &&
	refused "outside your registered model areas" mount "$A/l" "$A/u" "$A/w" "$UHOME/outside/t" &&
	refused "outside your registered model areas" mount /etc "$A/u" "$A/w" "$A/t" &&
	refused "outside your registered model areas" umount /tmp
'

test_expect_success 'refused: a symbolic link resolving outside the area' '
	refused "resolves to\\|outside your registered model areas" mount "$A/l" "$A/link/u" "$A/w" "$A/t" &&
	refused "outside your registered model areas" mount "$A/l" "$A/u" "$A/w" "$A/link/t"
'

test_expect_success 'refused: layers and mount points not owned by the user' '
	refused "not a directory owned by you" mount "$A/l" "$A/rootdir" "$A/w" "$A/t" &&
	refused "not a directory owned by you" mount "$A/l" "$A/u" "$A/rootdir" "$A/t" &&
	refused "not a directory owned by you" mount "$A/rootdir" "$A/u" "$A/w" "$A/t" &&
	refused "not a directory owned by you" mount "$A/l" "$A/u" "$A/w" "$A/rootdir2"
'

test_expect_success 'refused: a mount point that is not empty' '
	refused "is not empty" mount "$A/l" "$A/u" "$A/w" "$A/full"
'

test_expect_success 'refused: unmounting what the helper did not mount for this user' '
	test_when_finished "umount \"$A/tm\" 2>/dev/null; umount \"$A/t2\" 2>/dev/null; true" &&
	mount -t tmpfs -o "uid=$(id -u "$U"),gid=$(id -g "$U")" gm-test "$A/tm" &&
	refused "was not mounted by git-model-mount for you" umount "$A/tm" &&
	wt_is_mounted "$A/tm" &&
	umount "$A/tm" &&
	mount -t overlay git-model-mount-0 -o "lowerdir=$A/l,upperdir=$A/u,workdir=$A/w" "$A/tm" &&
	refused "was not mounted by git-model-mount for you" umount "$A/tm" &&
	wt_is_mounted "$A/tm" &&
	umount "$A/tm" &&
	refused "is not a mount point" umount "$A/t2"
'

test_expect_success 'refused: a registry that is not the user'\''s' '
	cp "$UHOME/.local/share/git-model/registry.db" foreign.db &&
	chmod 644 foreign.db &&
	gm_before=$(mount_count) &&
	test_must_fail setpriv --reuid="$U" --regid="$U" --clear-groups \
		env GIT_MODEL_REGISTRY="$TRASH_DIRECTORY/foreign.db" \
		"$HELPER" mount "$A/l" "$A/u" "$A/w" "$A/t" 2>err &&
	test_grep "is not your registry" err &&
	test "$(mount_count)" = "$gm_before"
'

test_expect_success 'hard links: the user cannot write through them into the store' '
	as_user "git model checkout m@hl --driver hardlink" >out &&
	test_grep "(hardlink)" out &&
	test "$(stat -c %h "$M@hl/model.safetensors")" -gt 1 &&
	test_must_fail as_user "echo x >>\"$M@hl/model.safetensors\"" &&
	test "$(wt_oid "$M@hl/model.safetensors")" = "$(cat base-oid)" &&
	as_user "git model worktree list m" >list &&
	test_grep "^$M@hl  m@hl  hardlink  used" list &&
	as_user "git model worktree rm \"$M@hl\""
'

if setpriv --reuid="$U" --regid="$U" --clear-groups unshare -Urm true 2>/dev/null; then
	test_set_prereq USERNS
else
	echo "# user namespaces: unprivileged 'unshare -Urm' is not allowed here" >&5
fi

test_expect_success USERNS 'in a user namespace the user mounts an overlay (userxattr) without the helper' '
	cat >"$UHOME/ns1.sh" <<-EOF &&
	unset GIT_MODEL_MOUNT
	git model checkout m@ns --driver overlay &&
	git model worktree list m >ns-list &&
	grep userxattr /proc/self/mountinfo >ns-mounts &&
	chmod u+w "$M@ns/model.safetensors" &&
	echo y >>"$M@ns/model.safetensors" &&
	git -C "$M@ns" status --porcelain >ns-status
	EOF
	as_user "unshare -Urm sh ns1.sh" &&
	test_grep "^$M@ns  m@ns  overlay, mounted" "$UHOME/ns-list" &&
	test_grep "m@ns" "$UHOME/ns-mounts" &&
	test_grep "^ M model.safetensors" "$UHOME/ns-status" &&
	! wt_is_mounted "$M@ns" &&
	as_user "git model worktree list m" >list &&
	test_grep "^$M@ns  m@ns  overlay, not mounted" list &&
	test "$(wt_oid "$M/model.safetensors")" = "$(cat base-oid)"
'

test_expect_success USERNS 'a later namespace re-mounts it, with the edit kept' '
	cat >"$UHOME/ns2.sh" <<-EOF &&
	unset GIT_MODEL_MOUNT
	git model worktree repair >ns-repair &&
	! cmp -s "$M/model.safetensors" "$M@ns/model.safetensors" &&
	git model worktree rm --force "$M@ns"
	EOF
	as_user "unshare -Urm sh ns2.sh" &&
	test_grep "^re-mounted 1" "$UHOME/ns-repair" &&
	test_path_is_missing "$M@ns"
'

test_expect_success 'nothing is left mounted' '
	wt_mounts >mounts &&
	test_must_be_empty mounts
'

cleanup_all
test_done
