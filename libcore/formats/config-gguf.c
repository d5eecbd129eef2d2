/*
 * config-gguf.c - a model's config and generation defaults from a GGUF
 * file's metadata (see config.h).
 *
 * The metadata is spelled into the config.json object transformers would
 * have, then parsed by gm_model_config_parse: one set of checks for both
 * sources, and error messages that name the GGUF file.  GGUF keys are the
 * llama.cpp ones: {arch}.block_count, {arch}.embedding_length, ...; the
 * end-of-generation tokens are those llama.cpp stops at: eos, eot and eom
 * ids, and the vocabulary's usual end-of-turn tokens.
 */
#include "formats/config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/json.h"

static const struct {
	const char *gguf, *hf;
} gguf_archs[] = {
	{ "qwen3", "Qwen3ForCausalLM" },
	{ "qwen2", "Qwen2ForCausalLM" },
	{ "llama", "LlamaForCausalLM" },
};

/* {arch}.suffix as an integer; *found 0 (and no error) when absent. */
static int arch_int(const gm_gguf *g, const char *arch, const char *suffix, int required, int64_t *out,
		    gm_error *err)
{
	char key[160];
	int ret;

	snprintf(key, sizeof(key), "%s.%s", arch, suffix);
	if (gm_gguf_find_kv(g, key) < 0) {
		if (required)
			return gm_error_set(err, GM_EFORMAT, "%s: missing metadata key '%s'", gm_gguf_path(g), key);
		*out = -1;
		return 0;
	}
	if ((ret = gm_gguf_get_int(g, key, out, err)))
		return ret;
	if (*out <= 0 || *out > INT32_MAX)
		return gm_error_set(err, GM_EFORMAT, "%s: '%s' is %lld, not a size", gm_gguf_path(g), key,
				    (long long)*out);
	return 0;
}

static int arch_float(const gm_gguf *g, const char *arch, const char *suffix, double *out, gm_error *err)
{
	char key[160];

	snprintf(key, sizeof(key), "%s.%s", arch, suffix);
	if (gm_gguf_find_kv(g, key) < 0)
		return 0;
	return gm_gguf_get_float(g, key, out, err);
}

/* An optional token id key; -1 when absent. */
static int token_key(const gm_gguf *g, const char *key, int64_t *out, gm_error *err)
{
	*out = -1;
	if (gm_gguf_find_kv(g, key) < 0)
		return 0;
	return gm_gguf_get_int(g, key, out, err);
}

static void add_id(int64_t *ids, int *n, int64_t id)
{
	int i;

	if (id < 0 || *n == GM_MAX_EOS)
		return;
	for (i = 0; i < *n; i++)
		if (ids[i] == id)
			return;
	ids[(*n)++] = id;
}

/* End-of-generation ids: eos, eot, eom, then control tokens spelled as the
 * common end-of-turn markers (the same list llama.cpp checks). */
static int eog_ids(const gm_gguf *g, int64_t *ids, int *n, gm_error *err)
{
	static const char *const keys[] = { "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
					    "tokenizer.ggml.eom_token_id" };
	static const char *const texts[] = { "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
					     "<|endoftext|>", "<|eom_id|>", "<EOT>" };
	enum gm_gguf_vtype et;
	uint64_t count = 0, i;
	size_t k;
	int ret;

	*n = 0;
	for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		int64_t id;
		if ((ret = token_key(g, keys[k], &id, err)))
			return ret;
		add_id(ids, n, id);
	}
	if (gm_gguf_find_kv(g, "tokenizer.ggml.tokens") < 0 ||
	    gm_gguf_get_array(g, "tokenizer.ggml.tokens", &et, &count, err) || et != GM_GGUF_STRING)
		return 0;
	for (i = 0; i < count; i++) {
		const char *s;
		size_t len;
		int64_t type = 3;

		if ((ret = gm_gguf_array_string(g, "tokenizer.ggml.tokens", i, &s, &len, err)))
			return ret;
		if (len < 5 || len > 16 || s[0] != '<')
			continue;
		if (gm_gguf_find_kv(g, "tokenizer.ggml.token_type") >= 0 &&
		    gm_gguf_array_int(g, "tokenizer.ggml.token_type", i, &type, NULL))
			type = 0;
		if (type != 3) /* control tokens only */
			continue;
		for (k = 0; k < sizeof(texts) / sizeof(texts[0]); k++)
			if (len == strlen(texts[k]) && !memcmp(s, texts[k], len))
				add_id(ids, n, (int64_t)i);
	}
	return 0;
}

/*
 * Llama 3.1+ store their rope scaling as a tensor of per-dimension divisors
 * (rope_freqs.weight) rather than as parameters.  The divisors of llama3
 * scaling are 1 (high frequencies), factor (low), and a smooth blend
 * between: recover factor as the largest and check every divisor against
 * the llama3 formula with the usual low/high factors and original context.
 */
static int llama3_rope(const gm_gguf *g, const char *arch, json_object *o, int64_t head_dim, double theta,
		       gm_error *err)
{
	const gm_tensor *t = gm_gguf_find_tensor(g, "rope_freqs.weight");
	double factor = 0, low = 1.0, high = 4.0;
	int64_t orig = 8192, i, n;
	json_object *rs;

	if (!t)
		return 0;
	n = head_dim / 2;
	if (t->dtype != GM_DTYPE_F32 || t->ndim != 1 || t->shape[0] != n)
		return gm_error_set(err, GM_EFORMAT, "%s: rope_freqs.weight must be f32 [%lld]", gm_gguf_path(g),
				    (long long)n);
	for (i = 0; i < n; i++)
		factor = fmax(factor, ((const float *)t->data)[i]);
	{
		int64_t v;
		if (arch_int(g, arch, "rope.scaling.original_context_length", 0, &v, err))
			return err ? err->code : GM_EFORMAT;
		if (v > 0)
			orig = v;
	}
	for (i = 0; i < n; i++) {
		double freq = 1.0 / pow(theta, (double)(2 * i) / (double)head_dim);
		double wavelen = 2 * M_PI / freq, want;

		if (wavelen < orig / high)
			want = 1;
		else if (wavelen > orig / low)
			want = factor;
		else {
			double smooth = (orig / wavelen - low) / (high - low);
			want = 1 / ((1 - smooth) / factor + smooth);
		}
		if (fabs(((const float *)t->data)[i] - want) > 1e-3 * want)
			return gm_error_set(err, GM_EUNSUPPORTED,
					    "%s: rope_freqs.weight is not llama3 rope scaling (factor %g, low 1, high "
					    "4, original context %lld): dimension %lld is %g, not %g", gm_gguf_path(g),
					    factor, (long long)orig, (long long)i, ((const float *)t->data)[i], want);
	}
	if (factor == 1.0)
		return 0;
	rs = json_object_new_object();
	json_object_object_add(rs, "rope_type", json_object_new_string("llama3"));
	json_object_object_add(rs, "factor", json_object_new_double(factor));
	json_object_object_add(rs, "low_freq_factor", json_object_new_double(low));
	json_object_object_add(rs, "high_freq_factor", json_object_new_double(high));
	json_object_object_add(rs, "original_max_position_embeddings", json_object_new_int64(orig));
	json_object_object_add(o, "rope_scaling", rs);
	return 0;
}

static void add_int(json_object *o, const char *key, int64_t v)
{
	json_object_object_add(o, key, json_object_new_int64(v));
}

int gm_model_config_from_gguf(const gm_gguf *g, gm_model_config *cfg, gm_error *err)
{
	const char *path = gm_gguf_path(g), *arch, *scaling;
	const gm_tensor *embd = gm_gguf_find_tensor(g, "token_embd.weight");
	int64_t layers, hidden, ff, heads, kv_heads, head_dim, ctx, vocab = -1, id;
	int64_t eos[GM_MAX_EOS];
	double eps = 1e-6, theta = 10000.0;
	json_object *o, *archs, *ids;
	size_t i;
	int n_eos, ret;

	memset(cfg, 0, sizeof(*cfg));
	if ((ret = gm_gguf_get_string(g, "general.architecture", &arch, NULL, err)))
		return ret;
	for (i = 0; i < sizeof(gguf_archs) / sizeof(gguf_archs[0]); i++)
		if (!strcmp(arch, gguf_archs[i].gguf))
			break;
	if (i == sizeof(gguf_archs) / sizeof(gguf_archs[0]))
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: GGUF architecture '%s' is not supported (supported: qwen3, qwen2, llama)",
				    path, arch);
	if ((ret = arch_int(g, arch, "block_count", 1, &layers, err)) ||
	    (ret = arch_int(g, arch, "embedding_length", 1, &hidden, err)) ||
	    (ret = arch_int(g, arch, "feed_forward_length", 1, &ff, err)) ||
	    (ret = arch_int(g, arch, "attention.head_count", 1, &heads, err)) ||
	    (ret = arch_int(g, arch, "attention.head_count_kv", 0, &kv_heads, err)) ||
	    (ret = arch_int(g, arch, "attention.key_length", 0, &head_dim, err)) ||
	    (ret = arch_int(g, arch, "context_length", 1, &ctx, err)) ||
	    (ret = arch_int(g, arch, "vocab_size", 0, &vocab, err)) ||
	    (ret = arch_float(g, arch, "attention.layer_norm_rms_epsilon", &eps, err)) ||
	    (ret = arch_float(g, arch, "rope.freq_base", &theta, err)))
		return ret;
	{
		char key[160];
		snprintf(key, sizeof(key), "%s.rope.scaling.type", arch);
		if (gm_gguf_find_kv(g, key) >= 0) {
			if ((ret = gm_gguf_get_string(g, key, &scaling, NULL, err)))
				return ret;
			if (strcmp(scaling, "none"))
				return gm_error_set(err, GM_EUNSUPPORTED, "%s: rope scaling '%s' is not supported",
						    path, scaling);
		}
	}
	/* The embedding's rows are the vocabulary size transformers uses
	 * (Qwen pads it); the token list is padded to match by the converter. */
	if (embd && embd->ndim == 2)
		vocab = embd->shape[0];
	if (vocab <= 0)
		return gm_error_set(err, GM_EFORMAT, "%s: no token_embd.weight [vocab, hidden] to size the vocabulary",
				    path);
	if (kv_heads < 0)
		kv_heads = heads;
	if (head_dim < 0)
		head_dim = hidden / heads;
	o = json_object_new_object();
	archs = json_object_new_array();
	json_object_array_add(archs, json_object_new_string(gguf_archs[i].hf));
	json_object_object_add(o, "architectures", archs);
	json_object_object_add(o, "model_type", json_object_new_string(arch));
	add_int(o, "vocab_size", vocab);
	add_int(o, "hidden_size", hidden);
	add_int(o, "intermediate_size", ff);
	add_int(o, "num_hidden_layers", layers);
	add_int(o, "num_attention_heads", heads);
	add_int(o, "num_key_value_heads", kv_heads);
	add_int(o, "head_dim", head_dim);
	add_int(o, "max_position_embeddings", ctx);
	json_object_object_add(o, "rms_norm_eps", json_object_new_double(eps));
	json_object_object_add(o, "rope_theta", json_object_new_double(theta));
	json_object_object_add(o, "tie_word_embeddings",
			       json_object_new_boolean(!gm_gguf_find_tensor(g, "output.weight")));
	json_object_object_add(o, "torch_dtype", json_object_new_string(
		embd && embd->dtype == GM_DTYPE_F32 ? "float32" : embd && embd->dtype == GM_DTYPE_F16 ? "float16" :
		"bfloat16"));
	if ((ret = llama3_rope(g, arch, o, head_dim, theta, err)) ||
	    (ret = token_key(g, "tokenizer.ggml.bos_token_id", &id, err)) ||
	    (ret = eog_ids(g, eos, &n_eos, err))) {
		json_object_put(o);
		return ret;
	}
	if (id >= 0)
		add_int(o, "bos_token_id", id);
	ids = json_object_new_array();
	for (i = 0; i < (size_t)n_eos; i++)
		json_object_array_add(ids, json_object_new_int64(eos[i]));
	json_object_object_add(o, "eos_token_id", ids);
	ret = gm_model_config_parse(o, path, cfg, err);
	json_object_put(o);
	return ret;
}

int gm_generation_config_from_gguf(const gm_gguf *g, const gm_model_config *cfg, gm_generation_config *gen,
				   gm_error *err)
{
	static const char *const keys[][2] = {
		{ "general.sampling.temp", "temperature" }, { "general.sampling.top_p", "top_p" },
		{ "general.sampling.top_k", "top_k" },      { "general.sampling.min_p", "min_p" },
		{ "general.sampling.penalty_repeat", "repetition_penalty" },
	};
	json_object *o = json_object_new_object();
	int64_t pad;
	size_t i;
	int ret = 0, any = 0;

	gm_generation_config_defaults(gen, cfg);
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]) && !ret; i++) {
		double v;
		if (gm_gguf_find_kv(g, keys[i][0]) < 0)
			continue;
		if (!(ret = gm_gguf_get_float(g, keys[i][0], &v, err))) {
			json_object_object_add(o, keys[i][1], i == 2 ? json_object_new_int64((int64_t)v) :
					       json_object_new_double(v));
			any = 1;
		}
	}
	if (!ret && any)
		json_object_object_add(o, "do_sample", json_object_new_boolean(1));
	if (!ret && !(ret = token_key(g, "tokenizer.ggml.padding_token_id", &pad, err)) && pad >= 0)
		add_int(o, "pad_token_id", pad);
	if (!ret)
		ret = gm_generation_config_parse(o, gm_gguf_path(g), gen, err);
	json_object_put(o);
	return ret;
}
