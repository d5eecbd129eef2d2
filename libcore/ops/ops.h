/*
 * ops.h - the op layer: the operations the model definition (qwen3.h) is
 * written in, forward and (where training needs it) backward, independent
 * of where they run.
 *
 * A gm_ops is a backend instance: the CPU backend (ops-cpu.c, over
 * kernels.h and a thread pool) now, a CUDA one later.  The signatures name
 * activations by pointer and shape only: row-major f32 matrices [n, d]
 * with a row stride (ld, in elements) where rows need not be contiguous,
 * weights as the model's tensors (gm_tensor: [out, in], F32/BF16/F16 or a
 * block-quantized type of formats/quant.h: linear products, embedding rows),
 * adapters as f32 matrices.  Nothing here names a thread or a kernel
 * variant; a backend owns its scratch memory, grown as calls need it.
 *
 * Every op is deterministic: an output element's value does not depend on
 * the number of threads, nor on which other rows share the call (the
 * row-wise ops and attention), nor, for gm_op_linear, on the other rows
 * when the call's rows use the same product (see gm_op_linear).
 *
 * A gm_ops is used by one thread at a time.
 */
#ifndef GM_OPS_H
#define GM_OPS_H

#include <stdint.h>

#include "base/error.h"
#include "ops/kv.h"
#include "ops/matmul-mode.h"
#include "formats/weights.h"

typedef struct gm_ops gm_ops;

/* The CPU backend with n_threads threads (>= 1), in GM_MATMUL_PRECISE mode. */
int gm_ops_cpu_new(int n_threads, gm_ops **out, gm_error *err);
void gm_ops_free(gm_ops *o);
int gm_ops_n_threads(const gm_ops *o);

/* How gm_op_linear multiplies activations by BF16 weights (ops/matmul-mode.h). */
void gm_ops_set_matmul_mode(gm_ops *o, enum gm_matmul_mode mode);

/* ---------------------------------------------------------------- linear */

/* A LoRA: y += (scale * x A^T) B^T.  A: [rank, in], B: [out, rank], f32 (scale 1: folded into A). */
typedef struct gm_op_lora {
	int64_t rank;        /* 0: none */
	const float *a;
	const float *b;
	float scale;
} gm_op_lora;

/* A sparse delta in CSR: y[t, r] += sum_k vals[k] x[t, cols[k]], k in rowp[r] .. rowp[r + 1]. */
typedef struct gm_op_sparse {
	int64_t nnz;         /* 0: none */
	const int64_t *rowp; /* [out + 1] */
	const int32_t *cols; /* [nnz] */
	const float *vals;   /* [nnz] */
} gm_op_sparse;

/* The adapters of one projection over the rows [r0, r1) of the call. */
typedef struct gm_op_delta {
	int64_t r0, r1;
	const gm_op_lora *lora;     /* NULL: none */
	const gm_op_sparse *sparse; /* NULL: none */
	float *u;                   /* NULL, or [r1 - r0, rank]: x A^T kept (before the scale) for the backward */
} gm_op_delta;

/* One weight of a gm_op_linear call. */
typedef struct gm_op_linear_out {
	const gm_tensor *w;         /* W: [out, in] */
	float *y;                   /* Y: [n, out], row stride ldy */
	int64_t ldy;
	const gm_op_delta *deltas;  /* n_deltas ranges (disjoint), or NULL */
	int n_deltas;
} gm_op_linear_out;

#define GM_OP_LINEAR_MAX 3 /* weights sharing one input in one call */

/* Which kernels gm_op_linear runs rows through (below). */
enum gm_op_rows {
	GM_OP_ROWS_BY_SIZE,
	GM_OP_ROWS_DOT,
	GM_OP_ROWS_BLOCK,
	GM_OP_ROWS_TRAIN
};

/*
 * Y_i = X W_i^T for the n_outs weights (all [out_i, in]) sharing X: [n, in]
 * (row stride ldx), each weight read once for all n rows; then each
 * delta's sparse product and LoRA added to its rows:
 *
 *   Y_i[r0:r1] += x D^T;   Y_i[r0:r1] += (scale * x[r0:r1] A^T) B^T
 *
 * The kernels for a few rows (dot products: decoding) and for many (blocks:
 * prompts) sum in different orders (kernels.h), so a row's bits depend on
 * which runs it, never on the other rows.  form chooses:
 *   GM_OP_ROWS_BY_SIZE  the fastest for n (inference): one row by
 *                       gm_matvec, a few by dot products, more by blocks
 *                       (a short last block by dot products): a row within
 *                       float rounding of the same row in another call;
 *   GM_OP_ROWS_DOT      every row by dot products, however many: a decode
 *                       row's bits are those of its token alone;
 *   GM_OP_ROWS_BLOCK    every row by blocks, however few: a prompt row's
 *                       bits are the same whatever else is in the call and
 *                       however the prompt is split into calls;
 *   GM_OP_ROWS_TRAIN    training: the matrix form by size for float W, and
 *                       a block-type W (formats/quant.h) dequantized a
 *                       panel at a time and multiplied in f32, exactly
 *                       what W dequantized to F32 gives (QLoRA: the loss is
 *                       the dequantized model's).
 * In inference a block-type W multiplies X quantized per block with integer
 * dot products (kernels.h, gm_qmatmul; its own two families, chosen the same
 * way).  The deltas run in the same form, in f32 as on a float W.
 */
void gm_op_linear(gm_ops *o, const float *x, int64_t ldx, int64_t n, const gm_op_linear_out *outs, int n_outs,
		  enum gm_op_rows form);

/*
 * Backward of Y = X W^T + (s X A^T) B^T (a gm_op_linear output with one
 * delta over all n rows), given dY [n, out] (contiguous):
 *
 *   dX (=, or += when add) dY W + (s dY B) A          [n, in], contiguous
 *   dB += s dY^T u,  dA += (s dY B)^T X               (u = X A^T from the forward)
 *
 * wt: W^T [in, out] (the same dtype as W; the backend reads it as the
 * weight of a forward product); for a block-quantized W (formats/quant.h),
 * whose blocks run along its rows and cannot be transposed, W itself
 * [out, in]: dY W is computed through W dequantized a tile of rows at a
 * time (QLoRA: the base stays quantized).  lora NULL or rank 0: dX only.
 */
void gm_op_linear_backward(gm_ops *o, const gm_tensor *wt, const float *dy, int64_t n, float *dx, int add,
			   const gm_op_lora *lora, const float *x, const float *u, float *ga, float *gb);

/* dst = W^T, [in, out], of W [out, in] (F32, BF16 or F16; the same type, bit for bit): the weight of dY W.
 * A block-quantized W is copied as it is (W.nbytes bytes): gm_op_linear_backward reads such W untransposed. */
void gm_op_transpose(gm_ops *o, void *dst, const gm_tensor *w);

/* ---------------------------------------------------------------- row-wise ops */

/* out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w, for rows t < n of dim elements (contiguous rows). */
void gm_op_rmsnorm(gm_ops *o, float *out, const float *x, const gm_tensor *w, int64_t n, int64_t dim, float eps);
/* xo = x + d; out = rmsnorm(xo, w), rows t < n (xo may be x; out may not alias them). */
void gm_op_add_rmsnorm(gm_ops *o, float *xo, const float *x, const float *d, float *out, const gm_tensor *w,
		       int64_t n, int64_t dim, float eps);
/*
 * Backward of out = rmsnorm(x) w for rows t < n: dx (=, or += when add)
 * r (dy w) - x r^3 sum(dy w x) / dim, r = (mean x^2 + eps)^-1/2.
 */
void gm_op_rmsnorm_backward(gm_ops *o, float *dx, int add, const float *dy, const float *x, const gm_tensor *w,
			    int64_t n, int64_t dim, float eps);
/* y = a + b, n elements (y may be a or b). */
void gm_op_add(gm_ops *o, float *y, const float *a, const float *b, int64_t n);

/*
 * The attention inputs of rows t < n: q [n, nh * hd], k and v [n, nkv * hd]
 * (contiguous).  q, k, v += their biases (NULL: none); then each head of q
 * and k: rmsnorm with q_norm / k_norm (NULL: none) and the rotary
 * embedding of the row's position (cs, sn: [n, hd / 2]), written to qo, ko
 * (which may be q, k).  With kv set, the row's key (ko) and value are then
 * stored in the pool as gm_op_kv_store does (in the same pass over the
 * rows: one synchronisation less per layer).
 */
typedef struct gm_op_qk {
	int64_t nh, nkv, hd;
	const gm_tensor *q_bias, *k_bias, *v_bias;
	const gm_tensor *q_norm, *k_norm;
	float eps;
	const float *cs, *sn;
	gm_kv *kv;                 /* NULL: no store */
	int64_t layer;
	const int32_t *seq, *pos;
} gm_op_qk;
void gm_op_qk_norm_rope(gm_ops *o, const gm_op_qk *p, float *q, float *k, float *v, float *qo, float *ko,
			int64_t n);
/* Backward (no biases): dq, dk (in place) from d(qo), d(ko) to d(q), d(k); q, k: the inputs. */
void gm_op_qk_norm_rope_backward(gm_ops *o, const gm_op_qk *p, float *dq, float *dk, const float *q,
				 const float *k, int64_t n);

/* out = silu(g) * up, [n, dim] (out may be g). */
void gm_op_silu_mul(gm_ops *o, float *out, const float *g, const float *up, int64_t n, int64_t dim);
/* Backward: on entry dg holds d(out); on return dg = d(g), dup = d(up). */
void gm_op_silu_mul_backward(gm_ops *o, float *dg, float *dup, const float *g, const float *up, int64_t n,
			     int64_t dim);

/* x[t] = row ids[t] of the embedding table emb ([vocab, dim]), t < n. */
void gm_op_embed(gm_ops *o, float *x, const gm_tensor *emb, const int32_t *ids, int64_t n);

/*
 * Cross-entropy of rows t < n of z ([n, V] logits, replaced): loss[t] =
 * logsumexp(z[t]) - z[t, target[t]]; when inv_norm != 0, z becomes
 * dL/dz = inv_norm * (softmax(z) - onehot(target)).
 */
void gm_op_cross_entropy(gm_ops *o, float *z, int64_t V, const int32_t *target, int64_t n, double *loss,
			 float inv_norm);

/* ---------------------------------------------------------------- attention */

/* Attention geometry: nh query heads over nkv key/value heads (GQA: head h reads kv head h / (nh / nkv)). */
typedef struct gm_op_attn {
	int64_t nh, nkv, hd;
	float scale;       /* 1 / sqrt(hd) */
} gm_op_attn;

/*
 * Rows of a KV pool (kv.h): row t is sequence seq[t] at position pos[t];
 * layer: the model layer.  kv_store writes k and v ([n, nkv * hd]) to the
 * rows' slots (whose blocks gm_kv reserved); attention_kv computes att [n,
 * nh * hd] = softmax(q k^T * scale) v of each row over its sequence's
 * positions 0 .. pos[t] (written before, or by this step's kv_store).
 */
void gm_op_kv_store(gm_ops *o, gm_kv *kv, int64_t layer, const int32_t *seq, const int32_t *pos, const float *k,
		    const float *v, int64_t n, int64_t nkv, int64_t hd);
void gm_op_attention_kv(gm_ops *o, const gm_op_attn *a, gm_kv *kv, int64_t layer, const int32_t *seq,
			const int32_t *pos, const float *q, float *att, int64_t n);

/*
 * Causal attention of T rows over themselves (one sequence, positions 0 ..
 * T - 1): q [T, nh * hd], k, v [T, nkv * hd], att [T, nh * hd]; probs
 * [nh, T, T] receives the probabilities (zero above the diagonal) for the
 * backward.
 */
void gm_op_attention_seq(gm_ops *o, const gm_op_attn *a, const float *q, const float *k, const float *v, float *att,
			 float *probs, int64_t T);
/* Its backward: dq, dk, dv (set) from datt, given the forward's inputs and probs. */
void gm_op_attention_seq_backward(gm_ops *o, const gm_op_attn *a, const float *q, const float *k, const float *v,
				  const float *probs, const float *datt, float *dq, float *dk, float *dv, int64_t T);

#endif
