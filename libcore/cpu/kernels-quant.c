/*
 * kernels-quant.c - products of block-quantized weights (formats/quant.h)
 * with f32 activations, with integer dot products (see kernels.h).
 *
 * The activations of a token are quantized once per call, as the formats
 * intend (gm_qact_quantize):
 *   - for the 32-element types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): blocks of
 *     32 int8 q = round(x / d), d = max |x| / 127 in f32, with the sum of
 *     the 32 q (struct qa32; the mins of Q4_1 / Q5_1 need it);
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
 * in vector lanes by a fixed scheme (SIMD): within one variant the result
 * of a (row, token) never depends on the threads or on the other tokens.
 */
#include "cpu/kernels.h"

#include <math.h>
#include <string.h>

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

size_t gm_qact_len(enum gm_dtype wt, int64_t in)
{
	return is_k(wt) ? (size_t)(in / 256) * sizeof(struct qak) : (size_t)(in / 32) * sizeof(struct qa32);
}

int gm_qact_kind(enum gm_dtype wt)
{
	return is_k(wt);
}

void gm_qact_quantize(void *xq, enum gm_dtype wt, const float *x, int64_t in)
{
	int64_t b;
	int j;

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
		a->d = amax / 127;
		id = amax ? 127 / amax : 0;
		for (j = 0; j < 32; j++) {
			int q = gm_quant_nearest_int(v[j] * id);

			q = q > 127 ? 127 : q < -127 ? -127 : q;
			a->q[j] = (int8_t)q;
			s += q;
		}
		a->s = s;
	}
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

/* ---------------------------------------------------------------- dispatch */

typedef float (*qdot_fn)(enum gm_dtype wt, const uint8_t *w, const void *xq, int64_t nb);

static qdot_fn pick(enum gm_dtype wt);

void gm_qmatvec(float *y, const void *w, enum gm_dtype wt, const void *xq, int64_t in, int64_t r0, int64_t r1)
{
	size_t rb = gm_quant_row_bytes(wt, in);
	unsigned el, by;
	qdot_fn f = pick(wt);
	int64_t r;

	gm_dtype_block(wt, &el, &by);
	for (r = r0; r < r1; r++)
		y[r] = f(wt, (const uint8_t *)w + (size_t)r * rb, xq, in / el);
}

/*
 * Tiles of QM_ROWS weight rows by QM_TOKS tokens: the tile's weight rows
 * (a few KiB) stay in L1 while the tokens' activations stream from L2.
 */
#define QM_ROWS 16
#define QM_TOKS 64

void gm_qmatmul(float *y, int64_t ldy, const void *xq, int64_t n, const void *w, enum gm_dtype wt, int64_t in,
		int64_t r0, int64_t r1)
{
	size_t rb = gm_quant_row_bytes(wt, in), al = gm_qact_len(wt, in);
	unsigned el, by;
	qdot_fn f = pick(wt);
	int64_t ra, ta, r, t;

	gm_dtype_block(wt, &el, &by);
	for (ra = r0; ra < r1; ra += QM_ROWS) {
		int64_t re = ra + QM_ROWS < r1 ? ra + QM_ROWS : r1;

		for (ta = 0; ta < n; ta += QM_TOKS) {
			int64_t te = ta + QM_TOKS < n ? ta + QM_TOKS : n;

			for (t = ta; t < te; t++)
				for (r = ra; r < re; r++)
					y[t * ldy + r] = f(wt, (const uint8_t *)w + (size_t)r * rb,
							   (const char *)xq + (size_t)t * al, in / el);
		}
	}
}

static qdot_fn pick(enum gm_dtype wt)
{
	(void)wt;
	return dot_portable;
}
