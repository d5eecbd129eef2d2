/*
 * git model fsck / gc - check and prune a model's LFS object store.
 */
#include <stdio.h>

#include "base/buf.h"
#include "builtin.h"
#include "base/cmd.h"
#include "storage/registry.h"
#include "storage/repo.h"
#include "storage/repo-sync.h"

static const char *const fsck_usage[] = {
	"git model fsck <name>",
	NULL
};
static const char *const gc_usage[] = {
	"git model gc [-n | --dry-run] <name>",
	NULL
};

/* <name> of a registered model, or a path to a model repository. */
static int open_named(const char *spec, gm_repo **r, gm_error *err)
{
	gm_registry *reg = NULL;
	gm_registry_model m = { 0 };
	int ret;

	if (spec[0] == '/' || spec[0] == '.' || gm_registry_check_name(spec, NULL))
		return gm_repo_open(spec, r, err);
	if ((ret = gm_registry_open(NULL, &reg, err)) == 0)
		ret = gm_repo_open_model(reg, spec, &m, r, err);
	gm_registry_model_release(&m);
	gm_registry_close(reg);
	return ret;
}

static void report(void *ctx, const char *kind, const char *oid, const char *path, const char *detail)
{
	(void)ctx;
	printf("%s: %s%s%s: %s\n", kind, oid, path ? " " : "", path ? path : "", detail);
}

int cmd_fsck(int argc, const char **argv)
{
	int status, n;
	const struct gm_option options[] = {
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model fsck", "git-model", fsck_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_repo *r;
	size_t checked, bad;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n != 1)
		return gm_cmd_usage_error(&cmd, n ? "one <name> expected" : "missing <name>: the model to check");
	if (open_named(argv[0], &r, &err))
		return gm_cmd_error(&err);
	if (gm_repo_fsck(r, report, NULL, &checked, &bad, &err)) {
		gm_repo_close(r);
		return gm_cmd_error(&err);
	}
	gm_repo_close(r);
	printf("checked %zu LFS objects, %zu problem%s\n", checked, bad, bad == 1 ? "" : "s");
	if (bad) {
		gm_error_set(&err, GM_EFORMAT, "%zu LFS object%s missing or corrupt in '%s'", bad,
			     bad == 1 ? " is" : "s are", argv[0]);
		return gm_cmd_error(&err);
	}
	return 0;
}

int cmd_gc(int argc, const char **argv)
{
	int dry_run = 0, status, n;
	const struct gm_option options[] = {
		GM_OPT_FLAG('n', "dry-run", &dry_run, "only say what would be removed"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model gc", "git-model", gc_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_buf human = GM_BUF_INIT;
	gm_repo *r;
	size_t removed;
	unsigned long long bytes;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n != 1)
		return gm_cmd_usage_error(&cmd, n ? "one <name> expected" : "missing <name>: the model to prune");
	if (open_named(argv[0], &r, &err))
		return gm_cmd_error(&err);
	if (gm_repo_gc(r, dry_run, &removed, &bytes, &err)) {
		gm_repo_close(r);
		return gm_cmd_error(&err);
	}
	gm_repo_close(r);
	gm_buf_add_human_bytes(&human, bytes);
	printf("%s %zu unreferenced LFS object%s, %s %s (%llu bytes)\n", dry_run ? "would remove" : "removed",
	       removed, removed == 1 ? "" : "s", dry_run ? "freeing" : "freed", human.buf, bytes);
	gm_buf_release(&human);
	return 0;
}
