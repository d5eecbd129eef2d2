/*
 * lfs-internal.h - helpers shared by lfs.c, lfs-transfer.c, lfs-repo.c and
 * lfs-filter.c; not part of the library's API.
 */
#ifndef GM_LFS_INTERNAL_H
#define GM_LFS_INTERNAL_H

#include "error.h"
#include "lfs.h"

/* git_libgit2_init (reference counted; pair with git_libgit2_shutdown). */
int gm_lfs_git_init(void);
/* Fills err with "WHAT: <libgit2's last message>"; returns code. */
int gm_lfs_git_error(gm_error *err, int code, const char *what);

/* 32-byte digest to 64 lowercase hex digits (+ NUL). */
void gm_lfs_sha256_hex(const unsigned char *md, char *hex);
/* Creates GITDIR/lfs/tmp. */
int gm_lfs_tmp_dir(const gm_lfs_store *s, gm_error *err);
/* Renames the verified temporary file tmp to the object path of oid. */
int gm_lfs_store_install(const gm_lfs_store *s, const char *tmp, const char *oid, gm_error *err);

/*
 * gm_lfs_smudge, and when the object is missing, gm_lfs_fetch_one then
 * smudge again: what the filters run for stock git do (as git-lfs's).
 */
int gm_lfs_smudge_fetch(const gm_lfs_store *s, const void *data, size_t len, const char *path,
			gm_lfs_sink_fn sink, void *ctx, gm_error *err);

#endif
