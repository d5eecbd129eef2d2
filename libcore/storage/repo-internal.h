/*
 * repo-internal.h - helpers of the repository layer (repo.c,
 * repo-objects.c) shared with the modules above it (bundle.c,
 * repo-sync.c, resolve.c, trainrepo.c); not part of the library's API.
 */
#ifndef GM_REPO_INTERNAL_H
#define GM_REPO_INTERNAL_H

#include "base/error.h"
#include "storage/lfs.h"
#include "storage/registry.h"
#include "storage/repo.h"

/* A list of owned strings. */
typedef struct gm_repo_paths {
	char **v;
	size_t n, alloc;
} gm_repo_paths;

void gm_repo_paths_add(gm_repo_paths *p, const char *s);
void gm_repo_paths_release(gm_repo_paths *p);
/* Regular files and links under root, relative, sorted; .git skipped. */
int gm_repo_list_files(const char *root, gm_repo_paths *out, gm_error *err);
int gm_repo_copy_file(const char *src, const char *dst, gm_error *err);
int gm_repo_remove_tree(const char *path);
char *gm_repo_absolute(const char *path);
/* Removes every NAME.lock file under dir (git's lock files, once known stale). */
void gm_repo_unlink_locks(const char *dir);
/* Before writing through libgit2: clears the locks a killed writer left (see repo.c). */
void gm_repo_write_begin(gm_repo *r);
/* The same for any git directory we write into (a local remote): clears the
 * locks a killed git-model writer left, marks it as ours; the caller passes
 * the mark (NULL when it could not be written) to gm_repo_unmark_writer. */
char *gm_repo_mark_writer(const char *gitdir);
void gm_repo_unmark_writer(char *mark);

/* Where a new model goes (see repo.h): its name, final path, the partial
 * directory it is built in, and the per-name lock. */
typedef struct gm_repo_dest {
	char *name;
	char *path;
	char *parent;
	char *partial;
	char *lock_path;
	int lock_fd;
	int stale_entry;  /* the name is registered at path, which is missing: a finish was killed */
} gm_repo_dest;

int gm_repo_dest_init(gm_repo_dest *d, const char *name_or_path, const char *default_name, gm_error *err);
int gm_repo_dest_check(gm_repo_dest *d, gm_registry *reg, gm_error *err);
int gm_repo_dest_lock(gm_repo_dest *d, gm_error *err);
int gm_repo_dest_finish(gm_repo_dest *d, gm_registry *reg, const char *source, const char *revision,
			gm_registry_model *out, gm_error *err);
void gm_repo_dest_release(gm_repo_dest *d);

/* LFS pointers used by every commit reachable from the branches, tags and
 * HEAD (and origin's branches, and the index, with these flags),
 * deduplicated by oid. */
enum { GM_REPO_REACH_INDEX = 1, GM_REPO_REACH_REMOTES = 2 };
int gm_repo_reachable_objects(gm_repo *r, int flags, gm_lfs_object_list *out, gm_error *err);

/* LFS pointers in the trees of HEAD, the branches and the tags (not their
 * history): what a checkout of any of them needs. */
int gm_repo_tip_objects(gm_repo *r, gm_lfs_object_list *out, gm_error *err);

#endif
