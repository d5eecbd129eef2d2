/*
 * tokenizer.c - Hugging Face byte-level BPE (the "BPE" model with the
 * ByteLevel pre-tokenizer and decoder), as in Qwen2/Qwen3 tokenizer.json.
 *
 * Everything the encoder needs is built once at load time:
 *
 *  - every id has its token string (the byte-level form of a model token,
 *    or an added token's content) and the bytes it decodes to;
 *  - the model vocabulary is a hash table from token string to id;
 *  - the merges are a hash table from a pair of ids to (rank, merged id);
 *  - the added tokens are indexed by first byte, longest first, for a
 *    leftmost-longest scan of the text;
 *  - the pre-tokenizer's regexes are compiled (and JIT-compiled) by PCRE2.
 *
 * BPE works on raw bytes: a byte-level symbol is one byte, so a word starts
 * as the ids of its bytes and pairs are merged lowest rank first (leftmost
 * on ties), with the priority queue tokenizers uses, so that results agree
 * even for merge lists that are not "well ordered".
 *
 * Encoding keeps its scratch state on the stack and in per-call buffers, so
 * a loaded tokenizer is never written to and may be shared by threads.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "text/tokenizer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <pcre2.h>
#include <utf8proc.h>

#include "base/fs.h"
#include "base/json.h"

/* Ids above this are surely a malformed file (Qwen has 151669). */
#define MAX_TOKEN_ID (1 << 24)
/* Regex stages of the pre-tokenizer (Split..., ByteLevel's own regex). */
#define MAX_SPLITS 8
/* Words up to this many bytes have their BPE result cached per call. */
#define CACHE_WORD_MAX 64

/* The regex of the ByteLevel pre-tokenizer with use_regex (GPT-2's). */
static const char gpt2_pattern[] =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ------------------------------------------------------------ hash tables */

/* String -> id (the model vocabulary); keys live in the tokenizer's arena. */
struct str_slot {
	uint32_t hash;
	uint32_t off, len; /* key in t->strings */
	int32_t id;        /* -1: empty slot */
};

struct str_map {
	struct str_slot *slots;
	size_t mask;
	size_t count;
};

/* (left id, right id) -> (rank, merged id). */
struct pair_slot {
	uint64_t key; /* left << 32 | right; UINT64_MAX: empty */
	uint32_t rank;
	int32_t id;
};

struct pair_map {
	struct pair_slot *slots;
	size_t mask;
	size_t count;
};

static uint32_t hash_bytes(const char *s, size_t len)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h ^ (h >> 15);
}

static size_t table_size(size_t n)
{
	size_t size = 16;

	while (size < 2 * n)
		size *= 2;
	return size;
}

static void str_map_init(struct str_map *m, size_t n)
{
	size_t i, size = table_size(n);

	m->slots = gm_xmalloc(size * sizeof(*m->slots));
	for (i = 0; i < size; i++)
		m->slots[i].id = -1;
	m->mask = size - 1;
	m->count = 0;
}

static struct str_slot *str_map_find(const struct str_map *m, const char *arena, const char *key, size_t len,
				     uint32_t hash)
{
	size_t i = hash & m->mask;

	for (;; i = (i + 1) & m->mask) {
		struct str_slot *s = &m->slots[i];
		if (s->id < 0)
			return s;
		if (s->hash == hash && s->len == len && !memcmp(arena + s->off, key, len))
			return s;
	}
}

static int32_t str_map_get(const struct str_map *m, const char *arena, const char *key, size_t len)
{
	if (!m->slots)
		return -1;
	return str_map_find(m, arena, key, len, hash_bytes(key, len))->id;
}

static uint64_t pair_key(int32_t a, int32_t b)
{
	return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

static size_t pair_hash(uint64_t key, size_t mask)
{
	key *= 0x9e3779b97f4a7c15ull;
	return (size_t)(key >> 32 ^ key) & mask;
}

static void pair_map_init(struct pair_map *m, size_t n)
{
	size_t i, size = table_size(n);

	m->slots = gm_xmalloc(size * sizeof(*m->slots));
	for (i = 0; i < size; i++)
		m->slots[i].key = UINT64_MAX;
	m->mask = size - 1;
	m->count = 0;
}

static struct pair_slot *pair_map_find(const struct pair_map *m, uint64_t key)
{
	size_t i = pair_hash(key, m->mask);

	for (;; i = (i + 1) & m->mask) {
		struct pair_slot *s = &m->slots[i];
		if (s->key == key || s->key == UINT64_MAX)
			return s;
	}
}

static const struct pair_slot *pair_map_get(const struct pair_map *m, int32_t a, int32_t b)
{
	const struct pair_slot *s;

	if (!m->slots)
		return NULL;
	s = pair_map_find(m, pair_key(a, b));
	return s->key == UINT64_MAX ? NULL : s;
}

/* ------------------------------------------------------------ the tokenizer */

enum {
	TOK_PRESENT = 1, /* the id has a token */
	TOK_ADDED = 2,
	TOK_SPECIAL = 4
};

struct tok_info {
	uint32_t str_off, str_len; /* token string in t->strings */
	uint32_t byte_off, byte_len; /* decoded bytes in t->bytes */
	uint32_t flags;
};

struct added_token {
	int32_t id;
	uint32_t content_off, content_len; /* in t->strings */
	uint32_t off, len; /* what is matched: the content, NFC-normalized if normalized */
	unsigned single_word : 1, lstrip : 1, rstrip : 1, normalized : 1, special : 1;
};

/* Added tokens matched in one phase, by first byte, longest first. */
struct added_set {
	uint32_t *order;     /* indices into t->added */
	uint32_t first[257]; /* order[first[c]..first[c + 1]) start with byte c */
	size_t n;
};

struct gm_tokenizer {
	size_t n_ids;
	struct tok_info *tok;
	char *strings;
	size_t strings_len;
	char *bytes;

	struct str_map vocab;
	struct pair_map merges;
	int32_t byte_id[256]; /* id of each byte's byte-level symbol, -1 if none */
	char bl[256][2];      /* each byte's byte-level symbol, in UTF-8 */
	unsigned char bl_len[256];
	int32_t unk_id;       /* -1 if none */
	int fuse_unk;
	int ignore_merges;

	struct added_token *added;
	size_t n_added;
	struct added_set raw_set, norm_set;

	int nfc;
	pcre2_code *split[MAX_SPLITS];
	int split_jit[MAX_SPLITS];
	int n_split;

	/* the post-processor's special tokens around a single sequence (add_special_tokens=True) */
	int32_t tpl_pre[GM_TOKENIZER_MAX_TEMPLATE], tpl_suf[GM_TOKENIZER_MAX_TEMPLATE];
	size_t n_pre, n_suf;
};

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the
 * others are moved to U+0100 and up, in byte order. */
static void byte_level_map(uint32_t cp_of_byte[256], int16_t byte_of_cp[324])
{
	int b, n = 0;

	for (b = 0; b < 324; b++)
		byte_of_cp[b] = -1;
	for (b = 0; b < 256; b++) {
		int printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
		cp_of_byte[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
		byte_of_cp[cp_of_byte[b]] = (int16_t)b;
	}
}

/* ------------------------------------------------------------ UTF-8 */

/*
 * Looks at the sequence starting at s[0] (len >= 1).  Returns its length
 * and sets *valid; an invalid sequence's length is that of its longest
 * valid prefix (at least 1), which is what Rust's String::from_utf8_lossy
 * replaces by one U+FFFD.
 */
static size_t utf8_seq(const unsigned char *s, size_t len, int *valid)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t need, i;

	*valid = 0;
	if (c < 0x80) {
		*valid = 1;
		return 1;
	} else if (c >= 0xc2 && c <= 0xdf) {
		need = 1;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 2;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 3;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 1;
	}
	for (i = 1; i <= need; i++) {
		if (i >= len || s[i] < lo || s[i] > hi)
			return i;
		lo = 0x80;
		hi = 0xbf;
	}
	*valid = 1;
	return need + 1;
}

/* Length of the longest valid UTF-8 prefix of s. */
static size_t utf8_valid_len(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		int valid;
		size_t n;

		if (u[i] < 0x80) {
			i++;
			continue;
		}
		n = utf8_seq(u + i, len - i, &valid);
		if (!valid)
			break;
		i += n;
	}
	return i;
}

/* Appends s to out with each invalid sequence replaced by U+FFFD. */
static void add_lossy(gm_buf *out, const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, run = 0;

	while (i < len) {
		int valid;
		size_t n = u[i] < 0x80 ? (valid = 1, 1) : utf8_seq(u + i, len - i, &valid);

		if (!valid) {
			gm_buf_add(out, s + run, i - run);
			gm_buf_add(out, "\xef\xbf\xbd", 3);
			run = i + n;
		}
		i += n;
	}
	gm_buf_add(out, s + run, len - run);
}

/* Decodes one code point of valid UTF-8; returns its length. */
static size_t utf8_decode(const char *s, uint32_t *cp)
{
	const unsigned char *u = (const unsigned char *)s;

	if (u[0] < 0x80) {
		*cp = u[0];
		return 1;
	} else if (u[0] < 0xe0) {
		*cp = (uint32_t)(u[0] & 0x1f) << 6 | (u[1] & 0x3f);
		return 2;
	} else if (u[0] < 0xf0) {
		*cp = (uint32_t)(u[0] & 0x0f) << 12 | (uint32_t)(u[1] & 0x3f) << 6 | (u[2] & 0x3f);
		return 3;
	}
	*cp = (uint32_t)(u[0] & 0x07) << 18 | (uint32_t)(u[1] & 0x3f) << 12 | (uint32_t)(u[2] & 0x3f) << 6 |
	      (u[3] & 0x3f);
	return 4;
}

/* Start of the last code point of valid UTF-8 s[0..len), len > 0. */
static size_t utf8_last(const char *s, size_t len)
{
	size_t i = len - 1;

	while (i > 0 && ((unsigned char)s[i] & 0xc0) == 0x80)
		i--;
	return i;
}

/* Rust's char::is_whitespace (the White_Space property). */
static int is_white_space(uint32_t c)
{
	return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
	       c == 0x3000;
}

/* Close to \w of Rust's regex crate, which tokenizers uses for single_word:
 * letters, marks, decimal and letter numbers, connector punctuation ('_')
 * and the joiners. */
static int is_word_char(uint32_t c)
{
	utf8proc_category_t cat;

	if (c < 0x80)
		return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c == '_';
	if (c == 0x200c || c == 0x200d)
		return 1;
	cat = utf8proc_category((utf8proc_int32_t)c);
	return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_ND) || cat == UTF8PROC_CATEGORY_NL ||
	       cat == UTF8PROC_CATEGORY_PC;
}

/* ------------------------------------------------------------ loading */

struct loader {
	gm_tokenizer *t;
	const char *what;
	gm_error *err;
	gm_buf strings;
	gm_buf bytes;
	uint32_t cp_of_byte[256];
	int16_t byte_of_cp[324];
};

static int fmt_err(struct loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fmt_err(struct loader *l, const char *fmt, ...)
{
	char msg[GM_ERROR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return gm_error_set(l->err, GM_EFORMAT, "%s: %s", l->what, msg);
}

static int unsupported(struct loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int unsupported(struct loader *l, const char *fmt, ...)
{
	char msg[GM_ERROR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return gm_error_set(l->err, GM_EUNSUPPORTED, "%s: %s", l->what, msg);
}

static json_object *get(json_object *obj, const char *key)
{
	json_object *v = NULL;

	if (!obj || !json_object_is_type(obj, json_type_object) || !json_object_object_get_ex(obj, key, &v))
		return NULL;
	return v; /* NULL for JSON null too */
}

static const char *type_of(json_object *obj)
{
	json_object *v = get(obj, "type");

	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* An optional boolean member: absent or null gives def. */
static int get_bool(struct loader *l, json_object *obj, const char *ctx, const char *key, int def, int *out)
{
	json_object *v = get(obj, key);

	if (!v) {
		*out = def;
		return 0;
	}
	if (!json_object_is_type(v, json_type_boolean))
		return fmt_err(l, "%s.%s must be true or false, not %s", ctx, key,
			       json_type_to_name(json_object_get_type(v)));
	*out = json_object_get_boolean(v);
	return 0;
}

/* Whether an optional string member is absent, null or "". */
static int empty_string(json_object *obj, const char *key)
{
	json_object *v = get(obj, key);

	return !v || (json_object_is_type(v, json_type_string) && !json_object_get_string_len(v));
}

/* Adds a string to the arena; returns its offset. */
static uint32_t arena_add(gm_buf *arena, const char *s, size_t len)
{
	uint32_t off = (uint32_t)arena->len;

	gm_buf_add(arena, s, len);
	return off;
}

static int get_id(struct loader *l, json_object *v, const char *ctx, const char *name, int32_t *out)
{
	int64_t id;

	if (!v || !json_object_is_type(v, json_type_int))
		return fmt_err(l, "%s: the id of '%s' must be an integer", ctx, name);
	id = json_object_get_int64(v);
	if (id < 0 || id >= MAX_TOKEN_ID)
		return fmt_err(l, "%s: the id of '%s' (%lld) is out of range", ctx, name, (long long)id);
	*out = (int32_t)id;
	return 0;
}

static int load_vocab(struct loader *l, json_object *vocab, int32_t *max_id)
{
	gm_tokenizer *t = l->t;
	struct json_object_iterator it, end;

	if (!vocab || !json_object_is_type(vocab, json_type_object))
		return fmt_err(l, "model.vocab must be an object mapping tokens to ids");
	str_map_init(&t->vocab, (size_t)json_object_object_length(vocab));
	it = json_object_iter_begin(vocab);
	end = json_object_iter_end(vocab);
	for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
		const char *key = json_object_iter_peek_name(&it);
		size_t len = strlen(key);
		uint32_t hash = hash_bytes(key, len);
		struct str_slot *s;
		int32_t id;
		int ret = get_id(l, json_object_iter_peek_value(&it), "model.vocab", key, &id);

		if (ret)
			return ret;
		s = str_map_find(&t->vocab, l->strings.buf, key, len, hash);
		if (s->id < 0) {
			s->hash = hash;
			s->off = arena_add(&l->strings, key, len);
			s->len = (uint32_t)len;
			t->vocab.count++;
		}
		s->id = id;
		if (id > *max_id)
			*max_id = id;
	}
	return 0;
}

static int add_merge(struct loader *l, size_t index, size_t rank, const char *a, size_t alen, const char *b,
		     size_t blen, gm_buf *tmp)
{
	gm_tokenizer *t = l->t;
	int32_t ia, ib, im;
	struct pair_slot *s;

	ia = str_map_get(&t->vocab, l->strings.buf, a, alen);
	ib = str_map_get(&t->vocab, l->strings.buf, b, blen);
	gm_buf_reset(tmp);
	gm_buf_add(tmp, a, alen);
	gm_buf_add(tmp, b, blen);
	im = str_map_get(&t->vocab, l->strings.buf, tmp->buf, tmp->len);
	if (ia < 0 || ib < 0 || im < 0)
		return fmt_err(l, "model.merges[%zu] ('%.*s' + '%.*s'): '%.*s' is not in the vocabulary", index,
			       (int)alen, a, (int)blen, b,
			       ia < 0 ? (int)alen : ib < 0 ? (int)blen : (int)tmp->len,
			       ia < 0 ? a : ib < 0 ? b : tmp->buf);
	/* A repeated pair keeps its last rank, as in tokenizers. */
	s = pair_map_find(&t->merges, pair_key(ia, ib));
	if (s->key == UINT64_MAX)
		t->merges.count++;
	s->key = pair_key(ia, ib);
	s->rank = (uint32_t)rank;
	s->id = im;
	return 0;
}

static int load_merges(struct loader *l, json_object *merges)
{
	gm_buf tmp = GM_BUF_INIT;
	size_t i, n, rank = 0;
	int ret = 0;

	if (!merges || !json_object_is_type(merges, json_type_array))
		return fmt_err(l, "model.merges must be an array");
	n = json_object_array_length(merges);
	pair_map_init(&l->t->merges, n);
	for (i = 0; i < n && !ret; i++) {
		json_object *m = json_object_array_get_idx(merges, i);

		if (m && json_object_is_type(m, json_type_string)) {
			const char *s = json_object_get_string(m);
			size_t len = (size_t)json_object_get_string_len(m);
			const char *sp = memchr(s, ' ', len);

			if (!strncmp(s, "#version", 8))
				continue; /* a header line of merges.txt, as tokenizers skips it */
			if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp - s) - 1))
				ret = fmt_err(l, "model.merges[%zu] ('%s') is not two tokens separated by a space",
					      i, s);
			else
				ret = add_merge(l, i, rank++, s, (size_t)(sp - s), sp + 1,
						len - (size_t)(sp - s) - 1, &tmp);
		} else if (m && json_object_is_type(m, json_type_array) && json_object_array_length(m) == 2 &&
			   json_object_is_type(json_object_array_get_idx(m, 0), json_type_string) &&
			   json_object_is_type(json_object_array_get_idx(m, 1), json_type_string)) {
			json_object *a = json_object_array_get_idx(m, 0), *b = json_object_array_get_idx(m, 1);

			ret = add_merge(l, i, rank++, json_object_get_string(a),
					(size_t)json_object_get_string_len(a), json_object_get_string(b),
					(size_t)json_object_get_string_len(b), &tmp);
		} else {
			ret = fmt_err(l, "model.merges[%zu] must be a string \"A B\" or a pair [\"A\", \"B\"]", i);
		}
	}
	gm_buf_release(&tmp);
	return ret;
}

static int load_model(struct loader *l, json_object *model, int32_t *max_id)
{
	gm_tokenizer *t = l->t;
	const char *type;
	json_object *v;
	int ret;
	int b;

	if (!model || !json_object_is_type(model, json_type_object))
		return fmt_err(l, "no \"model\" object: is this a Hugging Face tokenizer.json?");
	type = type_of(model);
	if (!type && get(model, "type"))
		return fmt_err(l, "model.type must be a string");
	if (!type && !get(model, "merges"))
		return fmt_err(l, "model has no \"type\" and no \"merges\": is this a BPE tokenizer.json?");
	if (type && strcmp(type, "BPE"))
		return unsupported(l, "tokenizer model type '%s' is not supported (only byte-level BPE, as in "
				      "Qwen, Llama 3 or GPT-2)", type);
	v = get(model, "dropout");
	if (v && (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int)))
		return fmt_err(l, "model.dropout must be a number or null");
	if (v && json_object_get_double(v) != 0.0)
		return unsupported(l, "BPE dropout (%g) is not supported", json_object_get_double(v));
	if ((ret = get_bool(l, model, "model", "byte_fallback", 0, &b)))
		return ret;
	if (b)
		return unsupported(l, "BPE byte_fallback is not supported (only byte-level BPE)");
	if (!empty_string(model, "continuing_subword_prefix"))
		return unsupported(l, "BPE continuing_subword_prefix is not supported");
	if (!empty_string(model, "end_of_word_suffix"))
		return unsupported(l, "BPE end_of_word_suffix is not supported");
	if ((ret = get_bool(l, model, "model", "fuse_unk", 0, &t->fuse_unk)) ||
	    (ret = get_bool(l, model, "model", "ignore_merges", 0, &t->ignore_merges)))
		return ret;
	if ((ret = load_vocab(l, get(model, "vocab"), max_id)) || (ret = load_merges(l, get(model, "merges"))))
		return ret;
	t->unk_id = -1;
	v = get(model, "unk_token");
	if (v) {
		if (!json_object_is_type(v, json_type_string))
			return fmt_err(l, "model.unk_token must be a string or null");
		t->unk_id = str_map_get(&t->vocab, l->strings.buf, json_object_get_string(v),
					(size_t)json_object_get_string_len(v));
		if (t->unk_id < 0)
			return fmt_err(l, "model.unk_token '%s' is not in the vocabulary", json_object_get_string(v));
	}
	for (b = 0; b < 256; b++) {
		char s[4];
		size_t n = (size_t)utf8proc_encode_char((utf8proc_int32_t)l->cp_of_byte[b], (utf8proc_uint8_t *)s);
		t->byte_id[b] = str_map_get(&t->vocab, l->strings.buf, s, n);
		memcpy(t->bl[b], s, n); /* U+0021..U+0143: one or two bytes */
		t->bl_len[b] = (unsigned char)n;
	}
	return 0;
}

static int nfc(const char *s, size_t len, char **out, size_t *out_len)
{
	utf8proc_uint8_t *dst = NULL;
	utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst,
					  UTF8PROC_STABLE | UTF8PROC_COMPOSE);

	if (n < 0)
		return -1;
	*out = (char *)dst;
	*out_len = (size_t)n;
	return 0;
}

static int load_added(struct loader *l, json_object *added, int32_t *max_id)
{
	gm_tokenizer *t = l->t;
	size_t i, n;

	if (!added)
		return 0;
	if (!json_object_is_type(added, json_type_array))
		return fmt_err(l, "added_tokens must be an array");
	n = json_object_array_length(added);
	t->added = gm_xcalloc(n ? n : 1, sizeof(*t->added));
	for (i = 0; i < n; i++) {
		json_object *a = json_object_array_get_idx(added, i), *c = get(a, "content");
		struct added_token *at = &t->added[t->n_added];
		int special, normalized, single_word, lstrip, rstrip, ret;
		char ctx[64];
		const char *content;
		size_t len;

		snprintf(ctx, sizeof(ctx), "added_tokens[%zu]", i);
		if (!c || !json_object_is_type(c, json_type_string))
			return fmt_err(l, "%s has no string \"content\"", ctx);
		content = json_object_get_string(c);
		len = (size_t)json_object_get_string_len(c);
		if (!len)
			return fmt_err(l, "%s has an empty content", ctx);
		if (utf8_valid_len(content, len) != len)
			return fmt_err(l, "%s is not valid UTF-8", ctx);
		if ((ret = get_id(l, get(a, "id"), ctx, content, &at->id)) ||
		    (ret = get_bool(l, a, ctx, "special", 0, &special)) ||
		    (ret = get_bool(l, a, ctx, "normalized", !special, &normalized)) ||
		    (ret = get_bool(l, a, ctx, "single_word", 0, &single_word)) ||
		    (ret = get_bool(l, a, ctx, "lstrip", 0, &lstrip)) ||
		    (ret = get_bool(l, a, ctx, "rstrip", 0, &rstrip)))
			return ret;
		at->special = !!special;
		at->normalized = !!normalized;
		at->single_word = !!single_word;
		at->lstrip = !!lstrip;
		at->rstrip = !!rstrip;
		at->content_off = arena_add(&l->strings, content, len);
		at->content_len = (uint32_t)len;
		/* A normalized token is looked for in the normalized text. */
		if (normalized && t->nfc) {
			char *norm;
			size_t norm_len;
			if (nfc(content, len, &norm, &norm_len))
				return fmt_err(l, "%s cannot be NFC-normalized", ctx);
			at->off = arena_add(&l->strings, norm, norm_len);
			at->len = (uint32_t)norm_len;
			free(norm);
		} else {
			at->off = at->content_off;
			at->len = at->content_len;
		}
		if (at->id > *max_id)
			*max_id = at->id;
		t->n_added++;
	}
	return 0;
}

static int load_normalizer(struct loader *l, json_object *norm)
{
	const char *type = type_of(norm);
	json_object *list;
	size_t i;
	int ret;

	if (!norm)
		return 0;
	if (!type)
		return fmt_err(l, "normalizer has no \"type\"");
	if (!strcmp(type, "NFC")) {
		l->t->nfc = 1;
		return 0;
	}
	if (strcmp(type, "Sequence"))
		return unsupported(l, "normalizer '%s' is not supported (only NFC)", type);
	list = get(norm, "normalizers");
	if (!list || !json_object_is_type(list, json_type_array))
		return fmt_err(l, "normalizer Sequence has no \"normalizers\" array");
	for (i = 0; i < json_object_array_length(list); i++)
		if ((ret = load_normalizer(l, json_object_array_get_idx(list, i))))
			return ret;
	return 0;
}

static int add_split(struct loader *l, const char *pattern, size_t len, uint32_t extra_options)
{
	gm_tokenizer *t = l->t;
	int errcode;
	PCRE2_SIZE erroff;
	pcre2_code *code;

	if (t->n_split == MAX_SPLITS)
		return unsupported(l, "more than %d Split pre-tokenizers", MAX_SPLITS);
	code = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_UTF | PCRE2_UCP | extra_options, &errcode, &erroff,
			     NULL);
	if (!code) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(errcode, msg, sizeof(msg));
		return unsupported(l, "the pre-tokenizer regex /%.*s/ is not supported by PCRE2 (at offset %zu: "
				      "%s)", (int)len, pattern, (size_t)erroff, (char *)msg);
	}
	t->split_jit[t->n_split] = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
	t->split[t->n_split++] = code;
	return 0;
}

static int load_pre_tokenizer(struct loader *l, json_object *pre, int *byte_level)
{
	const char *type = type_of(pre);
	int ret, b;

	if (!pre)
		return 0;
	if (!type)
		return fmt_err(l, "pre_tokenizer has no \"type\"");
	if (*byte_level)
		return unsupported(l, "pre-tokenizer '%s' after ByteLevel is not supported", type);
	if (!strcmp(type, "Sequence")) {
		json_object *list = get(pre, "pretokenizers");
		size_t i;

		if (!list || !json_object_is_type(list, json_type_array))
			return fmt_err(l, "pre_tokenizer Sequence has no \"pretokenizers\" array");
		for (i = 0; i < json_object_array_length(list); i++)
			if ((ret = load_pre_tokenizer(l, json_object_array_get_idx(list, i), byte_level)))
				return ret;
		return 0;
	}
	if (!strcmp(type, "Split")) {
		json_object *pat = get(pre, "pattern"), *v;
		const char *behavior;

		behavior = (v = get(pre, "behavior")) && json_object_is_type(v, json_type_string)
				   ? json_object_get_string(v) : "";
		if (strcmp(behavior, "Isolated"))
			return unsupported(l, "pre-tokenizer Split with behavior '%s' is not supported (only "
					      "Isolated)", behavior);
		if ((ret = get_bool(l, pre, "pre_tokenizer", "invert", 0, &b)))
			return ret;
		if (b)
			return unsupported(l, "pre-tokenizer Split with invert is not supported");
		if ((v = get(pat, "Regex")) && json_object_is_type(v, json_type_string))
			return add_split(l, json_object_get_string(v), (size_t)json_object_get_string_len(v), 0);
		if ((v = get(pat, "String")) && json_object_is_type(v, json_type_string))
			return add_split(l, json_object_get_string(v), (size_t)json_object_get_string_len(v),
					 PCRE2_LITERAL);
		return fmt_err(l, "pre-tokenizer Split has no pattern {\"Regex\": ...} or {\"String\": ...}");
	}
	if (!strcmp(type, "ByteLevel")) {
		if ((ret = get_bool(l, pre, "pre_tokenizer", "add_prefix_space", 0, &b)))
			return ret;
		if (b)
			return unsupported(l, "pre-tokenizer ByteLevel with add_prefix_space is not supported");
		if ((ret = get_bool(l, pre, "pre_tokenizer", "use_regex", 1, &b)))
			return ret;
		if (b && (ret = add_split(l, gpt2_pattern, strlen(gpt2_pattern), 0)))
			return ret;
		*byte_level = 1;
		return 0;
	}
	return unsupported(l, "pre-tokenizer '%s' is not supported (only Split and ByteLevel)", type);
}

static int load_decoder(struct loader *l, json_object *dec)
{
	const char *type = type_of(dec);

	if (!dec)
		return unsupported(l, "a tokenizer without decoder is not supported (only ByteLevel)");
	if (!type)
		return fmt_err(l, "decoder has no \"type\"");
	if (!strcmp(type, "ByteLevel"))
		return 0;
	if (!strcmp(type, "Sequence")) {
		json_object *list = get(dec, "decoders");
		if (list && json_object_is_type(list, json_type_array) && json_object_array_length(list) == 1)
			return load_decoder(l, json_object_array_get_idx(list, 0));
	}
	return unsupported(l, "decoder '%s' is not supported (only ByteLevel)", type);
}

/*
 * The post-processor: what encode(add_special_tokens=True) adds around a
 * single sequence.  TemplateProcessing's "single" (Llama 3: <|begin_of_text|>
 * $A), also inside a Sequence; ByteLevel adds nothing; other processors are
 * ignored (nothing added), as before this was read.
 */
static int load_post_processor(struct loader *l, json_object *pp)
{
	const char *type = type_of(pp);
	json_object *single, *specials;
	size_t i, j, n;
	int seen_a = 0;

	if (!pp || !type)
		return 0;
	if (!strcmp(type, "Sequence")) {
		json_object *list = get(pp, "processors");
		int ret;

		if (!list || !json_object_is_type(list, json_type_array))
			return fmt_err(l, "post_processor Sequence has no \"processors\" array");
		for (i = 0; i < json_object_array_length(list); i++)
			if ((ret = load_post_processor(l, json_object_array_get_idx(list, i))))
				return ret;
		return 0;
	}
	if (strcmp(type, "TemplateProcessing"))
		return 0;
	single = get(pp, "single");
	specials = get(pp, "special_tokens");
	if (!single || !json_object_is_type(single, json_type_array))
		return fmt_err(l, "TemplateProcessing has no \"single\" array");
	n = json_object_array_length(single);
	for (i = 0; i < n; i++) {
		json_object *piece = json_object_array_get_idx(single, i), *sp = get(piece, "SpecialToken"), *v, *ids;
		const char *name;

		if (get(piece, "Sequence")) {
			seen_a = 1;
			continue;
		}
		if (!sp || !(v = get(sp, "id")) || !json_object_is_type(v, json_type_string))
			return fmt_err(l, "TemplateProcessing: piece %zu of \"single\" is neither a Sequence nor a "
				       "SpecialToken with an id", i);
		name = json_object_get_string(v);
		if (!specials || !(v = get(specials, name)) || !(ids = get(v, "ids")) ||
		    !json_object_is_type(ids, json_type_array))
			return fmt_err(l, "TemplateProcessing: special token '%s' has no ids in \"special_tokens\"",
				       name);
		for (j = 0; j < json_object_array_length(ids); j++) {
			json_object *id = json_object_array_get_idx(ids, j);
			int64_t x = json_object_get_int64(id);
			size_t *cnt = seen_a ? &l->t->n_suf : &l->t->n_pre;
			int32_t *dst = seen_a ? l->t->tpl_suf : l->t->tpl_pre;

			if (!json_object_is_type(id, json_type_int) || x < 0 || x > INT32_MAX)
				return fmt_err(l, "TemplateProcessing: special token '%s' has a bad id", name);
			if (*cnt >= GM_TOKENIZER_MAX_TEMPLATE)
				return unsupported(l, "TemplateProcessing adds more than %d special tokens on a side",
						   GM_TOKENIZER_MAX_TEMPLATE);
			dst[(*cnt)++] = (int32_t)x;
		}
	}
	return 0;
}

/* The bytes a token decodes to, as tokenizers' ByteLevel decoder gives
 * them: each character mapped back to its byte, or, when one character is
 * not of the byte-level alphabet, the token's own UTF-8 as is. */
static void add_token_bytes(struct loader *l, const char *s, size_t len)
{
	size_t start = l->bytes.len, i = 0;

	while (i < len) {
		uint32_t cp;
		size_t n;
		int valid;

		utf8_seq((const unsigned char *)s + i, len - i, &valid);
		if (!valid)
			break;
		n = utf8_decode(s + i, &cp);
		if (cp >= 324 || l->byte_of_cp[cp] < 0)
			break;
		gm_buf_addch(&l->bytes, l->byte_of_cp[cp]);
		i += n;
	}
	if (i < len) {
		l->bytes.len = start;
		gm_buf_add(&l->bytes, s, len);
	}
}

struct added_key {
	unsigned char first;
	uint32_t len;
	uint32_t index;
};

static int cmp_added(const void *pa, const void *pb)
{
	const struct added_key *a = pa, *b = pb;

	if (a->first != b->first)
		return a->first < b->first ? -1 : 1;
	if (a->len != b->len)
		return a->len > b->len ? -1 : 1;
	return a->index < b->index ? -1 : a->index > b->index;
}

static void build_added_set(gm_tokenizer *t, struct added_set *set, int normalized)
{
	struct added_key *keys = gm_xmalloc((t->n_added ? t->n_added : 1) * sizeof(*keys));
	size_t i, c;

	set->n = 0;
	for (i = 0; i < t->n_added; i++) {
		const struct added_token *a = &t->added[i];
		if (!!a->normalized != !!normalized)
			continue;
		keys[set->n].first = (unsigned char)t->strings[a->off];
		keys[set->n].len = a->len;
		keys[set->n].index = (uint32_t)i;
		set->n++;
	}
	qsort(keys, set->n, sizeof(*keys), cmp_added);
	set->order = gm_xmalloc((set->n ? set->n : 1) * sizeof(*set->order));
	for (i = 0; i < set->n; i++)
		set->order[i] = keys[i].index;
	for (c = 0, i = 0; c < 257; c++) {
		while (i < set->n && keys[i].first < c)
			i++;
		set->first[c] = (uint32_t)i;
	}
	free(keys);
}

static int build(struct loader *l, json_object *root)
{
	gm_tokenizer *t = l->t;
	int32_t max_id = -1;
	int byte_level = 0, ret;
	json_object *v;
	size_t i;

	if (!json_object_is_type(root, json_type_object))
		return fmt_err(l, "not a JSON object: is this a Hugging Face tokenizer.json?");
	if ((v = get(root, "truncation")))
		return unsupported(l, "truncation is not supported (set \"truncation\" to null)");
	if ((ret = load_model(l, get(root, "model"), &max_id)) ||
	    (ret = load_normalizer(l, get(root, "normalizer"))) ||
	    (ret = load_pre_tokenizer(l, get(root, "pre_tokenizer"), &byte_level)) ||
	    (ret = load_decoder(l, get(root, "decoder"))) ||
	    (ret = load_added(l, get(root, "added_tokens"), &max_id)))
		return ret;
	/* the post-processor: special tokens for gm_tokenizer_encode_special (and offsets, not kept) */
	if ((ret = load_post_processor(l, get(root, "post_processor"))))
		return ret;
	if (!byte_level)
		return unsupported(l, "pre-tokenizer without ByteLevel is not supported (only byte-level BPE)");
	if (l->strings.len > UINT32_MAX / 2)
		return fmt_err(l, "the vocabulary is too large");

	/* Per-id tables: model tokens first, added tokens override. */
	t->n_ids = (size_t)max_id + 1;
	for (i = 0; i < t->n_pre + t->n_suf; i++) {
		int32_t id = i < t->n_pre ? t->tpl_pre[i] : t->tpl_suf[i - t->n_pre];

		if ((size_t)id >= t->n_ids)
			return fmt_err(l, "TemplateProcessing: special token id %d is not in the vocabulary", (int)id);
	}
	t->tok = gm_xcalloc(t->n_ids ? t->n_ids : 1, sizeof(*t->tok));
	for (i = 0; i <= t->vocab.mask; i++) {
		const struct str_slot *s = &t->vocab.slots[i];
		struct tok_info *ti;
		if (s->id < 0)
			continue;
		ti = &t->tok[s->id];
		ti->str_off = s->off;
		ti->str_len = s->len;
		ti->flags = TOK_PRESENT;
	}
	for (i = 0; i < t->n_added; i++) {
		const struct added_token *a = &t->added[i];
		struct tok_info *ti = &t->tok[a->id];
		ti->str_off = a->content_off;
		ti->str_len = a->content_len;
		ti->flags = TOK_PRESENT | TOK_ADDED | (a->special ? TOK_SPECIAL : 0);
	}
	/* What tokens decode to: an added token's matched form (normalized
	 * if it is normalized), as tokenizers' simple_id_to_token. */
	for (i = 0; i < t->n_ids; i++) {
		struct tok_info *ti = &t->tok[i];
		if (ti->flags & TOK_ADDED)
			continue;
		ti->byte_off = (uint32_t)l->bytes.len;
		if (ti->flags)
			add_token_bytes(l, l->strings.buf + ti->str_off, ti->str_len);
		ti->byte_len = (uint32_t)(l->bytes.len - ti->byte_off);
	}
	for (i = 0; i < t->n_added; i++) {
		const struct added_token *a = &t->added[i];
		struct tok_info *ti = &t->tok[a->id];
		if (ti->str_off != a->content_off)
			continue; /* a later added token took this id */
		ti->byte_off = (uint32_t)l->bytes.len;
		add_token_bytes(l, l->strings.buf + a->off, a->len);
		ti->byte_len = (uint32_t)(l->bytes.len - ti->byte_off);
	}
	if (l->bytes.len > UINT32_MAX / 2)
		return fmt_err(l, "the vocabulary is too large");
	t->strings_len = l->strings.len;
	t->strings = gm_buf_detach(&l->strings, NULL);
	t->bytes = gm_buf_detach(&l->bytes, NULL);
	build_added_set(t, &t->raw_set, 0);
	build_added_set(t, &t->norm_set, 1);
	return 0;
}

int gm_tokenizer_load_memory(const char *json, size_t len, const char *what, gm_tokenizer **out, gm_error *err)
{
	struct loader l;
	json_object *root;
	int ret;

	*out = NULL;
	if (!what)
		what = "tokenizer.json";
	if ((ret = gm_json_parse(json, len, what, &root, err)))
		return ret;
	memset(&l, 0, sizeof(l));
	l.t = gm_xcalloc(1, sizeof(*l.t));
	l.what = what;
	l.err = err;
	gm_buf_init(&l.strings);
	gm_buf_init(&l.bytes);
	byte_level_map(l.cp_of_byte, l.byte_of_cp);
	ret = build(&l, root);
	json_object_put(root);
	gm_buf_release(&l.strings);
	gm_buf_release(&l.bytes);
	if (ret) {
		gm_tokenizer_free(l.t);
		return ret;
	}
	*out = l.t;
	return 0;
}

int gm_tokenizer_load(const char *path, gm_tokenizer **out, gm_error *err)
{
	gm_buf data = GM_BUF_INIT;
	char *file = gm_is_dir(path) ? gm_path_join(path, "tokenizer.json") : gm_xstrdup(path);
	int ret;

	*out = NULL;
	ret = gm_read_file(file, &data, err);
	if (!ret)
		ret = gm_tokenizer_load_memory(data.buf, data.len, file, out, err);
	gm_buf_release(&data);
	free(file);
	return ret;
}

void gm_tokenizer_free(gm_tokenizer *t)
{
	int i;

	if (!t)
		return;
	free(t->tok);
	free(t->strings);
	free(t->bytes);
	free(t->vocab.slots);
	free(t->merges.slots);
	free(t->added);
	free(t->raw_set.order);
	free(t->norm_set.order);
	for (i = 0; i < t->n_split; i++)
		pcre2_code_free(t->split[i]);
	free(t);
}

/* ------------------------------------------------------------ queries */

size_t gm_tokenizer_n_tokens(const gm_tokenizer *t)
{
	return t->n_ids;
}

int32_t gm_tokenizer_token_id(const gm_tokenizer *t, const char *content)
{
	size_t i, len = strlen(content);

	for (i = 0; i < t->n_added; i++) {
		const struct tok_info *ti = &t->tok[t->added[i].id];
		if (ti->str_len == len && !memcmp(t->strings + ti->str_off, content, len))
			return t->added[i].id;
	}
	return str_map_get(&t->vocab, t->strings, content, len);
}

int gm_tokenizer_is_special(const gm_tokenizer *t, int32_t id)
{
	return id >= 0 && (size_t)id < t->n_ids && (t->tok[id].flags & TOK_SPECIAL);
}

int gm_tokenizer_token_bytes(const gm_tokenizer *t, int32_t id, gm_buf *out, gm_error *err)
{
	const struct tok_info *ti;

	if (id < 0)
		return gm_error_set(err, GM_EINVAL, "token id %ld is negative", (long)id);
	if ((size_t)id >= t->n_ids)
		return 0; /* no token: the padding rows of an embedding, say */
	ti = &t->tok[id];
	gm_buf_add(out, t->bytes + ti->byte_off, ti->byte_len);
	return 0;
}

int gm_tokenizer_decode(const gm_tokenizer *t, const int32_t *ids, size_t n, int skip_special, gm_buf *out,
			gm_error *err)
{
	gm_buf raw = GM_BUF_INIT;
	size_t i;

	for (i = 0; i < n; i++) {
		const struct tok_info *ti;

		if (ids[i] < 0) {
			gm_buf_release(&raw);
			return gm_error_set(err, GM_EINVAL, "token id %ld at position %zu is negative",
					    (long)ids[i], i);
		}
		if ((size_t)ids[i] >= t->n_ids)
			continue;
		ti = &t->tok[ids[i]];
		if (skip_special && (ti->flags & TOK_SPECIAL))
			continue;
		gm_buf_add(&raw, t->bytes + ti->byte_off, ti->byte_len);
	}
	add_lossy(out, raw.buf, raw.len);
	gm_buf_release(&raw);
	return 0;
}

/* ------------------------------------------------------------ encoding */

struct sym {
	int32_t id;
	int32_t prev, next; /* -1: none */
	int32_t live;
};

struct merge_ent {
	uint32_t rank;
	uint32_t pos;
	int32_t id;
};

struct cache_slot {
	uint32_t hash;
	uint32_t key_off, key_len; /* in enc->cache_keys */
	uint32_t ids_off, ids_len; /* in enc->cache_ids; key_len == UINT32_MAX: empty */
};

struct enc {
	const gm_tokenizer *t;
	gm_error *err;
	int32_t *ids;
	size_t n, alloc;
	pcre2_match_data *md;
	struct sym *syms;
	size_t syms_alloc;
	struct merge_ent *heap;
	size_t heap_alloc;
	gm_buf word;
	gm_buf norm; /* NFC-normalized text */
	/* Words already encoded in this call. */
	struct cache_slot *cache;
	size_t cache_mask, cache_count;
	gm_buf cache_keys;
	int32_t *cache_ids;
	size_t cache_n, cache_alloc;
};

static void push_id(struct enc *e, int32_t id)
{
	if (e->n == e->alloc) {
		e->alloc = e->alloc ? 2 * e->alloc : 64;
		e->ids = gm_xrealloc(e->ids, e->alloc * sizeof(*e->ids));
	}
	e->ids[e->n++] = id;
}

static int merge_less(const struct merge_ent *a, const struct merge_ent *b)
{
	return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(struct enc *e, size_t *n, uint32_t rank, uint32_t pos, int32_t id)
{
	struct merge_ent m = { rank, pos, id };
	size_t i;

	if (*n == e->heap_alloc) {
		e->heap_alloc = e->heap_alloc ? 2 * e->heap_alloc : 64;
		e->heap = gm_xrealloc(e->heap, e->heap_alloc * sizeof(*e->heap));
	}
	i = (*n)++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (!merge_less(&m, &e->heap[parent]))
			break;
		e->heap[i] = e->heap[parent];
		i = parent;
	}
	e->heap[i] = m;
}

static struct merge_ent heap_pop(struct enc *e, size_t *n)
{
	struct merge_ent top = e->heap[0], last = e->heap[--*n];
	size_t i = 0;

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && merge_less(&e->heap[c + 1], &e->heap[c]))
			c++;
		if (!merge_less(&e->heap[c], &last))
			break;
		e->heap[i] = e->heap[c];
		i = c;
	}
	if (*n)
		e->heap[i] = last;
	return top;
}

static void try_pair(struct enc *e, size_t *nheap, int32_t left)
{
	const struct pair_slot *p;
	int32_t right = e->syms[left].next;

	if (right < 0)
		return;
	p = pair_map_get(&e->t->merges, e->syms[left].id, e->syms[right].id);
	if (p)
		heap_push(e, nheap, p->rank, (uint32_t)left, p->id);
}

/* BPE of one pre-tokenized word (raw bytes), as tokenizers' Word::merge_all. */
static void bpe(struct enc *e, const char *w, size_t len)
{
	const gm_tokenizer *t = e->t;
	size_t i, nsym = 0, nheap = 0;
	int32_t unk_run = -1, pos;

	if (t->ignore_merges) {
		/* A word that is a token as a whole is not merged. */
		gm_buf_reset(&e->word);
		for (i = 0; i < len; i++) {
			unsigned char b = (unsigned char)w[i];
			gm_buf_add(&e->word, t->bl[b], t->bl_len[b]);
		}
		pos = str_map_get(&t->vocab, t->strings, e->word.buf, e->word.len);
		if (pos >= 0) {
			push_id(e, pos);
			return;
		}
	}
	if (len > e->syms_alloc) {
		e->syms_alloc = len > 2 * e->syms_alloc ? len : 2 * e->syms_alloc;
		e->syms = gm_xrealloc(e->syms, e->syms_alloc * sizeof(*e->syms));
	}
	for (i = 0; i < len; i++) {
		int32_t id = t->byte_id[(unsigned char)w[i]];
		if (id < 0) {
			/* Not in the vocabulary: the unknown token, or nothing. */
			if (t->unk_id < 0)
				continue;
			if (t->fuse_unk && unk_run >= 0)
				continue;
			id = t->unk_id;
			unk_run = (int32_t)nsym;
		} else {
			unk_run = -1;
		}
		e->syms[nsym].id = id;
		e->syms[nsym].prev = (int32_t)nsym - 1;
		e->syms[nsym].next = (int32_t)nsym + 1;
		e->syms[nsym].live = 1;
		nsym++;
	}
	if (!nsym)
		return;
	e->syms[nsym - 1].next = -1;
	for (i = 0; i + 1 < nsym; i++)
		try_pair(e, &nheap, (int32_t)i);
	while (nheap) {
		struct merge_ent m = heap_pop(e, &nheap);
		struct sym *s = &e->syms[m.pos], *r;
		const struct pair_slot *p;

		if (!s->live || s->next < 0)
			continue;
		r = &e->syms[s->next];
		p = pair_map_get(&t->merges, s->id, r->id);
		if (!p || p->id != m.id)
			continue; /* stale */
		s->id = m.id;
		r->live = 0;
		s->next = r->next;
		if (s->next >= 0)
			e->syms[s->next].prev = (int32_t)m.pos;
		if (s->prev >= 0)
			try_pair(e, &nheap, s->prev);
		try_pair(e, &nheap, (int32_t)m.pos);
	}
	for (pos = 0; pos >= 0; pos = e->syms[pos].next)
		push_id(e, e->syms[pos].id);
}

static void cache_grow(struct enc *e)
{
	struct cache_slot *old = e->cache;
	size_t i, old_size = e->cache ? e->cache_mask + 1 : 0, size = old_size ? 2 * old_size : 1024;

	e->cache = gm_xmalloc(size * sizeof(*e->cache));
	for (i = 0; i < size; i++)
		e->cache[i].key_len = UINT32_MAX;
	e->cache_mask = size - 1;
	for (i = 0; i < old_size; i++) {
		size_t j;
		if (old[i].key_len == UINT32_MAX)
			continue;
		for (j = old[i].hash & e->cache_mask; e->cache[j].key_len != UINT32_MAX; j = (j + 1) & e->cache_mask)
			;
		e->cache[j] = old[i];
	}
	free(old);
}

/* A word: from the per-call cache, or by BPE (then cached). */
static void encode_word(struct enc *e, const char *w, size_t len)
{
	struct cache_slot *s;
	uint32_t hash;
	size_t i, first;

	if (!len)
		return;
	if (len > CACHE_WORD_MAX) {
		bpe(e, w, len);
		return;
	}
	if (2 * (e->cache_count + 1) > (e->cache ? e->cache_mask + 1 : 0))
		cache_grow(e);
	hash = hash_bytes(w, len);
	for (i = hash & e->cache_mask;; i = (i + 1) & e->cache_mask) {
		s = &e->cache[i];
		if (s->key_len == UINT32_MAX)
			break;
		if (s->hash == hash && s->key_len == len && !memcmp(e->cache_keys.buf + s->key_off, w, len)) {
			size_t k;
			for (k = 0; k < s->ids_len; k++)
				push_id(e, e->cache_ids[s->ids_off + k]);
			return;
		}
	}
	first = e->n;
	bpe(e, w, len);
	if (e->cache_keys.len > UINT32_MAX / 2 || e->cache_n + (e->n - first) > UINT32_MAX / 2)
		return; /* a cache of 2 GB is enough */
	if (e->cache_n + (e->n - first) > e->cache_alloc) {
		e->cache_alloc = 2 * (e->cache_n + (e->n - first)) + 256;
		e->cache_ids = gm_xrealloc(e->cache_ids, e->cache_alloc * sizeof(*e->cache_ids));
	}
	s->hash = hash;
	s->key_off = arena_add(&e->cache_keys, w, len);
	s->key_len = (uint32_t)len;
	s->ids_off = (uint32_t)e->cache_n;
	s->ids_len = (uint32_t)(e->n - first);
	if (e->n > first) /* (a word of no ids: nothing allocated yet, and no offset to take from NULL) */
		memcpy(e->cache_ids + e->cache_n, e->ids + first, (e->n - first) * sizeof(*e->ids));
	e->cache_n += e->n - first;
	e->cache_count++;
}

/* Regex stage k of the pre-tokenizer over s[0..len) (valid UTF-8): each
 * match and each gap between matches goes on to the next stage
 * (behavior Isolated); after the last stage, BPE. */
static int split_stage(struct enc *e, int k, const char *s, size_t len)
{
	const gm_tokenizer *t = e->t;
	size_t off = 0, gap = 0;

	if (k == t->n_split) {
		encode_word(e, s, len);
		return 0;
	}
	while (off < len) {
		PCRE2_SIZE *ov;
		size_t ms, me;
		int rc = -1, ret;

		if (t->split_jit[k])
			rc = pcre2_jit_match(t->split[k], (PCRE2_SPTR)s, len, off, 0, e->md, NULL);
		if (!t->split_jit[k] || rc == PCRE2_ERROR_JIT_STACKLIMIT)
			rc = pcre2_match(t->split[k], (PCRE2_SPTR)s, len, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
					 e->md, NULL);
		if (rc == PCRE2_ERROR_NOMATCH)
			break;
		if (rc < 0) {
			PCRE2_UCHAR msg[256];
			pcre2_get_error_message(rc, msg, sizeof(msg));
			return gm_error_set(e->err, GM_ERROR, "pre-tokenizer regex failed at byte %zu: %s", off,
					    (char *)msg);
		}
		ov = pcre2_get_ovector_pointer(e->md);
		ms = ov[0];
		me = ov[1];
		if (me <= ms) {
			/* An empty match splits nothing: step over one character. */
			off = ms + 1;
			while (off < len && ((unsigned char)s[off] & 0xc0) == 0x80)
				off++;
			continue;
		}
		if (ms > gap && (ret = split_stage(e, k + 1, s + gap, ms - gap)))
			return ret;
		if ((ret = split_stage(e, k + 1, s + ms, me - ms)))
			return ret;
		off = gap = me;
	}
	if (gap < len)
		return split_stage(e, k + 1, s + gap, len - gap);
	return 0;
}

/*
 * Characters that NFC keeps as they are, whatever surrounds them: their
 * combining class is 0, they are their own NFC, and no composition has them
 * second.  The text can be cut before each of them and normalized piece by
 * piece, so that only the pieces holding other characters (accents,
 * jamo...) need utf8proc.  The ranges were checked against utf8proc's data
 * for all code points.
 */
static int nfc_inert(uint32_t cp)
{
	return cp < 0x300 || (cp >= 0x400 && cp <= 0x482) || (cp >= 0x3041 && cp <= 0x3096) ||
	       (cp >= 0x30a1 && cp <= 0x30fa) || (cp >= 0x3400 && cp <= 0x4dbf) ||
	       (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0xac00 && cp <= 0xd7a3) ||
	       (cp >= 0x1f300 && cp <= 0x1faff);
}

/*
 * NFC of s[0..len) (valid UTF-8).  Returns 0 with *out == s when nothing
 * can change, else the normalized text in e->norm.
 */
static int nfc_text(struct enc *e, const char *s, size_t len, const char **out, size_t *out_len)
{
	size_t i, chunk = 0, copied = 0;
	int dirty = 0;

	for (i = 0; i < len && (unsigned char)s[i] < 0xcc; i++)
		;
	if (i == len) {
		*out = s;
		*out_len = len;
		return 0;
	}
	gm_buf_reset(&e->norm);
	for (i = 0; i <= len;) {
		uint32_t cp = 0;
		size_t n = i < len ? utf8_decode(s + i, &cp) : 1;

		if (i == len || nfc_inert(cp)) {
			/* A cut before i: normalize the chunk before it if needed. */
			if (dirty) {
				char *norm;
				size_t norm_len;
				if (nfc(s + chunk, i - chunk, &norm, &norm_len))
					return gm_error_set(e->err, GM_EINVAL, "the text cannot be NFC-normalized");
				gm_buf_add(&e->norm, s + copied, chunk - copied);
				gm_buf_add(&e->norm, norm, norm_len);
				free(norm);
				copied = i;
				dirty = 0;
			}
			chunk = i;
		} else {
			dirty = 1;
		}
		i += n;
	}
	gm_buf_add(&e->norm, s + copied, len - copied);
	*out = e->norm.buf;
	*out_len = e->norm.len;
	return 0;
}

static int split_added(struct enc *e, const struct added_set *set, const char *s, size_t len);

/* A piece of raw text between added tokens: normalized, then split on the
 * normalized added tokens, then pre-tokenized. */
static int encode_raw_piece(struct enc *e, const char *s, size_t len)
{
	const char *norm = s;
	size_t norm_len = len;
	int ret;

	if (e->t->nfc && (ret = nfc_text(e, s, len, &norm, &norm_len)))
		return ret;
	return split_added(e, &e->t->norm_set, norm, norm_len);
}

/*
 * Finds the added tokens of set in s, leftmost first and longest at one
 * position, and applies their single_word, lstrip and rstrip flags as
 * tokenizers' AddedVocabulary::find_matches does; the text between them
 * goes on to the next step.
 */
static int split_added(struct enc *e, const struct added_set *set, const char *s, size_t len)
{
	const gm_tokenizer *t = e->t;
	size_t pos = 0, done = 0;
	int raw = set == &t->raw_set, ret;

	while (set->n && pos < len) {
		unsigned char c = (unsigned char)s[pos];
		const struct added_token *a = NULL;
		size_t j, start, stop;

		for (j = set->first[c]; j < set->first[c + 1]; j++) {
			const struct added_token *cand = &t->added[set->order[j]];
			if (cand->len <= len - pos && !memcmp(t->strings + cand->off, s + pos, cand->len)) {
				a = cand;
				break;
			}
		}
		if (!a) {
			pos++;
			continue;
		}
		start = pos;
		stop = pos + a->len;
		pos = stop;
		if (a->single_word) {
			uint32_t before = 0, after = 0;
			if (start > 0)
				utf8_decode(s + utf8_last(s, start), &before);
			if (stop < len)
				utf8_decode(s + stop, &after);
			if ((start > 0 && is_word_char(before)) || (stop < len && is_word_char(after)))
				continue;
		}
		if (a->lstrip) {
			while (start > done) {
				uint32_t cp;
				size_t prev = utf8_last(s, start);
				utf8_decode(s + prev, &cp);
				if (!is_white_space(cp))
					break;
				start = prev;
			}
		}
		if (a->rstrip) {
			while (stop < len) {
				uint32_t cp;
				size_t n = utf8_decode(s + stop, &cp);
				if (!is_white_space(cp))
					break;
				stop += n;
			}
			pos = stop;
		}
		if (start > done) {
			ret = raw ? encode_raw_piece(e, s + done, start - done)
				  : split_stage(e, 0, s + done, start - done);
			if (ret)
				return ret;
		}
		push_id(e, a->id);
		done = stop;
	}
	if (done < len)
		return raw ? encode_raw_piece(e, s + done, len - done) : split_stage(e, 0, s + done, len - done);
	return 0;
}

void gm_tokenizer_template(const gm_tokenizer *t, const int32_t **pre, size_t *n_pre, const int32_t **suf,
			   size_t *n_suf)
{
	*pre = t->tpl_pre;
	*n_pre = t->n_pre;
	*suf = t->tpl_suf;
	*n_suf = t->n_suf;
}

int gm_tokenizer_encode_special(const gm_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n_ids,
				gm_error *err)
{
	int32_t *body, *all;
	size_t n;
	int ret;

	if ((ret = gm_tokenizer_encode(t, text, len, &body, &n, err))) {
		*ids = NULL;
		*n_ids = 0;
		return ret;
	}
	if (!t->n_pre && !t->n_suf) {
		*ids = body;
		*n_ids = n;
		return 0;
	}
	all = gm_xmalloc((t->n_pre + n + t->n_suf) * sizeof(*all));
	memcpy(all, t->tpl_pre, t->n_pre * sizeof(*all));
	memcpy(all + t->n_pre, body, n * sizeof(*all));
	memcpy(all + t->n_pre + n, t->tpl_suf, t->n_suf * sizeof(*all));
	free(body);
	*ids = all;
	*n_ids = t->n_pre + n + t->n_suf;
	return 0;
}

int gm_tokenizer_encode(const gm_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n_ids,
			gm_error *err)
{
	struct enc e;
	size_t valid = utf8_valid_len(text, len);
	int ret;

	*ids = NULL;
	*n_ids = 0;
	if (valid != len)
		return gm_error_set(err, GM_EINVAL, "the text is not valid UTF-8 (at byte %zu)", valid);
	memset(&e, 0, sizeof(e));
	e.t = t;
	e.err = err;
	gm_buf_init(&e.cache_keys);
	gm_buf_init(&e.word);
	gm_buf_init(&e.norm);
	e.md = pcre2_match_data_create(1, NULL);
	if (!e.md)
		return gm_error_set(err, GM_ENOMEM, "out of memory");
	ret = split_added(&e, &t->raw_set, text, len);
	pcre2_match_data_free(e.md);
	free(e.syms);
	free(e.heap);
	free(e.cache);
	free(e.cache_ids);
	gm_buf_release(&e.cache_keys);
	gm_buf_release(&e.word);
	gm_buf_release(&e.norm);
	if (ret) {
		free(e.ids);
		return ret;
	}
	*ids = e.ids ? e.ids : gm_xmalloc(sizeof(**ids));
	*n_ids = e.n;
	return 0;
}
