# lib-crash.sh - kill a writing command at many points, check what it leaves.
#
#	. "$GM_SRC_DIR/t/lib-crash.sh"
#	crash_sweep NAME K CMD...
#
# A scenario NAME is a template directory tmpl.NAME (the state before the
# command: a home directory home/ with the registry, and whatever the command
# reads) and a function state_NAME that prints the state after the command
# (run in the state's directory, HOME=home: what must be the same however the
# command got there).  The registry keeps absolute paths, so a state is
# always used at the same place, ./st: make it there and save it with
# crash_save NAME.  crash_sweep:
#
#   1. runs CMD on a copy of the template with t/lib/crashpoint.c preloaded,
#      counting the command's file-system changes (its "points": writes,
#      renames, links, unlinks, mkdirs... of it and of the git processes it
#      starts), and records state_NAME;
#   2. for K points spread evenly over them (all of them when K is "all"),
#      on a fresh copy: runs CMD killed with SIGKILL, with every process it
#      started, just before that point; checks the copy is consistent
#      (crash_consistent, and check_NAME when the scenario defines one: for
#      what the registry does not reach, say a remote or a plain repository);
#      then, unless the state is already the clean run's
#      (killed after the work was done), runs CMD again (or rerun_NAME CMD...
#      when the scenario defines how an interrupted command is resumed),
#      which must succeed, and compares state_NAME with the clean run's.
#
# The commands run under setsid, so that the kill takes their children
# along and not the test.

CRASH_LIB="$GM_BUILD_DIR/t/lib/.libs/crashpoint.so"
if test -f "$CRASH_LIB" && command -v setsid >/dev/null
then
	test_set_prereq CRASHPOINT
fi

# crash_run DIR POINT CMD...: CMD in DIR (HOME=DIR/home), dying at POINT (0:
# never); DIR.rc gets its exit status, DIR.log its output; prints the points.
crash_run () {
	gm_d=$1 gm_p=$2
	shift 2
	head -c 8 /dev/zero >"$gm_d.counter"
	(cd "$gm_d" && HOME="$gm_d/home" GM_CRASH_COUNTER="$gm_d.counter" GM_CRASH_AT=$gm_p \
		LD_PRELOAD="$CRASH_LIB" setsid -w "$@" >"$gm_d.log" 2>&1 </dev/null)
	echo $? >"$gm_d.rc"
	od -An -tu8 "$gm_d.counter" | tr -d " "
}

# crash_consistent: in a state's directory (HOME=home), after a crash: the
# registry answers, and every registered repository passes git fsck and
# git model fsck (LFS objects present and hashing to their names).
crash_consistent () {
	git model list >.list 2>.list.err || {
		echo "git model list failed after the crash:"
		cat .list.err
		return 1
	}
	while read -r gm_name gm_rest
	do
		gm_dir=home/.local/share/git-model/models/$gm_name
		test -d "$gm_dir" || continue
		git -C "$gm_dir" fsck --full --no-progress >.fsck 2>&1 || {
			echo "git fsck of $gm_name failed after the crash:"
			cat .fsck
			return 1
		}
		git model fsck "$gm_name" >.mfsck 2>&1 || {
			echo "git model fsck $gm_name failed after the crash:"
			cat .mfsck
			return 1
		}
	done <.list
	rm -f .list .list.err .fsck .mfsck
}

# crash_save NAME: the state made in ./st becomes the template of NAME.
crash_save () {
	rm -rf "tmpl.$1" && mv st "tmpl.$1"
}

# crash_sweep NAME K CMD...
crash_sweep () {
	gm_name=$1 gm_k=$2
	shift 2
	rm -rf st && cp -a "tmpl.$gm_name" st || return 1
	gm_n=$(crash_run "$PWD/st" 0 "$@")
	test "$(cat st.rc)" = 0 || {
		echo "$gm_name: the command fails without a crash:"
		cat st.log
		return 1
	}
	(cd st && HOME="$PWD/home" "state_$gm_name") >"ref.$gm_name.state" || return 1
	test "$gm_k" = all && gm_k=$gm_n
	gm_i=1
	while test "$gm_i" -le "$gm_k"
	do
		gm_p=$(( (gm_n * gm_i + gm_k / 2) / gm_k ))
		test "$gm_p" -ge 1 || gm_p=1
		rm -rf st && cp -a "tmpl.$gm_name" st || return 1
		crash_run "$PWD/st" "$gm_p" "$@" >/dev/null
		(cd st && HOME="$PWD/home" crash_consistent) || {
			echo "$gm_name: inconsistent after a crash at point $gm_p of $gm_n (exit $(cat st.rc))"
			return 1
		}
		if type "check_$gm_name" >/dev/null 2>&1
		then
			(cd st && HOME="$PWD/home" "check_$gm_name") || {
				echo "$gm_name: check_$gm_name fails after a crash at point $gm_p of $gm_n (exit $(cat st.rc))"
				return 1
			}
		fi
		# killed after its work was done (printing, say): nothing to redo
		if (cd st && HOME="$PWD/home" "state_$gm_name") >"run.$gm_name.state" 2>/dev/null &&
		   cmp -s "ref.$gm_name.state" "run.$gm_name.state"
		then
			gm_i=$((gm_i + 1))
			continue
		fi
		if type "rerun_$gm_name" >/dev/null 2>&1
		then
			(cd st && HOME="$PWD/home" "rerun_$gm_name" "$@" </dev/null)
		else
			(cd st && HOME="$PWD/home" "$@" </dev/null)
		fi >"run.$gm_name.rerun" 2>&1 || {
			echo "$gm_name: after a crash at point $gm_p of $gm_n, running again fails:"
			cat "run.$gm_name.rerun"
			return 1
		}
		(cd st && HOME="$PWD/home" "state_$gm_name") >"run.$gm_name.state" || return 1
		test_cmp "ref.$gm_name.state" "run.$gm_name.state" || {
			echo "$gm_name: after a crash at point $gm_p of $gm_n and a second run, the state differs"
			return 1
		}
		gm_i=$((gm_i + 1))
	done
	echo "$gm_name: $gm_n points; crashed at $gm_k of them, consistent and completed each time"
}

# crash_points: how many points each scenario is killed at (GM_CRASH_POINTS,
# "all" for every one; the fast default for make check).
crash_points () {
	echo "${GM_CRASH_POINTS:-$1}"
}
