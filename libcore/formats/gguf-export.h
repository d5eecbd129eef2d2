/*
 * gguf-export.h - a model directory written as a GGUF file, quantized or
 * not, that llama.cpp loads as it is.
 *
 * The metadata is what contrib/bench/qwen3-gguf.py (and llama.cpp's own
 * converter, for these keys) writes, then what llama-quantize adds
 * (general.file_type, general.quantization_version): hyper-parameters,
 * the byte-level BPE vocabulary of tokenizer.json (tokens padded to the
 * embedding's rows, token types, merges, tokenizer.ggml.pre "qwen2"), the
 * bos/eos/pad ids and add_bos_token of tokenizer_config.json, its chat
 * template.  Tensors in the converter's order, 1-D ones in F32, matrices
 * in the type the file type's mix gives them, as llama-quantize chooses:
 *   BF16, F16, F32, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q6_K: every matrix of
 *     that type, except the output projection (the embeddings when tied),
 *     which is Q6_K unless the type is Q8_0 or a float type;
 *   Q4_K_S, Q5_K_S: Q4_K / Q5_K, output Q6_K; Q4_K_S: attn_v of the first
 *     4 layers and ffn_down of the first 1/8 in Q5_K;
 *   Q4_K_M, Q5_K_M: Q4_K / Q5_K, output Q6_K, and attn_v and ffn_down in
 *     Q6_K in the layers of use_more_bits (the first and last eighth, and
 *     every third layer between).
 * A matrix whose rows are not whole 256-element super-blocks falls back
 * from a K type to Q5_0 (Q4_K), Q5_1 (Q5_K) or Q8_0 (Q6_K), as llama.cpp.
 * Supported: Qwen3 and Qwen2 (their q/k rows are stored as they are).
 */
#ifndef GM_GGUF_EXPORT_H
#define GM_GGUF_EXPORT_H

#include "base/error.h"
#include "base/fs.h"
#include "formats/model.h"

/* 1 when name (any case) is a file type gm_gguf_export writes. */
int gm_gguf_export_type_known(const char *name);
/* The supported file type names, space-separated. */
const char *gm_gguf_export_types(void);
/* Writes m (opened from its directory) as path in file type `type` ("Q4_K_M"...),
 * atomically: under a temporary name (base/fs.h), fsynced, then renamed. */
int gm_gguf_export(const gm_model *m, const char *type, const char *path, gm_error *err);
/* The same into af (gm_atomic_open), which the caller commits or aborts: a
 * command writing several files renames them only when all are written. */
int gm_gguf_export_to(const gm_model *m, const char *type, gm_atomic_file *af, gm_error *err);

#endif
