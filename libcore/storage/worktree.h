/*
 * worktree.h - worktrees of registered models with large files shared
 * copy-on-write (git model checkout, git model worktree ...).
 *
 * A worktree is a git worktree of the model's repository (libgit2), on a
 * branch, registered in the registry (registry.h) with the driver that
 * shares its large files (cow.h).  Its state lives in the model's common
 * git directory:
 *
 *     GITDIR/git-model/cow/lower/SET/       the shared read-only lower layer of
 *                                           one set of large files: hard links
 *                                           into GITDIR/lfs/objects, SET being
 *                                           a hash of the (mode, oid, path) list
 *     GITDIR/git-model/cow/wt/NAME/state    driver, lower set, commit, path
 *     GITDIR/git-model/cow/wt/NAME/upper/   this worktree's changes (mounts)
 *     GITDIR/git-model/cow/wt/NAME/work/    overlayfs scratch
 *
 * A lower layer is used by every worktree whose state names it (that is
 * its reference count) and deleted only when the last one goes.  Mounted
 * worktrees are locked in git ("git worktree prune" must not drop them
 * while unmounted, since their .git file is in the upper layer).
 *
 * Errors follow error.h; strings in returned structs are owned by them.
 */
#ifndef GM_WORKTREE_H
#define GM_WORKTREE_H

#include <stddef.h>

#include "storage/cow.h"
#include "base/error.h"

typedef struct gm_worktree_opts {
	const char *dir;            /* where; NULL: MODELPATH@REF beside the model */
	enum gm_cow_driver driver;  /* GM_COW_AUTO: the best that works */
} gm_worktree_opts;

typedef struct gm_worktree_info {
	char *model;
	char *path;
	char *ref;        /* the branch checked out */
	char *commit;     /* the commit it was created at */
	char *driver;     /* "overlay", "fuse", "reflink", "hardlink", "copy" */
	char *lower;      /* the lower layer's directory; "" without one */
	char *fallback;   /* why better drivers were not used ("" when none) */
	int mounted;      /* for mount drivers: mounted now */
	int missing;      /* the directory or its state is gone (prune removes it) */
	unsigned long long used;  /* bytes this worktree takes (upper layer, unshared files) */
	unsigned long long full;  /* bytes a full copy of its files would take */
} gm_worktree_info;

void gm_worktree_info_release(gm_worktree_info *w);
void gm_worktree_infos_free(gm_worktree_info *v, size_t n);

/*
 * git model checkout NAME@REF: a worktree of registered model name on
 * branch ref.  A local branch is checked out (it must not be checked out
 * elsewhere); a name that is no branch and no revision becomes a new
 * branch at HEAD; a tag or commit becomes a new branch named after the
 * worktree directory.  ref NULL: a new branch named after opts->dir.
 * When a worktree of that model is already registered at the directory,
 * it is repaired (re-mounted) instead.  out (may be NULL) describes it.
 */
int gm_worktree_add(const char *name, const char *ref, const gm_worktree_opts *opts, gm_worktree_info *out,
		    gm_error *err);

/* The worktrees of model name (NULL: all models), with disk use. */
int gm_worktree_list(const char *name, gm_worktree_info **out, size_t *n, gm_error *err);

/*
 * Removes the worktree at path: refuses (GM_EINVAL) when it has changes
 * unless force; unmounts, deletes the directory, its upper and work
 * layers, its git administrative files and its registry entry; deletes
 * the lower layer only when no other worktree uses it.  The branch stays.
 */
int gm_worktree_remove(const char *path, int force, gm_error *err);

/* Removes every worktree of model name (before the model itself goes). */
int gm_worktree_remove_all(const char *name, int force, gm_error *err);

/* Forgets worktrees whose directory is gone (NULL: of every model) and
 * lower layers no worktree uses; *n_pruned counts both. */
int gm_worktree_prune(const char *name, size_t *n_pruned, gm_error *err);

/* Re-mounts what is no longer mounted (after a reboot), rebuilding lower
 * layers that are gone; path NULL: every worktree of name (NULL: all). */
int gm_worktree_repair(const char *name, const char *path, size_t *n_repaired, gm_error *err);

/*
 * For "-m NAME@REF": when a registered worktree of model name has ref
 * checked out, *dir is its path (re-mounted if needed) and *found 1;
 * else *found is 0 and *dir NULL.
 */
int gm_worktree_find(const char *name, const char *ref, char **dir, int *found, gm_error *err);

/*
 * For "-m DIR": when dir is a registered worktree that is no longer
 * mounted (after a reboot), re-mounts it, so that the command reading it
 * sees its files; any other directory is left alone (0).  No registry is
 * created when there is none.
 */
int gm_worktree_ensure(const char *dir, gm_error *err);

#endif
