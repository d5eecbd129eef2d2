/*
 * lfs-repo.h - repository-level Git LFS operations, as git-lfs has them:
 * scanning trees for pointers, the LFS endpoint of a remote, fetch,
 * checkout, push, and the filter configuration (install, track).
 * Transfers are lfs-transfer.h; the filters themselves lfs-filter.h.
 */
#ifndef GM_LFS_REPO_H
#define GM_LFS_REPO_H

#include <stddef.h>

#include "base/error.h"
#include "storage/lfs.h"
#include "storage/lfs-transfer.h"

/*
 * Lists the LFS objects referenced by the tree of revision rev (any
 * revspec libgit2 understands; NULL = HEAD) of the repository at
 * repo_path: every blob under 1024 bytes that is a valid pointer, with its
 * path.  include/exclude are NULL-terminated pattern lists (may be NULL)
 * with git-lfs's --include/--exclude meaning: a pattern with no "/"
 * matches a file name at any depth, otherwise the whole path (fnmatch),
 * and a pattern naming a directory matches everything below it.  A path
 * is kept when it matches some include (or there is none) and no exclude.
 */
int gm_lfs_scan_tree(const char *repo_path, const char *rev, const char *const *include,
		     const char *const *exclude, gm_lfs_object_list *out, gm_error *err);

/* 1 when path is selected by include/exclude as described above. */
int gm_lfs_path_selected(const char *path, const char *const *include, const char *const *exclude);

/*
 * What a repository-level operation needs to reach its LFS server, found
 * from the repository's configuration as git-lfs finds it: lfs.url, then
 * remote.NAME.lfsurl, then the endpoint derived from remote.NAME.url
 * (gm_lfs_endpoint_for_url).  The Hugging Face token (gm_hub_token) is
 * attached only when the endpoint is on the Hugging Face endpoint
 * (HF_ENDPOINT), so it never leaks to another server.  Elsewhere,
 * credentials in the URL are used as they are; gm_lfs_fetch and
 * gm_lfs_push then ask git's credential helpers ("git credential fill")
 * after a 401, and tell them whether the answer worked.  The strings of
 * out->remote point into out and live until gm_lfs_endpoint_release.
 */
typedef struct gm_lfs_endpoint {
	gm_lfs_remote remote;
	/* When the remote is a repository on this machine (a path or file://
	 * URL), its common git directory: objects are copied from/to its LFS
	 * store (verified) instead of going over HTTP; remote.url is NULL. */
	char *local_gitdir;
	char *url_owned, *token_owned, *ref_owned;
} gm_lfs_endpoint;

int gm_lfs_endpoint_resolve(const char *repo_path, const char *remote_name, gm_lfs_endpoint *out,
			    gm_error *err);
void gm_lfs_endpoint_release(gm_lfs_endpoint *e);

typedef struct gm_lfs_fetch_opts {
	const char *remote;           /* git remote name; NULL = "origin" */
	const char *rev;              /* revision whose tree is fetched; NULL = HEAD */
	const char *const *include;   /* NULL-terminated patterns, or NULL (see gm_lfs_scan_tree) */
	const char *const *exclude;
	int checkout;                 /* then replace pointer files in the worktree (gm_lfs_checkout) */
	gm_lfs_transfer_opts transfer;
} gm_lfs_fetch_opts;

#define GM_LFS_FETCH_OPTS_INIT { NULL, NULL, NULL, NULL, 0, GM_LFS_TRANSFER_OPTS_INIT }

/*
 * git model fetch for one repository: scans rev (gm_lfs_scan_tree),
 * resolves the remote (gm_lfs_endpoint_resolve) and downloads what is
 * missing (gm_lfs_download, reusing the huggingface_hub cache from
 * gm_hub_cache_dir() unless opts->transfer.hf_cache is set), then
 * optionally checks the files out.  This is all "git model clone" needs
 * after its libgit2 clone.
 */
int gm_lfs_fetch(const char *repo_path, const gm_lfs_fetch_opts *opts, gm_lfs_transfer_stats *stats,
		 gm_error *err);

/*
 * Downloads one object into the store from the LFS server of the
 * repository owning the store (remote "origin", resolved as above): what
 * the smudge filters do when an object is missing, as git-lfs does.  No
 * progress is shown.  GM_ENOENT when there is no remote to ask.
 */
int gm_lfs_fetch_one(const gm_lfs_store *s, const char *oid, unsigned long long size, const char *path,
		     gm_error *err);

/*
 * Replaces worktree files that still hold the pointer recorded in the
 * index by the object's content (atomically, mode kept) and refreshes
 * their index entries, as "git lfs checkout" does.  Files whose object is
 * missing, or that were modified, are left alone (counted in *skipped).
 */
int gm_lfs_checkout(const char *repo_path, const char *const *include, const char *const *exclude,
		    size_t *written, size_t *skipped, gm_error *err);

/*
 * Uploads the LFS objects that commits reachable from rev (NULL = HEAD)
 * and not from the remote-tracking refs of the remote reference, before a git push to
 * remote_name (NULL = "origin").  The server is asked which it lacks.
 */
int gm_lfs_push(const char *repo_path, const char *remote_name, const char *rev,
		const gm_lfs_transfer_opts *opts, gm_lfs_transfer_stats *stats, gm_error *err);

/*
 * The filter configuration that "git model install" writes, as git lfs
 * install does: filter.lfs.clean, .smudge, .process and .required.
 * scope: GM_LFS_INSTALL_LOCAL writes the config of the repository at
 * repo_path; GM_LFS_INSTALL_GLOBAL the user's global git config.  An
 * existing filter.lfs.* value that differs from ours is GM_EINVAL naming
 * the key and its value, unless force is set.  *changed (may be NULL)
 * tells whether anything was written.
 */
enum gm_lfs_install_scope { GM_LFS_INSTALL_GLOBAL, GM_LFS_INSTALL_LOCAL };
int gm_lfs_install(enum gm_lfs_install_scope scope, const char *repo_path, int force, int *changed,
		   gm_error *err);

/*
 * Adds "PATTERN filter=lfs diff=lfs merge=lfs -text" to the .gitattributes
 * file in dir for each pattern that does not already have exactly that
 * line; the file is rewritten atomically.  Patterns with whitespace,
 * newlines or a leading "#" or "!" are GM_EINVAL.  *added (may be NULL)
 * gets the number of lines added.
 */
int gm_lfs_track(const char *dir, const char *const *patterns, size_t n, size_t *added,
		 gm_error *err);

#endif
