/*
 * git model import / bundle - a model directory into a registered
 * repository, and a repository into one archive for air-gapped machines.
 */
#include <stdio.h>

#include "builtin.h"
#include "storage/bundle.h"
#include "base/cmd.h"
#include "storage/registry.h"
#include "storage/repo.h"

static const char *const import_usage[] = {
	"git model import [-q] <dir> [<name>]",
	NULL
};
static const char *const bundle_usage[] = {
	"git model bundle <name> <file.tar>",
	NULL
};

int cmd_import(int argc, const char **argv)
{
	int verbosity = 0, status, n;
	const struct gm_option options[] = {
		GM_OPT_VERBOSITY(&verbosity),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model import", "git-model", import_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_registry_model m = { 0 };

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n == 0)
		return gm_cmd_usage_error(&cmd, "missing <dir>: a Hugging Face-layout model directory");
	if (n > 2)
		return gm_cmd_usage_error(&cmd, "too many arguments: <dir> and at most one <name>");
	gm_cmd_set_verbosity(verbosity);
	if (gm_repo_import(argv[0], n > 1 ? argv[1] : NULL, &m, &err))
		return gm_cmd_error(&err);
	if (verbosity >= 0)
		printf("imported %s as '%s' at %.12s in %s\n", argv[0], m.name, m.revision, m.path);
	gm_registry_model_release(&m);
	return 0;
}

int cmd_bundle(int argc, const char **argv)
{
	int status, n;
	const struct gm_option options[] = {
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model bundle", "git-model", bundle_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_registry *reg = NULL;
	gm_registry_model m = { 0 };
	gm_repo *r = NULL;
	size_t objects;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n != 2)
		return gm_cmd_usage_error(&cmd, "<name> and <file.tar> expected");
	if (gm_registry_open(NULL, &reg, &err) || gm_repo_open_model(reg, argv[0], &m, &r, &err) ||
	    gm_repo_bundle_create(r, argv[1], &objects, &err))
		status = gm_cmd_error(&err);
	else
		printf("bundled '%s' into %s (%zu LFS object%s)\n", argv[0], argv[1], objects,
		       objects == 1 ? "" : "s");
	gm_repo_close(r);
	gm_registry_model_release(&m);
	gm_registry_close(reg);
	return status;
}
