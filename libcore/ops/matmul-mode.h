/*
 * matmul-mode.h - the arithmetic of products with 16-bit weights, shared by
 * the op layer (ops.h: a backend instance's mode) and the CPU kernels
 * (kernels.h: a parameter of each product).
 */
#ifndef GM_MATMUL_MODE_H
#define GM_MATMUL_MODE_H

/*
 * How gm_op_linear multiplies activations by 16-bit (BF16) weights:
 *   GM_MATMUL_PRECISE  in f32 (the weights converted exactly): what the
 *                      1e-4 goldens of transformers in f32 check; training
 *                      always uses it;
 *   GM_MATMUL_FAST     the activations rounded to bf16 (to nearest even)
 *                      and the products summed in f32, as llama.cpp and a
 *                      PyTorch bf16 model compute, for every row (one token
 *                      or many): logits move by about 1e-2 (relative).  As
 *                      in precise mode a row's sums run in another order in
 *                      a call of many rows than in a call of a few, and the
 *                      next layers' bf16 rounding magnifies that f32
 *                      rounding (about 2e-3 of the logits instead of 1e-6):
 *                      where a row must not depend on its neighbours (a
 *                      server's steps) the rows carry a role that fixes
 *                      their kernels (gm_op_rows, gm_forward_role).  The CPU
 *                      backend needs AVX512_BF16 (else precise runs).
 * F32 and F16 weights, adapters and attention are always f32.
 */
enum gm_matmul_mode {
	GM_MATMUL_PRECISE,
	GM_MATMUL_FAST
};

#endif
