/*
 * bundle.h - a model repository as one file: git model bundle writes it,
 * git model clone FILE.tar reads it (repo-sync.h).  Above repo.h, below
 * repo-sync.h.  Errors follow error.h.
 */
#ifndef GM_BUNDLE_H
#define GM_BUNDLE_H

#include <stddef.h>

#include "base/error.h"
#include "storage/repo.h"

/*
 * git model bundle: one tar archive holding a manifest (refs, HEAD, the
 * sha256 of every member), a git pack of everything reachable from the
 * refs, and every LFS object those commits reference that the store has.
 * Written under a temporary name and renamed.
 */
int gm_repo_bundle_create(gm_repo *r, const char *file, size_t *n_objects, gm_error *err);

/*
 * Reads the bundle file into a new repository at dir (the partial
 * directory gm_repo_clone builds in), trusting nothing: every member is
 * checked against the manifest's size and sha256, the pack by libgit2's
 * indexer, the refs against the commits that arrived.  *head_commit
 * (caller frees) is the commit HEAD names.
 */
int gm_repo_bundle_unpack(const char *file, const char *dir, char **head_commit, gm_error *err);

#endif
