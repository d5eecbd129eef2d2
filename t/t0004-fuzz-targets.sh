#!/bin/sh
test_description='contrib/fuzz: every libFuzzer target compiles and links (when clang can build fuzzers)'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

# make fuzz builds the targets against libcore compiled a second time with
# the sanitizers, which takes minutes; this check only compiles each target
# against the library make built (no sanitizer, -fsanitize=fuzzer for
# libFuzzer's main), so that a changed libcore header or function cannot
# leave a target that no longer builds.  The flags come from the Makefile
# (AM_TESTS_ENVIRONMENT; its -I paths are relative to the build directory,
# hence the absolute ones first); run by hand, the script skips.
LIBDIR="$GM_BUILD_DIR/libcore/.libs"
if [ -z "$GM_FUZZ_CC" ] || ! command -v "$GM_FUZZ_CC" >/dev/null 2>&1; then
	skip_all="no fuzzer compiler (FUZZ_CC='${GM_FUZZ_CC:-unset}'; clang builds the targets)"
	test_done
fi
if ! [ -f "$LIBDIR/libgitmodel.so" ]; then
	skip_all="libcore/.libs/libgitmodel.so is not built (shared libraries disabled?)"
	test_done
fi
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return (int)(d != 0 && n > 1); }\n' >probe.c
if ! "$GM_FUZZ_CC" -fsanitize=fuzzer probe.c -o probe 2>probe.err; then
	skip_all="$GM_FUZZ_CC cannot link libFuzzer programs: $(head -n 1 probe.err)"
	test_done
fi

for src in "$GM_SRC_DIR"/contrib/fuzz/fuzz-*.c; do
	name=$(basename "$src" .c)
	test_expect_success "$name compiles and links" '
		# -Werror: a target must not warn, as libcore must not
		"$GM_FUZZ_CC" -fsanitize=fuzzer -Wall -Wextra -Wno-unused-parameter -Werror \
			-I"$GM_SRC_DIR/contrib/fuzz" -I"$GM_SRC_DIR/libcore" -I"$GM_BUILD_DIR" $GM_FUZZ_CPPFLAGS "$src" \
			-L"$LIBDIR" -lgitmodel -Wl,-rpath,"$LIBDIR" $GM_FUZZ_LIBS -o "$name" &&
		test_path_is_executable "$name"
	'
done

test_expect_success 'every target has a seed corpus, and make fuzz builds every target' '
	for src in "$GM_SRC_DIR"/contrib/fuzz/fuzz-*.c; do
		t=$(basename "$src" .c) && t=${t#fuzz-} &&
		ls "$GM_SRC_DIR/contrib/fuzz/corpus/$t" >seeds &&
		test_file_not_empty seeds &&
		case " $GM_FUZZ_ALL " in *" $t "*) ;; *) echo "$t is not in GM_FUZZ_ALL"; return 1 ;; esac ||
		return 1
	done
'

test_done
