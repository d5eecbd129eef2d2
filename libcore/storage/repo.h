/*
 * repo.h - models as git repositories: libgit2 wrappers and the operations
 * the git model commands are built on.  This header is the repository
 * layer (open, commit, read, view, import, registered models); above it
 * are bundle.h (bundles), repo-sync.h (clone, fetch, pull, push, fsck, gc)
 * and, above worktree.h too, resolve.h (what "-m NAME[@REV]" means, rm).
 *
 * A model is a non-bare git repository whose large files are Git LFS
 * pointers with objects in GITDIR/lfs/objects (lfs.h).  Registered models
 * (registry.h) live in the models directory
 *
 *     $GIT_MODEL_HOME                         when set
 *     $XDG_DATA_HOME/git-model/models         else
 *     ~/.local/share/git-model/models
 *
 * as models/NAME, unless the NAME given to clone or import contains a '/',
 * in which case it is the path of the new repository and its last
 * component the registered name.
 *
 * New repositories are built under a temporary name beside their final one
 * (models/.NAME.partial) and renamed into place only when complete and
 * registered, so a failure never leaves a half-made model under its name;
 * an interrupted clone keeps its partial directory (and partial LFS
 * downloads) so that running the same clone again resumes it.
 *
 * Errors follow error.h.  Strings returned through char ** are owned by
 * the caller.
 */
#ifndef GM_REPO_H
#define GM_REPO_H

#include <stddef.h>

#include "base/error.h"
#include "base/fs.h"
#include "storage/lfs.h"
#include "storage/registry.h"

#define GM_REPO_OID_HEXLEN 40

struct git_repository;
typedef struct gm_repo gm_repo;

/* ------------------------------------------------------------ repositories */

/* libgit2's global state and the in-process lfs filter; idempotent. */
int gm_repo_global_init(gm_error *err);

/* A new non-bare repository at workdir (created as needed), HEAD on "main". */
int gm_repo_init(const char *workdir, gm_repo **out, gm_error *err);
/* 1 when dir is the top of a git work tree (a repository's or a linked worktree's). */
int gm_repo_is_toplevel(const char *dir);

/* Opens the repository whose work tree is (or contains) path. */
int gm_repo_open(const char *path, gm_repo **out, gm_error *err);
void gm_repo_close(gm_repo *r);

const char *gm_repo_workdir(const gm_repo *r);   /* absolute, no trailing '/' */
const char *gm_repo_gitdir(const gm_repo *r);    /* the common git directory, no trailing '/' */
struct git_repository *gm_repo_git(gm_repo *r);  /* borrowed */
const gm_lfs_store *gm_repo_lfs(gm_repo *r);     /* the repository's LFS object store */

/* The commit a revision names (NULL: HEAD), as 40 hex digits; a branch
 * name is tried as a local branch, then as origin's. */
int gm_repo_resolve(gm_repo *r, const char *rev, char out[GM_REPO_OID_HEXLEN + 1], gm_error *err);

/*
 * Commits the given work-tree files (relative paths; a missing file is a
 * deletion) on top of HEAD, in one step: each file is cleaned into the LFS
 * store when its filter attribute is "lfs" (else stored as a blob), the
 * tree is written from the index, then the commit, then the branch moves
 * (the commit point), then the index is saved.  n == 0 commits every file
 * of the work tree (the first commit of an import).  Author and committer
 * come from GIT_AUTHOR_* / GIT_COMMITTER_* as in git, else user.name and
 * user.email, else "git-model".  out (may be NULL) receives the commit id.
 */
int gm_repo_commit_files(gm_repo *r, const char *const *paths, size_t n, const char *message,
			 char out[GM_REPO_OID_HEXLEN + 1], gm_error *err);

/*
 * gm_repo_commit_files of n > 0 files whose LFS objects are stored already
 * (pointers[i], from gm_lfs_clean_file of the file's content before it was
 * renamed into the work tree): a file whose filter is lfs and whose size is
 * its pointer's is staged with that pointer, without copying it into the
 * store again, so committing takes no disk space for its content.  When the
 * tree is HEAD's (the files are committed as they are: a command run again
 * after it committed), no commit is made: *made is 0 and out gets HEAD;
 * else *made is 1.
 */
int gm_repo_commit_cleaned(gm_repo *r, const char *const *paths, const gm_lfs_pointer *pointers, size_t n,
			   const char *message, char out[GM_REPO_OID_HEXLEN + 1], int *made, gm_error *err);

/*
 * Commits files written under temporary names (gm_atomic_open, written,
 * not committed; their final paths in r's work tree), which it takes over:
 * the LFS objects of the files whose filter is lfs are stored first, then
 * each file is fsynced and renamed to its name, then committed with
 * gm_repo_commit_cleaned (no commit when HEAD has them as they are).  On a
 * failure before the renames (a full disk), the temporaries and the
 * objects stored for them are removed: the repository is as it was.
 */
int gm_repo_commit_atomic(gm_repo *r, gm_atomic_file *files, size_t n, const char *message,
			  char out[GM_REPO_OID_HEXLEN + 1], int *made, gm_error *err);

/*
 * gm_repo_commit_files of everything under the directories dirs (relative
 * to the work tree): the files there now, and the ones the index had there
 * that are gone (removals).
 */
int gm_repo_commit_dirs(gm_repo *r, const char *const *dirs, size_t n, const char *message,
			char out[GM_REPO_OID_HEXLEN + 1], gm_error *err);

/*
 * Commits on a branch without touching HEAD, the index or the work tree.
 * With GM_REPO_BRANCH_CREATE the branch (refs/heads/BRANCH) must not
 * exist and the commit is a child of base (NULL: HEAD); with
 * GM_REPO_BRANCH_ADVANCE it must exist and the commit is a child of its
 * tip (base is ignored).  The tree is the parent's with paths[i] replaced
 * (or added) by the content of the local file files[i], LFS-cleaned when
 * its filter attribute is "lfs", or removed when files[i] is NULL.
 * Moving the branch is the commit point.  out (may be NULL) receives the
 * commit id.
 */
enum { GM_REPO_BRANCH_CREATE = 0, GM_REPO_BRANCH_ADVANCE = 1 };
int gm_repo_commit_branch(gm_repo *r, int mode, const char *base, const char *branch,
			  const char *const *paths, const char *const *files, size_t n, const char *message,
			  char out[GM_REPO_OID_HEXLEN + 1], gm_error *err);

/* Points the lightweight tag NAME at commit (hex), replacing an older one. */
int gm_repo_tag(gm_repo *r, const char *name, const char *commit, gm_error *err);

/*
 * Reads path at revision rev (NULL: HEAD) without a checkout.  A regular
 * file's content is appended to content; an LFS pointer is resolved to its
 * object: *object_path is set to the object's path in the store (content
 * gets nothing) or GM_ENOENT says how to fetch it.  object_path may be
 * NULL, and then LFS objects are read into content.
 */
int gm_repo_read_file(gm_repo *r, const char *rev, const char *path, gm_buf *content, char **object_path,
		      gm_error *err);

/*
 * A directory showing the tree of commit (hex) without a checkout:
 * GITDIR/git-model/views/COMMIT, where small files are written from their
 * blobs and LFS files are symbolic links to their objects in the store,
 * so that weights are mmapped straight from the object store.  Built under
 * a temporary name and renamed; reused when complete.  *dir is the path.
 */
int gm_repo_view(gm_repo *r, const char *commit, char **dir, gm_error *err);

/* ------------------------------------------------------------ models by name */

/* The models directory (see above); not created here. */
int gm_repo_models_dir(char **out, gm_error *err);

/* Splits "NAME[@REV]"; *rev is NULL without "@". */
void gm_repo_split_spec(const char *spec, char **name, char **rev);

/* NAME[@REV] of a registered model: its opened repository and the commit
 * REV names (HEAD without one).  For commands that work on a revision
 * rather than on files (checkpoints, tags, diffs). */
int gm_repo_open_spec(const char *spec, gm_repo **out, char commit[GM_REPO_OID_HEXLEN + 1], gm_error *err);

/* A registered model's entry and opened repository (NAME, no @REV). */
int gm_repo_open_model(gm_registry *reg, const char *name, gm_registry_model *entry, gm_repo **out,
		       gm_error *err);

/* ------------------------------------------------------------ operations */

/*
 * git model import: DIR (a Hugging Face-layout model directory) becomes a
 * registered repository with HF's .gitattributes, large files in LFS and a
 * first commit.  name may be NULL (DIR's last component) or a path (see
 * above).  out (may be NULL) receives the registry entry.
 */
int gm_repo_import(const char *dir, const char *name, gm_registry_model *out, gm_error *err);

/* Size in bytes of the files under dir (hard links counted once). */
unsigned long long gm_repo_disk_usage(const char *dir);

#endif
