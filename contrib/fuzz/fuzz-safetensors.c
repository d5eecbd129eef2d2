/*
 * fuzz-safetensors.c - libFuzzer target for the safetensors reader.
 *
 * Built by "make fuzz" (clang, -fsanitize=fuzzer,address,undefined); see
 * README.md beside this file.  Each input is handed to gm_st_open_memory
 * as a whole file image.  Rejections are the expected outcome for almost
 * every input; what the sanitizers look for is a read outside the image,
 * a leak or undefined behaviour on the way.  When an input is accepted,
 * the target also checks what a validated file promises its callers:
 * every view lies inside the image, the views tile the data buffer, names
 * can be found again, and the writer turns the file into one the reader
 * accepts with the same tensors.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "formats/dtype.h"
#include "base/error.h"
#include "base/fs.h"
#include "formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Where the round trip writes; tmpfs when there is one, to keep the rate up. */
static char scratch[256];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

	(void)argc;
	(void)argv;
	snprintf(scratch, sizeof(scratch), "%s/gm-fuzz-st-%ld.safetensors", base, (long)getpid());
	return 0;
}

/* A checked invariant: abort() so that libFuzzer records the input. */
#define CHECK(cond)                                                                      \
	do {                                                                             \
		if (!(cond)) {                                                           \
			fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                         \
		}                                                                        \
	} while (0)

/* The writer pads its header with spaces to a multiple of 8. */
static int le64_header_ok(const gm_buf *b)
{
	uint64_t n = 0;
	int i;

	if (b->len < 8)
		return 0;
	for (i = 7; i >= 0; i--)
		n = (n << 8) | (unsigned char)b->buf[i];
	return n % 8 == 0 && n <= b->len - 8 && (n == 0 || b->buf[8 + n - 1] == ' ' || b->buf[8 + n - 1] == '}');
}

static int cmp_u64pair(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;

	if (x[0] != y[0])
		return x[0] < y[0] ? -1 : 1;
	return x[1] < y[1] ? -1 : x[1] > y[1];
}

/* Touches every byte of every view, so that ASan sees any read past the image. */
static unsigned walk_tensors(const gm_st_file *f, const uint8_t *data, size_t size)
{
	size_t i, n = gm_st_count(f);
	uint64_t *spans = calloc(n ? 2 * n : 1, sizeof(uint64_t));
	uint64_t end = 0, hdr_len = 0, data_len;
	unsigned sum = 0;
	int b;

	CHECK(spans && size >= 8);
	for (b = 7; b >= 0; b--)
		hdr_len = (hdr_len << 8) | data[b];
	CHECK(hdr_len <= size - 8);
	data_len = size - 8 - hdr_len;
	CHECK(gm_st_tensor(f, n) == NULL);
	for (i = 0; i < n; i++) {
		const gm_tensor *t = gm_st_tensor(f, i);
		const uint8_t *p = t->data;
		uint64_t numel = 1, nbytes = 0, j;
		int d;

		CHECK(t && t->name && gm_st_find(f, t->name) == t);
		CHECK(t->ndim >= 0 && t->ndim <= GM_ST_MAX_DIMS);
		CHECK((unsigned)t->dtype < GM_DTYPE_COUNT);
		for (d = 0; d < t->ndim; d++) {
			CHECK(t->shape[d] >= 0);
			numel *= (uint64_t)t->shape[d];
		}
		CHECK(numel == t->numel);
		CHECK(!gm_dtype_nbytes(t->dtype, numel, &nbytes, NULL) && nbytes == t->nbytes);
		if (t->nbytes) {
			CHECK(p == data + 8 + hdr_len + t->offset && t->offset + t->nbytes <= data_len);
			for (j = 0; j < t->nbytes; j++)
				sum += p[j];
		}
		/* The conversions are what callers run on views next. */
		if (t->numel && t->numel <= 4096 &&
		    (t->dtype == GM_DTYPE_F32 || t->dtype == GM_DTYPE_F16 || t->dtype == GM_DTYPE_BF16 ||
		     t->dtype == GM_DTYPE_F64)) {
			float *tmp = malloc((size_t)t->numel * sizeof(float));
			CHECK(tmp);
			CHECK(!gm_dtype_to_f32(t->dtype, t->data, tmp, (size_t)t->numel, NULL));
			free(tmp);
		}
		spans[2 * i] = t->offset;
		spans[2 * i + 1] = t->offset + t->nbytes;
	}
	/* The promise of the reader: the views tile the data buffer exactly. */
	qsort(spans, n, 2 * sizeof(uint64_t), cmp_u64pair);
	for (i = 0; i < n; i++) {
		CHECK(spans[2 * i] == end);
		end = spans[2 * i + 1];
	}
	CHECK(end == data_len);
	free(spans);
	return sum;
}

static void walk_metadata(const gm_st_file *f)
{
	size_t i, n = gm_st_metadata_count(f);

	for (i = 0; i < n; i++) {
		const char *k, *v;
		gm_st_metadata_at(f, i, &k, &v);
		CHECK(k && v);
		/* Keys are unique, so the lookup finds this very entry. */
		CHECK(gm_st_metadata(f, k) == v);
	}
	{
		const char *k = "x", *v = "x";
		gm_st_metadata_at(f, n, &k, &v);
		CHECK(!k && !v);
	}
}

/* Adds f's metadata and tensors to a writer, in order, and writes path. */
static int rewrite(const gm_st_file *f, const char *path, gm_error *err)
{
	gm_st_writer *w = gm_st_writer_new();
	size_t i;
	int ret;

	for (i = 0; i < gm_st_metadata_count(f); i++) {
		const char *k, *v;
		gm_st_metadata_at(f, i, &k, &v);
		/* Whatever the reader accepted, the writer must take. */
		CHECK(!gm_st_writer_set_metadata(w, k, v, err));
	}
	for (i = 0; i < gm_st_count(f); i++) {
		const gm_tensor *t = gm_st_tensor(f, i);
		CHECK(!gm_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, err));
	}
	ret = gm_st_writer_write(w, path, err);
	gm_st_writer_free(w);
	return ret;
}

/*
 * Writes f back with the writer, checks that the reader takes the result
 * and sees the same tensors with the same bytes, and that writing that
 * result again changes nothing (the writer's output is its own fixed point).
 */
static void round_trip(const gm_st_file *f)
{
	gm_st_file *g = NULL;
	gm_error err = GM_ERROR_INIT;
	gm_buf once = GM_BUF_INIT, twice = GM_BUF_INIT;
	size_t i;

	if (rewrite(f, scratch, &err)) {
		/* Only the environment may fail here (a full tmpfs...). */
		fprintf(stderr, "round trip skipped: %s\n", err.msg);
		return;
	}
	CHECK(!gm_read_file(scratch, &once, &err));
	if (gm_st_open_memory(once.buf, once.len, "rewritten", &g, &err)) {
		fprintf(stderr, "the reader refuses what the writer wrote: %s\n", err.msg);
		abort();
	}
	CHECK(le64_header_ok(&once));
	CHECK(gm_st_count(g) == gm_st_count(f));
	CHECK(gm_st_metadata_count(g) == gm_st_metadata_count(f));
	for (i = 0; i < gm_st_count(f); i++) {
		const gm_tensor *a = gm_st_tensor(f, i), *b = gm_st_tensor(g, i);
		CHECK(!strcmp(a->name, b->name) && a->dtype == b->dtype && a->ndim == b->ndim);
		CHECK(!memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof(a->shape[0])));
		CHECK(a->nbytes == b->nbytes && (!a->nbytes || !memcmp(a->data, b->data, (size_t)a->nbytes)));
	}
	if (!rewrite(g, scratch, &err)) {
		CHECK(!gm_read_file(scratch, &twice, &err));
		CHECK(twice.len == once.len && !memcmp(twice.buf, once.buf, once.len));
	}
	gm_st_close(g);
	gm_buf_release(&once);
	gm_buf_release(&twice);
	unlink(scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	gm_st_file *f = NULL;
	gm_error err = GM_ERROR_INIT;
	volatile unsigned sink;

	if (gm_st_open_memory(data, size, "fuzz", &f, &err)) {
		/* A refusal always explains itself. */
		CHECK(err.code < 0 && err.msg[0]);
		return 0;
	}
	sink = walk_tensors(f, data, size);
	(void)sink;
	walk_metadata(f);
	round_trip(f);
	gm_st_close(f);
	return 0;
}
