/*
 * lfs-repo.c - repository-level LFS operations: scanning trees for
 * pointers, resolving the LFS endpoint of a remote, fetch, checkout,
 * push, install and track.  See lfs.h.
 */
#include "lfs.h"

int gm_lfs_scan_tree(const char *repo_path, const char *rev, const char *const *include,
		     const char *const *exclude, gm_lfs_object_list *out, gm_error *err)
{
	return gm_error_set(err, GM_EUNSUPPORTED, "scanning trees for LFS pointers is not implemented yet");
}

int gm_lfs_path_selected(const char *path, const char *const *include, const char *const *exclude)
{
	return 1;
}

int gm_lfs_endpoint_resolve(const char *repo_path, const char *remote_name, gm_lfs_endpoint *out,
			    gm_error *err)
{
	return gm_error_set(err, GM_EUNSUPPORTED, "LFS endpoint resolution is not implemented yet");
}

void gm_lfs_endpoint_release(gm_lfs_endpoint *e)
{
}

int gm_lfs_fetch(const char *repo_path, const gm_lfs_fetch_opts *opts, gm_lfs_transfer_stats *stats,
		 gm_error *err)
{
	return gm_error_set(err, GM_EUNSUPPORTED, "LFS fetch is not implemented yet");
}

int gm_lfs_checkout(const char *repo_path, const char *const *include, const char *const *exclude,
		    size_t *written, size_t *skipped, gm_error *err)
{
	return gm_error_set(err, GM_EUNSUPPORTED, "LFS checkout is not implemented yet");
}

int gm_lfs_push(const char *repo_path, const char *remote_name, const char *rev,
		const gm_lfs_transfer_opts *opts, gm_lfs_transfer_stats *stats, gm_error *err)
{
	return gm_error_set(err, GM_EUNSUPPORTED, "LFS push is not implemented yet");
}

int gm_lfs_install(enum gm_lfs_install_scope scope, const char *repo_path, int force, int *changed,
		   gm_error *err)
{
	return gm_error_set(err, GM_EUNSUPPORTED, "git model install is not implemented yet");
}

int gm_lfs_track(const char *dir, const char *const *patterns, size_t n, size_t *added, gm_error *err)
{
	return gm_error_set(err, GM_EUNSUPPORTED, "git model track is not implemented yet");
}
