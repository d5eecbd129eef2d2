/*
 * dtype.h - element types of the safetensors format and conversions.
 *
 * Names are the safetensors spellings ("BF16", "F32", ...).  Sub-byte
 * types (F4, F6_*) have a size in bits that is not a multiple of 8; use
 * gm_dtype_bits and gm_dtype_nbytes, never assume one byte per element.
 *
 * The block-quantized types of GGUF (ggml's Q4_0 ... Q6_K, and Q8_K, the
 * activation type of the K-quant dot products) follow the safetensors
 * ones: they are never a safetensors dtype (gm_dtype_from_name refuses
 * them) and have no per-element size: gm_dtype_bits is 0 for them, and
 * gm_dtype_block gives their block (elements, bytes).  A row of such a
 * tensor is a whole number of blocks.
 */
#ifndef GM_DTYPE_H
#define GM_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

enum gm_dtype {
	GM_DTYPE_BOOL,
	GM_DTYPE_U8,
	GM_DTYPE_I8,
	GM_DTYPE_F8_E5M2,
	GM_DTYPE_F8_E4M3,
	GM_DTYPE_F8_E8M0,
	GM_DTYPE_I16,
	GM_DTYPE_U16,
	GM_DTYPE_F16,
	GM_DTYPE_BF16,
	GM_DTYPE_I32,
	GM_DTYPE_U32,
	GM_DTYPE_F32,
	GM_DTYPE_F64,
	GM_DTYPE_I64,
	GM_DTYPE_U64,
	GM_DTYPE_C64,
	GM_DTYPE_F4,
	GM_DTYPE_F6_E2M3,
	GM_DTYPE_F6_E3M2,
	/* ggml block types (formats/quant.h has their layouts and kernels) */
	GM_DTYPE_Q4_0,
	GM_DTYPE_Q4_1,
	GM_DTYPE_Q5_0,
	GM_DTYPE_Q5_1,
	GM_DTYPE_Q8_0,
	GM_DTYPE_Q8_1,
	GM_DTYPE_Q2_K,
	GM_DTYPE_Q3_K,
	GM_DTYPE_Q4_K,
	GM_DTYPE_Q5_K,
	GM_DTYPE_Q6_K,
	GM_DTYPE_Q8_K,
	GM_DTYPE_COUNT
};

const char *gm_dtype_name(enum gm_dtype t);
/* Parses a safetensors dtype name; GM_EFORMAT naming the bad value. */
int gm_dtype_from_name(const char *name, enum gm_dtype *out, gm_error *err);
/* Parses the spellings users and config.json use: "bf16", "bfloat16", "float32", "f16"... */
int gm_dtype_from_user(const char *name, enum gm_dtype *out, gm_error *err);
/* The torch spelling used in config.json ("bfloat16", "float16", "float32"). */
const char *gm_dtype_torch_name(enum gm_dtype t);
/* Bits per element; 0 for block types (and invalid values). */
unsigned gm_dtype_bits(enum gm_dtype t);
/* 1 for the ggml block types; their block: *elems elements in *bytes bytes. */
int gm_dtype_is_block(enum gm_dtype t);
void gm_dtype_block(enum gm_dtype t, unsigned *elems, unsigned *bytes);
/*
 * Describes a mix of dtypes for summaries: numel[t] elements of each type t,
 * the types present joined by '+', most elements first, lower case
 * ("bf16", "bf16+f32"; "none" when all are zero).  Truncates to fit n.
 */
void gm_dtype_mix_name(const uint64_t numel[GM_DTYPE_COUNT], char *out, size_t n);
/* Bytes for n elements; GM_EFORMAT when n elements do not fill whole bytes
 * (sub-byte types) or whole blocks (block types), or the size overflows. */
int gm_dtype_nbytes(enum gm_dtype t, uint64_t n, uint64_t *out, gm_error *err);

/* Scalar conversions: round to nearest even, NaN stays NaN, overflow to inf. */
float gm_bf16_to_f32(uint16_t h);
uint16_t gm_f32_to_bf16(float f);
float gm_f16_to_f32(uint16_t h);
uint16_t gm_f32_to_f16(float f);

/* Converts n elements of a float type (F32, F16, BF16, F64) to f32. */
int gm_dtype_to_f32(enum gm_dtype t, const void *src, float *dst, size_t n, gm_error *err);
/* Converts n f32 values to F32, F16 or BF16 storage. */
int gm_dtype_from_f32(enum gm_dtype t, const float *src, void *dst, size_t n, gm_error *err);

#endif
