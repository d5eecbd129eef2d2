/* cmd.c - command conventions shared by git-model, git-infer, git-train, git-adapter. */
#include "base/cmd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"

const char *gm_version(void)
{
	return GM_VERSION;
}

void gm_cmd_set_verbosity(int verbosity)
{
	gm_log_set_level(verbosity < 0 ? GM_LOG_QUIET : verbosity);
}

int gm_cmd_error(const gm_error *err)
{
	fflush(stdout);
	fprintf(stderr, "error: %s\n", err->msg[0] ? err->msg : "unknown failure");
	return 1;
}

int gm_cmd_usage_error(const struct gm_cmd_info *cmd, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see '%s -h')\n", cmd->name);
	return GM_EXIT_USAGE;
}

int gm_cmd_show_man(const char *page)
{
	fflush(stdout);
	execlp("man", "man", page, (char *)NULL);
	fprintf(stderr, "error: cannot run 'man %s': %s; the page is also installed as %s.1\n", page,
		strerror(errno), page);
	return 1;
}

int gm_cmd_parse(const struct gm_cmd_info *cmd, int argc, const char **argv, int flags,
		 int version_ok, int *status)
{
	gm_error err = GM_ERROR_INIT;
	int ret = gm_parse_options(argc, argv, cmd->opts, flags, version_ok, &err);

	switch (ret) {
	case GM_PARSE_ERROR:
		*status = gm_cmd_usage_error(cmd, "%s", err.msg);
		return -1;
	case GM_PARSE_HELP_SHORT:
		gm_print_usage(stdout, cmd->usage, cmd->opts);
		*status = GM_EXIT_USAGE;
		return -1;
	case GM_PARSE_HELP_LONG:
		*status = gm_cmd_show_man(cmd->manpage);
		return -1;
	case GM_PARSE_COMPLETION:
		*status = 0;
		return -1;
	case GM_PARSE_VERSION:
		printf("%s version %s\n", cmd->manpage, gm_version());
		*status = 0;
		return -1;
	default:
		return ret;
	}
}

static void print_subcommands(FILE *out, const struct gm_subcommand *subs)
{
	const struct gm_subcommand *s;

	fputs("\ncommands:\n", out);
	for (s = subs; s->name; s++)
		fprintf(out, "    %-12s  %s\n", s->name, s->summary);
}

int gm_cmd_dispatch(const struct gm_cmd_info *cmd, const struct gm_subcommand *subs, int argc,
		    const char **argv)
{
	const struct gm_subcommand *s;
	int status, n;

	if (argc == 2 && !strcmp(argv[1], "--git-completion-helper")) {
		const char *sep = "";
		for (s = subs; s->name; s++) {
			printf("%s%s", sep, s->name);
			sep = " ";
		}
		putchar('\n');
		return 0;
	}
	n = gm_cmd_parse(cmd, argc, argv, GM_PARSE_STOP_AT_NON_OPTION, 1, &status);
	if (n < 0) {
		if (status == GM_EXIT_USAGE && argc > 1 && !strcmp(argv[1], "-h"))
			print_subcommands(stdout, subs);
		return status;
	}
	if (!n) {
		gm_print_usage(stderr, cmd->usage, cmd->opts);
		print_subcommands(stderr, subs);
		return GM_EXIT_USAGE;
	}
	for (s = subs; s->name; s++)
		if (!strcmp(s->name, argv[0]))
			return s->fn(n, argv);
	return gm_cmd_usage_error(cmd, "'%s' is not a %s command", argv[0], cmd->name);
}

void gm_cmd_print_field(const char *key, const char *fmt, ...)
{
	va_list ap;

	printf("%-17s ", key);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}
