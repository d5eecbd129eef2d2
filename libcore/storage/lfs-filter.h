/*
 * lfs-filter.h - the "lfs" clean/smudge filter: in-process for libgit2,
 * git's long-running filter-process protocol and the single-shot smudge
 * for stock git.  A smudge whose object is missing downloads it first
 * (lfs-repo.h, gm_lfs_fetch_one), except in libgit2's in-process filter.
 */
#ifndef GM_LFS_FILTER_H
#define GM_LFS_FILTER_H

#include "base/error.h"
#include "storage/lfs.h"

/*
 * Registers the in-process libgit2 filter named "lfs" (attribute
 * "filter=lfs", priority GIT_FILTER_DRIVER_PRIORITY): clean on add,
 * smudge on checkout, using the store of the repository being filtered.
 * Idempotent; call after git_libgit2_init().  A smudge whose object is
 * missing fails the checkout of that file with the message of
 * gm_lfs_smudge (it does not download: fetch with gm_lfs_fetch, in
 * parallel, before checking out; or clone without checkout, fetch, then
 * check out).
 */
int gm_lfs_filter_register(gm_error *err);

/*
 * Runs git's long-running filter protocol (gitattributes(5), "Long
 * Running Filter Process") on in_fd/out_fd until git closes in_fd:
 * handshake (git-filter-client/version=2), capabilities clean and smudge,
 * then one request after another.  Smudge downloads an object missing
 * from the store first (gm_lfs_fetch_one), as git-lfs does.  A request
 * that fails (an object that cannot be had, unreadable input, an unknown
 * command) is answered "status=error", reported
 * through report(ctx, pathname, error) (may be NULL), and the process goes
 * on.  Smudge honours GIT_LFS_SKIP_SMUDGE=1 (pointers are passed through,
 * as git-lfs does).  Returns 0 at a clean EOF between requests, or
 * GM_EFORMAT/GM_EIO when git sent something that breaks the protocol or
 * the pipe failed (the process must then stop).
 */
typedef void (*gm_lfs_report_fn)(void *ctx, const char *path, const gm_error *e);
int gm_lfs_filter_process(const gm_lfs_store *s, int in_fd, int out_fd, gm_lfs_report_fn report,
			  void *ctx, gm_error *err);

/*
 * The single-shot smudge filter: reads in_fd to EOF and writes the content
 * to out_fd (gm_lfs_smudge, downloading a missing object first with
 * gm_lfs_fetch_one; input of 1024 bytes or more is copied through without
 * being held in memory).  skip (GIT_LFS_SKIP_SMUDGE) passes
 * pointers through unchanged.
 */
int gm_lfs_smudge_fd(const gm_lfs_store *s, int in_fd, int out_fd, const char *path, int skip, gm_error *err);

/* 1 when GIT_LFS_SKIP_SMUDGE asks for pointers to be left alone. */
int gm_lfs_skip_smudge(void);

#endif
