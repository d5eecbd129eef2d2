/*
 * gguf.c - the GGUF reader (see gguf.h).
 *
 * One pass over the header with a bounds-checked cursor: every length or
 * count read from the file is compared with the bytes left before it is
 * used, and counts are also bounded by the smallest encoding of what they
 * count, so that no allocation is larger than the file allows.  Values stay
 * in the file image; only keys, tensor names and string scalars are copied
 * (NUL-terminated), and string arrays get an offset table so that element i
 * of a 151k-token vocabulary is found without a scan.
 */
#include "formats/gguf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define MAX_NESTING 8
#define MAX_KEY_LEN 65535
#define MAX_NAME_LEN 65535

struct kv {
	char *key;
	uint32_t type;
	const unsigned char *val; /* scalar bytes; a string's bytes; an array's first element */
	uint64_t vlen;            /* scalar, string or array elements' length in bytes */
	char *str;                /* string scalars, NUL-terminated copy (NULL when it holds a NUL) */
	uint32_t elem;            /* arrays: element type */
	uint64_t count;           /* arrays: element count */
	uint64_t *str_off;        /* string arrays: offset of each element's length field from val */
};

struct gm_gguf {
	char *path;
	void *map;            /* our mapping or resident copy; NULL for memory images */
	size_t map_len, map_size;
	int resident;
	uint32_t version, alignment;
	struct kv *kvs;
	size_t nkv;
	gm_tensor *tensors;
	size_t ntensors;
	const gm_tensor **by_name;
	uint64_t data_off;
};

/* ------------------------------------------------------------------ types */

static const char *const vtype_names[GM_GGUF_VTYPE_COUNT] = {
	"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
	"bool", "string", "array", "uint64", "int64", "float64",
};

/* Bytes of a scalar of type t; 0 for string and array. */
static unsigned scalar_size(uint32_t t)
{
	static const unsigned size[GM_GGUF_VTYPE_COUNT] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

	return t < GM_GGUF_VTYPE_COUNT ? size[t] : 0;
}

const char *gm_gguf_vtype_name(int type)
{
	return type >= 0 && type < GM_GGUF_VTYPE_COUNT ? vtype_names[type] : "?";
}

/* ggml's tensor types by id; dtype -1: a type git-model cannot compute with. */
static const struct {
	const char *name;
	int dtype;
} ggml_types[] = {
	[0] = { "f32", GM_DTYPE_F32 },      [1] = { "f16", GM_DTYPE_F16 },
	[2] = { "q4_0", GM_DTYPE_Q4_0 },    [3] = { "q4_1", GM_DTYPE_Q4_1 },
	[6] = { "q5_0", GM_DTYPE_Q5_0 },    [7] = { "q5_1", GM_DTYPE_Q5_1 },
	[8] = { "q8_0", GM_DTYPE_Q8_0 },    [9] = { "q8_1", GM_DTYPE_Q8_1 },
	[10] = { "q2_K", GM_DTYPE_Q2_K },   [11] = { "q3_K", GM_DTYPE_Q3_K },
	[12] = { "q4_K", GM_DTYPE_Q4_K },   [13] = { "q5_K", GM_DTYPE_Q5_K },
	[14] = { "q6_K", GM_DTYPE_Q6_K },   [15] = { "q8_K", GM_DTYPE_Q8_K },
	[16] = { "iq2_xxs", -1 },           [17] = { "iq2_xs", -1 },
	[18] = { "iq3_xxs", -1 },           [19] = { "iq1_s", -1 },
	[20] = { "iq4_nl", -1 },            [21] = { "iq3_s", -1 },
	[22] = { "iq2_s", -1 },             [23] = { "iq4_xs", -1 },
	[24] = { "i8", GM_DTYPE_I8 },       [25] = { "i16", GM_DTYPE_I16 },
	[26] = { "i32", GM_DTYPE_I32 },     [27] = { "i64", GM_DTYPE_I64 },
	[28] = { "f64", GM_DTYPE_F64 },     [29] = { "iq1_m", -1 },
	[30] = { "bf16", GM_DTYPE_BF16 },   [31] = { "q4_0_4_4", -1 },
	[32] = { "q4_0_4_8", -1 },          [33] = { "q4_0_8_8", -1 },
	[34] = { "tq1_0", -1 },             [35] = { "tq2_0", -1 },
	[36] = { "iq4_nl_4_4", -1 },        [37] = { "iq4_nl_4_8", -1 },
	[38] = { "iq4_nl_8_8", -1 },        [39] = { "mxfp4", -1 },
	[40] = { "nvfp4", -1 },             [41] = { "q1_0", -1 },
	[42] = { "q2_0", -1 },
};
#define N_GGML_TYPES (sizeof(ggml_types) / sizeof(ggml_types[0]))

const char *gm_gguf_ggml_type_name(uint32_t type)
{
	return type < N_GGML_TYPES ? ggml_types[type].name : NULL;
}

/* llama.cpp's file types (general.file_type), by id. */
static const char *const file_types[] = {
	[0] = "F32",      [1] = "F16",      [2] = "Q4_0",     [3] = "Q4_1",     [7] = "Q8_0",
	[8] = "Q5_0",     [9] = "Q5_1",     [10] = "Q2_K",    [11] = "Q3_K_S",  [12] = "Q3_K_M",
	[13] = "Q3_K_L",  [14] = "Q4_K_S",  [15] = "Q4_K_M",  [16] = "Q5_K_S",  [17] = "Q5_K_M",
	[18] = "Q6_K",    [19] = "IQ2_XXS", [20] = "IQ2_XS",  [21] = "Q2_K_S",  [22] = "IQ3_XS",
	[23] = "IQ3_XXS", [24] = "IQ1_S",   [25] = "IQ4_NL",  [26] = "IQ3_S",   [27] = "IQ3_M",
	[28] = "IQ2_S",   [29] = "IQ2_M",   [30] = "IQ4_XS",  [31] = "IQ1_M",   [32] = "BF16",
	[36] = "TQ1_0",   [37] = "TQ2_0",   [38] = "MXFP4_MOE", [39] = "NVFP4", [40] = "Q1_0",
	[41] = "Q2_0",
};

const char *gm_gguf_file_type_name(const gm_gguf *g)
{
	int64_t ft;

	if (gm_gguf_find_kv(g, "general.file_type") < 0 || gm_gguf_get_int(g, "general.file_type", &ft, NULL) ||
	    ft < 0 || (uint64_t)ft >= sizeof(file_types) / sizeof(file_types[0]) || !file_types[ft])
		return NULL;
	return file_types[ft];
}

int gm_gguf_ggml_type(enum gm_dtype t)
{
	size_t i;

	for (i = 0; i < N_GGML_TYPES; i++)
		if (ggml_types[i].name && ggml_types[i].dtype == (int)t)
			return (int)i;
	return -1;
}

/* ----------------------------------------------------------------- cursor */

struct cur {
	const unsigned char *p;
	uint64_t len, pos;
	const char *what;
	gm_error *err;
};

static uint64_t le(const unsigned char *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = (v << 8) | p[n];
	return v;
}

static int truncated(struct cur *c, const char *ctx)
{
	return gm_error_set(c->err, GM_EFORMAT, "%s: truncated at byte %llu (reading %s)", c->what,
			    (unsigned long long)c->pos, ctx);
}

static int need(struct cur *c, uint64_t n, const char *ctx)
{
	return n > c->len - c->pos ? truncated(c, ctx) : 0;
}

static int rd(struct cur *c, unsigned n, uint64_t *v, const char *ctx)
{
	int ret = need(c, n, ctx);

	if (ret)
		return ret;
	*v = le(c->p + c->pos, n);
	c->pos += n;
	return 0;
}

/* A string: u64 length, bytes.  *s points into the image. */
static int rd_str(struct cur *c, uint64_t max, const unsigned char **s, uint64_t *n, const char *ctx)
{
	int ret = rd(c, 8, n, ctx);

	if (ret)
		return ret;
	if (*n > max)
		return gm_error_set(c->err, GM_EFORMAT, "%s: %s at byte %llu has length %llu (at most %llu)",
				    c->what, ctx, (unsigned long long)(c->pos - 8), (unsigned long long)*n,
				    (unsigned long long)max);
	if ((ret = need(c, *n, ctx)))
		return ret;
	*s = c->p + c->pos;
	c->pos += *n;
	return 0;
}

static char *dup_bytes(const unsigned char *s, uint64_t n)
{
	char *d = gm_xmalloc((size_t)n + 1);

	memcpy(d, s, (size_t)n);
	d[n] = 0;
	return d;
}

/* The fewest bytes an element of type t takes (for bounding counts). */
static uint64_t min_size(uint32_t t)
{
	if (t == GM_GGUF_STRING)
		return 8;
	if (t == GM_GGUF_ARRAY)
		return 12;
	return scalar_size(t);
}

/*
 * Skips an array body (element type and count already read) of count
 * elements; when offs is not NULL (string arrays), records each element's
 * offset from base.
 */
static int skip_value(struct cur *c, uint32_t type, int depth, const char *key);

static int skip_elems(struct cur *c, uint32_t elem, uint64_t count, int depth, const char *key,
		      const unsigned char *base, uint64_t *offs)
{
	uint64_t i;
	int ret;

	if (elem >= GM_GGUF_VTYPE_COUNT)
		return gm_error_set(c->err, GM_EFORMAT, "%s: key '%s': array of unknown value type %u", c->what,
				    key, elem);
	if (count > (c->len - c->pos) / min_size(elem))
		return gm_error_set(c->err, GM_EFORMAT,
				    "%s: key '%s': array of %llu %s elements does not fit in the %llu bytes left",
				    c->what, key, (unsigned long long)count, vtype_names[elem],
				    (unsigned long long)(c->len - c->pos));
	if (scalar_size(elem)) {
		c->pos += count * scalar_size(elem); /* fits: checked above */
		return 0;
	}
	for (i = 0; i < count; i++) {
		if (offs)
			offs[i] = (uint64_t)(c->p + c->pos - base);
		if ((ret = skip_value(c, elem, depth + 1, key)))
			return ret;
	}
	return 0;
}

static int skip_value(struct cur *c, uint32_t type, int depth, const char *key)
{
	const unsigned char *s;
	uint64_t n, elem, count;
	int ret;

	if (type == GM_GGUF_STRING)
		return rd_str(c, UINT64_MAX, &s, &n, "a string value");
	if (type != GM_GGUF_ARRAY) {
		if ((ret = need(c, scalar_size(type), "a value")))
			return ret;
		c->pos += scalar_size(type);
		return 0;
	}
	if (depth >= MAX_NESTING)
		return gm_error_set(c->err, GM_EFORMAT, "%s: key '%s': arrays nested deeper than %d", c->what, key,
				    MAX_NESTING);
	if ((ret = rd(c, 4, &elem, "an array type")) || (ret = rd(c, 8, &count, "an array length")))
		return ret;
	return skip_elems(c, (uint32_t)elem, count, depth, key, NULL, NULL);
}

/* ------------------------------------------------------------------ parse */

static void free_kvs(gm_gguf *g)
{
	size_t i;

	for (i = 0; i < g->nkv; i++) {
		free(g->kvs[i].key);
		free(g->kvs[i].str);
		free(g->kvs[i].str_off);
	}
	free(g->kvs);
	g->kvs = NULL;
	g->nkv = 0;
}

static int parse_kv(gm_gguf *g, struct cur *c, struct kv *kv)
{
	char ctx[128];
	const unsigned char *s;
	uint64_t n, type;
	int ret;

	if ((ret = rd_str(c, MAX_KEY_LEN, &s, &n, "a key")))
		return ret;
	if (memchr(s, 0, (size_t)n) || !n)
		return gm_error_set(c->err, GM_EFORMAT, "%s: a key at byte %llu is empty or holds a NUL byte",
				    c->what, (unsigned long long)(c->pos - n));
	kv->key = dup_bytes(s, n);
	g->nkv++;
	if ((ret = rd(c, 4, &type, "a value type")))
		return ret;
	if (type >= GM_GGUF_VTYPE_COUNT)
		return gm_error_set(c->err, GM_EFORMAT, "%s: key '%s' has unknown value type %llu", c->what,
				    kv->key, (unsigned long long)type);
	kv->type = (uint32_t)type;
	snprintf(ctx, sizeof(ctx), "the value of key '%.80s'", kv->key);
	if (type == GM_GGUF_STRING) {
		if ((ret = rd_str(c, UINT64_MAX, &kv->val, &kv->vlen, ctx)))
			return ret;
		if (!memchr(kv->val, 0, (size_t)kv->vlen))
			kv->str = dup_bytes(kv->val, kv->vlen);
		return 0;
	}
	if (type == GM_GGUF_ARRAY) {
		uint64_t elem;

		if ((ret = rd(c, 4, &elem, "an array type")) || (ret = rd(c, 8, &kv->count, "an array length")))
			return ret;
		kv->elem = (uint32_t)elem;
		kv->val = c->p + c->pos;
		if (elem == GM_GGUF_STRING && kv->count <= (c->len - c->pos) / 8)
			kv->str_off = gm_xmalloc((size_t)(kv->count ? kv->count : 1) * sizeof(uint64_t));
		if ((ret = skip_elems(c, (uint32_t)elem, kv->count, 1, kv->key, kv->val, kv->str_off)))
			return ret;
		kv->vlen = (uint64_t)(c->p + c->pos - kv->val); /* the elements' bytes */
		return 0;
	}
	if ((ret = need(c, scalar_size((uint32_t)type), ctx)))
		return ret;
	kv->val = c->p + c->pos;
	kv->vlen = scalar_size((uint32_t)type);
	c->pos += kv->vlen;
	return 0;
}

static int cmp_kv_ptr(const void *a, const void *b)
{
	return strcmp((*(const struct kv *const *)a)->key, (*(const struct kv *const *)b)->key);
}

static int check_duplicate_keys(gm_gguf *g, gm_error *err)
{
	const struct kv **v = gm_xmalloc((g->nkv ? g->nkv : 1) * sizeof(*v));
	size_t i;
	int ret = 0;

	for (i = 0; i < g->nkv; i++)
		v[i] = &g->kvs[i];
	qsort(v, g->nkv, sizeof(*v), cmp_kv_ptr);
	for (i = 1; i < g->nkv && !ret; i++)
		if (!strcmp(v[i - 1]->key, v[i]->key))
			ret = gm_error_set(err, GM_EFORMAT, "%s: key '%s' appears twice", g->path, v[i]->key);
	free(v);
	return ret;
}

static int cmp_tensor_name(const void *a, const void *b)
{
	return strcmp((*(const gm_tensor *const *)a)->name, (*(const gm_tensor *const *)b)->name);
}

static int cmp_tensor_off(const void *a, const void *b)
{
	const gm_tensor *x = *(const gm_tensor *const *)a, *y = *(const gm_tensor *const *)b;

	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int parse_tensor_info(gm_gguf *g, struct cur *c, gm_tensor *t)
{
	const unsigned char *s;
	uint64_t n, ndim, ne[GM_GGUF_MAX_DIMS], type, off, numel = 1;
	const char *tname;
	int ret, i;

	if ((ret = rd_str(c, MAX_NAME_LEN, &s, &n, "a tensor name")))
		return ret;
	if (memchr(s, 0, (size_t)n) || !n)
		return gm_error_set(c->err, GM_EFORMAT, "%s: a tensor name at byte %llu is empty or holds a NUL byte",
				    c->what, (unsigned long long)(c->pos - n));
	t->name = dup_bytes(s, n);
	g->ntensors++;
	if ((ret = rd(c, 4, &ndim, "a tensor's dimension count")))
		return ret;
	if (ndim < 1 || ndim > GM_GGUF_MAX_DIMS)
		return gm_error_set(c->err, GM_EFORMAT, "%s: tensor '%s' has %llu dimensions (1 to %d)", c->what,
				    t->name, (unsigned long long)ndim, GM_GGUF_MAX_DIMS);
	for (i = 0; i < (int)ndim; i++) {
		if ((ret = rd(c, 8, &ne[i], "a tensor dimension")))
			return ret;
		if (ne[i] > INT64_MAX || (ne[i] && numel > (uint64_t)INT64_MAX / ne[i]))
			return gm_error_set(c->err, GM_EFORMAT,
					    "%s: tensor '%s': dimensions overflow (dimension %d is %llu)", c->what,
					    t->name, i, (unsigned long long)ne[i]);
		numel *= ne[i];
	}
	if ((ret = rd(c, 4, &type, "a tensor type")) || (ret = rd(c, 8, &off, "a tensor offset")))
		return ret;
	tname = gm_gguf_ggml_type_name((uint32_t)type);
	if (!tname)
		return gm_error_set(c->err, GM_EFORMAT, "%s: tensor '%s' has unknown ggml type %llu", c->what,
				    t->name, (unsigned long long)type);
	if (ggml_types[type].dtype < 0)
		return gm_error_set(c->err, GM_EUNSUPPORTED,
				    "%s: tensor '%s' has type %s, which git-model does not support (supported: "
				    "f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_K q3_K q4_K q5_K q6_K)",
				    c->what, t->name, tname);
	t->dtype = (enum gm_dtype)ggml_types[type].dtype;
	if (gm_dtype_is_block(t->dtype)) {
		unsigned be, bb;

		gm_dtype_block(t->dtype, &be, &bb);
		if (ne[0] % be)
			return gm_error_set(c->err, GM_EFORMAT,
					    "%s: tensor '%s' (%s): a row of %llu elements is not a whole number of "
					    "%u-element blocks", c->what, t->name, tname, (unsigned long long)ne[0], be);
	}
	if ((ret = gm_dtype_nbytes(t->dtype, numel, &t->nbytes, c->err)))
		return gm_error_prefix(c->err, "%s: tensor '%s'", c->what, t->name);
	t->ndim = (int)ndim;
	for (i = 0; i < (int)ndim; i++)
		t->shape[i] = (int64_t)ne[ndim - 1 - i];
	t->numel = numel;
	t->offset = off;
	return 0;
}

static int check_tensors(gm_gguf *g, const unsigned char *data, uint64_t len, gm_error *err)
{
	const gm_tensor **v = gm_xmalloc((g->ntensors ? g->ntensors : 1) * sizeof(*v));
	uint64_t data_len = len - g->data_off, end = 0;
	size_t i;
	int ret = 0;

	for (i = 0; i < g->ntensors && !ret; i++) {
		gm_tensor *t = &g->tensors[i];

		v[i] = t;
		if (t->offset % g->alignment)
			ret = gm_error_set(err, GM_EFORMAT, "%s: tensor '%s': offset %llu is not a multiple of the "
					   "alignment %u", g->path, t->name, (unsigned long long)t->offset,
					   g->alignment);
		else if (t->offset > data_len || t->nbytes > data_len - t->offset)
			ret = gm_error_set(err, GM_EFORMAT, "%s: tensor '%s': %llu bytes at data offset %llu run "
					   "past the end of the file (%llu data bytes)", g->path, t->name,
					   (unsigned long long)t->nbytes, (unsigned long long)t->offset,
					   (unsigned long long)data_len);
		else
			t->data = data + g->data_off + t->offset;
	}
	if (!ret) {
		qsort(v, g->ntensors, sizeof(*v), cmp_tensor_off);
		for (i = 0; i < g->ntensors && !ret; i++) {
			if (i && v[i]->offset < end)
				ret = gm_error_set(err, GM_EFORMAT, "%s: tensors '%s' and '%s' overlap", g->path,
						   v[i - 1]->name, v[i]->name);
			end = v[i]->offset + v[i]->nbytes;
		}
	}
	if (!ret) {
		qsort(v, g->ntensors, sizeof(*v), cmp_tensor_name);
		for (i = 1; i < g->ntensors && !ret; i++)
			if (!strcmp(v[i - 1]->name, v[i]->name))
				ret = gm_error_set(err, GM_EFORMAT, "%s: tensor '%s' appears twice", g->path,
						   v[i]->name);
	}
	if (ret)
		free(v);
	else
		g->by_name = v;
	return ret;
}

static int parse_alignment(gm_gguf *g, gm_error *err)
{
	long i = gm_gguf_find_kv(g, "general.alignment");
	uint64_t a;

	g->alignment = GM_GGUF_DEFAULT_ALIGNMENT;
	if (i < 0)
		return 0;
	if (g->kvs[i].type != GM_GGUF_UINT32)
		return gm_error_set(err, GM_EFORMAT, "%s: general.alignment must be a uint32, not %s", g->path,
				    vtype_names[g->kvs[i].type]);
	a = le(g->kvs[i].val, 4);
	if (!a || (a & (a - 1)))
		return gm_error_set(err, GM_EFORMAT, "%s: general.alignment %llu is not a power of two", g->path,
				    (unsigned long long)a);
	g->alignment = (uint32_t)a;
	return 0;
}

static int parse_image(gm_gguf *g, const unsigned char *data, size_t len, gm_error *err)
{
	struct cur c = { data, len, 0, g->path, err };
	uint64_t magic, version, nt, nkv, i;
	int ret;

	if ((ret = rd(&c, 4, &magic, "the magic")))
		return gm_error_set(err, GM_EFORMAT, "%s: not a GGUF file (%zu bytes)", g->path, len);
	if (magic != GGUF_MAGIC)
		return gm_error_set(err, GM_EFORMAT, "%s: not a GGUF file (no \"GGUF\" magic)", g->path);
	if ((ret = rd(&c, 4, &version, "the version")))
		return ret;
	if (version != 2 && version != 3) {
		if (version && !(version & 0xffff))
			return gm_error_set(err, GM_EUNSUPPORTED, "%s: a big-endian GGUF file (not supported)",
					    g->path);
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: GGUF version %llu is not supported (2 or 3)",
				    g->path, (unsigned long long)version);
	}
	g->version = (uint32_t)version;
	if ((ret = rd(&c, 8, &nt, "the tensor count")) || (ret = rd(&c, 8, &nkv, "the key count")))
		return ret;
	/* smallest key/value: 8 + 1 (key) + 4 + 1; smallest tensor info: 8 + 1 + 4 + 8 + 4 + 8 */
	if (nkv > (c.len - c.pos) / 14 || nt > (c.len - c.pos) / 33)
		return gm_error_set(err, GM_EFORMAT, "%s: %llu keys and %llu tensors cannot fit in %zu bytes",
				    g->path, (unsigned long long)nkv, (unsigned long long)nt, len);
	g->kvs = gm_xcalloc(nkv ? (size_t)nkv : 1, sizeof(*g->kvs));
	for (i = 0; i < nkv; i++)
		if ((ret = parse_kv(g, &c, &g->kvs[i])))
			return ret;
	if ((ret = check_duplicate_keys(g, err)) || (ret = parse_alignment(g, err)))
		return ret;
	g->tensors = gm_xcalloc(nt ? (size_t)nt : 1, sizeof(*g->tensors));
	for (i = 0; i < nt; i++)
		if ((ret = parse_tensor_info(g, &c, &g->tensors[i])))
			return ret;
	/* the data section starts at the next multiple of the alignment */
	g->data_off = c.pos + (g->alignment - c.pos % g->alignment) % g->alignment;
	if (g->data_off > len) {
		if (nt)
			return gm_error_set(err, GM_EFORMAT, "%s: the data section (at byte %llu) is past the end "
					    "of the file (%zu bytes)", g->path, (unsigned long long)g->data_off, len);
		g->data_off = len; /* metadata only, the padding omitted */
	}
	return check_tensors(g, data, len, err);
}

/* ------------------------------------------------------------------ open */

void gm_gguf_close(gm_gguf *g)
{
	size_t i;

	if (!g)
		return;
	free_kvs(g);
	for (i = 0; i < g->ntensors; i++)
		free((char *)g->tensors[i].name);
	free(g->tensors);
	free(g->by_name);
	if (g->map)
		munmap(g->map, g->map_size);
	free(g->path);
	free(g);
}

int gm_gguf_open_memory(const void *data, size_t len, const char *what, gm_gguf **out, gm_error *err)
{
	gm_gguf *g = gm_xcalloc(1, sizeof(*g));
	int ret;

	*out = NULL;
	g->path = gm_xstrdup(what ? what : "<memory>");
	ret = parse_image(g, data, len, err);
	if (ret) {
		gm_gguf_close(g);
		return ret;
	}
	*out = g;
	return 0;
}

/* The file held as the safetensors reader holds it (gm_st_map_file). */
int gm_gguf_open_mode(const char *path, enum gm_st_load mode, gm_gguf **out, gm_error *err)
{
	gm_st_mapping m;
	gm_gguf *g;
	int ret;

	*out = NULL;
	if ((ret = gm_st_map_file(path, mode, &m, err)))
		return ret;
	g = gm_xcalloc(1, sizeof(*g));
	g->path = gm_xstrdup(path);
	g->map = m.data;
	g->map_len = m.len;
	g->map_size = m.size;
	g->resident = m.resident;
	ret = parse_image(g, g->map, g->map_len, err);
	if (ret) {
		gm_gguf_close(g);
		return ret;
	}
	*out = g;
	return 0;
}

int gm_gguf_open(const char *path, gm_gguf **out, gm_error *err)
{
	return gm_gguf_open_mode(path, GM_ST_LOAD_MAP, out, err);
}

/* -------------------------------------------------------------- accessors */

const char *gm_gguf_path(const gm_gguf *g)
{
	return g->path;
}

uint32_t gm_gguf_version(const gm_gguf *g)
{
	return g->version;
}

uint32_t gm_gguf_alignment(const gm_gguf *g)
{
	return g->alignment;
}

int gm_gguf_is_resident(const gm_gguf *g)
{
	return g->resident;
}

uint64_t gm_gguf_data_offset(const gm_gguf *g)
{
	return g->data_off;
}

size_t gm_gguf_kv_count(const gm_gguf *g)
{
	return g->nkv;
}

const char *gm_gguf_kv_key(const gm_gguf *g, size_t i)
{
	return i < g->nkv ? g->kvs[i].key : NULL;
}

enum gm_gguf_vtype gm_gguf_kv_type(const gm_gguf *g, size_t i)
{
	return i < g->nkv ? (enum gm_gguf_vtype)g->kvs[i].type : GM_GGUF_VTYPE_COUNT;
}

long gm_gguf_find_kv(const gm_gguf *g, const char *key)
{
	size_t i;

	for (i = 0; i < g->nkv; i++)
		if (!strcmp(g->kvs[i].key, key))
			return (long)i;
	return -1;
}

static const struct kv *find(const gm_gguf *g, const char *key, gm_error *err)
{
	long i = gm_gguf_find_kv(g, key);

	if (i < 0) {
		gm_error_set(err, GM_ENOENT, "%s: no metadata key '%s'", g->path, key);
		return NULL;
	}
	return &g->kvs[i];
}

static int wrong_type(const gm_gguf *g, const struct kv *kv, const char *want, gm_error *err)
{
	if (kv->type == GM_GGUF_ARRAY)
		return gm_error_set(err, GM_EFORMAT, "%s: key '%s' is an array of %s, expected %s", g->path, kv->key,
				    gm_gguf_vtype_name((int)kv->elem), want);
	return gm_error_set(err, GM_EFORMAT, "%s: key '%s' is a %s, expected %s", g->path, kv->key,
			    vtype_names[kv->type], want);
}

static int is_int_type(uint32_t t)
{
	return t <= GM_GGUF_INT32 || t == GM_GGUF_UINT64 || t == GM_GGUF_INT64;
}

static int is_signed_type(uint32_t t)
{
	return t == GM_GGUF_INT8 || t == GM_GGUF_INT16 || t == GM_GGUF_INT32 || t == GM_GGUF_INT64;
}

/* An integer of type t at p, as int64; GM_EFORMAT (err) for a uint64 past INT64_MAX. */
static int int_at(const gm_gguf *g, const char *key, uint32_t t, const unsigned char *p, int64_t *out,
		  gm_error *err)
{
	unsigned n = scalar_size(t);
	uint64_t v = le(p, n);

	if (is_signed_type(t) && n < 8 && (v >> (8 * n - 1)))
		v |= ~(uint64_t)0 << (8 * n); /* sign-extend */
	else if (t == GM_GGUF_UINT64 && v > INT64_MAX)
		return gm_error_set(err, GM_EFORMAT, "%s: key '%s': %llu is too large", g->path, key,
				    (unsigned long long)v);
	memcpy(out, &v, sizeof(*out));
	return 0;
}

static double float_at(uint32_t t, const unsigned char *p)
{
	uint64_t v = le(p, scalar_size(t));

	if (t == GM_GGUF_FLOAT32) {
		uint32_t u = (uint32_t)v;
		float f;

		memcpy(&f, &u, 4);
		return f;
	} else {
		double d;

		memcpy(&d, &v, 8);
		return d;
	}
}

int gm_gguf_get_int(const gm_gguf *g, const char *key, int64_t *out, gm_error *err)
{
	const struct kv *kv = find(g, key, err);

	if (!kv)
		return GM_ENOENT;
	if (!is_int_type(kv->type))
		return wrong_type(g, kv, "an integer", err);
	return int_at(g, key, kv->type, kv->val, out, err);
}

int gm_gguf_get_float(const gm_gguf *g, const char *key, double *out, gm_error *err)
{
	const struct kv *kv = find(g, key, err);
	int64_t i;
	int ret;

	if (!kv)
		return GM_ENOENT;
	if (kv->type == GM_GGUF_FLOAT32 || kv->type == GM_GGUF_FLOAT64) {
		*out = float_at(kv->type, kv->val);
		return 0;
	}
	if (!is_int_type(kv->type))
		return wrong_type(g, kv, "a number", err);
	if ((ret = int_at(g, key, kv->type, kv->val, &i, err)))
		return ret;
	*out = (double)i;
	return 0;
}

int gm_gguf_get_bool(const gm_gguf *g, const char *key, int *out, gm_error *err)
{
	const struct kv *kv = find(g, key, err);

	if (!kv)
		return GM_ENOENT;
	if (kv->type != GM_GGUF_BOOL)
		return wrong_type(g, kv, "a bool", err);
	*out = kv->val[0] != 0;
	return 0;
}

int gm_gguf_get_string(const gm_gguf *g, const char *key, const char **out, size_t *len, gm_error *err)
{
	const struct kv *kv = find(g, key, err);

	if (!kv)
		return GM_ENOENT;
	if (kv->type != GM_GGUF_STRING)
		return wrong_type(g, kv, "a string", err);
	if (!kv->str)
		return gm_error_set(err, GM_EFORMAT, "%s: key '%s': the string holds a NUL byte", g->path, key);
	*out = kv->str;
	if (len)
		*len = (size_t)kv->vlen;
	return 0;
}

int gm_gguf_get_array(const gm_gguf *g, const char *key, enum gm_gguf_vtype *elem, uint64_t *count,
		      gm_error *err)
{
	const struct kv *kv = find(g, key, err);

	if (!kv)
		return GM_ENOENT;
	if (kv->type != GM_GGUF_ARRAY)
		return wrong_type(g, kv, "an array", err);
	*elem = (enum gm_gguf_vtype)kv->elem;
	*count = kv->count;
	return 0;
}

static const struct kv *find_elem(const gm_gguf *g, const char *key, uint64_t i, gm_error *err)
{
	const struct kv *kv = find(g, key, err);

	if (!kv)
		return NULL;
	if (kv->type != GM_GGUF_ARRAY) {
		wrong_type(g, kv, "an array", err);
		return NULL;
	}
	if (i >= kv->count) {
		gm_error_set(err, GM_EINVAL, "%s: key '%s': index %llu past the %llu elements", g->path, key,
			     (unsigned long long)i, (unsigned long long)kv->count);
		return NULL;
	}
	return kv;
}

int gm_gguf_array_string(const gm_gguf *g, const char *key, uint64_t i, const char **s, size_t *len,
			 gm_error *err)
{
	const struct kv *kv = find_elem(g, key, i, err);

	if (!kv)
		return err ? err->code : GM_ERROR;
	if (kv->elem != GM_GGUF_STRING)
		return wrong_type(g, kv, "an array of strings", err);
	*len = (size_t)le(kv->val + kv->str_off[i], 8);
	*s = (const char *)kv->val + kv->str_off[i] + 8;
	return 0;
}

int gm_gguf_array_int(const gm_gguf *g, const char *key, uint64_t i, int64_t *out, gm_error *err)
{
	const struct kv *kv = find_elem(g, key, i, err);

	if (!kv)
		return err ? err->code : GM_ERROR;
	if (!is_int_type(kv->elem))
		return wrong_type(g, kv, "an array of integers", err);
	return int_at(g, key, kv->elem, kv->val + i * scalar_size(kv->elem), out, err);
}

int gm_gguf_array_float(const gm_gguf *g, const char *key, uint64_t i, double *out, gm_error *err)
{
	const struct kv *kv = find_elem(g, key, i, err);
	int64_t v;
	int ret;

	if (!kv)
		return err ? err->code : GM_ERROR;
	if (kv->elem == GM_GGUF_FLOAT32 || kv->elem == GM_GGUF_FLOAT64) {
		*out = float_at(kv->elem, kv->val + i * scalar_size(kv->elem));
		return 0;
	}
	if (!is_int_type(kv->elem))
		return wrong_type(g, kv, "an array of numbers", err);
	if ((ret = int_at(g, key, kv->elem, kv->val + i * scalar_size(kv->elem), &v, err)))
		return ret;
	*out = (double)v;
	return 0;
}

size_t gm_gguf_tensor_count(const gm_gguf *g)
{
	return g->ntensors;
}

const gm_tensor *gm_gguf_tensor(const gm_gguf *g, size_t i)
{
	return i < g->ntensors ? &g->tensors[i] : NULL;
}

const gm_tensor *gm_gguf_find_tensor(const gm_gguf *g, const char *name)
{
	gm_tensor key;
	const gm_tensor *kp = &key, **hit;

	if (!g->by_name)
		return NULL;
	key.name = name;
	hit = bsearch(&kp, g->by_name, g->ntensors, sizeof(*g->by_name), cmp_tensor_name);
	return hit ? *hit : NULL;
}

/* ------------------------------------------------------- finding GGUF files */

static int has_gguf_suffix(const char *name)
{
	size_t n = strlen(name);

	return n > 5 && !strcasecmp(name + n - 5, ".gguf");
}

int gm_gguf_is_file(const char *path)
{
	struct stat st;

	return has_gguf_suffix(path) && !stat(path, &st) && S_ISREG(st.st_mode);
}

/* Whether the file starts with the GGUF magic (an LFS pointer does not). */
static int has_magic(const char *path)
{
	unsigned char m[4];
	int fd = open(path, O_RDONLY | O_CLOEXEC), ok;

	if (fd < 0)
		return 0;
	ok = read(fd, m, 4) == 4 && le(m, 4) == GGUF_MAGIC;
	close(fd);
	return ok;
}

static int is_boundary(char c)
{
	return !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') && c != '_';
}

/* name holds quant (any case) as a whole word: "x-Q4_K_M.gguf" has Q4_K_M, not Q4_K. */
static int names_quant(const char *name, const char *quant)
{
	size_t n = strlen(name), q = strlen(quant), i;

	for (i = 0; q && i + q <= n; i++)
		if (!strncasecmp(name + i, quant, q) && (i == 0 || is_boundary(name[i - 1])) &&
		    (i + q == n || is_boundary(name[i + q])))
			return 1;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list_names(gm_buf *b, char **names, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		gm_buf_adds(b, i ? ", " : "");
		gm_buf_adds(b, names[i]);
	}
}

int gm_gguf_pick(const char *dir, const char *quant, char **out, gm_error *err)
{
	char **names = NULL, **hits = NULL, *pointer_hit = NULL;
	size_t n = 0, nhits = 0, npointers = 0, i;
	struct dirent *de;
	gm_buf msg = GM_BUF_INIT;
	DIR *d;
	int ret = 0;

	*out = NULL;
	if (!(d = opendir(dir)))
		return gm_error_errno(err, "cannot read the directory '%s'", dir);
	while ((de = readdir(d))) {
		char *path;

		if (de->d_name[0] == '.' || !has_gguf_suffix(de->d_name) || !strncmp(de->d_name, "mmproj", 6))
			continue;
		path = gm_path_join(dir, de->d_name);
		if (!gm_gguf_is_file(path)) {
			free(path);
			continue;
		}
		if (!has_magic(path)) {
			/* an LFS pointer: a variant not downloaded */
			if (quant && !pointer_hit && (!strcmp(de->d_name, quant) || names_quant(de->d_name, quant)))
				pointer_hit = gm_xstrdup(de->d_name);
			npointers++;
			free(path);
			continue;
		}
		free(path);
		names = gm_xrealloc(names, (n + 1) * sizeof(*names));
		names[n++] = gm_xstrdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_str);
	if (pointer_hit) {
		/* asked for a variant that is only a pointer; a real file of that name would do */
		for (i = 0; i < n; i++)
			if (!strcmp(names[i], quant) || names_quant(names[i], quant))
				break;
		if (i == n) {
			ret = gm_error_set(err, GM_ENOENT, "%s: %s is not downloaded (an LFS pointer); fetch it "
					   "first (git model fetch)", dir, pointer_hit);
			goto done;
		}
	}
	if (!n) {
		if (quant)
			ret = gm_error_set(err, GM_ENOENT, "%s: no GGUF file to choose --quant %s from%s", dir, quant,
					   npointers ? " (the .gguf files here are LFS pointers: not downloaded)" : "");
		goto done;
	}
	hits = gm_xcalloc(n, sizeof(*hits));
	for (i = 0; i < n; i++)
		if (!quant || !strcmp(names[i], quant) || names_quant(names[i], quant))
			hits[nhits++] = names[i];
	if (quant && nhits > 1)
		for (i = 0; i < nhits; i++)
			if (!strcmp(hits[i], quant)) {
				hits[0] = hits[i];
				nhits = 1;
			}
	if (nhits == 1) {
		const char *p = strstr(hits[0], "-of-");
		if (p && p - hits[0] >= 6 && p[-6] == '-') {
			ret = gm_error_set(err, GM_EUNSUPPORTED, "%s: '%s' is one part of a split GGUF model, "
					   "which is not supported (merge the parts with llama-gguf-split --merge)",
					   dir, hits[0]);
			goto done;
		}
		*out = gm_path_join(dir, hits[0]);
		ret = 1;
		goto done;
	}
	list_names(&msg, nhits ? hits : names, nhits ? nhits : n);
	if (!nhits)
		ret = gm_error_set(err, GM_ENOENT, "%s: no GGUF file matches --quant %s (there are: %s)", dir, quant,
				   msg.buf);
	else if (quant)
		ret = gm_error_set(err, GM_EINVAL, "%s: several GGUF files match --quant %s: %s; give a file name",
				   dir, quant, msg.buf);
	else
		ret = gm_error_set(err, GM_EINVAL, "%s: several GGUF files: %s; choose one with --quant TYPE "
				   "(or a file name)", dir, msg.buf);
done:
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(hits);
	free(pointer_hit);
	gm_buf_release(&msg);
	return ret;
}

int gm_gguf_kv_raw(const gm_gguf *g, size_t i, const void **value, size_t *len, uint32_t *elem, uint64_t *count)
{
	if (i >= g->nkv)
		return GM_EINVAL;
	*value = g->kvs[i].val;
	*len = (size_t)g->kvs[i].vlen;
	*elem = g->kvs[i].elem;
	*count = g->kvs[i].count;
	return 0;
}
