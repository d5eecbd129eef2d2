/*
 * resolve.c - registered models by name over their repository and their
 * worktrees (see resolve.h).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "storage/lfs.h"
#include "storage/registry.h"
#include "storage/repo-internal.h"
#include "storage/repo.h"
#include "storage/resolve.h"
#include "storage/worktree.h"

/* ------------------------------------------------------------ -m SPEC */

/* A work tree whose files are still LFS pointers (a clone with --include or
 * --exclude) cannot be loaded; say so instead of letting the safetensors
 * reader call a pointer corrupt.  Only the top level is looked at: that is
 * where a model's files are.  GGUF files are left to the caller: a Hub
 * "-GGUF" repository holds one per quantization and a clone usually
 * fetches one (git infer --quant says which are pointers). */
static int check_fetched(const char *name, const char *dir, gm_error *err)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int ret = 0;

	if (!d)
		return 0;
	while (!ret && (de = readdir(d))) {
		char *p = gm_path_join(dir, de->d_name);
		struct stat st;
		gm_buf b = GM_BUF_INIT;
		size_t len = strlen(de->d_name);
		if (de->d_name[0] != '.' && !(len > 5 && !strcasecmp(de->d_name + len - 5, ".gguf")) &&
		    lstat(p, &st) == 0 && S_ISREG(st.st_mode) &&
		    st.st_size < GM_LFS_POINTER_MAX && gm_read_file(p, &b, NULL) == 0 && gm_lfs_is_pointer(b.buf, b.len))
			ret = gm_error_set(err, GM_ENOENT, "model '%s': %s is an LFS pointer whose object was not "
					   "fetched; run 'git model fetch %s'", name, de->d_name, name);
		gm_buf_release(&b);
		free(p);
	}
	closedir(d);
	return ret;
}

int gm_repo_resolve_model(const char *spec, char **dir, gm_error *err)
{
	gm_registry *reg = NULL;
	gm_registry_model m = { 0 };
	gm_repo *r = NULL;
	char *name, *rev;
	int ret;

	*dir = NULL;
	gm_repo_split_spec(spec, &name, &rev);
	/* a '/' in NAME makes a path; one in REV is a ref (origin/main) */
	if (strchr(name, '/') || gm_is_dir(spec)) {
		free(name);
		free(rev);
		/* a worktree unmounted by a reboot is mounted again before use */
		if ((ret = gm_worktree_ensure(spec, err)))
			return ret;
		*dir = gm_xstrdup(spec);
		return 0;
	}
	if (rev && !*rev) {
		ret = gm_error_set(err, GM_EINVAL, "'%s': a revision is expected after '@'", spec);
		goto out;
	}
	if ((ret = gm_registry_check_name(name, err))) {
		gm_error_prefix(err, "'%s' is neither a model directory nor a registered model", spec);
		goto out;
	}
	{
		/* no registry yet: nothing is registered, and running a model
		 * by a wrong name should not create one */
		char *db = NULL;
		int exists = gm_registry_default_path(&db, NULL) == 0 && gm_is_file(db);
		free(db);
		if (!exists) {
			ret = gm_error_set(err, GM_ENOENT, "'%s' is neither a model directory nor a registered "
					   "model (see 'git model list')", spec);
			goto out;
		}
	}
	if ((ret = gm_registry_open(NULL, &reg, err)))
		goto out;
	if ((ret = gm_registry_get_model(reg, name, &m, err))) {
		if (ret == GM_ENOENT)
			gm_error_set(err, GM_ENOENT, "'%s' is neither a model directory nor a registered model "
				     "(see 'git model list')", spec);
		goto out;
	}
	if (!rev) {
		if (!gm_is_dir(m.path))
			ret = gm_error_set(err, GM_ENOENT, "model '%s' is registered at %s, which does not "
					   "exist any more", name, m.path);
		else if (!(ret = check_fetched(name, m.path, err)))
			*dir = gm_xstrdup(m.path);
		goto out;
	}
	{
		/* NAME@BRANCH with a worktree on BRANCH: its files, edits included */
		int found = 0;
		if ((ret = gm_worktree_find(name, rev, dir, &found, err)) || found)
			goto out;
	}
	if ((ret = gm_repo_open(m.path, &r, err)) || (ret = gm_repo_view(r, rev, dir, err)))
		gm_error_prefix(err, "%s", spec);
out:
	gm_repo_close(r);
	gm_registry_model_release(&m);
	gm_registry_close(reg);
	free(name);
	free(rev);
	return ret;
}

/* ------------------------------------------------------------ rm */

int gm_repo_remove(const char *name, gm_error *err)
{
	gm_registry *reg = NULL;
	gm_registry_model m = { 0 };
	gm_buf aside = GM_BUF_INIT;
	int ret;

	if ((ret = gm_registry_open(NULL, &reg, err)) || (ret = gm_registry_get_model(reg, name, &m, err)))
		goto out;
	/* worktrees first: unmounted and deleted (one with changes stops us);
	 * a model whose directory vanished has none left to ask */
	if (gm_is_dir(m.path) && (ret = gm_worktree_remove_all(name, 0, err))) {
		gm_error_prefix(err, "model '%s' was not removed", name);
		goto out;
	}
	/* Move the directory out of the way first (one rename: the model
	 * disappears at once), then forget it, then delete the files. */
	if (gm_is_dir(m.path)) {
		char *slash = strrchr(m.path, '/');
		gm_buf_add(&aside, m.path, (size_t)(slash - m.path));
		gm_buf_addf(&aside, "/.%s.removing-%ld", slash + 1, (long)getpid());
		if (rename(m.path, aside.buf)) {
			ret = gm_error_errno(err, "cannot move %s aside", m.path);
			goto out;
		}
	}
	if ((ret = gm_registry_remove_model(reg, name, err))) {
		if (aside.len)
			rename(aside.buf, m.path);
		goto out;
	}
	if (aside.len && gm_repo_remove_tree(aside.buf))
		ret = gm_error_errno(err, "model '%s' is unregistered but %s could not be fully removed",
				     name, aside.buf);
out:
	gm_buf_release(&aside);
	gm_registry_model_release(&m);
	gm_registry_close(reg);
	return ret;
}
