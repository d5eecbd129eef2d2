/*
 * quant.c - ggml's block-quantized formats (see quant.h).
 *
 * Blocks are handled as byte images (offsets below), never as C structs,
 * so no padding or alignment assumption is made; f16 fields are read and
 * written with gm_f16_to_f32 / gm_f32_to_f16 (exact widening; round to
 * nearest even, as F16C does).
 *
 * Layouts (offsets in bytes; d, m, dmin are f16 unless said):
 *   Q4_0 (18):  d@0  qs[16]@2                 x = ((q & 15) - 8) d, low nibbles first
 *   Q4_1 (20):  d@0  m@2  qs[16]@4            x = q d + m
 *   Q5_0 (22):  d@0  qh[4]@2  qs[16]@6        x = (q | h << 4) - 16) d
 *   Q5_1 (24):  d@0  m@2  qh[4]@4  qs[16]@8   x = (q | h << 4) d + m
 *   Q8_0 (34):  d@0  qs[32]@2 (int8)          x = q d
 *   Q2_K (84):  scales[16]@0  qs[64]@16  d@80  dmin@82
 *   Q3_K (110): hmask[32]@0  qs[64]@32  scales[12]@96  d@108
 *   Q4_K (144): d@0  dmin@2  scales[12]@4  qs[128]@16
 *   Q5_K (176): d@0  dmin@2  scales[12]@4  qh[32]@16  qs[128]@48
 *   Q6_K (210): ql[128]@0  qh[64]@128  scales[16]@192 (int8)  d@208
 *   Q8_K (292): d@0 (f32)  qs[256]@4 (int8)  bsums[16]@260 (int16: sums of 16 qs)
 * The element order within each K-quant block is spelled out by the
 * dequantizers below.
 */
#include "formats/quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define QK 32
#define QKK 256
#define GROUP_EPS 1e-15f /* a sub-block below this in absolute value is all zero */

static float f16(const uint8_t *p)
{
	uint16_t h;

	memcpy(&h, p, 2);
	return gm_f16_to_f32(h);
}

static void put_f16(uint8_t *p, float f)
{
	uint16_t h = gm_f32_to_f16(f);

	memcpy(p, &h, 2);
}

int gm_quant_nearest_int(float x)
{
	/* adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits */
	float v = x + 12582912.f;
	int32_t i;

	memcpy(&i, &v, sizeof(i));
	return (i & 0x007fffff) - 0x00400000;
}
#define nint gm_quant_nearest_int

int gm_quant_supported(enum gm_dtype t)
{
	switch (t) {
	case GM_DTYPE_Q4_0: case GM_DTYPE_Q4_1: case GM_DTYPE_Q5_0: case GM_DTYPE_Q5_1: case GM_DTYPE_Q8_0:
	case GM_DTYPE_Q2_K: case GM_DTYPE_Q3_K: case GM_DTYPE_Q4_K: case GM_DTYPE_Q5_K: case GM_DTYPE_Q6_K:
	case GM_DTYPE_Q8_K:
		return 1;
	default:
		return 0;
	}
}

size_t gm_quant_row_bytes(enum gm_dtype t, int64_t n)
{
	unsigned el, by;

	if (!gm_quant_supported(t) || n < 0)
		return 0;
	gm_dtype_block(t, &el, &by);
	if (n % el)
		return 0;
	return (size_t)(n / el) * by;
}

/* The 6-bit scale and min j (< 8) of a Q4_K / Q5_K block's 12 scale bytes. */
static void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
	if (j < 4) {
		*d = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
		*m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
	}
}

/* The 16 signed 6-bit scales of a Q3_K block (stored + 32 in 4 + 2 bits). */
static void q3k_scales(const uint8_t *s, int8_t out[16])
{
	int j;

	for (j = 0; j < 16; j++) {
		int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
		int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;

		out[j] = (int8_t)((lo | hi << 4) - 32);
	}
}

/* ---------------------------------------------------------------- dequantize */

static void deq_block(enum gm_dtype t, const uint8_t *b, float *y)
{
	int j, l, n, is, shift;

	switch (t) {
	case GM_DTYPE_Q4_0: {
		float d = f16(b);

		for (j = 0; j < 16; j++) {
			y[j] = (float)((b[2 + j] & 0xF) - 8) * d;
			y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
		}
		return;
	}
	case GM_DTYPE_Q4_1: {
		float d = f16(b), m = f16(b + 2);

		for (j = 0; j < 16; j++) {
			float p0 = (float)(b[4 + j] & 0xF) * d, p1 = (float)(b[4 + j] >> 4) * d;

			y[j] = p0 + m;
			y[j + 16] = p1 + m;
		}
		return;
	}
	case GM_DTYPE_Q5_0:
	case GM_DTYPE_Q5_1: {
		int one = t == GM_DTYPE_Q5_1;
		float d = f16(b), m = one ? f16(b + 2) : 0;
		const uint8_t *qs = b + (one ? 8 : 6);
		uint32_t qh;

		memcpy(&qh, b + (one ? 4 : 2), 4);
		for (j = 0; j < 16; j++) {
			int h0 = (int)((qh >> j) << 4) & 0x10, h1 = (int)(qh >> (j + 12)) & 0x10;
			int x0 = (qs[j] & 0xF) | h0, x1 = (qs[j] >> 4) | h1;

			if (one) {
				float p0 = (float)x0 * d, p1 = (float)x1 * d;

				y[j] = p0 + m;
				y[j + 16] = p1 + m;
			} else {
				y[j] = (float)(x0 - 16) * d;
				y[j + 16] = (float)(x1 - 16) * d;
			}
		}
		return;
	}
	case GM_DTYPE_Q8_0: {
		float d = f16(b);

		for (j = 0; j < 32; j++)
			y[j] = (float)(int8_t)b[2 + j] * d;
		return;
	}
	case GM_DTYPE_Q2_K: {
		float d = f16(b + 80), mn = f16(b + 82);
		const uint8_t *q = b + 16;

		is = 0;
		for (n = 0; n < QKK; n += 128, q += 32) {
			for (shift = 0; shift < 8; shift += 2) {
				for (l = 0; l < 32; l += 16) {
					uint8_t sc = b[is++];
					float dl = d * (float)(sc & 0xF), ml = mn * (float)(sc >> 4);
					int i;

					for (i = 0; i < 16; i++) {
						float p = dl * (float)((q[l + i] >> shift) & 3);

						*y++ = p - ml;
					}
				}
			}
		}
		return;
	}
	case GM_DTYPE_Q3_K: {
		float d = f16(b + 108);
		const uint8_t *hm = b, *q = b + 32;
		int8_t sc[16];
		uint8_t m = 1;

		q3k_scales(b + 96, sc);
		is = 0;
		for (n = 0; n < QKK; n += 128, q += 32) {
			for (shift = 0; shift < 8; shift += 2, m = (uint8_t)(m << 1)) {
				for (l = 0; l < 32; l += 16) {
					float dl = d * (float)sc[is++];
					int i;

					for (i = 0; i < 16; i++)
						*y++ = dl * (float)(((q[l + i] >> shift) & 3) - ((hm[l + i] & m) ? 0 : 4));
				}
			}
		}
		return;
	}
	case GM_DTYPE_Q4_K:
	case GM_DTYPE_Q5_K: {
		int five = t == GM_DTYPE_Q5_K;
		float d = f16(b), mn = f16(b + 2);
		const uint8_t *qh = b + 16, *q = b + (five ? 48 : 16);
		uint8_t u1 = 1, u2 = 2;

		for (j = 0; j < 8; j += 2, q += 32, u1 = (uint8_t)(u1 << 2), u2 = (uint8_t)(u2 << 2)) {
			uint8_t s1, m1, s2, m2;
			float d1, dm1, d2, dm2;

			scale_min_k4(j, b + 4, &s1, &m1);
			scale_min_k4(j + 1, b + 4, &s2, &m2);
			d1 = d * (float)s1;
			dm1 = mn * (float)m1;
			d2 = d * (float)s2;
			dm2 = mn * (float)m2;
			for (l = 0; l < 32; l++) {
				int v = (q[l] & 0xF) + (five && (qh[l] & u1) ? 16 : 0);
				float p = d1 * (float)v;

				*y++ = p - dm1;
			}
			for (l = 0; l < 32; l++) {
				int v = (q[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0);
				float p = d2 * (float)v;

				*y++ = p - dm2;
			}
		}
		return;
	}
	case GM_DTYPE_Q6_K: {
		float d = f16(b + 208);
		const uint8_t *ql = b, *qh = b + 128;
		const int8_t *sc = (const int8_t *)(b + 192);

		for (n = 0; n < QKK; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
			for (l = 0; l < 32; l++) {
				int s = l / 16;
				int q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
				int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
				int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
				int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;

				y[l] = d * (float)sc[s] * (float)q1;
				y[l + 32] = d * (float)sc[s + 2] * (float)q2;
				y[l + 64] = d * (float)sc[s + 4] * (float)q3;
				y[l + 96] = d * (float)sc[s + 6] * (float)q4;
			}
		}
		return;
	}
	case GM_DTYPE_Q8_K: {
		float d;

		memcpy(&d, b, 4);
		for (j = 0; j < QKK; j++)
			y[j] = d * (float)(int8_t)b[4 + j];
		return;
	}
	default:
		return;
	}
}

void gm_quant_dequantize(enum gm_dtype t, const void *src, float *dst, int64_t n)
{
	unsigned el, by;
	int64_t i;

	if (!gm_quant_supported(t))
		return;
	gm_dtype_block(t, &el, &by);
	for (i = 0; i < n / el; i++)
		deq_block(t, (const uint8_t *)src + (size_t)i * by, dst + i * el);
}

/* ---------------------------------------------------------------- the scale searches of the K-quants */

/*
 * Symmetric: quants L[i] + nmax in [0, 2 nmax) of x[0 .. n) with the scale
 * returned; the scale is searched around -nmax / max (max: the value of
 * largest magnitude) to minimise the weighted squared error, weights x^2.
 */
static float qx_quants(int n, int nmax, const float *x, int8_t *L)
{
	float max = 0, amax = 0, iscale, sumlx = 0, suml2 = 0, scale, best;
	int i, is;

	for (i = 0; i < n; i++) {
		float ax = fabsf(x[i]);

		if (ax > amax) {
			amax = ax;
			max = x[i];
		}
	}
	if (amax < GROUP_EPS) {
		memset(L, 0, (size_t)n);
		return 0;
	}
	iscale = -(float)nmax / max;
	for (i = 0; i < n; i++) {
		int l = nint(iscale * x[i]);
		float w = x[i] * x[i];

		l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
		L[i] = (int8_t)(l + nmax);
		sumlx += w * x[i] * (float)l;
		suml2 += w * (float)l * (float)l;
	}
	scale = suml2 ? sumlx / suml2 : 0.0f;
	best = scale * sumlx;
	for (is = -9; is <= 9; is++) {
		if (!is)
			continue;
		iscale = -((float)nmax + 0.1f * (float)is) / max;
		sumlx = suml2 = 0;
		for (i = 0; i < n; i++) {
			int l = nint(iscale * x[i]);
			float w = x[i] * x[i];

			l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
			sumlx += w * x[i] * (float)l;
			suml2 += w * (float)l * (float)l;
		}
		if (suml2 > 0 && sumlx * sumlx > best * suml2) {
			for (i = 0; i < n; i++) {
				int l = nint(iscale * x[i]);

				l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
				L[i] = (int8_t)(l + nmax);
			}
			scale = sumlx / suml2;
			best = scale * sumlx;
		}
	}
	return scale;
}

/* Q3_K's symmetric search: start at -nmax / max, then move single quants while the fit improves. */
static float q3_quants(int n, int nmax, const float *x, int8_t *L)
{
	float max = 0, amax = 0, iscale, sumlx = 0, suml2 = 0;
	int i, itry;

	for (i = 0; i < n; i++) {
		float ax = fabsf(x[i]);

		if (ax > amax) {
			amax = ax;
			max = x[i];
		}
	}
	if (amax < GROUP_EPS) {
		memset(L, 0, (size_t)n);
		return 0;
	}
	iscale = -(float)nmax / max;
	for (i = 0; i < n; i++) {
		int l = nint(iscale * x[i]);
		float w = x[i] * x[i];

		l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
		L[i] = (int8_t)l;
		sumlx += w * x[i] * (float)l;
		suml2 += w * (float)l * (float)l;
	}
	for (itry = 0; itry < 5; itry++) {
		int changed = 0;

		for (i = 0; i < n; i++) {
			float w = x[i] * x[i], slx = sumlx - w * x[i] * (float)L[i];

			if (slx > 0) {
				float sl2 = suml2 - w * (float)L[i] * (float)L[i];
				int nl = nint(x[i] * sl2 / slx);

				nl = nl < -nmax ? -nmax : nl > nmax - 1 ? nmax - 1 : nl;
				if (nl != L[i]) {
					slx += w * x[i] * (float)nl;
					sl2 += w * (float)nl * (float)nl;
					if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
						L[i] = (int8_t)nl;
						sumlx = slx;
						suml2 = sl2;
						changed++;
					}
				}
			}
		}
		if (!changed)
			break;
	}
	for (i = 0; i < n; i++)
		L[i] = (int8_t)(L[i] + nmax);
	return suml2 > 0 ? sumlx / suml2 : 0.0f;
}

/*
 * Asymmetric: x ~ scale L + min, L in [0, nmax], min <= 0 (returned
 * negated in *the_min), minimising the weighted error (squared, or
 * absolute when mad) over nstep + 1 trial scales (nmax + rmin + rdelta is)
 * / (max - min), each refitted by least squares.
 */
static float qkx2_quants(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min,
			 uint8_t *Laux, float rmin, float rdelta, int nstep, int mad)
{
	float mn = x[0], mx = x[0], sum_w = w[0], sum_x = sum_w * x[0], iscale, scale, best = 0;
	int i, is;

	for (i = 1; i < n; i++) {
		if (x[i] < mn)
			mn = x[i];
		if (x[i] > mx)
			mx = x[i];
		sum_w += w[i];
		sum_x += w[i] * x[i];
	}
	if (mn > 0)
		mn = 0;
	if (mx == mn) {
		memset(L, 0, (size_t)n);
		*the_min = -mn;
		return 0;
	}
	iscale = (float)nmax / (mx - mn);
	scale = 1 / iscale;
	for (i = 0; i < n; i++) {
		int l = nint(iscale * (x[i] - mn));
		float diff;

		L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
		diff = scale * (float)L[i] + mn - x[i];
		diff = mad ? fabsf(diff) : diff * diff;
		best += w[i] * diff;
	}
	for (is = 0; is <= nstep; is++) {
		float sum_l = 0, sum_l2 = 0, sum_xl = 0, D;

		iscale = (rmin + rdelta * (float)is + (float)nmax) / (mx - mn);
		for (i = 0; i < n; i++) {
			int l = nint(iscale * (x[i] - mn));

			l = l < 0 ? 0 : l > nmax ? nmax : l;
			Laux[i] = (uint8_t)l;
			sum_l += w[i] * (float)l;
			sum_l2 += w[i] * (float)l * (float)l;
			sum_xl += w[i] * (float)l * x[i];
		}
		D = sum_w * sum_l2 - sum_l * sum_l;
		if (D > 0) {
			float ts = (sum_w * sum_xl - sum_x * sum_l) / D, tm = (sum_l2 * sum_x - sum_l * sum_xl) / D;
			float err = 0;

			if (tm > 0) {
				tm = 0;
				ts = sum_xl / sum_l2;
			}
			for (i = 0; i < n; i++) {
				float diff = ts * (float)Laux[i] + tm - x[i];

				diff = mad ? fabsf(diff) : diff * diff;
				err += w[i] * diff;
			}
			if (err < best) {
				memcpy(L, Laux, (size_t)n);
				best = err;
				scale = ts;
				mn = tm;
			}
		}
	}
	*the_min = -mn;
	return scale;
}

/* ---------------------------------------------------------------- quantize, per type */

static void q4_0_block(const float *x, uint8_t *b)
{
	float amax = 0, max = 0, d, id;
	int j;

	for (j = 0; j < QK; j++)
		if (amax < fabsf(x[j])) {
			amax = fabsf(x[j]);
			max = x[j];
		}
	d = max / -8;
	id = d ? 1.0f / d : 0.0f;
	put_f16(b, d);
	for (j = 0; j < 16; j++) {
		int a = (int8_t)(x[j] * id + 8.5f), c = (int8_t)(x[j + 16] * id + 8.5f);

		a = a > 15 ? 15 : a;
		c = c > 15 ? 15 : c;
		b[2 + j] = (uint8_t)(a | c << 4);
	}
}

static void q4_1_block(const float *x, uint8_t *b, int five)
{
	float mn = FLT_MAX, mx = -FLT_MAX, d, id;
	uint32_t qh = 0;
	int j, top = five ? 31 : 15;
	uint8_t *qs = b + (five ? 8 : 4);

	for (j = 0; j < QK; j++) {
		if (x[j] < mn)
			mn = x[j];
		if (x[j] > mx)
			mx = x[j];
	}
	d = (mx - mn) / (float)top;
	id = d ? 1.0f / d : 0.0f;
	put_f16(b, d);
	put_f16(b + 2, mn);
	for (j = 0; j < 16; j++) {
		int a = (uint8_t)((x[j] - mn) * id + 0.5f), c = (uint8_t)((x[j + 16] - mn) * id + 0.5f);

		if (!five) {
			a = a > 15 ? 15 : a;
			c = c > 15 ? 15 : c;
		}
		qs[j] = (uint8_t)((a & 0xF) | (c & 0xF) << 4);
		qh |= (uint32_t)((a & 0x10) >> 4) << j;
		qh |= (uint32_t)((c & 0x10) >> 4) << (j + 16);
	}
	if (five)
		memcpy(b + 4, &qh, 4);
}

static void q5_0_block(const float *x, uint8_t *b)
{
	float amax = 0, max = 0, d, id;
	uint32_t qh = 0;
	int j;

	for (j = 0; j < QK; j++)
		if (amax < fabsf(x[j])) {
			amax = fabsf(x[j]);
			max = x[j];
		}
	d = max / -16;
	id = d ? 1.0f / d : 0.0f;
	put_f16(b, d);
	for (j = 0; j < 16; j++) {
		int a = (int8_t)(x[j] * id + 16.5f), c = (int8_t)(x[j + 16] * id + 16.5f);

		a = a > 31 ? 31 : a;
		c = c > 31 ? 31 : c;
		b[6 + j] = (uint8_t)((a & 0xF) | (c & 0xF) << 4);
		qh |= (uint32_t)((a & 0x10) >> 4) << j;
		qh |= (uint32_t)((c & 0x10) >> 4) << (j + 16);
	}
	memcpy(b + 2, &qh, 4);
}

static void q8_0_block(const float *x, uint8_t *b)
{
	float amax = 0, d, id;
	int j;

	for (j = 0; j < QK; j++)
		amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
	d = amax / 127;
	id = d ? 1.0f / d : 0.0f;
	put_f16(b, d);
	for (j = 0; j < QK; j++)
		b[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

static void q2_k_block(const float *x, uint8_t *b)
{
	uint8_t L[QKK], Laux[16];
	float w[16], mins[16], scales[16], max_scale = 0, max_min = 0, dd, dm;
	int j, l, i;

	for (j = 0; j < 16; j++) {
		for (l = 0; l < 16; l++)
			w[l] = fabsf(x[16 * j + l]);
		scales[j] = qkx2_quants(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, 1);
		if (scales[j] > max_scale)
			max_scale = scales[j];
		if (mins[j] > max_min)
			max_min = mins[j];
	}
	memset(b, 0, 84);
	if (max_scale > 0) {
		float is = 15.f / max_scale;

		for (j = 0; j < 16; j++)
			b[j] = (uint8_t)nint(is * scales[j]);
		put_f16(b + 80, max_scale / 15.f);
	}
	if (max_min > 0) {
		float is = 15.f / max_min;

		for (j = 0; j < 16; j++)
			b[j] |= (uint8_t)(nint(is * mins[j]) << 4);
		put_f16(b + 82, max_min / 15.f);
	}
	dd = f16(b + 80);
	dm = f16(b + 82);
	for (j = 0; j < 16; j++) {
		float d = dd * (float)(b[j] & 0xF), m = dm * (float)(b[j] >> 4);

		if (!d)
			continue;
		for (i = 0; i < 16; i++) {
			int q = nint((x[16 * j + i] + m) / d);

			L[16 * j + i] = (uint8_t)(q < 0 ? 0 : q > 3 ? 3 : q);
		}
	}
	for (j = 0; j < QKK; j += 128)
		for (l = 0; l < 32; l++)
			b[16 + j / 4 + l] = (uint8_t)(L[j + l] | L[j + l + 32] << 2 | L[j + l + 64] << 4 | L[j + l + 96] << 6);
}

static void q3_k_block(const float *x, uint8_t *b)
{
	int8_t L[QKK], sc[16];
	float scales[16], max_scale = 0, amax = 0, dd;
	int j, l, i, m;
	uint8_t hm;

	for (j = 0; j < 16; j++) {
		scales[j] = q3_quants(16, 4, x + 16 * j, L + 16 * j);
		if (fabsf(scales[j]) > amax) {
			amax = fabsf(scales[j]);
			max_scale = scales[j];
		}
	}
	memset(b, 0, 110);
	if (max_scale) {
		float is = -32.f / max_scale;

		for (j = 0; j < 16; j++) {
			int q = nint(is * scales[j]);

			q = (q < -32 ? -32 : q > 31 ? 31 : q) + 32;
			if (j < 8)
				b[96 + j] = (uint8_t)(q & 0xF);
			else
				b[96 + j - 8] |= (uint8_t)((q & 0xF) << 4);
			b[96 + 8 + j % 4] |= (uint8_t)((q >> 4) << (2 * (j / 4)));
		}
		put_f16(b + 108, 1 / is);
	}
	dd = f16(b + 108);
	q3k_scales(b + 96, sc);
	for (j = 0; j < 16; j++) {
		float d = dd * (float)sc[j];

		if (!d)
			continue;
		for (i = 0; i < 16; i++) {
			int q = nint(x[16 * j + i] / d);

			L[16 * j + i] = (int8_t)((q < -4 ? -4 : q > 3 ? 3 : q) + 4);
		}
	}
	/* high bits: element j's in bit j / 32 of hmask[j % 32] */
	for (j = 0, m = 0, hm = 1; j < QKK; j++) {
		if (L[j] > 3) {
			b[m] |= hm;
			L[j] = (int8_t)(L[j] - 4);
		}
		if (++m == 32) {
			m = 0;
			hm = (uint8_t)(hm << 1);
		}
	}
	for (j = 0; j < QKK; j += 128)
		for (l = 0; l < 32; l++)
			b[32 + j / 4 + l] = (uint8_t)(L[j + l] | L[j + l + 32] << 2 | L[j + l + 64] << 4 | L[j + l + 96] << 6);
}

/* Q4_K (five 0) and Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins. */
static void q45_k_block(const float *x, uint8_t *b, int five)
{
	uint8_t L[QKK], Laux[32];
	float w[32], mins[8], scales[8], max_scale = 0, max_min = 0, is_s, is_m, dd, dm;
	int j, l, i, nmax = five ? 31 : 15;

	for (j = 0; j < 8; j++) {
		float sx2 = 0, av;

		for (l = 0; l < 32; l++)
			sx2 += x[32 * j + l] * x[32 * j + l];
		av = sqrtf(sx2 / 32);
		for (l = 0; l < 32; l++)
			w[l] = av + fabsf(x[32 * j + l]);
		scales[j] = qkx2_quants(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j], Laux, five ? -0.5f : -1.f, 0.1f,
					five ? 15 : 20, 0);
		if (scales[j] > max_scale)
			max_scale = scales[j];
		if (mins[j] > max_min)
			max_min = mins[j];
	}
	memset(b, 0, five ? 176 : 144);
	is_s = max_scale > 0 ? 63.f / max_scale : 0.f;
	is_m = max_min > 0 ? 63.f / max_min : 0.f;
	for (j = 0; j < 8; j++) {
		uint8_t ls = (uint8_t)nint(is_s * scales[j]), lm = (uint8_t)nint(is_m * mins[j]);
		uint8_t *s = b + 4;

		ls = ls > 63 ? 63 : ls;
		lm = lm > 63 ? 63 : lm;
		if (j < 4) {
			s[j] = ls;
			s[j + 4] = lm;
		} else {
			s[j + 4] = (uint8_t)((ls & 0xF) | (lm & 0xF) << 4);
			s[j - 4] |= (uint8_t)((ls >> 4) << 6);
			s[j] |= (uint8_t)((lm >> 4) << 6);
		}
	}
	put_f16(b, max_scale / 63.f);
	put_f16(b + 2, max_min / 63.f);
	dd = f16(b);
	dm = f16(b + 2);
	for (j = 0; j < 8; j++) {
		uint8_t sc, m;
		float d, mm;

		scale_min_k4(j, b + 4, &sc, &m);
		d = dd * (float)sc;
		if (!d)
			continue;
		mm = dm * (float)m;
		for (i = 0; i < 32; i++) {
			int q = nint((x[32 * j + i] + mm) / d);

			L[32 * j + i] = (uint8_t)(q < 0 ? 0 : q > nmax ? nmax : q);
		}
	}
	if (!five) {
		for (j = 0; j < QKK; j += 64)
			for (l = 0; l < 32; l++)
				b[16 + j / 2 + l] = (uint8_t)(L[j + l] | L[j + l + 32] << 4);
		return;
	}
	{
		uint8_t m1 = 1, m2 = 2, *qh = b + 16, *ql = b + 48;

		for (j = 0; j < QKK; j += 64, ql += 32, m1 = (uint8_t)(m1 << 2), m2 = (uint8_t)(m2 << 2)) {
			for (l = 0; l < 32; l++) {
				int l1 = L[j + l], l2 = L[j + l + 32];

				if (l1 > 15) {
					l1 -= 16;
					qh[l] |= m1;
				}
				if (l2 > 15) {
					l2 -= 16;
					qh[l] |= m2;
				}
				ql[l] = (uint8_t)(l1 | l2 << 4);
			}
		}
	}
}

static void q6_k_block(const float *x, uint8_t *b)
{
	int8_t L[QKK];
	float scales[16], max_scale = 0, amax = 0, is, dd;
	int j, l, i;
	uint8_t *ql = b, *qh = b + 128;
	int8_t *sc = (int8_t *)(b + 192);

	for (j = 0; j < 16; j++) {
		scales[j] = qx_quants(16, 32, x + 16 * j, L + 16 * j);
		if (fabsf(scales[j]) > amax) {
			amax = fabsf(scales[j]);
			max_scale = scales[j];
		}
	}
	memset(b, 0, 210);
	if (amax < GROUP_EPS)
		return;
	is = -128.f / max_scale;
	put_f16(b + 208, 1 / is);
	for (j = 0; j < 16; j++) {
		int q = nint(is * scales[j]);

		sc[j] = (int8_t)(q > 127 ? 127 : q);
	}
	dd = f16(b + 208);
	for (j = 0; j < 16; j++) {
		float d = dd * (float)sc[j];

		if (!d)
			continue;
		for (i = 0; i < 16; i++) {
			int q = nint(x[16 * j + i] / d);

			L[16 * j + i] = (int8_t)((q < -32 ? -32 : q > 31 ? 31 : q) + 32);
		}
	}
	for (j = 0; j < QKK; j += 128, ql += 64, qh += 32) {
		for (l = 0; l < 32; l++) {
			ql[l] = (uint8_t)((L[j + l] & 0xF) | (L[j + l + 64] & 0xF) << 4);
			ql[l + 32] = (uint8_t)((L[j + l + 32] & 0xF) | (L[j + l + 96] & 0xF) << 4);
			qh[l] = (uint8_t)((L[j + l] >> 4) | (L[j + l + 32] >> 4) << 2 | (L[j + l + 64] >> 4) << 4 |
					  (L[j + l + 96] >> 4) << 6);
		}
	}
}

static void q8_k_block(const float *x, uint8_t *b)
{
	float max = 0, amax = 0, is, d;
	int j, i;

	for (j = 0; j < QKK; j++)
		if (fabsf(x[j]) > amax) {
			amax = fabsf(x[j]);
			max = x[j];
		}
	memset(b, 0, 292);
	if (!amax)
		return;
	is = -127.f / max;
	for (j = 0; j < QKK; j++) {
		int q = nint(is * x[j]);

		b[4 + j] = (uint8_t)(int8_t)(q > 127 ? 127 : q);
	}
	for (j = 0; j < 16; j++) {
		int16_t s = 0;

		for (i = 0; i < 16; i++)
			s = (int16_t)(s + (int8_t)b[4 + 16 * j + i]);
		memcpy(b + 260 + 2 * j, &s, 2);
	}
	d = 1 / is;
	memcpy(b, &d, 4);
}

void gm_quant_quantize(enum gm_dtype t, const float *src, void *dst, int64_t n)
{
	unsigned el, by;
	int64_t i;

	if (!gm_quant_supported(t))
		return;
	gm_dtype_block(t, &el, &by);
	for (i = 0; i < n / el; i++) {
		const float *x = src + i * el;
		uint8_t *b = (uint8_t *)dst + (size_t)i * by;

		switch (t) {
		case GM_DTYPE_Q4_0: q4_0_block(x, b); break;
		case GM_DTYPE_Q4_1: q4_1_block(x, b, 0); break;
		case GM_DTYPE_Q5_0: q5_0_block(x, b); break;
		case GM_DTYPE_Q5_1: q4_1_block(x, b, 1); break;
		case GM_DTYPE_Q8_0: q8_0_block(x, b); break;
		case GM_DTYPE_Q2_K: q2_k_block(x, b); break;
		case GM_DTYPE_Q3_K: q3_k_block(x, b); break;
		case GM_DTYPE_Q4_K: q45_k_block(x, b, 0); break;
		case GM_DTYPE_Q5_K: q45_k_block(x, b, 1); break;
		case GM_DTYPE_Q6_K: q6_k_block(x, b); break;
		case GM_DTYPE_Q8_K: q8_k_block(x, b); break;
		default: break;
		}
	}
}
