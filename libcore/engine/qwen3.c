/*
 * qwen3.c - the Qwen3 / Qwen2 / Llama decoder over the op layer (see
 * qwen3.h): the one definition inference and training run.
 */
#include "engine/qwen3.h"

#include <math.h>

void gm_qwen3_dims_of(const gm_model *m, gm_qwen3_dims *d)
{
	const gm_model_config *c = &m->config;

	d->hidden = c->hidden_size;
	d->head_dim = c->head_dim;
	d->n_heads = c->num_attention_heads;
	d->n_kv = c->num_key_value_heads;
	d->q_dim = d->n_heads * d->head_dim;
	d->kv_dim = d->n_kv * d->head_dim;
	d->inter = c->intermediate_size;
	d->vocab = c->vocab_size;
	d->n_layers = c->num_hidden_layers;
	d->eps = (float)c->rms_norm_eps;
	d->att_scale = (float)(1.0 / sqrt((double)d->head_dim));
}

void gm_qwen3_layer_of(const gm_model *m, int64_t l, gm_qwen3_layer *out)
{
	const gm_layer_weights *lw = &m->layers[l];
	int p;

	out->input_norm = lw->input_norm;
	out->post_norm = lw->post_attn_norm;
	out->q_norm = lw->q_norm;
	out->k_norm = lw->k_norm;
	out->q_bias = lw->q_bias;
	out->k_bias = lw->k_bias;
	out->v_bias = lw->v_bias;
	out->w[GM_PEFT_Q_PROJ] = lw->q_proj;
	out->w[GM_PEFT_K_PROJ] = lw->k_proj;
	out->w[GM_PEFT_V_PROJ] = lw->v_proj;
	out->w[GM_PEFT_O_PROJ] = lw->o_proj;
	out->w[GM_PEFT_GATE_PROJ] = lw->gate_proj;
	out->w[GM_PEFT_UP_PROJ] = lw->up_proj;
	out->w[GM_PEFT_DOWN_PROJ] = lw->down_proj;
	for (p = 0; p < GM_QWEN3_NP; p++) {
		out->deltas[p] = NULL;
		out->n_deltas[p] = 0;
	}
}

static gm_op_linear_out lin_out(const gm_qwen3_layer *L, int p, float *y, int64_t ldy)
{
	gm_op_linear_out r = { L->w[p], y, ldy, L->deltas[p], L->n_deltas[p] };

	return r;
}

static gm_op_qk qk_params(const gm_qwen3_dims *d, const gm_qwen3_layer *L, const gm_qwen3_acts *a)
{
	gm_op_qk p = { d->n_heads, d->n_kv, d->head_dim, L->q_bias, L->k_bias, L->v_bias, L->q_norm, L->k_norm,
		       d->eps, a->cs, a->sn, NULL, 0, NULL, NULL };

	return p;
}

void gm_qwen3_layer_forward(gm_ops *o, const gm_qwen3_dims *d, int64_t layer, const gm_qwen3_layer *L,
			    const gm_qwen3_acts *a)
{
	int64_t n = a->n, H = d->hidden;
	gm_op_attn at = { d->n_heads, d->n_kv, d->head_dim, d->att_scale };
	gm_op_qk qk = qk_params(d, L, a);
	gm_op_linear_out qkv[3] = { lin_out(L, GM_PEFT_Q_PROJ, a->q, d->q_dim), lin_out(L, GM_PEFT_K_PROJ, a->k, d->kv_dim),
				    lin_out(L, GM_PEFT_V_PROJ, a->v, d->kv_dim) };
	gm_op_linear_out ow = lin_out(L, GM_PEFT_O_PROJ, a->tmp, H);
	gm_op_linear_out gu[2] = { lin_out(L, GM_PEFT_GATE_PROJ, a->g, d->inter), lin_out(L, GM_PEFT_UP_PROJ, a->up, d->inter) };
	gm_op_linear_out dw = lin_out(L, GM_PEFT_DOWN_PROJ, a->tmp, H);

	if (a->pending)
		gm_op_add_rmsnorm(o, a->x, a->x, a->tmp, a->n1, L->input_norm, n, H, d->eps);
	else
		gm_op_rmsnorm(o, a->n1, a->x, L->input_norm, n, H, d->eps);
	gm_op_linear(o, a->n1, H, n, qkv, 3, a->rows);
	if (a->kv) {
		/* the keys and values go to the pool in the same pass */
		qk.kv = a->kv;
		qk.layer = layer;
		qk.seq = a->seq;
		qk.pos = a->pos;
	}
	gm_op_qk_norm_rope(o, &qk, a->q, a->k, a->v, a->qr, a->kr, n);
	if (a->kv) {
		gm_op_attention_kv(o, &at, a->kv, layer, a->seq, a->pos, a->qr, a->att, n);
	} else {
		gm_op_attention_seq(o, &at, a->qr, a->kr, a->v, a->att, a->probs, n);
	}
	gm_op_linear(o, a->att, d->q_dim, n, &ow, 1, a->rows);
	gm_op_add_rmsnorm(o, a->x1, a->x, a->tmp, a->n2, L->post_norm, n, H, d->eps);
	gm_op_linear(o, a->n2, H, n, gu, 2, a->rows);
	gm_op_silu_mul(o, a->act, a->g, a->up, n, d->inter);
	gm_op_linear(o, a->act, d->inter, n, &dw, 1, a->rows);
	if (!a->defer)
		gm_op_add(o, a->y, a->x1, a->tmp, n * H);
}

/* lin^T of projection p: dx (=, += when add) from dy; the LoRA's gradients accumulated. */
static void lin_bwd(gm_ops *o, const gm_qwen3_grads *g, int p, const float *dy, const float *x, float *dx, int add,
		    int64_t n)
{
	gm_op_linear_backward(o, g->wt[p], dy, n, dx, add, g->lora[p], x, g->u[p], g->ga[p], g->gb[p]);
}

void gm_qwen3_layer_backward(gm_ops *o, const gm_qwen3_dims *d, const gm_qwen3_layer *L, const gm_qwen3_acts *a,
			     const gm_qwen3_grads *g)
{
	int64_t n = a->n, H = d->hidden;
	gm_op_attn at = { d->n_heads, d->n_kv, d->head_dim, d->att_scale };
	gm_op_qk qk = qk_params(d, L, a);

	/* MLP */
	lin_bwd(o, g, GM_PEFT_DOWN_PROJ, g->dx, a->act, g->dg, 0, n); /* dg holds d(act) for now */
	gm_op_silu_mul_backward(o, g->dg, g->dup, a->g, a->up, n, d->inter);
	lin_bwd(o, g, GM_PEFT_GATE_PROJ, g->dg, a->n2, g->dn, 0, n);
	lin_bwd(o, g, GM_PEFT_UP_PROJ, g->dup, a->n2, g->dn, 1, n);
	gm_op_rmsnorm_backward(o, g->dx, 1, g->dn, a->x1, L->post_norm, n, H, d->eps);
	/* attention */
	lin_bwd(o, g, GM_PEFT_O_PROJ, g->dx, a->att, g->datt, 0, n);
	gm_op_attention_seq_backward(o, &at, a->qr, a->kr, a->v, a->probs, g->datt, g->dq, g->dk, g->dv, n);
	gm_op_qk_norm_rope_backward(o, &qk, g->dq, g->dk, a->q, a->k, n);
	lin_bwd(o, g, GM_PEFT_Q_PROJ, g->dq, a->n1, g->dn, 0, n);
	lin_bwd(o, g, GM_PEFT_K_PROJ, g->dk, a->n1, g->dn, 1, n);
	lin_bwd(o, g, GM_PEFT_V_PROJ, g->dv, a->n1, g->dn, 1, n);
	gm_op_rmsnorm_backward(o, g->dx, 1, g->dn, a->x, L->input_norm, n, H, d->eps);
}

/* inv_freq[j] = theta^(-2j/d), with llama3 scaling when configured; rounded to f32 as transformers keeps it. */
void gm_qwen3_rope_init(const gm_model *m, float *inv_freq)
{
	const gm_model_config *c = &m->config;
	int64_t j, hd = c->head_dim, half = hd / 2;

	for (j = 0; j < half; j++) {
		double inv = 1.0 / pow(c->rope_theta, (double)(2 * j) / (double)hd);

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
		inv_freq[j] = (float)inv;
	}
}

/* The angle in double from the f32 inverse frequency, as transformers computes it. */
void gm_qwen3_rope_rows(const float *inv_freq, int64_t head_dim, const int32_t *pos, int64_t n, float *cs, float *sn)
{
	int64_t t, j, half = head_dim / 2;

	for (t = 0; t < n; t++) {
		for (j = 0; j < half; j++) {
			double a = (double)pos[t] * (double)inv_freq[j];

			cs[t * half + j] = (float)cos(a);
			sn[t * half + j] = (float)sin(a);
		}
	}
}
