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
#include "threadpool.h"

#define GM_FWD_BATCH 512   /* tokens per internal batch */
#define GM_FWD_MATVEC_MAX 2 /* batches up to this size use gm_matvec */
#define GM_FWD_MAX_CTX_DEFAULT 4096

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

#define GM_LIN_MAX 3

/* Up to three projections of the same input, run as one parallel loop over their rows. */
struct lin_job {
	gm_forward *f;
	int n_mats;
	const gm_tensor *w[GM_LIN_MAX];
	float *y[GM_LIN_MAX];
	int64_t ldy[GM_LIN_MAX];
	int64_t off[GM_LIN_MAX + 1];   /* cumulative rows */
	const float *x;                /* [nb, in], row stride ldx (matvec) */
	int64_t ldx, nb, in;
	int matmul;                    /* else matvec per token */
};

static void lin_rows(void *ctx, int64_t b, int64_t e, int thread)
{
	struct lin_job *j = ctx;
	int i;

	for (i = 0; i < j->n_mats; i++) {
		int64_t r0 = imax(b, j->off[i]) - j->off[i], r1 = imin(e, j->off[i + 1]) - j->off[i], t;
		const gm_tensor *w = j->w[i];

		if (r0 >= r1)
			continue;
		if (j->matmul) {
			gm_matmul(j->y[i], j->ldy[i], j->f->xt, j->nb, w->data, w->dtype, w->shape[1], j->in, r0, r1,
				  j->f->panel[thread]);
		} else {
			for (t = 0; t < j->nb; t++)
				gm_matvec(j->y[i] + t * j->ldy[i], w->data, w->dtype, w->shape[1], j->x + t * j->ldx,
					  j->in, r0, r1);
		}
	}
}

struct pack_job {
	float *xt;
	const float *x;
	int64_t ldx, n, in;
};

static void pack_blocks(void *ctx, int64_t b, int64_t e, int thread)
{
	struct pack_job *j = ctx;

	(void)thread;
	gm_matmul_pack(j->xt, j->x, j->ldx, j->n, j->in, b, e);
}

/* y_i[t, :] = x[t, :] W_i^T for the n_mats weights (all [rows_i, in]). */
static void linear(gm_forward *f, int n_mats, const gm_tensor *const *w, float **y, const int64_t *ldy,
		   const float *x, int64_t ldx, int64_t nb)
{
	struct lin_job j;
	int64_t in = w[0]->shape[1], grain;
	int i;

	memset(&j, 0, sizeof(j));
	j.f = f;
	j.n_mats = n_mats;
	j.x = x;
	j.ldx = ldx;
	j.nb = nb;
	j.in = in;
	j.matmul = nb > GM_FWD_MATVEC_MAX;
	for (i = 0; i < n_mats; i++) {
		j.w[i] = w[i];
		j.y[i] = y[i];
		j.ldy[i] = ldy[i];
		j.off[i + 1] = j.off[i] + w[i]->shape[0];
	}
	if (j.matmul) {
		struct pack_job pj = { f->xt, x, ldx, nb, in };

		gm_threadpool_for(f->pool, (nb + GM_MATMUL_TB - 1) / GM_MATMUL_TB, 1, pack_blocks, &pj);
		grain = (int64_t)(gm_matmul_panel_len(in) / (size_t)in);
	} else {
		grain = 16;
	}
	gm_threadpool_for(f->pool, j.off[n_mats], grain, lin_rows, &j);
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
		linear(f, 3, qkv, qkv_y, qkv_ld, f->xn, H, nb);
		per_token(f, TOK_QKV, nb, l, p0, NULL, NULL);
		if (nb > 1)
			v_to_cache(f, l, p0, nb);
		attention(f, l, p0, nb);
		linear(f, 1, &lw->o_proj, &f->xo, &H, f->att, f->q_dim, nb);
		per_token(f, TOK_ADD_NORM, nb, l, p0, lw->post_attn_norm, f->xn);
		linear(f, 2, gu, gu_y, gu_ld, f->xn, H, nb);
		per_token(f, TOK_SILU, nb, l, p0, NULL, NULL);
		linear(f, 1, &lw->down_proj, &f->xo, &H, f->gate, f->inter, nb);
	}
	per_token(f, TOK_ADD_NORM, nb, f->n_layers, p0, m->final_norm, out);
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
			linear(f, 1, &lm, &y, &f->vocab, h, f->hidden, nb);
		}
		f->pos += (int)nb;
	}
	if (logits && !all_logits)
		linear(f, 1, &lm, &logits, &f->vocab, f->hidden_out + (int64_t)(n - 1) * f->hidden, f->hidden, 1);
	return 0;
}
