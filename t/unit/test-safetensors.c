/*
 * test-safetensors.c - unit tests for the safetensors reader and writer,
 * the dtype table and conversions, and gm_weights.
 *
 * Expected tensor values were computed from the fixtures with Python's
 * struct module (f32 and bf16 decoded exactly, summed in double in file
 * order), so the sums below are compared exactly: C sums the same doubles
 * in the same order.
 */
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "formats/dtype.h"
#include "base/error.h"
#include "base/fs.h"
#include "formats/safetensors.h"
#include "tap.h"
#include "formats/weights.h"

#define F32_DIR "t/fixtures/models/tiny-qwen3-f32"
#define BF16_DIR "t/fixtures/models/tiny-qwen3-vocab151k"

static const char *const fixture_files[] = {
	F32_DIR "/model.safetensors",
	BF16_DIR "/model.safetensors",
	"t/fixtures/lora/tiny-qwen3-f32-a1-r8-all/adapter_model.safetensors",
	"t/fixtures/lora/tiny-qwen3-f32-a2-r4-qv/adapter_model.safetensors",
	"t/fixtures/lora/tiny-qwen3-f32-a3-r6-rslora-mlp/adapter_model.safetensors",
};

static char tmpdir[PATH_MAX];

static char *fixture(const char *rel)
{
	return gm_path_join(tap_srcdir(), rel);
}

static char *tmp_path(const char *name)
{
	return gm_path_join(tmpdir, name);
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static int read_all(const char *path, gm_buf *out)
{
	gm_error err = GM_ERROR_INIT;

	gm_buf_reset(out);
	return gm_read_file(path, out, &err);
}

static uint64_t le64(const void *p)
{
	const unsigned char *b = p;
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = (v << 8) | b[i];
	return v;
}

static void put_le64(gm_buf *b, uint64_t v)
{
	unsigned char u[8];
	int i;

	for (i = 0; i < 8; i++)
		u[i] = (unsigned char)(v >> (8 * i));
	gm_buf_add(b, u, 8);
}

/* A file image: length, header padded with spaces to 8 bytes, data. */
static void make_image(gm_buf *img, const char *hdr, size_t hlen, const void *data, size_t dlen)
{
	size_t padded = (hlen + 7) / 8 * 8, i;

	gm_buf_reset(img);
	put_le64(img, padded);
	gm_buf_add(img, hdr, hlen);
	for (i = hlen; i < padded; i++)
		gm_buf_addch(img, ' ');
	if (dlen)
		gm_buf_add(img, data, dlen);
}

static const unsigned char filler[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/* Opens a header over dlen bytes of data in memory; returns what
 * gm_st_open_memory returned (closing the file when it was accepted). */
static int try_image(const char *hdr, size_t dlen, gm_error *err)
{
	gm_buf img = GM_BUF_INIT;
	gm_st_file *f = NULL;
	int ret;

	make_image(&img, hdr, strlen(hdr), filler, dlen);
	gm_error_clear(err);
	ret = gm_st_open_memory(img.buf, img.len, "bad.safetensors", &f, err);
	gm_st_close(f);
	gm_buf_release(&img);
	return ret;
}

/* A raw image (no padding added, header length as given). */
static int try_raw(uint64_t hlen, const void *rest, size_t rest_len, gm_error *err)
{
	gm_buf img = GM_BUF_INIT;
	gm_st_file *f = NULL;
	int ret;

	put_le64(&img, hlen);
	gm_buf_add(&img, rest, rest_len);
	gm_error_clear(err);
	ret = gm_st_open_memory(img.buf, img.len, "bad.safetensors", &f, err);
	gm_st_close(f);
	gm_buf_release(&img);
	return ret;
}

#define ENTRY(name, dtype, shape, offsets) \
	"\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offsets "}"

/* ------------------------------------------------------------ reading the fixtures */

static double sum_f32(const gm_tensor *t)
{
	float *v = malloc(t->numel * sizeof(float));
	double s = 0;
	uint64_t i;

	if (!v || gm_dtype_to_f32(t->dtype, t->data, v, t->numel, NULL)) {
		free(v);
		return NAN;
	}
	for (i = 0; i < t->numel; i++)
		s += v[i];
	free(v);
	return s;
}

static float elem_f32(const gm_tensor *t, uint64_t i)
{
	float v = NAN;

	gm_dtype_to_f32(t->dtype, (const char *)t->data + i * gm_dtype_bits(t->dtype) / 8, &v, 1, NULL);
	return v;
}

static uint16_t elem_u16(const gm_tensor *t, uint64_t i)
{
	const unsigned char *p = (const unsigned char *)t->data + 2 * i;
	return (uint16_t)(p[0] | p[1] << 8);
}

static int tiles_buffer(const gm_st_file *f, uint64_t buf_len)
{
	uint64_t end = 0;
	size_t i;

	/* These fixtures are written in offset order, so header order works. */
	for (i = 0; i < gm_st_count(f); i++) {
		const gm_tensor *t = gm_st_tensor(f, i);
		if (t->offset != end)
			return 0;
		end += t->nbytes;
	}
	return end == buf_len;
}

static void test_read_f32(void)
{
	gm_error err = GM_ERROR_INIT;
	char *path = fixture(F32_DIR "/model.safetensors");
	gm_st_file *f = NULL;
	const gm_tensor *t;
	const char *k, *v;
	struct stat st;
	size_t i;
	int sorted = 1, all_f32 = 1, aligned = 1;

	if (!ok(!gm_st_open(path, &f, &err), "open %s", path)) {
		tap_diag("%s", err.msg);
		free(path);
		return;
	}
	ok(!strcmp(gm_st_path(f), path), "gm_st_path is the path given");
	ok(gm_st_count(f) == 36, "36 tensors (%zu)", gm_st_count(f));
	gm_st_metadata_at(f, 0, &k, &v);
	ok(gm_st_metadata_count(f) == 1 && !strcmp(k, "format") && !strcmp(v, "pt"), "metadata is format=pt");
	ok(!strcmp(gm_st_metadata(f, "format"), "pt") && !gm_st_metadata(f, "nope"), "gm_st_metadata looks up keys");
	gm_st_metadata_at(f, 1, &k, &v);
	ok(!k && !v, "gm_st_metadata_at past the end gives NULLs");

	t = gm_st_tensor(f, 0);
	ok(!strcmp(t->name, "lm_head.weight") && t->dtype == GM_DTYPE_F32 && t->ndim == 2 && t->shape[0] == 4096 &&
	   t->shape[1] == 64 && t->numel == 262144 && t->nbytes == 1048576 && t->offset == 0,
	   "first tensor: lm_head.weight F32 [4096, 64] at [0, 1048576)");
	ok(elem_f32(t, 0) == 0x1.09efb6p-6f && elem_f32(t, 262143) == 0x1.60d5d4p-4f,
	   "lm_head.weight first and last values");
	ok(sum_f32(t) == -0x1.e9fc26f884e10p+6, "lm_head.weight sums to %.17g", sum_f32(t));
	t = gm_st_tensor(f, 35);
	ok(!strcmp(t->name, "model.norm.weight") && t->ndim == 1 && t->shape[0] == 64 && t->offset == 2652224 &&
	   t->nbytes == 256, "last tensor: model.norm.weight [64] at 2652224");
	ok(elem_f32(t, 0) == 0x1.9a1a22p-1f && sum_f32(t) == 0x1.0452e274p+6, "model.norm.weight values");
	ok(!gm_st_tensor(f, 36), "gm_st_tensor past the end is NULL");

	t = gm_st_find(f, "model.layers.1.self_attn.q_norm.weight");
	ok(t && t->ndim == 1 && t->shape[0] == 24 && t->offset == 2436384 && elem_f32(t, 0) == 0x1.16fdf2p+0f &&
	   elem_f32(t, 23) == 0x1.29d808p+0f && sum_f32(t) == 0x1.67853778p+4,
	   "gm_st_find: layer 1 q_norm, its offset and values");
	t = gm_st_find(f, "model.embed_tokens.weight");
	ok(t && t->shape[0] == 4096 && t->shape[1] == 64 && t->offset == 1048576 &&
	   elem_f32(t, 0) == 0x1.1d0f9cp-4f && sum_f32(t) == 0x1.04d4b28e6ece2p+6, "embed_tokens values");
	t = gm_st_find(f, "model.layers.2.mlp.down_proj.weight");
	ok(t && t->shape[0] == 64 && t->shape[1] == 160 && elem_f32(t, 0) == -0x1.910084p-5f &&
	   sum_f32(t) == -0x1.8f0ff29dcee00p+3, "layer 2 down_proj values");
	ok(!gm_st_find(f, "model.layers.3.mlp.down_proj.weight") && !gm_st_find(f, "") &&
	   !gm_st_find(f, "lm_head.weight "), "gm_st_find of absent names is NULL");

	for (i = 0; i < gm_st_count(f); i++) {
		t = gm_st_tensor(f, i);
		if (i && strcmp(gm_st_tensor(f, i - 1)->name, t->name) >= 0)
			sorted = 0;
		if (t->dtype != GM_DTYPE_F32)
			all_f32 = 0;
		if ((uintptr_t)t->data % 4)
			aligned = 0;
		if (gm_st_find(f, t->name) != t)
			sorted = 0;
	}
	ok(sorted && all_f32, "header order is name order here, every tensor F32 and findable");
	ok(aligned, "the mapping keeps F32 views 4-byte aligned (header padded to 8)");
	ok(stat(path, &st) == 0 && tiles_buffer(f, (uint64_t)st.st_size - 8 - 3752),
	   "the tensors tile the data buffer (file size - 8 - 3752)");
	gm_st_close(f);
	free(path);
}

static void test_read_bf16(void)
{
	gm_error err = GM_ERROR_INIT;
	char *path = fixture(BF16_DIR "/model.safetensors");
	gm_st_file *f = NULL;
	const gm_tensor *t;
	size_t i;
	int all_bf16 = 1;

	if (!ok(!gm_st_open(path, &f, &err), "open %s", path)) {
		tap_diag("%s", err.msg);
		free(path);
		return;
	}
	ok(gm_st_count(f) == 24 && gm_st_metadata_count(f) == 1, "24 tensors and one metadata entry");
	t = gm_st_tensor(f, 0);
	ok(!strcmp(t->name, "model.embed_tokens.weight") && t->dtype == GM_DTYPE_BF16 && t->ndim == 2 &&
	   t->shape[0] == 151936 && t->shape[1] == 32 && t->nbytes == 9723904 && t->offset == 0,
	   "embed_tokens: BF16 [151936, 32], 9723904 bytes");
	ok(elem_u16(t, 0) == 0xbe8d && elem_u16(t, t->numel - 1) == 0xbe9e && elem_f32(t, 0) == -0.275390625f,
	   "embed_tokens first and last raw bf16 values");
	ok(sum_f32(t) == 0x1.580d9566e0000p+8, "embed_tokens sums to %.17g", sum_f32(t));
	t = gm_st_find(f, "model.layers.0.self_attn.k_norm.weight");
	ok(t && t->ndim == 1 && t->shape[0] == 16 && t->offset == 9742464 && elem_u16(t, 0) == 0x3f86 &&
	   elem_f32(t, 15) == 1.1875f && sum_f32(t) == 0x1.039p+4, "layer 0 k_norm values");
	t = gm_st_find(f, "model.layers.1.mlp.down_proj.weight");
	ok(t && t->shape[0] == 32 && t->shape[1] == 96 && elem_u16(t, 0) == 0xbda6 &&
	   sum_f32(t) == -0x1.536867f000000p+5, "layer 1 down_proj values");
	t = gm_st_tensor(f, 23);
	ok(t && !strcmp(t->name, "model.norm.weight") && t->offset == 9785728 && t->nbytes == 64,
	   "last tensor model.norm.weight");
	for (i = 0; i < gm_st_count(f); i++)
		if (gm_st_tensor(f, i)->dtype != GM_DTYPE_BF16)
			all_bf16 = 0;
	ok(all_bf16 && tiles_buffer(f, 9788336 - 8 - 2536), "every tensor BF16, tiling the data buffer");
	gm_st_close(f);
	free(path);
}

/* ------------------------------------------------------------ writing */

/* Re-adds f's metadata and tensors in order and writes them to out. */
static int rewrite(const gm_st_file *f, const char *out, gm_error *err)
{
	gm_st_writer *w = gm_st_writer_new();
	size_t i;
	int ret = 0;

	for (i = 0; !ret && i < gm_st_metadata_count(f); i++) {
		const char *k, *v;
		gm_st_metadata_at(f, i, &k, &v);
		ret = gm_st_writer_set_metadata(w, k, v, err);
	}
	for (i = 0; !ret && i < gm_st_count(f); i++) {
		const gm_tensor *t = gm_st_tensor(f, i);
		ret = gm_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, err);
	}
	if (!ret)
		ret = gm_st_writer_write(w, out, err);
	gm_st_writer_free(w);
	return ret;
}

static void test_round_trip(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_buf orig = GM_BUF_INIT, once = GM_BUF_INIT, twice = GM_BUF_INIT;
	char *out1 = tmp_path("once.safetensors"), *out2 = tmp_path("twice.safetensors");
	size_t i;

	for (i = 0; i < sizeof(fixture_files) / sizeof(fixture_files[0]); i++) {
		char *path = fixture(fixture_files[i]);
		const char *name = fixture_files[i];
		gm_st_file *f = NULL, *g = NULL;
		int ret;

		ret = gm_st_open(path, &f, &err);
		if (!ret)
			ret = rewrite(f, out1, &err);
		if (!ok(!ret, "read and rewrite %s", name))
			tap_diag("%s", err.msg);
		read_all(path, &orig);
		read_all(out1, &once);
		/* The fixtures come from the reference writer: same bytes means
		 * same header text, same order, same padding. */
		ok(!ret && orig.len == once.len && !memcmp(orig.buf, once.buf, orig.len),
		   "%s: byte-identical after a round trip through the writer (%zu bytes)", name, once.len);
		ok(once.len >= 8 && le64(once.buf) % 8 == 0 && once.buf[8 + le64(once.buf) - 1] != '\0',
		   "%s: header length %llu is a multiple of 8", name,
		   once.len >= 8 ? (unsigned long long)le64(once.buf) : 0ULL);
		ret = gm_st_open(out1, &g, &err);
		if (!ret)
			ret = rewrite(g, out2, &err);
		read_all(out2, &twice);
		ok(!ret && twice.len == once.len && !memcmp(twice.buf, once.buf, once.len),
		   "%s: the writer's own output re-read and re-written is byte-identical", name);
		gm_st_close(f);
		gm_st_close(g);
		free(path);
	}
	unlink(out1);
	unlink(out2);
	free(out1);
	free(out2);
	gm_buf_release(&orig);
	gm_buf_release(&once);
	gm_buf_release(&twice);
}

/* Writes the tensors named by names (U8, shape [1]) and returns the file's bytes. */
static int write_u8s(const char *const *names, size_t n, const char *meta_key, const char *meta_val,
		     gm_buf *out, gm_error *err)
{
	gm_st_writer *w = gm_st_writer_new();
	char *path = tmp_path("small.safetensors");
	int64_t one = 1;
	size_t i;
	int ret = 0;

	if (meta_key)
		ret = gm_st_writer_set_metadata(w, meta_key, meta_val, err);
	for (i = 0; !ret && i < n; i++)
		ret = gm_st_writer_add(w, names[i], GM_DTYPE_U8, 1, &one, &filler[i], err);
	if (!ret)
		ret = gm_st_writer_write(w, path, err);
	if (!ret)
		ret = read_all(path, out);
	unlink(path);
	free(path);
	gm_st_writer_free(w);
	return ret;
}

static void test_padding(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_buf b = GM_BUF_INIT;
	char name[32];
	const char *names[1] = { name };
	static const char exact[] = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
	int len, all_ok = 1, saw_unpadded = 0;

	for (len = 1; len <= 16; len++) {
		uint64_t n;
		size_t raw, i;

		memset(name, 'n', (size_t)len);
		name[len] = '\0';
		if (write_u8s(names, 1, NULL, NULL, &b, &err)) {
			all_ok = 0;
			tap_diag("%s", err.msg);
			continue;
		}
		n = le64(b.buf);
		raw = strlen(exact) - 1 + (size_t)len;
		if (n % 8 || n < raw || n - raw >= 8 || b.len != 8 + n + 1)
			all_ok = 0;
		for (i = raw; i < n; i++)
			if (b.buf[8 + i] != ' ')
				all_ok = 0;
		if (n == raw)
			saw_unpadded = 1;
	}
	ok(all_ok, "headers of 16 lengths are padded with fewer than 8 spaces to a multiple of 8");
	ok(saw_unpadded, "a header already a multiple of 8 gets no padding");
	names[0] = "a";
	ok(!write_u8s(names, 1, NULL, NULL, &b, &err) && le64(b.buf) == 56 &&
	   !memcmp(b.buf + 8, exact, strlen(exact)) && !memcmp(b.buf + 8 + strlen(exact), "   ", 3) &&
	   b.buf[64] == filler[0], "exact bytes: compact JSON, no __metadata__ when there is none");
	gm_buf_release(&b);
}

static void test_escapes(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_buf b = GM_BUF_INIT;
	gm_st_file *f = NULL;
	/* serde_json escapes '"', '\\' and control characters only, with
	 * lowercase \u00xx; '/', DEL and UTF-8 are written as they are. */
	const char *names[2] = { "q\"b\\n\nt\tc\x01/\x7f\xc3\xa9\xf0\x9f\x98\x80", "plain" };
	static const char want[] = "{\"__metadata__\":{\"k\\\"\":\"v\\u001f\\r\\b\\f\"},"
				   "\"q\\\"b\\\\n\\nt\\tc\\u0001/\x7f\xc3\xa9\xf0\x9f\x98\x80\":";
	int ret;

	ret = write_u8s(names, 2, "k\"", "v\x1f\r\b\f", &b, &err);
	ok(!ret && b.len > 8 + sizeof(want) && !memcmp(b.buf + 8, want, sizeof(want) - 1),
	   "names and metadata are escaped as serde_json escapes them");
	ret = ret ? ret : gm_st_open_memory(b.buf, b.len, "escapes", &f, &err);
	ok(!ret && !strcmp(gm_st_tensor(f, 0)->name, names[0]) && !strcmp(gm_st_tensor(f, 1)->name, "plain") &&
	   !strcmp(gm_st_metadata(f, "k\""), "v\x1f\r\b\f"), "and read back as they were");
	gm_st_close(f);
	gm_buf_release(&b);
}

struct fill_ctx {
	const char *dir, *base; /* where the target goes */
	int calls, fail_at, set_msg;
	uint64_t offsets[4], lens[4];
	int tmp_seen, target_absent;
};

static int has_tmp(const char *dir, const char *base)
{
	char prefix[PATH_MAX];
	DIR *d = opendir(dir);
	struct dirent *e;
	int found = 0;

	snprintf(prefix, sizeof(prefix), ".%s.tmp-", base);
	if (!d)
		return 0;
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, prefix, strlen(prefix)) && strlen(e->d_name) == strlen(prefix) + 6)
			found = 1;
	closedir(d);
	return found;
}

static int fill(void *vctx, const char *name, void *dst, uint64_t offset, uint64_t len, gm_error *err)
{
	struct fill_ctx *c = vctx;
	unsigned char *p = dst;
	char *target = gm_path_join(c->dir, c->base);
	uint64_t i;

	if (c->calls < 4) {
		c->offsets[c->calls] = offset;
		c->lens[c->calls] = len;
	}
	c->tmp_seen = has_tmp(c->dir, c->base);
	c->target_absent = !gm_is_file(target);
	free(target);
	if (++c->calls == c->fail_at) {
		if (c->set_msg)
			return gm_error_set(err, GM_EIO, "disk on fire while producing %s", name);
		return -1;
	}
	for (i = 0; i < len; i++)
		p[i] = (unsigned char)((offset + i) * 7);
	return 0;
}

static void test_fill_and_atomic(void)
{
	gm_error err = GM_ERROR_INIT;
	char *path = tmp_path("big.safetensors"), *nodir = tmp_path("no/such/dir/x.safetensors");
	struct fill_ctx c = { tmpdir, "big.safetensors", 0, 0, 0, { 0 }, { 0 }, 0, 0 };
	int64_t big = (5 << 20) + 3, two = 2;
	gm_st_writer *w = gm_st_writer_new();
	gm_st_file *f = NULL;
	gm_buf b = GM_BUF_INIT;
	const gm_tensor *t;
	int ret, before, good = 1;
	uint64_t i;

	before = count_entries(tmpdir);
	ok(!gm_st_writer_add(w, "small", GM_DTYPE_I16, 1, &two, "abcd", &err) &&
	   !gm_st_writer_add_fill(w, "big", GM_DTYPE_U8, 1, &big, fill, &c, &err), "add a tensor and a filled one");
	ret = gm_st_writer_write(w, path, &err);
	ok(!ret && c.calls == 2 && c.offsets[0] == 0 && c.lens[0] == 4 << 20 && c.offsets[1] == 4 << 20 &&
	   c.lens[1] == (1 << 20) + 3, "fill is called in 4 MiB chunks (%d calls)", c.calls);
	ok(c.tmp_seen && c.target_absent, "while writing: a .NAME.tmp-XXXXXX file beside it, no final name yet");
	ok(count_entries(tmpdir) == before + 1, "after writing: the file and no leftovers");
	ret = gm_st_open(path, &f, &err);
	t = ret ? NULL : gm_st_find(f, "big");
	for (i = 0; t && i < t->nbytes; i++)
		if (((const unsigned char *)t->data)[i] != (unsigned char)(i * 7))
			good = 0;
	ok(t && t->nbytes == (uint64_t)big && t->offset == 4 && good && !memcmp(gm_st_tensor(f, 0)->data, "abcd", 4),
	   "the filled data is in the file at its offset");
	gm_st_close(f);
	read_all(path, &b);

	/* A failure half way: the old file stays, the temporary goes. */
	c.calls = 0;
	c.fail_at = 2;
	c.set_msg = 1;
	ret = gm_st_writer_write(w, path, &err);
	ok_error(ret, &err, GM_EIO, "big.safetensors: tensor 'big': disk on fire while producing big",
		 "a failing fill is reported with the file and the tensor");
	{
		gm_buf now = GM_BUF_INIT;
		read_all(path, &now);
		ok(now.len == b.len && !memcmp(now.buf, b.buf, b.len) && count_entries(tmpdir) == before + 1 &&
		   !has_tmp(tmpdir, "big.safetensors"), "after the failure: old file intact, no temporary file");
		gm_buf_release(&now);
	}
	unlink(path);
	c.calls = 0;
	c.fail_at = 1;
	c.set_msg = 0;
	ret = gm_st_writer_write(w, path, &err);
	ok_error(ret, &err, GM_ERROR, "cannot produce the data of tensor 'big'",
		 "a fill failing without a message still gets one");
	ok(!gm_is_file(path) && count_entries(tmpdir) == before, "a failed first write leaves no file at all");
	ret = gm_st_writer_write(w, nodir, &err);
	ok_error(ret, &err, GM_ENOENT, "cannot create a temporary file", "writing into a missing directory");
	gm_st_writer_free(w);
	gm_buf_release(&b);
	free(path);
	free(nodir);
}

static void test_writer_rejects(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_st_writer *w = gm_st_writer_new();
	char *path = tmp_path("dup.safetensors");
	int64_t shape[9] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 }, neg = -2, three = 3, four = 4;
	gm_buf b = GM_BUF_INIT;
	gm_st_file *f = NULL;
	const char *k, *v;
	int ret;

	ok_error(gm_st_writer_add(w, "__metadata__", GM_DTYPE_U8, 1, shape, filler, &err), &err, GM_EINVAL,
		 "'__metadata__' is reserved", "__metadata__ cannot name a tensor");
	ok_error(gm_st_writer_add(w, "x", GM_DTYPE_U8, 1, &neg, filler, &err), &err, GM_EINVAL,
		 "tensor 'x': dimension 0 is negative (-2)", "negative dimensions");
	ok_error(gm_st_writer_add(w, "x", GM_DTYPE_U8, 9, shape, filler, &err), &err, GM_EINVAL,
		 "9 dimensions (0 to 8 are supported)", "too many dimensions");
	ok_error(gm_st_writer_add(w, "bad\xff", GM_DTYPE_U8, 1, shape, filler, &err), &err, GM_EINVAL,
		 "is not valid UTF-8", "names must be UTF-8");
	ok_error(gm_st_writer_add(w, "x", GM_DTYPE_F4, 1, &three, filler, &err), &err, GM_EINVAL,
		 "tensor 'x': 3 elements of F4 (4 bits each) do not fill a whole number of bytes",
		 "sub-byte tensors must fill whole bytes");
	ok_error(gm_st_writer_add(w, "x", GM_DTYPE_U8, 1, &three, NULL, &err), &err, GM_EINVAL,
		 "tensor 'x': no data", "data is required");
	ok_error(gm_st_writer_add(w, "x", GM_DTYPE_COUNT, 1, &three, filler, &err), &err, GM_EINVAL,
		 "invalid dtype", "an out-of-range dtype");
	ok_error(gm_st_writer_add_fill(w, "x", GM_DTYPE_U8, 1, &three, NULL, NULL, &err), &err, GM_EINVAL,
		 "no fill function", "add_fill needs a function");
	ok_error(gm_st_writer_set_metadata(w, "k", "\xc0\x80", &err), &err, GM_EINVAL, "not valid UTF-8",
		 "metadata must be UTF-8 (no overlong NUL)");
	ok_error(gm_st_writer_set_metadata(w, NULL, "v", &err), &err, GM_EINVAL, "must not be NULL",
		 "metadata keys are required");

	ok(!gm_st_writer_set_metadata(w, "z", "1", &err) && !gm_st_writer_set_metadata(w, "a", "2", &err) &&
	   !gm_st_writer_set_metadata(w, "z", "3", &err), "set metadata, then replace a value");
	ok(!gm_st_writer_add(w, "x", GM_DTYPE_F4, 1, &four, filler, &err) &&
	   !gm_st_writer_add(w, "empty", GM_DTYPE_F32, 2, (int64_t[]){ 0, 5 }, NULL, &err) &&
	   !gm_st_writer_add(w, "scalar", GM_DTYPE_F64, 0, NULL, filler, &err),
	   "sub-byte, empty and scalar tensors are accepted");
	ret = gm_st_writer_write(w, path, &err);
	ok(!ret && !read_all(path, &b) && !gm_st_open_memory(b.buf, b.len, "w", &f, &err),
	   "and written to a file the reader accepts");
	if (f) {
		gm_st_metadata_at(f, 0, &k, &v);
		ok(gm_st_metadata_count(f) == 2 && !strcmp(k, "z") && !strcmp(v, "3"),
		   "a replaced metadata value keeps its place");
		ok(gm_st_count(f) == 3 && gm_st_tensor(f, 0)->nbytes == 2 && gm_st_tensor(f, 1)->nbytes == 0 &&
		   gm_st_tensor(f, 1)->offset == 2 && gm_st_tensor(f, 2)->ndim == 0 &&
		   gm_st_tensor(f, 2)->numel == 1 && gm_st_tensor(f, 2)->nbytes == 8,
		   "F4 [4] is 2 bytes, [0, 5] is empty, a scalar is one element");
		gm_st_close(f);
	}
	unlink(path);
	ok(!gm_st_writer_add(w, "x", GM_DTYPE_U8, 1, &three, filler, &err), "adding a name again is not refused yet");
	ret = gm_st_writer_write(w, path, &err);
	ok_error(ret, &err, GM_EINVAL, "tensor 'x' was added twice", "but writing refuses duplicate names");
	ok(!gm_is_file(path) && !has_tmp(tmpdir, "dup.safetensors"), "and creates no file");
	gm_st_writer_free(w);
	gm_buf_release(&b);
	free(path);
}

/* ------------------------------------------------------------ reader rejections */

static void test_reject_header(void)
{
	gm_error err = GM_ERROR_INIT;
	static const char hdr[] = "{}      ";

	ok_error(try_raw(0, "", 0, &err), &err, GM_EFORMAT, "invalid JSON", "an empty header is not JSON");
	{
		gm_st_file *f = NULL;
		ok_error(gm_st_open_memory("\x08\0\0", 3, "short.safetensors", &f, &err), &err, GM_EFORMAT,
			 "short.safetensors: file too short (3 bytes)", "a file shorter than the length field");
	}
	ok_error(try_raw(9, hdr, 8, &err), &err, GM_EFORMAT,
		 "bad.safetensors: header length 9 goes past the end of the file (16 bytes)",
		 "header length one past the file");
	ok_error(try_raw(GM_ST_MAX_HEADER + 1, hdr, 8, &err), &err, GM_EFORMAT,
		 "header length 100000001 is over the limit of 100000000 bytes", "header length over 100 MB");
	ok_error(try_raw(UINT64_MAX, hdr, 8, &err), &err, GM_EFORMAT, "is over the limit",
		 "header length 2^64-1 (no overflow when adding 8)");
	ok_error(try_raw(GM_ST_MAX_HEADER, hdr, 8, &err), &err, GM_EFORMAT, "goes past the end of the file",
		 "header length at the limit but past the file");
	ok(try_raw(8, hdr, 8, &err) == 0, "an empty header object with no data is a valid file");
	ok(try_raw(2, "{}", 2, &err) == 0, "the reader does not insist on padding");

	ok_error(try_image("{\"a\":", 0, &err), &err, GM_EFORMAT, "bad.safetensors: header: invalid JSON",
		 "truncated JSON");
	ok_error(try_image("{\"a\" 1}", 0, &err), &err, GM_EFORMAT, "invalid JSON at byte", "a syntax error");
	ok_error(try_image("[]", 0, &err), &err, GM_EFORMAT, "the header must be a JSON object, not array",
		 "the header must be an object");
	ok_error(try_image("{'a':{}}", 0, &err), &err, GM_EFORMAT, "invalid JSON", "single quotes");
	ok_error(try_image("{/*c*/}", 0, &err), &err, GM_EFORMAT, "invalid JSON", "comments");
	ok_error(try_image("{\"__metadata__\":{\"a\":NaN}}", 0, &err), &err, GM_EFORMAT, "invalid JSON",
		 "NaN is not JSON");
	ok_error(try_image("{\"a\xff\":{}}", 0, &err), &err, GM_EFORMAT, "invalid UTF-8", "invalid UTF-8 in a key");
	ok_error(try_image("{\"\xed\xa0\x80\":{}}", 0, &err), &err, GM_EFORMAT, "invalid UTF-8",
		 "an encoded surrogate is not UTF-8");
	ok_error(try_image("{\"\\ud800\":{}}", 0, &err), &err, GM_EFORMAT, "high surrogate not followed by a low one",
		 "a lone surrogate escape");
	ok_error(try_image("{\"a\tb\":{}}", 0, &err), &err, GM_EFORMAT, "control character in a string",
		 "raw control characters in strings");
	ok_error(try_raw(8, "{}\0\0\0\0\0\0", 8, &err), &err, GM_EFORMAT, "only spaces may pad it",
		 "NUL padding after the header");
	ok_error(try_image("{} x", 0, &err), &err, GM_EFORMAT, "trailing data", "trailing data after the header");
}

static void test_reject_entries(void)
{
	gm_error err = GM_ERROR_INIT;

	ok_error(try_image("{" ENTRY("w", "F128", "[1]", "[0,16]") "}", 16, &err), &err, GM_EFORMAT,
		 "bad.safetensors: tensor 'w': unknown dtype 'F128'", "unknown dtype, naming file and tensor");
	ok_error(try_image("{" ENTRY("w", "f32", "[1]", "[0,4]") "}", 4, &err), &err, GM_EFORMAT,
		 "unknown dtype 'f32'", "dtype names are case-sensitive");
	ok_error(try_image("{" ENTRY("w", "F32\\u0000", "[1]", "[0,4]") "}", 4, &err), &err, GM_EFORMAT,
		 "'dtype' contains a NUL character", "a NUL cannot smuggle a dtype");
	ok_error(try_image("{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, &err), &err,
		 GM_EFORMAT, "tensor 'w': 'dtype' must be a string, not int", "dtype must be a string");
	ok_error(try_image("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, &err), &err, GM_EFORMAT,
		 "tensor 'w': missing 'dtype'", "missing dtype");
	ok_error(try_image("{\"w\":[1]}", 0, &err), &err, GM_EFORMAT, "tensor 'w': entry must be an object, not array",
		 "an entry must be an object");

	ok_error(try_image("{" ENTRY("w", "U8", "[-1]", "[0,1]") "}", 1, &err), &err, GM_EFORMAT,
		 "tensor 'w': shape[0] is negative (-1)", "negative dimension");
	ok_error(try_image("{" ENTRY("w", "U8", "[2,1.5]", "[0,3]") "}", 3, &err), &err, GM_EFORMAT,
		 "shape[1] is not an integer (1.5)", "fractional dimension");
	ok_error(try_image("{" ENTRY("w", "U8", "[1.0]", "[0,1]") "}", 1, &err), &err, GM_EFORMAT,
		 "shape[0] is not an integer", "1.0 is not an integer dimension");
	ok_error(try_image("{" ENTRY("w", "U8", "[\"2\"]", "[0,2]") "}", 2, &err), &err, GM_EFORMAT,
		 "shape[0] is not an integer", "a string is not a dimension");
	ok_error(try_image("{" ENTRY("w", "U8", "[null]", "[0,0]") "}", 0, &err), &err, GM_EFORMAT,
		 "shape[0] is not an integer (null)", "null is not a dimension");
	ok_error(try_image("{" ENTRY("w", "U8", "[9223372036854775808]", "[0,1]") "}", 1, &err), &err, GM_EFORMAT,
		 "shape[0] is too large", "a dimension past INT64_MAX");
	ok_error(try_image("{" ENTRY("w", "U8", "[4294967296,4294967296]", "[0,1]") "}", 1, &err), &err,
		 GM_EFORMAT, "has too many elements (overflows 64 bits)", "element count overflow");
	ok_error(try_image("{" ENTRY("w", "F32", "[4611686018427387904]", "[0,1]") "}", 1, &err), &err,
		 GM_EFORMAT, "overflow a 64-bit byte count", "byte count overflow");
	ok_error(try_image("{" ENTRY("w", "U8", "[1,1,1,1,1,1,1,1,1]", "[0,1]") "}", 1, &err), &err,
		 GM_EUNSUPPORTED, "shape has 9 dimensions, at most 8", "more than 8 dimensions");
	ok_error(try_image("{" ENTRY("w", "U8", "{}", "[0,1]") "}", 1, &err), &err, GM_EFORMAT,
		 "'shape' must be an array, not object", "shape must be an array");
	ok_error(try_image("{" ENTRY("w", "F4", "[3]", "[0,2]") "}", 2, &err), &err, GM_EFORMAT,
		 "do not fill a whole number of bytes", "F4 with an odd element count");

	ok_error(try_image("{" ENTRY("w", "U8", "[4]", "[0,4]") "}", 3, &err), &err, GM_EFORMAT,
		 "tensor 'w': data_offsets end 4 is past the end of the data buffer (3 bytes)", "offsets out of range");
	ok_error(try_image("{" ENTRY("w", "U8", "[0]", "[18446744073709551615,18446744073709551615]") "}", 0, &err),
		 &err, GM_EFORMAT, "data_offsets[0] is too large", "offsets past INT64_MAX");
	ok_error(try_image("{" ENTRY("w", "U8", "[1]", "[-1,0]") "}", 1, &err), &err, GM_EFORMAT,
		 "data_offsets[0] is negative (-1)", "negative offset");
	ok_error(try_image("{" ENTRY("w", "U8", "[1]", "[0,1.0]") "}", 1, &err), &err, GM_EFORMAT,
		 "data_offsets[1] is not an integer", "fractional offset");
	ok_error(try_image("{" ENTRY("w", "U8", "[1]", "[0,1,2]") "}", 2, &err), &err, GM_EFORMAT,
		 "'data_offsets' must be [begin, end], not [ 0, 1, 2 ]", "three offsets");
	ok_error(try_image("{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, &err), &err, GM_EFORMAT,
		 "tensor 'w': missing 'data_offsets'", "missing offsets");
	ok_error(try_image("{" ENTRY("w", "U8", "[0]", "[3,1]") "}", 3, &err), &err, GM_EFORMAT,
		 "tensor 'w': data_offsets [3, 1] are reversed (begin > end)", "reversed offsets");
	ok_error(try_image("{" ENTRY("w", "F32", "[2]", "[0,4]") "}", 4, &err), &err, GM_EFORMAT,
		 "tensor 'w': data_offsets [0, 4] hold 4 bytes but F32 [2] needs 8",
		 "size does not match dtype x shape");
	ok_error(try_image("{" ENTRY("w", "BF16", "[2, 3]", "[0,10]") "}", 10, &err), &err, GM_EFORMAT,
		 "hold 10 bytes but BF16 [2, 3] needs 12", "size mismatch in two dimensions");

	ok_error(try_image("{" ENTRY("a", "U8", "[2]", "[0,2]") "," ENTRY("b", "U8", "[2]", "[1,3]") "}", 3, &err),
		 &err, GM_EFORMAT, "tensors 'a' [0, 2) and 'b' [1, 3) overlap in the data buffer",
		 "overlapping tensors");
	ok_error(try_image("{" ENTRY("a", "U8", "[2]", "[0,2]") "," ENTRY("b", "U8", "[2]", "[0,2]") "}", 2, &err),
		 &err, GM_EFORMAT, "overlap", "two tensors on the same bytes");
	ok_error(try_image("{" ENTRY("a", "U8", "[4]", "[0,4]") "," ENTRY("z", "U8", "[0]", "[2,2]") "}", 4, &err),
		 &err, GM_EFORMAT, "overlap", "an empty tensor inside another");
	ok_error(try_image("{" ENTRY("a", "U8", "[1]", "[0,1]") "," ENTRY("b", "U8", "[1]", "[2,3]") "}", 3, &err),
		 &err, GM_EFORMAT, "bytes [1, 2) of the data buffer belong to no tensor (a hole before 'b')",
		 "a hole between tensors");
	ok_error(try_image("{" ENTRY("a", "U8", "[1]", "[1,2]") "}", 2, &err), &err, GM_EFORMAT,
		 "bytes [0, 1) of the data buffer belong to no tensor (a hole before 'a')", "a hole at the start");
	ok_error(try_image("{" ENTRY("a", "U8", "[1]", "[0,1]") "}", 2, &err), &err, GM_EFORMAT,
		 "bytes [1, 2) at the end of the data buffer belong to no tensor", "bytes left over at the end");
	ok_error(try_image("{}", 1, &err), &err, GM_EFORMAT, "bytes [0, 1) at the end",
		 "data with no tensors at all");

	ok_error(try_image("{" ENTRY("a", "U8", "[1]", "[0,1]") "," ENTRY("a", "U8", "[1]", "[1,2]") "}", 2, &err),
		 &err, GM_EFORMAT, "bad.safetensors: duplicate tensor name 'a' in the header",
		 "duplicate tensor names");
	ok_error(try_image("{" ENTRY("a", "U8", "[1]", "[0,1]") "," ENTRY("\\u0061", "U8", "[1]", "[1,2]") "}", 2,
			   &err), &err, GM_EFORMAT, "duplicate tensor name 'a'", "duplicates spelled differently");
	ok_error(try_image("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
			   &err), &err, GM_EFORMAT, "duplicate key 'dtype' in a header object",
		 "duplicate keys in an entry");
	ok_error(try_image("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, &err), &err, GM_EFORMAT,
		 "duplicate key 'k'", "duplicate metadata keys");
	ok_error(try_image("{\"__metadata__\":{},\"__metadata__\":{}}", 0, &err), &err, GM_EFORMAT,
		 "duplicate tensor name '__metadata__'", "two __metadata__ objects");
	ok_error(try_image("{\"__metadata__\":{\"k\":1}}", 0, &err), &err, GM_EFORMAT,
		 "__metadata__ 'k' must be a string, not int", "metadata values are strings");
	ok_error(try_image("{\"__metadata__\":[]}", 0, &err), &err, GM_EFORMAT,
		 "'__metadata__' must be an object of strings, not array", "metadata is an object");
	ok_error(try_image("{\"__metadata__\":{\"k\":\"a\\u0000b\"}}", 0, &err), &err, GM_EFORMAT,
		 "__metadata__ 'k' contains a NUL character", "NUL in a metadata value");
	ok_error(try_image("{" ENTRY("a\\u0000b", "U8", "[1]", "[0,1]") "}", 1, &err), &err, GM_EFORMAT,
		 "invalid JSON header at byte 1: a key contains a NUL character", "NUL in a tensor name");
	ok_error(try_image("{\"__metadata__\":{\"k\\u0000\":\"1\"}}", 0, &err), &err, GM_EFORMAT,
		 "a key contains a NUL character", "NUL in a metadata key");
	/* Found while writing these tests: json-c cut "dtype\u0000" to
	 * "dtype" and let it replace the real one, so this file was read as
	 * F32 [1] here but as U8 [4] by readers that keep the keys apart. */
	ok_error(try_image("{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4],"
			   "\"dtype\\u0000\":\"F32\",\"shape\\u0000\":[1]}}", 4, &err),
		 &err, GM_EFORMAT, "a key contains a NUL character", "a NUL key cannot shadow an entry's field");
	ok_error(try_image("{" ENTRY("w", "U8", "[4]", "[0,4]") "," ENTRY("w\\u0000", "F32", "[1]", "[0,4]") "}", 4,
			   &err), &err, GM_EFORMAT, "a key contains a NUL character", "nor a tensor");
}

static void test_accept(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_buf img = GM_BUF_INIT;
	gm_st_file *f = NULL;
	static const char hdr[] = "{\"__metadata__\":{\"z\":\"1\",\"\\u0066ormat\":\"p\\u0074\",\"a\":\"\"},"
		ENTRY("b", "U8", "[2]", "[4,6]") "," ENTRY("\\ud83d\\ude00", "I16", "[2]", "[0,4]") ","
		ENTRY("s", "F64", "[]", "[6,14]") "," ENTRY("e", "F32", "[3,0]", "[14,14]") ","
		ENTRY("f6", "F6_E3M2", "[4]", "[14,17]") "}";
	const char *k, *v;
	const gm_tensor *t;

	make_image(&img, hdr, strlen(hdr), filler, 17);
	if (!ok(!gm_st_open_memory(img.buf, img.len, "good", &f, &err), "a valid header with varied entries")) {
		tap_diag("%s", err.msg);
		gm_buf_release(&img);
		return;
	}
	ok(gm_st_count(f) == 5 && !strcmp(gm_st_tensor(f, 0)->name, "b") &&
	   !strcmp(gm_st_tensor(f, 1)->name, "\xf0\x9f\x98\x80") && !strcmp(gm_st_tensor(f, 4)->name, "f6"),
	   "tensors come in header order, not offset order; escapes are decoded");
	t = gm_st_find(f, "b");
	ok(t && t->data == (const char *)img.buf + 8 + (strlen(hdr) + 7) / 8 * 8 + 4 && t->offset == 4,
	   "views point into the image at their offset (zero-copy)");
	t = gm_st_find(f, "s");
	ok(t && t->ndim == 0 && t->numel == 1 && t->nbytes == 8, "a scalar has one element");
	t = gm_st_find(f, "e");
	ok(t && t->ndim == 2 && t->numel == 0 && t->nbytes == 0, "an empty tensor takes no bytes");
	ok(gm_st_find(f, "f6") && gm_st_find(f, "f6")->nbytes == 3, "F6 [4] takes 3 bytes");
	gm_st_metadata_at(f, 0, &k, &v);
	ok(gm_st_metadata_count(f) == 3 && !strcmp(k, "z") && !strcmp(v, "1"), "metadata in header order");
	gm_st_metadata_at(f, 1, &k, &v);
	ok(!strcmp(k, "format") && !strcmp(v, "pt") && !strcmp(gm_st_metadata(f, "a"), ""),
	   "metadata escapes decoded, empty values kept");
	gm_st_close(f);
	gm_buf_release(&img);
}

/* Copies of a real file cut short, read through gm_st_open (the mmap path). */
static void test_truncated(void)
{
	gm_error err = GM_ERROR_INIT;
	char *src = fixture(F32_DIR "/model.safetensors"), *path = tmp_path("cut.safetensors");
	gm_buf b = GM_BUF_INIT;
	gm_st_file *f = NULL;
	static const struct {
		size_t len;
		const char *frag;
	} cuts[] = {
		{ 0, "file too short (0 bytes)" },
		{ 5, "file too short (5 bytes)" },
		{ 8, "header length 3752 goes past the end of the file (8 bytes)" },
		{ 8 + 3751, "goes past the end of the file" },
		{ 8 + 3752, "tensor 'lm_head.weight': data_offsets end 1048576 is past the end of the data "
			    "buffer (0 bytes)" },
		{ 2656240 - 1, "tensor 'model.norm.weight': data_offsets end 2652480 is past the end of the data "
			       "buffer" },
	};
	size_t i;

	if (read_all(src, &b) || b.len != 2656240) {
		ok(0, "read %s", src);
		goto out;
	}
	for (i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		gm_error werr = GM_ERROR_INIT;
		if (gm_write_file_atomic(path, b.buf, cuts[i].len, 0644, &werr)) {
			ok(0, "write %s: %s", path, werr.msg);
			continue;
		}
		ok_error(gm_st_open(path, &f, &err), &err, GM_EFORMAT, cuts[i].frag, "the file cut to %zu bytes",
			 cuts[i].len);
		ok(strstr(err.msg, path) != NULL, "the message names the file");
	}
	gm_buf_addch(&b, 0);
	gm_write_file_atomic(path, b.buf, b.len, 0644, &err);
	ok_error(gm_st_open(path, &f, &err), &err, GM_EFORMAT, "bytes [2652480, 2652481) at the end",
		 "one byte appended");
	ok_error(gm_st_open(tmpdir, &f, &err), &err, GM_EINVAL, "not a regular file", "a directory");
	ok_error(gm_st_open("/nonexistent/x.safetensors", &f, &err), &err, GM_ENOENT,
		 "cannot open '/nonexistent/x.safetensors'", "a missing file");
	unlink(path);
out:
	gm_buf_release(&b);
	free(src);
	free(path);
}

/* The fuzzer's seeds say in their names whether the reader must take them;
 * inputs the fuzzer found crashing would be kept there too. */
static void test_corpus(void)
{
	gm_error err = GM_ERROR_INIT;
	char *dir = fixture("contrib/fuzz/corpus/safetensors");
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0, wrong = 0;

	if (!ok(d != NULL, "open %s", dir)) {
		free(dir);
		return;
	}
	while ((e = readdir(d))) {
		char *path;
		gm_st_file *f = NULL;
		int ret, valid = !strncmp(e->d_name, "valid-", 6);

		if (!valid && strncmp(e->d_name, "bad-", 4))
			continue;
		path = gm_path_join(dir, e->d_name);
		ret = gm_st_open(path, &f, &err);
		if (valid != !ret) {
			tap_diag("%s: %s", e->d_name, ret ? err.msg : "accepted");
			wrong++;
		}
		gm_st_close(f);
		free(path);
		n++;
	}
	closedir(d);
	ok(n >= 20 && !wrong, "the reader takes the %d seeds named valid-* and refuses those named bad-*", n);
	free(dir);
}

/* ------------------------------------------------------------ dtype */

static uint32_t bits_of(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float from_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static void test_dtype_table(void)
{
	gm_error err = GM_ERROR_INIT;
	enum gm_dtype t = GM_DTYPE_COUNT;
	uint64_t n = 0;
	int i, names_ok = 1;

	for (i = 0; i < GM_DTYPE_COUNT; i++) {
		enum gm_dtype back;
		if (gm_dtype_is_block((enum gm_dtype)i)) {
			unsigned be, bb;
			gm_dtype_block((enum gm_dtype)i, &be, &bb);
			/* a block type is never read from a safetensors header */
			if (!gm_dtype_from_name(gm_dtype_name((enum gm_dtype)i), &back, &err) || gm_dtype_bits((enum gm_dtype)i) ||
			    !be || !bb)
				names_ok = 0;
			gm_error_clear(&err);
			continue;
		}
		if (gm_dtype_from_name(gm_dtype_name((enum gm_dtype)i), &back, &err) || back != (enum gm_dtype)i ||
		    !gm_dtype_bits((enum gm_dtype)i))
			names_ok = 0;
	}
	ok(names_ok, "every safetensors dtype's name parses back to it and has a size; block types have a block and no name");
	ok(!gm_dtype_nbytes(GM_DTYPE_Q4_K, 512, &n, &err) && n == 288 && !gm_dtype_nbytes(GM_DTYPE_Q8_0, 64, &n, &err) &&
	   n == 68, "block types: bytes of whole blocks");
	ok_error(gm_dtype_nbytes(GM_DTYPE_Q4_0, 33, &n, &err), &err, GM_EFORMAT, "whole number of 32-element blocks",
		 "a partial block is refused");
	ok(!strcmp(gm_dtype_name(GM_DTYPE_COUNT), "unknown") && gm_dtype_bits(GM_DTYPE_COUNT) == 0 &&
	   !gm_dtype_torch_name(GM_DTYPE_COUNT), "out-of-range dtypes are named, never NULL");
	ok(gm_dtype_bits(GM_DTYPE_BF16) == 16 && gm_dtype_bits(GM_DTYPE_F4) == 4 &&
	   gm_dtype_bits(GM_DTYPE_F6_E2M3) == 6 && gm_dtype_bits(GM_DTYPE_C64) == 64, "sizes in bits");
	ok(!strcmp(gm_dtype_torch_name(GM_DTYPE_BF16), "bfloat16") && !gm_dtype_torch_name(GM_DTYPE_F4),
	   "torch names");
	ok(!gm_dtype_from_user("torch.bfloat16", &t, &err) && t == GM_DTYPE_BF16 &&
	   !gm_dtype_from_user("FP16", &t, &err) && t == GM_DTYPE_F16 && !gm_dtype_from_user("float", &t, &err) &&
	   t == GM_DTYPE_F32, "user spellings, case-insensitive, torch. prefix");
	ok_error(gm_dtype_from_user("int4", &t, &err), &err, GM_EINVAL, "unknown dtype 'int4'", "unknown user dtype");
	ok_error(gm_dtype_from_name("bf16", &t, &err), &err, GM_EFORMAT, "unknown dtype 'bf16'",
		 "safetensors names are exact");
	ok(!gm_dtype_nbytes(GM_DTYPE_F6_E3M2, 4, &n, &err) && n == 3 && !gm_dtype_nbytes(GM_DTYPE_F4, 0, &n, &err) &&
	   n == 0 && !gm_dtype_nbytes(GM_DTYPE_C64, 3, &n, &err) && n == 24, "byte counts");
	ok_error(gm_dtype_nbytes(GM_DTYPE_F6_E2M3, 3, &n, &err), &err, GM_EFORMAT,
		 "3 elements of F6_E2M3 (6 bits each) do not fill a whole number of bytes", "partial bytes");
	ok_error(gm_dtype_nbytes(GM_DTYPE_U16, UINT64_MAX / 8, &n, &err), &err, GM_EFORMAT, "overflow",
		 "byte count overflow");
}

static void test_bf16(void)
{
	uint32_t h;
	int round_trip = 1, nan_stays = 1;

	for (h = 0; h < 0x10000; h++) {
		float f = gm_bf16_to_f32((uint16_t)h);
		if (isnan(f))
			nan_stays &= isnan(gm_bf16_to_f32(gm_f32_to_bf16(f)));
		else
			round_trip &= gm_f32_to_bf16(f) == h && bits_of(f) == h << 16;
	}
	ok(round_trip, "every non-NaN bf16 survives bf16 -> f32 -> bf16");
	ok(nan_stays, "every bf16 NaN stays NaN");
	ok(gm_f32_to_bf16(1.0f) == 0x3f80 && gm_f32_to_bf16(-2.0f) == 0xc000, "exact values");
	ok(gm_f32_to_bf16(from_bits(0x3f808000)) == 0x3f80 && gm_f32_to_bf16(from_bits(0x3f818000)) == 0x3f82,
	   "ties round to even (down from even, up from odd)");
	ok(gm_f32_to_bf16(from_bits(0x3f808001)) == 0x3f81 && gm_f32_to_bf16(from_bits(0x3f807fff)) == 0x3f80,
	   "above and below a tie round to nearest");
	ok(gm_f32_to_bf16(from_bits(0x7f7fffff)) == 0x7f80 && gm_f32_to_bf16(from_bits(0xff7fffff)) == 0xff80 &&
	   gm_f32_to_bf16(from_bits(0x7f7f7fff)) == 0x7f7f, "overflow rounds to inf, just below stays finite");
	ok(gm_f32_to_bf16(INFINITY) == 0x7f80 && gm_f32_to_bf16(-INFINITY) == 0xff80 &&
	   gm_f32_to_bf16(-0.0f) == 0x8000, "inf and -0");
	ok(gm_f32_to_bf16(from_bits(0x7f800001)) == 0x7fc0 && gm_f32_to_bf16(from_bits(0xff800001)) == 0xffc0 &&
	   isnan(gm_bf16_to_f32(gm_f32_to_bf16(NAN))), "a NaN with only low payload bits stays NaN (quiet, sign kept)");
	ok(gm_f32_to_bf16(from_bits(0x00000001)) == 0 && gm_f32_to_bf16(from_bits(0x00008000)) == 0 &&
	   gm_f32_to_bf16(from_bits(0x00018000)) == 2, "subnormals round to nearest even too");
}

static void test_f16(void)
{
	uint32_t h;
	int round_trip = 1, nan_stays = 1;

	for (h = 0; h < 0x10000; h++) {
		float f = gm_f16_to_f32((uint16_t)h);
		if (isnan(f))
			nan_stays &= isnan(gm_f16_to_f32(gm_f32_to_f16(f)));
		else
			round_trip &= gm_f32_to_f16(f) == h;
	}
	ok(round_trip, "every non-NaN f16 survives f16 -> f32 -> f16");
	ok(nan_stays, "every f16 NaN stays NaN");
	ok(gm_f16_to_f32(0x3c00) == 1.0f && gm_f16_to_f32(0xc000) == -2.0f && gm_f16_to_f32(0x7bff) == 65504.0f &&
	   gm_f16_to_f32(0x0001) == 0x1p-24f && gm_f16_to_f32(0x8001) == -0x1p-24f &&
	   gm_f16_to_f32(0x03ff) == 0x3ffp-24f && gm_f16_to_f32(0x0400) == 0x1p-14f, "f16 -> f32 exact values");
	ok(gm_f16_to_f32(0x7c00) == INFINITY && gm_f16_to_f32(0xfc00) == -INFINITY && isnan(gm_f16_to_f32(0x7e00)) &&
	   isnan(gm_f16_to_f32(0x7c01)), "f16 inf and NaN");
	ok(gm_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00 && gm_f32_to_f16(1.0f + 0x3p-11f) == 0x3c02 &&
	   gm_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01, "f16 ties to even, above a tie rounds up");
	ok(gm_f32_to_f16(65504.0f) == 0x7bff && gm_f32_to_f16(65519.0f) == 0x7bff &&
	   gm_f32_to_f16(65520.0f) == 0x7c00 &&
	   gm_f32_to_f16(-1e10f) == 0xfc00, "overflow to inf from the halfway point above 65504");
	ok(gm_f32_to_f16(0x1p-24f) == 0x0001 && gm_f32_to_f16(0x1p-25f) == 0x0000 &&
	   gm_f32_to_f16(0x3p-26f) == 0x0001 && gm_f32_to_f16(0x3p-25f) == 0x0002 &&
	   gm_f32_to_f16(0x1p-26f) == 0x0000 && gm_f32_to_f16(-0x1p-30f) == 0x8000,
	   "subnormal results round to nearest even; tiny values become signed zero");
	ok(gm_f32_to_f16(0x7ffp-25f) == 0x0400 && gm_f32_to_f16(0x7fdp-25f) == 0x03fe,
	   "the largest subnormal rounds up into the smallest normal");
	ok(gm_f32_to_f16(INFINITY) == 0x7c00 && gm_f32_to_f16(-INFINITY) == 0xfc00 &&
	   isnan(gm_f16_to_f32(gm_f32_to_f16(from_bits(0x7f800001)))) &&
	   gm_f32_to_f16(from_bits(0xffc00000)) == 0xfe00, "f32 -> f16 inf and NaN (low payload, sign)");
}

static void test_convert_arrays(void)
{
	gm_error err = GM_ERROR_INIT;
	static const float src[5] = { 1.0f, -0.5f, 3.140625f, 65504.0f, 0x1p-24f };
	unsigned char raw[1 + 5 * 8];
	float back[5];
	double d = 2.5;
	int i, same;

	/* raw + 1: views into mappings are not aligned; conversions must not care. */
	ok(!gm_dtype_from_f32(GM_DTYPE_BF16, src, raw + 1, 5, &err) && raw[1] == 0x80 && raw[2] == 0x3f,
	   "f32 -> bf16 stores little-endian at any alignment");
	ok(!gm_dtype_to_f32(GM_DTYPE_BF16, raw + 1, back, 5, &err) && back[0] == 1.0f && back[1] == -0.5f &&
	   back[2] == 3.140625f && back[3] == 65536.0f, "bf16 -> f32 (65504 rounds to 65536 in bf16)");
	ok(!gm_dtype_from_f32(GM_DTYPE_F16, src, raw + 1, 5, &err) &&
	   !gm_dtype_to_f32(GM_DTYPE_F16, raw + 1, back, 5, &err),
	   "f16 both ways");
	for (same = 1, i = 0; i < 5; i++)
		same &= back[i] == src[i];
	ok(same, "values exact in f16 come back unchanged");
	ok(!gm_dtype_from_f32(GM_DTYPE_F64, src, raw + 1, 5, &err) &&
	   !gm_dtype_to_f32(GM_DTYPE_F64, raw + 1, back, 5, &err),
	   "f64 both ways");
	for (same = 1, i = 0; i < 5; i++)
		same &= back[i] == src[i];
	memcpy(raw + 1, &d, 8);
	ok(same && !gm_dtype_to_f32(GM_DTYPE_F64, raw + 1, back, 1, &err) && back[0] == 2.5f, "f64 values");
	ok(!gm_dtype_from_f32(GM_DTYPE_F32, src, raw + 1, 5, &err) &&
	   !gm_dtype_to_f32(GM_DTYPE_F32, raw + 1, back, 5, &err) &&
	   !memcmp(back, src, sizeof(src)), "f32 is a copy");
	ok_error(gm_dtype_to_f32(GM_DTYPE_I32, raw, back, 1, &err), &err, GM_EUNSUPPORTED,
		 "cannot convert I32 values to f32", "integers are not converted");
	ok_error(gm_dtype_from_f32(GM_DTYPE_F8_E4M3, src, raw, 1, &err), &err, GM_EUNSUPPORTED,
		 "cannot convert f32 values to F8_E4M3", "fp8 storage is not written");
}

/* ------------------------------------------------------------ weights */

static int write_index(const char *dir, const char *body)
{
	gm_error err = GM_ERROR_INIT;
	char *path = gm_path_join(dir, "model.safetensors.index.json");
	int ret = gm_write_file_atomic(path, body, strlen(body), 0644, &err);

	free(path);
	return ret;
}

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD3 "model-00003-of-00002.safetensors"

/* Replaces the index in dir and opens the directory. */
static int open_index(const char *dir, const char *body, gm_weights **out, gm_error *err)
{
	int ret = write_index(dir, body);

	return ret ? ret : gm_weights_open(dir, out, err);
}

/* Splits the f32 fixture into two shards under dir, with an index. */
static int make_sharded(const char *dir, const gm_st_file *src, gm_error *err)
{
	gm_st_writer *w[2] = { gm_st_writer_new(), gm_st_writer_new() };
	gm_buf idx = GM_BUF_INIT;
	size_t i, half = gm_st_count(src) / 2;
	int s, ret = gm_mkdir_p(dir, 0755, err);

	gm_buf_adds(&idx, "{\"metadata\": {\"total_size\": 2652480}, \"weight_map\": {");
	for (i = 0; !ret && i < gm_st_count(src); i++) {
		const gm_tensor *t = gm_st_tensor(src, i);
		s = i >= half;
		/* Put the tensors into the shards in reverse name order, to
		 * show that the weights are sorted by name whatever the files. */
		t = gm_st_tensor(src, gm_st_count(src) - 1 - i);
		ret = gm_st_writer_add(w[s], t->name, t->dtype, t->ndim, t->shape, t->data, err);
		gm_buf_addf(&idx, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "", t->name, s + 1);
	}
	gm_buf_adds(&idx, "}}\n");
	for (s = 0; s < 2 && !ret; s++) {
		char name[64], *path;
		snprintf(name, sizeof(name), "model-0000%d-of-00002.safetensors", s + 1);
		path = gm_path_join(dir, name);
		ret = gm_st_writer_write(w[s], path, err);
		free(path);
	}
	if (!ret)
		ret = write_index(dir, idx.buf);
	gm_st_writer_free(w[0]);
	gm_st_writer_free(w[1]);
	gm_buf_release(&idx);
	return ret;
}

static void test_weights(void)
{
	gm_error err = GM_ERROR_INIT;
	char *dir = fixture(F32_DIR), *lora = fixture("t/fixtures/lora/tiny-qwen3-f32-a2-r4-qv");
	char *sdir = tmp_path("sharded"), *file = fixture(F32_DIR "/config.json");
	gm_weights *w = NULL, *s = NULL;
	gm_st_file *single = NULL;
	size_t i;
	int sorted = 1, same = 1, files_ok = 1;

	if (!ok(!gm_weights_open(dir, &w, &err), "gm_weights_open on the f32 model")) {
		tap_diag("%s", err.msg);
		goto out;
	}
	ok(gm_weights_count(w) == 36 && gm_weights_file_count(w) == 1 && gm_weights_total_bytes(w) == 2652480,
	   "36 tensors in one file, 2652480 bytes");
	ok(strstr(gm_weights_file_path(w, 0), "tiny-qwen3-f32/model.safetensors") && !gm_weights_file_path(w, 1),
	   "the file path");
	for (i = 1; i < gm_weights_count(w); i++)
		if (strcmp(gm_weights_tensor(w, i - 1)->name, gm_weights_tensor(w, i)->name) >= 0)
			sorted = 0;
	ok(sorted && !gm_weights_tensor(w, 36) && !gm_weights_tensor_file(w, 36), "tensors sorted by name");
	ok(gm_weights_find(w, "model.norm.weight") && gm_weights_find(w, "model.norm.weight")->shape[0] == 64 &&
	   !gm_weights_find(w, "model.norm.bias"), "gm_weights_find");

	single = NULL;
	gm_st_open(gm_weights_file_path(w, 0), &single, &err);
	ok(single && !make_sharded(sdir, single, &err), "write a two-shard copy with an index");
	if (!ok(!gm_weights_open(sdir, &s, &err), "gm_weights_open on the sharded copy")) {
		tap_diag("%s", err.msg);
		goto out;
	}
	ok(gm_weights_count(s) == 36 && gm_weights_file_count(s) == 2 && gm_weights_total_bytes(s) == 2652480,
	   "36 tensors in two files, same total");
	for (i = 0; i < gm_weights_count(s); i++) {
		const gm_tensor *a = gm_weights_tensor(w, i), *b = gm_weights_tensor(s, i);
		const char *in = gm_weights_tensor_file(s, i);
		if (strcmp(a->name, b->name) || a->nbytes != b->nbytes || memcmp(a->data, b->data, a->nbytes))
			same = 0;
		/* Shard 1 got the names from the end of the alphabet. */
		if (!strstr(in, i < 18 ? "model-00002-of-00002" : "model-00001-of-00002"))
			files_ok = 0;
	}
	ok(same, "sharded and single checkpoints hold the same tensors in the same (name) order");
	ok(files_ok, "gm_weights_tensor_file names each tensor's shard");
	gm_weights_close(s);
	s = NULL;

	ok_error(open_index(sdir, "{\"weight_map\": {\"lm_head.weight\": \"../model.safetensors\"}}", &s, &err),
		 &err, GM_EFORMAT, "maps to shard '../model.safetensors', which is not a plain file name",
		 "shard names cannot leave the directory");
	ok_error(open_index(sdir, "{\"weight_map\": {\"lm_head.weight\": \"/etc/passwd\"}}", &s, &err),
		 &err, GM_EFORMAT, "not a plain file name", "absolute shard names are refused");
	ok_error(open_index(sdir, "{\"weight_map\": {\"nope\": \"" SHARD1 "\"}}", &s, &err), &err, GM_EFORMAT,
		 "tensor 'nope' is listed in shard '" SHARD1 "' but missing from it", "a tensor missing from its shard");
	ok_error(open_index(sdir, "{\"weight_map\": {\"lm_head.weight\": \"" SHARD1 "\"}}", &s, &err), &err,
		 GM_EFORMAT, "tensor 'lm_head.weight' is listed in shard", "a tensor listed in the wrong shard");
	{
		/* A third file also holding model.norm.weight (shard 1 has it). */
		char *p = gm_path_join(sdir, SHARD3);
		gm_st_writer *wr = gm_st_writer_new();
		int64_t n = 64;

		gm_st_writer_add(wr, "model.norm.weight", GM_DTYPE_F32, 1, &n,
				 gm_weights_find(w, "model.norm.weight")->data, &err);
		gm_st_writer_write(wr, p, &err);
		gm_st_writer_free(wr);
		free(p);
		ok_error(open_index(sdir, "{\"weight_map\": {\"model.norm.weight\": \"" SHARD1 "\", "
				    "\"x\": \"" SHARD3 "\"}}", &s, &err),
			 &err, GM_EFORMAT, "tensor 'model.norm.weight' is in two shards", "a tensor in two shards");
	}
	ok_error(open_index(sdir, "{\"metadata\": {}}", &s, &err), &err, GM_EFORMAT,
		 "missing 'weight_map'", "an index without weight_map");
	ok_error(open_index(sdir, "{\"weight_map\": {}}", &s, &err), &err, GM_EFORMAT,
		 "'weight_map' lists no tensors", "an empty weight_map");
	ok_error(open_index(sdir, "{\"weight_map\": {\"a\": 1}}", &s, &err), &err, GM_EFORMAT,
		 "weight_map 'a' must be a file name (a string), not int", "a non-string shard");
	ok_error(open_index(sdir, "{\"weight_map\": {\"a\": \"missing.safetensors\"}}", &s, &err),
		 &err, GM_ENOENT, "missing.safetensors", "a shard that does not exist");
	ok_error(open_index(sdir, "[1]", &s, &err), &err, GM_EFORMAT,
		 "must be a JSON object, not array", "an index that is not an object");
	ok_error(gm_weights_open(lora, &s, &err), &err, GM_ENOENT,
		 "no model.safetensors or model.safetensors.index.json", "a directory without weights");
	ok_error(gm_weights_open(file, &s, &err), &err, GM_ENOENT, "not a directory",
		 "a file is not a model directory");
out:
	gm_st_close(single);
	gm_weights_close(w);
	gm_weights_close(s);
	free(dir);
	free(lora);
	free(sdir);
	free(file);
}

/* The same tensors, byte for byte, whether the weights are mapped or resident in huge-page memory. */
static int same_weights(const gm_weights *a, const gm_weights *b)
{
	size_t i;

	if (gm_weights_count(a) != gm_weights_count(b))
		return 0;
	for (i = 0; i < gm_weights_count(a); i++) {
		const gm_tensor *x = gm_weights_tensor(a, i), *y = gm_weights_tensor(b, i);

		if (strcmp(x->name, y->name) || x->nbytes != y->nbytes || x->dtype != y->dtype ||
		    memcmp(x->data, y->data, x->nbytes))
			return 0;
	}
	return 1;
}

static void test_resident(void)
{
	gm_error err = GM_ERROR_INIT;
	char *dir = fixture(F32_DIR), *bdir = fixture(BF16_DIR), *big = tmp_path("resident");
	char *bigfile = gm_path_join(big, "model.safetensors");
	gm_weights *m = NULL, *r = NULL;
	gm_st_writer *wr;
	const char *dirs[3];
	int64_t shape[2] = { 1024 + 3, 1031 }; /* 4.2 MB of f32: more than two huge pages, not a multiple */
	float *data;
	size_t i, n = (size_t)(shape[0] * shape[1]);

	/* a file larger than a huge page, with tensors on both sides of the 2 MiB boundary */
	data = gm_xmalloc(n * sizeof(float));
	for (i = 0; i < n; i++)
		data[i] = (float)i * 0.25f - 7.0f;
	mkdir(big, 0777);
	wr = gm_st_writer_new();
	ok(!gm_st_writer_add(wr, "a", GM_DTYPE_F32, 2, shape, data, &err) &&
	   !gm_st_writer_add(wr, "b", GM_DTYPE_F32, 1, shape, data + 17, &err) &&
	   !gm_st_writer_write(wr, bigfile, &err), "write a 4 MB safetensors file");
	gm_st_writer_free(wr);
	dirs[0] = dir;
	dirs[1] = bdir;
	dirs[2] = big;
	for (i = 0; i < 3; i++) {
		m = r = NULL;
		if (!ok(!gm_weights_open_mode(dirs[i], GM_WEIGHTS_MMAP, &m, &err) &&
			!gm_weights_open_mode(dirs[i], GM_WEIGHTS_RESIDENT, &r, &err), "open %s mapped and resident",
			dirs[i])) {
			tap_diag("%s", err.msg);
		} else {
			ok(!gm_weights_resident_count(m), "mapped: no resident file");
			ok(same_weights(m, r), "resident copy of %s: the same tensors, byte for byte", dirs[i]);
			if (!gm_weights_resident_count(r))
				tap_diag("no huge-page memory here: the resident open fell back to the mapping");
			else
				ok(((uintptr_t)gm_weights_tensor(r, 0)->data & 7) ==
				   ((uintptr_t)gm_weights_tensor(m, 0)->data & 7), "alignment of the data as in the mapping");
		}
		gm_weights_close(m);
		gm_weights_close(r);
	}
	setenv("GM_WEIGHTS", "mmap", 1);
	m = NULL;
	ok(!gm_weights_open(big, &m, &err) && !gm_weights_resident_count(m), "GM_WEIGHTS=mmap maps");
	gm_weights_close(m);
	unsetenv("GM_WEIGHTS");
	free(data);
	free(bigfile);
	free(big);
	free(dir);
	free(bdir);
}

int main(void)
{
	char *cmd;

	snprintf(tmpdir, sizeof(tmpdir), "%s/gm-test-st-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir)) {
		printf("Bail out! cannot create a temporary directory\n");
		return 1;
	}
	test_read_f32();
	test_read_bf16();
	test_round_trip();
	test_padding();
	test_escapes();
	test_fill_and_atomic();
	test_writer_rejects();
	test_reject_header();
	test_reject_entries();
	test_accept();
	test_truncated();
	test_corpus();
	test_dtype_table();
	test_bf16();
	test_f16();
	test_convert_arrays();
	test_weights();
	test_resident();
	cmd = gm_path_join("rm -rf ", tmpdir);
	if (system(cmd) != 0)
		tap_diag("could not remove %s", tmpdir);
	free(cmd);
	return tap_done();
}
