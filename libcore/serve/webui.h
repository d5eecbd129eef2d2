/*
 * webui.h - the server's web page (chat and dashboard) and its stats
 * stream, as libmicrohttpd responses for serve.c to queue.
 *
 * The page is the files written in libcore/serve/web/ (index.html,
 * app.js, app.css, favicon.svg: no library, nothing fetched from elsewhere) compiled
 * into the library (.incbin), so an installed git-infer serves it with no
 * data files.  Each response carries a strict Content-Security-Policy
 * (scripts, styles and connections from the server itself only; no
 * inline script or style, no frames, no forms) and nosniff.
 *
 * The stats stream is text/event-stream: an "event: stats" whose data is
 * gm_stats_json (the first with its history) each time the stats thread
 * takes a sample (once a second), until the client leaves or the stats
 * stop (the server's shutdown).
 */
#ifndef GM_WEBUI_H
#define GM_WEBUI_H

#include "serve/stats.h"

struct MHD_Response;

/* Is PATH one of the page's ("/", "/index.html", "/app.js", "/app.css", "/favicon.svg")? */
int gm_webui_is_page(const char *path);

/* The response for GET PATH of the page; NULL when it is not one (or out of memory). */
struct MHD_Response *gm_webui_page(const char *path);

/*
 * A stats stream over st; NULL when GM_STATS_MAX_STREAMS run already
 * (429) or out of memory.  The response owns a stream slot of st until
 * libmicrohttpd frees it; st must outlive the HTTP daemon.
 */
struct MHD_Response *gm_webui_stats_stream(gm_stats *st);

/* GET /v1/stats: the snapshot with its history, as JSON. */
struct MHD_Response *gm_webui_stats_json(gm_stats *st);

#endif
