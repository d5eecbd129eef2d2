#!/bin/sh
test_description='the test library itself: TAP output, failures, cleanup, prereqs, isolation'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

# Sub-scripts run against a build directory of their own (links to the
# real commands) so their trash directories land inside ours.
test_expect_success 'set up a build directory for sub-scripts' '
	mkdir -p build/t &&
	for c in git-model git-infer git-train git-adapter
	do
		ln -s "$GM_BUILD_DIR/$c" build/$c || return 1
	done
'

# run_sub NAME <<SCRIPT: write sub-test NAME.sh from stdin (after the
# preamble) and run it; its TAP goes to NAME.out, its status to NAME.rc.
run_sub () {
	{
		echo "test_description='sub-test $1'"
		echo ". \"\$GM_SRC_DIR/t/test-lib.sh\""
		cat
	} >"$1.sh" &&
	(
		GM_BUILD_DIR="$TRASH_DIRECTORY/build" &&
		export GM_BUILD_DIR &&
		sh "./$1.sh" >"$1.out" 2>"$1.err"
		echo $? >"$1.rc"
	)
}

test_expect_success 'passing, failing and known-broken tests produce TAP' '
	run_sub mixed <<-\EOF &&
	test_expect_success "passes" "true"
	test_expect_success "fails" "echo some output; false"
	test_expect_failure "known broken" "false"
	test_expect_failure "fixed" "true"
	test_expect_success "passes again" "test 1 = 1"
	test_done
	EOF
	cat >expect <<-EOF &&
	ok 1 - passes
	not ok 2 - fails
	#	some output
	#	echo some output; false
	not ok 3 - known broken # TODO known breakage
	ok 4 - fixed # TODO known breakage vanished
	ok 5 - passes again
	1..5
	# 1 known breakage(s) vanished; mark them test_expect_success
	# still have 1 known breakage(s)
	# failed 1 among 5 test(s); trash kept in '\''$TRASH_DIRECTORY/build/t/trash directory.mixed'\''
	EOF
	test_cmp expect mixed.out &&
	echo 1 >expect &&
	test_cmp expect mixed.rc &&
	test_path_is_dir "build/t/trash directory.mixed"
'

test_expect_success 'an all-passing script exits 0 and removes its trash' '
	run_sub clean <<-\EOF &&
	test_expect_success "writes a file" "echo x >file && test -f file"
	test_done
	EOF
	printf "ok 1 - writes a file\n1..1\n# passed all 1 test(s)\n" >expect &&
	test_cmp expect clean.out &&
	echo 0 >expect &&
	test_cmp expect clean.rc &&
	test_path_is_missing "build/t/trash directory.clean"
'

test_expect_success 'tests run in the trash directory with HOME there' '
	run_sub where <<-\EOF &&
	test_expect_success "cwd" "test \"\$(pwd)\" = \"\$TRASH_DIRECTORY\" && mkdir sub && cd sub"
	test_expect_success "cwd is restored" "test \"\$(pwd)\" = \"\$TRASH_DIRECTORY\""
	test_expect_success "HOME" "test \"\$HOME\" = \"\$TRASH_DIRECTORY\""
	test_expect_success "no user git config" "test_must_fail git config --global user.name"
	test_expect_success "commands on PATH" "git model --version | grep \"^git-model version \""
	test_done
	EOF
	test_grep "^# passed all 5 test(s)" where.out
'

test_expect_success 'test_when_finished runs after success and after failure' '
	run_sub cleanup <<-\EOF &&
	test_expect_success "ok body" "test_when_finished \"echo one >>log\" && true"
	test_expect_success "failing body" "test_when_finished \"echo two >>log\" && false"
	test_expect_success "failing cleanup fails the test" "test_when_finished false && true"
	test_expect_success "log" "printf \"one\\ntwo\\n\" >expect && test_cmp expect log"
	test_done
	EOF
	sed -n "/^[a-z]* *ok/p" cleanup.out >actual &&
	cat >expect <<-\EOF &&
	ok 1 - ok body
	not ok 2 - failing body
	not ok 3 - failing cleanup fails the test
	ok 4 - log
	EOF
	test_cmp expect actual
'

test_expect_success 'test_must_fail and test_expect_code tell failures apart' '
	run_sub mustfail <<-\EOF &&
	test_expect_success "exit 1" "test_must_fail sh -c \"exit 1\""
	test_expect_success "exit 129" "test_must_fail sh -c \"exit 129\""
	test_expect_success "success is not a failure" "test_must_fail true"
	test_expect_success "a signal is not a failure" "test_must_fail sh -c \"kill -SEGV \\\$\\\$\""
	test_expect_success "not found is not a failure" "test_must_fail no-such-command-here"
	test_expect_success "code matches" "test_expect_code 3 sh -c \"exit 3\""
	test_expect_success "code differs" "test_expect_code 3 sh -c \"exit 4\""
	test_done
	EOF
	sed -n "/^[a-z]* *ok/p" mustfail.out >actual &&
	cat >expect <<-\EOF &&
	ok 1 - exit 1
	ok 2 - exit 129
	not ok 3 - success is not a failure
	not ok 4 - a signal is not a failure
	not ok 5 - not found is not a failure
	ok 6 - code matches
	not ok 7 - code differs
	EOF
	test_cmp expect actual &&
	test_grep "command exited 4, wanted 3" mustfail.out
'

test_expect_success 'assertions report what they saw' '
	run_sub asserts <<-\EOF &&
	test_expect_success "cmp" "echo a >a && echo b >b && test_cmp a b"
	test_expect_success "grep" "echo hello >f && test_grep hello f && test_grep ! bye f && test_grep bye f"
	test_expect_success "line count" "printf \"1\\n2\\n\" >f && test_line_count = 2 f && test_line_count = 3 f"
	test_expect_success "paths" "mkdir d && test_path_is_dir d && test_path_is_missing nope && test_path_is_file d"
	test_expect_success "empty" "test_must_be_empty f"
	test_done
	EOF
	test_grep "^#	-a" asserts.out &&
	test_grep "^#	+b" asserts.out &&
	test_grep "^#	test_grep: not found:" asserts.out &&
	test_grep "^#	test_line_count: .f. has 2 lines, wanted = 3" asserts.out &&
	test_grep "^#	test_path_is_file: .d. is not a file" asserts.out &&
	test_grep "^#	test_must_be_empty: .f. is not empty" asserts.out &&
	test_grep "^# failed 5 among 5 test(s)" asserts.out
'

test_expect_success 'prerequisites: set, lazy, negated, missing' '
	run_sub prereq <<-\EOF &&
	test_set_prereq HAVE_IT
	test_expect_success HAVE_IT "runs" "true"
	test_expect_success NOT_SET "skipped" "false"
	test_expect_success !NOT_SET "negated runs" "true"
	test_expect_success HAVE_IT,NOT_SET "both needed" "false"
	test_expect_success "lazy PYTHON3 agrees with PATH" "
		if command -v python3 >/dev/null; then test_have_prereq PYTHON3; else ! test_have_prereq PYTHON3; fi
	"
	test_done
	EOF
	sed -n "/^[a-z]* *ok/p" prereq.out >actual &&
	cat >expect <<-\EOF &&
	ok 1 - runs
	ok 2 - skipped # SKIP missing prerequisite NOT_SET
	ok 3 - negated runs
	ok 4 - both needed # SKIP missing prerequisite NOT_SET
	ok 5 - lazy PYTHON3 agrees with PATH
	EOF
	test_cmp expect actual
'

test_expect_success 'skip_all skips a whole script' '
	run_sub skipall <<-\EOF &&
	skip_all="no widget here"
	test_done
	EOF
	echo "1..0 # SKIP no widget here" >expect &&
	test_cmp expect skipall.out
'

test_expect_success 'leaving without test_done is reported' '
	run_sub early <<-\EOF &&
	test_expect_success "one" "true"
	exit 0
	EOF
	test_grep "^Bail out! early exited unexpectedly" early.out &&
	echo 1 >expect &&
	test_cmp expect early.rc
'

test_expect_success '--immediate stops at the first failure, --debug keeps the trash' '
	run_sub stop <<-\EOF &&
	test_expect_success "fails" "false"
	test_expect_success "never runs" "true"
	test_done
	EOF
	(GM_BUILD_DIR="$TRASH_DIRECTORY/build" && export GM_BUILD_DIR && sh ./stop.sh -i >stop-i.out) ;
	test_grep "^Bail out! stopping at the first failure" stop-i.out &&
	test_grep ! "never runs" stop-i.out &&
	run_sub keep <<-\EOF &&
	test_expect_success "passes" "true"
	test_done
	EOF
	test_path_is_missing "build/t/trash directory.keep" &&
	(GM_BUILD_DIR="$TRASH_DIRECTORY/build" && export GM_BUILD_DIR && sh ./keep.sh --debug >keep-d.out) &&
	test_path_is_dir "build/t/trash directory.keep"
'

test_done
