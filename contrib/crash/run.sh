#!/bin/sh
# contrib/crash/run.sh [POINTS] - the full crash-consistency run: every
# scenario of t/t9000-crash.sh and t/t9002-crash-sync.sh killed (SIGKILL) at POINTS points spread
# over all its file-system changes ("all", the default: at every one).
# make check runs the same script killing each command at 3 points.
# Run from a configured build directory (default: build/ of the checkout).
set -e
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${GM_BUILD_DIR:-$top/build}
make -C "$build" -s all t/lib/crashpoint.la
cd "$build"
for t in t9000-crash t9002-crash-sync
do
	GM_BUILD_DIR=$build GM_CRASH_POINTS=${1:-all} "$top/t/$t.sh" -v 2>&1 |
		grep -v "^Killed" | grep -E "^(ok|not ok|#)|points|crash at|error|differ"
done
