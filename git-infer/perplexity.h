/* perplexity.h - git infer --perplexity (see perplexity.c). */
#ifndef GIT_INFER_PERPLEXITY_H
#define GIT_INFER_PERPLEXITY_H

#include "base/error.h"
#include "ops/matmul-mode.h"

/*
 * Perplexity of the text in file under model, as llama.cpp's perplexity
 * tool computes it: the tokens (a BOS first when the model adds one) cut
 * into chunks of n_ctx, each evaluated from an empty cache n_batch tokens
 * at a time, each scored on its second half.  Prints the running estimate
 * after each chunk on stderr and the final one on stdout.
 */
int gm_infer_perplexity(const char *model, const char *file, int n_ctx, int n_batch, int n_threads,
			enum gm_matmul_mode mm, gm_error *err);

#endif
