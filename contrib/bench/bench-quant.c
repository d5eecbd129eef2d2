/*
 * bench-quant.c - the quantized kernels (kernels-quant.c) at the matrix level, one thread.
 *
 *   bench-quant [-r ROWS] [-i IN] [-n TOKENS] [-k REPS] TYPE...
 *
 * For each TYPE (Q8_0, Q4_0, Q4_K, Q6_K, ..., or BF16 for the float
 * kernels' reference), a random [ROWS, IN] matrix (default 3072 x 1024,
 * Qwen3-0.6B's gate/up projection) is quantized once, then timed (median of
 * REPS) in two workloads: decode, gm_qmatvec of one token over all rows
 * (GB/s of weights read and ns per 256 weights); prompt, the activations
 * of TOKENS tokens (default 512) quantized and gm_qmatmul over all rows
 * (GMAC/s).  Types alternate within each repetition, so all see the same
 * machine.  Times are the thread's CPU time (CLOCK_THREAD_CPUTIME_ID): on
 * a shared, loaded machine wall time mostly measures the other processes.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "cpu/kernels.h"
#include "formats/quant.h"

#define MAXT 16

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int64_t rows = 3072, in = 1024, n = 512, i;
	int reps = 7, opt, nt = 0, k, r;
	enum gm_dtype types[MAXT];
	void *w[MAXT], *xq[MAXT];
	double tdec[MAXT][64], tpr[MAXT][64];
	float *x, *wf, *y, *xt = NULL, *panel;
	uint32_t seed = 1;

	while ((opt = getopt(argc, argv, "r:i:n:k:")) != -1) {
		switch (opt) {
		case 'r': rows = atoll(optarg); break;
		case 'i': in = atoll(optarg); break;
		case 'n': n = atoll(optarg); break;
		case 'k': reps = atoi(optarg); break;
		default: return 129;
		}
	}
	if (reps > 64)
		reps = 64;
	x = gm_falloc((size_t)(n * in));
	wf = gm_falloc((size_t)(rows * in));
	y = gm_falloc((size_t)(n * rows));
	panel = gm_falloc(gm_matmul_panel_len(in));
	for (i = 0; i < rows * in; i++) {
		seed = seed * 1664525u + 1013904223u;
		wf[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * 0.1f;
	}
	for (i = 0; i < n * in; i++) {
		seed = seed * 1664525u + 1013904223u;
		x[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
	}
	for (; optind < argc && nt < MAXT; optind++) {
		enum gm_dtype t;

		if (!strcmp(argv[optind], "BF16")) {
			t = GM_DTYPE_BF16;
			w[nt] = gm_xmalloc((size_t)(rows * in) * 2);
			gm_dtype_from_f32(t, wf, w[nt], (size_t)(rows * in), NULL);
			xq[nt] = NULL;
		} else {
			for (t = GM_DTYPE_Q4_0; t < GM_DTYPE_COUNT; t++)
				if (!strcmp(gm_dtype_name(t), argv[optind]))
					break;
			if (t == GM_DTYPE_COUNT || !gm_qweight_supported(t)) {
				fprintf(stderr, "bench-quant: %s: not a weight type\n", argv[optind]);
				return 129;
			}
			w[nt] = gm_xmalloc(gm_quant_row_bytes(t, in) * (size_t)rows);
			for (i = 0; i < rows; i++)
				gm_quant_quantize(t, wf + i * in, (char *)w[nt] + (size_t)i * gm_quant_row_bytes(t, in), in);
			xq[nt] = gm_xmalloc(gm_qact_len(t, in) * (size_t)n);
		}
		types[nt++] = t;
	}
	if (!nt) {
		fprintf(stderr, "usage: bench-quant [-r ROWS] [-i IN] [-n TOKENS] [-k REPS] TYPE...\n");
		return 129;
	}
	for (r = 0; r < reps; r++) {
		for (k = 0; k < nt; k++) {
			double t0;
			int it, iters = 20;

			t0 = now();
			for (it = 0; it < iters; it++) {
				if (xq[k]) {
					gm_qact_quantize(xq[k], types[k], x, in);
					gm_qmatvec(y, w[k], types[k], xq[k], in, 0, rows);
				} else {
					gm_matvec(y, w[k], types[k], in, x, in, 0, rows, GM_MATMUL_PRECISE);
				}
			}
			tdec[k][r] = (now() - t0) / iters;
			t0 = now();
			if (xq[k]) {
				for (i = 0; i < n; i++)
					gm_qact_quantize((char *)xq[k] + (size_t)i * gm_qact_len(types[k], in), types[k], x + i * in, in);
				gm_qmatmul(y, rows, xq[k], n, w[k], types[k], in, 0, rows, GM_QMATMUL_SMALL);
			} else {
				if (!xt)
					xt = gm_falloc(gm_matmul_xt_len(n, in));
				gm_matmul_pack(xt, x, in, n, in, 0, (n + GM_MATMUL_TB - 1) / GM_MATMUL_TB,
					       GM_MATMUL_SMALL, GM_MATMUL_PRECISE);
				gm_matmul(y, rows, xt, n, w[k], types[k], in, in, 0, rows, panel, GM_MATMUL_SMALL, GM_MATMUL_PRECISE);
			}
			tpr[k][r] = now() - t0;
		}
	}
	printf("kernels %s, [%lld x %lld], prompt %lld tokens, median of %d\n", gm_isa_name(gm_kernels_isa()),
	       (long long)rows, (long long)in, (long long)n, reps);
	printf("| %-5s | %12s | %10s | %14s | %12s |\n", "type", "decode GB/s", "ns/256 w", "prompt GMAC/s", "prompt ms");
	for (k = 0; k < nt; k++) {
		double bytes = xq[k] ? (double)gm_quant_row_bytes(types[k], in) * (double)rows : 2.0 * (double)(rows * in);
		double td, tp;

		qsort(tdec[k], (size_t)reps, sizeof(double), cmpd);
		qsort(tpr[k], (size_t)reps, sizeof(double), cmpd);
		td = tdec[k][reps / 2];
		tp = tpr[k][reps / 2];
		printf("| %-5s | %12.2f | %10.2f | %14.2f | %12.2f |\n", gm_dtype_name(types[k]), bytes / td / 1e9,
		       td * 1e9 / ((double)(rows * in) / 256.0), (double)(rows * in) * (double)n / tp / 1e9, tp * 1e3);
	}
	return 0;
}
