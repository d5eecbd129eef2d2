/*
 * weights.h - a model's tensors, from one safetensors file or a sharded
 * checkpoint.
 *
 * A directory holding model.safetensors.index.json is opened shard by shard
 * following its "weight_map" (tensor -> file); otherwise model.safetensors
 * is used.  Every tensor named in the index must exist in the shard it
 * names; shard file names must be plain names inside the directory (no '/',
 * no "..").  Tensor views stay valid until gm_weights_close.
 */
#ifndef GM_WEIGHTS_H
#define GM_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "safetensors.h"

typedef struct gm_weights gm_weights;

int gm_weights_open(const char *dir, gm_weights **out, gm_error *err);
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
/* Sum of all tensors' data bytes. */
uint64_t gm_weights_total_bytes(const gm_weights *w);

#endif
