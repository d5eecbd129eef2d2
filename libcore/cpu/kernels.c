/*
 * kernels.c - numeric kernels of the CPU forward pass (see kernels.h).
 *
 * gm_matvec streams each weight row once, four rows at a time, converting
 * BF16/F16 to f32 in registers.  It is memory-bound: at batch 1 the time
 * of a token is the time to read the weights.
 *
 * gm_matmul is compute-bound.  Blocking:
 *   - a panel of RB rows of W (RB * in floats, about 256 KiB, in L2) is
 *     converted to f32 once (row-major) and used for all n tokens;
 *   - X is packed transposed in blocks of TB = 32 tokens, so that the
 *     32 activations of one k are adjacent (two AVX-512 vectors);
 *   - the micro-kernel keeps a 12 x 32 tile of Y in 24 vector registers
 *     and, for each k, broadcasts the weights of 12 rows against the 32
 *     activations: 24 FMAs for 2 vector loads and 12 broadcasts, and no
 *     horizontal sums.
 * Each Y element is accumulated over k in order in one vector lane, so the
 * result does not depend on tiling nor on threads.
 */
#include "cpu/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* x86 SIMD variants, unless built with -DGM_NO_SIMD (portable code only) */
#if (defined(__x86_64__) || defined(__i386__)) && !defined(GM_NO_SIMD)
#define GM_X86 1
#include <immintrin.h>
#endif
#include "cpu/reduce-512.h"

#define TB GM_MATMUL_TB
#define TR GM_MATMUL_TR

/* set once by whichever thread asks first (the same value from any): atomic, so not a data race */
static _Atomic int gm_isa_cur = -1;

/* ---------------------------------------------------------------- dispatch */

int gm_kernels_isa_supported(enum gm_isa isa)
{
	switch (isa) {
	case GM_ISA_PORTABLE:
		return 1;
#ifdef GM_X86
	case GM_ISA_AVX2:
		__builtin_cpu_init();
		return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
		       __builtin_cpu_supports("f16c");
	case GM_ISA_AVX512:
		__builtin_cpu_init();
		return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
#endif
	default:
		return 0;
	}
}

const char *gm_isa_name(enum gm_isa isa)
{
	switch (isa) {
	case GM_ISA_PORTABLE:
		return "portable";
	case GM_ISA_AVX2:
		return "avx2";
	case GM_ISA_AVX512:
		return "avx512";
	}
	return "?";
}

static enum gm_isa best_isa(void)
{
	if (gm_kernels_isa_supported(GM_ISA_AVX512))
		return GM_ISA_AVX512;
	if (gm_kernels_isa_supported(GM_ISA_AVX2))
		return GM_ISA_AVX2;
	return GM_ISA_PORTABLE;
}

enum gm_isa gm_kernels_isa(void)
{
	if (gm_isa_cur < 0) {
		const char *env = getenv("GM_KERNELS");
		enum gm_isa isa = best_isa();

		if (env && !strcmp(env, "portable"))
			isa = GM_ISA_PORTABLE;
		else if (env && !strcmp(env, "avx2") && gm_kernels_isa_supported(GM_ISA_AVX2))
			isa = GM_ISA_AVX2;
		else if (env && !strcmp(env, "avx512") && gm_kernels_isa_supported(GM_ISA_AVX512))
			isa = GM_ISA_AVX512;
		gm_isa_cur = (int)isa;
	}
	return (enum gm_isa)gm_isa_cur;
}

int gm_kernels_set_isa(enum gm_isa isa)
{
	if (!gm_kernels_isa_supported(isa))
		return -1;
	gm_isa_cur = (int)isa;
	return 0;
}

int gm_kernels_bf16_supported(void)
{
#ifdef GM_X86
	__builtin_cpu_init();
	return gm_kernels_isa_supported(GM_ISA_AVX512) && __builtin_cpu_supports("avx512bf16");
#else
	return 0;
#endif
}

int gm_kernels_fast_matmul(void)
{
	static _Atomic int supported = -1;

	if (gm_kernels_isa() != GM_ISA_AVX512)
		return 0;
	if (supported < 0)
		supported = gm_kernels_bf16_supported();
	return supported;
}

/* The bf16 products run: fast mode asked and able to take effect. */
static int fast_active(enum gm_matmul_mode mode)
{
	return mode == GM_MATMUL_FAST && gm_kernels_fast_matmul();
}

/* ---------------------------------------------------------------- scalar helpers */

static inline float bf16_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

/* Weights 2kp and 2kp + 1 of a BF16 row, as one 32-bit word (unaligned load). */
static inline uint32_t wpair(const uint16_t *w, int64_t kp)
{
	uint32_t v;

	memcpy(&v, w + 2 * kp, sizeof(v));
	return v;
}

/* Element i of a weight of type t. */
static inline float wget(const void *w, enum gm_dtype t, int64_t i)
{
	switch (t) {
	case GM_DTYPE_BF16:
		return bf16_f32(((const uint16_t *)w)[i]);
	case GM_DTYPE_F16:
		return gm_f16_to_f32(((const uint16_t *)w)[i]);
	default:
		return ((const float *)w)[i];
	}
}

static inline size_t dtype_size(enum gm_dtype t)
{
	return t == GM_DTYPE_F32 ? 4 : 2;
}

/* Row r of W. */
static inline const void *wrow(const void *w, enum gm_dtype t, int64_t ldw, int64_t r)
{
	return (const char *)w + (size_t)r * (size_t)ldw * dtype_size(t);
}

void gm_load_f32(float *dst, const void *w, enum gm_dtype wt, int64_t n)
{
	int64_t i;

	if (wt == GM_DTYPE_F32) {
		memcpy(dst, w, (size_t)n * sizeof(float));
		return;
	}
	for (i = 0; i < n; i++)
		dst[i] = wget(w, wt, i);
}

/* ---------------------------------------------------------------- portable */

/* y[r] for one row, eight partial sums (then added pairwise). */
static float dot_row_portable(const void *w, enum gm_dtype wt, const float *x, int64_t in)
{
	float s[8] = { 0 };
	int64_t k, j;

	for (k = 0; k + 8 <= in; k += 8)
		for (j = 0; j < 8; j++)
			s[j] += wget(w, wt, k + j) * x[k + j];
	for (; k < in; k++)
		s[k & 7] += wget(w, wt, k) * x[k];
	return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

/* The small-batch product (see small_matmul): each (row, token) is dot_row_portable, as in gm_matvec. */
static void small_portable(float *y, int64_t ldy, const float *x, int64_t ldx, int64_t n, const void *w,
			   enum gm_dtype wt, int64_t ldw, int64_t in, int64_t r0, int64_t r1)
{
	int64_t r, t;

	for (r = r0; r < r1; r++)
		for (t = 0; t < n; t++)
			y[t * ldy + r] = dot_row_portable(wrow(w, wt, ldw, r), wt, x + t * ldx, in);
}

/* Converts rows [r0, r1) of W to f32: panel[(r - r0) * in + k] = W[r, k].  Not used for F32 weights. */
static void pack_panel_portable(float *panel, const void *w, enum gm_dtype wt, int64_t ldw, int64_t in,
				int64_t r0, int64_t r1)
{
	int64_t r;

	for (r = r0; r < r1; r++)
		gm_load_f32(panel + (r - r0) * in, wrow(w, wt, ldw, r), wt, in);
}

/*
 * Writes a Y tile held as tmp[i][j] (row i, token j) to y[j * ldy + i], token
 * by token: the rows of Y are far apart (often a multiple of 4 KiB, the same
 * L1 set), so each is touched once per tile, not once per row of the tile.
 */
static inline void store_tile(float *y, int64_t ldy, const float (*tmp)[TB], int nr, int nt)
{
	int i, j;

	for (j = 0; j < nt; j++)
		for (i = 0; i < nr; i++)
			y[j * ldy + i] = tmp[i][j];
}

/*
 * The micro-kernel: a Y tile of nt <= TB tokens by nr <= TR rows,
 *   y[j * ldy + i] = sum_k p[i * ldp + k] * xt[k * TB + j],
 * from TR f32 weight rows (row stride ldp) and one packed token block.
 */
static void micro_portable(const float *p, int64_t ldp, const float *xt, int64_t in, float *y, int64_t ldy,
			   int nr, int nt)
{
	float acc[TR][TB];
	int64_t k;
	int i, j;

	memset(acc, 0, sizeof(acc));
	for (i = 0; i < nr; i++) {
		const float *pi = p + i * ldp;
		for (k = 0; k < in; k++) {
			const float *xk = xt + k * TB;
			for (j = 0; j < TB; j++)
				acc[i][j] += pi[k] * xk[j];
		}
	}
	store_tile(y, ldy, (const float (*)[TB])acc, nr, nt);
}

/* ---------------------------------------------------------------- AVX2 + FMA + F16C */
#ifdef GM_X86
#define TGT_AVX2 __attribute__((target("avx2,fma,f16c")))
#define INL __attribute__((always_inline)) inline

/* 8 weights from element i, as f32. */
static INL TGT_AVX2 __m256 ld256(const void *w, const enum gm_dtype wt, int64_t i)
{
	if (wt == GM_DTYPE_F32)
		return _mm256_loadu_ps((const float *)w + i);
	__m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
	if (wt == GM_DTYPE_F16)
		return _mm256_cvtph_ps(h);
	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static INL TGT_AVX2 float hsum256(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/*
 * The dot-product tile of the small-batch product and of gm_matvec:
 *   y[t * ldy + r + i] = W[r + i, :] . X[t, :]     for i < R, t < T
 * X row-major with row stride ldx.  Each (row, token) sum runs in one
 * 8-lane accumulator over k in order, then a horizontal sum, then the
 * scalar tail in order: the same float operations whatever R and T, so
 * gm_matvec and gm_matmul for a few tokens give the same bits.  R <= 4,
 * T <= 3: 12 accumulators, 3 activation vectors and a weight vector fit
 * the 16 registers; each weight vector loaded serves T tokens.
 */
static INL TGT_AVX2 void dot_avx2(float *y, int64_t ldy, const void *w, const enum gm_dtype wt, int64_t ldw,
				   const float *x, int64_t ldx, int64_t in, int64_t r, const int R, const int T)
{
	const void *wr[4];
	__m256 acc[4][3];
	int64_t k;
	int i, t;

#pragma GCC unroll 4
	for (i = 0; i < R; i++) {
		wr[i] = wrow(w, wt, ldw, r + i);
#pragma GCC unroll 3
		for (t = 0; t < T; t++)
			acc[i][t] = _mm256_setzero_ps();
	}
	for (k = 0; k + 8 <= in; k += 8) {
		__m256 xv[3];

#pragma GCC unroll 3
		for (t = 0; t < T; t++)
			xv[t] = _mm256_loadu_ps(x + t * ldx + k);
#pragma GCC unroll 4
		for (i = 0; i < R; i++) {
			__m256 wv = ld256(wr[i], wt, k);
#pragma GCC unroll 3
			for (t = 0; t < T; t++)
				acc[i][t] = _mm256_fmadd_ps(wv, xv[t], acc[i][t]);
		}
	}
#pragma GCC unroll 4
	for (i = 0; i < R; i++) {
#pragma GCC unroll 3
		for (t = 0; t < T; t++) {
			const float *xt_ = x + t * ldx;
			float s_ = hsum256(acc[i][t]);
			int64_t kk;

			for (kk = k; kk < in; kk++)
				s_ += wget(wr[i], wt, kk) * xt_[kk];
			y[t * ldy + r + i] = s_;
		}
	}
}

/* Rows [r0, r1) by n tokens: blocks of 4 rows by up to 3 tokens, then single rows. */
static INL TGT_AVX2 void small_avx2_t(float *y, int64_t ldy, const float *x, int64_t ldx, int64_t n,
				       const void *w, const enum gm_dtype wt, int64_t ldw, int64_t in, int64_t r0,
				       int64_t r1)
{
	int64_t r = r0, t;

	for (; r + 4 <= r1; r += 4) {
		for (t = 0; t + 3 <= n; t += 3)
			dot_avx2(y + t * ldy, ldy, w, wt, ldw, x + t * ldx, ldx, in, r, 4, 3);
		if (n - t == 2)
			dot_avx2(y + t * ldy, ldy, w, wt, ldw, x + t * ldx, ldx, in, r, 4, 2);
		else if (n - t == 1)
			dot_avx2(y + t * ldy, ldy, w, wt, ldw, x + t * ldx, ldx, in, r, 4, 1);
	}
	for (; r < r1; r++) {
		for (t = 0; t + 3 <= n; t += 3)
			dot_avx2(y + t * ldy, ldy, w, wt, ldw, x + t * ldx, ldx, in, r, 1, 3);
		for (; t < n; t++)
			dot_avx2(y + t * ldy, ldy, w, wt, ldw, x + t * ldx, ldx, in, r, 1, 1);
	}
}

static TGT_AVX2 void small_avx2(float *y, int64_t ldy, const float *x, int64_t ldx, int64_t n, const void *w,
				enum gm_dtype wt, int64_t ldw, int64_t in, int64_t r0, int64_t r1)
{
	switch (wt) {
	case GM_DTYPE_BF16:
		small_avx2_t(y, ldy, x, ldx, n, w, GM_DTYPE_BF16, ldw, in, r0, r1);
		break;
	case GM_DTYPE_F16:
		small_avx2_t(y, ldy, x, ldx, n, w, GM_DTYPE_F16, ldw, in, r0, r1);
		break;
	default:
		small_avx2_t(y, ldy, x, ldx, n, w, GM_DTYPE_F32, ldw, in, r0, r1);
		break;
	}
}

static INL TGT_AVX2 void pack_row_avx2_t(float *dst, const void *src, const enum gm_dtype wt, int64_t in)
{
	int64_t k;

	for (k = 0; k + 8 <= in; k += 8)
		_mm256_storeu_ps(dst + k, ld256(src, wt, k));
	for (; k < in; k++)
		dst[k] = wget(src, wt, k);
}

static TGT_AVX2 void pack_panel_avx2(float *panel, const void *w, enum gm_dtype wt, int64_t ldw, int64_t in,
				     int64_t r0, int64_t r1)
{
	int64_t r;

	for (r = r0; r < r1; r++) {
		if (wt == GM_DTYPE_BF16)
			pack_row_avx2_t(panel + (r - r0) * in, wrow(w, wt, ldw, r), GM_DTYPE_BF16, in);
		else
			pack_row_avx2_t(panel + (r - r0) * in, wrow(w, wt, ldw, r), GM_DTYPE_F16, in);
	}
}

/* Unrolled over the TR = 12 rows of a tile: row pointers p0..p11 (missing rows point at row 0). */
#define GM_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define GM_ROWPTR(i) const float *p##i = p + (i < nr ? i : 0) * ldp;

/* 12 rows x 8 tokens per pass, up to four passes over a 32-token block. */
static TGT_AVX2 void micro_avx2(const float *p, int64_t ldp, const float *xt, int64_t in, float *y, int64_t ldy,
				int nr, int nt)
{
	float tmp[TR][TB];
	int g;
	int64_t k;

	GM_ROWS(GM_ROWPTR)
	for (g = 0; g * 8 < nt; g++) {
		const float *xg = xt + g * 8;
#define ACC(i) __m256 a##i = _mm256_setzero_ps();
#define STEP(i) a##i = _mm256_fmadd_ps(_mm256_broadcast_ss(p##i + k), xv, a##i);
#define STORE(i) _mm256_storeu_ps(tmp[i] + g * 8, a##i);
		GM_ROWS(ACC)
		for (k = 0; k < in; k++) {
			__m256 xv = _mm256_loadu_ps(xg + k * TB);
			GM_ROWS(STEP)
		}
		GM_ROWS(STORE)
#undef ACC
#undef STEP
#undef STORE
	}
	store_tile(y, ldy, (const float (*)[TB])tmp, nr, nt);
}

/* ---------------------------------------------------------------- AVX-512 */
#define TGT_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

/* 16 weights from element i, as f32; the masked form reads only the lanes in m. */
static INL TGT_512 __m512 ld512(const void *w, const enum gm_dtype wt, int64_t i)
{
	if (wt == GM_DTYPE_F32)
		return _mm512_loadu_ps((const float *)w + i);
	__m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
	if (wt == GM_DTYPE_F16)
		return _mm512_cvtph_ps(h);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static INL TGT_512 __m512 ld512m(const void *w, const enum gm_dtype wt, int64_t i, __mmask16 m)
{
	if (wt == GM_DTYPE_F32)
		return _mm512_maskz_loadu_ps(m, (const float *)w + i);
	__m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i);
	if (wt == GM_DTYPE_F16)
		return _mm512_cvtph_ps(h);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/*
 * The sums of a dot-product tile to Y: y[t * ldy + r + i] = the lanes of
 * acc[i * S + t] added up, for i < R, t < T: gm_reduce16_512 for the 16
 * sums of a full tile (R * T = 16), else _mm512_reduce_add_ps each (the
 * same bits).
 */
static INL TGT_512 void store_sums_512(float *y, int64_t ldy, int64_t r, const __m512 *acc, const int S, const int R,
				       const int T)
{
	int i, t;

	if (R * T == 16) {
		__m512 a[16];
		float out[16];

#pragma GCC unroll 4
		for (t = 0; t < T; t++)
#pragma GCC unroll 16
			for (i = 0; i < R; i++)
				a[t * R + i] = acc[i * S + t];
		_mm512_storeu_ps(out, gm_reduce16_512(a));
#pragma GCC unroll 4
		for (t = 0; t < T; t++)
			memcpy(y + t * ldy + r, out + t * R, (size_t)R * sizeof(float));
		return;
	}
#pragma GCC unroll 16
	for (i = 0; i < R; i++)
#pragma GCC unroll 4
		for (t = 0; t < T; t++)
			y[t * ldy + r + i] = _mm512_reduce_add_ps(acc[i * S + t]);
}

/*
 * The dot-product tile (as dot_avx2): y[t * ldy + r + i] = W[r + i, :] . X[t, :]
 * for i < R, t < T; each sum in one 16-lane accumulator over k in order,
 * the tail masked, then _mm512_reduce_add_ps (or its bits, 16 sums at
 * once by gm_reduce16_512 when R * T = 16), whatever R and T.  R <= 8,
 * T <= 4 and R * T <= 16.  pf > 0: row r + pf + i is prefetched along
 * with row r + i, a cache line at a time (the caller keeps it in bounds).
 */
#define DOT_ROWS1 8                /* rows per pass for one token */
#define DOT_PF_BYTES (512 << 10)    /* a one-token range at least this large is prefetched */
static INL TGT_512 void dot_512(float *y, int64_t ldy, const void *w, const enum gm_dtype wt, int64_t ldw,
				 const float *x, int64_t ldx, int64_t in, int64_t r, const int R, const int T, const int pf)
{
	int64_t k, tail = in & 15, body = in - tail;
	__mmask16 m = (__mmask16)((1u << tail) - 1);
	const char *wr[8];
	__m512 acc[8][4];
	int i, t;

#pragma GCC unroll 8
	for (i = 0; i < R; i++) {
		wr[i] = wrow(w, wt, ldw, r + i);
#pragma GCC unroll 4
		for (t = 0; t < T; t++)
			acc[i][t] = _mm512_setzero_ps();
	}
	for (k = 0; k < body; k += 16) {
		__m512 xv[4];

#pragma GCC unroll 4
		for (t = 0; t < T; t++)
			xv[t] = _mm512_loadu_ps(x + t * ldx + k);
#pragma GCC unroll 8
		for (i = 0; i < R; i++) {
			__m512 wv = ld512(wr[i], wt, k);
#pragma GCC unroll 4
			for (t = 0; t < T; t++)
				acc[i][t] = _mm512_fmadd_ps(wv, xv[t], acc[i][t]);
			if (pf && (wt == GM_DTYPE_F32 || !(k & 16)))
				_mm_prefetch((const char *)wrow(w, wt, ldw, r + pf + i) + k * (wt == GM_DTYPE_F32 ? 4 : 2),
					     _MM_HINT_T0);
		}
	}
	if (tail) {
		__m512 xv[4];

#pragma GCC unroll 4
		for (t = 0; t < T; t++)
			xv[t] = _mm512_maskz_loadu_ps(m, x + t * ldx + k);
#pragma GCC unroll 8
		for (i = 0; i < R; i++) {
			__m512 wv = ld512m(wr[i], wt, k, m);
#pragma GCC unroll 4
			for (t = 0; t < T; t++)
				acc[i][t] = _mm512_fmadd_ps(wv, xv[t], acc[i][t]);
		}
	}
	store_sums_512(y, ldy, r, &acc[0][0], 4, R, T);
}

/*
 * Rows [r0, r1) by n tokens.  One token (gm_matvec, decode): 8 rows per
 * pass, eight independent sums (FMA latency hidden when the weight is in
 * cache); the weight is streamed once at the memory bandwidth, a range of
 * DOT_PF_BYTES or more with the rows 3 passes ahead prefetched: the
 * hardware prefetchers alone kept one Zen 5 core at 17-21 GB/s, with
 * them 27-31 (a 200 MB bf16 weight); a smaller range is likely still in
 * cache from the step before, where the prefetches only take load slots
 * (an 8 MB weight in L3: 61-78 GB/s without, 40-54 with).  Two tokens:
 * 8 rows by 2, prefetched the same way.  More tokens: 4 rows by up to 4
 * tokens, each weight vector used for 4 tokens; the 4 rows (at most 4 *
 * in * 4 bytes) stay in L1/L2 while the other token groups reuse them,
 * and the first group prefetches the rows 8 ahead (without prefetching
 * the memory idles during those passes: 8 tokens took 2.2x longer on Zen
 * 5; 4 rows ahead in every group was 10% slower for 8 tokens, 5% for 16).
 */
static INL TGT_512 void small_512_t(float *y, int64_t ldy, const float *x, int64_t ldx, int64_t n,
				     const void *w, const enum gm_dtype wt, int64_t ldw, int64_t in, int64_t r0,
				     int64_t r1)
{
	int64_t r = r0, t;
	int pf = (r1 - r0) * ldw * (wt == GM_DTYPE_F32 ? 4 : 2) >= DOT_PF_BYTES;

	if (n == 1) {
		for (; r + DOT_ROWS1 <= r1; r += DOT_ROWS1)
			dot_512(y, ldy, w, wt, ldw, x, ldx, in, r, DOT_ROWS1, 1,
				pf && r + 4 * DOT_ROWS1 <= r1 ? 3 * DOT_ROWS1 : 0);
		for (; r + 4 <= r1; r += 4)
			dot_512(y, ldy, w, wt, ldw, x, ldx, in, r, 4, 1, 0);
		for (; r < r1; r++)
			dot_512(y, ldy, w, wt, ldw, x, ldx, in, r, 1, 1, 0);
		return;
	}
	if (n == 2)
		/* two tokens: 8 rows at a time (measured 1.8x faster than 4 on Zen 5, weights from memory) */
		for (; r + 8 <= r1; r += 8)
			dot_512(y, ldy, w, wt, ldw, x, ldx, in, r, 8, 2, pf && r + 32 <= r1 ? 24 : 0);
	for (; r + 4 <= r1; r += 4) {
		if (r + 12 <= r1)
			for (t = 0; t + 4 <= n; t += 4)
				if (t)
					dot_512(y + t * ldy, ldy, w, wt, ldw, x + t * ldx, ldx, in, r, 4, 4, 0);
				else
					dot_512(y + t * ldy, ldy, w, wt, ldw, x + t * ldx, ldx, in, r, 4, 4, 8);
		else
			for (t = 0; t + 4 <= n; t += 4)
				dot_512(y + t * ldy, ldy, w, wt, ldw, x + t * ldx, ldx, in, r, 4, 4, 0);
		switch (n - t) {
		case 3:
			dot_512(y + t * ldy, ldy, w, wt, ldw, x + t * ldx, ldx, in, r, 4, 3, 0);
			break;
		case 2:
			dot_512(y + t * ldy, ldy, w, wt, ldw, x + t * ldx, ldx, in, r, 4, 2, 0);
			break;
		case 1:
			dot_512(y + t * ldy, ldy, w, wt, ldw, x + t * ldx, ldx, in, r, 4, 1, 0);
			break;
		}
	}
	for (; r < r1; r++) {
		for (t = 0; t + 4 <= n; t += 4)
			dot_512(y + t * ldy, ldy, w, wt, ldw, x + t * ldx, ldx, in, r, 1, 4, 0);
		for (; t < n; t++)
			dot_512(y + t * ldy, ldy, w, wt, ldw, x + t * ldx, ldx, in, r, 1, 1, 0);
	}
}

static TGT_512 void small_512(float *y, int64_t ldy, const float *x, int64_t ldx, int64_t n, const void *w,
			      enum gm_dtype wt, int64_t ldw, int64_t in, int64_t r0, int64_t r1)
{
	switch (wt) {
	case GM_DTYPE_BF16:
		small_512_t(y, ldy, x, ldx, n, w, GM_DTYPE_BF16, ldw, in, r0, r1);
		break;
	case GM_DTYPE_F16:
		small_512_t(y, ldy, x, ldx, n, w, GM_DTYPE_F16, ldw, in, r0, r1);
		break;
	default:
		small_512_t(y, ldy, x, ldx, n, w, GM_DTYPE_F32, ldw, in, r0, r1);
		break;
	}
}

static INL TGT_512 void pack_row_512_t(float *dst, const void *src, const enum gm_dtype wt, int64_t in)
{
	int64_t k, tail = in & 15;

	for (k = 0; k < in - tail; k += 16)
		_mm512_storeu_ps(dst + k, ld512(src, wt, k));
	if (tail) {
		__mmask16 m = (__mmask16)((1u << tail) - 1);
		_mm512_mask_storeu_ps(dst + k, m, ld512m(src, wt, k, m));
	}
}

static TGT_512 void pack_panel_512(float *panel, const void *w, enum gm_dtype wt, int64_t ldw, int64_t in,
				   int64_t r0, int64_t r1)
{
	int64_t r;

	for (r = r0; r < r1; r++) {
		if (wt == GM_DTYPE_BF16)
			pack_row_512_t(panel + (r - r0) * in, wrow(w, wt, ldw, r), GM_DTYPE_BF16, in);
		else
			pack_row_512_t(panel + (r - r0) * in, wrow(w, wt, ldw, r), GM_DTYPE_F16, in);
	}
}

/*
 * 12 rows x 32 tokens: 24 accumulators; per k two loads of activations and
 * twelve broadcast weights, 24 FMAs.  (Blocks of at most GM_MATMUL_SMALL
 * tokens take the dot-product kernels instead; the 12 x 16 branch serves
 * direct callers.)
 */
static TGT_512 void micro_512(const float *p, int64_t ldp, const float *xt, int64_t in, float *y, int64_t ldy,
			      int nr, int nt)
{
	int64_t k;

	GM_ROWS(GM_ROWPTR)
#define ACC(i) __m512 a##i = _mm512_setzero_ps(), b##i = a##i;
#define STEP2(i)                                                  \
	{                                                         \
		__m512 w_ = _mm512_set1_ps(p##i[k]);              \
		a##i = _mm512_fmadd_ps(w_, x0, a##i);             \
		b##i = _mm512_fmadd_ps(w_, x1, b##i);             \
	}
#define STEP1(i) a##i = _mm512_fmadd_ps(_mm512_set1_ps(p##i[k]), x0, a##i);
#define STORE(i)                                                  \
	_mm512_store_ps(tmp[i], a##i);                            \
	_mm512_store_ps(tmp[i] + 16, b##i);
	float tmp[TR][TB] __attribute__((aligned(64)));
	GM_ROWS(ACC)
	if (nt > 16) {
		for (k = 0; k < in; k++) {
			__m512 x0 = _mm512_loadu_ps(xt + k * TB), x1 = _mm512_loadu_ps(xt + k * TB + 16);
			GM_ROWS(STEP2)
		}
	} else {
		for (k = 0; k < in; k++) {
			__m512 x0 = _mm512_loadu_ps(xt + k * TB);
			GM_ROWS(STEP1)
		}
	}
	GM_ROWS(STORE)
	store_tile(y, ldy, (const float (*)[TB])tmp, nr, nt);
#undef ACC
#undef STEP2
#undef STEP1
#undef STORE
}

/* ---------------------------------------------------------------- AVX512_BF16 (fast mode) */
#define TGT_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")))

/*
 * The bf16 activations of a full packed block, for the fast products:
 * from its f32 transposed layout xt[k][j] (j < TB), the pairs
 *   x2[kp][j] = bf16(X[j, 2kp]) | bf16(X[j, 2kp + 1]) << 16    (round to nearest even)
 * as 32-bit words, kp < ceil(in / 2), the missing element of an odd in zero.
 */
static TGT_BF16 void pack_bf16_block(uint32_t *x2, const float *xt, int64_t in)
{
	const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
					       22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
	int64_t kp, in2 = (in + 1) / 2, h;

	for (kp = 0; kp < in2; kp++) {
		for (h = 0; h < TB; h += 16) {
			__m512 a = _mm512_loadu_ps(xt + 2 * kp * TB + h);
			__m512 b = 2 * kp + 1 < in ? _mm512_loadu_ps(xt + (2 * kp + 1) * TB + h) : _mm512_setzero_ps();
			/* [a0..a15 | b0..b15] as bf16, then interleaved to (a_j, b_j) pairs */
			__m512i ab = (__m512i)_mm512_cvtne2ps_pbh(b, a);

			_mm512_storeu_si512((void *)(x2 + kp * TB + h), _mm512_permutexvar_epi16(inter, ab));
		}
	}
}

/*
 * The bf16 rows of dot-product rows (gm_matmul_pack), for the fast dot products:
 * dst[j * ldh + k] = bf16(X[j, k]) (round to nearest even, as dot_bf16
 * rounds X when it reads f32), j < nt, k < in.
 */
static TGT_BF16 void pack_bf16_rows(uint16_t *dst, int64_t ldh, const float *x, int64_t ldx, int64_t nt, int64_t in)
{
	int64_t j, k;

	for (j = 0; j < nt; j++) {
		const float *src = x + j * ldx;

		for (k = 0; k < in; k += 32) {
			int64_t left = in - k;
			__mmask16 mlo = (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1);
			__mmask16 mhi = (__mmask16)(left >= 32 ? 0xffff : left > 16 ? (1u << (left - 16)) - 1 : 0);
			__mmask32 mw = (__mmask32)(left >= 32 ? 0xffffffffu : (1u << left) - 1);
			__m512i h = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(mhi, src + k + 16),
								 _mm512_maskz_loadu_ps(mlo, src + k));

			_mm512_mask_storeu_epi16(dst + j * ldh + k, mw, h);
		}
	}
}

/*
 * The fast micro-kernel: a tile of nr <= 12 rows of a BF16 weight, read in
 * place (a pair of weights is one 32-bit broadcast), by nt <= 32 tokens of
 * bf16 pairs x2; vdpbf16ps adds two products per lane and step, into f32:
 *   y[j * ldy + i] = sum_kp W[i, 2kp] x[j, 2kp] + W[i, 2kp + 1] x[j, 2kp + 1]
 * Each element accumulates over kp in order in one lane, whatever the tiling.
 */
static INL TGT_BF16 void micro_bf16_t(const uint16_t *w, int64_t ldw, const uint32_t *x2, int64_t in, float *y,
				       int64_t ldy, int nr, int nt, const int wide)
{
	int64_t kp, half = in / 2;
	float tmp[TR][TB] __attribute__((aligned(64)));
	__m512 x0, x1 = _mm512_setzero_ps();

#define BROW(i) const uint16_t *p##i = w + (i < nr ? i : 0) * ldw;
#define BACC(i) __m512 a##i = _mm512_setzero_ps(), b##i = a##i;
#define BSTEP(i)                                                                          \
	{                                                                                 \
		__m512bh w_ = (__m512bh)_mm512_set1_epi32((int)wpair(p##i, kp));          \
		a##i = _mm512_dpbf16_ps(a##i, w_, (__m512bh)x0);                           \
		if (wide)                                                                 \
			b##i = _mm512_dpbf16_ps(b##i, w_, (__m512bh)x1);                   \
	}
#define BSTORE(i)                                                                         \
	_mm512_store_ps(tmp[i], a##i);                                                    \
	if (wide)                                                                         \
		_mm512_store_ps(tmp[i] + 16, b##i);
	GM_ROWS(BROW)
	GM_ROWS(BACC)
	for (kp = 0; kp < half; kp++) {
		x0 = (__m512)_mm512_loadu_si512((const void *)(x2 + kp * TB));
		if (wide)
			x1 = (__m512)_mm512_loadu_si512((const void *)(x2 + kp * TB + 16));
		GM_ROWS(BSTEP)
	}
	if (in & 1) {
		/* the last weight alone: its pair's other half (and the activation's) is zero */
		x0 = (__m512)_mm512_loadu_si512((const void *)(x2 + kp * TB));
		if (wide)
			x1 = (__m512)_mm512_loadu_si512((const void *)(x2 + kp * TB + 16));
#define BLAST(i)                                                                          \
	{                                                                                 \
		__m512bh w_ = (__m512bh)_mm512_set1_epi32((int)p##i[in - 1]);             \
		a##i = _mm512_dpbf16_ps(a##i, w_, (__m512bh)x0);                           \
		if (wide)                                                                 \
			b##i = _mm512_dpbf16_ps(b##i, w_, (__m512bh)x1);                   \
	}
		GM_ROWS(BLAST)
#undef BLAST
	}
	GM_ROWS(BSTORE)
	store_tile(y, ldy, (const float (*)[TB])tmp, nr, nt);
#undef BROW
#undef BACC
#undef BSTEP
#undef BSTORE
}

/* A tile of at most 16 tokens (a short block: a few prompt rows) leaves the upper half out: the same bits. */
static TGT_BF16 void micro_bf16(const uint16_t *w, int64_t ldw, const uint32_t *x2, int64_t in, float *y,
				int64_t ldy, int nr, int nt)
{
	if (nt > 16)
		micro_bf16_t(w, ldw, x2, in, y, ldy, nr, nt, 1);
	else
		micro_bf16_t(w, ldw, x2, in, y, ldy, nr, nt, 0);
}

/*
 * The fast dot-product tile: y[t * ldy + r + i] = W[r + i, :] . bf16(X[t, :])
 * for i < R, t < T, W BF16 read in place, each X row rounded to bf16 (to
 * nearest even, as pack_bf16_block does) 32 elements at a time as it is
 * read, or read rounded already from xh (row t at xh + t * ldh) when xh is
 * not NULL (pack_bf16_rows: the same values); lane l of a sum's
 * accumulator adds the pairs (2l, 2l + 1) of each 32-element step by
 * vdpbf16ps, in k order, the tail masked, then the
 * lanes are reduced as dot_512 reduces them (gm_reduce16_512 when
 * R * T = 16).  So each element is the same whatever R and T, and a row's
 * products do not depend on the other rows of the call.  R <= 16, T <= 4,
 * R * T <= 16 (the accumulators acc[i * T + t]); pf as in dot_512 (one
 * prefetch per step: a step is one cache line of each row).
 */
static INL TGT_BF16 void dot_bf16(float *y, int64_t ldy, const uint16_t *w, int64_t ldw, const float *x,
				  int64_t ldx, const uint16_t *xh, int64_t ldh, int64_t in, int64_t r, const int R,
				  const int T, const int pf)
{
	int64_t k, tail = in & 31, body = in - tail;
	const uint16_t *wr[16];
	__m512 acc[16]; /* acc[i * T + t] */
	int i, t;

#pragma GCC unroll 16
	for (i = 0; i < R; i++) {
		wr[i] = w + (r + i) * ldw;
#pragma GCC unroll 4
		for (t = 0; t < T; t++)
			acc[i * T + t] = _mm512_setzero_ps();
	}
	for (k = 0; k < body; k += 32) {
		__m512bh xv[4];

#pragma GCC unroll 4
		for (t = 0; t < T; t++)
			xv[t] = xh ? (__m512bh)_mm512_loadu_si512((const void *)(xh + t * ldh + k))
				   : _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + t * ldx + k + 16),
							 _mm512_loadu_ps(x + t * ldx + k));
#pragma GCC unroll 16
		for (i = 0; i < R; i++) {
			__m512bh wv = (__m512bh)_mm512_loadu_si512((const void *)(wr[i] + k));
#pragma GCC unroll 4
			for (t = 0; t < T; t++)
				acc[i * T + t] = _mm512_dpbf16_ps(acc[i * T + t], wv, xv[t]);
			if (pf)
				_mm_prefetch((const char *)(wr[i] + pf * ldw + k), _MM_HINT_T0);
		}
	}
	if (tail) {
		__mmask16 mlo = (__mmask16)(tail >= 16 ? 0xffff : (1u << tail) - 1);
		__mmask16 mhi = (__mmask16)(tail > 16 ? (1u << (tail - 16)) - 1 : 0);
		__mmask32 mw = (__mmask32)((1u << tail) - 1);
		__m512bh xv[4];

#pragma GCC unroll 4
		for (t = 0; t < T; t++)
			xv[t] = xh ? (__m512bh)_mm512_maskz_loadu_epi16(mw, xh + t * ldh + k)
				   : _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(mhi, x + t * ldx + k + 16),
							 _mm512_maskz_loadu_ps(mlo, x + t * ldx + k));
#pragma GCC unroll 16
		for (i = 0; i < R; i++) {
			__m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(mw, wr[i] + k);
#pragma GCC unroll 4
			for (t = 0; t < T; t++)
				acc[i * T + t] = _mm512_dpbf16_ps(acc[i * T + t], wv, xv[t]);
		}
	}
	store_sums_512(y, ldy, r, acc, T, R, T);
}

/*
 * The fast dot products: rows [r0, r1) of a BF16 W by n tokens, row-major
 * X in f32, or its bf16 rows xh (row stride ldh; NULL: X is rounded as it
 * is read, once per row tile: 13% slower for 8 tokens on Zen 5).  One
 * token: 16 rows per pass (one bf16 conversion of x and one 16-sum
 * reduction for 16 rows; 8 rows per pass measured 5% slower on Zen 5), a
 * range of DOT_PF_BYTES or more prefetched 2 passes ahead; then as
 * small_512_t: 8 rows by 2 tokens, 4 rows by 4 (each group of 4 tokens
 * prefetching the rows 4 ahead: the other schemes measured slower).
 */
static TGT_BF16 void small_bf16(float *y, int64_t ldy, const float *x, int64_t ldx, const uint16_t *xh, int64_t ldh,
				int64_t n, const uint16_t *w, int64_t ldw, int64_t in, int64_t r0, int64_t r1)
{
	int64_t r = r0, t;
	int pf = (r1 - r0) * ldw * 2 >= DOT_PF_BYTES;

#define XH(t) (xh ? xh + (t) * ldh : NULL)

	if (n == 1) {
		for (; r + 16 <= r1; r += 16)
			dot_bf16(y, ldy, w, ldw, x, ldx, xh, ldh, in, r, 16, 1, pf && r + 48 <= r1 ? 32 : 0);
		for (; r + DOT_ROWS1 <= r1; r += DOT_ROWS1)
			dot_bf16(y, ldy, w, ldw, x, ldx, xh, ldh, in, r, DOT_ROWS1, 1, 0);
		for (; r < r1; r++)
			dot_bf16(y, ldy, w, ldw, x, ldx, xh, ldh, in, r, 1, 1, 0);
		return;
	}
	if (n == 2)
		for (; r + 8 <= r1; r += 8)
			dot_bf16(y, ldy, w, ldw, x, ldx, xh, ldh, in, r, 8, 2, pf && r + 32 <= r1 ? 24 : 0);
	for (; r + 4 <= r1; r += 4) {
		int p4 = r + 8 <= r1 ? 4 : 0;

		for (t = 0; t + 4 <= n; t += 4)
			dot_bf16(y + t * ldy, ldy, w, ldw, x + t * ldx, ldx, XH(t), ldh, in, r, 4, 4, p4);
		switch (n - t) {
		case 3:
			dot_bf16(y + t * ldy, ldy, w, ldw, x + t * ldx, ldx, XH(t), ldh, in, r, 4, 3, 0);
			break;
		case 2:
			dot_bf16(y + t * ldy, ldy, w, ldw, x + t * ldx, ldx, XH(t), ldh, in, r, 4, 2, 0);
			break;
		case 1:
			dot_bf16(y + t * ldy, ldy, w, ldw, x + t * ldx, ldx, XH(t), ldh, in, r, 4, 1, 0);
			break;
		}
	}
	for (; r < r1; r++)
		for (t = 0; t < n; t++)
			dot_bf16(y + t * ldy, ldy, w, ldw, x + t * ldx, ldx, XH(t), ldh, in, r, 1, 1, 0);
#undef XH
}

/*
 * exp(x) for 16 lanes: x = n ln2 + r with |r| <= ln2 / 2, exp(r) by the
 * Cephes expf polynomial (degree 6, about 1 ulp), times 2^n by scalef (which
 * also gives 0 and inf past the f32 range).
 */
static INL TGT_512 __m512 exp512(__m512 x)
{
	const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
	const __m512 ln2_hi = _mm512_set1_ps(0.693359375f), ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
	__m512 n, r, p;

	x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7f)), _mm512_set1_ps(-104.0f));
	n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	r = _mm512_fnmadd_ps(n, ln2_hi, x);
	r = _mm512_fnmadd_ps(n, ln2_lo, r);
	p = _mm512_set1_ps(1.9875691500e-4f);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
	p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
	return _mm512_scalef_ps(p, n);
}

static TGT_512 void softmax_512(float *x, int64_t n)
{
	int64_t i, tail = n & 15, body = n - tail;
	__mmask16 m = (__mmask16)((1u << tail) - 1);
	__m512 mx = _mm512_set1_ps(-INFINITY), sum = _mm512_setzero_ps(), inv;

	for (i = 0; i < body; i += 16)
		mx = _mm512_max_ps(mx, _mm512_loadu_ps(x + i));
	if (tail)
		mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, x + i));
	mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
	for (i = 0; i < body; i += 16) {
		__m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), mx));
		_mm512_storeu_ps(x + i, e);
		sum = _mm512_add_ps(sum, e);
	}
	if (tail) {
		__m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mx)));
		_mm512_mask_storeu_ps(x + i, m, e);
		sum = _mm512_add_ps(sum, e);
	}
	inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
	for (i = 0; i < body; i += 16)
		_mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
	if (tail)
		_mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
}

static TGT_512 void silu_mul_512(float *g, const float *u, int64_t n)
{
	const __m512 one = _mm512_set1_ps(1.0f);
	int64_t i;

	for (i = 0; i + 16 <= n; i += 16) {
		__m512 gv = _mm512_loadu_ps(g + i);
		__m512 d = _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv)));
		_mm512_storeu_ps(g + i, _mm512_mul_ps(_mm512_div_ps(gv, d), _mm512_loadu_ps(u + i)));
	}
	for (; i < n; i++)
		g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
#endif /* GM_X86 */

/* ---------------------------------------------------------------- public entry points */

/*
 * The packed activations: the f32 blocks (nb * TB * in floats), then, in
 * fast mode, the bf16 pairs of each full block (TB * ceil(in / 2) 32-bit
 * words per block, see pack_bf16_block), found from n and in alone.
 */
static size_t xt_f32_len(int64_t n, int64_t in)
{
	return (size_t)((n + TB - 1) / TB) * TB * (size_t)in;
}

static const uint32_t *xt_bf16_block(const float *xt, int64_t n, int64_t in, int64_t b)
{
	return (const uint32_t *)(xt + xt_f32_len(n, in)) + (size_t)b * TB * (size_t)((in + 1) / 2);
}

/* The bf16 rows of dot-product rows (in the same place): row j at xh_ld(in) * j, in rounded up to even. */
static inline int64_t xh_ld(int64_t in)
{
	return (in + 1) / 2 * 2;
}

static const uint16_t *xt_bf16_rows(const float *xt, int64_t n, int64_t in, int64_t b)
{
	return (const uint16_t *)xt_bf16_block(xt, n, in, b);
}

/*
 * Y[t, r] = W[r, :] . X[t, :] for t < n, r in [r0, r1), X row-major (row
 * stride ldx), reading W in place once: the decode product (n = 1) and the
 * small-batch one (a few sequences decoded together).  Each element is the
 * sum gm_matvec computes, bit for bit.
 */
static void small_matmul(float *y, int64_t ldy, const float *x, int64_t ldx, const uint16_t *xh, int64_t n,
			 const void *w, enum gm_dtype wt, int64_t ldw, int64_t in, int64_t r0, int64_t r1,
			 enum gm_matmul_mode mode)
{
	(void)mode; /* unused without the x86 variants */
	(void)xh;
	switch (gm_kernels_isa()) {
#ifdef GM_X86
	case GM_ISA_AVX512:
		if (wt == GM_DTYPE_BF16 && fast_active(mode)) {
			small_bf16(y, ldy, x, ldx, xh, xh_ld(in), n, w, ldw, in, r0, r1);
			return;
		}
		small_512(y, ldy, x, ldx, n, w, wt, ldw, in, r0, r1);
		return;
	case GM_ISA_AVX2:
		small_avx2(y, ldy, x, ldx, n, w, wt, ldw, in, r0, r1);
		return;
#endif
	default:
		small_portable(y, ldy, x, ldx, n, w, wt, ldw, in, r0, r1);
		return;
	}
}

void gm_matvec(float *y, const void *w, enum gm_dtype wt, int64_t ldw, const float *x, int64_t in,
	       int64_t r0, int64_t r1, enum gm_matmul_mode mode)
{
	small_matmul(y, 0, x, 0, NULL, 1, w, wt, ldw, in, r0, r1, mode);
}

size_t gm_matmul_xt_len(int64_t n, int64_t in)
{
	return xt_f32_len(n, in) + (size_t)((n + TB - 1) / TB) * TB * (size_t)((in + 1) / 2);
}

/* Rows of W per panel: a multiple of TR, about 256 KiB of f32. */
static int64_t panel_rows(int64_t in)
{
	int64_t rb = (65536 / (in > 0 ? in : 1)) / TR * TR;

	return rb < TR ? TR : rb > 8 * TR ? 8 * TR : rb;
}

size_t gm_matmul_panel_len(int64_t in)
{
	return (size_t)panel_rows(in) * (size_t)in;
}

void gm_matmul_pack(float *xt, const float *x, int64_t ldx, int64_t n, int64_t in, int64_t b0, int64_t b1,
		    int64_t dot_max, enum gm_matmul_mode mode)
{
	int64_t b, k0, k, j;

	(void)mode; /* unused without the x86 variants */

	for (b = b0; b < b1; b++) {
		float *dst = xt + b * in * TB;
		int64_t nt = n - b * TB < TB ? n - b * TB : TB;

		if (nt <= dot_max) {
			/* dot-product rows (see gm_matmul; all of them when n <= dot_max): as they are */
			for (j = 0; j < nt; j++)
				memcpy(dst + j * in, x + (b * TB + j) * ldx, (size_t)in * sizeof(float));
#ifdef GM_X86
			if (fast_active(mode))
				pack_bf16_rows((uint16_t *)xt_bf16_rows(xt, n, in, b), xh_ld(in), dst, in, nt, in);
#endif
			continue;
		}

		/* by chunks of 32 k: the destination chunk (4 KiB) stays in L1 */
		for (k0 = 0; k0 < in; k0 += 32) {
			int64_t k1 = k0 + 32 < in ? k0 + 32 : in;

			for (j = 0; j < nt; j++) {
				const float *src = x + (b * TB + j) * ldx;
				for (k = k0; k < k1; k++)
					dst[k * TB + j] = src[k];
			}
			for (; j < TB; j++)
				for (k = k0; k < k1; k++)
					dst[k * TB + j] = 0.0f;
		}
#ifdef GM_X86
		if (fast_active(mode))
			pack_bf16_block((uint32_t *)xt_bf16_block(xt, n, in, b), dst, in);
#endif
	}
}

struct pack_job {
	float *xt;
	const float *x;
	int64_t ldx, n, in, dot_max;
	enum gm_matmul_mode mode;
};

static void pack_blocks(void *ctx, int64_t b, int64_t e, int thread)
{
	struct pack_job *j = ctx;

	(void)thread;
	gm_matmul_pack(j->xt, j->x, j->ldx, j->n, j->in, b, e, j->dot_max, j->mode);
}

void gm_matmul_pack_all(gm_threadpool *pool, float *xt, const float *x, int64_t ldx, int64_t n, int64_t in,
			int64_t dot_max, enum gm_matmul_mode mode)
{
	struct pack_job j = { xt, x, ldx, n, in, dot_max, mode };

	gm_threadpool_for(pool, (n + GM_MATMUL_TB - 1) / GM_MATMUL_TB, 1, pack_blocks, &j);
}

void gm_matmul(float *y, int64_t ldy, const float *xt, int64_t n, const void *w, enum gm_dtype wt,
	       int64_t ldw, int64_t in, int64_t r0, int64_t r1, float *panel, int64_t dot_max, enum gm_matmul_mode mode)
{
	enum gm_isa isa = gm_kernels_isa();
	int64_t rb_len = panel_rows(in), rb, b, n_blocks = (n + TB - 1) / TB;
	int fast = wt == GM_DTYPE_BF16 && fast_active(mode);

	(void)isa; /* unused without the x86 variants */
	if (n <= dot_max) {
		/* dot products: each weight row read once, in place, for all the tokens */
		small_matmul(y, ldy, xt, in, fast ? xt_bf16_rows(xt, n, in, 0) : NULL, n, w, wt, ldw, in, r0, r1, mode);
		return;
	}
	for (rb = r0; rb < r1; rb += rb_len) {
		int64_t re = rb + rb_len < r1 ? rb + rb_len : r1, r, ldp = in;
		const float *p = panel;

		/* f32 weights are used in place; others are converted once for all tokens */
		if (wt == GM_DTYPE_F32) {
			p = (const float *)w + rb * ldw;
			ldp = ldw;
		} else if (fast) {
			/* the bf16 products read the weights in place */
		}
#ifdef GM_X86
		else if (isa == GM_ISA_AVX512)
			pack_panel_512(panel, w, wt, ldw, in, rb, re);
		else if (isa == GM_ISA_AVX2)
			pack_panel_avx2(panel, w, wt, ldw, in, rb, re);
#endif
		else
			pack_panel_portable(panel, w, wt, ldw, in, rb, re);
		for (b = 0; b < n_blocks; b++) {
			int nt = (int)(n - b * TB < TB ? n - b * TB : TB);
			const float *xb = xt + b * in * TB;
			float *yb = y + b * TB * ldy;

			if (nt <= dot_max) {
				/* the last block of a few tokens (row-major): dot products on the panel (fast: on W) */
				if (fast)
					small_matmul(yb, ldy, xb, in, xt_bf16_rows(xt, n, in, b), nt, w, wt, ldw, in, rb,
						     re, mode);
				else
					small_matmul(yb + rb, ldy, xb, in, NULL, nt, p, GM_DTYPE_F32, ldp, in, 0, re - rb,
						     GM_MATMUL_PRECISE);
				continue;
			}
			for (r = rb; r < re; r += TR) {
				int nr = (int)(re - r < TR ? re - r : TR);
				const float *pr = p + (r - rb) * ldp;

#ifdef GM_X86
				if (fast) {
					micro_bf16((const uint16_t *)w + r * ldw, ldw, xt_bf16_block(xt, n, in, b),
						   in, yb + r, ldy, nr, nt);
					continue;
				}
				if (isa == GM_ISA_AVX512)
					micro_512(pr, ldp, xb, in, yb + r, ldy, nr, nt);
				else if (isa == GM_ISA_AVX2)
					micro_avx2(pr, ldp, xb, in, yb + r, ldy, nr, nt);
				else
#endif
					micro_portable(pr, ldp, xb, in, yb + r, ldy, nr, nt);
			}
		}
	}
}

/* ---------------------------------------------------------------- small kernels */

void gm_rmsnorm(float *out, const float *x, const void *w, enum gm_dtype wt, int64_t n, float eps)
{
	float s[8] = { 0 }, scale, wf[256];
	int64_t i, j, c;

	for (i = 0; i + 8 <= n; i += 8)
		for (j = 0; j < 8; j++)
			s[j] += x[i + j] * x[i + j];
	for (; i < n; i++)
		s[i & 7] += x[i] * x[i];
	scale = (float)(1.0 / sqrt((double)(((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]))) /
				   (double)n + (double)eps));
	for (i = 0; i < n; i += c) {
		c = n - i < 256 ? n - i : 256;
		gm_load_f32(wf, (const char *)w + (size_t)i * dtype_size(wt), wt, c);
		for (j = 0; j < c; j++)
			out[i + j] = x[i + j] * scale * wf[j];
	}
}

void gm_rope(float *v, const float *cs, const float *sn, int64_t d)
{
	int64_t j, h = d / 2;

	for (j = 0; j < h; j++) {
		float a = v[j], b = v[j + h];
		v[j] = a * cs[j] - b * sn[j];
		v[j + h] = b * cs[j] + a * sn[j];
	}
}

static void softmax_portable(float *x, int64_t n)
{
	float mx = x[0], sum = 0.0f, inv;
	int64_t i;

	for (i = 1; i < n; i++)
		if (x[i] > mx)
			mx = x[i];
	for (i = 0; i < n; i++) {
		x[i] = expf(x[i] - mx);
		sum += x[i];
	}
	inv = 1.0f / sum;
	for (i = 0; i < n; i++)
		x[i] *= inv;
}

void gm_softmax(float *x, int64_t n)
{
#ifdef GM_X86
	if (gm_kernels_isa() == GM_ISA_AVX512) {
		softmax_512(x, n);
		return;
	}
#endif
	softmax_portable(x, n);
}

void gm_silu_mul(float *g, const float *u, int64_t n)
{
	int64_t i;

#ifdef GM_X86
	if (gm_kernels_isa() == GM_ISA_AVX512) {
		silu_mul_512(g, u, n);
		return;
	}
#endif
	for (i = 0; i < n; i++)
		g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ---------------------------------------------------------------- training kernels */

void gm_transpose(void *dst, const void *src, size_t elsize, int64_t rows, int64_t cols, int64_t r0, int64_t r1)
{
	int64_t rb, cb, r, c;

	/* by 32 x 32 tiles, so that both the rows read and the rows written stay in cache */
	for (cb = r0; cb < r1; cb += 32) {
		int64_t ce = cb + 32 < r1 ? cb + 32 : r1;

		for (rb = 0; rb < rows; rb += 32) {
			int64_t re = rb + 32 < rows ? rb + 32 : rows;

			if (elsize == 4) {
				for (c = cb; c < ce; c++)
					for (r = rb; r < re; r++)
						((float *)dst)[c * rows + r] = ((const float *)src)[r * cols + c];
			} else {
				for (c = cb; c < ce; c++)
					for (r = rb; r < re; r++)
						((uint16_t *)dst)[c * rows + r] = ((const uint16_t *)src)[r * cols + c];
			}
		}
	}
}

/*
 * C[m, n] += sum_k A[k, m] * B[k, n] for m in [m0, m1), n in [n0, n1):
 * A [K, *] row stride lda, B [K, *] row stride ldb, C [*, *] row stride ldc,
 * all f32.  Blocks of 4 rows of C by up to 64 columns stay in registers
 * for the whole sum over k, which runs in order.
 */
#ifdef GM_X86
static TGT_512 void matmul_tn_512(float *c, int64_t ldc, const float *a, int64_t lda, const float *b, int64_t ldb,
				  int64_t K, int64_t m0, int64_t m1, int64_t n0, int64_t n1)
{
	int64_t m, n, k, i, j;

	for (n = n0; n < n1; n += 64) {
		int nv = (int)((n1 - n + 15) / 16 < 4 ? (n1 - n + 15) / 16 : 4);
		__mmask16 mk[4];

		for (j = 0; j < 4; j++) {
			int64_t left = n1 - n - 16 * j;

			mk[j] = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
		}
		for (m = m0; m < m1; m += 4) {
			int nm = (int)(m1 - m < 4 ? m1 - m : 4);
			__m512 acc[4][4];

			for (i = 0; i < 4; i++)
				for (j = 0; j < 4; j++)
					acc[i][j] = _mm512_setzero_ps();
			for (k = 0; k < K; k++) {
				const float *bk = b + k * ldb + n, *ak = a + k * lda + m;
				__m512 bv[4];

				for (j = 0; j < nv; j++)
					bv[j] = _mm512_maskz_loadu_ps(mk[j], bk + 16 * j);
				for (i = 0; i < nm; i++) {
					__m512 av = _mm512_set1_ps(ak[i]);

					for (j = 0; j < nv; j++)
						acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
				}
			}
			for (i = 0; i < nm; i++) {
				float *cr = c + (m + i) * ldc + n;

				for (j = 0; j < nv; j++)
					_mm512_mask_storeu_ps(cr + 16 * j, mk[j],
							      _mm512_add_ps(_mm512_maskz_loadu_ps(mk[j], cr + 16 * j), acc[i][j]));
			}
		}
	}
}
#endif

void gm_matmul_tn(float *c, int64_t ldc, const float *a, int64_t lda, const float *b, int64_t ldb, int64_t K,
		  int64_t m0, int64_t m1, int64_t n0, int64_t n1)
{
	int64_t m, n, k;

#ifdef GM_X86
	if (gm_kernels_isa() == GM_ISA_AVX512) {
		matmul_tn_512(c, ldc, a, lda, b, ldb, K, m0, m1, n0, n1);
		return;
	}
#endif
	/* portable (and AVX2, through the compiler): by row of C, accumulated over k in order */
	for (m = m0; m < m1; m++) {
		float *cr = c + m * ldc;

		for (k = 0; k < K; k++) {
			float s = a[k * lda + m];
			const float *bk = b + k * ldb;

			for (n = n0; n < n1; n++)
				cr[n] += s * bk[n];
		}
	}
}
