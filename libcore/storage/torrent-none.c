/*
 * torrent-none.c - torrent.h in a build without libtorrent-rasterbar
 * (configure --without-torrent, or libtorrent-rasterbar-dev missing):
 * nothing is available, and every call says how to get it.  p2p.c checks
 * gm_torrent_available() first and falls back to plain LFS transfers.
 */

#include <string.h>

#include "storage/torrent.h"

#define GM_TORRENT_MISSING "peer-to-peer transfers are not available: git-model was built without " \
	"libtorrent-rasterbar (install libtorrent-rasterbar-dev and run configure again)"

int gm_torrent_available(void)
{
	return 0;
}

int gm_torrent_create(const char *name, const gm_torrent_file *files, size_t n,
		      const char *const *web_seeds, size_t n_seeds, char **out, size_t *len, gm_error *err)
{
	*out = NULL;
	*len = 0;
	return gm_error_set(err, GM_EUNSUPPORTED, GM_TORRENT_MISSING);
}

int gm_torrent_parse(const void *data, size_t len, gm_torrent_info *out, gm_error *err)
{
	memset(out, 0, sizeof(*out));
	return gm_error_set(err, GM_EUNSUPPORTED, GM_TORRENT_MISSING);
}

void gm_torrent_info_release(gm_torrent_info *ti)
{
	if (ti)
		memset(ti, 0, sizeof(*ti));
}

int gm_torrent_session_new(const gm_torrent_session_opts *opts, gm_torrent_session **out, gm_error *err)
{
	*out = NULL;
	return gm_error_set(err, GM_EUNSUPPORTED, GM_TORRENT_MISSING);
}

void gm_torrent_session_free(gm_torrent_session *s)
{
}

int gm_torrent_session_port(gm_torrent_session *s)
{
	return 0;
}

int gm_torrent_session_add(gm_torrent_session *s, const gm_torrent_add_opts *opts, int *id, gm_error *err)
{
	return gm_error_set(err, GM_EUNSUPPORTED, GM_TORRENT_MISSING);
}

int gm_torrent_session_stat(gm_torrent_session *s, int id, gm_torrent_stat *st, gm_error *err)
{
	memset(st, 0, sizeof(*st));
	return gm_error_set(err, GM_EUNSUPPORTED, GM_TORRENT_MISSING);
}

int gm_torrent_session_file_done(gm_torrent_session *s, int id, size_t file)
{
	return 0;
}

void gm_torrent_session_poll(gm_torrent_session *s, int timeout_ms)
{
}

int gm_torrent_session_remove(gm_torrent_session *s, int id, gm_error *err)
{
	return gm_error_set(err, GM_EUNSUPPORTED, GM_TORRENT_MISSING);
}
