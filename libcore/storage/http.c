/*
 * http.c - shared libcurl set-up.  See http.h.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <curl/curl.h>

#include "base/cmd.h"
#include "storage/http.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static CURLcode init_result;

static void do_init(void)
{
	init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int gm_http_global_init(gm_error *err)
{
	pthread_once(&init_once, do_init);
	if (init_result != CURLE_OK)
		return gm_error_set(err, GM_ERROR, "cannot initialise libcurl: %s",
				    curl_easy_strerror(init_result));
	return 0;
}

const char *gm_http_user_agent(void)
{
	static char ua[64];

	if (!ua[0])
		snprintf(ua, sizeof(ua), "git-model/%s", gm_version());
	return ua;
}

static size_t write_cb(char *data, size_t size, size_t n, void *ctx)
{
	gm_buf_add(ctx, data, size * n);
	return size * n;
}

int gm_http_get(const char *url, const char *token, gm_buf *body, long *status, gm_error *err)
{
	struct curl_slist *headers = NULL;
	gm_buf auth = GM_BUF_INIT;
	CURLcode rc;
	CURL *c;
	int ret;

	*status = 0;
	ret = gm_http_global_init(err);
	if (ret)
		return ret;
	c = curl_easy_init();
	if (!c)
		abort();
	if (token) {
		gm_buf_addf(&auth, "Authorization: Bearer %s", token);
		headers = curl_slist_append(headers, auth.buf);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c, CURLOPT_USERAGENT, gm_http_user_agent());
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
	rc = curl_easy_perform(c);
	if (rc != CURLE_OK)
		ret = gm_error_set(err, GM_EIO, "%s: %s", url, curl_easy_strerror(rc));
	else
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	curl_easy_cleanup(c);
	curl_slist_free_all(headers);
	gm_buf_release(&auth);
	return ret;
}
