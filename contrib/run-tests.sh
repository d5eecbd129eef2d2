#!/bin/sh
# The one command that sets up everything and runs the whole test suite:
# installs the Debian packages, builds in build/, runs 'make check' and
# prints a closing "N passed, N failed" line (counting TAP test cases).
top=$(cd "$(dirname "$0")/.." && pwd)
sh "$top/contrib/build.sh" || exit $?
cd "$top/build" || exit 1
status=0
make -j"$(nproc 2>/dev/null || echo 2)" check || status=$?
if [ -f test-suite.log ]; then
	count() { sed -n "s/^# $1: *//p" test-suite.log | head -n1; }
	failed=$(( $(count FAIL) + $(count XPASS) + $(count ERROR) ))
	# what each failing case printed (test-lib replays it as "#" lines after
	# "not ok"), last, so that a CI log's tail shows why
	if [ "$failed" -gt 0 ]; then
		awk 'function flush(  i) {
			if (n > 60) print "#\t[... " n - 60 " lines]"
			for (i = (n > 60 ? n - 59 : 1); i <= n; i++) print b[i]
			n = 0
		     }
		     /^not ok /{ flush(); show = 1; print; next }
		     show && /^#/{ b[++n] = $0; next }
		     show && /^(FAIL|ERROR|XPASS): /{ next }
		     { flush(); show = 0 }
		     END { flush() }' test-suite.log
	fi
	echo "skipped: $(count SKIP), expected failures: $(count XFAIL)"
	echo "$(count PASS) passed, $failed failed"
fi
exit $status
