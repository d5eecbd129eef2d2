/*
 * lfs-transfer.c - Batch API downloads and uploads with libcurl multi.
 * See lfs.h.
 */
#include "lfs.h"

int gm_lfs_download(const gm_lfs_store *s, const gm_lfs_remote *remote, const gm_lfs_object_list *list,
		    const gm_lfs_transfer_opts *opts, gm_lfs_transfer_stats *stats, gm_error *err)
{
	return gm_error_set(err, GM_EUNSUPPORTED, "LFS downloads are not implemented yet");
}

int gm_lfs_upload(const gm_lfs_store *s, const gm_lfs_remote *remote, const gm_lfs_object_list *list,
		  const gm_lfs_transfer_opts *opts, gm_lfs_transfer_stats *stats, gm_error *err)
{
	return gm_error_set(err, GM_EUNSUPPORTED, "LFS uploads are not implemented yet");
}
