/*
 * tap.h - a minimal TAP producer for the C unit tests in t/unit/.
 *
 *   int main(void) { ok(1 + 1 == 2, "arithmetic"); return tap_done(); }
 *
 * Each check prints "ok N - name" or "not ok N - name" (with a diagnostic
 * line giving file:line); tap_done() prints the plan and returns the exit
 * status (non-zero when any check failed).
 */
#ifndef GM_TAP_H
#define GM_TAP_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_count, tap_failed;

__attribute__((format(printf, 4, 5), unused))
static int tap_ok(int cond, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	tap_count++;
	printf("%sok %d - ", cond ? "" : "not ", tap_count);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	if (!cond) {
		tap_failed++;
		printf("#   failed at %s:%d\n", file, line);
	}
	fflush(stdout);
	return cond;
}

#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
/* Checks that a libcore call failed with the given code and that its
 * message contains the given fragment. */
#define ok_error(ret, err, code_, fragment, ...)                                           \
	do {                                                                               \
		int ok_e_ = (ret) == (code_) && strstr((err)->msg, (fragment)) != NULL;    \
		if (!tap_ok(ok_e_, __FILE__, __LINE__, __VA_ARGS__))                       \
			printf("#   got %d \"%s\", wanted %d containing \"%s\"\n", (ret),    \
			       (err)->msg, (code_), (fragment));                            \
	} while (0)

__attribute__((unused))
static void tap_diag(const char *fmt, ...)
{
	va_list ap;
	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

__attribute__((unused))
static int tap_done(void)
{
	printf("1..%d\n", tap_count);
	return tap_failed ? 1 : 0;
}

/* Directory of the source tree (set by make check), for fixtures. */
__attribute__((unused))
static const char *tap_srcdir(void)
{
	const char *s = getenv("GM_SRC_DIR");
	return s && *s ? s : ".";
}

/*
 * max |a - b| over max |b| (the absolute error when b is all zero): a
 * relative error of a whole array.  A NaN difference makes it infinite
 * (fmax would skip it), so no bound passes an array gone NaN.
 */
__attribute__((unused))
static double tap_max_rel(const float *a, const float *b, size_t n)
{
	double worst = 0, scale = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		double e = fabs((double)a[i] - (double)b[i]);

		worst = isnan(e) ? INFINITY : fmax(worst, e);
		scale = fmax(scale, fabs((double)b[i]));
	}
	return scale > 0 ? worst / scale : worst;
}

#endif
