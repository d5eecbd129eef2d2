/*
 * forward.c - the transformer forward pass on the CPU (see forward.h).
 *
 * One decoder layer, for a batch of nb tokens at positions p0 .. p0+nb-1
 * (x: the residual stream, [nb, hidden]):
 *
 *   xn = rmsnorm(x, input_layernorm)
 *   q, k, v = xn W_q^T (+ b_q), xn W_k^T (+ b_k), xn W_v^T (+ b_v)
 *   q, k = rmsnorm per head (Qwen3 q_norm / k_norm); rope(q), rope(k)
 *   k, v -> the cache at p0 ..
 *   att = softmax(q k^T / sqrt(head_dim), causal) v     (GQA: head h reads kv head h / group)
 *   x += att W_o^T
 *   xn = rmsnorm(x, post_attention_layernorm)
 *   x += (silu(xn W_gate^T) * (xn W_up^T)) W_down^T
 *
 * then the final norm and lm_head.  Everything is f32.  A batch of three
 * tokens or more uses gm_matmul (weights read once per batch), fewer use
 * gm_matvec.  Prompts longer than GM_FWD_BATCH are evaluated in batches.
 *
 * LoRA adapters (gm_forward_set_adapters) are stacked per projection at
 * attach time into two f32 matrices, the scales folded into A:
 *
 *   A = [s_1 A_1; s_2 A_2; ...]   [R, in]    (R = r_1 + r_2 + ...)
 *   B = [B_1, B_2, ...]           [out, R]
 *
 * so that sum_i s_i B_i A_i = B A.  The rows of A run in the same parallel
 * loop as the base weight (same input, same packed activations): u = x A^T,
 * [nb, R]; a second loop adds u B^T to the projection's output, a tile of
 * tokens by rows at a time.
 *
 * Sparse adapters (sparse.h) are merged per projection at attach time into
 * one f32 CSR matrix, each row the rows of every adapter one after the
 * other (columns need not be sorted across adapters), the scales folded
 * into the values; after the base weight and the LoRA, a third parallel
 * loop over the output rows adds x (sum_i s_i delta W_i)^T.
 *
 * The KV cache is f32, per layer and kv head: K as [n_ctx, head_dim] rows
 * (the "weights" of q k^T) and V transposed, [head_dim, n_ctx] (the
 * "weights" of p V), so that both products of attention are the same
 * kernels as the projections.
 */
#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "kernels.h"
#include "peft.h"
#include "sparse.h"
#include "threadpool.h"

#define GM_FWD_BATCH 512   /* tokens per internal batch */
#define GM_FWD_MATVEC_MAX 2 /* batches up to this size use gm_matvec */
#define GM_FWD_MAX_CTX_DEFAULT 4096
#define GM_LIN_MAX 3        /* projections of one input run as one loop */
#define GM_LORA_TILE 64     /* rows of u B^T computed at a time, into a per-thread tile */

/* The stacked adapters of one projection of one layer (see above). */
struct lora_proj {
	int64_t rank;      /* R; 0: not adapted */
	float *a;          /* [R, in], scales folded in */
	float *b;          /* [out, R] */
	gm_tensor ta, tb;  /* views of a and b for the kernels */
};

/* The merged sparse adapters of one projection of one layer (see above). */
struct sparse_proj {
	int64_t nnz;       /* 0: none */
	int64_t *rowp;     /* [out + 1] */
	int32_t *cols;     /* [nnz] */
	float *vals;       /* [nnz], scales folded in */
};

struct gm_forward {
	const gm_model *m;
	gm_threadpool *pool;
	int n_threads;
	int n_ctx, pos, batch;
	int64_t hidden, q_dim, kv_dim, head_dim, n_heads, n_kv, inter, vocab, n_layers;
	float eps, att_scale;

	float *k_cache;    /* [layers][n_kv][n_ctx][head_dim] */
	float *v_cache;    /* [layers][n_kv][head_dim][n_ctx] */
	float *inv_freq;   /* [head_dim / 2] */

	/* one batch */
	float *x, *xn, *xo;        /* [batch, hidden] */
	float *q, *att;            /* [batch, q_dim] */
	float *k, *v;              /* [batch, kv_dim] */
	float *gate, *up;          /* [batch, inter] */
	float *rope_cs, *rope_sn;  /* [batch, head_dim / 2] */
	float *xt;                 /* packed activations, gm_matmul_xt_len(batch, max in) */
	size_t panel_len, scores_len, pt_len;
	float **panel;             /* per thread */
	float **scores;            /* per thread, [TB, n_ctx] */
	float **pt;                /* per thread, packed probabilities [n_ctx][TB] */
	float **qt;                /* per thread, packed queries [head_dim][TB] */

	float *hidden_out;         /* [n, hidden] of the last eval */
	int64_t hidden_cap;        /* rows */

	/* adapters */
	struct lora_proj *lora;    /* [layers][GM_PEFT_PROJ_COUNT]; NULL: none */
	int n_adapters;
	uint64_t adapters_epoch;
	int64_t lora_rmax;         /* the largest R */
	float *lora_u;             /* [GM_PEFT_PROJ_COUNT][batch][rmax]: x A^T */
	float *lora_ut[GM_LIN_MAX]; /* u packed for gm_matmul, gm_matmul_xt_len(batch, rmax) each */
	float **lora_tile;         /* per thread, [GM_MATMUL_TB, GM_LORA_TILE]: u B^T before it is added */
	struct sparse_proj *sparse; /* [layers][GM_PEFT_PROJ_COUNT]; NULL: none */
};

/* ---------------------------------------------------------------- helpers */

/* Zeroed floats; aborts when out of memory, as gm_xmalloc does. */
static float *falloc(size_t n)
{
	return gm_xcalloc(n ? n : 1, sizeof(float));
}

static inline const void *row_ptr(const gm_tensor *t, int64_t r)
{
	return (const char *)t->data + (size_t)r * (size_t)t->shape[1] * (t->dtype == GM_DTYPE_F32 ? 4 : 2);
}

static inline int64_t imin(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

static inline int64_t imax(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

/* ---------------------------------------------------------------- rope */

/* inv_freq[j] = theta^(-2j/d), with llama3 scaling when configured; rounded to f32 as transformers keeps it. */
static void rope_init(gm_forward *f)
{
	const gm_model_config *c = &f->m->config;
	int64_t j, half = f->head_dim / 2;

	for (j = 0; j < half; j++) {
		double inv = 1.0 / pow(c->rope_theta, (double)(2 * j) / (double)f->head_dim);

		if (c->rope_scaling == GM_ROPE_LLAMA3) {
			double old = (double)c->rope_original_max_position_embeddings;
			double low_wl = old / c->rope_low_freq_factor, high_wl = old / c->rope_high_freq_factor;
			double wl = 2.0 * M_PI / inv;

			if (wl > low_wl) {
				inv = inv / c->rope_factor;
			} else if (wl >= high_wl) {
				double s = (old / wl - c->rope_low_freq_factor) /
					   (c->rope_high_freq_factor - c->rope_low_freq_factor);
				inv = (1.0 - s) * inv / c->rope_factor + s * inv;
			}
		}
		f->inv_freq[j] = (float)inv;
	}
}

/* cos/sin of the batch's positions p0 .. p0+nb-1. */
static void rope_batch(gm_forward *f, int64_t p0, int64_t nb)
{
	int64_t t, j, half = f->head_dim / 2;

	for (t = 0; t < nb; t++) {
		for (j = 0; j < half; j++) {
			double a = (double)(p0 + t) * (double)f->inv_freq[j];
			f->rope_cs[t * half + j] = (float)cos(a);
			f->rope_sn[t * half + j] = (float)sin(a);
		}
	}
}

/* ---------------------------------------------------------------- linear layers */

/*
 * One parallel loop over the rows of several weights.  Matrix i computes
 *   Y_i[t, r] = sum_k W_i[r, k] X_i[t, k]     (W_i: [rows_i, in_i], X_i: [nb, in_i])
 * into y_i, or, when add is set, adds it to y_i (by tiles of up to TB tokens
 * by GM_LORA_TILE rows, through the thread's lora_tile, which stays in cache).
 */
#define GM_LIN_JOB_MAX (2 * GM_LIN_MAX)

struct lin_mat {
	const gm_tensor *w;      /* [rows, in] */
	float *y;                /* [nb, *], row stride ldy */
	int64_t ldy;
	const float *x;          /* [nb, in], row stride ldx (matvec) */
	int64_t ldx, in;
	const float *xt;         /* x packed (matmul) */
	int add;                 /* y += the product */
};

struct lin_job {
	gm_forward *f;
	int n_mats;
	struct lin_mat m[GM_LIN_JOB_MAX];
	int64_t off[GM_LIN_JOB_MAX + 1]; /* cumulative rows */
	int64_t nb;
	int matmul;                      /* else matvec per token */
};

/* y[t, r] += sum_k W[r, k] X[t, k] for rows [r0, r1) of an F32 weight, by tiles. */
static void lin_add_rows(const struct lin_job *j, const struct lin_mat *mt, int64_t r0, int64_t r1, int thread)
{
	float *tile = j->f->lora_tile[thread];
	const float *w = mt->w->data;
	int64_t ldw = mt->w->shape[1], a, n, t0, t, r, step = j->matmul ? GM_MATMUL_TB : 1;

	for (a = r0; a < r1; a += GM_LORA_TILE) {
		/* tile[t, r - a] for the rows [a, a + n): W from row a */
		n = imin(GM_LORA_TILE, r1 - a);
		for (t0 = 0; t0 < j->nb; t0 += step) {
			int64_t nt = imin(step, j->nb - t0);

			if (j->matmul)
				gm_matmul(tile, GM_LORA_TILE, mt->xt + t0 * mt->in, nt, w + a * ldw, GM_DTYPE_F32, ldw,
					  mt->in, 0, n, j->f->panel[thread]);
			else
				gm_matvec(tile, w + a * ldw, GM_DTYPE_F32, ldw, mt->x + t0 * mt->ldx, mt->in, 0, n);
			for (t = 0; t < nt; t++)
				for (r = 0; r < n; r++)
					mt->y[(t0 + t) * mt->ldy + a + r] += tile[t * GM_LORA_TILE + r];
		}
	}
}

static void lin_rows(void *ctx, int64_t b, int64_t e, int thread)
{
	struct lin_job *j = ctx;
	int i;

	for (i = 0; i < j->n_mats; i++) {
		int64_t r0 = imax(b, j->off[i]) - j->off[i], r1 = imin(e, j->off[i + 1]) - j->off[i], t;
		const struct lin_mat *mt = &j->m[i];
		const gm_tensor *w = mt->w;

		if (r0 >= r1)
			continue;
		if (mt->add)
			lin_add_rows(j, mt, r0, r1, thread);
		else if (j->matmul)
			gm_matmul(mt->y, mt->ldy, mt->xt, j->nb, w->data, w->dtype, w->shape[1], mt->in, r0, r1,
				  j->f->panel[thread]);
		else
			for (t = 0; t < j->nb; t++)
				gm_matvec(mt->y + t * mt->ldy, w->data, w->dtype, w->shape[1], mt->x + t * mt->ldx,
					  mt->in, r0, r1);
	}
}

static void lin_add(struct lin_job *j, const gm_tensor *w, float *y, int64_t ldy, const float *x, int64_t ldx,
		    int64_t in, const float *xt, int add)
{
	struct lin_mat *mt = &j->m[j->n_mats];

	mt->w = w;
	mt->y = y;
	mt->ldy = ldy;
	mt->x = x;
	mt->ldx = ldx;
	mt->in = in;
	mt->xt = xt;
	mt->add = add;
	j->off[j->n_mats + 1] = j->off[j->n_mats] + w->shape[0];
	j->n_mats++;
}

/*
 * Sparse deltas: y_i[t, r] += sum_k vals[k] x[t, cols[k]] over the entries
 * k of row r, for the rows of several CSR matrices in one loop (SpMV per
 * token when nb is 1, SpMM otherwise: each row's entries are read once for
 * all the batch's tokens).
 */
struct sp_job {
	int n;
	const struct sparse_proj *sp[GM_LIN_MAX];
	float *y[GM_LIN_MAX];      /* [nb, *], row stride ldy */
	int64_t ldy[GM_LIN_MAX];
	int64_t off[GM_LIN_MAX + 1]; /* cumulative rows */
	const float *x;            /* [nb, in], row stride ldx */
	int64_t ldx, nb;
};

static void sp_rows(void *ctx, int64_t b, int64_t e, int thread)
{
	const struct sp_job *j = ctx;
	int i;

	(void)thread;
	for (i = 0; i < j->n; i++) {
		int64_t r0 = imax(b, j->off[i]) - j->off[i], r1 = imin(e, j->off[i + 1]) - j->off[i], r, k, t;
		const struct sparse_proj *sp = j->sp[i];

		for (r = r0; r < r1; r++) {
			for (t = 0; t < j->nb; t++) {
				const float *x = j->x + t * j->ldx;
				float acc = 0;

				for (k = sp->rowp[r]; k < sp->rowp[r + 1]; k++)
					acc += sp->vals[k] * x[sp->cols[k]];
				j->y[i][t * j->ldy[i] + r] += acc;
			}
		}
	}
}

/*
 * y_i[t, :] = x[t, :] W_i^T for the n_mats weights (all [rows_i, in]) of
 * layer layer, plus the adapters' x A^T B^T and x delta W^T on the
 * projections proj[i] (layer < 0: none).
 */
static void linear(gm_forward *f, int64_t layer, const enum gm_peft_proj *proj, int n_mats,
		   const gm_tensor *const *w, float **y, const int64_t *ldy, const float *x, int64_t ldx, int64_t nb)
{
	struct lin_job j;
	const struct lora_proj *lp[GM_LIN_MAX];
	float *u[GM_LIN_MAX];
	int64_t in = w[0]->shape[1], grain;
	int i, which[GM_LIN_MAX], n_lora = 0;

	memset(&j, 0, sizeof(j));
	j.f = f;
	j.nb = nb;
	j.matmul = nb > GM_FWD_MATVEC_MAX;
	for (i = 0; i < n_mats; i++)
		lin_add(&j, w[i], y[i], ldy[i], x, ldx, in, f->xt, 0);
	/* the adapters' A: same input, u = x A^T */
	for (i = 0; f->lora && layer >= 0 && i < n_mats; i++) {
		const struct lora_proj *l = &f->lora[layer * GM_PEFT_PROJ_COUNT + proj[i]];

		if (!l->rank)
			continue;
		lp[n_lora] = l;
		which[n_lora] = i;
		u[n_lora] = f->lora_u + (int64_t)proj[i] * f->batch * f->lora_rmax;
		lin_add(&j, &l->ta, u[n_lora], l->rank, x, ldx, in, f->xt, 0);
		n_lora++;
	}
	if (j.matmul) {
		gm_matmul_pack_all(f->pool, f->xt, x, ldx, nb, in);
		grain = (int64_t)(gm_matmul_panel_len(in) / (size_t)in);
	} else {
		grain = 16;
	}
	gm_threadpool_for(f->pool, j.off[j.n_mats], grain, lin_rows, &j);
	if (f->sparse && layer >= 0) {
		struct sp_job sj;

		memset(&sj, 0, sizeof(sj));
		sj.x = x;
		sj.ldx = ldx;
		sj.nb = nb;
		for (i = 0; i < n_mats; i++) {
			const struct sparse_proj *sp = &f->sparse[layer * GM_PEFT_PROJ_COUNT + proj[i]];

			if (!sp->nnz)
				continue;
			sj.sp[sj.n] = sp;
			sj.y[sj.n] = y[i];
			sj.ldy[sj.n] = ldy[i];
			sj.off[sj.n + 1] = sj.off[sj.n] + w[i]->shape[0];
			sj.n++;
		}
		if (sj.n)
			gm_threadpool_for(f->pool, sj.off[sj.n], 16, sp_rows, &sj);
	}
	if (!n_lora)
		return;

	/* y += u B^T */
	memset(&j, 0, sizeof(j));
	j.f = f;
	j.nb = nb;
	j.matmul = nb > GM_FWD_MATVEC_MAX;
	for (i = 0; i < n_lora; i++) {
		int64_t r = lp[i]->rank;

		if (j.matmul)
			gm_matmul_pack(f->lora_ut[i], u[i], r, nb, r, 0, (nb + GM_MATMUL_TB - 1) / GM_MATMUL_TB);
		lin_add(&j, &lp[i]->tb, y[which[i]], ldy[which[i]], u[i], r, r, f->lora_ut[i], 1);
	}
	gm_threadpool_for(f->pool, j.off[j.n_mats], 32, lin_rows, &j);
}

/* ---------------------------------------------------------------- per-token work */

enum tok_mode {
	TOK_NORM,      /* out = rmsnorm(x, w) */
	TOK_ADD_NORM,  /* x += xo; out = rmsnorm(x, w) */
	TOK_QKV,       /* biases, q/k norm, rope, k (and v of a single token) to the cache */
	TOK_SILU       /* gate = silu(gate) * up */
};

struct tok_job {
	gm_forward *f;
	enum tok_mode mode;
	int64_t layer, p0, nb;
	const gm_tensor *w;
	float *out;
};

/* y[i] += b[i], i < n: a bias of any float type (NULL: none). */
static void add_bias(float *y, const gm_tensor *b, int64_t n)
{
	size_t esize = b && b->dtype == GM_DTYPE_F32 ? 4 : 2;
	float tmp[256];
	int64_t i, j, c;

	if (!b)
		return;
	for (i = 0; i < n; i += c) {
		c = imin(256, n - i);
		gm_load_f32(tmp, (const char *)b->data + (size_t)i * esize, b->dtype, c);
		for (j = 0; j < c; j++)
			y[i + j] += tmp[j];
	}
}

static void qkv_token(gm_forward *f, int64_t layer, int64_t t, int64_t p0, int single_v)
{
	const gm_layer_weights *lw = &f->m->layers[layer];
	int64_t hd = f->head_dim, half = hd / 2, h, d, p = p0 + t;
	float *q = f->q + t * f->q_dim, *k = f->k + t * f->kv_dim, *v = f->v + t * f->kv_dim;
	const float *cs = f->rope_cs + t * half, *sn = f->rope_sn + t * half;

	add_bias(q, lw->q_bias, f->q_dim);
	add_bias(k, lw->k_bias, f->kv_dim);
	add_bias(v, lw->v_bias, f->kv_dim);
	for (h = 0; h < f->n_heads; h++) {
		if (lw->q_norm)
			gm_rmsnorm(q + h * hd, q + h * hd, lw->q_norm->data, lw->q_norm->dtype, hd, f->eps);
		gm_rope(q + h * hd, cs, sn, hd);
	}
	for (h = 0; h < f->n_kv; h++) {
		float *kc = f->k_cache + ((layer * f->n_kv + h) * f->n_ctx + p) * hd;

		if (lw->k_norm)
			gm_rmsnorm(k + h * hd, k + h * hd, lw->k_norm->data, lw->k_norm->dtype, hd, f->eps);
		gm_rope(k + h * hd, cs, sn, hd);
		memcpy(kc, k + h * hd, (size_t)hd * sizeof(float));
	}
	if (single_v) /* one token: its V goes to the cache here, else by rows (v_to_cache) */
		for (d = 0; d < f->kv_dim; d++)
			f->v_cache[(layer * f->kv_dim + d) * f->n_ctx + p] = v[d];
}

struct vt_job {
	gm_forward *f;
	int64_t layer, p0, nb;
};

/* Rows [b, e) of the transposed V cache (kv head g, dimension d: row g * head_dim + d) get the batch's values. */
static void vt_rows(void *ctx, int64_t b, int64_t e, int thread)
{
	struct vt_job *j = ctx;
	gm_forward *f = j->f;
	int64_t r, t;

	(void)thread;
	for (r = b; r < e; r++) {
		float *vc = f->v_cache + (j->layer * f->kv_dim + r) * f->n_ctx + j->p0;
		for (t = 0; t < j->nb; t++)
			vc[t] = f->v[t * f->kv_dim + r];
	}
}

/* V of the batch to the cache, row by row of the transposed layout (contiguous writes). */
static void v_to_cache(gm_forward *f, int64_t layer, int64_t p0, int64_t nb)
{
	struct vt_job j = { f, layer, p0, nb };

	gm_threadpool_for(f->pool, f->kv_dim, 16, vt_rows, &j);
}

static void tok_run(void *ctx, int64_t b, int64_t e, int thread)
{
	struct tok_job *j = ctx;
	gm_forward *f = j->f;
	int64_t t, i, H = f->hidden;

	(void)thread;
	for (t = b; t < e; t++) {
		switch (j->mode) {
		case TOK_ADD_NORM:
			for (i = 0; i < H; i++)
				f->x[t * H + i] += f->xo[t * H + i];
			/* fall through */
		case TOK_NORM:
			gm_rmsnorm(j->out + t * H, f->x + t * H, j->w->data, j->w->dtype, H, f->eps);
			break;
		case TOK_QKV:
			qkv_token(f, j->layer, t, j->p0, j->nb == 1);
			break;
		case TOK_SILU:
			gm_silu_mul(f->gate + t * f->inter, f->up + t * f->inter, f->inter);
			break;
		}
	}
}

static void per_token(gm_forward *f, enum tok_mode mode, int64_t nb, int64_t layer, int64_t p0,
		      const gm_tensor *w, float *out)
{
	struct tok_job j = { f, mode, layer, p0, nb, w, out };

	gm_threadpool_for(f->pool, nb, 1, tok_run, &j);
}

/* ---------------------------------------------------------------- attention */

struct att_job {
	gm_forward *f;
	int64_t layer, p0, nb, n_qblocks;
};

/* Query t (position p0 + t) of head h, with matrix-vector products. */
static void att_one(gm_forward *f, int64_t layer, int64_t h, int64_t t, int64_t p0, int thread)
{
	int64_t hd = f->head_dim, g = h / (f->n_heads / f->n_kv), T = p0 + t + 1, i;
	const float *kc = f->k_cache + (layer * f->n_kv + g) * f->n_ctx * hd;
	const float *vc = f->v_cache + (layer * f->n_kv + g) * hd * f->n_ctx;
	float *s = f->scores[thread];

	gm_matvec(s, kc, GM_DTYPE_F32, hd, f->q + t * f->q_dim + h * hd, hd, 0, T);
	for (i = 0; i < T; i++)
		s[i] *= f->att_scale;
	gm_softmax(s, T);
	gm_matvec(f->att + t * f->q_dim + h * hd, vc, GM_DTYPE_F32, f->n_ctx, s, T, 0, hd);
}

/* A block of up to TB queries of head h, with matrix-matrix products. */
static void att_block(gm_forward *f, int64_t layer, int64_t h, int64_t qb, int64_t p0, int64_t nb, int thread)
{
	int64_t hd = f->head_dim, g = h / (f->n_heads / f->n_kv), i0 = qb * GM_MATMUL_TB;
	int64_t nq = imin(GM_MATMUL_TB, nb - i0), T = p0 + i0 + nq, i, t;
	const float *kc = f->k_cache + (layer * f->n_kv + g) * f->n_ctx * hd;
	const float *vc = f->v_cache + (layer * f->n_kv + g) * hd * f->n_ctx;
	float *s = f->scores[thread];

	/* s[i, t] = q_i . k_t for keys t < T */
	gm_matmul_pack(f->qt[thread], f->q + i0 * f->q_dim + h * hd, f->q_dim, nq, hd, 0, 1);
	gm_matmul(s, T, f->qt[thread], nq, kc, GM_DTYPE_F32, hd, hd, 0, T, f->panel[thread]);
	for (i = 0; i < nq; i++) {
		float *si = s + i * T;
		int64_t valid = p0 + i0 + i + 1;

		for (t = 0; t < valid; t++)
			si[t] *= f->att_scale;
		gm_softmax(si, valid);
		for (t = valid; t < T; t++)
			si[t] = 0.0f;
	}
	/* att[i, :] = sum_t s[i, t] v_t */
	gm_matmul_pack(f->pt[thread], s, T, nq, T, 0, 1);
	gm_matmul(f->att + i0 * f->q_dim + h * hd, f->q_dim, f->pt[thread], nq, vc, GM_DTYPE_F32, f->n_ctx, T,
		  0, hd, f->panel[thread]);
}

static void att_run(void *ctx, int64_t b, int64_t e, int thread)
{
	struct att_job *j = ctx;
	int64_t task;

	for (task = b; task < e; task++) {
		if (j->nb <= GM_FWD_MATVEC_MAX)
			att_one(j->f, j->layer, task / j->nb, task % j->nb, j->p0, thread);
		else
			att_block(j->f, j->layer, task / j->n_qblocks, task % j->n_qblocks, j->p0, j->nb, thread);
	}
}

static void attention(gm_forward *f, int64_t layer, int64_t p0, int64_t nb)
{
	struct att_job j = { f, layer, p0, nb, (nb + GM_MATMUL_TB - 1) / GM_MATMUL_TB };
	int64_t n_tasks = f->n_heads * (nb <= GM_FWD_MATVEC_MAX ? nb : j.n_qblocks);

	gm_threadpool_for(f->pool, n_tasks, 1, att_run, &j);
}

/* ---------------------------------------------------------------- one batch */

/* Runs ids[0..nb) at positions f->pos ..; the final hidden states go to out ([nb, hidden]). */
static void run_batch(gm_forward *f, const int32_t *ids, int64_t nb, float *out)
{
	const gm_model *m = f->m;
	int64_t t, l, p0 = f->pos, H = f->hidden;

	for (t = 0; t < nb; t++)
		gm_load_f32(f->x + t * H, row_ptr(m->embed_tokens, ids[t]), m->embed_tokens->dtype, H);
	rope_batch(f, p0, nb);
	for (l = 0; l < f->n_layers; l++) {
		const gm_layer_weights *lw = &m->layers[l];
		static const enum gm_peft_proj qkv_p[3] = { GM_PEFT_Q_PROJ, GM_PEFT_K_PROJ, GM_PEFT_V_PROJ };
		static const enum gm_peft_proj gu_p[2] = { GM_PEFT_GATE_PROJ, GM_PEFT_UP_PROJ };
		static const enum gm_peft_proj o_p = GM_PEFT_O_PROJ, down_p = GM_PEFT_DOWN_PROJ;
		const gm_tensor *qkv[3] = { lw->q_proj, lw->k_proj, lw->v_proj };
		float *qkv_y[3] = { f->q, f->k, f->v };
		int64_t qkv_ld[3] = { f->q_dim, f->kv_dim, f->kv_dim };
		const gm_tensor *gu[2] = { lw->gate_proj, lw->up_proj };
		float *gu_y[2] = { f->gate, f->up };
		int64_t gu_ld[2] = { f->inter, f->inter };

		if (l == 0)
			per_token(f, TOK_NORM, nb, l, p0, lw->input_norm, f->xn);
		else
			per_token(f, TOK_ADD_NORM, nb, l, p0, lw->input_norm, f->xn);
		linear(f, l, qkv_p, 3, qkv, qkv_y, qkv_ld, f->xn, H, nb);
		per_token(f, TOK_QKV, nb, l, p0, NULL, NULL);
		if (nb > 1)
			v_to_cache(f, l, p0, nb);
		attention(f, l, p0, nb);
		linear(f, l, &o_p, 1, &lw->o_proj, &f->xo, &H, f->att, f->q_dim, nb);
		per_token(f, TOK_ADD_NORM, nb, l, p0, lw->post_attn_norm, f->xn);
		linear(f, l, gu_p, 2, gu, gu_y, gu_ld, f->xn, H, nb);
		per_token(f, TOK_SILU, nb, l, p0, NULL, NULL);
		linear(f, l, &down_p, 1, &lw->down_proj, &f->xo, &H, f->gate, f->inter, nb);
	}
	per_token(f, TOK_ADD_NORM, nb, f->n_layers, p0, m->final_norm, out);
}

/* ---------------------------------------------------------------- adapters */

static void lora_free(gm_forward *f)
{
	int64_t i;

	if (f->lora) {
		for (i = 0; i < f->n_layers * GM_PEFT_PROJ_COUNT; i++) {
			free(f->lora[i].a);
			free(f->lora[i].b);
		}
	}
	free(f->lora);
	free(f->lora_u);
	for (i = 0; i < GM_LIN_MAX; i++)
		free(f->lora_ut[i]);
	if (f->lora_tile)
		for (i = 0; i < f->n_threads; i++)
			free(f->lora_tile[i]);
	free(f->lora_tile);
	f->lora = NULL;
	f->lora_u = NULL;
	f->lora_tile = NULL;
	memset(f->lora_ut, 0, sizeof(f->lora_ut));
	f->lora_rmax = 0;
	f->n_adapters = 0;
}

static void sparse_free_all(struct sparse_proj *sp, int64_t n)
{
	int64_t i;

	if (!sp)
		return;
	for (i = 0; i < n; i++) {
		free(sp[i].rowp);
		free(sp[i].cols);
		free(sp[i].vals);
	}
	free(sp);
}

static void adapters_free(gm_forward *f)
{
	lora_free(f);
	sparse_free_all(f->sparse, f->n_layers * GM_PEFT_PROJ_COUNT);
	f->sparse = NULL;
}

static const gm_tensor *proj_weight(const gm_layer_weights *lw, enum gm_peft_proj p)
{
	switch (p) {
	case GM_PEFT_Q_PROJ: return lw->q_proj;
	case GM_PEFT_K_PROJ: return lw->k_proj;
	case GM_PEFT_V_PROJ: return lw->v_proj;
	case GM_PEFT_O_PROJ: return lw->o_proj;
	case GM_PEFT_GATE_PROJ: return lw->gate_proj;
	case GM_PEFT_UP_PROJ: return lw->up_proj;
	case GM_PEFT_DOWN_PROJ: return lw->down_proj;
	default: return NULL;
	}
}

int gm_forward_check_adapter(const gm_model *m, const gm_peft_adapter *ad, gm_error *err)
{
	int64_t n_layers = m->config.num_hidden_layers;
	size_t i;

	for (i = 0; i < ad->n_modules; i++) {
		const gm_peft_module *md = &ad->modules[i];
		const gm_tensor *w;

		if (md->layer < 0 || md->layer >= n_layers)
			return gm_error_set(err, GM_EINVAL, "adapter %s: %s: the model %s has %lld layers (an adapter "
					    "for another model?)", ad->dir, md->name, m->dir, (long long)n_layers);
		w = proj_weight(&m->layers[md->layer], md->proj);
		if (!w || w->ndim != 2 || md->in != w->shape[1] || md->out != w->shape[0] ||
		    md->a->ndim != 2 || md->a->shape[0] != md->rank || md->a->shape[1] != md->in ||
		    md->b->ndim != 2 || md->b->shape[0] != md->out || md->b->shape[1] != md->rank) {
			/* peft.c checked that A and B are 2-D and agree on the rank */
			long long a0 = md->a->shape[0], a1 = md->a->ndim > 1 ? md->a->shape[1] : 0;
			long long b0 = md->b->shape[0], b1 = md->b->ndim > 1 ? md->b->shape[1] : 0;
			long long w0 = w ? w->shape[0] : 0, w1 = w && w->ndim > 1 ? w->shape[1] : 0;

			return gm_error_set(err, GM_EINVAL, "adapter %s: %s: lora_A [%lld, %lld] and lora_B "
					    "[%lld, %lld] do not fit the model's weight [%lld, %lld] (an adapter for "
					    "another model?)", ad->dir, md->name, a0, a1, b0, b1, w0, w1);
		}
	}
	return 0;
}

int gm_forward_check_sparse(const gm_model *m, const gm_sparse_adapter *ad, gm_error *err)
{
	int64_t n_layers = m->config.num_hidden_layers;
	size_t i;

	for (i = 0; i < ad->n_modules; i++) {
		const gm_sparse_module *md = &ad->modules[i];
		const gm_tensor *w;

		if (md->layer < 0 || md->layer >= n_layers)
			return gm_error_set(err, GM_EINVAL, "sparse adapter %s: %s: the model %s has %lld layers (an "
					    "adapter for another model?)", ad->dir, md->name, m->dir, (long long)n_layers);
		w = proj_weight(&m->layers[md->layer], md->proj);
		if (!w || w->ndim != 2 || md->in != w->shape[1] || md->out != w->shape[0])
			return gm_error_set(err, GM_EINVAL, "sparse adapter %s: %s: delta [%lld, %lld] does not fit "
					    "the model's weight [%lld, %lld] (an adapter for another model?)", ad->dir,
					    md->name, (long long)md->out, (long long)md->in,
					    (long long)(w ? w->shape[0] : 0), (long long)(w && w->ndim > 1 ? w->shape[1] : 0));
	}
	return 0;
}

/*
 * The sparse adapters of list[0..n) with a non-zero scale merged per
 * projection: row r of the result holds row r of each adapter in turn.
 */
static struct sparse_proj *sparse_merge(gm_forward *f, const gm_forward_adapter *list, int n)
{
	int64_t n_proj = f->n_layers * GM_PEFT_PROJ_COUNT, i, o;
	struct sparse_proj *sp = NULL;
	int k;

	for (k = 0; k < n; k++) {
		size_t mi;

		if (!list[k].sparse || list[k].scale == 0.0f)
			continue;
		if (!sp)
			sp = gm_xcalloc((size_t)n_proj, sizeof(*sp));
		for (mi = 0; mi < list[k].sparse->n_modules; mi++) {
			const gm_sparse_module *md = &list[k].sparse->modules[mi];

			sp[md->layer * GM_PEFT_PROJ_COUNT + md->proj].nnz += md->nnz;
		}
	}
	if (!sp)
		return NULL;
	for (i = 0; i < n_proj; i++) {
		struct sparse_proj *p = &sp[i];
		int layer = (int)(i / GM_PEFT_PROJ_COUNT);
		enum gm_peft_proj pj = (enum gm_peft_proj)(i % GM_PEFT_PROJ_COUNT);
		int64_t out = proj_weight(&f->m->layers[layer], pj)->shape[0], at = 0;

		if (!p->nnz)
			continue;
		p->rowp = gm_xcalloc((size_t)(out + 1), sizeof(*p->rowp));
		p->cols = gm_xmalloc((size_t)p->nnz * sizeof(*p->cols));
		p->vals = gm_xmalloc((size_t)p->nnz * sizeof(*p->vals));
		for (o = 0; o < out; o++) {
			for (k = 0; k < n; k++) {
				const gm_sparse_module *md;
				int64_t e;

				if (!list[k].sparse || list[k].scale == 0.0f ||
				    !(md = gm_sparse_find(list[k].sparse, layer, pj)))
					continue;
				for (e = md->row_offsets[o]; e < md->row_offsets[o + 1]; e++) {
					p->cols[at] = md->col_indices[e];
					p->vals[at] = list[k].scale * md->values[e];
					at++;
				}
			}
			p->rowp[o + 1] = at;
		}
	}
	return sp;
}

/* Module md (scaled by s) into the stacked A and B of its projection, at rank offset off. */
static int lora_fill(struct lora_proj *lp, const gm_peft_module *md, double s, int64_t off, gm_error *err)
{
	size_t na = (size_t)(md->rank * md->in), nb = (size_t)(md->out * md->rank), i;
	float *a = lp->a + off * md->in, *tmp;
	int64_t o, k;
	int ret;

	/* A: rows off .. off + r of the stacked [R, in], times s */
	if ((ret = gm_dtype_to_f32(md->a->dtype, md->a->data, a, na, err)))
		return ret;
	for (i = 0; i < na; i++)
		a[i] = (float)(s * (double)a[i]);
	/* B: columns off .. off + r of the stacked [out, R] */
	tmp = gm_xmalloc((nb ? nb : 1) * sizeof(float));
	if ((ret = gm_dtype_to_f32(md->b->dtype, md->b->data, tmp, nb, err))) {
		free(tmp);
		return ret;
	}
	for (o = 0; o < md->out; o++)
		for (k = 0; k < md->rank; k++)
			lp->b[o * lp->rank + off + k] = tmp[o * md->rank + k];
	free(tmp);
	return 0;
}

int gm_forward_set_adapters(gm_forward *f, const gm_peft_adapter *const *adapters, const float *scales,
			    int n, gm_error *err)
{
	gm_forward_adapter *list;
	int k, ret;

	if (n < 0)
		return gm_error_set(err, GM_EINVAL, "invalid adapter count %d", n);
	list = gm_xcalloc((size_t)(n ? n : 1), sizeof(*list));
	for (k = 0; k < n; k++) {
		list[k].lora = adapters[k];
		list[k].scale = scales ? scales[k] : 1.0f;
	}
	ret = gm_forward_set_adapter_list(f, list, n, err);
	free(list);
	return ret;
}

int gm_forward_set_adapter_list(gm_forward *f, const gm_forward_adapter *list, int n, gm_error *err)
{
	int64_t n_proj = f->n_layers * GM_PEFT_PROJ_COUNT, i, rmax = 0;
	struct lora_proj *lora;
	int64_t *off;
	int k, used = 0, ret = 0;
	size_t mi;

	if (n < 0 || (n && !list))
		return gm_error_set(err, GM_EINVAL, "invalid adapter count %d", n);
	for (k = 0; k < n; k++) {
		const char *dir = list[k].lora ? list[k].lora->dir : list[k].sparse ? list[k].sparse->dir : NULL;

		if (!dir || (list[k].lora && list[k].sparse))
			return gm_error_set(err, GM_EINVAL, "adapter %d: exactly one of a LoRA and a sparse adapter "
					    "expected", k);
		if (!isfinite(list[k].scale))
			return gm_error_set(err, GM_EINVAL, "adapter %s: the scale is not a finite number", dir);
		if (list[k].lora && (ret = gm_forward_check_adapter(f->m, list[k].lora, err)))
			return ret;
		if (list[k].sparse && (ret = gm_forward_check_sparse(f->m, list[k].sparse, err)))
			return ret;
	}

	/* ranks per projection, then the stacked matrices */
	lora = gm_xcalloc((size_t)n_proj, sizeof(*lora));
	off = gm_xcalloc((size_t)n_proj, sizeof(*off));
	for (k = 0; k < n; k++) {
		if (list[k].scale == 0.0f)
			continue;
		used++;
		if (!list[k].lora)
			continue;
		for (mi = 0; mi < list[k].lora->n_modules; mi++) {
			const gm_peft_module *md = &list[k].lora->modules[mi];
			lora[md->layer * GM_PEFT_PROJ_COUNT + md->proj].rank += md->rank;
		}
	}
	for (i = 0; i < n_proj; i++) {
		struct lora_proj *lp = &lora[i];
		const gm_tensor *w = proj_weight(&f->m->layers[i / GM_PEFT_PROJ_COUNT],
						 (enum gm_peft_proj)(i % GM_PEFT_PROJ_COUNT));

		if (!lp->rank)
			continue;
		rmax = imax(rmax, lp->rank);
		lp->a = falloc((size_t)(lp->rank * w->shape[1]));
		lp->b = falloc((size_t)(w->shape[0] * lp->rank));
		lp->ta.name = lp->tb.name = "lora";
		lp->ta.dtype = lp->tb.dtype = GM_DTYPE_F32;
		lp->ta.ndim = lp->tb.ndim = 2;
		lp->ta.shape[0] = lp->rank;
		lp->ta.shape[1] = w->shape[1];
		lp->tb.shape[0] = w->shape[0];
		lp->tb.shape[1] = lp->rank;
		lp->ta.numel = (uint64_t)(lp->rank * w->shape[1]);
		lp->tb.numel = (uint64_t)(w->shape[0] * lp->rank);
		lp->ta.nbytes = lp->ta.numel * 4;
		lp->tb.nbytes = lp->tb.numel * 4;
		lp->ta.data = lp->a;
		lp->tb.data = lp->b;
	}
	for (k = 0; k < n && !ret; k++) {
		double s = (double)list[k].scale;

		if (s == 0.0 || !list[k].lora)
			continue;
		for (mi = 0; mi < list[k].lora->n_modules && !ret; mi++) {
			const gm_peft_module *md = &list[k].lora->modules[mi];
			int64_t at = md->layer * GM_PEFT_PROJ_COUNT + md->proj;

			ret = lora_fill(&lora[at], md, s * md->scale, off[at], err);
			off[at] += md->rank;
		}
	}
	free(off);
	if (ret) {
		for (i = 0; i < n_proj; i++) {
			free(lora[i].a);
			free(lora[i].b);
		}
		free(lora);
		return ret;
	}

	adapters_free(f);
	f->pos = 0;
	f->adapters_epoch++;
	f->sparse = sparse_merge(f, list, n);
	f->n_adapters = used;
	if (!rmax) {
		free(lora);
		return 0;
	}
	f->lora = lora;
	f->lora_rmax = rmax;
	f->lora_u = falloc((size_t)GM_PEFT_PROJ_COUNT * (size_t)f->batch * (size_t)rmax);
	for (k = 0; k < GM_LIN_MAX; k++)
		f->lora_ut[k] = falloc(gm_matmul_xt_len(f->batch, rmax));
	f->lora_tile = gm_xcalloc((size_t)f->n_threads, sizeof(*f->lora_tile));
	for (k = 0; k < f->n_threads; k++)
		f->lora_tile[k] = falloc((size_t)GM_MATMUL_TB * GM_LORA_TILE);
	return 0;
}

int gm_forward_n_adapters(const gm_forward *f)
{
	return f->n_adapters;
}

uint64_t gm_forward_adapters_epoch(const gm_forward *f)
{
	return f->adapters_epoch;
}

/* ---------------------------------------------------------------- API */

int gm_forward_new(const gm_model *m, int n_ctx, int n_threads, gm_forward **out, gm_error *err)
{
	const gm_model_config *c = &m->config;
	gm_forward *f;
	int64_t max_in;
	size_t kv_len;
	int i, ret;

	*out = NULL;
	if (n_threads < 0 || n_threads > 1024)
		return gm_error_set(err, GM_EINVAL, "invalid thread count %d", n_threads);
	if (n_ctx < 0)
		return gm_error_set(err, GM_EINVAL, "invalid context length %d", n_ctx);
	if (c->num_key_value_heads < 1 || c->num_attention_heads % c->num_key_value_heads || c->head_dim % 2)
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: %lld attention heads over %lld kv heads of dimension %lld are not supported",
				    m->dir, (long long)c->num_attention_heads, (long long)c->num_key_value_heads,
				    (long long)c->head_dim);
	if (n_ctx == 0)
		n_ctx = (int)imin(c->max_position_embeddings > 0 ? c->max_position_embeddings : GM_FWD_MAX_CTX_DEFAULT,
				  GM_FWD_MAX_CTX_DEFAULT);
	if (n_threads == 0)
		n_threads = gm_cpu_count();

	f = gm_xcalloc(1, sizeof(*f));
	f->m = m;
	f->n_ctx = n_ctx;
	f->hidden = c->hidden_size;
	f->head_dim = c->head_dim;
	f->n_heads = c->num_attention_heads;
	f->n_kv = c->num_key_value_heads;
	f->q_dim = f->n_heads * f->head_dim;
	f->kv_dim = f->n_kv * f->head_dim;
	f->inter = c->intermediate_size;
	f->vocab = c->vocab_size;
	f->n_layers = c->num_hidden_layers;
	f->eps = (float)c->rms_norm_eps;
	f->att_scale = (float)(1.0 / sqrt((double)f->head_dim));
	f->batch = (int)imin(GM_FWD_BATCH, n_ctx);

	if ((ret = gm_threadpool_new(n_threads, &f->pool, err))) {
		free(f);
		return ret;
	}
	f->n_threads = n_threads;
	gm_kernels_isa();

	/* calloc: the cache's pages are only touched as positions fill */
	kv_len = (size_t)f->n_layers * (size_t)f->kv_dim * (size_t)n_ctx;
	f->k_cache = calloc(kv_len, sizeof(float));
	f->v_cache = calloc(kv_len, sizeof(float));
	if (!f->k_cache || !f->v_cache) {
		gm_forward_free(f);
		return gm_error_set(err, GM_ENOMEM, "cannot allocate a KV cache of %d tokens (%.1f MiB)", n_ctx,
				    2.0 * (double)kv_len * sizeof(float) / (1024.0 * 1024.0));
	}
	f->inv_freq = falloc((size_t)f->head_dim / 2);
	rope_init(f);

	f->x = falloc((size_t)f->batch * f->hidden);
	f->xn = falloc((size_t)f->batch * f->hidden);
	f->xo = falloc((size_t)f->batch * f->hidden);
	f->q = falloc((size_t)f->batch * f->q_dim);
	f->att = falloc((size_t)f->batch * f->q_dim);
	f->k = falloc((size_t)f->batch * f->kv_dim);
	f->v = falloc((size_t)f->batch * f->kv_dim);
	f->gate = falloc((size_t)f->batch * f->inter);
	f->up = falloc((size_t)f->batch * f->inter);
	f->rope_cs = falloc((size_t)f->batch * f->head_dim / 2);
	f->rope_sn = falloc((size_t)f->batch * f->head_dim / 2);
	max_in = imax(imax(f->hidden, f->q_dim), f->inter);
	f->xt = falloc(gm_matmul_xt_len(f->batch, max_in));

	max_in = imax(max_in, n_ctx);
	/* gm_matmul_panel_len(in) <= max(65536, TR * in) for every in (see kernels.c) */
	f->panel_len = (size_t)imax(65536, GM_MATMUL_TR * max_in);
	f->scores_len = (size_t)GM_MATMUL_TB * (size_t)n_ctx;
	f->pt_len = gm_matmul_xt_len(GM_MATMUL_TB, n_ctx);
	f->panel = gm_xcalloc((size_t)n_threads, sizeof(*f->panel));
	f->scores = gm_xcalloc((size_t)n_threads, sizeof(*f->scores));
	f->pt = gm_xcalloc((size_t)n_threads, sizeof(*f->pt));
	f->qt = gm_xcalloc((size_t)n_threads, sizeof(*f->qt));
	for (i = 0; i < n_threads; i++) {
		f->panel[i] = falloc(f->panel_len);
		f->scores[i] = falloc(f->scores_len);
		f->pt[i] = falloc(f->pt_len);
		f->qt[i] = falloc(gm_matmul_xt_len(GM_MATMUL_TB, f->head_dim));
	}
	*out = f;
	return 0;
}

void gm_forward_free(gm_forward *f)
{
	int i;

	if (!f)
		return;
	gm_threadpool_free(f->pool);
	for (i = 0; i < f->n_threads; i++) {
		free(f->panel[i]);
		free(f->scores[i]);
		free(f->pt[i]);
		free(f->qt[i]);
	}
	free(f->panel);
	free(f->scores);
	free(f->pt);
	free(f->qt);
	free(f->k_cache);
	free(f->v_cache);
	free(f->inv_freq);
	free(f->x);
	free(f->xn);
	free(f->xo);
	free(f->q);
	free(f->att);
	free(f->k);
	free(f->v);
	free(f->gate);
	free(f->up);
	free(f->rope_cs);
	free(f->rope_sn);
	free(f->xt);
	free(f->hidden_out);
	adapters_free(f);
	free(f);
}

int gm_forward_n_ctx(const gm_forward *f)
{
	return f->n_ctx;
}

int gm_forward_pos(const gm_forward *f)
{
	return f->pos;
}

void gm_forward_truncate(gm_forward *f, int pos)
{
	if (pos < 0)
		pos = 0;
	if (pos < f->pos)
		f->pos = pos;
}

const float *gm_forward_last_hidden(const gm_forward *f)
{
	return f->hidden_out;
}

int gm_forward_eval(gm_forward *f, const int32_t *ids, int n, float *logits, int all_logits, gm_error *err)
{
	const gm_tensor *lm = f->m->lm_head;
	int64_t done, nb, i;

	if (n < 1)
		return gm_error_set(err, GM_EINVAL, "no tokens to evaluate");
	if (n > f->n_ctx - f->pos)
		return gm_error_set(err, GM_EINVAL,
				    "context overflow: %d tokens do not fit after %d cached ones (context length %d)",
				    n, f->pos, f->n_ctx);
	for (i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= f->vocab)
			return gm_error_set(err, GM_EINVAL, "token id %ld at index %lld is out of range (vocabulary of %lld)",
					    (long)ids[i], (long long)i, (long long)f->vocab);
	if (n > f->hidden_cap) {
		free(f->hidden_out);
		f->hidden_out = falloc((size_t)n * (size_t)f->hidden);
		f->hidden_cap = n;
	}
	for (done = 0; done < n; done += nb) {
		float *h = f->hidden_out + done * f->hidden;

		nb = imin(f->batch, n - done);
		run_batch(f, ids + done, nb, h);
		if (logits && all_logits) {
			float *y = logits + done * f->vocab;
			linear(f, -1, NULL, 1, &lm, &y, &f->vocab, h, f->hidden, nb);
		}
		f->pos += (int)nb;
	}
	if (logits && !all_logits)
		linear(f, -1, NULL, 1, &lm, &logits, &f->vocab, f->hidden_out + (int64_t)(n - 1) * f->hidden,
		       f->hidden, 1);
	return 0;
}
