/*
 * toolreq.h - the tool-calling part of a chat completion request, in
 * OpenAI's shape: tools, tool_choice, parallel_tool_calls; the messages'
 * tool_calls and "tool" role turned into what chat templates expect (as
 * transformers passes them); the calls of an answer back into JSON.
 */
#ifndef GM_TOOLREQ_H
#define GM_TOOLREQ_H

#include <stdint.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/error.h"
#include "text/grammar.h"
#include "text/toolcall.h"

enum gm_tool_choice {
	GM_TOOL_CHOICE_AUTO,     /* the model decides; its calls are parsed */
	GM_TOOL_CHOICE_NONE,     /* tools shown to the template, the output is text (vLLM's default since 0.10) */
	GM_TOOL_CHOICE_REQUIRED, /* at least one call, enforced by a grammar */
	GM_TOOL_CHOICE_NAMED     /* a call of `name`, enforced by a grammar */
};

typedef struct gm_toolreq {
	json_object *tools;          /* own reference; NULL: no tools (or an empty list) */
	enum gm_tool_choice choice;
	char *name;                  /* GM_TOOL_CHOICE_NAMED: the function */
	int parallel;                /* parallel_tool_calls (default true) */
	enum gm_toolcall_format format; /* the model's, from its template */
} gm_toolreq;

/*
 * Reads tools, tool_choice and parallel_tool_calls from a request (fmt:
 * the model's format).  On a bad request returns GM_EINVAL with err set
 * and *param naming the field (a 400); *t is then released.  "functions"
 * (the deprecated form) is refused.
 */
int gm_toolreq_parse(json_object *req, enum gm_toolcall_format fmt, gm_toolreq *t, const char **param,
		     gm_error *err);
void gm_toolreq_release(gm_toolreq *t);

/* Whether the output is to be parsed for calls: tools given, tool_choice not none, a known format. */
int gm_toolreq_active(const gm_toolreq *t);

/*
 * Copies to `copy` (an object with role and content already set) what a
 * message carries for tools: an assistant's tool_calls, with each
 * function.arguments JSON string parsed into an object (transformers'
 * templates iterate over arguments|items or apply tojson to them), and a
 * tool message's tool_call_id and name.  GM_EINVAL with err set when
 * they are malformed.
 */
int gm_toolreq_message(json_object *m, size_t idx, json_object *copy, gm_error *err);

/* The calls parsed from an answer as OpenAI's message.tool_calls (new reference; NULL when none). */
json_object *gm_toolreq_calls_json(const gm_toolcall_parser *p);

/*
 * One delta.tool_calls entry for a streamed event (index >= 0): the
 * first of a call carries id, type and the name.
 */
json_object *gm_toolreq_delta_json(const gm_toolcall_event *ev);

/*
 * A GBNF grammar (llama.cpp's dialect) that admits exactly the calls
 * tool_choice requires, in the model's format: one call (several when
 * parallel) of any tool for "required", of the named one otherwise, the
 * arguments of each function following its parameters schema.
 * schema_rules turns a schema into rules named prefix... with the entry
 * rule prefix "root" (text/jsonschema.h's gm_json_schema_to_gbnf).
 * Every format the parser reads has one; markers that are special
 * tokens are literals of their own, which the mask lets through as the
 * token (text/grammar.h), so the text must keep special tokens
 * (gm_toolcall_needs_special).  In the formats that write values as bare
 * text (Qwen3 Coder...), a string parameter is free text (or one of its
 * enum), other types JSON following their schema.  GM_EUNSUPPORTED for
 * GM_TOOLCALL_NONE.
 */
typedef int (*gm_toolreq_schema_fn)(json_object *schema, const char *rule_prefix, gm_buf *out, gm_error *err);
int gm_toolreq_grammar(const gm_toolreq *t, gm_toolreq_schema_fn schema_rules, gm_buf *out, gm_error *err);

/*
 * The constraint tool_choice asks for: NULL in *out for auto and none,
 * else gm_toolreq_grammar with text/jsonschema.h's rules, parsed.
 * GM_EUNSUPPORTED (the format), GM_EINVAL (a schema) otherwise.
 */
int gm_toolreq_constraint(const gm_toolreq *t, gm_grammar **out, gm_error *err);

#endif
