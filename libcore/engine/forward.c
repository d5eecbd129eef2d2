/*
 * forward.c - inference: one or many sequences through the model
 * definition (see forward.h).
 *
 * One step evaluates R token rows, which may belong to several sequences
 * (gm_forward_eval_batch) or to one (gm_forward_eval); row t is token
 * ids[t] of sequence seq[t] at position pos[t].  The layers are
 * gm_qwen3_layer_forward (qwen3.c) over the op layer (ops.h), with
 * attention over the KV pool: row t attends to seq[t]'s positions <=
 * pos[t], its own key and value stored first.  Activations are f32 and
 * inference keeps one buffer per activation (x, q, k, g updated in place).
 * Every projection runs over all R rows at once (weights read once per
 * pass), its kernels chosen by the rows' role (gm_forward_role; without
 * one, by R).  More than GM_FWD_BATCH rows are evaluated in passes, in
 * row order, so a sequence's later rows find its earlier rows' keys in
 * the pool; a step with roles runs one pass (or more) per role.  Then the
 * final norm, and lm_head over the rows whose logits are asked for (all
 * the sequences' last rows at once).
 *
 * What stays here: the rows' bookkeeping (reserving the sequences' blocks,
 * ordering rows by adapter set, passes), the adapter sets, the private
 * pool and sequence of the single-sequence calls.
 *
 * Adapters.  An adapter set (gm_forward_adapter_set_add; the single-
 * sequence calls keep a private one) stacks its LoRAs per projection at
 * registration into two f32 matrices, the scales folded into A:
 *
 *   A = [s_1 A_1; s_2 A_2; ...]   [R, in]    (R = r_1 + r_2 + ...)
 *   B = [B_1, B_2, ...]           [out, R]
 *
 * so that sum_i s_i B_i A_i = B A; sparse adapters are merged per
 * projection into one f32 CSR matrix, each row the rows of every adapter
 * one after the other, the scales folded into the values.  The rows of a
 * step are ordered by adapter set, so each set is one contiguous range of
 * rows: one gm_op_delta per projection and range (gm_op_linear applies it
 * to those rows only).
 */
#include "engine/forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "cpu/kernels.h"
#include "ops/kv-internal.h"
#include "ops/ops.h"
#include "formats/peft.h"
#include "engine/qwen3.h"
#include "formats/sparse.h"
#include "cpu/threadpool.h"

#define GM_FWD_BATCH 512   /* rows per internal pass */
#define GM_FWD_MAX_CTX_DEFAULT 4096

/* The stacked adapters of one projection of one layer (see above). */
struct lora_proj {
	int64_t rank;      /* R; 0: not adapted */
	float *a;          /* [R, in], scales folded in */
	float *b;          /* [out, R] */
	gm_op_lora op;     /* the view the ops take (scale 1: folded) */
};

/* The merged sparse adapters of one projection of one layer (see above). */
struct sparse_proj {
	int64_t nnz;       /* 0: none */
	int64_t *rowp;     /* [out + 1] */
	int32_t *cols;     /* [nnz] */
	float *vals;       /* [nnz], scales folded in */
	gm_op_sparse op;   /* the view the ops take */
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
	gm_ops *ops;               /* the backend the model definition runs on */
	gm_qwen3_dims dims;
	int n_ctx, batch;
	int64_t hidden, q_dim, kv_dim, head_dim, n_heads, n_kv, inter, vocab, n_layers;
	float eps;
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
	struct range *ranges;      /* [batch] at most */
	gm_op_delta *deltas;       /* [GM_PEFT_PROJ_COUNT][batch]: one layer's adapter ranges */
	float *x, *xn, *xo;        /* [batch, hidden] */
	float *q, *att;            /* [batch, q_dim] */
	float *k, *v;              /* [batch, kv_dim] */
	float *gate, *up;          /* [batch, inter] */
	float *rope_cs, *rope_sn;  /* [batch, head_dim / 2] */

	float *hidden_out;         /* [n, hidden] of the last eval, after the final norm */
	int64_t hidden_cap;        /* rows */
	float *head_x, *head_y;    /* eval_batch: the sequences' last rows and their logits */
	int64_t head_cap;
};

/* ---------------------------------------------------------------- helpers */

/* Zeroed floats; aborts when out of memory, as gm_xmalloc does. */
static inline const void *row_ptr(const gm_tensor *t, int64_t r)
{
	return (const char *)t->data + (size_t)r * (size_t)t->shape[1] * (t->dtype == GM_DTYPE_F32 ? 4 : 2);
}

/* ---------------------------------------------------------------- one pass */

static void lm_head(gm_forward *f, const float *h, int64_t n, float *logits, enum gm_op_rows form)
{
	gm_op_linear_out out = { f->m->lm_head, logits, f->vocab, NULL, 0 };

	gm_op_linear(f->ops, h, f->hidden, n, &out, 1, form);
}

/* The kernels of a role's rows (ops.h). */
static enum gm_op_rows role_form(enum gm_forward_role role)
{
	return role == GM_FWD_PROMPT ? GM_OP_ROWS_BLOCK : role == GM_FWD_DECODE ? GM_OP_ROWS_DOT : GM_OP_ROWS_BY_SIZE;
}

/*
 * Runs the rows ev_*[p0 .. p0 + nb), all of one role; their final hidden
 * states go to out ([nb, hidden]).
 */
static void run_pass(gm_forward *f, int64_t p0, int64_t nb, float *out, enum gm_forward_role role)
{
	const gm_model *m = f->m;
	int64_t t, l, H = f->hidden;
	int n_ranges = 0, g, p;
	gm_qwen3_acts a;
	gm_qwen3_layer L;

	/* the adapter ranges of this pass (rows are ordered by set) */
	for (t = 0; t < nb; t++) {
		if (!n_ranges || f->ev_set[p0 + t] != f->ranges[n_ranges - 1].set) {
			f->ranges[n_ranges].set = f->ev_set[p0 + t];
			f->ranges[n_ranges].r0 = t;
			n_ranges++;
		}
		f->ranges[n_ranges - 1].r1 = t + 1;
	}
	gm_op_embed(f->ops, f->x, m->embed_tokens, f->ev_ids + p0, nb);
	gm_qwen3_rope_rows(f->inv_freq, f->head_dim, f->ev_pos + p0, nb, f->rope_cs, f->rope_sn);
	/* inference keeps one buffer where training keeps two */
	memset(&a, 0, sizeof(a));
	a.n = nb;
	a.x = a.y = a.x1 = f->x;
	a.n1 = a.n2 = f->xn;
	a.q = a.qr = f->q;
	a.k = a.kr = f->k;
	a.v = f->v;
	a.att = f->att;
	a.tmp = f->xo;
	a.g = a.act = f->gate;
	a.up = f->up;
	a.cs = f->rope_cs;
	a.sn = f->rope_sn;
	a.kv = f->cur;
	a.seq = f->ev_seq + p0;
	a.pos = f->ev_pos + p0;
	a.rows = role_form(role);
	a.defer = 1;
	for (l = 0; l < f->n_layers; l++) {
		gm_qwen3_layer_of(m, l, &L);
		for (p = 0; p < GM_PEFT_PROJ_COUNT; p++) {
			gm_op_delta *dl = f->deltas + p * f->batch;
			int nd = 0;

			for (g = 0; g < n_ranges; g++) {
				const struct aset *s = f->ranges[g].set;
				const struct lora_proj *lp = s && s->lora ? &s->lora[l * GM_PEFT_PROJ_COUNT + p] : NULL;
				const struct sparse_proj *sp = s && s->sparse ? &s->sparse[l * GM_PEFT_PROJ_COUNT + p] : NULL;

				if ((!lp || !lp->op.rank) && (!sp || !sp->op.nnz))
					continue;
				dl[nd].r0 = f->ranges[g].r0;
				dl[nd].r1 = f->ranges[g].r1;
				dl[nd].lora = lp && lp->op.rank ? &lp->op : NULL;
				dl[nd].sparse = sp && sp->op.nnz ? &sp->op : NULL;
				dl[nd].u = NULL;
				nd++;
			}
			L.deltas[p] = nd ? dl : NULL;
			L.n_deltas[p] = nd;
		}
		a.pending = l > 0; /* the previous layer's down projection, still in xo */
		gm_qwen3_layer_forward(f->ops, &f->dims, l, &L, &a);
	}
	if (f->n_layers)
		gm_op_add_rmsnorm(f->ops, f->x, f->x, f->xo, out, m->final_norm, nb, H, f->eps);
	else
		gm_op_rmsnorm(f->ops, out, f->x, m->final_norm, nb, H, f->eps);
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
		f->hidden_out = gm_falloc((size_t)rows * (size_t)f->hidden);
		f->hidden_cap = rows;
	}
	if (n_seqs > f->order_cap) {
		f->order_cap = n_seqs;
		f->order = gm_xrealloc(f->order, (size_t)n_seqs * sizeof(*f->order));
	}
}

/* The order of a step's sequences: by role (each role's rows run in their own passes), then adapter set. */
static int seq_before(const gm_forward_seq *a, const struct aset *sa, const gm_forward_seq *b, const struct aset *sb)
{
	if (a->role != b->role)
		return a->role < b->role;
	return (uintptr_t)sa < (uintptr_t)sb;
}

/*
 * The step proper, after the checks: seqs[i] uses adapter set sets[i] and
 * fits in kv.  Its blocks are reserved, its rows ordered by role and
 * adapter set and evaluated in passes, one role at a time; the sequences'
 * lengths grow by their n.  all_logits (one sequence only): [n, vocab]
 * logits of every row; else each sequence's logits (when not NULL) of its
 * last row, by dot products when a role is given (a row's logits the same
 * whatever else is in the step).
 */
static void eval_step(gm_forward *f, gm_kv *kv, const gm_forward_seq *seqs, const struct aset *const *sets,
		      int n_seqs, float *all_logits)
{
	int64_t rows = 0, r, done, nb, n_out = 0, end;
	enum gm_op_rows head = GM_OP_ROWS_BY_SIZE;
	int i, k, c;

	for (i = 0; i < n_seqs; i++)
		rows += seqs[i].n;
	ev_reserve(f, rows, n_seqs);
	for (i = 0; i < n_seqs; i++) {
		gm_kv_reserve(kv, seqs[i].seq, seqs[i].n, NULL); /* cannot fail: checked by the caller */
		/* insertion sort (stable: the callers' order within a role and set) */
		for (k = i; k > 0 && seq_before(&seqs[i], sets[i], &seqs[f->order[k - 1]], sets[f->order[k - 1]]); k--)
			f->order[k] = f->order[k - 1];
		f->order[k] = i;
		if (seqs[i].role != GM_FWD_ANY)
			head = GM_OP_ROWS_DOT;
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
	/* each role's rows [done, end) in passes of up to f->batch */
	for (i = 0, done = 0; i < n_seqs; i = k) {
		enum gm_forward_role role = seqs[f->order[i]].role;

		for (k = i, end = done; k < n_seqs && seqs[f->order[k]].role == role; k++)
			end += seqs[f->order[k]].n;
		for (; done < end; done += nb) {
			float *h = f->hidden_out + done * f->hidden;

			nb = gm_imin64(f->batch, end - done);
			run_pass(f, done, nb, h, role);
			if (all_logits)
				lm_head(f, h, nb, all_logits + done * f->vocab, GM_OP_ROWS_BY_SIZE);
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
				lm_head(f, f->hidden_out + (r - 1) * f->hidden, 1, y, head);
		}
		return;
	}
	if (n_out > f->head_cap) {
		free(f->head_x);
		free(f->head_y);
		f->head_x = gm_falloc((size_t)n_out * (size_t)f->hidden);
		f->head_y = gm_falloc((size_t)n_out * (size_t)f->vocab);
		f->head_cap = n_out;
	}
	for (i = 0, r = 0, k = 0; i < n_seqs; i++) {
		r += seqs[f->order[i]].n;
		if (seqs[f->order[i]].logits)
			memcpy(f->head_x + (k++) * f->hidden, f->hidden_out + (r - 1) * f->hidden,
			       (size_t)f->hidden * sizeof(float));
	}
	for (done = 0; done < n_out; done += nb) {
		nb = gm_imin64(f->batch, n_out - done);
		lm_head(f, f->head_x + done * f->hidden, nb, f->head_y + done * f->vocab, head);
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
		p->op.nnz = p->nnz;
		p->op.rowp = p->rowp;
		p->op.cols = p->cols;
		p->op.vals = p->vals;
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
		rmax = gm_imax64(rmax, lp->rank);
		lp->a = gm_falloc((size_t)(lp->rank * w->shape[1]));
		lp->b = gm_falloc((size_t)(w->shape[0] * lp->rank));
		lp->op.rank = lp->rank;
		lp->op.a = lp->a;
		lp->op.b = lp->b;
		lp->op.scale = 1.0f;
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
	gm_forward_opts o = { n_ctx, n_threads, GM_KV_F32, GM_MATMUL_PRECISE };

	return gm_forward_new_ex(m, &o, out, err);
}

int gm_forward_new_ex(const gm_model *m, const gm_forward_opts *o, gm_forward **out, gm_error *err)
{
	const gm_model_config *c = &m->config;
	int n_ctx = o->n_ctx, n_threads = o->n_threads;
	gm_forward *f;
	int ret;

	*out = NULL;
	if (n_threads < 0 || n_threads > 1024)
		return gm_error_set(err, GM_EINVAL, "invalid thread count %d", n_threads);
	if (n_ctx < 0)
		return gm_error_set(err, GM_EINVAL, "invalid context length %d", n_ctx);
	if ((int)o->kv_type < GM_KV_AUTO || (int)o->kv_type > GM_KV_F16)
		return gm_error_set(err, GM_EINVAL, "invalid KV cache type %d", (int)o->kv_type);
	if (o->matmul != GM_MATMUL_PRECISE && o->matmul != GM_MATMUL_FAST)
		return gm_error_set(err, GM_EINVAL, "invalid matmul mode %d", (int)o->matmul);
	if (c->num_key_value_heads < 1 || c->num_attention_heads % c->num_key_value_heads || c->head_dim % 2)
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: %lld attention heads over %lld kv heads of dimension %lld are not supported",
				    m->dir, (long long)c->num_attention_heads, (long long)c->num_key_value_heads,
				    (long long)c->head_dim);
	if (n_ctx == 0)
		n_ctx = (int)gm_imin64(c->max_position_embeddings > 0 ? c->max_position_embeddings : GM_FWD_MAX_CTX_DEFAULT,
				  GM_FWD_MAX_CTX_DEFAULT);
	if (n_threads == 0)
		n_threads = gm_cpu_count();

	f = gm_xcalloc(1, sizeof(*f));
	f->m = m;
	f->n_ctx = n_ctx;
	gm_qwen3_dims_of(m, &f->dims);
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
	f->batch = GM_FWD_BATCH;

	if ((ret = gm_ops_cpu_new(n_threads, &f->ops, err))) {
		free(f);
		return ret;
	}
	gm_ops_set_matmul_mode(f->ops, o->matmul);
	/* the private pool: its pages are only touched as positions fill */
	if ((ret = gm_kv_new(m, o->kv_type, n_ctx, &f->kv, err)) || (ret = gm_kv_seq_new(f->kv, &f->seq, err))) {
		gm_forward_free(f);
		return ret;
	}
	f->inv_freq = gm_falloc((size_t)f->head_dim / 2);
	gm_qwen3_rope_init(m, f->inv_freq);

	f->x = gm_falloc((size_t)f->batch * f->hidden);
	f->xn = gm_falloc((size_t)f->batch * f->hidden);
	f->xo = gm_falloc((size_t)f->batch * f->hidden);
	f->q = gm_falloc((size_t)f->batch * f->q_dim);
	f->att = gm_falloc((size_t)f->batch * f->q_dim);
	f->k = gm_falloc((size_t)f->batch * f->kv_dim);
	f->v = gm_falloc((size_t)f->batch * f->kv_dim);
	f->gate = gm_falloc((size_t)f->batch * f->inter);
	f->up = gm_falloc((size_t)f->batch * f->inter);
	f->rope_cs = gm_falloc((size_t)f->batch * f->head_dim / 2);
	f->rope_sn = gm_falloc((size_t)f->batch * f->head_dim / 2);
	f->ranges = gm_xcalloc((size_t)f->batch, sizeof(*f->ranges));
	f->deltas = gm_xcalloc((size_t)GM_PEFT_PROJ_COUNT * (size_t)f->batch, sizeof(*f->deltas));
	*out = f;
	return 0;
}

void gm_forward_free(gm_forward *f)
{
	int i;

	if (!f)
		return;
	gm_ops_free(f->ops);
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
	free(f->deltas);
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

static int eval_single(gm_forward *f, const int32_t *ids, int n, float *logits, int all_logits,
		       enum gm_forward_role role, gm_error *err)
{
	gm_forward_seq s = { f->seq, ids, n, 0, all_logits ? NULL : logits, role };
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

int gm_forward_eval(gm_forward *f, const int32_t *ids, int n, float *logits, int all_logits, gm_error *err)
{
	return eval_single(f, ids, n, logits, all_logits, GM_FWD_ANY, err);
}

int gm_forward_eval_as(gm_forward *f, const int32_t *ids, int n, float *logits, enum gm_forward_role role,
		       gm_error *err)
{
	if (role != GM_FWD_ANY && role != GM_FWD_PROMPT && role != GM_FWD_DECODE)
		return gm_error_set(err, GM_EINVAL, "unknown role %d", (int)role);
	return eval_single(f, ids, n, logits, 0, role, err);
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
		if (s->role != GM_FWD_ANY && s->role != GM_FWD_PROMPT && s->role != GM_FWD_DECODE)
			return gm_error_set(err, GM_EINVAL, "batch entry %d: unknown role %d", i, (int)s->role);
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
