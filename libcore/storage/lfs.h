/*
 * lfs.h - Git LFS: pointer files, the local object store, clean and smudge,
 * and Batch API transfers (download and upload) over HTTP.
 *
 * Four headers, each using only the ones before it:
 *
 *   lfs.h           pointers, hashing, the object store, clean and smudge,
 *                   object lists (lfs.c)
 *   lfs-transfer.h  Batch API downloads and uploads (lfs-transfer.c)
 *   lfs-repo.h      repository-level operations: scan, endpoint, fetch,
 *                   checkout, push, install, track (lfs-repo.c)
 *   lfs-filter.h    the clean/smudge filters for libgit2 and stock git,
 *                   which download missing objects (lfs-filter.c)
 *
 * Everything here is compatible with git-lfs on disk and on the wire, so a
 * repository can be used by git-lfs and by git-model alternately:
 *
 *   - pointers are byte-identical to what git-lfs writes for the same
 *     content ("version" line first, the other keys sorted, "ext-" keys
 *     kept, under 1024 bytes);
 *   - objects live in GITDIR/lfs/objects/OID[0:2]/OID[2:4]/OID, where
 *     GITDIR is the repository's common git directory (shared by its
 *     worktrees); partial downloads live in GITDIR/lfs/tmp;
 *   - transfers speak the Batch API with the "basic" transfer adapter.
 *
 * Nothing is ever written under a final name before it is complete and
 * verified: objects are written to a temporary file in lfs/tmp, hashed
 * while written, and renamed into place only when the sha256 and size
 * match.  A failure (wrong hash, truncated transfer, full disk) leaves at
 * most a partial file in lfs/tmp, which a later download resumes from.
 *
 * Errors follow error.h: 0 or a negative GM_E* code, with a message in
 * gm_error that names the object (oid, and path when known) and says what
 * to do.  Nothing here prints errors; progress goes to stderr only when
 * asked for and stderr is a terminal.
 */
#ifndef GM_LFS_H
#define GM_LFS_H

#include <stddef.h>

#include "base/buf.h"
#include "base/error.h"

#define GM_LFS_SPEC_URL "https://git-lfs.github.com/spec/v1"
#define GM_LFS_OID_HEXLEN 64
/* A pointer file is always smaller than this (git-lfs's limit too). */
#define GM_LFS_POINTER_MAX 1024

/* ------------------------------------------------------------ pointers */

/* One "ext-N-NAME sha256:OID" line of a pointer, kept verbatim. */
typedef struct gm_lfs_ext {
	char *key;   /* "ext-0-foo" (owned) */
	char *value; /* "sha256:..." (owned) */
} gm_lfs_ext;

typedef struct gm_lfs_pointer {
	char oid[GM_LFS_OID_HEXLEN + 1]; /* lowercase hex sha256, NUL-terminated */
	unsigned long long size;         /* size of the object in bytes */
	gm_lfs_ext *ext;                 /* owned array, in file order (sorted) */
	size_t n_ext;
} gm_lfs_pointer;

#define GM_LFS_POINTER_INIT { "", 0, NULL, 0 }

/*
 * Parses a pointer file strictly: exactly "version SPEC\n", then keys in
 * strictly ascending order among ext-N-NAME, "oid sha256:<64 lowercase
 * hex>" and "size <decimal>", each line ending in "\n", nothing else, and
 * fewer than 1024 bytes.  Returns 0 and fills out (release it with
 * gm_lfs_pointer_release), or GM_EFORMAT with a message saying which line
 * is wrong; out is left empty on failure.
 */
int gm_lfs_pointer_parse(const void *data, size_t len, gm_lfs_pointer *out, gm_error *err);

/* 1 when data parses as a pointer (gm_lfs_pointer_parse without output). */
int gm_lfs_is_pointer(const void *data, size_t len);

/* Appends the canonical pointer text (what git-lfs writes) to out. */
void gm_lfs_pointer_format(const gm_lfs_pointer *p, gm_buf *out);

/* Frees what p owns and empties it; safe on an empty pointer. */
void gm_lfs_pointer_release(gm_lfs_pointer *p);

/* sha256 (64 lowercase hex digits + NUL) and size of a file. */
int gm_lfs_hash_file(const char *path, char *hex, unsigned long long *size, gm_error *err);

/* 1 when s is 64 lowercase hex digits (and nothing else). */
int gm_lfs_oid_valid(const char *s);

/* ------------------------------------------------------------ object store */

typedef struct gm_lfs_store {
	char *gitdir;  /* the common git directory (owned) */
	char *root;    /* GITDIR/lfs (owned) */
	char *objects; /* GITDIR/lfs/objects (owned) */
	char *tmp;     /* GITDIR/lfs/tmp (owned) */
} gm_lfs_store;

/*
 * Opens the object store of the git directory gitdir (".git" of a
 * worktree, or a bare repository).  Nothing is created until an object is
 * written.  Release with gm_lfs_store_release.
 */
int gm_lfs_store_init(gm_lfs_store *s, const char *gitdir, gm_error *err);

/*
 * Opens the store of the repository containing path (discovered as git
 * does; path NULL means GIT_DIR when set, else the current directory, as
 * for a filter run by git; linked worktrees use their common directory).
 * GM_ENOENT when path is not in a git repository.
 */
int gm_lfs_store_discover(gm_lfs_store *s, const char *path, gm_error *err);

void gm_lfs_store_release(gm_lfs_store *s);

/* GITDIR/lfs/objects/OID[0:2]/OID[2:4]/OID as a new string (caller frees). */
char *gm_lfs_object_path(const gm_lfs_store *s, const char *oid);

/* 1 when the object is present with the expected size (not re-hashed). */
int gm_lfs_store_has(const gm_lfs_store *s, const char *oid, unsigned long long size);

/*
 * Re-hashes a stored object.  0 when its sha256 and size match; GM_ENOENT
 * when it is missing; GM_EFORMAT when corrupt (the message gives the
 * actual hash and size).  The file is left in place either way.
 */
int gm_lfs_store_verify(const gm_lfs_store *s, const char *oid, unsigned long long size,
			gm_error *err);

/*
 * Adds an existing file to the store by hard link (or copy when linking is
 * impossible), verifying its sha256 and size first; used to reuse blobs of
 * the huggingface_hub cache.  GM_EFORMAT when the file does not hash to
 * oid (the store is untouched).
 */
int gm_lfs_store_import(const gm_lfs_store *s, const char *src, const char *oid,
			unsigned long long size, gm_error *err);

/* ------------------------------------------------------------ clean and smudge */

/*
 * A streaming clean: bytes are hashed while they are copied into a
 * temporary file in lfs/tmp; gm_lfs_clean_finish renames it to its object
 * path and returns the pointer.  Content that is itself a valid pointer
 * (smaller than 1024 bytes) is returned unchanged and stores nothing, as
 * git-lfs does, so committing pointer files is harmless.  Empty content
 * gives a pointer of size 0 and stores nothing: callers write an empty
 * blob for it, not a pointer, as git-lfs does.
 */
typedef struct gm_lfs_cleaner gm_lfs_cleaner;

int gm_lfs_clean_begin(const gm_lfs_store *s, gm_lfs_cleaner **out, gm_error *err);
int gm_lfs_clean_write(gm_lfs_cleaner *c, const void *data, size_t len, gm_error *err);
/* Frees c in every case; on success fills p (release it). */
int gm_lfs_clean_finish(gm_lfs_cleaner *c, gm_lfs_pointer *p, gm_error *err);
/* Frees c and removes its temporary file; NULL is fine. */
void gm_lfs_clean_abort(gm_lfs_cleaner *c);

/*
 * Removes the temporary files of cleans that were killed (lfs/tmp/clean-*
 * that no live cleaner holds locked: base/fs.h, gm_tmp_lock); returns how
 * many.
 */
int gm_lfs_remove_stale_tmp(const gm_lfs_store *s);

/* Cleans everything readable from fd (until EOF) / the file at path. */
int gm_lfs_clean_fd(const gm_lfs_store *s, int fd, gm_lfs_pointer *p, gm_error *err);
int gm_lfs_clean_file(const gm_lfs_store *s, const char *path, gm_lfs_pointer *p, gm_error *err);

/* Where smudged content goes: returns 0 or a GM_E* code (filling err). */
typedef int (*gm_lfs_sink_fn)(void *ctx, const void *data, size_t len, gm_error *err);

/*
 * Smudges: when data is a pointer, streams the object's content to sink,
 * verifying size and sha256 on the way (GM_EFORMAT after the last byte
 * if they do not match: the store is corrupt).  When data is not a
 * pointer it is passed through unchanged (git-lfs does the same: files
 * committed without the filter stay readable).  A missing object is
 * GM_ENOENT naming path (may be NULL), the oid and how to fetch it.
 */
int gm_lfs_smudge(const gm_lfs_store *s, const void *data, size_t len, const char *path,
		  gm_lfs_sink_fn sink, void *ctx, gm_error *err);

/*
 * The top directory of the worktree containing path (*out, caller frees);
 * GM_EINVAL for a bare repository, GM_ENOENT outside any repository.
 */
int gm_lfs_worktree_top(const char *path, char **out, gm_error *err);

/* A sink writing to a file descriptor (ctx points to the int fd). */
int gm_lfs_sink_fd(void *ctx, const void *data, size_t len, gm_error *err);
/* A sink appending to a gm_buf (ctx is the gm_buf *). */
int gm_lfs_sink_buf(void *ctx, const void *data, size_t len, gm_error *err);

/* ------------------------------------------------------------ object lists */

/* One object to transfer. */
typedef struct gm_lfs_object {
	char oid[GM_LFS_OID_HEXLEN + 1];
	unsigned long long size;
	char *path; /* a file that points to it, for messages and progress (owned; may be NULL) */
} gm_lfs_object;

typedef struct gm_lfs_object_list {
	gm_lfs_object *items; /* owned */
	size_t n, alloc;
} gm_lfs_object_list;

/* Appends (oid, size, path) unless oid is already listed; path may be NULL. */
void gm_lfs_object_list_add(gm_lfs_object_list *l, const char *oid, unsigned long long size,
			    const char *path);
void gm_lfs_object_list_release(gm_lfs_object_list *l);

#endif
