/*
 * test-kv.c - the paged KV pool (kv.h) and the batched forward pass
 * (gm_forward_eval_batch): block accounting of fork / truncate / free,
 * GM_ENOMEM leaving everything as it was, and a mixed batch (sequences at
 * different positions, prefill chunks and decode steps, different adapter
 * sets) giving each sequence the logits it gets alone; the attention
 * kernels (kernels-kv.h) giving each query the bits it gets alone.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "cpu/kernels-kv.h"
#include "cpu/kernels.h"
#include "engine/forward.h"
#include "ops/kv.h"
#include "formats/model.h"
#include "formats/peft.h"
#include "formats/sparse.h"
#include "tap.h"

static int64_t argmax(const float *x, int64_t n)
{
	int64_t i, b = 0;

	for (i = 1; i < n; i++)
		if (x[i] > x[b])
			b = i;
	return b;
}

static gm_model *open_model(const char *rel)
{
	gm_error err = GM_ERROR_INIT;
	gm_buf p = GM_BUF_INIT;
	gm_model *m = NULL;
	int ret;

	gm_buf_addf(&p, "%s/%s", tap_srcdir(), rel);
	ret = gm_model_open(p.buf, &m, &err);
	ok(!ret, "%s opens (%s)", rel, err.msg);
	gm_buf_release(&p);
	return ret ? NULL : m;
}

static void ids_for(int32_t *ids, int n, int seed, int64_t V)
{
	int i;

	for (i = 0; i < n; i++)
		ids[i] = (int32_t)((i * 131 + seed * 977 + 7) % V);
}

/* ---------------------------------------------------------------- the attention kernels */

/* A value in [-1, 1) from a counter (the same on every run). */
static float rnd(uint32_t *s)
{
	*s = *s * 1664525u + 1013904223u;
	return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static void fill_rows(void *k, enum gm_dtype t, int64_t n, uint32_t *seed)
{
	int64_t i;

	for (i = 0; i < n; i++)
		gm_kv_store_row((char *)k + (size_t)i * (t == GM_DTYPE_F32 ? 4 : 2), t, &(float){ rnd(seed) }, 1);
}

static double kv_elem(const void *k, enum gm_dtype t, int64_t i)
{
	if (t == GM_DTYPE_F32)
		return ((const float *)k)[i];
	if (t == GM_DTYPE_BF16)
		return gm_bf16_to_f32(((const uint16_t *)k)[i]);
	return gm_f16_to_f32(((const uint16_t *)k)[i]);
}

/*
 * gm_attn_scores and gm_attn_accum with nq queries (the tiles of 4, 2 and
 * 1 queries by 4-16 keys, the keys left over) against one query and one
 * key a call: the same bits (the header's promise), and within 1e-5 of a
 * double-precision sum; every ISA the CPU has, 16-bit and f32 rows, head
 * sizes the kernels specialise (64, 128) and others.
 */
static void test_kernels(void)
{
	static const enum gm_dtype types[] = { GM_DTYPE_F32, GM_DTYPE_BF16, GM_DTYPE_F16 };
	static const int64_t dims[] = { 128, 64, 40, 16 };
	static const int nqs[] = { 16, 7, 2, 1 };
	static const int64_t nks[] = { 16, 37, 3 };
	enum gm_isa isa, saved = gm_kernels_isa();
	int64_t nk, d, t, i;
	int ti, di, qi, ki, j, same, close;
	uint32_t seed = 7;

	for (isa = GM_ISA_PORTABLE; isa <= GM_ISA_AVX512; isa++) {
		if (gm_kernels_set_isa(isa) < 0)
			continue;
		same = close = 1;
		for (ti = 0; ti < 3; ti++)
			for (di = 0; di < 4; di++)
				for (qi = 0; qi < 4; qi++)
					for (ki = 0; ki < 3; ki++) {
						enum gm_dtype kt = types[ti];
						int nq = nqs[qi];
						float *q[GM_ATTN_MAXQ], *s[GM_ATTN_MAXQ], *o[GM_ATTN_MAXQ], one;
						const float *qc[GM_ATTN_MAXQ], *pc[GM_ATTN_MAXQ];
						void *k, *v;

						d = dims[di];
						nk = nks[ki];
						k = gm_xmalloc((size_t)(nk * d) * 4);
						v = gm_xmalloc((size_t)(nk * d) * 4);
						fill_rows(k, kt, nk * d, &seed);
						fill_rows(v, kt, nk * d, &seed);
						for (j = 0; j < nq; j++) {
							q[j] = gm_xmalloc((size_t)d * sizeof(float));
							s[j] = gm_xmalloc((size_t)nk * sizeof(float));
							o[j] = gm_xmalloc((size_t)d * sizeof(float));
							for (i = 0; i < d; i++)
								q[j][i] = rnd(&seed), o[j][i] = rnd(&seed);
							for (t = 0; t < nk; t++)
								s[j][t] = rnd(&seed);
							qc[j] = q[j];
							pc[j] = s[j];
						}
						/* the accumulation first (s holds its weights), then the scores overwrite s */
						{
							float **ref = gm_xmalloc((size_t)nq * sizeof(*ref));

							for (j = 0; j < nq; j++) {
								ref[j] = gm_xmalloc((size_t)d * sizeof(float));
								memcpy(ref[j], o[j], (size_t)d * sizeof(float));
								gm_attn_accum(&ref[j], &pc[j], 1, v, kt, nk, d);
							}
							gm_attn_accum(o, pc, nq, v, kt, nk, d);
							for (j = 0; j < nq; j++) {
								same &= !memcmp(ref[j], o[j], (size_t)d * sizeof(float));
								free(ref[j]);
							}
							free(ref);
						}
						gm_attn_scores(s, qc, nq, k, kt, nk, d);
						for (j = 0; j < nq; j++)
							for (t = 0; t < nk; t++) {
								const void *kr = (const char *)k + (size_t)(t * d) * (kt == GM_DTYPE_F32 ? 4 : 2);
								float *op = &one;
								const float *qp = q[j];
								double ex = 0;

								gm_attn_scores(&op, &qp, 1, kr, kt, 1, d);
								same &= !memcmp(&one, &s[j][t], sizeof(float));
								for (i = 0; i < d; i++)
									ex += (double)q[j][i] * kv_elem(kr, kt, i);
								close &= fabs(ex - s[j][t]) <= 1e-5 * d;
							}
						for (j = 0; j < nq; j++) {
							free(q[j]);
							free(s[j]);
							free(o[j]);
						}
						free(k);
						free(v);
					}
		ok(same, "attention kernels (%s): a query's scores and outputs have the same bits in a call of 1 to 16 queries",
		   gm_isa_name(isa));
		ok(close, "attention kernels (%s): scores within 1e-5 per element of the double-precision sums",
		   gm_isa_name(isa));
	}
	gm_kernels_set_isa(saved);
}

/* ---------------------------------------------------------------- the pool */

static void test_pool(const gm_model *m)
{
	gm_error err = GM_ERROR_INIT;
	gm_forward *f = NULL;
	gm_kv *kv = NULL;
	int64_t V = m->config.vocab_size, nfree;
	int32_t ids[64];
	int a, b, c, d, e, ret;
	float *la = gm_xmalloc(sizeof(float) * (size_t)V), *lb = gm_xmalloc(sizeof(float) * (size_t)V);
	float *lc = gm_xmalloc(sizeof(float) * (size_t)V);

	ok(gm_kv_bytes_per_token(m, GM_KV_F32) == (size_t)m->config.num_hidden_layers * 2 *
	   (size_t)m->config.num_key_value_heads * (size_t)m->config.head_dim * 4, "bytes per token, f32");
	ok(gm_kv_bytes_per_token(m, GM_KV_BF16) * 2 == gm_kv_bytes_per_token(m, GM_KV_F32), "bf16 is half of f32");
	ret = gm_forward_new_ex(m, &(gm_forward_opts){ .n_ctx = 64, .n_threads = 2 }, &f, &err);
	ret = ret ? ret : gm_kv_new(m, GM_KV_AUTO, 8 * GM_KV_BLOCK, &kv, &err);
	ok(!ret, "forward and an 8-block pool (%s)", err.msg);
	if (ret)
		goto out;
	ok(gm_kv_n_blocks(kv) == 8 && gm_kv_free_blocks(kv) == 8, "8 blocks, all free");
	ids_for(ids, 64, 1, V);

	/* 40 tokens: 3 blocks (16 + 16 + 8) */
	ret = gm_kv_seq_new(kv, &a, &err);
	ok(!ret && gm_kv_blocks_needed(kv, a, 40) == 3, "40 tokens need 3 blocks");
	ret = gm_forward_eval_batch(f, kv, &(gm_forward_seq){ a, ids, 40, 0, la, GM_FWD_ANY }, 1, &err);
	ok(!ret && gm_kv_seq_len(kv, a) == 40 && gm_kv_free_blocks(kv) == 5, "prefill of 40 takes 3 blocks (%s)",
	   err.msg);
	/* fork at 40: two shared blocks, the partial one copied */
	ret = gm_kv_seq_fork(kv, a, 40, &b, &err);
	ok(!ret && gm_kv_seq_len(kv, b) == 40 && gm_kv_free_blocks(kv) == 4, "fork at 40 takes one block (%s)",
	   err.msg);
	/* fork at 32: only shared blocks */
	ret = gm_kv_seq_fork(kv, a, 32, &c, &err);
	ok(!ret && gm_kv_free_blocks(kv) == 4, "fork at 32 shares two full blocks and takes none");
	/* the forks continue as the original would */
	ret = gm_forward_eval_batch(f, kv, (gm_forward_seq[]){ { a, ids + 40, 1, 0, la, GM_FWD_ANY }, { b, ids + 40, 1, 0, lb, GM_FWD_ANY } },
				    2, &err);
	ok(!ret && !memcmp(la, lb, sizeof(float) * (size_t)V), "a fork's next logits equal the original's (bits)");
	ret = gm_forward_eval_batch(f, kv, &(gm_forward_seq){ c, ids + 32, 9, 0, lc, GM_FWD_ANY }, 1, &err);
	ok(!ret && tap_max_rel(lc, la, V) < 1e-5 && argmax(lc, V) == argmax(la, V),
	   "a fork at 32 given the next 9 tokens agrees (rel %.2g)", tap_max_rel(lc, la, V));
	/* free: shared blocks stay */
	nfree = gm_kv_free_blocks(kv);
	gm_kv_seq_free(kv, a);
	ok(gm_kv_free_blocks(kv) == nfree + 1, "freeing the original releases only its private block");
	ok(gm_kv_seq_len(kv, a) == -1, "a freed sequence has no length");
	/* truncate into a shared block: the next append copies it */
	gm_kv_seq_truncate(kv, c, 20);
	ok(gm_kv_seq_len(kv, c) == 20 && gm_kv_blocks_needed(kv, c, 1) == 1, "truncated into a shared block: "
	   "appending copies it (1 block needed, %lld)", (long long)gm_kv_blocks_needed(kv, c, 1));
	nfree = gm_kv_free_blocks(kv);
	ret = gm_forward_eval_batch(f, kv, &(gm_forward_seq){ c, ids + 20, 21, 0, lc, GM_FWD_ANY }, 1, &err);
	ok(!ret && gm_kv_seq_len(kv, c) == 41, "re-evaluated after the truncation (%s)", err.msg);
	ok(tap_max_rel(lc, la, V) < 1e-5 && argmax(lc, V) == argmax(la, V), "and gives the same logits (rel %.2g)",
	   tap_max_rel(lc, la, V));
	ok(gm_kv_free_blocks(kv) == nfree - 2, "copy on write + one new block");
	/* b's blocks were not touched by c's copy on write */
	ret = gm_forward_eval_batch(f, kv, &(gm_forward_seq){ b, ids + 41, 1, 0, lb, GM_FWD_ANY }, 1, &err);
	ret = ret ? ret : gm_forward_eval_batch(f, kv, &(gm_forward_seq){ c, ids + 41, 1, 0, lc, GM_FWD_ANY }, 1, &err);
	ok(!ret && tap_max_rel(lc, lb, V) < 1e-5, "the sharer is unchanged by the copy (rel %.2g)", tap_max_rel(lc, lb, V));

	/* out of blocks: GM_ENOMEM, nothing changed */
	ret = gm_kv_seq_new(kv, &d, &err);
	ret = ret ? ret : gm_kv_seq_new(kv, &e, &err);
	ok(!ret && d != e && d != b && d != c, "new sequences get fresh ids (%d, %d)", d, e);
	nfree = gm_kv_free_blocks(kv);
	{
		int lb0 = gm_kv_seq_len(kv, b), lc0 = gm_kv_seq_len(kv, c);
		gm_forward_seq over[3] = { { b, ids, 1, 0, lb, GM_FWD_ANY }, { d, ids, 16 * (int)nfree, 0, la, GM_FWD_ANY },
				      { e, ids, 1, 0, lc, GM_FWD_ANY } };

		ok_error(gm_forward_eval_batch(f, kv, over, 3, &err), &err, GM_ENOMEM, "KV cache is full",
			 "a batch needing one block too many fails");
		ok(gm_kv_free_blocks(kv) == nfree && gm_kv_seq_len(kv, b) == lb0 && gm_kv_seq_len(kv, c) == lc0 &&
		   gm_kv_seq_len(kv, d) == 0 && gm_kv_seq_len(kv, e) == 0, "and changes nothing");
		over[1].n = 16 * (int)nfree - 1; /* b, c are mid-block: d takes every free block */
		ret = gm_forward_eval_batch(f, kv, over, 2, &err);
		ok(!ret && gm_kv_free_blocks(kv) == 0, "the same batch without the extra sequence fits exactly (%s)",
		   ret ? err.msg : "");
	}
	/* refusals */
	ok_error(gm_forward_eval_batch(f, kv, &(gm_forward_seq){ 99, ids, 1, 0, NULL, GM_FWD_ANY }, 1, &err), &err,
		 GM_EINVAL, "no KV sequence 99", "an unknown sequence is refused");
	ok_error(gm_forward_eval_batch(f, kv, &(gm_forward_seq){ b, ids, 1, 7, NULL, GM_FWD_ANY }, 1, &err), &err,
		 GM_EINVAL, "no adapter set 7", "an unknown adapter set is refused");
	ok_error(gm_forward_eval_batch(f, kv, (gm_forward_seq[]){ { b, ids, 1, 0, NULL, GM_FWD_ANY },
							      { b, ids, 1, 0, NULL, GM_FWD_ANY } }, 2, &err),
		 &err, GM_EINVAL, "appears twice", "a sequence twice is refused");
	ok_error(gm_forward_eval_batch(f, kv, &(gm_forward_seq){ b, (const int32_t[]){ -1 }, 1, 0, NULL, GM_FWD_ANY },
				       1, &err), &err, GM_EINVAL, "out of range", "a bad token id is refused");
	ok_error(gm_forward_eval_batch(f, kv, &(gm_forward_seq){ b, ids, 1, 0, NULL, (enum gm_forward_role)7 }, 1,
				       &err), &err, GM_EINVAL, "unknown role 7", "an unknown role is refused");
	ok_error(gm_kv_seq_fork(kv, d, 5, &a, &err), &err, GM_ENOMEM, "no free KV block",
		 "a fork needing a copy with no free block fails");
	gm_kv_seq_free(kv, b);
	gm_kv_seq_free(kv, c);
	gm_kv_seq_free(kv, d);
	gm_kv_seq_free(kv, e);
	ok(gm_kv_free_blocks(kv) == 8, "every block free again");
out:
	gm_kv_free(kv);
	gm_forward_free(f);
	free(la);
	free(lb);
	free(lc);
}

/* ---------------------------------------------------------------- mixed batches */

#define NSEQ 5

struct spec {
	int prefix;   /* tokens already in the cache */
	int n;        /* tokens of this step */
	int set;      /* index into the adapter lists (0: none) */
};

/*
 * The batched side of the comparisons below: a forward with options o, a
 * pool of 1024 tokens of o's KV type, and lists[1..3] (those not NULL)
 * registered as adapter sets, their ids in set_ids[1..3].
 */
static int batch_forward(const gm_model *m, const gm_forward_opts *o, const gm_forward_adapter *const *lists,
			 const int *list_n, gm_forward **f, gm_kv **kv, int *set_ids, gm_error *err)
{
	int i, ret = gm_forward_new_ex(m, o, f, err);

	ret = ret ? ret : gm_kv_new(m, o->kv_type, 1024, kv, err);
	for (i = 1; !ret && i < 4; i++)
		if (lists[i])
			ret = gm_forward_adapter_set_add(*f, lists[i], list_n[i], &set_ids[i], err);
	return ret;
}

/*
 * Each sequence alone (a forward of its own, its adapters set with
 * gm_forward_set_adapter_list, prefix then step) against all of them in
 * one gm_forward_eval_batch.  *rel: the worst relative logit difference.
 */
static int mixed(const gm_model *m, enum gm_kv_type kt, int n_threads, const struct spec *sp,
		 const gm_forward_adapter *const *lists, const int *list_n, float *batch_out, double *rel, int *same_argmax,
		 gm_error *err)
{
	int64_t V = m->config.vocab_size;
	gm_forward *f = NULL, *g = NULL;
	gm_kv *kv = NULL;
	gm_forward_seq seqs[NSEQ];
	int32_t ids[NSEQ][128];
	int set_ids[4] = { 0 }, i, ret;
	float *alone = gm_xmalloc(sizeof(float) * (size_t)V);
	gm_forward_opts o = { .n_ctx = 128, .n_threads = n_threads, .kv_type = kt };

	*rel = 0;
	*same_argmax = 1;
	ret = batch_forward(m, &o, lists, list_n, &f, &kv, set_ids, err);
	/* the prefixes, each on its own */
	for (i = 0; !ret && i < NSEQ; i++) {
		ids_for(ids[i], sp[i].prefix + sp[i].n, i + 3, V);
		seqs[i] = (gm_forward_seq){ 0, ids[i] + sp[i].prefix, sp[i].n, set_ids[sp[i].set], batch_out + i * V,
					    GM_FWD_ANY };
		ret = gm_kv_seq_new(kv, &seqs[i].seq, err);
		if (!ret && sp[i].prefix)
			ret = gm_forward_eval_batch(f, kv, &(gm_forward_seq){ seqs[i].seq, ids[i], sp[i].prefix,
									   set_ids[sp[i].set], NULL, GM_FWD_ANY },
						    1, err);
	}
	ret = ret ? ret : gm_forward_eval_batch(f, kv, seqs, NSEQ, err);
	for (i = 0; !ret && i < NSEQ; i++) {
		double e;

		ret = gm_forward_new_ex(m, &o, &g, err);
		ret = ret ? ret : gm_forward_set_adapter_list(g, lists[sp[i].set], list_n[sp[i].set], err);
		if (!ret && sp[i].prefix)
			ret = gm_forward_eval(g, ids[i], sp[i].prefix, alone, 0, err);
		ret = ret ? ret : gm_forward_eval(g, ids[i] + sp[i].prefix, sp[i].n, alone, 0, err);
		gm_forward_free(g);
		g = NULL;
		if (ret)
			break;
		e = tap_max_rel(batch_out + i * V, alone, V);
		*rel = e > *rel ? e : *rel;
		if (argmax(batch_out + i * V, V) != argmax(alone, V))
			*same_argmax = 0;
	}
	gm_kv_free(kv);
	gm_forward_free(f);
	free(alone);
	return ret;
}

/*
 * With roles, a sequence's logits are the same bits in any company: each
 * sequence's prefix read in chunks of 5 (prompt), then all of them in one
 * step (a chunk of more than one token: prompt; one token: decode), against
 * each alone on a forward of its own with its prefix read in one call.
 * *same: every sequence bit-identical; *rel: the worst difference.
 */
static int roles(const gm_model *m, enum gm_matmul_mode mode, const struct spec *sp,
		 const gm_forward_adapter *const *lists, const int *list_n, int *same, double *rel, gm_error *err)
{
	int64_t V = m->config.vocab_size;
	gm_forward *f = NULL, *g = NULL;
	gm_kv *kv = NULL, *kv1 = NULL;
	gm_forward_seq seqs[NSEQ];
	int32_t ids[NSEQ][128];
	int set_ids[4] = { 0 }, i, c, ret, one;
	float *out = gm_xmalloc(sizeof(float) * NSEQ * (size_t)V), *alone = gm_xmalloc(sizeof(float) * (size_t)V);
	gm_forward_opts o = { .n_ctx = 128, .n_threads = 2, .kv_type = GM_KV_AUTO, .matmul = mode };

	*same = 1;
	*rel = 0;
	ret = batch_forward(m, &o, lists, list_n, &f, &kv, set_ids, err);
	for (i = 0; !ret && i < NSEQ; i++) {
		ids_for(ids[i], sp[i].prefix + sp[i].n, i + 3, V);
		seqs[i] = (gm_forward_seq){ 0, ids[i] + sp[i].prefix, sp[i].n, set_ids[sp[i].set], out + i * V,
					    sp[i].n > 1 ? GM_FWD_PROMPT : GM_FWD_DECODE };
		ret = gm_kv_seq_new(kv, &seqs[i].seq, err);
		for (c = 0; !ret && c < sp[i].prefix; c += 5)
			ret = gm_forward_eval_batch(f, kv, &(gm_forward_seq){ seqs[i].seq, ids[i] + c,
									   sp[i].prefix - c < 5 ? sp[i].prefix - c : 5,
									   set_ids[sp[i].set], NULL, GM_FWD_PROMPT },
						    1, err);
	}
	ret = ret ? ret : gm_forward_eval_batch(f, kv, seqs, NSEQ, err);
	for (i = 0; !ret && i < NSEQ; i++) {
		gm_forward_seq s = seqs[i];

		ret = gm_forward_new_ex(m, &o, &g, err);
		ret = ret ? ret : gm_kv_new(m, GM_KV_AUTO, 256, &kv1, err);
		ret = ret ? ret : gm_kv_seq_new(kv1, &s.seq, err);
		s.adapters = 0;
		if (!ret && lists[sp[i].set])
			ret = gm_forward_adapter_set_add(g, lists[sp[i].set], list_n[sp[i].set], &s.adapters, err);
		if (!ret && sp[i].prefix)
			ret = gm_forward_eval_batch(g, kv1, &(gm_forward_seq){ s.seq, ids[i], sp[i].prefix, s.adapters,
									   NULL, GM_FWD_PROMPT }, 1, err);
		s.logits = alone;
		ret = ret ? ret : gm_forward_eval_batch(g, kv1, &s, 1, err);
		gm_kv_free(kv1);
		gm_forward_free(g);
		kv1 = NULL;
		g = NULL;
		if (ret)
			break;
		one = !memcmp(out + i * V, alone, sizeof(float) * (size_t)V);
		if (!one)
			tap_diag("sequence %d (prefix %d, %d tokens): rel %.3g", i, sp[i].prefix, sp[i].n,
				 tap_max_rel(out + i * V, alone, V));
		*same &= one;
		*rel = fmax(*rel, tap_max_rel(out + i * V, alone, V));
	}
	gm_kv_free(kv);
	gm_forward_free(f);
	free(out);
	free(alone);
	return ret;
}

static void test_mixed(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_model *m = open_model("t/fixtures/models/tiny-qwen3-f32"), *pm = open_model("contrib/models/pocket-qwen3");
	static const char *names[] = { "a1-r8-all", "a2-r4-qv", "a3-r6-rslora-mlp" };
	gm_peft_adapter *ad[3] = { NULL, NULL, NULL };
	gm_sparse_adapter *sp = NULL;
	char dir[] = "/tmp/gm-test-kv-XXXXXX";
	gm_buf p = GM_BUF_INIT;
	/* prefill chunks and decode steps at different positions; a sequence that starts in this step */
	static const struct spec specs[NSEQ] = { { 20, 1, 0 }, { 0, 7, 1 }, { 33, 5, 2 }, { 3, 1, 1 }, { 16, 1, 3 } };
	static const struct spec base_specs[NSEQ] = { { 20, 1, 0 }, { 0, 7, 0 }, { 33, 5, 0 }, { 3, 1, 0 }, { 47, 17, 0 } };
	gm_forward_adapter l1[1], l2[2], l3[1];
	const gm_forward_adapter *lists[4] = { NULL, l1, l2, l3 };
	int list_n[4] = { 0, 1, 2, 1 }, k, ret = 0, same;
	float *out1 = NULL, *out2 = NULL;
	double rel;
	int64_t V;

	if (!m || !pm)
		goto out;
	for (k = 0; k < 3 && !ret; k++) {
		gm_buf_reset(&p);
		gm_buf_addf(&p, "%s/t/fixtures/lora/tiny-qwen3-f32-%s", tap_srcdir(), names[k]);
		ret = gm_peft_open(p.buf, &ad[k], &err);
	}
	if (!ret && !mkdtemp(dir))
		ret = -1;
	gm_buf_reset(&p);
	gm_buf_addf(&p, "%s/sp", dir);
	ret = ret ? ret : gm_sparse_sparsify(ad[2], 0.3, p.buf, NULL, &err);
	ret = ret ? ret : gm_sparse_open(p.buf, &sp, &err);
	ok(!ret, "adapters open, a sparse one made (%s)", err.msg);
	if (ret)
		goto out;
	l1[0] = (gm_forward_adapter){ ad[0], NULL, 1.0f };
	l2[0] = (gm_forward_adapter){ ad[1], NULL, 0.5f };
	l2[1] = (gm_forward_adapter){ NULL, sp, 2.0f };
	l3[0] = (gm_forward_adapter){ ad[2], NULL, 1.5f };

	V = m->config.vocab_size;
	out1 = gm_xmalloc(sizeof(float) * NSEQ * (size_t)V);
	out2 = gm_xmalloc(sizeof(float) * NSEQ * (size_t)V);
	ret = mixed(m, GM_KV_AUTO, 2, specs, lists, list_n, out1, &rel, &same, &err);
	ok(!ret && rel < 1e-5 && same, "tiny-qwen3-f32: a mixed batch with 4 adapter sets equals each sequence alone "
	   "(rel %.2g, greedy identical %d) (%s)", rel, same, err.msg);
	ret = mixed(m, GM_KV_AUTO, 1, specs, lists, list_n, out2, &rel, &same, &err);
	ok(!ret && !memcmp(out1, out2, sizeof(float) * NSEQ * (size_t)V), "1 and 2 threads give the same bits");
	ret = roles(m, GM_MATMUL_PRECISE, specs, lists, list_n, &same, &rel, &err);
	ok(!ret && same, "tiny-qwen3-f32, roles: every sequence of a mixed batch with 4 adapter sets (LoRA, sparse) "
	   "gets the bits it gets alone, its prefix read in other chunks (rel %.2g) (%s)", rel, err.msg);
	free(out1);
	free(out2);

	{
		/* the same on a bf16 model, in both modes; fast where the CPU has it */
		static const struct spec rs[NSEQ] = { { 20, 1, 0 }, { 0, 7, 0 }, { 33, 40, 0 }, { 3, 1, 0 }, { 47, 17, 0 } };
		static const struct spec rs_dec[NSEQ] = { { 20, 1, 0 }, { 9, 1, 0 }, { 33, 1, 0 }, { 3, 1, 0 },
							  { 47, 1, 0 } };
		static const gm_forward_adapter *none[4] = { NULL, NULL, NULL, NULL };
		static const int none_n[4] = { 0, 0, 0, 0 };
		int fast;

		for (fast = 0; fast < 2; fast++) {
			enum gm_matmul_mode md = fast ? GM_MATMUL_FAST : GM_MATMUL_PRECISE;
			const char *mn = fast ? "fast" : "precise";

			if (fast && !gm_kernels_fast_matmul()) {
				printf("# no AVX512_BF16 (or not the avx512 kernels): fast mode roles not tested\n");
				continue;
			}
			ret = roles(pm, md, rs, none, none_n, &same, &rel, &err);
			ok(!ret && same, "pocket-qwen3, %s, roles: prompt chunks of 7, 40 and 17 tokens and decode rows in "
			   "one step, each sequence the bits it gets alone (rel %.2g) (%s)", mn, rel, err.msg);
			ret = roles(pm, md, rs_dec, none, none_n, &same, &rel, &err);
			ok(!ret && same, "pocket-qwen3, %s, roles: 5 decode rows in one step, the bits of each alone "
			   "(rel %.2g) (%s)", mn, rel, err.msg);
		}
	}

	V = pm->config.vocab_size;
	out1 = gm_xmalloc(sizeof(float) * NSEQ * (size_t)V);
	out2 = gm_xmalloc(sizeof(float) * NSEQ * (size_t)V);
	ok(gm_kv_type_resolve(pm, GM_KV_AUTO) == GM_KV_BF16, "a bf16 model's KV cache is bf16 by default");
	lists[1] = lists[2] = lists[3] = NULL;
	list_n[1] = list_n[2] = list_n[3] = 0;
	/*
	 * Alone, each sequence's chunks (<= 16 rows) take gm_matmul's small-batch
	 * path (gm_matvec's summation order); in the batch of all of them the
	 * rows take the 32-token panel path, which rounds differently in the last
	 * bit.  Keys and values rounded to bf16 (8-bit mantissa, steps of 2^-8)
	 * turn such a bit into a step of up to 4e-3 in one element, so the logits
	 * move by about 1e-4 relative; f32 keys and values (above, 1e-5) show the
	 * kernels' own difference.  Greedy tokens must still be identical.
	 */
	ret = mixed(pm, GM_KV_BF16, 2, base_specs, lists, list_n, out1, &rel, &same, &err);
	ok(!ret && rel < 1e-3 && same, "pocket-qwen3, bf16 KV: a mixed batch equals each sequence alone (rel %.2g, "
	   "greedy identical %d) (%s)", rel, same, err.msg);
	ret = mixed(pm, GM_KV_F32, 2, base_specs, lists, list_n, out2, &rel, &same, &err);
	ok(!ret && rel < 1e-5 && same, "pocket-qwen3, f32 KV: the same (rel %.2g) (%s)", rel, err.msg);
	{
		double w = 0;
		int64_t i;

		for (i = 0; i < NSEQ * V; i++)
			w = fabs(out1[i] - out2[i]) > w ? fabs(out1[i] - out2[i]) : w;
		tap_diag("pocket-qwen3: bf16 KV vs f32 KV: worst relative logit difference %.3g, max |dlogit| %.3g",
			 tap_max_rel(out1, out2, NSEQ * V), w);
	}
	{
		int i, agree = 1;

		for (i = 0; i < NSEQ; i++)
			agree &= argmax(out1 + i * V, V) == argmax(out2 + i * V, V);
		ok(agree, "pocket-qwen3: bf16 and f32 KV pick the same greedy tokens");
	}
out:
	if (sp) {
		gm_sparse_close(sp);
		gm_buf_reset(&p);
		gm_buf_addf(&p, "rm -rf '%s'", dir);
		if (system(p.buf) != 0)
			tap_diag("cannot remove %s", dir);
	}
	for (k = 0; k < 3; k++)
		gm_peft_close(ad[k]);
	gm_buf_release(&p);
	free(out1);
	free(out2);
	gm_model_close(m);
	gm_model_close(pm);
}

int main(void)
{
	gm_model *m = open_model("t/fixtures/models/tiny-qwen3-f32");

	if (m)
		test_pool(m);
	gm_model_close(m);
	test_mixed();
	test_kernels();
	return tap_done();
}
