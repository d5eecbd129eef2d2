/*
 * bench-forward.c - times gm_forward on a model directory.
 *
 *   bench-forward [-t THREADS] [-r RUNS] [-p PROMPT] [-d DECODE] [-c CTX] MODEL_DIR
 *
 * Two workloads, each run RUNS times (median, min and max printed):
 *   prompt: one eval of PROMPT tokens (default 512), logits of the last;
 *   decode: a 16-token prompt, then DECODE tokens (default 128) one at a
 *           time, each the argmax of the previous logits (only the
 *           one-token evals are timed).
 * Token ids are pseudo-random (fixed seed) below 151643; random weights cost
 * what trained ones cost.  Also prints the peak RSS of the process.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "forward.h"
#include "kernels.h"
#include "model.h"
#include "weights.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int argmax(const float *x, int64_t n)
{
	int64_t i, best = 0;

	for (i = 1; i < n; i++)
		if (x[i] > x[best])
			best = i;
	return (int)best;
}

static void die(const char *what, const gm_error *err)
{
	fprintf(stderr, "bench-forward: %s: %s\n", what, err->msg);
	exit(1);
}

static void print_row(const char *name, double *tps, int runs)
{
	qsort(tps, (size_t)runs, sizeof(*tps), cmp_double);
	printf("| %-22s | %10.1f | %8.1f | %8.1f | %4d |\n", name, tps[runs / 2], tps[0], tps[runs - 1], runs);
}

int main(int argc, char **argv)
{
	gm_error err = GM_ERROR_INIT;
	int threads = 2, runs = 3, n_prompt = 512, n_decode = 128, n_ctx = 0, opt, r, i;
	const int n_short = 16;
	gm_model *m;
	gm_forward *f;
	int32_t *ids;
	float *logits;
	double *tps;
	struct rusage ru;
	uint32_t seed = 12345;
	char name[64];

	while ((opt = getopt(argc, argv, "t:r:p:d:c:")) != -1) {
		switch (opt) {
		case 't': threads = atoi(optarg); break;
		case 'r': runs = atoi(optarg); break;
		case 'p': n_prompt = atoi(optarg); break;
		case 'd': n_decode = atoi(optarg); break;
		case 'c': n_ctx = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: bench-forward [-t THREADS] [-r RUNS] [-p PROMPT] [-d DECODE] [-c CTX] MODEL_DIR\n");
			return 129;
		}
	}
	if (optind != argc - 1 || runs < 1 || n_prompt < 1 || n_decode < 1) {
		fprintf(stderr, "usage: bench-forward [-t THREADS] [-r RUNS] [-p PROMPT] [-d DECODE] [-c CTX] MODEL_DIR\n");
		return 129;
	}
	if (!n_ctx)
		n_ctx = (n_prompt > n_short + n_decode ? n_prompt : n_short + n_decode) + 16;
	if (gm_model_open(argv[optind], &m, &err))
		die(argv[optind], &err);
	if (gm_forward_new(m, n_ctx, threads, &f, &err))
		die("gm_forward_new", &err);
	ids = calloc((size_t)(n_prompt + n_short + n_decode), sizeof(*ids));
	logits = calloc((size_t)m->config.vocab_size, sizeof(*logits));
	tps = calloc((size_t)runs, sizeof(*tps));
	for (i = 0; i < n_prompt + n_short; i++) {
		seed = seed * 1664525u + 1013904223u;
		ids[i] = (int32_t)((seed >> 8) % 151643u);
	}

	printf("model %s: %d layers, hidden %lld, %.1fM parameters, %.2f GB of weights\n", argv[optind],
	       (int)m->config.num_hidden_layers, (long long)m->config.hidden_size, (double)m->n_params / 1e6,
	       (double)gm_weights_total_bytes(m->weights) / 1e9);
	printf("threads %d, kernels %s, context %d\n\n", threads, gm_isa_name(gm_kernels_isa()), n_ctx);
	printf("| %-22s | %10s | %8s | %8s | %4s |\n", "workload", "tok/s", "min", "max", "runs");
	printf("|------------------------|------------|----------|----------|------|\n");

	/* warm-up: pages the weights in */
	gm_forward_truncate(f, 0);
	if (gm_forward_eval(f, ids, 4, logits, 0, &err))
		die("eval", &err);

	for (r = 0; r < runs; r++) {
		double t0;

		gm_forward_truncate(f, 0);
		t0 = now();
		if (gm_forward_eval(f, ids, n_prompt, logits, 0, &err))
			die("eval", &err);
		tps[r] = n_prompt / (now() - t0);
	}
	snprintf(name, sizeof(name), "prompt %d", n_prompt);
	print_row(name, tps, runs);

	for (r = 0; r < runs; r++) {
		double t0;
		int32_t next;

		gm_forward_truncate(f, 0);
		if (gm_forward_eval(f, ids + n_prompt, n_short, logits, 0, &err))
			die("eval", &err);
		t0 = now();
		for (i = 0; i < n_decode; i++) {
			next = argmax(logits, m->config.vocab_size);
			if (gm_forward_eval(f, &next, 1, logits, 0, &err))
				die("eval", &err);
		}
		tps[r] = n_decode / (now() - t0);
	}
	snprintf(name, sizeof(name), "decode %d (after %d)", n_decode, n_short);
	print_row(name, tps, runs);

	getrusage(RUSAGE_SELF, &ru);
	printf("\npeak RSS %.1f MiB (weights %.1f MiB mapped, KV cache %.1f MiB for %d tokens)\n",
	       ru.ru_maxrss / 1024.0, (double)gm_weights_total_bytes(m->weights) / (1024.0 * 1024.0),
	       2.0 * 4.0 * (double)m->config.num_hidden_layers * (double)m->config.num_key_value_heads *
		       (double)m->config.head_dim * n_ctx / (1024.0 * 1024.0),
	       n_ctx);
	free(ids);
	free(logits);
	free(tps);
	gm_forward_free(f);
	gm_model_close(m);
	return 0;
}
