/*
 * torrent.h - BitTorrent, through libtorrent-rasterbar 2.0: making a
 * BitTorrent v2 torrent from files on disk, and a session that seeds and
 * downloads such torrents (trackers, BEP 14 local service discovery,
 * optional DHT, BEP 19 web seeds).  A C interface over torrent.cc (C++);
 * a build without libtorrent (configure --without-torrent) gets
 * torrent-none.c instead, where gm_torrent_available() is 0 and everything
 * else is GM_EUNSUPPORTED saying so.
 *
 * This module knows files, not models: p2p.h maps a model revision's LFS
 * objects onto a torrent and keeps every byte that arrives out of the LFS
 * store until its sha256 is checked.  The engine checks every piece
 * against the torrent's merkle trees (v2: SHA-256 per 16 KiB block) and
 * bans peers whose pieces fail.
 *
 * Errors follow error.h; strings returned are the caller's to free.
 */
#ifndef GM_TORRENT_H
#define GM_TORRENT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "base/error.h"

/* 1 when the library was built with libtorrent, else 0. */
int gm_torrent_available(void);

/* One file of a torrent being made. */
typedef struct gm_torrent_file {
	const char *path;        /* path inside the torrent, "/"-separated, relative ("model.safetensors") */
	const char *disk;        /* where its bytes are now (read to hash them) */
	unsigned long long size;
} gm_torrent_file;

/*
 * Makes a v2-only torrent (BEP 52) named name (the torrent's root
 * directory) holding files; *out gets its bencoded form (*len bytes, the
 * caller frees it).  The
 * result depends only on name, the files' paths and bytes, and web_seeds:
 * the files are sorted by path, the piece size is libtorrent's choice for
 * the total size, and there is no creation date or creator, so two
 * machines holding the same files make the same torrent (same info-hash).
 * web_seeds (n_seeds URLs, may be 0) go in "url-list" (BEP 19): a file's
 * URL is the seed URL followed by NAME/PATH.
 */
int gm_torrent_create(const char *name, const gm_torrent_file *files, size_t n,
		      const char *const *web_seeds, size_t n_seeds, char **out, size_t *len, gm_error *err);

/* What a torrent holds, parsed from its bencoded form. */
typedef struct gm_torrent_info {
	char *name;                 /* the root directory */
	char infohash[65];          /* v2 info-hash, 64 hex digits (SHA-256 of the info dict) */
	char *magnet;               /* magnet:?xt=urn:btmh:1220... with dn= and the web seeds (ws=) */
	size_t n_files;
	char **paths;               /* relative to the root directory, in the torrent's file order */
	unsigned long long *sizes;
	unsigned long long total;   /* sum of sizes */
	unsigned piece_size;
	char **web_seeds;           /* url-list */
	size_t n_web_seeds;
} gm_torrent_info;

int gm_torrent_parse(const void *data, size_t len, gm_torrent_info *out, gm_error *err);
void gm_torrent_info_release(gm_torrent_info *ti);

/* ------------------------------------------------------------ sessions */

typedef struct gm_torrent_session_opts {
	const char *listen;          /* interface to listen on ("0.0.0.0", "127.0.0.1"); NULL = all */
	int port;                    /* TCP/UDP port; 0 = any free one */
	const char *const *trackers; /* announce URLs added to every torrent */
	size_t n_trackers;
	int lsd;                     /* BEP 14 local service discovery */
	int dht;                     /* the mainline DHT (off unless asked: a private swarm by default) */
	long long upload_limit;      /* bytes per second, 0 = none; applies to local peers too */
	long long download_limit;
} gm_torrent_session_opts;

typedef struct gm_torrent_session gm_torrent_session;

int gm_torrent_session_new(const gm_torrent_session_opts *opts, gm_torrent_session **out, gm_error *err);
/* Stops every torrent and closes the session (announces "stopped" to trackers, briefly). */
void gm_torrent_session_free(gm_torrent_session *s);

/* The port the session listens on (0 until it listens). */
int gm_torrent_session_port(gm_torrent_session *s);

typedef struct gm_torrent_add_opts {
	const void *data;               /* the bencoded torrent (copied) */
	size_t len;
	const char *const *disk;        /* absolute path of each file, in the torrent's file order */
	const unsigned char *want;      /* per file: 0 = skip it (do not download), NULL = all */
	int seed;                       /* the files are complete: seed without checking first */
	const char *const *web_seeds;   /* extra web seeds (BEP 19) besides the torrent's own */
	size_t n_web_seeds;
	int no_web_seeds;               /* drop the torrent's own web seeds */
} gm_torrent_add_opts;

/* Adds a torrent to the session; *id names it in the calls below. */
int gm_torrent_session_add(gm_torrent_session *s, const gm_torrent_add_opts *opts, int *id, gm_error *err);

enum gm_torrent_state {
	GM_TORRENT_CHECKING,    /* hashing what is already on disk */
	GM_TORRENT_DOWNLOADING,
	GM_TORRENT_FINISHED,    /* every wanted file is complete */
	GM_TORRENT_SEEDING,     /* every file is complete */
	GM_TORRENT_FAILED       /* see error */
};

typedef struct gm_torrent_stat {
	enum gm_torrent_state state;
	char infohash[65];
	char name[128];
	unsigned long long wanted, wanted_done;     /* bytes of the wanted files, and verified so far */
	unsigned long long from_peers, from_web;    /* payload bytes received from peers, from web seeds */
	unsigned long long uploaded;                /* payload bytes sent, this session */
	int download_rate, upload_rate;             /* bytes per second */
	int peers, seeds, web_seeds;                /* connected */
	int banned;                                 /* peers banned for sending bad pieces, this session */
	char error[256];
} gm_torrent_stat;

int gm_torrent_session_stat(gm_torrent_session *s, int id, gm_torrent_stat *st, gm_error *err);

/* 1 when file (an index in the torrent's file order) is completely downloaded and verified by the engine. */
int gm_torrent_session_file_done(gm_torrent_session *s, int id, size_t file);

/*
 * Handles the engine's events for up to timeout_ms (logging what is worth
 * it at debug level: bans, tracker errors, file errors).  Call it in the
 * loop that watches gm_torrent_session_stat.
 */
void gm_torrent_session_poll(gm_torrent_session *s, int timeout_ms);

/*
 * Removes a torrent: its files are flushed and closed when this returns
 * (they may be renamed or hashed afterwards), never deleted.
 */
int gm_torrent_session_remove(gm_torrent_session *s, int id, gm_error *err);

#ifdef __cplusplus
}
#endif

#endif
