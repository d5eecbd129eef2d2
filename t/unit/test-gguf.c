/*
 * test-gguf.c - the GGUF reader on hand-built files, good and hostile.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "formats/gguf.h"
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

int main(void)
{
	test_good();
	test_hostile();
	test_write(32);
	test_write(64);
	return tap_done();
}
