/*
 * cow.h - copy-on-write sharing of large files between worktrees.
 *
 * A worktree of a model shows the revision's large (LFS) files without
 * copying them, by the best of five drivers that works here:
 *
 *   overlay   kernel overlayfs: a read-only lower layer holding the large
 *             files (hard links into the LFS object store, built once per
 *             set of blobs and shared), an upper and a work directory per
 *             worktree.  Mounted directly when the process may (root, or
 *             root inside a user+mount namespace, then with "userxattr"),
 *             else by the setuid helper git-model-mount(1) when the
 *             administrator installed it so.
 *   fuse      fuse-overlayfs over the same layers (needs /dev/fuse).
 *   reflink   FICLONE copies of the objects (btrfs, XFS...): blocks shared
 *             until written.
 *   hardlink  hard links to the objects, made read-only: a write is
 *             refused (EACCES), never done through into the store.
 *             Refused for root, whom permissions do not stop.
 *   copy      plain copies.
 *
 * Mount points and layers must not contain ',' ':' '\\' '=' or a newline:
 * they would be read as overlay option syntax.
 *
 * Errors follow error.h.  Strings returned through char ** are the
 * caller's to free.
 */
#ifndef GM_COW_H
#define GM_COW_H

#include <sys/types.h>

#include "base/buf.h"
#include "base/error.h"

enum gm_cow_driver {
	GM_COW_AUTO = 0,
	GM_COW_OVERLAY,
	GM_COW_FUSE,
	GM_COW_REFLINK,
	GM_COW_HARDLINK,
	GM_COW_COPY
};
#define GM_COW_N_DRIVERS 6

/* "overlay", "fuse", ... ("auto" for GM_COW_AUTO). */
const char *gm_cow_driver_name(enum gm_cow_driver d);
/* Parses a --driver value; GM_EINVAL listing the valid ones. */
int gm_cow_driver_parse(const char *s, enum gm_cow_driver *out, gm_error *err);
/* 1 for the drivers that mount (overlay, fuse). */
int gm_cow_driver_mounts(enum gm_cow_driver d);

/* The layers of one mounted worktree; all absolute paths. */
typedef struct gm_cow_layers {
	const char *lower;  /* read-only, shared */
	const char *upper;  /* this worktree's changes */
	const char *work;   /* overlayfs scratch, same filesystem as upper */
	const char *target; /* the mount point: the worktree directory */
} gm_cow_layers;

/*
 * Whether driver d can share files from the object store directory
 * objects_dir into directory target_dir (which exists).  Returns 1 when it
 * can, 0 when it cannot with the reason (one phrase, "fuse-overlayfs is
 * not installed") in reason.  Mount drivers are probed by what they need
 * (privileges or the helper, the filesystem type, the binary and
 * /dev/fuse); the final proof is the mount itself.
 */
int gm_cow_probe(enum gm_cow_driver d, const char *objects_dir, const char *target_dir, gm_buf *reason);

/* Refuses (GM_EINVAL) a path overlayfs options cannot carry. */
int gm_cow_check_option_path(const char *what, const char *path, gm_error *err);

/* Mounts the layers with driver d (overlay or fuse), nosuid and nodev. */
int gm_cow_mount(enum gm_cow_driver d, const gm_cow_layers *l, gm_error *err);
/* Unmounts target (mounted by gm_cow_mount with driver d). */
int gm_cow_unmount(enum gm_cow_driver d, const char *target, gm_error *err);
/* 1 when a filesystem is mounted exactly at path (as /proc/self/mountinfo
 * tells), and *fstype (may be NULL) is its type. */
int gm_cow_is_mounted(const char *path, char **fstype);

/* The helper (git-model-mount) this process would use: $GIT_MODEL_MOUNT,
 * else git-model-mount on PATH; NULL when none.  Caller frees. */
char *gm_cow_helper_path(void);

/*
 * Puts the object at object_path at dest (which must not exist) with the
 * file driver d (reflink, hardlink or copy) and mode; the hardlink driver
 * makes the object read-only for everyone, since the link is the object.
 */
int gm_cow_place_file(enum gm_cow_driver d, const char *object_path, const char *dest, mode_t mode,
		      gm_error *err);

/*
 * Disk use of a directory tree, in allocated bytes (st_blocks), not
 * crossing into other filesystems.  With skip_shared, files with more
 * than one hard link are skipped (they belong to the object store), and
 * extents the filesystem reports shared (FIEMAP) are not counted.
 */
unsigned long long gm_cow_disk_use(const char *dir, int skip_shared);

/* Removes a directory tree without crossing mount points (refusing,
 * GM_EIO, when one is found under it). */
int gm_cow_remove_tree(const char *dir, gm_error *err);

#endif
