/*
 * forward.c - the transformer forward pass on the CPU (see forward.h).
 *
 * One step evaluates R token rows, which may belong to several sequences
 * (gm_forward_eval_batch) or to one (gm_forward_eval); row t is token
 * ids[t] of sequence seq[t] at position pos[t].  One decoder layer, for
 * the rows of a pass (x: the residual stream, [R, hidden]):
 *
 *   xn = rmsnorm(x, input_layernorm)
 *   q, k, v = xn W_q^T (+ b_q), xn W_k^T (+ b_k), xn W_v^T (+ b_v)
 *   q, k = rmsnorm per head (Qwen3 q_norm / k_norm); rope(q), rope(k) at pos[t]
 *   k, v -> the KV pool: sequence seq[t], position pos[t]
 *   att = softmax(q k^T / sqrt(head_dim), causal) v  over seq[t]'s positions <= pos[t]
 *         (GQA: head h reads kv head h / group)
 *   x += att W_o^T
 *   xn = rmsnorm(x, post_attention_layernorm)
 *   x += (silu(xn W_gate^T) * (xn W_up^T)) W_down^T
 *
 * then the final norm and lm_head.  Activations are f32.  Every projection
 * runs over all R rows at once (weights read once per pass): gm_matmul for
 * three rows or more, gm_matvec per row below.  More than GM_FWD_BATCH rows
 * are evaluated in passes, in row order, so a sequence's later rows find
 * its earlier rows' keys in the pool.
 *
 * Attention is per row: the row's query heads of one kv head against the
 * blocks of its own sequence (kernels-kv.h), so a row's result does not
 * depend on which other rows share the step.
 *
 * Adapters.  An adapter set (gm_forward_adapter_set_add; the single-
 * sequence calls keep a private one) stacks its LoRAs per projection at
 * registration into two f32 matrices, the scales folded into A:
 *
 *   A = [s_1 A_1; s_2 A_2; ...]   [R, in]    (R = r_1 + r_2 + ...)
 *   B = [B_1, B_2, ...]           [out, R]
 *
 * so that sum_i s_i B_i A_i = B A.  The rows of a step are ordered by
 * adapter set, so each set's rows are one contiguous range.  The rows of
 * A run in the same parallel loop as the base weight (the range's input,
 * packed once): u = x A^T, [n, R]; a second loop adds u B^T to the
 * range's rows of the projection's output, a tile of tokens by rows at a
 * time.  Sparse adapters are merged per projection into one f32 CSR
 * matrix, each row the rows of every adapter one after the other, the
 * scales folded into the values; a third parallel loop over the output
 * rows adds x (sum_i s_i delta W_i)^T to the range's rows.
 */
#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "kernels-kv.h"
#include "kernels.h"
#include "kv-internal.h"
#include "peft.h"
#include "sparse.h"
#include "threadpool.h"

#define GM_FWD_BATCH 512   /* rows per internal pass */
#define GM_FWD_MATVEC_MAX 2 /* passes (or adapter ranges) up to this size use gm_matvec */
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

/* One adapter set. */
struct aset {
	int n_adapters;             /* with a non-zero scale */
	struct lora_proj *lora;     /* [layers][GM_PEFT_PROJ_COUNT]; NULL: no LoRA */
	int64_t rmax;               /* the largest R */
	struct sparse_proj *sparse; /* [layers][GM_PEFT_PROJ_COUNT]; NULL: none */
};

/* The rows [r0, r1) of a pass that use adapter set set (NULL: none). */
struct range {
	const struct aset *set;
	int64_t r0, r1;
};

struct gm_forward {
	const gm_model *m;
	gm_threadpool *pool;
	int n_threads;
	int n_ctx, batch;
	int64_t hidden, q_dim, kv_dim, head_dim, n_heads, n_kv, inter, vocab, n_layers;
	float eps, att_scale;
	float *inv_freq;           /* [head_dim / 2] */

	/* the single-sequence calls */
	gm_kv *kv;                 /* private pool, n_ctx tokens */
	int seq;                   /* its one sequence */
	struct aset *single;       /* its adapters; NULL: none */
	uint64_t adapters_epoch;

	/* registered adapter sets: sets[id], id >= 1 */
	struct aset **sets;
	int n_sets;

	/* the step being evaluated: rows in evaluation order */
	gm_kv *cur;                /* its pool */
	int64_t ev_cap;
	int32_t *ev_seq, *ev_pos, *ev_ids;
	const struct aset **ev_set;
	int *order;                /* [n_seqs]: the seqs by adapter set */
	int order_cap;

	/* one pass: rows ev_*[p0 .. p0 + nb) */
	const int32_t *row_seq, *row_pos;
	struct range *ranges;      /* [batch] at most */
	int n_ranges;
	float *x, *xn, *xo;        /* [batch, hidden] */
	float *q, *att;            /* [batch, q_dim] */
	float *k, *v;              /* [batch, kv_dim] */
	float *gate, *up;          /* [batch, inter] */
	float *rope_cs, *rope_sn;  /* [batch, head_dim / 2] */
	float *xt;                 /* packed activations, gm_matmul_xt_len(batch, max in) */
	size_t panel_len;
	float **panel;             /* per thread */
	size_t scores_len;
	float **scores;            /* per thread, [min(group, GM_ATTN_MAXQ), longest sequence] */
	float **lora_tile;         /* per thread, [GM_MATMUL_TB, GM_LORA_TILE]: u B^T before it is added */
	float *scratch;            /* adapter ranges' packed inputs and u (see linear) */
	size_t scratch_len;
	struct lin_mat *mats;      /* one parallel loop's matrices */
	struct lora_use *uses;     /* the LoRAs of one linear call */
	int mats_cap;

	float *hidden_out;         /* [n, hidden] of the last eval, after the final norm */
	int64_t hidden_cap;        /* rows */
	float *head_x, *head_y;    /* eval_batch: the sequences' last rows and their logits */
	int64_t head_cap;
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

/* Floats rounded up to a 64-byte multiple, so carved buffers stay aligned. */
static inline size_t fround(size_t n)
{
	return (n + 15) & ~(size_t)15;
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

/* cos/sin of the pass's rows' positions. */
static void rope_rows(gm_forward *f, int64_t nb)
{
	int64_t t, j, half = f->head_dim / 2;

	for (t = 0; t < nb; t++) {
		for (j = 0; j < half; j++) {
			double a = (double)f->row_pos[t] * (double)f->inv_freq[j];
			f->rope_cs[t * half + j] = (float)cos(a);
			f->rope_sn[t * half + j] = (float)sin(a);
		}
	}
}

/* ---------------------------------------------------------------- linear layers */

/*
 * One parallel loop over the rows of several weights.  Matrix i computes
 *   Y_i[t, r] = sum_k W_i[r, k] X_i[t, k]     (W_i: [rows_i, in_i], X_i: [nb_i, in_i])
 * into y_i, or, when add is set, adds it to y_i (by tiles of up to TB tokens
 * by GM_LORA_TILE rows, through the thread's lora_tile, which stays in cache).
 */
struct lin_mat {
	const gm_tensor *w;      /* [rows, in] */
	float *y;                /* [nb, *], row stride ldy */
	int64_t ldy;
	const float *x;          /* [nb, in], row stride ldx (matvec) */
	int64_t ldx, in;
	const float *xt;         /* x packed (matmul) */
	int64_t nb;
	int matmul;              /* else matvec per token */
	int add;                 /* y += the product */
	int64_t off;             /* rows of the matrices before this one in the loop */
};

/* A LoRA projection applied to one adapter range: u = x A^T, then y += u B^T. */
struct lora_use {
	const struct lora_proj *lp;
	int which;               /* the weight (of the call's n_mats) it adapts */
	int rg;                  /* the range */
	float *u, *ut;           /* [n, R], and packed */
};

struct lin_job {
	gm_forward *f;
	int n_mats;
	struct lin_mat *m;
	int64_t rows;            /* all matrices' */
};

/* y[t, r] += sum_k W[r, k] X[t, k] for rows [r0, r1) of an F32 weight, by tiles. */
static void lin_add_rows(const struct lin_job *j, const struct lin_mat *mt, int64_t r0, int64_t r1, int thread)
{
	float *tile = j->f->lora_tile[thread];
	const float *w = mt->w->data;
	int64_t ldw = mt->w->shape[1], a, n, t0, t, r, step = mt->matmul ? GM_MATMUL_TB : 1;

	for (a = r0; a < r1; a += GM_LORA_TILE) {
		/* tile[t, r - a] for the rows [a, a + n): W from row a */
		n = imin(GM_LORA_TILE, r1 - a);
		for (t0 = 0; t0 < mt->nb; t0 += step) {
			int64_t nt = imin(step, mt->nb - t0);

			if (mt->matmul)
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
		const struct lin_mat *mt = &j->m[i];
		int64_t end = mt->off + mt->w->shape[0];
		int64_t r0 = imax(b, mt->off) - mt->off, r1 = imin(e, end) - mt->off, t;
		const gm_tensor *w = mt->w;

		if (r0 >= r1)
			continue;
		if (mt->add)
			lin_add_rows(j, mt, r0, r1, thread);
		else if (mt->matmul)
			gm_matmul(mt->y, mt->ldy, mt->xt, mt->nb, w->data, w->dtype, w->shape[1], mt->in, r0, r1,
				  j->f->panel[thread]);
		else
			for (t = 0; t < mt->nb; t++)
				gm_matvec(mt->y + t * mt->ldy, w->data, w->dtype, w->shape[1], mt->x + t * mt->ldx,
					  mt->in, r0, r1);
	}
}

static void lin_push(struct lin_job *j, const gm_tensor *w, float *y, int64_t ldy, const float *x, int64_t ldx,
		     int64_t in, const float *xt, int64_t nb, int add)
{
	struct lin_mat *mt = &j->m[j->n_mats++];

	mt->w = w;
	mt->y = y;
	mt->ldy = ldy;
	mt->x = x;
	mt->ldx = ldx;
	mt->in = in;
	mt->xt = xt;
	mt->nb = nb;
	mt->matmul = nb > GM_FWD_MATVEC_MAX;
	mt->add = add;
	mt->off = j->rows;
	j->rows += w->shape[0];
}

/*
 * Sparse deltas: y_i[t, r] += sum_k vals[k] x[t, cols[k]] over the entries
 * k of row r, for the rows of several CSR matrices in one loop (SpMV per
 * token when nb is 1, SpMM otherwise: each row's entries are read once for
 * all the range's tokens).
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

/* Room for n matrices in one loop, and as many LoRA uses. */
static void mats_reserve(gm_forward *f, int n)
{
	if (n <= f->mats_cap)
		return;
	f->mats_cap = n;
	f->mats = gm_xrealloc(f->mats, (size_t)n * sizeof(*f->mats));
	f->uses = gm_xrealloc(f->uses, (size_t)n * sizeof(*f->uses));
}

static void scratch_reserve(gm_forward *f, size_t n)
{
	if (n <= f->scratch_len)
		return;
	free(f->scratch);
	f->scratch = falloc(n);
	f->scratch_len = n;
}

/*
 * y_i[t, :] = x[t, :] W_i^T for the n_mats weights (all [rows_i, in]) of
 * layer layer over the pass's nb rows, plus, for each adapter range, its
 * set's x A^T B^T and x delta W^T on the projections proj[i] of the
 * range's rows (layer < 0: no adapters).
 */
static void linear(gm_forward *f, int64_t layer, const enum gm_peft_proj *proj, int n_mats,
		   const gm_tensor *const *w, float **y, const int64_t *ldy, const float *x, int64_t ldx, int64_t nb)
{
	struct lin_job j;
	struct lora_use *lu;
	int64_t in = w[0]->shape[1], grain, rg_n;
	size_t need = 0, at = 0;
	int i, g, n_lora = 0, n_rg = layer >= 0 ? f->n_ranges : 0;
	float *rg_xt;

	/* scratch: per range with a LoRA here, its packed input (unless it is the whole pass), u and u packed */
	for (g = 0; g < n_rg; g++) {
		const struct range *rg = &f->ranges[g];
		int any = 0;

		if (!rg->set || !rg->set->lora)
			continue;
		rg_n = rg->r1 - rg->r0;
		for (i = 0; i < n_mats; i++) {
			const struct lora_proj *l = &rg->set->lora[layer * GM_PEFT_PROJ_COUNT + proj[i]];

			if (!l->rank)
				continue;
			any = 1;
			need += fround((size_t)(rg_n * l->rank)) + fround(gm_matmul_xt_len(rg_n, l->rank));
		}
		if (any && rg_n != nb)
			need += fround(gm_matmul_xt_len(rg_n, in));
	}
	scratch_reserve(f, need);
	mats_reserve(f, n_mats * (n_rg + 1));
	lu = f->uses;

	memset(&j, 0, sizeof(j));
	j.f = f;
	j.m = f->mats;
	for (i = 0; i < n_mats; i++)
		lin_push(&j, w[i], y[i], ldy[i], x, ldx, in, f->xt, nb, 0);
	if (nb > GM_FWD_MATVEC_MAX)
		gm_matmul_pack_all(f->pool, f->xt, x, ldx, nb, in);
	/* the adapters' A: u = x A^T over each range's rows */
	for (g = 0; g < n_rg; g++) {
		const struct range *rg = &f->ranges[g];
		const float *rx = x + rg->r0 * ldx;

		if (!rg->set || !rg->set->lora)
			continue;
		rg_n = rg->r1 - rg->r0;
		rg_xt = rg_n == nb ? f->xt : NULL;
		for (i = 0; i < n_mats; i++) {
			const struct lora_proj *l = &rg->set->lora[layer * GM_PEFT_PROJ_COUNT + proj[i]];

			if (!l->rank)
				continue;
			if (!rg_xt) {
				rg_xt = f->scratch + at;
				at += fround(gm_matmul_xt_len(rg_n, in));
				if (rg_n > GM_FWD_MATVEC_MAX)
					gm_matmul_pack_all(f->pool, rg_xt, rx, ldx, rg_n, in);
			}
			lu[n_lora].lp = l;
			lu[n_lora].which = i;
			lu[n_lora].rg = g;
			lu[n_lora].u = f->scratch + at;
			at += fround((size_t)(rg_n * l->rank));
			lu[n_lora].ut = f->scratch + at;
			at += fround(gm_matmul_xt_len(rg_n, l->rank));
			lin_push(&j, &l->ta, lu[n_lora].u, l->rank, rx, ldx, in, rg_xt, rg_n, 0);
			n_lora++;
		}
	}
	grain = nb > GM_FWD_MATVEC_MAX ? (int64_t)(gm_matmul_panel_len(in) / (size_t)in) : 16;
	gm_threadpool_for(f->pool, j.rows, grain, lin_rows, &j);

	for (g = 0; g < n_rg; g++) {
		const struct range *rg = &f->ranges[g];
		struct sp_job sj;

		if (!rg->set || !rg->set->sparse)
			continue;
		memset(&sj, 0, sizeof(sj));
		sj.x = x + rg->r0 * ldx;
		sj.ldx = ldx;
		sj.nb = rg->r1 - rg->r0;
		for (i = 0; i < n_mats; i++) {
			const struct sparse_proj *sp = &rg->set->sparse[layer * GM_PEFT_PROJ_COUNT + proj[i]];

			if (!sp->nnz)
				continue;
			sj.sp[sj.n] = sp;
			sj.y[sj.n] = y[i] + rg->r0 * ldy[i];
			sj.ldy[sj.n] = ldy[i];
			sj.off[sj.n + 1] = sj.off[sj.n] + w[i]->shape[0];
			sj.n++;
		}
		if (sj.n)
			gm_threadpool_for(f->pool, sj.off[sj.n], 16, sp_rows, &sj);
	}
	if (!n_lora)
		return;

	/* y += u B^T, each range's rows */
	mats_reserve(f, n_lora);
	memset(&j, 0, sizeof(j));
	j.f = f;
	j.m = f->mats;
	for (i = 0; i < n_lora; i++) {
		const struct range *rg = &f->ranges[lu[i].rg];
		int64_t r = lu[i].lp->rank, wi = lu[i].which;

		rg_n = rg->r1 - rg->r0;
		if (rg_n > GM_FWD_MATVEC_MAX)
			gm_matmul_pack(lu[i].ut, lu[i].u, r, rg_n, r, 0, (rg_n + GM_MATMUL_TB - 1) / GM_MATMUL_TB);
		lin_push(&j, &lu[i].lp->tb, y[wi] + rg->r0 * ldy[wi], ldy[wi], lu[i].u, r, r, lu[i].ut, rg_n, 1);
	}
	gm_threadpool_for(f->pool, j.rows, 32, lin_rows, &j);
}

/* ---------------------------------------------------------------- per-row work */

enum tok_mode {
	TOK_NORM,      /* out = rmsnorm(x, w) */
	TOK_ADD_NORM,  /* x += xo; out = rmsnorm(x, w) */
	TOK_QKV,       /* biases, q/k norm, rope, k and v to the pool */
	TOK_SILU       /* gate = silu(gate) * up */
};

struct tok_job {
	gm_forward *f;
	enum tok_mode mode;
	int64_t layer;
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

/* Row t: biases, norms and rope of q and k; k and v to the row's sequence at its position. */
static void qkv_row(gm_forward *f, int64_t layer, int64_t t)
{
	const gm_layer_weights *lw = &f->m->layers[layer];
	const gm_kv *kv = f->cur;
	int64_t hd = f->head_dim, half = hd / 2, h, p = f->row_pos[t];
	int32_t blk = kv->seqs[f->row_seq[t]].blocks[p / GM_KV_BLOCK];
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
		if (lw->k_norm)
			gm_rmsnorm(k + h * hd, k + h * hd, lw->k_norm->data, lw->k_norm->dtype, hd, f->eps);
		gm_rope(k + h * hd, cs, sn, hd);
		gm_kv_store_row(gm_kv_k_row(kv, blk, layer, h, p % GM_KV_BLOCK), kv->dt, k + h * hd, hd);
		gm_kv_store_row(gm_kv_v_row(kv, blk, layer, h, p % GM_KV_BLOCK), kv->dt, v + h * hd, hd);
	}
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
			qkv_row(f, j->layer, t);
			break;
		case TOK_SILU:
			gm_silu_mul(f->gate + t * f->inter, f->up + t * f->inter, f->inter);
			break;
		}
	}
}

static void per_token(gm_forward *f, enum tok_mode mode, int64_t nb, int64_t layer, const gm_tensor *w, float *out)
{
	struct tok_job j = { f, mode, layer, w, out };

	gm_threadpool_for(f->pool, nb, 1, tok_run, &j);
}

/* ---------------------------------------------------------------- attention */

struct att_job {
	gm_forward *f;
	int64_t layer;
};

/*
 * Row t, kv head g: the query heads of g's group (GM_ATTN_MAXQ at a time)
 * against the keys of positions 0 .. pos[t] of the row's sequence, block
 * by block; then softmax and the values, block by block.
 */
static void att_task(gm_forward *f, int64_t layer, int64_t t, int64_t g, int thread)
{
	const gm_kv *kv = f->cur;
	const struct gm_kv_seq *s = &kv->seqs[f->row_seq[t]];
	int64_t hd = f->head_dim, grp = f->n_heads / f->n_kv, T = (int64_t)f->row_pos[t] + 1, h0, b, i;
	const float *qp[GM_ATTN_MAXQ], *pp[GM_ATTN_MAXQ];
	float *sp[GM_ATTN_MAXQ], *op[GM_ATTN_MAXQ];
	int j, nq;

	for (h0 = 0; h0 < grp; h0 += GM_ATTN_MAXQ) {
		nq = (int)imin(GM_ATTN_MAXQ, grp - h0);
		for (j = 0; j < nq; j++)
			qp[j] = f->q + t * f->q_dim + (g * grp + h0 + j) * hd;
		for (b = 0; b * GM_KV_BLOCK < T; b++) {
			for (j = 0; j < nq; j++)
				sp[j] = f->scores[thread] + j * T + b * GM_KV_BLOCK;
			gm_attn_scores(sp, qp, nq, gm_kv_k_row(kv, s->blocks[b], layer, g, 0), kv->dt,
				       imin(GM_KV_BLOCK, T - b * GM_KV_BLOCK), hd);
		}
		for (j = 0; j < nq; j++) {
			float *sc = f->scores[thread] + j * T;

			for (i = 0; i < T; i++)
				sc[i] *= f->att_scale;
			gm_softmax(sc, T);
			op[j] = f->att + t * f->q_dim + (g * grp + h0 + j) * hd;
			memset(op[j], 0, (size_t)hd * sizeof(float));
		}
		for (b = 0; b * GM_KV_BLOCK < T; b++) {
			for (j = 0; j < nq; j++)
				pp[j] = f->scores[thread] + j * T + b * GM_KV_BLOCK;
			gm_attn_accum(op, pp, nq, gm_kv_v_row(kv, s->blocks[b], layer, g, 0), kv->dt,
				      imin(GM_KV_BLOCK, T - b * GM_KV_BLOCK), hd);
		}
	}
}

static void att_run(void *ctx, int64_t b, int64_t e, int thread)
{
	struct att_job *j = ctx;
	int64_t task;

	for (task = b; task < e; task++)
		att_task(j->f, j->layer, task / j->f->n_kv, task % j->f->n_kv, thread);
}

static void attention(gm_forward *f, int64_t layer, int64_t nb)
{
	struct att_job j = { f, layer };

	gm_threadpool_for(f->pool, nb * f->n_kv, 1, att_run, &j);
}

/* ---------------------------------------------------------------- one pass */

/* Runs the rows ev_*[p0 .. p0 + nb); their final hidden states go to out ([nb, hidden]). */
static void run_pass(gm_forward *f, int64_t p0, int64_t nb, float *out)
{
	const gm_model *m = f->m;
	const int32_t *ids = f->ev_ids + p0;
	int64_t t, l, H = f->hidden;

	f->row_seq = f->ev_seq + p0;
	f->row_pos = f->ev_pos + p0;
	/* the adapter ranges of this pass (rows are ordered by set) */
	f->n_ranges = 0;
	for (t = 0; t < nb; t++) {
		if (!f->n_ranges || f->ev_set[p0 + t] != f->ranges[f->n_ranges - 1].set) {
			f->ranges[f->n_ranges].set = f->ev_set[p0 + t];
			f->ranges[f->n_ranges].r0 = t;
			f->n_ranges++;
		}
		f->ranges[f->n_ranges - 1].r1 = t + 1;
	}
	for (t = 0; t < nb; t++)
		gm_load_f32(f->x + t * H, row_ptr(m->embed_tokens, ids[t]), m->embed_tokens->dtype, H);
	rope_rows(f, nb);
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

		per_token(f, l == 0 ? TOK_NORM : TOK_ADD_NORM, nb, l, lw->input_norm, f->xn);
		linear(f, l, qkv_p, 3, qkv, qkv_y, qkv_ld, f->xn, H, nb);
		per_token(f, TOK_QKV, nb, l, NULL, NULL);
		attention(f, l, nb);
		linear(f, l, &o_p, 1, &lw->o_proj, &f->xo, &H, f->att, f->q_dim, nb);
		per_token(f, TOK_ADD_NORM, nb, l, lw->post_attn_norm, f->xn);
		linear(f, l, gu_p, 2, gu, gu_y, gu_ld, f->xn, H, nb);
		per_token(f, TOK_SILU, nb, l, NULL, NULL);
		linear(f, l, &down_p, 1, &lw->down_proj, &f->xo, &H, f->gate, f->inter, nb);
	}
	per_token(f, TOK_ADD_NORM, nb, f->n_layers, m->final_norm, out);
}

/* ---------------------------------------------------------------- one step */

static void ev_reserve(gm_forward *f, int64_t rows, int n_seqs)
{
	if (rows > f->ev_cap) {
		f->ev_cap = rows;
		f->ev_seq = gm_xrealloc(f->ev_seq, (size_t)rows * sizeof(*f->ev_seq));
		f->ev_pos = gm_xrealloc(f->ev_pos, (size_t)rows * sizeof(*f->ev_pos));
		f->ev_ids = gm_xrealloc(f->ev_ids, (size_t)rows * sizeof(*f->ev_ids));
		f->ev_set = gm_xrealloc(f->ev_set, (size_t)rows * sizeof(*f->ev_set));
	}
	if (rows > f->hidden_cap) {
		free(f->hidden_out);
		f->hidden_out = falloc((size_t)rows * (size_t)f->hidden);
		f->hidden_cap = rows;
	}
	if (n_seqs > f->order_cap) {
		f->order_cap = n_seqs;
		f->order = gm_xrealloc(f->order, (size_t)n_seqs * sizeof(*f->order));
	}
}

/* Per-thread attention scores for sequences of up to T positions. */
static void scores_reserve(gm_forward *f, int64_t T)
{
	size_t need = (size_t)imin(f->n_heads / f->n_kv, GM_ATTN_MAXQ) * (size_t)T;
	int i;

	if (need <= f->scores_len)
		return;
	need = need > 2 * f->scores_len ? need : 2 * f->scores_len;
	for (i = 0; i < f->n_threads; i++) {
		free(f->scores[i]);
		f->scores[i] = falloc(need);
	}
	f->scores_len = need;
}

/*
 * The step proper, after the checks: seqs[i] uses adapter set sets[i] and
 * fits in kv.  Its blocks are reserved, its rows ordered by adapter set
 * and evaluated in passes; the sequences' lengths grow by their n.
 * all_logits (one sequence only): [n, vocab] logits of every row; else
 * each sequence's logits (when not NULL) of its last row.
 */
static void eval_step(gm_forward *f, gm_kv *kv, const gm_forward_seq *seqs, const struct aset *const *sets,
		      int n_seqs, float *all_logits)
{
	const gm_tensor *lm = f->m->lm_head;
	int64_t rows = 0, r, done, nb, maxT = 0, n_out = 0;
	int i, k, c;

	for (i = 0; i < n_seqs; i++) {
		rows += seqs[i].n;
		maxT = imax(maxT, (int64_t)kv->seqs[seqs[i].seq].len + seqs[i].n);
	}
	ev_reserve(f, rows, n_seqs);
	scores_reserve(f, maxT);
	for (i = 0; i < n_seqs; i++) {
		gm_kv_reserve(kv, seqs[i].seq, seqs[i].n, NULL); /* cannot fail: checked by the caller */
		/* insertion sort by adapter set (stable: the callers' order within a set) */
		for (k = i; k > 0 && (uintptr_t)sets[f->order[k - 1]] > (uintptr_t)sets[i]; k--)
			f->order[k] = f->order[k - 1];
		f->order[k] = i;
	}
	for (i = 0, r = 0; i < n_seqs; i++) {
		const gm_forward_seq *s = &seqs[f->order[i]];
		int len = kv->seqs[s->seq].len;

		for (c = 0; c < s->n; c++, r++) {
			f->ev_seq[r] = s->seq;
			f->ev_pos[r] = len + c;
			f->ev_ids[r] = s->ids[c];
			f->ev_set[r] = sets[f->order[i]];
		}
	}
	f->cur = kv;
	for (done = 0; done < rows; done += nb) {
		float *h = f->hidden_out + done * f->hidden;

		nb = imin(f->batch, rows - done);
		run_pass(f, done, nb, h);
		if (all_logits) {
			float *y = all_logits + done * f->vocab;
			linear(f, -1, NULL, 1, &lm, &y, &f->vocab, h, f->hidden, nb);
		}
	}
	for (i = 0; i < n_seqs; i++)
		kv->seqs[seqs[i].seq].len += seqs[i].n;
	f->cur = NULL;
	if (all_logits)
		return;

	/* lm_head over the sequences' last rows at once */
	for (i = 0, r = 0; i < n_seqs; i++) {
		r += seqs[f->order[i]].n;
		n_out += seqs[f->order[i]].logits != NULL;
	}
	if (!n_out)
		return;
	if (n_out == 1) {
		for (i = 0, r = 0; i < n_seqs; i++) {
			float *y = seqs[f->order[i]].logits;

			r += seqs[f->order[i]].n;
			if (y)
				linear(f, -1, NULL, 1, &lm, &y, &f->vocab, f->hidden_out + (r - 1) * f->hidden,
				       f->hidden, 1);
		}
		return;
	}
	if (n_out > f->head_cap) {
		free(f->head_x);
		free(f->head_y);
		f->head_x = falloc((size_t)n_out * (size_t)f->hidden);
		f->head_y = falloc((size_t)n_out * (size_t)f->vocab);
		f->head_cap = n_out;
	}
	for (i = 0, r = 0, k = 0; i < n_seqs; i++) {
		r += seqs[f->order[i]].n;
		if (seqs[f->order[i]].logits)
			memcpy(f->head_x + (k++) * f->hidden, f->hidden_out + (r - 1) * f->hidden,
			       (size_t)f->hidden * sizeof(float));
	}
	for (done = 0; done < n_out; done += nb) {
		float *y = f->head_y + done * f->vocab;

		nb = imin(f->batch, n_out - done);
		linear(f, -1, NULL, 1, &lm, &y, &f->vocab, f->head_x + done * f->hidden, f->hidden, nb);
	}
	for (i = 0, k = 0; i < n_seqs; i++)
		if (seqs[f->order[i]].logits)
			memcpy(seqs[f->order[i]].logits, f->head_y + (k++) * f->vocab, (size_t)f->vocab * sizeof(float));
}

/* ---------------------------------------------------------------- adapters */

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

static void lora_free_all(struct lora_proj *lp, int64_t n)
{
	int64_t i;

	if (!lp)
		return;
	for (i = 0; i < n; i++) {
		free(lp[i].a);
		free(lp[i].b);
	}
	free(lp);
}

static void aset_free(gm_forward *f, struct aset *s)
{
	if (!s)
		return;
	lora_free_all(s->lora, f->n_layers * GM_PEFT_PROJ_COUNT);
	sparse_free_all(s->sparse, f->n_layers * GM_PEFT_PROJ_COUNT);
	free(s);
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

/*
 * Checks list[0..n) and builds its adapter set (stacked LoRAs, merged
 * sparse deltas); *out NULL when no adapter has a non-zero scale.
 */
static int aset_build(gm_forward *f, const gm_forward_adapter *list, int n, struct aset **out, gm_error *err)
{
	int64_t n_proj = f->n_layers * GM_PEFT_PROJ_COUNT, i, rmax = 0;
	struct lora_proj *lora;
	struct aset *set;
	int64_t *off;
	int k, used = 0, ret = 0;
	size_t mi;

	*out = NULL;
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
		lora_free_all(lora, n_proj);
		return ret;
	}
	if (!used) {
		lora_free_all(lora, n_proj);
		return 0;
	}
	set = gm_xcalloc(1, sizeof(*set));
	set->n_adapters = used;
	set->sparse = sparse_merge(f, list, n);
	if (rmax) {
		set->lora = lora;
		set->rmax = rmax;
		/* B's rows are read by gm_matmul with in = R */
		if (gm_matmul_panel_len(rmax) > f->panel_len) {
			f->panel_len = gm_matmul_panel_len(rmax);
			for (k = 0; k < f->n_threads; k++) {
				free(f->panel[k]);
				f->panel[k] = falloc(f->panel_len);
			}
		}
	} else {
		lora_free_all(lora, n_proj);
	}
	*out = set;
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
	struct aset *set;
	int ret;

	if ((ret = aset_build(f, list, n, &set, err)))
		return ret;
	aset_free(f, f->single);
	f->single = set;
	gm_kv_seq_truncate(f->kv, f->seq, 0);
	f->adapters_epoch++;
	return 0;
}

int gm_forward_n_adapters(const gm_forward *f)
{
	return f->single ? f->single->n_adapters : 0;
}

uint64_t gm_forward_adapters_epoch(const gm_forward *f)
{
	return f->adapters_epoch;
}

int gm_forward_adapter_set_add(gm_forward *f, const gm_forward_adapter *list, int n, int *id, gm_error *err)
{
	struct aset *set;
	int i, ret;

	if ((ret = aset_build(f, list, n, &set, err)))
		return ret;
	if (!set) /* every scale 0: the base model, but still an id of its own */
		set = gm_xcalloc(1, sizeof(*set));
	for (i = 1; i < f->n_sets && f->sets[i]; i++)
		;
	if (i >= f->n_sets) {
		int cap = f->n_sets ? 2 * f->n_sets : 8;

		f->sets = gm_xrealloc(f->sets, (size_t)cap * sizeof(*f->sets));
		memset(f->sets + f->n_sets, 0, (size_t)(cap - f->n_sets) * sizeof(*f->sets));
		f->n_sets = cap;
	}
	f->sets[i] = set;
	*id = i;
	return 0;
}

void gm_forward_adapter_set_remove(gm_forward *f, int id)
{
	if (id <= 0 || id >= f->n_sets || !f->sets[id])
		return;
	aset_free(f, f->sets[id]);
	f->sets[id] = NULL;
}

/* ---------------------------------------------------------------- API */

int gm_forward_new(const gm_model *m, int n_ctx, int n_threads, gm_forward **out, gm_error *err)
{
	gm_forward_opts o = { n_ctx, n_threads, GM_KV_F32 };

	return gm_forward_new_ex(m, &o, out, err);
}

int gm_forward_new_ex(const gm_model *m, const gm_forward_opts *o, gm_forward **out, gm_error *err)
{
	const gm_model_config *c = &m->config;
	int n_ctx = o->n_ctx, n_threads = o->n_threads;
	gm_forward *f;
	int64_t max_in;
	int i, ret;

	*out = NULL;
	if (n_threads < 0 || n_threads > 1024)
		return gm_error_set(err, GM_EINVAL, "invalid thread count %d", n_threads);
	if (n_ctx < 0)
		return gm_error_set(err, GM_EINVAL, "invalid context length %d", n_ctx);
	if ((int)o->kv_type < GM_KV_AUTO || (int)o->kv_type > GM_KV_F16)
		return gm_error_set(err, GM_EINVAL, "invalid KV cache type %d", (int)o->kv_type);
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
	f->batch = GM_FWD_BATCH;

	if ((ret = gm_threadpool_new(n_threads, &f->pool, err))) {
		free(f);
		return ret;
	}
	f->n_threads = n_threads;
	gm_kernels_isa();

	/* the private pool: its pages are only touched as positions fill */
	if ((ret = gm_kv_new(m, o->kv_type, n_ctx, &f->kv, err)) || (ret = gm_kv_seq_new(f->kv, &f->seq, err))) {
		gm_forward_free(f);
		return ret;
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
	f->ranges = gm_xcalloc((size_t)f->batch, sizeof(*f->ranges));
	max_in = imax(imax(f->hidden, f->q_dim), f->inter);
	f->xt = falloc(gm_matmul_xt_len(f->batch, max_in));

	f->panel_len = gm_matmul_panel_len(f->hidden);
	if (gm_matmul_panel_len(f->q_dim) > f->panel_len)
		f->panel_len = gm_matmul_panel_len(f->q_dim);
	if (gm_matmul_panel_len(f->inter) > f->panel_len)
		f->panel_len = gm_matmul_panel_len(f->inter);
	f->panel = gm_xcalloc((size_t)n_threads, sizeof(*f->panel));
	f->scores = gm_xcalloc((size_t)n_threads, sizeof(*f->scores));
	f->lora_tile = gm_xcalloc((size_t)n_threads, sizeof(*f->lora_tile));
	for (i = 0; i < n_threads; i++) {
		f->panel[i] = falloc(f->panel_len);
		f->lora_tile[i] = falloc((size_t)GM_MATMUL_TB * GM_LORA_TILE);
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
	for (i = 0; f->panel && i < f->n_threads; i++) {
		free(f->panel[i]);
		free(f->scores[i]);
		free(f->lora_tile[i]);
	}
	free(f->panel);
	free(f->scores);
	free(f->lora_tile);
	gm_kv_free(f->kv);
	aset_free(f, f->single);
	for (i = 1; i < f->n_sets; i++)
		aset_free(f, f->sets[i]);
	free(f->sets);
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
	free(f->ranges);
	free(f->xt);
	free(f->scratch);
	free(f->mats);
	free(f->uses);
	free(f->ev_seq);
	free(f->ev_pos);
	free(f->ev_ids);
	free(f->ev_set);
	free(f->order);
	free(f->hidden_out);
	free(f->head_x);
	free(f->head_y);
	free(f);
}

int gm_forward_n_ctx(const gm_forward *f)
{
	return f->n_ctx;
}

enum gm_kv_type gm_forward_kv_type(const gm_forward *f)
{
	return gm_kv_type_of(f->kv);
}

int gm_forward_pos(const gm_forward *f)
{
	return gm_kv_seq_len(f->kv, f->seq);
}

void gm_forward_truncate(gm_forward *f, int pos)
{
	gm_kv_seq_truncate(f->kv, f->seq, pos < 0 ? 0 : pos);
}

const float *gm_forward_last_hidden(const gm_forward *f)
{
	return f->hidden_out;
}

static int check_ids(const gm_forward *f, const int32_t *ids, int n, gm_error *err)
{
	int i;

	for (i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= f->vocab)
			return gm_error_set(err, GM_EINVAL, "token id %ld at index %d is out of range (vocabulary of %lld)",
					    (long)ids[i], i, (long long)f->vocab);
	return 0;
}

int gm_forward_eval(gm_forward *f, const int32_t *ids, int n, float *logits, int all_logits, gm_error *err)
{
	gm_forward_seq s = { f->seq, ids, n, 0, all_logits ? NULL : logits };
	const struct aset *set = f->single;
	int pos = gm_forward_pos(f), ret;

	if (n < 1)
		return gm_error_set(err, GM_EINVAL, "no tokens to evaluate");
	if (n > f->n_ctx - pos)
		return gm_error_set(err, GM_EINVAL,
				    "context overflow: %d tokens do not fit after %d cached ones (context length %d)",
				    n, pos, f->n_ctx);
	if ((ret = check_ids(f, ids, n, err)))
		return ret;
	eval_step(f, f->kv, &s, &set, 1, all_logits ? logits : NULL);
	return 0;
}

int gm_forward_eval_batch(gm_forward *f, gm_kv *kv, const gm_forward_seq *seqs, int n_seqs, gm_error *err)
{
	const struct aset **sets;
	int64_t need = 0;
	int i, k, ret;

	if (n_seqs < 0 || (n_seqs && !seqs))
		return gm_error_set(err, GM_EINVAL, "invalid sequence count %d", n_seqs);
	if (!n_seqs)
		return 0;
	if (kv->m != f->m && (kv->n_layers != f->n_layers || kv->n_kv != f->n_kv || kv->head_dim != f->head_dim))
		return gm_error_set(err, GM_EINVAL, "the KV pool was made for another model");
	for (i = 0; i < n_seqs; i++) {
		const gm_forward_seq *s = &seqs[i];

		if (!gm_kv_seq_valid(kv, s->seq))
			return gm_error_set(err, GM_EINVAL, "batch entry %d: no KV sequence %d", i, s->seq);
		if (s->n < 1 || !s->ids)
			return gm_error_set(err, GM_EINVAL, "batch entry %d: no tokens to evaluate", i);
		if (s->adapters < 0 || (s->adapters > 0 && (s->adapters >= f->n_sets || !f->sets[s->adapters])))
			return gm_error_set(err, GM_EINVAL, "batch entry %d: no adapter set %d", i, s->adapters);
		if ((int64_t)kv->seqs[s->seq].len + s->n > INT32_MAX - GM_KV_BLOCK)
			return gm_error_set(err, GM_EINVAL, "batch entry %d: sequence too long", i);
		if ((ret = check_ids(f, s->ids, s->n, err)))
			return ret;
		for (k = 0; k < i; k++)
			if (seqs[k].seq == s->seq)
				return gm_error_set(err, GM_EINVAL, "KV sequence %d appears twice in one batch", s->seq);
		need += gm_kv_blocks_needed(kv, s->seq, s->n);
	}
	if (need > kv->n_free)
		return gm_error_set(err, GM_ENOMEM, "the KV cache is full: %lld more blocks needed, %lld free of %lld",
				    (long long)need, (long long)kv->n_free, (long long)kv->n_blocks);
	sets = gm_xmalloc((size_t)n_seqs * sizeof(*sets));
	for (i = 0; i < n_seqs; i++)
		sets[i] = seqs[i].adapters ? f->sets[seqs[i].adapters] : NULL;
	eval_step(f, kv, seqs, sets, n_seqs, NULL);
	free(sets);
	return 0;
}
