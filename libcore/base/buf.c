/* buf.c - growable byte buffers and aborting allocators. */
#include "base/buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char gm_buf_empty[1];

static void oom(size_t size)
{
	fprintf(stderr, "fatal: out of memory allocating %zu bytes\n", size);
	abort();
}

void *gm_xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);
	if (!p)
		oom(size);
	return p;
}

void *gm_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		oom(n * size);
	return p;
}

void *gm_xrealloc(void *ptr, size_t size)
{
	void *p = realloc(ptr, size ? size : 1);
	if (!p)
		oom(size);
	return p;
}

char *gm_xstrdup(const char *s)
{
	char *p = strdup(s);
	if (!p)
		oom(strlen(s) + 1);
	return p;
}

void gm_buf_init(gm_buf *b)
{
	b->buf = gm_buf_empty;
	b->len = 0;
	b->alloc = 0;
}

void gm_buf_release(gm_buf *b)
{
	if (b->alloc)
		free(b->buf);
	gm_buf_init(b);
}

char *gm_buf_detach(gm_buf *b, size_t *len)
{
	char *s;

	if (!b->alloc)
		gm_buf_grow(b, 0);
	s = b->buf;
	if (len)
		*len = b->len;
	gm_buf_init(b);
	return s;
}

void gm_buf_grow(gm_buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;

	if (need < b->len)
		oom(SIZE_MAX);
	if (need <= b->alloc)
		return;
	if (!b->alloc)
		b->buf = NULL;
	b->alloc = b->alloc * 3 / 2 > need ? b->alloc * 3 / 2 : need + 16;
	b->buf = gm_xrealloc(b->buf, b->alloc);
	if (!b->len)
		b->buf[0] = '\0';
}

void gm_buf_reset(gm_buf *b)
{
	b->len = 0;
	if (b->alloc)
		b->buf[0] = '\0';
}

void gm_buf_add(gm_buf *b, const void *data, size_t len)
{
	gm_buf_grow(b, len);
	memcpy(b->buf + b->len, data, len);
	b->len += len;
	b->buf[b->len] = '\0';
}

void gm_buf_adds(gm_buf *b, const char *s)
{
	gm_buf_add(b, s, strlen(s));
}

void gm_buf_addch(gm_buf *b, int c)
{
	char ch = (char)c;
	gm_buf_add(b, &ch, 1);
}

void gm_buf_vaddf(gm_buf *b, const char *fmt, va_list ap)
{
	va_list cp;
	int n;

	va_copy(cp, ap);
	n = vsnprintf(NULL, 0, fmt, cp);
	va_end(cp);
	if (n < 0)
		return;
	gm_buf_grow(b, (size_t)n);
	vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
}

void gm_buf_addf(gm_buf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	gm_buf_vaddf(b, fmt, ap);
	va_end(ap);
}

void gm_buf_add_human_bytes(gm_buf *b, unsigned long long bytes)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)bytes;
	int u = -1;

	if (bytes < 1024) {
		gm_buf_addf(b, "%llu bytes", bytes);
		return;
	}
	while (v >= 1024.0 && u < 4) {
		v /= 1024.0;
		u++;
	}
	gm_buf_addf(b, v < 10.0 ? "%.2f %s" : v < 100.0 ? "%.1f %s" : "%.0f %s", v, units[u]);
}

void gm_buf_add_human_count(gm_buf *b, unsigned long long n)
{
	static const char units[] = "KMBT";
	double v = (double)n;
	int u = -1;

	if (n < 1000) {
		gm_buf_addf(b, "%llu", n);
		return;
	}
	/* 999.95 rounds to "1000.0" at one decimal: move up a unit first. */
	while (u < 3 && v >= 999.95) {
		v /= 1000.0;
		u++;
	}
	gm_buf_addf(b, "%.1f%c", v, units[u]);
}
