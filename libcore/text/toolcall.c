/*
 * toolcall.c - tool calls in model output (see toolcall.h).
 *
 * Streaming works by parsing again: every feed re-reads the whole output
 * so far in "partial" mode, in which each format's parser stops where the
 * text cannot yet be decided and reports only what is certain (content
 * that cannot begin a call, calls whose name is known, the arguments read
 * so far).  What is new since the last feed is released.  Outputs are a
 * few thousand characters at most, so reading them again per token costs
 * little, and one parser serves both the whole and the streamed case,
 * which is what makes them agree.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/toolcall.h"

/* ---------------------------------------------------------------- formats */

static const char *const format_names[GM_TOOLCALL_N_FORMATS] = {
	"none", "hermes", "qwen3-coder", "llama3", "mistral", "mistral-args", "gpt-oss", "deepseek-r1",
	"deepseek-v3.1", "kimi-k2", "functionary-v3.1", "glm", "minimax-m2", "seed-oss", "deepseek-v3.2", "apriel",
	"command-r7b", "command-r", "functionary-v3.2",
};

const char *gm_toolcall_format_name(enum gm_toolcall_format f)
{
	return (unsigned)f < GM_TOOLCALL_N_FORMATS ? format_names[f] : "none";
}

int gm_toolcall_format_from_name(const char *name)
{
	int i;

	for (i = 0; i < GM_TOOLCALL_N_FORMATS; i++)
		if (!strcmp(name, format_names[i]))
			return i;
	return -1;
}

int gm_toolcall_needs_special(enum gm_toolcall_format f)
{
	return f == GM_TOOLCALL_LLAMA3 || f == GM_TOOLCALL_MISTRAL || f == GM_TOOLCALL_MISTRAL_ARGS ||
	       f == GM_TOOLCALL_GPT_OSS || f == GM_TOOLCALL_DEEPSEEK_R1 || f == GM_TOOLCALL_DEEPSEEK_V31 ||
	       f == GM_TOOLCALL_KIMI_K2 || f == GM_TOOLCALL_GLM || f == GM_TOOLCALL_MINIMAX_M2 ||
	       f == GM_TOOLCALL_SEED_OSS || f == GM_TOOLCALL_DEEPSEEK_V32 || f == GM_TOOLCALL_COMMAND_R7B;
}

static int has(const char *src, const char *s)
{
	return strstr(src, s) != NULL;
}

/*
 * Each rule is what the template writes when it renders an assistant
 * message's tool_calls (or tells the model to write), checked most
 * specific first: several families share <tool_call> with different
 * contents.  docs/tool-calling.md lists the templates each rule covers.
 */
enum gm_toolcall_format gm_toolcall_detect(const char *src)
{
	if (!src)
		return GM_TOOLCALL_NONE;
	/* <|start|>assistant to=functions.N<|channel|>commentary json<|message|> */
	if (has(src, "<|channel|>") && has(src, "\"functions.\"") && has(src, "<|call|>"))
		return GM_TOOLCALL_GPT_OSS;
	if (has(src, "<|tool_calls_section_begin|>") && has(src, "<|tool_call_argument_begin|>"))
		return GM_TOOLCALL_KIMI_K2;
	/* DeepSeek V3.2: its DSML markup (the tool▁call tokens are gone) */
	if (has(src, "｜DSML｜") && has(src, "function_calls>") && has(src, "invoke name=\"") &&
	    has(src, "parameter name=\""))
		return GM_TOOLCALL_DEEPSEEK_V32;
	if (has(src, "<｜tool▁calls▁begin｜>") && has(src, "<｜tool▁sep｜>")) {
		/* R1 writes the call's type, a newline and the name, then a ```json block */
		if (has(src, "```json"))
			return GM_TOOLCALL_DEEPSEEK_R1;
		return GM_TOOLCALL_DEEPSEEK_V31;
	}
	if (has(src, "[TOOL_CALLS]")) {
		if (has(src, "[ARGS]"))
			return GM_TOOLCALL_MISTRAL_ARGS;
		if (has(src, "[TOOL_CALLS][") || has(src, "[TOOL_CALLS] ["))
			return GM_TOOLCALL_MISTRAL;
		return GM_TOOLCALL_NONE;
	}
	if (has(src, "<seed:tool_call>") && has(src, "<function=") && has(src, "<parameter="))
		return GM_TOOLCALL_SEED_OSS;
	if (has(src, "<minimax:tool_call>") && has(src, "<invoke name=\"") && has(src, "<parameter name=\""))
		return GM_TOOLCALL_MINIMAX_M2;
	if (has(src, "<tool_call>") && has(src, "<arg_key>") && has(src, "<arg_value>"))
		return GM_TOOLCALL_GLM;
	if (has(src, "<tool_call>") && has(src, "<function=") && has(src, "<parameter="))
		return GM_TOOLCALL_QWEN3_CODER;
	/* Apriel: a JSON list of {"name", "arguments"} in <tool_calls> */
	if (has(src, "<tool_calls>[") && has(src, "]</tool_calls>") && has(src, "{\"name\": \""))
		return GM_TOOLCALL_APRIEL;
	/* Command R7B and later: a JSON list of {"tool_call_id", "tool_name", "parameters"} in an action */
	if (has(src, "<|START_ACTION|>") && has(src, "<|END_ACTION|>") && has(src, "\"tool_name\""))
		return GM_TOOLCALL_COMMAND_R7B;
	/* Command R+ (tool_use): "Action: ```json" and a list of {"tool_name", "parameters"} */
	if (has(src, "Action:") && has(src, "```json") && has(src, "\"tool_name\"") && has(src, "<|CHATBOT_TOKEN|>"))
		return GM_TOOLCALL_COMMAND_R;
	/* functionary v3.2: ">>>" + the recipient, "all" for text */
	if (has(src, "'>>>' + tool_call['function']['name']") && has(src, ">>>all"))
		return GM_TOOLCALL_FUNCTIONARY_V32;
	if (has(src, "<tool_call>") && !has(src, "<function=") && !has(src, "<arg_key>") &&
	    !has(src, "<tool_calls>") && !has(src, "<minimax:tool_call>") && !has(src, "<invoke") &&
	    (has(src, "{\"name\": \"") || has(src, "{\\\"name\\\": <function-name>") ||
	     has(src, "{\"name\": <function-name>")))
		return GM_TOOLCALL_HERMES;
	/* functionary v3.1: <function=N>{...}</function> on a Llama 3.1 base */
	if (has(src, "'<function=' + ") && has(src, "</function>") && !has(src, "<parameter="))
		return GM_TOOLCALL_FUNCTIONARY_V31;
	/* Llama 3.1-3.3: 'Respond in the format {"name": function name, "parameters": ...}' */
	if (has(src, "<|start_header_id|>") && has(src, "{\"name\": function name, \"parameters\""))
		return GM_TOOLCALL_LLAMA3;
	return GM_TOOLCALL_NONE;
}

/* ---------------------------------------------------------------- scanning */

#define INCOMPLETE ((size_t)-1)
#define INVALID ((size_t)-2)
#define BAD(x) ((x) >= INVALID)

static int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t skip_ws(const char *s, size_t n, size_t i)
{
	while (i < n && is_ws(s[i]))
		i++;
	return i;
}

enum match { M_NO, M_PARTIAL, M_YES };

/* Whether s[i..n) starts with lit (M_PARTIAL: it is a proper prefix of lit). */
static enum match match_at(const char *s, size_t n, size_t i, const char *lit)
{
	size_t l = strlen(lit), k = n - i < l ? n - i : l;

	if (memcmp(s + i, lit, k))
		return M_NO;
	return k == l ? M_YES : M_PARTIAL;
}

static size_t find(const char *s, size_t n, size_t from, const char *lit)
{
	size_t l = strlen(lit), i;

	for (i = from; i + l <= n; i++)
		if (s[i] == lit[0] && !memcmp(s + i, lit, l))
			return i;
	return INCOMPLETE;
}

/* The length of the longest suffix of s[a..n) that is a proper prefix of lit. */
static size_t prefix_tail(const char *s, size_t a, size_t n, const char *lit)
{
	size_t l = strlen(lit), k;

	for (k = (n - a < l - 1 ? n - a : l - 1); k > 0; k--)
		if (!memcmp(s + n - k, lit, k))
			return k;
	return 0;
}

/*
 * The end of the JSON value at s[i] (no leading space): the index after
 * it, INCOMPLETE when the text ends inside it, INVALID when it cannot be
 * one.  Shape only: complete values are checked by json-c afterwards.
 */
static size_t json_end(const char *s, size_t n, size_t i, int depth)
{
	const char *lits[] = { "true", "false", "null" };
	size_t k;

	if (depth > 128)
		return INVALID;
	if (i >= n)
		return INCOMPLETE;
	if (s[i] == '"') {
		for (i++; i < n; i++) {
			if (s[i] == '\\') {
				if (++i >= n)
					return INCOMPLETE;
			} else if (s[i] == '"') {
				return i + 1;
			} else if ((unsigned char)s[i] < 0x20) {
				return INVALID;
			}
		}
		return INCOMPLETE;
	}
	if (s[i] == '{' || s[i] == '[') {
		char close = s[i] == '{' ? '}' : ']';
		int first = 1;

		for (i++;;) {
			i = skip_ws(s, n, i);
			if (i >= n)
				return INCOMPLETE;
			if (s[i] == close)
				return i + 1;
			if (!first) {
				if (s[i] != ',')
					return INVALID;
				i = skip_ws(s, n, i + 1);
				if (i >= n)
					return INCOMPLETE;
			}
			first = 0;
			if (close == '}') {
				if (s[i] != '"')
					return INVALID;
				i = json_end(s, n, i, depth + 1);
				if (BAD(i))
					return i;
				i = skip_ws(s, n, i);
				if (i >= n)
					return INCOMPLETE;
				if (s[i] != ':')
					return INVALID;
				i = skip_ws(s, n, i + 1);
			}
			i = json_end(s, n, i, depth + 1);
			if (BAD(i))
				return i;
		}
	}
	if (s[i] == '-' || (s[i] >= '0' && s[i] <= '9')) {
		while (i < n && strchr("0123456789+-.eE", s[i]))
			i++;
		/* a number may go on: only what follows it ends it */
		return i < n ? i : INCOMPLETE;
	}
	for (k = 0; k < 3; k++) {
		enum match m = match_at(s, n, i, lits[k]);

		if (m == M_YES)
			return i + strlen(lits[k]);
		if (m == M_PARTIAL)
			return INCOMPLETE;
	}
	return INVALID;
}

static int json_object_text(const char *s, size_t len)
{
	json_object *o = gm_toolcall_arguments_object(s, len, NULL);

	json_object_put(o);
	return o != NULL;
}

json_object *gm_toolcall_arguments_object(const char *s, size_t len, gm_error *err)
{
	json_tokener *tok = json_tokener_new();
	json_object *o;
	size_t end;

	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	o = json_tokener_parse_ex(tok, s, (int)len);
	end = json_tokener_get_parse_end(tok);
	if (json_tokener_get_error(tok) != json_tokener_success)
		json_object_put(o), o = NULL;
	json_tokener_free(tok);
	end = skip_ws(s, len, end);
	if (o && (end != len || !json_object_is_type(o, json_type_object)))
		json_object_put(o), o = NULL;
	if (!o)
		gm_error_set(err, GM_EINVAL, "tool call arguments are not a JSON object: %.*s",
			     (int)(len > 200 ? 200 : len), s);
	return o;
}

/* ---------------------------------------------------------------- one reading */

struct pcall {
	gm_buf name, args, id;  /* id: the model's own, when it writes one */
	int named;              /* the name is complete */
	int done;               /* the whole call was read */
};

struct reading {
	int final;
	gm_buf content;
	gm_buf reasoning;
	struct pcall *calls;
	size_t n, alloc;
};

static struct pcall *new_call(struct reading *r)
{
	struct pcall *c;

	if (r->n == r->alloc) {
		r->alloc = r->alloc ? 2 * r->alloc : 4;
		r->calls = gm_xrealloc(r->calls, r->alloc * sizeof(*r->calls));
	}
	c = &r->calls[r->n++];
	memset(c, 0, sizeof(*c));
	return c;
}

static void reading_reset(struct reading *r, int final)
{
	size_t i;

	for (i = 0; i < r->n; i++) {
		gm_buf_release(&r->calls[i].name);
		gm_buf_release(&r->calls[i].args);
		gm_buf_release(&r->calls[i].id);
	}
	r->n = 0;
	r->final = final;
	gm_buf_reset(&r->content);
	gm_buf_reset(&r->reasoning);
}

static void reading_release(struct reading *r)
{
	reading_reset(r, 0);
	free(r->calls);
	gm_buf_release(&r->content);
	gm_buf_release(&r->reasoning);
}

/* Drops calls from index k on (a block that turned out not to be calls). */
static void drop_calls(struct reading *r, size_t k)
{
	while (r->n > k) {
		struct pcall *c = &r->calls[--r->n];

		gm_buf_release(&c->name);
		gm_buf_release(&c->args);
		gm_buf_release(&c->id);
	}
}

static void set_buf(gm_buf *b, const char *s, size_t len)
{
	gm_buf_reset(b);
	gm_buf_add(b, s, len);
	gm_buf_addch(b, '\0');
	b->len--;
}

/* A JSON string's value (s[a..b) is the quoted string); 0 or -1. */
static int json_string(const char *s, size_t a, size_t b, gm_buf *out)
{
	json_object *o;
	char *t = gm_xmalloc(b - a + 1);
	int ret = -1;

	memcpy(t, s + a, b - a);
	t[b - a] = '\0';
	o = json_tokener_parse(t);
	if (o && json_object_is_type(o, json_type_string)) {
		set_buf(out, json_object_get_string(o), (size_t)json_object_get_string_len(o));
		ret = 0;
	}
	json_object_put(o);
	free(t);
	return ret;
}

/*
 * The arguments value at s[i]: a JSON object.  Sets c->args to it (or to
 * what there is of it) and returns its end, INCOMPLETE or INVALID.
 */
static size_t args_value(const char *s, size_t n, size_t i, struct pcall *c)
{
	size_t e;

	if (i >= n)
		return INCOMPLETE;
	if (s[i] != '{')
		return INVALID;
	e = json_end(s, n, i, 0);
	if (e == INVALID)
		return INVALID;
	if (e == INCOMPLETE) {
		set_buf(&c->args, s + i, n - i);
		return INCOMPLETE;
	}
	if (!json_object_text(s + i, e - i))
		return INVALID;
	set_buf(&c->args, s + i, e - i);
	return e;
}

/*
 * {"name": N, "arguments": {...}} at s[i] == '{' (the arguments key may
 * also be "parameters"; an "id" is kept).  need_args: a call must have
 * arguments (Llama's bare JSON, to tell a call from an object answer).
 */
static size_t json_call(const char *s, size_t n, size_t i, struct pcall *c, int need_args)
{
	int first = 1, have_args = 0;

	for (i++;;) {
		size_t k, ke, v;

		i = skip_ws(s, n, i);
		if (i >= n)
			return INCOMPLETE;
		if (s[i] == '}')
			break;
		if (!first) {
			if (s[i] != ',')
				return INVALID;
			i = skip_ws(s, n, i + 1);
			if (i >= n)
				return INCOMPLETE;
		}
		first = 0;
		if (s[i] != '"')
			return INVALID;
		k = i;
		ke = json_end(s, n, i, 0);
		if (BAD(ke))
			return ke;
		i = skip_ws(s, n, ke);
		if (i >= n)
			return INCOMPLETE;
		if (s[i] != ':')
			return INVALID;
		i = skip_ws(s, n, i + 1);
		if (i >= n)
			return INCOMPLETE;
		if ((ke - k == 6 && !memcmp(s + k, "\"name\"", 6)) || (ke - k == 11 && !memcmp(s + k, "\"tool_name\"", 11))) {
			v = json_end(s, n, i, 0);
			if (BAD(v))
				return v;
			if (s[i] != '"' || json_string(s, i, v, &c->name) || !c->name.len)
				return INVALID;
			c->named = 1;
		} else if ((ke - k == 11 && !memcmp(s + k, "\"arguments\"", 11)) ||
			   (ke - k == 12 && !memcmp(s + k, "\"parameters\"", 12))) {
			v = args_value(s, n, i, c);
			if (BAD(v))
				return v;
			have_args = 1;
		} else if (ke - k == 4 && !memcmp(s + k, "\"id\"", 4)) {
			v = json_end(s, n, i, 0);
			if (BAD(v))
				return v;
			if (s[i] != '"' || json_string(s, i, v, &c->id))
				return INVALID;
		} else {
			v = json_end(s, n, i, 0);
			if (BAD(v))
				return v;
		}
		i = v;
	}
	if (!c->named || (need_args && !have_args))
		return INVALID;
	if (!have_args)
		set_buf(&c->args, "{}", 2);
	c->done = 1;
	return i + 1;
}

/* Text up to a delimiter (not containing any of bad): sets out, returns the delimiter's index. */
static size_t until(const char *s, size_t n, size_t i, const char *delim, const char *bad, gm_buf *out)
{
	size_t d = find(s, n, i, delim), k, end = d == INCOMPLETE ? n - prefix_tail(s, i, n, delim) : d;

	for (k = i; k < end; k++)
		if (strchr(bad, s[k]))
			return INVALID;
	if (d == INCOMPLETE) {
		/* the delimiter may have begun: only the part before it can be checked */
		return INCOMPLETE;
	}
	set_buf(out, s + i, d - i);
	return d;
}

/* expect(lit) at s[i] after spaces: advances *i; INCOMPLETE/INVALID otherwise. */
static size_t expect(const char *s, size_t n, size_t i, const char *lit, int ws)
{
	enum match m;

	if (ws)
		i = skip_ws(s, n, i);
	m = match_at(s, n, i, lit);
	if (m == M_PARTIAL || (m == M_NO && i >= n))
		return INCOMPLETE;
	if (m == M_NO)
		return INVALID;
	return i + strlen(lit);
}

/*
 * The end of a call block's closing marker: a missing one is forgiven at
 * the end of the output (a model may stop right after the arguments).
 */
static size_t closing(const char *s, size_t n, size_t i, const char *lit, int final)
{
	size_t e = expect(s, n, i, lit, 1);

	if (e == INCOMPLETE && final)
		return n;
	if (e == INVALID)
		return i; /* forgiven too: what follows is content */
	return e;
}

/* ---------------------------------------------------------------- call blocks, per format */

/*
 * A block starts at s[i] with the format's marker; it reads the calls in
 * it (appending to r) and returns its end, INCOMPLETE (r has what is
 * known) or INVALID (the caller drops what it appended).
 */
typedef size_t (*block_fn)(const gm_toolcall_parser *p, struct reading *r, const char *s, size_t n, size_t i);

struct gm_toolcall_parser {
	enum gm_toolcall_format fmt;
	json_object *tools;
	uint64_t seed;
	gm_buf text;
	struct reading r;
	int finished;
	/* streamed so far */
	size_t sent_content;
	size_t n_sent;          /* calls announced */
	size_t *sent_args;      /* per announced call */
	/* after finish */
	gm_toolcall *calls;
	char **ids;
	size_t n_calls;
};

static size_t hermes_block(const gm_toolcall_parser *p, struct reading *r, const char *s, size_t n, size_t i)
{
	struct pcall *c;

	(void)p;
	i = skip_ws(s, n, i + strlen("<tool_call>"));
	if (i >= n)
		return INCOMPLETE;
	if (s[i] != '{')
		return INVALID;
	c = new_call(r);
	i = json_call(s, n, i, c, 0);
	if (BAD(i))
		return i;
	return closing(s, n, i, "</tool_call>", r->final);
}

/* The JSON schema type of a tool's parameter, or NULL. */
static const char *param_type(json_object *tools, const char *fn, const char *param)
{
	size_t k, nt = tools && json_object_is_type(tools, json_type_array) ? json_object_array_length(tools) : 0;

	for (k = 0; k < nt; k++) {
		json_object *t = json_object_array_get_idx(tools, k), *f, *name, *params, *props, *pp, *ty;

		if (!json_object_object_get_ex(t, "function", &f) || !json_object_object_get_ex(f, "name", &name) ||
		    strcmp(json_object_get_string(name), fn))
			continue;
		if (json_object_object_get_ex(f, "parameters", &params) &&
		    json_object_object_get_ex(params, "properties", &props) &&
		    json_object_object_get_ex(props, param, &pp) && json_object_object_get_ex(pp, "type", &ty) &&
		    json_object_is_type(ty, json_type_string))
			return json_object_get_string(ty);
		return NULL;
	}
	return NULL;
}

/*
 * Qwen3 Coder writes each value as text (the template's `value|string`,
 * JSON for objects and lists): strings stay strings, the rest is read
 * back as JSON when it is JSON (Python's True/False/None included).
 */
static json_object *xml_value(const char *type, const char *v, size_t len)
{
	json_object *o;
	char *t;

	if (type && !strcmp(type, "string"))
		return json_object_new_string_len(v, (int)len);
	if (len == 4 && !memcmp(v, "True", 4))
		return json_object_new_boolean(1);
	if (len == 5 && !memcmp(v, "False", 5))
		return json_object_new_boolean(0);
	if (len == 4 && !memcmp(v, "None", 4))
		return NULL;
	t = gm_xmalloc(len + 1);
	memcpy(t, v, len);
	t[len] = '\0';
	{
		json_tokener *tok = json_tokener_new();

		json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
		/* the NUL ends a number, which json-c would otherwise wait to see go on */
		o = json_tokener_parse_ex(tok, t, (int)len + 1);
		if (json_tokener_get_error(tok) != json_tokener_success ||
		    json_tokener_get_parse_end(tok) != len || !o) {
			json_object_put(o);
			o = len == 4 && !memcmp(v, "null", 4) ? NULL : json_object_new_string_len(v, (int)len);
		}
		json_tokener_free(tok);
	}
	free(t);
	return o;
}

static size_t qwen3_coder_block(const gm_toolcall_parser *p, struct reading *r, const char *s, size_t n,
				size_t i)
{
	struct pcall *c;
	json_object *args;
	gm_buf key = GM_BUF_INIT;
	size_t e;

	i = expect(s, n, i + strlen("<tool_call>"), "<function=", 1);
	if (BAD(i))
		return i;
	c = new_call(r);
	e = until(s, n, i, ">", "<\n", &c->name);
	if (BAD(e))
		return e;
	if (!c->name.len)
		return INVALID;
	c->named = 1;
	i = e + 1;
	args = json_object_new_object();
	for (;;) {
		size_t v, ve, a, b;

		e = expect(s, n, i, "</function>", 1);
		if (!BAD(e)) {
			i = e;
			break;
		}
		if (e == INCOMPLETE)
			goto out;
		e = expect(s, n, i, "<parameter=", 1);
		if (BAD(e))
			goto out;
		v = until(s, n, e, ">", "<\n", &key);
		if (BAD(v)) {
			e = v;
			goto out;
		}
		v++;
		ve = find(s, n, v, "</parameter>");
		if (ve == INCOMPLETE) {
			e = INCOMPLETE;
			goto out;
		}
		/* the template writes "\n" around each value */
		a = v < ve && s[v] == '\n' ? v + 1 : v;
		b = ve > a && s[ve - 1] == '\n' ? ve - 1 : ve;
		json_object_object_add(args, key.buf,
				       xml_value(param_type(p->tools, c->name.buf, key.buf), s + a, b - a));
		i = ve + strlen("</parameter>");
	}
	{
		const char *t = json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN |
								    JSON_C_TO_STRING_NOSLASHESCAPE);

		set_buf(&c->args, t, strlen(t));
	}
	c->done = 1;
	e = closing(s, n, i, "</tool_call>", r->final);
out:
	json_object_put(args);
	gm_buf_release(&key);
	return e;
}

/* Llama: one or more {"name", "parameters"} objects separated by ';' (marker: <|python_tag|> or none). */
static size_t llama_objects(struct reading *r, const char *s, size_t n, size_t i)
{
	for (;;) {
		struct pcall *c = new_call(r);
		size_t e;

		i = skip_ws(s, n, i);
		if (i >= n)
			return INCOMPLETE;
		if (s[i] != '{')
			return INVALID;
		e = json_call(s, n, i, c, 1);
		if (BAD(e))
			return e;
		i = skip_ws(s, n, e);
		if (i < n && s[i] == ';') {
			i++;
			continue;
		}
		if (i >= n && !r->final)
			return INCOMPLETE; /* a ';' and another call may follow */
		return e;
	}
}

static size_t llama_block(const gm_toolcall_parser *p, struct reading *r, const char *s, size_t n, size_t i)
{
	(void)p;
	return llama_objects(r, s, n, i + strlen("<|python_tag|>"));
}

static size_t mistral_block(const gm_toolcall_parser *p, struct reading *r, const char *s, size_t n, size_t i)
{
	int first = 1;

	(void)p;
	i = expect(s, n, i + strlen("[TOOL_CALLS]"), "[", 1);
	if (BAD(i))
		return i;
	for (;;) {
		struct pcall *c;

		i = skip_ws(s, n, i);
		if (i >= n)
			return INCOMPLETE;
		if (s[i] == ']' && !first)
			return i + 1;
		if (!first) {
			if (s[i] != ',')
				return INVALID;
			i = skip_ws(s, n, i + 1);
			if (i >= n)
				return INCOMPLETE;
		}
		first = 0;
		if (s[i] != '{')
			return INVALID;
		c = new_call(r);
		i = json_call(s, n, i, c, 0);
		/* the call's "id" may come after its name: it is announced whole */
		if (i == INCOMPLETE)
			c->named = 0;
		if (BAD(i))
			return i;
	}
}

static size_t mistral_args_block(const gm_toolcall_parser *p, struct reading *r, const char *s, size_t n,
				 size_t i)
{
	struct pcall *c = new_call(r);
	size_t b, e;

	(void)p;
	i += strlen("[TOOL_CALLS]");
	b = find(s, n, i, "[");
	if (b == INCOMPLETE) {
		for (e = i; e < n; e++)
			if (is_ws(s[e]) || s[e] == '{')
				return INVALID;
		return INCOMPLETE;
	}
	for (e = i; e < b; e++)
		if (is_ws(s[e]) || s[e] == '{')
			return INVALID;
	if (b == i)
		return INVALID;
	set_buf(&c->name, s + i, b - i);
	i = b;
	e = expect(s, n, i, "[CALL_ID]", 0);
	if (e == INCOMPLETE)
		return INCOMPLETE;
	if (e != INVALID) {
		i = until(s, n, e, "[", " \n{", &c->id);
		if (BAD(i))
			return i;
	}
	i = expect(s, n, i, "[ARGS]", 0);
	if (BAD(i))
		return i;
	c->named = 1;
	i = args_value(s, n, skip_ws(s, n, i), c);
	if (BAD(i))
		return i;
	c->done = 1;
	return i;
}

/* DeepSeek R1 and V3.1: a section of <｜tool▁call▁begin｜>...<｜tool▁call▁end｜>. */
static size_t deepseek_block(const gm_toolcall_parser *p, struct reading *r, const char *s, size_t n, size_t i)
{
	int r1 = p->fmt == GM_TOOLCALL_DEEPSEEK_R1, first = 1;

	i += strlen("<｜tool▁calls▁begin｜>");
	for (;;) {
		struct pcall *c;
		gm_buf type = GM_BUF_INIT;
		size_t e;

		if (!first) {
			e = expect(s, n, i, "<｜tool▁calls▁end｜>", 1);
			if (e == INCOMPLETE && r->final)
				return n;
			if (!BAD(e) || e == INCOMPLETE)
				return e;
		}
		first = 0;
		i = expect(s, n, i, "<｜tool▁call▁begin｜>", 1);
		if (BAD(i))
			return i;
		c = new_call(r);
		if (r1) {
			e = until(s, n, i, "<｜tool▁sep｜>", "\n", &type);
			gm_buf_release(&type);
			if (BAD(e))
				return e;
			i = e + strlen("<｜tool▁sep｜>");
			e = until(s, n, i, "\n", "<{", &c->name);
		} else {
			e = until(s, n, i, "<｜tool▁sep｜>", "\n{", &c->name);
		}
		if (BAD(e))
			return e;
		if (!c->name.len)
			return INVALID;
		c->named = 1;
		i = r1 ? e + 1 : e + strlen("<｜tool▁sep｜>");
		if (r1) {
			i = expect(s, n, i, "```json", 1);
			if (BAD(i))
				return i;
		}
		i = args_value(s, n, skip_ws(s, n, i), c);
		if (BAD(i))
			return i;
		if (r1) {
			i = expect(s, n, i, "```", 1);
			if (BAD(i))
				return i;
		}
		c->done = 1;
		i = expect(s, n, i, "<｜tool▁call▁end｜>", 1);
		if (i == INCOMPLETE && r->final)
			return n;
		if (BAD(i))
			return i;
	}
}

static size_t kimi_block(const gm_toolcall_parser *p, struct reading *r, const char *s, size_t n, size_t i)
{
	int first = 1;

	(void)p;
	i += strlen("<|tool_calls_section_begin|>");
	for (;;) {
		struct pcall *c;
		size_t e, colon;

		if (!first) {
			e = expect(s, n, i, "<|tool_calls_section_end|>", 1);
			if (e == INCOMPLETE && r->final)
				return n;
			if (!BAD(e) || e == INCOMPLETE)
				return e;
		}
		first = 0;
		i = expect(s, n, i, "<|tool_call_begin|>", 1);
		if (BAD(i))
			return i;
		c = new_call(r);
		/* the id is "functions.NAME:INDEX", and it is the call's id */
		e = until(s, n, i, "<|tool_call_argument_begin|>", "\n{", &c->id);
		if (BAD(e))
			return e;
		colon = c->id.len;
		while (colon > 0 && c->id.buf[colon - 1] != ':')
			colon--;
		if (!colon)
			return INVALID;
		{
			size_t a = c->id.len > 10 && !memcmp(c->id.buf, "functions.", 10) ? 10 : 0;

			if (colon - 1 <= a)
				return INVALID;
			set_buf(&c->name, c->id.buf + a, colon - 1 - a);
		}
		c->named = 1;
		i = args_value(s, n, skip_ws(s, n, e + strlen("<|tool_call_argument_begin|>")), c);
		if (BAD(i))
			return i;
		c->done = 1;
		i = expect(s, n, i, "<|tool_call_end|>", 1);
		if (i == INCOMPLETE && r->final)
			return n;
		if (BAD(i))
			return i;
	}
}

static size_t functionary_block(const gm_toolcall_parser *p, struct reading *r, const char *s, size_t n,
				size_t i)
{
	struct pcall *c = new_call(r);
	size_t e;

	(void)p;
	i += strlen("<function=");
	e = until(s, n, i, ">", "<\n{ ", &c->name);
	if (BAD(e))
		return e;
	if (!c->name.len)
		return INVALID;
	c->named = 1;
	i = args_value(s, n, skip_ws(s, n, e + 1), c);
	if (BAD(i))
		return i;
	c->done = 1;
	return closing(s, n, i, "</function>", r->final);
}

/*
 * The XML-like formats, one reader: a block (block_open ... block_close)
 * of functions (fn_open NAME fn_name_end ... fn_close; GLM has no
 * function tags: the name follows block_open on its line and the block is
 * the call) of parameters (p_open KEY p_name_end [attributes '>']
 * [p_value_open] VALUE p_close).  Values are bare text, read back by the
 * parameter's type (xml_value), or by DeepSeek's string="true|false".
 */
struct xml_spec {
	const char *block_open, *block_close;
	const char *fn_open, *fn_name_end, *fn_close;
	const char *p_open, *p_name_end, *p_value_open, *p_close;
	int attrs;
};

static const struct xml_spec xml_specs[] = {
	{ "<tool_call>", "</tool_call>", NULL, NULL, NULL, "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", 0 },
	{ "<minimax:tool_call>", "</minimax:tool_call>", "<invoke name=\"", "\">", "</invoke>", "<parameter name=\"",
	  "\">", NULL, "</parameter>", 0 },
	{ "<seed:tool_call>", "</seed:tool_call>", "<function=", ">", "</function>", "<parameter=", ">", NULL,
	  "</parameter>", 0 },
	{ "<｜DSML｜function_calls>", "</｜DSML｜function_calls>", "<｜DSML｜invoke name=\"", "\">", "</｜DSML｜invoke>",
	  "<｜DSML｜parameter name=\"", "\"", NULL, "</｜DSML｜parameter>", 1 },
};

static const struct xml_spec *xml_spec_of(enum gm_toolcall_format f)
{
	switch (f) {
	case GM_TOOLCALL_GLM: return &xml_specs[0];
	case GM_TOOLCALL_MINIMAX_M2: return &xml_specs[1];
	case GM_TOOLCALL_SEED_OSS: return &xml_specs[2];
	case GM_TOOLCALL_DEEPSEEK_V32: return &xml_specs[3];
	default: return NULL;
	}
}

/* One function's parameters, up to (not past) its end tag `end`; sets c->args when complete. */
static size_t xml_params(const gm_toolcall_parser *p, const struct xml_spec *x, struct pcall *c, const char *s,
			 size_t n, size_t i, const char *end)
{
	json_object *args = json_object_new_object();
	gm_buf key = GM_BUF_INIT;
	size_t e;

	for (;;) {
		size_t v, ve;
		int string = -1; /* from the attributes: 1 string="true", 0 string="false" */

		e = expect(s, n, i, end, 1);
		if (!BAD(e)) {
			e = skip_ws(s, n, i);
			break;
		}
		if (e == INCOMPLETE)
			goto out;
		e = expect(s, n, i, x->p_open, 1);
		if (BAD(e))
			goto out;
		v = until(s, n, e, x->p_name_end, "<>\n\"", &key);
		if (BAD(v)) {
			e = v;
			goto out;
		}
		v += strlen(x->p_name_end);
		if (x->attrs) {
			size_t gt = find(s, n, v, ">");

			if (gt == INCOMPLETE) {
				e = INCOMPLETE;
				goto out;
			}
			if (find(s, gt, v, "string=\"true\"") != INCOMPLETE)
				string = 1;
			else if (find(s, gt, v, "string=\"false\"") != INCOMPLETE)
				string = 0;
			v = gt + 1;
		}
		if (x->p_value_open) {
			v = expect(s, n, v, x->p_value_open, 1);
			if (BAD(v)) {
				e = v;
				goto out;
			}
		}
		ve = find(s, n, v, x->p_close);
		if (ve == INCOMPLETE) {
			e = INCOMPLETE;
			goto out;
		}
		json_object_object_add(args, key.buf,
				       xml_value(string == 1 ? "string" : string == 0 ? "json"
						 : param_type(p->tools, c->name.buf, key.buf), s + v, ve - v));
		i = ve + strlen(x->p_close);
	}
	{
		const char *t = json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN |
								    JSON_C_TO_STRING_NOSLASHESCAPE);

		set_buf(&c->args, t, strlen(t));
	}
	c->done = 1;
out:
	json_object_put(args);
	gm_buf_release(&key);
	return e;
}

static size_t xml_block(const gm_toolcall_parser *p, struct reading *r, const char *s, size_t n, size_t i)
{
	const struct xml_spec *x = xml_spec_of(p->fmt);
	int first = 1;

	i += strlen(x->block_open);
	for (;;) {
		struct pcall *c;
		size_t e;

		if (!first) {
			/* another function, or the end of the block (GLM returned after its one) */
			e = expect(s, n, i, x->block_close, 1);
			if (e == INCOMPLETE && r->final)
				return n;
			if (!BAD(e) || e == INCOMPLETE)
				return e;
		}
		first = 0;
		c = new_call(r);
		if (x->fn_open) {
			i = expect(s, n, i, x->fn_open, 1);
			if (BAD(i))
				return i;
			e = until(s, n, i, x->fn_name_end, "<>\n\" ", &c->name);
			if (BAD(e))
				return e;
			i = e + strlen(x->fn_name_end);
		} else {
			/* GLM: the name, then a line break (or at once the parameters or the end) */
			size_t k = skip_ws(s, n, i);

			for (e = k; e < n && s[e] != '\n' && s[e] != '<'; e++)
				if (s[e] == '{' || s[e] == '"')
					return INVALID;
			if (e >= n)
				return INCOMPLETE;
			while (e > k && is_ws(s[e - 1]))
				e--;
			set_buf(&c->name, s + k, e - k);
			i = e;
		}
		if (!c->name.len)
			return INVALID;
		c->named = 1;
		i = xml_params(p, x, c, s, n, i, x->fn_open ? x->fn_close : x->block_close);
		if (BAD(i))
			return i;
		if (x->fn_open) {
			i = expect(s, n, i, x->fn_close, 1);
			if (BAD(i))
				return i;
		} else {
			return closing(s, n, i, x->block_close, r->final);
		}
	}
}

/*
 * The JSON-list formats: a marker, a list of {"name"|"tool_name",
 * "arguments"|"parameters"} objects, a closing marker.  Command R+'s list
 * is in a ```json block after "Action:".
 */
static size_t json_list_block(const gm_toolcall_parser *p, struct reading *r, const char *s, size_t n, size_t i)
{
	const char *open = p->fmt == GM_TOOLCALL_APRIEL ? "<tool_calls>" :
			   p->fmt == GM_TOOLCALL_COMMAND_R7B ? "<|START_ACTION|>" : "Action:";
	const char *close = p->fmt == GM_TOOLCALL_APRIEL ? "</tool_calls>" :
			    p->fmt == GM_TOOLCALL_COMMAND_R7B ? "<|END_ACTION|>" : "```";
	int first = 1;

	i += strlen(open);
	if (p->fmt == GM_TOOLCALL_COMMAND_R) {
		i = expect(s, n, i, "```json", 1);
		if (BAD(i))
			return i;
	}
	i = expect(s, n, i, "[", 1);
	if (BAD(i))
		return i;
	for (;;) {
		struct pcall *c;

		i = skip_ws(s, n, i);
		if (i >= n)
			return INCOMPLETE;
		if (s[i] == ']' && !first)
			return closing(s, n, i + 1, close, r->final);
		if (!first) {
			if (s[i] != ',')
				return INVALID;
			i = skip_ws(s, n, i + 1);
			if (i >= n)
				return INCOMPLETE;
		}
		first = 0;
		if (s[i] != '{')
			return INVALID;
		c = new_call(r);
		i = json_call(s, n, i, c, 0);
		/* an "id" may come after the name: the call is announced whole */
		if (i == INCOMPLETE)
			c->named = 0;
		if (BAD(i))
			return i;
	}
}

/* ---------------------------------------------------------------- the reading of an output */

/*
 * The output ended inside a call block (max_tokens, most likely): the
 * calls from k on whose name was read stay, their arguments as far as
 * they go (as OpenAI returns a call cut short); the rest of the block is
 * dropped, as it was held back when streamed.
 */
static void keep_named(struct reading *r, size_t k)
{
	while (k < r->n && r->calls[k].named)
		k++;
	drop_calls(r, k);
}

/* Content s[a..b), with the spaces next to calls dropped. */
static void add_content(struct reading *r, const char *s, size_t a, size_t b, int after_call, int before_call)
{
	if (after_call)
		a = skip_ws(s, b, a);
	if (before_call)
		while (b > a && is_ws(s[b - 1]))
			b--;
	gm_buf_add(&r->content, s + a, b - a);
}

/*
 * Content and call blocks: the text between blocks is content; a block
 * that is not well formed is content too.  Partial: a tail that may begin
 * a marker, and spaces before it, are held back.
 */
static void read_blocks(const gm_toolcall_parser *p, struct reading *r, const char *marker, block_fn block,
			size_t start)
{
	const char *s = p->text.buf ? p->text.buf : "";
	size_t n = p->text.len, seg = start, from = start;
	int after_call = 0;

	for (;;) {
		size_t m = find(s, n, from, marker), k = r->n, e;

		if (m == INCOMPLETE) {
			size_t b = n;

			if (!r->final) {
				b -= prefix_tail(s, seg, n, marker);
				/* spaces may precede a call, which drops them */
				while (b > seg && is_ws(s[b - 1]))
					b--;
			}
			if (b > seg)
				add_content(r, s, seg, b, after_call, 0);
			return;
		}
		e = block(p, r, s, n, m);
		if (e == INCOMPLETE && r->final) {
			keep_named(r, k);
			add_content(r, s, seg, m, after_call, 1);
			return;
		}
		if (e == INVALID) {
			drop_calls(r, k);
			from = m + 1;
			continue;
		}
		add_content(r, s, seg, m, after_call, 1);
		if (e == INCOMPLETE)
			return;
		after_call = 1;
		seg = from = e;
	}
}

/* Llama: a bare JSON call answer (the whole output), else <|python_tag|> blocks. */
static void read_llama(const gm_toolcall_parser *p, struct reading *r)
{
	const char *s = p->text.buf ? p->text.buf : "";
	size_t n = p->text.len, i = skip_ws(s, n, 0), e;

	if (i >= n && !r->final)
		return;
	if (i < n && s[i] == '{') {
		e = llama_objects(r, s, n, i);
		if (e == INCOMPLETE && r->final && r->n && r->calls[0].named) {
			keep_named(r, 0);
			return;
		}
		if (e == INCOMPLETE && !r->final)
			return;
		if (!BAD(e)) {
			size_t t = skip_ws(s, n, e);

			/* only the whole answer is a call: a trailing <|eom_id|> or spaces */
			if (t >= n || match_at(s, n, t, "<|eom_id|>") != M_NO)
				return;
		}
		drop_calls(r, 0);
	}
	read_blocks(p, r, "<|python_tag|>", llama_block, 0);
}

/*
 * functionary v3.2: the prompt ends with ">>>", so the output is
 * "RECIPIENT\nBODY" messages separated by ">>>"; recipient "all" is text,
 * any other a call of that function with BODY its JSON arguments.
 */
static void read_functionary32(const gm_toolcall_parser *p, struct reading *r)
{
	const char *s = p->text.buf ? p->text.buf : "";
	size_t n = p->text.len, i = 0;
	int after_call = 0;

	while (i < n) {
		size_t nl, k, be, bl, hold = 0;
		gm_buf name = GM_BUF_INIT;

		for (nl = i; nl < n && s[nl] != '\n'; nl++)
			if (s[nl] == ' ' || s[nl] == '{' || s[nl] == '<' || s[nl] == '>' || s[nl] == '"')
				break;
		if (nl < n && s[nl] != '\n') {
			/* not a recipient: the rest is text */
			gm_buf_add(&r->content, s + i, n - i);
			return;
		}
		if (nl >= n) {
			if (r->final)
				gm_buf_add(&r->content, s + i, n - i);
			return;
		}
		set_buf(&name, s + i, nl - i);
		be = find(s, n, nl + 1, ">>>");
		bl = 3;
		if (be == INCOMPLETE) {
			be = n;
			bl = 0;
			if (!r->final)
				hold = prefix_tail(s, nl + 1, n, ">>>");
		}
		if (!strcmp(name.buf, "all") || !name.len) {
			add_content(r, s, nl + 1, be - hold, after_call, 0);
			after_call = 0;
		} else if (skip_ws(s, be - hold, nl + 1) >= be - hold && be >= n && !r->final) {
			/* nothing of the body yet: a call once it begins with '{' */
			gm_buf_release(&name);
			return;
		} else if (skip_ws(s, be - hold, nl + 1) >= be - hold || s[skip_ws(s, be - hold, nl + 1)] != '{') {
			/* not JSON arguments: the message is text */
			gm_buf_add(&r->content, s + i, (bl ? be + bl : be - hold) - i);
			after_call = 0;
		} else {
			struct pcall *c = new_call(r);
			size_t a = skip_ws(s, be - hold, nl + 1), e;

			set_buf(&c->name, name.buf, name.len);
			c->named = 1;
			e = args_value(s, be - hold, a, c);
			k = e == INCOMPLETE || BAD(e) ? e : skip_ws(s, be - hold, e);
			if (k == INVALID || (!BAD(k) && k != be - hold) || (k == INCOMPLETE && be < n)) {
				/* not JSON arguments: the message is text */
				drop_calls(r, r->n - 1);
				gm_buf_add(&r->content, s + i, be + bl - i);
			} else if (k != INCOMPLETE) {
				c->done = 1;
				after_call = 1;
			}
		}
		gm_buf_release(&name);
		if (be >= n)
			return;
		i = be + bl;
	}
}

/*
 * gpt-oss (harmony): messages "[<|start|>assistant]<|channel|>C [to=R]
 * [<|constrain|>json]<|message|>BODY<|end|>|<|call|>|<|return|>".  A
 * message to functions.N is a call; the final and commentary channels
 * are content, analysis is reasoning.
 */
static void read_harmony(const gm_toolcall_parser *p, struct reading *r)
{
	static const char *const ends[] = { "<|end|>", "<|call|>", "<|return|>" };
	const char *s = p->text.buf ? p->text.buf : "";
	size_t n = p->text.len, i = 0;

	while (i < n) {
		size_t h, body, be = INCOMPLETE, bl = 0, hold = 0, k, to, ch;
		char recipient[256] = "", channel[64] = "";

		if (match_at(s, n, i, "<|start|>") == M_YES) {
			i += strlen("<|start|>");
		} else if (match_at(s, n, i, "<|start|>") == M_PARTIAL) {
			return;
		}
		h = find(s, n, i, "<|message|>");
		if (h == INCOMPLETE) {
			if (r->final)
				gm_buf_add(&r->content, s + i, n - i);
			return;
		}
		/* the header: the role, <|channel|>C, to=R, <|constrain|>json, in either order */
		to = find(s, h, i, "to=");
		if (to != INCOMPLETE) {
			for (k = to + 3; k < h && !is_ws(s[k]) && s[k] != '<' && k - to - 3 < sizeof(recipient) - 1; k++)
				recipient[k - to - 3] = s[k];
			recipient[k - to - 3] = '\0';
		}
		ch = find(s, h, i, "<|channel|>");
		if (ch != INCOMPLETE) {
			ch += strlen("<|channel|>");
			for (k = ch; k < h && !is_ws(s[k]) && s[k] != '<' && k - ch < sizeof(channel) - 1; k++)
				channel[k - ch] = s[k];
			channel[k - ch] = '\0';
		}
		body = h + strlen("<|message|>");
		for (k = 0; k < 3; k++) {
			size_t e = find(s, n, body, ends[k]);

			if (e != INCOMPLETE && (be == INCOMPLETE || e < be))
				be = e, bl = strlen(ends[k]);
		}
		if (be == INCOMPLETE) {
			be = n;
			if (!r->final)
				for (k = 0; k < 3; k++) {
					size_t t = prefix_tail(s, body, n, ends[k]);

					hold = t > hold ? t : hold;
				}
		}
		if (!strncmp(recipient, "functions.", 10) && recipient[10]) {
			struct pcall *c = new_call(r);
			size_t a = skip_ws(s, be - hold, body), b = be - hold;

			set_buf(&c->name, recipient + 10, strlen(recipient + 10));
			c->named = 1;
			while (b > a && is_ws(s[b - 1]))
				b--;
			if (be >= n && r->final) {
				/* cut short: the arguments as far as they go */
				set_buf(&c->args, s + a, b - a);
			} else if (be < n) {
				if (!json_object_text(s + a, b - a)) {
					/* not arguments: the message is text */
					drop_calls(r, r->n - 1);
					gm_buf_add(&r->content, s + body, be - body);
				} else {
					set_buf(&c->args, s + a, b - a);
					c->done = 1;
				}
			} else if (a < b && s[a] == '{') {
				set_buf(&c->args, s + a, b - a);
			}
		} else {
			gm_buf *out = !strcmp(channel, "analysis") ? &r->reasoning : &r->content;

			gm_buf_add(out, s + body, be - hold - body);
		}
		if (be >= n)
			return;
		i = be + bl;
	}
}

static void read_output(const gm_toolcall_parser *p, struct reading *r, int final)
{
	static const struct {
		const char *marker;
		block_fn fn;
	} blocks[GM_TOOLCALL_N_FORMATS] = {
		[GM_TOOLCALL_HERMES] = { "<tool_call>", hermes_block },
		[GM_TOOLCALL_QWEN3_CODER] = { "<tool_call>", qwen3_coder_block },
		[GM_TOOLCALL_MISTRAL] = { "[TOOL_CALLS]", mistral_block },
		[GM_TOOLCALL_MISTRAL_ARGS] = { "[TOOL_CALLS]", mistral_args_block },
		[GM_TOOLCALL_DEEPSEEK_R1] = { "<｜tool▁calls▁begin｜>", deepseek_block },
		[GM_TOOLCALL_DEEPSEEK_V31] = { "<｜tool▁calls▁begin｜>", deepseek_block },
		[GM_TOOLCALL_KIMI_K2] = { "<|tool_calls_section_begin|>", kimi_block },
		[GM_TOOLCALL_FUNCTIONARY_V31] = { "<function=", functionary_block },
		[GM_TOOLCALL_GLM] = { "<tool_call>", xml_block },
		[GM_TOOLCALL_MINIMAX_M2] = { "<minimax:tool_call>", xml_block },
		[GM_TOOLCALL_SEED_OSS] = { "<seed:tool_call>", xml_block },
		[GM_TOOLCALL_DEEPSEEK_V32] = { "<｜DSML｜function_calls>", xml_block },
		[GM_TOOLCALL_APRIEL] = { "<tool_calls>", json_list_block },
		[GM_TOOLCALL_COMMAND_R7B] = { "<|START_ACTION|>", json_list_block },
		[GM_TOOLCALL_COMMAND_R] = { "Action:", json_list_block },
	};

	reading_reset(r, final);
	if (p->fmt == GM_TOOLCALL_LLAMA3)
		read_llama(p, r);
	else if (p->fmt == GM_TOOLCALL_GPT_OSS)
		read_harmony(p, r);
	else if (p->fmt == GM_TOOLCALL_FUNCTIONARY_V32)
		read_functionary32(p, r);
	else if ((unsigned)p->fmt < GM_TOOLCALL_N_FORMATS && blocks[p->fmt].fn)
		read_blocks(p, r, blocks[p->fmt].marker, blocks[p->fmt].fn, 0);
	else if (p->text.len)
		gm_buf_add(&r->content, p->text.buf, p->text.len);
}

/* ---------------------------------------------------------------- the parser */

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/*
 * Call i's id: the model's own, or random letters and digits from the
 * seed: 9 of them for Mistral (whose templates refuse other ids in the
 * history), "call_" and 24 (OpenAI's shape) for the others.
 */
static char *make_id(const gm_toolcall_parser *p, const struct pcall *c, size_t i)
{
	static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	int mistral = p->fmt == GM_TOOLCALL_MISTRAL || p->fmt == GM_TOOLCALL_MISTRAL_ARGS;
	uint64_t x = p->seed ^ (0x51ed270b7a1f3c5dULL * (i + 1));
	char id[64], *q = id;
	int k;

	if (c->id.len)
		return gm_xstrdup(c->id.buf);
	if (!mistral)
		q += sprintf(q, "call_");
	for (k = 0; k < (mistral ? 9 : 24); k++)
		*q++ = alnum[splitmix(&x) % 62];
	*q = '\0';
	return gm_xstrdup(id);
}

void gm_toolcall_parser_new(enum gm_toolcall_format f, json_object *tools, uint64_t seed, gm_toolcall_parser **out)
{
	gm_toolcall_parser *p = gm_xcalloc(1, sizeof(*p));

	p->fmt = f;
	p->tools = tools;
	p->seed = seed;
	gm_buf_init(&p->text);
	gm_buf_init(&p->r.content);
	gm_buf_init(&p->r.reasoning);
	*out = p;
}

void gm_toolcall_parser_free(gm_toolcall_parser *p)
{
	size_t i;

	if (!p)
		return;
	reading_release(&p->r);
	gm_buf_release(&p->text);
	for (i = 0; i < p->n_sent; i++)
		free(p->ids[i]);
	free(p->ids);
	free(p->sent_args);
	free(p->calls);
	free(p);
}

/* Releases what the latest reading adds to what was sent. */
static int release(gm_toolcall_parser *p, gm_toolcall_event_fn fn, void *ctx)
{
	struct reading *r = &p->r;
	gm_toolcall_event ev;
	size_t i;
	int ret;

	if (r->content.len > p->sent_content) {
		ev.index = -1;
		ev.id = ev.name = NULL;
		ev.text = r->content.buf + p->sent_content;
		ev.len = r->content.len - p->sent_content;
		p->sent_content = r->content.len;
		if (fn && (ret = fn(ctx, &ev)))
			return ret;
	}
	for (i = 0; i < r->n && r->calls[i].named; i++) {
		struct pcall *c = &r->calls[i];

		ev.index = (int)i;
		ev.id = ev.name = NULL;
		if (i >= p->n_sent) {
			p->ids = gm_xrealloc(p->ids, (i + 1) * sizeof(*p->ids));
			p->sent_args = gm_xrealloc(p->sent_args, (i + 1) * sizeof(*p->sent_args));
			p->ids[i] = make_id(p, c, i);
			p->sent_args[i] = 0;
			p->n_sent = i + 1;
			ev.id = p->ids[i];
			ev.name = c->name.buf;
		} else if (c->args.len <= p->sent_args[i]) {
			continue;
		}
		ev.text = c->args.len > p->sent_args[i] ? c->args.buf + p->sent_args[i] : "";
		ev.len = c->args.len > p->sent_args[i] ? c->args.len - p->sent_args[i] : 0;
		p->sent_args[i] += ev.len;
		if (fn && (ret = fn(ctx, &ev)))
			return ret;
	}
	return 0;
}

int gm_toolcall_feed(gm_toolcall_parser *p, const char *text, size_t len, gm_toolcall_event_fn fn, void *ctx)
{
	if (p->finished || !len)
		return 0;
	gm_buf_add(&p->text, text, len);
	read_output(p, &p->r, 0);
	return release(p, fn, ctx);
}

int gm_toolcall_finish(gm_toolcall_parser *p, gm_toolcall_event_fn fn, void *ctx)
{
	size_t i;
	int ret;

	if (p->finished)
		return 0;
	p->finished = 1;
	read_output(p, &p->r, 1);
	/* a call cut short before its arguments: "{}", streamed as in the final list */
	for (i = 0; i < p->r.n; i++)
		if (p->r.calls[i].named && !p->r.calls[i].args.len)
			set_buf(&p->r.calls[i].args, "{}", 2);
	ret = release(p, fn, ctx);
	/* the calls: those read at the end, ids as announced */
	p->calls = gm_xcalloc(p->r.n + 1, sizeof(*p->calls));
	for (i = 0; i < p->r.n; i++) {
		if (i >= p->n_sent) {
			p->ids = gm_xrealloc(p->ids, (i + 1) * sizeof(*p->ids));
			p->sent_args = gm_xrealloc(p->sent_args, (i + 1) * sizeof(*p->sent_args));
			p->ids[i] = make_id(p, &p->r.calls[i], i);
			p->sent_args[i] = 0;
			p->n_sent = i + 1;
		}
		p->calls[i].id = p->ids[i];
		p->calls[i].name = p->r.calls[i].name.buf;
		p->calls[i].arguments = p->r.calls[i].args.len ? p->r.calls[i].args.buf : "{}";
	}
	p->n_calls = p->r.n;
	return ret;
}

void gm_toolcall_parse(gm_toolcall_parser *p, const char *text, size_t len)
{
	gm_buf_add(&p->text, text, len);
	gm_toolcall_finish(p, NULL, NULL);
}

const char *gm_toolcall_content(const gm_toolcall_parser *p, size_t *len)
{
	if (len)
		*len = p->r.content.len;
	return p->r.content.buf ? p->r.content.buf : "";
}

size_t gm_toolcall_n_calls(const gm_toolcall_parser *p)
{
	return p->n_calls;
}

const gm_toolcall *gm_toolcall_get(const gm_toolcall_parser *p, size_t i)
{
	return i < p->n_calls ? &p->calls[i] : NULL;
}
