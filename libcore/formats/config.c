/* config.c - config.json and generation_config.json (see config.h). */
#include "formats/config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"

#define GM_SUPPORTED_ARCHS "Qwen3ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM"
/* Sizes beyond this would overflow the int arithmetic of the kernels. */
#define GM_CONFIG_MAX_DIM 2147483647LL

static const struct {
	enum gm_arch arch;
	const char *name;       /* "architectures" spelling */
	const char *model_type; /* "model_type" spelling */
} gm_archs[] = {
	{ GM_ARCH_QWEN3, "Qwen3ForCausalLM", "qwen3" },
	{ GM_ARCH_QWEN2, "Qwen2ForCausalLM", "qwen2" },
	{ GM_ARCH_LLAMA, "LlamaForCausalLM", "llama" },
};
#define GM_N_ARCHS (sizeof(gm_archs) / sizeof(gm_archs[0]))

const char *gm_arch_name(enum gm_arch arch)
{
	size_t i;

	for (i = 0; i < GM_N_ARCHS; i++)
		if (gm_archs[i].arch == arch)
			return gm_archs[i].name;
	return "unknown";
}

static const char *arch_model_type(enum gm_arch arch)
{
	size_t i;

	for (i = 0; i < GM_N_ARCHS; i++)
		if (gm_archs[i].arch == arch)
			return gm_archs[i].model_type;
	return "unknown";
}

/* 1 when key is present and not null. */
static int has_key(json_object *obj, const char *key)
{
	json_object *v = NULL;

	return json_object_object_get_ex(obj, key, &v) && v;
}

/* An optional string: *out untouched when absent or null. */
static int opt_string(json_object *obj, const char *key, const char *what, const char **out, gm_error *err)
{
	return has_key(obj, key) ? gm_json_get_string(obj, key, what, out, err) : 0;
}

static void copy_str(char *dst, size_t n, const char *src)
{
	snprintf(dst, n, "%s", src);
}

/* ------------------------------------------------------------ config.json */

static int set_arch(gm_model_config *cfg, size_t i)
{
	cfg->arch = gm_archs[i].arch;
	copy_str(cfg->architecture, sizeof(cfg->architecture), gm_archs[i].name);
	return 0;
}

/* The first "architectures" entry, or the model_type when there is none. */
static int parse_arch(json_object *obj, const char *what, gm_model_config *cfg, gm_error *err)
{
	json_object *archs = NULL, *first;
	const char *model_type = NULL, *name;
	size_t i;
	int ret;

	if ((ret = opt_string(obj, "model_type", what, &model_type, err)))
		return ret;
	if (model_type)
		copy_str(cfg->model_type, sizeof(cfg->model_type), model_type);

	if (json_object_object_get_ex(obj, "architectures", &archs) && archs) {
		if (!json_object_is_type(archs, json_type_array))
			return gm_error_set(err, GM_EFORMAT, "%s: 'architectures' must be an array, not %s",
					    what, json_type_to_name(json_object_get_type(archs)));
		if (json_object_array_length(archs) > 0) {
			first = json_object_array_get_idx(archs, 0);
			if (!json_object_is_type(first, json_type_string))
				return gm_error_set(err, GM_EFORMAT,
						    "%s: 'architectures' must hold strings, not %s", what,
						    json_type_to_name(json_object_get_type(first)));
			name = json_object_get_string(first);
			for (i = 0; i < GM_N_ARCHS; i++)
				if (!strcmp(name, gm_archs[i].name))
					break;
			if (i == GM_N_ARCHS)
				return gm_error_set(err, GM_EUNSUPPORTED,
						    "%s: architecture '%s' is not supported (supported: %s)",
						    what, name, GM_SUPPORTED_ARCHS);
			set_arch(cfg, i);
			if (!model_type)
				copy_str(cfg->model_type, sizeof(cfg->model_type), gm_archs[i].model_type);
			return 0;
		}
	}

	if (!model_type)
		return gm_error_set(err, GM_EFORMAT,
				    "%s: missing 'architectures' (and no 'model_type'); cannot tell the "
				    "architecture (supported: %s)", what, GM_SUPPORTED_ARCHS);
	for (i = 0; i < GM_N_ARCHS; i++)
		if (!strcmp(model_type, gm_archs[i].model_type))
			return set_arch(cfg, i);
	return gm_error_set(err, GM_EUNSUPPORTED,
			    "%s: no 'architectures' and model_type '%s' is not supported "
			    "(supported: qwen3, qwen2, llama)", what, model_type);
}

static int get_size(json_object *obj, const char *key, const char *what, int64_t *out, gm_error *err)
{
	int ret = gm_json_get_int64(obj, key, what, out, err);

	if (ret)
		return ret;
	if (*out <= 0 || *out > GM_CONFIG_MAX_DIM)
		return gm_error_set(err, GM_EFORMAT, "%s: '%s' must be a positive integer below 2^31, not %lld",
				    what, key, (long long)*out);
	return 0;
}

static int opt_size(json_object *obj, const char *key, const char *what, int64_t *out, gm_error *err)
{
	return has_key(obj, key) ? get_size(obj, key, what, out, err) : 0;
}

static int opt_positive_double(json_object *obj, const char *key, const char *what, double *out,
			       gm_error *err)
{
	int ret = gm_json_opt_double(obj, key, what, out, err);

	if (ret)
		return ret;
	if (!(*out > 0) || !isfinite(*out))
		return gm_error_set(err, GM_EFORMAT, "%s: '%s' must be a positive number, not %g", what,
				    key, *out);
	return 0;
}

/* An int, a list of ints or null: the token ids (at most GM_MAX_EOS). */
static int parse_token_ids(json_object *obj, const char *key, const char *what, int64_t *ids, int *n,
			   gm_error *err)
{
	json_object *v, *item;
	size_t i, len;

	if (!json_object_object_get_ex(obj, key, &v) || !v)
		return 0;
	if (json_object_is_type(v, json_type_array)) {
		len = json_object_array_length(v);
		if (len > GM_MAX_EOS)
			return gm_error_set(err, GM_EUNSUPPORTED, "%s: '%s' lists %zu ids; at most %d are supported",
					    what, key, len, GM_MAX_EOS);
		for (i = 0; i < len; i++) {
			item = json_object_array_get_idx(v, i);
			if (!gm_json_is_integer(item) || json_object_get_int64(item) < 0)
				return gm_error_set(err, GM_EFORMAT,
						    "%s: '%s' must be a token id or a list of token ids "
						    "(item %zu is not a non-negative integer)", what, key, i);
			ids[i] = json_object_get_int64(item);
		}
		*n = (int)len;
		return 0;
	}
	if (!gm_json_is_integer(v) || json_object_get_int64(v) < 0)
		return gm_error_set(err, GM_EFORMAT,
				    "%s: '%s' must be a token id or a list of token ids, not %s", what, key,
				    json_type_to_name(json_object_get_type(v)));
	ids[0] = json_object_get_int64(v);
	*n = 1;
	return 0;
}

/* A single token id, null or absent (-1). */
static int parse_token_id(json_object *obj, const char *key, const char *what, int64_t *out, gm_error *err)
{
	int ret = gm_json_opt_int64(obj, key, what, out, err);

	if (ret)
		return ret;
	if (*out < -1)
		return gm_error_set(err, GM_EFORMAT, "%s: '%s' must be a token id, not %lld", what, key,
				    (long long)*out);
	return 0;
}

static int parse_dtype(json_object *obj, const char *what, gm_model_config *cfg, gm_error *err)
{
	const char *key = has_key(obj, "torch_dtype") ? "torch_dtype" : "dtype", *name = NULL;
	int ret = opt_string(obj, key, what, &name, err);

	cfg->dtype = GM_DTYPE_BF16;
	if (ret || !name)
		return ret;
	if (gm_dtype_from_user(name, &cfg->dtype, err) ||
	    (cfg->dtype != GM_DTYPE_F32 && cfg->dtype != GM_DTYPE_F16 && cfg->dtype != GM_DTYPE_BF16))
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: '%s' is '%s'; supported: float32, float16, bfloat16", what, key, name);
	return 0;
}

/* Llama 3 frequency scaling; "default" (or none) means plain RoPE. */
static int parse_rope_scaling(json_object *rs, const char *what, const char *key, gm_model_config *cfg,
			      gm_error *err)
{
	const char *type = NULL;
	char sub[128];
	int ret;

	snprintf(sub, sizeof(sub), "%s: '%s'", what, key);
	if ((ret = opt_string(rs, has_key(rs, "rope_type") ? "rope_type" : "type", sub, &type, err)))
		return ret;
	if (!type)
		return gm_error_set(err, GM_EFORMAT, "%s has no 'rope_type'", sub);
	if (!strcmp(type, "default"))
		return 0;
	if (strcmp(type, "llama3"))
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: rope type '%s' is not supported (supported: default, llama3)", sub, type);
	cfg->rope_scaling = GM_ROPE_LLAMA3;
	if ((ret = gm_json_get_double(rs, "factor", sub, &cfg->rope_factor, err)) ||
	    (ret = gm_json_get_double(rs, "low_freq_factor", sub, &cfg->rope_low_freq_factor, err)) ||
	    (ret = gm_json_get_double(rs, "high_freq_factor", sub, &cfg->rope_high_freq_factor, err)) ||
	    (ret = get_size(rs, "original_max_position_embeddings", sub,
			    &cfg->rope_original_max_position_embeddings, err)))
		return ret;
	/* json-c reads 1e999 as inf: the factors divide the rotary frequencies */
	if (!(cfg->rope_factor > 0) || !(cfg->rope_low_freq_factor > 0) ||
	    !(cfg->rope_high_freq_factor > cfg->rope_low_freq_factor) || !isfinite(cfg->rope_factor) ||
	    !isfinite(cfg->rope_high_freq_factor))
		return gm_error_set(err, GM_EFORMAT,
				    "%s: llama3 scaling needs finite factors, factor > 0 and high_freq_factor > "
				    "low_freq_factor > 0", sub);
	return 0;
}

/* rope_theta at top level or in rope_parameters; scaling in rope_scaling or rope_parameters. */
static int parse_rope(json_object *obj, const char *what, gm_model_config *cfg, gm_error *err)
{
	json_object *params = NULL, *scaling = NULL;
	char sub[128];
	int ret;

	cfg->rope_theta = 10000.0;
	cfg->rope_scaling = GM_ROPE_NONE;
	cfg->rope_factor = 1.0;
	cfg->rope_low_freq_factor = 0.0;
	cfg->rope_high_freq_factor = 0.0;
	cfg->rope_original_max_position_embeddings = 0;

	json_object_object_get_ex(obj, "rope_parameters", &params);
	if (params && !json_object_is_type(params, json_type_object))
		return gm_error_set(err, GM_EFORMAT, "%s: 'rope_parameters' must be an object, not %s", what,
				    json_type_to_name(json_object_get_type(params)));
	json_object_object_get_ex(obj, "rope_scaling", &scaling);
	if (scaling && !json_object_is_type(scaling, json_type_object))
		return gm_error_set(err, GM_EFORMAT, "%s: 'rope_scaling' must be an object or null, not %s",
				    what, json_type_to_name(json_object_get_type(scaling)));

	if ((ret = opt_positive_double(obj, "rope_theta", what, &cfg->rope_theta, err)))
		return ret;
	if (params) {
		snprintf(sub, sizeof(sub), "%s: 'rope_parameters'", what);
		if ((ret = opt_positive_double(params, "rope_theta", sub, &cfg->rope_theta, err)))
			return ret;
	}
	if (scaling)
		return parse_rope_scaling(scaling, what, "rope_scaling", cfg, err);
	if (params && (has_key(params, "rope_type") || has_key(params, "type")))
		return parse_rope_scaling(params, what, "rope_parameters", cfg, err);
	return 0;
}

/* Features of transformers' implementations that we do not implement. */
static int check_unsupported(json_object *obj, const char *what, gm_model_config *cfg, gm_error *err)
{
	const char *act = NULL;
	int flag = 0, ret;

	if ((ret = opt_string(obj, "hidden_act", what, &act, err)))
		return ret;
	if (act && strcmp(act, "silu"))
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: hidden_act '%s' is not supported (supported: silu)",
				    what, act);
	flag = 0;
	if ((ret = gm_json_opt_bool(obj, "use_sliding_window", what, &flag, err)))
		return ret;
	if (flag)
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: use_sliding_window true is not supported", what);
	flag = 0;
	if ((ret = gm_json_opt_bool(obj, "mlp_bias", what, &flag, err)))
		return ret;
	if (flag)
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: mlp_bias true is not supported", what);
	flag = 0;
	if ((ret = gm_json_opt_bool(obj, "attention_bias", what, &flag, err)))
		return ret;
	if (cfg->arch == GM_ARCH_QWEN2) {
		cfg->attention_bias = 1; /* Qwen2 always has q/k/v biases, whatever the key says */
	} else if (flag) {
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: attention_bias true is not supported for %s (o_proj bias)", what,
				    cfg->architecture);
	}
	return 0;
}

static int parse_sizes(json_object *obj, const char *what, gm_model_config *cfg, gm_error *err)
{
	int ret;

	if ((ret = get_size(obj, "vocab_size", what, &cfg->vocab_size, err)) ||
	    (ret = get_size(obj, "hidden_size", what, &cfg->hidden_size, err)) ||
	    (ret = get_size(obj, "intermediate_size", what, &cfg->intermediate_size, err)) ||
	    (ret = get_size(obj, "num_hidden_layers", what, &cfg->num_hidden_layers, err)) ||
	    (ret = get_size(obj, "num_attention_heads", what, &cfg->num_attention_heads, err)) ||
	    (ret = get_size(obj, "max_position_embeddings", what, &cfg->max_position_embeddings, err)))
		return ret;
	cfg->num_key_value_heads = cfg->num_attention_heads;
	if ((ret = opt_size(obj, "num_key_value_heads", what, &cfg->num_key_value_heads, err)))
		return ret;
	if (cfg->num_attention_heads % cfg->num_key_value_heads)
		return gm_error_set(err, GM_EFORMAT,
				    "%s: num_attention_heads (%lld) must be a multiple of num_key_value_heads (%lld)",
				    what, (long long)cfg->num_attention_heads, (long long)cfg->num_key_value_heads);
	cfg->head_dim = 0;
	if ((ret = opt_size(obj, "head_dim", what, &cfg->head_dim, err)))
		return ret;
	if (!cfg->head_dim) {
		if (cfg->hidden_size % cfg->num_attention_heads)
			return gm_error_set(err, GM_EFORMAT,
					    "%s: no 'head_dim', and hidden_size (%lld) is not a multiple of "
					    "num_attention_heads (%lld)", what, (long long)cfg->hidden_size,
					    (long long)cfg->num_attention_heads);
		cfg->head_dim = cfg->hidden_size / cfg->num_attention_heads;
	}
	if (cfg->head_dim % 2)
		return gm_error_set(err, GM_EFORMAT, "%s: head_dim (%lld) must be even for rotary embeddings",
				    what, (long long)cfg->head_dim);
	if (cfg->num_attention_heads * cfg->head_dim > GM_CONFIG_MAX_DIM)
		return gm_error_set(err, GM_EFORMAT, "%s: num_attention_heads x head_dim is too large", what);
	return 0;
}

int gm_model_config_parse(json_object *obj, const char *what, gm_model_config *cfg, gm_error *err)
{
	int ret;

	memset(cfg, 0, sizeof(*cfg));
	if (!obj || !json_object_is_type(obj, json_type_object))
		return gm_error_set(err, GM_EFORMAT, "%s: must be a JSON object", what);
	if ((ret = parse_arch(obj, what, cfg, err)) ||
	    (ret = parse_sizes(obj, what, cfg, err)) ||
	    (ret = check_unsupported(obj, what, cfg, err)) ||
	    (ret = parse_rope(obj, what, cfg, err)) ||
	    (ret = parse_dtype(obj, what, cfg, err)))
		return ret;
	cfg->qk_norm = cfg->arch == GM_ARCH_QWEN3;
	cfg->rms_norm_eps = 1e-6;
	if ((ret = opt_positive_double(obj, "rms_norm_eps", what, &cfg->rms_norm_eps, err)) ||
	    (ret = gm_json_opt_bool(obj, "tie_word_embeddings", what, &cfg->tie_word_embeddings, err)))
		return ret;
	cfg->bos_token_id = -1;
	if ((ret = parse_token_id(obj, "bos_token_id", what, &cfg->bos_token_id, err)) ||
	    (ret = parse_token_ids(obj, "eos_token_id", what, cfg->eos_token_ids, &cfg->n_eos, err)))
		return ret;
	return 0;
}

int gm_model_config_load(const char *path, gm_model_config *cfg, gm_error *err)
{
	char *file = gm_is_dir(path) ? gm_path_join(path, "config.json") : gm_xstrdup(path);
	json_object *obj = NULL;
	int ret;

	if (gm_is_dir(path) && !gm_is_file(file)) {
		ret = gm_error_set(err, GM_ENOENT, "%s: no config.json; is this a model directory?", path);
		free(file);
		return ret;
	}
	ret = gm_json_parse_file(file, &obj, err);
	if (!ret)
		ret = gm_model_config_parse(obj, file, cfg, err);
	json_object_put(obj);
	free(file);
	return ret;
}

/* ------------------------------------------------------------ writing */

static void add_int(json_object *o, const char *key, int64_t v)
{
	json_object_object_add(o, key, json_object_new_int64(v));
}

static void add_token(json_object *o, const char *key, int64_t id)
{
	json_object_object_add(o, key, id < 0 ? NULL : json_object_new_int64(id));
}

static json_object *token_ids_json(const int64_t *ids, int n)
{
	json_object *a;
	int i;

	if (n == 0)
		return NULL;
	if (n == 1)
		return json_object_new_int64(ids[0]);
	a = json_object_new_array();
	for (i = 0; i < n; i++)
		json_object_array_add(a, json_object_new_int64(ids[i]));
	return a;
}

static json_object *rope_scaling_json(const gm_model_config *cfg)
{
	json_object *rs;

	if (cfg->rope_scaling != GM_ROPE_LLAMA3)
		return NULL;
	rs = json_object_new_object();
	json_object_object_add(rs, "factor", gm_json_new_double(cfg->rope_factor));
	json_object_object_add(rs, "high_freq_factor", gm_json_new_double(cfg->rope_high_freq_factor));
	json_object_object_add(rs, "low_freq_factor", gm_json_new_double(cfg->rope_low_freq_factor));
	add_int(rs, "original_max_position_embeddings", cfg->rope_original_max_position_embeddings);
	json_object_object_add(rs, "rope_type", json_object_new_string("llama3"));
	return rs;
}

json_object *gm_model_config_to_json(const gm_model_config *cfg)
{
	json_object *o = json_object_new_object(), *archs = json_object_new_array();
	int qwen = cfg->arch != GM_ARCH_LLAMA;

	json_object_array_add(archs, json_object_new_string(gm_arch_name(cfg->arch)));
	json_object_object_add(o, "architectures", archs);
	json_object_object_add(o, "attention_bias", json_object_new_boolean(cfg->attention_bias));
	json_object_object_add(o, "attention_dropout", gm_json_new_double(0.0));
	add_token(o, "bos_token_id", cfg->bos_token_id);
	json_object_object_add(o, "eos_token_id", token_ids_json(cfg->eos_token_ids, cfg->n_eos));
	add_int(o, "head_dim", cfg->head_dim);
	json_object_object_add(o, "hidden_act", json_object_new_string("silu"));
	add_int(o, "hidden_size", cfg->hidden_size);
	json_object_object_add(o, "initializer_range", gm_json_new_double(0.02));
	add_int(o, "intermediate_size", cfg->intermediate_size);
	add_int(o, "max_position_embeddings", cfg->max_position_embeddings);
	if (qwen)
		add_int(o, "max_window_layers", cfg->num_hidden_layers);
	if (!qwen)
		json_object_object_add(o, "mlp_bias", json_object_new_boolean(0));
	json_object_object_add(o, "model_type", json_object_new_string(cfg->model_type[0] ?
				cfg->model_type : arch_model_type(cfg->arch)));
	add_int(o, "num_attention_heads", cfg->num_attention_heads);
	add_int(o, "num_hidden_layers", cfg->num_hidden_layers);
	add_int(o, "num_key_value_heads", cfg->num_key_value_heads);
	json_object_object_add(o, "rms_norm_eps", gm_json_new_double(cfg->rms_norm_eps));
	json_object_object_add(o, "rope_scaling", rope_scaling_json(cfg));
	json_object_object_add(o, "rope_theta", gm_json_new_double(cfg->rope_theta));
	if (qwen)
		json_object_object_add(o, "sliding_window", NULL);
	json_object_object_add(o, "tie_word_embeddings", json_object_new_boolean(cfg->tie_word_embeddings));
	json_object_object_add(o, "torch_dtype", json_object_new_string(gm_dtype_torch_name(cfg->dtype)));
	json_object_object_add(o, "transformers_version", json_object_new_string("4.51.0"));
	json_object_object_add(o, "use_cache", json_object_new_boolean(1));
	if (qwen)
		json_object_object_add(o, "use_sliding_window", json_object_new_boolean(0));
	add_int(o, "vocab_size", cfg->vocab_size);
	return o;
}

uint64_t gm_model_config_param_count(const gm_model_config *cfg)
{
	uint64_t hidden = (uint64_t)cfg->hidden_size, hd = (uint64_t)cfg->head_dim;
	uint64_t q = (uint64_t)cfg->num_attention_heads * hd, kv = (uint64_t)cfg->num_key_value_heads * hd;
	uint64_t embed = (uint64_t)cfg->vocab_size * hidden, layer;

	layer = 2 * hidden                                    /* input / post-attention norms */
		+ q * hidden + 2 * kv * hidden + hidden * q   /* q, k, v, o */
		+ 3 * hidden * (uint64_t)cfg->intermediate_size; /* gate, up, down */
	if (cfg->attention_bias)
		layer += q + 2 * kv;
	if (cfg->qk_norm)
		layer += 2 * hd;
	return embed * (cfg->tie_word_embeddings ? 1 : 2) + hidden + layer * (uint64_t)cfg->num_hidden_layers;
}

/* ------------------------------------------------------------ generation_config.json */

void gm_generation_config_defaults(gm_generation_config *gen, const gm_model_config *cfg)
{
	memset(gen, 0, sizeof(*gen));
	gen->bos_token_id = -1;
	gen->pad_token_id = -1;
	if (cfg) {
		gen->n_eos = cfg->n_eos;
		memcpy(gen->eos_token_ids, cfg->eos_token_ids, sizeof(gen->eos_token_ids));
		gen->bos_token_id = cfg->bos_token_id;
	}
	gen->do_sample = 0;
	gen->temperature = 1.0;
	gen->top_p = 1.0;
	gen->top_k = 50;    /* transformers' GenerationConfig default */
	gen->min_p = 0.0;
	gen->repetition_penalty = 1.0;
	gen->max_new_tokens = -1;
}

static int check_range(int ok, const char *what, const char *key, const char *range, double v,
		       gm_error *err)
{
	if (ok)
		return 0;
	return gm_error_set(err, GM_EFORMAT, "%s: '%s' must be %s, not %g", what, key, range, v);
}

/* An optional integer >= 0 (null or absent keeps *out). */
static int opt_count(json_object *obj, const char *key, const char *what, int64_t *out, gm_error *err)
{
	int64_t v;
	int ret;

	if (!has_key(obj, key))
		return 0;
	if ((ret = gm_json_get_int64(obj, key, what, &v, err)))
		return ret;
	if (v < 0)
		return gm_error_set(err, GM_EFORMAT, "%s: '%s' must be an integer >= 0, not %lld", what, key,
				    (long long)v);
	*out = v;
	return 0;
}

/* top_k: absent keeps the default (50); null turns it off, as None does in transformers. */
static int opt_top_k(json_object *obj, const char *what, int64_t *out, gm_error *err)
{
	json_object *v = NULL;

	if (json_object_object_get_ex(obj, "top_k", &v) && !v) {
		*out = 0;
		return 0;
	}
	return opt_count(obj, "top_k", what, out, err);
}

int gm_generation_config_parse(json_object *obj, const char *what, gm_generation_config *gen, gm_error *err)
{
	int n = 0, ret;
	int64_t ids[GM_MAX_EOS];

	if (!obj || !json_object_is_type(obj, json_type_object))
		return gm_error_set(err, GM_EFORMAT, "%s: must be a JSON object", what);
	if ((ret = parse_token_ids(obj, "eos_token_id", what, ids, &n, err)) ||
	    (ret = parse_token_id(obj, "bos_token_id", what, &gen->bos_token_id, err)) ||
	    (ret = parse_token_id(obj, "pad_token_id", what, &gen->pad_token_id, err)) ||
	    (ret = gm_json_opt_bool(obj, "do_sample", what, &gen->do_sample, err)) ||
	    (ret = gm_json_opt_double(obj, "temperature", what, &gen->temperature, err)) ||
	    (ret = gm_json_opt_double(obj, "top_p", what, &gen->top_p, err)) ||
	    (ret = opt_top_k(obj, what, &gen->top_k, err)) ||
	    (ret = gm_json_opt_double(obj, "min_p", what, &gen->min_p, err)) ||
	    (ret = gm_json_opt_double(obj, "repetition_penalty", what, &gen->repetition_penalty, err)) ||
	    (ret = opt_count(obj, "max_new_tokens", what, &gen->max_new_tokens, err)))
		return ret;
	if (n) {
		gen->n_eos = n;
		memcpy(gen->eos_token_ids, ids, (size_t)n * sizeof(ids[0]));
	}
	if ((ret = check_range(gen->temperature >= 0 && isfinite(gen->temperature), what, "temperature",
			       "a number >= 0", gen->temperature, err)) ||
	    (ret = check_range(gen->top_p >= 0 && gen->top_p <= 1, what, "top_p", "between 0 and 1",
			       gen->top_p, err)) ||
	    (ret = check_range(gen->min_p >= 0 && gen->min_p <= 1, what, "min_p", "between 0 and 1",
			       gen->min_p, err)) ||
	    (ret = check_range(gen->repetition_penalty > 0 && isfinite(gen->repetition_penalty), what,
			       "repetition_penalty", "a number > 0", gen->repetition_penalty, err)))
		return ret;
	return 0;
}

int gm_generation_config_load(const char *dir, const gm_model_config *cfg, gm_generation_config *gen,
			      gm_error *err)
{
	char *file = gm_path_join(dir, "generation_config.json");
	json_object *obj = NULL;
	int ret = 0;

	gm_generation_config_defaults(gen, cfg);
	if (gm_is_file(file)) {
		ret = gm_json_parse_file(file, &obj, err);
		if (!ret)
			ret = gm_generation_config_parse(obj, file, gen, err);
		json_object_put(obj);
	}
	free(file);
	return ret;
}
