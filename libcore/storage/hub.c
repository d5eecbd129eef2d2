/*
 * hub.c - Hugging Face Hub names, endpoint, token, revision lookup and the
 * huggingface_hub cache.  See hub.h.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "base/buf.h"
#include "base/fs.h"
#include "storage/http.h"
#include "storage/hub.h"
#include "base/json.h"

int gm_hub_is_source(const char *source)
{
	return source && !strncmp(source, "hf:", 3);
}

/* Hub repository and organization names: [A-Za-z0-9._-], not starting with
 * "." or "-", no "..", at most 96 characters. */
static int valid_name(const char *s, size_t len)
{
	size_t i;

	if (!len || len > 96 || s[0] == '.' || s[0] == '-')
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!isalnum(c) && c != '.' && c != '-' && c != '_')
			return 0;
		if (c == '.' && i + 1 < len && s[i + 1] == '.')
			return 0;
	}
	return 1;
}

/* A revision as it may appear in a URL path: a branch, tag or commit. */
static int valid_rev(const char *s)
{
	size_t i, len = strlen(s);

	if (!len || len > 255 || s[0] == '-' || s[0] == '/' || s[len - 1] == '/' || strstr(s, ".."))
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c == 0x7f || c == '\\' || c == '?' || c == '#' || c == '%' || c == '~' ||
		    c == '^' || c == ':' || c == '[' || c == '*')
			return 0;
	}
	return 1;
}

int gm_hub_parse(const char *source, gm_hub_ref *out, gm_error *err)
{
	const char *p, *slash, *at;
	size_t org_len, name_len;

	memset(out, 0, sizeof(*out));
	if (!gm_hub_is_source(source))
		return gm_error_set(err, GM_EINVAL, "'%s' is not a Hugging Face name: expected hf:ORG/NAME[@REV]",
				    source ? source : "");
	p = source + 3;
	slash = strchr(p, '/');
	at = strchr(p, '@');
	if (!slash || (at && at < slash))
		return gm_error_set(err, GM_EINVAL, "'%s': expected hf:ORG/NAME[@REV] (e.g. hf:Qwen/Qwen3-0.6B)",
				    source);
	org_len = (size_t)(slash - p);
	name_len = at ? (size_t)(at - slash - 1) : strlen(slash + 1);
	if (!valid_name(p, org_len))
		return gm_error_set(err, GM_EINVAL, "'%s': invalid organization name '%.*s' (letters, digits, "
				    "'-', '_' and '.' only)", source, (int)org_len, p);
	if (!valid_name(slash + 1, name_len))
		return gm_error_set(err, GM_EINVAL, "'%s': invalid model name '%.*s' (letters, digits, "
				    "'-', '_' and '.' only)", source, (int)name_len, slash + 1);
	if (at && !valid_rev(at + 1))
		return gm_error_set(err, GM_EINVAL, "'%s': invalid revision '%s' (a branch, tag or commit id)",
				    source, at + 1);
	out->org = strndup(p, org_len);
	out->name = strndup(slash + 1, name_len);
	if (!out->org || !out->name)
		abort();
	out->rev = at ? gm_xstrdup(at + 1) : NULL;
	return 0;
}

void gm_hub_ref_release(gm_hub_ref *r)
{
	free(r->org);
	free(r->name);
	free(r->rev);
	memset(r, 0, sizeof(*r));
}

char *gm_hub_endpoint(void)
{
	const char *e = getenv("HF_ENDPOINT");
	gm_buf b = GM_BUF_INIT;

	gm_buf_adds(&b, e && *e ? e : GM_HUB_DEFAULT_ENDPOINT);
	while (b.len && b.buf[b.len - 1] == '/')
		b.buf[--b.len] = '\0';
	return gm_buf_detach(&b, NULL);
}

/* $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
static char *hf_home(void)
{
	const char *e = getenv("HF_HOME"), *home;
	gm_buf b = GM_BUF_INIT;

	if (e && *e)
		return gm_xstrdup(e);
	e = getenv("XDG_CACHE_HOME");
	if (e && *e) {
		gm_buf_addf(&b, "%s/huggingface", e);
	} else {
		home = getenv("HOME");
		gm_buf_addf(&b, "%s/.cache/huggingface", home && *home ? home : ".");
	}
	return gm_buf_detach(&b, NULL);
}

int gm_hub_token(char **out, gm_error *err)
{
	const char *e = getenv("HF_TOKEN");
	char *home, *path;
	gm_buf b = GM_BUF_INIT;
	size_t n;
	int ret;

	*out = NULL;
	if (e && *e) {
		*out = gm_xstrdup(e);
		return 0;
	}
	e = getenv("HF_TOKEN_PATH"); /* huggingface_hub's override of the file */
	if (e && *e) {
		path = gm_xstrdup(e);
	} else {
		home = hf_home();
		path = gm_path_join(home, "token");
		free(home);
	}
	if (!gm_is_file(path)) {
		free(path);
		return 0;
	}
	ret = gm_read_file(path, &b, err);
	if (ret) {
		gm_error_prefix(err, "cannot read the Hugging Face token");
		free(path);
		gm_buf_release(&b);
		return ret;
	}
	free(path);
	n = strcspn(b.buf, "\r\n");
	while (n && isspace((unsigned char)b.buf[n - 1]))
		n--;
	b.buf[n] = '\0';
	if (n)
		*out = gm_xstrdup(b.buf);
	gm_buf_release(&b);
	return 0;
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

int gm_hub_token_for_url(const char *url, char **out, gm_error *err)
{
	char *ep = gm_hub_endpoint();
	size_t a = origin_len(ep), b = origin_len(url);
	int same = a && a == b && !strncasecmp(ep, url, a);

	free(ep);
	*out = NULL;
	return same ? gm_hub_token(out, err) : 0;
}

char *gm_hub_git_url(const gm_hub_ref *r)
{
	char *ep = gm_hub_endpoint();
	gm_buf b = GM_BUF_INIT;

	gm_buf_addf(&b, "%s/%s/%s", ep, r->org, r->name);
	free(ep);
	return gm_buf_detach(&b, NULL);
}

char *gm_hub_lfs_url(const gm_hub_ref *r)
{
	char *ep = gm_hub_endpoint();
	gm_buf b = GM_BUF_INIT;

	gm_buf_addf(&b, "%s/%s/%s.git/info/lfs", ep, r->org, r->name);
	free(ep);
	return gm_buf_detach(&b, NULL);
}

int gm_hub_resolve_revision(const gm_hub_ref *r, char **sha, gm_error *err)
{
	char *ep = gm_hub_endpoint(), *token = NULL, *rev_esc;
	gm_buf url = GM_BUF_INIT, body = GM_BUF_INIT;
	json_object *o = NULL;
	const char *s;
	long status = 0;
	int ret;
	CURL *c;

	*sha = NULL;
	ret = gm_hub_token(&token, err);
	if (ret) {
		free(ep);
		return ret;
	}
	c = curl_easy_init();
	if (!c)
		abort();
	/* A branch name may contain "/": escape it as one path segment. */
	rev_esc = curl_easy_escape(c, r->rev ? r->rev : "main", 0);
	gm_buf_addf(&url, "%s/api/models/%s/%s/revision/%s", ep, r->org, r->name, rev_esc);
	curl_free(rev_esc);
	curl_easy_cleanup(c);
	ret = gm_http_get(url.buf, token, &body, &status, err);
	if (ret)
		goto out;
	if (status == 401 || status == 403) {
		ret = gm_error_set(err, GM_EINVAL, "hf:%s/%s: the Hub answered %ld (not authorized): %s", r->org,
				   r->name, status, token ? "check that HF_TOKEN (or $HF_HOME/token) grants access"
				   : "set HF_TOKEN (or log in with huggingface-cli) for private or gated models");
		goto out;
	}
	if (status == 404) {
		ret = gm_error_set(err, GM_ENOENT, "hf:%s/%s: no such model or revision '%s' on %s", r->org,
				   r->name, r->rev ? r->rev : "main", ep);
		goto out;
	}
	if (status != 200) {
		ret = gm_error_set(err, GM_EIO, "%s: HTTP %ld", url.buf, status);
		goto out;
	}
	ret = gm_json_parse(body.buf, body.len, url.buf, &o, err);
	if (ret)
		goto out;
	ret = gm_json_get_string(o, "sha", url.buf, &s, err);
	if (ret)
		goto out;
	if (strlen(s) != 40 || strspn(s, "0123456789abcdef") != 40) {
		ret = gm_error_set(err, GM_EFORMAT, "%s: 'sha' is not a commit id: '%.80s'", url.buf, s);
		goto out;
	}
	*sha = gm_xstrdup(s);
out:
	if (o)
		json_object_put(o);
	free(ep);
	free(token);
	gm_buf_release(&url);
	gm_buf_release(&body);
	return ret;
}

char *gm_hub_cache_dir(void)
{
	const char *e = getenv("HF_HUB_CACHE");
	char *home, *p;

	if (e && *e)
		return gm_xstrdup(e);
	home = hf_home();
	p = gm_path_join(home, "hub");
	free(home);
	return p;
}

char *gm_hub_cache_repo_dir(const char *cache, const char *org, const char *name)
{
	gm_buf b = GM_BUF_INIT;

	gm_buf_addf(&b, "%s/models--%s--%s", cache, org, name);
	return gm_buf_detach(&b, NULL);
}

char *gm_hub_cache_find_blob(const char *cache, const char *oid)
{
	DIR *d;
	struct dirent *de;
	gm_buf b = GM_BUF_INIT;
	struct stat st;

	if (!cache || strlen(oid) != 64 || strspn(oid, "0123456789abcdef") != 64)
		return NULL;
	d = opendir(cache);
	if (!d)
		return NULL;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, "models--", 8))
			continue;
		gm_buf_reset(&b);
		gm_buf_addf(&b, "%s/%s/blobs/%s", cache, de->d_name, oid);
		if (stat(b.buf, &st) == 0 && S_ISREG(st.st_mode)) {
			closedir(d);
			return gm_buf_detach(&b, NULL);
		}
	}
	closedir(d);
	gm_buf_release(&b);
	return NULL;
}
