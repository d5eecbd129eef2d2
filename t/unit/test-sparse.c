/*
 * test-sparse.c - sparse delta adapters (libcore/formats/sparse.h): sparsifying a
 * LoRA (the kept entries against a brute-force top-k, the norm kept), the
 * reader's refusals, and applying them in the forward pass (density 1
 * reproduces the LoRA's logits; the drift shrinks as the density grows).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "formats/dtype.h"
#include "engine/forward.h"
#include "base/fs.h"
#include "formats/model.h"
#include "formats/peft.h"
#include "formats/sparse.h"
#include "tap.h"

#define A1 "t/fixtures/lora/tiny-qwen3-f32-a1-r8-all"
#define A2 "t/fixtures/lora/tiny-qwen3-f32-a2-r4-qv"

static const int32_t ids[8] = { 1, 17, 400, 3, 999, 42, 7, 2048 };

/* ||a - b||_2 / ||c - b||_2: the part of the change c - b that a misses. */
static double rel_l2(const float *a, const float *b, const float *c, size_t n)
{
	double d = 0, m = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		d += ((double)a[i] - (double)b[i]) * ((double)a[i] - (double)b[i]);
		m += ((double)c[i] - (double)b[i]) * ((double)c[i] - (double)b[i]);
	}
	return m > 0 ? sqrt(d / m) : sqrt(d);
}

static void rm_dir(const char *dir)
{
	gm_buf p = GM_BUF_INIT;

	gm_buf_addf(&p, "%s/" GM_SPARSE_CONFIG_FILE, dir);
	unlink(p.buf);
	gm_buf_reset(&p);
	gm_buf_addf(&p, "%s/" GM_SPARSE_WEIGHTS_FILE, dir);
	unlink(p.buf);
	gm_buf_release(&p);
	rmdir(dir);
}

/* All logits of ids with the adapters f has: one prefill, or one token at a time. */
static int eval_all(gm_forward *f, float *logits, int64_t V, int decode, gm_error *err)
{
	int i, ret = 0;

	gm_forward_truncate(f, 0);
	if (!decode)
		return gm_forward_eval(f, ids, 8, logits, 1, err);
	for (i = 0; i < 8 && !ret; i++)
		ret = gm_forward_eval(f, &ids[i], 1, logits + i * V, 0, err);
	return ret;
}

static int set_list(gm_forward *f, const gm_peft_adapter *lora, float ls, const gm_sparse_adapter *sp, float ss,
		    gm_error *err)
{
	gm_forward_adapter l[2];
	int n = 0;

	memset(l, 0, sizeof(l));
	if (lora) {
		l[n].lora = lora;
		l[n++].scale = ls;
	}
	if (sp) {
		l[n].sparse = sp;
		l[n++].scale = ss;
	}
	return gm_forward_set_adapter_list(f, l, n, err);
}

/* ---------------------------------------------------------------- the kept entries */

struct ent {
	float v;
	int64_t pos;
};

static int ent_cmp(const void *pa, const void *pb)
{
	const struct ent *a = pa, *b = pb;
	float x = fabsf(a->v), y = fabsf(b->v);

	if (x != y)
		return x > y ? -1 : 1;
	return a->pos < b->pos ? -1 : a->pos > b->pos;
}

/*
 * Module md of the LoRA against module sm of its sparsification at density
 * d: the kept positions are the brute-force top k of the f32 delta, the
 * values equal a double-precision B A within 1e-5, the norm kept matches.
 */
static void check_module(const gm_peft_module *md, const gm_sparse_module *sm, double d)
{
	int64_t out = md->out, in = md->in, r = md->rank, n = out * in, k, i, o, e, bad = 0;
	float *a = gm_xmalloc(sizeof(float) * (size_t)(r * in)), *b = gm_xmalloc(sizeof(float) * (size_t)(out * r));
	float *dw = gm_xmalloc(sizeof(float) * (size_t)n);
	struct ent *all = gm_xmalloc(sizeof(*all) * (size_t)n);
	char *kept = gm_xcalloc((size_t)n, 1);
	double kept2 = 0, all2 = 0, vdiff = 0, vmax = 0, min_kept = INFINITY, max_dropped = 0;
	gm_error err = GM_ERROR_INIT;

	gm_dtype_to_f32(md->a->dtype, md->a->data, a, (size_t)(r * in), &err);
	gm_dtype_to_f32(md->b->dtype, md->b->data, b, (size_t)(out * r), &err);
	gm_sparse_delta_rows(a, b, r, in, (float)md->scale, 0, out, dw);
	for (i = 0; i < n; i++) {
		all[i].v = dw[i];
		all[i].pos = i;
	}
	qsort(all, (size_t)n, sizeof(*all), ent_cmp);
	k = (int64_t)ceil(d * (double)n - 1e-9);
	ok(sm->nnz == k && sm->out == out && sm->in == in, "d=%g %s: nnz %lld = ceil(d * %lld) = %lld", d, md->name,
	   (long long)sm->nnz, (long long)n, (long long)k);
	for (i = 0; i < k && i < n; i++)
		kept[all[i].pos] = 1;
	for (o = 0; o < out; o++) {
		for (e = sm->row_offsets[o]; e < sm->row_offsets[o + 1]; e++) {
			int64_t c = sm->col_indices[e], q;
			double ref = 0;

			if (!kept[o * in + c])
				bad++;
			kept[o * in + c] = 2;
			for (q = 0; q < r; q++)
				ref += (double)b[o * r + q] * (double)a[q * in + c];
			ref *= md->scale;
			vdiff = fmax(vdiff, fabs(ref - (double)sm->values[e]));
			vmax = fmax(vmax, fabs(ref));
			min_kept = fmin(min_kept, fabs(ref));
		}
	}
	for (i = 0; i < n; i++) {
		all2 += (double)dw[i] * (double)dw[i];
		if (kept[i] == 2)
			kept2 += (double)dw[i] * (double)dw[i];
		else
			max_dropped = fmax(max_dropped, fabs((double)dw[i]));
	}
	ok(!bad, "d=%g %s: the kept positions are the brute-force top %lld (%lld differ)", d, md->name,
	   (long long)k, (long long)bad);
	ok(min_kept >= max_dropped * (1 - 1e-5), "d=%g %s: smallest kept |v| %.6g >= largest dropped %.6g", d,
	   md->name, min_kept, max_dropped);
	ok(vdiff <= 1e-5 * vmax, "d=%g %s: values match scale * B A in double (%.3g)", d, md->name,
	   vmax > 0 ? vdiff / vmax : vdiff);
	ok(fabs(sqrt(kept2 / all2) - sm->norm_kept) < 1e-6, "d=%g %s: norm kept %.6f, recomputed %.6f", d, md->name,
	   sm->norm_kept, sqrt(kept2 / all2));
	free(a);
	free(b);
	free(dw);
	free(all);
	free(kept);
}

/* ---------------------------------------------------------------- refusals */

/* A sparse directory with one module, its config shape [out, in], tensors as given. */
static int write_sparse(const char *dir, const char *module, int64_t out, int64_t in, enum gm_dtype rdt,
			const int64_t *rowp, int64_t nrowp, const int32_t *cols, int64_t ncols, const float *vals,
			int64_t nvals, gm_error *err)
{
	gm_st_writer *w = gm_st_writer_new();
	gm_buf p = GM_BUF_INIT, name = GM_BUF_INIT;
	int32_t r32[64];
	int64_t i;
	int ret;

	for (i = 0; i < nrowp && i < 64; i++)
		r32[i] = (int32_t)rowp[i];
	gm_buf_addf(&p, "{\"peft_type\": \"SPARSE_DELTA\", \"format\": \"csr\", \"density\": 0.5, \"modules\": "
		    "{\"%s\": {\"shape\": [%lld, %lld]}}}\n", module, (long long)out, (long long)in);
	rm_dir(dir);
	ret = gm_mkdir_p(dir, 0777, err);
	gm_buf_addf(&name, "%s/" GM_SPARSE_CONFIG_FILE, dir);
	ret = ret ? ret : gm_write_file_atomic(name.buf, p.buf, p.len, 0666, err);
	gm_buf_reset(&name);
	gm_buf_addf(&name, "base_model.model.%s.delta.row_offsets", module);
	ret = ret ? ret : gm_st_writer_add(w, name.buf, rdt, 1, &nrowp, rdt == GM_DTYPE_I64 ? (const void *)rowp
					   : (const void *)r32, err);
	gm_buf_reset(&name);
	gm_buf_addf(&name, "base_model.model.%s.delta.col_indices", module);
	ret = ret ? ret : gm_st_writer_add(w, name.buf, GM_DTYPE_I32, 1, &ncols, cols, err);
	gm_buf_reset(&name);
	gm_buf_addf(&name, "base_model.model.%s.delta.values", module);
	ret = ret ? ret : gm_st_writer_add(w, name.buf, GM_DTYPE_F32, 1, &nvals, vals, err);
	gm_buf_reset(&p);
	gm_buf_addf(&p, "%s/" GM_SPARSE_WEIGHTS_FILE, dir);
	ret = ret ? ret : gm_st_writer_write(w, p.buf, err);
	gm_st_writer_free(w);
	gm_buf_release(&p);
	gm_buf_release(&name);
	return ret;
}

static void test_refusals(const char *tmp, const gm_model *m)
{
	static const char *const mod = "model.layers.1.self_attn.k_proj";
	/* a [3, 5] matrix: row 0 {1, 4}, row 1 {}, row 2 {0, 2, 4} */
	const int64_t good_r[4] = { 0, 2, 2, 5 }, dec_r[4] = { 0, 3, 2, 5 }, first_r[4] = { 1, 2, 2, 5 };
	const int32_t good_c[5] = { 1, 4, 0, 2, 4 }, oor_c[5] = { 1, 5, 0, 2, 4 }, uns_c[5] = { 1, 4, 2, 0, 4 },
		      dup_c[5] = { 1, 4, 0, 2, 2 }, neg_c[5] = { 1, 4, -1, 2, 4 };
	const float v[5] = { 1, 2, 3, 4, 5 };
	gm_error err = GM_ERROR_INIT;
	gm_sparse_adapter *ad = NULL;
	char dir[512];
	int ret;

	snprintf(dir, sizeof(dir), "%s/bad", tmp);
	ret = write_sparse(dir, mod, 3, 5, GM_DTYPE_I64, good_r, 4, good_c, 5, v, 5, &err);
	ret = ret ? ret : gm_sparse_open(dir, &ad, &err);
	ok(!ret && ad && ad->n_modules == 1 && ad->nnz == 5, "a hand-written CSR opens (%s)", err.msg);
	if (ad)
		ok_error(gm_forward_check_sparse(m, ad, &err), &err, GM_EINVAL, "does not fit",
			 "a [3, 5] delta does not fit k_proj");
	gm_sparse_close(ad);
	ad = NULL;
	ret = write_sparse(dir, mod, 3, 5, GM_DTYPE_I32, good_r, 4, good_c, 5, v, 5, &err);
	ret = ret ? ret : gm_sparse_open(dir, &ad, &err);
	ok(!ret && ad && ad->modules[0].row_offsets[3] == 5, "I32 row offsets are accepted (%s)", err.msg);
	gm_sparse_close(ad);
	ad = NULL;

#define REFUSE(rowp, nr, cols, nc, nv, frag, what)                                                   \
	do {                                                                                        \
		ret = write_sparse(dir, mod, 3, 5, GM_DTYPE_I64, rowp, nr, cols, nc, v, nv, &err);   \
		ret = ret ? ret : gm_sparse_open(dir, &ad, &err);                                   \
		ok_error(ret, &err, GM_EFORMAT, frag, what);                                        \
		if (!ret)                                                                           \
			gm_sparse_close(ad);                                                        \
		ad = NULL;                                                                          \
	} while (0)
	REFUSE(dec_r, 4, good_c, 5, 5, "row_offsets decrease at row 1", "decreasing row offsets are refused");
	REFUSE(first_r, 4, good_c, 5, 5, "row_offsets[0] is 1", "row offsets not starting at 0 are refused");
	REFUSE(good_r, 4, oor_c, 5, 5, "out of range", "a column index past in is refused");
	REFUSE(good_r, 4, neg_c, 5, 5, "out of range", "a negative column index is refused");
	REFUSE(good_r, 4, uns_c, 5, 5, "not strictly increasing", "unsorted column indices are refused");
	REFUSE(good_r, 4, dup_c, 5, 5, "not strictly increasing", "a repeated column index is refused");
	REFUSE(good_r, 3, good_c, 5, 5, "expected out + 1 = 4", "row offsets of the wrong length are refused");
	REFUSE(good_r, 4, good_c, 4, 4, "row_offsets[3] is 5, past nnz 4",
	       "offsets past the values are refused");
	REFUSE(good_r, 4, good_c, 5, 4, "5 column indices but 4 values", "cols and values of different sizes");
#undef REFUSE
	/* contrib/fuzz/fuzz-sparse: out = INT64_MAX in the config overflowed out + 1 (UBSan) */
	ret = write_sparse(dir, mod, INT64_MAX, 5, GM_DTYPE_I64, good_r, 4, good_c, 5, v, 5, &err);
	ret = ret ? ret : gm_sparse_open(dir, &ad, &err);
	ok_error(ret, &err, GM_EFORMAT, "bad shape [9223372036854775807, 5]", "a shape past 2^31 rows is refused");
	if (!ret)
		gm_sparse_close(ad);
	ad = NULL;

	ok_error(gm_sparse_check_csr("m", 3, 5, good_r, good_c, (const float[]){ 1, 2, NAN, 4, 5 }, 5, &err), &err,
		 GM_EFORMAT, "m: value 2 is not finite", "a non-finite value is refused");
	ok(gm_sparse_check_csr("m", 3, 5, good_r, good_c, v, 5, &err) == 0, "gm_sparse_check_csr accepts a good one");
	rm_dir(dir);
	ok_error(gm_sparse_open(dir, &ad, &err), &err, GM_ENOENT, "not a sparse adapter directory",
		 "a directory without sparse_config.json is refused");
	ok(!gm_sparse_is_dir(dir), "gm_sparse_is_dir: no");
}

/* ---------------------------------------------------------------- main */

int main(void)
{
	static const double dens[3] = { 0.01, 0.1, 1.0 };
	gm_error err = GM_ERROR_INIT;
	gm_buf path = GM_BUF_INIT;
	gm_model *m = NULL;
	gm_peft_adapter *lora = NULL, *lora2 = NULL;
	gm_sparse_adapter *sp[3] = { NULL, NULL, NULL };
	gm_forward *f = NULL;
	float *ref = NULL, *got = NULL, *base = NULL, *ref2 = NULL;
	char tmp[] = "/tmp/gm-test-sparse-XXXXXX", dir[3][512], exist[512];
	double drift[3];
	int64_t V;
	size_t n;
	int i, ret;

	if (!mkdtemp(tmp)) {
		ok(0, "mkdtemp");
		return tap_done();
	}
	gm_buf_addf(&path, "%s/t/fixtures/models/tiny-qwen3-f32", tap_srcdir());
	ret = gm_model_open(path.buf, &m, &err);
	ok(!ret, "the base model opens (%s)", err.msg);
	gm_buf_reset(&path);
	gm_buf_addf(&path, "%s/" A1, tap_srcdir());
	ret = ret ? ret : gm_peft_open(path.buf, &lora, &err);
	gm_buf_reset(&path);
	gm_buf_addf(&path, "%s/" A2, tap_srcdir());
	ret = ret ? ret : gm_peft_open(path.buf, &lora2, &err);
	ok(!ret, "the LoRAs open (%s)", err.msg);
	if (ret)
		goto out;

	/* sparsify */
	for (i = 0; i < 3; i++) {
		gm_sparse_stats st;
		double k2 = 0, a2 = 0;
		size_t mi;

		snprintf(dir[i], sizeof(dir[i]), "%s/d%g", tmp, dens[i]);
		ret = gm_sparse_sparsify(lora, dens[i], dir[i], &st, &err);
		ok(!ret, "d=%g: sparsify (%s)", dens[i], err.msg);
		ret = ret ? ret : gm_sparse_open(dir[i], &sp[i], &err);
		ok(!ret, "d=%g: the result opens (%s)", dens[i], err.msg);
		if (ret)
			goto out;
		ok(sp[i]->n_modules == lora->n_modules && sp[i]->nnz == st.nnz && sp[i]->density == dens[i],
		   "d=%g: %zu modules, nnz %llu, density recorded", dens[i], sp[i]->n_modules,
		   (unsigned long long)sp[i]->nnz);
		ok(sp[i]->source && !strcmp(sp[i]->source, lora->dir) && sp[i]->source_r == 8 &&
		   sp[i]->source_alpha == 16 && sp[i]->source_scale == 2,
		   "d=%g: the source, r, alpha and scale are recorded", dens[i]);
		ok(sp[i]->base_model && !strcmp(sp[i]->base_model, "tiny-qwen3-f32"), "d=%g: the base model is recorded",
		   dens[i]);
		for (mi = 0; mi < lora->n_modules; mi++) {
			const gm_sparse_module *sm = gm_sparse_find(sp[i], lora->modules[mi].layer, lora->modules[mi].proj);
			double nrm = 0;
			int64_t e;

			gm_peft_module_norm(&lora->modules[mi], &nrm, &err);
			a2 += nrm * nrm;
			for (e = 0; sm && e < sm->nnz; e++)
				k2 += (double)sm->values[e] * (double)sm->values[e];
		}
		ok(fabs(sqrt(k2 / a2) - sp[i]->norm_kept) < 1e-5 && fabs(st.norm_kept - sp[i]->norm_kept) < 1e-12,
		   "d=%g: total norm kept %.6f (recomputed %.6f)", dens[i], sp[i]->norm_kept, sqrt(k2 / a2));
		ok(st.dense_bytes == sp[i]->dense_bytes && st.file_bytes > sp[i]->n_bytes,
		   "d=%g: sizes (file %llu, dense %llu)", dens[i], (unsigned long long)st.file_bytes,
		   (unsigned long long)st.dense_bytes);
		tap_diag("density %g: nnz %llu, file %llu bytes = %.2f%% of the dense f32 delta (%llu), %.1f%% of the "
			 "LoRA (%llu); norm kept %.4f", dens[i], (unsigned long long)st.nnz,
			 (unsigned long long)st.file_bytes, 100.0 * (double)st.file_bytes / (double)st.dense_bytes,
			 (unsigned long long)st.dense_bytes, 100.0 * (double)st.file_bytes / (double)st.lora_bytes,
			 (unsigned long long)st.lora_bytes, st.norm_kept);
	}
	ok(sp[0]->norm_kept < sp[1]->norm_kept && sp[1]->norm_kept < sp[2]->norm_kept &&
	   fabs(sp[2]->norm_kept - 1) < 1e-12, "the norm kept grows with the density, 1 at density 1");
	/* one module against brute force: gate_proj of layer 1 (160 x 64) and q_proj of layer 0 */
	for (i = 0; i < 3; i++) {
		const gm_peft_module *md = gm_peft_find(lora, 1, GM_PEFT_GATE_PROJ);
		const gm_peft_module *mq = gm_peft_find(lora, 0, GM_PEFT_Q_PROJ);

		check_module(md, gm_sparse_find(sp[i], 1, GM_PEFT_GATE_PROJ), dens[i]);
		if (i < 2)
			check_module(mq, gm_sparse_find(sp[i], 0, GM_PEFT_Q_PROJ), dens[i]);
	}
	/* refusals of sparsify */
	ok_error(gm_sparse_sparsify(lora, 0, dir[0], NULL, &err), &err, GM_EINVAL, "not in (0, 1]",
		 "density 0 is refused");
	ok_error(gm_sparse_sparsify(lora, 1.5, dir[0], NULL, &err), &err, GM_EINVAL, "not in (0, 1]",
		 "density 1.5 is refused");
	snprintf(exist, sizeof(exist), "%s", dir[0]);
	ok_error(gm_sparse_sparsify(lora, 0.5, exist, NULL, &err), &err, GM_EINVAL, "already exists",
		 "an existing output directory is refused");

	/* in the forward pass */
	ret = gm_forward_new(m, 16, 2, &f, &err);
	ok(!ret, "forward (%s)", err.msg);
	if (ret)
		goto out;
	V = m->config.vocab_size;
	n = (size_t)(8 * V);
	ref = gm_xmalloc(sizeof(float) * n);
	got = gm_xmalloc(sizeof(float) * n);
	base = gm_xmalloc(sizeof(float) * n);
	ref2 = gm_xmalloc(sizeof(float) * n);
	ret = eval_all(f, base, V, 0, &err);
	ret = ret ? ret : set_list(f, lora, 1, NULL, 0, &err);
	ret = ret ? ret : eval_all(f, ref, V, 0, &err);
	ok(!ret, "the LoRA's logits (%s)", err.msg);
	for (i = 0; i < 3; i++) {
		ret = set_list(f, NULL, 0, sp[i], 1, &err);
		ok(!ret && gm_forward_n_adapters(f) == 1, "d=%g: attached (%s)", dens[i], err.msg);
		ret = ret ? ret : eval_all(f, got, V, 0, &err);
		drift[i] = rel_l2(got, ref, base, n);
		tap_diag("density %g: logit drift vs the LoRA: ||l - l_lora|| / ||l_lora - l_base|| = %.3g, "
			 "max |l - l_lora| / max |l_lora| = %.3g (8 positions)", dens[i], drift[i], tap_max_rel(got, ref, n));
	}
	ok(drift[2] < 1e-5 && tap_max_rel(got, ref, n) < 1e-5, "density 1 reproduces the LoRA's logits (prefill): %.3g",
	   tap_max_rel(got, ref, n));
	ok(drift[0] > drift[1] && drift[1] > drift[2], "the drift decreases with the density (%.3g > %.3g > %.3g)",
	   drift[0], drift[1], drift[2]);
	ret = set_list(f, NULL, 0, sp[2], 1, &err);
	ret = ret ? ret : eval_all(f, got, V, 1, &err);
	ok(!ret && tap_max_rel(got, ref, n) < 1e-5, "density 1 reproduces the LoRA's logits (decode, SpMV): %.3g",
	   tap_max_rel(got, ref, n));
	/* scales */
	ret = set_list(f, lora, 0.5f, NULL, 0, &err);
	ret = ret ? ret : eval_all(f, ref2, V, 0, &err);
	ret = ret ? ret : set_list(f, NULL, 0, sp[2], 0.5f, &err);
	ret = ret ? ret : eval_all(f, got, V, 0, &err);
	ok(!ret && tap_max_rel(got, ref2, n) < 1e-5, "scale 0.5: sparse = LoRA (%.3g)", tap_max_rel(got, ref2, n));
	/* stacking: LoRA a1 minus its sparse copy is the base model; a2 + sparse a1 = a2 + a1 */
	ret = set_list(f, lora, 1, sp[2], -1, &err);
	ret = ret ? ret : eval_all(f, got, V, 1, &err);
	ok(!ret && gm_forward_n_adapters(f) == 2 && tap_max_rel(got, base, n) < 1e-5,
	   "LoRA a1 stacked with its sparse copy at scale -1 gives the base model (%.3g)", tap_max_rel(got, base, n));
	{
		const gm_peft_adapter *two[2] = { lora, lora2 };

		ret = gm_forward_set_adapters(f, two, NULL, 2, &err);
		ret = ret ? ret : eval_all(f, ref2, V, 0, &err);
		ret = ret ? ret : set_list(f, lora2, 1, sp[2], 1, &err);
		ret = ret ? ret : eval_all(f, got, V, 0, &err);
		ok(!ret && tap_max_rel(got, ref2, n) < 1e-5, "LoRA a2 + sparse a1 = LoRA a1 + a2 (%.3g)",
		   tap_max_rel(got, ref2, n));
	}
	ret = set_list(f, NULL, 0, sp[1], 0, &err);
	ret = ret ? ret : eval_all(f, got, V, 0, &err);
	ok(!ret && gm_forward_n_adapters(f) == 0 && tap_max_rel(got, base, n) == 0, "scale 0 leaves it out");
	ret = set_list(f, NULL, 0, sp[1], NAN, &err);
	ok_error(ret, &err, GM_EINVAL, "not a finite number", "a NaN scale is refused");
	{
		gm_forward_adapter both = { lora, sp[0], 1 };

		ok_error(gm_forward_set_adapter_list(f, &both, 1, &err), &err, GM_EINVAL, "exactly one",
			 "an entry with both a LoRA and a sparse adapter is refused");
	}
	test_refusals(tmp, m);
out:
	for (i = 0; i < 3; i++) {
		gm_sparse_close(sp[i]);
		rm_dir(dir[i]);
	}
	rmdir(tmp);
	free(ref);
	free(got);
	free(base);
	free(ref2);
	gm_forward_free(f);
	gm_peft_close(lora);
	gm_peft_close(lora2);
	gm_model_close(m);
	gm_buf_release(&path);
	return tap_done();
}
