/*
 * test-config.c - unit tests for config.json and generation_config.json
 * (config.c) and for binding a model's tensors (model.c).
 *
 * Configs are written as a base document plus edits ("key=JSON" sets a
 * key, "-key" removes it), so that each test shows only what it changes.
 * Models with a wrong tensor are written into a temporary directory with
 * the safetensors writer.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "formats/config.h"
#include "base/error.h"
#include "base/fs.h"
#include "base/json.h"
#include "formats/model.h"
#include "formats/safetensors.h"
#include "tap.h"

static char tmpdir[PATH_MAX];

/* A small Qwen3 in the transformers 4.x spelling of released checkpoints. */
static const char qwen3_json[] =
	"{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\","
	" \"vocab_size\": 32, \"hidden_size\": 8, \"intermediate_size\": 16,"
	" \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
	" \"head_dim\": 4, \"max_position_embeddings\": 128, \"rms_norm_eps\": 1e-06,"
	" \"rope_theta\": 1000000.0, \"rope_scaling\": null, \"tie_word_embeddings\": true,"
	" \"torch_dtype\": \"bfloat16\", \"bos_token_id\": 1, \"eos_token_id\": 2,"
	" \"hidden_act\": \"silu\", \"attention_bias\": false, \"use_sliding_window\": false,"
	" \"sliding_window\": null, \"pad_token_id\": null}";

/* Applies "key=JSON" / "-key" edits up to a NULL; NULL when an edit is malformed. */
static json_object *config_vedit(const char *base, va_list ap)
{
	json_object *obj = json_tokener_parse(base);
	const char *edit;

	while (obj && (edit = va_arg(ap, const char *))) {
		const char *eq = strchr(edit, '=');
		char key[128];
		json_object *v = NULL;

		if (edit[0] == '-') {
			json_object_object_del(obj, edit + 1);
			continue;
		}
		if (!eq || (size_t)(eq - edit) >= sizeof(key)) {
			tap_diag("bad edit '%s'", edit);
			json_object_put(obj);
			return NULL;
		}
		memcpy(key, edit, (size_t)(eq - edit));
		key[eq - edit] = '\0';
		if (strcmp(eq + 1, "null") && !(v = json_tokener_parse(eq + 1))) {
			tap_diag("bad JSON in edit '%s'", edit);
			json_object_put(obj);
			return NULL;
		}
		json_object_object_add(obj, key, v);
	}
	return obj;
}

static json_object *config_edit(const char *base, ...)
{
	json_object *obj;
	va_list ap;

	va_start(ap, base);
	obj = config_vedit(base, ap);
	va_end(ap);
	return obj;
}

/* Parses base with the edits (NULL-terminated) into cfg. */
static int parse_config(gm_model_config *cfg, gm_error *err, const char *base, ...)
{
	json_object *obj;
	va_list ap;
	int ret;

	va_start(ap, base);
	obj = config_vedit(base, ap);
	va_end(ap);
	if (!obj)
		return gm_error_set(err, GM_ERROR, "test: bad edits");
	gm_error_clear(err);
	ret = gm_model_config_parse(obj, "config.json", cfg, err);
	json_object_put(obj);
	return ret;
}

static int parse_generation(gm_generation_config *gen, const gm_model_config *cfg, gm_error *err,
			    const char *text)
{
	json_object *obj = json_tokener_parse(text);
	int ret;

	gm_generation_config_defaults(gen, cfg);
	gm_error_clear(err);
	ret = gm_generation_config_parse(obj, "generation_config.json", gen, err);
	json_object_put(obj);
	return ret;
}

static int write_text(const char *dir, const char *name, const char *text)
{
	char *path = gm_path_join(dir, name);
	gm_error err = GM_ERROR_INIT;
	int ret = gm_write_file_atomic(path, text, strlen(text), 0644, &err);

	if (ret)
		tap_diag("%s", err.msg);
	free(path);
	return ret;
}

/* A new directory under tmpdir; the caller frees the path. */
static char *make_dir(const char *name)
{
	char *dir = gm_path_join(tmpdir, name);

	if (mkdir(dir, 0755))
		tap_diag("cannot create %s", dir);
	return dir;
}

/* ------------------------------------------------------------ config.json */

static void test_spellings(void)
{
	gm_model_config cfg;
	gm_error err = GM_ERROR_INIT;

	ok(!parse_config(&cfg, &err, qwen3_json, NULL), "a released Qwen3 config.json parses");
	ok(cfg.arch == GM_ARCH_QWEN3 && !strcmp(cfg.architecture, "Qwen3ForCausalLM") &&
	   !strcmp(cfg.model_type, "qwen3") && cfg.qk_norm && !cfg.attention_bias,
	   "Qwen3: architecture, model_type, q/k norms, no biases");
	ok(cfg.vocab_size == 32 && cfg.hidden_size == 8 && cfg.intermediate_size == 16 &&
	   cfg.num_hidden_layers == 2 && cfg.num_attention_heads == 2 && cfg.num_key_value_heads == 1 &&
	   cfg.max_position_embeddings == 128 && cfg.rms_norm_eps == 1e-6, "sizes");
	ok(cfg.rope_theta == 1e6 && cfg.rope_scaling == GM_ROPE_NONE, "top-level rope_theta, rope_scaling null");
	ok(cfg.dtype == GM_DTYPE_BF16, "torch_dtype bfloat16");
	ok(cfg.bos_token_id == 1 && cfg.n_eos == 1 && cfg.eos_token_ids[0] == 2, "bos and eos ids");

	ok(!parse_config(&cfg, &err, qwen3_json, "-rope_theta", "-rope_scaling", "-torch_dtype",
			 "rope_parameters={\"rope_theta\": 500000.0, \"rope_type\": \"default\"}",
			 "dtype=\"float32\"", NULL) &&
	   cfg.rope_theta == 5e5 && cfg.rope_scaling == GM_ROPE_NONE && cfg.dtype == GM_DTYPE_F32,
	   "transformers 5 spelling: rope_parameters {rope_theta, rope_type} and dtype");
	ok(!parse_config(&cfg, &err, qwen3_json, "-rope_theta", "rope_parameters={\"rope_theta\": 250000}",
			 NULL) && cfg.rope_theta == 250000.0 && cfg.rope_scaling == GM_ROPE_NONE,
	   "rope_parameters without rope_type; an integer theta");
	ok(!parse_config(&cfg, &err, qwen3_json, "-rope_theta", NULL) && cfg.rope_theta == 10000.0,
	   "rope_theta defaults to 10000");
	ok(!parse_config(&cfg, &err, qwen3_json, "-torch_dtype", NULL) && cfg.dtype == GM_DTYPE_BF16,
	   "no dtype at all means bf16");
	ok(!parse_config(&cfg, &err, qwen3_json, "torch_dtype=\"float16\"", NULL) && cfg.dtype == GM_DTYPE_F16,
	   "torch_dtype float16");
	ok(!parse_config(&cfg, &err, qwen3_json, "torch_dtype=\"torch.float32\"", NULL) &&
	   cfg.dtype == GM_DTYPE_F32, "torch_dtype as str(torch.float32)");
	ok_error(parse_config(&cfg, &err, qwen3_json, "torch_dtype=\"int8\"", NULL), &err, GM_EUNSUPPORTED,
		 "config.json: 'torch_dtype' is 'int8'; supported: float32, float16, bfloat16",
		 "an integer dtype is refused, naming the key");
	ok_error(parse_config(&cfg, &err, qwen3_json, "-torch_dtype", "dtype=\"float64\"", NULL), &err,
		 GM_EUNSUPPORTED, "'dtype' is 'float64'", "float64 is refused under the new spelling too");
	ok_error(parse_config(&cfg, &err, qwen3_json, "rope_theta=-1", NULL), &err, GM_EFORMAT,
		 "'rope_theta' must be a positive number", "a negative rope_theta");
	ok_error(parse_config(&cfg, &err, qwen3_json, "-rope_theta", "rope_parameters={\"rope_theta\": \"big\"}",
			      NULL), &err, GM_EFORMAT,
		 "config.json: 'rope_parameters': 'rope_theta' must be a number, not string",
		 "a mistyped rope_parameters.rope_theta names both levels");
	ok_error(parse_config(&cfg, &err, qwen3_json, "rope_parameters=[1]", NULL), &err, GM_EFORMAT,
		 "'rope_parameters' must be an object, not array", "rope_parameters must be an object");
}

static void test_rope_scaling(void)
{
	static const char llama3[] = "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
				     " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192";
	char rs[256], rp[256];
	gm_model_config cfg;
	gm_error err = GM_ERROR_INIT;

	snprintf(rs, sizeof(rs), "rope_scaling=%s}", llama3);
	snprintf(rp, sizeof(rp), "rope_parameters=%s, \"rope_theta\": 500000.0}", llama3);
	ok(!parse_config(&cfg, &err, qwen3_json, "architectures=[\"LlamaForCausalLM\"]", "model_type=\"llama\"",
			 "rope_theta=500000.0", rs, NULL) &&
	   cfg.arch == GM_ARCH_LLAMA && !cfg.qk_norm && cfg.rope_scaling == GM_ROPE_LLAMA3 &&
	   cfg.rope_factor == 8.0 && cfg.rope_low_freq_factor == 1.0 && cfg.rope_high_freq_factor == 4.0 &&
	   cfg.rope_original_max_position_embeddings == 8192 && cfg.rope_theta == 5e5,
	   "Llama 3: rope_scaling llama3 (transformers 4 spelling)");
	ok(!parse_config(&cfg, &err, qwen3_json, "architectures=[\"LlamaForCausalLM\"]", "-rope_theta",
			 "-rope_scaling", rp, NULL) &&
	   cfg.rope_scaling == GM_ROPE_LLAMA3 && cfg.rope_factor == 8.0 &&
	   cfg.rope_original_max_position_embeddings == 8192 && cfg.rope_theta == 5e5,
	   "Llama 3: everything inside rope_parameters (transformers 5 spelling)");
	ok(!parse_config(&cfg, &err, qwen3_json, "rope_scaling={\"type\": \"default\"}", NULL) &&
	   cfg.rope_scaling == GM_ROPE_NONE, "the old 'type' key, default");
	ok_error(parse_config(&cfg, &err, qwen3_json, "rope_scaling={\"rope_type\": \"yarn\", \"factor\": 4.0}",
			      NULL), &err, GM_EUNSUPPORTED, "rope type 'yarn' is not supported",
		 "YaRN is refused by name");
	ok_error(parse_config(&cfg, &err, qwen3_json, "rope_scaling={\"rope_type\": \"llama3\", \"factor\": 8.0}",
			      NULL), &err, GM_ENOENT, "config.json: 'rope_scaling': missing 'low_freq_factor'",
		 "llama3 scaling needs all its factors");
	/* Found by contrib/fuzz/fuzz-config's invariants: json-c reads 1e999 as inf. */
	ok_error(parse_config(&cfg, &err, qwen3_json, "architectures=[\"LlamaForCausalLM\"]",
			      "rope_scaling={\"rope_type\": \"llama3\", \"factor\": 1e999, \"low_freq_factor\": 1.0,"
			      " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}", NULL),
		 &err, GM_EFORMAT, "llama3 scaling needs finite factors", "an infinite rope factor is refused");
	ok_error(parse_config(&cfg, &err, qwen3_json, "architectures=[\"LlamaForCausalLM\"]",
			      "rope_scaling={\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1.0,"
			      " \"high_freq_factor\": 1e400, \"original_max_position_embeddings\": 8192}", NULL),
		 &err, GM_EFORMAT, "llama3 scaling needs finite factors", "an infinite high_freq_factor is refused");
	ok_error(parse_config(&cfg, &err, qwen3_json, "rope_scaling={\"factor\": 8.0}", NULL), &err, GM_EFORMAT,
		 "'rope_scaling' has no 'rope_type'", "rope_scaling without a type");
	ok_error(parse_config(&cfg, &err, qwen3_json, "rope_scaling=3", NULL), &err, GM_EFORMAT,
		 "'rope_scaling' must be an object or null, not int", "rope_scaling of the wrong type");
}

static void test_head_dim_and_tying(void)
{
	gm_model_config cfg;
	gm_error err = GM_ERROR_INIT;
	uint64_t tied, untied;

	ok(!parse_config(&cfg, &err, qwen3_json, "-head_dim", "hidden_size=64", "num_attention_heads=4",
			 "num_key_value_heads=2", NULL) && cfg.head_dim == 16,
	   "head_dim defaults to hidden_size / num_attention_heads (64 / 4 = 16)");
	ok(!parse_config(&cfg, &err, qwen3_json, "head_dim=24", "hidden_size=64", "num_attention_heads=4",
			 NULL) && cfg.head_dim == 24, "an explicit head_dim wins (24, not 64 / 4)");
	ok(!parse_config(&cfg, &err, qwen3_json, "head_dim=null", "hidden_size=64", "num_attention_heads=4",
			 NULL) && cfg.head_dim == 16, "head_dim null counts as absent");
	ok_error(parse_config(&cfg, &err, qwen3_json, "-head_dim", "hidden_size=10", "num_attention_heads=4",
			      "num_key_value_heads=2", NULL), &err, GM_EFORMAT,
		 "no 'head_dim', and hidden_size (10) is not a multiple of num_attention_heads (4)",
		 "without head_dim, hidden_size must divide evenly");
	ok_error(parse_config(&cfg, &err, qwen3_json, "head_dim=5", NULL), &err, GM_EFORMAT,
		 "head_dim (5) must be even", "an odd head_dim is refused");
	ok(!parse_config(&cfg, &err, qwen3_json, "-num_key_value_heads", NULL) &&
	   cfg.num_key_value_heads == cfg.num_attention_heads, "num_key_value_heads defaults to the heads");
	ok_error(parse_config(&cfg, &err, qwen3_json, "num_attention_heads=4", "num_key_value_heads=3", NULL),
		 &err, GM_EFORMAT, "num_attention_heads (4) must be a multiple of num_key_value_heads (3)",
		 "heads must be a multiple of kv heads");

	ok(!parse_config(&cfg, &err, qwen3_json, NULL) && cfg.tie_word_embeddings == 1, "tie_word_embeddings true");
	tied = gm_model_config_param_count(&cfg);
	ok(!parse_config(&cfg, &err, qwen3_json, "tie_word_embeddings=false", NULL) && !cfg.tie_word_embeddings,
	   "tie_word_embeddings false");
	untied = gm_model_config_param_count(&cfg);
	ok(untied - tied == 32 * 8, "an untied head adds vocab x hidden parameters (%llu - %llu)",
	   (unsigned long long)untied, (unsigned long long)tied);
	ok(!parse_config(&cfg, &err, qwen3_json, "-tie_word_embeddings", NULL) && !cfg.tie_word_embeddings,
	   "tie_word_embeddings defaults to false");
	ok_error(parse_config(&cfg, &err, qwen3_json, "tie_word_embeddings=\"yes\"", NULL), &err, GM_EFORMAT,
		 "'tie_word_embeddings' must be true or false, not string", "tie_word_embeddings must be a boolean");
	/* embed 32x8 + norm 8 + 2 x (2 norms 16 + q 64 + k 32 + v 32 + o 64 + mlp 384 + qk norms 8) */
	ok(tied == 256 + 8 + 2 * (16 + 64 + 32 + 32 + 64 + 384 + 8), "parameter count of the small Qwen3 (%llu)",
	   (unsigned long long)tied);
}

static void test_architectures(void)
{
	gm_model_config cfg;
	gm_error err = GM_ERROR_INIT;

	ok_error(parse_config(&cfg, &err, qwen3_json, "architectures=[\"MistralForCausalLM\"]", NULL), &err,
		 GM_EUNSUPPORTED, "config.json: architecture 'MistralForCausalLM' is not supported (supported: "
		 "Qwen3ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM)",
		 "an unknown architecture is refused, naming the 'architectures' value and the supported ones");
	ok_error(parse_config(&cfg, &err, qwen3_json, "architectures=[\"Qwen3MoeForCausalLM\"]",
			      "model_type=\"qwen3_moe\"", NULL), &err, GM_EUNSUPPORTED,
		 "architecture 'Qwen3MoeForCausalLM' is not supported", "Qwen3 MoE is another architecture");
	ok(!parse_config(&cfg, &err, qwen3_json, "architectures=[\"Qwen2ForCausalLM\"]", "model_type=\"qwen2\"",
			 NULL) && cfg.arch == GM_ARCH_QWEN2 && cfg.attention_bias && !cfg.qk_norm,
	   "Qwen2: q/k/v biases, no q/k norms");
	ok(!parse_config(&cfg, &err, qwen3_json, "-architectures", "model_type=\"llama\"", NULL) &&
	   cfg.arch == GM_ARCH_LLAMA && !strcmp(cfg.architecture, "LlamaForCausalLM"),
	   "without 'architectures' the model_type decides");
	ok(!parse_config(&cfg, &err, qwen3_json, "architectures=[]", "model_type=\"qwen2\"", NULL) &&
	   cfg.arch == GM_ARCH_QWEN2, "an empty 'architectures' falls back on model_type");
	ok(!parse_config(&cfg, &err, qwen3_json, "-model_type", NULL) && !strcmp(cfg.model_type, "qwen3"),
	   "model_type defaults from the architecture");
	ok_error(parse_config(&cfg, &err, qwen3_json, "-architectures", "model_type=\"gemma\"", NULL), &err,
		 GM_EUNSUPPORTED, "no 'architectures' and model_type 'gemma' is not supported",
		 "an unknown model_type is refused by name");
	ok_error(parse_config(&cfg, &err, qwen3_json, "-architectures", "-model_type", NULL), &err, GM_EFORMAT,
		 "missing 'architectures' (and no 'model_type')", "no architecture at all");
	ok_error(parse_config(&cfg, &err, qwen3_json, "architectures=\"Qwen3ForCausalLM\"", NULL), &err, GM_EFORMAT,
		 "'architectures' must be an array, not string", "'architectures' must be a list");
	ok_error(parse_config(&cfg, &err, qwen3_json, "architectures=[3]", NULL), &err, GM_EFORMAT,
		 "'architectures' must hold strings, not int", "'architectures' must hold names");
	ok_error(parse_config(&cfg, &err, qwen3_json, "hidden_act=\"gelu\"", NULL), &err, GM_EUNSUPPORTED,
		 "hidden_act 'gelu' is not supported", "another activation is refused");
	ok_error(parse_config(&cfg, &err, qwen3_json, "use_sliding_window=true", NULL), &err, GM_EUNSUPPORTED,
		 "use_sliding_window true is not supported", "sliding-window attention is refused");
	ok_error(parse_config(&cfg, &err, qwen3_json, "attention_bias=true", NULL), &err, GM_EUNSUPPORTED,
		 "attention_bias true is not supported for Qwen3ForCausalLM", "attention_bias on Qwen3 is refused");
	ok_error(parse_config(&cfg, &err, qwen3_json, "architectures=[\"LlamaForCausalLM\"]", "mlp_bias=true",
			      NULL), &err, GM_EUNSUPPORTED, "mlp_bias true is not supported", "mlp_bias is refused");
}

static void test_required_fields(void)
{
	static const char *const required[] = {
		"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
		"num_attention_heads", "max_position_embeddings", NULL
	};
	gm_model_config cfg;
	gm_error err = GM_ERROR_INIT;
	json_object *arr;
	char del[64], want[96];
	int i;

	for (i = 0; required[i]; i++) {
		snprintf(del, sizeof(del), "-%s", required[i]);
		snprintf(want, sizeof(want), "config.json: missing '%s'", required[i]);
		ok_error(parse_config(&cfg, &err, qwen3_json, del, NULL), &err, GM_ENOENT, want,
			 "a missing %s is named", required[i]);
	}
	ok_error(parse_config(&cfg, &err, qwen3_json, "vocab_size=null", NULL), &err, GM_ENOENT,
		 "config.json: missing 'vocab_size'", "a null size counts as missing");
	ok_error(parse_config(&cfg, &err, qwen3_json, "hidden_size=\"8\"", NULL), &err, GM_EFORMAT,
		 "config.json: 'hidden_size' must be an integer, not string", "a size given as a string");
	ok_error(parse_config(&cfg, &err, qwen3_json, "intermediate_size=16.5", NULL), &err, GM_EFORMAT,
		 "'intermediate_size' must be an integer, not double", "a fractional size");
	ok_error(parse_config(&cfg, &err, qwen3_json, "num_hidden_layers=0", NULL), &err, GM_EFORMAT,
		 "'num_hidden_layers' must be a positive integer below 2^31, not 0", "zero layers");
	ok_error(parse_config(&cfg, &err, qwen3_json, "vocab_size=-5", NULL), &err, GM_EFORMAT,
		 "'vocab_size' must be a positive integer below 2^31, not -5", "a negative size");
	ok_error(parse_config(&cfg, &err, qwen3_json, "hidden_size=4294967296", NULL), &err, GM_EFORMAT,
		 "'hidden_size' must be a positive integer below 2^31", "a size too large for the kernels");
	ok_error(parse_config(&cfg, &err, qwen3_json, "num_key_value_heads=true", NULL), &err, GM_EFORMAT,
		 "'num_key_value_heads' must be an integer, not boolean", "an optional size still has a type");
	ok_error(parse_config(&cfg, &err, qwen3_json, "rms_norm_eps=\"1e-6\"", NULL), &err, GM_EFORMAT,
		 "'rms_norm_eps' must be a number, not string", "rms_norm_eps must be a number");
	ok_error(parse_config(&cfg, &err, qwen3_json, "eos_token_id=\"</s>\"", NULL), &err, GM_EFORMAT,
		 "'eos_token_id' must be a token id or a list of token ids, not string", "eos_token_id as a string");
	ok_error(parse_config(&cfg, &err, qwen3_json, "bos_token_id=-7", NULL), &err, GM_EFORMAT,
		 "'bos_token_id' must be a token id, not -7", "a negative bos_token_id");
	ok(!parse_config(&cfg, &err, qwen3_json, "bos_token_id=null", "eos_token_id=[7, 8]", NULL) &&
	   cfg.bos_token_id == -1 && cfg.n_eos == 2 && cfg.eos_token_ids[0] == 7 && cfg.eos_token_ids[1] == 8,
	   "bos_token_id null, eos_token_id a list");
	ok(!parse_config(&cfg, &err, qwen3_json, "max_position_embeddings=1e5", NULL) &&
	   cfg.max_position_embeddings == 100000, "1e5 is an integer as Python writes it");

	arr = json_tokener_parse("[1, 2]");
	ok_error(gm_model_config_parse(arr, "config.json", &cfg, &err), &err, GM_EFORMAT,
		 "config.json: must be a JSON object", "a config.json that is not an object");
	json_object_put(arr);
}

static void test_config_files(void)
{
	gm_model_config cfg;
	gm_generation_config gen;
	gm_error err = GM_ERROR_INIT;
	char *dir = make_dir("configs"), *path;
	int ret;

	ok_error(gm_model_config_load(dir, &cfg, &err), &err, GM_ENOENT, "no config.json; is this a model directory?",
		 "a directory without config.json");
	write_text(dir, "config.json", "{\"vocab_size\": 3,");
	ret = gm_model_config_load(dir, &cfg, &err);
	path = gm_path_join(dir, "config.json");
	ok(ret == GM_EFORMAT && !strncmp(err.msg, path, strlen(path)) && strstr(err.msg, "invalid JSON"),
	   "invalid JSON is reported with the file's path (%s)", err.msg);
	write_text(dir, "config.json", qwen3_json);
	ok(!gm_model_config_load(dir, &cfg, &err) && cfg.hidden_size == 8, "DIR/config.json is read");
	ok(!gm_model_config_load(path, &cfg, &err) && cfg.hidden_size == 8, "a path to the .json file is read too");
	free(path);
	write_text(dir, "other.json", "{\"architectures\": [\"GPT2LMHeadModel\"]}");
	path = gm_path_join(dir, "other.json");
	ret = gm_model_config_load(path, &cfg, &err);
	ok(ret == GM_EUNSUPPORTED && strstr(err.msg, "other.json: architecture 'GPT2LMHeadModel'"),
	   "errors name the file they come from (%s)", err.msg);
	free(path);

	gm_model_config_load(dir, &cfg, &err);
	ok(!gm_generation_config_load(dir, &cfg, &gen, &err) && gen.n_eos == 1 && gen.eos_token_ids[0] == 2 &&
	   gen.bos_token_id == 1 && gen.temperature == 1.0 && gen.max_new_tokens == -1,
	   "no generation_config.json: defaults, eos and bos from config.json");
	write_text(dir, "generation_config.json", "{\"eos_token_id\": [2, 5], \"temperature\": 0.6, \"top_k\": 20}");
	ok(!gm_generation_config_load(dir, &cfg, &gen, &err) && gen.n_eos == 2 && gen.eos_token_ids[1] == 5 &&
	   gen.temperature == 0.6 && gen.top_k == 20, "generation_config.json is read and overrides");
	write_text(dir, "generation_config.json", "{\"temperature\": }");
	ret = gm_generation_config_load(dir, &cfg, &gen, &err);
	ok(ret == GM_EFORMAT && strstr(err.msg, "generation_config.json: invalid JSON"),
	   "a broken generation_config.json is an error naming it (%s)", err.msg);
	free(dir);
}

/* ------------------------------------------------------------ generation_config.json */

static void test_generation(void)
{
	gm_model_config cfg;
	gm_generation_config gen;
	gm_error err = GM_ERROR_INIT;

	parse_config(&cfg, &err, qwen3_json, "eos_token_id=9", NULL);
	gm_generation_config_defaults(&gen, &cfg);
	ok(gen.n_eos == 1 && gen.eos_token_ids[0] == 9 && gen.bos_token_id == 1 && gen.pad_token_id == -1 &&
	   !gen.do_sample && gen.temperature == 1.0 && gen.top_p == 1.0 && gen.top_k == 50 && gen.min_p == 0.0 &&
	   gen.repetition_penalty == 1.0 && gen.max_new_tokens == -1, "defaults, eos from config.json");
	gm_generation_config_defaults(&gen, NULL);
	ok(gen.n_eos == 0 && gen.bos_token_id == -1, "defaults without a config");

	ok(!parse_generation(&gen, &cfg, &err, "{\"eos_token_id\": 151645}") && gen.n_eos == 1 &&
	   gen.eos_token_ids[0] == 151645, "eos_token_id as an int");
	ok(!parse_generation(&gen, &cfg, &err, "{\"eos_token_id\": [151645, 151643]}") && gen.n_eos == 2 &&
	   gen.eos_token_ids[0] == 151645 && gen.eos_token_ids[1] == 151643, "eos_token_id as a list");
	ok(!parse_generation(&gen, &cfg, &err, "{\"eos_token_id\": null}") && gen.n_eos == 1 &&
	   gen.eos_token_ids[0] == 9, "eos_token_id null keeps config.json's");
	ok(!parse_generation(&gen, &cfg, &err, "{\"bos_token_id\": 151643, \"pad_token_id\": 151643,"
			     " \"do_sample\": true, \"temperature\": 0.6, \"top_p\": 0.95, \"top_k\": 20,"
			     " \"min_p\": 0.05, \"repetition_penalty\": 1.1, \"max_new_tokens\": 512,"
			     " \"transformers_version\": \"4.51.0\"}") &&
	   gen.bos_token_id == 151643 && gen.pad_token_id == 151643 && gen.do_sample && gen.temperature == 0.6 &&
	   gen.top_p == 0.95 && gen.top_k == 20 && gen.min_p == 0.05 && gen.repetition_penalty == 1.1 &&
	   gen.max_new_tokens == 512, "every sampling field");
	ok(!parse_generation(&gen, &cfg, &err, "{\"temperature\": 1, \"top_k\": null}") && gen.temperature == 1.0 &&
	   gen.top_k == 0, "an integer temperature; top_k null");

	ok_error(parse_generation(&gen, &cfg, &err, "{\"eos_token_id\": [1, \"x\"]}"), &err, GM_EFORMAT,
		 "generation_config.json: 'eos_token_id' must be a token id or a list of token ids "
		 "(item 1 is not a non-negative integer)", "a list holding a string");
	ok_error(parse_generation(&gen, &cfg, &err, "{\"eos_token_id\": [1, 2, 3, 4, 5, 6, 7, 8, 9]}"), &err,
		 GM_EUNSUPPORTED, "'eos_token_id' lists 9 ids; at most 8 are supported", "too many eos ids");
	ok_error(parse_generation(&gen, &cfg, &err, "{\"eos_token_id\": 2.5}"), &err, GM_EFORMAT,
		 "'eos_token_id' must be a token id or a list of token ids, not double", "a fractional eos id");
	ok_error(parse_generation(&gen, &cfg, &err, "{\"do_sample\": \"true\"}"), &err, GM_EFORMAT,
		 "'do_sample' must be true or false, not string", "do_sample must be a boolean");
	ok_error(parse_generation(&gen, &cfg, &err, "{\"temperature\": \"hot\"}"), &err, GM_EFORMAT,
		 "'temperature' must be a number, not string", "temperature must be a number");
	ok_error(parse_generation(&gen, &cfg, &err, "{\"temperature\": -0.5}"), &err, GM_EFORMAT,
		 "'temperature' must be a number >= 0, not -0.5", "a negative temperature");
	ok_error(parse_generation(&gen, &cfg, &err, "{\"top_p\": 1.5}"), &err, GM_EFORMAT,
		 "'top_p' must be between 0 and 1, not 1.5", "top_p above 1");
	ok_error(parse_generation(&gen, &cfg, &err, "{\"min_p\": -0.1}"), &err, GM_EFORMAT,
		 "'min_p' must be between 0 and 1, not -0.1", "a negative min_p");
	ok_error(parse_generation(&gen, &cfg, &err, "{\"top_k\": -1}"), &err, GM_EFORMAT,
		 "'top_k' must be an integer >= 0, not -1", "a negative top_k");
	ok_error(parse_generation(&gen, &cfg, &err, "{\"repetition_penalty\": 0}"), &err, GM_EFORMAT,
		 "'repetition_penalty' must be a number > 0, not 0", "a zero repetition_penalty");
	ok_error(parse_generation(&gen, &cfg, &err, "{\"max_new_tokens\": 1.5}"), &err, GM_EFORMAT,
		 "'max_new_tokens' must be an integer, not double", "a fractional max_new_tokens");
	ok_error(parse_generation(&gen, &cfg, &err, "[]"), &err, GM_EFORMAT,
		 "generation_config.json: must be a JSON object", "a generation config that is not an object");
}

/* What synth writes reads back the same. */
static void test_roundtrip(void)
{
	gm_model_config a, b;
	gm_error err = GM_ERROR_INIT;
	json_object *obj;
	int ret;

	parse_config(&a, &err, qwen3_json, "architectures=[\"LlamaForCausalLM\"]", "model_type=\"llama\"",
		     "eos_token_id=[2, 3]", "rope_scaling={\"rope_type\": \"llama3\", \"factor\": 8.0,"
		     " \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
		     " \"original_max_position_embeddings\": 8192}", "torch_dtype=\"float16\"", NULL);
	obj = gm_model_config_to_json(&a);
	ret = gm_model_config_parse(obj, "written", &b, &err);
	json_object_put(obj);
	ok(!ret && !memcmp(&a, &b, sizeof(a)), "a written Llama 3 config reads back identical");
	parse_config(&a, &err, qwen3_json, NULL);
	obj = gm_model_config_to_json(&a);
	ret = gm_model_config_parse(obj, "written", &b, &err);
	json_object_put(obj);
	ok(!ret && !memcmp(&a, &b, sizeof(a)), "a written Qwen3 config reads back identical");
}

/* ------------------------------------------------------------ models */

struct tspec {
	char name[96];
	enum gm_dtype dtype;
	int ndim;
	int64_t shape[2];
};

struct mspec {
	struct tspec t[64];
	int n;
};

static void spec_add(struct mspec *s, enum gm_dtype dtype, int ndim, int64_t d0, int64_t d1, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

static void spec_add(struct mspec *s, enum gm_dtype dtype, int ndim, int64_t d0, int64_t d1, const char *fmt, ...)
{
	struct tspec *t = &s->t[s->n++];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(t->name, sizeof(t->name), fmt, ap);
	va_end(ap);
	t->dtype = dtype;
	t->ndim = ndim;
	t->shape[0] = d0;
	t->shape[1] = d1;
}

static struct tspec *spec_find(struct mspec *s, const char *name)
{
	int i;

	for (i = 0; i < s->n; i++)
		if (!strcmp(s->t[i].name, name))
			return &s->t[i];
	tap_diag("no tensor '%s' in the spec", name);
	abort();
}

static void spec_remove(struct mspec *s, const char *name)
{
	struct tspec *t = spec_find(s, name);

	memmove(t, t + 1, (size_t)(s->t + s->n - (t + 1)) * sizeof(*t));
	s->n--;
}

/* The tensors cfg implies, in F32. */
static void spec_standard(struct mspec *s, const gm_model_config *c)
{
	int64_t h = c->hidden_size, q = c->num_attention_heads * c->head_dim;
	int64_t kv = c->num_key_value_heads * c->head_dim, ff = c->intermediate_size;
	const enum gm_dtype f = GM_DTYPE_F32;
	int i;

	s->n = 0;
	spec_add(s, f, 2, c->vocab_size, h, "model.embed_tokens.weight");
	spec_add(s, f, 1, h, 0, "model.norm.weight");
	if (!c->tie_word_embeddings)
		spec_add(s, f, 2, c->vocab_size, h, "lm_head.weight");
	for (i = 0; i < c->num_hidden_layers; i++) {
		spec_add(s, f, 1, h, 0, "model.layers.%d.input_layernorm.weight", i);
		spec_add(s, f, 1, h, 0, "model.layers.%d.post_attention_layernorm.weight", i);
		spec_add(s, f, 2, q, h, "model.layers.%d.self_attn.q_proj.weight", i);
		spec_add(s, f, 2, kv, h, "model.layers.%d.self_attn.k_proj.weight", i);
		spec_add(s, f, 2, kv, h, "model.layers.%d.self_attn.v_proj.weight", i);
		spec_add(s, f, 2, h, q, "model.layers.%d.self_attn.o_proj.weight", i);
		spec_add(s, f, 2, ff, h, "model.layers.%d.mlp.gate_proj.weight", i);
		spec_add(s, f, 2, ff, h, "model.layers.%d.mlp.up_proj.weight", i);
		spec_add(s, f, 2, h, ff, "model.layers.%d.mlp.down_proj.weight", i);
		if (c->attention_bias) {
			spec_add(s, f, 1, q, 0, "model.layers.%d.self_attn.q_proj.bias", i);
			spec_add(s, f, 1, kv, 0, "model.layers.%d.self_attn.k_proj.bias", i);
			spec_add(s, f, 1, kv, 0, "model.layers.%d.self_attn.v_proj.bias", i);
		}
		if (c->qk_norm) {
			spec_add(s, f, 1, c->head_dim, 0, "model.layers.%d.self_attn.q_norm.weight", i);
			spec_add(s, f, 1, c->head_dim, 0, "model.layers.%d.self_attn.k_norm.weight", i);
		}
	}
}

static uint64_t spec_numel(const struct mspec *s)
{
	uint64_t n = 0;
	int i;

	for (i = 0; i < s->n; i++)
		n += (uint64_t)s->t[i].shape[0] * (uint64_t)(s->t[i].ndim == 2 ? s->t[i].shape[1] : 1);
	return n;
}

/* Writes tmpdir/NAME with config (consumed) and the tensors of s; returns the path, NULL on failure. */
static char *write_model(const char *name, json_object *config, const struct mspec *s)
{
	static unsigned char zeros[65536];
	gm_error err = GM_ERROR_INIT;
	gm_st_writer *w = gm_st_writer_new();
	char *dir = make_dir(name), *path;
	int i, ret = 0;

	path = gm_path_join(dir, "config.json");
	ret = gm_json_write_file(path, config, &err);
	free(path);
	for (i = 0; !ret && i < s->n; i++) {
		uint64_t nbytes = 0;
		const struct tspec *t = &s->t[i];
		uint64_t numel = (uint64_t)t->shape[0] * (uint64_t)(t->ndim == 2 ? t->shape[1] : 1);

		if (gm_dtype_nbytes(t->dtype, numel, &nbytes, &err) || nbytes > sizeof(zeros)) {
			ret = -1;
			break;
		}
		ret = gm_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, zeros, &err);
	}
	path = gm_path_join(dir, "model.safetensors");
	if (!ret)
		ret = gm_st_writer_write(w, path, &err);
	free(path);
	gm_st_writer_free(w);
	json_object_put(config);
	if (ret) {
		tap_diag("cannot write %s: %s", dir, err.msg);
		free(dir);
		return NULL;
	}
	return dir;
}

/* Writes a model from the base config with edits, the tensors of s, and opens it. */
static int open_written(const char *name, const struct mspec *s, gm_model **m, gm_error *err,
			json_object *config)
{
	char *dir = write_model(name, config, s);
	int ret;

	*m = NULL;
	if (!dir)
		return gm_error_set(err, GM_ERROR, "test: cannot write the model");
	gm_error_clear(err);
	ret = gm_model_open(dir, m, err);
	free(dir);
	return ret;
}

/* Models whose tensors do or do not match their config.json. */
static void test_binding(void)
{
	gm_model_config cfg;
	gm_error err = GM_ERROR_INIT;
	struct mspec s;
	gm_model *m;
	int ret, ok_layers;
	char want[256];

	/* The reference: the base config with every tensor it implies. */
	parse_config(&cfg, &err, qwen3_json, NULL);
	spec_standard(&s, &cfg);
	ret = open_written("qwen3-ok", &s, &m, &err, config_edit(qwen3_json, NULL));
	ok(!ret && m, "a complete small Qwen3 opens (%s)", err.msg);
	if (m) {
		ok_layers = m->layers[1].q_norm && m->layers[1].q_norm->shape[0] == 4 && !m->layers[0].q_bias;
		ok(m->lm_head == m->embed_tokens && ok_layers, "tied: lm_head is the embedding; q_norm bound");
		ok(m->n_params == spec_numel(&s) && m->n_params == gm_model_config_param_count(&m->config),
		   "its parameter count (%llu) is the config's", (unsigned long long)m->n_params);
		gm_model_close(m);
	}

	spec_standard(&s, &cfg);
	spec_find(&s, "model.layers.1.self_attn.k_proj.weight")->shape[0] = 8;
	ok_error(open_written("wrong-shape", &s, &m, &err, config_edit(qwen3_json, NULL)), &err, GM_EFORMAT,
		 "tensor 'model.layers.1.self_attn.k_proj.weight' has shape [8, 8], expected [4, 8] "
		 "for this config.json", "a wrong shape is refused, naming the tensor and both shapes");
	ok(m == NULL, "nothing is returned on failure");

	spec_standard(&s, &cfg);
	spec_find(&s, "model.norm.weight")->ndim = 2;
	spec_find(&s, "model.norm.weight")->shape[1] = 1;
	ok_error(open_written("wrong-rank", &s, &m, &err, config_edit(qwen3_json, NULL)), &err, GM_EFORMAT,
		 "tensor 'model.norm.weight' has shape [8, 1], expected [8]", "a wrong rank is refused");

	spec_standard(&s, &cfg);
	spec_remove(&s, "model.layers.0.mlp.up_proj.weight");
	ok_error(open_written("missing", &s, &m, &err, config_edit(qwen3_json, NULL)), &err, GM_ENOENT,
		 "missing tensor 'model.layers.0.mlp.up_proj.weight' ([16, 8]), needed by Qwen3ForCausalLM",
		 "a missing tensor is named with its expected shape");

	spec_standard(&s, &cfg);
	spec_remove(&s, "model.layers.1.self_attn.k_norm.weight");
	ok_error(open_written("missing-norm", &s, &m, &err, config_edit(qwen3_json, NULL)), &err, GM_ENOENT,
		 "missing tensor 'model.layers.1.self_attn.k_norm.weight' ([4])",
		 "Qwen3 needs its k_norm");

	spec_standard(&s, &cfg);
	ok_error(open_written("untied-no-head", &s, &m, &err,
			      config_edit(qwen3_json, "tie_word_embeddings=false", NULL)), &err, GM_ENOENT,
		 "missing tensor 'lm_head.weight' ([32, 8])", "untied without lm_head.weight");

	spec_standard(&s, &cfg);
	spec_find(&s, "model.layers.0.mlp.gate_proj.weight")->dtype = GM_DTYPE_I32;
	ok_error(open_written("int-dtype", &s, &m, &err, config_edit(qwen3_json, NULL)), &err, GM_EUNSUPPORTED,
		 "tensor 'model.layers.0.mlp.gate_proj.weight' has dtype I32; expected a float type",
		 "an integer tensor is refused");

	spec_standard(&s, &cfg);
	spec_add(&s, GM_DTYPE_F32, 1, 8, 0, "model.layers.0.self_attn.o_proj.bias");
	ok_error(open_written("extra", &s, &m, &err, config_edit(qwen3_json, NULL)), &err, GM_EFORMAT,
		 "unexpected tensor 'model.layers.0.self_attn.o_proj.bias': Qwen3ForCausalLM with this "
		 "config.json does not use it", "a tensor left over is refused by name");

	spec_standard(&s, &cfg);
	spec_add(&s, GM_DTYPE_F32, 1, 8, 0, "model.layers.2.input_layernorm.weight");
	spec_add(&s, GM_DTYPE_F32, 1, 8, 0, "model.layers.2.post_attention_layernorm.weight");
	ok_error(open_written("extra-layer", &s, &m, &err, config_edit(qwen3_json, NULL)), &err, GM_EFORMAT,
		 "unexpected tensor 'model.layers.2.input_layernorm.weight' and 1 more",
		 "several leftovers are counted");

	spec_standard(&s, &cfg);
	spec_add(&s, GM_DTYPE_F32, 1, 2, 0, "model.layers.0.self_attn.rotary_emb.inv_freq");
	ret = open_written("inv-freq", &s, &m, &err, config_edit(qwen3_json, NULL));
	ok(!ret, "rotary_emb.inv_freq buffers are tolerated (%s)", err.msg);
	gm_model_close(m);

	spec_standard(&s, &cfg);
	spec_add(&s, GM_DTYPE_F32, 2, 32, 8, "lm_head.weight");
	ret = open_written("tied-stored-head", &s, &m, &err, config_edit(qwen3_json, NULL));
	ok(!ret && m && m->lm_head == m->embed_tokens && m->n_params == spec_numel(&s) - 32 * 8,
	   "tied with a stored lm_head.weight: ignored, not counted (%s)", err.msg);
	gm_model_close(m);

	spec_standard(&s, &cfg);
	spec_add(&s, GM_DTYPE_F32, 2, 32, 4, "lm_head.weight");
	ok_error(open_written("tied-bad-head", &s, &m, &err, config_edit(qwen3_json, NULL)), &err, GM_EFORMAT,
		 "tensor 'lm_head.weight' has shape [32, 4], expected [32, 8]",
		 "a stored lm_head.weight is still checked when tied");

	/* Four layers in config.json, two in the weights. */
	spec_standard(&s, &cfg);
	ok_error(open_written("too-few-layers", &s, &m, &err, config_edit(qwen3_json, "num_hidden_layers=4", NULL)),
		 &err, GM_ENOENT, "missing tensor 'model.layers.2.input_layernorm.weight' ([8])",
		 "more layers in config.json than in the weights");
	/* A bogus layer count must be an error, not an allocation of gigabytes. */
	ok_error(open_written("huge-layers", &s, &m, &err,
			      config_edit(qwen3_json, "num_hidden_layers=2000000000", NULL)),
		 &err, GM_ENOENT, "missing tensor 'model.layers.2.input_layernorm.weight'",
		 "num_hidden_layers 2000000000 is reported as a missing tensor");

	/* Qwen2: biases, no q/k norms. */
	parse_config(&cfg, &err, qwen3_json, "architectures=[\"Qwen2ForCausalLM\"]", "model_type=\"qwen2\"", NULL);
	spec_standard(&s, &cfg);
	ret = open_written("qwen2", &s, &m, &err,
			   config_edit(qwen3_json, "architectures=[\"Qwen2ForCausalLM\"]",
				       "model_type=\"qwen2\"", NULL));
	ok(!ret && m && m->layers[1].v_bias && !m->layers[1].q_norm &&
	   m->n_params == gm_model_config_param_count(&m->config) && m->n_params == spec_numel(&s),
	   "Qwen2 with biases opens; parameter count %llu (%s)", m ? (unsigned long long)m->n_params : 0ULL,
	   err.msg);
	gm_model_close(m);
	spec_remove(&s, "model.layers.0.self_attn.k_proj.bias");
	ok_error(open_written("qwen2-no-bias", &s, &m, &err,
			      config_edit(qwen3_json, "architectures=[\"Qwen2ForCausalLM\"]",
					  "model_type=\"qwen2\"", NULL)), &err, GM_ENOENT,
		 "missing tensor 'model.layers.0.self_attn.k_proj.bias' ([4]), needed by Qwen2ForCausalLM",
		 "Qwen2 without its k_proj bias");

	/* Llama: a Qwen3 checkpoint under a Llama config has q/k norms left over. */
	parse_config(&cfg, &err, qwen3_json, NULL);
	spec_standard(&s, &cfg);
	snprintf(want, sizeof(want), "unexpected tensor 'model.layers.0.self_attn.k_norm.weight' and 3 more: "
		 "LlamaForCausalLM with this config.json does not use them");
	ok_error(open_written("llama-qk-norm", &s, &m, &err,
			      config_edit(qwen3_json, "architectures=[\"LlamaForCausalLM\"]", NULL)), &err, GM_EFORMAT,
		 want, "Qwen3 weights under a Llama config are refused");

	ok_error(gm_model_open("/nonexistent/model", &m, &err), &err, GM_ENOENT,
		 "/nonexistent/model: not a model directory (no such directory)", "a missing directory");
	{
		char *file = gm_path_join(tmpdir, "qwen3-ok/config.json"), want_file[PATH_MAX + 64];

		snprintf(want_file, sizeof(want_file), "%s: not a model directory (a file; give the directory", file);
		ok_error(gm_model_open(file, &m, &err), &err, GM_ENOENT, want_file, "a file is not a model directory");
		free(file);
	}
}

/* The checked-in models. */
static void test_fixtures(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_model *m;
	char *dir;
	int ret;

	dir = gm_path_join(tap_srcdir(), "t/fixtures/models/tiny-qwen3-f32");
	ret = gm_model_open(dir, &m, &err);
	ok(!ret, "tiny-qwen3-f32 opens (%s)", err.msg);
	if (!ret) {
		const gm_model_config *c = &m->config;
		const gm_generation_config *g = &m->generation;

		ok(m->n_params == 663120, "tiny-qwen3-f32 has 663120 parameters (%llu)",
		   (unsigned long long)m->n_params);
		ok(gm_model_config_param_count(c) == m->n_params, "the config implies the same count");
		ok(c->arch == GM_ARCH_QWEN3 && c->num_hidden_layers == 3 && c->hidden_size == 64 &&
		   c->intermediate_size == 160 && c->num_attention_heads == 4 && c->num_key_value_heads == 1 &&
		   c->vocab_size == 4096 && c->dtype == GM_DTYPE_F32 && c->rope_theta == 1e6,
		   "its config");
		ok(c->head_dim == 24 && m->layers[2].q_proj->shape[0] == 96 && m->layers[2].k_norm->shape[0] == 24,
		   "its explicit head_dim (24, not 64 / 4)");
		ok(!c->tie_word_embeddings && m->lm_head != m->embed_tokens &&
		   !strcmp(m->lm_head->name, "lm_head.weight"), "untied: its own lm_head");
		ok(c->n_eos == 1 && c->eos_token_ids[0] == 4093 && g->n_eos == 2 && g->eos_token_ids[0] == 4093 &&
		   g->eos_token_ids[1] == 4091, "eos ids: 4093 in config.json, [4093, 4091] in generation_config.json");
		ok(g->do_sample && g->temperature == 0.7 && g->top_p == 0.8 && g->top_k == 20,
		   "its sampling defaults");
		gm_model_close(m);
	}
	free(dir);

	dir = gm_path_join(tap_srcdir(), "t/fixtures/models/tiny-qwen3-vocab151k");
	ret = gm_model_open(dir, &m, &err);
	ok(!ret && m->n_params == 4892896 && m->config.tie_word_embeddings && m->lm_head == m->embed_tokens &&
	   m->config.dtype == GM_DTYPE_BF16 && m->config.head_dim == 16,
	   "tiny-qwen3-vocab151k: tied, bf16, 4892896 parameters (%s)", err.msg);
	if (!ret)
		gm_model_close(m);
	free(dir);

	/*
	 * 5770880 is the sum of the shapes in the safetensors header, computed
	 * independently with python3 (json.loads of the header, product of each
	 * "shape").
	 */
	dir = gm_path_join(tap_srcdir(), "contrib/models/pocket-qwen3");
	ret = gm_model_open(dir, &m, &err);
	ok(!ret && m->n_params == 5770880 && gm_model_config_param_count(&m->config) == 5770880,
	   "pocket-qwen3 has 5770880 parameters (%s)", err.msg);
	ok(!ret && m->config.num_hidden_layers == 6 && m->config.tie_word_embeddings &&
	   m->config.head_dim == 32 && gm_weights_count(m->weights) == 68 && m->generation.top_k == 40,
	   "pocket-qwen3: 6 layers, tied, head_dim 32, 68 tensors, top_k 40");
	if (!ret)
		gm_model_close(m);
	free(dir);
}

int main(void)
{
	char *cmd;

	snprintf(tmpdir, sizeof(tmpdir), "%s/gm-test-config-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir)) {
		printf("Bail out! cannot create a temporary directory\n");
		return 1;
	}
	test_spellings();
	test_rope_scaling();
	test_head_dim_and_tying();
	test_architectures();
	test_required_fields();
	test_config_files();
	test_generation();
	test_roundtrip();
	test_binding();
	test_fixtures();
	cmd = gm_path_join("rm -rf ", tmpdir);
	if (system(cmd) != 0)
		tap_diag("could not remove %s", tmpdir);
	free(cmd);
	return tap_done();
}
