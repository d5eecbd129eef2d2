/*
 * jinja.h - a Jinja2 subset interpreter, large enough for the chat
 * templates of Hugging Face models (Qwen3's in particular).
 *
 * It renders as transformers' apply_chat_template does: an immutable
 * sandboxed Environment(trim_blocks=True, lstrip_blocks=True) with the
 * loopcontrols extension, keep_trailing_newline=False, the default
 * (lenient) Undefined, and transformers' tojson (json.dumps with
 * ensure_ascii=False).
 *
 * Values are json-c objects: the context is a JSON object, and the template
 * sees its keys as variables.  Supported:
 *   - {{ }}, {% %}, {# #}, whitespace control (-, +), {% raw %};
 *   - if/elif/else, for (unpacking, "if" filter, else, loop.index, index0,
 *     revindex, revindex0, first, last, length, previtem, nextitem, cycle),
 *     break/continue, set (also "a, b =", block set, namespace attributes),
 *     with, transformers' generation;
 *   - literals (strings, ints, floats, true/false/none, lists, tuples as
 *     lists, dicts), attribute/item access, slicing, calls with keyword
 *     arguments, + - * / // % ** ~, comparisons (chained), in / not in,
 *     and/or/not, conditional expressions;
 *   - filters: abs attr capitalize count d default e escape first float int
 *     items join last length list lower map reject rejectattr replace reverse
 *     safe select selectattr string title tojson trim upper;
 *   - tests: boolean callable defined divisibleby eq/equalto/== even false float
 *     ge gt in integer iterable le lower lt mapping ne none number odd
 *     sequence string true undefined upper;
 *   - string methods startswith endswith strip lstrip rstrip split replace
 *     upper lower title capitalize find rfind count join isspace isdigit
 *     isalpha isalnum; dict methods items keys values get;
 *   - globals raise_exception, namespace, range, dict, strftime_now.
 * Anything else (macro, call, include, extends, filter blocks, recursive
 * loops, '%' formatting, other filters, tests and methods) is refused at
 * parse or render time with an error naming the construct and its line.
 *
 * Errors: GM_EFORMAT for syntax errors, GM_EUNSUPPORTED for constructs
 * outside the subset, GM_EINVAL for render-time errors (undefined values
 * used in operations, type errors, raise_exception(), whose message is
 * surfaced).  Messages read "WHAT: line N: ...".
 *
 * A parsed template is never modified: several threads may render it at
 * once, each with its own context (json-c reference counts are not atomic,
 * so one context must not be rendered by two threads at the same time).
 *
 * Known differences from Python: tuples are lists (they print as [1, 2]);
 * case mappings are one-to-one (no "ß" -> "SS"); a namespace attribute set
 * to an undefined value holds none.
 */
#ifndef GM_JINJA_H
#define GM_JINJA_H

#include <stdint.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/error.h"

typedef struct gm_jinja_template gm_jinja_template;

/* Parses src[0..len); what names it in errors ("tokenizer_config.json: chat_template"). */
int gm_jinja_parse(const char *src, size_t len, const char *what, gm_jinja_template **out, gm_error *err);
void gm_jinja_free(gm_jinja_template *t);
/*
 * What one render may use, so that a hostile template fails fast with an
 * error naming the limit ("...: line 3: string longer than the 16 MiB
 * limit (GM_JINJA_MAX_STRING)") instead of exhausting memory or time.
 * The defaults (gm_jinja_limits_init) are far above what any released chat
 * template needs for a long conversation.
 */
typedef struct gm_jinja_limits {
	size_t max_output;        /* bytes of rendered text, also inside set blocks and macros (16 MiB) */
	size_t max_string;        /* bytes of any one string an expression makes (16 MiB) */
	size_t max_list;          /* items of any one list or dict an expression makes (1M) */
	uint64_t max_iterations;  /* for-loop iterations and filter items in all (10M) */
	size_t max_call_depth;    /* macro / caller() calls nested in each other (100) */
	double max_seconds;       /* wall-clock time of the render (10 s) */
	/*
	 * strftime_now()'s clock, seconds since the epoch (UTC); 0: the
	 * GM_JINJA_NOW environment variable when set (for reproducible
	 * output), else the current local time.
	 */
	int64_t now;
} gm_jinja_limits;

void gm_jinja_limits_init(gm_jinja_limits *lim);

/* Renders with context (a JSON object or NULL, borrowed), appending to out;
 * nothing is appended when rendering fails.  The default limits. */
int gm_jinja_render(const gm_jinja_template *t, json_object *context, gm_buf *out, gm_error *err);
/* The same with limits lim (NULL: the defaults). */
int gm_jinja_render_ex(const gm_jinja_template *t, json_object *context, const gm_jinja_limits *lim, gm_buf *out,
		       gm_error *err);

#endif
