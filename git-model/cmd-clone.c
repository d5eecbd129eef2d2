/*
 * git model clone - a model repository from the Hugging Face Hub, a git
 * URL, a local repository or a bundle, registered under a name.
 */
#include <stdio.h>
#include <stdlib.h>

#include "base/buf.h"
#include "builtin.h"
#include "base/cmd.h"
#include "storage/repo-sync.h"

static const char *const clone_usage[] = {
	"git model clone [-q] [--p2p] [--include <pattern>...] [--exclude <pattern>...] <source> [<name>]",
	NULL
};

const char **gm_cmd_patterns(const gm_strlist *l)
{
	const char **v;
	size_t i;

	if (!l->n)
		return NULL;
	v = gm_xcalloc(l->n + 1, sizeof(*v));
	for (i = 0; i < l->n; i++)
		v[i] = l->items[i];
	return v;
}

int cmd_clone(int argc, const char **argv)
{
	int verbosity = 0, status, n, p2p = 0;
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
	const struct gm_cmd_info cmd = { "git model clone", "git-model", clone_usage, options };
	gm_repo_transfer_opts o = { NULL, NULL, 0, 0 };
	gm_registry_model m = { 0 };
	gm_error err = GM_ERROR_INIT;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		goto out;
	if (n == 0) {
		status = gm_cmd_usage_error(&cmd, "missing <source>: hf:ORG/NAME[@REV], a git URL, a path "
					    "or a FILE.tar bundle");
		goto out;
	}
	if (n > 2) {
		status = gm_cmd_usage_error(&cmd, "too many arguments: <source> and at most one <name>");
		goto out;
	}
	gm_cmd_set_verbosity(verbosity);
	o.include = gm_cmd_patterns(&include);
	o.exclude = gm_cmd_patterns(&exclude);
	o.quiet = verbosity < 0;
	o.p2p = p2p;
	if (gm_repo_clone(argv[0], n > 1 ? argv[1] : NULL, &o, &m, &err)) {
		status = gm_cmd_error(&err);
	} else {
		if (verbosity >= 0)
			printf("cloned %s as '%s' at %.12s in %s\n", argv[0], m.name, m.revision, m.path);
		status = 0;
	}
	gm_registry_model_release(&m);
	free((void *)o.include);
	free((void *)o.exclude);
out:
	gm_strlist_clear(&include);
	gm_strlist_clear(&exclude);
	return status;
}
