/*
 * git model checkout, git model worktree add|list|rm|prune|repair -
 * worktrees whose large files are shared copy-on-write.
 *
 * Argument parsing and printing only: the work is in libcore/storage/worktree.c
 * and libcore/storage/cow.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "builtin.h"
#include "base/cmd.h"
#include "storage/cow.h"
#include "storage/worktree.h"

static const char *const checkout_usage[] = {
	"git model checkout <name>[@<branch>] [--worktree <dir>] [--driver <driver>]",
	NULL
};

static const char *const worktree_usage[] = {
	"git model worktree add <name>[@<branch>] [--worktree <dir>] [--driver <driver>]",
	"git model worktree list [-v] [<name>]",
	"git model worktree rm [--force] <dir>",
	"git model worktree prune [<name>]",
	"git model worktree repair [<name> | <dir>]",
	NULL
};

static void split_spec(const char *spec, char **name, char **ref)
{
	const char *at = strchr(spec, '@');

	if (at) {
		*name = strndup(spec, (size_t)(at - spec));
		*ref = gm_xstrdup(at + 1);
	} else {
		*name = gm_xstrdup(spec);
		*ref = NULL;
	}
}

static void print_size(const char *label, unsigned long long bytes)
{
	gm_buf b = GM_BUF_INIT;

	gm_buf_add_human_bytes(&b, bytes);
	printf("%s%s", label, b.buf);
	gm_buf_release(&b);
}

static void print_worktree(const gm_worktree_info *w, int verbose)
{
	const char *state = "";

	if (w->missing)
		state = ", missing (git model worktree prune)";
	else if (!strcmp(w->driver, "overlay") || !strcmp(w->driver, "fuse"))
		state = w->mounted ? ", mounted" : ", not mounted (git model worktree repair)";
	printf("%s  %s@%s  %s%s", w->path, w->model, w->ref, w->driver, state);
	print_size("  used ", w->used);
	print_size(" of ", w->full);
	printf(" (%llu of %llu bytes)\n", w->used, w->full);
	if (verbose && *w->fallback)
		printf("    not better because: %s\n", w->fallback);
	if (verbose && *w->lower)
		printf("    shared lower layer: %s\n", w->lower);
}

static int add(const char *name_spec, const char *dir, const char *driver, const struct gm_cmd_info *cmd)
{
	gm_worktree_opts opts = { dir, GM_COW_AUTO };
	gm_worktree_info info;
	gm_error err = GM_ERROR_INIT;
	char *name, *ref;
	int ret;

	if (driver && gm_cow_driver_parse(driver, &opts.driver, &err))
		return gm_cmd_usage_error(cmd, "%s", err.msg);
	split_spec(name_spec, &name, &ref);
	if (!*name || (ref && !*ref)) {
		free(name);
		free(ref);
		return gm_cmd_usage_error(cmd, "'%s' is not NAME or NAME@BRANCH", name_spec);
	}
	ret = gm_worktree_add(name, ref, &opts, &info, &err);
	free(name);
	free(ref);
	if (ret)
		return gm_cmd_error(&err);
	printf("worktree %s on branch '%s' (%s)\n", info.path, info.ref, info.driver);
	if (*info.fallback)
		printf("  not better because: %s\n", info.fallback);
	gm_worktree_info_release(&info);
	return 0;
}

int cmd_checkout(int argc, const char **argv)
{
	const char *dir = NULL, *driver = NULL;
	int status, n;
	const struct gm_option options[] = {
		GM_OPT_STRING(0, "worktree", &dir, "dir", "where to make it (default: MODELDIR@BRANCH)"),
		GM_OPT_STRING(0, "driver", &driver, "driver",
			      "share large files with overlay, fuse, reflink, hardlink or copy (default: auto)"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model checkout", "git-model", checkout_usage, options };

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n != 1)
		return gm_cmd_usage_error(&cmd, n ? "too many arguments" : "missing <name>[@<branch>]");
	return add(argv[0], dir, driver, &cmd);
}

static int worktree_add(int argc, const char **argv)
{
	const char *dir = NULL, *driver = NULL;
	int status, n;
	const struct gm_option options[] = {
		GM_OPT_STRING(0, "worktree", &dir, "dir", "where to make it (default: MODELDIR@BRANCH)"),
		GM_OPT_STRING(0, "driver", &driver, "driver",
			      "share large files with overlay, fuse, reflink, hardlink or copy (default: auto)"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model worktree add", "git-model", worktree_usage, options };

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n != 1)
		return gm_cmd_usage_error(&cmd, n ? "too many arguments" : "missing <name>[@<branch>]");
	return add(argv[0], dir, driver, &cmd);
}

static int worktree_list(int argc, const char **argv)
{
	int status, n, verbose = 0;
	const struct gm_option options[] = {
		GM_OPT_FLAG('v', "verbose", &verbose, "also say why better drivers were not used, and the lower layer"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model worktree list", "git-model", worktree_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_worktree_info *v;
	size_t count, i;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n > 1)
		return gm_cmd_usage_error(&cmd, "too many arguments: at most one model name");
	if (gm_worktree_list(n ? argv[0] : NULL, &v, &count, &err))
		return gm_cmd_error(&err);
	for (i = 0; i < count; i++)
		print_worktree(&v[i], verbose);
	gm_worktree_infos_free(v, count);
	return 0;
}

static int worktree_rm(int argc, const char **argv)
{
	int status, n, force = 0, i;
	const struct gm_option options[] = {
		GM_OPT_FLAG('f', "force", &force, "remove it even with changes not committed"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model worktree rm", "git-model", worktree_usage, options };
	gm_error err = GM_ERROR_INIT;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n < 1)
		return gm_cmd_usage_error(&cmd, "missing <dir>: the worktree to remove");
	for (i = 0; i < n; i++) {
		if (gm_worktree_remove(argv[i], force, &err))
			return gm_cmd_error(&err);
		printf("removed %s\n", argv[i]);
	}
	return 0;
}

static int worktree_prune(int argc, const char **argv)
{
	int status, n;
	const struct gm_option options[] = { GM_OPT_END() };
	const struct gm_cmd_info cmd = { "git model worktree prune", "git-model", worktree_usage, options };
	gm_error err = GM_ERROR_INIT;
	size_t pruned;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n > 1)
		return gm_cmd_usage_error(&cmd, "too many arguments: at most one model name");
	if (gm_worktree_prune(n ? argv[0] : NULL, &pruned, &err))
		return gm_cmd_error(&err);
	printf("pruned %zu\n", pruned);
	return 0;
}

static int worktree_repair(int argc, const char **argv)
{
	int status, n;
	const struct gm_option options[] = { GM_OPT_END() };
	const struct gm_cmd_info cmd = { "git model worktree repair", "git-model", worktree_usage, options };
	gm_error err = GM_ERROR_INIT;
	const char *name = NULL, *dir = NULL;
	size_t repaired;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n > 1)
		return gm_cmd_usage_error(&cmd, "too many arguments: a model name or a worktree directory");
	/* A path names one worktree; anything else is a model name. */
	if (n == 1 && (strchr(argv[0], '/') || !strcmp(argv[0], ".")))
		dir = argv[0];
	else if (n == 1)
		name = argv[0];
	if (gm_worktree_repair(name, dir, &repaired, &err))
		return gm_cmd_error(&err);
	printf("re-mounted %zu\n", repaired);
	return 0;
}

int cmd_worktree(int argc, const char **argv)
{
	static const struct gm_option options[] = { GM_OPT_END() };
	static const struct gm_cmd_info cmd = { "git model worktree", "git-model", worktree_usage, options };
	static const struct gm_subcommand subs[] = {
		{ "add", worktree_add, "make a worktree (as git model checkout)" },
		{ "list", worktree_list, "list worktrees: branch, driver, mount state, disk use" },
		{ "rm", worktree_rm, "unmount and remove a worktree" },
		{ "prune", worktree_prune, "forget worktrees whose directory is gone, and unused lower layers" },
		{ "repair", worktree_repair, "re-mount worktrees that are not mounted (after a reboot)" },
		{ NULL, NULL, NULL }
	};

	return gm_cmd_dispatch(&cmd, subs, argc, argv);
}
