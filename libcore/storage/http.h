/*
 * http.h - the small part of libcurl handling that hub.c and the LFS
 * transfers share: one-time global initialisation, the User-Agent, and a
 * plain GET into a buffer.
 */
#ifndef GM_HTTP_H
#define GM_HTTP_H

#include "base/buf.h"
#include "base/error.h"

/* curl_global_init once per process (thread-safe); 0 or GM_ERROR. */
int gm_http_global_init(gm_error *err);

/* "git-model/VERSION" */
const char *gm_http_user_agent(void);

/*
 * GETs url (following redirects) into body, with "Authorization: Bearer
 * token" when token is not NULL.  *status gets the final HTTP status;
 * only transport failures (no connection, TLS, timeout) are errors
 * (GM_EIO naming the URL); the caller judges the status.
 */
int gm_http_get(const char *url, const char *token, gm_buf *body, long *status, gm_error *err);

#endif
