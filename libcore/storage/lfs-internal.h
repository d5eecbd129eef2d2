/*
 * lfs-internal.h - helpers of the LFS core (lfs.c) shared with the parts
 * above it (lfs-transfer.c, lfs-repo.c, lfs-filter.c); not part of the
 * library's API.
 */
#ifndef GM_LFS_INTERNAL_H
#define GM_LFS_INTERNAL_H

#include "base/error.h"
#include "storage/lfs.h"

/* 32-byte digest to 64 lowercase hex digits (+ NUL). */
void gm_lfs_sha256_hex(const unsigned char *md, char *hex);
/* Creates GITDIR/lfs/tmp. */
int gm_lfs_tmp_dir(const gm_lfs_store *s, gm_error *err);
/* Renames the verified temporary file tmp to the object path of oid. */
int gm_lfs_store_install(const gm_lfs_store *s, const char *tmp, const char *oid, gm_error *err);

#endif
