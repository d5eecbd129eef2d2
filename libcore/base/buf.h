/*
 * buf.h - growable NUL-terminated byte buffers (git's strbuf, smaller).
 *
 * A gm_buf owns its memory; gm_buf_release frees it and leaves an empty,
 * reusable buffer.  buf->buf is always NUL-terminated, even when empty.
 * Allocation failure aborts the process (as git's xmalloc does): callers
 * cannot do anything useful without memory for a path or a message.
 */
#ifndef GM_BUF_H
#define GM_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gm_buf {
	char *buf;
	size_t len;
	size_t alloc;
} gm_buf;

extern char gm_buf_empty[];
#define GM_BUF_INIT { gm_buf_empty, 0, 0 }

void gm_buf_init(gm_buf *b);
void gm_buf_release(gm_buf *b);
/* Returns the string and leaves b empty; the caller frees the result. */
char *gm_buf_detach(gm_buf *b, size_t *len);
void gm_buf_grow(gm_buf *b, size_t extra);
void gm_buf_reset(gm_buf *b);
void gm_buf_add(gm_buf *b, const void *data, size_t len);
void gm_buf_adds(gm_buf *b, const char *s);
void gm_buf_addch(gm_buf *b, int c);
void gm_buf_addf(gm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void gm_buf_vaddf(gm_buf *b, const char *fmt, va_list ap);

/* Human-readable byte count ("1.2 GiB") appended to b. */
void gm_buf_add_human_bytes(gm_buf *b, unsigned long long bytes);
/* Human-readable element count, one decimal and a K/M/B/T suffix ("596.0M");
 * counts under 1000 stay exact ("640"). */
void gm_buf_add_human_count(gm_buf *b, unsigned long long n);

/* Allocation helpers that abort on failure. */
void *gm_xmalloc(size_t size);
void *gm_xcalloc(size_t n, size_t size);

/* Float buffers of the numeric code (forward, training, the CPU ops): n zeroed floats (at least one). */
static inline float *gm_falloc(size_t n)
{
	return gm_xcalloc(n ? n : 1, sizeof(float));
}

/* n floats rounded up to a 64-byte multiple, so buffers carved one after another stay aligned. */
static inline size_t gm_fround(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

static inline int64_t gm_imin64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

static inline int64_t gm_imax64(int64_t a, int64_t b)
{
	return a > b ? a : b;
}
void *gm_xrealloc(void *ptr, size_t size);
char *gm_xstrdup(const char *s);

#endif
