/*
 * gguf-vocab.c - a GGUF file's tokenizer as the tokenizer.json document
 * text/tokenizer.c reads, and its chat template (see gguf.h).
 *
 * GGUF keeps a byte-level BPE vocabulary ("gpt2" model) as parallel arrays
 * indexed by id: tokenizer.ggml.tokens (normal tokens in the byte-level
 * alphabet, added ones as their text), tokenizer.ggml.token_type (1 normal,
 * 3 control, 4 user-defined, 5 unused...) and tokenizer.ggml.merges ("A B"
 * in the byte-level alphabet, by rank), and names the pre-tokenizer in
 * tokenizer.ggml.pre.  Control tokens become special added tokens, user-
 * defined ones plain added tokens (both matched in raw text before BPE, as
 * transformers does), unused ones (the padding rows of an embedding) are
 * left out.  The pre-tokenizer name maps to the Split regex(es) of the
 * original tokenizer.json, so the ids are transformers' for the same text.
 */
#include "formats/gguf.h"

#include <string.h>

#include <json-c/json.h>

#include "base/buf.h"

#define TOKENS "tokenizer.ggml.tokens"
#define TYPES "tokenizer.ggml.token_type"
#define MERGES "tokenizer.ggml.merges"

/* The GPT-2 regex (ByteLevel's use_regex). */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RE_LLAMA3 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN35 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* tokenizer.ggml.pre -> the original tokenizer.json's pre-tokenizer; each
 * row's first name is the one llama.cpp's converter writes. */
static const struct {
	const char *names; /* '|'-separated */
	const char *split; /* a Split regex before ByteLevel, or NULL */
	int gpt2_regex;    /* ByteLevel with use_regex (the GPT-2 split) */
	int nfc;           /* the tokenizer normalizes to NFC */
	int ignore_merges; /* a word already in the vocabulary is not merged */
} pre_types[] = {
	{ "qwen2|deepseek-r1-qwen|stablelm2|hunyuan|kormo", RE_QWEN2, 0, 1, 0 },
	{ "qwen35", RE_QWEN35, 0, 1, 0 },
	{ "llama-bpe|llama3|llama-v3|falcon3|pixtral|dbrx|smaug-bpe|lfm2", RE_LLAMA3, 0, 0, 1 },
	{ "gpt-2|default|gpt2|phi-2|mpt|olmo|jina-es|jina-de|jina-v2-es|jina-v2-de|mellum", NULL, 1, 0, 0 },
	{ "smollm|starcoder|refact|codeshell|command-r|exaone", "\\p{N}", 1, 0, 0 },
};

static int pre_matches(const char *names, const char *pre)
{
	size_t n = strlen(pre);
	const char *p = names;

	while (*p) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);

		if (len == n && !strncmp(p, pre, n))
			return 1;
		p += len + (bar ? 1 : 0);
	}
	return 0;
}

const char *gm_gguf_pre_name(const char *split, int gpt2_regex, int nfc, int ignore_merges, size_t *name_len)
{
	size_t i;

	for (i = 0; i < sizeof(pre_types) / sizeof(pre_types[0]); i++) {
		const char *bar;

		if ((split ? !pre_types[i].split || strcmp(split, pre_types[i].split) : pre_types[i].split != NULL) ||
		    !gpt2_regex != !pre_types[i].gpt2_regex || !nfc != !pre_types[i].nfc ||
		    !ignore_merges != !pre_types[i].ignore_merges)
			continue;
		bar = strchr(pre_types[i].names, '|');
		*name_len = bar ? (size_t)(bar - pre_types[i].names) : strlen(pre_types[i].names);
		return pre_types[i].names;
	}
	return NULL;
}

static json_object *split(const char *regex)
{
	json_object *o = json_object_new_object(), *pat = json_object_new_object();

	json_object_object_add(o, "type", json_object_new_string("Split"));
	json_object_object_add(pat, "Regex", json_object_new_string(regex));
	json_object_object_add(o, "pattern", pat);
	json_object_object_add(o, "behavior", json_object_new_string("Isolated"));
	json_object_object_add(o, "invert", json_object_new_boolean(0));
	return o;
}

static json_object *string_len(const char *s, size_t len)
{
	return json_object_new_string_len(s, (int)len);
}

/* A TemplateProcessing piece for token id (its text from the vocabulary), and its special_tokens entry. */
static int template_token(const gm_gguf *g, int64_t id, json_object *single, json_object *specials, gm_error *err)
{
	json_object *piece, *sp, *e, *ids, *toks;
	const char *s;
	size_t len;
	char *name;
	int ret;

	if ((ret = gm_gguf_array_string(g, TOKENS, (uint64_t)id, &s, &len, err)))
		return ret;
	sp = json_object_new_object();
	json_object_object_add(sp, "id", string_len(s, len));
	json_object_object_add(sp, "type_id", json_object_new_int(0));
	piece = json_object_new_object();
	json_object_object_add(piece, "SpecialToken", sp);
	json_object_array_add(single, piece);
	ids = json_object_new_array();
	json_object_array_add(ids, json_object_new_int64(id));
	toks = json_object_new_array();
	json_object_array_add(toks, string_len(s, len));
	e = json_object_new_object();
	json_object_object_add(e, "id", string_len(s, len));
	json_object_object_add(e, "ids", ids);
	json_object_object_add(e, "tokens", toks);
	name = gm_xmalloc(len + 1);
	memcpy(name, s, len);
	name[len] = 0;
	json_object_object_add(specials, name, e);
	free(name);
	return 0;
}

/* Whether the bool key is there and true (absent: 0). */
static int flag(const gm_gguf *g, const char *key)
{
	int v = 0;

	return gm_gguf_find_kv(g, key) >= 0 && !gm_gguf_get_bool(g, key, &v, NULL) && v;
}

/*
 * tokenizer.ggml.add_bos_token / add_eos_token as the post-processor
 * tokenizers would have (TemplateProcessing: BOS $A EOS), so a raw prompt
 * is encoded as llama.cpp encodes it (Llama 3: <|begin_of_text|> first).
 */
static int post_processor(const gm_gguf *g, json_object *root, uint64_t n_tokens, gm_error *err)
{
	int add_bos = flag(g, "tokenizer.ggml.add_bos_token"), add_eos = flag(g, "tokenizer.ggml.add_eos_token");
	int64_t bos = -1, eos = -1;
	json_object *pp, *single, *specials, *a, *seq;
	int ret = 0;

	if (add_bos && gm_gguf_find_kv(g, "tokenizer.ggml.bos_token_id") >= 0 &&
	    (ret = gm_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &bos, err)))
		return ret;
	if (add_eos && gm_gguf_find_kv(g, "tokenizer.ggml.eos_token_id") >= 0 &&
	    (ret = gm_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &eos, err)))
		return ret;
	if ((bos >= 0 && (uint64_t)bos >= n_tokens) || (eos >= 0 && (uint64_t)eos >= n_tokens))
		return gm_error_set(err, GM_EFORMAT, "%s: the BOS or EOS token id is not in the vocabulary",
				    gm_gguf_path(g));
	if (bos < 0 && eos < 0)
		return 0;
	pp = json_object_new_object();
	json_object_object_add(root, "post_processor", pp);
	json_object_object_add(pp, "type", json_object_new_string("TemplateProcessing"));
	single = json_object_new_array();
	json_object_object_add(pp, "single", single);
	specials = json_object_new_object();
	json_object_object_add(pp, "special_tokens", specials);
	if (bos >= 0 && (ret = template_token(g, bos, single, specials, err)))
		return ret;
	a = json_object_new_object();
	seq = json_object_new_object();
	json_object_object_add(seq, "id", json_object_new_string("A"));
	json_object_object_add(seq, "type_id", json_object_new_int(0));
	json_object_object_add(a, "Sequence", seq);
	json_object_array_add(single, a);
	if (eos >= 0 && (ret = template_token(g, eos, single, specials, err)))
		return ret;
	return 0;
}

static int build(const gm_gguf *g, size_t pre_i, json_object *root, gm_error *err)
{
	const char *path = gm_gguf_path(g);
	json_object *model, *vocab, *merges, *added, *pre, *list, *bl, *o;
	enum gm_gguf_vtype et;
	uint64_t n, n_types = 0, n_merges = 0, i;
	int has_types, ret;

	if ((ret = gm_gguf_get_array(g, TOKENS, &et, &n, err)))
		return ret;
	if (et != GM_GGUF_STRING || !n || n > INT32_MAX)
		return gm_error_set(err, GM_EFORMAT, "%s: %s must be a non-empty array of strings", path, TOKENS);
	has_types = gm_gguf_find_kv(g, TYPES) >= 0;
	if (has_types && ((ret = gm_gguf_get_array(g, TYPES, &et, &n_types, err)) || n_types != n))
		return ret ? ret : gm_error_set(err, GM_EFORMAT, "%s: %s has %llu entries for %llu tokens", path,
						TYPES, (unsigned long long)n_types, (unsigned long long)n);
	if (gm_gguf_find_kv(g, MERGES) >= 0 && (ret = gm_gguf_get_array(g, MERGES, &et, &n_merges, err)))
		return ret;
	if (n_merges && et != GM_GGUF_STRING)
		return gm_error_set(err, GM_EFORMAT, "%s: %s must be an array of strings", path, MERGES);

	model = json_object_new_object();
	json_object_object_add(root, "model", model);
	json_object_object_add(model, "type", json_object_new_string("BPE"));
	json_object_object_add(model, "ignore_merges", json_object_new_boolean(pre_types[pre_i].ignore_merges));
	vocab = json_object_new_object();
	json_object_object_add(model, "vocab", vocab);
	added = json_object_new_array();
	json_object_object_add(root, "added_tokens", added);
	for (i = 0; i < n; i++) {
		const char *s;
		size_t len;
		int64_t type = 1;
		char *key;

		if ((ret = gm_gguf_array_string(g, TOKENS, i, &s, &len, err)) ||
		    (has_types && (ret = gm_gguf_array_int(g, TYPES, i, &type, err))))
			return ret;
		if (type == 5)
			continue; /* unused: padding rows */
		if (type == 3 || type == 4) {
			o = json_object_new_object();
			json_object_object_add(o, "id", json_object_new_int64((int64_t)i));
			json_object_object_add(o, "content", string_len(s, len));
			json_object_object_add(o, "single_word", json_object_new_boolean(0));
			json_object_object_add(o, "lstrip", json_object_new_boolean(0));
			json_object_object_add(o, "rstrip", json_object_new_boolean(0));
			json_object_object_add(o, "normalized", json_object_new_boolean(0));
			json_object_object_add(o, "special", json_object_new_boolean(type == 3));
			json_object_array_add(added, o);
			continue;
		}
		if (memchr(s, 0, len))
			return gm_error_set(err, GM_EFORMAT, "%s: token %llu holds a NUL byte", path,
					    (unsigned long long)i);
		key = gm_xmalloc(len + 1);
		memcpy(key, s, len);
		key[len] = 0;
		if (!json_object_object_get_ex(vocab, key, NULL)) /* the first id of a duplicate wins */
			json_object_object_add(vocab, key, json_object_new_int64((int64_t)i));
		free(key);
	}
	merges = json_object_new_array_ext((int)(n_merges < INT32_MAX ? n_merges : 0));
	json_object_object_add(model, "merges", merges);
	for (i = 0; i < n_merges; i++) {
		const char *s;
		size_t len;

		if ((ret = gm_gguf_array_string(g, MERGES, i, &s, &len, err)))
			return ret;
		json_object_array_add(merges, string_len(s, len));
	}
	if (pre_types[pre_i].nfc) {
		o = json_object_new_object();
		json_object_object_add(o, "type", json_object_new_string("NFC"));
		json_object_object_add(root, "normalizer", o);
	}
	pre = json_object_new_object();
	json_object_object_add(pre, "type", json_object_new_string("Sequence"));
	list = json_object_new_array();
	json_object_object_add(pre, "pretokenizers", list);
	if (pre_types[pre_i].split)
		json_object_array_add(list, split(pre_types[pre_i].split));
	bl = json_object_new_object();
	json_object_object_add(bl, "type", json_object_new_string("ByteLevel"));
	json_object_object_add(bl, "add_prefix_space", json_object_new_boolean(0));
	json_object_object_add(bl, "trim_offsets", json_object_new_boolean(0));
	json_object_object_add(bl, "use_regex", json_object_new_boolean(pre_types[pre_i].gpt2_regex));
	json_object_array_add(list, bl);
	json_object_object_add(root, "pre_tokenizer", pre);
	o = json_object_new_object();
	json_object_object_add(o, "type", json_object_new_string("ByteLevel"));
	json_object_object_add(root, "decoder", o);
	return post_processor(g, root, n, err);
}

int gm_gguf_tokenizer_json(const gm_gguf *g, gm_buf *out, gm_error *err)
{
	const char *path = gm_gguf_path(g), *model, *pre = "default";
	json_object *root;
	size_t i;
	int ret;

	if (gm_gguf_find_kv(g, "tokenizer.ggml.model") < 0)
		return gm_error_set(err, GM_ENOENT, "%s: no tokenizer (tokenizer.ggml.model is absent)", path);
	if ((ret = gm_gguf_get_string(g, "tokenizer.ggml.model", &model, NULL, err)))
		return ret;
	if (strcmp(model, "gpt2"))
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: tokenizer model '%s' is not supported (only 'gpt2', byte-level BPE%s)", path,
				    model, !strcmp(model, "llama") ? "; 'llama' is a SentencePiece vocabulary" : "");
	if (gm_gguf_find_kv(g, "tokenizer.ggml.pre") >= 0 &&
	    (ret = gm_gguf_get_string(g, "tokenizer.ggml.pre", &pre, NULL, err)))
		return ret;
	for (i = 0; i < sizeof(pre_types) / sizeof(pre_types[0]); i++)
		if (pre_matches(pre_types[i].names, pre))
			break;
	if (i == sizeof(pre_types) / sizeof(pre_types[0]))
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: pre-tokenizer '%s' (tokenizer.ggml.pre) is not supported (supported: qwen2, "
				    "qwen35, llama-bpe/llama3, gpt-2/default, smollm/starcoder and their aliases)",
				    path, pre);
	root = json_object_new_object();
	json_object_object_add(root, "version", json_object_new_string("1.0"));
	ret = build(g, i, root, err);
	if (!ret)
		gm_buf_adds(out, json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
								 JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(root);
	return ret;
}

/* The text of token id under key (a tokenizer.ggml.*_token_id), malloc'ed, or NULL. */
static char *token_text(const gm_gguf *g, const char *key)
{
	const char *s;
	size_t len;
	int64_t id;
	char *t;

	if (gm_gguf_find_kv(g, key) < 0 || gm_gguf_get_int(g, key, &id, NULL) || id < 0 ||
	    gm_gguf_array_string(g, TOKENS, (uint64_t)id, &s, &len, NULL) || memchr(s, 0, len))
		return NULL;
	t = gm_xmalloc(len + 1);
	memcpy(t, s, len);
	t[len] = 0;
	return t;
}

int gm_gguf_chat_template(const gm_gguf *g, char **tmpl, char **bos, char **eos, gm_error *err)
{
	const char *s;
	int ret;

	*tmpl = *bos = *eos = NULL;
	if (gm_gguf_find_kv(g, "tokenizer.chat_template") < 0)
		return gm_error_set(err, GM_ENOENT, "%s: no chat template (tokenizer.chat_template is absent)",
				    gm_gguf_path(g));
	if ((ret = gm_gguf_get_string(g, "tokenizer.chat_template", &s, NULL, err)))
		return ret;
	*tmpl = gm_xstrdup(s);
	*bos = token_text(g, "tokenizer.ggml.bos_token_id");
	*eos = token_text(g, "tokenizer.ggml.eos_token_id");
	return 0;
}
