/*
 * hub.h - the Hugging Face Hub as a git + LFS server: "hf:ORG/NAME[@REV]"
 * names, the endpoint (HF_ENDPOINT), the token (HF_TOKEN, then
 * $HF_HOME/token), the git and LFS URLs of a repository, revision lookup
 * through the Hub API, and the huggingface_hub download cache whose blobs
 * can be reused instead of downloaded.
 *
 * Strings returned by functions are new allocations the caller frees.
 * Errors follow error.h.
 */
#ifndef GM_HUB_H
#define GM_HUB_H

#include "base/error.h"

#define GM_HUB_DEFAULT_ENDPOINT "https://huggingface.co"

typedef struct gm_hub_ref {
	char *org;  /* owned */
	char *name; /* owned */
	char *rev;  /* owned; NULL when the source named none (the default branch) */
} gm_hub_ref;

#define GM_HUB_REF_INIT { NULL, NULL, NULL }

/* 1 when source starts with "hf:" (so it is meant for gm_hub_parse). */
int gm_hub_is_source(const char *source);

/*
 * Parses "hf:ORG/NAME" or "hf:ORG/NAME@REV".  ORG and NAME are what the
 * Hub allows (letters, digits, "-", "_", "."; not starting with "." or
 * "-", no "..", at most 96 characters); REV is a branch, tag or commit
 * without whitespace, "..", control characters or a leading "-".  Anything
 * else is GM_EINVAL with a message showing the expected form.  Release
 * with gm_hub_ref_release.
 */
int gm_hub_parse(const char *source, gm_hub_ref *out, gm_error *err);
void gm_hub_ref_release(gm_hub_ref *r);

/* HF_ENDPOINT without trailing "/", or https://huggingface.co. */
char *gm_hub_endpoint(void);

/*
 * The token: HF_TOKEN when set and not empty, else the first line of
 * $HF_TOKEN_PATH, else of $HF_HOME/token ($HF_HOME defaults to
 * ~/.cache/huggingface, with
 * $XDG_CACHE_HOME honoured as huggingface_hub does).  *out is NULL when
 * there is none (not an error); an unreadable token file is GM_EIO.
 */
int gm_hub_token(char **out, gm_error *err);

/*
 * The token for url: gm_hub_token() when url is on the Hub endpoint
 * (same scheme, host and port as gm_hub_endpoint()), else NULL, so a Hub
 * token is never sent elsewhere.
 */
int gm_hub_token_for_url(const char *url, char **out, gm_error *err);

/* ENDPOINT/ORG/NAME: the git URL of the repository. */
char *gm_hub_git_url(const gm_hub_ref *r);
/* ENDPOINT/ORG/NAME.git/info/lfs: its LFS endpoint. */
char *gm_hub_lfs_url(const gm_hub_ref *r);

/*
 * Resolves r->rev (NULL = "main") to a commit id through
 * GET ENDPOINT/api/models/ORG/NAME/revision/REV (the "sha" field), with
 * the token when there is one.  *sha gets 40 hex digits.  404 is
 * GM_ENOENT ("no such model or revision"); 401/403 GM_EINVAL saying to set
 * HF_TOKEN.
 */
int gm_hub_resolve_revision(const gm_hub_ref *r, char **sha, gm_error *err);

/*
 * The huggingface_hub cache root: $HF_HUB_CACHE, else $HF_HOME/hub, else
 * $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.  The
 * directory may not exist.
 */
char *gm_hub_cache_dir(void);

/* CACHE/models--ORG--NAME (may not exist). */
char *gm_hub_cache_repo_dir(const char *cache, const char *org, const char *name);

/*
 * A blob of the cache whose name is oid (the sha256 of an LFS file):
 * looks in CACHE/models--ORG--NAME/blobs/OID for every ORG--NAME (any repository: the content is
 * what matters and the caller verifies it).  Returns the path, or NULL
 * when none exists.
 */
char *gm_hub_cache_find_blob(const char *cache, const char *oid);

#endif
