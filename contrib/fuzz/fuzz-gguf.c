/*
 * fuzz-gguf.c - libFuzzer target for the GGUF reader (formats/gguf.c).
 *
 * Each input is handed to gm_gguf_open_memory as a whole file image.  A
 * refusal must explain itself.  An accepted file must keep what the reader
 * promises: every tensor view lies inside the image's data section, at an
 * aligned offset, without overlapping another, its bytes match dtype x
 * shape, and its name finds it again; every key's value can be read back
 * through the typed getters (each element of every array, too) without a
 * read outside the image.
 */
#include "base/buf.h"
#include "formats/gguf.h"
#include "fuzz-common.h"

/* Where the sums go, so that the reads are not optimized away. */
static volatile unsigned sink;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static unsigned touch(const void *p, uint64_t n)
{
	const unsigned char *c = p;
	unsigned sum = 0;
	uint64_t i;

	for (i = 0; i < n; i++)
		sum += c[i];
	return sum;
}

static unsigned read_kvs(const gm_gguf *g)
{
	gm_error err = GM_ERROR_INIT;
	unsigned sum = 0;
	size_t i;

	for (i = 0; i < gm_gguf_kv_count(g); i++) {
		const char *key = gm_gguf_kv_key(g, i), *s;
		enum gm_gguf_vtype t = gm_gguf_kv_type(g, i), et;
		uint64_t n, j;
		int64_t v;
		double d;
		size_t len;
		int b, ret;

		CHECK(key && *key && gm_gguf_find_kv(g, key) >= 0);
		CHECK((unsigned)t < GM_GGUF_VTYPE_COUNT);
		if (t == GM_GGUF_STRING) {
			ret = gm_gguf_get_string(g, key, &s, &len, &err);
			if (!ret)
				CHECK(strlen(s) == len);
		} else if (t == GM_GGUF_BOOL) {
			CHECK(!gm_gguf_get_bool(g, key, &b, &err));
		} else if (t == GM_GGUF_FLOAT32 || t == GM_GGUF_FLOAT64) {
			CHECK(!gm_gguf_get_float(g, key, &d, &err));
		} else if (t == GM_GGUF_ARRAY) {
			CHECK(!gm_gguf_get_array(g, key, &et, &n, &err));
			for (j = 0; j < n && j < 4096; j++) {
				if (et == GM_GGUF_STRING) {
					CHECK(!gm_gguf_array_string(g, key, j, &s, &len, &err));
					sum += touch(s, len);
				} else if (et == GM_GGUF_FLOAT32 || et == GM_GGUF_FLOAT64) {
					CHECK(!gm_gguf_array_float(g, key, j, &d, &err));
				} else if (et != GM_GGUF_ARRAY && et != GM_GGUF_BOOL) {
					if (!gm_gguf_array_int(g, key, j, &v, &err))
						sum += (unsigned)v;
				}
			}
		} else {
			if (!gm_gguf_get_int(g, key, &v, &err))
				sum += (unsigned)v;
		}
		(void)d;
	}
	return sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	gm_error err = GM_ERROR_INIT;
	gm_gguf *g = NULL;
	uint64_t data_off;
	size_t i, j, n;
	int ret;

	ret = gm_gguf_open_memory(data, size, "fuzz.gguf", &g, &err);
	if (ret) {
		CHECK_REFUSAL(ret, err);
		CHECK(!g);
		return 0;
	}
	fuzz_accepted("a GGUF file");
	data_off = gm_gguf_data_offset(g);
	CHECK(data_off <= size && (data_off % gm_gguf_alignment(g) == 0 || data_off == size));
	n = gm_gguf_tensor_count(g);
	for (i = 0; i < n; i++) {
		const gm_tensor *t = gm_gguf_tensor(g, i);
		const uint8_t *p = t->data;
		uint64_t want;

		CHECK(p >= data + data_off && t->nbytes <= (uint64_t)(data + size - p));
		CHECK((uint64_t)(p - data - data_off) == t->offset && t->offset % gm_gguf_alignment(g) == 0);
		CHECK(!gm_dtype_nbytes(t->dtype, t->numel, &want, &err) && want == t->nbytes);
		CHECK(gm_gguf_find_tensor(g, t->name) == t);
		for (j = 0; j < n && j < 64; j++) {
			const gm_tensor *u = gm_gguf_tensor(g, j);
			if (u != t && t->nbytes && u->nbytes)
				CHECK(t->offset + t->nbytes <= u->offset || u->offset + u->nbytes <= t->offset);
		}
		sink += touch(p, t->nbytes < 65536 ? t->nbytes : 65536);
	}
	sink += read_kvs(g);
	gm_gguf_close(g);
	return 0;
}
