/*
 * kernels-quant.c - products of block-quantized weights (formats/quant.h)
 * with f32 activations, with integer dot products (see kernels.h).
 *
 * The activations of a token are quantized once per call, as the formats
 * intend (gm_qact_quantize):
 *   - for the 32-element types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): ggml's Q8_0
 *     activations, blocks of 32 int8 q = round(x 127 / max |x|) (ties to
 *     even) with d = max |x| / 127 rounded to f16, and the sum of the 32 q
 *     (struct qa32; the mins of Q4_1 / Q5_1 need it);
 *   - for the K-quants: ggml's Q8_K (d = max |x| / 127 per 256, int8
 *     quants, int16 sums of 16), formats/quant.c's quantizer.
 * A weight block's dot product with its activation block is an exact
 * integer sum (int32: no overflow for any of the formats' ranges), turned
 * into f32 once per block:
 *   Q4_0, Q5_0, Q8_0:  (dw da) sum (q - off) a
 *   Q4_1, Q5_1:        (dw da) sum q a + mw (da sum a)
 *   Q2_K, Q4_K, Q5_K:  da (dw sum_j sc_j sum q a  -  dmin sum_j m_j sum a)
 *   Q3_K, Q6_K:        (dw da) sum_j sc_j sum (q - off) a
 * and the blocks' values are summed in f32 in block order (portable), or
 * in vector lanes by a fixed scheme (SIMD: 8 lanes a block with AVX2, 16
 * lanes a pair of blocks with AVX-512): within one variant the result of
 * a (row, token) never depends on the threads or on the other tokens.
 * With AVX-512 VNNI, more than dot_max tokens (prompts) take the
 * panels (16 rows unpacked once per call, one row per lane, see "Panels"
 * below): their own fixed scheme, a few ulp from the other, again the
 * same whatever the threads and the other tokens.
 */
#include "cpu/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "formats/quant.h"

#if (defined(__x86_64__) || defined(__i386__)) && !defined(GM_NO_SIMD)
#define GM_X86 1
#include <immintrin.h>
#endif

struct qa32 {
	float d;
	int32_t s;       /* sum of q */
	int8_t q[32];
};

/*
 * The same activations again, for the AVX-512 kernels, by pairs of blocks
 * (2p, 2p + 1), laid out for one 64-byte vpdpbusd: q in "nibble order"
 * (block 2p's elements 0..15, block 2p + 1's 0..15, then both blocks'
 * 16..31: the order in which two blocks of 4-bit weights unpack), and the
 * weight type's offset as the i32 lanes' starting values (lanes 0..3 and
 * 8..11 hold block 2p, the others block 2p + 1; -off / 8 s per lane).
 * Written after the qa32 blocks of a token (at qa_pair_off), then the
 * pairs' scales and sums; a missing last block (odd count) is zero.
 */
struct qa64 {
	int8_t q[64];
	int32_t bias[16];
};

struct qa64ds {
	float d[2];
	int32_t s[2];
};

struct qak {
	float d;
	int8_t q[256];
	int16_t bsums[16];
};

static inline float f16(const uint8_t *p)
{
	uint16_t h;

	memcpy(&h, p, 2);
	return gm_f16_to_f32(h);
}

/* 1 for types whose activations are Q8_K. */
static int is_k(enum gm_dtype wt)
{
	return wt == GM_DTYPE_Q2_K || wt == GM_DTYPE_Q3_K || wt == GM_DTYPE_Q4_K || wt == GM_DTYPE_Q5_K ||
	       wt == GM_DTYPE_Q6_K;
}

int gm_qweight_supported(enum gm_dtype wt)
{
	return gm_quant_supported(wt) && wt != GM_DTYPE_Q8_K;
}

/* Where a token's qa64 pairs start (64-byte aligned), and their qa64ds after them. */
static size_t qa_pair_off(int64_t nb)
{
	return ((size_t)nb * sizeof(struct qa32) + 63) & ~(size_t)63;
}

static size_t qa_ds_off(int64_t nb)
{
	return qa_pair_off(nb) + (size_t)((nb + 1) / 2) * sizeof(struct qa64);
}

size_t gm_qact_len(enum gm_dtype wt, int64_t in)
{
	if (is_k(wt))
		return (size_t)(in / 256) * sizeof(struct qak);
	/* a multiple of 64, so that every token's pairs are aligned as the first's */
	return (qa_ds_off(in / 32) + (size_t)((in / 32 + 1) / 2) * sizeof(struct qa64ds) + 63) & ~(size_t)63;
}

/* The offset of wt's quants over 8 (sum (q - off) a = sum q a - off / 8 (8 lanes' sum a)); Q8_0 as unsigned q + 128. */
static inline int qa_bias_k(enum gm_dtype wt)
{
	return wt == GM_DTYPE_Q4_0 ? 1 : wt == GM_DTYPE_Q5_0 ? 2 : wt == GM_DTYPE_Q8_0 ? 16 : 0;
}

static void qa_pairs(void *xq, enum gm_dtype wt, int64_t nb)
{
	const struct qa32 *a = xq;
	struct qa64 *pr = (struct qa64 *)((char *)xq + qa_pair_off(nb));
	struct qa64ds *ds = (struct qa64ds *)((char *)xq + qa_ds_off(nb));
	int64_t p, np = (nb + 1) / 2;
	int h, j;

	for (p = 0; p < np; p++) {
		memset(&pr[p], 0, sizeof(pr[p]));
		memset(&ds[p], 0, sizeof(ds[p]));
		for (h = 0; h < 2 && 2 * p + h < nb; h++) {
			const struct qa32 *b = &a[2 * p + h];

			memcpy(pr[p].q + 16 * h, b->q, 16);
			memcpy(pr[p].q + 32 + 16 * h, b->q + 16, 16);
			for (j = 0; j < 4; j++)
				pr[p].bias[4 * h + j] = pr[p].bias[8 + 4 * h + j] = -qa_bias_k(wt) * b->s;
			ds[p].d[h] = b->d;
			ds[p].s[h] = b->s;
		}
	}
}

int gm_qact_kind(enum gm_dtype wt)
{
	return is_k(wt);
}

#ifdef GM_X86
#define TGT_QA __attribute__((target("avx2,fma,f16c")))

static TGT_QA float qa_amax8(__m256 m)
{
	__m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));

	h = _mm_max_ps(h, _mm_movehl_ps(h, h));
	h = _mm_max_ss(h, _mm_movehdup_ps(h));
	return _mm_cvtss_f32(h);
}

/* round(v * id) as int8 into q (32 values), their sum returned; |v * id| <= 127 (the magic-number rounding's ties to even). */
static TGT_QA int32_t qa_round32(const float *v, float id, int8_t *q)
{
	__m256 s = _mm256_set1_ps(id);
	__m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v), s));
	__m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + 8), s));
	__m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + 16), s));
	__m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + 24), s));
	__m256i sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
	/* packs work within 128-bit halves: the dwords back in order after */
	__m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
	__m128i h;

	p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
	_mm256_storeu_si256((__m256i *)q, p);
	h = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
	h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
	h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
	return _mm_cvtsi128_si32(h);
}

/* The sum of 16 int8. */
static TGT_QA int32_t qa_hsum16(__m128i q)
{
	__m128i s = _mm_madd_epi16(_mm_maddubs_epi16(_mm_set1_epi8(1), q), _mm_set1_epi16(1));

	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
	return _mm_cvtsi128_si32(s);
}

/* gm_qact_quantize's 32-element blocks in vectors: the same bytes. */
static TGT_QA void qa32_quantize_avx2(struct qa32 *a, const float *x, int64_t nb)
{
	const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	int64_t b;

	for (b = 0; b < nb; b++, a++, x += 32) {
		__m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x), abs),
						       _mm256_and_ps(_mm256_loadu_ps(x + 8), abs)),
					 _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + 16), abs),
						       _mm256_and_ps(_mm256_loadu_ps(x + 24), abs)));
		float amax = qa_amax8(m);

		a->d = gm_f16_to_f32(gm_f32_to_f16(amax / 127));
		a->s = qa_round32(x, amax ? 127 / amax : 0, a->q);
	}
}

/* ggml's Q8_K in vectors (formats/quant.c's q8_k_block: the same bytes): 256 values per block. */
static TGT_QA void q8k_quantize_avx2(struct qak *a, const float *x, int64_t nb)
{
	const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	int64_t b;
	int j;

	for (b = 0; b < nb; b++, a++, x += 256) {
		__m256 m = _mm256_setzero_ps();
		float amax, max = 0, is;

		for (j = 0; j < 256; j += 8)
			m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + j), abs));
		amax = qa_amax8(m);
		memset(a, 0, sizeof(*a));
		if (!amax)
			continue;
		/* the first value of the largest magnitude, with its sign */
		for (j = 0; j < 256; j++)
			if (fabsf(x[j]) == amax) {
				max = x[j];
				break;
			}
		is = -127.f / max;
		for (j = 0; j < 8; j++) {
			/* |is x| <= 127: no clamp needed; sums of 16 in int16 */
			int8_t *q = a->q + 32 * j;
			__m128i q16;

			qa_round32(x + 32 * j, is, q);
			q16 = _mm_loadu_si128((const __m128i *)q);
			a->bsums[2 * j] = (int16_t)qa_hsum16(q16);
			a->bsums[2 * j + 1] = (int16_t)qa_hsum16(_mm_loadu_si128((const __m128i *)(q + 16)));
		}
		a->d = 1 / is;
	}
}
#endif

void gm_qact_quantize(void *xq, enum gm_dtype wt, const float *x, int64_t in)
{
	int64_t b;
	int j;

#ifdef GM_X86
	if (gm_kernels_isa() != GM_ISA_PORTABLE) {
		if (is_k(wt)) {
			q8k_quantize_avx2(xq, x, in / 256);
		} else {
			qa32_quantize_avx2(xq, x, in / 32);
			qa_pairs(xq, wt, in / 32);
		}
		return;
	}
#endif
	if (is_k(wt)) {
		/* the same bytes as ggml's Q8_K; struct qak is that layout (292 bytes, no padding) */
		gm_quant_quantize(GM_DTYPE_Q8_K, x, xq, in);
		return;
	}
	for (b = 0; b < in / 32; b++) {
		struct qa32 *a = (struct qa32 *)xq + b;
		const float *v = x + b * 32;
		float amax = 0, id;
		int32_t s = 0;

		for (j = 0; j < 32; j++)
			amax = fabsf(v[j]) > amax ? fabsf(v[j]) : amax;
		/* the scale rounded to f16, as ggml's Q8_0 activations carry it: the same products as llama.cpp */
		a->d = gm_f16_to_f32(gm_f32_to_f16(amax / 127));
		id = amax ? 127 / amax : 0;
		for (j = 0; j < 32; j++) {
			int q = gm_quant_nearest_int(v[j] * id);

			q = q > 127 ? 127 : q < -127 ? -127 : q;
			a->q[j] = (int8_t)q;
			s += q;
		}
		a->s = s;
	}
	qa_pairs(xq, wt, in / 32);
}

void gm_qact_dequantize(float *x, enum gm_dtype wt, const void *xq, int64_t in)
{
	int64_t b;
	int j;

	if (is_k(wt)) {
		gm_quant_dequantize(GM_DTYPE_Q8_K, xq, x, in);
		return;
	}
	for (b = 0; b < in / 32; b++) {
		const struct qa32 *a = (const struct qa32 *)xq + b;

		for (j = 0; j < 32; j++)
			x[b * 32 + j] = a->d * (float)a->q[j];
	}
}

/* ---------------------------------------------------------------- portable */

static void scale_min_k4(int j, const uint8_t *q, int *d, int *m)
{
	if (j < 4) {
		*d = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
		*m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
	}
}

/* One block's value, dot product of weight block w with activation block(s) at a. */
static float block_portable(enum gm_dtype wt, const uint8_t *w, const void *av)
{
	int j, l, is, shift, n;
	int32_t sum = 0, smin = 0;

	switch (wt) {
	case GM_DTYPE_Q4_0: {
		const struct qa32 *a = av;

		for (j = 0; j < 16; j++)
			sum += ((w[2 + j] & 0xF) - 8) * a->q[j] + ((w[2 + j] >> 4) - 8) * a->q[j + 16];
		return f16(w) * a->d * (float)sum;
	}
	case GM_DTYPE_Q4_1: {
		const struct qa32 *a = av;

		for (j = 0; j < 16; j++)
			sum += (w[4 + j] & 0xF) * a->q[j] + (w[4 + j] >> 4) * a->q[j + 16];
		return f16(w) * a->d * (float)sum + f16(w + 2) * (a->d * (float)a->s);
	}
	case GM_DTYPE_Q5_0:
	case GM_DTYPE_Q5_1: {
		const struct qa32 *a = av;
		int one = wt == GM_DTYPE_Q5_1, off = one ? 0 : 16;
		const uint8_t *qs = w + (one ? 8 : 6);
		uint32_t qh;

		memcpy(&qh, w + (one ? 4 : 2), 4);
		for (j = 0; j < 16; j++) {
			int x0 = (qs[j] & 0xF) | (int)(((qh >> j) << 4) & 0x10);
			int x1 = (qs[j] >> 4) | (int)((qh >> (j + 12)) & 0x10);

			sum += (x0 - off) * a->q[j] + (x1 - off) * a->q[j + 16];
		}
		if (one)
			return f16(w) * a->d * (float)sum + f16(w + 2) * (a->d * (float)a->s);
		return f16(w) * a->d * (float)sum;
	}
	case GM_DTYPE_Q8_0: {
		const struct qa32 *a = av;

		for (j = 0; j < 32; j++)
			sum += (int8_t)w[2 + j] * a->q[j];
		return f16(w) * a->d * (float)sum;
	}
	case GM_DTYPE_Q2_K: {
		const struct qak *a = av;
		const uint8_t *q = w + 16;
		const int8_t *y = a->q;

		is = 0;
		for (n = 0; n < 256; n += 128, q += 32) {
			for (shift = 0; shift < 8; shift += 2) {
				for (l = 0; l < 32; l += 16, y += 16) {
					int sc = w[is] & 0xF, m = w[is] >> 4, s = 0, i;

					for (i = 0; i < 16; i++)
						s += ((q[l + i] >> shift) & 3) * y[i];
					sum += sc * s;
					smin += m * a->bsums[is];
					is++;
				}
			}
		}
		return a->d * f16(w + 80) * (float)sum - a->d * f16(w + 82) * (float)smin;
	}
	case GM_DTYPE_Q3_K: {
		const struct qak *a = av;
		const uint8_t *hm = w, *q = w + 32, *s8 = w + 96;
		const int8_t *y = a->q;
		int m = 1;

		is = 0;
		for (n = 0; n < 256; n += 128, q += 32) {
			for (shift = 0; shift < 8; shift += 2, m <<= 1) {
				for (l = 0; l < 32; l += 16, y += 16) {
					int lo = is < 8 ? s8[is] & 0xF : s8[is - 8] >> 4;
					int sc = (lo | ((s8[8 + is % 4] >> (2 * (is / 4))) & 3) << 4) - 32, s = 0, i;

					for (i = 0; i < 16; i++)
						s += (((q[l + i] >> shift) & 3) - ((hm[l + i] & m) ? 0 : 4)) * y[i];
					sum += sc * s;
					is++;
				}
			}
		}
		return f16(w + 108) * a->d * (float)sum;
	}
	case GM_DTYPE_Q4_K:
	case GM_DTYPE_Q5_K: {
		const struct qak *a = av;
		int five = wt == GM_DTYPE_Q5_K;
		const uint8_t *qh = w + 16, *q = w + (five ? 48 : 16);
		const int8_t *y = a->q;

		for (j = 0; j < 8; j += 2, q += 32) {
			int s1, m1, s2, m2, x1 = 0, x2 = 0;

			scale_min_k4(j, w + 4, &s1, &m1);
			scale_min_k4(j + 1, w + 4, &s2, &m2);
			for (l = 0; l < 32; l++) {
				int v1 = (q[l] & 0xF) + (five && (qh[l] >> j) & 1 ? 16 : 0);
				int v2 = (q[l] >> 4) + (five && (qh[l] >> (j + 1)) & 1 ? 16 : 0);

				x1 += v1 * y[l];
				x2 += v2 * y[32 + l];
			}
			y += 64;
			sum += s1 * x1 + s2 * x2;
			smin += m1 * (a->bsums[2 * j] + a->bsums[2 * j + 1]) + m2 * (a->bsums[2 * j + 2] + a->bsums[2 * j + 3]);
		}
		return a->d * f16(w) * (float)sum - a->d * f16(w + 2) * (float)smin;
	}
	case GM_DTYPE_Q6_K: {
		const struct qak *a = av;
		const uint8_t *ql = w, *qh = w + 128;
		const int8_t *sc = (const int8_t *)(w + 192), *y = a->q;

		for (n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8, y += 128) {
			int s[8] = { 0 };

			for (l = 0; l < 32; l++) {
				int i = l / 16;

				s[i] += (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32) * y[l];
				s[i + 2] += (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32) * y[l + 32];
				s[i + 4] += (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * y[l + 64];
				s[i + 6] += (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * y[l + 96];
			}
			for (j = 0; j < 8; j++)
				sum += sc[j] * s[j];
		}
		return f16(w + 208) * a->d * (float)sum;
	}
	default:
		return 0;
	}
}

static float dot_portable(enum gm_dtype wt, const uint8_t *w, const void *xq, int64_t nb)
{
	unsigned el, by;
	size_t as = is_k(wt) ? sizeof(struct qak) : sizeof(struct qa32);
	float acc = 0;
	int64_t b;

	gm_dtype_block(wt, &el, &by);
	for (b = 0; b < nb; b++)
		acc += block_portable(wt, w + (size_t)b * by, (const char *)xq + (size_t)b * as);
	return acc;
}

/*
 * A tile: one weight row w (nb blocks) against T <= QT tokens' activations
 * (xq[t]), out[t] = the dot product.  Each token's arithmetic is the same
 * whatever T, so gm_qmatvec (T = 1) and gm_qmatmul (tiles of up to QT)
 * agree bit for bit.  The AVX2 tiles take up to 4 tokens (16 vector
 * registers), the same code compiled for AVX-512 (32 registers) up to 8.
 */
#define QT 8
/* nr rows from w (rb bytes apart) against T tokens: y[t * ldy + i], i < nr (one call for many rows: no call per row). */
typedef void (*qtile_fn)(enum gm_dtype wt, const uint8_t *w, size_t rb, int64_t nr, const void *const *xq, int T,
			 int64_t nb, float *y, int64_t ldy);

static void tile_portable(enum gm_dtype wt, const uint8_t *w, size_t rb, int64_t nr, const void *const *xq, int T,
			  int64_t nb, float *y, int64_t ldy)
{
	int64_t i;
	int t;

	for (i = 0; i < nr; i++)
		for (t = 0; t < T; t++)
			y[t * ldy + i] = dot_portable(wt, w + (size_t)i * rb, xq[t], nb);
}

/* ---------------------------------------------------------------- x86: AVX2 (and AVX-512 VNNI) */
#ifdef GM_X86
#define TGT_Q2 __attribute__((target("avx2,fma,f16c")))
#define INL __attribute__((always_inline)) inline

static INL TGT_Q2 float f16x(const uint8_t *p)
{
	uint16_t h;

	memcpy(&h, p, 2);
	return _cvtsh_ss(h);
}

static INL TGT_Q2 float hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));

	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

static INL TGT_Q2 float hsum4(__m128 s)
{
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* Q4_0: nibbles (elements 0..15 low, 16..31 high) as u8. */
static INL TGT_Q2 __m256i q4_0_unpack(const uint8_t *qs)
{
	__m128i q = _mm_loadu_si128((const __m128i *)qs), m4 = _mm_set1_epi8(0xF);

	return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
}

/*
 * 32-element blocks with AVX2: each block's integer sum in 8 i32 lanes, converted and
 * scaled into an 8-lane f32 accumulator per token; one horizontal sum at
 * the end.  u8 x s8 products: maddubs (pairs into i16, |q| <= 127 fits)
 * then madd with ones.  Signed Q8_0 weights
 * take the sign trick (|w| times a with w's sign); Q4_0's offset of 8:
 * sum (q - 8) a = sum q a - 8 sum a, -sum a in each of the 8 lanes (Q5_0's
 * 16: -2 sum a); the mins of Q4_1 / Q5_1: m (da sum a) per block, in f32
 * with an explicit fmaf (the compiler contracts a += b * c differently in
 * different loops, and every kernel must give its variant's bits).
 */
/* Q5_0 / Q5_1: bit j of qh (at p) as 16 in byte j. */
static INL TGT_Q2 __m256i q5_high(const uint8_t *p)
{
	uint32_t qh;
	__m256i v;

	memcpy(&qh, p, 4);
	v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh),
				_mm256_setr_epi64x(0, 0x0101010101010101ll, 0x0202020202020202ll, 0x0303030303030303ll));
	v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfell));
	return _mm256_and_si256(_mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1)), _mm256_set1_epi8(0x10));
}

/* A 32-element block's quants as u8 (Q8_0: |w|, *sg = w for the sign trick). */
static INL TGT_Q2 __m256i q32_unpack(enum gm_dtype wt, const uint8_t *w, __m256i *sg)
{
	switch (wt) {
	case GM_DTYPE_Q8_0:
		*sg = _mm256_loadu_si256((const __m256i *)(w + 2));
		return _mm256_abs_epi8(*sg);
	case GM_DTYPE_Q4_1:
		return q4_0_unpack(w + 4);
	case GM_DTYPE_Q5_0:
		return _mm256_or_si256(q4_0_unpack(w + 6), q5_high(w + 2));
	case GM_DTYPE_Q5_1:
		return _mm256_or_si256(q4_0_unpack(w + 8), q5_high(w + 4));
	default:
		return q4_0_unpack(w + 2);
	}
}

/* Bytes of a block; the offset of the quants (8, 16: subtracted as off / 8 sum a per lane); 1 with a min. */
#define Q32_BYTES(wt) ((wt) == GM_DTYPE_Q8_0 ? 34 : (wt) == GM_DTYPE_Q4_0 ? 18 : (wt) == GM_DTYPE_Q4_1 ? 20 : \
		       (wt) == GM_DTYPE_Q5_0 ? 22 : 24)
#define Q32_OFF8(wt) ((wt) == GM_DTYPE_Q4_0 ? 1 : (wt) == GM_DTYPE_Q5_0 ? 2 : 0)
#define Q32_MIN(wt) ((wt) == GM_DTYPE_Q4_1 || (wt) == GM_DTYPE_Q5_1)

/* One block's integer sum in 8 i32 lanes: sum (q - off) a, or sum |w| (a with w's sign) for Q8_0. */
static INL TGT_Q2 __m256i q32_dot_avx2(int q8, int off8, __m256i u, __m256i sg, __m256i y, int32_t s)
{
	__m256i p;

	if (q8)
		y = _mm256_sign_epi8(y, sg);
	p = _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1));
	if (off8)
		p = _mm256_sub_epi32(p, _mm256_set1_epi32(off8 * s));
	return p;
}

/* A tile: one weight row against T tokens (T a constant where inlined). */
static INL TGT_Q2 void q32_avx2(enum gm_dtype wt, const uint8_t *w, const void *const *xq, const int T, int64_t nb,
				float *out)
{
	const struct qa32 *a[QT];
	__m256 acc[QT];
	float accm[QT];
	const int q8 = wt == GM_DTYPE_Q8_0, off8 = Q32_OFF8(wt), mn = Q32_MIN(wt);
	const size_t by = Q32_BYTES(wt);
	int64_t b;
	int t;

#pragma GCC unroll 8
	for (t = 0; t < T; t++) {
		a[t] = xq[t];
		acc[t] = _mm256_setzero_ps();
		accm[t] = 0;
	}
	for (b = 0; b < nb; b++, w += by) {
		float d = f16x(w), m = mn ? f16x(w + 2) : 0;
		__m256i sg = _mm256_setzero_si256(), u = q32_unpack(wt, w, &sg);

#pragma GCC unroll 8
		for (t = 0; t < T; t++) {
			__m256i y = _mm256_loadu_si256((const __m256i *)a[t][b].q);
			__m256i p = q32_dot_avx2(q8, off8, u, sg, y, a[t][b].s);

			acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[t][b].d), _mm256_cvtepi32_ps(p), acc[t]);
			if (mn)
				accm[t] = fmaf(m, a[t][b].d * (float)a[t][b].s, accm[t]);
		}
	}
#pragma GCC unroll 8
	for (t = 0; t < T; t++)
		out[t] = hsum8(acc[t]) + accm[t];
}

/* A Q4_K / Q5_K super-block's 8 6-bit scales as bytes 0..7, its 8 mins as bytes 8..15. */
static INL TGT_Q2 __m128i k45_scales(const uint8_t *w)
{
	uint32_t u[4], m03;

	memcpy(u, w + 4, 12);
	u[3] = ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4);
	m03 = u[1] & 0x3f3f3f3f;
	u[1] = (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4);
	u[2] = m03;
	u[0] &= 0x3f3f3f3f;
	return _mm_loadu_si128((const __m128i *)u);
}

/*
 * K-quants against Q8_K, per super-block: maddubs of the unsigned quants
 * with the activations (pairs in i16: at most 2 * 63 * 127), madd with the
 * sub-block scales (i16, broadcast by a byte shuffle) into 8 i32 lanes;
 * the mins (Q4_K, Q5_K) or the offset of 32 (Q6_K) from the activations'
 * sums of 16 (bsums), in integers too.  The quants are unpacked once per
 * tile and used for every token.
 */
static INL TGT_Q2 void qk45_avx2(enum gm_dtype wt, const uint8_t *w, const void *const *xq, const int T, int64_t nb,
				 float *out)
{
	const struct qak *a[QT];
	const __m256i m4 = _mm256_set1_epi8(0xF), one = _mm256_set1_epi8(1);
	const int five = wt == GM_DTYPE_Q5_K;
	const size_t by = five ? 176 : 144;
	__m256 acc[QT];
	__m128 accm[QT];
	int64_t b;
	int t, j;

#pragma GCC unroll 8
	for (t = 0; t < T; t++) {
		a[t] = xq[t];
		acc[t] = _mm256_setzero_ps();
		accm[t] = _mm_setzero_ps();
	}
	for (b = 0; b < nb; b++, w += by) {
		const uint8_t *qs = w + (five ? 48 : 16);
		__m256i isum[QT], scv, hb = _mm256_setzero_si256();
		__m128i mins;
		float d = f16x(w), dmin = f16x(w + 2);

		{
			__m128i v = k45_scales(w);

			scv = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(v));
			mins = _mm_cvtepu8_epi16(_mm_srli_si128(v, 8));
		}
#pragma GCC unroll 8
		for (t = 0; t < T; t++) {
			const __m128i *bs = (const __m128i *)a[t][b].bsums;
			__m128i pairs = _mm_hadd_epi16(_mm_loadu_si128(bs), _mm_loadu_si128(bs + 1));

			accm[t] = _mm_fmadd_ps(_mm_set1_ps(dmin * a[t][b].d), _mm_cvtepi32_ps(_mm_madd_epi16(mins, pairs)),
					       accm[t]);
			isum[t] = _mm256_setzero_si256();
		}
		if (five)
			hb = _mm256_loadu_si256((const __m256i *)(w + 16));
#pragma GCC unroll 8
		for (j = 0; j < 4; j++) {
			__m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
			__m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
			__m256i slo = _mm256_shuffle_epi8(scv, _mm256_set1_epi16((short)(((4 * j + 1) << 8) | (4 * j))));
			__m256i shi = _mm256_shuffle_epi8(scv, _mm256_set1_epi16((short)(((4 * j + 3) << 8) | (4 * j + 2))));

			if (five) {
				/* bit 2j of qh[l]: element l of sub-block 2j has 16 more; bit 2j + 1: sub-block 2j + 1 */
				lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j), one), 4));
				hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j + 1), one), 4));
			}
#pragma GCC unroll 8
			for (t = 0; t < T; t++) {
				const int8_t *y = a[t][b].q + 64 * j;
				__m256i pl = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)y));
				__m256i ph = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(y + 32)));

				isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(_mm256_madd_epi16(pl, slo),
										     _mm256_madd_epi16(ph, shi)));
			}
		}
#pragma GCC unroll 8
		for (t = 0; t < T; t++)
			acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[t][b].d), _mm256_cvtepi32_ps(isum[t]), acc[t]);
	}
#pragma GCC unroll 8
	for (t = 0; t < T; t++)
		out[t] = hsum8(acc[t]) - hsum4(accm[t]);
}

static INL TGT_Q2 void q6k_avx2(enum gm_dtype wt, const uint8_t *w, const void *const *xq, const int T, int64_t nb,
				float *out)
{
	const struct qak *a[QT];
	const __m256i m4 = _mm256_set1_epi8(0xF), m3 = _mm256_set1_epi8(3), m30 = _mm256_set1_epi8(0x30);
	__m256 acc[QT];
	int64_t b;
	int t, j, h;

	(void)wt;
#pragma GCC unroll 8
	for (t = 0; t < T; t++) {
		a[t] = xq[t];
		acc[t] = _mm256_setzero_ps();
	}
	for (b = 0; b < nb; b++, w += 210) {
		__m128i sc8 = _mm_loadu_si128((const __m128i *)(w + 192));
		__m256i isum[QT], sc16 = _mm256_cvtepi8_epi16(sc8);
		float d = f16x(w + 208);

		/* the offset: -32 sum_j sc_j bsum_j, spread over the lanes of isum */
#pragma GCC unroll 8
		for (t = 0; t < T; t++)
			isum[t] = _mm256_slli_epi32(_mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a[t][b].bsums), sc16),
						    5);
#pragma GCC unroll 8
		for (t = 0; t < T; t++)
			isum[t] = _mm256_sub_epi32(_mm256_setzero_si256(), isum[t]);
#pragma GCC unroll 2
		for (h = 0; h < 2; h++) {
			const uint8_t *ql = w + 64 * h, *qh = w + 128 + 32 * h;
			__m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
			__m256i hv = _mm256_loadu_si256((const __m256i *)qh), q[4];

			q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hv, m3), 4));
			q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hv, 2), m30));
			q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hv, m30));
			q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
					       _mm256_and_si256(_mm256_srli_epi16(hv, 2), m30));
#pragma GCC unroll 8
			for (j = 0; j < 4; j++) {
				/* elements 32j..32j+31 of the half: scales 8h + 2j (low 16), 8h + 2j + 1 (high 16) */
				int k = 8 * h + 2 * j;
				__m256i scv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, _mm_set_epi64x(
					(long long)(0x0101010101010101ull * (uint64_t)(k + 1)), (long long)(0x0101010101010101ull * (uint64_t)k))));

#pragma GCC unroll 8
				for (t = 0; t < T; t++) {
					__m256i p = _mm256_maddubs_epi16(q[j], _mm256_loadu_si256((const __m256i *)(a[t][b].q + 128 * h + 32 * j)));

					isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p, scv));
				}
			}
		}
#pragma GCC unroll 8
		for (t = 0; t < T; t++)
			acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[t][b].d), _mm256_cvtepi32_ps(isum[t]), acc[t]);
	}
#pragma GCC unroll 8
	for (t = 0; t < T; t++)
		out[t] = hsum8(acc[t]);
}

/*
 * The K-quants in 512-bit vectors (AVX-512 BW): one vector holds 64 quants,
 * two sub-blocks of 32 (Q4_K, Q5_K: the low and high nibbles of 32 bytes,
 * elements 64j .. 64j + 63) or four of 16 (Q6_K), against 64 contiguous
 * activations; the scales spread over the i16 lanes by vpermw.  The same
 * integer sums as the 256-bit code, half the instructions.
 */
#define TGT_Q5 __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")))

/*
 * 32-element types by pairs of blocks, one 64-byte vpdpbusd per pair
 * (struct qa64): the weights unpacked to u8 in the activations' nibble
 * order, Q8_0 as w + 128; the pair's integer sums start from the
 * activations' offset lanes, are converted and scaled by
 * [s0 x4, s1 x4, s0 x4, s1 x4] (s = dw da, in f32) into a 16-lane
 * accumulator; the mins of Q4_1 / Q5_1 in f32, block by block.  Each
 * token's operations are the same whatever T: the same bits.  (A kernel
 * of one token against 4 rows at once, and a VBMI load of Q4_0 pairs,
 * were tried and measured 1.6x and 2x slower in decode on Zen 5: four
 * short row streams defeat the prefetchers, the masked byte loads stall.)
 * w: block 2p of a row; one: block 2p + 1 is past the row's end.
 */
static INL TGT_Q5 __m512i q32p_unpack(enum gm_dtype wt, const uint8_t *w, int one)
{
	const size_t by = Q32_BYTES(wt);
	const __m256i m4 = _mm256_set1_epi8(0xF);
	__m256i lo, hi;

	if (wt == GM_DTYPE_Q8_0) {
		/* qwords [w0 0..15, w1 0..15, w0 16..31, w1 16..31] */
		const __m512i order = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
		__m256i w0 = _mm256_loadu_si256((const __m256i *)(w + 2));
		__m256i w1 = one ? _mm256_set1_epi8((char)0x80) : _mm256_loadu_si256((const __m256i *)(w + by + 2));

		return _mm512_xor_si512(_mm512_permutex2var_epi64(_mm512_castsi256_si512(w0), order,
								  _mm512_castsi256_si512(w1)),
					_mm512_set1_epi8((char)0x80));
	} else {
		const size_t o = wt == GM_DTYPE_Q4_0 ? 2 : wt == GM_DTYPE_Q4_1 ? 4 : wt == GM_DTYPE_Q5_0 ? 6 : 8;
		__m256i v = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(w + o)));

		v = _mm256_inserti128_si256(v, one ? _mm_setzero_si128() : _mm_loadu_si128((const __m128i *)(w + by + o)), 1);
		lo = _mm256_and_si256(v, m4);
		hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
		if (wt == GM_DTYPE_Q5_0 || wt == GM_DTYPE_Q5_1) {
			/* the fifth bits, each block's [0..15 | 16..31]: regrouped as the nibbles */
			const size_t oh = wt == GM_DTYPE_Q5_0 ? 2 : 4;
			__m256i h0 = q5_high(w + oh), h1 = one ? _mm256_setzero_si256() : q5_high(w + by + oh);

			lo = _mm256_or_si256(lo, _mm256_permute2x128_si256(h0, h1, 0x20));
			hi = _mm256_or_si256(hi, _mm256_permute2x128_si256(h0, h1, 0x31));
		}
		return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
	}
}

/* The pair's weight scales (dw0, dw1, 0, 0). */
static INL TGT_Q5 __m128 q32p_dw(const uint8_t *w, size_t by, int one)
{
	uint16_t h0, h1 = 0;

	memcpy(&h0, w, 2);
	if (!one)
		memcpy(&h1, w + by, 2);
	return _mm_cvtph_ps(_mm_insert_epi16(_mm_cvtsi32_si128(h0), h1, 1));
}

/* One pair of one row against one token: acc += s cvt(sum), and the mins. */
static INL TGT_Q5 __m512 q32p_step(enum gm_dtype wt, __m512i u, __m128 dw, const uint8_t *w, int one,
				   const struct qa64 *a, const struct qa64ds *ds, __m512 acc, float *accm)
{
	const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
	__m512i p = _mm512_dpbusd_epi32(_mm512_loadu_si512(a->bias), u, _mm512_loadu_si512(a->q));
	__m128 sc = _mm_mul_ps(dw, _mm_castpd_ps(_mm_load_sd((const double *)ds->d)));

	if (Q32_MIN(wt)) {
		*accm = fmaf(f16x(w + 2), ds->d[0] * (float)ds->s[0], *accm);
		if (!one)
			*accm = fmaf(f16x(w + Q32_BYTES(wt) + 2), ds->d[1] * (float)ds->s[1], *accm);
	}
	return _mm512_fmadd_ps(_mm512_permutexvar_ps(spread, _mm512_castps128_ps512(sc)), _mm512_cvtepi32_ps(p), acc);
}

static INL TGT_Q5 void q32p_512(enum gm_dtype wt, const uint8_t *w, const void *const *xq, const int T, int64_t nb,
				float *out)
{
	const size_t by = Q32_BYTES(wt), po = qa_pair_off(nb), dso = qa_ds_off(nb);
	const struct qa64 *a[QT];
	const struct qa64ds *ds[QT];
	__m512 acc[QT];
	float accm[QT];
	int64_t p, np = (nb + 1) / 2;
	int t;

#pragma GCC unroll 8
	for (t = 0; t < T; t++) {
		a[t] = (const struct qa64 *)((const char *)xq[t] + po);
		ds[t] = (const struct qa64ds *)((const char *)xq[t] + dso);
		acc[t] = _mm512_setzero_ps();
		accm[t] = 0;
	}
	for (p = 0; p < np; p++, w += 2 * by) {
		int one = 2 * p + 1 == nb;
		__m512i u = q32p_unpack(wt, w, one);
		__m128 dw = q32p_dw(w, by, one);

#pragma GCC unroll 8
		for (t = 0; t < T; t++)
			acc[t] = q32p_step(wt, u, dw, w, one, &a[t][p], &ds[t][p], acc[t], &accm[t]);
	}
#pragma GCC unroll 8
	for (t = 0; t < T; t++)
		out[t] = _mm512_reduce_add_ps(acc[t]) + accm[t];
}

static INL TGT_Q5 void qk45_512(enum gm_dtype wt, const uint8_t *w, const void *const *xq, const int T, int64_t nb,
				float *out)
{
	const struct qak *a[QT];
	const __m256i m4 = _mm256_set1_epi8(0xF), one = _mm256_set1_epi8(1);
	const int five = wt == GM_DTYPE_Q5_K;
	const size_t by = five ? 176 : 144;
	__m512 acc[QT];
	__m128 accm[QT];
	__m512i idx[4];
	int64_t b;
	int t, j;

#pragma GCC unroll 4
	for (j = 0; j < 4; j++)
		idx[j] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16((short)(2 * j))),
					    _mm256_set1_epi16((short)(2 * j + 1)), 1);
#pragma GCC unroll 8
	for (t = 0; t < T; t++) {
		a[t] = xq[t];
		acc[t] = _mm512_setzero_ps();
		accm[t] = _mm_setzero_ps();
	}
	for (b = 0; b < nb; b++, w += by) {
		const uint8_t *qs = w + (five ? 48 : 16);
		__m512i isum[QT], scz;
		__m256i hb = _mm256_setzero_si256();
		__m128i mins;
		float d = f16x(w), dmin = f16x(w + 2);

		{
			__m128i v = k45_scales(w);

			scz = _mm512_castsi128_si512(_mm_cvtepu8_epi16(v));
			mins = _mm_cvtepu8_epi16(_mm_srli_si128(v, 8));
		}
#pragma GCC unroll 8
		for (t = 0; t < T; t++) {
			const __m128i *bs = (const __m128i *)a[t][b].bsums;
			__m128i pairs = _mm_hadd_epi16(_mm_loadu_si128(bs), _mm_loadu_si128(bs + 1));

			accm[t] = _mm_fmadd_ps(_mm_set1_ps(dmin * a[t][b].d), _mm_cvtepi32_ps(_mm_madd_epi16(mins, pairs)),
					       accm[t]);
			isum[t] = _mm512_setzero_si512();
		}
		if (five)
			hb = _mm256_loadu_si256((const __m256i *)(w + 16));
#pragma GCC unroll 4
		for (j = 0; j < 4; j++) {
			__m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
			__m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
			__m512i wz, sc = _mm512_permutexvar_epi16(idx[j], scz);

			if (five) {
				lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j), one), 4));
				hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j + 1), one), 4));
			}
			wz = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
#pragma GCC unroll 8
			for (t = 0; t < T; t++) {
				__m512i p = _mm512_maddubs_epi16(wz, _mm512_loadu_si512((const void *)(a[t][b].q + 64 * j)));

				isum[t] = _mm512_add_epi32(isum[t], _mm512_madd_epi16(p, sc));
			}
		}
#pragma GCC unroll 8
		for (t = 0; t < T; t++)
			acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(d * a[t][b].d), _mm512_cvtepi32_ps(isum[t]), acc[t]);
	}
#pragma GCC unroll 8
	for (t = 0; t < T; t++)
		out[t] = _mm512_reduce_add_ps(acc[t]) - hsum4(accm[t]);
}

static INL TGT_Q5 void q6k_512(enum gm_dtype wt, const uint8_t *w, const void *const *xq, const int T, int64_t nb,
			       float *out)
{
	const struct qak *a[QT];
	const __m256i m4 = _mm256_set1_epi8(0xF), m3 = _mm256_set1_epi8(3), m30 = _mm256_set1_epi8(0x30);
	__m512 acc[QT];
	__m512i idx[4];
	int64_t b;
	int t, k, h;

	(void)wt;
	/* vector k (of 4 per super-block): its 32 i16 lanes hold elements 64k .. 64k + 63 in pairs: scale 4k + lane / 8 */
#pragma GCC unroll 4
	for (k = 0; k < 4; k++) {
		int16_t ix[32];
		int l;

		for (l = 0; l < 32; l++)
			ix[l] = (int16_t)(4 * k + l / 8);
		idx[k] = _mm512_loadu_si512((const void *)ix);
	}
#pragma GCC unroll 8
	for (t = 0; t < T; t++) {
		a[t] = xq[t];
		acc[t] = _mm512_setzero_ps();
	}
	for (b = 0; b < nb; b++, w += 210) {
		__m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 192)));
		__m512i isum[QT], scz = _mm512_castsi256_si512(sc16);
		float d = f16x(w + 208);

#pragma GCC unroll 8
		for (t = 0; t < T; t++)
			isum[t] = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(
				_mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a[t][b].bsums), sc16), 5)));
#pragma GCC unroll 2
		for (h = 0; h < 2; h++) {
			const uint8_t *ql = w + 64 * h, *qh = w + 128 + 32 * h;
			__m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
			__m256i hv = _mm256_loadu_si256((const __m256i *)qh), q[4];
			__m512i z[2];

			q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hv, m3), 4));
			q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hv, 2), m30));
			q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hv, m30));
			q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
					       _mm256_and_si256(_mm256_srli_epi16(hv, 2), m30));
			z[0] = _mm512_inserti64x4(_mm512_castsi256_si512(q[0]), q[1], 1);
			z[1] = _mm512_inserti64x4(_mm512_castsi256_si512(q[2]), q[3], 1);
#pragma GCC unroll 2
			for (k = 0; k < 2; k++) {
				__m512i sc = _mm512_permutexvar_epi16(idx[2 * h + k], scz);

#pragma GCC unroll 8
				for (t = 0; t < T; t++) {
					__m512i p = _mm512_maddubs_epi16(z[k], _mm512_loadu_si512((const void *)(a[t][b].q + 128 * h + 64 * k)));

					isum[t] = _mm512_add_epi32(isum[t], _mm512_madd_epi16(p, sc));
				}
			}
		}
#pragma GCC unroll 8
		for (t = 0; t < T; t++)
			acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(d * a[t][b].d), _mm512_cvtepi32_ps(isum[t]), acc[t]);
	}
#pragma GCC unroll 8
	for (t = 0; t < T; t++)
		out[t] = _mm512_reduce_add_ps(acc[t]);
}

/* Rows of one tile kernel, T a constant. */
#define TILE_ROWS(body, T)                                                                                    \
	for (i = 0; i < nr; i++) {                                                                             \
		body(wt, w + (size_t)i * rb, xq, T, nb, o);                                                    \
		for (t = 0; t < T; t++)                                                                        \
			y[t * ldy + i] = o[t];                                                                 \
	}
/* One function per kernel, its token count a constant in each branch (at most 4, or 8 with AVX-512). */
#define TILE_FN(name, body, tgt)                                                                              \
	static tgt void name(enum gm_dtype wt, const uint8_t *w, size_t rb, int64_t nr, const void *const *xq,  \
			     int T, int64_t nb, float *y, int64_t ldy)                                         \
	{                                                                                                      \
		float o[QT];                                                                                   \
		int64_t i;                                                                                     \
		int t;                                                                                         \
		switch (T) {                                                                                   \
		case 1: TILE_ROWS(body, 1) break;                                                              \
		case 2: TILE_ROWS(body, 2) break;                                                              \
		case 3: TILE_ROWS(body, 3) break;                                                              \
		default: TILE_ROWS(body, 4) break;                                                             \
		}                                                                                              \
	}
#define TILE8_FN(name, body, tgt)                                                                             \
	static tgt void name(enum gm_dtype wt, const uint8_t *w, size_t rb, int64_t nr, const void *const *xq,  \
			     int T, int64_t nb, float *y, int64_t ldy)                                         \
	{                                                                                                      \
		float o[QT];                                                                                   \
		int64_t i;                                                                                     \
		int t;                                                                                         \
		switch (T) {                                                                                   \
		case 1: TILE_ROWS(body, 1) break;                                                              \
		case 2: TILE_ROWS(body, 2) break;                                                              \
		case 3: TILE_ROWS(body, 3) break;                                                              \
		case 4: TILE_ROWS(body, 4) break;                                                              \
		case 5: TILE_ROWS(body, 5) break;                                                              \
		case 6: TILE_ROWS(body, 6) break;                                                              \
		case 7: TILE_ROWS(body, 7) break;                                                              \
		default: TILE_ROWS(body, 8) break;                                                             \
		}                                                                                              \
	}
/* The 32-element kernels compiled once per type, so that no test on the type is left in their loops. */
#define Q32_TYPES(body, wt, ...)                                                                              \
	do {                                                                                                   \
		switch (wt) {                                                                                  \
		case GM_DTYPE_Q8_0: body(GM_DTYPE_Q8_0, __VA_ARGS__); break;                                   \
		case GM_DTYPE_Q4_0: body(GM_DTYPE_Q4_0, __VA_ARGS__); break;                                   \
		case GM_DTYPE_Q4_1: body(GM_DTYPE_Q4_1, __VA_ARGS__); break;                                   \
		case GM_DTYPE_Q5_0: body(GM_DTYPE_Q5_0, __VA_ARGS__); break;                                   \
		default: body(GM_DTYPE_Q5_1, __VA_ARGS__); break;                                              \
		}                                                                                              \
	} while (0)
#define q32_avx2_typed(wt, ...) Q32_TYPES(q32_avx2, wt, __VA_ARGS__)
#define q32p_512_typed(wt, ...) Q32_TYPES(q32p_512, wt, __VA_ARGS__)
TILE_FN(tile_q32_avx2, q32_avx2_typed, TGT_Q2)
TILE8_FN(tile_q32_512, q32p_512_typed, TGT_Q5)

TILE_FN(tile_qk45_avx2, qk45_avx2, TGT_Q2)
TILE_FN(tile_q6k_avx2, q6k_avx2, TGT_Q2)
TILE8_FN(tile_qk45_512, qk45_512, TGT_Q5)
TILE8_FN(tile_q6k_512, q6k_512, TGT_Q5)

/*
 * Panels: the matrix product of many tokens (n > dot_max) with a
 * 32-element type, AVX-512 VNNI.  A tile of 16 weight rows is unpacked once
 * per call into u8 quants interleaved by 4 bytes (the layout of one
 * vpdpbusd against one token's 4 activations broadcast), so each i32 lane
 * holds one row's whole block sum and each f32 lane one row's result: per
 * block and token, 8 vpdpbusd, one conversion and one fma for 16 rows,
 * with no horizontal sums, and the unpacking shared by all the tokens.
 * Quants as u8: Q4_0 / Q5_0 q, Q8_0 q + 128, with the offset (8, 16, 128)
 * times the activations' sum as the lane's start; Q4_1 / Q5_1 q, the min
 * added as m (da sum a).  A (row, token) gives the same bits whatever n
 * (above dot_max), the threads and the row range.
 */
#define QP_ROWS 16
#define QP_TILES 4   /* tiles unpacked at a time: 64 rows, their panels in L2 with 64 tokens' activations */
#define QP_TOKS 64

struct qpanel {
	uint8_t w[8][QP_ROWS * 4]; /* [k][row][4]: elements 4k..4k+3 of each row's block */
	float dw[QP_ROWS];
	float mw[QP_ROWS];         /* the min (Q4_1, Q5_1) */
};

/* The [k][row][4] interleaving of 16 rows' quants (tmp: [row][groups * 4] bytes). */
static INL TGT_Q5 void qp_interleave(uint8_t (*out)[QP_ROWS * 4], const uint32_t *tmp, int groups)
{
	const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
					       _mm512_set1_epi32(groups));
	int k;

	for (k = 0; k < groups; k++)
		_mm512_storeu_si512(out[k], _mm512_i32gather_epi32(_mm512_add_epi32(idx, _mm512_set1_epi32(k)), tmp, 4));
}

/* Panels of rows [0, nr) of w (row stride rb, nb blocks each): nb struct qpanel, rows past nr zero. */
static INL TGT_Q5 void qpanel_build(enum gm_dtype wt, struct qpanel *pn, const uint8_t *w, size_t rb, int nr,
				    int64_t nb)
{
	const size_t by = Q32_BYTES(wt);
	uint32_t tmp[QP_ROWS][8];
	int64_t b;
	int i;

	for (b = 0; b < nb; b++) {
		struct qpanel *p = &pn[b];

		for (i = 0; i < QP_ROWS; i++) {
			const uint8_t *blk = w + (size_t)i * rb + (size_t)b * by;
			__m256i u = _mm256_setzero_si256(), sg;

			p->dw[i] = p->mw[i] = 0;
			if (i < nr) {
				if (wt == GM_DTYPE_Q8_0)
					u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)),
							     _mm256_set1_epi8((char)0x80));
				else
					u = q32_unpack(wt, blk, &sg);
				p->dw[i] = f16x(blk);
				if (Q32_MIN(wt))
					p->mw[i] = f16x(blk + 2);
			}
			_mm256_storeu_si256((__m256i *)tmp[i], u);
		}
		qp_interleave(p->w, &tmp[0][0], 8);
	}
}

/* y[t * ldy + i] for i < nr, t < T: the panels' 16 rows against T tokens (a[t]: their qa32 blocks). */
static INL TGT_Q5 void qpanel_tile(enum gm_dtype wt, const struct qpanel *pn, const struct qa32 *const *a, const int T,
				   int64_t nb, float *y, int64_t ldy, int nr)
{
	const __mmask16 keep = (__mmask16)((1u << nr) - 1);
	__m512 acc[QT];
	int64_t b;
	int t, k;

#pragma GCC unroll 8
	for (t = 0; t < T; t++)
		acc[t] = _mm512_setzero_ps();
	for (b = 0; b < nb; b++) {
		const struct qpanel *p = &pn[b];
		__m512i isum[QT], wk[8];
		__m512 dw = _mm512_loadu_ps(p->dw);

#pragma GCC unroll 8
		for (k = 0; k < 8; k++)
			wk[k] = _mm512_loadu_si512(p->w[k]);
#pragma GCC unroll 8
		for (t = 0; t < T; t++)
			isum[t] = _mm512_set1_epi32(-8 * qa_bias_k(wt) * a[t][b].s); /* the offset: 8, 16, 128 */
#pragma GCC unroll 8
		for (k = 0; k < 8; k++) {
#pragma GCC unroll 8
			for (t = 0; t < T; t++) {
				int32_t q4;

				memcpy(&q4, a[t][b].q + 4 * k, 4);
				isum[t] = _mm512_dpbusd_epi32(isum[t], wk[k], _mm512_set1_epi32(q4));
			}
		}
#pragma GCC unroll 8
		for (t = 0; t < T; t++) {
			acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dw, _mm512_set1_ps(a[t][b].d)),
						 acc[t]);
			if (Q32_MIN(wt))
				acc[t] = _mm512_fmadd_ps(_mm512_loadu_ps(p->mw), _mm512_set1_ps(a[t][b].d * (float)a[t][b].s),
							 acc[t]);
		}
	}
#pragma GCC unroll 8
	for (t = 0; t < T; t++)
		_mm512_mask_storeu_ps(y + t * ldy, keep, acc[t]);
}

/*
 * The K-quants' panels, a super-block of 256 per panel: the quants as u8
 * interleaved as above (64 groups of 4), the sub-block scales as i32 lanes
 * (a vpmulld per sub-block and token), and pairs of i16 for a vpdpwssd
 * against pairs of the activations' sums: the mins of Q4_K / Q5_K
 * (d sum_j sc_j sum q a - dmin sum_j m_j sum a), Q6_K's scales for its
 * offset of 32 (d sum_j sc_j (sum q a - 32 sum a)).  Up to 4 tokens at a
 * time (a sub-block's 8 quant registers, 3 per token).
 */
#define QKT 4

struct qkpanel {
	uint8_t w[64][QP_ROWS * 4];
	int32_t sc[16][QP_ROWS];   /* Q4_K / Q5_K: 8 sub-blocks of 32; Q6_K: 16 of 16 */
	int32_t pr[8][QP_ROWS];    /* i16 pairs: (m_2p, m_2p+1), or Q6_K's (sc_2p, sc_2p+1) */
	float d[QP_ROWS], dmin[QP_ROWS];
};

/* A super-block's 256 quants as u8 in element order, its scales (and mins) as integers. */
static INL TGT_Q2 void qk_unpack(enum gm_dtype wt, const uint8_t *w, uint8_t *u, int32_t *sc, int16_t *m)
{
	const __m256i m4 = _mm256_set1_epi8(0xF), one = _mm256_set1_epi8(1), m3 = _mm256_set1_epi8(3);
	int j;

	if (wt == GM_DTYPE_Q6_K) {
		for (j = 0; j < 2; j++) {
			const uint8_t *ql = w + 64 * j, *qh = w + 128 + 32 * j;
			__m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
			__m256i hv = _mm256_loadu_si256((const __m256i *)qh);

			for (int k = 0; k < 4; k++) {
				__m256i lo = _mm256_and_si256(k & 2 ? _mm256_srli_epi16(k & 1 ? l1 : l0, 4) : k & 1 ? l1 : l0, m4);
				__m256i hi = _mm256_and_si256(_mm256_srli_epi16(hv, 2 * k), m3);

				_mm256_storeu_si256((__m256i *)(u + 128 * j + 32 * k),
						    _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)));
			}
		}
		for (j = 0; j < 16; j++)
			sc[j] = (int8_t)w[192 + j];
		return;
	}
	{
		const int five = wt == GM_DTYPE_Q5_K;
		const uint8_t *qs = w + (five ? 48 : 16);
		__m256i hb = five ? _mm256_loadu_si256((const __m256i *)(w + 16)) : _mm256_setzero_si256();
		uint8_t sm[16];

		_mm_storeu_si128((__m128i *)sm, k45_scales(w));
		for (j = 0; j < 8; j++) {
			sc[j] = sm[j];
			m[j] = sm[8 + j];
		}
		for (j = 0; j < 4; j++) {
			__m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
			__m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);

			if (five) {
				lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j), one), 4));
				hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j + 1), one), 4));
			}
			_mm256_storeu_si256((__m256i *)(u + 64 * j), lo);
			_mm256_storeu_si256((__m256i *)(u + 64 * j + 32), hi);
		}
	}
}

static INL TGT_Q5 void qkpanel_build(enum gm_dtype wt, struct qkpanel *pn, const uint8_t *w, size_t rb, int nr,
				     int64_t nb)
{
	const size_t by = wt == GM_DTYPE_Q6_K ? 210 : wt == GM_DTYPE_Q5_K ? 176 : 144;
	uint32_t tmp[QP_ROWS][64];
	int64_t b;
	int i, j;

	for (b = 0; b < nb; b++) {
		struct qkpanel *p = &pn[b];

		memset(p->sc, 0, sizeof(p->sc));
		memset(p->pr, 0, sizeof(p->pr));
		for (i = 0; i < QP_ROWS; i++) {
			const uint8_t *blk = w + (size_t)i * rb + (size_t)b * by;
			int32_t sc[16];
			int16_t m[8];

			p->d[i] = p->dmin[i] = 0;
			if (i >= nr) {
				memset(tmp[i], 0, sizeof(tmp[i]));
				continue;
			}
			qk_unpack(wt, blk, (uint8_t *)tmp[i], sc, m);
			if (wt == GM_DTYPE_Q6_K) {
				p->d[i] = f16x(blk + 208);
				for (j = 0; j < 16; j++)
					p->sc[j][i] = sc[j];
				for (j = 0; j < 8; j++)
					p->pr[j][i] = (int32_t)(((uint32_t)(uint16_t)sc[2 * j + 1] << 16) | (uint16_t)sc[2 * j]);
			} else {
				p->d[i] = f16x(blk);
				p->dmin[i] = f16x(blk + 2);
				for (j = 0; j < 8; j++)
					p->sc[j][i] = sc[j];
				for (j = 0; j < 4; j++)
					p->pr[j][i] = (int32_t)(((uint32_t)(uint16_t)m[2 * j + 1] << 16) | (uint16_t)m[2 * j]);
			}
		}
		qp_interleave(p->w, &tmp[0][0], 64);
	}
}

static INL TGT_Q5 void qkpanel_tile(enum gm_dtype wt, const struct qkpanel *pn, const struct qak *const *a, const int T,
				    int64_t nb, float *y, int64_t ldy, int nr)
{
	const int six = wt == GM_DTYPE_Q6_K, nsub = six ? 16 : 8, per = six ? 4 : 8;
	const __mmask16 keep = (__mmask16)((1u << nr) - 1);
	__m512 acc[QKT];
	int64_t b;
	int t, j, k;

#pragma GCC unroll 4
	for (t = 0; t < T; t++)
		acc[t] = _mm512_setzero_ps();
	for (b = 0; b < nb; b++) {
		const struct qkpanel *p = &pn[b];
		__m512i tot[QKT], pm[QKT];

#pragma GCC unroll 4
		for (t = 0; t < T; t++) {
			/* the pairs of sums: Q6_K's 16 bsums as they are, the others' 8 sums of 32 */
			const __m128i *bs = (const __m128i *)a[t][b].bsums;
			__m128i s0 = _mm_loadu_si128(bs), s1 = _mm_loadu_si128(bs + 1);
			int32_t pairs[8];

			tot[t] = pm[t] = _mm512_setzero_si512();
			if (six) {
				_mm_storeu_si128((__m128i *)pairs, s0);
				_mm_storeu_si128((__m128i *)(pairs + 4), s1);
			} else {
				_mm_storeu_si128((__m128i *)pairs, _mm_hadd_epi16(s0, s1));
			}
			for (j = 0; j < (six ? 8 : 4); j++)
				pm[t] = _mm512_dpwssd_epi32(pm[t], _mm512_loadu_si512(p->pr[j]), _mm512_set1_epi32(pairs[j]));
		}
		for (j = 0; j < nsub; j++) {
			__m512i wk[8], sc = _mm512_loadu_si512(p->sc[j]);

#pragma GCC unroll 8
			for (k = 0; k < per; k++)
				wk[k] = _mm512_loadu_si512(p->w[per * j + k]);
#pragma GCC unroll 4
			for (t = 0; t < T; t++) {
				__m512i s = _mm512_setzero_si512();

#pragma GCC unroll 8
				for (k = 0; k < per; k++) {
					int32_t q4;

					memcpy(&q4, a[t][b].q + 4 * (per * j + k), 4);
					s = _mm512_dpbusd_epi32(s, wk[k], _mm512_set1_epi32(q4));
				}
				tot[t] = _mm512_add_epi32(tot[t], _mm512_mullo_epi32(s, sc));
			}
		}
#pragma GCC unroll 4
		for (t = 0; t < T; t++) {
			__m512 da = _mm512_set1_ps(a[t][b].d);

			if (six) {
				tot[t] = _mm512_sub_epi32(tot[t], _mm512_slli_epi32(pm[t], 5));
				acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot[t]), _mm512_mul_ps(_mm512_loadu_ps(p->d), da),
							 acc[t]);
			} else {
				acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot[t]), _mm512_mul_ps(_mm512_loadu_ps(p->d), da),
							 acc[t]);
				acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(pm[t]), _mm512_mul_ps(_mm512_loadu_ps(p->dmin), da),
							  acc[t]);
			}
		}
	}
#pragma GCC unroll 4
	for (t = 0; t < T; t++)
		_mm512_mask_storeu_ps(y + t * ldy, keep, acc[t]);
}

/* T tokens (a constant in each branch) against one tile's panels. */
#define QP_TILE_T(T)                                                                                          \
	do {                                                                                                   \
		if (is_k(wt))                                                                                  \
			qkpanel_tile(wt, (const struct qkpanel *)pn + i * nb, (const struct qak *const *)a,   \
				     (T) < QKT ? (T) : QKT, nb, yt, ldy, nr);                                  \
		else                                                                                           \
			qpanel_tile(wt, (const struct qpanel *)pn + i * nb, (const struct qa32 *const *)a, T, nb, \
				    yt, ldy, nr);                                                              \
	} while (0)

/* Rows [r0, r1) of w against the n tokens of xq (al bytes each), by chunks of QP_TILES panels and QP_TOKS tokens. */
static INL TGT_Q5 void qpanel_matmul(enum gm_dtype wt, float *y, int64_t ldy, const void *xq, size_t al, int64_t n,
				     const uint8_t *w, size_t rb, int64_t nb, int64_t r0, int64_t r1, void *pn)
{
	const int tmax = is_k(wt) ? QKT : QT;
	int64_t rc, ta, t, r;
	int i, k;

	for (rc = r0; rc < r1; rc += QP_TILES * QP_ROWS) {
		int tiles = (int)((gm_imin64(r1 - rc, QP_TILES * QP_ROWS) + QP_ROWS - 1) / QP_ROWS);

		for (i = 0; i < tiles; i++) {
			int nr;

			r = rc + (int64_t)i * QP_ROWS;
			nr = (int)gm_imin64(QP_ROWS, r1 - r);
			if (is_k(wt))
				qkpanel_build(wt, (struct qkpanel *)pn + i * nb, w + (size_t)r * rb, rb, nr, nb);
			else
				qpanel_build(wt, (struct qpanel *)pn + i * nb, w + (size_t)r * rb, rb, nr, nb);
		}
		for (ta = 0; ta < n; ta += QP_TOKS) {
			int64_t te = gm_imin64(ta + QP_TOKS, n);

			for (i = 0; i < tiles; i++) {
				int nr;

				r = rc + (int64_t)i * QP_ROWS;
				nr = (int)gm_imin64(QP_ROWS, r1 - r);
				for (t = ta; t < te; t += tmax) {
					const void *a[QT];
					float *yt = y + t * ldy + r;
					int T = (int)gm_imin64(tmax, te - t);

					for (k = 0; k < T; k++)
						a[k] = (const char *)xq + (size_t)(t + k) * al;
					switch (T) {
					case 1: QP_TILE_T(1); break;
					case 2: QP_TILE_T(2); break;
					case 3: QP_TILE_T(3); break;
					case 4: QP_TILE_T(4); break;
					case 5: QP_TILE_T(5); break;
					case 6: QP_TILE_T(6); break;
					case 7: QP_TILE_T(7); break;
					default: QP_TILE_T(8); break;
					}
				}
			}
		}
	}
}

static TGT_Q5 void qpanel_matmul_typed(enum gm_dtype wt, float *y, int64_t ldy, const void *xq, size_t al, int64_t n,
				       const uint8_t *w, size_t rb, int64_t nb, int64_t r0, int64_t r1, void *pn)
{
	switch (wt) {
	case GM_DTYPE_Q4_K: qpanel_matmul(GM_DTYPE_Q4_K, y, ldy, xq, al, n, w, rb, nb, r0, r1, pn); break;
	case GM_DTYPE_Q5_K: qpanel_matmul(GM_DTYPE_Q5_K, y, ldy, xq, al, n, w, rb, nb, r0, r1, pn); break;
	case GM_DTYPE_Q6_K: qpanel_matmul(GM_DTYPE_Q6_K, y, ldy, xq, al, n, w, rb, nb, r0, r1, pn); break;
	default: Q32_TYPES(qpanel_matmul, wt, y, ldy, xq, al, n, w, rb, nb, r0, r1, pn); break;
	}
}
#endif

/*
 * Dequantization in 8-lane vectors, the same f32 operations as the
 * definition (formats/quant.c): compiled without FMA, so no multiply-add is
 * fused and every value is bit-identical to gm_quant_dequantize's.
 */
#ifdef GM_X86
#define TGT_DQ __attribute__((target("avx2,f16c")))

static INL TGT_DQ __m256 dq_i8(const int8_t *q)
{
	return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
}

static INL TGT_DQ __m256 dq_u8(const uint8_t *q)
{
	return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)q)));
}

static TGT_DQ int dequant_avx2(enum gm_dtype wt, const uint8_t *w, float *y, int64_t nb)
{
	uint8_t tmp[256];
	int64_t b;
	int j, l;

	switch (wt) {
	case GM_DTYPE_Q8_0:
		for (b = 0; b < nb; b++, w += 34, y += 32) {
			__m256 d = _mm256_set1_ps(f16(w));

			for (j = 0; j < 32; j += 8)
				_mm256_storeu_ps(y + j, _mm256_mul_ps(dq_i8((const int8_t *)(w + 2 + j)), d));
		}
		return 1;
	case GM_DTYPE_Q4_0:
		for (b = 0; b < nb; b++, w += 18, y += 32) {
			__m256 d = _mm256_set1_ps(f16(w));

			for (j = 0; j < 16; j++) {
				tmp[j] = (uint8_t)(int8_t)((w[2 + j] & 0xF) - 8);
				tmp[j + 16] = (uint8_t)(int8_t)((w[2 + j] >> 4) - 8);
			}
			for (j = 0; j < 32; j += 8)
				_mm256_storeu_ps(y + j, _mm256_mul_ps(dq_i8((const int8_t *)tmp + j), d));
		}
		return 1;
	case GM_DTYPE_Q4_K:
		for (b = 0; b < nb; b++, w += 144) {
			float d = f16(w), mn = f16(w + 2);
			const uint8_t *q = w + 16;

			for (j = 0; j < 8; j += 2, q += 32) {
				int s1, m1, s2, m2;
				__m256 d1, dm1, d2, dm2;

				scale_min_k4(j, w + 4, &s1, &m1);
				scale_min_k4(j + 1, w + 4, &s2, &m2);
				d1 = _mm256_set1_ps(d * (float)s1);
				dm1 = _mm256_set1_ps(mn * (float)m1);
				d2 = _mm256_set1_ps(d * (float)s2);
				dm2 = _mm256_set1_ps(mn * (float)m2);
				for (l = 0; l < 32; l++) {
					tmp[l] = q[l] & 0xF;
					tmp[32 + l] = q[l] >> 4;
				}
				for (l = 0; l < 32; l += 8) {
					_mm256_storeu_ps(y + l, _mm256_sub_ps(_mm256_mul_ps(d1, dq_u8(tmp + l)), dm1));
					_mm256_storeu_ps(y + 32 + l, _mm256_sub_ps(_mm256_mul_ps(d2, dq_u8(tmp + 32 + l)), dm2));
				}
				y += 64;
			}
		}
		return 1;
	case GM_DTYPE_Q6_K:
		for (b = 0; b < nb; b++, w += 210) {
			float d = f16(w + 208);
			const uint8_t *ql = w, *qh = w + 128;
			const int8_t *sc = (const int8_t *)(w + 192);
			int n;

			for (n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8, y += 128) {
				int8_t v[128];

				for (l = 0; l < 32; l++) {
					v[l] = (int8_t)(((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
					v[l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
					v[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
					v[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
				}
				for (l = 0; l < 128; l += 8) {
					/* element e of the half: scale sc[e / 16] */
					__m256 ds = _mm256_set1_ps(d * (float)sc[l / 16]);

					_mm256_storeu_ps(y + l, _mm256_mul_ps(ds, dq_i8(v + l)));
				}
			}
		}
		return 1;
	default:
		return 0;
	}
}
#endif

void gm_qdequantize(enum gm_dtype wt, const void *w, float *y, int64_t n)
{
#ifdef GM_X86
	unsigned el, by;

	gm_dtype_block(wt, &el, &by);
	if (gm_kernels_isa() != GM_ISA_PORTABLE && dequant_avx2(wt, w, y, n / el))
		return;
#endif
	gm_quant_dequantize(wt, w, y, n);
}

/* ---------------------------------------------------------------- dispatch */

static int vnni_supported(void)
{
#ifdef GM_X86
	static _Atomic int v = -1; /* the first caller sets it, any thread */

	if (v < 0) {
		__builtin_cpu_init();
		v = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl");
	}
	return v;
#else
	return 0;
#endif
}

/* The kernel of wt in the variant in use (gm_kernels_isa): VNNI where the AVX-512 variant runs on a CPU with it. */
static qtile_fn pick(enum gm_dtype wt, int *maxt)
{
#ifdef GM_X86
	enum gm_isa isa = gm_kernels_isa();
	/* the AVX-512 tiles need VNNI too (vpdpbusd in the 32-element ones): one check for all */
	int v512 = isa == GM_ISA_AVX512 && vnni_supported();

	*maxt = v512 ? 8 : 4;
	if (isa == GM_ISA_PORTABLE)
		return tile_portable;
	switch (wt) {
	case GM_DTYPE_Q8_0:
	case GM_DTYPE_Q4_0:
	case GM_DTYPE_Q4_1:
	case GM_DTYPE_Q5_0:
	case GM_DTYPE_Q5_1:
		return v512 ? tile_q32_512 : tile_q32_avx2;
	case GM_DTYPE_Q4_K:
	case GM_DTYPE_Q5_K:
		return v512 ? tile_qk45_512 : tile_qk45_avx2;
	case GM_DTYPE_Q6_K:
		return v512 ? tile_q6k_512 : tile_q6k_avx2;
	default:
		break;
	}
#endif
	(void)wt;
	*maxt = QT;
	return tile_portable;
}

void gm_qmatvec(float *y, const void *w, enum gm_dtype wt, const void *xq, int64_t in, int64_t r0, int64_t r1)
{
	size_t rb = gm_quant_row_bytes(wt, in);
	unsigned el, by;
	int maxt;
	qtile_fn f = pick(wt, &maxt);

	gm_dtype_block(wt, &el, &by);
	if (r1 > r0)
		f(wt, (const uint8_t *)w + (size_t)r0 * rb, rb, r1 - r0, &xq, 1, in / el, y + r0, 0);
}

/*
 * Tiles of QM_ROWS weight rows by QM_TOKS tokens, each row against QT
 * tokens at a time: the tile's weight rows (a few KiB) stay in L1 while
 * the tokens' activations stream from L2.
 */
#define QM_ROWS 16
#define QM_TOKS 64

void gm_qmatmul(float *y, int64_t ldy, const void *xq, int64_t n, const void *w, enum gm_dtype wt, int64_t in,
		int64_t r0, int64_t r1, int64_t dot_max)
{
	size_t rb = gm_quant_row_bytes(wt, in), al = gm_qact_len(wt, in);
	unsigned el, by;
	int maxt;
	qtile_fn f = pick(wt, &maxt);
	int64_t ra, ta, t;

	gm_dtype_block(wt, &el, &by);
#ifdef GM_X86
	if (n > dot_max && maxt == 8 && f != tile_portable &&
	    (!is_k(wt) || wt == GM_DTYPE_Q4_K || wt == GM_DTYPE_Q5_K || wt == GM_DTYPE_Q6_K)) {
		/* many tokens, AVX-512 VNNI: the panels (a few hundred KiB, allocated per call and thread) */
		size_t psz = is_k(wt) ? sizeof(struct qkpanel) : sizeof(struct qpanel);
		void *pn = aligned_alloc(64, (size_t)QP_TILES * (size_t)(in / el) * psz);

		if (pn) {
			qpanel_matmul_typed(wt, y, ldy, xq, al, n, w, rb, in / el, r0, r1, pn);
			free(pn);
			return;
		}
	}
#endif
	if (n <= maxt) {
		/* one group of tokens (decode): all the rows in one call, each read once */
		const void *xs[QT];
		int k;

		for (k = 0; k < n; k++)
			xs[k] = (const char *)xq + (size_t)k * al;
		if (r1 > r0)
			f(wt, (const uint8_t *)w + (size_t)r0 * rb, rb, r1 - r0, xs, (int)n, in / el, y + r0, ldy);
		return;
	}
	for (ra = r0; ra < r1; ra += QM_ROWS) {
		int64_t re = ra + QM_ROWS < r1 ? ra + QM_ROWS : r1;

		for (ta = 0; ta < n; ta += QM_TOKS) {
			int64_t te = ta + QM_TOKS < n ? ta + QM_TOKS : n;

			for (t = ta; t < te; t += maxt) {
				const void *xs[QT];
				int k, T = (int)(te - t < maxt ? te - t : maxt);

				for (k = 0; k < T; k++)
					xs[k] = (const char *)xq + (size_t)(t + k) * al;
				f(wt, (const uint8_t *)w + (size_t)ra * rb, rb, re - ra, xs, T, in / el, y + t * ldy + ra, ldy);
			}
		}
	}
}
