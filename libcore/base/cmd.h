/*
 * cmd.h - what the four commands share: option handling with git's
 * conventions, subcommand dispatch, error printing.
 *
 *   -h          usage on stdout, exit 129
 *   --help      the man page (man git-model), as git does
 *   --version   "git-model version X.Y.Z", exit 0
 *   bad usage   one line on stderr, exit 129
 *   failure     "error: MESSAGE" on stderr, exit 1
 *
 * These functions print and return exit statuses; they never exit.
 */
#ifndef GM_CMD_H
#define GM_CMD_H

#include "base/error.h"
#include "base/opts.h"

#define GM_EXIT_USAGE 129

struct gm_cmd_info {
	const char *name;             /* as the user types it: "git model synth" */
	const char *manpage;          /* "git-model" */
	const char *const *usage;     /* NULL-terminated usage lines */
	const struct gm_option *opts; /* option table */
};

/*
 * Parses options for a command or subcommand.  Returns the number of
 * remaining arguments (moved to argv[0..ret)), or -1 when the command is
 * finished, with *status the exit status to return (help shown, bad
 * usage reported, version printed...).
 */
int gm_cmd_parse(const struct gm_cmd_info *cmd, int argc, const char **argv, int flags,
		 int version_ok, int *status);

/* Prints "error: MSG (see 'NAME -h')" and returns GM_EXIT_USAGE. */
int gm_cmd_usage_error(const struct gm_cmd_info *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Prints "error: " and err's message; returns 1. */
int gm_cmd_error(const gm_error *err);

/* Runs man(1) on the page; returns an exit status when it cannot. */
int gm_cmd_show_man(const char *page);

/* Prints "KEY VALUE" with KEY left-aligned in 17 columns, as the
 * summaries of git model info and git adapter show do. */
void gm_cmd_print_field(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Maps a -v/-q count onto the log level. */
void gm_cmd_set_verbosity(int verbosity);

const char *gm_version(void);

/* A command with subcommands. */
struct gm_subcommand {
	const char *name;
	int (*fn)(int argc, const char **argv);
	const char *summary;
};

/*
 * Runs "NAME [OPTIONS] SUBCOMMAND [ARGS]": parses the command's own options
 * (GM_PARSE_STOP_AT_NON_OPTION), lists the subcommands in -h and for
 * --git-completion-helper, refuses unknown ones, and calls the chosen
 * one with argv[0] = its name.
 */
int gm_cmd_dispatch(const struct gm_cmd_info *cmd, const struct gm_subcommand *subs, int argc,
		    const char **argv);

#endif
