/*
 * lfs-filter.c - the "lfs" filter: in-process for libgit2, and git's
 * long-running filter-process protocol for stock git.  See lfs.h.
 */
#include "lfs.h"

int gm_lfs_filter_register(gm_error *err)
{
	return gm_error_set(err, GM_EUNSUPPORTED, "the libgit2 lfs filter is not implemented yet");
}

int gm_lfs_filter_process(const gm_lfs_store *s, int in_fd, int out_fd, gm_error *err)
{
	return gm_error_set(err, GM_EUNSUPPORTED, "git model filter-process is not implemented yet");
}
