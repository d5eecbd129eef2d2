/*
 * kernels-kv.c - attention kernels over 16-bit or f32 K/V rows (see
 * kernels-kv.h).  Kept apart from kernels.c: these read the KV cache's
 * layout, not a weight matrix.
 */
#include "cpu/kernels-kv.h"

#include <string.h>

#include "cpu/kernels.h"
#include "cpu/reduce-512.h"

#if (defined(__x86_64__) || defined(__i386__)) && !defined(GM_NO_SIMD)
#define GM_KV_X86 1
#include <immintrin.h>
#endif

static inline float kv_get(const void *k, enum gm_dtype t, int64_t i)
{
	switch (t) {
	case GM_DTYPE_BF16:
		return gm_bf16_to_f32(((const uint16_t *)k)[i]);
	case GM_DTYPE_F16:
		return gm_f16_to_f32(((const uint16_t *)k)[i]);
	default:
		return ((const float *)k)[i];
	}
}

static inline const void *kv_row(const void *k, enum gm_dtype t, int64_t d, int64_t r)
{
	return (const char *)k + (size_t)(r * d) * (t == GM_DTYPE_F32 ? 4 : 2);
}

/* ---------------------------------------------------------------- portable */

/* Eight partial sums over i mod 8, added pairwise. */
static void scores_portable(float *const *s, const float *const *q, int nq, const void *k, enum gm_dtype kt,
			    int64_t nk, int64_t d)
{
	int64_t t, i;
	int j, l;

	for (t = 0; t < nk; t++) {
		const void *kr = kv_row(k, kt, d, t);

		for (j = 0; j < nq; j++) {
			float a[8] = { 0 };

			for (i = 0; i < d; i++)
				a[i & 7] += q[j][i] * kv_get(kr, kt, i);
			for (l = 0; l < 4; l++)
				a[l] += a[l + 4];
			s[j][t] = (a[0] + a[2]) + (a[1] + a[3]);
		}
	}
}

static void accum_portable(float *const *o, const float *const *p, int nq, const void *v, enum gm_dtype vt,
			   int64_t nk, int64_t d)
{
	int64_t t, i;
	int j;

	for (t = 0; t < nk; t++) {
		const void *vr = kv_row(v, vt, d, t);

		for (j = 0; j < nq; j++) {
			float pj = p[j][t];

			for (i = 0; i < d; i++)
				o[j][i] += pj * kv_get(vr, vt, i);
		}
	}
}

/* ---------------------------------------------------------------- AVX2 */
#ifdef GM_KV_X86
#define KV_AVX2 __attribute__((target("avx2,fma,f16c")))
#define KV_INL __attribute__((always_inline)) inline

/* 8 elements from i (f32), the lanes past n zero. */
static KV_INL KV_AVX2 __m256 kv_ld8(const void *w, const enum gm_dtype t, int64_t i, int64_t n)
{
	if (n < 8) {
		float tmp[8] = { 0 };
		int64_t l;

		for (l = 0; l < n; l++)
			tmp[l] = kv_get(w, t, i + l);
		return _mm256_loadu_ps(tmp);
	}
	if (t == GM_DTYPE_F32)
		return _mm256_loadu_ps((const float *)w + i);
	__m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
	if (t == GM_DTYPE_F16)
		return _mm256_cvtph_ps(h);
	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static KV_INL KV_AVX2 __m256 f_ld8(const float *x, int64_t n)
{
	if (n < 8) {
		float tmp[8] = { 0 };

		memcpy(tmp, x, (size_t)n * sizeof(float));
		return _mm256_loadu_ps(tmp);
	}
	return _mm256_loadu_ps(x);
}

static KV_INL KV_AVX2 float kv_hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

static KV_INL KV_AVX2 void scores_avx2_t(float *const *s, const float *const *q, int nq, const void *k,
					  const enum gm_dtype kt, int64_t nk, int64_t d)
{
	int64_t t, i;
	int j;

	for (t = 0; t < nk; t++) {
		const void *kr = kv_row(k, kt, d, t);

		for (j = 0; j < nq; j++) {
			__m256 a = _mm256_setzero_ps();

			for (i = 0; i < d; i += 8)
				a = _mm256_fmadd_ps(kv_ld8(kr, kt, i, d - i), f_ld8(q[j] + i, d - i), a);
			s[j][t] = kv_hsum8(a);
		}
	}
}

static KV_AVX2 void scores_avx2(float *const *s, const float *const *q, int nq, const void *k, enum gm_dtype kt,
				int64_t nk, int64_t d)
{
	if (kt == GM_DTYPE_BF16)
		scores_avx2_t(s, q, nq, k, GM_DTYPE_BF16, nk, d);
	else if (kt == GM_DTYPE_F16)
		scores_avx2_t(s, q, nq, k, GM_DTYPE_F16, nk, d);
	else
		scores_avx2_t(s, q, nq, k, GM_DTYPE_F32, nk, d);
}

static KV_INL KV_AVX2 void accum_avx2_t(float *const *o, const float *const *p, int nq, const void *v,
					 const enum gm_dtype vt, int64_t nk, int64_t d)
{
	int64_t t, i;
	int j;

	for (i = 0; i + 8 <= d; i += 8) {
		for (j = 0; j < nq; j++) {
			__m256 a = _mm256_loadu_ps(o[j] + i);

			for (t = 0; t < nk; t++)
				a = _mm256_fmadd_ps(_mm256_set1_ps(p[j][t]), kv_ld8(kv_row(v, vt, d, t), vt, i, 8), a);
			_mm256_storeu_ps(o[j] + i, a);
		}
	}
	for (; i < d; i++)
		for (j = 0; j < nq; j++)
			for (t = 0; t < nk; t++)
				o[j][i] += p[j][t] * kv_get(kv_row(v, vt, d, t), vt, i);
}

static KV_AVX2 void accum_avx2(float *const *o, const float *const *p, int nq, const void *v, enum gm_dtype vt,
			       int64_t nk, int64_t d)
{
	if (vt == GM_DTYPE_BF16)
		accum_avx2_t(o, p, nq, v, GM_DTYPE_BF16, nk, d);
	else if (vt == GM_DTYPE_F16)
		accum_avx2_t(o, p, nq, v, GM_DTYPE_F16, nk, d);
	else
		accum_avx2_t(o, p, nq, v, GM_DTYPE_F32, nk, d);
}

/* ---------------------------------------------------------------- AVX-512 */
#define KV_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

/* 16 elements from i as f32, only the lanes in m read (the others zero). */
static KV_INL KV_512 __m512 kv_ld16(const void *w, const enum gm_dtype t, int64_t i, __mmask16 m)
{
	if (t == GM_DTYPE_F32)
		return _mm512_maskz_loadu_ps(m, (const float *)w + i);
	__m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i);
	if (t == GM_DTYPE_F16)
		return _mm512_cvtph_ps(h);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static KV_INL KV_512 __mmask16 kv_mask(int64_t left)
{
	return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/*
 * QB queries by KB keys (QB * KB = 16), one accumulator each, reduced
 * together: a[q * KB + k] is the sum of query q with key k, 16 lanes over
 * the head dimension, then gm_reduce16_512.  Loads per multiply-add: (QB + KB)
 * / 16.
 */
static KV_INL KV_512 void scores_tile(float *const *s, const float *const *q, const int QB, const void *k,
				      const enum gm_dtype kt, int64_t t, int64_t d)
{
	const int KB = 16 / QB;
	__m512 a[16], x[4];
	float out[16];
	int64_t i;
	int j, c;

#pragma GCC unroll 16
	for (c = 0; c < 16; c++)
		a[c] = _mm512_setzero_ps();
#pragma GCC unroll 8
	for (i = 0; i < d; i += 16) {
		__mmask16 m = kv_mask(d - i);

#pragma GCC unroll 4
		for (j = 0; j < QB; j++)
			x[j] = _mm512_maskz_loadu_ps(m, q[j] + i);
#pragma GCC unroll 16
		for (c = 0; c < KB; c++) {
			__m512 kc = kv_ld16(kv_row(k, kt, d, t + c), kt, i, m);

#pragma GCC unroll 4
			for (j = 0; j < QB; j++)
				a[j * KB + c] = _mm512_fmadd_ps(kc, x[j], a[j * KB + c]);
		}
	}
	_mm512_storeu_ps(out, gm_reduce16_512(a));
#pragma GCC unroll 4
	for (j = 0; j < QB; j++)
		memcpy(s[j] + t, out + j * KB, (size_t)KB * sizeof(float));
}

/* One score: 16 lanes over the head dimension, then the lanes' tree. */
static KV_INL KV_512 float score_one(const float *q, const void *kr, const enum gm_dtype kt, int64_t d)
{
	__m512 a0 = _mm512_setzero_ps();
	int64_t i;

	for (i = 0; i < d; i += 16) {
		__mmask16 m = kv_mask(d - i);

		a0 = _mm512_fmadd_ps(kv_ld16(kr, kt, i, m), _mm512_maskz_loadu_ps(m, q + i), a0);
	}
	return _mm512_reduce_add_ps(a0);
}

/*
 * Tiles of 4 queries x 4 keys, then 2 x 8, then 1 x 16, the keys left
 * over one score at a time; every score is the same sum (score_one's)
 * whichever way it is reached.
 */
static KV_INL KV_512 void scores_512_t(float *const *s, const float *const *q, int nq, const void *k,
					const enum gm_dtype kt, int64_t nk, int64_t d)
{
	int64_t t;
	int j = 0, qb, kb;

	while (j < nq) {
		qb = nq - j >= 4 ? 4 : nq - j >= 2 ? 2 : 1;
		kb = 16 / qb;
		for (t = 0; t + kb <= nk; t += kb) {
			if (qb == 4)
				scores_tile(s + j, q + j, 4, k, kt, t, d);
			else if (qb == 2)
				scores_tile(s + j, q + j, 2, k, kt, t, d);
			else
				scores_tile(s + j, q + j, 1, k, kt, t, d);
		}
		for (; t < nk; t++)
			for (int jj = j; jj < j + qb; jj++)
				s[jj][t] = score_one(q[jj], kv_row(k, kt, d, t), kt, d);
		j += qb;
	}
}

/*
 * 16-bit rows are converted to f32 once per call, a few keys at a time,
 * rather than once per query: the same values, so the same bits.
 */
#define KV_CONV_FLOATS 4096

static KV_INL KV_512 void kv_rows_f32(float *dst, const void *src, const enum gm_dtype t, int64_t n)
{
	int64_t i;

	for (i = 0; i < n; i += 16)
		_mm512_storeu_ps(dst + i, kv_ld16(src, t, i, kv_mask(n - i)));
}

/* The key (or value) rows per conversion chunk: at least one. */
static int64_t kv_chunk_rows(int64_t d)
{
	return d >= KV_CONV_FLOATS ? 1 : KV_CONV_FLOATS / d;
}

/*
 * Up to 128 output lanes of QB queries in registers while the keys stream
 * by: each value vector loaded once for the QB queries.  Each lane is
 * accumulated over the keys in order, whatever QB.
 */
static KV_INL KV_512 void accum_tile(float *const *o, const float *const *p, const int QB, const void *v,
				     const enum gm_dtype vt, int64_t nk, int64_t d, int64_t i0)
{
	int64_t t, w = d - i0 < 128 ? d - i0 : 128;
	int nv = (int)((w + 15) / 16), c, j;
	__m512 a[2][8];

#pragma GCC unroll 8
	for (c = 0; c < 8; c++)
#pragma GCC unroll 2
		for (j = 0; j < QB; j++)
			a[j][c] = _mm512_setzero_ps(); /* (the unused ones: the compiler's flow analysis) */
#pragma GCC unroll 8
	for (c = 0; c < nv; c++)
#pragma GCC unroll 2
		for (j = 0; j < QB; j++)
			a[j][c] = _mm512_maskz_loadu_ps(kv_mask(w - 16 * c), o[j] + i0 + 16 * c);
	for (t = 0; t < nk; t++) {
		const void *vr = kv_row(v, vt, d, t);
		__m512 pv[2];

#pragma GCC unroll 2
		for (j = 0; j < QB; j++)
			pv[j] = _mm512_set1_ps(p[j][t]);
#pragma GCC unroll 8
		for (c = 0; c < nv; c++) {
			__m512 x = kv_ld16(vr, vt, i0 + 16 * c, kv_mask(w - 16 * c));

#pragma GCC unroll 2
			for (j = 0; j < QB; j++)
				a[j][c] = _mm512_fmadd_ps(pv[j], x, a[j][c]);
		}
	}
#pragma GCC unroll 8
	for (c = 0; c < nv; c++)
#pragma GCC unroll 2
		for (j = 0; j < QB; j++)
			_mm512_mask_storeu_ps(o[j] + i0 + 16 * c, kv_mask(w - 16 * c), a[j][c]);
}

/* Queries two at a time (16 accumulator chains), the last one alone. */
static KV_INL KV_512 void accum_512_t(float *const *o, const float *const *p, int nq, const void *v,
				       const enum gm_dtype vt, int64_t nk, int64_t d)
{
	int64_t i0;
	int j;

	for (i0 = 0; i0 < d; i0 += 128) {
		for (j = 0; j + 2 <= nq; j += 2)
			accum_tile(o + j, p + j, 2, v, vt, nk, d, i0);
		if (j < nq)
			accum_tile(o + j, p + j, 1, v, vt, nk, d, i0);
	}
}

/* scores_512_t (acc 0: out s, in q) or accum_512_t (acc 1: out o, in p) on rows of type t, d constant where inlined. */
#define KV_KERNEL(acc, out, in, rows, t, n, d)                                                                \
	((acc) ? accum_512_t(out, in, nq, rows, t, n, d) : scores_512_t(out, in, nq, rows, t, n, d))

/* Either kernel on f32 rows, the usual head sizes as constants: the loops unrolled, the masks gone. */
static KV_INL KV_512 void kv_f32_512(const int acc, float *const *out, const float *const *in, int nq,
				     const float *rows, int64_t nk, int64_t d)
{
	if (d == 128)
		KV_KERNEL(acc, out, in, rows, GM_DTYPE_F32, nk, 128);
	else if (d == 64)
		KV_KERNEL(acc, out, in, rows, GM_DTYPE_F32, nk, 64);
	else
		KV_KERNEL(acc, out, in, rows, GM_DTYPE_F32, nk, d);
}

/*
 * Either kernel over nk rows (keys or values) of type rt: 16-bit rows are
 * converted to f32 a chunk at a time (the scores' outputs, or the
 * accumulation's weights, moved along with the chunk), then kv_f32_512.
 * The keys in order, chunk after chunk: each output lane's sum in the
 * same order as without chunks.
 */
static KV_INL KV_512 void kv_chunks_512(const int acc, float *const *out, const float *const *in, int nq,
					const void *rows, enum gm_dtype rt, int64_t nk, int64_t d)
{
	float buf[KV_CONV_FLOATS], *oc[GM_ATTN_MAXQ];
	const float *ic[GM_ATTN_MAXQ];
	int64_t c, t0, per = kv_chunk_rows(d);
	int j;

	if (rt == GM_DTYPE_F32) {
		kv_f32_512(acc, out, in, nq, rows, nk, d);
		return;
	}
	if (d > KV_CONV_FLOATS || nq > GM_ATTN_MAXQ) {
		if (rt == GM_DTYPE_BF16)
			KV_KERNEL(acc, out, in, rows, GM_DTYPE_BF16, nk, d);
		else
			KV_KERNEL(acc, out, in, rows, GM_DTYPE_F16, nk, d);
		return;
	}
	for (t0 = 0; t0 < nk; t0 += per) {
		c = nk - t0 < per ? nk - t0 : per;
		if (rt == GM_DTYPE_BF16)
			kv_rows_f32(buf, kv_row(rows, rt, d, t0), GM_DTYPE_BF16, c * d);
		else
			kv_rows_f32(buf, kv_row(rows, rt, d, t0), GM_DTYPE_F16, c * d);
		for (j = 0; j < nq; j++) {
			oc[j] = acc ? out[j] : out[j] + t0;
			ic[j] = acc ? in[j] + t0 : in[j];
		}
		kv_f32_512(acc, oc, ic, nq, buf, c, d);
	}
}
#undef KV_KERNEL

static KV_512 void scores_512(float *const *s, const float *const *q, int nq, const void *k, enum gm_dtype kt,
			      int64_t nk, int64_t d)
{
	kv_chunks_512(0, s, q, nq, k, kt, nk, d);
}

static KV_512 void accum_512(float *const *o, const float *const *p, int nq, const void *v, enum gm_dtype vt,
			     int64_t nk, int64_t d)
{
	kv_chunks_512(1, o, p, nq, v, vt, nk, d);
}
#endif /* GM_KV_X86 */

/* ---------------------------------------------------------------- entry points */

void gm_attn_scores(float *const *s, const float *const *q, int nq, const void *k, enum gm_dtype kt, int64_t nk,
		    int64_t d)
{
	switch (gm_kernels_isa()) {
#ifdef GM_KV_X86
	case GM_ISA_AVX512:
		scores_512(s, q, nq, k, kt, nk, d);
		return;
	case GM_ISA_AVX2:
		scores_avx2(s, q, nq, k, kt, nk, d);
		return;
#endif
	default:
		scores_portable(s, q, nq, k, kt, nk, d);
		return;
	}
}

void gm_attn_accum(float *const *o, const float *const *p, int nq, const void *v, enum gm_dtype vt, int64_t nk,
		   int64_t d)
{
	switch (gm_kernels_isa()) {
#ifdef GM_KV_X86
	case GM_ISA_AVX512:
		accum_512(o, p, nq, v, vt, nk, d);
		return;
	case GM_ISA_AVX2:
		accum_avx2(o, p, nq, v, vt, nk, d);
		return;
#endif
	default:
		accum_portable(o, p, nq, v, vt, nk, d);
		return;
	}
}

void gm_kv_store_row(void *dst, enum gm_dtype dt, const float *src, int64_t n)
{
	int64_t i;

	switch (dt) {
	case GM_DTYPE_BF16:
		for (i = 0; i < n; i++)
			((uint16_t *)dst)[i] = gm_f32_to_bf16(src[i]);
		break;
	case GM_DTYPE_F16:
		for (i = 0; i < n; i++)
			((uint16_t *)dst)[i] = gm_f32_to_f16(src[i]);
		break;
	default:
		memcpy(dst, src, (size_t)n * sizeof(float));
		break;
	}
}
