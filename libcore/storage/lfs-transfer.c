/*
 * lfs-transfer.c - Batch API downloads and uploads with libcurl multi,
 * and the endpoint of a git URL.  See lfs-transfer.h.
 *
 * One engine serves both directions.  Each object goes through
 *
 *     NEED_BATCH -> READY -> ACTIVE -> DONE
 *                      ^        |
 *                      +--------+  (retry after a delay: 429, 5xx, a cut
 *                                   connection; or back to NEED_BATCH when
 *                                   the href expired)
 *
 * with FAILED as the end of the road for errors retrying cannot fix.
 * Batch requests are made synchronously between turns of the multi loop
 * (they are small); object bodies move in parallel.
 *
 * Downloads go to GITDIR/lfs/tmp/OID.part, locked with flock so that two
 * processes never write the same partial file.  An existing partial file
 * is hashed first and continued with "Range: bytes=N-"; a server that
 * answers 200 instead of 206 makes us start over.  The object is renamed
 * into place only when the size and the sha256 (computed while writing)
 * match.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/evp.h>

#include "base/buf.h"
#include "base/fs.h"
#include "storage/http.h"
#include "base/json.h"
#include "storage/hub.h"
#include "storage/lfs.h"
#include "storage/lfs-internal.h"
#include "storage/lfs-transfer.h"
#include "base/log.h"

#define LFS_MIME "application/vnd.git-lfs+json"
#define BATCH_MAX 100            /* objects per batch request */
#define MAX_BACKOFF_MS 30000

enum xstate { X_NEED_BATCH, X_READY, X_ACTIVE, X_DONE, X_FAILED };

struct xfer {
	const gm_lfs_object *obj;
	enum xstate state;
	int attempts;           /* failed attempts so far (object requests and batches) */
	double not_before;      /* monotonic seconds: do not start before */
	char *href;
	struct curl_slist *headers;
	int has_auth_header;
	double expires_at;      /* monotonic seconds, 0 = never */
	int verify;             /* upload: the server asked for a verify call */
	char *verify_href;
	struct curl_slist *verify_headers;
	/* during a transfer */
	CURL *easy;
	struct curl_slist *req_headers;
	int fd;
	char *part;
	EVP_MD_CTX *md;
	unsigned long long offset; /* bytes already in the partial file at the start */
	unsigned long long got;    /* bytes received in this request */
	int write_failed;          /* errno of a failed write, or -1 for "too many bytes" */
	gm_buf errbody;            /* the start of an error response */
	char errbuf[CURL_ERROR_SIZE];
	gm_error err;
};

struct engine {
	const gm_lfs_store *s;
	const gm_lfs_remote *remote;
	int upload;
	int parallel, max_retries;
	long retry_delay_ms;
	int progress;
	struct xfer *x;
	size_t n;
	gm_lfs_transfer_stats *stats;
	CURLM *multi;
	int active;
	int fatal;              /* an error every object shares (authentication) */
	gm_error fatal_err;
	/* progress */
	unsigned long long total_bytes, done_bytes;
	double start, last_draw;
	size_t n_done_files;
	int drawn;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *obj_name(const gm_lfs_object *o)
{
	return o->path ? o->path : o->oid;
}

/* Length of "scheme://host[:port]" at the start of url, or 0. */
static size_t origin_len(const char *url)
{
	const char *p = strstr(url, "://");

	if (!p)
		return 0;
	p += 3;
	return (size_t)(p - url) + strcspn(p, "/?#");
}

static int same_origin(const char *a, const char *b)
{
	size_t la = origin_len(a), lb = origin_len(b);

	return la && la == lb && !strncasecmp(a, b, la);
}

/* Authentication of the remote on a handle (batch requests, and hrefs on
 * the same server that came without their own Authorization header). */
static struct curl_slist *add_auth(CURL *c, const gm_lfs_remote *r, struct curl_slist *h)
{
	if (r->token) {
		gm_buf b = GM_BUF_INIT;
		gm_buf_addf(&b, "Authorization: Bearer %s", r->token);
		h = curl_slist_append(h, b.buf);
		gm_buf_release(&b);
	} else if (r->username && r->password) {
		curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(c, CURLOPT_USERNAME, r->username);
		curl_easy_setopt(c, CURLOPT_PASSWORD, r->password);
	}
	return h;
}

static void common_opts(CURL *c, char *errbuf)
{
	curl_easy_setopt(c, CURLOPT_USERAGENT, gm_http_user_agent());
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
	/* hrefs and redirects come from the server: http(s) only (see http_url) */
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
	/* A stalled transfer (under 1 byte/s for a minute) is a connection error. */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
	if (errbuf) {
		errbuf[0] = '\0';
		curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	}
}

static int retryable_curl(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return 1;
	default:
		return 0;
	}
}

static int retryable_status(long status)
{
	return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

static long backoff_ms(const struct engine *e, int attempts)
{
	double d = (double)e->retry_delay_ms * pow(2.0, attempts > 1 ? attempts - 1 : 0);

	return d > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : (long)d;
}

static void auth_error(struct engine *e, long status, const char *what)
{
	if (e->fatal)
		return;
	e->fatal = 1;
	e->stats->auth_failed = 1;
	if (e->remote->token)
		gm_error_set(&e->fatal_err, GM_EINVAL, "%s: the server answered %ld (not authorized) to the token "
			     "that was sent: check that HF_TOKEN (or $HF_HOME/token) is valid and grants access to "
			     "this repository", what, status);
	else
		gm_error_set(&e->fatal_err, GM_EINVAL, "%s: the server answered %ld (authentication required): "
			     "set HF_TOKEN (Hugging Face), or give git credentials for this server", what, status);
}

/* ------------------------------------------------------------ progress */

static void add_eta(gm_buf *b, double secs)
{
	long s = (long)(secs + 0.5);

	if (s >= 3600)
		gm_buf_addf(b, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
	else
		gm_buf_addf(b, "%ld:%02ld", s / 60, s % 60);
}

static void draw_progress(struct engine *e, int final)
{
	gm_buf line = GM_BUF_INIT;
	double t = now(), el = t - e->start, rate;
	unsigned long long cur = e->done_bytes;
	size_t i;

	if (!e->progress || (!final && t - e->last_draw < 0.2))
		return;
	e->last_draw = t;
	for (i = 0; i < e->n; i++)
		if (e->x[i].state == X_ACTIVE)
			cur += e->x[i].got;
	rate = el > 0 ? (double)cur / el : 0;
	gm_buf_addf(&line, "%s LFS objects: %zu/%zu, ", e->upload ? "Uploading" : "Downloading", e->n_done_files,
		    e->n);
	gm_buf_add_human_bytes(&line, cur);
	gm_buf_adds(&line, " / ");
	gm_buf_add_human_bytes(&line, e->total_bytes);
	gm_buf_adds(&line, ", ");
	gm_buf_add_human_bytes(&line, (unsigned long long)rate);
	gm_buf_adds(&line, "/s");
	if (!final && rate > 0 && e->total_bytes > cur) {
		gm_buf_adds(&line, ", ETA ");
		add_eta(&line, (double)(e->total_bytes - cur) / rate);
	}
	/* The file in flight with the most left to do. */
	for (i = 0; i < e->n && !final; i++) {
		struct xfer *x = &e->x[i];
		if (x->state == X_ACTIVE && x->obj->size) {
			gm_buf_addf(&line, "  %s %d%%", obj_name(x->obj),
				    (int)(100.0 * (double)(x->offset + x->got) / (double)x->obj->size));
			break;
		}
	}
	fprintf(stderr, "\r%-100.160s%s", line.buf, final ? "\n" : "");
	fflush(stderr);
	e->drawn = 1;
	gm_buf_release(&line);
}

/* ------------------------------------------------------------ batch requests */

static size_t buf_write_cb(char *data, size_t size, size_t n, void *ctx)
{
	gm_buf_add(ctx, data, size * n);
	return size * n;
}

static void xfer_set_failed(struct engine *e, struct xfer *x)
{
	x->state = X_FAILED;
	e->stats->n_failed++;
}

/* Schedules x again after a backoff, or fails it when out of retries. */
static void retry_later(struct engine *e, struct xfer *x, enum xstate state)
{
	x->attempts++;
	if (e->max_retries >= 0 && x->attempts > e->max_retries) {
		gm_error_prefix(&x->err, "giving up after %d attempt%s", x->attempts, x->attempts == 1 ? "" : "s");
		xfer_set_failed(e, x);
		return;
	}
	e->stats->n_retries++;
	x->state = state;
	x->not_before = now() + (double)backoff_ms(e, x->attempts) / 1000.0;
	gm_debug("LFS: %s: retrying in %ld ms (%s)", obj_name(x->obj), backoff_ms(e, x->attempts), x->err.msg);
}

static struct curl_slist *action_headers(json_object *action, int *has_auth)
{
	struct curl_slist *h = NULL;
	json_object *hdr;

	*has_auth = 0;
	if (json_object_object_get_ex(action, "header", &hdr) && json_object_is_type(hdr, json_type_object)) {
		json_object_object_foreach(hdr, k, v) {
			gm_buf b = GM_BUF_INIT;
			const char *val = json_object_get_string(v);

			/* A header value with a newline would inject headers. */
			if (!val || strpbrk(k, "\r\n:") || strpbrk(val, "\r\n"))
				continue;
			if (!strcasecmp(k, "Authorization"))
				*has_auth = 1;
			gm_buf_addf(&b, "%s: %s", k, val);
			h = curl_slist_append(h, b.buf);
			gm_buf_release(&b);
		}
	}
	return h;
}

/*
 * Whether an href may be followed: a server's answer must not send our
 * uploads (a PUT) or downloads to file://, or to any other protocol
 * libcurl speaks.  common_opts restricts redirects the same way.
 */
static int http_url(const char *s)
{
	return s && (!strncasecmp(s, "http://", 7) || !strncasecmp(s, "https://", 8));
}

/* Takes what the batch answered for one object. */
static void take_answer(struct engine *e, struct xfer *x, json_object *o, double t0)
{
	json_object *err, *actions, *act, *v;
	const char *name = e->upload ? "upload" : "download";

	if (json_object_object_get_ex(o, "error", &err)) {
		json_object *code = NULL, *msg = NULL;
		long c;

		json_object_object_get_ex(err, "code", &code);
		json_object_object_get_ex(err, "message", &msg);
		c = code ? (long)json_object_get_int64(code) : 0;
		gm_error_set(&x->err, c == 404 ? GM_ENOENT : GM_EIO, "the server has no object %s (error %ld: %s)",
			     x->obj->oid, c, msg ? json_object_get_string(msg) : "no message");
		if (retryable_status(c))
			retry_later(e, x, X_NEED_BATCH);
		else
			xfer_set_failed(e, x);
		return;
	}
	if (!json_object_object_get_ex(o, "actions", &actions) ||
	    !json_object_object_get_ex(actions, name, &act)) {
		if (e->upload) { /* no upload action: the server has it */
			x->state = X_DONE;
			e->stats->n_present++;
			e->n_done_files++;
			e->total_bytes -= x->obj->size;
			return;
		}
		gm_error_set(&x->err, GM_EFORMAT, "the batch answer has no download action for %s", x->obj->oid);
		xfer_set_failed(e, x);
		return;
	}
	if (!json_object_object_get_ex(act, "href", &v) || !json_object_is_type(v, json_type_string)) {
		gm_error_set(&x->err, GM_EFORMAT, "the batch answer's %s action for %s has no href", name,
			     x->obj->oid);
		xfer_set_failed(e, x);
		return;
	}
	if (!http_url(json_object_get_string(v))) {
		gm_error_set(&x->err, GM_EFORMAT, "the batch answer's %s action for %s has an href that is not "
			     "http(s): '%.80s'", name, x->obj->oid, json_object_get_string(v));
		xfer_set_failed(e, x);
		return;
	}
	free(x->href);
	curl_slist_free_all(x->headers);
	x->href = gm_xstrdup(json_object_get_string(v));
	x->headers = action_headers(act, &x->has_auth_header);
	x->expires_at = 0;
	if (json_object_object_get_ex(act, "expires_in", &v))
		x->expires_at = t0 + (double)json_object_get_int64(v);
	else if (json_object_object_get_ex(act, "expires_at", &v)) {
		struct tm tm;
		const char *s = json_object_get_string(v);

		memset(&tm, 0, sizeof(tm));
		if (s && strptime(s, "%Y-%m-%dT%H:%M:%S", &tm))
			x->expires_at = t0 + difftime(timegm(&tm), time(NULL));
	}
	if (e->upload && json_object_object_get_ex(actions, "verify", &act) &&
	    json_object_object_get_ex(act, "href", &v)) {
		int dummy;

		if (!json_object_is_type(v, json_type_string) || !http_url(json_object_get_string(v))) {
			gm_error_set(&x->err, GM_EFORMAT, "the batch answer's verify action for %s has an href "
				     "that is not an http(s) URL", x->obj->oid);
			xfer_set_failed(e, x);
			return;
		}

		x->verify = 1;
		free(x->verify_href);
		curl_slist_free_all(x->verify_headers);
		x->verify_href = gm_xstrdup(json_object_get_string(v));
		x->verify_headers = action_headers(act, &dummy);
	}
	x->state = X_READY;
}

/*
 * Applies the body of a batch answer (HTTP 200) from url to the k objects
 * of group: each gets its action (X_READY), is done (an upload the server
 * has), or fails or waits for a retry with a message in its err.
 */
static void take_batch(struct engine *e, struct xfer **group, size_t k, const gm_buf *body, const char *url,
		       double t0)
{
	json_object *resp = NULL, *objs;
	gm_error perr = GM_ERROR_INIT;
	size_t i;

	if (gm_json_parse(body->buf, body->len, url, &resp, &perr) ||
	    !json_object_object_get_ex(resp, "objects", &objs) || !json_object_is_type(objs, json_type_array)) {
		for (i = 0; i < k; i++) {
			gm_error_set(&group[i]->err, GM_EFORMAT, "%s: the batch answer is not valid: %s", url,
				     perr.msg[0] ? perr.msg : "no 'objects' list");
			xfer_set_failed(e, group[i]);
		}
		if (resp)
			json_object_put(resp);
		return;
	}
	for (i = 0; i < k; i++) {
		size_t j, m = json_object_array_length(objs);
		json_object *found = NULL;

		for (j = 0; j < m && !found; j++) {
			json_object *o = json_object_array_get_idx(objs, j), *v;
			/* "oid" may be any JSON value, null included */
			if (json_object_object_get_ex(o, "oid", &v) && json_object_is_type(v, json_type_string) &&
			    !strcmp(json_object_get_string(v), group[i]->obj->oid))
				found = o;
		}
		if (!found || !json_object_is_type(found, json_type_object)) {
			gm_error_set(&group[i]->err, GM_EFORMAT, "the batch answer does not mention %s",
				     group[i]->obj->oid);
			xfer_set_failed(e, group[i]);
			continue;
		}
		take_answer(e, group[i], found, t0);
	}
	json_object_put(resp);
}

/* One batch request for up to BATCH_MAX objects in state X_NEED_BATCH whose
 * time has come. */
static void run_batch(struct engine *e)
{
	json_object *req, *objs, *resp = NULL, *arr;
	struct xfer *group[BATCH_MAX];
	struct curl_slist *h = NULL;
	gm_buf url = GM_BUF_INIT, body = GM_BUF_INIT;
	char errbuf[CURL_ERROR_SIZE];
	size_t i, k = 0;
	double t0 = now();
	long status = 0;
	CURLcode rc;
	CURL *c;

	for (i = 0; i < e->n && k < BATCH_MAX; i++)
		if (e->x[i].state == X_NEED_BATCH && e->x[i].not_before <= t0)
			group[k++] = &e->x[i];
	if (!k)
		return;
	req = json_object_new_object();
	json_object_object_add(req, "operation", json_object_new_string(e->upload ? "upload" : "download"));
	arr = json_object_new_array();
	json_object_array_add(arr, json_object_new_string("basic"));
	json_object_object_add(req, "transfers", arr);
	if (e->remote->ref) {
		json_object *ref = json_object_new_object();
		json_object_object_add(ref, "name", json_object_new_string(e->remote->ref));
		json_object_object_add(req, "ref", ref);
	}
	objs = json_object_new_array();
	for (i = 0; i < k; i++) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "oid", json_object_new_string(group[i]->obj->oid));
		json_object_object_add(o, "size", json_object_new_int64((int64_t)group[i]->obj->size));
		json_object_array_add(objs, o);
	}
	json_object_object_add(req, "objects", objs);
	json_object_object_add(req, "hash_algo", json_object_new_string("sha256"));

	gm_buf_addf(&url, "%s/objects/batch", e->remote->url);
	while (url.len > 0 && strstr(url.buf, "//objects/batch")) { /* endpoint given with a trailing "/" */
		char *p = strstr(url.buf, "//objects/batch");
		memmove(p, p + 1, strlen(p));
		url.len--;
	}
	c = curl_easy_init();
	if (!c)
		abort();
	common_opts(c, errbuf);
	h = curl_slist_append(h, "Accept: " LFS_MIME);
	h = curl_slist_append(h, "Content-Type: " LFS_MIME);
	h = add_auth(c, e->remote, h);
	curl_easy_setopt(c, CURLOPT_URL, url.buf);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN));
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, buf_write_cb);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	json_object_put(req);

	if (rc != CURLE_OK || retryable_status(status)) {
		for (i = 0; i < k; i++) {
			if (rc != CURLE_OK)
				gm_error_set(&group[i]->err, GM_EIO, "batch request to %s failed: %s", url.buf,
					     errbuf[0] ? errbuf : curl_easy_strerror(rc));
			else
				gm_error_set(&group[i]->err, GM_EIO, "batch request to %s: HTTP %ld", url.buf, status);
			if (rc == CURLE_OK || retryable_curl(rc))
				retry_later(e, group[i], X_NEED_BATCH);
			else
				xfer_set_failed(e, group[i]);
		}
		goto out;
	}
	if (status == 401 || status == 403) {
		auth_error(e, status, url.buf);
		goto out;
	}
	if (status != 200) {
		json_object *m = NULL;
		const char *msg = "";

		if (gm_json_parse(body.buf, body.len, url.buf, &resp, NULL) == 0 &&
		    json_object_object_get_ex(resp, "message", &m))
			msg = json_object_get_string(m);
		for (i = 0; i < k; i++) {
			gm_error_set(&group[i]->err, status == 404 ? GM_ENOENT : GM_EIO,
				     "batch request to %s: HTTP %ld%s%s%s", url.buf, status, *msg ? " (" : "", msg,
				     *msg ? ")" : status == 404 ? " (no such repository, or it is private: set "
				     "HF_TOKEN)" : "");
			xfer_set_failed(e, group[i]);
		}
		goto out;
	}
	take_batch(e, group, k, &body, url.buf, t0);
out:
	if (resp)
		json_object_put(resp);
	gm_buf_release(&url);
	gm_buf_release(&body);
}

/* ------------------------------------------------------------ object requests */

static size_t dl_write_cb(char *data, size_t size, size_t n, void *ctx)
{
	struct xfer *x = ctx;
	size_t len = size * n;
	long status = 0;

	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200 && status != 206) {
		/* An error page: keep its start for the message, never the file. */
		if (x->errbody.len < 512)
			gm_buf_add(&x->errbody, data, len < 512 ? len : 512);
		return len;
	}
	if (status == 200 && x->offset && x->got == 0) {
		/* The server ignored the Range: start over. */
		if (ftruncate(x->fd, 0) < 0 || lseek(x->fd, 0, SEEK_SET) < 0) {
			x->write_failed = errno;
			return 0;
		}
		EVP_DigestInit_ex(x->md, EVP_sha256(), NULL);
		x->offset = 0;
	}
	if (x->offset + x->got + len > x->obj->size) {
		x->write_failed = -1;
		return 0;
	}
	if (gm_write_all(x->fd, data, len) < 0) {
		x->write_failed = errno ? errno : EIO;
		return 0;
	}
	EVP_DigestUpdate(x->md, data, len);
	x->got += len;
	return len;
}

/*
 * Opens (and locks) the partial file, hashing what it already holds.
 * Returns 0, 1 when another process is downloading the object (try again
 * later), or -1 with x->err set.
 */
static int open_partial(struct engine *e, struct xfer *x)
{
	gm_buf p = GM_BUF_INIT;
	struct stat st;
	char *chunk;

	if (gm_lfs_tmp_dir(e->s, &x->err))
		return -1;
	gm_buf_addf(&p, "%s/%s.part", e->s->tmp, x->obj->oid);
	x->part = gm_buf_detach(&p, NULL);
	x->fd = open(x->part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (x->fd < 0) {
		gm_error_errno(&x->err, "cannot create '%s'", x->part);
		return -1;
	}
	if (flock(x->fd, LOCK_EX | LOCK_NB) < 0) {
		gm_error_set(&x->err, GM_EIO, "another process is downloading %s (%s is locked)", x->obj->oid,
			     x->part);
		return 1;
	}
	{
		/* The holder of the lock may have renamed the file into the store
		 * between our open and our lock: then this fd is the finished
		 * object, which must not be touched.  Start again. */
		struct stat a, b;

		if (fstat(x->fd, &a) < 0 || stat(x->part, &b) < 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev)
			return 1;
	}
	x->md = EVP_MD_CTX_new();
	if (!x->md || !EVP_DigestInit_ex(x->md, EVP_sha256(), NULL))
		abort();
	x->offset = 0;
	if (fstat(x->fd, &st) == 0 && st.st_size > 0 && (unsigned long long)st.st_size < x->obj->size) {
		/* Resume: hash what is there, then ask for the rest. */
		unsigned long long left = (unsigned long long)st.st_size;
		chunk = gm_xmalloc(1 << 20);
		while (left) {
			ssize_t r = read(x->fd, chunk, left > (1 << 20) ? (1 << 20) : left);
			if (r <= 0)
				break;
			EVP_DigestUpdate(x->md, chunk, (size_t)r);
			left -= (unsigned long long)r;
		}
		free(chunk);
		if (left) {
			EVP_DigestInit_ex(x->md, EVP_sha256(), NULL);
			if (ftruncate(x->fd, 0) < 0) {
				gm_error_errno(&x->err, "cannot truncate '%s'", x->part);
				return -1;
			}
		} else {
			x->offset = (unsigned long long)st.st_size;
		}
	} else if (st.st_size != 0 && ftruncate(x->fd, 0) < 0) {
		gm_error_errno(&x->err, "cannot truncate '%s'", x->part);
		return -1;
	}
	if (lseek(x->fd, (off_t)x->offset, SEEK_SET) < 0) {
		gm_error_errno(&x->err, "cannot seek in '%s'", x->part);
		return -1;
	}
	return 0;
}

static void close_partial(struct xfer *x)
{
	if (x->fd >= 0)
		close(x->fd); /* releases the lock */
	x->fd = -1;
	EVP_MD_CTX_free(x->md);
	x->md = NULL;
	free(x->part);
	x->part = NULL;
}

static size_t up_read_cb(char *buf, size_t size, size_t n, void *ctx)
{
	struct xfer *x = ctx;
	ssize_t r = read(x->fd, buf, size * n);

	if (r < 0)
		return CURL_READFUNC_ABORT;
	x->got += (unsigned long long)r;
	return (size_t)r;
}

static size_t discard_cb(char *data, size_t size, size_t n, void *ctx)
{
	struct xfer *x = ctx;

	if (x->errbody.len < 512)
		gm_buf_add(&x->errbody, data, size * n < 512 ? size * n : 512);
	return size * n;
}

static int start_xfer(struct engine *e, struct xfer *x)
{
	struct curl_slist *h;
	CURL *c;

	gm_error_clear(&x->err);
	gm_buf_reset(&x->errbody);
	x->got = 0;
	x->write_failed = 0;
	if (x->expires_at && x->expires_at <= now() + 1) {
		/* The href has expired (or will while we connect): ask again. */
		gm_error_set(&x->err, GM_EIO, "the %s link for %s expired", e->upload ? "upload" : "download",
			     x->obj->oid);
		x->state = X_NEED_BATCH;
		x->attempts++;
		e->stats->n_retries++;
		if (e->max_retries >= 0 && x->attempts > e->max_retries)
			xfer_set_failed(e, x);
		return 0;
	}
	if (e->upload) {
		char *path = gm_lfs_object_path(e->s, x->obj->oid);
		x->fd = open(path, O_RDONLY | O_CLOEXEC);
		if (x->fd < 0) {
			gm_error_errno(&x->err, "cannot open '%s'", path);
			free(path);
			xfer_set_failed(e, x);
			return 0;
		}
		free(path);
	} else {
		int r;

		if (gm_lfs_store_has(e->s, x->obj->oid, x->obj->size)) {
			/* Another process (a concurrent fetch) stored it meanwhile. */
			x->state = X_DONE;
			e->stats->n_present++;
			e->n_done_files++;
			e->total_bytes -= x->obj->size;
			return 0;
		}
		r = open_partial(e, x);
		if (r) {
			close_partial(x);
			if (r > 0) /* locked by another process: wait for it */
				retry_later(e, x, X_READY);
			else
				xfer_set_failed(e, x);
			return 0;
		}
	}
	c = curl_easy_init();
	if (!c)
		abort();
	x->easy = c;
	common_opts(c, x->errbuf);
	curl_easy_setopt(c, CURLOPT_URL, x->href);
	curl_easy_setopt(c, CURLOPT_PRIVATE, x);
	h = NULL;
	{
		struct curl_slist *p;
		for (p = x->headers; p; p = p->next)
			h = curl_slist_append(h, p->data);
	}
	if (!x->has_auth_header && same_origin(x->href, e->remote->url))
		h = add_auth(c, e->remote, h);
	if (e->upload) {
		h = curl_slist_append(h, "Content-Type: application/octet-stream");
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, up_read_cb);
		curl_easy_setopt(c, CURLOPT_READDATA, x);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->obj->size);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_cb);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
	} else {
		if (x->offset) {
			char range[64];

			snprintf(range, sizeof(range), "%llu-", x->offset);
			curl_easy_setopt(c, CURLOPT_RANGE, range);
			e->stats->n_resumed++;
			gm_info("LFS: resuming %s at byte %llu of %llu", obj_name(x->obj), x->offset, x->obj->size);
		}
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, dl_write_cb);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	x->req_headers = h; /* must outlive the request; freed in finish_xfer */
	x->state = X_ACTIVE;
	e->active++;
	curl_multi_add_handle(e->multi, c);
	return 0;
}

/* POSTs {"oid","size"} to the verify action of an uploaded object. */
static int verify_upload(struct engine *e, struct xfer *x)
{
	struct curl_slist *h = NULL, *p;
	gm_buf body = GM_BUF_INIT, req = GM_BUF_INIT;
	char errbuf[CURL_ERROR_SIZE];
	long status = 0;
	int has_auth = 0;
	CURLcode rc;
	CURL *c = curl_easy_init();

	if (!c)
		abort();
	common_opts(c, errbuf);
	for (p = x->verify_headers; p; p = p->next) {
		h = curl_slist_append(h, p->data);
		if (!strncasecmp(p->data, "Authorization:", 14))
			has_auth = 1;
	}
	h = curl_slist_append(h, "Accept: " LFS_MIME);
	h = curl_slist_append(h, "Content-Type: " LFS_MIME);
	if (!has_auth && same_origin(x->verify_href, e->remote->url))
		h = add_auth(c, e->remote, h);
	gm_buf_addf(&req, "{\"oid\":\"%s\",\"size\":%llu}", x->obj->oid, x->obj->size);
	curl_easy_setopt(c, CURLOPT_URL, x->verify_href);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, req.buf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, buf_write_cb);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	gm_buf_release(&req);
	if (rc != CURLE_OK)
		gm_error_set(&x->err, GM_EIO, "verifying the upload of %s: %s", x->obj->oid,
			     errbuf[0] ? errbuf : curl_easy_strerror(rc));
	else if (status < 200 || status > 299)
		gm_error_set(&x->err, GM_EIO, "the server did not verify the upload of %s: HTTP %ld %.200s",
			     x->obj->oid, status, body.buf);
	gm_buf_release(&body);
	if (rc == CURLE_OK && status >= 200 && status <= 299)
		return 0;
	return (rc != CURLE_OK && !retryable_curl(rc)) || (rc == CURLE_OK && !retryable_status(status)) ? -2 : -1;
}

/* The first line of an error body, for messages. */
static const char *err_body(struct xfer *x)
{
	size_t n = strcspn(x->errbody.buf, "\r\n");

	if (n > 200)
		n = 200;
	x->errbody.buf[n] = '\0';
	return x->errbody.buf;
}

static void finish_xfer(struct engine *e, struct xfer *x, CURLcode rc)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	char hex[65];
	long status = 0;

	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_multi_remove_handle(e->multi, x->easy);
	curl_easy_cleanup(x->easy);
	x->easy = NULL;
	curl_slist_free_all(x->req_headers);
	x->req_headers = NULL;
	e->active--;

	if (e->upload) {
		close(x->fd);
		x->fd = -1;
		if (rc != CURLE_OK) {
			gm_error_set(&x->err, GM_EIO, "uploading %s: %s", obj_name(x->obj),
				     x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
			if (retryable_curl(rc))
				retry_later(e, x, X_READY);
			else
				xfer_set_failed(e, x);
			return;
		}
		if (status == 401) {
			auth_error(e, status, x->href);
			return;
		}
		if (status == 403) {
			gm_error_set(&x->err, GM_EIO, "the server refused the upload link (HTTP 403)");
			retry_later(e, x, X_NEED_BATCH);
			return;
		}
		if (status < 200 || status > 299) {
			gm_error_set(&x->err, GM_EIO, "uploading %s: HTTP %ld %s", obj_name(x->obj), status, err_body(x));
			if (retryable_status(status))
				retry_later(e, x, X_READY);
			else
				xfer_set_failed(e, x);
			return;
		}
		if (x->verify) {
			int r = verify_upload(e, x);
			if (r == -1) {
				retry_later(e, x, X_READY);
				return;
			}
			if (r) {
				xfer_set_failed(e, x);
				return;
			}
		}
		x->state = X_DONE;
		e->stats->n_transferred++;
		e->stats->bytes += x->obj->size;
		e->done_bytes += x->obj->size;
		e->n_done_files++;
		return;
	}

	e->stats->bytes += x->got;
	if (x->write_failed > 0) {
		errno = x->write_failed;
		gm_error_errno(&x->err, "cannot write '%s'%s; the partial download stays there and a new run "
			       "resumes it", x->part, x->write_failed == ENOSPC ? " (the disk is full)" : "");
		close_partial(x);
		xfer_set_failed(e, x);
		return;
	}
	if (x->write_failed < 0) {
		gm_error_set(&x->err, GM_EFORMAT, "the server sent more than the %llu bytes of %s; nothing was "
			     "stored", x->obj->size, x->obj->oid);
		unlink(x->part);
		close_partial(x);
		xfer_set_failed(e, x);
		return;
	}
	if (rc == CURLE_OK && status != 200 && status != 206) {
		close_partial(x);
		if (status == 401) {
			auth_error(e, status, x->href);
			return;
		}
		if (status == 403 || status == 410) {
			/* Signed links expire; the batch API hands out fresh ones. */
			gm_error_set(&x->err, GM_EIO, "the download link of %s was refused (HTTP %ld: %s)",
				     x->obj->oid, status, err_body(x));
			retry_later(e, x, X_NEED_BATCH);
			return;
		}
		if (status == 416) { /* our Range is past the end: the partial file is bad */
			gm_buf p = GM_BUF_INIT;
			gm_buf_addf(&p, "%s/%s.part", e->s->tmp, x->obj->oid);
			unlink(p.buf);
			gm_buf_release(&p);
		}
		gm_error_set(&x->err, status == 404 ? GM_ENOENT : GM_EIO, "downloading %s: HTTP %ld %s",
			     x->obj->oid, status, err_body(x));
		if (retryable_status(status) || status == 416)
			retry_later(e, x, X_READY);
		else
			xfer_set_failed(e, x);
		return;
	}
	if (rc != CURLE_OK || x->offset + x->got != x->obj->size) {
		if (rc != CURLE_OK)
			gm_error_set(&x->err, GM_EIO, "downloading %s: %s (%llu of %llu bytes kept for resuming)",
				     x->obj->oid, x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc),
				     x->offset + x->got, x->obj->size);
		else
			gm_error_set(&x->err, GM_EIO, "downloading %s: the transfer ended after %llu of %llu bytes",
				     x->obj->oid, x->offset + x->got, x->obj->size);
		close_partial(x);
		if (rc == CURLE_OK || retryable_curl(rc))
			retry_later(e, x, X_READY);
		else
			xfer_set_failed(e, x);
		return;
	}
	EVP_DigestFinal_ex(x->md, md, &mdlen);
	gm_lfs_sha256_hex(md, hex);
	if (strcmp(hex, x->obj->oid)) {
		gm_error_set(&x->err, GM_EFORMAT, "the content downloaded for %s has sha256 %s: the server's copy is "
			     "corrupt; nothing was stored", x->obj->oid, hex);
		unlink(x->part);
		close_partial(x);
		xfer_set_failed(e, x);
		return;
	}
	if (fsync(x->fd) < 0 || gm_lfs_store_install(e->s, x->part, x->obj->oid, &x->err)) {
		if (!x->err.msg[0])
			gm_error_errno(&x->err, "cannot write '%s'", x->part);
		close_partial(x);
		xfer_set_failed(e, x);
		return;
	}
	close_partial(x);
	x->state = X_DONE;
	e->stats->n_transferred++;
	e->done_bytes += x->obj->size;
	e->n_done_files++;
}

static size_t count_state(const struct engine *e, enum xstate s)
{
	size_t i, n = 0;

	for (i = 0; i < e->n; i++)
		n += e->x[i].state == s;
	return n;
}

static void run_engine(struct engine *e)
{
	int running;

	e->multi = curl_multi_init();
	if (!e->multi)
		abort();
	for (;;) {
		double t = now(), wake = t + 0.1;
		CURLMsg *msg;
		int left;
		size_t i, pending = 0;

		if (e->fatal)
			break;
		for (;;) { /* every batch that is due */
			size_t before = count_state(e, X_NEED_BATCH);
			run_batch(e);
			if (e->fatal || count_state(e, X_NEED_BATCH) == before)
				break;
		}
		if (e->fatal)
			break;
		t = now();
		for (i = 0; i < e->n; i++) {
			struct xfer *x = &e->x[i];
			if (x->state == X_READY && x->not_before <= t && e->active < e->parallel)
				start_xfer(e, x);
			if (x->state != X_DONE && x->state != X_FAILED)
				pending++;
			if ((x->state == X_READY || x->state == X_NEED_BATCH) && x->not_before > t &&
			    x->not_before < wake)
				wake = x->not_before;
		}
		if (!pending)
			break;
		curl_multi_perform(e->multi, &running);
		while ((msg = curl_multi_info_read(e->multi, &left))) {
			struct xfer *x = NULL;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
			finish_xfer(e, x, msg->data.result);
		}
		draw_progress(e, 0);
		if (e->active) {
			int ms = (int)((wake - now()) * 1000);
			curl_multi_poll(e->multi, NULL, 0, ms < 1 ? 1 : ms > 100 ? 100 : ms, NULL);
		} else if (wake > now()) {
			usleep((useconds_t)((wake - now()) * 1e6));
		}
	}
	/* A fatal error stops everything still in flight. */
	if (e->fatal) {
		size_t i;
		for (i = 0; i < e->n; i++) {
			struct xfer *x = &e->x[i];
			if (x->state == X_ACTIVE) {
				curl_multi_remove_handle(e->multi, x->easy);
				curl_easy_cleanup(x->easy);
				x->easy = NULL;
				curl_slist_free_all(x->req_headers);
				x->req_headers = NULL;
				if (e->upload) {
					close(x->fd);
					x->fd = -1;
				} else {
					close_partial(x);
				}
			}
			if (x->state != X_DONE && x->state != X_FAILED)
				xfer_set_failed(e, x);
		}
	}
	if (e->drawn)
		draw_progress(e, 1);
	curl_multi_cleanup(e->multi);
	e->multi = NULL;
}

/* The failures as one message: "N of M objects failed:" and one line each. */
static int collect_errors(struct engine *e, size_t total, gm_error *err)
{
	gm_buf b = GM_BUF_INIT;
	size_t i, shown = 0, failed = 0;
	int code = 0;

	if (e->fatal) {
		if (err)
			*err = e->fatal_err;
		return e->fatal_err.code;
	}
	for (i = 0; i < e->n; i++)
		if (e->x[i].state == X_FAILED) {
			failed++;
			if (!code)
				code = e->x[i].err.code ? e->x[i].err.code : GM_EIO;
		}
	if (!failed)
		return 0;
	gm_buf_addf(&b, "%zu of %zu LFS object%s could not be %s", failed, total, total == 1 ? "" : "s",
		    e->upload ? "uploaded" : "downloaded");
	for (i = 0; i < e->n; i++) {
		struct xfer *x = &e->x[i];
		gm_buf line = GM_BUF_INIT;

		if (x->state != X_FAILED)
			continue;
		gm_buf_addf(&line, "\n  %s: %s", obj_name(x->obj), x->err.msg);
		if (b.len + line.len > GM_ERROR_MSG_MAX - 40) {
			gm_buf_release(&line);
			break;
		}
		gm_buf_add(&b, line.buf, line.len);
		gm_buf_release(&line);
		shown++;
	}
	if (shown < failed)
		gm_buf_addf(&b, "\n  ... and %zu more", failed - shown);
	gm_error_set(err, code, "%s", b.buf);
	gm_buf_release(&b);
	return code;
}

static int engine_run(const gm_lfs_store *s, const gm_lfs_remote *remote, const gm_lfs_object_list *list,
		      const gm_lfs_transfer_opts *opts, gm_lfs_transfer_stats *stats, int upload, gm_error *err)
{
	static const gm_lfs_transfer_opts defaults = GM_LFS_TRANSFER_OPTS_INIT;
	gm_lfs_transfer_stats local;
	struct engine e;
	double t0 = now();
	size_t i;
	int ret;

	if (!opts)
		opts = &defaults;
	if (!stats)
		stats = &local;
	memset(stats, 0, sizeof(*stats));
	if (!remote || !remote->url || !*remote->url)
		return gm_error_set(err, GM_EINVAL, "no LFS endpoint to %s", upload ? "upload to" : "download from");
	for (i = 0; i < list->n; i++)
		if (!gm_lfs_oid_valid(list->items[i].oid))
			return gm_error_set(err, GM_EINVAL, "'%s' is not a sha256 object id", list->items[i].oid);
	ret = gm_http_global_init(err);
	if (ret)
		return ret;
	memset(&e, 0, sizeof(e));
	e.s = s;
	e.remote = remote;
	e.upload = upload;
	e.parallel = opts->parallel > 0 ? opts->parallel : 4;
	e.max_retries = opts->max_retries == 0 ? 5 : opts->max_retries < 0 ? 0 : opts->max_retries;
	e.retry_delay_ms = opts->retry_delay_ms > 0 ? opts->retry_delay_ms : 500;
	e.progress = opts->progress == GM_LFS_PROGRESS_ALWAYS ||
		     (opts->progress == GM_LFS_PROGRESS_AUTO && isatty(2) && gm_log_level() > GM_LOG_QUIET);
	e.stats = stats;
	e.x = gm_xcalloc(list->n ? list->n : 1, sizeof(*e.x));
	for (i = 0; i < list->n; i++) {
		const gm_lfs_object *o = &list->items[i];
		struct xfer *x;

		if (upload) {
			if (!gm_lfs_store_has(s, o->oid, o->size)) {
				free(e.x);
				return gm_error_set(err, GM_ENOENT, "%s: LFS object %s is not in %s, so it cannot be "
						    "uploaded (fetch it first)", obj_name(o), o->oid, s->objects);
			}
		} else {
			if (gm_lfs_store_has(s, o->oid, o->size)) {
				stats->n_present++;
				continue;
			}
			if (opts->hf_cache) {
				char *blob = gm_hub_cache_find_blob(opts->hf_cache, o->oid);
				gm_error ierr = GM_ERROR_INIT;

				if (blob && gm_lfs_store_import(s, blob, o->oid, o->size, &ierr) == 0) {
					gm_info("LFS: %s taken from the huggingface_hub cache (%s)", obj_name(o), blob);
					stats->n_reused++;
					free(blob);
					continue;
				}
				if (blob)
					gm_warn("not reusing %s from the huggingface_hub cache: %s", blob, ierr.msg);
				free(blob);
			}
		}
		x = &e.x[e.n++];
		x->obj = o;
		x->fd = -1;
		x->state = X_NEED_BATCH;
		gm_buf_init(&x->errbody);
		e.total_bytes += o->size;
	}
	e.start = now();
	if (e.n)
		run_engine(&e);
	ret = collect_errors(&e, e.n, err);
	for (i = 0; i < e.n; i++) {
		free(e.x[i].href);
		curl_slist_free_all(e.x[i].headers);
		free(e.x[i].verify_href);
		curl_slist_free_all(e.x[i].verify_headers);
		gm_buf_release(&e.x[i].errbody);
	}
	free(e.x);
	stats->seconds = now() - t0;
	return ret;
}

int gm_lfs_download(const gm_lfs_store *s, const gm_lfs_remote *remote, const gm_lfs_object_list *list,
		    const gm_lfs_transfer_opts *opts, gm_lfs_transfer_stats *stats, gm_error *err)
{
	return engine_run(s, remote, list, opts, stats, 0, err);
}

int gm_lfs_upload(const gm_lfs_store *s, const gm_lfs_remote *remote, const gm_lfs_object_list *list,
		  const gm_lfs_transfer_opts *opts, gm_lfs_transfer_stats *stats, gm_error *err)
{
	return engine_run(s, remote, list, opts, stats, 1, err);
}

int gm_lfs_batch_answer(const char *body, size_t len, const gm_lfs_object_list *list, int upload,
			size_t *n_ready, gm_error *err)
{
	gm_lfs_transfer_stats stats;
	struct engine e;
	struct xfer **group;
	gm_buf b = GM_BUF_INIT;
	size_t i, ready = 0;
	int ret;

	memset(&e, 0, sizeof(e));
	memset(&stats, 0, sizeof(stats));
	e.upload = upload;
	e.max_retries = 0; /* a retryable answer fails at once: there is no second request here */
	e.retry_delay_ms = 500;
	e.stats = &stats;
	e.n = list->n;
	e.x = gm_xcalloc(list->n ? list->n : 1, sizeof(*e.x));
	group = gm_xcalloc(list->n ? list->n : 1, sizeof(*group));
	for (i = 0; i < list->n; i++) {
		e.x[i].obj = &list->items[i];
		e.x[i].fd = -1;
		e.x[i].state = X_NEED_BATCH;
		gm_buf_init(&e.x[i].errbody);
		e.total_bytes += list->items[i].size;
		group[i] = &e.x[i];
	}
	gm_buf_add(&b, body, len);
	take_batch(&e, group, list->n, &b, "batch answer", now());
	ret = collect_errors(&e, e.n, err);
	for (i = 0; i < e.n; i++) {
		ready += e.x[i].state == X_READY;
		free(e.x[i].href);
		curl_slist_free_all(e.x[i].headers);
		free(e.x[i].verify_href);
		curl_slist_free_all(e.x[i].verify_headers);
		gm_buf_release(&e.x[i].errbody);
	}
	if (n_ready)
		*n_ready = ready;
	free(group);
	free(e.x);
	gm_buf_release(&b);
	return ret;
}

/* ------------------------------------------------------------ endpoints */

char *gm_lfs_endpoint_for_url(const char *git_url)
{
	gm_buf b = GM_BUF_INIT;
	size_t n;

	gm_buf_adds(&b, git_url);
	while (b.len && b.buf[b.len - 1] == '/')
		b.buf[--b.len] = '\0';
	n = b.len;
	if (n < 4 || strcmp(b.buf + n - 4, ".git"))
		gm_buf_adds(&b, ".git");
	gm_buf_adds(&b, "/info/lfs");
	return gm_buf_detach(&b, NULL);
}
