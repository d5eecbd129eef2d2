/* webui.c - the server's web page and stats stream (see webui.h). */
#include "serve/webui.h"

#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>

#include "base/asset.h"
#include "base/buf.h"

/* GM_WEB_DIR: the absolute source path of libcore/serve/web (set by make). */
GM_INCBIN_PATH(gm_web_index, GM_WEB_DIR "/index.html");
GM_INCBIN_PATH(gm_web_app_js, GM_WEB_DIR "/app.js");
GM_INCBIN_PATH(gm_web_app_css, GM_WEB_DIR "/app.css");
GM_INCBIN_PATH(gm_web_favicon, GM_WEB_DIR "/favicon.svg");

/*
 * Nothing but the server itself: no inline script or style (an injected
 * string cannot run), no frames (no clickjacking), no plugins, no forms
 * posted elsewhere.  img-src data: is for nothing today; none is needed.
 */
#define CSP "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " \
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static const struct page_file {
	const char *path, *type;
	const char *start, *end;
} files[] = {
	{ "/", "text/html; charset=utf-8", gm_web_index_start, gm_web_index_end },
	{ "/index.html", "text/html; charset=utf-8", gm_web_index_start, gm_web_index_end },
	{ "/app.js", "text/javascript; charset=utf-8", gm_web_app_js_start, gm_web_app_js_end },
	{ "/app.css", "text/css; charset=utf-8", gm_web_app_css_start, gm_web_app_css_end },
	{ "/favicon.svg", "image/svg+xml", gm_web_favicon_start, gm_web_favicon_end },
};

static const struct page_file *find(const char *path)
{
	size_t i;

	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		if (!strcmp(files[i].path, path))
			return &files[i];
	return NULL;
}

int gm_webui_is_page(const char *path)
{
	return find(path) != NULL;
}

static void common_headers(struct MHD_Response *r)
{
	MHD_add_response_header(r, "Content-Security-Policy", CSP);
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(r, "X-Frame-Options", "DENY");
}

struct MHD_Response *gm_webui_page(const char *path)
{
	const struct page_file *f = find(path);
	struct MHD_Response *r;

	if (!f)
		return NULL;
	/* the bytes are in .rodata for the life of the process: no copy */
	r = MHD_create_response_from_buffer((size_t)(f->end - f->start), (void *)f->start, MHD_RESPMEM_PERSISTENT);
	if (!r)
		return NULL;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, f->type);
	/* revalidated each time: a new server binary serves its own page */
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	common_headers(r);
	return r;
}

struct MHD_Response *gm_webui_stats_json(gm_stats *st)
{
	gm_buf b = GM_BUF_INIT;
	struct MHD_Response *r;

	gm_stats_json(st, 1, &b);
	r = MHD_create_response_from_buffer(b.len, b.buf, MHD_RESPMEM_MUST_COPY);
	gm_buf_release(&b);
	if (!r)
		return NULL;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	return r;
}

/* One stats stream: the event being sent, and the last sample sent. */
struct stream {
	gm_stats *st;
	uint64_t seq;
	int sent;                  /* events sent: the first has the history */
	gm_buf ev;
	size_t off;
};

/*
 * libmicrohttpd asks for more of the response (on the connection's own
 * thread): the rest of the current event, or the next one once a sample
 * is taken.  Waits at most a second at a time, so a stopping server is
 * never held; a client that left makes the next write fail, and the
 * response is freed.
 */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stream *s = cls;
	size_t n;

	(void)pos;
	while (s->off == s->ev.len) {
		int w = gm_stats_wait(s->st, &s->seq, 1000);

		if (w < 0)
			return MHD_CONTENT_READER_END_OF_STREAM;
		gm_buf_reset(&s->ev);
		s->off = 0;
		if (w == 0) {
			/* no sample for a second (not expected): a comment keeps proxies from timing out */
			gm_buf_adds(&s->ev, ": waiting\n\n");
			break;
		}
		gm_buf_adds(&s->ev, "event: stats\ndata: ");
		gm_stats_json(s->st, s->sent == 0, &s->ev);
		gm_buf_adds(&s->ev, "\n\n");
		s->sent++;
	}
	n = s->ev.len - s->off < max ? s->ev.len - s->off : max;
	memcpy(buf, s->ev.buf + s->off, n);
	s->off += n;
	return (ssize_t)n;
}

static void stream_free(void *cls)
{
	struct stream *s = cls;

	gm_stats_stream_end(s->st);
	gm_buf_release(&s->ev);
	free(s);
}

struct MHD_Response *gm_webui_stats_stream(gm_stats *st)
{
	struct stream *s;
	struct MHD_Response *r;

	if (gm_stats_stream_begin(st))
		return NULL;
	s = gm_xcalloc(1, sizeof(*s));
	s->st = st;
	gm_buf_init(&s->ev);
	/* the first event is the latest sample, at once: seq one behind it (0: wait for the first) */
	s->seq = gm_stats_seq(st);
	if (s->seq)
		s->seq--;
	r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, s, stream_free);
	if (!r) {
		stream_free(s);
		return NULL;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	/* nginx and the like would hold the events back otherwise */
	MHD_add_response_header(r, "X-Accel-Buffering", "no");
	return r;
}
