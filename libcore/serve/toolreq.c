/*
 * toolreq.c - tools in a chat completion request (see toolreq.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/toolreq.h"
#include "text/jsonschema.h"

static json_object *get(json_object *o, const char *key)
{
	json_object *v = NULL;

	if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

/* OpenAI's rule for function names (a dot allowed too: gpt-oss's namespaces use them). */
static int good_name(const char *s, size_t len)
{
	size_t i;

	if (!len || len > 64)
		return 0;
	for (i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
		      s[i] == '_' || s[i] == '-' || s[i] == '.'))
			return 0;
	return 1;
}

static json_object *tool_named(json_object *tools, const char *name)
{
	size_t i, n = tools ? json_object_array_length(tools) : 0;

	for (i = 0; i < n; i++) {
		json_object *f = get(json_object_array_get_idx(tools, i), "function");

		if (!strcmp(json_object_get_string(get(f, "name")), name))
			return f;
	}
	return NULL;
}

static int bad(const char **param, const char *p, gm_toolreq *t, gm_error *err)
{
	*param = p;
	gm_toolreq_release(t);
	return err->code;
}

int gm_toolreq_parse(json_object *req, enum gm_toolcall_format fmt, gm_toolreq *t, const char **param,
		     gm_error *err)
{
	json_object *v;
	size_t i, n;

	memset(t, 0, sizeof(*t));
	t->parallel = 1;
	t->format = fmt;
	*param = NULL;
	if (get(req, "functions") || get(req, "function_call")) {
		gm_error_set(err, GM_EINVAL, "'functions' and 'function_call' are deprecated and not supported: use "
			     "'tools' and 'tool_choice'");
		return bad(param, get(req, "functions") ? "functions" : "function_call", t, err);
	}
	v = get(req, "tools");
	if (v && !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_array)) {
			gm_error_set(err, GM_EINVAL, "'tools' must be a list of {\"type\": \"function\", \"function\": "
				     "{...}}");
			return bad(param, "tools", t, err);
		}
		n = json_object_array_length(v);
		for (i = 0; i < n; i++) {
			json_object *tool = json_object_array_get_idx(v, i), *f = get(tool, "function"), *ty = get(tool, "type");
			json_object *name = get(f, "name"), *params = get(f, "parameters");
			size_t k;

			if (!ty || !json_object_is_type(ty, json_type_string) ||
			    strcmp(json_object_get_string(ty), "function")) {
				gm_error_set(err, GM_EINVAL, "tools[%zu].type must be \"function\"", i);
				return bad(param, "tools", t, err);
			}
			if (!f || !json_object_is_type(f, json_type_object) || !name ||
			    !json_object_is_type(name, json_type_string) ||
			    !good_name(json_object_get_string(name), (size_t)json_object_get_string_len(name))) {
				gm_error_set(err, GM_EINVAL, "tools[%zu].function.name must be 1 to 64 letters, digits, "
					     "underscores, dashes or dots", i);
				return bad(param, "tools", t, err);
			}
			if (params && !json_object_is_type(params, json_type_object) &&
			    !json_object_is_type(params, json_type_null)) {
				gm_error_set(err, GM_EINVAL, "tools[%zu].function.parameters must be a JSON Schema object", i);
				return bad(param, "tools", t, err);
			}
			for (k = 0; k < i; k++)
				if (!strcmp(json_object_get_string(get(get(json_object_array_get_idx(v, k), "function"),
									"name")),
					    json_object_get_string(name))) {
					gm_error_set(err, GM_EINVAL, "tools: the function '%s' is given twice",
						     json_object_get_string(name));
					return bad(param, "tools", t, err);
				}
		}
		if (n)
			t->tools = json_object_get(v);
	}
	v = get(req, "tool_choice");
	t->choice = GM_TOOL_CHOICE_AUTO;
	if (v && json_object_is_type(v, json_type_string)) {
		const char *c = json_object_get_string(v);

		if (!strcmp(c, "auto"))
			t->choice = GM_TOOL_CHOICE_AUTO;
		else if (!strcmp(c, "none"))
			t->choice = GM_TOOL_CHOICE_NONE;
		else if (!strcmp(c, "required"))
			t->choice = GM_TOOL_CHOICE_REQUIRED;
		else {
			gm_error_set(err, GM_EINVAL, "'tool_choice' must be \"none\", \"auto\", \"required\" or "
				     "{\"type\": \"function\", \"function\": {\"name\": ...}}, not \"%s\"", c);
			return bad(param, "tool_choice", t, err);
		}
	} else if (v && !json_object_is_type(v, json_type_null)) {
		json_object *name = get(get(v, "function"), "name"), *ty = get(v, "type");

		if (!ty || !json_object_is_type(ty, json_type_string) || strcmp(json_object_get_string(ty), "function") ||
		    !name || !json_object_is_type(name, json_type_string)) {
			gm_error_set(err, GM_EINVAL, "'tool_choice' must be \"none\", \"auto\", \"required\" or "
				     "{\"type\": \"function\", \"function\": {\"name\": ...}}");
			return bad(param, "tool_choice", t, err);
		}
		t->choice = GM_TOOL_CHOICE_NAMED;
		t->name = gm_xstrdup(json_object_get_string(name));
		if (!tool_named(t->tools, t->name)) {
			gm_error_set(err, GM_EINVAL, "tool_choice names the function '%s', which is not in 'tools'",
				     t->name);
			return bad(param, "tool_choice", t, err);
		}
	}
	if ((t->choice == GM_TOOL_CHOICE_REQUIRED || t->choice == GM_TOOL_CHOICE_NAMED) && !t->tools) {
		gm_error_set(err, GM_EINVAL, "tool_choice \"required\" or a named function needs 'tools'");
		return bad(param, "tool_choice", t, err);
	}
	if ((t->choice == GM_TOOL_CHOICE_REQUIRED || t->choice == GM_TOOL_CHOICE_NAMED) && fmt == GM_TOOLCALL_NONE) {
		gm_error_set(err, GM_EUNSUPPORTED, "this model's chat template writes tool calls in no format this "
			     "server knows: tool_choice \"required\" or a named function cannot be enforced");
		return bad(param, "tool_choice", t, err);
	}
	v = get(req, "parallel_tool_calls");
	if (v && !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_boolean)) {
			gm_error_set(err, GM_EINVAL, "'parallel_tool_calls' must be true or false");
			return bad(param, "parallel_tool_calls", t, err);
		}
		t->parallel = json_object_get_boolean(v);
	}
	return 0;
}

void gm_toolreq_release(gm_toolreq *t)
{
	json_object_put(t->tools);
	free(t->name);
	t->tools = NULL;
	t->name = NULL;
}

int gm_toolreq_active(const gm_toolreq *t)
{
	return t->tools && t->choice != GM_TOOL_CHOICE_NONE && t->format != GM_TOOLCALL_NONE;
}

int gm_toolreq_message(json_object *m, size_t idx, json_object *copy, gm_error *err)
{
	json_object *calls = get(m, "tool_calls"), *v;
	const char *role = json_object_get_string(get(m, "role"));
	size_t i, n;

	if (!strcmp(role, "tool")) {
		if ((v = get(m, "tool_call_id")) && !json_object_is_type(v, json_type_null)) {
			if (!json_object_is_type(v, json_type_string))
				return gm_error_set(err, GM_EINVAL, "messages[%zu].tool_call_id must be a string", idx);
			json_object_object_add(copy, "tool_call_id", json_object_get(v));
		}
		if ((v = get(m, "name")) && json_object_is_type(v, json_type_string))
			json_object_object_add(copy, "name", json_object_get(v));
		return 0;
	}
	if (!calls || json_object_is_type(calls, json_type_null))
		return 0;
	if (strcmp(role, "assistant"))
		return gm_error_set(err, GM_EINVAL, "messages[%zu]: only assistant messages have tool_calls", idx);
	if (!json_object_is_type(calls, json_type_array))
		return gm_error_set(err, GM_EINVAL, "messages[%zu].tool_calls must be a list", idx);
	n = json_object_array_length(calls);
	{
		json_object *out = json_object_new_array();

		json_object_object_add(copy, "tool_calls", out);
		for (i = 0; i < n; i++) {
			json_object *c = json_object_array_get_idx(calls, i), *f = get(c, "function");
			json_object *name = get(f, "name"), *args = get(f, "arguments"), *id = get(c, "id");
			json_object *cc, *fc, *obj;

			if (!f || !name || !json_object_is_type(name, json_type_string))
				return gm_error_set(err, GM_EINVAL, "messages[%zu].tool_calls[%zu] must be {\"id\", \"type\": "
						    "\"function\", \"function\": {\"name\", \"arguments\"}}", idx, i);
			if (!args || json_object_is_type(args, json_type_null) ||
			    (json_object_is_type(args, json_type_string) && !json_object_get_string_len(args))) {
				obj = json_object_new_object();
			} else if (json_object_is_type(args, json_type_string)) {
				gm_error e2 = GM_ERROR_INIT;

				obj = gm_toolcall_arguments_object(json_object_get_string(args),
								   (size_t)json_object_get_string_len(args), &e2);
				if (!obj)
					return gm_error_set(err, GM_EINVAL, "messages[%zu].tool_calls[%zu].function.arguments "
							    "must be a JSON object (as a string)", idx, i);
			} else if (json_object_is_type(args, json_type_object)) {
				obj = json_object_get(args);
			} else {
				return gm_error_set(err, GM_EINVAL, "messages[%zu].tool_calls[%zu].function.arguments must "
						    "be a JSON object (as a string)", idx, i);
			}
			cc = json_object_new_object();
			fc = json_object_new_object();
			if (id && json_object_is_type(id, json_type_string))
				json_object_object_add(cc, "id", json_object_get(id));
			json_object_object_add(cc, "type", json_object_new_string("function"));
			json_object_object_add(fc, "name", json_object_get(name));
			json_object_object_add(fc, "arguments", obj);
			json_object_object_add(cc, "function", fc);
			json_object_array_add(out, cc);
		}
	}
	return 0;
}

static json_object *call_json(int index, const char *id, const char *name, const char *args, size_t len)
{
	json_object *c = json_object_new_object(), *f = json_object_new_object();

	if (index >= 0)
		json_object_object_add(c, "index", json_object_new_int(index));
	if (id) {
		json_object_object_add(c, "id", json_object_new_string(id));
		json_object_object_add(c, "type", json_object_new_string("function"));
	}
	if (name)
		json_object_object_add(f, "name", json_object_new_string(name));
	json_object_object_add(f, "arguments", json_object_new_string_len(args, (int)len));
	json_object_object_add(c, "function", f);
	return c;
}

json_object *gm_toolreq_calls_json(const gm_toolcall_parser *p)
{
	json_object *a;
	size_t i, n = gm_toolcall_n_calls(p);

	if (!n)
		return NULL;
	a = json_object_new_array();
	for (i = 0; i < n; i++) {
		const gm_toolcall *c = gm_toolcall_get(p, i);

		json_object_array_add(a, call_json(-1, c->id, c->name, c->arguments, strlen(c->arguments)));
	}
	return a;
}

json_object *gm_toolreq_delta_json(const gm_toolcall_event *ev)
{
	return call_json(ev->index, ev->id, ev->name, ev->text, ev->len);
}

/* ---------------------------------------------------------------- grammar */

/* A GBNF string literal of s (the text the model must write). */
static void lit(gm_buf *b, const char *s)
{
	gm_buf_addch(b, '"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			gm_buf_addch(b, '\\'), gm_buf_addch(b, *s);
		else if (*s == '\n')
			gm_buf_adds(b, "\\n");
		else
			gm_buf_addch(b, *s);
	}
	gm_buf_addch(b, '"');
}

/* The length of the UTF-8 character at s. */
static size_t u8len(const char *s)
{
	unsigned char c = (unsigned char)*s;

	return c < 0xc0 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
}

/*
 * A rule for text that never contains close (a tag beginning with '<'):
 * any character but '<', or a '<' that does not go on to spell close.
 * Each way out of a partial tag takes a character other than '<', so a
 * '<' can never be swallowed where close would begin.
 */
static void text_without(gm_buf *b, const char *rule, const char *close)
{
	size_t k = 1, i = 1, n = strlen(close);

	gm_buf_addf(b, "%s ::= ([^<] | \"<\" %s-1)*\n", rule, rule);
	while (i < n) {
		size_t l = u8len(close + i);
		char c[8] = "";

		memcpy(c, close + i, l);
		gm_buf_addf(b, "%s-%zu ::= [^%s%s<]", rule, k,
			    l == 1 && (c[0] == ']' || c[0] == '\\' || c[0] == '^' || c[0] == '-') ? "\\" : "", c);
		if (i + l < n) {
			gm_buf_adds(b, " | ");
			lit(b, c);
			gm_buf_addf(b, " %s-%zu", rule, k + 1);
		}
		gm_buf_adds(b, "\n");
		i += l;
		k++;
	}
}

/*
 * Text as GBNF literals, each markup tag ("<...>") a literal of its own:
 * a tag that is a special token of the model's vocabulary can then come
 * as that token (text/grammar.h).
 */
static void lit_tags(gm_buf *b, const char *s)
{
	while (*s) {
		size_t n;
		char *piece;

		if (*s == '<' && strchr(s, '>'))
			n = (size_t)(strchr(s, '>') - s) + 1;
		else
			for (n = 0; s[n] && s[n] != '<'; n++)
				;
		if (!n)
			n = 1;
		piece = gm_xmalloc(n + 1);
		memcpy(piece, s, n);
		piece[n] = '\0';
		gm_buf_adds(b, " ");
		lit(b, piece);
		free(piece);
		s += n;
	}
	gm_buf_adds(b, " ");
}

/* A parameter name a bare-text format can write: no markup, no line breaks. */
static int good_key(const char *k)
{
	if (!*k)
		return 0;
	for (; *k; k++)
		if (*k == '<' || *k == '>' || *k == '"' || *k == '\n' || *k == '\r' || *k == '\\')
			return 0;
	return 1;
}

/* The XML-like formats: how a parameter is written around its value. */
struct xml_syntax {
	const char *open1, *open2;  /* open1 KEY open2 VALUE close */
	const char *open2_json;     /* open2 for a value that is not a string (NULL: open2) */
	const char *close;          /* after the value */
	const char *close_tag;      /* close's tag, which never appears in a bare value */
};

/*
 * The parameters of one function in an XML-like format, as rule
 * "<prefix>params": the declared properties in order, the required ones
 * always.  A value of type "string" is bare text (its enum, when given,
 * as alternatives), anything else JSON following its schema (what the
 * templates write with tojson, and the parser reads back as JSON).
 */
static int xml_params(json_object *params, const char *prefix, const struct xml_syntax *x, const char *text_rule,
		      gm_toolreq_schema_fn schema_rules, gm_buf *out, gm_error *err)
{
	json_object *props = get(params, "properties"), *req = get(params, "required");
	gm_buf seq = GM_BUF_INIT;
	int k = 0, ret = 0;

	if (props && json_object_is_type(props, json_type_object)) {
		json_object_object_foreach(props, key, ps) {
			json_object *ty = get(ps, "type"), *en = get(ps, "enum");
			int required = 0, string;
			size_t i, n = req && json_object_is_type(req, json_type_array) ? json_object_array_length(req) : 0;
			char vrule[64];
			gm_buf open = GM_BUF_INIT;

			for (i = 0; i < n; i++)
				if (!strcmp(json_object_get_string(json_object_array_get_idx(req, i)), key))
					required = 1;
			if (!good_key(key)) {
				ret = gm_error_set(err, GM_EINVAL, "tools: the parameter name '%s' cannot be written in the "
						   "tool-call format of this model", key);
				break;
			}
			snprintf(vrule, sizeof(vrule), "%sp%d-", prefix, k++);
			string = ty && json_object_is_type(ty, json_type_string) &&
				 !strcmp(json_object_get_string(ty), "string");
			gm_buf_addf(&open, "%s%s%s", x->open1, key, string || !x->open2_json ? x->open2 : x->open2_json);
			gm_buf_adds(&seq, required ? " " : " (");
			lit_tags(&seq, open.buf);
			gm_buf_release(&open);
			if (string) {
				if (en && json_object_is_type(en, json_type_array) && json_object_array_length(en)) {
					gm_buf_adds(&seq, " (");
					for (i = 0; i < json_object_array_length(en); i++) {
						if (i)
							gm_buf_adds(&seq, " | ");
						lit(&seq, json_object_get_string(json_object_array_get_idx(en, i)));
					}
					gm_buf_adds(&seq, ")");
				} else {
					gm_buf_addf(&seq, " %s", text_rule);
				}
			} else {
				gm_buf_addf(&seq, " %sroot", vrule);
				if ((ret = schema_rules(ps, vrule, out, err)))
					break;
			}
			lit_tags(&seq, x->close);
			if (!required)
				gm_buf_adds(&seq, ")?");
		}
	}
	if (!ret)
		gm_buf_addf(out, "%sparams ::= %s\n", prefix, seq.len ? seq.buf : "\"\"");
	gm_buf_release(&seq);
	return ret;
}

static const struct xml_syntax qwen3_coder_xml = { "<parameter=", ">\n", NULL, "\n</parameter>\n", "</parameter>" };
static const struct xml_syntax glm_xml = { "<arg_key>", "</arg_key>\n<arg_value>", NULL, "</arg_value>\n", "</arg_value>" };
static const struct xml_syntax minimax_xml = { "<parameter name=\"", "\">", NULL, "</parameter>\n", "</parameter>" };
static const struct xml_syntax seed_xml = { "<parameter=", ">", NULL, "</parameter>\n", "</parameter>" };
static const struct xml_syntax dsml_xml = { "<｜DSML｜parameter name=\"", "\" string=\"true\">", "\" string=\"false\">",
					    "</｜DSML｜parameter>\n", "</｜DSML｜parameter>" };

/* The XML syntax of a format's parameters, or NULL. */
static const struct xml_syntax *xml_syntax_of(enum gm_toolcall_format f)
{
	switch (f) {
	case GM_TOOLCALL_QWEN3_CODER: return &qwen3_coder_xml;
	case GM_TOOLCALL_GLM: return &glm_xml;
	case GM_TOOLCALL_MINIMAX_M2: return &minimax_xml;
	case GM_TOOLCALL_SEED_OSS: return &seed_xml;
	case GM_TOOLCALL_DEEPSEEK_V32: return &dsml_xml;
	default: return NULL;
	}
}

/*
 * One call of function `name` as rule "<prefix>call", per format:
 * args is the rule of its arguments as JSON.  Markers that are special
 * tokens (Mistral's [TOOL_CALLS], DeepSeek's, Kimi's, gpt-oss's) are
 * literals of their own, which the mask lets the model write as the
 * special token (text/grammar.h).  GM_EUNSUPPORTED for NONE.
 */
static int call_rule(enum gm_toolcall_format f, const char *name, const char *prefix, json_object *params,
		     gm_toolreq_schema_fn schema_rules, gm_buf *b, gm_error *err)
{
	char t[256], args[64];
	int ret = 0;

	snprintf(args, sizeof(args), "%sroot", prefix);
	gm_buf_addf(b, "%scall ::= ", prefix);
	switch (f) {
	case GM_TOOLCALL_HERMES:
		snprintf(t, sizeof(t), "<tool_call>\n{\"name\": \"%s\", \"arguments\": ", name);
		lit(b, t);
		gm_buf_addf(b, " %s ", args);
		lit(b, "}\n</tool_call>");
		break;
	case GM_TOOLCALL_LLAMA3:
		/* the bare JSON answer, several separated by "; " */
		snprintf(t, sizeof(t), "{\"name\": \"%s\", \"parameters\": ", name);
		lit(b, t);
		gm_buf_addf(b, " %s ", args);
		lit(b, "}");
		break;
	case GM_TOOLCALL_FUNCTIONARY_V31:
		snprintf(t, sizeof(t), "<function=%s>", name);
		lit(b, t);
		gm_buf_addf(b, " %s ", args);
		lit(b, "</function>");
		break;
	case GM_TOOLCALL_MISTRAL:
		/* an element of the [TOOL_CALLS] list, with the 9-character id Mistral's templates want */
		snprintf(t, sizeof(t), "{\"name\": \"%s\", \"arguments\": ", name);
		lit(b, t);
		gm_buf_addf(b, " %s ", args);
		lit(b, ", \"id\": \"");
		gm_buf_adds(b, " [a-zA-Z0-9]{9} ");
		lit(b, "\"}");
		break;
	case GM_TOOLCALL_MISTRAL_ARGS:
		lit(b, "[TOOL_CALLS]");
		gm_buf_adds(b, " ");
		lit(b, name);
		gm_buf_adds(b, " ");
		lit(b, "[ARGS]");
		gm_buf_addf(b, " %s", args);
		break;
	case GM_TOOLCALL_GPT_OSS:
		/* after the prompt's "<|start|>assistant": a commentary message to the function */
		lit(b, "<|channel|>");
		gm_buf_adds(b, " ");
		snprintf(t, sizeof(t), "commentary to=functions.%s ", name);
		lit(b, t);
		gm_buf_adds(b, " ");
		lit(b, "<|constrain|>");
		gm_buf_adds(b, " \"json\" ");
		lit(b, "<|message|>");
		gm_buf_addf(b, " %s", args);
		break;
	case GM_TOOLCALL_DEEPSEEK_R1:
		lit(b, "<｜tool▁call▁begin｜>");
		gm_buf_adds(b, " \"function\" ");
		lit(b, "<｜tool▁sep｜>");
		snprintf(t, sizeof(t), "%s\n```json\n", name);
		gm_buf_adds(b, " ");
		lit(b, t);
		gm_buf_addf(b, " %s ", args);
		lit(b, "\n```");
		gm_buf_adds(b, " ");
		lit(b, "<｜tool▁call▁end｜>");
		break;
	case GM_TOOLCALL_DEEPSEEK_V31:
		lit(b, "<｜tool▁call▁begin｜>");
		gm_buf_adds(b, " ");
		lit(b, name);
		gm_buf_adds(b, " ");
		lit(b, "<｜tool▁sep｜>");
		gm_buf_addf(b, " %s ", args);
		lit(b, "<｜tool▁call▁end｜>");
		break;
	case GM_TOOLCALL_KIMI_K2:
		/* the id is functions.NAME:INDEX; the index counts the conversation's calls, which the model knows */
		lit(b, "<|tool_call_begin|>");
		snprintf(t, sizeof(t), "functions.%s:", name);
		gm_buf_adds(b, " ");
		lit(b, t);
		gm_buf_adds(b, " [0-9]{1,4} ");
		lit(b, "<|tool_call_argument_begin|>");
		gm_buf_addf(b, " %s ", args);
		lit(b, "<|tool_call_end|>");
		break;
	case GM_TOOLCALL_QWEN3_CODER:
	case GM_TOOLCALL_GLM:
	case GM_TOOLCALL_MINIMAX_M2:
	case GM_TOOLCALL_SEED_OSS:
	case GM_TOOLCALL_DEEPSEEK_V32: {
		static const char *const around[][2] = {
			[GM_TOOLCALL_QWEN3_CODER] = { "<tool_call>\n<function=%s>\n", "</function>\n</tool_call>" },
			[GM_TOOLCALL_GLM] = { "<tool_call>%s\n", "</tool_call>" },
			[GM_TOOLCALL_MINIMAX_M2] = { "<invoke name=\"%s\">\n", "</invoke>\n" },
			[GM_TOOLCALL_SEED_OSS] = { "<seed:tool_call>\n<function=%s>\n", "</function>\n</seed:tool_call>" },
			[GM_TOOLCALL_DEEPSEEK_V32] = { "<｜DSML｜invoke name=\"%s\">\n", "</｜DSML｜invoke>\n" },
		};

		snprintf(t, sizeof(t), around[f][0], name);
		lit_tags(b, t);
		gm_buf_addf(b, "%sparams", prefix);
		lit_tags(b, around[f][1]);
		gm_buf_adds(b, "\n");
		return xml_params(params, prefix, xml_syntax_of(f), "xml-text", schema_rules, b, err);
	}
	case GM_TOOLCALL_APRIEL:
		snprintf(t, sizeof(t), "{\"name\": \"%s\", \"arguments\": ", name);
		lit(b, t);
		gm_buf_addf(b, " %s ", args);
		lit(b, "}");
		break;
	case GM_TOOLCALL_COMMAND_R7B:
		/* its tool_call_id is an index the parser does not keep */
		lit(b, "{\"tool_call_id\": \"");
		snprintf(t, sizeof(t), "\", \"tool_name\": \"%s\", \"parameters\": ", name);
		gm_buf_adds(b, " [0-9]{1,3} ");
		lit(b, t);
		gm_buf_addf(b, " %s ", args);
		lit(b, "}");
		break;
	case GM_TOOLCALL_COMMAND_R:
		snprintf(t, sizeof(t), "{\"tool_name\": \"%s\", \"parameters\": ", name);
		lit(b, t);
		gm_buf_addf(b, " %s ", args);
		lit(b, "}");
		break;
	case GM_TOOLCALL_FUNCTIONARY_V32:
		/* after the prompt's ">>>": the recipient on its line, then the arguments */
		snprintf(t, sizeof(t), "%s\n", name);
		lit(b, t);
		gm_buf_addf(b, " %s", args);
		break;
	default:
		return gm_error_set(err, GM_EUNSUPPORTED, "tool_choice \"required\" or a named function cannot be "
				    "enforced for the %s tool-call format", gm_toolcall_format_name(f));
	}
	gm_buf_adds(b, "\n");
	if (!ret)
		ret = schema_rules(params, prefix, b, err);
	return ret;
}

/* What goes around the calls, as rules root (and calls, when the calls are a list). */
static void calls_root(const gm_toolreq *t, gm_buf *out)
{
	int many = t->parallel;

	switch (t->format) {
	case GM_TOOLCALL_MISTRAL:
		gm_buf_adds(out, "root ::= ");
		lit(out, "[TOOL_CALLS]");
		gm_buf_adds(out, " \"[\" call");
		if (many)
			gm_buf_adds(out, " (\", \" call)*");
		gm_buf_adds(out, " \"]\"\n");
		return;
	case GM_TOOLCALL_MISTRAL_ARGS:
		gm_buf_addf(out, "root ::= call%s\n", many ? "+" : "");
		return;
	case GM_TOOLCALL_GPT_OSS:
		/* one message per call, and <|call|> ends the turn (it is an end-of-sequence token) */
		gm_buf_adds(out, "root ::= call ");
		lit(out, "<|call|>");
		gm_buf_adds(out, "?\n");
		return;
	case GM_TOOLCALL_DEEPSEEK_R1:
	case GM_TOOLCALL_DEEPSEEK_V31:
		gm_buf_adds(out, "root ::= ");
		lit(out, "<｜tool▁calls▁begin｜>");
		gm_buf_addf(out, " call%s ", many ? (t->format == GM_TOOLCALL_DEEPSEEK_R1 ? " (\"\\n\" call)*" : "+") : "");
		lit(out, "<｜tool▁calls▁end｜>");
		gm_buf_adds(out, "\n");
		return;
	case GM_TOOLCALL_MINIMAX_M2:
	case GM_TOOLCALL_DEEPSEEK_V32:
		gm_buf_adds(out, "root ::=");
		lit_tags(out, t->format == GM_TOOLCALL_MINIMAX_M2 ? "<minimax:tool_call>\n" : "<｜DSML｜function_calls>\n");
		gm_buf_addf(out, "call%s", many ? "+" : "");
		lit_tags(out, t->format == GM_TOOLCALL_MINIMAX_M2 ? "</minimax:tool_call>" : "</｜DSML｜function_calls>");
		gm_buf_adds(out, "\n");
		return;
	case GM_TOOLCALL_APRIEL:
	case GM_TOOLCALL_COMMAND_R7B:
	case GM_TOOLCALL_COMMAND_R: {
		static const char *const around[][3] = {
			[GM_TOOLCALL_APRIEL] = { "<tool_calls>", "[", "]</tool_calls>" },
			[GM_TOOLCALL_COMMAND_R7B] = { "<|START_ACTION|>", "[\n    ", "\n]<|END_ACTION|>" },
			[GM_TOOLCALL_COMMAND_R] = { "Action:", "\n```json\n[\n    ", "\n]\n```" },
		};

		gm_buf_adds(out, "root ::=");
		lit_tags(out, around[t->format][0]);
		lit(out, around[t->format][1]);
		gm_buf_adds(out, " call");
		if (many) {
			gm_buf_adds(out, " (");
			lit(out, t->format == GM_TOOLCALL_APRIEL ? ", " : ",\n    ");
			gm_buf_adds(out, " call)*");
		}
		lit_tags(out, around[t->format][2]);
		gm_buf_adds(out, "\n");
		return;
	}
	case GM_TOOLCALL_KIMI_K2:
		gm_buf_adds(out, "root ::= ");
		lit(out, "<|tool_calls_section_begin|>");
		gm_buf_addf(out, " call%s ", many ? "+" : "");
		lit(out, "<|tool_calls_section_end|>");
		gm_buf_adds(out, "\n");
		return;
	default:
		/* one call, or (parallel_tool_calls) one or more */
		gm_buf_adds(out, "root ::= call");
		if (many) {
			gm_buf_adds(out, " (");
			lit(out, t->format == GM_TOOLCALL_LLAMA3 ? "; " : t->format == GM_TOOLCALL_FUNCTIONARY_V32 ? ">>>" : "\n");
			gm_buf_adds(out, " call)*");
		}
		gm_buf_adds(out, "\n");
	}
}

int gm_toolreq_grammar(const gm_toolreq *t, gm_toolreq_schema_fn schema_rules, gm_buf *out, gm_error *err)
{
	size_t i, n = t->tools ? json_object_array_length(t->tools) : 0, k = 0;
	gm_buf calls = GM_BUF_INIT, rules = GM_BUF_INIT;
	json_object *empty = NULL;
	int ret = 0;

	if (t->choice != GM_TOOL_CHOICE_REQUIRED && t->choice != GM_TOOL_CHOICE_NAMED)
		return gm_error_set(err, GM_EINVAL, "a grammar is only for tool_choice \"required\" or a named function");
	for (i = 0; i < n && !ret; i++) {
		json_object *f = get(json_object_array_get_idx(t->tools, i), "function"), *params;
		const char *name = json_object_get_string(get(f, "name"));
		char prefix[32];

		if (t->choice == GM_TOOL_CHOICE_NAMED && strcmp(name, t->name))
			continue;
		snprintf(prefix, sizeof(prefix), "tool%zu-", i);
		gm_buf_addf(&calls, "%s%scall", k++ ? " | " : "", prefix);
		params = get(f, "parameters");
		if (!params || !json_object_is_type(params, json_type_object)) {
			/* no parameters: an empty object */
			if (!empty)
				empty = json_tokener_parse("{\"type\": \"object\", \"properties\": {}, "
							   "\"additionalProperties\": false}");
			params = empty;
		}
		ret = call_rule(t->format, name, prefix, params, schema_rules, &rules, err);
	}
	json_object_put(empty);
	if (!ret && !k)
		ret = gm_error_set(err, GM_EINVAL, "no tool to call");
	if (!ret) {
		calls_root(t, out);
		gm_buf_addf(out, "call ::= %s\n", calls.buf);
		gm_buf_add(out, rules.buf, rules.len);
		if (xml_syntax_of(t->format))
			text_without(out, "xml-text", xml_syntax_of(t->format)->close_tag);
	}
	gm_buf_release(&calls);
	gm_buf_release(&rules);
	return ret;
}

int gm_toolreq_constraint(const gm_toolreq *t, gm_grammar **out, gm_error *err)
{
	gm_buf text = GM_BUF_INIT;
	int ret;

	*out = NULL;
	if (t->choice != GM_TOOL_CHOICE_REQUIRED && t->choice != GM_TOOL_CHOICE_NAMED)
		return 0;
	ret = gm_toolreq_grammar(t, gm_json_schema_to_gbnf, &text, err);
	if (!ret)
		ret = gm_grammar_parse(text.buf, text.len, NULL, out, err);
	gm_buf_release(&text);
	return ret;
}
