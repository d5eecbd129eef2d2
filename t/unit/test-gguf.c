/*
 * test-gguf.c - the GGUF reader on hand-built files, good and hostile.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <sys/stat.h>
#include <unistd.h>

#include <stdlib.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "engine/forward.h"
#include "formats/gguf-export.h"
#include "formats/gguf.h"
#include "formats/model.h"
#include "formats/quant.h"
#include "tap.h"

/* ------------------------------------------------------------ a small builder */

static void u8(gm_buf *b, unsigned v)
{
	unsigned char c = (unsigned char)v;
	gm_buf_add(b, &c, 1);
}

static void le(gm_buf *b, uint64_t v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		u8(b, (unsigned)(v >> (8 * i)) & 0xff);
}

static void str(gm_buf *b, const char *s)
{
	le(b, strlen(s), 8);
	gm_buf_add(b, s, strlen(s));
}

static void f32(gm_buf *b, float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	le(b, u, 4);
}

static void header(gm_buf *b, uint32_t version, uint64_t nt, uint64_t nkv)
{
	gm_buf_add(b, "GGUF", 4);
	le(b, version, 4);
	le(b, nt, 8);
	le(b, nkv, 8);
}

static void key(gm_buf *b, const char *k, uint32_t type)
{
	str(b, k);
	le(b, type, 4);
}

static void tinfo(gm_buf *b, const char *name, int nd, const uint64_t *ne, uint32_t type, uint64_t off)
{
	int i;

	str(b, name);
	le(b, (uint64_t)nd, 4);
	for (i = 0; i < nd; i++)
		le(b, ne[i], 8);
	le(b, type, 4);
	le(b, off, 8);
}

static void pad(gm_buf *b, size_t align)
{
	while (b->len % align)
		u8(b, 0);
}

/* A good file with every value type, nested arrays, and two tensors:
 * "a" f32 ne={3,2} at 0, "b" q8_0 ne={32,1} at data offset align (34 bytes). */
static void good_file(gm_buf *b, uint32_t align)
{
	const uint64_t ne_a[2] = { 3, 2 }, ne_b[2] = { 32, 1 };
	int i;

	header(b, 3, 2, 16);
	key(b, "general.architecture", 8); str(b, "qwen3");
	key(b, "general.alignment", 4); le(b, align, 4);
	key(b, "k.u8", 0); u8(b, 200);
	key(b, "k.i8", 1); u8(b, 0xfe);
	key(b, "k.u16", 2); le(b, 65000, 2);
	key(b, "k.i16", 3); le(b, 0xfffd, 2);
	key(b, "k.i32", 5); le(b, 0xfffffff0u, 4);
	key(b, "k.f32", 6); f32(b, 1.5f);
	key(b, "k.bool", 7); u8(b, 1);
	key(b, "k.u64", 10); le(b, 1ull << 40, 8);
	key(b, "k.i64", 11); le(b, (uint64_t)-7, 8);
	key(b, "k.f64", 12); { double d = 0.25; uint64_t u; memcpy(&u, &d, 8); le(b, u, 8); }
	key(b, "k.strs", 9); le(b, 8, 4); le(b, 3, 8); str(b, "x"); str(b, ""); str(b, "hello");
	key(b, "k.ints", 9); le(b, 5, 4); le(b, 2, 8); le(b, 3, 4); le(b, (uint64_t)-4, 4);
	key(b, "k.floats", 9); le(b, 6, 4); le(b, 2, 8); f32(b, 0.5f); f32(b, -2.0f);
	/* an array of two arrays of strings */
	key(b, "k.nested", 9); le(b, 9, 4); le(b, 2, 8);
	for (i = 0; i < 2; i++) {
		le(b, 8, 4); le(b, 1, 8); str(b, i ? "b" : "a");
	}
	tinfo(b, "a", 2, ne_a, 0, 0);
	tinfo(b, "b", 2, ne_b, 8, align);
	pad(b, align);
	for (i = 0; i < 6; i++)
		f32(b, (float)i);
	pad(b, align); /* "b" at data offset align */
	for (i = 0; i < 34; i++)
		u8(b, (unsigned)i);
	pad(b, align); /* as writers pad every tensor */
}

static int open_buf(const gm_buf *b, gm_gguf **g, gm_error *err)
{
	gm_error_clear(err);
	return gm_gguf_open_memory(b->buf, b->len, "t.gguf", g, err);
}

static void test_good(void)
{
	gm_buf b = GM_BUF_INIT;
	gm_error err = GM_ERROR_INIT;
	gm_gguf *g = NULL;
	enum gm_gguf_vtype et;
	const gm_tensor *t;
	const char *s;
	uint64_t n;
	int64_t i;
	double d;
	size_t len;
	int v;

	good_file(&b, 32);
	ok(open_buf(&b, &g, &err) == 0, "a good file opens (%s)", err.msg);
	if (!g)
		return;
	ok(gm_gguf_version(g) == 3 && gm_gguf_alignment(g) == 32 && gm_gguf_kv_count(g) == 16, "header");
	ok(!gm_gguf_get_string(g, "general.architecture", &s, &len, &err) && !strcmp(s, "qwen3") && len == 5,
	   "string");
	ok(!gm_gguf_get_int(g, "k.u8", &i, &err) && i == 200, "uint8");
	ok(!gm_gguf_get_int(g, "k.i8", &i, &err) && i == -2, "int8 sign-extended");
	ok(!gm_gguf_get_int(g, "k.u16", &i, &err) && i == 65000, "uint16");
	ok(!gm_gguf_get_int(g, "k.i16", &i, &err) && i == -3, "int16");
	ok(!gm_gguf_get_int(g, "k.i32", &i, &err) && i == -16, "int32");
	ok(!gm_gguf_get_int(g, "k.u64", &i, &err) && i == (1ll << 40), "uint64");
	ok(!gm_gguf_get_int(g, "k.i64", &i, &err) && i == -7, "int64");
	ok(!gm_gguf_get_float(g, "k.f32", &d, &err) && d == 1.5, "float32");
	ok(!gm_gguf_get_float(g, "k.f64", &d, &err) && d == 0.25, "float64");
	ok(!gm_gguf_get_float(g, "k.u16", &d, &err) && d == 65000, "an integer read as a number");
	ok(!gm_gguf_get_bool(g, "k.bool", &v, &err) && v == 1, "bool");
	ok_error(gm_gguf_get_int(g, "k.f32", &i, &err), &err, GM_EFORMAT, "'k.f32' is a float32", "type mismatch");
	ok_error(gm_gguf_get_int(g, "nope", &i, &err), &err, GM_ENOENT, "no metadata key 'nope'", "absent key");
	ok(!gm_gguf_get_array(g, "k.strs", &et, &n, &err) && et == GM_GGUF_STRING && n == 3, "string array");
	ok(!gm_gguf_array_string(g, "k.strs", 2, &s, &len, &err) && len == 5 && !memcmp(s, "hello", 5),
	   "string array element");
	ok(!gm_gguf_array_string(g, "k.strs", 1, &s, &len, &err) && len == 0, "empty string element");
	ok_error(gm_gguf_array_string(g, "k.strs", 3, &s, &len, &err), &err, GM_EINVAL, "index 3", "index bound");
	ok(!gm_gguf_array_int(g, "k.ints", 1, &i, &err) && i == -4, "int array");
	ok(!gm_gguf_array_float(g, "k.floats", 1, &d, &err) && d == -2.0, "float array");
	ok(!gm_gguf_get_array(g, "k.nested", &et, &n, &err) && et == GM_GGUF_ARRAY && n == 2, "nested array");
	ok_error(gm_gguf_array_int(g, "k.strs", 0, &i, &err), &err, GM_EFORMAT, "array of string",
		 "array type mismatch");
	ok(gm_gguf_tensor_count(g) == 2, "two tensors");
	t = gm_gguf_find_tensor(g, "a");
	ok(t && t->dtype == GM_DTYPE_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 &&
	   t->nbytes == 24 && ((const float *)t->data)[5] == 5.0f, "f32 tensor: shape reversed, data");
	t = gm_gguf_find_tensor(g, "b");
	ok(t && t->dtype == GM_DTYPE_Q8_0 && t->nbytes == 34 && ((const unsigned char *)t->data)[33] == 33,
	   "q8_0 tensor");
	ok(!gm_gguf_find_tensor(g, "c"), "absent tensor");
	gm_gguf_close(g);

	/* alignment 64 moves the data section */
	gm_buf_release(&b);
	good_file(&b, 64);
	ok(open_buf(&b, &g, &err) == 0 && gm_gguf_data_offset(g) % 64 == 0, "general.alignment 64");
	gm_gguf_close(g);
	gm_buf_release(&b);
}

/* A one-tensor file with the given tensor info fields. */
static void one_tensor(gm_buf *b, int nd, const uint64_t *ne, uint32_t type, uint64_t off, size_t data)
{
	size_t i;

	header(b, 3, 1, 0);
	tinfo(b, "w", nd, ne, type, off);
	pad(b, 32);
	for (i = 0; i < data; i++)
		u8(b, 0);
}

static void test_hostile(void)
{
	gm_buf b = GM_BUF_INIT;
	gm_error err = GM_ERROR_INIT;
	gm_gguf *g = NULL;
	uint64_t ne[4] = { 4, 2, 1, 1 };
	size_t cut;

#define HOSTILE(code, frag, title)                                                  \
	do {                                                                        \
		ok_error(open_buf(&b, &g, &err), &err, code, frag, title);         \
		gm_gguf_close(g);                                                   \
		g = NULL;                                                           \
		gm_buf_release(&b);                                                 \
	} while (0)

	gm_buf_add(&b, "GGUX", 4); le(&b, 3, 4);
	HOSTILE(GM_EFORMAT, "no \"GGUF\" magic", "bad magic");
	gm_buf_add(&b, "GG", 2);
	HOSTILE(GM_EFORMAT, "not a GGUF file", "too short");
	header(&b, 1, 0, 0);
	HOSTILE(GM_EUNSUPPORTED, "version 1", "version 1");
	gm_buf_add(&b, "GGUF", 4); le(&b, 3u << 24, 4); le(&b, 0, 16);
	HOSTILE(GM_EUNSUPPORTED, "big-endian", "big-endian");
	header(&b, 3, 0, 1ull << 60);
	HOSTILE(GM_EFORMAT, "cannot fit", "absurd key count");
	header(&b, 3, 1ull << 60, 0);
	HOSTILE(GM_EFORMAT, "cannot fit", "absurd tensor count");
	header(&b, 3, 0, 1); le(&b, 1ull << 62, 8); le(&b, 0, 8);
	HOSTILE(GM_EFORMAT, "has length", "absurd key length");
	header(&b, 3, 0, 1); key(&b, "k", 8); le(&b, 1ull << 62, 8);
	HOSTILE(GM_EFORMAT, "truncated", "string past the end");
	header(&b, 3, 0, 1); key(&b, "k", 13); le(&b, 0, 8);
	HOSTILE(GM_EFORMAT, "unknown value type 13", "unknown value type");
	header(&b, 3, 0, 1); key(&b, "k", 9); le(&b, 4, 4); le(&b, 1ull << 61, 8);
	HOSTILE(GM_EFORMAT, "does not fit", "absurd array count");
	header(&b, 3, 0, 1); key(&b, "k", 9); le(&b, 77, 4); le(&b, 0, 8);
	HOSTILE(GM_EFORMAT, "unknown value type 77", "array of unknown type");
	{
		int i;

		header(&b, 3, 0, 1); key(&b, "k", 9);
		for (i = 0; i < 20; i++) {
			le(&b, 9, 4); le(&b, 1, 8);
		}
		le(&b, 4, 4); le(&b, 0, 8);
		gm_buf_add(&b, "................................................................", 64);
		HOSTILE(GM_EFORMAT, "nested deeper", "deep nesting");
	}
	header(&b, 3, 0, 2); key(&b, "k", 4); le(&b, 1, 4); key(&b, "k", 4); le(&b, 2, 4);
	HOSTILE(GM_EFORMAT, "'k' appears twice", "duplicate key");
	header(&b, 3, 0, 1); key(&b, "general.alignment", 4); le(&b, 48, 4);
	HOSTILE(GM_EFORMAT, "not a power of two", "bad alignment");
	header(&b, 3, 0, 1); key(&b, "general.alignment", 10); le(&b, 32, 8);
	HOSTILE(GM_EFORMAT, "must be a uint32", "alignment of the wrong type");
	one_tensor(&b, 5, ne, 0, 0, 64);
	HOSTILE(GM_EFORMAT, "5 dimensions", "too many dimensions");
	{
		uint64_t big[2] = { 1ull << 40, 1ull << 40 };
		one_tensor(&b, 2, big, 0, 0, 64);
		HOSTILE(GM_EFORMAT, "overflow", "dimension product overflow");
	}
	{
		uint64_t big[1] = { 1ull << 62 };
		one_tensor(&b, 1, big, 0, 0, 64);
		HOSTILE(GM_EFORMAT, "overflow", "byte size overflow");
	}
	one_tensor(&b, 2, ne, 16, 0, 64);
	HOSTILE(GM_EUNSUPPORTED, "tensor 'w' has type iq2_xxs", "i-quant refused naming it");
	one_tensor(&b, 2, ne, 35, 0, 64);
	HOSTILE(GM_EUNSUPPORTED, "type tq2_0", "ternary type refused");
	one_tensor(&b, 2, ne, 4, 0, 64);
	HOSTILE(GM_EFORMAT, "unknown ggml type 4", "removed type id");
	one_tensor(&b, 2, ne, 2000, 0, 64);
	HOSTILE(GM_EFORMAT, "unknown ggml type 2000", "unknown type id");
	one_tensor(&b, 2, ne, 8, 0, 64);
	HOSTILE(GM_EFORMAT, "not a whole number of 32-element blocks", "partial block row");
	one_tensor(&b, 2, ne, 0, 64, 64);
	HOSTILE(GM_EFORMAT, "past the end", "tensor past the end");
	one_tensor(&b, 2, ne, 0, 16, 64);
	HOSTILE(GM_EFORMAT, "not a multiple of the alignment", "unaligned offset");
	one_tensor(&b, 2, ne, 0, (uint64_t)-32, 64);
	HOSTILE(GM_EFORMAT, "past the end", "offset near 2^64");
	{
		header(&b, 3, 2, 0);
		tinfo(&b, "w1", 2, ne, 0, 0);
		tinfo(&b, "w2", 2, ne, 0, 0);
		pad(&b, 32);
		le(&b, 0, 64);
		HOSTILE(GM_EFORMAT, "overlap", "overlapping tensors");
		header(&b, 3, 2, 0);
		tinfo(&b, "w", 2, ne, 0, 0);
		tinfo(&b, "w", 2, ne, 0, 32);
		pad(&b, 32);
		le(&b, 0, 8); le(&b, 0, 8); le(&b, 0, 8); le(&b, 0, 8); le(&b, 0, 8); le(&b, 0, 8); le(&b, 0, 8);
		le(&b, 0, 8);
		HOSTILE(GM_EFORMAT, "'w' appears twice", "duplicate tensor name");
	}
	/* every truncation of a good file fails cleanly */
	{
		gm_buf full = GM_BUF_INIT;
		int all = 1;

		size_t end;

		good_file(&full, 32);
		/* up to the end of the last tensor's bytes (the padding after it is optional) */
		if (gm_gguf_open_memory(full.buf, full.len, "t.gguf", &g, &err))
			return;
		end = (size_t)((const char *)gm_gguf_find_tensor(g, "b")->data + 34 - full.buf);
		gm_gguf_close(g);
		g = NULL;
		for (cut = 0; cut < end; cut++) {
			gm_error_clear(&err);
			if (gm_gguf_open_memory(full.buf, cut, "t.gguf", &g, &err) != GM_EFORMAT) {
				all = 0;
				printf("# cut at %zu: %s\n", cut, err.msg);
			}
			gm_gguf_close(g);
			g = NULL;
		}
		ok(all, "every truncation of a good file is a format error");
		gm_buf_release(&full);
	}
#undef HOSTILE
}

/* Reading a file and writing its keys and tensors back gives the same bytes. */
static void test_write(uint32_t align)
{
	char path[] = "/tmp/test-gguf-XXXXXX";
	gm_buf b = GM_BUF_INIT, back = GM_BUF_INIT;
	gm_error err = GM_ERROR_INIT;
	gm_gguf *g = NULL, *g2 = NULL;
	gm_gguf_writer *w;
	size_t i;
	int fd, ret = 0;

	good_file(&b, align);
	fd = mkstemp(path);
	close(fd);
	ok(open_buf(&b, &g, &err) == 0, "round trip (alignment %u): read", align);
	w = gm_gguf_writer_new(align);
	for (i = 0; !ret && i < gm_gguf_kv_count(g); i++)
		ret = gm_gguf_writer_copy_kv(w, g, i, &err);
	for (i = 0; !ret && i < gm_gguf_tensor_count(g); i++) {
		const gm_tensor *t = gm_gguf_tensor(g, i);
		ret = gm_gguf_writer_add_tensor(w, t->name, t->dtype, t->ndim, t->shape, t->data, &err);
	}
	ok(!ret && !gm_gguf_writer_write(w, path, &err), "round trip: written (%s)", err.msg);
	ok(!gm_read_file(path, &back, &err) && back.len == b.len && !memcmp(back.buf, b.buf, b.len),
	   "round trip: the same bytes (%zu, %zu)", back.len, b.len);
	ok(!gm_gguf_open(path, &g2, &err) && gm_gguf_tensor_count(g2) == 2, "round trip: the file reads");
	gm_gguf_close(g2);
	gm_gguf_writer_free(w);
	gm_gguf_close(g);
	unlink(path);

	/* typed setters, and what they refuse */
	w = gm_gguf_writer_new(0);
	{
		const char *strs[2] = { "a", "bc" };
		size_t lens[2] = { 1, 2 };
		int32_t v[3] = { 1, -2, 3 };
		const int64_t shape[2] = { 2, 32 };
		static const unsigned char q[68];
		const char *s;
		size_t len;
		int64_t x;
		double d;

		ok(!gm_gguf_writer_set_string(w, "general.architecture", "qwen3", &err) &&
		   !gm_gguf_writer_set_int(w, "u32", GM_GGUF_UINT32, 4000000000LL, &err) &&
		   !gm_gguf_writer_set_int(w, "b", GM_GGUF_BOOL, 1, &err) &&
		   !gm_gguf_writer_set_float(w, "f", GM_GGUF_FLOAT32, 0.5, &err) &&
		   !gm_gguf_writer_set_strings(w, "ss", strs, lens, 2, &err) &&
		   !gm_gguf_writer_set_int32s(w, "ii", v, 3, &err) &&
		   !gm_gguf_writer_set_int(w, "u32", GM_GGUF_UINT32, 7, &err) &&
		   !gm_gguf_writer_add_tensor(w, "q", GM_DTYPE_Q8_0, 2, shape, q, &err), "setters");
		ok_error(gm_gguf_writer_set_int(w, "x", GM_GGUF_UINT8, 256, &err), &err, GM_EINVAL, "does not fit",
			 "an integer that does not fit its type");
		ok_error(gm_gguf_writer_add_tensor(w, "q", GM_DTYPE_Q8_0, 2, shape, q, &err), &err, GM_EINVAL,
			 "added twice", "a tensor added twice");
		ok_error(gm_gguf_writer_add_tensor(w, "r", GM_DTYPE_C64, 2, shape, q, &err), &err, GM_EINVAL,
			 "no type for", "a dtype GGUF cannot hold");
		ok(!gm_gguf_writer_write(w, path, &err) && !gm_gguf_open(path, &g, &err), "written and read");
		ok(g && !gm_gguf_get_int(g, "u32", &x, &err) && x == 7 && gm_gguf_kv_count(g) == 6 &&
		   !strcmp(gm_gguf_kv_key(g, 1), "u32"), "a key set twice keeps its place, the last value");
		ok(g && !gm_gguf_array_string(g, "ss", 1, &s, &len, &err) && len == 2 && !memcmp(s, "bc", 2) &&
		   !gm_gguf_array_int(g, "ii", 1, &x, &err) && x == -2 && !gm_gguf_get_float(g, "f", &d, &err) &&
		   d == 0.5, "arrays and floats read back");
		ok(g && gm_gguf_find_tensor(g, "q") && gm_gguf_find_tensor(g, "q")->shape[1] == 32 &&
		   gm_gguf_find_tensor(g, "q")->nbytes == 68, "the tensor reads back");
		gm_gguf_close(g);
		unlink(path);
	}
	gm_gguf_writer_free(w);
	gm_buf_release(&b);
	gm_buf_release(&back);
}

/* ------------------------------------------------------------ Llama export */

/*
 * A small random Llama (hidden 256, so that Q4_K rows are whole blocks; 2
 * layers; 4 query heads on 2 kv heads of 64) with the pocket model's
 * vocabulary re-spelled as a Llama 3 tokenizer (the Llama 3 split regex,
 * no normalizer, ignore_merges, a post-processor that adds bos), written as
 * safetensors, then exported by gm_gguf_export and read back by our GGUF
 * reader.
 */
#define L_H 256
#define L_FF 512
#define L_L 2
#define L_NH 4
#define L_NKV 2
#define L_HD 64
#define L_V 4096
#define L_RE_LLAMA3 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

struct llama_case {
	const char *name;
	enum gm_dtype dtype;
	int tied, llama3;
};

static uint64_t l_rng = 0x2545f4914f6cdd1dULL;

static float l_rand(void)
{
	l_rng ^= l_rng << 13;
	l_rng ^= l_rng >> 7;
	l_rng ^= l_rng << 17;
	return (float)((l_rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static void l_add(gm_st_writer *wr, void **bufs, int *nb, enum gm_dtype t, const char *name, int64_t d0, int64_t d1,
		  int norm)
{
	int64_t shape[2] = { d0, d1 };
	size_t n = (size_t)(d0 * (d1 ? d1 : 1)), i;
	float *vals = malloc(n * sizeof(*vals));

	for (i = 0; i < n; i++)
		vals[i] = norm ? 1.0f + 0.2f * l_rand() : 0.15f * l_rand();
	bufs[*nb] = malloc(n * 4);
	gm_dtype_from_f32(t, vals, bufs[*nb], n, NULL);
	gm_st_writer_add(wr, name, t, d1 ? 2 : 1, shape, bufs[*nb], NULL);
	(*nb)++;
	free(vals);
}

/* The pocket model's tokenizer.json as a Llama 3 one, into dir. */
static int l_tokenizer(const char *dir, int byte_fallback)
{
	gm_buf p = GM_BUF_INIT;
	gm_error err = GM_ERROR_INIT;
	json_object *tok = NULL, *pre, *re, *pp, *single, *e, *o;
	int ret;

	gm_buf_addf(&p, "%s/contrib/models/pocket-qwen3/tokenizer.json", tap_srcdir());
	if ((ret = gm_json_parse_file(p.buf, &tok, &err)))
		goto out;
	json_object_object_add(tok, "normalizer", NULL);
	json_object_object_get_ex(tok, "pre_tokenizer", &pre);
	json_object_object_get_ex(json_object_array_get_idx(json_object_object_get(pre, "pretokenizers"), 0),
				  "pattern", &re);
	json_object_object_add(re, "Regex", json_object_new_string(L_RE_LLAMA3));
	json_object_object_add(json_object_object_get(tok, "model"), "ignore_merges", json_object_new_boolean(1));
	if (byte_fallback)
		json_object_object_add(json_object_object_get(tok, "model"), "byte_fallback",
				       json_object_new_boolean(1));
	/* Llama 3's post-processor: bos, then the sequence */
	pp = json_object_new_object();
	json_object_object_add(pp, "type", json_object_new_string("TemplateProcessing"));
	single = json_object_new_array();
	e = json_object_new_object();
	o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string("<|endoftext|>"));
	json_object_object_add(o, "type_id", json_object_new_int(0));
	json_object_object_add(e, "SpecialToken", o);
	json_object_array_add(single, e);
	e = json_object_new_object();
	o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string("A"));
	json_object_object_add(o, "type_id", json_object_new_int(0));
	json_object_object_add(e, "Sequence", o);
	json_object_array_add(single, e);
	json_object_object_add(pp, "single", single);
	json_object_object_add(tok, "post_processor", pp);
	gm_buf_reset(&p);
	gm_buf_addf(&p, "%s/tokenizer.json", dir);
	ret = json_object_to_file_ext(p.buf, tok, JSON_C_TO_STRING_PLAIN) ? -1 : 0;
	gm_buf_reset(&p);
	gm_buf_addf(&p, "%s/tokenizer_config.json", dir);
	if (!ret) {
		static const char cfg[] = "{\"bos_token\": \"<|endoftext|>\", \"eos_token\": \"<|im_end|>\"}\n";
		ret = gm_write_file_atomic(p.buf, cfg, sizeof(cfg) - 1, 0644, &err);
	}
out:
	json_object_put(tok);
	gm_buf_release(&p);
	return ret;
}

static int l_write_config(const char *dir, const struct llama_case *lc, const char *dtype)
{
	gm_buf p = GM_BUF_INIT, c = GM_BUF_INIT;
	int ret;

	gm_buf_addf(&c, "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %d, "
		    "\"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
		    "\"num_key_value_heads\": %d, \"head_dim\": %d, \"vocab_size\": %d, "
		    "\"max_position_embeddings\": 256, \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0, "
		    "\"tie_word_embeddings\": %s, \"hidden_act\": \"silu\", \"torch_dtype\": \"%s\", "
		    "\"bos_token_id\": 4091, \"eos_token_id\": 4093",
		    L_H, L_FF, L_L, L_NH, L_NKV, L_HD, L_V, lc->tied ? "true" : "false", dtype);
	if (lc->llama3)
		gm_buf_adds(&c, ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
			    "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 16}");
	gm_buf_adds(&c, "}\n");
	gm_buf_addf(&p, "%s/config.json", dir);
	ret = gm_write_file_atomic(p.buf, c.buf, c.len, 0644, NULL);
	gm_buf_release(&p);
	gm_buf_release(&c);
	return ret;
}

static int l_write_model(const char *dir, const struct llama_case *lc)
{
	gm_st_writer *wr = gm_st_writer_new();
	void *bufs[64];
	char name[128];
	int nb = 0, l, i, ret;
	gm_buf p = GM_BUF_INIT;

	l_add(wr, bufs, &nb, lc->dtype, "model.embed_tokens.weight", L_V, L_H, 0);
	l_add(wr, bufs, &nb, lc->dtype, "model.norm.weight", L_H, 0, 1);
	if (!lc->tied)
		l_add(wr, bufs, &nb, lc->dtype, "lm_head.weight", L_V, L_H, 0);
	for (l = 0; l < L_L; l++) {
#define LN(s) (snprintf(name, sizeof(name), "model.layers.%d.%s", l, s), name)
		l_add(wr, bufs, &nb, lc->dtype, LN("input_layernorm.weight"), L_H, 0, 1);
		l_add(wr, bufs, &nb, lc->dtype, LN("post_attention_layernorm.weight"), L_H, 0, 1);
		l_add(wr, bufs, &nb, lc->dtype, LN("self_attn.q_proj.weight"), L_NH * L_HD, L_H, 0);
		l_add(wr, bufs, &nb, lc->dtype, LN("self_attn.k_proj.weight"), L_NKV * L_HD, L_H, 0);
		l_add(wr, bufs, &nb, lc->dtype, LN("self_attn.v_proj.weight"), L_NKV * L_HD, L_H, 0);
		l_add(wr, bufs, &nb, lc->dtype, LN("self_attn.o_proj.weight"), L_H, L_NH * L_HD, 0);
		l_add(wr, bufs, &nb, lc->dtype, LN("mlp.gate_proj.weight"), L_FF, L_H, 0);
		l_add(wr, bufs, &nb, lc->dtype, LN("mlp.up_proj.weight"), L_FF, L_H, 0);
		l_add(wr, bufs, &nb, lc->dtype, LN("mlp.down_proj.weight"), L_H, L_FF, 0);
#undef LN
	}
	gm_buf_addf(&p, "%s/model.safetensors", dir);
	ret = gm_st_writer_write(wr, p.buf, NULL);
	gm_buf_release(&p);
	for (i = 0; i < nb; i++)
		free(bufs[i]);
	gm_st_writer_free(wr);
	return ret ? ret : l_write_config(dir, lc, lc->dtype == GM_DTYPE_F32 ? "float32" : "bfloat16") ||
				   l_tokenizer(dir, 0);
}

/* Logits of every position of ids (n_ids x L_V into out). */
static int l_logits(const gm_model *m, const int32_t *ids, int n, float *out)
{
	gm_forward *f = NULL;
	gm_error err = GM_ERROR_INIT;
	int ret = gm_forward_new(m, 64, 2, &f, &err);

	ret = ret ? ret : gm_forward_eval(f, ids, n, out, 1, &err);
	gm_forward_free(f);
	return ret;
}

/* n greedy tokens after ids (one at a time through the cache) into out. */
static int l_greedy(const gm_model *m, const int32_t *ids, int n_ids, int32_t *out, int n)
{
	gm_forward *f = NULL;
	gm_error err = GM_ERROR_INIT;
	float *lg = malloc(sizeof(float) * L_V);
	int ret = gm_forward_new(m, 64, 2, &f, &err), i, j;

	ret = ret ? ret : gm_forward_eval(f, ids, n_ids, lg, 0, &err);
	for (i = 0; !ret && i < n; i++) {
		for (out[i] = 0, j = 1; j < L_V; j++)
			if (lg[j] > lg[out[i]])
				out[i] = j;
		ret = gm_forward_eval(f, &out[i], 1, lg, 0, &err);
	}
	gm_forward_free(f);
	free(lg);
	return ret;
}

/* The weights of the GGUF model m (as our reader gives them: transformers'
 * names and layout) dequantized to f32, a safetensors model in dir with the
 * source's config and tokenizer: the float reference of a quantized file. */
static int l_dequantized(const gm_model *m, const char *src, const char *dir, const struct llama_case *lc)
{
	gm_st_writer *wr = gm_st_writer_new();
	size_t n = gm_weights_count(m->weights), i;
	float **bufs = calloc(n, sizeof(*bufs));
	gm_buf p = GM_BUF_INIT, q = GM_BUF_INIT;
	int ret = 0;

	for (i = 0; i < n && !ret; i++) {
		const gm_tensor *t = gm_weights_tensor(m->weights, i);
		int64_t row = t->shape[t->ndim - 1], rows = (int64_t)t->numel / row, r;

		bufs[i] = malloc(sizeof(float) * t->numel);
		for (r = 0; r < rows && !ret; r++)
			if (gm_dtype_is_block(t->dtype))
				gm_quant_dequantize(t->dtype, (const char *)t->data + (size_t)r * gm_quant_row_bytes(t->dtype, row),
						    bufs[i] + r * row, row);
			else
				ret = gm_dtype_to_f32(t->dtype, (const char *)t->data + (size_t)(r * row) * gm_dtype_bits(t->dtype) / 8,
						      bufs[i] + r * row, (size_t)row, NULL);
		ret = ret ? ret : gm_st_writer_add(wr, t->name, GM_DTYPE_F32, t->ndim, t->shape, bufs[i], NULL);
	}
	gm_buf_addf(&p, "%s/model.safetensors", dir);
	ret = ret ? ret : gm_st_writer_write(wr, p.buf, NULL);
	ret = ret ? ret : l_write_config(dir, lc, "float32");
	gm_buf_reset(&p);
	gm_buf_addf(&p, "%s/tokenizer.json", src);
	gm_buf_addf(&q, "%s/tokenizer.json", dir);
	ret = ret ? ret : gm_copy_file(p.buf, q.buf, NULL);
	gm_buf_reset(&p);
	gm_buf_reset(&q);
	gm_buf_addf(&p, "%s/tokenizer_config.json", src);
	gm_buf_addf(&q, "%s/tokenizer_config.json", dir);
	ret = ret ? ret : gm_copy_file(p.buf, q.buf, NULL);
	for (i = 0; i < n; i++)
		free(bufs[i]);
	free(bufs);
	gm_st_writer_free(wr);
	gm_buf_release(&p);
	gm_buf_release(&q);
	return ret;
}

/*
 * The quantized model q against its dequantized twin d: 16 greedy tokens
 * after ids.  Both quantize nothing the same way (q's kernels quantize the
 * activations per block too), and a random model has near ties: as in
 * t2004 (t/lib/gguf-greedy.py), d's greedy tokens are fed to q, and at each
 * step q's largest logit is within L_TOL of the logit of d's token, and
 * where the choices differ d sees the two within L_TOL too.  Prints how
 * many of the 16 are q's own argmax, and whether q's free-running greedy
 * continuation is d's.  0 when it holds.
 */
#define L_TOL 0.1
static int l_greedy_check(const gm_model *q, const gm_model *d, const int32_t *ids, const char *name,
			  const char *type)
{
	int32_t want[16], got[16], seq[28];
	float *lq = malloc(sizeof(float) * 28 * L_V), *ld = malloc(sizeof(float) * 28 * L_V);
	int i, j, exact = 0, bad = 0, free_same;
	double worst = 0;

	if (l_greedy(d, ids, 12, want, 16) || l_greedy(q, ids, 12, got, 16)) {
		free(lq);
		free(ld);
		return -1;
	}
	free_same = !memcmp(got, want, sizeof(got));
	memcpy(seq, ids, 12 * sizeof(*seq));
	memcpy(seq + 12, want, 16 * sizeof(*seq));
	if (l_logits(q, seq, 28, lq) || l_logits(d, seq, 28, ld))
		bad = 1;
	for (i = 0; !bad && i < 16; i++) {
		const float *a = lq + (size_t)(11 + i) * L_V, *b = ld + (size_t)(11 + i) * L_V;
		int top = 0;
		double gap;

		for (j = 1; j < L_V; j++)
			if (a[j] > a[top])
				top = j;
		gap = (double)a[top] - a[want[i]];
		exact += top == want[i];
		worst = fmax(worst, gap);
		if (gap > L_TOL || (double)b[want[i]] - b[top] > L_TOL)
			bad = 1;
	}
	printf("# %s: %s: %d of 16 greedy tokens are the quantized model's argmax, largest gap %.4f; "
	       "free-running greedy %s\n", name, type, exact, worst, free_same ? "identical" : "differs");
	free(lq);
	free(ld);
	return bad;
}

/* The file's keys and tensors are llama.cpp's: architecture, hyper-parameters,
 * tokenizer flags, rope_freqs, output.weight only when untied, and the q/k
 * rows in the converter's order. */
static void l_check_file(const char *path, const gm_model *src, const struct llama_case *lc)
{
	gm_gguf *g = NULL;
	gm_error err = GM_ERROR_INIT;
	const char *s = "";
	int64_t v = 0, pre_ok, h, i, j, r;
	int b = 0, rows_ok = 1;
	const gm_tensor *q, *sq;
	gm_buf json = GM_BUF_INIT;

	if (gm_gguf_open(path, &g, &err)) {
		ok(0, "%s: the GGUF opens (%s)", lc->name, err.msg);
		return;
	}
	ok(!gm_gguf_get_string(g, "general.architecture", &s, NULL, NULL) && !strcmp(s, "llama"),
	   "%s: general.architecture llama", lc->name);
	ok(!gm_gguf_get_int(g, "llama.vocab_size", &v, NULL) && v == L_V &&
	   !gm_gguf_get_int(g, "llama.rope.dimension_count", &v, NULL) && v == L_HD &&
	   !gm_gguf_get_int(g, "llama.attention.head_count_kv", &v, NULL) && v == L_NKV,
	   "%s: llama.* hyper-parameters", lc->name);
	pre_ok = !gm_gguf_get_string(g, "tokenizer.ggml.pre", &s, NULL, NULL) && !strcmp(s, "llama-bpe");
	ok(pre_ok && !gm_gguf_get_string(g, "tokenizer.ggml.model", &s, NULL, NULL) && !strcmp(s, "gpt2") &&
	   !gm_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b, NULL) && b &&
	   !gm_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v, NULL) && v == 4091,
	   "%s: tokenizer gpt2, pre llama-bpe (from the split regex), add_bos from the post-processor", lc->name);
	if (gm_gguf_tokenizer_json(g, &json, &err))
		ok(0, "%s: the reader maps the tokenizer back (%s)", lc->name, err.msg);
	else
		ok(strstr(json.buf, "\\\\p{N}{1,3}") != NULL, "%s: the reader maps it back to the Llama 3 regex",
		   lc->name);
	ok(!gm_gguf_find_tensor(g, "output.weight") == !!lc->tied, "%s: output.weight %s", lc->name,
	   lc->tied ? "absent (tied)" : "present (untied)");
	ok(!gm_gguf_find_tensor(g, "rope_freqs.weight") == !lc->llama3 &&
	   (!lc->llama3 || (!gm_gguf_get_int(g, "llama.rope.scaling.original_context_length", &v, NULL) && v == 16)),
	   "%s: rope_freqs.weight %s", lc->name, lc->llama3 ? "and the original context written" : "absent");
	/* the converter's permutation: GGUF row h*hd + 2j + i is transformers row h*hd + i*hd/2 + j */
	q = gm_gguf_find_tensor(g, "blk.1.attn_k.weight");
	sq = gm_weights_find(src->weights, "model.layers.1.self_attn.k_proj.weight");
	if (q && sq && q->dtype == sq->dtype) {
		size_t rb = (size_t)L_H * gm_dtype_bits(q->dtype) / 8;
		for (h = 0; h < L_NKV; h++)
			for (i = 0; i < 2; i++)
				for (j = 0; j < L_HD / 2; j++) {
					r = h * L_HD + 2 * j + i;
					rows_ok &= !memcmp((const char *)q->data + r * rb,
							   (const char *)sq->data + (h * L_HD + i * L_HD / 2 + j) * rb, rb);
				}
	}
	if (q && sq && q->dtype == sq->dtype)
		ok(rows_ok, "%s: attn_k rows in llama.cpp's order", lc->name);
	gm_buf_release(&json);
	gm_gguf_close(g);
}

static void test_llama_case(const struct llama_case *lc, const char *const *types, size_t n_types)
{
	char dir[] = "/tmp/gm-test-gguf-llama-XXXXXX";
	gm_buf path = GM_BUF_INIT, ref = GM_BUF_INIT;
	gm_error err = GM_ERROR_INIT;
	gm_model *m = NULL, *g = NULL, *d = NULL;
	int32_t ids[12];
	float *a = malloc(sizeof(float) * 12 * L_V), *b = malloc(sizeof(float) * 12 * L_V);
	size_t k;
	int i;

	for (i = 0; i < 12; i++)
		ids[i] = (int32_t)((i * 733 + 91) % 4091);
	if (!mkdtemp(dir) || l_write_model(dir, lc) || gm_model_open(dir, &m, &err)) {
		ok(0, "%s: the safetensors model (%s)", lc->name, err.msg);
		goto out;
	}
	ok(!l_logits(m, ids, 12, a), "%s: safetensors logits", lc->name);
	for (k = 0; k < n_types; k++) {
		int quant = strcmp(types[k], "F32") && strcmp(types[k], "BF16");

		gm_buf_reset(&path);
		gm_buf_addf(&path, "%s-%s.gguf", dir, types[k]);
		if (gm_gguf_export(m, types[k], path.buf, &err) || gm_model_open(path.buf, &g, &err)) {
			ok(0, "%s: %s: export and open (%s)", lc->name, types[k], err.msg);
			gm_error_clear(&err);
			continue;
		}
		if (!quant) {
			double rel;
			l_check_file(path.buf, m, lc);
			ok(g->config.rope_scaling == m->config.rope_scaling && g->config.rope_factor == m->config.rope_factor &&
			   g->config.rope_low_freq_factor == m->config.rope_low_freq_factor &&
			   g->config.rope_high_freq_factor == m->config.rope_high_freq_factor &&
			   g->config.rope_original_max_position_embeddings ==
				   m->config.rope_original_max_position_embeddings &&
			   g->config.tie_word_embeddings == m->config.tie_word_embeddings &&
			   g->config.num_key_value_heads == L_NKV,
			   "%s: %s: the config reads back the same (rope scaling, tying, heads)", lc->name, types[k]);
			ok(!l_logits(g, ids, 12, b), "%s: %s: GGUF logits", lc->name, types[k]);
			rel = tap_max_rel(b, a, (size_t)12 * L_V);
			ok(rel <= 1e-6, "%s: %s: logits equal the safetensors model's within 1e-6 relative (%.3g)",
			   lc->name, types[k], rel);
		} else {
			/* the float reference: the same file's weights dequantized */
			gm_buf_reset(&ref);
			gm_buf_addf(&ref, "%s-%s-ref", dir, types[k]);
			if (mkdir(ref.buf, 0755) || l_dequantized(g, dir, ref.buf, lc) || gm_model_open(ref.buf, &d, &err)) {
				ok(0, "%s: %s: dequantized reference (%s)", lc->name, types[k], err.msg);
			} else {
				ok(!l_greedy_check(g, d, ids, lc->name, types[k]),
				   "%s: %s: 16 greedy tokens of the dequantized model: argmax of the quantized one, or ties within 0.1",
				   lc->name, types[k]);
				gm_model_close(d);
				d = NULL;
				l_check_file(path.buf, m, lc);
			}
			gm_remove_tree(ref.buf, NULL);
			/* the safetensors logits again for the next type */
			l_logits(m, ids, 12, a);
		}
		gm_model_close(g);
		g = NULL;
		unlink(path.buf);
	}
out:
	gm_model_close(m);
	gm_remove_tree(dir, NULL);
	gm_buf_release(&path);
	gm_buf_release(&ref);
	free(a);
	free(b);
}

static void test_llama_export(void)
{
	static const struct llama_case untied = { "llama (llama3 rope, f32, untied)", GM_DTYPE_F32, 0, 1 };
	static const struct llama_case tied = { "llama (bf16, tied)", GM_DTYPE_BF16, 1, 0 };
	static const char *const untied_types[] = { "F32", "Q8_0", "Q4_K_M" };
	static const char *const tied_types[] = { "BF16", "F32", "Q8_0" };
	char dir[] = "/tmp/gm-test-gguf-llama-XXXXXX";
	gm_buf path = GM_BUF_INIT;
	gm_error err = GM_ERROR_INIT;
	gm_model *m = NULL;
	int ret;

	test_llama_case(&untied, untied_types, 3);
	test_llama_case(&tied, tied_types, 3);

	/* refused with the reason: SentencePiece-style vocabularies, llama3
	 * scaling the reader would read back differently */
	if (!mkdtemp(dir) || l_write_model(dir, &tied) || l_tokenizer(dir, 1) || gm_model_open(dir, &m, &err)) {
		ok(0, "refusals: model (%s)", err.msg);
		goto out;
	}
	gm_buf_addf(&path, "%s.gguf", dir);
	ret = gm_gguf_export(m, "Q8_0", path.buf, &err);
	ok(ret == GM_EUNSUPPORTED && strstr(err.msg, "a SentencePiece vocabulary as Llama 2's"),
	   "a byte-fallback (SentencePiece-style) tokenizer is refused, naming why (%s)", err.msg);
	gm_error_clear(&err);
	gm_model_close(m);
	m = NULL;
	l_tokenizer(dir, 0);
	{
		struct llama_case odd = tied;
		gm_buf c = GM_BUF_INIT;
		odd.llama3 = 1;
		l_write_config(dir, &odd, "bfloat16");
		gm_buf_addf(&c, "%s/config.json", dir);
		/* high_freq_factor 2: rope_freqs.weight is read back with 4 */
		{
			gm_buf text = GM_BUF_INIT;
			if (!gm_read_file(c.buf, &text, NULL)) {
				char *at = strstr(text.buf, "\"high_freq_factor\": 4.0");
				if (at)
					at[20] = '2';
				gm_write_file_atomic(c.buf, text.buf, text.len, 0644, NULL);
			}
			gm_buf_release(&text);
		}
		gm_buf_release(&c);
	}
	if (gm_model_open(dir, &m, &err)) {
		ok(0, "refusals: model with high_freq_factor 2 (%s)", err.msg);
		goto out;
	}
	ret = gm_gguf_export(m, "F32", path.buf, &err);
	ok(ret == GM_EUNSUPPORTED && strstr(err.msg, "rope_freqs.weight is read with low 1 and high 4"),
	   "llama3 scaling with high_freq_factor 2 is refused, naming why (%s)", err.msg);
	ok(access(path.buf, F_OK) != 0, "and nothing is written");
out:
	gm_model_close(m);
	gm_remove_tree(dir, NULL);
	unlink(path.buf);
	gm_buf_release(&path);
}

int main(void)
{
	test_good();
	test_hostile();
	test_write(32);
	test_write(64);
	test_llama_export();
	return tap_done();
}
