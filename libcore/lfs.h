/*
 * lfs.h - Git LFS: pointer files, the local object store, clean and smudge,
 * and Batch API transfers (download and upload) over HTTP.
 *
 * Everything here is compatible with git-lfs on disk and on the wire, so a
 * repository can be used by git-lfs and by git-model alternately:
 *
 *   - pointers are byte-identical to what git-lfs writes for the same
 *     content ("version" line first, the other keys sorted, "ext-" keys
 *     kept, under 1024 bytes);
 *   - objects live in GITDIR/lfs/objects/OID[0:2]/OID[2:4]/OID, where
 *     GITDIR is the repository's common git directory (shared by its
 *     worktrees); partial downloads live in GITDIR/lfs/tmp;
 *   - transfers speak the Batch API with the "basic" transfer adapter.
 *
 * Nothing is ever written under a final name before it is complete and
 * verified: objects are written to a temporary file in lfs/tmp, hashed
 * while written, and renamed into place only when the sha256 and size
 * match.  A failure (wrong hash, truncated transfer, full disk) leaves at
 * most a partial file in lfs/tmp, which a later download resumes from.
 *
 * Errors follow error.h: 0 or a negative GM_E* code, with a message in
 * gm_error that names the object (oid, and path when known) and says what
 * to do.  Nothing here prints errors; progress goes to stderr only when
 * asked for and stderr is a terminal.
 */
#ifndef GM_LFS_H
#define GM_LFS_H

#include <stddef.h>

#include "buf.h"
#include "error.h"

#define GM_LFS_SPEC_URL "https://git-lfs.github.com/spec/v1"
#define GM_LFS_OID_HEXLEN 64
/* A pointer file is always smaller than this (git-lfs's limit too). */
#define GM_LFS_POINTER_MAX 1024

/* ------------------------------------------------------------ pointers */

/* One "ext-N-NAME sha256:OID" line of a pointer, kept verbatim. */
typedef struct gm_lfs_ext {
	char *key;   /* "ext-0-foo" (owned) */
	char *value; /* "sha256:..." (owned) */
} gm_lfs_ext;

typedef struct gm_lfs_pointer {
	char oid[GM_LFS_OID_HEXLEN + 1]; /* lowercase hex sha256, NUL-terminated */
	unsigned long long size;         /* size of the object in bytes */
	gm_lfs_ext *ext;                 /* owned array, in file order (sorted) */
	size_t n_ext;
} gm_lfs_pointer;

#define GM_LFS_POINTER_INIT { "", 0, NULL, 0 }

/*
 * Parses a pointer file strictly: exactly "version SPEC\n", then keys in
 * strictly ascending order among ext-N-NAME, "oid sha256:<64 lowercase
 * hex>" and "size <decimal>", each line ending in "\n", nothing else, and
 * fewer than 1024 bytes.  Returns 0 and fills out (release it with
 * gm_lfs_pointer_release), or GM_EFORMAT with a message saying which line
 * is wrong; out is left empty on failure.
 */
int gm_lfs_pointer_parse(const void *data, size_t len, gm_lfs_pointer *out, gm_error *err);

/* 1 when data parses as a pointer (gm_lfs_pointer_parse without output). */
int gm_lfs_is_pointer(const void *data, size_t len);

/* Appends the canonical pointer text (what git-lfs writes) to out. */
void gm_lfs_pointer_format(const gm_lfs_pointer *p, gm_buf *out);

/* Frees what p owns and empties it; safe on an empty pointer. */
void gm_lfs_pointer_release(gm_lfs_pointer *p);

/* sha256 (64 lowercase hex digits + NUL) and size of a file. */
int gm_lfs_hash_file(const char *path, char *hex, unsigned long long *size, gm_error *err);

/* 1 when s is 64 lowercase hex digits (and nothing else). */
int gm_lfs_oid_valid(const char *s);

/* ------------------------------------------------------------ object store */

typedef struct gm_lfs_store {
	char *gitdir;  /* the common git directory (owned) */
	char *root;    /* GITDIR/lfs (owned) */
	char *objects; /* GITDIR/lfs/objects (owned) */
	char *tmp;     /* GITDIR/lfs/tmp (owned) */
} gm_lfs_store;

/*
 * Opens the object store of the git directory gitdir (".git" of a
 * worktree, or a bare repository).  Nothing is created until an object is
 * written.  Release with gm_lfs_store_release.
 */
int gm_lfs_store_init(gm_lfs_store *s, const char *gitdir, gm_error *err);

/*
 * Opens the store of the repository containing path (discovered as git
 * does; path NULL means GIT_DIR when set, else the current directory, as
 * for a filter run by git; linked worktrees use their common directory).
 * GM_ENOENT when path is not in a git repository.
 */
int gm_lfs_store_discover(gm_lfs_store *s, const char *path, gm_error *err);

void gm_lfs_store_release(gm_lfs_store *s);

/* GITDIR/lfs/objects/OID[0:2]/OID[2:4]/OID as a new string (caller frees). */
char *gm_lfs_object_path(const gm_lfs_store *s, const char *oid);

/* 1 when the object is present with the expected size (not re-hashed). */
int gm_lfs_store_has(const gm_lfs_store *s, const char *oid, unsigned long long size);

/*
 * Re-hashes a stored object.  0 when its sha256 and size match; GM_ENOENT
 * when it is missing; GM_EFORMAT when corrupt (the message gives the
 * actual hash and size).  The file is left in place either way.
 */
int gm_lfs_store_verify(const gm_lfs_store *s, const char *oid, unsigned long long size,
			gm_error *err);

/*
 * Adds an existing file to the store by hard link (or copy when linking is
 * impossible), verifying its sha256 and size first; used to reuse blobs of
 * the huggingface_hub cache.  GM_EFORMAT when the file does not hash to
 * oid (the store is untouched).
 */
int gm_lfs_store_import(const gm_lfs_store *s, const char *src, const char *oid,
			unsigned long long size, gm_error *err);

/* ------------------------------------------------------------ clean and smudge */

/*
 * A streaming clean: bytes are hashed while they are copied into a
 * temporary file in lfs/tmp; gm_lfs_clean_finish renames it to its object
 * path and returns the pointer.  Content that is itself a valid pointer
 * (smaller than 1024 bytes) is returned unchanged and stores nothing, as
 * git-lfs does, so committing pointer files is harmless.  Empty content
 * gives a pointer of size 0 and stores nothing: callers write an empty
 * blob for it, not a pointer, as git-lfs does.
 */
typedef struct gm_lfs_cleaner gm_lfs_cleaner;

int gm_lfs_clean_begin(const gm_lfs_store *s, gm_lfs_cleaner **out, gm_error *err);
int gm_lfs_clean_write(gm_lfs_cleaner *c, const void *data, size_t len, gm_error *err);
/* Frees c in every case; on success fills p (release it). */
int gm_lfs_clean_finish(gm_lfs_cleaner *c, gm_lfs_pointer *p, gm_error *err);
/* Frees c and removes its temporary file; NULL is fine. */
void gm_lfs_clean_abort(gm_lfs_cleaner *c);

/* Cleans everything readable from fd (until EOF) / the file at path. */
int gm_lfs_clean_fd(const gm_lfs_store *s, int fd, gm_lfs_pointer *p, gm_error *err);
int gm_lfs_clean_file(const gm_lfs_store *s, const char *path, gm_lfs_pointer *p, gm_error *err);

/* Where smudged content goes: returns 0 or a GM_E* code (filling err). */
typedef int (*gm_lfs_sink_fn)(void *ctx, const void *data, size_t len, gm_error *err);

/*
 * Smudges: when data is a pointer, streams the object's content to sink,
 * verifying size and sha256 on the way (GM_EFORMAT after the last byte
 * if they do not match: the store is corrupt).  When data is not a
 * pointer it is passed through unchanged (git-lfs does the same: files
 * committed without the filter stay readable).  A missing object is
 * GM_ENOENT naming path (may be NULL), the oid and how to fetch it.
 */
int gm_lfs_smudge(const gm_lfs_store *s, const void *data, size_t len, const char *path,
		  gm_lfs_sink_fn sink, void *ctx, gm_error *err);

/*
 * The single-shot smudge filter: reads in_fd to EOF and writes the content
 * to out_fd (gm_lfs_smudge, downloading a missing object first with
 * gm_lfs_fetch_one; input of 1024 bytes or more is copied through without
 * being held in memory).  skip (GIT_LFS_SKIP_SMUDGE) passes
 * pointers through unchanged.
 */
int gm_lfs_smudge_fd(const gm_lfs_store *s, int in_fd, int out_fd, const char *path, int skip, gm_error *err);

/* 1 when GIT_LFS_SKIP_SMUDGE asks for pointers to be left alone. */
int gm_lfs_skip_smudge(void);

/*
 * The top directory of the worktree containing path (*out, caller frees);
 * GM_EINVAL for a bare repository, GM_ENOENT outside any repository.
 */
int gm_lfs_worktree_top(const char *path, char **out, gm_error *err);

/* A sink writing to a file descriptor (ctx points to the int fd). */
int gm_lfs_sink_fd(void *ctx, const void *data, size_t len, gm_error *err);
/* A sink appending to a gm_buf (ctx is the gm_buf *). */
int gm_lfs_sink_buf(void *ctx, const void *data, size_t len, gm_error *err);

/* ------------------------------------------------------------ transfers */

/* One object to transfer. */
typedef struct gm_lfs_object {
	char oid[GM_LFS_OID_HEXLEN + 1];
	unsigned long long size;
	char *path; /* a file that points to it, for messages and progress (owned; may be NULL) */
} gm_lfs_object;

typedef struct gm_lfs_object_list {
	gm_lfs_object *items; /* owned */
	size_t n, alloc;
} gm_lfs_object_list;

/* Appends (oid, size, path) unless oid is already listed; path may be NULL. */
void gm_lfs_object_list_add(gm_lfs_object_list *l, const char *oid, unsigned long long size,
			    const char *path);
void gm_lfs_object_list_release(gm_lfs_object_list *l);

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

/* ------------------------------------------------------------ repositories */

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

/* ------------------------------------------------------------ filters */

/*
 * Registers the in-process libgit2 filter named "lfs" (attribute
 * "filter=lfs", priority GIT_FILTER_DRIVER_PRIORITY): clean on add,
 * smudge on checkout, using the store of the repository being filtered.
 * Idempotent; call after git_libgit2_init().  A smudge whose object is
 * missing fails the checkout of that file with the message of
 * gm_lfs_smudge (it does not download: fetch with gm_lfs_fetch, in
 * parallel, before checking out; or clone without checkout, fetch, then
 * check out).
 */
int gm_lfs_filter_register(gm_error *err);

/*
 * Runs git's long-running filter protocol (gitattributes(5), "Long
 * Running Filter Process") on in_fd/out_fd until git closes in_fd:
 * handshake (git-filter-client/version=2), capabilities clean and smudge,
 * then one request after another.  Smudge downloads an object missing
 * from the store first (gm_lfs_fetch_one), as git-lfs does.  A request
 * that fails (an object that cannot be had, unreadable input, an unknown
 * command) is answered "status=error", reported
 * through report(ctx, pathname, error) (may be NULL), and the process goes
 * on.  Smudge honours GIT_LFS_SKIP_SMUDGE=1 (pointers are passed through,
 * as git-lfs does).  Returns 0 at a clean EOF between requests, or
 * GM_EFORMAT/GM_EIO when git sent something that breaks the protocol or
 * the pipe failed (the process must then stop).
 */
typedef void (*gm_lfs_report_fn)(void *ctx, const char *path, const gm_error *e);
int gm_lfs_filter_process(const gm_lfs_store *s, int in_fd, int out_fd, gm_lfs_report_fn report,
			  void *ctx, gm_error *err);

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
