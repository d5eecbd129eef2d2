/*
 * The LFS subcommands of git model: the filter driver for stock git
 * (filter-process, clean, smudge), its configuration (install, track),
 * and object transfers for the current repository (lfs-fetch, lfs-push).
 * Argument parsing and printing only: the logic is in libcore/storage/lfs*.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "builtin.h"
#include "base/cmd.h"
#include "storage/lfs.h"
#include "storage/lfs-filter.h"
#include "storage/lfs-repo.h"
#include "storage/lfs-transfer.h"
#include "storage/p2p.h"
#include "storage/repo.h"
#include "base/log.h"

static void report(void *ctx, const char *path, const gm_error *e)
{
	fprintf(stderr, "git-model filter-process: %s: %s\n", path, e->msg);
}

int cmd_filter_process(int argc, const char **argv)
{
	static const char *const usage[] = { "git model filter-process", NULL };
	const struct gm_option options[] = { GM_OPT_END() };
	const struct gm_cmd_info cmd = { "git model filter-process", "git-model", usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_lfs_store store;
	int status, n, ret;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n > 0)
		return gm_cmd_usage_error(&cmd, "filter-process takes no arguments (git runs it)");
	if (gm_lfs_store_discover(&store, NULL, &err))
		return gm_cmd_error(&err);
	ret = gm_lfs_filter_process(&store, 0, 1, report, NULL, &err);
	gm_lfs_store_release(&store);
	return ret ? gm_cmd_error(&err) : 0;
}

/* clean and smudge: "git-model clean -- %f", content on stdin. */
static int single_shot(int argc, const char **argv, int clean)
{
	static const char *const clean_usage[] = { "git model clean [--] [<path>]", NULL };
	static const char *const smudge_usage[] = { "git model smudge [--] [<path>]", NULL };
	const struct gm_option options[] = { GM_OPT_END() };
	const struct gm_cmd_info cmd = { clean ? "git model clean" : "git model smudge", "git-model",
					 clean ? clean_usage : smudge_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_lfs_store store;
	const char *path;
	int status, n, ret;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n > 1)
		return gm_cmd_usage_error(&cmd, "too many arguments: at most the path being filtered");
	path = n ? argv[0] : NULL;
	if (isatty(0))
		return gm_cmd_usage_error(&cmd, "the content is read from standard input (git runs this filter)");
	if (gm_lfs_store_discover(&store, NULL, &err))
		return gm_cmd_error(&err);
	if (clean) {
		gm_lfs_pointer p;
		gm_buf out = GM_BUF_INIT;

		ret = gm_lfs_clean_fd(&store, 0, &p, &err);
		if (!ret) {
			if (p.size > 0 || p.n_ext)
				gm_lfs_pointer_format(&p, &out);
			gm_lfs_pointer_release(&p);
			fwrite(out.buf, 1, out.len, stdout);
			if (fflush(stdout) != 0)
				ret = gm_error_errno(&err, "cannot write the pointer");
		} else if (path) {
			gm_error_prefix(&err, "%s", path);
		}
		gm_buf_release(&out);
	} else {
		ret = gm_lfs_smudge_fd(&store, 0, 1, path, gm_lfs_skip_smudge(), &err);
	}
	gm_lfs_store_release(&store);
	return ret ? gm_cmd_error(&err) : 0;
}

int cmd_clean(int argc, const char **argv)
{
	return single_shot(argc, argv, 1);
}

int cmd_smudge(int argc, const char **argv)
{
	return single_shot(argc, argv, 0);
}

int cmd_install(int argc, const char **argv)
{
	static const char *const usage[] = { "git model install [--local | --global] [--force]", NULL };
	int local = 0, global = 0, force = 0, quiet = 0, changed, status, n;
	const struct gm_option options[] = {
		GM_OPT_FLAG(0, "local", &local, "configure the current repository only"),
		GM_OPT_FLAG(0, "global", &global, "configure the user's global git config (the default)"),
		GM_OPT_FLAG(0, "force", &force, "replace an existing, different filter.lfs configuration"),
		GM_OPT_FLAG('q', "quiet", &quiet, "print nothing on success"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model install", "git-model", usage, options };
	gm_error err = GM_ERROR_INIT;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n > 0)
		return gm_cmd_usage_error(&cmd, "install takes no arguments");
	if (local && global)
		return gm_cmd_usage_error(&cmd, "--local and --global cannot be used together");
	if (gm_lfs_install(local ? GM_LFS_INSTALL_LOCAL : GM_LFS_INSTALL_GLOBAL, ".", force, &changed, &err))
		return gm_cmd_error(&err);
	if (!quiet)
		printf("%s (%s configuration): filter.lfs runs git-model\n",
		       changed ? "LFS filter installed" : "LFS filter already installed", local ? "repository" : "global");
	return 0;
}

int cmd_track(int argc, const char **argv)
{
	static const char *const usage[] = { "git model track <pattern>...", NULL };
	const struct gm_option options[] = { GM_OPT_END() };
	const struct gm_cmd_info cmd = { "git model track", "git-model", usage, options };
	gm_error err = GM_ERROR_INIT;
	char *top;
	size_t added;
	int status, n, i;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n == 0)
		return gm_cmd_usage_error(&cmd, "missing <pattern>: what to store with LFS, e.g. '*.safetensors'");
	if (gm_lfs_worktree_top(".", &top, &err))
		return gm_cmd_error(&err);
	if (gm_lfs_track(top, argv, (size_t)n, &added, &err)) {
		free(top);
		return gm_cmd_error(&err);
	}
	free(top);
	for (i = 0; i < n; i++)
		printf("tracking \"%s\"\n", argv[i]);
	printf(added ? "%zu line%s added to .gitattributes\n" : "already tracked: .gitattributes unchanged\n",
	       added, added == 1 ? "" : "s");
	return 0;
}

/* Prints the summary line of a transfer. */
static void print_stats(const char *verb, const gm_lfs_transfer_stats *st)
{
	gm_buf b = GM_BUF_INIT;

	gm_buf_add_human_bytes(&b, st->bytes);
	printf("%s %zu object%s (%s in %.2f s", verb, st->n_transferred, st->n_transferred == 1 ? "" : "s",
	       b.buf, st->seconds);
	if (st->seconds > 0 && st->bytes) {
		gm_buf_reset(&b);
		gm_buf_add_human_bytes(&b, (unsigned long long)((double)st->bytes / st->seconds));
		printf(", %s/s", b.buf);
	}
	printf("); %zu already present", st->n_present);
	if (st->n_reused)
		printf(", %zu from the huggingface_hub cache", st->n_reused);
	if (st->n_resumed)
		printf(", %zu resumed", st->n_resumed);
	if (st->n_retries)
		printf(", %zu retr%s", st->n_retries, st->n_retries == 1 ? "y" : "ies");
	printf("\n");
	gm_buf_release(&b);
}

int cmd_lfs_fetch(int argc, const char **argv)
{
	static const char *const usage[] = {
		"git model lfs-fetch [--remote <name>] [--include <pattern>] [--exclude <pattern>] [--checkout] "
		"[-j <n>] [--retries <n>] [--[no-]progress] [--p2p] [-q] [<rev>]",
		NULL
	};
	const char *remote = NULL;
	gm_strlist include = { NULL, 0, 0 }, exclude = { NULL, 0, 0 };
	int checkout = 0, verbosity = 0, progress = -1, status, n, ret, p2p = 0;
	long jobs = 0, retries = -1;
	const struct gm_option options[] = {
		GM_OPT_STRING(0, "remote", &remote, "name", "the git remote to fetch from (default origin)"),
		GM_OPT_STRING_LIST('I', "include", &include, "pattern", "fetch only paths matching (repeatable)"),
		GM_OPT_STRING_LIST('X', "exclude", &exclude, "pattern", "skip paths matching (repeatable)"),
		GM_OPT_FLAG(0, "checkout", &checkout, "then replace pointer files in the worktree by their content"),
		GM_OPT_INT('j', "jobs", &jobs, "n", "parallel transfers (default 4)", 1, 64),
		GM_OPT_INT(0, "retries", &retries, "n", "attempts after a failure, per object (default 5)", 0, 100),
		GM_OPT_FLAG(0, "progress", &progress, "show progress even when stderr is not a terminal"),
		GM_OPT_FLAG(0, "p2p", &p2p, "get the objects from the BitTorrent swarm and web seeds first"),
		GM_OPT_VERBOSITY(&verbosity),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model lfs-fetch", "git-model", usage, options };
	gm_lfs_fetch_opts opts = GM_LFS_FETCH_OPTS_INIT;
	gm_lfs_transfer_stats st;
	gm_error err = GM_ERROR_INIT;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n > 1)
		return gm_cmd_usage_error(&cmd, "too many arguments: at most one revision");
	gm_cmd_set_verbosity(verbosity);
	gm_strlist_push(&include, NULL);
	gm_strlist_push(&exclude, NULL);
	opts.remote = remote;
	opts.rev = n ? argv[0] : NULL;
	opts.include = include.items;
	opts.exclude = exclude.items;
	opts.checkout = checkout;
	opts.transfer.parallel = (int)jobs;
	opts.transfer.max_retries = retries < 0 ? 0 : retries == 0 ? -1 : (int)retries;
	opts.transfer.progress = progress == 1 ? GM_LFS_PROGRESS_ALWAYS : progress == 0 || verbosity < 0 ?
				 GM_LFS_PROGRESS_NEVER : GM_LFS_PROGRESS_AUTO;
	/* the swarm first (when asked, or model.p2p): the plain transfer
	 * below then finds those objects present */
	{
		gm_repo *r = NULL;
		char hex[GM_REPO_OID_HEXLEN + 1];
		if (gm_repo_open(".", &r, NULL) == 0 && gm_repo_resolve(r, opts.rev, hex, NULL) == 0)
			gm_p2p_prefetch(r, hex, include.items, exclude.items, p2p,
					opts.transfer.progress == GM_LFS_PROGRESS_ALWAYS ||
					(opts.transfer.progress == GM_LFS_PROGRESS_AUTO && isatty(2)));
		gm_repo_close(r);
	}
	ret = gm_lfs_fetch(".", &opts, &st, &err);
	gm_strlist_clear(&include);
	gm_strlist_clear(&exclude);
	if (ret)
		return gm_cmd_error(&err);
	if (verbosity >= 0)
		print_stats("fetched", &st);
	return 0;
}

int cmd_lfs_push(int argc, const char **argv)
{
	static const char *const usage[] = {
		"git model lfs-push [-j <n>] [--[no-]progress] [-q] [<remote> [<rev>]]", NULL
	};
	int verbosity = 0, progress = -1, status, n;
	long jobs = 0;
	const struct gm_option options[] = {
		GM_OPT_INT('j', "jobs", &jobs, "n", "parallel transfers (default 4)", 1, 64),
		GM_OPT_FLAG(0, "progress", &progress, "show progress even when stderr is not a terminal"),
		GM_OPT_VERBOSITY(&verbosity),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model lfs-push", "git-model", usage, options };
	gm_lfs_transfer_opts opts = GM_LFS_TRANSFER_OPTS_INIT;
	gm_lfs_transfer_stats st;
	gm_error err = GM_ERROR_INIT;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n > 2)
		return gm_cmd_usage_error(&cmd, "too many arguments: at most a remote and a revision");
	gm_cmd_set_verbosity(verbosity);
	opts.parallel = (int)jobs;
	opts.progress = progress == 1 ? GM_LFS_PROGRESS_ALWAYS : progress == 0 || verbosity < 0 ?
			GM_LFS_PROGRESS_NEVER : GM_LFS_PROGRESS_AUTO;
	if (gm_lfs_push(".", n > 0 ? argv[0] : NULL, n > 1 ? argv[1] : NULL, &opts, &st, &err))
		return gm_cmd_error(&err);
	if (verbosity >= 0)
		print_stats("uploaded", &st);
	return 0;
}
