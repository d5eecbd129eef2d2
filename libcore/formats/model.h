/*
 * model.h - binding a model's tensors to its architecture.
 *
 * gm_model_open reads config.json and the weights of a Hugging Face-layout
 * directory and checks that every tensor the architecture needs is present
 * with the right shape and a float dtype (F32, F16, BF16), and that no
 * unexpected tensor is left over.  dir may also be a GGUF file: the config
 * then comes from its metadata (gm_model_config_from_gguf), the weights
 * under transformers' names (gm_weights_open_mode), and matrices may be
 * block-quantized (Q8_0, Q4_K...).  The forward pass (a later module) uses
 * the views kept here; nothing is copied.
 */
#ifndef GM_MODEL_H
#define GM_MODEL_H

#include "formats/config.h"
#include "base/error.h"
#include "formats/weights.h"

typedef struct gm_layer_weights {
	const gm_tensor *input_norm;      /* [hidden] */
	const gm_tensor *post_attn_norm;  /* [hidden] */
	const gm_tensor *q_proj;          /* [heads*head_dim, hidden] */
	const gm_tensor *k_proj;          /* [kv_heads*head_dim, hidden] */
	const gm_tensor *v_proj;          /* [kv_heads*head_dim, hidden] */
	const gm_tensor *o_proj;          /* [hidden, heads*head_dim] */
	const gm_tensor *q_bias, *k_bias, *v_bias; /* Qwen2 only, else NULL */
	const gm_tensor *q_norm;          /* [head_dim], Qwen3 only */
	const gm_tensor *k_norm;          /* [head_dim], Qwen3 only */
	const gm_tensor *gate_proj;       /* [intermediate, hidden] */
	const gm_tensor *up_proj;         /* [intermediate, hidden] */
	const gm_tensor *down_proj;       /* [hidden, intermediate] */
} gm_layer_weights;

typedef struct gm_model {
	char *dir;
	gm_model_config config;
	gm_generation_config generation;
	gm_weights *weights;              /* owned */
	const gm_tensor *embed_tokens;    /* [vocab, hidden] */
	const gm_tensor *final_norm;      /* [hidden] */
	const gm_tensor *lm_head;         /* [vocab, hidden]; == embed_tokens when tied */
	gm_layer_weights *layers;         /* [num_hidden_layers], owned */
	uint64_t n_params;                /* elements over all bound tensors */
} gm_model;

int gm_model_open(const char *dir, gm_model **out, gm_error *err); /* weights GM_WEIGHTS_AUTO */
/* The same, holding the weights as mode says (see gm_weights_open_mode). */
int gm_model_open_mode(const char *dir, enum gm_weights_mode mode, gm_model **out, gm_error *err);
void gm_model_close(gm_model *m);

#endif
