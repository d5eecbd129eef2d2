# test-lib.sh - the shell test library, in the style of git's t/test-lib.sh.
#
# A test script is
#
#	#!/bin/sh
#	test_description='what this script covers'
#	. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"
#
#	test_expect_success 'title' '
#		git model synth tiny m &&
#		test_path_is_file m/config.json
#	'
#	test_done
#
# and prints TAP ("ok 1 - title") on standard output.  Each script runs in
# its own trash directory, "$GM_BUILD_DIR/t/trash directory.NAME", which is
# removed when every test passed and kept otherwise (and with --debug).
#
# Options: -v/--verbose (show what tests print), -x (trace test bodies),
# -i/--immediate (stop at the first failure), -d/--debug (keep the trash
# directory).  See t/README.md.
#
# Environment: GM_SRC_DIR (the source tree; found from $0 when unset) and
# GM_BUILD_DIR (where the commands were built; the source tree when unset),
# both exported by 'make check'; GM_HAVE_CUDA (yes/no) from configure.

# ------------------------------------------------------------ setup
if [ -z "$GM_SRC_DIR" ]; then
	GM_SRC_DIR=$(cd "$(dirname "$0")/.." && pwd) || exit 1
fi
: "${GM_BUILD_DIR:=$GM_SRC_DIR}"
: "${GM_HAVE_CUDA:=no}"
export GM_SRC_DIR GM_BUILD_DIR GM_HAVE_CUDA

verbose= immediate= debug= trace=
for gm_arg in "$@"; do
	case "$gm_arg" in
	-v|--verbose) verbose=t ;;
	-i|--immediate) immediate=t ;;
	-d|--debug) debug=t ;;
	-x) trace=t ;;
	-h|--help)
		echo "usage: $0 [-v | --verbose] [-x] [-i | --immediate] [-d | --debug]"
		exit 0 ;;
	*)
		echo "Bail out! unknown test option '$gm_arg'"
		exit 1 ;;
	esac
done

TEST_NAME=$(basename "$0" .sh)
TEST_FIXTURES="$GM_SRC_DIR/t/fixtures"
TEST_MODELS="$GM_SRC_DIR/contrib/models"
TEST_RESULTS_DIR="$GM_BUILD_DIR/t/test-results"
TRASH_DIRECTORY="$GM_BUILD_DIR/t/trash directory.$TEST_NAME"
export TEST_FIXTURES TEST_MODELS TRASH_DIRECTORY

# The commands under test come first on PATH; stock git finds them there
# as "git model", "git infer", ...
for gm_cmd in git-model git-infer git-train git-adapter; do
	if ! [ -x "$GM_BUILD_DIR/$gm_cmd/$gm_cmd" ]; then
		echo "Bail out! $GM_BUILD_DIR/$gm_cmd/$gm_cmd is not built (run 'make' first)"
		exit 1
	fi
	PATH="$GM_BUILD_DIR/$gm_cmd:$PATH"
done
export PATH

# A predictable environment: no user or system git configuration, no
# locale surprises, no pager, fixed identities and dates.
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_CEILING_DIRECTORIES \
	GIT_CONFIG GIT_CONFIG_PARAMETERS GIT_CONFIG_COUNT GIT_EXEC_PATH GIT_TRACE \
	GIT_PAGER GIT_EDITOR GIT_TEMPLATE_DIR GIT_ALTERNATE_OBJECT_DIRECTORIES \
	GM_LOG GM_THREADS GM_API_KEY CDPATH
LC_ALL=C LANG=C TZ=UTC
GIT_CONFIG_NOSYSTEM=1
GIT_AUTHOR_NAME='A U Thor' GIT_AUTHOR_EMAIL='author@example.com'
GIT_COMMITTER_NAME='C O Mitter' GIT_COMMITTER_EMAIL='committer@example.com'
GIT_AUTHOR_DATE='1700000000 +0000' GIT_COMMITTER_DATE='1700000000 +0000'
PAGER=cat MANPAGER=cat MANWIDTH=80 EDITOR=:
# git infer's products of bf16 weights: the goldens (1e-4 of transformers in
# f32) are precise mode's; the tests of fast mode (git infer's default on
# a CPU with AVX512_BF16) ask for it with --matmul or GM_MATMUL.
GM_MATMUL=precise
export LC_ALL LANG TZ GIT_CONFIG_NOSYSTEM GIT_AUTHOR_NAME GIT_AUTHOR_EMAIL \
	GIT_COMMITTER_NAME GIT_COMMITTER_EMAIL GIT_AUTHOR_DATE GIT_COMMITTER_DATE \
	PAGER MANPAGER MANWIDTH EDITOR GM_MATMUL

rm -rf "$TRASH_DIRECTORY" || {
	echo "Bail out! cannot remove the old trash directory '$TRASH_DIRECTORY'"
	exit 1
}
mkdir -p "$TRASH_DIRECTORY" "$TEST_RESULTS_DIR" || {
	echo "Bail out! cannot create '$TRASH_DIRECTORY'"
	exit 1
}
HOME="$TRASH_DIRECTORY"
XDG_CONFIG_HOME="$TRASH_DIRECTORY/.config"
XDG_CACHE_HOME="$TRASH_DIRECTORY/.cache"
export HOME XDG_CONFIG_HOME XDG_CACHE_HOME
unset XDG_DATA_HOME XDG_RUNTIME_DIR

# "--help" opens the man page: point man at the pages of this tree.
mkdir -p "$TRASH_DIRECTORY/.man/man1"
for gm_page in "$GM_SRC_DIR"/man/*.1; do
	[ -f "$gm_page" ] && ln -s "$gm_page" "$TRASH_DIRECTORY/.man/man1/"
done
MANPATH="$TRASH_DIRECTORY/.man"
export MANPATH

cd "$TRASH_DIRECTORY" || exit 1

# Descriptor 5 is the TAP stream; test bodies write to a log (or to the
# terminal with --verbose) that is replayed as comments when a test fails.
exec 5>&1
test_count=0 test_success=0 test_failure=0 test_fixed=0 test_broken=0 test_skipped=0
test_cleanup=
GM_TEST_LOG="$TEST_RESULTS_DIR/$TEST_NAME.out"

gm_exit_trap () {
	gm_code=$?
	echo "Bail out! $TEST_NAME exited unexpectedly (status $gm_code) outside test_done" >&5
	exit 1
}
trap 'gm_exit_trap' EXIT

# ------------------------------------------------------------ prerequisites
gm_prereqs=" "

test_set_prereq () {
	gm_prereqs="$gm_prereqs$1 "
}

# Lazily evaluated ones, decided the first time they are asked for.
gm_lazy_prereq () {
	case "$1" in
	PYTHON3) command -v python3 >/dev/null 2>&1 ;;
	GIT_LFS) git lfs version >/dev/null 2>&1 ;;
	BASH) command -v bash >/dev/null 2>&1 ;;
	MAN) command -v man >/dev/null 2>&1 && man -w git-model >/dev/null 2>&1 ;;
	CUDA) [ "$GM_HAVE_CUDA" = yes ] ;;
	GPU) [ "$GM_HAVE_CUDA" = yes ] && command -v nvidia-smi >/dev/null 2>&1 &&
		nvidia-smi -L 2>/dev/null | grep -q '^GPU' ;;
	ROOT) [ "$(id -u)" = 0 ] ;;
	*) return 1 ;; # set with test_set_prereq or nothing
	esac
}

gm_missing_prereqs=" "
# test_have_prereq A,!B,...: true when all of them hold.
test_have_prereq () {
	gm_save_ifs=$IFS
	IFS=,
	set -- $*
	IFS=$gm_save_ifs
	gm_ok=0
	for gm_p in "$@"; do
		gm_neg=
		case "$gm_p" in !*) gm_neg=t gm_p=${gm_p#!} ;; esac
		case "$gm_prereqs" in
		*" $gm_p "*) gm_have=t ;;
		*)
			case "$gm_missing_prereqs" in
			*" $gm_p "*) gm_have= ;;
			*)
				if gm_lazy_prereq "$gm_p"; then
					gm_have=t
					test_set_prereq "$gm_p"
				else
					gm_have=
					gm_missing_prereqs="$gm_missing_prereqs$gm_p "
				fi ;;
			esac ;;
		esac
		if [ -n "$gm_neg" ]; then
			[ -z "$gm_have" ] || gm_ok=1
		else
			[ -n "$gm_have" ] || gm_ok=1
		fi
	done
	return $gm_ok
}

# ------------------------------------------------------------ running tests
# test_when_finished CMD: run CMD after the current test, pass or fail.
test_when_finished () {
	test_cleanup="{ $*
		} && (exit \"\$gm_eval_ret\"); gm_eval_ret=\$?; $test_cleanup"
}

gm_run_body () {
	test_cleanup=:
	cd "$TRASH_DIRECTORY"
	if [ -n "$trace" ]; then
		set -x
	fi
	eval "$1"
	gm_eval_ret=$?
	eval "$test_cleanup"
	{ set +x; } 2>/dev/null
	cd "$TRASH_DIRECTORY"
	return $gm_eval_ret
}

# Runs body $1 with its output where it belongs; returns its status.
gm_run () {
	if [ -n "$verbose" ]; then
		gm_run_body "$1" </dev/null >&5 2>&1
	else
		gm_run_body "$1" </dev/null >"$GM_TEST_LOG" 2>&1
	fi
}

gm_replay_log () {
	[ -z "$verbose" ] && [ -s "$GM_TEST_LOG" ] && sed 's/^/#	/' "$GM_TEST_LOG" >&5
	return 0
}

gm_skip () { # title prereqs
	gm_skip_why=
	gm_save_ifs=$IFS
	IFS=,
	for gm_p in $2; do
		IFS=$gm_save_ifs
		test_have_prereq "$gm_p" || gm_skip_why="$gm_skip_why $gm_p"
	done
	IFS=$gm_save_ifs
	[ -n "$gm_skip_why" ] || return 1
	test_skipped=$((test_skipped + 1))
	echo "ok $test_count - $1 # SKIP missing prerequisite$gm_skip_why" >&5
	return 0
}

gm_failed () {
	test_failure=$((test_failure + 1))
	echo "not ok $test_count - $1" >&5
	gm_replay_log
	printf '%s\n' "$2" | sed 's/^/#	/' >&5
	if [ -n "$immediate" ]; then
		echo "Bail out! stopping at the first failure (--immediate); trash kept in '$TRASH_DIRECTORY'" >&5
		trap - EXIT
		exit 1
	fi
}

# test_expect_success [PREREQ[,PREREQ]] 'title' 'body'
test_expect_success () {
	gm_prereq=
	[ $# = 3 ] && { gm_prereq=$1; shift; }
	[ $# = 2 ] || gm_bug "test_expect_success needs [prereq] title body, got $# arguments"
	test_count=$((test_count + 1))
	gm_skip "$1" "$gm_prereq" && return 0
	if gm_run "$2"; then
		test_success=$((test_success + 1))
		echo "ok $test_count - $1" >&5
	else
		gm_failed "$1" "$2"
	fi
}

# test_expect_failure [PREREQ] 'title' 'body': a known breakage.
test_expect_failure () {
	gm_prereq=
	[ $# = 3 ] && { gm_prereq=$1; shift; }
	[ $# = 2 ] || gm_bug "test_expect_failure needs [prereq] title body, got $# arguments"
	test_count=$((test_count + 1))
	gm_skip "$1" "$gm_prereq" && return 0
	if gm_run "$2"; then
		test_fixed=$((test_fixed + 1))
		echo "ok $test_count - $1 # TODO known breakage vanished" >&5
	else
		test_broken=$((test_broken + 1))
		echo "not ok $test_count - $1 # TODO known breakage" >&5
	fi
}

gm_bug () {
	echo "Bail out! bug in the test script: $*" >&5
	trap - EXIT
	exit 1
}

# Skips the whole script: skip_all='reason'; test_done
skip_all=

test_done () {
	trap - EXIT
	if [ -n "$skip_all" ] && [ "$test_count" = 0 ]; then
		echo "1..0 # SKIP $skip_all" >&5
		cd "$GM_BUILD_DIR" && rm -rf "$TRASH_DIRECTORY" "$GM_TEST_LOG"
		exit 0
	fi
	echo "1..$test_count" >&5
	[ "$test_fixed" = 0 ] || echo "# $test_fixed known breakage(s) vanished; mark them test_expect_success" >&5
	[ "$test_broken" = 0 ] || echo "# still have $test_broken known breakage(s)" >&5
	[ "$test_skipped" = 0 ] || echo "# skipped $test_skipped test(s)" >&5
	if [ "$test_failure" != 0 ]; then
		echo "# failed $test_failure among $test_count test(s); trash kept in '$TRASH_DIRECTORY'" >&5
		exit 1
	fi
	echo "# passed all $test_success test(s)" >&5
	if [ -z "$debug" ]; then
		cd "$GM_BUILD_DIR" && rm -rf "$TRASH_DIRECTORY" "$GM_TEST_LOG"
	fi
	exit 0
}

# ------------------------------------------------------------ assertions
# Each prints why it failed, which lands in the replayed log.

# test_must_fail CMD...: CMD fails in a controlled way (not a crash, not
# "command not found").
test_must_fail () {
	"$@"
	gm_code=$?
	if [ $gm_code = 0 ]; then
		echo "test_must_fail: command succeeded: $*"
		return 1
	elif [ $gm_code -gt 129 ] && [ $gm_code -le 192 ]; then
		echo "test_must_fail: died by signal $((gm_code - 128)): $*"
		return 1
	elif [ $gm_code = 127 ] || [ $gm_code = 126 ]; then
		echo "test_must_fail: command not found or not executable: $*"
		return 1
	fi
	return 0
}

# test_expect_code N CMD...
test_expect_code () {
	gm_want=$1
	shift
	"$@"
	gm_code=$?
	[ $gm_code = "$gm_want" ] && return 0
	echo "test_expect_code: command exited $gm_code, wanted $gm_want: $*"
	return 1
}

# test_cmp EXPECT ACTUAL
test_cmp () {
	[ $# = 2 ] || gm_bug "test_cmp needs 2 arguments"
	diff -u "$1" "$2" && return 0
	echo "test_cmp: '$1' and '$2' differ"
	return 1
}

# test_grep [!] [GREP-OPTIONS] PATTERN FILE
test_grep () {
	gm_neg=
	if [ "$1" = "!" ] || [ "$1" = "-v" ]; then
		gm_neg=t
		shift
	fi
	[ $# -ge 2 ] || gm_bug "test_grep needs a pattern and a file"
	eval "gm_file=\${$#}"
	if [ ! -f "$gm_file" ]; then
		echo "test_grep: no file '$gm_file'"
		return 1
	fi
	if [ -n "$gm_neg" ]; then
		grep "$@" >/dev/null || return 0
		echo "test_grep: found what should not be there:"
	else
		grep "$@" >/dev/null && return 0
		echo "test_grep: not found:"
	fi
	echo "  pattern: $*"
	echo "  in $gm_file:"
	sed 's/^/  | /' "$gm_file"
	return 1
}

# test_line_count OP N FILE (OP as test(1): = -lt -gt ...)
test_line_count () {
	[ $# = 3 ] || gm_bug "test_line_count needs OP N FILE"
	gm_lines=$(wc -l <"$3") || return 1
	gm_lines=$((gm_lines + 0))
	case "$1" in
	=) [ "$gm_lines" -eq "$2" ] ;;
	*) [ "$gm_lines" "$1" "$2" ] ;;
	esac && return 0
	echo "test_line_count: '$3' has $gm_lines lines, wanted $1 $2"
	return 1
}

test_path_is_file () {
	[ -f "$1" ] && return 0
	echo "test_path_is_file: '$1' is not a file"
	return 1
}

test_path_is_dir () {
	[ -d "$1" ] && return 0
	echo "test_path_is_dir: '$1' is not a directory"
	return 1
}

test_path_is_missing () {
	[ ! -e "$1" ] && [ ! -L "$1" ] && return 0
	echo "test_path_is_missing: '$1' exists"
	return 1
}

test_path_is_executable () {
	[ -x "$1" ] && [ -f "$1" ] && return 0
	echo "test_path_is_executable: '$1' is not an executable file"
	return 1
}

test_file_not_empty () {
	[ -s "$1" ] && return 0
	echo "test_file_not_empty: '$1' is empty or missing"
	return 1
}

test_must_be_empty () {
	if [ -s "$1" ]; then
		echo "test_must_be_empty: '$1' is not empty:"
		sed 's/^/  | /' "$1"
		return 1
	fi
	[ -e "$1" ] && return 0
	echo "test_must_be_empty: '$1' is missing"
	return 1
}

# test_file_size FILE: the size in bytes.
test_file_size () {
	wc -c <"$1" | tr -d ' '
}
