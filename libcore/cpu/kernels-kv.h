/*
 * kernels-kv.h - attention kernels over the paged KV cache (kv.h).
 *
 * Keys and values are rows of head_dim elements of type kt (F32, BF16 or
 * F16), GM_KV_BLOCK (or fewer) contiguous rows per block; queries,
 * scores, probabilities and outputs are f32.  AVX-512, AVX2 and portable
 * variants, chosen as kernels.h chooses (gm_kernels_isa).
 *
 * Determinism: a score is one dot product summed in a fixed order (lanes
 * of 16, 8 or 1 over the head dimension, then the lanes in a fixed tree),
 * the same whatever the number of queries computed with it; an output
 * element is accumulated over keys in position order.  So a token's
 * attention result does not depend on which other tokens, heads or
 * sequences share the call or the batch.
 */
#ifndef GM_KERNELS_KV_H
#define GM_KERNELS_KV_H

#include <stdint.h>

#include "formats/dtype.h"

/* Rows of query pointers one call serves at most (the heads of a GQA group). */
#define GM_ATTN_MAXQ 16

/*
 * s[j][t] = sum_i q[j][i] * k[t * d + i]   for j < nq, t < nk
 * q: nq pointers to [d] f32; k: [nk, d] of type kt; s: nq pointers, [nk] each written.
 */
void gm_attn_scores(float *const *s, const float *const *q, int nq, const void *k, enum gm_dtype kt, int64_t nk,
		    int64_t d);

/*
 * o[j][i] += sum_t p[j][t] * v[t * d + i]   for j < nq, i < d, t < nk in order
 * p: nq pointers to [nk] f32; v: [nk, d] of type vt; o: nq pointers to [d] f32.
 */
void gm_attn_accum(float *const *o, const float *const *p, int nq, const void *v, enum gm_dtype vt, int64_t nk,
		   int64_t d);

/* dst[i] = src[i] rounded to type dt (F32, BF16 or F16: nearest even), i < n. */
void gm_kv_store_row(void *dst, enum gm_dtype dt, const float *src, int64_t n);

#endif
