/*
 * bench-train - times LoRA training steps (libcore/train/train.h) on a model
 * directory: one sequence of -n tokens per optimizer step (random ids, loss
 * on every position), LoRA rank -r on the projections -T, -t threads.
 * Prints the median tokens/s over -s steps (after one untimed warm-up step)
 * and the peak RSS.
 *
 *   bench-train [-t THREADS] [-n TOKENS] [-s STEPS] [-r RANK] [-T TARGETS] MODEL_DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "formats/model.h"
#include "train/train.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	gm_error err = GM_ERROR_INIT;
	gm_model *m = NULL;
	gm_lora *l = NULL;
	gm_train *t = NULL;
	gm_train_opts o;
	const char *targets = "all-linear";
	int threads = 2, n = 256, steps = 3, rank = 16, c, i;
	unsigned mask;
	int32_t *ids;
	double *tps;
	struct rusage ru;

	while ((c = getopt(argc, argv, "t:n:s:r:T:")) != -1) {
		switch (c) {
		case 't': threads = atoi(optarg); break;
		case 'n': n = atoi(optarg); break;
		case 's': steps = atoi(optarg); break;
		case 'r': rank = atoi(optarg); break;
		case 'T': targets = optarg; break;
		default:
			fprintf(stderr, "usage: bench-train [-t THREADS] [-n TOKENS] [-s STEPS] [-r RANK] [-T TARGETS] MODEL_DIR\n");
			return 2;
		}
	}
	if (optind + 1 != argc || n < 2 || steps < 1) {
		fprintf(stderr, "usage: bench-train [-t THREADS] [-n TOKENS] [-s STEPS] [-r RANK] [-T TARGETS] MODEL_DIR\n");
		return 2;
	}
	memset(&o, 0, sizeof(o));
	o.lr = 1e-4;
	o.n_steps = steps + 1;
	o.max_len = n;
	o.n_threads = threads;
	if (gm_model_open(argv[optind], &m, &err) || gm_lora_parse_targets(targets, &mask, &err) ||
	    gm_lora_init(m, rank, 2.0 * rank, 0, mask, 1, &l, &err) || gm_train_new(m, l, &o, &t, &err)) {
		fprintf(stderr, "bench-train: %s\n", err.msg);
		return 1;
	}
	ids = calloc((size_t)n, sizeof(*ids));
	tps = calloc((size_t)steps, sizeof(*tps));
	srand(1);
	for (i = 0; i < n; i++)
		ids[i] = rand() % (int)m->config.vocab_size;
	for (i = 0; i <= steps; i++) {
		gm_train_seq sq = { ids, NULL, n };
		gm_train_info info;
		double t0 = now();

		if (gm_train_step(t, &sq, 1, &info, &err)) {
			fprintf(stderr, "bench-train: %s\n", err.msg);
			return 1;
		}
		if (i > 0)
			tps[i - 1] = (double)n / (now() - t0);
		fprintf(stderr, "step %d: loss %.4f, %.1f tok/s%s\n", i, info.loss, (double)n / (now() - t0),
			i ? "" : " (warm-up, not counted)");
	}
	qsort(tps, (size_t)steps, sizeof(*tps), cmp_double);
	getrusage(RUSAGE_SELF, &ru);
	printf("train %s, LoRA r%d on %s, %d tokens/step, %d threads: %.1f tok/s (median of %d; min %.1f, max %.1f), "
	       "peak RSS %.0f MiB\n", argv[optind], rank, targets, n, threads, tps[steps / 2], steps, tps[0],
	       tps[steps - 1], (double)ru.ru_maxrss / 1024.0);
	gm_train_free(t);
	gm_lora_free(l);
	gm_model_close(m);
	free(ids);
	free(tps);
	return 0;
}
