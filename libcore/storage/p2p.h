/*
 * p2p.h - a model revision's LFS objects over BitTorrent (torrent.h):
 * the revision's torrent, kept as a git note, seeding from the LFS store,
 * and downloading into it with every object verified.
 *
 * One torrent per revision (commit): its files are the revision's LFS
 * objects under their paths in the tree, in a root directory named after
 * the commit; BitTorrent v2, so a file's merkle root depends on its bytes
 * alone and two machines holding the objects make the same torrent.  Its
 * web seeds (BEP 19) are the Hub's download URLs (ENDPOINT/ORG/NAME/
 * resolve/COMMIT/PATH) when the model comes from a Hub, so a download
 * works with no peer at all.
 *
 * The torrent travels with the repository as a note on the commit in
 * refs/notes/torrents (text: a first line naming the format, the magnet
 * link, a blank line, then the bencoded torrent in base64, which keeps it
 * readable by "git notes show" and mergeable by stock git).
 *
 * Downloads go to GITDIR/lfs/tmp/p2p-INFOHASH/OID (an interrupted one is
 * resumed: the engine re-checks what is there); each file enters the
 * store only through gm_lfs_store_import, which checks its sha256 and
 * size first.  What the swarm cannot deliver is left to the plain LFS
 * transfer that follows (repo-sync.c).
 *
 * Configuration (git config, the repository's then the user's):
 *   model.p2p               bool: clone/fetch/lfs-fetch use the swarm (as --p2p)
 *   model.p2p.tracker       announce URL (repeatable)
 *   model.p2p.lsd           bool, default true: BEP 14 local service discovery
 *   model.p2p.dht           bool, default false: the public DHT
 *   model.p2p.webseed       bool, default true: downloads use the Hub's URLs as web seeds
 *   model.p2p.listen        interface address, default 0.0.0.0
 *   model.p2p.port          listen port, default 0 (any; seeders should fix one)
 *   model.p2p.timeout       seconds without progress before a download gives
 *                           up on the swarm, default 30
 *   model.p2p.uploadLimit   bytes per second, default unlimited (k/m/g suffixes)
 *   model.p2p.downloadLimit bytes per second, default unlimited
 *
 * Errors follow error.h.
 */
#ifndef GM_P2P_H
#define GM_P2P_H

#include <signal.h>
#include <stddef.h>

#include "base/buf.h"
#include "base/error.h"
#include "storage/lfs.h"
#include "storage/repo.h"

#define GM_P2P_NOTES_REF "refs/notes/torrents"
/* Where fetched notes land before they are merged into GM_P2P_NOTES_REF. */
#define GM_P2P_NOTES_TRACKING "refs/notes/remotes/origin/torrents"
/* What clone adds to remote.origin.fetch, so stock "git fetch" brings the notes too. */
#define GM_P2P_NOTES_REFSPEC "+" GM_P2P_NOTES_REF ":" GM_P2P_NOTES_TRACKING

typedef struct gm_p2p_config {
	int enabled;                    /* model.p2p */
	char **trackers;                /* model.p2p.tracker (owned, NULL-terminated) */
	size_t n_trackers;
	int lsd, dht;
	int webseed;                    /* use web seeds when downloading */
	char *listen;                   /* owned; NULL = all interfaces */
	int port;
	int timeout;                    /* seconds */
	long long upload_limit, download_limit;
} gm_p2p_config;

/* Reads the configuration of the repository at repo_path (NULL: the
 * user's and system's only).  Release with gm_p2p_config_release. */
int gm_p2p_config_load(const char *repo_path, gm_p2p_config *c, gm_error *err);
void gm_p2p_config_release(gm_p2p_config *c);

/* Parses a rate: a number of bytes per second with an optional k, m or g
 * suffix (powers of 1024); 0 means unlimited. */
int gm_p2p_parse_rate(const char *s, long long *out, gm_error *err);

/*
 * The torrent of commit hex: the note's torrent when there is one, else
 * (when create is set) one made from the revision's LFS objects, which
 * must all be in the store, and stored as the note (*created = 1).
 * Without create, a missing note is GM_ENOENT.  The bencoded torrent is
 * appended to out.
 */
int gm_p2p_torrent(gm_repo *r, const char *hex, int create, gm_buf *out, int *created, gm_error *err);

/* The magnet link in commit hex's note (*out, caller frees); GM_ENOENT when none. */
int gm_p2p_magnet(gm_repo *r, const char *hex, char **out, gm_error *err);

/*
 * Merges the notes of GM_P2P_NOTES_TRACKING (fetched from origin) into
 * GM_P2P_NOTES_REF: a commit's note already here wins (the torrents are
 * the same for the same objects; only web seeds may differ), the others
 * are added on top of the fetched history, so that pushing is a
 * fast-forward.  Nothing to do without a tracking ref.
 */
int gm_p2p_notes_merge(gm_repo *r, gm_error *err);

typedef struct gm_p2p_fetch_stats {
	size_t n_wanted;                /* objects asked of the swarm */
	size_t n_stored;                /* verified and moved into the store */
	size_t n_rejected;              /* complete but not matching their sha256 (deleted) */
	unsigned long long bytes_wanted;
	unsigned long long resumed;     /* bytes already on disk from an interrupted run */
	unsigned long long from_peers, from_web;
	int banned;                     /* peers the engine banned for bad pieces */
	double seconds;
} gm_p2p_fetch_stats;

/*
 * Downloads the objects of list that the store lacks from the swarm of
 * commit hex's torrent (its note must exist: GM_ENOENT otherwise) and its
 * web seeds, until all arrived or nothing moved for c->timeout seconds.
 * Each complete file is verified (sha256, size) as it moves into the
 * store.  Returns 0 even when some objects did not arrive (stats say how
 * many did): the caller gets the rest over plain LFS.  progress shows a
 * progress line on stderr.
 */
int gm_p2p_fetch(gm_repo *r, const char *hex, const gm_lfs_object_list *list, const gm_p2p_config *c,
		 int progress, gm_p2p_fetch_stats *st, gm_error *err);

/*
 * What clone, fetch and lfs-fetch do before their plain LFS transfer: when
 * asked (ask) or model.p2p is true, the objects of commit hex selected by
 * include/exclude that the store lacks come from the swarm first
 * (gm_p2p_fetch).  Nothing here is an error: what goes wrong is a warning
 * (P2P unavailable in this build, no torrent note, no peers), and the
 * plain transfer that follows fetches whatever is still missing.
 */
void gm_p2p_prefetch(gm_repo *r, const char *hex, const char *const *include, const char *const *exclude,
		     int ask, int progress);

/* One revision to seed: an opened repository (borrowed) and a commit. */
typedef struct gm_p2p_seed_target {
	gm_repo *repo;
	const char *name;  /* for status lines */
	const char *hex;
} gm_p2p_seed_target;

/*
 * Seeds the targets' torrents (made and noted first where missing) from
 * the LFS stores, without copying, until *stop becomes non-zero.  Every
 * second the state (one line per torrent: name, info-hash, state, peers,
 * rates, uploaded, ratio) is written to status_path (may be NULL)
 * atomically.  *port (may be NULL) gets the listen port once listening.
 * ready (may be NULL) is called once every torrent is added.
 */
int gm_p2p_seed(const gm_p2p_seed_target *targets, size_t n, const gm_p2p_config *c, const char *status_path,
		volatile sig_atomic_t *stop, void (*ready)(void *ctx, int port), void *ctx, gm_error *err);

#endif
