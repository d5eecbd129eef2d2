/*
 * git-model - models as git repositories.
 *
 * Only dispatch lives here; each subcommand is in cmd-NAME.c and all the
 * logic it needs in libcore.
 */
#include <stddef.h>

#include "builtin.h"
#include "cmd.h"

static const char *const usage[] = {
	"git model [--version] <command> [<args>]",
	NULL
};

static const struct gm_option options[] = {
	GM_OPT_END()
};

static const struct gm_subcommand subcommands[] = {
	{ "checkout", cmd_checkout, "a worktree of a model's branch, large files shared copy-on-write" },
	{ "info", cmd_info, "describe a model directory: architecture, parameters, files" },
	{ "synth", cmd_synth, "write a model directory with random weights of a given shape" },
	{ "worktree", cmd_worktree, "add, list, remove, prune and repair copy-on-write worktrees" },
	{ NULL, NULL, NULL }
};

int main(int argc, const char **argv)
{
	static const struct gm_cmd_info cmd = { "git model", "git-model", usage, options };

	return gm_cmd_dispatch(&cmd, subcommands, argc, argv);
}
