/*
 * config.h - a model's config.json and generation_config.json.
 *
 * Both spellings of released checkpoints are read: "rope_theta" at top
 * level or inside "rope_parameters" (transformers >= 5), "torch_dtype" or
 * "dtype".  Architectures other than the supported ones are rejected with
 * a message naming the "architectures" value.
 */
#ifndef GM_CONFIG_H
#define GM_CONFIG_H

#include <stdint.h>
#include <json-c/json.h>

#include "formats/dtype.h"
#include "formats/gguf.h"
#include "base/error.h"

enum gm_arch {
	GM_ARCH_QWEN3,  /* Qwen3ForCausalLM: q/k RMSNorm, no biases */
	GM_ARCH_QWEN2,  /* Qwen2ForCausalLM (Qwen2, Qwen2.5): q/k/v biases, no q/k norm */
	GM_ARCH_LLAMA   /* LlamaForCausalLM: no q/k norm, optional llama3 rope scaling */
};

enum gm_rope_scaling {
	GM_ROPE_NONE,
	GM_ROPE_LLAMA3
};

#define GM_MAX_EOS 8

typedef struct gm_model_config {
	enum gm_arch arch;
	char architecture[64];      /* as spelled in config.json, e.g. "Qwen3ForCausalLM" */
	char model_type[32];        /* e.g. "qwen3" */
	int64_t vocab_size;
	int64_t hidden_size;
	int64_t intermediate_size;
	int64_t num_hidden_layers;
	int64_t num_attention_heads;
	int64_t num_key_value_heads;
	int64_t head_dim;           /* from config; hidden_size / heads only when absent */
	int64_t max_position_embeddings;
	double rms_norm_eps;
	double rope_theta;
	enum gm_rope_scaling rope_scaling;
	double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
	int64_t rope_original_max_position_embeddings;
	int tie_word_embeddings;
	int attention_bias;         /* q/k/v projections have biases */
	int qk_norm;                /* q_norm / k_norm weights exist */
	enum gm_dtype dtype;        /* torch_dtype / dtype; BF16 when absent */
	int64_t bos_token_id;       /* -1 when none */
	int n_eos;
	int64_t eos_token_ids[GM_MAX_EOS];
} gm_model_config;

typedef struct gm_generation_config {
	int n_eos;
	int64_t eos_token_ids[GM_MAX_EOS];
	int64_t bos_token_id;       /* -1 when none */
	int64_t pad_token_id;       /* -1 when none */
	int do_sample;
	double temperature;         /* 1.0 when absent */
	double top_p;               /* 1.0 */
	int64_t top_k;              /* 50 when absent (transformers' default); 0 or null = off */
	double min_p;               /* 0.0 */
	double repetition_penalty;  /* 1.0 */
	int64_t max_new_tokens;     /* -1 when absent */
} gm_generation_config;

/* Parses a config.json object; what names it in errors. */
int gm_model_config_parse(json_object *obj, const char *what, gm_model_config *cfg, gm_error *err);
/* Reads DIR/config.json (or a path to a .json file). */
int gm_model_config_load(const char *path, gm_model_config *cfg, gm_error *err);
/* Serializes cfg in the released Qwen3 spelling (for synth); the caller puts the object. */
json_object *gm_model_config_to_json(const gm_model_config *cfg);

/* Defaults, then generation_config.json when it exists (eos ids fall back to config.json's). */
void gm_generation_config_defaults(gm_generation_config *gen, const gm_model_config *cfg);
int gm_generation_config_parse(json_object *obj, const char *what, gm_generation_config *gen, gm_error *err);
/* Reads DIR/generation_config.json; a missing file keeps the defaults. */
int gm_generation_config_load(const char *dir, const gm_model_config *cfg, gm_generation_config *gen,
			      gm_error *err);

/*
 * The same from a GGUF file's metadata (llama.cpp's keys: {arch}.block_count,
 * {arch}.embedding_length, ...; tied embeddings when output.weight is absent;
 * Llama 3 rope scaling recovered from rope_freqs.weight; the end-of-generation
 * ids llama.cpp stops at).  Generation defaults from general.sampling.*
 * when present (then do_sample), else the transformers defaults.
 */
int gm_model_config_from_gguf(const gm_gguf *g, gm_model_config *cfg, gm_error *err);
int gm_generation_config_from_gguf(const gm_gguf *g, const gm_model_config *cfg, gm_generation_config *gen,
				   gm_error *err);

const char *gm_arch_name(enum gm_arch arch);
/* Parameter count implied by the config (embeddings counted once when tied). */
uint64_t gm_model_config_param_count(const gm_model_config *cfg);

#endif
