/*
 * fs.h - files written atomically, directories, whole-file reads.
 *
 * Nothing is ever written under its final name: a gm_atomic_file writes to
 * "DIR/.NAME.tmp-XXXXXX" beside the target, fsyncs, then renames over the
 * target, so a crash or an error leaves either the old file or the new one.
 * The writer holds an flock(2) on its temporary file until it is renamed or
 * removed; the kernel drops it when the writer dies, so a temporary that can
 * be locked is the leftover of a killed writer (gm_atomic_remove_stale).
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
	int lock_fd;     /* holds the flock on the temporary while it has its name */
} gm_atomic_file;

/* Creates a temporary file beside path with the given mode (umask applies). */
int gm_atomic_open(gm_atomic_file *f, const char *path, mode_t mode, gm_error *err);
/* Writes all of data (retrying short writes). */
int gm_atomic_write(gm_atomic_file *f, const void *data, size_t len, gm_error *err);
/* fsyncs, renames over the final name, fsyncs the directory; frees f. */
int gm_atomic_commit(gm_atomic_file *f, gm_error *err);
/* Removes the temporary file and frees f; safe to call after commit or failure. */
void gm_atomic_abort(gm_atomic_file *f);

/*
 * Removes the temporaries "DIR/.NAME.tmp-XXXXXX" of path that killed
 * writers left (those no live writer holds locked); returns how many.
 */
int gm_atomic_remove_stale(const char *path);

/*
 * Temporary files that say whether their writer is alive: the writer locks
 * a file it just created with gm_tmp_lock and keeps the returned descriptor
 * open until the file is renamed or removed; gm_tmp_remove_stale removes a
 * temporary only when it can take that lock, i.e. its writer is gone.
 * gm_tmp_lock returns -1 (errno ENOENT) when a cleaner removed the file
 * between its creation and the lock: the caller makes another.
 */
int gm_tmp_lock(int fd);
/* mkstemp(tmpl) (tmpl ends in XXXXXX), locked with gm_tmp_lock, a new name tried when a cleaner
 * removed the file first: the descriptor and *lock, or -1 (errno) and *lock -1. */
int gm_mkstemp_locked(char *tmpl, int *lock);
/* 1 when path was a regular file nobody held locked, and is removed. */
int gm_tmp_remove_stale(const char *path);

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
