/*
 * kv.h - paged key/value memory shared by many sequences.
 *
 * The attention keys and values of every sequence a forward pass serves
 * live in one pool of fixed-size blocks.  A block holds, for every layer,
 * the K and V rows of GM_KV_BLOCK consecutive positions of one sequence;
 * a sequence is a list of blocks (its block table), so its memory grows a
 * block at a time and a pool of N blocks serves any mix of sequences whose
 * lengths add up to about N * GM_KV_BLOCK tokens.
 *
 * Blocks are reference counted: gm_kv_seq_fork makes a sequence that
 * shares the full blocks of another one's prefix (a system prompt computed
 * once, read by many requests).  A shared block is never written again:
 * when a sequence must append into a block it shares (after a truncation
 * into it), the block is copied first (copy on write), which takes one
 * block from the free list; gm_kv_blocks_needed counts it.
 *
 * Element type: K and V are stored in 16 bits for 16-bit models (as
 * transformers keeps its cache in the model's dtype), f32 for f32 models,
 * unless the caller chooses (GM_KV_F32 for the exact path on a bf16
 * model).  Memory per token: gm_kv_bytes_per_token, layers * 2 * kv_heads *
 * head_dim * (2 or 4) bytes; Qwen3-0.6B: 28 * 2 * 8 * 128 * 2 = 112 KiB in
 * bf16, 224 KiB in f32.
 *
 * A gm_kv is used by one thread at a time (the forward pass that evaluates
 * into it, or its caller between evaluations).
 */
#ifndef GM_KV_H
#define GM_KV_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "formats/model.h"

/* Token slots per block: every layer's K and V rows for GM_KV_BLOCK consecutive positions of
 * one sequence live in one block. */
#define GM_KV_BLOCK 16

enum gm_kv_type { GM_KV_AUTO, GM_KV_F32, GM_KV_BF16, GM_KV_F16 };
/* AUTO: BF16 for a bf16 model, F16 for an f16 model, F32 for an f32 model. */

typedef struct gm_kv gm_kv;

/* Added to the agreed API (api-spec.md): AUTO resolved for model m (its projection weights' dtype);
 * other types unchanged. */
enum gm_kv_type gm_kv_type_resolve(const gm_model *m, enum gm_kv_type t);
/* Added: "auto", "f32", "bf16", "f16" (GM_EINVAL naming the value otherwise), and back. */
int gm_kv_type_parse(const char *s, enum gm_kv_type *out, gm_error *err);
const char *gm_kv_type_name(enum gm_kv_type t);

/* Bytes of KV memory per token of context (all layers, K and V) for type t (AUTO resolved). */
size_t gm_kv_bytes_per_token(const gm_model *m, enum gm_kv_type t);
/* A pool of ceil(max_tokens / GM_KV_BLOCK) blocks; the memory is reserved up front (calloc or
 * mmap, pages touched as used).  The model is borrowed. */
int gm_kv_new(const gm_model *m, enum gm_kv_type t, int64_t max_tokens, gm_kv **out, gm_error *err);
void gm_kv_free(gm_kv *kv);
enum gm_kv_type gm_kv_type_of(const gm_kv *kv);           /* resolved, never AUTO */

/* Sequences: small non-negative ids, reused after gm_kv_seq_free. */
int gm_kv_seq_new(gm_kv *kv, int *seq, gm_error *err);     /* empty sequence */
/* A new sequence whose first n positions (n <= len(src)) are src's: full blocks are shared
 * (reference counted, never written again), a partial last block is copied (GM_ENOMEM, nothing
 * changed, when no block is free for it). */
int gm_kv_seq_fork(gm_kv *kv, int src, int n, int *seq, gm_error *err);
void gm_kv_seq_free(gm_kv *kv, int seq);                    /* releases its block references */
int gm_kv_seq_len(const gm_kv *kv, int seq);                /* positions held; -1: no such sequence */
void gm_kv_seq_truncate(gm_kv *kv, int seq, int n);         /* forget positions >= n */
int64_t gm_kv_free_blocks(const gm_kv *kv);                 /* blocks no sequence references */
int64_t gm_kv_n_blocks(const gm_kv *kv);
/* Blocks that appending n tokens to seq would take from the free list (a shared partial last
 * block copied on write counts as one). */
int64_t gm_kv_blocks_needed(const gm_kv *kv, int seq, int n);

/* Added to the agreed API (api-spec.md): whether seq is a live sequence of kv. */
int gm_kv_seq_valid(const gm_kv *kv, int seq);

#endif
