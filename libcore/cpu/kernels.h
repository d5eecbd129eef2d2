/*
 * kernels.h - the numeric kernels of the CPU forward pass.
 *
 * Activations are f32.  Weights are used where gm_model mapped them, in
 * their stored type (F32, F16 or BF16), row-major [out, in] with a row
 * stride ldw (in elements, >= in); they are never converted in bulk.
 *
 * The dot-product kernels (gm_matvec, gm_matmul and the weight packing
 * they use) come in three variants chosen at run time: AVX-512
 * (avx512f+bw+vl), AVX2 (avx2+fma+f16c) and portable C; gm_softmax and
 * gm_silu_mul have an AVX-512 variant (a vector exp, about 1 ulp) and the
 * portable one (expf), the other small kernels are portable.  Each variant is
 * compiled with a per-function target attribute, so the library itself
 * runs on any x86-64 (and builds elsewhere, or with -DGM_NO_SIMD, with the
 * portable code only).
 * The best variant the CPU supports is used, unless the environment
 * variable GM_KERNELS names another one:
 *
 *   GM_KERNELS=portable|avx2|avx512
 *
 * (read once, on first use; a variant the CPU lacks falls back to the best
 * one it has).  Tests force a variant with gm_kernels_set_isa.
 *
 * Every kernel is deterministic: the result of one output element does not
 * depend on how rows are split among threads.
 */
#ifndef GM_KERNELS_H
#define GM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "formats/dtype.h"
#include "cpu/threadpool.h"
#include "ops/matmul-mode.h"

enum gm_isa {
	GM_ISA_PORTABLE,
	GM_ISA_AVX2,
	GM_ISA_AVX512
};

/*
 * The product of BF16 weights follows a mode (enum gm_matmul_mode, ops.h),
 * a parameter of each call:
 *   GM_MATMUL_PRECISE  f32 activations, weights converted to f32, f32 FMAs
 *                      (meets the 1e-4 golden tolerance);
 *   GM_MATMUL_FAST     every product (one token or a batch) rounds the
 *                      activations to bf16 (to nearest even), reads the
 *                      bf16 weights in place and sums the products in f32
 *                      by AVX512_BF16 vdpbf16ps, as llama.cpp and PyTorch
 *                      compute a bf16 model: logits move by about 1e-2
 *                      (relative), see docs/design-notes.md.  Needs the
 *                      AVX-512 variant and a CPU with AVX512_BF16; else the
 *                      precise kernels run.
 * F32 and F16 weights are always precise.  Pack and product of one X must
 * be given the same mode.
 */
/* 1 when the CPU could run GM_MATMUL_FAST: AVX-512 with AVX512_BF16. */
int gm_kernels_bf16_supported(void);
/* 1 when GM_MATMUL_FAST takes effect: the avx512 variant in use on such a CPU (else fast runs precise). */
int gm_kernels_fast_matmul(void);

/* The variant in use (detected, or GM_KERNELS). */
enum gm_isa gm_kernels_isa(void);
const char *gm_isa_name(enum gm_isa isa);
int gm_kernels_isa_supported(enum gm_isa isa);
/* Forces a variant (tests, benchmarks); -1 when the CPU does not support it. */
int gm_kernels_set_isa(enum gm_isa isa);

/*
 * Matrix-vector product for one token:
 *   y[r] = sum_k W[r, k] * x[k]      for r in [r0, r1)
 * W: [rows, in] of type wt, row stride ldw; x: [in] f32; y: indexed by the
 * row number (y[r0] .. y[r1 - 1] are written).  Memory-bound: the rows are
 * streamed 8 at a time (AVX-512; 4 with AVX2), each sum in its own vector
 * accumulator.
 */
void gm_matvec(float *y, const void *w, enum gm_dtype wt, int64_t ldw, const float *x, int64_t in,
	       int64_t r0, int64_t r1, enum gm_matmul_mode mode);

/*
 * Matrix-matrix product for n tokens, reading the weights once:
 *   Y[t, r] = sum_k W[r, k] * X[t, k]   for t in [0, n), r in [r0, r1)
 *
 * Two families of kernels, whose sums run in different orders (a row's
 * bits depend on the family, never on the other rows of the call):
 *   dot products: each weight row read once, in place, for all the tokens,
 *     each Y element the sum gm_matvec computes in the same mode, bit for
 *     bit (decoding: a few sequences, or one);
 *   blocks: tiles of GM_MATMUL_TR rows by GM_MATMUL_TB tokens, each Y
 *     element a sum over k in order (fast mode: over the bf16 pairs in
 *     order), whatever the block's token count (prompts).
 * dot_max picks the family: all of X by dot products when n <= dot_max,
 * else blocks of GM_MATMUL_TB tokens, a last block of at most dot_max
 * tokens by dot products.  GM_MATMUL_SMALL is the fastest choice by size;
 * 0 makes every row a block row (however few), INT64_MAX every row a
 * dot-product row (however many): what a caller uses when a row must get
 * the same bits whatever else is in the call (gm_op_linear's row forms).
 *
 * X is first packed (gm_matmul_pack, with the same n and dot_max) into
 * blocks of GM_MATMUL_TB tokens: a block of block rows is transposed,
 * xt[b][k][j] = X[b * TB + j, k], zero past n; dot-product rows keep X's
 * layout, xt[b][j][k] = X[b * TB + j, k] (so all of X when n <= dot_max).
 * xt holds gm_matmul_xt_len(n, in) floats: the f32 blocks, then, in fast
 * mode, the bf16 activations (pairs of a block, rows of dot-product rows)
 * found from n.  gm_matmul(xt + b * TB * in, nt, ...) on block b alone,
 * with nt its token count, is allowed except for BF16 weights in fast
 * mode.  Y: [n, *] with row stride ldy, columns r0..r1-1 written.  panel:
 * per-thread scratch of gm_matmul_panel_len(in) floats, where BF16/F16
 * rows of W are converted to f32 for the block kernels (F32 weights, and
 * BF16 ones in fast mode, are read in place).
 * Every Y element is the same whatever the split of rows among threads.
 */
#define GM_MATMUL_TB 32    /* tokens per packed block */
#define GM_MATMUL_TR 12    /* weight rows per micro-tile */
#define GM_MATMUL_SMALL 16 /* dot_max by size: blocks of at most this many tokens use the dot-product kernels */
size_t gm_matmul_xt_len(int64_t n, int64_t in);
size_t gm_matmul_panel_len(int64_t in);
/* Packs token blocks [b0, b1) of X ([n, in], row stride ldx) into xt, for gm_matmul with n and dot_max. */
void gm_matmul_pack(float *xt, const float *x, int64_t ldx, int64_t n, int64_t in, int64_t b0, int64_t b1,
		    int64_t dot_max, enum gm_matmul_mode mode);
/* gm_matmul_pack of all of X, its blocks shared out over pool's threads. */
void gm_matmul_pack_all(gm_threadpool *pool, float *xt, const float *x, int64_t ldx, int64_t n, int64_t in,
			int64_t dot_max, enum gm_matmul_mode mode);
void gm_matmul(float *y, int64_t ldy, const float *xt, int64_t n, const void *w, enum gm_dtype wt,
	       int64_t ldw, int64_t in, int64_t r0, int64_t r1, float *panel, int64_t dot_max, enum gm_matmul_mode mode);

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i], i < n; w: [n] of type wt.  out may be x. */
void gm_rmsnorm(float *out, const float *x, const void *w, enum gm_dtype wt, int64_t n, float eps);

/*
 * Rotary embedding of one head, rotate-half (GPT-NeoX / HF Llama, Qwen)
 * style: pairs (j, j + d/2) for j < d/2 are rotated by the angle whose
 * cosine and sine are cs[j] and sn[j]:
 *   v[j]       = v[j] * cs[j] - v[j + d/2] * sn[j]
 *   v[j + d/2] = v[j + d/2] * cs[j] + v[j] * sn[j]
 * v: [d] f32 in place, d even; cs, sn: [d/2].
 */
void gm_rope(float *v, const float *cs, const float *sn, int64_t d);

/* x[i] = exp(x[i] - max) / sum, i < n (n >= 1). */
void gm_softmax(float *x, int64_t n);

/* g[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i], i < n. */
void gm_silu_mul(float *g, const float *u, int64_t n);

/* dst[i] = (float)w[i], i < n: one row of a weight (embedding lookup, biases). */
void gm_load_f32(float *dst, const void *w, enum gm_dtype wt, int64_t n);

/*
 * Kernels of the training backward pass (train.c).
 *
 * gm_transpose: dst = src^T for the columns [r0, r1) of src: src is
 * [rows, cols] row-major, dst [cols, rows]; elsize 2 (BF16/F16, copied
 * bit for bit) or 4.  Training keeps W^T, [in, out], of each frozen weight
 * W, [out, in], so that the input gradient dX = dY W, [n, in], is the
 * forward's gm_matmul with W^T as the weight: dX[t, c] = sum_r W^T[c, r] dY[t, r].
 */
void gm_transpose(void *dst, const void *src, size_t elsize, int64_t rows, int64_t cols, int64_t r0, int64_t r1);
/*
 * C += A^T B for the rows [m0, m1) and columns [n0, n1) of C:
 *   C[m, n] += sum_k A[k, m] * B[k, n],   k < K in order
 * A: [K, >= m1] row stride lda; B: [K, >= n1] row stride ldb; C row stride
 * ldc; f32.  The LoRA weight gradients: dB += dY^T (s u) (A = dY [T, out],
 * B = s u [T, r]) and dA += gu^T X (A = gu [T, r], B = X [T, in]); in
 * attention dV += P^T dO and dK += dS^T Q (A: [T, T], B: [T, head_dim]).
 */
void gm_matmul_tn(float *c, int64_t ldc, const float *a, int64_t lda, const float *b, int64_t ldb, int64_t K,
		  int64_t m0, int64_t m1, int64_t n0, int64_t n1);

/*
 * Block-quantized weights (kernels-quant.c; formats in formats/quant.h):
 * W: [rows, in] of a block type wt, rows contiguous (gm_quant_row_bytes
 * each), in a multiple of the block.  The activations of a token are
 * quantized once (gm_qact_quantize, gm_qact_len(wt, in) bytes per token):
 * blocks of 32 int8 with an f32 scale for the 32-element types (Q4_0, Q4_1,
 * Q5_0, Q5_1, Q8_0), ggml's Q8_K for the K-quants (gm_qact_kind 1), so
 * activations quantized once serve every weight of the same kind.  Each
 * weight block's dot product with them is an integer sum, scaled in f32;
 * the variants (AVX-512 with VNNI, AVX2, portable) sum the blocks in
 * different orders (a few ulp apart), each one deterministic.
 *
 *   gm_qmatvec: y[r] = W[r, :] . x          r in [r0, r1), xq one token
 *   gm_qmatmul: y[t * ldy + r] = W[r, :] . X[t, :]   t < n, r in [r0, r1),
 *               xq n tokens one after the other; each (r, t) the same bits
 *               as gm_qmatvec gives when n <= dot_max (GM_QMATMUL_SMALL
 *               by size: a decode step of a few sequences); more tokens
 *               with a 32-element type (or Q4_K, Q5_K, Q6_K) and AVX-512
 *               VNNI take panels of 16 rows (prompts: a few ulp from
 *               gm_qmatvec, the same bits whatever n above dot_max, the
 *               threads and the row range).  dot_max 0 / INT64_MAX: every
 *               row by panels (where the type and CPU have them) / as
 *               gm_qmatvec, whatever n.
 */
#define GM_QMATMUL_SMALL 16
int gm_qweight_supported(enum gm_dtype wt);
int gm_qact_kind(enum gm_dtype wt);
size_t gm_qact_len(enum gm_dtype wt, int64_t in);
void gm_qact_quantize(void *xq, enum gm_dtype wt, const float *x, int64_t in);
/* gm_quant_dequantize of n values of W (bit for bit the same floats), in vectors where the variant has them. */
void gm_qdequantize(enum gm_dtype wt, const void *w, float *y, int64_t n);
/* x = the values xq stands for (tests: the exact reference of the integer products). */
void gm_qact_dequantize(float *x, enum gm_dtype wt, const void *xq, int64_t in);
void gm_qmatvec(float *y, const void *w, enum gm_dtype wt, const void *xq, int64_t in, int64_t r0, int64_t r1);
void gm_qmatmul(float *y, int64_t ldy, const void *xq, int64_t n, const void *w, enum gm_dtype wt, int64_t in,
		int64_t r0, int64_t r1, int64_t dot_max);

#endif
