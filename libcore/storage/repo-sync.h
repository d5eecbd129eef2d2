/*
 * repo-sync.h - model repositories and their remotes: git model clone,
 * fetch, pull and push (git objects with libgit2, LFS objects with
 * lfs-repo.h's Batch API client or straight between local stores), and
 * the store's upkeep, fsck and gc.  Above repo.h and bundle.h.
 *
 * Errors follow error.h.
 */
#ifndef GM_REPO_SYNC_H
#define GM_REPO_SYNC_H

#include <stddef.h>

#include "base/error.h"
#include "storage/registry.h"
#include "storage/repo.h"

typedef struct gm_repo_transfer_opts {
	const char *const *include; /* NULL-terminated LFS path patterns (lfs.h); NULL: all */
	const char *const *exclude;
	int quiet;                  /* no progress */
	int p2p;                    /* LFS objects from the BitTorrent swarm first (p2p.h); model.p2p
				       in git config asks for it too */
} gm_repo_transfer_opts;

/*
 * git model clone: source is "hf:ORG/NAME[@REV]", a git URL, a local
 * repository path, or a FILE.tar written by gm_repo_bundle_create.  The
 * repository is cloned without a checkout, the LFS objects of the revision
 * to check out are downloaded (filtered by include/exclude), then the work
 * tree is checked out; files not downloaded stay pointer files, as with
 * git-lfs.  name may be NULL (derived from the source).
 */
int gm_repo_clone(const char *source, const char *name, const gm_repo_transfer_opts *opts,
		  gm_registry_model *out, gm_error *err);

/*
 * git model fetch: fetches origin, then the LFS objects of rev (NULL:
 * HEAD) selected by opts; when rev is the checked-out commit, pointer files
 * in the work tree whose objects arrived are replaced by their content.
 */
int gm_repo_fetch(const char *name, const char *rev, const gm_repo_transfer_opts *opts, gm_error *err);

/* git model pull: fetch, then fast-forward the current branch to its
 * upstream (refusing anything else) and check it out with its LFS objects.
 * *updated tells whether HEAD moved. */
int gm_repo_pull(const char *name, const gm_repo_transfer_opts *opts, int *updated, gm_error *err);

/* git model push: uploads the LFS objects of the commits the remote lacks
 * (Batch API), then pushes the current branch with libgit2. */
int gm_repo_push(const char *name, const char *remote, const gm_repo_transfer_opts *opts, gm_error *err);

/* One problem found by gm_repo_fsck. */
typedef void (*gm_repo_report_fn)(void *ctx, const char *kind, const char *oid, const char *path,
				  const char *detail);

/*
 * git model fsck: re-hashes every LFS object referenced by any ref (and
 * every object in the store), calling report for each missing or corrupt
 * one.  *n_checked objects were hashed; *n_bad problems were reported.
 */
int gm_repo_fsck(gm_repo *r, gm_repo_report_fn report, void *ctx, size_t *n_checked, size_t *n_bad,
		 gm_error *err);

/*
 * git model gc: deletes LFS objects referenced by no commit reachable from
 * a ref or HEAD, nor by the index; dry_run only counts.  Cached views are
 * dropped too (they are rebuilt on demand).
 */
int gm_repo_gc(gm_repo *r, int dry_run, size_t *n_removed, unsigned long long *bytes_freed,
	       gm_error *err);

#endif
