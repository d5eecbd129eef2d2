/*
 * test-toolcall.c - text/toolcall: the format each template teaches, and
 * canned outputs of every format parsed whole and streamed in random
 * chunkings (the same content and calls either way).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "text/chat.h"
#include "text/toolcall.h"
#include "serve/toolreq.h"

#include "tap.h"

static char *fixture(const char *rel)
{
	return gm_path_join(tap_srcdir(), rel);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *b;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	b = malloc((size_t)n + 1);
	if (fread(b, 1, (size_t)n, f) != (size_t)n)
		n = 0;
	b[n] = '\0';
	fclose(f);
	return b;
}

static void test_detect(void)
{
	static const struct {
		const char *file, *format;
	} cases[] = {
		{ "Qwen-Qwen3-0.6B.jinja", "hermes" },
		{ "Qwen-Qwen2.5-7B-Instruct.jinja", "hermes" },
		{ "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", "hermes" },
		{ "Qwen3-Coder.jinja", "qwen3-coder" },
		{ "meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3" },
		{ "meta-llama-Llama-3.2-3B-Instruct.jinja", "llama3" },
		{ "mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral" },
		{ "Mistral-Small-3.2-24B-Instruct-2506.jinja", "mistral-args" },
		{ "openai-gpt-oss-120b.jinja", "gpt-oss" },
		{ "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "deepseek-r1" },
		{ "deepseek-ai-DeepSeek-V3.1.jinja", "deepseek-v3.1" },
		{ "moonshotai-Kimi-K2.jinja", "kimi-k2" },
		{ "meetkai-functionary-medium-v3.1.jinja", "functionary-v3.1" },
		{ "meetkai-functionary-medium-v3.2.jinja", "functionary-v3.2" },
		{ "GLM-4.6.jinja", "glm" },
		{ "GLM-4.7-Flash.jinja", "glm" },
		{ "MiniMax-M2.jinja", "minimax-m2" },
		{ "ByteDance-Seed-OSS.jinja", "seed-oss" },
		{ "deepseek-ai-DeepSeek-V3.2.jinja", "deepseek-v3.2" },
		{ "unsloth-Apriel-1.5.jinja", "apriel" },
		{ "Apriel-1.6-15b-Thinker-fixed.jinja", "apriel" },
		{ "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", "command-r7b" },
		{ "Cohere2MoE.jinja", "command-r7b" },
		{ "CohereForAI-c4ai-command-r-plus-tool_use.jinja", "command-r" },
		/* no tool calls, or a format not implemented: text */
		{ "google-gemma-2-2b-it.jinja", "none" },
		{ "microsoft-Phi-3.5-mini-instruct.jinja", "none" },
		{ "MiniMax-M1.jinja", "none" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char rel[256], *path, *src;

		snprintf(rel, sizeof(rel), "t/fixtures/chat-templates/%s", cases[i].file);
		path = fixture(rel);
		src = slurp(path);
		ok(src && !strcmp(gm_toolcall_format_name(gm_toolcall_detect(src)), cases[i].format),
		   "%s: %s (got %s)", cases[i].file, cases[i].format,
		   src ? gm_toolcall_format_name(gm_toolcall_detect(src)) : "no file");
		free(src);
		free(path);
	}
	ok(gm_toolcall_detect(NULL) == GM_TOOLCALL_NONE, "no template: none");
	ok(gm_toolcall_format_from_name("kimi-k2") == GM_TOOLCALL_KIMI_K2 && gm_toolcall_format_from_name("x") == -1,
	   "format names round-trip");
	/* the pocket model's template is Qwen3's */
	{
		char *path = fixture("contrib/models/pocket-qwen3");
		gm_chat_template *t = NULL;
		gm_error err = GM_ERROR_INIT;

		ok(!gm_chat_template_load(path, &t, &err) &&
		   gm_toolcall_detect(gm_chat_template_source(t)) == GM_TOOLCALL_HERMES, "pocket-qwen3's template: hermes");
		gm_chat_template_free(t);
		free(path);
	}
}

/* ---------------------------------------------------------------- parsing */

struct want {
	const char *format;      /* "~format": a malformed call, announced when streamed before that was known */
	const char *output;
	const char *content;
	int n;             /* calls */
	const char *calls[3][3]; /* name, arguments, id (NULL: made up) */
};

static const char TOOLS[] = "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": "
			    "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}, \"days\": "
			    "{\"type\": \"integer\"}, \"note\": {\"type\": \"string\"}}}}}]";

static const struct want cases[] = {
	/* Hermes / Qwen */
	{ "hermes", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "",
	  1, { { "get_weather", "{\"city\": \"Paris\"}" } } },
	{ "hermes", "Let me check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": [1, {\"y\": \"}\"}]}}\n"
		    "</tool_call>\n<tool_call>\n{\"arguments\": {}, \"name\": \"b\"}\n</tool_call>",
	  "Let me check.", 2, { { "a", "{\"x\": [1, {\"y\": \"}\"}]}" }, { "b", "{}" } } },
	{ "hermes", "<think>\nok\n</think>\n\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"s\": \"<tool_call>\\\"\"}}"
		    "\n</tool_call>",
	  "<think>\nok\n</think>", 1, { { "f", "{\"s\": \"<tool_call>\\\"\"}" } } },
	{ "hermes", "Plain answer, no call.\n", "Plain answer, no call.\n", 0, { { 0 } } },
	{ "hermes", "x <tool_cal y", "x <tool_cal y", 0, { { 0 } } },
	{ "hermes", "bad <tool_call>\nnot json</tool_call> end", "bad <tool_call>\nnot json</tool_call> end", 0, { { 0 } } },
	/* cut short (max_tokens): the call as far as it goes, as when streamed */
	{ "hermes", "cut <tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1", "cut", 1, { { "f", "{\"a\": 1" } } },
	/* cut after the name: "{}", streamed as in the final list */
	{ "hermes", "cut <tool_call>\n{\"name\": \"f\", \"argu", "cut", 1, { { "f", "{}" } } },
	{ "hermes", "a <tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"na", "a", 1,
	  { { "f", "{}" } } },
	{ "mistral-args", "[TOOL_CALLS]f[ARGS]{\"a\": [1, 2", "", 1, { { "f", "{\"a\": [1, 2" } } },
	{ "gpt-oss", "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\": ", "", 1,
	  { { "f", "{\"a\":" } } },
	{ "~hermes", "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": tru}}\n</tool_call>",
	  "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": tru}}\n</tool_call>", 0, { { 0 } } },
	{ "hermes", "<tool_call>{\"name\": \"f\", \"arguments\": {\"n\": 5}}", "", 1, { { "f", "{\"n\": 5}" } } },
	/* Qwen3 Coder: values typed by the tools' schemas */
	{ "qwen3-coder", "I will look.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n"
			 "<parameter=days>\n3\n</parameter>\n<parameter=note>\n42\n</parameter>\n<parameter=extra>\n"
			 "{\"k\": [1, 2]}\n</parameter>\n</function>\n</tool_call>",
	  "I will look.", 1, { { "get_weather", "{\"city\":\"New York\",\"days\":3,\"note\":\"42\",\"extra\":{\"k\":[1,2]}}" } } },
	{ "qwen3-coder", "<tool_call>\n<function=a>\n</function>\n</tool_call>\n<tool_call>\n<function=b>\n"
			 "<parameter=flag>\nTrue\n</parameter>\n</function>\n</tool_call>",
	  "", 2, { { "a", "{}" }, { "b", "{\"flag\":true}" } } },
	/* Llama 3.x */
	{ "llama3", "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}", "", 1,
	  { { "get_weather", "{\"city\": \"Oslo\"}" } } },
	{ "llama3", "<|python_tag|>{\"name\": \"f\", \"parameters\": {}}; {\"name\": \"g\", \"parameters\": {\"a\": 1}}",
	  "", 2, { { "f", "{}" }, { "g", "{\"a\": 1}" } } },
	{ "llama3", "{\"answer\": 42}", "{\"answer\": 42}", 0, { { 0 } } },
	{ "~llama3", "{\"name\": \"f\", \"parameters\": {}} and more text",
	  "{\"name\": \"f\", \"parameters\": {}} and more text", 0, { { 0 } } },
	{ "llama3", "<|python_tag|>brave_search.call(query=\"x\")", "<|python_tag|>brave_search.call(query=\"x\")", 0,
	  { { 0 } } },
	/* Mistral */
	{ "mistral", "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}, \"id\": \"abcDEF123\"}, "
		     "{\"name\": \"g\", \"arguments\": {}}]",
	  "", 2, { { "get_weather", "{\"city\": \"Rome\"}", "abcDEF123" }, { "g", "{}" } } },
	{ "mistral-args", "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Lima\"}[TOOL_CALLS]g[CALL_ID]a1b2c3d4e[ARGS]{}", "",
	  2, { { "get_weather", "{\"city\": \"Lima\"}" }, { "g", "{}", "a1b2c3d4e" } } },
	{ "mistral-args", "Sure. [TOOL_CALLS]f[ARGS]{\"a\": [1]}", "Sure.", 1, { { "f", "{\"a\": [1]}" } } },
	/* gpt-oss */
	{ "gpt-oss", "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary "
		     "to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Tokyo\"}<|call|>",
	  "", 1, { { "get_weather", "{\"city\":\"Tokyo\"}" } } },
	{ "gpt-oss", "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>Hello "
		     "there.<|return|>",
	  "Hello there.", 0, { { 0 } } },
	{ "gpt-oss", " to=functions.f<|channel|>commentary json<|message|>{}<|call|>", "", 1, { { "f", "{}" } } },
	/* DeepSeek */
	{ "deepseek-r1", "Checking.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
			 "```json\n{\"city\": \"Cairo\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function"
			 "<｜tool▁sep｜>g\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
	  "Checking.", 2, { { "get_weather", "{\"city\": \"Cairo\"}" }, { "g", "{}" } } },
	{ "deepseek-v3.1", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Lagos\"}"
			   "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
	  "", 1, { { "get_weather", "{\"city\": \"Lagos\"}" } } },
	/* Kimi K2 */
	{ "kimi-k2", "Ok.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
		     "<|tool_call_argument_begin|>{\"city\": \"Quito\"}<|tool_call_end|><|tool_call_begin|>functions.g:1"
		     "<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>",
	  "Ok.", 2, { { "get_weather", "{\"city\": \"Quito\"}", "functions.get_weather:0" }, { "g", "{}", "functions.g:1" } } },
	/* functionary v3.1 */
	{ "functionary-v3.1", "<function=get_weather>{\"city\": \"Bern\"}</function>", "", 1,
	  { { "get_weather", "{\"city\": \"Bern\"}" } } },
	/* GLM 4.5-4.7: values typed by the tools' schemas (a string stays a string) */
	{ "glm", "Let me look.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>New York</arg_value>\n"
		 "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n<arg_key>note</arg_key>\n<arg_value>42</arg_value>\n"
		 "</tool_call>",
	  "Let me look.", 1, { { "get_weather", "{\"city\":\"New York\",\"days\":3,\"note\":\"42\"}" } } },
	{ "glm", "<tool_call>a<arg_key>x</arg_key><arg_value>[1, {\"y\": true}]</arg_value></tool_call>"
		 "<tool_call>b\n</tool_call>",
	  "", 2, { { "a", "{\"x\":[1,{\"y\":true}]}" }, { "b", "{}" } } },
	{ "glm", "<tool_call>{\"name\": \"f\"}</tool_call>", "<tool_call>{\"name\": \"f\"}</tool_call>", 0, { { 0 } } },
	/* MiniMax M2 */
	{ "minimax-m2", "<think>\nplan\n</think>\n\n<minimax:tool_call>\n<invoke name=\"get_weather\">\n"
			"<parameter name=\"city\">Paris</parameter>\n<parameter name=\"days\">2</parameter>\n</invoke>\n"
			"<invoke name=\"g\">\n</invoke>\n</minimax:tool_call>",
	  "<think>\nplan\n</think>", 2, { { "get_weather", "{\"city\":\"Paris\",\"days\":2}" }, { "g", "{}" } } },
	/* Seed-OSS: multi-line values */
	{ "seed-oss", "<seed:tool_call>\n<function=get_weather>\n<parameter=city>Oslo</parameter>\n"
		      "<parameter=note>line one\n    \"two\"\n</parameter>\n</function>\n</seed:tool_call>\n<seed:tool_call>\n"
		      "<function=g>\n<parameter=k>[1, 2]</parameter>\n</function>\n</seed:tool_call>",
	  "", 2, { { "get_weather", "{\"city\":\"Oslo\",\"note\":\"line one\\n    \\\"two\\\"\\n\"}" },
		   { "g", "{\"k\":[1,2]}" } } },
	/* DeepSeek V3.2 (DSML): string="true|false" */
	{ "deepseek-v3.2", "Checking.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
			   "<｜DSML｜parameter name=\"city\" string=\"true\">Tokyo</｜DSML｜parameter>\n"
			   "<｜DSML｜parameter name=\"note\" string=\"false\">42</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
			   "</｜DSML｜function_calls>",
	  "Checking.", 1, { { "get_weather", "{\"city\":\"Tokyo\",\"note\":42}" } } },
	/* Apriel */
	{ "apriel", "Sure.\n<tool_calls>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lima\"}}, "
		    "{\"name\": \"g\", \"arguments\": {}, \"id\": \"x1\"}]</tool_calls>",
	  "Sure.", 2, { { "get_weather", "{\"city\": \"Lima\"}" }, { "g", "{}", "x1" } } },
	/* Command R7B: the list in an action; its tool_call_id is an index, not kept */
	{ "command-r7b", "<|START_THINKING|>I will call it.<|END_THINKING|><|START_ACTION|>[\n    {\"tool_call_id\": \"0\", "
			 "\"tool_name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}\n]<|END_ACTION|>",
	  "<|START_THINKING|>I will call it.<|END_THINKING|>", 1, { { "get_weather", "{\"city\": \"Rome\"}" } } },
	/* Command R+: Action: ```json [...] ``` */
	{ "command-r", "Action:\n```json\n[\n    {\n        \"tool_name\": \"get_weather\",\n        \"parameters\": "
		       "{\n            \"city\": \"Bern\"\n        }\n    }\n]\n```",
	  "", 1, { { "get_weather", "{\n            \"city\": \"Bern\"\n        }" } } },
	/* functionary v3.2: after the prompt's ">>>" */
	{ "functionary-v3.2", "all\nLet me check.>>>get_weather\n{\"city\": \"Kyiv\"}>>>g\n{}", "Let me check.", 2,
	  { { "get_weather", "{\"city\": \"Kyiv\"}" }, { "g", "{}" } } },
	{ "functionary-v3.2", "all\nHello, world!\nWhat's up?", "Hello, world!\nWhat's up?", 0, { { 0 } } },
	{ "functionary-v3.2", "get_weather\nnot json", "get_weather\nnot json", 0, { { 0 } } },
	/* unknown: always text */
	{ "none", "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
	  "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>", 0, { { 0 } } },
};

struct collected {
	gm_buf content;
	gm_buf args[8], ids[8], names[8];
	int n;
	int order_ok;
};

static int collect(void *ctx, const gm_toolcall_event *ev)
{
	struct collected *c = ctx;

	if (ev->index < 0) {
		gm_buf_add(&c->content, ev->text, ev->len);
		return 0;
	}
	if (ev->index >= 8)
		return 0;
	if (ev->name) {
		/* announced once, in order */
		if (ev->index != c->n || !ev->id)
			c->order_ok = 0;
		c->n = ev->index + 1;
		gm_buf_adds(&c->names[ev->index], ev->name);
		gm_buf_adds(&c->ids[ev->index], ev->id);
	} else if (ev->index >= c->n) {
		c->order_ok = 0;
	}
	gm_buf_add(&c->args[ev->index], ev->text, ev->len);
	return 0;
}

static void collected_release(struct collected *c)
{
	int i;

	gm_buf_release(&c->content);
	for (i = 0; i < 8; i++) {
		gm_buf_release(&c->args[i]);
		gm_buf_release(&c->ids[i]);
		gm_buf_release(&c->names[i]);
	}
}

static int same(const gm_buf *b, const char *s)
{
	return b->len == strlen(s) && (!b->len || !memcmp(b->buf, s, b->len));
}

static uint64_t rng_next(uint64_t *x)
{
	*x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
	return *x >> 33;
}

static void test_case(const struct want *w, json_object *tools)
{
	int whole_only = w->format[0] == '~';
	enum gm_toolcall_format f = (enum gm_toolcall_format)gm_toolcall_format_from_name(w->format + whole_only);
	gm_toolcall_parser *p;
	size_t len = strlen(w->output), i, clen;
	const char *content;
	int good, k, trial, stream_ok = 1;
	char ids[3][64], title[64];

	gm_toolcall_parser_new(f, tools, 7, &p);
	gm_toolcall_parse(p, w->output, len);
	content = gm_toolcall_content(p, &clen);
	good = clen == strlen(w->content) && !memcmp(content, w->content, clen) &&
	       gm_toolcall_n_calls(p) == (size_t)w->n;
	for (k = 0; good && k < w->n; k++) {
		const gm_toolcall *c = gm_toolcall_get(p, (size_t)k);

		good = !strcmp(c->name, w->calls[k][0]) && !strcmp(c->arguments, w->calls[k][1]) &&
		       (w->calls[k][2] ? !strcmp(c->id, w->calls[k][2]) : strlen(c->id) > 0);
		snprintf(ids[k], sizeof(ids[k]), "%s", c->id);
	}
	snprintf(title, sizeof(title), "%.40s", w->output);
	for (i = 0; title[i]; i++)
		if (title[i] == '\n')
			title[i] = ' ';
	if (!ok(good, "%s: %s...", w->format, title)) {
		printf("#   content [%.*s], %zu calls\n", (int)clen, content, gm_toolcall_n_calls(p));
		for (i = 0; i < gm_toolcall_n_calls(p); i++)
			printf("#   %s %s %s\n", gm_toolcall_get(p, i)->id, gm_toolcall_get(p, i)->name,
			       gm_toolcall_get(p, i)->arguments);
	}
	gm_toolcall_parser_free(p);
	if (!good || whole_only)
		return;

	/* streamed: one character at a time, then random chunks */
	for (trial = 0; trial < 60 && stream_ok; trial++) {
		struct collected c;
		uint64_t x = (uint64_t)trial * 977 + 13;
		size_t at = 0;

		memset(&c, 0, sizeof(c));
		c.order_ok = 1;
		gm_toolcall_parser_new(f, tools, 7, &p);
		while (at < len) {
			size_t step = trial == 0 ? 1 : 1 + rng_next(&x) % 9;

			if (step > len - at)
				step = len - at;
			gm_toolcall_feed(p, w->output + at, step, collect, &c);
			at += step;
		}
		gm_toolcall_finish(p, collect, &c);
		stream_ok = c.order_ok && same(&c.content, w->content) && c.n == w->n;
		for (k = 0; stream_ok && k < w->n; k++)
			stream_ok = same(&c.names[k], w->calls[k][0]) && same(&c.args[k], w->calls[k][1]) &&
				    same(&c.ids[k], ids[k]);
		if (!stream_ok) {
			printf("#   trial %d: content [%.*s], %d calls\n", trial, (int)c.content.len,
			       c.content.buf ? c.content.buf : "", c.n);
			for (k = 0; k < c.n && k < 8; k++)
				printf("#   %.*s %.*s\n", (int)c.names[k].len, c.names[k].buf, (int)c.args[k].len,
				       c.args[k].buf);
		}
		collected_release(&c);
		gm_toolcall_parser_free(p);
	}
	ok(stream_ok, "%s streamed in 60 chunkings: the same content and calls", w->format);
}

/* Content is released as it comes, a partial marker held back only while it may be one. */
static void test_holdback(void)
{
	struct collected c;
	gm_toolcall_parser *p;

	memset(&c, 0, sizeof(c));
	c.order_ok = 1;
	gm_toolcall_parser_new(GM_TOOLCALL_HERMES, NULL, 1, &p);
	gm_toolcall_feed(p, "Hello wor", 9, collect, &c);
	ok(same(&c.content, "Hello wor"), "plain text is released at once");
	gm_toolcall_feed(p, "ld <tool", 8, collect, &c);
	ok(same(&c.content, "Hello world"), "a partial marker (and the space before it) is held back");
	gm_toolcall_feed(p, "box>", 4, collect, &c);
	ok(same(&c.content, "Hello world <toolbox>"), "released once it is not a marker");
	gm_toolcall_feed(p, "\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\"",
			 strlen("\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\""), collect, &c);
	ok(c.n == 1 && same(&c.names[0], "f") && same(&c.args[0], "{\"a\""),
	   "a call is announced once its name is known, its arguments stream");
	gm_toolcall_finish(p, collect, &c);
	gm_toolcall_parser_free(p);
	collected_release(&c);
}

static void test_arguments_object(void)
{
	gm_error err = GM_ERROR_INIT;
	json_object *o = gm_toolcall_arguments_object("{\"a\": [1, 2]} ", 14, &err);

	ok(o && json_object_is_type(o, json_type_object), "arguments text back to an object");
	json_object_put(o);
	o = gm_toolcall_arguments_object("[1]", 3, &err);
	ok(!o && strstr(err.msg, "not a JSON object"), "a list is not arguments");
	o = gm_toolcall_arguments_object("{\"a\": 1} x", 10, &err);
	ok(!o, "trailing text is refused");
}

/* ---------------------------------------------------------------- the request side (serve/toolreq) */

static int stub_schema(json_object *schema, const char *prefix, gm_buf *out, gm_error *err)
{
	(void)schema;
	(void)err;
	gm_buf_addf(out, "%sroot ::= \"{}\"\n", prefix);
	return 0;
}

static void test_request(void)
{
	static const char *const bad_reqs[][2] = {
		{ "{\"tools\": {}}", "tools" },
		{ "{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"a b\"}}]}", "tools" },
		{ "{\"tools\": [{\"type\": \"retrieval\"}]}", "tools" },
		{ "{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"a\"}}, {\"type\": \"function\", "
		  "\"function\": {\"name\": \"a\"}}]}", "tools" },
		{ "{\"tool_choice\": \"any\"}", "tool_choice" },
		{ "{\"tool_choice\": \"required\"}", "tool_choice" },
		{ "{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"a\"}}], \"tool_choice\": "
		  "{\"type\": \"function\", \"function\": {\"name\": \"b\"}}}", "tool_choice" },
		{ "{\"tools\": [], \"parallel_tool_calls\": 1}", "parallel_tool_calls" },
		{ "{\"functions\": []}", "functions" },
	};
	gm_toolreq t;
	gm_error err = GM_ERROR_INIT;
	const char *param;
	json_object *req, *m, *copy;
	gm_buf g = GM_BUF_INIT;
	size_t i;

	for (i = 0; i < sizeof(bad_reqs) / sizeof(bad_reqs[0]); i++) {
		req = json_tokener_parse(bad_reqs[i][0]);
		gm_error_clear(&err);
		ok(gm_toolreq_parse(req, GM_TOOLCALL_HERMES, &t, &param, &err) && param &&
		   !strcmp(param, bad_reqs[i][1]) && err.msg[0], "refused (%s): %s", bad_reqs[i][1], err.msg);
		json_object_put(req);
	}
	req = json_tokener_parse("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], "
				 "\"tool_choice\": \"required\"}");
	ok(gm_toolreq_parse(req, GM_TOOLCALL_NONE, &t, &param, &err) == GM_EUNSUPPORTED,
	   "required with an unknown format: refused, not guessed");
	ok(!gm_toolreq_parse(req, GM_TOOLCALL_HERMES, &t, &param, &err) && t.choice == GM_TOOL_CHOICE_REQUIRED &&
	   t.parallel && gm_toolreq_active(&t), "tools with tool_choice required");
	ok(!gm_toolreq_grammar(&t, stub_schema, &g, &err) &&
	   !strcmp(g.buf, "root ::= call (\"\\n\" call)*\ncall ::= tool0-call\ntool0-call ::= \"<tool_call>\\n{\\\"name\\\": "
			  "\\\"f\\\", \\\"arguments\\\": \" tool0-root \"}\\n</tool_call>\"\ntool0-root ::= \"{}\"\n"),
	   "required, hermes: the grammar of one or more calls");
	gm_toolreq_release(&t);
	json_object_put(req);
	req = json_tokener_parse("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], "
				 "\"tool_choice\": \"none\"}");
	ok(!gm_toolreq_parse(req, GM_TOOLCALL_HERMES, &t, &param, &err) && t.tools && !gm_toolreq_active(&t),
	   "tool_choice none: the tools stay for the template, the output is text");
	gm_toolreq_release(&t);
	json_object_put(req);
	req = json_tokener_parse("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}, "
				 "{\"type\": \"function\", \"function\": {\"name\": \"g\"}}], \"tool_choice\": {\"type\": "
				 "\"function\", \"function\": {\"name\": \"g\"}}, \"parallel_tool_calls\": false}");
	gm_buf_reset(&g);
	ok(!gm_toolreq_parse(req, GM_TOOLCALL_LLAMA3, &t, &param, &err) && t.choice == GM_TOOL_CHOICE_NAMED &&
	   !t.parallel && !gm_toolreq_grammar(&t, stub_schema, &g, &err) &&
	   !strcmp(g.buf, "root ::= call\ncall ::= tool1-call\ntool1-call ::= \"{\\\"name\\\": \\\"g\\\", "
			  "\\\"parameters\\\": \" tool1-root \"}\"\ntool1-root ::= \"{}\"\n"),
	   "a named function, llama3, not parallel: one call of it");
	t.format = GM_TOOLCALL_NONE;
	ok(gm_toolreq_grammar(&t, stub_schema, &g, &err) == GM_EUNSUPPORTED, "no grammar for an unknown format");
	gm_toolreq_release(&t);
	json_object_put(req);
	gm_buf_release(&g);

	/* history: arguments strings become objects, tool messages keep their id */
	m = json_tokener_parse("{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"call_1\", "
			       "\"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}}]}");
	copy = json_object_new_object();
	ok(!gm_toolreq_message(m, 0, copy, &err) &&
	   !strcmp(json_object_to_json_string_ext(copy, JSON_C_TO_STRING_PLAIN),
		   "{\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
		   "{\"a\":1}}}]}"),
	   "an assistant's tool_calls: arguments parsed into an object");
	json_object_put(copy);
	json_object_put(m);
	m = json_tokener_parse("{\"role\": \"assistant\", \"tool_calls\": [{\"function\": {\"name\": \"f\", "
			       "\"arguments\": \"{oops\"}}]}");
	copy = json_object_new_object();
	ok(gm_toolreq_message(m, 3, copy, &err) == GM_EINVAL && strstr(err.msg, "messages[3].tool_calls[0]"),
	   "arguments that are not JSON are refused");
	json_object_put(copy);
	json_object_put(m);
	m = json_tokener_parse("{\"role\": \"tool\", \"tool_call_id\": \"call_1\", \"content\": \"sunny\"}");
	copy = json_object_new_object();
	ok(!gm_toolreq_message(m, 0, copy, &err) &&
	   !strcmp(json_object_to_json_string_ext(copy, JSON_C_TO_STRING_PLAIN), "{\"tool_call_id\":\"call_1\"}"),
	   "a tool message keeps its tool_call_id");
	json_object_put(copy);
	json_object_put(m);
}

/*
 * Every format's tool_choice grammar against its parser: texts drawn at
 * random from the grammar (a byte at a time, among the bytes it accepts)
 * parse into calls of the tools, with arguments that are JSON objects
 * and no content; a named function is the only one called.
 */
static const char GRAMMAR_TOOLS[] =
	"[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\", "
	"\"properties\": {\"city\": {\"type\": \"string\"}, \"unit\": {\"type\": \"string\", \"enum\": [\"C\", \"F\"]}, "
	"\"days\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 9}, \"opts\": {\"type\": \"object\", "
	"\"properties\": {\"x\": {\"type\": \"boolean\"}}, \"required\": [\"x\"], \"additionalProperties\": false}}, "
	"\"required\": [\"city\", \"days\"], \"additionalProperties\": false}}}, "
	"{\"type\": \"function\", \"function\": {\"name\": \"now\"}}]";

static int draw(const gm_grammar *g, uint64_t *x, gm_buf *out)
{
	gm_grammar_state *st;
	int done = 0, steps;
	unsigned hint = 0;
	/* the bytes tried first: a little of everything, so that free text stays short */
	static const char pref[] = "ab \n\"{}:,<>/=0123456789";

	gm_grammar_state_new(g, &st);
	gm_buf_reset(out);
	for (steps = 0; steps < 3000 && !done; steps++) {
		unsigned char b;
		int k, got = 0;

		if (gm_grammar_state_can_end(st) && (gm_grammar_state_done(st) || rng_next(x) % 3 == 0)) {
			done = 1;
			break;
		}
		if (steps > 200) {
			/* long enough: towards the end, the closing tags first, else the first byte that goes */
			static const char closers[] = "\n</parameter>\n</function>\n</tool_call>}\"]";
			unsigned j;

			if (gm_grammar_state_can_end(st)) {
				done = 1;
				break;
			}
			/* a closing tag of a bare value, whole */
			static const char *const tags[] = { "\n</parameter>", "</parameter>", "</arg_value>",
							     "</｜DSML｜parameter>" };

			/* (one that closes: not text of a JSON string, which would take it twice) */
			for (j = 0; j < sizeof(tags) / sizeof(tags[0]) && !got; j++) {
				gm_grammar_state *t2;
				int closes;

				gm_grammar_state_new(g, &t2);
				closes = gm_grammar_state_accept(t2, out->buf, out->len) &&
					 gm_grammar_state_accept(t2, tags[j], strlen(tags[j])) &&
					 !gm_grammar_state_accept(t2, tags[j], strlen(tags[j]));
				gm_grammar_state_free(t2);
				if (closes && (got = gm_grammar_state_accept(st, tags[j], strlen(tags[j]))))
					gm_buf_adds(out, tags[j]);
			}
			if (got)
				continue;
			for (j = 0; j < sizeof(closers) - 1 && !got; j++) {
				b = (unsigned char)closers[(hint + j) % (sizeof(closers) - 1)];
				if ((got = gm_grammar_state_accept(st, &b, 1)))
					hint = (hint + j + 1) % (sizeof(closers) - 1);
			}
			for (j = 0; j < 256 && !got; j++) {
				b = (unsigned char)j;
				got = gm_grammar_state_accept(st, &b, 1);
			}
			if (!got)
				break;
			gm_buf_addch(out, b);
			continue;
		}
		/* a random preferred byte, else any byte from a random start */
		for (k = 0; k < 8 && !got; k++) {
			b = (unsigned char)pref[rng_next(x) % (sizeof(pref) - 1)];
			got = gm_grammar_state_accept(st, &b, 1);
		}
		if (!got) {
			unsigned start = (unsigned)(rng_next(x) % 256), j;

			for (j = 0; j < 256 && !got; j++) {
				b = (unsigned char)((start + j) % 256);
				got = gm_grammar_state_accept(st, &b, 1);
			}
		}
		if (!got)
			break;
		gm_buf_addch(out, b);
	}
	gm_grammar_state_free(st);
	return done;
}

static void test_grammar_formats(void)
{
	json_object *tools = json_tokener_parse(GRAMMAR_TOOLS);
	int f;

	for (f = 1; f < GM_TOOLCALL_N_FORMATS; f++) {
		int named;

		/* 0: required, one call; 1: named; 2: required, parallel (fewer draws end) */
		for (named = 0; named < 3; named++) {
			gm_toolreq t;
			gm_error err = GM_ERROR_INIT;
			gm_grammar *g = NULL;
			gm_buf text = GM_BUF_INIT;
			uint64_t x = 99 + (uint64_t)f;
			int trial, drawn = 0, good = 1;

			memset(&t, 0, sizeof(t));
			t.tools = tools;
			t.format = (enum gm_toolcall_format)f;
			t.choice = named == 1 ? GM_TOOL_CHOICE_NAMED : GM_TOOL_CHOICE_REQUIRED;
			t.name = named == 1 ? "get_weather" : NULL;
			t.parallel = named == 2;
			if (!ok(!gm_toolreq_constraint(&t, &g, &err) && g, "%s: a grammar for tool_choice %s",
				gm_toolcall_format_name(t.format), named == 1 ? "named" : "required")) {
				tap_diag("%s", err.msg);
				continue;
			}
			for (trial = 0; trial < 40 && good; trial++) {
				gm_toolcall_parser *p;
				size_t i, clen;

				if (!draw(g, &x, &text))
					continue;
				drawn++;
				gm_toolcall_parser_new(t.format, tools, 1, &p);
				gm_toolcall_parse(p, text.buf, text.len);
				gm_toolcall_content(p, &clen);
				good = clen == 0 && gm_toolcall_n_calls(p) >= 1 && (named == 2 || gm_toolcall_n_calls(p) == 1);
				for (i = 0; good && i < gm_toolcall_n_calls(p); i++) {
					const gm_toolcall *c = gm_toolcall_get(p, i);
					json_object *a = gm_toolcall_arguments_object(c->arguments, strlen(c->arguments), NULL);

					good = a && (!strcmp(c->name, "get_weather") || (named != 1 && !strcmp(c->name, "now")));
					if (good && !strcmp(c->name, "get_weather")) {
						json_object *v;

						good = json_object_object_get_ex(a, "city", &v) &&
						       json_object_is_type(v, json_type_string) &&
						       json_object_object_get_ex(a, "days", &v) && json_object_is_type(v, json_type_int);
					}
					json_object_put(a);
				}
				if (!good)
					tap_diag("%s: [%s] gives %zu calls, content %zu bytes", gm_toolcall_format_name(t.format),
						 text.buf, gm_toolcall_n_calls(p), clen);
				gm_toolcall_parser_free(p);
			}
			ok(good && drawn >= (named == 2 ? 1 : 10), "%s, %s: %d texts drawn from the grammar parse into calls of "
			   "the tools", gm_toolcall_format_name(t.format),
			   named == 1 ? "named" : named ? "required, parallel" : "required", drawn);
			gm_grammar_free(g);
			gm_buf_release(&text);
		}
	}
	json_object_put(tools);
}

int main(void)
{
	json_object *tools = json_tokener_parse(TOOLS);
	size_t i;

	test_detect();
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		test_case(&cases[i], tools);
	test_holdback();
	test_arguments_object();
	test_request();
	test_grammar_formats();
	json_object_put(tools);
	return tap_done();
}
