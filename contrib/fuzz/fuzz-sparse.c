/*
 * fuzz-sparse.c - libFuzzer target for sparse (CSR) adapter directories
 * (gm_sparse_open, libcore/formats/sparse.c): sparse_config.json and
 * adapter_model.safetensors, as `git adapter add` and `git infer
 * --adapter` read them.
 *
 * Each input is "sparse_config.json" FUZZ_SPLIT "adapter_model.safetensors"
 * (fuzz-common.h).  A refusal must explain itself.  An accepted adapter
 * must hold what sparse.h promises the kernels that walk it without
 * further checks: modules sorted by layer and projection and found again
 * by gm_sparse_find, out and in > 0, every matrix a valid CSR matrix
 * (gm_sparse_check_csr once more: offsets from 0 to nnz, monotone, columns
 * in [0, in) and increasing within a row, finite values), and nnz and the
 * byte counts adding up.  A product y = delta W x over every row and
 * column is computed for small modules, so that ASan sees any index that
 * escaped.
 */
#include <math.h>

#include "formats/sparse.h"
#include "fuzz-common.h"

static char dir[300], cfg_path[340], st_path[340];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	snprintf(dir, sizeof(dir), "%s", fuzz_scratch_dir("sparse"));
	snprintf(cfg_path, sizeof(cfg_path), "%s/" GM_SPARSE_CONFIG_FILE, dir);
	snprintf(st_path, sizeof(st_path), "%s/" GM_SPARSE_WEIGHTS_FILE, dir);
	return 0;
}

static void check_adapter(const gm_sparse_adapter *ad)
{
	uint64_t nnz = 0;
	size_t i;

	for (i = 0; i < ad->n_modules; i++) {
		const gm_sparse_module *m = &ad->modules[i];
		gm_error err = GM_ERROR_INIT;
		int64_t r, k;

		CHECK(m->name && m->layer >= 0 && (unsigned)m->proj < GM_PEFT_PROJ_COUNT);
		CHECK(gm_sparse_find(ad, m->layer, m->proj) == m);
		if (i)
			CHECK(m[-1].layer < m->layer || (m[-1].layer == m->layer && m[-1].proj < m->proj));
		CHECK(m->out > 0 && m->in > 0 && m->nnz >= 0);
		CHECK(m->row_offsets && (m->nnz == 0 || (m->col_indices && m->values)));
		if (gm_sparse_check_csr(m->name, m->out, m->in, m->row_offsets, m->col_indices, m->values, m->nnz,
					&err)) {
			fprintf(stderr, "an accepted module is not valid CSR: %s\n", err.msg);
			abort();
		}
		CHECK(m->row_offsets[0] == 0 && m->row_offsets[m->out] == m->nnz);
		if (m->in <= 4096 && m->out <= 4096) {
			float *x = calloc((size_t)m->in, sizeof(float));
			volatile float sink = 0;

			CHECK(x);
			for (k = 0; k < m->in; k++)
				x[k] = 1.0f;
			for (r = 0; r < m->out; r++) {
				float y = 0;
				for (k = m->row_offsets[r]; k < m->row_offsets[r + 1]; k++)
					y += m->values[k] * x[m->col_indices[k]];
				sink += y;
			}
			(void)sink;
			free(x);
		}
		nnz += (uint64_t)m->nnz;
	}
	CHECK(nnz == ad->nnz);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *st;
	size_t cfg_len, st_len;
	gm_sparse_adapter *ad = NULL;
	gm_error err = GM_ERROR_INIT;
	int ret;

	fuzz_split(data, size, &cfg_len, &st, &st_len);
	fuzz_write_file(cfg_path, data, cfg_len);
	if (st != data + size)
		fuzz_write_file(st_path, st, st_len);
	else
		unlink(st_path);
	CHECK(gm_sparse_is_dir(dir));
	ret = gm_sparse_open(dir, &ad, &err);
	if (ret) {
		CHECK_REFUSAL(ret, err);
		CHECK(ad == NULL);
		return 0;
	}
	fuzz_accepted("sparse adapter");
	check_adapter(ad);
	gm_sparse_close(ad);
	return 0;
}
