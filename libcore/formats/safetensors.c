/*
 * safetensors.c - the safetensors reader (mmap, zero-copy, strict) and writer.
 *
 * The reader trusts nothing in the file: every offset is checked against
 * the data buffer before a view is handed out, and the buffer must be
 * covered exactly, so a file that validates cannot make a caller read out
 * of bounds.  json-c parses the header, but it silently keeps only the
 * last of duplicate keys and forgets the order of tensors, so a small
 * strict scanner (below) walks the header text too: it gives the tensor
 * order, catches duplicate keys in any object and refuses what json-c
 * tolerates but JSON (and the reference implementation) does not:
 * comments, single quotes, NaN, invalid UTF-8, NUL padding; and keys
 * holding a NUL, which json-c would cut short.
 *
 * The writer emits exactly what the reference serializer (serde_json)
 * emits for the same tensors in the same order: compact JSON,
 * "__metadata__" first when there is any, serde_json's string escapes,
 * spaces up to a multiple of 8.
 */
#include "formats/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"

#define METADATA_KEY "__metadata__"
/* json-c stops at depth 32; this only guards the scanner's own recursion. */
#define SCAN_MAX_DEPTH 64
/* Fill callbacks produce data in chunks of this size. */
#define FILL_CHUNK ((uint64_t)4 << 20)

struct gm_st_file {
	char *path;          /* the file, or the caller's name for a memory image */
	void *map;           /* our mapping; NULL for memory images and empty files */
	size_t map_len;      /* the file's length */
	size_t map_size;     /* bytes to unmap: map_len, or more for a resident copy */
	int resident;        /* map is an anonymous copy (gm_st_open_resident) */
	gm_tensor *tensors;  /* header order; names owned */
	size_t ntensors;
	const gm_tensor **by_name; /* sorted by name, for gm_st_find */
	char **meta_keys;    /* __metadata__ in header order, owned */
	char **meta_values;
	size_t nmeta;
};

/* ------------------------------------------------------------ strict JSON scanner */

struct jkey {
	char *str;   /* decoded, NUL-terminated; may hold a NUL from \u0000 (see len) */
	size_t len;
	size_t at;   /* offset of the key in the header text */
	size_t vpos; /* offset of its value */
};

struct jkeys {
	struct jkey *v;
	size_t n, alloc;
};

struct jscan {
	const unsigned char *s;
	size_t len, pos;
	const char *what;
	gm_error *err;
};

static void jkeys_release(struct jkeys *k)
{
	size_t i;

	for (i = 0; i < k->n; i++)
		free(k->v[i].str);
	free(k->v);
	k->v = NULL;
	k->n = k->alloc = 0;
}

static int scan_error(struct jscan *js, const char *msg)
{
	return gm_error_set(js->err, GM_EFORMAT, "%s: invalid JSON header at byte %zu: %s", js->what,
			    js->pos, msg);
}

/* Length of the valid UTF-8 sequence at s (lead byte >= 0x80), 0 if invalid:
 * no overlong forms, no surrogates, nothing past U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (avail < n || s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

static int utf8_valid(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t len = strlen(str), i = 0;

	while (i < len) {
		size_t n = s[i] < 0x80 ? 1 : utf8_seq(s + i, len - i);
		if (!n)
			return 0;
		i += n;
	}
	return 1;
}

static void add_utf8(gm_buf *b, uint32_t cp)
{
	char u[4];

	if (cp < 0x80) {
		gm_buf_addch(b, (int)cp);
		return;
	}
	if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		gm_buf_add(b, u, 2);
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		gm_buf_add(b, u, 3);
	} else {
		u[0] = (char)(0xf0 | (cp >> 18));
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		gm_buf_add(b, u, 4);
	}
}

static int hex4(struct jscan *js, uint32_t *out)
{
	uint32_t v = 0;
	int i;

	if (js->len - js->pos < 4)
		return scan_error(js, "truncated \\u escape");
	for (i = 0; i < 4; i++) {
		unsigned char c = js->s[js->pos + i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return scan_error(js, "invalid \\u escape");
	}
	js->pos += 4;
	*out = v;
	return 0;
}

/* After "\u": one code point, joining a surrogate pair. */
static int scan_u_escape(struct jscan *js, uint32_t *cp)
{
	uint32_t lo;

	if (hex4(js, cp))
		return GM_EFORMAT;
	if (*cp >= 0xdc00 && *cp <= 0xdfff)
		return scan_error(js, "lone low surrogate in a \\u escape");
	if (*cp < 0xd800 || *cp > 0xdbff)
		return 0;
	if (js->len - js->pos < 2 || js->s[js->pos] != '\\' || js->s[js->pos + 1] != 'u')
		return scan_error(js, "high surrogate not followed by a low one");
	js->pos += 2;
	if (hex4(js, &lo))
		return GM_EFORMAT;
	if (lo < 0xdc00 || lo > 0xdfff)
		return scan_error(js, "high surrogate not followed by a low one");
	*cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
	return 0;
}

static int scan_escape(struct jscan *js, gm_buf *out)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	const char *p;
	uint32_t cp;
	unsigned char c;

	if (js->pos >= js->len)
		return scan_error(js, "unterminated string");
	c = js->s[js->pos++];
	if (c == 'u') {
		if (scan_u_escape(js, &cp))
			return GM_EFORMAT;
		if (out)
			add_utf8(out, cp);
		return 0;
	}
	p = c ? strchr(from, c) : NULL;
	if (!p) {
		js->pos--;
		return scan_error(js, "invalid escape in a string");
	}
	if (out)
		gm_buf_addch(out, to[p - from]);
	return 0;
}

/* A string at js->pos (on its opening quote), decoded into out when non-NULL. */
static int scan_string(struct jscan *js, gm_buf *out)
{
	js->pos++;
	for (;;) {
		size_t start = js->pos, n;
		unsigned char c;

		if (js->pos >= js->len)
			return scan_error(js, "unterminated string");
		c = js->s[js->pos];
		if (c == '"') {
			js->pos++;
			return 0;
		}
		if (c < 0x20)
			return scan_error(js, "control character in a string (it must be escaped)");
		if (c == '\\') {
			js->pos++;
			if (scan_escape(js, out))
				return GM_EFORMAT;
			continue;
		}
		n = c < 0x80 ? 1 : utf8_seq(js->s + js->pos, js->len - js->pos);
		if (!n)
			return scan_error(js, "invalid UTF-8");
		js->pos += n;
		if (out)
			gm_buf_add(out, js->s + start, n);
	}
}

static int is_digit(struct jscan *js)
{
	return js->pos < js->len && js->s[js->pos] >= '0' && js->s[js->pos] <= '9';
}

static int scan_digits(struct jscan *js)
{
	if (!is_digit(js))
		return scan_error(js, "invalid number");
	while (is_digit(js))
		js->pos++;
	return 0;
}

static int scan_number(struct jscan *js)
{
	if (js->s[js->pos] == '-')
		js->pos++;
	if (js->pos < js->len && js->s[js->pos] == '0')
		js->pos++;
	else if (scan_digits(js))
		return GM_EFORMAT;
	if (js->pos < js->len && js->s[js->pos] == '.') {
		js->pos++;
		if (scan_digits(js))
			return GM_EFORMAT;
	}
	if (js->pos < js->len && (js->s[js->pos] == 'e' || js->s[js->pos] == 'E')) {
		js->pos++;
		if (js->pos < js->len && (js->s[js->pos] == '+' || js->s[js->pos] == '-'))
			js->pos++;
		if (scan_digits(js))
			return GM_EFORMAT;
	}
	return 0;
}

static int scan_literal(struct jscan *js, const char *word)
{
	size_t n = strlen(word);

	if (js->len - js->pos < n || memcmp(js->s + js->pos, word, n))
		return scan_error(js, "unexpected character");
	js->pos += n;
	return 0;
}

static void skip_ws(struct jscan *js)
{
	while (js->pos < js->len) {
		unsigned char c = js->s[js->pos];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			break;
		js->pos++;
	}
}

static int scan_object(struct jscan *js, int depth, struct jkeys *keys);
static int scan_array(struct jscan *js, int depth);

static int scan_value(struct jscan *js, int depth)
{
	unsigned char c;

	skip_ws(js);
	if (js->pos >= js->len)
		return scan_error(js, "unexpected end of the header");
	c = js->s[js->pos];
	switch (c) {
	case '{':
		return scan_object(js, depth + 1, NULL);
	case '[':
		return scan_array(js, depth + 1);
	case '"':
		return scan_string(js, NULL);
	case 't':
		return scan_literal(js, "true");
	case 'f':
		return scan_literal(js, "false");
	case 'n':
		return scan_literal(js, "null");
	default:
		if (c == '-' || (c >= '0' && c <= '9'))
			return scan_number(js);
		return scan_error(js, "unexpected character");
	}
}

static int scan_array(struct jscan *js, int depth)
{
	if (depth > SCAN_MAX_DEPTH)
		return scan_error(js, "nested too deeply");
	js->pos++;
	skip_ws(js);
	if (js->pos < js->len && js->s[js->pos] == ']') {
		js->pos++;
		return 0;
	}
	for (;;) {
		if (scan_value(js, depth))
			return GM_EFORMAT;
		skip_ws(js);
		if (js->pos < js->len && js->s[js->pos] == ',') {
			js->pos++;
			continue;
		}
		if (js->pos < js->len && js->s[js->pos] == ']') {
			js->pos++;
			return 0;
		}
		return scan_error(js, "expected ',' or ']'");
	}
}

static int cmp_jkey(const void *a, const void *b)
{
	const struct jkey *x = *(const struct jkey *const *)a, *y = *(const struct jkey *const *)b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->str, y->str, n);

	if (c)
		return c;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return x->at < y->at ? -1 : x->at > y->at;
}

/* json-c would keep only the last of two equal keys: refuse them instead. */
static int check_duplicates(struct jscan *js, const struct jkeys *keys, int depth)
{
	const struct jkey **sorted;
	size_t i;
	int ret = 0;

	if (keys->n < 2)
		return 0;
	sorted = gm_xmalloc(keys->n * sizeof(*sorted));
	for (i = 0; i < keys->n; i++)
		sorted[i] = &keys->v[i];
	qsort(sorted, keys->n, sizeof(*sorted), cmp_jkey);
	for (i = 1; i < keys->n; i++) {
		const struct jkey *a = sorted[i - 1], *b = sorted[i];
		if (a->len != b->len || memcmp(a->str, b->str, a->len))
			continue;
		if (depth == 1)
			ret = gm_error_set(js->err, GM_EFORMAT,
					   "%s: duplicate tensor name '%s' in the header (at bytes %zu and %zu)",
					   js->what, b->str, a->at, b->at);
		else
			ret = gm_error_set(js->err, GM_EFORMAT,
					   "%s: duplicate key '%s' in a header object (at bytes %zu and %zu)",
					   js->what, b->str, a->at, b->at);
		break;
	}
	free(sorted);
	return ret;
}

static int scan_member(struct jscan *js, int depth, struct jkeys *keys)
{
	gm_buf k = GM_BUF_INIT;
	struct jkey *key;

	skip_ws(js);
	if (js->pos >= js->len || js->s[js->pos] != '"')
		return scan_error(js, "expected a string key");
	if (keys->n == keys->alloc) {
		keys->alloc = keys->alloc ? 2 * keys->alloc : 16;
		keys->v = gm_xrealloc(keys->v, keys->alloc * sizeof(*keys->v));
	}
	key = &keys->v[keys->n];
	key->at = js->pos;
	if (scan_string(js, &k)) {
		gm_buf_release(&k);
		return GM_EFORMAT;
	}
	key->str = gm_buf_detach(&k, &key->len);
	keys->n++;
	/* json-c ends keys at a NUL, so in its object "dtype\u0000" would
	 * replace "dtype" while other readers keep both apart: the file
	 * would mean different things to different readers. */
	if (memchr(key->str, '\0', key->len)) {
		js->pos = key->at;
		return scan_error(js, "a key contains a NUL character (\\u0000)");
	}
	skip_ws(js);
	if (js->pos >= js->len || js->s[js->pos] != ':')
		return scan_error(js, "expected ':'");
	js->pos++;
	skip_ws(js);
	key->vpos = js->pos;
	return scan_value(js, depth);
}

/* An object at js->pos; its keys go to keys when non-NULL. */
static int scan_object(struct jscan *js, int depth, struct jkeys *keys)
{
	struct jkeys local = { NULL, 0, 0 };
	struct jkeys *k = keys ? keys : &local;
	int ret = 0;

	if (depth > SCAN_MAX_DEPTH)
		return scan_error(js, "nested too deeply");
	js->pos++;
	skip_ws(js);
	if (js->pos < js->len && js->s[js->pos] == '}') {
		js->pos++;
		return 0;
	}
	for (;;) {
		ret = scan_member(js, depth, k);
		if (ret)
			break;
		skip_ws(js);
		if (js->pos < js->len && js->s[js->pos] == ',') {
			js->pos++;
			continue;
		}
		if (js->pos < js->len && js->s[js->pos] == '}') {
			js->pos++;
			ret = check_duplicates(js, k, depth);
			break;
		}
		ret = scan_error(js, "expected ',' or '}'");
		break;
	}
	jkeys_release(&local);
	return ret;
}

/* The whole header: one object, then only whitespace (the padding). */
static int scan_header(const char *hdr, size_t len, const char *what, struct jkeys *keys, gm_error *err)
{
	struct jscan js = { (const unsigned char *)hdr, len, 0, what, err };

	skip_ws(&js);
	if (js.pos >= js.len || js.s[js.pos] != '{')
		return scan_error(&js, "the header must be a JSON object");
	if (scan_object(&js, 1, keys))
		return GM_EFORMAT;
	skip_ws(&js);
	if (js.pos != js.len)
		return scan_error(&js, "trailing data after the header object (only spaces may pad it)");
	return 0;
}

/* ------------------------------------------------------------ reader */

static uint64_t load_le64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void add_shape(gm_buf *b, int ndim, const int64_t *shape)
{
	int i;

	gm_buf_addch(b, '[');
	for (i = 0; i < ndim; i++)
		gm_buf_addf(b, "%s%lld", i ? ", " : "", (long long)shape[i]);
	gm_buf_addch(b, ']');
}

static const char *type_name(json_object *v)
{
	return json_type_to_name(json_object_get_type(v));
}

/* 0 and *out for an integer in [0, INT64_MAX]; otherwise a short reason. */
static const char *get_count(json_object *v, uint64_t *out)
{
	int64_t s;

	if (!gm_json_is_integer(v))
		return "is not an integer";
	s = json_object_get_int64(v);
	if (s < 0)
		return "is negative";
	/* json-c stores integers past INT64_MAX as uint64 and clamps get_int64. */
	if (json_object_get_uint64(v) > (uint64_t)INT64_MAX)
		return "is too large";
	*out = (uint64_t)s;
	return NULL;
}

static int get_field(json_object *obj, const char *key, json_type type, const char *tw,
		     json_object **out, gm_error *err)
{
	json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) || !v)
		return gm_error_set(err, GM_EFORMAT, "%s: missing '%s'", tw, key);
	if (!json_object_is_type(v, type))
		return gm_error_set(err, GM_EFORMAT, "%s: '%s' must be %s, not %s", tw, key,
				    type == json_type_string ? "a string" : "an array", type_name(v));
	*out = v;
	return 0;
}

/* A json-c string holding a NUL would be cut short by every C string API. */
static int has_nul(json_object *s)
{
	return strlen(json_object_get_string(s)) != (size_t)json_object_get_string_len(s);
}

static int parse_dtype(json_object *entry, const char *tw, enum gm_dtype *dt, gm_error *err)
{
	json_object *v;
	int ret = get_field(entry, "dtype", json_type_string, tw, &v, err);

	if (ret)
		return ret;
	if (has_nul(v))
		return gm_error_set(err, GM_EFORMAT, "%s: 'dtype' contains a NUL character", tw);
	ret = gm_dtype_from_name(json_object_get_string(v), dt, err);
	if (ret)
		gm_error_prefix(err, "%s", tw);
	return ret;
}

static int parse_shape(json_object *entry, const char *tw, gm_tensor *t, gm_error *err)
{
	json_object *v;
	size_t i, n;
	int ret = get_field(entry, "shape", json_type_array, tw, &v, err);

	if (ret)
		return ret;
	n = json_object_array_length(v);
	if (n > GM_ST_MAX_DIMS)
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: shape has %zu dimensions, at most %d are supported",
				    tw, n, GM_ST_MAX_DIMS);
	t->ndim = (int)n;
	t->numel = 1;
	for (i = 0; i < n; i++) {
		json_object *d = json_object_array_get_idx(v, i);
		uint64_t dim = 0;
		const char *why = get_count(d, &dim);

		if (why)
			return gm_error_set(err, GM_EFORMAT, "%s: shape[%zu] %s (%s): dimensions are non-negative integers",
					    tw, i, why, d ? json_object_to_json_string(d) : "null");
		t->shape[i] = (int64_t)dim;
		if (__builtin_mul_overflow(t->numel, dim, &t->numel))
			return gm_error_set(err, GM_EFORMAT, "%s: shape %s has too many elements (overflows 64 bits)",
					    tw, json_object_to_json_string(v));
	}
	return 0;
}

static int parse_offsets(json_object *entry, const char *tw, uint64_t off[2], gm_error *err)
{
	json_object *v;
	int i, ret = get_field(entry, "data_offsets", json_type_array, tw, &v, err);

	if (ret)
		return ret;
	if (json_object_array_length(v) != 2)
		return gm_error_set(err, GM_EFORMAT, "%s: 'data_offsets' must be [begin, end], not %s", tw,
				    json_object_to_json_string(v));
	for (i = 0; i < 2; i++) {
		json_object *o = json_object_array_get_idx(v, (size_t)i);
		const char *why = get_count(o, &off[i]);
		if (why)
			return gm_error_set(err, GM_EFORMAT, "%s: data_offsets[%d] %s (%s)", tw, i, why,
					    o ? json_object_to_json_string(o) : "null");
	}
	return 0;
}

/* One header entry: checks it and fills t (its name is set by the caller). */
static int parse_tensor(json_object *entry, const char *tw, const unsigned char *buf, uint64_t buf_len,
			gm_tensor *t, gm_error *err)
{
	uint64_t off[2], need;
	gm_buf shape = GM_BUF_INIT;
	int ret;

	if (!json_object_is_type(entry, json_type_object))
		return gm_error_set(err, GM_EFORMAT, "%s: entry must be an object, not %s", tw, type_name(entry));
	if ((ret = parse_dtype(entry, tw, &t->dtype, err)) || (ret = parse_shape(entry, tw, t, err)) ||
	    (ret = parse_offsets(entry, tw, off, err)))
		return ret;
	ret = gm_dtype_nbytes(t->dtype, t->numel, &need, err);
	if (ret) {
		gm_error_prefix(err, "%s", tw);
		return ret;
	}
	if (off[0] > off[1])
		return gm_error_set(err, GM_EFORMAT, "%s: data_offsets [%llu, %llu] are reversed (begin > end)", tw,
				    (unsigned long long)off[0], (unsigned long long)off[1]);
	if (off[1] > buf_len)
		return gm_error_set(err, GM_EFORMAT,
				    "%s: data_offsets end %llu is past the end of the data buffer (%llu bytes): "
				    "the file is truncated or its header is wrong",
				    tw, (unsigned long long)off[1], (unsigned long long)buf_len);
	if (off[1] - off[0] != need) {
		add_shape(&shape, t->ndim, t->shape);
		ret = gm_error_set(err, GM_EFORMAT,
				   "%s: data_offsets [%llu, %llu] hold %llu bytes but %s %s needs %llu", tw,
				   (unsigned long long)off[0], (unsigned long long)off[1],
				   (unsigned long long)(off[1] - off[0]), gm_dtype_name(t->dtype), shape.buf,
				   (unsigned long long)need);
		gm_buf_release(&shape);
		return ret;
	}
	t->offset = off[0];
	t->nbytes = need;
	t->data = buf + off[0];
	return 0;
}

static int parse_metadata(gm_st_file *f, json_object *meta, const char *hdr, size_t hdr_len,
			  size_t vpos, gm_error *err)
{
	struct jscan js = { (const unsigned char *)hdr, hdr_len, vpos, f->path, err };
	struct jkeys keys = { NULL, 0, 0 };
	size_t i;
	int ret;

	if (!json_object_is_type(meta, json_type_object))
		return gm_error_set(err, GM_EFORMAT, "%s: '%s' must be an object of strings, not %s", f->path,
				    METADATA_KEY, type_name(meta));
	/* json-c's object does not say in which order the keys came. */
	ret = scan_object(&js, 2, &keys);
	if (!ret && keys.n != (size_t)json_object_object_length(meta))
		ret = gm_error_set(err, GM_EFORMAT, "%s: cannot read '%s'", f->path, METADATA_KEY);
	f->meta_keys = gm_xcalloc(keys.n, sizeof(char *));
	f->meta_values = gm_xcalloc(keys.n, sizeof(char *));
	for (i = 0; !ret && i < keys.n; i++) {
		json_object *v = NULL;
		const char *k = keys.v[i].str;

		if (strlen(k) != keys.v[i].len)
			ret = gm_error_set(err, GM_EFORMAT, "%s: a '%s' key contains a NUL character", f->path,
					   METADATA_KEY);
		else if (!json_object_object_get_ex(meta, k, &v) || !json_object_is_type(v, json_type_string))
			ret = gm_error_set(err, GM_EFORMAT, "%s: %s '%s' must be a string, not %s", f->path,
					   METADATA_KEY, k, type_name(v));
		else if (has_nul(v))
			ret = gm_error_set(err, GM_EFORMAT, "%s: %s '%s' contains a NUL character", f->path,
					   METADATA_KEY, k);
		if (ret)
			break;
		f->meta_keys[i] = keys.v[i].str;
		keys.v[i].str = NULL;
		f->meta_values[i] = gm_xstrdup(json_object_get_string(v));
		f->nmeta++;
	}
	jkeys_release(&keys);
	return ret;
}

static int parse_entries(gm_st_file *f, json_object *root, const char *hdr, size_t hdr_len,
			 struct jkeys *keys, const unsigned char *buf, uint64_t buf_len, gm_error *err)
{
	gm_buf tw = GM_BUF_INIT;
	size_t i;
	int ret = 0, seen_meta = 0;

	f->tensors = gm_xcalloc(keys->n, sizeof(gm_tensor));
	for (i = 0; !ret && i < keys->n; i++) {
		struct jkey *k = &keys->v[i];
		json_object *v = NULL;

		if (!strcmp(k->str, METADATA_KEY) && k->len == strlen(METADATA_KEY)) {
			json_object_object_get_ex(root, METADATA_KEY, &v);
			ret = parse_metadata(f, v, hdr, hdr_len, k->vpos, err);
			seen_meta = 1;
			continue;
		}
		gm_buf_reset(&tw);
		gm_buf_addf(&tw, "%s: tensor '%s'", f->path, k->str);
		if (strlen(k->str) != k->len) {
			ret = gm_error_set(err, GM_EFORMAT, "%s: its name contains a NUL character", tw.buf);
			break;
		}
		if (!json_object_object_get_ex(root, k->str, &v)) {
			ret = gm_error_set(err, GM_EFORMAT, "%s: cannot read its entry", tw.buf);
			break;
		}
		ret = parse_tensor(v, tw.buf, buf, buf_len, &f->tensors[f->ntensors], err);
		if (!ret) {
			f->tensors[f->ntensors++].name = k->str;
			k->str = NULL;
		}
	}
	/* Both walks saw the same object: a mismatch means they disagree on
	 * what a key is, and then neither can be trusted. */
	if (!ret && f->ntensors + seen_meta != (size_t)json_object_object_length(root))
		ret = gm_error_set(err, GM_EFORMAT, "%s: cannot read the header's keys", f->path);
	gm_buf_release(&tw);
	return ret;
}

static int cmp_offset(const void *a, const void *b)
{
	const gm_tensor *x = *(const gm_tensor *const *)a, *y = *(const gm_tensor *const *)b;

	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	if (x->nbytes != y->nbytes)
		return x->nbytes < y->nbytes ? -1 : 1;
	return 0;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp((*(const gm_tensor *const *)a)->name, (*(const gm_tensor *const *)b)->name);
}

/* Pointers to the tensors sorted by cmp (pointers, so that the comparison
 * needs no context and files can be opened from several threads). */
static const gm_tensor **sorted_tensors(const gm_st_file *f, int (*cmp)(const void *, const void *))
{
	const gm_tensor **v = gm_xmalloc((f->ntensors ? f->ntensors : 1) * sizeof(*v));
	size_t i;

	for (i = 0; i < f->ntensors; i++)
		v[i] = &f->tensors[i];
	qsort(v, f->ntensors, sizeof(*v), cmp);
	return v;
}

/* The tensors, in offset order, must tile the data buffer exactly: no byte
 * claimed twice, none left over (the reference implementation agrees). */
static int check_coverage(const gm_st_file *f, uint64_t buf_len, gm_error *err)
{
	const gm_tensor **by_offset = sorted_tensors(f, cmp_offset);
	const gm_tensor *prev = NULL;
	uint64_t end = 0;
	size_t i;
	int ret = 0;

	for (i = 0; !ret && i < f->ntensors; i++) {
		const gm_tensor *t = by_offset[i];
		if (t->offset < end)
			ret = gm_error_set(err, GM_EFORMAT,
					   "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap in the data buffer",
					   f->path, prev->name, (unsigned long long)prev->offset,
					   (unsigned long long)(prev->offset + prev->nbytes), t->name,
					   (unsigned long long)t->offset, (unsigned long long)(t->offset + t->nbytes));
		else if (t->offset > end)
			ret = gm_error_set(err, GM_EFORMAT,
					   "%s: bytes [%llu, %llu) of the data buffer belong to no tensor (a hole before '%s')",
					   f->path, (unsigned long long)end, (unsigned long long)t->offset, t->name);
		end = t->offset + t->nbytes;
		prev = t;
	}
	if (!ret && end != buf_len)
		ret = gm_error_set(err, GM_EFORMAT,
				   "%s: bytes [%llu, %llu) at the end of the data buffer belong to no tensor",
				   f->path, (unsigned long long)end, (unsigned long long)buf_len);
	free(by_offset);
	return ret;
}

static int parse_header(gm_st_file *f, const char *hdr, size_t hdr_len, const unsigned char *buf,
			uint64_t buf_len, gm_error *err)
{
	struct jkeys keys = { NULL, 0, 0 };
	json_object *root = NULL;
	gm_buf what = GM_BUF_INIT;
	int ret;

	gm_buf_addf(&what, "%s: header", f->path);
	ret = gm_json_parse(hdr, hdr_len, what.buf, &root, err);
	gm_buf_release(&what);
	if (ret)
		return ret;
	if (!json_object_is_type(root, json_type_object))
		ret = gm_error_set(err, GM_EFORMAT, "%s: the header must be a JSON object, not %s", f->path,
				   type_name(root));
	if (!ret)
		ret = scan_header(hdr, hdr_len, f->path, &keys, err);
	if (!ret)
		ret = parse_entries(f, root, hdr, hdr_len, &keys, buf, buf_len, err);
	if (!ret)
		ret = check_coverage(f, buf_len, err);
	if (!ret)
		f->by_name = sorted_tensors(f, cmp_name);
	jkeys_release(&keys);
	json_object_put(root);
	return ret;
}

static int parse_image(gm_st_file *f, const unsigned char *data, size_t len, gm_error *err)
{
	uint64_t n;

	if (len < 8)
		return gm_error_set(err, GM_EFORMAT,
				    "%s: file too short (%zu bytes) to be safetensors: it must start with an 8-byte header length",
				    f->path, len);
	n = load_le64(data);
	if (n > GM_ST_MAX_HEADER)
		return gm_error_set(err, GM_EFORMAT,
				    "%s: header length %llu is over the limit of %u bytes: not a safetensors file, or corrupt",
				    f->path, (unsigned long long)n, GM_ST_MAX_HEADER);
	if (n > len - 8)
		return gm_error_set(err, GM_EFORMAT,
				    "%s: header length %llu goes past the end of the file (%zu bytes): the file is truncated",
				    f->path, (unsigned long long)n, len);
	return parse_header(f, (const char *)data + 8, (size_t)n, data + 8 + n, len - 8 - n, err);
}

void gm_st_close(gm_st_file *f)
{
	size_t i;

	if (!f)
		return;
	for (i = 0; i < f->ntensors; i++)
		free((char *)f->tensors[i].name);
	for (i = 0; i < f->nmeta; i++) {
		free(f->meta_keys[i]);
		free(f->meta_values[i]);
	}
	free(f->meta_keys);
	free(f->meta_values);
	free(f->tensors);
	free((void *)f->by_name);
	if (f->map)
		munmap(f->map, f->map_size);
	free(f->path);
	free(f);
}

int gm_st_open_memory(const void *data, size_t len, const char *what, gm_st_file **out, gm_error *err)
{
	gm_st_file *f = gm_xcalloc(1, sizeof(*f));
	int ret;

	f->path = gm_xstrdup(what ? what : "<memory>");
	ret = parse_image(f, data, len, err);
	if (ret) {
		gm_st_close(f);
		return ret;
	}
	*out = f;
	return 0;
}

/*
 * The resident copy: anonymous memory aligned to 2 MiB and advised
 * MADV_HUGEPAGE, so that with transparent huge pages in "madvise" (or
 * "always") mode the weights sit in 2 MiB pages: a decode step streams
 * the whole model, and with 4 KiB pages of the page cache the TLB misses
 * and the kernel's page-sized readahead cost about a quarter of the
 * bandwidth.  The file is read into it with pread (no file mapping, so no
 * page faults on the page cache), then the copy is made read-only like a
 * mapping.  Returns 0 and fills f->map, or -1 (errno set) when it cannot:
 * the caller falls back to mapping the file.
 */
#define HUGE_ALIGN ((size_t)2 << 20)

static int read_resident(gm_st_mapping *m, int fd)
{
	size_t size = (m->len + HUGE_ALIGN - 1) & ~(HUGE_ALIGN - 1), got = 0, head;
	char *raw, *base;
	int saved;

	raw = mmap(NULL, size + HUGE_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return -1;
	base = (char *)(((uintptr_t)raw + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
	head = (size_t)(base - raw);
	if (head)
		munmap(raw, head);
	if (HUGE_ALIGN - head)
		munmap(base + size, HUGE_ALIGN - head);
#ifdef MADV_HUGEPAGE
	if (madvise(base, size, MADV_HUGEPAGE) < 0) {
		saved = errno;
		munmap(base, size);
		errno = saved;
		return -1;
	}
#else
	munmap(base, size);
	errno = ENOTSUP;
	return -1;
#endif
	while (got < m->len) {
		ssize_t n = pread(fd, base + got, m->len - got, (off_t)got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			saved = n < 0 ? errno : EIO;
			munmap(base, size);
			errno = saved;
			return -1;
		}
		got += (size_t)n;
	}
	mprotect(base, size, PROT_READ); /* as the mapping: a stray write faults; harmless if refused */
	m->data = base;
	m->size = size;
	m->resident = 1;
	return 0;
}

int gm_st_map_file(const char *path, enum gm_st_load mode, gm_st_mapping *out, gm_error *err)
{
	struct stat st;
	int fd, ret = 0;

	memset(out, 0, sizeof(*out));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return gm_error_errno(err, "cannot open '%s'", path);
	if (fstat(fd, &st) < 0) {
		ret = gm_error_errno(err, "cannot stat '%s'", path);
		close(fd);
		return ret;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return gm_error_set(err, GM_EINVAL, "%s: not a regular file", path);
	}
	out->len = (size_t)st.st_size;
	out->size = out->len;
	/* no huge pages to be had (or no memory): the mapping will do */
	if (mode == GM_ST_LOAD_RESIDENT && out->len && read_resident(out, fd) < 0) {
		out->data = NULL;
		out->size = out->len;
	}
	/* mmap refuses length 0; an empty file fails validation anyway. */
	if (!out->data && out->len) {
		out->data = mmap(NULL, out->len, PROT_READ, MAP_PRIVATE, fd, 0);
		if (out->data == MAP_FAILED) {
			out->data = NULL;
			ret = gm_error_errno(err, "cannot map '%s'", path);
		}
	}
	close(fd); /* the mapping keeps the file */
	return ret;
}

void gm_st_unmap(gm_st_mapping *m)
{
	if (m->data)
		munmap(m->data, m->size);
	memset(m, 0, sizeof(*m));
}

int gm_st_open_mode(const char *path, enum gm_st_load mode, gm_st_file **out, gm_error *err)
{
	gm_st_mapping m;
	gm_st_file *f;
	int ret;

	if ((ret = gm_st_map_file(path, mode, &m, err)))
		return ret;
	f = gm_xcalloc(1, sizeof(*f));
	f->path = gm_xstrdup(path);
	f->map = m.data;
	f->map_len = m.len;
	f->map_size = m.size;
	f->resident = m.resident;
	ret = parse_image(f, f->map, f->map_len, err);
	if (ret) {
		gm_st_close(f);
		return ret;
	}
	*out = f;
	return 0;
}

int gm_st_open(const char *path, gm_st_file **out, gm_error *err)
{
	return gm_st_open_mode(path, GM_ST_LOAD_MAP, out, err);
}

int gm_st_is_resident(const gm_st_file *f)
{
	return f->resident;
}

const char *gm_st_path(const gm_st_file *f)
{
	return f->path;
}

size_t gm_st_count(const gm_st_file *f)
{
	return f->ntensors;
}

const gm_tensor *gm_st_tensor(const gm_st_file *f, size_t i)
{
	return i < f->ntensors ? &f->tensors[i] : NULL;
}

const gm_tensor *gm_st_find(const gm_st_file *f, const char *name)
{
	size_t lo = 0, hi = f->ntensors;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const gm_tensor *t = f->by_name[mid];
		int c = strcmp(name, t->name);
		if (!c)
			return t;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

size_t gm_st_metadata_count(const gm_st_file *f)
{
	return f->nmeta;
}

void gm_st_metadata_at(const gm_st_file *f, size_t i, const char **key, const char **value)
{
	*key = i < f->nmeta ? f->meta_keys[i] : NULL;
	*value = i < f->nmeta ? f->meta_values[i] : NULL;
}

const char *gm_st_metadata(const gm_st_file *f, const char *key)
{
	size_t i;

	for (i = 0; i < f->nmeta; i++)
		if (!strcmp(f->meta_keys[i], key))
			return f->meta_values[i];
	return NULL;
}

/* ------------------------------------------------------------ writer */

struct wtensor {
	char *name;
	enum gm_dtype dtype;
	int ndim;
	int64_t shape[GM_ST_MAX_DIMS];
	uint64_t nbytes;
	const void *data;  /* borrowed; NULL when fill is used */
	gm_st_fill_fn fill;
	void *ctx;
};

struct gm_st_writer {
	struct wtensor *t;
	size_t n, alloc;
	char **meta_keys, **meta_values;
	size_t nmeta, meta_alloc;
	uint64_t total;    /* data buffer size so far */
};

gm_st_writer *gm_st_writer_new(void)
{
	return gm_xcalloc(1, sizeof(gm_st_writer));
}

void gm_st_writer_free(gm_st_writer *w)
{
	size_t i;

	if (!w)
		return;
	for (i = 0; i < w->n; i++)
		free(w->t[i].name);
	for (i = 0; i < w->nmeta; i++) {
		free(w->meta_keys[i]);
		free(w->meta_values[i]);
	}
	free(w->t);
	free(w->meta_keys);
	free(w->meta_values);
	free(w);
}

int gm_st_writer_set_metadata(gm_st_writer *w, const char *key, const char *value, gm_error *err)
{
	size_t i;

	if (!key || !value)
		return gm_error_set(err, GM_EINVAL, "safetensors metadata keys and values must not be NULL");
	if (!utf8_valid(key) || !utf8_valid(value))
		return gm_error_set(err, GM_EINVAL, "safetensors metadata '%s' is not valid UTF-8", key);
	/* Setting a key again replaces its value in place. */
	for (i = 0; i < w->nmeta; i++) {
		if (!strcmp(w->meta_keys[i], key)) {
			free(w->meta_values[i]);
			w->meta_values[i] = gm_xstrdup(value);
			return 0;
		}
	}
	if (w->nmeta == w->meta_alloc) {
		w->meta_alloc = w->meta_alloc ? 2 * w->meta_alloc : 8;
		w->meta_keys = gm_xrealloc(w->meta_keys, w->meta_alloc * sizeof(char *));
		w->meta_values = gm_xrealloc(w->meta_values, w->meta_alloc * sizeof(char *));
	}
	w->meta_keys[w->nmeta] = gm_xstrdup(key);
	w->meta_values[w->nmeta++] = gm_xstrdup(value);
	return 0;
}

static int check_new_tensor(const gm_st_writer *w, const char *name, enum gm_dtype dtype, int ndim,
			    const int64_t *shape, uint64_t *nbytes, gm_error *err)
{
	uint64_t numel = 1;
	int i, ret;

	if (!name)
		return gm_error_set(err, GM_EINVAL, "a tensor name must not be NULL");
	if (!strcmp(name, METADATA_KEY))
		return gm_error_set(err, GM_EINVAL, "'%s' is reserved and cannot name a tensor", METADATA_KEY);
	if (!utf8_valid(name))
		return gm_error_set(err, GM_EINVAL, "tensor name '%s' is not valid UTF-8", name);
	if ((unsigned)dtype >= GM_DTYPE_COUNT)
		return gm_error_set(err, GM_EINVAL, "tensor '%s': invalid dtype %d", name, (int)dtype);
	if (gm_dtype_is_block(dtype))
		return gm_error_set(err, GM_EINVAL, "tensor '%s': %s is a GGUF block type, not a safetensors dtype",
				    name, gm_dtype_name(dtype));
	if (ndim < 0 || ndim > GM_ST_MAX_DIMS || (ndim && !shape))
		return gm_error_set(err, GM_EINVAL, "tensor '%s': %d dimensions (0 to %d are supported)", name,
				    ndim, GM_ST_MAX_DIMS);
	for (i = 0; i < ndim; i++) {
		if (shape[i] < 0)
			return gm_error_set(err, GM_EINVAL, "tensor '%s': dimension %d is negative (%lld)", name, i,
					    (long long)shape[i]);
		if (__builtin_mul_overflow(numel, (uint64_t)shape[i], &numel))
			return gm_error_set(err, GM_EINVAL, "tensor '%s': too many elements", name);
	}
	ret = gm_dtype_nbytes(dtype, numel, nbytes, err);
	if (ret) {
		if (err)
			err->code = GM_EINVAL;
		gm_error_prefix(err, "tensor '%s'", name);
		return GM_EINVAL;
	}
	if (w->total + *nbytes < w->total)
		return gm_error_set(err, GM_EINVAL, "tensor '%s': the file would exceed 2^64 bytes", name);
	return 0;
}

static int add_tensor(gm_st_writer *w, const char *name, enum gm_dtype dtype, int ndim, const int64_t *shape,
		      const void *data, gm_st_fill_fn fill, void *ctx, gm_error *err)
{
	struct wtensor *t;
	uint64_t nbytes;
	int ret = check_new_tensor(w, name, dtype, ndim, shape, &nbytes, err);

	if (ret)
		return ret;
	if (!fill && !data && nbytes)
		return gm_error_set(err, GM_EINVAL, "tensor '%s': no data", name);
	if (w->n == w->alloc) {
		w->alloc = w->alloc ? 2 * w->alloc : 64;
		w->t = gm_xrealloc(w->t, w->alloc * sizeof(*w->t));
	}
	t = &w->t[w->n++];
	memset(t, 0, sizeof(*t));
	t->name = gm_xstrdup(name);
	t->dtype = dtype;
	t->ndim = ndim;
	if (ndim)
		memcpy(t->shape, shape, (size_t)ndim * sizeof(*shape));
	t->nbytes = nbytes;
	t->data = data;
	t->fill = fill;
	t->ctx = ctx;
	w->total += nbytes;
	return 0;
}

int gm_st_writer_add(gm_st_writer *w, const char *name, enum gm_dtype dtype, int ndim, const int64_t *shape,
		     const void *data, gm_error *err)
{
	return add_tensor(w, name, dtype, ndim, shape, data, NULL, NULL, err);
}

int gm_st_writer_add_fill(gm_st_writer *w, const char *name, enum gm_dtype dtype, int ndim,
			  const int64_t *shape, gm_st_fill_fn fill, void *ctx, gm_error *err)
{
	if (!fill)
		return gm_error_set(err, GM_EINVAL, "tensor '%s': no fill function", name ? name : "(null)");
	return add_tensor(w, name, dtype, ndim, shape, NULL, fill, ctx, err);
}

/* A JSON string escaped as serde_json escapes it (the reference writer), so
 * that our headers match its byte for byte: only '"', '\\' and control
 * characters are escaped, with short forms where JSON has them and
 * lowercase \u00xx otherwise; everything else, UTF-8 included, is literal. */
static void add_json_string(gm_buf *b, const char *s)
{
	gm_buf_addch(b, '"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		switch (c) {
		case '"': gm_buf_adds(b, "\\\""); break;
		case '\\': gm_buf_adds(b, "\\\\"); break;
		case '\b': gm_buf_adds(b, "\\b"); break;
		case '\f': gm_buf_adds(b, "\\f"); break;
		case '\n': gm_buf_adds(b, "\\n"); break;
		case '\r': gm_buf_adds(b, "\\r"); break;
		case '\t': gm_buf_adds(b, "\\t"); break;
		default:
			if (c < 0x20)
				gm_buf_addf(b, "\\u%04x", c);
			else
				gm_buf_addch(b, c);
		}
	}
	gm_buf_addch(b, '"');
}

static void build_header(const gm_st_writer *w, gm_buf *h)
{
	uint64_t off = 0;
	size_t i;
	int j;

	gm_buf_addch(h, '{');
	if (w->nmeta) {
		gm_buf_adds(h, "\"" METADATA_KEY "\":{");
		for (i = 0; i < w->nmeta; i++) {
			if (i)
				gm_buf_addch(h, ',');
			add_json_string(h, w->meta_keys[i]);
			gm_buf_addch(h, ':');
			add_json_string(h, w->meta_values[i]);
		}
		gm_buf_addch(h, '}');
	}
	for (i = 0; i < w->n; i++) {
		const struct wtensor *t = &w->t[i];
		if (i || w->nmeta)
			gm_buf_addch(h, ',');
		add_json_string(h, t->name);
		gm_buf_addf(h, ":{\"dtype\":\"%s\",\"shape\":[", gm_dtype_name(t->dtype));
		for (j = 0; j < t->ndim; j++)
			gm_buf_addf(h, "%s%lld", j ? "," : "", (long long)t->shape[j]);
		gm_buf_addf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
			    (unsigned long long)(off + t->nbytes));
		off += t->nbytes;
	}
	gm_buf_addch(h, '}');
	/* Spaces up to a multiple of 8 keep the data buffer 8-byte aligned. */
	while (h->len % 8)
		gm_buf_addch(h, ' ');
}

static int cmp_wname(const void *a, const void *b)
{
	return strcmp((*(const struct wtensor *const *)a)->name, (*(const struct wtensor *const *)b)->name);
}

static int check_unique(const gm_st_writer *w, const char *path, gm_error *err)
{
	const struct wtensor **s;
	size_t i;
	int ret = 0;

	if (w->n < 2)
		return 0;
	s = gm_xmalloc(w->n * sizeof(*s));
	for (i = 0; i < w->n; i++)
		s[i] = &w->t[i];
	qsort(s, w->n, sizeof(*s), cmp_wname);
	for (i = 1; i < w->n && !ret; i++)
		if (!strcmp(s[i - 1]->name, s[i]->name))
			ret = gm_error_set(err, GM_EINVAL, "%s: tensor '%s' was added twice", path, s[i]->name);
	free(s);
	return ret;
}

struct chunk {
	unsigned char *buf;
	uint64_t cap;
};

static int write_filled(gm_atomic_file *af, const struct wtensor *t, struct chunk *c, gm_error *err)
{
	uint64_t off, len, want = t->nbytes < FILL_CHUNK ? t->nbytes : FILL_CHUNK;
	int ret;

	if (c->cap < want) {
		c->buf = gm_xrealloc(c->buf, (size_t)want);
		c->cap = want;
	}
	for (off = 0; off < t->nbytes; off += len) {
		len = t->nbytes - off < c->cap ? t->nbytes - off : c->cap;
		gm_error_clear(err);
		ret = t->fill(t->ctx, t->name, c->buf, off, len, err);
		if (ret) {
			ret = ret < 0 ? ret : GM_ERROR;
			if (err && !err->msg[0])
				return gm_error_set(err, ret, "%s: cannot produce the data of tensor '%s'",
						    af->path, t->name);
			gm_error_prefix(err, "%s: tensor '%s'", af->path, t->name);
			return ret;
		}
		ret = gm_atomic_write(af, c->buf, (size_t)len, err);
		if (ret)
			return ret;
	}
	return 0;
}

int gm_st_writer_write(gm_st_writer *w, const char *path, gm_error *err)
{
	gm_atomic_file af;
	gm_buf h = GM_BUF_INIT;
	struct chunk chunk = { NULL, 0 };
	unsigned char len8[8];
	size_t i;
	int ret;

	ret = check_unique(w, path, err);
	if (ret)
		return ret;
	build_header(w, &h);
	if (h.len > GM_ST_MAX_HEADER) {
		ret = gm_error_set(err, GM_EINVAL, "%s: the header would be %zu bytes, over the limit of %u", path,
				   h.len, GM_ST_MAX_HEADER);
		gm_buf_release(&h);
		return ret;
	}
	for (i = 0; i < 8; i++)
		len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
	ret = gm_atomic_open(&af, path, 0644, err);
	if (!ret)
		ret = gm_atomic_write(&af, len8, 8, err);
	if (!ret)
		ret = gm_atomic_write(&af, h.buf, h.len, err);
	for (i = 0; !ret && i < w->n; i++) {
		const struct wtensor *t = &w->t[i];
		if (t->fill)
			ret = write_filled(&af, t, &chunk, err);
		else if (t->nbytes)
			ret = gm_atomic_write(&af, t->data, (size_t)t->nbytes, err);
	}
	if (!ret)
		ret = gm_atomic_commit(&af, err);
	else if (af.path)
		gm_atomic_abort(&af);
	free(chunk.buf);
	gm_buf_release(&h);
	return ret;
}

void gm_st_dtype_mix(const gm_st_file *f, char *out, size_t n)
{
	uint64_t numel[GM_DTYPE_COUNT] = { 0 };
	size_t i;

	for (i = 0; i < gm_st_count(f); i++)
		numel[gm_st_tensor(f, i)->dtype] += gm_st_tensor(f, i)->numel;
	gm_dtype_mix_name(numel, out, n);
}
