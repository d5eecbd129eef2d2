/* gguf-export.c - a model directory as a GGUF file (see gguf-export.h). */
#include "formats/gguf-export.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "formats/gguf.h"
#include "formats/quant.h"

/* llama.cpp's file types: name, general.file_type id, base matrix type. */
static const struct {
	const char *name;
	int ftype;
	enum gm_dtype base;
} ftypes[] = {
	{ "F32", 0, GM_DTYPE_F32 },      { "F16", 1, GM_DTYPE_F16 },      { "BF16", 32, GM_DTYPE_BF16 },
	{ "Q8_0", 7, GM_DTYPE_Q8_0 },    { "Q4_0", 2, GM_DTYPE_Q4_0 },    { "Q4_1", 3, GM_DTYPE_Q4_1 },
	{ "Q5_0", 8, GM_DTYPE_Q5_0 },    { "Q5_1", 9, GM_DTYPE_Q5_1 },    { "Q6_K", 18, GM_DTYPE_Q6_K },
	{ "Q4_K_S", 14, GM_DTYPE_Q4_K }, { "Q4_K_M", 15, GM_DTYPE_Q4_K }, { "Q5_K_S", 16, GM_DTYPE_Q5_K },
	{ "Q5_K_M", 17, GM_DTYPE_Q5_K },
};
#define N_FTYPES (sizeof(ftypes) / sizeof(ftypes[0]))

static int find_ftype(const char *name)
{
	size_t i;

	for (i = 0; i < N_FTYPES; i++)
		if (!strcasecmp(name, ftypes[i].name))
			return (int)i;
	return -1;
}

int gm_gguf_export_type_known(const char *name)
{
	return find_ftype(name) >= 0;
}

const char *gm_gguf_export_types(void)
{
	return "F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q6_K Q4_K_S Q4_K_M Q5_K_S Q5_K_M";
}

static int is_float_type(enum gm_dtype t)
{
	return t == GM_DTYPE_F32 || t == GM_DTYPE_F16 || t == GM_DTYPE_BF16;
}

static int use_more_bits(int64_t i, int64_t n)
{
	return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* The type of a matrix named (GGUF) name in file type ft; row: its row length; big: llama.cpp
 * takes the model for a 70B (80 layers: Qwen2, Llama with grouped kv heads), whose attn_v it
 * gives Q5_K where the mix says Q4_K (its kv heads are shared by 8 query heads). */
static enum gm_dtype matrix_type(int ft, const char *name, int tied, int64_t n_layer, int64_t row, int big)
{
	const char *f = ftypes[ft].name;
	enum gm_dtype t = ftypes[ft].base;
	int km = !strcmp(f, "Q4_K_M") || !strcmp(f, "Q5_K_M");
	long layer = -1;

	sscanf(name, "blk.%ld.", &layer);
	if (!strcmp(name, "output.weight") || (tied && !strcmp(name, "token_embd.weight"))) {
		if (!is_float_type(t) && t != GM_DTYPE_Q8_0)
			t = row % 256 ? GM_DTYPE_Q8_0 : GM_DTYPE_Q6_K;
		return t;
	}
	if (strstr(name, "attn_v.weight")) {
		if (km && use_more_bits(layer, n_layer))
			t = GM_DTYPE_Q6_K;
		else if (!strcmp(f, "Q4_K_S") && layer < 4)
			t = GM_DTYPE_Q5_K;
		if (big && t == GM_DTYPE_Q4_K)
			t = GM_DTYPE_Q5_K;
	} else if (strstr(name, "ffn_down")) {
		if (km && use_more_bits(layer, n_layer))
			t = GM_DTYPE_Q6_K;
		else if (!strcmp(f, "Q4_K_S") && layer < n_layer / 8)
			t = GM_DTYPE_Q5_K;
	}
	if (row % 256 && (t == GM_DTYPE_Q4_K || t == GM_DTYPE_Q5_K || t == GM_DTYPE_Q6_K))
		t = t == GM_DTYPE_Q4_K ? GM_DTYPE_Q5_0 : t == GM_DTYPE_Q5_K ? GM_DTYPE_Q5_1 : GM_DTYPE_Q8_0;
	return t;
}

/* ------------------------------------------------------------ tensors */

static const struct {
	const char *hf, *gguf;
} layer_names[] = {
	{ "input_layernorm.weight", "attn_norm.weight" },
	{ "self_attn.q_proj.weight", "attn_q.weight" },
	{ "self_attn.k_proj.weight", "attn_k.weight" },
	{ "self_attn.v_proj.weight", "attn_v.weight" },
	{ "self_attn.q_proj.bias", "attn_q.bias" },
	{ "self_attn.k_proj.bias", "attn_k.bias" },
	{ "self_attn.v_proj.bias", "attn_v.bias" },
	{ "self_attn.o_proj.weight", "attn_output.weight" },
	{ "self_attn.q_norm.weight", "attn_q_norm.weight" },
	{ "self_attn.k_norm.weight", "attn_k_norm.weight" },
	{ "post_attention_layernorm.weight", "ffn_norm.weight" },
	{ "mlp.gate_proj.weight", "ffn_gate.weight" },
	{ "mlp.up_proj.weight", "ffn_up.weight" },
	{ "mlp.down_proj.weight", "ffn_down.weight" },
};

struct out_tensor {
	char name[96];
	long layer; /* -1: global */
	const gm_tensor *src;
	int64_t permute_heads; /* Llama's q/k rows: permuted for this many heads; 0: as they are */
};

static int cmp_out(const void *a, const void *b)
{
	const struct out_tensor *x = a, *y = b;

	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* The GGUF name of a bound tensor, or "" when it has none (a tied lm_head). */
static void gguf_name(const char *hf, char *out, size_t n, long *layer)
{
	long l;
	int used = 0;
	size_t i;

	*layer = -1;
	out[0] = 0;
	if (!strcmp(hf, "model.embed_tokens.weight"))
		snprintf(out, n, "token_embd.weight");
	else if (!strcmp(hf, "model.norm.weight"))
		snprintf(out, n, "output_norm.weight");
	else if (!strcmp(hf, "lm_head.weight"))
		snprintf(out, n, "output.weight");
	else if (sscanf(hf, "model.layers.%ld.%n", &l, &used) == 1 && used)
		for (i = 0; i < sizeof(layer_names) / sizeof(layer_names[0]); i++)
			if (!strcmp(hf + used, layer_names[i].hf)) {
				snprintf(out, n, "blk.%ld.%s", l, layer_names[i].gguf);
				*layer = l;
			}
}

/* ------------------------------------------------------------ tokenizer */

static json_object *get(json_object *o, const char *key)
{
	json_object *v = NULL;

	return o && json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static int looks_special(const char *s)
{
	size_t n = strlen(s);

	return n >= 4 && !strncmp(s, "<|", 2) && !strcmp(s + n - 2, "|>");
}

/* The id of a tokenizer_config.json special token (a string or {"content": ...}), or -1. */
static int64_t special_id(json_object *tcfg, const char *key, char **tokens, int64_t n)
{
	json_object *v = get(tcfg, key);
	const char *s;
	int64_t i;

	if (v && json_object_is_type(v, json_type_object))
		v = get(v, "content");
	if (!v || !json_object_is_type(v, json_type_string))
		return -1;
	s = json_object_get_string(v);
	for (i = 0; i < n; i++)
		if (tokens[i] && !strcmp(tokens[i], s))
			return i;
	return -1;
}

/*
 * tokenizer.ggml.pre for tokenizer.json's pre-tokenizer: the name whose
 * split the GGUF reader (gguf-vocab.c) maps back to the same pre-tokenizer,
 * chosen by the actual Split regex, ByteLevel's use_regex, the NFC
 * normalizer and ignore_merges.  A tokenizer without a ByteLevel step is not
 * byte-level BPE (Llama 2's SentencePiece-style vocabulary: byte fallback,
 * Metaspace): refused, as is a pre-tokenizer no name describes.
 */
static int pre_name(json_object *tok, const char *path, char *out, size_t n, gm_error *err)
{
	json_object *pre = get(tok, "pre_tokenizer"), *list = NULL, *norm = get(tok, "normalizer"), *v;
	const char *split = NULL, *name;
	int byte_level = 0, use_regex = 0, nfc, ignore_merges, steps = 0;
	size_t k, len;

	if (pre && json_object_is_type(pre, json_type_object)) {
		v = get(pre, "type");
		if (v && json_object_is_type(v, json_type_string) && !strcmp(json_object_get_string(v), "Sequence"))
			list = get(pre, "pretokenizers");
	}
	for (k = 0; pre && k < (list ? json_object_array_length(list) : 1); k++) {
		json_object *p = list ? json_object_array_get_idx(list, k) : pre;
		const char *type = get(p, "type") ? json_object_get_string(get(p, "type")) : "";

		steps++;
		if (!strcmp(type, "ByteLevel") && !byte_level) {
			byte_level = 1;
			use_regex = !get(p, "use_regex") || json_object_get_boolean(get(p, "use_regex"));
		} else if (!strcmp(type, "Split") && !split && !byte_level && get(get(p, "pattern"), "Regex")) {
			split = json_object_get_string(get(get(p, "pattern"), "Regex"));
		} else {
			steps = -1;
			break;
		}
	}
	v = get(get(tok, "model"), "byte_fallback");
	if (!byte_level || (v && json_object_get_boolean(v)))
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: not a byte-level BPE tokenizer (%s): GGUF export writes "
				    "byte-level BPE ('gpt2') vocabularies only", path,
				    v && json_object_get_boolean(v) ? "BPE with byte fallback, a SentencePiece vocabulary "
				    "as Llama 2's" : "no ByteLevel pre-tokenizer");
	v = get(norm, "type");
	nfc = v && json_object_is_type(v, json_type_string) && !strcmp(json_object_get_string(v), "NFC");
	if (norm && !nfc)
		steps = -1;
	v = get(get(tok, "model"), "ignore_merges");
	ignore_merges = v && json_object_get_boolean(v);
	name = steps < 0 ? NULL : gm_gguf_pre_name(split, use_regex, nfc, ignore_merges, &len);
	if (!name)
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: no tokenizer.ggml.pre names this pre-tokenizer "
				    "(split regex %s%s, ByteLevel use_regex %s, %s, ignore_merges %s): GGUF export "
				    "knows qwen2, qwen35, llama-bpe, gpt-2 and smollm", path, split ? split : "none",
				    steps < 0 ? ", or other steps" : "", use_regex ? "true" : "false",
				    nfc ? "NFC" : norm ? "another normalizer" : "no normalizer",
				    ignore_merges ? "true" : "false");
	snprintf(out, n, "%.*s", (int)len, name);
	return 0;
}

/* 1 when tokenizer.json's post-processor puts token bos first in a single
 * sequence (Llama 3's TemplateProcessing "<|begin_of_text|> $A"). */
static int post_adds_bos(json_object *tok, int64_t bos, char **tokens, int64_t n)
{
	json_object *pp = get(tok, "post_processor"), *list = NULL, *v;
	size_t k;

	v = get(pp, "type");
	if (v && json_object_is_type(v, json_type_string) && !strcmp(json_object_get_string(v), "Sequence"))
		list = get(pp, "processors");
	for (k = 0; pp && k < (list ? json_object_array_length(list) : 1); k++) {
		json_object *p = list ? json_object_array_get_idx(list, k) : pp, *single = get(p, "single"), *first, *sp;
		const char *id;

		if (!get(p, "type") || strcmp(json_object_get_string(get(p, "type")), "TemplateProcessing") || !single ||
		    !json_object_is_type(single, json_type_array) || !json_object_array_length(single))
			continue;
		first = json_object_array_get_idx(single, 0);
		sp = get(first, "SpecialToken");
		id = get(sp, "id") ? json_object_get_string(get(sp, "id")) : NULL;
		return id && bos >= 0 && bos < n && tokens[bos] && !strcmp(id, tokens[bos]);
	}
	return 0;
}

static int add_vocab(gm_gguf_writer *w, const gm_model *m, gm_error *err)
{
	char *tj = gm_path_join(m->dir, "tokenizer.json"), *tc = gm_path_join(m->dir, "tokenizer_config.json");
	json_object *tok = NULL, *tcfg = NULL, *vocab, *added, *merges, *v;
	int64_t n = m->config.vocab_size, i, bos, eos, pad;
	char **tokens = gm_xcalloc((size_t)n, sizeof(*tokens));
	size_t *lens = gm_xcalloc((size_t)n, sizeof(*lens));
	int32_t *types = gm_xcalloc((size_t)n, sizeof(*types));
	char **mstr = NULL, pre[32];
	size_t *mlen = NULL, nm = 0, k;
	int ret, add_bos = 0;

	if ((ret = gm_json_parse_file(tj, &tok, err)) ||
	    (gm_is_file(tc) && (ret = gm_json_parse_file(tc, &tcfg, err))))
		goto out;
	v = get(get(tok, "model"), "type");
	vocab = get(get(tok, "model"), "vocab");
	if (!v || !json_object_is_type(v, json_type_string) || strcmp(json_object_get_string(v), "BPE") ||
	    !vocab || !json_object_is_type(vocab, json_type_object)) {
		ret = gm_error_set(err, GM_EUNSUPPORTED, "%s: not a byte-level BPE tokenizer", tj);
		goto out;
	}
	if ((ret = pre_name(tok, tj, pre, sizeof(pre), err)))
		goto out;
	{
		json_object_object_foreach(vocab, text, idv)
		{
			int64_t id = json_object_get_int64(idv);
			if (id >= 0 && id < n && !tokens[id]) {
				tokens[id] = gm_xstrdup(text);
				types[id] = 1;
			}
		}
	}
	added = get(tok, "added_tokens");
	for (k = 0; added && json_object_is_type(added, json_type_array) && k < json_object_array_length(added);
	     k++) {
		json_object *a = json_object_array_get_idx(added, k), *c = get(a, "content"), *sp = get(a, "special");
		int64_t id = get(a, "id") ? json_object_get_int64(get(a, "id")) : -1;
		if (!c || id < 0 || id >= n)
			continue;
		free(tokens[id]);
		tokens[id] = gm_xstrdup(json_object_get_string(c));
		types[id] = (sp && json_object_get_boolean(sp)) || looks_special(tokens[id]) ? 3 : 4;
	}
	for (i = 0; i < n; i++) {
		if (!tokens[i]) {
			char pad_name[32];
			snprintf(pad_name, sizeof(pad_name), "[PAD%lld]", (long long)i);
			tokens[i] = gm_xstrdup(pad_name);
			types[i] = 5;
		}
		lens[i] = strlen(tokens[i]);
	}
	merges = get(get(tok, "model"), "merges");
	nm = merges && json_object_is_type(merges, json_type_array) ? json_object_array_length(merges) : 0;
	mstr = gm_xcalloc(nm ? nm : 1, sizeof(*mstr));
	mlen = gm_xcalloc(nm ? nm : 1, sizeof(*mlen));
	for (k = 0; k < nm; k++) {
		json_object *e = json_object_array_get_idx(merges, k);
		gm_buf b = GM_BUF_INIT;
		int p;

		if (json_object_is_type(e, json_type_string)) {
			gm_buf_adds(&b, json_object_get_string(e));
		} else if (json_object_is_type(e, json_type_array) && json_object_array_length(e) == 2) {
			/* the pair form; a space inside a part is written as U+0120, as the converter does */
			for (p = 0; p < 2; p++) {
				const char *s = json_object_get_string(json_object_array_get_idx(e, (size_t)p));
				if (p)
					gm_buf_addch(&b, ' ');
				for (; s && *s; s++)
					if (*s == ' ')
						gm_buf_adds(&b, "\xc4\xa0");
					else
						gm_buf_addch(&b, *s);
			}
		}
		mlen[k] = b.len;
		mstr[k] = b.len ? gm_xstrdup(b.buf) : gm_xstrdup("");
		gm_buf_release(&b);
	}
	if ((ret = gm_gguf_writer_set_string(w, "tokenizer.ggml.model", "gpt2", err)) ||
	    (ret = gm_gguf_writer_set_string(w, "tokenizer.ggml.pre", pre, err)) ||
	    (ret = gm_gguf_writer_set_strings(w, "tokenizer.ggml.tokens", (const char *const *)tokens, lens,
					      (uint64_t)n, err)) ||
	    (ret = gm_gguf_writer_set_int32s(w, "tokenizer.ggml.token_type", types, (uint64_t)n, err)) ||
	    (ret = gm_gguf_writer_set_strings(w, "tokenizer.ggml.merges", (const char *const *)mstr, mlen, nm, err)))
		goto out;
	/* bos: tokenizer_config's, else config.json's; eos likewise (its first) */
	bos = special_id(tcfg, "bos_token", tokens, n);
	if (bos < 0)
		bos = m->config.bos_token_id;
	eos = special_id(tcfg, "eos_token", tokens, n);
	if (eos < 0 && m->config.n_eos)
		eos = m->config.eos_token_ids[0];
	pad = special_id(tcfg, "pad_token", tokens, n);
	if ((bos >= 0 && (ret = gm_gguf_writer_set_int(w, "tokenizer.ggml.bos_token_id", GM_GGUF_UINT32, bos, err))) ||
	    (eos >= 0 && (ret = gm_gguf_writer_set_int(w, "tokenizer.ggml.eos_token_id", GM_GGUF_UINT32, eos, err))) ||
	    (pad >= 0 &&
	     (ret = gm_gguf_writer_set_int(w, "tokenizer.ggml.padding_token_id", GM_GGUF_UINT32, pad, err))))
		goto out;
	/* tokenizer_config's flag, else whether the post-processor adds bos
	 * (as llama.cpp's converter decides) */
	if ((v = get(tcfg, "add_bos_token")) && json_object_is_type(v, json_type_boolean))
		add_bos = json_object_get_boolean(v);
	else
		add_bos = post_adds_bos(tok, bos, tokens, n);
	if ((ret = gm_gguf_writer_set_int(w, "tokenizer.ggml.add_bos_token", GM_GGUF_BOOL, add_bos, err)))
		goto out;
	if ((v = get(tcfg, "chat_template")) && json_object_is_type(v, json_type_string))
		ret = gm_gguf_writer_set_string(w, "tokenizer.chat_template", json_object_get_string(v), err);
out:
	for (i = 0; i < n; i++)
		free(tokens[i]);
	for (k = 0; k < nm; k++)
		free(mstr[k]);
	free(tokens);
	free(lens);
	free(types);
	free(mstr);
	free(mlen);
	json_object_put(tok);
	json_object_put(tcfg);
	free(tj);
	free(tc);
	return ret;
}

/* ------------------------------------------------------------ writing */

static int add_hparams(gm_gguf_writer *w, const gm_model *m, const char *arch, int ft, gm_error *err)
{
	const gm_model_config *c = &m->config;
	const char *slash;
	char key[128], *name = gm_xstrdup(m->dir);
	size_t len = strlen(name);
	int ret;

	while (len > 1 && name[len - 1] == '/')
		name[--len] = 0;
	slash = strrchr(name, '/');
#define KEY(suffix) (snprintf(key, sizeof(key), "%s.%s", arch, suffix), key)
	ret = 0;
	if ((ret = gm_gguf_writer_set_string(w, "general.architecture", arch, err)) ||
	    (ret = gm_gguf_writer_set_string(w, "general.name", slash ? slash + 1 : name, err)) ||
	    (!gm_dtype_is_block(ftypes[ft].base) &&
	     (ret = gm_gguf_writer_set_int(w, "general.file_type", GM_GGUF_UINT32, ftypes[ft].ftype, err))) ||
	    (ret = gm_gguf_writer_set_int(w, "general.alignment", GM_GGUF_UINT32, GM_GGUF_DEFAULT_ALIGNMENT, err)) ||
	    (ret = gm_gguf_writer_set_int(w, KEY("block_count"), GM_GGUF_UINT32, c->num_hidden_layers, err)) ||
	    (ret = gm_gguf_writer_set_int(w, KEY("context_length"), GM_GGUF_UINT32, c->max_position_embeddings,
					  err)) ||
	    (ret = gm_gguf_writer_set_int(w, KEY("embedding_length"), GM_GGUF_UINT32, c->hidden_size, err)) ||
	    (ret = gm_gguf_writer_set_int(w, KEY("feed_forward_length"), GM_GGUF_UINT32, c->intermediate_size,
					  err)) ||
	    (ret = gm_gguf_writer_set_int(w, KEY("attention.head_count"), GM_GGUF_UINT32, c->num_attention_heads,
					  err)) ||
	    (ret = gm_gguf_writer_set_int(w, KEY("attention.head_count_kv"), GM_GGUF_UINT32,
					  c->num_key_value_heads, err)) ||
	    (ret = gm_gguf_writer_set_int(w, KEY("attention.key_length"), GM_GGUF_UINT32, c->head_dim, err)) ||
	    (ret = gm_gguf_writer_set_int(w, KEY("attention.value_length"), GM_GGUF_UINT32, c->head_dim, err)) ||
	    (ret = gm_gguf_writer_set_float(w, KEY("rope.freq_base"), GM_GGUF_FLOAT32, c->rope_theta, err)) ||
	    (ret = gm_gguf_writer_set_float(w, KEY("attention.layer_norm_rms_epsilon"), GM_GGUF_FLOAT32,
					    c->rms_norm_eps, err))) {
		free(name);
		return ret;
	}
	/* the keys llama.cpp's converter adds for Llama; the original context
	 * of llama3 scaling where it is not the 8192 the reader assumes */
	if (c->arch == GM_ARCH_LLAMA &&
	    ((ret = gm_gguf_writer_set_int(w, KEY("vocab_size"), GM_GGUF_UINT32, c->vocab_size, err)) ||
	     (ret = gm_gguf_writer_set_int(w, KEY("rope.dimension_count"), GM_GGUF_UINT32, c->head_dim, err)) ||
	     (c->rope_scaling == GM_ROPE_LLAMA3 && c->rope_original_max_position_embeddings != 8192 &&
	      (ret = gm_gguf_writer_set_int(w, KEY("rope.scaling.original_context_length"), GM_GGUF_UINT32,
					    c->rope_original_max_position_embeddings, err))))) {
		free(name);
		return ret;
	}
#undef KEY
	free(name);
	return ret;
}

/* The tensor's data in type t (malloc'ed into *out): converted from its float type, rows quantized. */
static int convert(const gm_tensor *src, enum gm_dtype t, void **out, gm_error *err)
{
	int64_t row = src->shape[src->ndim - 1], rows = (int64_t)(src->numel / (uint64_t)(row ? row : 1)), r;
	uint64_t nbytes;
	float *f;
	int ret;

	*out = NULL;
	if ((ret = gm_dtype_nbytes(t, src->numel, &nbytes, err)))
		return ret;
	*out = gm_xmalloc(nbytes ? nbytes : 1);
	if (src->dtype == t) {
		memcpy(*out, src->data, nbytes);
		return 0;
	}
	f = gm_xmalloc((size_t)(row ? row : 1) * sizeof(*f));
	for (r = 0; r < rows && !ret; r++) {
		size_t in_row = (size_t)row * gm_dtype_bits(src->dtype) / 8;

		ret = gm_dtype_to_f32(src->dtype, (const char *)src->data + (size_t)r * in_row, f, (size_t)row, err);
		if (ret)
			break;
		if (gm_dtype_is_block(t))
			gm_quant_quantize(t, f, (char *)*out + (size_t)r * gm_quant_row_bytes(t, row), row);
		else
			ret = gm_dtype_from_f32(t, f, (char *)*out + (size_t)r * row * gm_dtype_bits(t) / 8, (size_t)row,
						err);
	}
	free(f);
	return ret;
}

/*
 * Llama 3 rope scaling as llama.cpp's converter writes it: rope_freqs.weight,
 * f32 [head_dim / 2], the divisor of each inverse frequency (1 for short
 * wavelengths, factor for long ones, the llama3 blend between).  The GGUF
 * reader (config-gguf.c) gets the scaling back as the largest divisor with
 * low/high frequency factors 1 and 4 and the original context of
 * rope.scaling.original_context_length (8192 when absent): a config it
 * would read back differently is refused rather than written.
 */
static int rope_freqs(const gm_model *m, float *div, gm_error *err)
{
	const gm_model_config *c = &m->config;
	double orig = (double)c->rope_original_max_position_embeddings, lo = c->rope_low_freq_factor;
	double hi = c->rope_high_freq_factor, factor = c->rope_factor, max = 0;
	int64_t i, n = c->head_dim / 2;

	for (i = 0; i < n; i++) {
		double wl = 2 * M_PI * pow(c->rope_theta, (double)(2 * i) / (double)c->head_dim);

		if (wl < orig / hi)
			div[i] = 1.0f;
		else if (wl > orig / lo)
			div[i] = (float)factor;
		else {
			double smooth = (orig / wl - lo) / (hi - lo);
			div[i] = (float)(1.0 / ((1.0 - smooth) / factor + smooth));
		}
		max = div[i] > max ? div[i] : max;
	}
	if (lo != 1.0 || hi != 4.0 || max != factor)
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: llama3 rope scaling (factor %g, low_freq_factor %g, "
				    "high_freq_factor %g, original context %lld) cannot be written as GGUF so that it "
				    "reads back the same: %s", m->dir, factor, lo, hi, (long long)orig,
				    lo != 1.0 || hi != 4.0 ? "rope_freqs.weight is read with low 1 and high 4" :
				    (float)factor != factor ? "the factor is not an f32 value" :
				    "no dimension has the full factor to recover it from");
	return 0;
}

/* Llama's q/k rows (converted to type t in *buf) in the order llama.cpp's
 * converter writes them; rows are quantized one by one, so permuting the
 * quantized rows is quantizing the permuted ones. */
static int permute(void **buf, const gm_tensor *src, enum gm_dtype t, int64_t heads, const char *dir, gm_error *err)
{
	int64_t rows = src->shape[0];
	uint64_t nbytes;
	void *dst;
	char what[512];
	int ret;

	if ((ret = gm_dtype_nbytes(t, src->numel, &nbytes, err)))
		return ret;
	dst = gm_xmalloc(nbytes ? nbytes : 1);
	snprintf(what, sizeof(what), "%s: tensor '%s'", dir, src->name);
	if ((ret = gm_weights_llama_permute(dst, *buf, rows, rows ? nbytes / (uint64_t)rows : 0, heads, 1, what,
					    err))) {
		free(dst);
		return ret;
	}
	free(*buf);
	*buf = dst;
	return 0;
}

int gm_gguf_export_to(const gm_model *m, const char *type, gm_atomic_file *af, gm_error *err)
{
	const gm_model_config *c = &m->config;
	int ft = find_ftype(type), ret = 0;
	gm_gguf_writer *w;
	struct out_tensor *ts;
	void **bufs;
	size_t n = gm_weights_count(m->weights), nt = 0, i;
	/* general.architecture: llama.cpp's name of each architecture written */
	const char *arch = c->arch == GM_ARCH_QWEN3 ? "qwen3" : c->arch == GM_ARCH_QWEN2 ? "qwen2" : "llama";
	gm_tensor freqs = { 0 };
	float *div = NULL;
	int big = c->num_hidden_layers == 80 && (c->arch == GM_ARCH_QWEN2 ||
						 (c->arch == GM_ARCH_LLAMA && c->num_attention_heads != c->num_key_value_heads));

	if (ft < 0)
		return gm_error_set(err, GM_EINVAL, "unknown type '%s' (known: %s)", type, gm_gguf_export_types());
	if (c->arch != GM_ARCH_QWEN3 && c->arch != GM_ARCH_QWEN2 && c->arch != GM_ARCH_LLAMA)
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: writing %s as GGUF is not supported (Qwen3, Qwen2, Llama)", m->dir,
				    c->architecture);
	if (gm_weights_gguf(m->weights))
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: already a GGUF file; quantize its source model", m->dir);
	if (c->rope_scaling == GM_ROPE_LLAMA3) {
		div = gm_xcalloc((size_t)(c->head_dim / 2 ? c->head_dim / 2 : 1), sizeof(*div));
		if ((ret = rope_freqs(m, div, err))) {
			free(div);
			return ret;
		}
		freqs.name = "rope_freqs.weight";
		freqs.dtype = GM_DTYPE_F32;
		freqs.ndim = 1;
		freqs.shape[0] = c->head_dim / 2;
		freqs.numel = (uint64_t)freqs.shape[0];
		freqs.nbytes = freqs.numel * sizeof(float);
		freqs.data = div;
	}
	ts = gm_xcalloc(n + 1, sizeof(*ts));
	bufs = gm_xcalloc(n + 1, sizeof(*bufs));
	for (i = 0; i < n; i++) {
		const gm_tensor *t = gm_weights_tensor(m->weights, i);
		long layer;

		gguf_name(t->name, ts[nt].name, sizeof(ts[nt].name), &layer);
		if (!ts[nt].name[0])
			continue; /* a stored lm_head ignored because tied, a rotary buffer */
		if (!is_float_type(t->dtype)) {
			ret = gm_error_set(err, GM_EUNSUPPORTED, "%s: tensor '%s' is %s; only float weights are written",
					   m->dir, t->name, gm_dtype_name(t->dtype));
			goto out;
		}
		ts[nt].layer = layer;
		if (c->arch == GM_ARCH_LLAMA && (strstr(ts[nt].name, ".attn_q.") || strstr(ts[nt].name, ".attn_k.")))
			ts[nt].permute_heads = strstr(ts[nt].name, ".attn_q.") ? c->num_attention_heads :
							c->num_key_value_heads;
		ts[nt++].src = t;
	}
	if (div) {
		snprintf(ts[nt].name, sizeof(ts[nt].name), "%s", freqs.name);
		ts[nt].layer = -1;
		ts[nt++].src = &freqs;
	}
	qsort(ts, nt, sizeof(*ts), cmp_out);
	w = gm_gguf_writer_new(0);
	if ((ret = add_hparams(w, m, arch, ft, err)) || (ret = add_vocab(w, m, err)))
		goto done;
	for (i = 0; i < nt && !ret; i++) {
		const gm_tensor *t = ts[i].src;
		enum gm_dtype to = t->ndim == 1 ? GM_DTYPE_F32 :
				   matrix_type(ft, ts[i].name, c->tie_word_embeddings, c->num_hidden_layers,
					       t->shape[t->ndim - 1], big);

		if (!(ret = convert(t, to, &bufs[i], err)) && ts[i].permute_heads)
			ret = permute(&bufs[i], t, to, ts[i].permute_heads, m->dir, err);
		if (!ret)
			ret = gm_gguf_writer_add_tensor(w, ts[i].name, to, t->ndim, t->shape, bufs[i], err);
	}
	/* llama-quantize's mark of a quantized file (the block layouts' version), then the file type,
	 * last, where llama-quantize puts it (a float file has it after general.name, as converted) */
	if (!ret && gm_dtype_is_block(ftypes[ft].base) &&
	    !(ret = gm_gguf_writer_set_int(w, "general.quantization_version", GM_GGUF_UINT32, 2, err)))
		ret = gm_gguf_writer_set_int(w, "general.file_type", GM_GGUF_UINT32, ftypes[ft].ftype, err);
	if (!ret)
		ret = gm_gguf_writer_write_to(w, af, err);
done:
	gm_gguf_writer_free(w);
out:
	for (i = 0; i < n; i++)
		free(bufs[i]);
	free(bufs);
	free(ts);
	free(div);
	return ret;
}

int gm_gguf_export(const gm_model *m, const char *type, const char *path, gm_error *err)
{
	gm_atomic_file af;
	int ret = gm_atomic_open(&af, path, 0644, err);

	if (ret)
		return ret;
	if ((ret = gm_gguf_export_to(m, type, &af, err))) {
		gm_atomic_abort(&af);
		return ret;
	}
	return gm_atomic_commit(&af, err);
}
