/*
 * bench-forward.c - times gm_forward on a model directory.
 *
 *   bench-forward [-t THREADS] [-r RUNS] [-p PROMPT] [-d DECODE] [-c CTX] [-a ADAPTER_DIR]... MODEL_DIR
 *
 * Two workloads, each run RUNS times (median, min and max printed):
 *   prompt: one eval of PROMPT tokens (default 512), logits of the last;
 *   decode: a 16-token prompt, then DECODE tokens (default 128) one at a
 *           time, each the argmax of the previous logits (only the
 *           one-token evals are timed).
 * Before them, one untimed eval of PROMPT tokens (at least 4) pages the
 * weights in and grows the scratch, as llama-bench's warm-up run does.
 * -p 0 or -d 0 skips that workload.  The time to open the model and whether
 * the weights are resident (GM_WEIGHTS, see weights.h) are printed.  The
 * products of BF16 weights follow GM_MATMUL=fast|precise, by default what
 * git infer uses (fast with AVX512_BF16); keys and values are f32, as git
 * infer keeps them.
 * Token ids are pseudo-random (fixed seed) below 151643; random weights cost
 * what trained ones cost.  Also prints the peak RSS of the process.
 *
 * With -a (repeatable), every workload is also run with those PEFT LoRA
 * adapters applied (gm_forward_set_adapters, stacked at scale 1), the runs
 * without and with adapters alternating so that both see the same machine,
 * and the slowdown of the medians is printed.
 *
 * -q MIX quantizes the model's weights in memory first (formats/quant.c's
 * reference quantizers, both threads), so a float model directory is timed
 * as a quantized one: MIX is a block type (Q8_0, Q4_0, Q4_K, Q6_K...: every
 * projection and the embedding), or Q4_K_M / Q5_K_M, llama.cpp's mixes
 * (Q4_K / Q5_K, with Q6_K for the embedding and for attn_v and ffn_down of
 * the layers llama.cpp gives more bits: the first and last eighth and every
 * third between), as llama-quantize chooses them.  The embedding (the tied
 * output) is Q6_K except for Q8_0, as in llama.cpp's files.  Norms stay
 * as they are.  Quantizing takes a while (the K-quants' scale search).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "engine/forward.h"
#include "cpu/kernels.h"
#include "formats/model.h"
#include "formats/peft.h"
#include "formats/quant.h"
#include "engine/sampler.h"
#include "formats/weights.h"

#define MAX_ADAPTERS 8
#define USAGE "usage: bench-forward [-t THREADS] [-r RUNS] [-p PROMPT] [-d DECODE] [-c CTX] [-q MIX] [-a ADAPTER_DIR]... " \
	"MODEL_DIR\n"

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

static void die(const char *what, const gm_error *err)
{
	fprintf(stderr, "bench-forward: %s: %s\n", what, err->msg);
	exit(1);
}

/* Prints a row; returns the median. */
static double print_row(const char *name, double *tps, int runs)
{
	qsort(tps, (size_t)runs, sizeof(*tps), cmp_double);
	printf("| %-22s | %10.1f | %8.1f | %8.1f | %4d |\n", name, tps[runs / 2], tps[0], tps[runs - 1], runs);
	return tps[runs / 2];
}

/* Attaches the adapters (with_adapters) or detaches them. */
/* ---- -q: quantize in memory */

struct qjob {
	const gm_tensor *src;
	gm_tensor *dst;
	int64_t r0, r1;
};

static void *qrows(void *arg)
{
	struct qjob *j = arg;
	int64_t in = j->src->shape[1], r;
	size_t esz = j->src->dtype == GM_DTYPE_F32 ? 4 : 2, rb = gm_quant_row_bytes(j->dst->dtype, in);
	float *row = malloc((size_t)in * sizeof(float));

	for (r = j->r0; r < j->r1; r++) {
		gm_dtype_to_f32(j->src->dtype, (const char *)j->src->data + (size_t)r * (size_t)in * esz, row, (size_t)in,
				NULL);
		gm_quant_quantize(j->dst->dtype, row, (char *)j->dst->data + (size_t)r * rb, in);
	}
	free(row);
	return NULL;
}

/* A quantized copy of w (never freed: the process ends with the bench). */
static const gm_tensor *quantized(const gm_tensor *w, enum gm_dtype t)
{
	gm_tensor *q = malloc(sizeof(*q));
	struct qjob j[2];
	pthread_t th;
	size_t rb = gm_quant_row_bytes(t, w->shape[1]);

	*q = *w;
	q->dtype = t;
	q->nbytes = rb * (size_t)w->shape[0];
	q->data = malloc(q->nbytes);
	j[0] = (struct qjob){ w, q, 0, w->shape[0] / 2 };
	j[1] = (struct qjob){ w, q, w->shape[0] / 2, w->shape[0] };
	pthread_create(&th, NULL, qrows, &j[1]);
	qrows(&j[0]);
	pthread_join(th, NULL);
	return q;
}

static void quantize_model(gm_model *m, const char *mix)
{
	enum gm_dtype base, more = GM_DTYPE_Q6_K;
	int64_t L = m->config.num_hidden_layers, i;
	int kmix = !strcmp(mix, "Q4_K_M") || !strcmp(mix, "Q5_K_M");
	const gm_tensor *emb;

	if (kmix)
		base = mix[1] == '4' ? GM_DTYPE_Q4_K : GM_DTYPE_Q5_K;
	else {
		for (base = GM_DTYPE_Q4_0; base < GM_DTYPE_COUNT; base++)
			if (!strcmp(gm_dtype_name(base), mix))
				break;
		if (base == GM_DTYPE_COUNT || !gm_quant_supported(base) || base == GM_DTYPE_Q8_K) {
			fprintf(stderr, "bench-forward: -q %s: not a quantized type or mix\n", mix);
			exit(129);
		}
		more = base;
	}
	for (i = 0; i < L; i++) {
		gm_layer_weights *lw = &m->layers[i];
		int bits = i < L / 8 || i >= 7 * L / 8 || (i - L / 8) % 3 == 2;

		lw->q_proj = quantized(lw->q_proj, base);
		lw->k_proj = quantized(lw->k_proj, base);
		lw->v_proj = quantized(lw->v_proj, kmix && bits ? more : base);
		lw->o_proj = quantized(lw->o_proj, base);
		lw->gate_proj = quantized(lw->gate_proj, base);
		lw->up_proj = quantized(lw->up_proj, base);
		lw->down_proj = quantized(lw->down_proj, kmix && bits ? more : base);
	}
	/* llama.cpp gives the (tied) output Q6_K in its mixes and in the 4- and 5-bit types, Q8_0 stays Q8_0 */
	emb = quantized(m->embed_tokens, kmix || base != GM_DTYPE_Q8_0 ? GM_DTYPE_Q6_K : base);
	if (m->lm_head != m->embed_tokens)
		m->lm_head = quantized(m->lm_head, kmix ? more : base);
	else
		m->lm_head = emb;
	m->embed_tokens = emb;
}

static void use_adapters(gm_forward *f, gm_peft_adapter **ads, int n, int with_adapters)
{
	gm_error err = GM_ERROR_INIT;

	if (gm_forward_set_adapters(f, (const gm_peft_adapter *const *)ads, NULL, with_adapters ? n : 0, &err))
		die("gm_forward_set_adapters", &err);
}

int main(int argc, char **argv)
{
	gm_error err = GM_ERROR_INIT;
	int threads = 2, runs = 3, n_prompt = 512, n_decode = 128, n_ctx = 0, opt, r, i, n_ad = 0, w, with;
	gm_peft_adapter *ads[MAX_ADAPTERS];
	const char *ad_dirs[MAX_ADAPTERS];
	double *tps_ad, med[2];
	const int n_short = 16;
	gm_model *m;
	gm_forward *f;
	int32_t *ids;
	float *logits;
	double *tps;
	struct rusage ru;
	uint32_t seed = 12345;
	char name[64];
	double t_load;

	const char *mix = NULL, *mm_env;
	gm_forward_opts fo;

	while ((opt = getopt(argc, argv, "t:r:p:d:c:a:q:")) != -1) {
		switch (opt) {
		case 't': threads = atoi(optarg); break;
		case 'r': runs = atoi(optarg); break;
		case 'p': n_prompt = atoi(optarg); break;
		case 'd': n_decode = atoi(optarg); break;
		case 'c': n_ctx = atoi(optarg); break;
		case 'q': mix = optarg; break;
		case 'a':
			if (n_ad == MAX_ADAPTERS) {
				fprintf(stderr, "bench-forward: at most %d adapters\n", MAX_ADAPTERS);
				return 129;
			}
			ad_dirs[n_ad++] = optarg;
			break;
		default:
			fputs(USAGE, stderr);
			return 129;
		}
	}
	if (optind != argc - 1 || runs < 1 || n_prompt < 0 || n_decode < 0) {
		fputs(USAGE, stderr);
		return 129;
	}
	if (!n_ctx)
		n_ctx = (n_prompt > n_short + n_decode ? n_prompt : n_short + n_decode) + 16;
	t_load = now();
	if (gm_model_open(argv[optind], &m, &err))
		die(argv[optind], &err);
	t_load = now() - t_load;
	if (mix) {
		double tq = now();

		quantize_model(m, mix);
		printf("quantized to %s in memory in %.1f s\n", mix, now() - tq);
	}
	/* as git infer: GM_MATMUL, else fast where the CPU has bf16 products; f32 keys and values */
	mm_env = getenv("GM_MATMUL");
	memset(&fo, 0, sizeof(fo));
	fo.n_ctx = n_ctx;
	fo.n_threads = threads;
	fo.kv_type = GM_KV_F32;
	if (mm_env && *mm_env)
		fo.matmul = !strcmp(mm_env, "fast") ? GM_MATMUL_FAST : GM_MATMUL_PRECISE;
	else
		fo.matmul = gm_kernels_fast_matmul() ? GM_MATMUL_FAST : GM_MATMUL_PRECISE;
	if (gm_forward_new_ex(m, &fo, &f, &err))
		die("gm_forward_new", &err);
	for (i = 0; i < n_ad; i++)
		if (gm_peft_open(ad_dirs[i], &ads[i], &err) || gm_forward_check_adapter(m, ads[i], &err))
			die(ad_dirs[i], &err);
	ids = calloc((size_t)(n_prompt + n_short + n_decode), sizeof(*ids));
	logits = calloc((size_t)m->config.vocab_size, sizeof(*logits));
	tps = calloc((size_t)runs, sizeof(*tps));
	tps_ad = calloc((size_t)runs, sizeof(*tps_ad));
	for (i = 0; i < n_prompt + n_short; i++) {
		seed = seed * 1664525u + 1013904223u;
		ids[i] = (int32_t)((seed >> 8) % 151643u);
	}

	printf("model %s: %d layers, hidden %lld, %.1fM parameters, %.2f GB of weights\n", argv[optind],
	       (int)m->config.num_hidden_layers, (long long)m->config.hidden_size, (double)m->n_params / 1e6,
	       (double)gm_weights_total_bytes(m->weights) / 1e9);
	printf("threads %d, kernels %s, matmul %s, context %d\n", threads, gm_isa_name(gm_kernels_isa()),
	       fo.matmul == GM_MATMUL_FAST ? "fast" : "precise", n_ctx);
	printf("weights %s, opened in %.2f s\n",
	       gm_weights_resident_count(m->weights) ? "resident (huge-page memory)" : "mapped", t_load);
	for (i = 0; i < n_ad; i++)
		printf("adapter %s: r %lld, %zu modules, %.2fM parameters\n", ad_dirs[i], (long long)ads[i]->config.r,
		       ads[i]->n_modules, (double)ads[i]->n_params / 1e6);
	printf("\n");
	printf("| %-22s | %10s | %8s | %8s | %4s |\n", "workload", "tok/s", "min", "max", "runs");
	printf("|------------------------|------------|----------|----------|------|\n");

	/*
	 * Warm-up, untimed: pages the weights in and grows the scratch to the
	 * prompt's size, as llama-bench's warm-up run of the same test does.
	 */
	gm_forward_truncate(f, 0);
	if (gm_forward_eval(f, ids, n_prompt > 4 ? n_prompt : 4, logits, 0, &err))
		die("eval", &err);

	/* each run without adapters, then (with -a) with them */
	for (w = 0; w < 2; w++) {
		if ((w == 0 && !n_prompt) || (w == 1 && !n_decode))
			continue; /* -p 0 or -d 0: that workload is skipped */
		for (r = 0; r < runs; r++) {
			for (with = 0; with <= (n_ad > 0); with++) {
				double t0, *out = with ? tps_ad : tps;
				int32_t next;

				if (n_ad)
					use_adapters(f, ads, n_ad, with);
				gm_forward_truncate(f, 0);
				if (w == 0) {
					t0 = now();
					if (gm_forward_eval(f, ids, n_prompt, logits, 0, &err))
						die("eval", &err);
					out[r] = n_prompt / (now() - t0);
					continue;
				}
				if (gm_forward_eval(f, ids + n_prompt, n_short, logits, 0, &err))
					die("eval", &err);
				t0 = now();
				for (i = 0; i < n_decode; i++) {
					next = gm_sample_argmax(logits, (size_t)m->config.vocab_size);
					if (gm_forward_eval(f, &next, 1, logits, 0, &err))
						die("eval", &err);
				}
				out[r] = n_decode / (now() - t0);
			}
		}
		if (w == 0)
			snprintf(name, sizeof(name), "prompt %d", n_prompt);
		else
			snprintf(name, sizeof(name), "decode %d (after %d)", n_decode, n_short);
		med[0] = print_row(name, tps, runs);
		if (n_ad) {
			char name2[80];

			snprintf(name2, sizeof(name2), "%s+lora", w ? "decode" : "prompt");
			med[1] = print_row(name2, tps_ad, runs);
			printf("|   slowdown with adapters: %.1f%%\n", 100.0 * (med[0] / med[1] - 1.0));
		}
	}

	getrusage(RUSAGE_SELF, &ru);
	printf("\npeak RSS %.1f MiB (weights %.1f MiB, KV cache %.1f MiB for %d tokens)\n",
	       ru.ru_maxrss / 1024.0, (double)gm_weights_total_bytes(m->weights) / (1024.0 * 1024.0),
	       2.0 * 4.0 * (double)m->config.num_hidden_layers * (double)m->config.num_key_value_heads *
		       (double)m->config.head_dim * n_ctx / (1024.0 * 1024.0),
	       n_ctx);
	free(ids);
	free(logits);
	free(tps);
	free(tps_ad);
	gm_forward_free(f);
	for (i = 0; i < n_ad; i++)
		gm_peft_close(ads[i]);
	gm_model_close(m);
	return 0;
}
