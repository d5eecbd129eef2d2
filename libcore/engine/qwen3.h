/*
 * qwen3.h - the decoder of Qwen3, Qwen2 and Llama, written once over the
 * op layer (ops.h): the layer's forward, used by inference (over a KV
 * pool, one or many sequences) and by training (over a whole sequence,
 * keeping what the backward needs), and its backward, used by training.
 *
 * One layer, for n rows (x: the residual stream entering it, [n, hidden]):
 *
 *   n1 = rmsnorm(x, input_layernorm)
 *   q, k, v = lin_q(n1), lin_k(n1), lin_v(n1)   lin_p(x) = x W^T (+ deltas: LoRA, sparse; per row range)
 *   q, k, v += biases (Qwen2)
 *   qr, kr = rope(rmsnorm_head(q, q_norm)), rope(rmsnorm_head(k, k_norm))   (norms: Qwen3)
 *   att = softmax(qr kr^T / sqrt(hd), causal) v   over a KV pool (kr, v stored first) or the rows themselves
 *   x1 = x + lin_o(att)
 *   n2 = rmsnorm(x1, post_attention_layernorm)
 *   act = silu(lin_gate(n2)) * lin_up(n2)
 *   y = x1 + lin_down(act)
 *
 * and the model around it: y = embed(ids); the layers; logits =
 * rmsnorm(y, final_norm) lm_head^T.
 *
 * The backward (given dy, the same buffer becomes dx):
 *
 *   d act = lin_down^T(dy);  dg, dup = silu_mul^T(d act);  dn = lin_gate^T(dg) + lin_up^T(dup)
 *   dx1 = dy + rmsnorm^T(dn);  datt = lin_o^T(dx1);  dq, dk, dv = attention^T(datt)
 *   dq, dk = (rope o rmsnorm_head)^T;  dn = lin_q^T(dq) + lin_k^T(dk) + lin_v^T(dv)
 *   dx = dx1 + rmsnorm^T(dn)
 *
 * with each lin^T accumulating its LoRA's gradients (gm_op_linear_backward).
 */
#ifndef GM_QWEN3_H
#define GM_QWEN3_H

#include <stdint.h>

#include "formats/model.h"
#include "ops/ops.h"
#include "formats/peft.h"

#define GM_QWEN3_NP GM_PEFT_PROJ_COUNT /* projections, in enum gm_peft_proj order */

/* The model's shape as the definition uses it. */
typedef struct gm_qwen3_dims {
	int64_t hidden, q_dim, kv_dim, head_dim, n_heads, n_kv, inter, vocab, n_layers;
	float eps, att_scale;
} gm_qwen3_dims;

void gm_qwen3_dims_of(const gm_model *m, gm_qwen3_dims *d);

/* The weights of one layer (the model's, or copies), and the deltas of its projections. */
typedef struct gm_qwen3_layer {
	const gm_tensor *input_norm, *post_norm, *q_norm, *k_norm; /* q_norm, k_norm NULL: none */
	const gm_tensor *q_bias, *k_bias, *v_bias;                  /* NULL: none */
	const gm_tensor *w[GM_QWEN3_NP];                            /* q, k, v, o, gate, up, down: [out, in] */
	const gm_op_delta *deltas[GM_QWEN3_NP];                     /* n_deltas[p] row ranges, or NULL */
	int n_deltas[GM_QWEN3_NP];
} gm_qwen3_layer;

/* The layer l of model m as it is stored (no deltas). */
void gm_qwen3_layer_of(const gm_model *m, int64_t l, gm_qwen3_layer *out);

/*
 * One layer's activations for n rows, all contiguous [n, *]; the layout
 * says which may alias (inference keeps one buffer where training keeps
 * both for the backward).  cs, sn: [n, head_dim / 2], the rope of each
 * row's position.
 *
 * Attention: with kv set, over the pool's sequences (row t: sequence
 * seq[t] at position pos[t]; layer kv_layer of the pool); without, causal
 * over the n rows themselves (positions 0 .. n - 1), the probabilities
 * kept in probs [n_heads, n, n].
 */
typedef struct gm_qwen3_acts {
	int64_t n;
	float *x;             /* [n, hidden] in */
	float *y;             /* [n, hidden] out (may be x) */
	float *n1;            /* [n, hidden] */
	float *q, *k, *v;     /* [n, q_dim], [n, kv_dim] x 2 */
	float *qr, *kr;       /* after bias, norm and rope (may be q, k) */
	float *att;           /* [n, q_dim] */
	float *x1;            /* [n, hidden] (may be x) */
	float *tmp;           /* [n, hidden]: o and down outputs */
	float *n2;            /* [n, hidden] (may be n1) */
	float *g, *up, *act;  /* [n, inter] (act may be g) */
	const float *cs, *sn;
	gm_kv *kv;
	const int32_t *seq, *pos;
	float *probs;
	enum gm_op_rows rows; /* gm_op_linear's form: inference by size or by role, training */
	/*
	 * Inference, in place (y = x1 = x): defer leaves the last residual add
	 * to the caller (y = x1 and tmp holds lin_down(act)); pending says that
	 * x still lacks the previous layer's deferred tmp, added in the input
	 * norm's pass.  One synchronisation less per layer.
	 */
	int defer, pending;
} gm_qwen3_acts;

void gm_qwen3_layer_forward(gm_ops *o, const gm_qwen3_dims *d, int64_t layer, const gm_qwen3_layer *L,
			    const gm_qwen3_acts *a);

/*
 * The backward of gm_qwen3_layer_forward over its own rows (kv NULL), after
 * the forward of the same layer (its activations as it left them; qr, kr,
 * x1, n2, act must not have aliased).  dx: [n, hidden], dL/dy on entry,
 * dL/dx on return.  The other buffers are scratch of the forward's shapes.
 */
typedef struct gm_qwen3_grads {
	const gm_tensor *wt[GM_QWEN3_NP];    /* W^T [in, out] of each projection */
	const gm_op_lora *lora[GM_QWEN3_NP]; /* NULL: not adapted */
	const float *u[GM_QWEN3_NP];         /* x A^T kept by the forward (gm_op_delta.u) */
	float *ga[GM_QWEN3_NP], *gb[GM_QWEN3_NP]; /* LoRA gradients, accumulated */
	float *dx, *dn, *dq, *dk, *dv, *datt, *dg, *dup;
} gm_qwen3_grads;

void gm_qwen3_layer_backward(gm_ops *o, const gm_qwen3_dims *d, const gm_qwen3_layer *L, const gm_qwen3_acts *a,
			     const gm_qwen3_grads *g);

/* cos and sin of positions pos[t] (t < n) for the rope: cs, sn [n, head_dim / 2]; inv_freq [head_dim / 2]. */
void gm_qwen3_rope_init(const gm_model *m, float *inv_freq);
void gm_qwen3_rope_rows(const float *inv_freq, int64_t head_dim, const int32_t *pos, int64_t n, float *cs, float *sn);

#endif
