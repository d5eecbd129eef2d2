/*
 * fuzz-chat-template.c - libFuzzer target for chat templates: the Jinja
 * subset (libcore/text/jinja.c) parsing a template and rendering it with
 * fuzzed messages, under small resource limits, and chat.c's checks of
 * what it is given.
 *
 * An input is TEMPLATE, then optionally FUZZ_SPLIT and a second part:
 *   - a JSON object: its keys are the template's variables (as
 *     apply_chat_template's kwargs), "messages" defaulting to one user
 *     message, add_generation_prompt to true, tools and documents to none;
 *   - a JSON array: the messages;
 *   - anything else: the text of one user message (so that raw bytes reach
 *     the filters and string methods).
 * bos_token and eos_token are defined, as for most models.
 *
 * Invariants: a refused template or a failed render has a negative code
 * and a message; an accepted render is within the output limit and is
 * deterministic (rendered twice, the same bytes; strftime_now's clock is
 * fixed).  The limits are small so that each input is fast; a run that
 * only hits them is an expected refusal, not a finding.
 */
#include <json-c/json.h>

#include "fuzz-common.h"

#include "base/buf.h"
#include "text/chat.h"
#include "text/jinja.h"

static gm_jinja_limits lim;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	gm_jinja_limits_init(&lim);
	lim.max_output = 64 << 10;
	lim.max_string = 64 << 10;
	lim.max_list = 4096;
	lim.max_iterations = 100000;
	lim.max_call_depth = 20;
	lim.max_seconds = 2;
	lim.now = 1767225600; /* 2026-01-01, so that strftime_now() is deterministic */
	return 0;
}

static json_object *default_messages(const uint8_t *text, size_t len)
{
	json_object *msgs = json_object_new_array(), *m = json_object_new_object();

	json_object_object_add(m, "role", json_object_new_string("user"));
	json_object_object_add(m, "content", json_object_new_string_len(len ? (const char *)text : "Hello", len ? (int)len : 5));
	json_object_array_add(msgs, m);
	return msgs;
}

/* The render context chat.c builds, from the second part of the input. */
static json_object *make_context(const uint8_t *data, size_t len)
{
	json_object *ctx = json_object_new_object(), *v = NULL;
	json_tokener *tok = json_tokener_new_ex(32);

	if (len && len <= INT32_MAX)
		v = json_tokener_parse_ex(tok, (const char *)data, (int)len);
	json_tokener_free(tok);
	if (json_object_is_type(v, json_type_object)) {
		json_object_object_foreach(v, key, val)
			json_object_object_add(ctx, key, json_object_get(val));
	} else if (json_object_is_type(v, json_type_array)) {
		json_object_object_add(ctx, "messages", json_object_get(v));
	} else {
		json_object_object_add(ctx, "messages", default_messages(data, len));
	}
	json_object_put(v);
	if (!json_object_object_get_ex(ctx, "messages", NULL))
		json_object_object_add(ctx, "messages", default_messages(NULL, 0));
	if (!json_object_object_get_ex(ctx, "tools", NULL))
		json_object_object_add(ctx, "tools", NULL);
	if (!json_object_object_get_ex(ctx, "documents", NULL))
		json_object_object_add(ctx, "documents", NULL);
	if (!json_object_object_get_ex(ctx, "add_generation_prompt", NULL))
		json_object_object_add(ctx, "add_generation_prompt", json_object_new_boolean(1));
	if (!json_object_object_get_ex(ctx, "bos_token", NULL))
		json_object_object_add(ctx, "bos_token", json_object_new_string("<s>"));
	if (!json_object_object_get_ex(ctx, "eos_token", NULL))
		json_object_object_add(ctx, "eos_token", json_object_new_string("</s>"));
	return ctx;
}

/* A render that ran out of time may not be repeated exactly: the clock is outside the input. */
static int timed_out(const gm_error *err)
{
	return strstr(err->msg, "time limit") != NULL;
}

/*
 * chat.c refuses what is not an array of messages (or of tools) before
 * rendering; those refusals must explain themselves too.
 */
static void check_chat_refusals(const gm_chat_template *ct, json_object *ctx)
{
	json_object *msgs = NULL, *tools = NULL;
	gm_chat_render_opts o;
	gm_error err = GM_ERROR_INIT;
	gm_buf out = GM_BUF_INIT;
	int ret;

	json_object_object_get_ex(ctx, "messages", &msgs);
	json_object_object_get_ex(ctx, "tools", &tools);
	gm_chat_render_opts_init(&o);
	o.messages = msgs;
	o.tools = tools;
	if (json_object_is_type(msgs, json_type_array) && (!tools || json_object_is_type(tools, json_type_array)))
		return; /* would render with the default limits: not here */
	ret = gm_chat_render_ex(ct, &o, &out, &err);
	CHECK_REFUSAL(ret, err);
	CHECK(out.len == 0);
	gm_buf_release(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t tlen, rest_len;
	const uint8_t *rest;
	gm_jinja_template *t = NULL;
	gm_chat_template *ct = NULL;
	gm_error err = GM_ERROR_INIT, err2 = GM_ERROR_INIT;
	gm_buf once = GM_BUF_INIT, twice = GM_BUF_INIT;
	json_object *ctx;
	int ret, ret2;

	fuzz_split(data, size, &tlen, &rest, &rest_len);
	ret = gm_jinja_parse((const char *)data, tlen, "fuzz", &t, &err);
	if (ret) {
		CHECK_REFUSAL(ret, err);
		CHECK(t == NULL);
		return 0;
	}
	ctx = make_context(rest, rest_len);

	ret = gm_jinja_render_ex(t, ctx, &lim, &once, &err);
	if (ret) {
		CHECK_REFUSAL(ret, err);
	} else {
		CHECK(once.len <= lim.max_output);
		fuzz_accepted("rendered");
		/* The same template and context render the same bytes again. */
		ret2 = gm_jinja_render_ex(t, ctx, &lim, &twice, &err2);
		if (ret2) {
			CHECK_REFUSAL(ret2, err2);
			if (!timed_out(&err2)) {
				fprintf(stderr, "rendered once, refused the second time: %s\n", err2.msg);
				abort();
			}
		} else {
			CHECK(twice.len == once.len && (!once.len || !memcmp(twice.buf, once.buf, once.len)));
		}
	}

	/* chat.h's template parses the same source the same way. */
	err = (gm_error)GM_ERROR_INIT;
	ret = gm_chat_template_parse((const char *)data, tlen, "fuzz", "<s>", "</s>", &ct, &err);
	CHECK(ret == 0 && ct);
	CHECK(strlen(gm_chat_template_source(ct)) <= tlen);
	check_chat_refusals(ct, ctx);

	gm_chat_template_free(ct);
	json_object_put(ctx);
	gm_buf_release(&once);
	gm_buf_release(&twice);
	gm_jinja_free(t);
	return 0;
}
