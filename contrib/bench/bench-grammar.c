/*
 * bench-grammar.c - the cost of constrained decoding per generated token.
 *
 *   bench-grammar [-t THREADS] [-r RUNS] [-d DECODE] [-s SCHEMA.json | -g GRAMMAR.gbnf] [-x] [-T TEMP] [-k TOP_K]
 *                 [-P TOP_P] MODEL_DIR
 *
 * -g: a GBNF grammar instead of a schema (a tool_choice grammar, say);
 * -x: keep special tokens in the text, as tool calls do, so that a special
 * token may come where a literal of the grammar spells it (the extra check
 * this costs per mask is then timed too).
 *
 * Each run decodes DECODE tokens (default 128) after a short prompt twice,
 * unconstrained and under the JSON Schema (a built-in one with nested
 * objects, strings, integers, enums and arrays by default), the two
 * alternating so that both see the same machine.  A step is timed in two
 * parts: choosing the token (gm_gen_seq_next: sampling, and for the
 * constrained run the grammar checks, masks and state updates) and the
 * forward pass of that token.  A sequence that ends (the grammar complete,
 * EOS) starts again where it is, so that every run decodes DECODE tokens.
 * Printed: medians over runs of the per-token times, and the overhead of
 * the grammar, (choose[constrained] - choose[plain]) / (choose + forward)
 * [plain], the extra time per token relative to the unconstrained decode.
 * Sampling defaults to Qwen3's recommended non-thinking settings
 * (temperature 0.7, top-k 20, top-p 0.8).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/fs.h"
#include "base/json.h"
#include "engine/forward.h"
#include "engine/generate.h"
#include "engine/sampler.h"
#include "formats/model.h"
#include "text/grammar.h"
#include "text/jsonschema.h"
#include "text/tokenizer.h"

#define USAGE "usage: bench-grammar [-t THREADS] [-r RUNS] [-d DECODE] [-s SCHEMA.json | -g GRAMMAR.gbnf] [-x] " \
	"[-T TEMP] [-k TOP_K] [-P TOP_P] MODEL_DIR\n"

static int keep_special;

static const char default_schema[] =
	"{\"type\":\"object\",\"properties\":{"
	"\"name\":{\"type\":\"string\",\"maxLength\":40},"
	"\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":150},"
	"\"email\":{\"type\":\"string\",\"format\":\"email\"},"
	"\"role\":{\"enum\":[\"admin\",\"user\",\"guest\"]},"
	"\"address\":{\"type\":\"object\",\"properties\":{\"street\":{\"type\":\"string\"},\"city\":{\"type\":\"string\"}},"
	"\"required\":[\"street\",\"city\"],\"additionalProperties\":false},"
	"\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":12},\"maxItems\":8}},"
	"\"required\":[\"name\",\"age\",\"email\",\"role\",\"address\",\"tags\"],\"additionalProperties\":false}";

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

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what, const gm_error *err)
{
	fprintf(stderr, "bench-grammar: %s: %s\n", what, err->msg);
	exit(1);
}

/* One run: DECODE tokens; per-token choose and forward seconds in *choose, *fwd. */
static void run(gm_model *m, gm_forward *f, gm_tokenizer *tok, const gm_sampler_params *sp, const gm_grammar *g,
		const gm_grammar_vocab *v, const int32_t *prompt, size_t n_prompt, int decode, double *choose,
		double *fwd, int *n_ended)
{
	gm_error err = GM_ERROR_INIT;
	size_t n_vocab = (size_t)m->config.vocab_size;
	float *logits = malloc(n_vocab * sizeof(*logits));
	gm_sampler *s;
	gm_generate_opts o;
	gm_gen_seq *gs = NULL;
	double tc = 0, tf = 0;
	int i;

	gm_forward_truncate(f, 0);
	if (gm_forward_eval(f, prompt, (int)n_prompt, logits, 0, &err))
		die("prompt", &err);
	if (gm_sampler_new(sp, n_vocab, &s, &err))
		die("sampler", &err);
	gm_generate_opts_init(&o, &m->generation);
	o.sampler = s;
	o.grammar = g;
	o.grammar_vocab = v;
	o.skip_special = !keep_special;
	*n_ended = 0;
	for (i = 0; i < decode; i++) {
		int32_t id;
		double t0, t1, t2;
		int r;

		if (!gs && gm_gen_seq_new(tok, n_vocab, &o, prompt, n_prompt, &gs, &err))
			die("gen_seq", &err);
		t0 = now();
		r = gm_gen_seq_next(gs, logits, &id, &err);
		t1 = now();
		if (r < 0)
			die("step", &err);
		if (r > 0) {
			/* ended (grammar complete or EOS): the next one starts here */
			gm_gen_seq_free(gs);
			gs = NULL;
			(*n_ended)++;
			if (id < 0)
				id = prompt[0];
		}
		if (gm_forward_eval(f, &id, 1, logits, 0, &err))
			die("decode", &err);
		t2 = now();
		tc += t1 - t0;
		tf += t2 - t1;
	}
	gm_gen_seq_free(gs);
	gm_sampler_free(s);
	free(logits);
	*choose = tc / decode;
	*fwd = tf / decode;
}

int main(int argc, char **argv)
{
	gm_error err = GM_ERROR_INIT;
	int threads = 0, runs = 5, decode = 128, c, r;
	const char *schema_path = NULL, *gbnf_path = NULL;
	gm_sampler_params sp;
	gm_model *m;
	gm_forward *f;
	gm_tokenizer *tok;
	gm_grammar *g;
	gm_grammar_vocab *v;
	json_object *schema;
	gm_buf gbnf = GM_BUF_INIT;
	int32_t *prompt;
	size_t n_prompt;
	double *pc, *pf, *gc, *gf, *ratio, t0;
	const char *text = "Reply with a JSON object describing a user:\n";

	gm_sampler_params_init(&sp);
	sp.temperature = 0.7;
	sp.top_k = 20;
	sp.top_p = 0.8;
	while ((c = getopt(argc, argv, "t:r:d:s:g:xT:k:P:")) != -1) {
		switch (c) {
		case 't': threads = atoi(optarg); break;
		case 'r': runs = atoi(optarg); break;
		case 'd': decode = atoi(optarg); break;
		case 's': schema_path = optarg; break;
		case 'g': gbnf_path = optarg; break;
		case 'x': keep_special = 1; break;
		case 'T': sp.temperature = atof(optarg); break;
		case 'k': sp.top_k = atol(optarg); break;
		case 'P': sp.top_p = atof(optarg); break;
		default: fputs(USAGE, stderr); return 129;
		}
	}
	if (optind + 1 != argc || runs < 1 || decode < 1) {
		fputs(USAGE, stderr);
		return 129;
	}
	if (gm_model_open(argv[optind], &m, &err))
		die(argv[optind], &err);
	if (gm_tokenizer_load(argv[optind], &tok, &err))
		die("tokenizer", &err);
	if (gm_forward_new(m, 1024, threads, &f, &err))
		die("forward", &err);
	if (gbnf_path) {
		schema = NULL;
		if (gm_read_file(gbnf_path, &gbnf, &err))
			die("grammar", &err);
	} else {
		if (schema_path ? gm_json_parse_file(schema_path, &schema, &err)
				: gm_json_parse(default_schema, strlen(default_schema), "schema", &schema, &err))
			die("schema", &err);
		if (gm_json_schema_to_gbnf(schema, "", &gbnf, &err))
			die("grammar", &err);
	}
	if (gm_grammar_parse(gbnf.buf, gbnf.len, NULL, &g, &err))
		die("grammar", &err);
	t0 = now();
	if (gm_grammar_vocab_new(tok, (size_t)m->config.vocab_size, &v, &err))
		die("vocabulary", &err);
	printf("vocabulary trie: %zu tokens in %.1f ms\n", gm_tokenizer_n_tokens(tok), (now() - t0) * 1e3);
	if (gm_tokenizer_encode(tok, text, strlen(text), &prompt, &n_prompt, &err))
		die("prompt", &err);
	printf("sampling: temperature %g, top-k %lld, top-p %g; %d tokens a run, %d runs\n", sp.temperature,
	       (long long)sp.top_k, sp.top_p, decode, runs);

	pc = calloc((size_t)runs, sizeof(double));
	pf = calloc((size_t)runs, sizeof(double));
	gc = calloc((size_t)runs, sizeof(double));
	gf = calloc((size_t)runs, sizeof(double));
	ratio = calloc((size_t)runs, sizeof(double));
	for (r = 0; r < runs; r++) {
		int ended_p, ended_g;

		sp.seed = (uint64_t)r + 1;
		run(m, f, tok, &sp, NULL, NULL, prompt, n_prompt, decode, &pc[r], &pf[r], &ended_p);
		run(m, f, tok, &sp, g, v, prompt, n_prompt, decode, &gc[r], &gf[r], &ended_g);
		ratio[r] = (gc[r] - pc[r]) / (pc[r] + pf[r]);
		printf("run %d: plain choose %.3f ms + forward %.2f ms; grammar choose %.3f ms + forward %.2f ms "
		       "(%d complete JSON texts); overhead %.2f%%\n", r + 1, pc[r] * 1e3, pf[r] * 1e3, gc[r] * 1e3,
		       gf[r] * 1e3, ended_g, 100 * ratio[r]);
		fflush(stdout);
	}
	{
		double mpc = median(pc, runs), mpf = median(pf, runs), mgc = median(gc, runs), mgf = median(gf, runs);

		printf("median per token: plain choose %.3f ms, forward %.2f ms; grammar choose %.3f ms, forward %.2f ms\n",
		       mpc * 1e3, mpf * 1e3, mgc * 1e3, mgf * 1e3);
		printf("grammar overhead: %.3f ms per token = %.2f%% of the unconstrained decode time per token "
		       "(median of the runs' ratios: %.2f%%)\n", (mgc - mpc) * 1e3, 100 * (mgc - mpc) / (mpc + mpf),
		       100 * median(ratio, runs));
	}
	free(pc);
	free(pf);
	free(gc);
	free(gf);
	free(ratio);
	free(prompt);
	json_object_put(schema);
	gm_buf_release(&gbnf);
	gm_grammar_vocab_free(v);
	gm_grammar_free(g);
	gm_forward_free(f);
	gm_tokenizer_free(tok);
	gm_model_close(m);
	return 0;
}
