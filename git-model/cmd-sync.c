/*
 * git model fetch / pull / push - move a registered model's commits and
 * LFS objects to and from its remotes.
 */
#include <stdio.h>
#include <stdlib.h>

#include "builtin.h"
#include "base/cmd.h"
#include "storage/repo-sync.h"

static const char *const fetch_usage[] = {
	"git model fetch [-q] [--p2p] [--include <pattern>...] [--exclude <pattern>...] <name> [<rev>]",
	NULL
};
static const char *const pull_usage[] = {
	"git model pull [-q] [--p2p] [--include <pattern>...] [--exclude <pattern>...] <name>",
	NULL
};
static const char *const push_usage[] = {
	"git model push [-q] <name> [<remote>]",
	NULL
};

/* fetch and pull share their options. */
static int fetch_or_pull(int pull, int argc, const char **argv)
{
	int verbosity = 0, status, n, updated = 0, p2p = 0;
	gm_strlist include = { NULL, 0, 0 }, exclude = { NULL, 0, 0 };
	const struct gm_option options[] = {
		GM_OPT_STRING_LIST('I', "include", &include, "pattern",
				   "fetch only the LFS files matching pattern (repeatable)"),
		GM_OPT_STRING_LIST('X', "exclude", &exclude, "pattern",
				   "do not fetch the LFS files matching pattern (repeatable)"),
		GM_OPT_FLAG(0, "p2p", &p2p, "get the LFS objects from the BitTorrent swarm and web seeds first"),
		GM_OPT_VERBOSITY(&verbosity),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { pull ? "git model pull" : "git model fetch", "git-model",
					 pull ? pull_usage : fetch_usage, options };
	gm_repo_transfer_opts o = { NULL, NULL, 0, 0 };
	gm_error err = GM_ERROR_INIT;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		goto out;
	if (n == 0) {
		status = gm_cmd_usage_error(&cmd, "missing <name>: a registered model (see 'git model list')");
		goto out;
	}
	if (n > (pull ? 1 : 2)) {
		status = gm_cmd_usage_error(&cmd, "too many arguments");
		goto out;
	}
	gm_cmd_set_verbosity(verbosity);
	o.include = gm_cmd_patterns(&include);
	o.exclude = gm_cmd_patterns(&exclude);
	o.quiet = verbosity < 0;
	o.p2p = p2p;
	status = 0;
	if (pull ? gm_repo_pull(argv[0], &o, &updated, &err) : gm_repo_fetch(argv[0], n > 1 ? argv[1] : NULL, &o, &err))
		status = gm_cmd_error(&err);
	else if (pull && verbosity >= 0)
		printf("%s\n", updated ? "updated" : "already up to date");
	else if (!pull && verbosity >= 0)
		printf("fetched '%s'%s%s\n", argv[0], n > 1 ? " at " : "", n > 1 ? argv[1] : "");
	free((void *)o.include);
	free((void *)o.exclude);
out:
	gm_strlist_clear(&include);
	gm_strlist_clear(&exclude);
	return status;
}

int cmd_fetch(int argc, const char **argv)
{
	return fetch_or_pull(0, argc, argv);
}

int cmd_pull(int argc, const char **argv)
{
	return fetch_or_pull(1, argc, argv);
}

int cmd_push(int argc, const char **argv)
{
	int verbosity = 0, status, n;
	const struct gm_option options[] = {
		GM_OPT_VERBOSITY(&verbosity),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model push", "git-model", push_usage, options };
	gm_repo_transfer_opts o = { NULL, NULL, 0, 0 };
	gm_error err = GM_ERROR_INIT;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n == 0)
		return gm_cmd_usage_error(&cmd, "missing <name>: a registered model (see 'git model list')");
	if (n > 2)
		return gm_cmd_usage_error(&cmd, "too many arguments: <name> and at most one <remote>");
	gm_cmd_set_verbosity(verbosity);
	o.quiet = verbosity < 0;
	if (gm_repo_push(argv[0], n > 1 ? argv[1] : NULL, &o, &err))
		return gm_cmd_error(&err);
	if (verbosity >= 0)
		printf("pushed '%s' to %s\n", argv[0], n > 1 ? argv[1] : "origin");
	return 0;
}
