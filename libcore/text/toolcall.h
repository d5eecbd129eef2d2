/*
 * toolcall.h - tool (function) calls in a model's output: which syntax a
 * model family writes them in (recognized from its chat template), and
 * the output parsed into content and calls, whole or as it streams.
 *
 *   fmt = gm_toolcall_detect(gm_chat_template_source(t));
 *   gm_toolcall_parser_new(fmt, tools, seed, &p);
 *   for each piece of text: gm_toolcall_feed(p, text, len, on_event, ctx);
 *   gm_toolcall_finish(p, on_event, ctx);
 *   ... gm_toolcall_content(p), gm_toolcall_n_calls(p), gm_toolcall_get(p, i)
 *   gm_toolcall_parser_free(p);
 *
 * Streamed, content is released as soon as it cannot be the start of a
 * call (a partial marker, and whitespace that may precede one, are held
 * back); a call is announced once its function name is known, and its
 * arguments follow in pieces.  Fed in any chunking, the events add up to
 * the same content and calls as the whole text parsed at once.
 *
 * An unknown format (GM_TOOLCALL_NONE) leaves the output as content: calls
 * are never guessed.  A call block that turns out malformed is content too
 * (when streamed, only what was not already sent as a call).
 */
#ifndef GM_TOOLCALL_H
#define GM_TOOLCALL_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/error.h"

/* The table of templates to formats is in docs/tool-calling.md. */
enum gm_toolcall_format {
	GM_TOOLCALL_NONE = 0,      /* unknown: the output is text */
	GM_TOOLCALL_HERMES,        /* <tool_call>{"name": N, "arguments": {...}}</tool_call> (Qwen 2.5/3, Hermes...) */
	GM_TOOLCALL_QWEN3_CODER,   /* <tool_call><function=N><parameter=K>V</parameter></function></tool_call> */
	GM_TOOLCALL_LLAMA3,        /* {"name": N, "parameters": {...}}, or after <|python_tag|> */
	GM_TOOLCALL_MISTRAL,       /* [TOOL_CALLS][{"name": N, "arguments": {...}, "id": I}, ...] */
	GM_TOOLCALL_MISTRAL_ARGS,  /* [TOOL_CALLS]N[ARGS]{...} */
	GM_TOOLCALL_GPT_OSS,       /* harmony channels: to=functions.N ... <|message|>{...}<|call|> */
	GM_TOOLCALL_DEEPSEEK_R1,   /* <｜tool▁call▁begin｜>function<｜tool▁sep｜>N\n```json\n{...}\n```<｜tool▁call▁end｜> */
	GM_TOOLCALL_DEEPSEEK_V31,  /* <｜tool▁call▁begin｜>N<｜tool▁sep｜>{...}<｜tool▁call▁end｜> */
	GM_TOOLCALL_KIMI_K2,       /* <|tool_call_begin|>functions.N:I<|tool_call_argument_begin|>{...}<|tool_call_end|> */
	GM_TOOLCALL_FUNCTIONARY_V31, /* <function=N>{...}</function> */
	GM_TOOLCALL_GLM,           /* <tool_call>N\n<arg_key>K</arg_key>\n<arg_value>V</arg_value>\n</tool_call> */
	GM_TOOLCALL_MINIMAX_M2,    /* <minimax:tool_call>\n<invoke name="N"><parameter name="K">V</parameter></invoke>\n</minimax:tool_call> */
	GM_TOOLCALL_SEED_OSS,      /* <seed:tool_call>\n<function=N>\n<parameter=K>V</parameter>\n</function>\n</seed:tool_call> */
	GM_TOOLCALL_DEEPSEEK_V32,  /* <｜DSML｜function_calls> <｜DSML｜invoke name="N"> <｜DSML｜parameter name="K" string="true">V... */
	GM_TOOLCALL_APRIEL,        /* <tool_calls>[{"name": N, "arguments": {...}}, ...]</tool_calls> */
	GM_TOOLCALL_COMMAND_R7B,   /* <|START_ACTION|>[{"tool_call_id": "0", "tool_name": N, "parameters": {...}}]<|END_ACTION|> */
	GM_TOOLCALL_COMMAND_R,     /* Action: ```json [{"tool_name": N, "parameters": {...}}] ``` */
	GM_TOOLCALL_FUNCTIONARY_V32, /* after the prompt's ">>>": N\n{...}, further calls after ">>>"; "all\n" is text */
	GM_TOOLCALL_N_FORMATS
};

/* The format a chat template's source teaches its model; NONE when not recognized (or src is NULL). */
enum gm_toolcall_format gm_toolcall_detect(const char *template_src);
/* A short stable name ("hermes", "llama3"...), and back (-1: unknown). */
const char *gm_toolcall_format_name(enum gm_toolcall_format f);
int gm_toolcall_format_from_name(const char *name);
/*
 * Whether the format's markers are special tokens the generated text must
 * keep (generate with skip_special off): Llama's <|python_tag|>,
 * Mistral's [TOOL_CALLS], gpt-oss's channels, Kimi's and DeepSeek's.
 */
int gm_toolcall_needs_special(enum gm_toolcall_format f);

/* One parsed call; all strings NUL-terminated, owned by the parser. */
typedef struct gm_toolcall {
	const char *id;         /* the model's own (Mistral, Kimi) or made up from the seed: "call_..." */
	const char *name;
	const char *arguments;  /* a JSON object, as text */
} gm_toolcall;

/*
 * What a piece of streamed output adds: index -1 is content text; index
 * >= 0 is call number index, with id and name on its first event (NULL
 * after) and the next piece of its arguments in text (may be empty).
 */
typedef struct gm_toolcall_event {
	int index;
	const char *id, *name;
	const char *text;
	size_t len;
} gm_toolcall_event;

/* Returns 0 to go on; anything else is handed back by feed/finish. */
typedef int (*gm_toolcall_event_fn)(void *ctx, const gm_toolcall_event *ev);

typedef struct gm_toolcall_parser gm_toolcall_parser;

/*
 * tools: the request's OpenAI tools array (borrowed, may be NULL), used to
 * type the parameters of formats that write values as bare text (Qwen3
 * Coder's <parameter=K>, GLM, MiniMax, Seed-OSS); seed makes the call ids.
 */
void gm_toolcall_parser_new(enum gm_toolcall_format f, json_object *tools, uint64_t seed,
			    gm_toolcall_parser **out);
void gm_toolcall_parser_free(gm_toolcall_parser *p);
/* More output; fn (may be NULL) gets what can be released now.  Returns 0 or what fn returned. */
int gm_toolcall_feed(gm_toolcall_parser *p, const char *text, size_t len, gm_toolcall_event_fn fn, void *ctx);
/* The end of the output: the rest is released. */
int gm_toolcall_finish(gm_toolcall_parser *p, gm_toolcall_event_fn fn, void *ctx);

/* After finish: the content (without the calls) and the calls. */
const char *gm_toolcall_content(const gm_toolcall_parser *p, size_t *len);
size_t gm_toolcall_n_calls(const gm_toolcall_parser *p);
const gm_toolcall *gm_toolcall_get(const gm_toolcall_parser *p, size_t i);

/* A whole output at once: feed and finish. */
void gm_toolcall_parse(gm_toolcall_parser *p, const char *text, size_t len);

/*
 * The arguments parsed back into an object (new reference), as
 * transformers' templates expect tool_calls[].function.arguments: NULL
 * with err set when they are not a JSON object.
 */
json_object *gm_toolcall_arguments_object(const char *arguments, size_t len, gm_error *err);

#endif
