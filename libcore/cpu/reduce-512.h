/*
 * reduce-512.h - the horizontal sums of 16 AVX-512 accumulators at once,
 * shared by the matmul (kernels.c) and attention (kernels-kv.c) kernels.
 * Only for code compiled for AVX-512 (a target attribute including
 * avx512f); the caller checks the CPU.
 */
#ifndef GM_REDUCE_512_H
#define GM_REDUCE_512_H

#if (defined(__x86_64__) || defined(__i386__)) && !defined(GM_NO_SIMD)
#include <immintrin.h>

/*
 * The sums of 16 accumulators at once: lane l of the result is
 * _mm512_reduce_add_ps(a[l]), bit for bit.  That reduction adds lanes
 * i + 8, then i + 4, then i + 2, then i + 1 (GCC's and clang's tree); here
 * each level does the same additions for two vectors per instruction,
 * after shuffles that line their lanes up: 15 additions and 31 shuffles
 * instead of 16 separate trees (64 additions, 64 shuffles).
 */
static inline __attribute__((always_inline, target("avx512f"))) __m512 gm_reduce16_512(const __m512 *a)
{
	const __m512i tr = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
	__m512 w[8], z[4], r0, r1, s;
	int i;

	/* w[i]: lanes 0-7 a[2i]'s i + (i + 8), lanes 8-15 a[2i + 1]'s */
#pragma GCC unroll 8
	for (i = 0; i < 8; i++)
		w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44),
				     _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xee));
	/* z[i]: 128-bit chunk c holds a[4i + c]'s four sums of lanes i + (i + 4) */
#pragma GCC unroll 8
	for (i = 0; i < 4; i++)
		z[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0x88),
				     _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0xdd));
	/* r0 chunk c: z0's i + (i + 2) for i = 0, 1, then z1's; r1 the same of z2, z3 */
	r0 = _mm512_add_ps(_mm512_shuffle_ps(z[0], z[1], 0x44), _mm512_shuffle_ps(z[0], z[1], 0xee));
	r1 = _mm512_add_ps(_mm512_shuffle_ps(z[2], z[3], 0x44), _mm512_shuffle_ps(z[2], z[3], 0xee));
	/* s lane 4c + m: the total of a[4m + c]; put it in lane 4m + c */
	s = _mm512_add_ps(_mm512_shuffle_ps(r0, r1, 0x88), _mm512_shuffle_ps(r0, r1, 0xdd));
	return _mm512_permutexvar_ps(tr, s);
}

#endif
#endif
