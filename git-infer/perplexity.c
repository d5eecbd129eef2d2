/*
 * perplexity.c - git infer --perplexity FILE [--ctx N] [--batch N].
 *
 * The method of llama.cpp's llama-perplexity (its default mode), so that
 * the numbers can be compared: tokenize the whole file (a BOS first when
 * the model's tokenizer adds one: tokenizer.ggml.add_bos_token); with
 * n_chunk = n_tokens / n_ctx whole chunks, evaluate each chunk of n_ctx
 * tokens from an empty cache (its first token replaced by BOS when BOS is
 * added), and sum -log p(token[j+1] | tokens[..j]) over its second half,
 * j = n_ctx/2 .. n_ctx-2.  PPL = exp(mean), its error the standard error
 * of the mean of those log-probabilities carried through exp, as printed
 * by llama-perplexity ("Final estimate: PPL = X +/- Y").
 */
#include "perplexity.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/fs.h"
#include "engine/forward.h"
#include "engine/modelfiles.h"
#include "formats/model.h"

/* The BOS id when the tokenizer adds one before a text (GGUF add_bos_token, Llama 3's post-processor), else -1. */
static int64_t bos_added(const gm_tokenizer *tok)
{
	const int32_t *pre, *suf;
	size_t n_pre, n_suf;

	gm_tokenizer_template(tok, &pre, &n_pre, &suf, &n_suf);
	return n_pre == 1 ? pre[0] : -1;
}

/* -log softmax(row)[target], in double. */
static double nll_of(const float *row, size_t n_vocab, int32_t target)
{
	double max = row[0], sum = 0;
	size_t i;

	for (i = 1; i < n_vocab; i++)
		if (row[i] > max)
			max = row[i];
	for (i = 0; i < n_vocab; i++)
		sum += exp((double)row[i] - max);
	return log(sum) - ((double)row[target] - max);
}

int gm_infer_perplexity(const char *model, const char *file, int n_ctx, int n_batch, int n_threads,
			enum gm_matmul_mode mm, gm_error *err)
{
	gm_model *m = NULL;
	gm_tokenizer *tok = NULL;
	gm_forward *f = NULL;
	gm_forward_opts fo;
	gm_buf text = GM_BUF_INIT;
	int32_t *ids = NULL, *all = NULL, *chunk = NULL;
	float *logits = NULL;
	size_t n_ids = 0, n_all, n_vocab, n_chunk, c;
	double nll = 0, nll2 = 0;
	int64_t bos;
	long count = 0;
	int ret, first = n_ctx / 2;

	if (n_ctx < 4)
		return gm_error_set(err, GM_EINVAL, "--ctx %d is too small for --perplexity (at least 4)", n_ctx);
	if (n_batch <= 0 || n_batch > n_ctx)
		n_batch = n_ctx;
	if ((ret = gm_model_open(model, &m, err)) || (ret = gm_model_tokenizer_load(model, &tok, err)) ||
	    (ret = gm_read_file(file, &text, err)) ||
	    (ret = gm_tokenizer_encode(tok, text.buf, text.len, &ids, &n_ids, err)))
		goto out;
	n_vocab = (size_t)m->config.vocab_size;
	bos = bos_added(tok);
	n_all = n_ids + (bos >= 0);
	all = gm_xmalloc((n_all ? n_all : 1) * sizeof(*all));
	if (bos >= 0)
		all[0] = (int32_t)bos;
	memcpy(all + (bos >= 0), ids, n_ids * sizeof(*ids));
	if (n_all < 2 * (size_t)n_ctx) {
		ret = gm_error_set(err, GM_EINVAL, "%s: %zu tokens; --perplexity with --ctx %d needs at least %d", file,
				   n_all, n_ctx, 2 * n_ctx);
		goto out;
	}
	n_chunk = n_all / (size_t)n_ctx;
	memset(&fo, 0, sizeof(fo));
	fo.n_ctx = n_ctx;
	fo.n_threads = n_threads;
	fo.kv_type = GM_KV_F32;
	fo.matmul = mm;
	if ((ret = gm_forward_new_ex(m, &fo, &f, err)))
		goto out;
	chunk = gm_xmalloc((size_t)n_ctx * sizeof(*chunk));
	logits = gm_xmalloc((size_t)n_batch * n_vocab * sizeof(*logits));
	fprintf(stderr, "perplexity: %zu tokens, %zu chunks of %d, batch %d\n", n_all, n_chunk, n_ctx, n_batch);
	for (c = 0; c < n_chunk; c++) {
		int pos;

		memcpy(chunk, all + c * (size_t)n_ctx, (size_t)n_ctx * sizeof(*chunk));
		if (bos >= 0)
			chunk[0] = (int32_t)bos;
		gm_forward_truncate(f, 0);
		for (pos = 0; pos < n_ctx; pos += n_batch) {
			int n = n_ctx - pos < n_batch ? n_ctx - pos : n_batch, j;

			/* logits only where they are scored: the second half */
			if ((ret = gm_forward_eval(f, chunk + pos, n, pos + n > first ? logits : NULL, 1, err)))
				goto out;
			for (j = pos; j < pos + n; j++) {
				double v;

				if (j < first || j >= n_ctx - 1)
					continue;
				v = nll_of(logits + (size_t)(j - pos) * n_vocab, n_vocab, chunk[j + 1]);
				nll += v;
				nll2 += v * v;
				count++;
			}
		}
		fprintf(stderr, "[%zu]%.4f,", c + 1, exp(nll / (double)count));
		fflush(stderr);
	}
	fputc('\n', stderr);
	{
		double mean = nll / (double)count, var = nll2 / (double)count - mean * mean;
		double ppl = exp(mean), sd = var > 0 ? sqrt(var / (double)(count - 1)) : 0;

		printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, sd * ppl);
	}
out:
	free(logits);
	free(chunk);
	free(all);
	free(ids);
	gm_buf_release(&text);
	gm_forward_free(f);
	gm_tokenizer_free(tok);
	gm_model_close(m);
	return ret;
}
