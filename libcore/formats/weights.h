/*
 * weights.h - a model's tensors, from one safetensors file or a sharded
 * checkpoint.
 *
 * A directory holding model.safetensors.index.json is opened shard by shard
 * following its "weight_map" (tensor -> file); otherwise model.safetensors
 * is used.  Every tensor named in the index must exist in the shard it
 * names; shard file names must be plain names inside the directory (no '/',
 * no "..").  Tensor views stay valid until gm_weights_close.
 *
 * A path to a GGUF file (see gm_gguf_is_file) is opened as one file whose
 * tensors are renamed to transformers' names (token_embd.weight ->
 * model.embed_tokens.weight, blk.N.attn_q.weight ->
 * model.layers.N.self_attn.q_proj.weight, ...), their shapes row-major;
 * Llama's q/k rows are put back in transformers' order (llama.cpp's
 * converter permutes them), rope_freqs.weight is left to the config.
 */
#ifndef GM_WEIGHTS_H
#define GM_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"

typedef struct gm_weights gm_weights;

/*
 * How the weights are held in memory (see gm_st_open_mode):
 *   GM_WEIGHTS_MMAP      the files are mapped (4 KiB pages of the page cache);
 *   GM_WEIGHTS_RESIDENT  copied into 2 MiB-aligned anonymous memory advised
 *                        MADV_HUGEPAGE: about 0.3 s per GB more at open and
 *                        the model's size in private memory, for decode at
 *                        the memory-bandwidth limit (a token streams every
 *                        weight; 4 KiB pages cost a TLB miss every 4 KiB);
 *   GM_WEIGHTS_AUTO      the environment variable GM_WEIGHTS=mmap|resident
 *                        when set, else resident when transparent huge pages
 *                        are enabled (madvise or always) and the files take
 *                        at most half of the available memory, else mmap.
 * Either way the tensors hold the same bytes and stay valid until
 * gm_weights_close.
 */
enum gm_weights_mode {
	GM_WEIGHTS_AUTO,
	GM_WEIGHTS_MMAP,
	GM_WEIGHTS_RESIDENT
};

int gm_weights_open(const char *dir, gm_weights **out, gm_error *err); /* GM_WEIGHTS_AUTO */
int gm_weights_open_mode(const char *dir, enum gm_weights_mode mode, gm_weights **out, gm_error *err);
/* The number of files held resident (GM_WEIGHTS_RESIDENT took effect for them). */
size_t gm_weights_resident_count(const gm_weights *w);
void gm_weights_close(gm_weights *w);

size_t gm_weights_count(const gm_weights *w);
/* Tensors sorted by name (stable across sharding). */
const gm_tensor *gm_weights_tensor(const gm_weights *w, size_t i);
/* The tensors' dtypes for summaries ("bf16", "bf16+f32"; see gm_dtype_mix_name). */
void gm_weights_dtype_mix(const gm_weights *w, char *out, size_t n);
const gm_tensor *gm_weights_find(const gm_weights *w, const char *name);
/* Number of files and the file holding tensor i (for listing). */
size_t gm_weights_file_count(const gm_weights *w);
const char *gm_weights_file_path(const gm_weights *w, size_t i);
const char *gm_weights_tensor_file(const gm_weights *w, size_t i);
/* The GGUF file the weights come from, or NULL (safetensors). */
/*
 * Llama's q/k projection rows (or biases) between transformers' order and
 * the one llama.cpp's converter writes to GGUF (rotate-half pairs
 * interleaved within each head): src and dst are [rows] rows of row_bytes
 * each (any tensor type: whole rows move), rows = n_heads * head_dim.
 * to_gguf 1: transformers -> GGUF (what the converter does), 0: the exact
 * inverse.  dst and src must not overlap.  GM_EFORMAT, naming what, when
 * rows is not a whole number of heads of even size.
 */
int gm_weights_llama_permute(void *dst, const void *src, int64_t rows, uint64_t row_bytes, int64_t n_heads,
			     int to_gguf, const char *what, gm_error *err);
const gm_gguf *gm_weights_gguf(const gm_weights *w);
/* Sum of all tensors' data bytes. */
uint64_t gm_weights_total_bytes(const gm_weights *w);

#endif
