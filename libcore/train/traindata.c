/* traindata.c - training data files (see traindata.h). */
#include "train/traindata.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"

struct gm_td_reader {
	FILE *fp;
	int owns_fp;
	char *name;
	size_t max_line;
	unsigned long lineno;
	gm_buf line;
	json_object *obj; /* the current example's object */
	struct gm_td_message *msgs;
	size_t msgs_alloc;
	int32_t *ids;
	uint8_t *mask;
	size_t tok_alloc;
	char *data;       /* gm_td_open_mem's copy */
};

static const char *const kind_names[GM_TD_KIND_COUNT] = {
	"text", "messages", "prompt/completion", "token ids"
};
static const char *const kind_keys[GM_TD_KIND_COUNT] = {
	"text", "messages", "prompt_completion", "token_ids"
};
static const char *const role_names[] = { "system", "user", "assistant", "tool" };

const char *gm_td_kind_name(enum gm_td_kind k)
{
	return (unsigned)k < GM_TD_KIND_COUNT ? kind_names[k] : "?";
}

const char *gm_td_kind_key(enum gm_td_kind k)
{
	return (unsigned)k < GM_TD_KIND_COUNT ? kind_keys[k] : "?";
}

const char *gm_td_role_name(enum gm_td_role r)
{
	return (unsigned)r <= GM_TD_ROLE_TOOL ? role_names[r] : "?";
}

/* ------------------------------------------------------------ reader */

int gm_td_open(const char *path, size_t max_line, gm_td_reader **out, gm_error *err)
{
	gm_td_reader *r;
	FILE *fp;

	*out = NULL;
	if (!strcmp(path, "-")) {
		fp = stdin;
	} else {
		if (gm_is_dir(path))
			return gm_error_set(err, GM_EINVAL, "%s: is a directory, not a data file", path);
		fp = fopen(path, "rb");
		if (!fp)
			return gm_error_errno(err, "%s: cannot open", path);
	}
	r = gm_xcalloc(1, sizeof(*r));
	r->fp = fp;
	r->owns_fp = fp != stdin;
	r->name = gm_xstrdup(fp == stdin ? "<stdin>" : path);
	r->max_line = max_line ? max_line : GM_TD_DEFAULT_MAX_LINE;
	gm_buf_init(&r->line);
	*out = r;
	return 0;
}

int gm_td_open_mem(const char *name, const char *data, size_t len, size_t max_line, gm_td_reader **out,
		   gm_error *err)
{
	gm_td_reader *r;

	*out = NULL;
	r = gm_xcalloc(1, sizeof(*r));
	/* a copy of its own: fmemopen reads the buffer in place, and cannot open an empty one */
	r->data = gm_xmalloc(len + 1);
	memcpy(r->data, data, len);
	r->data[len] = '\n';
	r->fp = fmemopen(r->data, len + 1, "rb");
	if (!r->fp) {
		free(r->data);
		free(r);
		return gm_error_errno(err, "%s: cannot read", name);
	}
	r->owns_fp = 1;
	r->name = gm_xstrdup(name);
	r->max_line = max_line ? max_line : GM_TD_DEFAULT_MAX_LINE;
	gm_buf_init(&r->line);
	*out = r;
	return 0;
}

void gm_td_close(gm_td_reader *r)
{
	if (!r)
		return;
	if (r->owns_fp)
		fclose(r->fp);
	free(r->data);
	json_object_put(r->obj);
	gm_buf_release(&r->line);
	free(r->msgs);
	free(r->ids);
	free(r->mask);
	free(r->name);
	free(r);
}

const char *gm_td_name(const gm_td_reader *r)
{
	return r->name;
}

/*
 * Reads one line into r->line without its newline, keeping at most
 * max_line bytes (*too_long tells it was longer).  1: a line; 0: end of
 * file; < 0: read error.
 */
static int read_line(gm_td_reader *r, int *too_long, gm_error *err)
{
	char chunk[4096];
	size_t n = 0;
	int c, any = 0;

	gm_buf_reset(&r->line);
	*too_long = 0;
	while ((c = getc_unlocked(r->fp)) != EOF) {
		any = 1;
		if (c == '\n')
			break;
		if (r->line.len + n >= r->max_line) {
			*too_long = 1;
			continue;
		}
		chunk[n++] = (char)c;
		if (n == sizeof(chunk)) {
			gm_buf_add(&r->line, chunk, n);
			n = 0;
		}
	}
	gm_buf_add(&r->line, chunk, n);
	if (ferror(r->fp))
		return gm_error_errno(err, "%s: read error after line %lu", r->name, r->lineno);
	if (!any)
		return 0;
	r->lineno++;
	return 1;
}

static int line_error(const gm_td_reader *r, gm_error *err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int line_error(const gm_td_reader *r, gm_error *err, const char *fmt, ...)
{
	gm_buf b = GM_BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	gm_buf_vaddf(&b, fmt, ap);
	va_end(ap);
	gm_error_set(err, GM_EFORMAT, "%s:%lu: %s", r->name, r->lineno, b.buf);
	gm_buf_release(&b);
	return GM_EFORMAT;
}

/* Offset of the first byte that is not valid UTF-8, or len. */
static size_t utf8_invalid_at(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i], n, cp, k;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return i;
		}
		if (i + n >= len)
			return i;
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return i;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return i;
		i += n + 1;
	}
	return len;
}

static int is_blank(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v')
			return 0;
	return 1;
}

static const char *type_name(json_object *v)
{
	return json_type_to_name(json_object_get_type(v));
}

/* ------------------------------------------------------------ the four forms */

static int key_kind(const char *key)
{
	if (!strcmp(key, "text"))
		return GM_TD_TEXT;
	if (!strcmp(key, "messages"))
		return GM_TD_MESSAGES;
	if (!strcmp(key, "prompt") || !strcmp(key, "completion"))
		return GM_TD_PROMPT_COMPLETION;
	if (!strcmp(key, "input_ids") || !strcmp(key, "loss_mask"))
		return GM_TD_TOKENS;
	return -1;
}

/* Finds the example's form from its keys. */
static int classify(const gm_td_reader *r, json_object *obj, enum gm_td_kind *kind, gm_error *err)
{
	struct json_object_iterator it = json_object_iter_begin(obj), end = json_object_iter_end(obj);
	const char *first = NULL;
	int k0 = -1;

	for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
		const char *key = json_object_iter_peek_name(&it);
		int k = key_kind(key);
		if (k < 0)
			return line_error(r, err,
					  "unexpected key '%s' (an example has 'text', 'messages', "
					  "'prompt' and 'completion', or 'input_ids' and 'loss_mask')", key);
		if (k0 >= 0 && k != k0)
			return line_error(r, err, "mixes two forms: '%s' (%s) and '%s' (%s) cannot be in one "
					  "example", first, kind_names[k0], key, kind_names[k]);
		if (k0 < 0) {
			k0 = k;
			first = key;
		}
	}
	if (k0 < 0)
		return line_error(r, err, "empty object: expected 'text', 'messages', 'prompt' and "
				  "'completion', or 'input_ids'");
	*kind = (enum gm_td_kind)k0;
	return 0;
}

/* The string at key: 0, or an error (absent is an error too). */
static int get_str(const gm_td_reader *r, json_object *obj, const char *key, const char *ctx,
		   const char **s, size_t *len, gm_error *err)
{
	json_object *v;

	if (!json_object_object_get_ex(obj, key, &v))
		return line_error(r, err, "%s'%s' is missing", ctx, key);
	if (!json_object_is_type(v, json_type_string))
		return line_error(r, err, "%s'%s' must be a string, not %s", ctx, key, type_name(v));
	*s = json_object_get_string(v);
	*len = (size_t)json_object_get_string_len(v);
	return 0;
}

static int parse_text(const gm_td_reader *r, json_object *obj, gm_td_example *ex, gm_error *err)
{
	int ret = get_str(r, obj, "text", "", &ex->text, &ex->text_len, err);

	if (!ret && !ex->text_len)
		return line_error(r, err, "'text' is empty");
	return ret;
}

static int parse_prompt_completion(const gm_td_reader *r, json_object *obj, gm_td_example *ex,
				   gm_error *err)
{
	int has_p = json_object_object_get_ex(obj, "prompt", NULL);
	int has_c = json_object_object_get_ex(obj, "completion", NULL);
	int ret;

	if (!has_c)
		return line_error(r, err, "'prompt' without 'completion'");
	if (!has_p)
		return line_error(r, err, "'completion' without 'prompt'");
	if ((ret = get_str(r, obj, "prompt", "", &ex->prompt, &ex->prompt_len, err)) ||
	    (ret = get_str(r, obj, "completion", "", &ex->completion, &ex->completion_len, err)))
		return ret;
	if (!ex->completion_len)
		return line_error(r, err, "'completion' is empty (nothing to learn)");
	return 0;
}

static int parse_message(const gm_td_reader *r, json_object *m, size_t i, struct gm_td_message *out,
			 gm_error *err)
{
	struct json_object_iterator it, end;
	char ctx[48];
	const char *role;
	size_t len, k;
	int ret;

	if (!json_object_is_type(m, json_type_object))
		return line_error(r, err, "messages[%zu] must be an object, not %s", i, type_name(m));
	snprintf(ctx, sizeof(ctx), "messages[%zu]: ", i);
	it = json_object_iter_begin(m);
	end = json_object_iter_end(m);
	for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
		const char *key = json_object_iter_peek_name(&it);
		if (strcmp(key, "role") && strcmp(key, "content"))
			return line_error(r, err, "%sunexpected key '%s' (a message has 'role' and 'content')",
					  ctx, key);
	}
	if ((ret = get_str(r, m, "role", ctx, &role, &len, err)))
		return ret;
	for (k = 0; k <= GM_TD_ROLE_TOOL; k++)
		if (!strcmp(role, role_names[k]))
			break;
	if (k > GM_TD_ROLE_TOOL)
		return line_error(r, err, "%srole '%s' is not one of system, user, assistant, tool", ctx,
				  role);
	out->role = (enum gm_td_role)k;
	return get_str(r, m, "content", ctx, &out->content, &out->content_len, err);
}

static int parse_messages(gm_td_reader *r, json_object *obj, gm_td_example *ex, gm_error *err)
{
	json_object *list;
	size_t i, n;
	int ret, assistant = 0;

	json_object_object_get_ex(obj, "messages", &list);
	if (!json_object_is_type(list, json_type_array))
		return line_error(r, err, "'messages' must be a list, not %s", type_name(list));
	n = json_object_array_length(list);
	if (!n)
		return line_error(r, err, "'messages' is empty");
	if (n > r->msgs_alloc) {
		r->msgs = gm_xrealloc(r->msgs, n * sizeof(*r->msgs));
		r->msgs_alloc = n;
	}
	for (i = 0; i < n; i++) {
		if ((ret = parse_message(r, json_object_array_get_idx(list, i), i, &r->msgs[i], err)))
			return ret;
		assistant |= r->msgs[i].role == GM_TD_ROLE_ASSISTANT;
	}
	if (!assistant)
		return line_error(r, err, "'messages' has no assistant turn (nothing to learn)");
	ex->messages = r->msgs;
	ex->n_messages = n;
	return 0;
}

/* An integer element in [lo, hi]: 0 and *out, or -1. */
static int int_in(json_object *v, int64_t lo, int64_t hi, int64_t *out)
{
	if (!gm_json_is_integer(v))
		return -1;
	errno = 0;
	*out = json_object_get_int64(v);
	if (errno || *out < lo || *out > hi)
		return -1;
	return 0;
}

static void grow_tokens(gm_td_reader *r, size_t n)
{
	if (n <= r->tok_alloc)
		return;
	r->ids = gm_xrealloc(r->ids, n * sizeof(*r->ids));
	r->mask = gm_xrealloc(r->mask, n);
	r->tok_alloc = n;
}

static int parse_tokens(gm_td_reader *r, json_object *obj, gm_td_example *ex, gm_error *err)
{
	json_object *ids, *mask = NULL;
	size_t i, n, ones = 0;
	int64_t v;

	if (!json_object_object_get_ex(obj, "input_ids", &ids))
		return line_error(r, err, "'loss_mask' without 'input_ids'");
	if (!json_object_is_type(ids, json_type_array))
		return line_error(r, err, "'input_ids' must be a list, not %s", type_name(ids));
	n = json_object_array_length(ids);
	if (!n)
		return line_error(r, err, "'input_ids' is empty");
	grow_tokens(r, n);
	for (i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(ids, i);
		if (int_in(e, 0, INT32_MAX, &v))
			return line_error(r, err, "input_ids[%zu] must be an integer in [0, %d], not %s", i,
					  INT32_MAX, json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN));
		r->ids[i] = (int32_t)v;
	}
	ex->input_ids = r->ids;
	ex->n_tokens = n;
	ex->loss_mask = NULL;
	if (!json_object_object_get_ex(obj, "loss_mask", &mask))
		return 0;
	if (!json_object_is_type(mask, json_type_array))
		return line_error(r, err, "'loss_mask' must be a list, not %s", type_name(mask));
	if (json_object_array_length(mask) != n)
		return line_error(r, err, "'loss_mask' has %zu entr%s but 'input_ids' has %zu",
				  json_object_array_length(mask),
				  json_object_array_length(mask) == 1 ? "y" : "ies", n);
	for (i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(mask, i);
		if (int_in(e, 0, 1, &v))
			return line_error(r, err, "loss_mask[%zu] must be 0 or 1, not %s", i,
					  json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN));
		r->mask[i] = (uint8_t)v;
		ones += (size_t)v;
	}
	if (!ones)
		return line_error(r, err, "'loss_mask' is all 0 (nothing to learn)");
	ex->loss_mask = r->mask;
	return 0;
}

/*
 * Parses the line's one JSON value into r->obj.  data[len] must be the
 * line's NUL: json-c cannot tell where a bare number or literal ends
 * without a terminator, and would call "123" or "null" truncated instead
 * of letting us say that they are not objects.  Byte offsets in messages
 * are 1-based and count from the start of the line, as an editor does;
 * skip is how many bytes (a byte order mark) precede data.
 */
static int parse_json(gm_td_reader *r, const char *data, size_t len, size_t skip, gm_error *err)
{
	json_tokener *tok;
	enum json_tokener_error jerr;
	size_t end;

	json_object_put(r->obj);
	r->obj = NULL;
	tok = json_tokener_new();
	if (!tok)
		return gm_error_set(err, GM_ENOMEM, "%s:%lu: out of memory", r->name, r->lineno);
	r->obj = json_tokener_parse_ex(tok, data, (int)len + 1);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	/* our NUL ended the input early: no byte of the line is at fault */
	if (jerr == json_tokener_continue || jerr == json_tokener_error_parse_eof)
		return line_error(r, err, "invalid JSON: unexpected end of line");
	if (jerr != json_tokener_success)
		return line_error(r, err, "invalid JSON at byte %zu: %s", skip + end + 1,
				  json_tokener_error_desc(jerr));
	/* only white space may follow the value (the line holds no NUL) */
	for (; end < len; end++)
		if (data[end] != ' ' && data[end] != '\t' && data[end] != '\r')
			return line_error(r, err, "invalid JSON: unexpected data after the value at byte %zu",
					  skip + end + 1);
	return 0;
}

static int parse_line(gm_td_reader *r, char *data, size_t len, gm_td_example *ex, gm_error *err)
{
	size_t bad, skip = (size_t)(data - r->line.buf);
	int ret;

	if (memchr(data, '\0', len))
		return line_error(r, err, "contains a NUL byte");
	bad = utf8_invalid_at((const unsigned char *)data, len);
	if (bad < len)
		return line_error(r, err, "invalid UTF-8 at byte %zu", skip + bad + 1);
	if (len > INT32_MAX - 1)
		return line_error(r, err, "line is too long to parse (%zu bytes)", len);
	data[len] = '\0'; /* over the CR or the buffer's own NUL */
	if ((ret = parse_json(r, data, len, skip, err)))
		return ret;
	if (!r->obj)
		return line_error(r, err, "expected a JSON object, not null");
	if (!json_object_is_type(r->obj, json_type_object))
		return line_error(r, err, "expected a JSON object, not %s", type_name(r->obj));
	memset(ex, 0, sizeof(*ex));
	ex->line = r->lineno;
	if ((ret = classify(r, r->obj, &ex->kind, err)))
		return ret;
	switch (ex->kind) {
	case GM_TD_TEXT:
		return parse_text(r, r->obj, ex, err);
	case GM_TD_MESSAGES:
		return parse_messages(r, r->obj, ex, err);
	case GM_TD_PROMPT_COMPLETION:
		return parse_prompt_completion(r, r->obj, ex, err);
	default:
		return parse_tokens(r, r->obj, ex, err);
	}
}

int gm_td_next(gm_td_reader *r, gm_td_example *ex, gm_error *err)
{
	int ret, too_long;

	for (;;) {
		char *data;
		size_t len;

		if ((ret = read_line(r, &too_long, err)) <= 0)
			return ret;
		if (too_long)
			return line_error(r, err, "line is longer than %zu bytes", r->max_line);
		data = r->line.buf;
		len = r->line.len;
		if (len && data[len - 1] == '\r')
			len--;
		if (r->lineno == 1 && len >= 3 && !memcmp(data, "\xef\xbb\xbf", 3)) {
			data += 3;
			len -= 3;
		}
		if (is_blank(data, len))
			continue;
		ret = parse_line(r, data, len, ex, err);
		return ret ? ret : 1;
	}
}

/* ------------------------------------------------------------ whole file */

int gm_td_check(const char *path, size_t max_errors, gm_td_stats *st, gm_td_error_fn on_error,
		void *ctx, gm_error *err)
{
	gm_error first = GM_ERROR_INIT, line_err = GM_ERROR_INIT;
	gm_td_reader *r;
	gm_td_example ex;
	int ret;

	memset(st, 0, sizeof(*st));
	if ((ret = gm_td_open(path, 0, &r, err)))
		return ret;
	while ((ret = gm_td_next(r, &ex, &line_err))) {
		if (ret == 1) {
			st->count[ex.kind]++;
			st->examples++;
			continue;
		}
		if (ret != GM_EFORMAT)
			break;
		if (!st->errors++)
			first = line_err;
		if (on_error && (!max_errors || st->errors <= max_errors))
			on_error(ctx, &line_err);
	}
	st->lines = r->lineno;
	if (ret < 0) {
		if (err)
			*err = line_err;
	} else if (st->errors) {
		if (err)
			*err = first;
		ret = GM_EFORMAT;
	} else if (!st->examples) {
		ret = gm_error_set(err, GM_EFORMAT, "%s: no examples (the file %s)", r->name,
				   r->lineno ? "has only blank lines" : "is empty");
	}
	gm_td_close(r);
	return ret;
}
