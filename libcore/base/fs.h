/*
 * fs.h - files written atomically, directories, whole-file reads.
 *
 * Nothing is ever written under its final name: a gm_atomic_file writes to
 * "DIR/.NAME.tmp-XXXXXX" beside the target, fsyncs, then renames over the
 * target, so a crash or an error leaves either the old file or the new one.
 */
#ifndef GM_FS_H
#define GM_FS_H

#include <stddef.h>
#include <sys/types.h>

#include "base/buf.h"
#include "base/error.h"

typedef struct gm_atomic_file {
	int fd;          /* open for writing; -1 when not active */
	char *path;      /* final name (owned) */
	char *tmp_path;  /* temporary name (owned) */
	unsigned long long written;
} gm_atomic_file;

/* Creates a temporary file beside path with the given mode (umask applies). */
int gm_atomic_open(gm_atomic_file *f, const char *path, mode_t mode, gm_error *err);
/* Writes all of data (retrying short writes). */
int gm_atomic_write(gm_atomic_file *f, const void *data, size_t len, gm_error *err);
/* fsyncs, renames over the final name, fsyncs the directory; frees f. */
int gm_atomic_commit(gm_atomic_file *f, gm_error *err);
/* Removes the temporary file and frees f; safe to call after commit or failure. */
void gm_atomic_abort(gm_atomic_file *f);

/* One-shot atomic write of a buffer. */
int gm_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, gm_error *err);

/* Appends the whole file to out. */
int gm_read_file(const char *path, gm_buf *out, gm_error *err);

/* mkdir -p with mode for each created component. */
int gm_mkdir_p(const char *path, mode_t mode, gm_error *err);

/* Joins a and b with one '/', returning a new string the caller frees. */
char *gm_path_join(const char *a, const char *b);

/* 1 if path is an existing directory / regular file, else 0. */
int gm_is_dir(const char *path);
int gm_is_file(const char *path);

/*
 * Copies the file src to the new file dst (O_EXCL), mode kept, fsynced; a
 * symbolic link is copied as a link.  copy_file_range shares extents where
 * the file system can.  dst is removed on failure.
 */
int gm_copy_file(const char *src, const char *dst, gm_error *err);

/* rm -rf path without following symlinks; an absent path is fine. */
int gm_remove_tree(const char *path, gm_error *err);

/* Writes all of data to fd, retrying short writes and EINTR. */
int gm_write_all(int fd, const void *data, size_t len);

#endif
