/*
 * quant.h - the ggml block-quantized formats: dequantization, reference
 * quantizers and the activation formats of the integer dot products.
 *
 * A row of n elements of a block type t is n / elems blocks of bytes
 * bytes (gm_dtype_block); blocks are little-endian byte images of ggml's
 * block_* structs (ggml-common.h; docs/design-notes.md, "Quantized
 * formats", gives each layout).  Supported: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
 * (32-element blocks), Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (256-element super-
 * blocks) as weights, and Q8_K, the activation format of the K-quant dot
 * products.  Q8_1 is a block type of dtype.h but not handled here.
 *
 * Dequantization follows each format's definition bit for bit: every
 * value is computed with the operations and the rounding of the
 * definition (f16 scales widened exactly, products and differences of
 * floats rounded one at a time, no fused multiply-add), so the floats are
 * the ones ggml's reference dequantizers give.
 *
 * The quantizers are reference ones for writing model files: the
 * 32-element types round as ggml's *_ref functions do (same bytes), the
 * K-quants search their scales (and mins) the way ggml's reference
 * quantizers without an importance matrix do, so the quality is the same.
 */
#ifndef GM_QUANT_H
#define GM_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "formats/dtype.h"

/* 1 for the types above (Q8_K included). */
int gm_quant_supported(enum gm_dtype t);
/* Bytes of a row of n elements (n a multiple of the block; 0 otherwise or for an unsupported type). */
size_t gm_quant_row_bytes(enum gm_dtype t, int64_t n);
/* dst[0 .. n) = the n values of the blocks at src (n a multiple of the block). */
void gm_quant_dequantize(enum gm_dtype t, const void *src, float *dst, int64_t n);
/* The blocks of src[0 .. n) in dst (gm_quant_row_bytes(t, n) bytes). */
void gm_quant_quantize(enum gm_dtype t, const float *src, void *dst, int64_t n);

/* f32 round to nearest, ties to even (|x| < 2^22), the rounding of the K-quant search. */
int gm_quant_nearest_int(float x);

#endif
