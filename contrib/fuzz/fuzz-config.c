/*
 * fuzz-config.c - libFuzzer target for config.json and
 * generation_config.json (libcore/formats/config.c).
 *
 * Each input is one JSON document, given to both parsers (a config.json
 * and a generation_config.json share their token-id keys, so one corpus
 * serves both).  A refusal must explain itself.  An accepted config.json
 * must hold values in the ranges the engine relies on, and must come back
 * unchanged through gm_model_config_to_json and the parser (the writer is
 * what `git model synth` uses); an accepted generation_config.json must
 * hold sampling values in range.
 */
#include <math.h>

#include <json-c/json.h>

#include "base/json.h"
#include "formats/config.h"
#include "fuzz-common.h"

/* What the engine assumes of a config it was given (see config.h, forward.c). */
static void check_model_config(const gm_model_config *c)
{
	int i;

	CHECK(c->arch == GM_ARCH_QWEN3 || c->arch == GM_ARCH_QWEN2 || c->arch == GM_ARCH_LLAMA);
	CHECK(memchr(c->architecture, 0, sizeof(c->architecture)) && c->architecture[0]);
	CHECK(memchr(c->model_type, 0, sizeof(c->model_type)));
	CHECK(c->vocab_size > 0 && c->vocab_size <= INT32_MAX);
	CHECK(c->hidden_size > 0 && c->hidden_size <= INT32_MAX);
	CHECK(c->intermediate_size > 0 && c->intermediate_size <= INT32_MAX);
	CHECK(c->num_hidden_layers > 0 && c->num_hidden_layers <= INT32_MAX);
	CHECK(c->num_attention_heads > 0 && c->num_key_value_heads > 0);
	CHECK(c->num_attention_heads % c->num_key_value_heads == 0);
	CHECK(c->head_dim > 0 && c->head_dim % 2 == 0);
	CHECK(c->num_attention_heads * c->head_dim <= INT32_MAX);
	CHECK(c->max_position_embeddings > 0);
	CHECK(c->rms_norm_eps > 0 && isfinite(c->rms_norm_eps));
	CHECK(c->rope_theta > 0 && isfinite(c->rope_theta));
	if (c->rope_scaling == GM_ROPE_LLAMA3) {
		CHECK(c->rope_factor > 0 && isfinite(c->rope_factor));
		CHECK(c->rope_low_freq_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor);
		CHECK(isfinite(c->rope_high_freq_factor));
		CHECK(c->rope_original_max_position_embeddings > 0);
	} else {
		CHECK(c->rope_scaling == GM_ROPE_NONE);
	}
	CHECK((unsigned)c->dtype < GM_DTYPE_COUNT);
	CHECK(c->bos_token_id >= -1);
	CHECK(c->n_eos >= 0 && c->n_eos <= GM_MAX_EOS);
	for (i = 0; i < c->n_eos; i++)
		CHECK(c->eos_token_ids[i] >= 0);
	CHECK(c->tie_word_embeddings == 0 || c->tie_word_embeddings == 1);
	(void)gm_model_config_param_count(c); /* UBSan watches the arithmetic */
}

static void check_generation_config(const gm_generation_config *g)
{
	int i;

	CHECK(g->n_eos >= 0 && g->n_eos <= GM_MAX_EOS);
	for (i = 0; i < g->n_eos; i++)
		CHECK(g->eos_token_ids[i] >= 0);
	CHECK(g->bos_token_id >= -1 && g->pad_token_id >= -1);
	CHECK(g->temperature >= 0 && isfinite(g->temperature));
	CHECK(g->top_p >= 0 && g->top_p <= 1);
	CHECK(g->min_p >= 0 && g->min_p <= 1);
	CHECK(g->repetition_penalty > 0 && isfinite(g->repetition_penalty));
	CHECK(g->top_k >= 0);
	CHECK(g->max_new_tokens >= -1);
}

/* config -> JSON -> config gives the same values. */
static void round_trip(const gm_model_config *a)
{
	json_object *o = gm_model_config_to_json(a);
	const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	json_object *again = NULL;
	gm_model_config b;
	gm_error err = GM_ERROR_INIT;

	/* Through text, as synth writes it and a later load reads it. */
	CHECK(!gm_json_parse(text, strlen(text), "rewritten", &again, &err));
	if (gm_model_config_parse(again, "rewritten config.json", &b, &err)) {
		fprintf(stderr, "the parser refuses what the writer wrote: %s\n%s\n", err.msg, text);
		abort();
	}
	CHECK(a->arch == b.arch);
	CHECK(a->vocab_size == b.vocab_size && a->hidden_size == b.hidden_size);
	CHECK(a->intermediate_size == b.intermediate_size && a->num_hidden_layers == b.num_hidden_layers);
	CHECK(a->num_attention_heads == b.num_attention_heads && a->num_key_value_heads == b.num_key_value_heads);
	CHECK(a->head_dim == b.head_dim && a->max_position_embeddings == b.max_position_embeddings);
	CHECK(a->rms_norm_eps == b.rms_norm_eps && a->rope_theta == b.rope_theta);
	CHECK(a->rope_scaling == b.rope_scaling);
	if (a->rope_scaling == GM_ROPE_LLAMA3) {
		CHECK(a->rope_factor == b.rope_factor && a->rope_low_freq_factor == b.rope_low_freq_factor);
		CHECK(a->rope_high_freq_factor == b.rope_high_freq_factor);
		CHECK(a->rope_original_max_position_embeddings == b.rope_original_max_position_embeddings);
	}
	CHECK(a->tie_word_embeddings == b.tie_word_embeddings && a->attention_bias == b.attention_bias);
	CHECK(a->qk_norm == b.qk_norm && a->dtype == b.dtype && a->bos_token_id == b.bos_token_id);
	CHECK(a->n_eos == b.n_eos && !memcmp(a->eos_token_ids, b.eos_token_ids, (size_t)a->n_eos * 8));
	json_object_put(again);
	json_object_put(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_object *obj = NULL;
	gm_error err = GM_ERROR_INIT;
	gm_model_config cfg;
	gm_generation_config gen;
	int ret;

	ret = gm_json_parse((const char *)data, size, "fuzz.json", &obj, &err);
	if (ret) {
		CHECK_REFUSAL(ret, err);
		return 0;
	}
	ret = gm_model_config_parse(obj, "config.json", &cfg, &err);
	if (ret) {
		CHECK_REFUSAL(ret, err);
		gm_generation_config_defaults(&gen, NULL);
	} else {
		fuzz_accepted("config.json");
		check_model_config(&cfg);
		round_trip(&cfg);
		gm_generation_config_defaults(&gen, &cfg);
	}
	gm_error_clear(&err);
	ret = gm_generation_config_parse(obj, "generation_config.json", &gen, &err);
	if (ret)
		CHECK_REFUSAL(ret, err);
	else {
		fuzz_accepted("generation_config.json");
		check_generation_config(&gen);
	}
	json_object_put(obj);
	return 0;
}
