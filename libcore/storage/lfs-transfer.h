/*
 * lfs-transfer.h - Git LFS Batch API transfers (download and upload) over
 * HTTP with the "basic" transfer adapter, between an object store (lfs.h)
 * and a server.  See lfs.h for the on-disk and on-the-wire guarantees.
 */
#ifndef GM_LFS_TRANSFER_H
#define GM_LFS_TRANSFER_H

#include "base/error.h"
#include "storage/lfs.h"

/*
 * Where to transfer: the LFS endpoint (the URL under which
 * "/objects/batch" lives, e.g. https://huggingface.co/ORG/NAME.git/info/lfs)
 * and how to authenticate.  All strings are borrowed.
 */
typedef struct gm_lfs_remote {
	const char *url;      /* LFS endpoint, no trailing slash needed */
	const char *token;    /* sent as "Authorization: Bearer TOKEN"; NULL for none */
	const char *username; /* basic auth when token is NULL and both are set */
	const char *password;
	const char *ref;      /* ref name sent in batch requests ("refs/heads/main"); may be NULL */
} gm_lfs_remote;

/*
 * The LFS endpoint of a git remote URL, as git-lfs derives it:
 * "URL.git/info/lfs" (".git" added when missing, a trailing "/" dropped).
 * Caller frees.
 */
char *gm_lfs_endpoint_for_url(const char *git_url);

enum gm_lfs_progress_mode {
	GM_LFS_PROGRESS_AUTO = 0, /* when stderr is a terminal and the log level is not quiet */
	GM_LFS_PROGRESS_NEVER,
	GM_LFS_PROGRESS_ALWAYS    /* tests; still on stderr */
};

typedef struct gm_lfs_transfer_opts {
	int parallel;            /* simultaneous transfers; 0 = 4 */
	int max_retries;         /* per object and per batch request; 0 = 5, -1 = none */
	long retry_delay_ms;     /* first backoff delay, doubled each time; 0 = 500 */
	enum gm_lfs_progress_mode progress;
	const char *hf_cache;    /* huggingface_hub cache root to reuse blobs from (borrowed);
				    NULL = none.  See gm_hub_cache_dir(). */
} gm_lfs_transfer_opts;

#define GM_LFS_TRANSFER_OPTS_INIT { 0, 0, 0, GM_LFS_PROGRESS_AUTO, NULL }

typedef struct gm_lfs_transfer_stats {
	size_t n_present;      /* already in the store (downloads) or on the server (uploads) */
	size_t n_reused;       /* taken from the huggingface_hub cache */
	size_t n_transferred;  /* downloaded / uploaded */
	size_t n_failed;
	size_t n_resumed;      /* downloads continued from a partial file */
	size_t n_retries;      /* requests repeated after 429, 5xx or a connection error */
	unsigned long long bytes;  /* bytes moved over the network (bodies only) */
	double seconds;        /* wall time of the whole call */
	int auth_failed;       /* the server answered 401/403 to our credentials (or their absence) */
} gm_lfs_transfer_stats;

/*
 * Downloads the objects of list that the store lacks, verifying each one's
 * sha256 and size while streaming and renaming it into place only when
 * both match.  Objects already stored are skipped; objects found in the
 * huggingface_hub cache (opts->hf_cache) are linked or copied after
 * verification instead of downloaded.  opts->parallel transfers run at
 * once (libcurl multi); a partial file left in lfs/tmp by an interrupted
 * run is resumed with a Range request; 429, 5xx and connection errors are
 * retried with exponential backoff; an expired href is replaced by a new
 * batch request.  A 401/403 is GM_EINVAL explaining how to authenticate
 * (HF_TOKEN for Hugging Face).
 *
 * Every object is attempted even when some fail; the return is then the
 * first failure's code with err describing the failures (each oid, path
 * and reason, as many as fit).  stats may be NULL; opts may be NULL for
 * the defaults.
 */
int gm_lfs_download(const gm_lfs_store *s, const gm_lfs_remote *remote,
		    const gm_lfs_object_list *list, const gm_lfs_transfer_opts *opts,
		    gm_lfs_transfer_stats *stats, gm_error *err);

/*
 * Uploads the objects of list to the remote: one batch request with
 * operation "upload"; objects the server already has (no actions) are
 * counted as present; the others are PUT from the store and then
 * confirmed with the "verify" action when the server asks for it.  A
 * listed object missing from the local store is GM_ENOENT (nothing is
 * uploaded for it).  Same retries and error reporting as downloads.
 */
int gm_lfs_upload(const gm_lfs_store *s, const gm_lfs_remote *remote,
		  const gm_lfs_object_list *list, const gm_lfs_transfer_opts *opts,
		  gm_lfs_transfer_stats *stats, gm_error *err);

/*
 * Applies the body of a Batch API answer (an HTTP 200 response) to a
 * request for the objects of list, as gm_lfs_download (upload 0) or
 * gm_lfs_upload (upload 1) does before it transfers anything, without the
 * network: for tests and the fuzzer (contrib/fuzz/fuzz-lfs-batch.c).
 * *n_ready (may be NULL) counts the objects given an action to run; in an
 * upload, an object without one is one the server has.  Returns 0 when no
 * object failed, else the first failure's code with the failures described
 * as gm_lfs_download describes them (an answer that would be retried
 * counts as a failure).
 */
int gm_lfs_batch_answer(const char *body, size_t len, const gm_lfs_object_list *list, int upload,
			size_t *n_ready, gm_error *err);
#endif
