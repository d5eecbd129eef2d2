/*
 * forward.h - inference with the model definition (qwen3.h: Qwen3, Qwen2,
 * Llama) on the CPU backend of the op layer (ops.h): one sequence, or many
 * at once (gm_forward_eval_batch), with their keys and values in a paged
 * pool (kv.h).
 *
 * Weights stay as mapped by gm_model (bf16/f16/f32, never converted in
 * bulk); activations are f32; keys and values are f32 or 16 bits.  A
 * gm_forward holds the backend (threads, scratch), the adapter sets and a
 * private KV pool with one sequence for the single-sequence calls; it is
 * used by one thread at a time.
 *
 *   gm_forward_new(model, n_ctx, n_threads, &f, &err);
 *   gm_forward_eval(f, prompt, n_prompt, logits, 0, &err);   // prefill; logits of the last position
 *   gm_forward_eval(f, &next, 1, logits, 0, &err);           // one decode step
 *
 * LoRA adapters (peft.h) are applied at run time, the base weights left
 * as they are: each adapted projection computes
 *
 *   y = x W^T + sum_i s_i * scale_i * (x A_i^T) B_i^T
 *
 * (A_i: [r_i, in], B_i: [out, r_i], scale_i the module's alpha / r or
 * alpha / sqrt(r), s_i the caller's scale), in f32.  Adapters switch and
 * stack without reloading the model:
 *
 *   gm_forward_set_adapters(f, ads, scales, 2, &err);  // W + s0 B0 A0 + s1 B1 A1
 *   gm_forward_set_adapters(f, NULL, NULL, 0, &err);   // the base model again
 *
 * Sparse adapters (sparse.h: a CSR delta W per module) are applied the same
 * way, y += s_i * x delta W_i^T in f32 (a sparse product per token, threads
 * splitting the output rows), and stack with LoRAs through
 * gm_forward_set_adapter_list:
 *
 *   gm_forward_adapter list[2] = { { .lora = lora, .scale = 1 }, { .sparse = sp, .scale = 0.5f } };
 *   gm_forward_set_adapter_list(f, list, 2, &err);     // W + B A + 0.5 delta W
 *
 * Many sequences, each with its own adapters, one step at a time:
 *
 *   gm_kv_new(model, GM_KV_AUTO, 8192, &kv, &err);     // a pool of 512 blocks of 16 tokens
 *   gm_forward_adapter_set_add(f, list, 2, &set, &err);
 *   gm_kv_seq_new(kv, &a, &err); gm_kv_seq_new(kv, &b, &err);
 *   gm_forward_seq step[2] = { { a, prompt, n_prompt, 0, la },  // a prompt chunk, the base model
 *                              { b, &next, 1, set, lb } };      // a decode step with the adapters
 *   gm_forward_eval_batch(f, kv, step, 2, &err);       // weights read once for all n_prompt + 1 rows
 */
#ifndef GM_FORWARD_H
#define GM_FORWARD_H

#include <stdint.h>

#include "base/error.h"
#include "ops/kv.h"
#include "ops/matmul-mode.h"
#include "formats/model.h"

typedef struct gm_forward gm_forward;
struct gm_peft_adapter;
struct gm_sparse_adapter;

/* One adapter to apply: exactly one of lora and sparse, with the caller's scale. */
typedef struct gm_forward_adapter {
	const struct gm_peft_adapter *lora;
	const struct gm_sparse_adapter *sparse;
	float scale;
} gm_forward_adapter;

/*
 * n_ctx: KV cache length in tokens (0: the model's max_position_embeddings,
 * capped at 4096); n_threads: 0 = one per online CPU.  The model is borrowed
 * and must outlive f.
 */
int gm_forward_new(const gm_model *m, int n_ctx, int n_threads, gm_forward **out, gm_error *err);
void gm_forward_free(gm_forward *f);

/*
 * gm_forward_new with options (added to the agreed API).  A zeroed struct
 * gives the defaults: n_ctx and n_threads as gm_forward_new, kv_type AUTO
 * (16-bit keys and values for a 16-bit model).  gm_forward_new keeps f32
 * keys and values whatever the model (its callers' numerics unchanged); it
 * is gm_forward_new_ex with kv_type GM_KV_F32.  matmul: how the products of
 * BF16 weights round the activations (gm_matmul_mode, ops.h), for every
 * eval of f; precise unless asked.  kv_type applies to the
 * private pool of the single-sequence calls; gm_forward_eval_batch uses
 * the pool it is given.
 */
typedef struct gm_forward_opts {
	int n_ctx;
	int n_threads;
	enum gm_kv_type kv_type;
	enum gm_matmul_mode matmul; /* ops.h; zero: GM_MATMUL_PRECISE */
} gm_forward_opts;
int gm_forward_new_ex(const gm_model *m, const gm_forward_opts *o, gm_forward **out, gm_error *err);
/* Added: the resolved type of the private pool's keys and values. */
enum gm_kv_type gm_forward_kv_type(const gm_forward *f);

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

/*
 * Checks that every module of the adapter fits the model: a layer the
 * model has, and lora_A / lora_B shapes matching the in and out features
 * of the projection.  GM_EINVAL with a message naming the adapter's
 * directory and the module otherwise.
 */
int gm_forward_check_adapter(const gm_model *m, const struct gm_peft_adapter *ad, gm_error *err);

/*
 * Applies adapters[0..n) with the scales scales[0..n) (NULL: 1 each) from
 * the next eval on, replacing those set before; n = 0 detaches them all.
 * The adapters are only read during the call (their weights are copied,
 * as f32, with the scales folded in): they may be closed afterwards.  A
 * scale of 0 leaves an adapter out.  On failure (an adapter that does not
 * fit the model, a scale that is not finite) nothing changes.
 *
 * The cache holds keys and values computed with the previous adapters; it
 * is emptied (gm_forward_pos becomes 0) and gm_forward_adapters_epoch
 * changes, so that nothing computed with other adapters is reused.
 */
int gm_forward_set_adapters(gm_forward *f, const struct gm_peft_adapter *const *adapters, const float *scales,
			    int n, gm_error *err);
/*
 * gm_forward_set_adapters for a list mixing LoRA and sparse adapters, with
 * the same rules (checked with gm_forward_check_adapter and
 * gm_forward_check_sparse, weights copied, a scale of 0 leaves an adapter
 * out, the cache emptied).  gm_forward_set_adapters(f, ads, scales, n) is
 * this with { .lora = ads[i], .scale = scales ? scales[i] : 1 }.
 */
int gm_forward_set_adapter_list(gm_forward *f, const gm_forward_adapter *list, int n, gm_error *err);
/* As gm_forward_check_adapter, for a sparse adapter: layers and [out, in] against the model's weights. */
int gm_forward_check_sparse(const gm_model *m, const struct gm_sparse_adapter *ad, gm_error *err);
/* The adapters applied (with a non-zero scale). */
int gm_forward_n_adapters(const gm_forward *f);
/* Changes with every gm_forward_set_adapters: callers that remember the cache's tokens compare it. */
uint64_t gm_forward_adapters_epoch(const gm_forward *f);

/* Hidden state after the final norm for the last eval, [n, hidden] (for tests). */
const float *gm_forward_last_hidden(const gm_forward *f);

/* ---- adapter sets registered on a forward (per-sequence adapters in one batch) ---- */

/* Registers a list of adapters (same rules as gm_forward_set_adapter_list: checked, weights
 * copied as f32 with the scales folded in) under a new id > 0; 0 always means "no adapter". */
int gm_forward_adapter_set_add(gm_forward *f, const gm_forward_adapter *list, int n, int *id, gm_error *err);
void gm_forward_adapter_set_remove(gm_forward *f, int id);

/* ---- one step over many sequences ---- */

/*
 * What a sequence's tokens in a step are.  The kernels for a few rows and
 * for many sum in different orders (ops.h, gm_op_rows); a role fixes them
 * for its rows, so that a sequence's results do not depend on what else is
 * in the step (a server's promise that a request gets what it would get
 * alone, to the bit, in either matmul mode):
 *   GM_FWD_ANY     no role: the fastest kernels for the step's size, each
 *                  row within float rounding of what gm_forward_eval gives;
 *   GM_FWD_PROMPT  prompt tokens: the block kernels, whatever their number,
 *                  the same bits whatever else is in the step and however
 *                  the prompt is split into steps;
 *   GM_FWD_DECODE  generated tokens: the dot-product kernels, the bits
 *                  gm_forward_eval gives for one token, whatever else is
 *                  in the step.
 * A step with roles runs each role's rows in their own passes (the weights
 * read once per role present), and the logits of every sequence by dot
 * products.
 */
enum gm_forward_role {
	GM_FWD_ANY,
	GM_FWD_PROMPT,
	GM_FWD_DECODE
};

/*
 * gm_forward_eval (logits of the last token, or NULL) with a role for the
 * tokens: what gm_generate evaluates its prompt and generated tokens with,
 * so that a generation gets the bits a server request gets (below).
 */
int gm_forward_eval_as(gm_forward *f, const int32_t *ids, int n, float *logits, enum gm_forward_role role,
		       gm_error *err);

typedef struct gm_forward_seq {
	int seq;               /* a gm_kv sequence */
	const int32_t *ids;    /* tokens appended at positions len .. len + n - 1 */
	int n;                 /* >= 1 (a decode step: 1; a prompt chunk: more) */
	int adapters;          /* adapter set id, 0: the base model */
	float *logits;         /* [vocab] logits of the last of the n tokens, or NULL */
	enum gm_forward_role role; /* zero: GM_FWD_ANY */
} gm_forward_seq;

/*
 * Evaluates all sequences' tokens in one pass: every weight matrix is read once for all
 * sum(n) tokens (in passes of up to 512 tokens when there are more); attention of each token
 * reads its own sequence's blocks.  Each sequence's results equal what gm_forward_eval would
 * give for it alone (greedy-identical; logits within float rounding of the single-sequence
 * path, bit-identical where both run the same kernel: see docs/design-notes.md), and, with
 * roles, the same bits whatever else is in the step (above).  A sequence may appear at most
 * once per call.  GM_ENOMEM with nothing evaluated when the pool has too
 * few free blocks (the caller checks gm_kv_blocks_needed first); GM_EINVAL for an unknown seq /
 * adapter set / id out of range / role, a repeated sequence, or a pool made for another model.
 * The pool kv is used only during the call.
 */
int gm_forward_eval_batch(gm_forward *f, gm_kv *kv, const gm_forward_seq *seqs, int n_seqs, gm_error *err);

#endif
