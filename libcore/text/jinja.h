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
 * sees its keys as variables.  What the chat templates of released models
 * use is supported (t/fixtures/chat-templates: 66 templates rendered
 * byte-identical to jinja2):
 *   - {{ }}, {% %}, {# #}, whitespace control (-, +), {% raw %};
 *   - if/elif/else, for (unpacking, "if" filter, else, loop.index, index0,
 *     revindex, revindex0, first, last, length, previtem, nextitem, cycle),
 *     break/continue, set (also "a, b =", block set, filtered block set,
 *     namespace attributes), with, filter blocks, macro (defaults, varargs,
 *     kwargs, caller) and call blocks (with caller parameters),
 *     transformers' generation;
 *   - literals (strings, ints, floats, true/false/none, lists, tuples,
 *     dicts, also with number keys), attribute/item access, slicing with
 *     steps, calls with keyword arguments, + - * / // % ** ~, comparisons
 *     (chained), in / not in, and/or/not, conditional expressions;
 *   - filters: abs attr batch capitalize center count d default dictsort e
 *     escape first float groupby indent int items join last length list
 *     lower map max min reject rejectattr replace reverse safe select
 *     selectattr sort string sum title tojson trim unique upper wordcount,
 *     with jinja2's arguments (attribute= with dots, case_sensitive=...);
 *     |safe makes markupsafe's Markup, which escapes what is added to it;
 *   - tests: boolean callable defined divisibleby eq/equalto/== even false
 *     float ge gt in integer iterable le lower lt mapping ne none number odd
 *     sequence string true undefined upper;
 *   - string methods startswith endswith strip lstrip rstrip split rsplit
 *     splitlines replace format upper lower title capitalize find rfind
 *     count join isspace isdigit isalpha isalnum; dict methods items keys
 *     values get; no method that modifies a list or dict (append, update,
 *     pop...), which transformers' ImmutableSandboxedEnvironment refuses too;
 *   - globals raise_exception, namespace, range, dict, strftime_now.
 * Anything else (include, import, extends, block, recursive loops, '%'
 * formatting, other filters, tests and methods) is refused with an error
 * naming the construct and its line: tags when parsed, filters, tests and
 * methods when used (as jinja2 3 does for filters inside conditionals).
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
 * Known differences from Python: tuples compare equal to lists; any
 * 2-tuple answers .grouper and .list (groupby's namedtuple); a macro accepts
 * extra arguments (in varargs and kwargs) even when its body does not use
 * them; case mappings are one-to-one (no "ß" -> "SS"); a namespace attribute
 * set to an undefined value holds none; str.format takes no format specs.
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
 * error (GM_EINVAL) naming the limit ("...: line 3: string longer than the
 * 8 MiB limit") instead of exhausting memory or time.
 * The defaults (gm_jinja_limits_init) are far above what any released chat
 * template needs for a long conversation.
 */
typedef struct gm_jinja_limits {
	size_t max_output;        /* bytes of rendered text, also inside set blocks and macros (16 MiB) */
	size_t max_string;        /* bytes of any one string an expression makes (8 MiB); the context's
				     own strings (message contents) are not limited */
	size_t max_list;          /* items of any one list or dict an expression makes (100k) */
	uint64_t max_iterations;  /* steps in all: for-loop iterations, items filters and range() go
				     through or make, macro calls (10M) */
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
