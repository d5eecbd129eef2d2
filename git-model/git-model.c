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
	{ "clean", cmd_clean, "LFS clean filter: store standard input, print its pointer" },
	{ "filter-process", cmd_filter_process, "LFS filter for git's long-running filter protocol" },
	{ "info", cmd_info, "describe a model directory: architecture, parameters, files" },
	{ "install", cmd_install, "configure git to use git-model as the LFS filter" },
	{ "lfs-fetch", cmd_lfs_fetch, "download the LFS objects of a revision (Batch API)" },
	{ "lfs-push", cmd_lfs_push, "upload the LFS objects a remote lacks" },
	{ "smudge", cmd_smudge, "LFS smudge filter: print the content a pointer names" },
	{ "synth", cmd_synth, "write a model directory with random weights of a given shape" },
	{ "track", cmd_track, "store files matching patterns with LFS (.gitattributes)" },
	{ NULL, NULL, NULL }
};

int main(int argc, const char **argv)
{
	static const struct gm_cmd_info cmd = { "git model", "git-model", usage, options };

	return gm_cmd_dispatch(&cmd, subcommands, argc, argv);
}
