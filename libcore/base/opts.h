/*
 * opts.h - command-line option parsing shared by the four commands
 * (a small cousin of git's parse-options).
 *
 * Options are described by a table ending in GM_OPT_END().  Long options
 * take "--name=value" or "--name value"; short ones "-n value", "-nvalue";
 * "--" ends options; the first non-option stops parsing when
 * GM_PARSE_STOP_AT_NON_OPTION is given (for subcommand dispatch), else
 * non-options are collected and returned in order.
 *
 * Built in (not in tables): -h prints the usage (exit status 129 by
 * convention), --help asks for the man page, --git-completion-helper
 * prints the long options for shell completion.
 */
#ifndef GM_OPTS_H
#define GM_OPTS_H

#include <stdio.h>

#include "base/error.h"

enum gm_opt_type {
	GM_OPT_TYPE_END,
	GM_OPT_TYPE_GROUP,   /* a heading in the usage */
	GM_OPT_TYPE_FLAG,    /* int: set to 1; --no-NAME sets 0 */
	GM_OPT_TYPE_COUNT,   /* int: incremented (-v -v) */
	GM_OPT_TYPE_SET_INT, /* int: set to defval */
	GM_OPT_TYPE_STRING,  /* const char *: the argument (borrowed from argv) */
	GM_OPT_TYPE_INT,     /* long: a decimal integer in range */
	GM_OPT_TYPE_U64,     /* unsigned long long: a decimal integer >= 0 */
	GM_OPT_TYPE_DOUBLE,  /* double: a finite number */
	GM_OPT_TYPE_STRING_LIST /* gm_strlist: each occurrence appended */
};

typedef struct gm_strlist {
	const char **items; /* owned array of borrowed strings */
	size_t n, alloc;
} gm_strlist;
void gm_strlist_push(gm_strlist *l, const char *s);
void gm_strlist_clear(gm_strlist *l);

struct gm_option {
	enum gm_opt_type type;
	int short_name;        /* 0 when none */
	const char *long_name; /* NULL when none */
	void *value;
	const char *argh;      /* argument name for the usage, e.g. "DIR" */
	const char *help;
	long defval;           /* GM_OPT_TYPE_SET_INT value, or INT range min */
	long maxval;           /* GM_OPT_TYPE_INT range max (when > defval) */
};

#define GM_OPT_END() { GM_OPT_TYPE_END, 0, NULL, NULL, NULL, NULL, 0, 0 }
#define GM_OPT_GROUP(h) { GM_OPT_TYPE_GROUP, 0, NULL, NULL, NULL, (h), 0, 0 }
#define GM_OPT_FLAG(s, l, v, h) { GM_OPT_TYPE_FLAG, (s), (l), (v), NULL, (h), 0, 0 }
#define GM_OPT_COUNT(s, l, v, h) { GM_OPT_TYPE_COUNT, (s), (l), (v), NULL, (h), 0, 0 }
#define GM_OPT_SET_INT(s, l, v, h, i) { GM_OPT_TYPE_SET_INT, (s), (l), (v), NULL, (h), (i), 0 }
#define GM_OPT_STRING(s, l, v, a, h) { GM_OPT_TYPE_STRING, (s), (l), (v), (a), (h), 0, 0 }
#define GM_OPT_STRING_LIST(s, l, v, a, h) { GM_OPT_TYPE_STRING_LIST, (s), (l), (v), (a), (h), 0, 0 }
#define GM_OPT_INT(s, l, v, a, h, lo, hi) { GM_OPT_TYPE_INT, (s), (l), (v), (a), (h), (lo), (hi) }
#define GM_OPT_U64(s, l, v, a, h) { GM_OPT_TYPE_U64, (s), (l), (v), (a), (h), 0, 0 }
#define GM_OPT_DOUBLE(s, l, v, a, h) { GM_OPT_TYPE_DOUBLE, (s), (l), (v), (a), (h), 0, 0 }
/* -v/--verbose and -q/--quiet, both on one int (up for -v, down for -q). */
#define GM_OPT_VERBOSITY(v) \
	{ GM_OPT_TYPE_COUNT, 'v', "verbose", (v), NULL, "be more verbose (repeatable)", 0, 0 }, \
	{ GM_OPT_TYPE_SET_INT, 'q', "quiet", (v), NULL, "print only errors", -1, 0 }

enum gm_parse_flags {
	GM_PARSE_STOP_AT_NON_OPTION = 1 << 0,
	GM_PARSE_KEEP_DASHDASH = 1 << 1
};

enum gm_parse_result {
	GM_PARSE_ERROR = -1,       /* bad usage: err holds one line */
	GM_PARSE_HELP_SHORT = -2,  /* -h: caller prints usage, exits 129 */
	GM_PARSE_HELP_LONG = -3,   /* --help: caller opens the man page */
	GM_PARSE_COMPLETION = -4,  /* --git-completion-helper: printed already */
	GM_PARSE_VERSION = -5      /* --version, when the caller accepts it */
};

/*
 * Parses argv[0..argc) (argv[0] is the program or subcommand name and is
 * skipped).  On success returns the number of remaining arguments, moved
 * to the front of argv (argv[0..ret)).  Otherwise returns a
 * gm_parse_result.  "--version" is recognized only when version_ok is set.
 */
int gm_parse_options(int argc, const char **argv, const struct gm_option *opts, int flags,
		     int version_ok, gm_error *err);

/* Prints "usage: LINE" lines, a blank line and the option table to out. */
void gm_print_usage(FILE *out, const char *const *usage, const struct gm_option *opts);

/* Prints the long options (and --no-* forms) space-separated, for completion. */
void gm_print_completion(FILE *out, const struct gm_option *opts);

#endif
