/*
 * forward.h - the transformer forward pass on the CPU (Qwen3, Qwen2,
 * Llama), with a KV cache.
 *
 * Weights stay as mapped by gm_model (bf16/f16/f32, never converted in
 * bulk); activations and the KV cache are f32.  A gm_forward holds the
 * cache, scratch buffers and a thread pool; it is used by one thread at a
 * time.
 *
 *   gm_forward_new(model, n_ctx, n_threads, &f, &err);
 *   gm_forward_eval(f, prompt, n_prompt, logits, 0, &err);   // prefill; logits of the last position
 *   gm_forward_eval(f, &next, 1, logits, 0, &err);           // one decode step
 */
#ifndef GM_FORWARD_H
#define GM_FORWARD_H

#include <stdint.h>

#include "error.h"
#include "model.h"

typedef struct gm_forward gm_forward;

/*
 * n_ctx: KV cache length in tokens (0: the model's max_position_embeddings,
 * capped at 4096); n_threads: 0 = one per online CPU.  The model is borrowed
 * and must outlive f.
 */
int gm_forward_new(const gm_model *m, int n_ctx, int n_threads, gm_forward **out, gm_error *err);
void gm_forward_free(gm_forward *f);

int gm_forward_n_ctx(const gm_forward *f);
/* Tokens in the cache: the position the next token gets. */
int gm_forward_pos(const gm_forward *f);
/* Forgets cached positions >= pos (0 empties the cache). */
void gm_forward_truncate(gm_forward *f, int pos);

/*
 * Evaluates ids[0..n) at positions pos..pos+n-1, appending them to the
 * cache.  logits (may be NULL): [n, vocab] when all_logits, else [vocab]
 * for the last position.  GM_EINVAL (nothing evaluated) when the tokens do
 * not fit in n_ctx or an id is out of range, with a message saying so.
 */
int gm_forward_eval(gm_forward *f, const int32_t *ids, int n, float *logits, int all_logits, gm_error *err);

/* Hidden state after the final norm for the last eval, [n, hidden] (for tests). */
const float *gm_forward_last_hidden(const gm_forward *f);

#endif
