/*
 * git-model - models as git repositories.
 *
 * Only dispatch lives here; each subcommand is in cmd-NAME.c and all the
 * logic it needs in libcore.
 */
#include <stddef.h>

#include "builtin.h"
#include "base/cmd.h"

static const char *const usage[] = {
	"git model [--version] <command> [<args>]",
	NULL
};

static const struct gm_option options[] = {
	GM_OPT_END()
};

static const struct gm_subcommand subcommands[] = {
	{ "bundle", cmd_bundle, "write a model's history and LFS objects into one tar archive" },
	{ "checkout", cmd_checkout, "a worktree of a model's branch, large files shared copy-on-write" },
	{ "clean", cmd_clean, "LFS clean filter: store standard input, print its pointer" },
	{ "clone", cmd_clone, "clone a model (hf:ORG/NAME, a git URL, a path, a bundle) and register it" },
	{ "fetch", cmd_fetch, "fetch a model's commits and the LFS objects of a revision" },
	{ "filter-process", cmd_filter_process, "LFS filter for git's long-running filter protocol" },
	{ "fsck", cmd_fsck, "re-hash a model's LFS objects, report missing or corrupt ones" },
	{ "gc", cmd_gc, "delete LFS objects no ref of a model uses" },
	{ "import", cmd_import, "turn a model directory into a registered repository" },
	{ "info", cmd_info, "describe a model: architecture, parameters, files, adapters" },
	{ "install", cmd_install, "configure git to use git-model as the LFS filter" },
	{ "lfs-fetch", cmd_lfs_fetch, "download the LFS objects of a revision (Batch API)" },
	{ "lfs-push", cmd_lfs_push, "upload the LFS objects a remote lacks" },
	{ "list", cmd_list, "list the registered models" },
	{ "pull", cmd_pull, "fast-forward a model to its remote branch, with its LFS objects" },
	{ "push", cmd_push, "upload a model's new LFS objects, then push its branch" },
	{ "quantize", cmd_quantize, "write a model as quantized GGUF files and commit them" },
	{ "rm", cmd_rm, "unregister a model and delete its directory" },
	{ "seed", cmd_seed, "share revisions over BitTorrent from the LFS store (--status, --stop)" },
	{ "smudge", cmd_smudge, "LFS smudge filter: print the content a pointer names" },
	{ "synth", cmd_synth, "write a model directory with random weights of a given shape" },
	{ "track", cmd_track, "store files matching patterns with LFS (.gitattributes)" },
	{ "worktree", cmd_worktree, "add, list, remove, prune and repair copy-on-write worktrees" },
	{ NULL, NULL, NULL }
};

int main(int argc, const char **argv)
{
	static const struct gm_cmd_info cmd = { "git model", "git-model", usage, options };

	return gm_cmd_dispatch(&cmd, subcommands, argc, argv);
}
