/*
 * ops-cpu.c - the CPU backend of the op layer (see ops.h), over the
 * kernels (kernels.h, kernels-kv.h) and a thread pool.
 *
 * Work is split over rows of the output (weights: each thread a range of
 * W's rows for all tokens; row-wise ops: ranges of tokens; attention: one
 * (row, kv head) or one head per task), so every output element is
 * computed by one thread, in an order that does not depend on the split.
 *
 * Linear layers.  The weights of one call share the input: it is packed
 * once (gm_matmul_pack_all) and one parallel loop runs over the rows of
 * all the weights and of the deltas' A matrices (u = x A^T over the
 * delta's rows, packed separately when they are not all of the call's);
 * a third loop adds the sparse deltas, a fourth (s u) B^T, a tile of
 * tokens by GM_LORA_TILE rows at a time into a per-thread tile that stays
 * in cache.
 */
#include "ops/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "formats/quant.h"
#include "cpu/kernels-kv.h"
#include "cpu/kernels.h"
#include "ops/kv-internal.h"
#include "cpu/threadpool.h"

#define GM_LORA_TILE 64 /* rows of u B^T computed at a time */

struct gm_ops {
	gm_threadpool *pool;
	int nth;
	enum gm_matmul_mode mode; /* of the products of 16-bit weights */
	/* per thread, grown as calls need */
	float **panel;          /* gm_matmul panels */
	size_t panel_len;
	float **tile;           /* [GM_MATMUL_TB, GM_LORA_TILE] */
	float **scores;         /* attention over the pool: [min(group, GM_ATTN_MAXQ), T] */
	size_t scores_len;
	float **axt, **amat, **aw; /* attention over a sequence: packed operand, [T, T], [hd, T] */
	size_t axt_len, amat_len, aw_len;
	/* one call's scratch, single-threaded parts */
	float *xt;              /* the packed input */
	size_t xt_len;
	float *scratch;         /* the deltas' packed inputs and u */
	size_t scratch_len;
	float *bwd;             /* gm_op_linear_backward */
	size_t bwd_len;
	struct lin_mat *mats;
	struct lora_use *uses;
	int mats_cap;
	float *nw;              /* norm weights as f32 (backward) */
	size_t nw_len;
	int64_t *groups;        /* attention over the pool: row groups */
	size_t groups_len;
	/* block-quantized weights */
	void *qx[2];            /* the call's activations quantized: [0] 32-blocks, [1] Q8_K */
	size_t qx_len[2];
	float *dq;              /* gm_op_linear_backward: a tile of W dequantized */
	size_t dq_len;
	float **dqp;            /* per thread: a panel of a block-type W dequantized (training's products) */
	size_t dqp_len;
};

static void grow(float **p, size_t *len, size_t need)
{
	if (need <= *len)
		return;
	free(*p);
	*p = gm_falloc(need);
	*len = need;
}

/* Per-thread buffers of at least need floats. */
static void grow_each(gm_ops *o, float **p, size_t *len, size_t need)
{
	int i;

	if (need <= *len)
		return;
	need = need > *len + *len / 2 ? need : *len + *len / 2;
	for (i = 0; i < o->nth; i++) {
		free(p[i]);
		p[i] = gm_falloc(need);
	}
	*len = need;
}

static void panel_reserve(gm_ops *o, int64_t in)
{
	grow_each(o, o->panel, &o->panel_len, gm_matmul_panel_len(in));
}

int gm_ops_cpu_new(int n_threads, gm_ops **out, gm_error *err)
{
	gm_ops *o;
	int i, ret;

	*out = NULL;
	if (n_threads < 1 || n_threads > 1024)
		return gm_error_set(err, GM_EINVAL, "invalid thread count %d", n_threads);
	o = gm_xcalloc(1, sizeof(*o));
	if ((ret = gm_threadpool_new(n_threads, &o->pool, err))) {
		free(o);
		return ret;
	}
	o->nth = n_threads;
	gm_kernels_isa();
	o->panel = gm_xcalloc((size_t)n_threads, sizeof(float *));
	o->tile = gm_xcalloc((size_t)n_threads, sizeof(float *));
	o->scores = gm_xcalloc((size_t)n_threads, sizeof(float *));
	o->axt = gm_xcalloc((size_t)n_threads, sizeof(float *));
	o->amat = gm_xcalloc((size_t)n_threads, sizeof(float *));
	o->aw = gm_xcalloc((size_t)n_threads, sizeof(float *));
	o->dqp = gm_xcalloc((size_t)n_threads, sizeof(float *));
	for (i = 0; i < n_threads; i++)
		o->tile[i] = gm_falloc((size_t)GM_MATMUL_TB * GM_LORA_TILE);
	*out = o;
	return 0;
}

void gm_ops_free(gm_ops *o)
{
	int i;

	if (!o)
		return;
	gm_threadpool_free(o->pool);
	for (i = 0; i < o->nth; i++) {
		free(o->panel[i]);
		free(o->tile[i]);
		free(o->scores[i]);
		free(o->axt[i]);
		free(o->amat[i]);
		free(o->aw[i]);
		free(o->dqp[i]);
	}
	free(o->dqp);
	free(o->panel);
	free(o->tile);
	free(o->scores);
	free(o->axt);
	free(o->amat);
	free(o->aw);
	free(o->xt);
	free(o->scratch);
	free(o->bwd);
	free(o->mats);
	free(o->uses);
	free(o->nw);
	free(o->groups);
	free(o->qx[0]);
	free(o->qx[1]);
	free(o->dq);
	free(o);
}

int gm_ops_n_threads(const gm_ops *o)
{
	return o->nth;
}

void gm_ops_set_matmul_mode(gm_ops *o, enum gm_matmul_mode mode)
{
	o->mode = mode;
}

/* ---------------------------------------------------------------- linear */

/*
 * One parallel loop over the rows of several weights.  Matrix i computes
 *   Y_i[t, r] = sum_k W_i[r, k] X_i[t, k]     (W_i: [rows_i, in_i], X_i: [nb_i, in_i])
 * into y_i, or, when add is set, adds it to y_i (F32 weights, by tiles).
 */
struct lin_mat {
	const void *w;           /* [rows, ldw] */
	enum gm_dtype wt;
	int64_t rows, ldw;
	float *y;                /* [nb, *], row stride ldy */
	int64_t ldy;
	const float *x;          /* [nb, in], row stride ldx (matvec) */
	int64_t ldx, in;
	const float *xt;         /* x packed (matmul) */
	int64_t nb;
	int matmul;              /* else matvec per token */
	int64_t dot_max;         /* gm_matmul's (and gm_pack's) for this call's row form */
	int64_t qdot_max;        /* gm_qmatmul's */
	int add;                 /* y += the product */
	const void *xq;          /* block types: the activations quantized (gm_qact_quantize) */
	int dqpanel;             /* block types: through panels of W dequantized to f32 (gm_matmul on xt) */
	int64_t off;             /* rows of the matrices before this one in the loop */
};

/* A delta's LoRA in one call: u = x A^T, then y += (s u) B^T. */
struct lora_use {
	const gm_op_lora *l;
	float *y;                /* the delta's first row of the output */
	int64_t ldy, nb, rows;   /* rows: the adapted weight's out */
	float *u, *ut;           /* [nb, rank], and s u packed */
};

struct lin_job {
	gm_ops *o;
	enum gm_op_rows form;
	int n_mats;
	struct lin_mat *m;
	int64_t rows;
};

/* y[t, r] += sum_k W[r, k] X[t, k] for rows [r0, r1) of an F32 weight, by tiles. */
static void lin_add_rows(const struct lin_job *j, const struct lin_mat *mt, int64_t r0, int64_t r1, int thread)
{
	float *tile = j->o->tile[thread];
	const float *w = mt->w;
	int64_t ldw = mt->ldw, a, n, t0, t, r, step = mt->matmul ? GM_MATMUL_TB : 1;

	for (a = r0; a < r1; a += GM_LORA_TILE) {
		n = gm_imin64(GM_LORA_TILE, r1 - a);
		for (t0 = 0; t0 < mt->nb; t0 += step) {
			int64_t nt = gm_imin64(step, mt->nb - t0);

			if (mt->matmul)
				gm_matmul(tile, GM_LORA_TILE, mt->xt + t0 * mt->in, nt, w + a * ldw, GM_DTYPE_F32, ldw,
					  mt->in, 0, n, j->o->panel[thread], mt->dot_max, GM_MATMUL_PRECISE);
			else
				gm_matvec(tile, w + a * ldw, GM_DTYPE_F32, ldw, mt->x + t0 * mt->ldx, mt->in, 0, n,
					  GM_MATMUL_PRECISE);
			for (t = 0; t < nt; t++)
				for (r = 0; r < n; r++)
					mt->y[(t0 + t) * mt->ldy + a + r] += tile[t * GM_LORA_TILE + r];
		}
	}
}

/*
 * Rows [r0, r1) of a block-type W through f32: a panel of rows dequantized
 * (gm_quant_dequantize, exactly the model's values) and multiplied as an
 * F32 weight, so each Y element is what the same call gives on W
 * dequantized to F32.
 */
static void lin_dq_rows(const struct lin_job *j, const struct lin_mat *mt, int64_t r0, int64_t r1, int thread)
{
	size_t rb = gm_quant_row_bytes(mt->wt, mt->in);
	int64_t P = (int64_t)(j->o->dqp_len / (size_t)mt->in), a, r;
	float *buf = j->o->dqp[thread];

	for (a = r0; a < r1; a += P) {
		int64_t n = gm_imin64(P, r1 - a);

		for (r = 0; r < n; r++)
			gm_qdequantize(mt->wt, (const char *)mt->w + (size_t)(a + r) * rb, buf + r * mt->in, mt->in);
		gm_matmul(mt->y + a, mt->ldy, mt->xt, mt->nb, buf, GM_DTYPE_F32, mt->in, mt->in, 0, n,
			  j->o->panel[thread], mt->dot_max, GM_MATMUL_PRECISE);
	}
}

static void lin_rows(void *ctx, int64_t b, int64_t e, int thread)
{
	struct lin_job *j = ctx;
	int i;

	for (i = 0; i < j->n_mats; i++) {
		const struct lin_mat *mt = &j->m[i];
		int64_t r0 = gm_imax64(b, mt->off) - mt->off, r1 = gm_imin64(e, mt->off + mt->rows) - mt->off, t;

		if (r0 >= r1)
			continue;
		if (mt->dqpanel)
			lin_dq_rows(j, mt, r0, r1, thread);
		else if (mt->xq)
			gm_qmatmul(mt->y, mt->ldy, mt->xq, mt->nb, mt->w, mt->wt, mt->in, r0, r1, mt->qdot_max);
		else if (mt->add)
			lin_add_rows(j, mt, r0, r1, thread);
		else if (mt->matmul)
			gm_matmul(mt->y, mt->ldy, mt->xt, mt->nb, mt->w, mt->wt, mt->ldw, mt->in, r0, r1,
				  j->o->panel[thread], mt->dot_max, j->o->mode);
		else
			for (t = 0; t < mt->nb; t++)
				gm_matvec(mt->y + t * mt->ldy, mt->w, mt->wt, mt->ldw, mt->x + t * mt->ldx, mt->in, r0, r1,
					  j->o->mode);
	}
}

/* gm_matmul's dot_max (small: the size choice's, GM_MATMUL_SMALL or GM_QMATMUL_SMALL) for a row form. */
static int64_t form_dot_max(enum gm_op_rows form, int64_t small)
{
	return form == GM_OP_ROWS_DOT ? INT64_MAX : form == GM_OP_ROWS_BLOCK ? 0 : small;
}

/* Whether n rows of a form go through the packed input (gm_matmul), else gm_matvec row by row. */
static int form_matmul(enum gm_op_rows form, int64_t n)
{
	return form == GM_OP_ROWS_BY_SIZE || form == GM_OP_ROWS_DOT ? n > 1 : n > 0;
}

static void lin_push(struct lin_job *j, const void *w, enum gm_dtype wt, int64_t rows, int64_t ldw, float *y,
		     int64_t ldy, const float *x, int64_t ldx, int64_t in, const float *xt, int64_t nb, int matmul,
		     int add)
{
	struct lin_mat *mt = &j->m[j->n_mats++];

	mt->w = w;
	mt->wt = wt;
	mt->rows = rows;
	mt->ldw = ldw;
	mt->y = y;
	mt->ldy = ldy;
	mt->x = x;
	mt->ldx = ldx;
	mt->in = in;
	mt->xt = xt;
	mt->nb = nb;
	mt->matmul = matmul;
	mt->dot_max = form_dot_max(j->form, GM_MATMUL_SMALL);
	mt->qdot_max = form_dot_max(j->form, GM_QMATMUL_SMALL);
	mt->add = add;
	mt->xq = NULL;
	mt->dqpanel = 0;
	mt->off = j->rows;
	j->rows += rows;
}

/* Sparse deltas of one call: y_i[t, r] += sum_k vals[k] x[t, cols[k]] (SpMM: each row's entries read once). */
struct sp_job {
	const gm_op_sparse *sp;
	float *y;
	int64_t ldy;
	const float *x;
	int64_t ldx, nb;
};

static void sp_rows(void *ctx, int64_t b, int64_t e, int thread)
{
	const struct sp_job *j = ctx;
	const gm_op_sparse *sp = j->sp;
	int64_t r, k, t;

	(void)thread;
	for (r = b; r < e; r++) {
		for (t = 0; t < j->nb; t++) {
			const float *x = j->x + t * j->ldx;
			float acc = 0;

			for (k = sp->rowp[r]; k < sp->rowp[r + 1]; k++)
				acc += sp->vals[k] * x[sp->cols[k]];
			j->y[t * j->ldy + r] += acc;
		}
	}
}

static void mats_reserve(gm_ops *o, int n)
{
	if (n <= o->mats_cap)
		return;
	o->mats_cap = n;
	o->mats = gm_xrealloc(o->mats, (size_t)n * sizeof(*o->mats));
	o->uses = gm_xrealloc(o->uses, (size_t)n * sizeof(*o->uses));
}

/* Rows per task of a loop over W's rows: a panel's worth, but enough tasks for every thread. */
static int64_t lin_grain(const gm_ops *o, int64_t rows, int64_t in, int matmul)
{
	int64_t grain;

	if (!matmul)
		return 16;
	grain = (int64_t)(gm_matmul_panel_len(in) / (size_t)in);
	if (rows / grain < 2 * o->nth)
		grain = gm_imax64(GM_MATMUL_TR, (rows / (2 * o->nth)) / GM_MATMUL_TR * GM_MATMUL_TR);
	return grain;
}

/* The activations of block-type weights: rows of X quantized for weights of wt's kind (gm_qact_quantize). */
struct qx_job {
	void *xq;
	const float *x;
	int64_t ldx, in;
	enum gm_dtype wt;
	size_t len;
};

static void qx_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct qx_job *j = ctx;
	int64_t t;

	(void)th;
	for (t = b; t < e; t++)
		gm_qact_quantize((char *)j->xq + (size_t)t * j->len, j->wt, j->x + t * j->ldx, j->in);
}

static void quantize_x(gm_ops *o, const float *x, int64_t ldx, int64_t n, int64_t in, enum gm_dtype wt)
{
	int k = gm_qact_kind(wt);
	struct qx_job j = { NULL, x, ldx, in, wt, gm_qact_len(wt, in) };
	size_t need = j.len * (size_t)n;

	if (need > o->qx_len[k]) {
		free(o->qx[k]);
		o->qx[k] = gm_xmalloc(need);
		o->qx_len[k] = need;
	}
	j.xq = o->qx[k];
	gm_threadpool_for(o->pool, n, 4, qx_run, &j);
}

void gm_op_linear(gm_ops *o, const float *x, int64_t ldx, int64_t n, const gm_op_linear_out *outs, int n_outs,
		  enum gm_op_rows form)
{
	struct lin_job j;
	int64_t in = outs[0].w->shape[1], dn, rmax, last_r0 = -1, last_r1 = -1;
	const float *last_xt = NULL;
	size_t need = 0, at = 0;
	int i, d, n_lora = 0, n_mats = n_outs, matmul = form_matmul(form, n), qx_ready[2] = { 0, 0 }, any_q = 0;
	int need_pack = 0;
	int64_t dot_max = form_dot_max(form, GM_MATMUL_SMALL);
	/* block-type W: training multiplies through W dequantized, inference with integer dots */
	int dqpanel = form == GM_OP_ROWS_TRAIN && n > 0;

	/* scratch: each LoRA delta's u and s u packed, and its rows' packed input unless they are all */
	for (i = 0; i < n_outs; i++) {
		for (d = 0; d < outs[i].n_deltas; d++) {
			const gm_op_delta *dl = &outs[i].deltas[d];

			if (!dl->lora || !dl->lora->rank)
				continue;
			dn = dl->r1 - dl->r0;
			n_mats++;
			need += gm_fround((size_t)(dn * dl->lora->rank)) + gm_fround(gm_matmul_xt_len(dn, dl->lora->rank));
			if (dn != n)
				need += gm_fround(gm_matmul_xt_len(dn, in));
		}
	}
	grow(&o->scratch, &o->scratch_len, need);
	mats_reserve(o, n_mats);
	panel_reserve(o, in);

	memset(&j, 0, sizeof(j));
	j.o = o;
	j.form = form;
	j.m = o->mats;
	for (i = 0; i < n_outs; i++)
		lin_push(&j, outs[i].w->data, outs[i].w->dtype, outs[i].w->shape[0], outs[i].w->shape[1], outs[i].y,
			 outs[i].ldy, x, ldx, in, o->xt, n, matmul, 0);
	/* X packed for the float weights and the LoRA A over all rows (block-type weights read X quantized) */
	for (i = 0; i < n_outs; i++) {
		need_pack |= !gm_dtype_is_block(outs[i].w->dtype) || dqpanel;
		if (dqpanel && gm_dtype_is_block(outs[i].w->dtype))
			grow_each(o, o->dqp, &o->dqp_len, gm_matmul_panel_len(in));
		for (d = 0; d < outs[i].n_deltas; d++)
			need_pack |= outs[i].deltas[d].lora && outs[i].deltas[d].lora->rank &&
				     outs[i].deltas[d].r1 - outs[i].deltas[d].r0 == n;
	}
	if (matmul && need_pack) {
		grow(&o->xt, &o->xt_len, gm_matmul_xt_len(n, in));
		for (i = 0; i < n_outs; i++)
			j.m[i].xt = o->xt;
		gm_matmul_pack_all(o->pool, o->xt, x, ldx, n, in, dot_max, o->mode);
	}
	/* the deltas' A: u = x A^T over their rows */
	for (i = 0; i < n_outs; i++) {
		for (d = 0; d < outs[i].n_deltas; d++) {
			const gm_op_delta *dl = &outs[i].deltas[d];
			const float *rx = x + dl->r0 * ldx, *rxt = o->xt;
			struct lora_use *lu = &o->uses[n_lora];
			int rmm;

			if (!dl->lora || !dl->lora->rank)
				continue;
			dn = dl->r1 - dl->r0;
			rmm = form_matmul(form, dn);
			if (dn != n && dl->r0 == last_r0 && dl->r1 == last_r1) {
				rxt = last_xt; /* the same rows as the previous delta's: packed already */
			} else if (dn != n) {
				float *p = o->scratch + at;

				at += gm_fround(gm_matmul_xt_len(dn, in));
				if (rmm)
					gm_matmul_pack_all(o->pool, p, rx, ldx, dn, in, dot_max, GM_MATMUL_PRECISE);
				rxt = last_xt = p;
				last_r0 = dl->r0;
				last_r1 = dl->r1;
			}
			lu->l = dl->lora;
			lu->y = outs[i].y + dl->r0 * outs[i].ldy;
			lu->ldy = outs[i].ldy;
			lu->nb = dn;
			lu->rows = outs[i].w->shape[0];
			lu->u = dl->u ? dl->u : o->scratch + at;
			at += gm_fround((size_t)(dn * dl->lora->rank));
			lu->ut = o->scratch + at;
			at += gm_fround(gm_matmul_xt_len(dn, dl->lora->rank));
			lin_push(&j, dl->lora->a, GM_DTYPE_F32, dl->lora->rank, in, lu->u, dl->lora->rank, rx, ldx, in, rxt,
				 dn, rmm, 0);
			n_lora++;
		}
	}
	/* block-type weights: the activations quantized once per kind, shared by the weights of that kind */
	for (i = 0; i < n_outs; i++) {
		enum gm_dtype wt = outs[i].w->dtype;

		if (!gm_dtype_is_block(wt))
			continue;
		if (dqpanel) {
			j.m[i].dqpanel = 1;
			continue;
		}
		if (!qx_ready[gm_qact_kind(wt)]) {
			quantize_x(o, x, ldx, n, in, wt);
			qx_ready[gm_qact_kind(wt)] = 1;
		}
		j.m[i].xq = o->qx[gm_qact_kind(wt)];
		any_q = 1;
	}
	gm_threadpool_for(o->pool, j.rows, lin_grain(o, j.rows, in, matmul && (!any_q || dqpanel)), lin_rows, &j);

	for (i = 0; i < n_outs; i++) {
		for (d = 0; d < outs[i].n_deltas; d++) {
			const gm_op_delta *dl = &outs[i].deltas[d];
			struct sp_job sj;

			if (!dl->sparse || !dl->sparse->nnz)
				continue;
			sj.sp = dl->sparse;
			sj.y = outs[i].y + dl->r0 * outs[i].ldy;
			sj.ldy = outs[i].ldy;
			sj.x = x + dl->r0 * ldx;
			sj.ldx = ldx;
			sj.nb = dl->r1 - dl->r0;
			gm_threadpool_for(o->pool, outs[i].w->shape[0], 16, sp_rows, &sj);
		}
	}
	if (!n_lora)
		return;

	/* y += (s u) B^T over each delta's rows */
	rmax = 0;
	memset(&j, 0, sizeof(j));
	j.o = o;
	j.form = form;
	j.m = o->mats;
	for (i = 0; i < n_lora; i++) {
		struct lora_use *lu = &o->uses[i];
		int64_t r = lu->l->rank, k, len;
		int rmm = form_matmul(form, lu->nb);
		const float *src = lu->u;

		if (rmm) {
			gm_matmul_pack(lu->ut, lu->u, r, lu->nb, r, 0, (lu->nb + GM_MATMUL_TB - 1) / GM_MATMUL_TB,
				       dot_max, GM_MATMUL_PRECISE);
			if (lu->l->scale != 1.0f)
				for (k = 0, len = (int64_t)gm_matmul_xt_len(lu->nb, r); k < len; k++)
					lu->ut[k] *= lu->l->scale;
		} else if (lu->l->scale != 1.0f) {
			/* the matvec path reads x rows: s u in ut, unpacked */
			for (k = 0; k < lu->nb * r; k++)
				lu->ut[k] = lu->l->scale * lu->u[k];
			src = lu->ut;
		}
		lin_push(&j, lu->l->b, GM_DTYPE_F32, lu->rows, r, lu->y, lu->ldy, src, r, r, lu->ut, lu->nb, rmm, 1);
		rmax = gm_imax64(rmax, r);
	}
	panel_reserve(o, rmax);
	gm_threadpool_for(o->pool, j.rows, 32, lin_rows, &j);
}

/* ---- backward */

struct tn_job {
	float *c;
	const float *a, *b;
	int64_t ldc, lda, ldb, K, M, N;
	int by_cols;
};

static void tn_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct tn_job *j = ctx;

	(void)th;
	if (j->by_cols)
		gm_matmul_tn(j->c, j->ldc, j->a, j->lda, j->b, j->ldb, j->K, 0, j->M, b, e);
	else
		gm_matmul_tn(j->c, j->ldc, j->a, j->lda, j->b, j->ldb, j->K, b, e, 0, j->N);
}

/* C += A^T B (gm_matmul_tn), split over the rows of C or, when they are few, its columns. */
static void matmul_tn(gm_ops *o, float *c, int64_t ldc, const float *a, int64_t lda, const float *b, int64_t ldb,
		      int64_t K, int64_t M, int64_t N)
{
	struct tn_job j = { c, a, b, ldc, lda, ldb, K, M, N, M < 8 * o->nth };

	if (j.by_cols)
		gm_threadpool_for(o->pool, N, 64, tn_run, &j);
	else
		gm_threadpool_for(o->pool, M, 16, tn_run, &j);
}

struct mm_job {
	gm_ops *o;
	float *y;
	int64_t ldy, n, ldw, in;
	const float *xt;
	const void *w;
	enum gm_dtype wt;
};

static void mm_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct mm_job *j = ctx;

	gm_matmul(j->y, j->ldy, j->xt, j->n, j->w, j->wt, j->ldw, j->in, b, e, j->o->panel[th], GM_MATMUL_SMALL,
		  j->o->mode);
}

/* Y[s, r] = sum_k W[r, k] X[s, k] for s < n, r < rows; W: [rows, in] of type wt, X packed in xt. */
static void mm(gm_ops *o, float *y, int64_t ldy, const float *xt, int64_t n, const void *w, enum gm_dtype wt,
	       int64_t rows, int64_t in)
{
	struct mm_job j = { o, y, ldy, n, in, in, xt, w, wt };

	panel_reserve(o, in);
	gm_threadpool_for(o->pool, rows, lin_grain(o, rows, in, 1), mm_run, &j);
}

static void add_to(float *y, const float *x, int64_t n)
{
	int64_t i;

	for (i = 0; i < n; i++)
		y[i] += x[i];
}

/* Rows a0 + [b, e) of a block-type W, dequantized into a tile (row a0 first). */
struct dq_job {
	float *tile;
	const gm_tensor *w;
	int64_t a0;
};

static void dq_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct dq_job *j = ctx;
	int64_t in = j->w->shape[1], r;
	size_t rb = gm_quant_row_bytes(j->w->dtype, in);

	(void)th;
	for (r = b; r < e; r++)
		gm_qdequantize(j->w->dtype, (const char *)j->w->data + (size_t)(j->a0 + r) * rb, j->tile + r * in, in);
}

#define GM_DQ_ROWS 128 /* rows of a block-type W dequantized at a time by the backward */

/*
 * dX (=, or +=) dY W for a block-type W [out, in] (blocks run along in, so
 * W is not transposed): GM_DQ_ROWS rows of W at a time are dequantized
 * (never the whole matrix) and dX += dY[:, rows] W[rows, :] added, as C +=
 * A^T B with A = (dY^T)[rows] and B the tile; each dX element sums the
 * tiles in order, whatever the threads.
 */
static void linear_backward_q(gm_ops *o, const gm_tensor *w, const float *dy, int64_t n, float *dx, int add,
			      float *dyt)
{
	int64_t out = w->shape[0], in = w->shape[1], a, t, r;
	struct dq_job dj = { NULL, w, 0 };

	grow(&o->dq, &o->dq_len, (size_t)(GM_DQ_ROWS * in));
	dj.tile = o->dq;
	for (r = 0; r < out; r++)
		for (t = 0; t < n; t++)
			dyt[r * n + t] = dy[t * out + r];
	if (!add)
		memset(dx, 0, (size_t)(n * in) * sizeof(float));
	for (a = 0; a < out; a += GM_DQ_ROWS) {
		int64_t rows = gm_imin64(GM_DQ_ROWS, out - a);

		dj.a0 = a;
		gm_threadpool_for(o->pool, rows, 8, dq_run, &dj);
		matmul_tn(o, dx, in, dyt + a * n, n, o->dq, in, rows, n, in);
	}
}

void gm_op_linear_backward(gm_ops *o, const gm_tensor *wt, const float *dy, int64_t n, float *dx, int add,
			   const gm_op_lora *lora, const float *x, const float *u, float *ga, float *gb)
{
	int blk = gm_dtype_is_block(wt->dtype);
	int64_t in = blk ? wt->shape[1] : wt->shape[0], out = blk ? wt->shape[0] : wt->shape[1];
	int64_t r = lora ? lora->rank : 0, s;
	size_t l_tmp = gm_fround((size_t)(n * in)), l_lt = gm_fround((size_t)(n * gm_imax64(r, 1)));
	size_t l_xt2 = gm_fround(gm_matmul_xt_len(n, gm_imax64(r, 1))), l_bt = gm_fround((size_t)(gm_imax64(in, out) * gm_imax64(r, 1)));
	float *tmp, *lt, *gu, *xt2, *bt;

	if (blk)
		l_tmp = gm_imax64((int64_t)l_tmp, (int64_t)gm_fround((size_t)(n * out)));
	grow(&o->bwd, &o->bwd_len, l_tmp + 2 * l_lt + l_xt2 + l_bt);
	tmp = o->bwd;
	lt = tmp + l_tmp;
	gu = lt + l_lt;
	xt2 = gu + l_lt;
	bt = xt2 + l_xt2;
	grow(&o->xt, &o->xt_len, gm_matmul_xt_len(n, out));
	gm_matmul_pack_all(o->pool, o->xt, dy, out, n, out, GM_MATMUL_SMALL, o->mode);
	/* dX = dY W, with W^T [in, out] as the weight */
	if (blk)
		linear_backward_q(o, wt, dy, n, dx, add, tmp);
	else
		mm(o, add ? tmp : dx, in, o->xt, n, wt->data, wt->dtype, in, out);
	if (add && !blk)
		add_to(dx, tmp, n * in);
	if (!r)
		return;
	/* dB += dY^T (s u) */
	for (s = 0; s < n * r; s++)
		lt[s] = lora->scale * u[s];
	matmul_tn(o, gb, r, dy, out, lt, r, n, out, r);
	/* gu = s dY B, with B^T [r, out] as the weight */
	gm_transpose(bt, lora->b, 4, out, r, 0, r);
	mm(o, gu, r, o->xt, n, bt, GM_DTYPE_F32, r, out);
	for (s = 0; s < n * r; s++)
		gu[s] *= lora->scale;
	/* dA += gu^T X */
	matmul_tn(o, ga, in, gu, r, x, in, n, r, in);
	/* dX += gu A, with A^T [in, r] as the weight */
	gm_transpose(bt, lora->a, 4, r, in, 0, in);
	gm_matmul_pack_all(o->pool, xt2, gu, r, n, r, GM_MATMUL_SMALL, o->mode);
	mm(o, tmp, in, xt2, n, bt, GM_DTYPE_F32, in, r);
	add_to(dx, tmp, n * in);
}

struct tr_job {
	void *dst;
	const void *src;
	size_t el;
	int64_t rows, cols;
};

static void tr_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct tr_job *j = ctx;

	(void)th;
	gm_transpose(j->dst, j->src, j->el, j->rows, j->cols, b, e);
}

void gm_op_transpose(gm_ops *o, void *dst, const gm_tensor *w)
{
	if (gm_dtype_is_block(w->dtype)) {
		memcpy(dst, w->data, w->nbytes); /* blocks run along rows: see ops.h */
		return;
	}

	struct tr_job j = { dst, w->data, w->dtype == GM_DTYPE_F32 ? 4 : 2, w->shape[0], w->shape[1] };

	gm_threadpool_for(o->pool, j.cols, 32, tr_run, &j);
}

/* ---------------------------------------------------------------- row-wise ops */

enum row_op { ROW_NORM, ROW_ADD_NORM, ROW_NORM_BWD, ROW_QK, ROW_QK_BWD, ROW_SILU, ROW_SILU_BWD, ROW_EMBED, ROW_ADD };

struct row_job {
	gm_ops *o;
	enum row_op op;
	float *out, *xo, *dx;
	const float *x, *d, *dy;
	const gm_tensor *w;
	const float *wf;           /* w as f32 (backward) */
	int64_t dim;
	float eps;
	int add;
	/* qk */
	const gm_op_qk *qk;
	float *q, *k, *v, *qo, *ko;
	const float *qn, *kn;      /* q_norm, k_norm as f32 (backward) */
	/* silu */
	float *g, *dup;
	const float *gc, *up;
	/* embed */
	const int32_t *ids;
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
		c = gm_imin64(256, n - i);
		gm_load_f32(tmp, (const char *)b->data + (size_t)i * esize, b->dtype, c);
		for (j = 0; j < c; j++)
			y[i + j] += tmp[j];
	}
}

/* dx (+)= backward of y = rmsnorm(x) * w for one row of n, given dy. */
static void rms_bwd(float *dx, int add, const float *dy, const float *x, const float *w, int64_t n, float eps)
{
	double ss = 0, dot = 0, r, c;
	int64_t i;

	for (i = 0; i < n; i++) {
		ss += (double)x[i] * x[i];
		dot += (double)dy[i] * w[i] * x[i];
	}
	r = 1.0 / sqrt(ss / (double)n + (double)eps);
	c = r * r * r * dot / (double)n;
	for (i = 0; i < n; i++) {
		float v = (float)(r * (double)(dy[i] * w[i]) - c * (double)x[i]);

		dx[i] = add ? dx[i] + v : v;
	}
}

static void rope_bwd(float *dv, const float *cs, const float *sn, int64_t d)
{
	int64_t j, half = d / 2;

	for (j = 0; j < half; j++) {
		float a = dv[j], b = dv[j + half];

		dv[j] = a * cs[j] + b * sn[j];
		dv[j + half] = b * cs[j] - a * sn[j];
	}
}

static void qk_row(const struct row_job *j, int64_t t)
{
	const gm_op_qk *p = j->qk;
	int64_t hd = p->hd, half = hd / 2, h, qd = p->nh * hd, kd = p->nkv * hd;
	float *q = j->q + t * qd, *k = j->k + t * kd, *qo = j->qo + t * qd, *ko = j->ko + t * kd;
	const float *cs = p->cs + t * half, *sn = p->sn + t * half;

	add_bias(q, p->q_bias, qd);
	add_bias(k, p->k_bias, kd);
	if (j->v)
		add_bias(j->v + t * kd, p->v_bias, kd);
	for (h = 0; h < p->nh; h++) {
		if (p->q_norm)
			gm_rmsnorm(qo + h * hd, q + h * hd, p->q_norm->data, p->q_norm->dtype, hd, p->eps);
		else if (qo != q)
			memcpy(qo + h * hd, q + h * hd, (size_t)hd * sizeof(float));
		gm_rope(qo + h * hd, cs, sn, hd);
	}
	for (h = 0; h < p->nkv; h++) {
		if (p->k_norm)
			gm_rmsnorm(ko + h * hd, k + h * hd, p->k_norm->data, p->k_norm->dtype, hd, p->eps);
		else if (ko != k)
			memcpy(ko + h * hd, k + h * hd, (size_t)hd * sizeof(float));
		gm_rope(ko + h * hd, cs, sn, hd);
	}
	if (p->kv) {
		const gm_kv *kv = p->kv;
		int64_t ps = p->pos[t];
		int32_t blk = kv->seqs[p->seq[t]].blocks[ps / GM_KV_BLOCK];

		for (h = 0; h < p->nkv; h++) {
			gm_kv_store_row(gm_kv_k_row(kv, blk, p->layer, h, ps % GM_KV_BLOCK), kv->dt, ko + h * hd, hd);
			gm_kv_store_row(gm_kv_v_row(kv, blk, p->layer, h, ps % GM_KV_BLOCK), kv->dt, j->v + t * kd + h * hd,
					hd);
		}
	}
}

static void qk_bwd_row(const struct row_job *j, int64_t t)
{
	const gm_op_qk *p = j->qk;
	int64_t hd = p->hd, half = hd / 2, h, qd = p->nh * hd, kd = p->nkv * hd;
	const float *cs = p->cs + t * half, *sn = p->sn + t * half;
	float tmp[1024];

	for (h = 0; h < p->nh; h++) {
		float *d = j->q + t * qd + h * hd;

		rope_bwd(d, cs, sn, hd);
		if (j->qn) {
			memcpy(tmp, d, (size_t)hd * sizeof(float));
			rms_bwd(d, 0, tmp, j->x + t * qd + h * hd, j->qn, hd, p->eps);
		}
	}
	for (h = 0; h < p->nkv; h++) {
		float *d = j->k + t * kd + h * hd;

		rope_bwd(d, cs, sn, hd);
		if (j->kn) {
			memcpy(tmp, d, (size_t)hd * sizeof(float));
			rms_bwd(d, 0, tmp, j->d + t * kd + h * hd, j->kn, hd, p->eps);
		}
	}
}

static void row_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct row_job *j = ctx;
	int64_t t, i, D = j->dim;

	(void)th;
	for (t = b; t < e; t++) {
		switch (j->op) {
		case ROW_ADD_NORM:
			for (i = 0; i < D; i++)
				j->xo[t * D + i] = j->x[t * D + i] + j->d[t * D + i];
			gm_rmsnorm(j->out + t * D, j->xo + t * D, j->w->data, j->w->dtype, D, j->eps);
			break;
		case ROW_NORM:
			gm_rmsnorm(j->out + t * D, j->x + t * D, j->w->data, j->w->dtype, D, j->eps);
			break;
		case ROW_NORM_BWD:
			rms_bwd(j->dx + t * D, j->add, j->dy + t * D, j->x + t * D, j->wf, D, j->eps);
			break;
		case ROW_QK:
			qk_row(j, t);
			break;
		case ROW_QK_BWD:
			qk_bwd_row(j, t);
			break;
		case ROW_SILU:
			if (j->out != j->gc)
				memcpy(j->out + t * D, j->gc + t * D, (size_t)D * sizeof(float));
			gm_silu_mul(j->out + t * D, j->up + t * D, D);
			break;
		case ROW_SILU_BWD:
			/* g holds d(act) on entry: dup = da silu(g), dg = da up silu'(g) */
			for (i = t * D; i < (t + 1) * D; i++) {
				float gv = j->gc[i], sg = 1.0f / (1.0f + expf(-gv)), da = j->g[i];

				j->dup[i] = da * gv * sg;
				j->g[i] = da * j->up[i] * sg * (1.0f + gv * (1.0f - sg));
			}
			break;
		case ROW_EMBED:
			if (gm_dtype_is_block(j->w->dtype)) {
				size_t rb = gm_quant_row_bytes(j->w->dtype, D);

				gm_qdequantize(j->w->dtype, (const char *)j->w->data + (size_t)j->ids[t] * rb,
						    j->out + t * D, D);
				break;
			}
			gm_load_f32(j->out + t * D, (const char *)j->w->data + (size_t)j->ids[t] * (size_t)D *
					    (j->w->dtype == GM_DTYPE_F32 ? 4 : 2), j->w->dtype, D);
			break;
		case ROW_ADD:
			for (i = t * D; i < (t + 1) * D; i++)
				j->out[i] = j->x[i] + j->d[i];
			break;
		}
	}
}

static void rows(gm_ops *o, struct row_job *j, int64_t n, int64_t grain)
{
	j->o = o;
	gm_threadpool_for(o->pool, n, grain, row_run, j);
}

/* w (or ones when NULL) as f32, in o->nw at offset at; the pointer. */
static const float *norm_f32(gm_ops *o, const gm_tensor *w, int64_t n, size_t at)
{
	int64_t i;

	if (w)
		gm_load_f32(o->nw + at, w->data, w->dtype, n);
	else
		for (i = 0; i < n; i++)
			o->nw[at + (size_t)i] = 1.0f;
	return o->nw + at;
}

void gm_op_rmsnorm(gm_ops *o, float *out, const float *x, const gm_tensor *w, int64_t n, int64_t dim, float eps)
{
	struct row_job j = { .op = ROW_NORM, .out = out, .x = x, .w = w, .dim = dim, .eps = eps };

	rows(o, &j, n, 1);
}

void gm_op_add_rmsnorm(gm_ops *o, float *xo, const float *x, const float *d, float *out, const gm_tensor *w,
		       int64_t n, int64_t dim, float eps)
{
	struct row_job j = { .op = ROW_ADD_NORM, .out = out, .xo = xo, .x = x, .d = d, .w = w, .dim = dim, .eps = eps };

	rows(o, &j, n, 1);
}

void gm_op_rmsnorm_backward(gm_ops *o, float *dx, int add, const float *dy, const float *x, const gm_tensor *w,
			    int64_t n, int64_t dim, float eps)
{
	struct row_job j = { .op = ROW_NORM_BWD, .dx = dx, .add = add, .dy = dy, .x = x, .dim = dim, .eps = eps };

	grow(&o->nw, &o->nw_len, (size_t)dim);
	j.wf = norm_f32(o, w, dim, 0);
	rows(o, &j, n, 8);
}

void gm_op_add(gm_ops *o, float *y, const float *a, const float *b, int64_t n)
{
	/* rows of 4096 elements, whatever the shape */
	struct row_job j = { .op = ROW_ADD, .out = y, .x = a, .d = b, .dim = 4096 };
	int64_t full = n / 4096 * 4096, i;

	rows(o, &j, n / 4096, 4);
	for (i = full; i < n; i++)
		y[i] = a[i] + b[i];
}

void gm_op_qk_norm_rope(gm_ops *o, const gm_op_qk *p, float *q, float *k, float *v, float *qo, float *ko,
			int64_t n)
{
	struct row_job j = { .op = ROW_QK, .qk = p, .q = q, .k = k, .v = v, .qo = qo, .ko = ko };

	rows(o, &j, n, 1);
}

void gm_op_qk_norm_rope_backward(gm_ops *o, const gm_op_qk *p, float *dq, float *dk, const float *q,
				 const float *k, int64_t n)
{
	struct row_job j = { .op = ROW_QK_BWD, .qk = p, .q = dq, .k = dk, .x = q, .d = k };

	if (p->hd > 1024)
		return; /* gm_train_new refuses such heads; the row buffer is on the stack */
	grow(&o->nw, &o->nw_len, (size_t)(2 * p->hd));
	j.qn = p->q_norm ? norm_f32(o, p->q_norm, p->hd, 0) : NULL;
	j.kn = p->k_norm ? norm_f32(o, p->k_norm, p->hd, (size_t)p->hd) : NULL;
	rows(o, &j, n, 8);
}

void gm_op_silu_mul(gm_ops *o, float *out, const float *g, const float *up, int64_t n, int64_t dim)
{
	struct row_job j = { .op = ROW_SILU, .out = out, .gc = g, .up = up, .dim = dim };

	rows(o, &j, n, 1);
}

void gm_op_silu_mul_backward(gm_ops *o, float *dg, float *dup, const float *g, const float *up, int64_t n,
			     int64_t dim)
{
	struct row_job j = { .op = ROW_SILU_BWD, .g = dg, .dup = dup, .gc = g, .up = up, .dim = dim };

	rows(o, &j, n, 8);
}

void gm_op_embed(gm_ops *o, float *x, const gm_tensor *emb, const int32_t *ids, int64_t n)
{
	struct row_job j = { .op = ROW_EMBED, .out = x, .w = emb, .ids = ids, .dim = emb->shape[1] };

	rows(o, &j, n, 4);
}

/* ---- cross-entropy */

struct ce_job {
	float *z;
	int64_t V;
	const int32_t *target;
	double *loss;
	float inv_norm;
};

static void ce_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct ce_job *j = ctx;
	int64_t V = j->V, r, v;

	(void)th;
	for (r = b; r < e; r++) {
		float *z = j->z + r * V, zt = z[j->target[r]], mx = z[0];
		int64_t am = 0;

		for (v = 1; v < V; v++)
			if (z[v] > mx) {
				mx = z[v];
				am = v;
			}
		/*
		 * The vectorised softmax.  After it p[argmax] = 1 / sum exp(z - max)
		 * (never below 1 / V), so log-sum-exp = max - log p[argmax] without a
		 * second pass, and the loss stays exact where p[target] underflows.
		 */
		gm_softmax(z, V);
		j->loss[r] = (double)mx - log((double)z[am]) - (double)zt;
		if (j->inv_norm == 0)
			continue;
		for (v = 0; v < V; v++)
			z[v] *= j->inv_norm;
		z[j->target[r]] -= j->inv_norm;
	}
}

void gm_op_cross_entropy(gm_ops *o, float *z, int64_t V, const int32_t *target, int64_t n, double *loss,
			 float inv_norm)
{
	struct ce_job j = { z, V, target, loss, inv_norm };

	gm_threadpool_for(o->pool, n, 1, ce_run, &j);
}

/* ---------------------------------------------------------------- attention over the pool */

struct kv_job {
	gm_ops *o;
	const gm_op_attn *a;
	gm_kv *kv;
	int64_t layer, nkv, hd;
	const int32_t *seq, *pos;
	const float *q, *k, *v;
	float *att;
	const int64_t *groups;   /* [2 * groups]: first row, rows */
};

static void kv_store_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct kv_job *j = ctx;
	const gm_kv *kv = j->kv;
	int64_t t, h, hd = j->hd, kd = j->nkv * hd;

	(void)th;
	for (t = b; t < e; t++) {
		int64_t p = j->pos[t];
		int32_t blk = kv->seqs[j->seq[t]].blocks[p / GM_KV_BLOCK];

		for (h = 0; h < j->nkv; h++) {
			gm_kv_store_row(gm_kv_k_row(kv, blk, j->layer, h, p % GM_KV_BLOCK), kv->dt, j->k + t * kd + h * hd, hd);
			gm_kv_store_row(gm_kv_v_row(kv, blk, j->layer, h, p % GM_KV_BLOCK), kv->dt, j->v + t * kd + h * hd, hd);
		}
	}
}

void gm_op_kv_store(gm_ops *o, gm_kv *kv, int64_t layer, const int32_t *seq, const int32_t *pos, const float *k,
		    const float *v, int64_t n, int64_t nkv, int64_t hd)
{
	struct kv_job j = { .o = o, .kv = kv, .layer = layer, .nkv = nkv, .hd = hd, .seq = seq, .pos = pos, .k = k,
			    .v = v };

	gm_threadpool_for(o->pool, n, 4, kv_store_run, &j);
}

/*
 * A group of nr consecutive rows of one sequence (positions pos[t0] ..,
 * increasing) and kv head g: the query heads of g's group for every row
 * (at most GM_ATTN_MAXQ queries) against the sequence's keys, block by
 * block, so a block of keys is read once for all of them; the rows' last
 * positions differ by less than nr, and the few scores past a row's own
 * position are computed but not used.  Then softmax per query over its
 * own positions, and the values: blocks every query sees together, the
 * last ones query by query.  A query's arithmetic is the same whatever
 * the group (gm_attn_scores and gm_attn_accum work query by query).
 */
static void att_kv_task(const struct kv_job *j, int64_t t0, int64_t nr, int64_t g, int thread)
{
	const gm_op_attn *a = j->a;
	const gm_kv *kv = j->kv;
	const struct gm_kv_seq *s = &kv->seqs[j->seq[t0]];
	int64_t hd = a->hd, qd = a->nh * hd, grp = a->nh / a->nkv, h0, b, i, r, nh;
	int64_t Tmin = (int64_t)j->pos[t0] + 1, Tmax = (int64_t)j->pos[t0 + nr - 1] + 1;
	float *sc0 = j->o->scores[thread];
	const float *qp[GM_ATTN_MAXQ], *pp[GM_ATTN_MAXQ];
	float *sp[GM_ATTN_MAXQ], *op[GM_ATTN_MAXQ];
	int64_t Tq[GM_ATTN_MAXQ];
	int q, nq;

	/* heads h0 .. h0 + nh of the group at a time, for all nr rows: nr * nh <= GM_ATTN_MAXQ */
	nh = gm_imax64(1, gm_imin64(grp, GM_ATTN_MAXQ / nr));
	for (h0 = 0; h0 < grp; h0 += nh) {
		int64_t hn = gm_imin64(nh, grp - h0);

		nq = (int)(nr * hn);
		for (r = 0, q = 0; r < nr; r++) {
			for (i = 0; i < hn; i++, q++) {
				qp[q] = j->q + (t0 + r) * qd + (g * grp + h0 + i) * hd;
				op[q] = j->att + (t0 + r) * qd + (g * grp + h0 + i) * hd;
				Tq[q] = (int64_t)j->pos[t0 + r] + 1;
			}
		}
		for (b = 0; b * GM_KV_BLOCK < Tmax; b++) {
			for (q = 0; q < nq; q++)
				sp[q] = sc0 + q * Tmax + b * GM_KV_BLOCK;
			gm_attn_scores(sp, qp, nq, gm_kv_k_row(kv, s->blocks[b], j->layer, g, 0), kv->dt,
				       gm_imin64(GM_KV_BLOCK, Tmax - b * GM_KV_BLOCK), hd);
		}
		for (q = 0; q < nq; q++) {
			float *sc = sc0 + q * Tmax;

			for (i = 0; i < Tq[q]; i++)
				sc[i] *= a->scale;
			gm_softmax(sc, Tq[q]);
			memset(op[q], 0, (size_t)hd * sizeof(float));
		}
		for (b = 0; b * GM_KV_BLOCK < Tmax; b++) {
			const void *vb = gm_kv_v_row(kv, s->blocks[b], j->layer, g, 0);

			if ((b + 1) * GM_KV_BLOCK <= Tmin) {
				for (q = 0; q < nq; q++)
					pp[q] = sc0 + q * Tmax + b * GM_KV_BLOCK;
				gm_attn_accum(op, pp, nq, vb, kv->dt, GM_KV_BLOCK, hd);
				continue;
			}
			for (q = 0; q < nq; q++) {
				int64_t nk = gm_imin64(GM_KV_BLOCK, Tq[q] - b * GM_KV_BLOCK);

				pp[0] = sc0 + q * Tmax + b * GM_KV_BLOCK;
				if (nk > 0)
					gm_attn_accum(&op[q], pp, 1, vb, kv->dt, nk, hd);
			}
		}
	}
}

static void att_kv_run(void *ctx, int64_t b, int64_t e, int thread)
{
	struct kv_job *j = ctx;
	int64_t task;

	for (task = b; task < e; task++) {
		int64_t grp = task / j->a->nkv;

		att_kv_task(j, j->groups[2 * grp], j->groups[2 * grp + 1], task % j->a->nkv, thread);
	}
}

void gm_op_attention_kv(gm_ops *o, const gm_op_attn *a, gm_kv *kv, int64_t layer, const int32_t *seq,
			const int32_t *pos, const float *q, float *att, int64_t n)
{
	struct kv_job j = { .o = o, .a = a, .kv = kv, .layer = layer, .seq = seq, .pos = pos, .q = q, .att = att };
	int64_t t, maxT = 0, ng = 0, per = gm_imax64(1, GM_ATTN_MAXQ / (a->nh / a->nkv));

	/* groups of up to per consecutive rows of one sequence at consecutive positions */
	if ((size_t)(2 * n) > o->groups_len) {
		free(o->groups);
		o->groups_len = (size_t)(2 * n);
		o->groups = gm_xmalloc(o->groups_len * sizeof(*o->groups));
	}
	for (t = 0; t < n; t++) {
		maxT = gm_imax64(maxT, (int64_t)pos[t] + 1);
		if (ng && o->groups[2 * ng - 1] < per && seq[t] == seq[t - 1] && pos[t] == pos[t - 1] + 1) {
			o->groups[2 * ng - 1]++;
			continue;
		}
		o->groups[2 * ng] = t;
		o->groups[2 * ng + 1] = 1;
		ng++;
	}
	j.groups = o->groups;
	grow_each(o, o->scores, &o->scores_len, (size_t)(GM_ATTN_MAXQ * maxT));
	gm_threadpool_for(o->pool, ng * a->nkv, 1, att_kv_run, &j);
}

/* ---------------------------------------------------------------- attention over a sequence */

/* dst [cols, rows] = src^T, src [rows, cols] with row stride ld (f32). */
static void transpose_strided(float *dst, const float *src, int64_t rows, int64_t cols, int64_t ld)
{
	int64_t r, c;

	for (r = 0; r < rows; r++)
		for (c = 0; c < cols; c++)
			dst[c * rows + r] = src[r * ld + c];
}

/*
 * One head (forward) or one kv head (backward) per task, single-threaded
 * inside, on the matmul kernels: the products over the head dimension or
 * over positions are gm_matmul (Y = X W^T, with K, V, or their transposes
 * as the weight, read in place as f32) and gm_matmul_tn (C += A^T B).  The
 * full T x T products are computed and the causal mask applied after:
 * twice the flops of a triangular loop, at the kernel's speed.  P and dS
 * are zero above the diagonal.
 */
struct seq_job {
	gm_ops *o;
	const gm_op_attn *a;
	const float *q, *k, *v, *probs_c, *datt;
	float *att, *probs, *dq, *dk, *dv;
	int64_t T;
};

/* Heads [b, e): probabilities P_h = softmax(q k^T * scale, causal) and outputs o_h = P_h v. */
static void att_fwd_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct seq_job *j = ctx;
	const gm_op_attn *a = j->a;
	int64_t h, i, k, T = j->T, hd = a->hd, grp = a->nh / a->nkv, QD = a->nh * hd, KD = a->nkv * hd;
	float *xt = j->o->axt[th], *vt = j->o->aw[th], *panel = j->o->panel[th];

	for (h = b; h < e; h++) {
		int64_t g = h / grp;
		float *P = j->probs + h * T * T;

		/* S[i, k] = q_i . k_k: X = q_h [T, hd], W = k_g [T, hd] */
		gm_matmul_pack(xt, j->q + h * hd, QD, T, hd, 0, (T + GM_MATMUL_TB - 1) / GM_MATMUL_TB,
			       GM_MATMUL_SMALL, GM_MATMUL_PRECISE);
		gm_matmul(P, T, xt, T, j->k + g * hd, GM_DTYPE_F32, KD, hd, 0, T, panel,
			  GM_MATMUL_SMALL, GM_MATMUL_PRECISE);
		for (i = 0; i < T; i++) {
			float *p = P + i * T;

			for (k = 0; k <= i; k++)
				p[k] *= a->scale;
			gm_softmax(p, i + 1);
			memset(p + i + 1, 0, (size_t)(T - i - 1) * sizeof(float));
		}
		/* o_h = P v_g: X = P [T, T], W = v_g^T [hd, T] */
		transpose_strided(vt, j->v + g * hd, T, hd, KD);
		gm_matmul_pack(xt, P, T, T, T, 0, (T + GM_MATMUL_TB - 1) / GM_MATMUL_TB,
			       GM_MATMUL_SMALL, GM_MATMUL_PRECISE);
		gm_matmul(j->att + h * hd, QD, xt, T, vt, GM_DTYPE_F32, T, T, 0, hd, panel,
			  GM_MATMUL_SMALL, GM_MATMUL_PRECISE);
	}
}

/* KV heads [b, e): dq of their query heads, dk, dv (the heads of a group in order). */
static void att_bwd_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct seq_job *j = ctx;
	const gm_op_attn *a = j->a;
	int64_t g, h, i, k, T = j->T, hd = a->hd, grp = a->nh / a->nkv, QD = a->nh * hd, KD = a->nkv * hd;
	float *xt = j->o->axt[th], *wt = j->o->aw[th], *panel = j->o->panel[th], *dS = j->o->amat[th];

	for (g = b; g < e; g++) {
		for (i = 0; i < T; i++) {
			memset(j->dk + i * KD + g * hd, 0, (size_t)hd * sizeof(float));
			memset(j->dv + i * KD + g * hd, 0, (size_t)hd * sizeof(float));
		}
		for (h = g * grp; h < (g + 1) * grp; h++) {
			const float *P = j->probs_c + h * T * T;

			/* dP = dO_h v_g^T: X = dO_h [T, hd], W = v_g [T, hd] */
			gm_matmul_pack(xt, j->datt + h * hd, QD, T, hd, 0, (T + GM_MATMUL_TB - 1) / GM_MATMUL_TB,
				       GM_MATMUL_SMALL, GM_MATMUL_PRECISE);
			gm_matmul(dS, T, xt, T, j->v + g * hd, GM_DTYPE_F32, KD, hd, 0, T, panel,
				  GM_MATMUL_SMALL, GM_MATMUL_PRECISE);
			/* dS = P (dP - rowsum(P dP)) * scale, zero above the diagonal */
			for (i = 0; i < T; i++) {
				const float *p = P + i * T;
				float *d = dS + i * T;
				double sum = 0;

				for (k = 0; k <= i; k++)
					sum += (double)p[k] * d[k];
				for (k = 0; k <= i; k++)
					d[k] = p[k] * (d[k] - (float)sum) * a->scale;
				memset(d + i + 1, 0, (size_t)(T - i - 1) * sizeof(float));
			}
			/* dv_g += P^T dO_h;  dk_g += dS^T q_h */
			gm_matmul_tn(j->dv + g * hd, KD, P, T, j->datt + h * hd, QD, T, 0, T, 0, hd);
			gm_matmul_tn(j->dk + g * hd, KD, dS, T, j->q + h * hd, QD, T, 0, T, 0, hd);
			/* dq_h = dS k_g: X = dS [T, T], W = k_g^T [hd, T] */
			transpose_strided(wt, j->k + g * hd, T, hd, KD);
			gm_matmul_pack(xt, dS, T, T, T, 0, (T + GM_MATMUL_TB - 1) / GM_MATMUL_TB,
				       GM_MATMUL_SMALL, GM_MATMUL_PRECISE);
			gm_matmul(j->dq + h * hd, QD, xt, T, wt, GM_DTYPE_F32, T, T, 0, hd, panel,
				  GM_MATMUL_SMALL, GM_MATMUL_PRECISE);
		}
	}
}

static void seq_reserve(gm_ops *o, const gm_op_attn *a, int64_t T, int bwd)
{
	panel_reserve(o, gm_imax64(T, a->hd));
	grow_each(o, o->axt, &o->axt_len, gm_matmul_xt_len(T, gm_imax64(T, a->hd)));
	grow_each(o, o->aw, &o->aw_len, (size_t)(a->hd * T));
	if (bwd)
		grow_each(o, o->amat, &o->amat_len, (size_t)(T * T));
}

void gm_op_attention_seq(gm_ops *o, const gm_op_attn *a, const float *q, const float *k, const float *v, float *att,
			 float *probs, int64_t T)
{
	struct seq_job j = { .o = o, .a = a, .q = q, .k = k, .v = v, .att = att, .probs = probs, .T = T };

	seq_reserve(o, a, T, 0);
	gm_threadpool_for(o->pool, a->nh, 1, att_fwd_run, &j);
}

void gm_op_attention_seq_backward(gm_ops *o, const gm_op_attn *a, const float *q, const float *k, const float *v,
				  const float *probs, const float *datt, float *dq, float *dk, float *dv, int64_t T)
{
	struct seq_job j = { .o = o, .a = a, .q = q, .k = k, .v = v, .probs_c = probs, .datt = datt, .dq = dq,
			     .dk = dk, .dv = dv, .T = T };

	seq_reserve(o, a, T, 1);
	gm_threadpool_for(o->pool, a->nkv, 1, att_bwd_run, &j);
}
