/*
 * gguf-write.c - the GGUF writer (see gguf.h).
 *
 * Keys are kept serialized (key, type, value) as they are set; tensors as
 * borrowed views.  The header is assembled in memory, then the data is
 * streamed after it, each tensor padded with zeros to the alignment.
 */
#include "formats/gguf.h"

#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/fs.h"

struct wkv {
	char *key;
	gm_buf bytes; /* type and value, as in the file */
};

struct wtensor {
	char *name;
	uint32_t type;
	int ndim;
	uint64_t ne[GM_GGUF_MAX_DIMS];
	const void *data;
	uint64_t nbytes;
};

struct gm_gguf_writer {
	uint32_t alignment;
	struct wkv *kvs;
	size_t nkv;
	struct wtensor *tensors;
	size_t nt;
};

static void put_le(gm_buf *b, uint64_t v, unsigned n)
{
	unsigned char c[8];
	unsigned i;

	for (i = 0; i < n; i++)
		c[i] = (unsigned char)(v >> (8 * i));
	gm_buf_add(b, c, n);
}

static void put_str(gm_buf *b, const char *s, size_t len)
{
	put_le(b, len, 8);
	gm_buf_add(b, s, len);
}

gm_gguf_writer *gm_gguf_writer_new(uint32_t alignment)
{
	gm_gguf_writer *w = gm_xcalloc(1, sizeof(*w));

	w->alignment = alignment ? alignment : GM_GGUF_DEFAULT_ALIGNMENT;
	return w;
}

void gm_gguf_writer_free(gm_gguf_writer *w)
{
	size_t i;

	if (!w)
		return;
	for (i = 0; i < w->nkv; i++) {
		free(w->kvs[i].key);
		gm_buf_release(&w->kvs[i].bytes);
	}
	for (i = 0; i < w->nt; i++)
		free(w->tensors[i].name);
	free(w->kvs);
	free(w->tensors);
	free(w);
}

/* The slot of key, emptied (a new one at the end when absent). */
static gm_buf *slot(gm_gguf_writer *w, const char *key)
{
	size_t i;

	for (i = 0; i < w->nkv; i++)
		if (!strcmp(w->kvs[i].key, key)) {
			gm_buf_reset(&w->kvs[i].bytes);
			return &w->kvs[i].bytes;
		}
	w->kvs = gm_xrealloc(w->kvs, (w->nkv + 1) * sizeof(*w->kvs));
	w->kvs[w->nkv].key = gm_xstrdup(key);
	gm_buf_init(&w->kvs[w->nkv].bytes);
	return &w->kvs[w->nkv++].bytes;
}

static int check_key(const char *key, gm_error *err)
{
	if (!key || !*key)
		return gm_error_set(err, GM_EINVAL, "a GGUF key must not be empty");
	return 0;
}

int gm_gguf_writer_set_string(gm_gguf_writer *w, const char *key, const char *value, gm_error *err)
{
	gm_buf *b;
	int ret;

	if ((ret = check_key(key, err)))
		return ret;
	b = slot(w, key);
	put_le(b, GM_GGUF_STRING, 4);
	put_str(b, value, strlen(value));
	return 0;
}

int gm_gguf_writer_set_int(gm_gguf_writer *w, const char *key, enum gm_gguf_vtype type, int64_t v, gm_error *err)
{
	static const struct {
		int64_t lo, hi;
		unsigned size;
	} range[] = {
		[GM_GGUF_UINT8] = { 0, 255, 1 },          [GM_GGUF_INT8] = { -128, 127, 1 },
		[GM_GGUF_UINT16] = { 0, 65535, 2 },       [GM_GGUF_INT16] = { -32768, 32767, 2 },
		[GM_GGUF_UINT32] = { 0, 4294967295LL, 4 }, [GM_GGUF_INT32] = { INT32_MIN, INT32_MAX, 4 },
		[GM_GGUF_BOOL] = { 0, 1, 1 },             [GM_GGUF_UINT64] = { 0, INT64_MAX, 8 },
		[GM_GGUF_INT64] = { INT64_MIN, INT64_MAX, 8 },
	};
	gm_buf *b;
	int ret;

	if ((ret = check_key(key, err)))
		return ret;
	if ((unsigned)type >= sizeof(range) / sizeof(range[0]) || !range[type].size)
		return gm_error_set(err, GM_EINVAL, "GGUF key '%s': %s is not an integer type", key,
				    gm_gguf_vtype_name((int)type));
	if (v < range[type].lo || v > range[type].hi)
		return gm_error_set(err, GM_EINVAL, "GGUF key '%s': %lld does not fit a %s", key, (long long)v,
				    gm_gguf_vtype_name((int)type));
	b = slot(w, key);
	put_le(b, (uint64_t)type, 4);
	put_le(b, (uint64_t)v, range[type].size);
	return 0;
}

int gm_gguf_writer_set_float(gm_gguf_writer *w, const char *key, enum gm_gguf_vtype type, double v,
			     gm_error *err)
{
	gm_buf *b;
	uint64_t u = 0;
	int ret;

	if ((ret = check_key(key, err)))
		return ret;
	if (type == GM_GGUF_FLOAT32) {
		float f = (float)v;
		uint32_t u32;
		memcpy(&u32, &f, 4);
		u = u32;
	} else if (type == GM_GGUF_FLOAT64) {
		memcpy(&u, &v, 8);
	} else {
		return gm_error_set(err, GM_EINVAL, "GGUF key '%s': %s is not a float type", key,
				    gm_gguf_vtype_name((int)type));
	}
	b = slot(w, key);
	put_le(b, (uint64_t)type, 4);
	put_le(b, u, type == GM_GGUF_FLOAT32 ? 4 : 8);
	return 0;
}

int gm_gguf_writer_set_strings(gm_gguf_writer *w, const char *key, const char *const *strs, const size_t *lens,
			       uint64_t n, gm_error *err)
{
	gm_buf *b;
	uint64_t i;
	int ret;

	if ((ret = check_key(key, err)))
		return ret;
	b = slot(w, key);
	put_le(b, GM_GGUF_ARRAY, 4);
	put_le(b, GM_GGUF_STRING, 4);
	put_le(b, n, 8);
	for (i = 0; i < n; i++)
		put_str(b, strs[i], lens[i]);
	return 0;
}

int gm_gguf_writer_set_int32s(gm_gguf_writer *w, const char *key, const int32_t *v, uint64_t n, gm_error *err)
{
	gm_buf *b;
	uint64_t i;
	int ret;

	if ((ret = check_key(key, err)))
		return ret;
	b = slot(w, key);
	put_le(b, GM_GGUF_ARRAY, 4);
	put_le(b, GM_GGUF_INT32, 4);
	put_le(b, n, 8);
	for (i = 0; i < n; i++)
		put_le(b, (uint32_t)v[i], 4);
	return 0;
}

int gm_gguf_writer_copy_kv(gm_gguf_writer *w, const gm_gguf *g, size_t i, gm_error *err)
{
	const char *key = gm_gguf_kv_key(g, i);
	const void *val;
	enum gm_gguf_vtype type = gm_gguf_kv_type(g, i);
	uint64_t count;
	uint32_t elem;
	size_t len;
	gm_buf *b;

	if (!key || gm_gguf_kv_raw(g, i, &val, &len, &elem, &count))
		return gm_error_set(err, GM_EINVAL, "%s: no key %zu", gm_gguf_path(g), i);
	b = slot(w, key);
	put_le(b, (uint64_t)type, 4);
	if (type == GM_GGUF_ARRAY) {
		put_le(b, elem, 4);
		put_le(b, count, 8);
	} else if (type == GM_GGUF_STRING) {
		put_le(b, len, 8);
	}
	gm_buf_add(b, val, len);
	return 0;
}

int gm_gguf_writer_add_tensor(gm_gguf_writer *w, const char *name, enum gm_dtype dtype, int ndim,
			      const int64_t *shape, const void *data, gm_error *err)
{
	int type = gm_gguf_ggml_type(dtype), i;
	struct wtensor *t;
	uint64_t numel = 1, nbytes;
	size_t k;
	int ret;

	if (!name || !*name)
		return gm_error_set(err, GM_EINVAL, "a GGUF tensor needs a name");
	for (k = 0; k < w->nt; k++)
		if (!strcmp(w->tensors[k].name, name))
			return gm_error_set(err, GM_EINVAL, "tensor '%s' added twice", name);
	if (type < 0)
		return gm_error_set(err, GM_EINVAL, "tensor '%s': GGUF has no type for %s", name,
				    gm_dtype_name(dtype));
	if (ndim < 1 || ndim > GM_GGUF_MAX_DIMS)
		return gm_error_set(err, GM_EINVAL, "tensor '%s': %d dimensions (1 to %d)", name, ndim,
				    GM_GGUF_MAX_DIMS);
	for (i = 0; i < ndim; i++) {
		if (shape[i] < 0 || (shape[i] && numel > UINT64_MAX / (uint64_t)shape[i]))
			return gm_error_set(err, GM_EINVAL, "tensor '%s': bad shape", name);
		numel *= (uint64_t)shape[i];
	}
	if (gm_dtype_is_block(dtype)) {
		unsigned be, bb;
		gm_dtype_block(dtype, &be, &bb);
		if (shape[ndim - 1] % be)
			return gm_error_set(err, GM_EINVAL, "tensor '%s': rows of %lld are not whole %s blocks", name,
					    (long long)shape[ndim - 1], gm_dtype_name(dtype));
	}
	if ((ret = gm_dtype_nbytes(dtype, numel, &nbytes, err)))
		return gm_error_prefix(err, "tensor '%s'", name);
	w->tensors = gm_xrealloc(w->tensors, (w->nt + 1) * sizeof(*w->tensors));
	t = &w->tensors[w->nt++];
	memset(t, 0, sizeof(*t));
	t->name = gm_xstrdup(name);
	t->type = (uint32_t)type;
	t->ndim = ndim;
	for (i = 0; i < ndim; i++)
		t->ne[i] = (uint64_t)shape[ndim - 1 - i];
	t->data = data;
	t->nbytes = nbytes;
	return 0;
}

static uint64_t pad_to(uint64_t n, uint32_t a)
{
	return (a - n % a) % a;
}

int gm_gguf_writer_write_to(gm_gguf_writer *w, gm_atomic_file *af, gm_error *err)
{
	static const unsigned char zeros[256];
	gm_buf h = GM_BUF_INIT;
	uint64_t off = 0;
	size_t i;
	int ret, k;

	if (w->alignment != GM_GGUF_DEFAULT_ALIGNMENT &&
	    (ret = gm_gguf_writer_set_int(w, "general.alignment", GM_GGUF_UINT32, w->alignment, err)))
		return ret;
	if (!w->alignment || (w->alignment & (w->alignment - 1)) || w->alignment > sizeof(zeros))
		return gm_error_set(err, GM_EINVAL, "GGUF alignment %u: a power of two up to %zu", w->alignment,
				    sizeof(zeros));
	gm_buf_add(&h, "GGUF", 4);
	put_le(&h, 3, 4);
	put_le(&h, w->nt, 8);
	put_le(&h, w->nkv, 8);
	for (i = 0; i < w->nkv; i++) {
		put_str(&h, w->kvs[i].key, strlen(w->kvs[i].key));
		gm_buf_add(&h, w->kvs[i].bytes.buf, w->kvs[i].bytes.len);
	}
	for (i = 0; i < w->nt; i++) {
		const struct wtensor *t = &w->tensors[i];

		put_str(&h, t->name, strlen(t->name));
		put_le(&h, (uint64_t)t->ndim, 4);
		for (k = 0; k < t->ndim; k++)
			put_le(&h, t->ne[k], 8);
		put_le(&h, t->type, 4);
		put_le(&h, off, 8);
		off += t->nbytes + pad_to(t->nbytes, w->alignment);
	}
	gm_buf_add(&h, zeros, (size_t)pad_to(h.len, w->alignment));
	ret = gm_atomic_write(af, h.buf, h.len, err);
	for (i = 0; !ret && i < w->nt; i++) {
		const struct wtensor *t = &w->tensors[i];

		if (!(ret = gm_atomic_write(af, t->data, (size_t)t->nbytes, err)))
			ret = gm_atomic_write(af, zeros, (size_t)pad_to(t->nbytes, w->alignment), err);
	}
	gm_buf_release(&h);
	return ret;
}

int gm_gguf_writer_write(gm_gguf_writer *w, const char *path, gm_error *err)
{
	gm_atomic_file af;
	int ret = gm_atomic_open(&af, path, 0644, err);

	if (ret)
		return ret;
	if ((ret = gm_gguf_writer_write_to(w, &af, err))) {
		gm_atomic_abort(&af);
		return ret;
	}
	return gm_atomic_commit(&af, err);
}
