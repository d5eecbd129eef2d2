/*
 * resolve.h - registered models by name, over both their repository
 * (repo.h) and their worktrees (worktree.h): what "-m SPEC" means for
 * git infer, git train and git adapter, and git model rm, which removes
 * the worktrees before the model.  It sits above repo.h and worktree.h so
 * that neither of those needs the other.
 *
 * Errors follow error.h.  Strings returned through char ** are owned by
 * the caller.
 */
#ifndef GM_RESOLVE_H
#define GM_RESOLVE_H

#include "base/error.h"

/*
 * What "-m SPEC" means for git infer, git train and git adapter: SPEC is a
 * model directory when it names an existing directory or has a '/' before
 * any '@';
 * otherwise NAME or NAME@REV of a registered model.  NAME is its work tree;
 * NAME@REV is gm_repo_view of that revision.  *dir is the directory to load.
 */
int gm_repo_resolve_model(const char *spec, char **dir, gm_error *err);

/* git model rm: removes the model's worktrees (gm_worktree_remove_all;
 * one with changes stops it), unregisters the model and deletes its
 * directory. */
int gm_repo_remove(const char *name, gm_error *err);

#endif
