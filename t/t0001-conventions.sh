#!/bin/sh
test_description='conventions shared by the four commands: -h, --help, --version, bad usage, man pages'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

COMMANDS="model infer train adapter"
# Commands with subcommands, and the subcommands they are built with.
MODEL_SUBCOMMANDS="bundle checkout clean clone fetch filter-process fsck gc import info install lfs-fetch lfs-push list pull push quantize rm seed smudge synth track worktree"
ADAPTER_SUBCOMMANDS="list show add rm rename export merge sparsify"

version=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"$/\1/p' "$GM_BUILD_DIR/config.h")

for c in $COMMANDS; do
	test_expect_success "git $c -h: usage on stdout, exit 129" '
		test_expect_code 129 git $c -h >out 2>err &&
		test_must_be_empty err &&
		head -n 1 out >first &&
		test_grep "^usage: git $c " first
	'

	test_expect_success "git $c --version" '
		test -n "$version" &&
		git-$c --version >out &&
		echo "git-$c version $version" >expect &&
		test_cmp expect out &&
		git $c --version >out &&
		test_cmp expect out
	'

	test_expect_success "git $c: an unknown option is one line and exit 129" '
		test_expect_code 129 git $c --no-such-option >out 2>err &&
		test_must_be_empty out &&
		test_line_count = 1 err &&
		test_grep "^error: unknown option .--no-such-option." err
	'

	test_expect_success MAN "git $c --help opens the man page, directly and through git" '
		git-$c --help >out 2>err &&
		test_grep "^GIT-$(echo $c | tr a-z A-Z)(1)" out &&
		test_grep "^NAME" out &&
		test_grep "git-$c - " out &&
		git $c --help >out2 2>err &&
		test_cmp out out2 &&
		git help $c >out3 &&
		test_cmp out out3
	'

	test_expect_success MAN "man page git-$c renders without warnings" '
		man --warnings -E UTF-8 -l "$GM_SRC_DIR/man/git-$c.1" >out 2>err &&
		test_must_be_empty err &&
		test_grep "^SYNOPSIS" out &&
		test_grep "^EXIT STATUS" out
	'
done

# Every option a command accepts is documented on its man page.
# documented PAGE OPTION-WORDS... (checked on the rendered page, where
# roff's "\-" has become "-")
documented () {
	page=$1
	shift
	man -l "$GM_SRC_DIR/man/$page.1" >"$page.txt" 2>/dev/null || return 1
	for o in "$@"; do
		case "$o" in
		--no-*) continue ;;
		esac
		o=${o%=}
		grep -q -e "$o\>" "$page.txt" || {
			echo "option $o is not on man page $page"
			return 1
		}
	done
}

test_expect_success MAN 'every option of every command is on its man page' '
	documented git-infer $(git infer --git-completion-helper) &&
	documented git-train $(git train --git-completion-helper) &&
	for s in $MODEL_SUBCOMMANDS
	do
		documented git-model $(git model $s --git-completion-helper) || return 1
	done &&
	for s in $ADAPTER_SUBCOMMANDS
	do
		documented git-adapter $(git adapter $s --git-completion-helper) || return 1
	done
'

test_expect_success 'only built subcommands are listed and accepted' '
	echo $MODEL_SUBCOMMANDS >expect &&
	git model --git-completion-helper >actual &&
	test_cmp expect actual &&
	echo $ADAPTER_SUBCOMMANDS >expect &&
	git adapter --git-completion-helper >actual &&
	test_cmp expect actual &&
	test_expect_code 129 git model -h >out &&
	sed -n "/^commands:/,\$p" out | sed 1d | awk "{print \$1}" | paste -s -d " " - >actual &&
	echo $MODEL_SUBCOMMANDS >expect &&
	test_cmp expect actual
'

for c in model adapter; do
	test_expect_success "git $c: unknown or missing subcommand is exit 129" '
		test_expect_code 129 git $c no-such-thing >out 2>err &&
		test_must_be_empty out &&
		test_grep "^error: .no-such-thing. is not a git $c command" err &&
		test_expect_code 129 git $c >out 2>err &&
		test_must_be_empty out &&
		test_grep "^usage: git $c" err
	'
done

test_expect_success 'each subcommand has its own -h' '
	for s in $MODEL_SUBCOMMANDS
	do
		test_expect_code 129 git model $s -h >out &&
		test_grep "^usage: git model $s" out || return 1
	done &&
	for s in $ADAPTER_SUBCOMMANDS
	do
		test_expect_code 129 git adapter $s -h >out &&
		test_grep "^usage: git adapter $s" out || return 1
	done
'

# A subcommand's entry on the rendered page: its name at the start of an
# indented heading line (.SS or .TP).
test_expect_success MAN 'each subcommand has an entry on the man page' '
	man -l "$GM_SRC_DIR/man/git-model.1" >model.txt &&
	man -l "$GM_SRC_DIR/man/git-adapter.1" >adapter.txt &&
	for s in $MODEL_SUBCOMMANDS
	do
		test_grep -E "^ {3,7}$s( |\$)" model.txt || return 1
	done &&
	for s in $ADAPTER_SUBCOMMANDS
	do
		test_grep -E "^ {3,7}$s( |\$)" adapter.txt || return 1
	done
'

test_expect_success 'missing arguments are one line and exit 129' '
	for cmd in "git model synth" "git model synth tiny" "git model info" "git model track" "git infer --check" \
		"git train" "git adapter show"
	do
		test_expect_code 129 $cmd >out 2>err &&
		test_must_be_empty out &&
		test_line_count = 1 err &&
		test_grep "^error: " err || return 1
	done
'

test_expect_success 'failures print "error: ..." and exit 1' '
	test_expect_code 1 git model info does-not-exist >out 2>err &&
	test_grep "^error: .*does-not-exist" err &&
	test_expect_code 1 git infer -m does-not-exist --check 2>err &&
	test_grep "^error: .*does-not-exist" err
'

test_expect_success 'option forms: --opt=value, --opt value, bundled short flags, --' '
	git model synth --seed=3 tiny a >/dev/null &&
	git model synth --seed 3 tiny b >/dev/null &&
	cmp a/model.safetensors b/model.safetensors &&
	git model synth -q -- tiny c >out &&
	test_must_be_empty out
'

test_done
