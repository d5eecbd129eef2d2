/*
 * jsonschema.h - JSON Schema to GBNF (grammar.h), for structured output.
 *
 * The rules written all begin with a prefix the caller chooses, and the
 * entry rule is "<prefix>root", so that a schema's grammar can be embedded
 * in a larger one (a tool call's arguments).
 *
 * Supported keywords: type (a name or a list of names), properties,
 * required, additionalProperties, enum, const, items, prefixItems,
 * minItems, maxItems, minLength, maxLength, minimum and maximum (for
 * integers), pattern (the regex subset below), anyOf, oneOf, $ref to "#"
 * or "#/..." (with $defs or definitions; recursion works), format date,
 * time, uuid and email; the annotations $schema, $id, $comment, title,
 * description, default, examples, deprecated, readOnly, writeOnly are
 * ignored.  Any other keyword is refused (GM_EINVAL naming it), so that
 * output never silently breaks a constraint.
 *
 * What the grammar produces, deliberately narrower than the schema where
 * that keeps a sampled answer short and valid:
 *   - whitespace: none at the start or end; between tokens at most one
 *     space, or one newline and up to 20 spaces or tabs (a model that
 *     keeps choosing spaces cannot loop);
 *   - properties in the order they are declared, required ones always,
 *     optional ones or not; no property beyond them unless
 *     additionalProperties is true or a schema (then any number, after
 *     the declared ones, with keys that are not declared names);
 *   - integers of at most 18 digits; numbers of at most 16 integer
 *     digits, 15 decimals and a 3-digit exponent;
 *   - oneOf is treated as anyOf (write branches that cannot both match);
 *   - date: years 1000-9999, no February 29; time: RFC 3339 full-time
 *     (with Z or an offset); email: dot-separated ASCII words @ a domain
 *     of 2-4 ASCII labels;
 *   - string escapes: \uXXXX for surrogates is never produced.
 * Patterns: literal characters, ., [...] and [^...] with ranges, \d \w \s
 * \D \W \S (ASCII; the negated forms stay within ASCII), escapes (\. \\ \n
 * \t \xHH \uHHHH...), groups (...) and (?:...), |, and the quantifiers * +
 * ? {m} {m,} {m,n} (a lazy ? after them is ignored).  A pattern is anchored
 * with ^ and $; a side without its anchor accepts any characters there
 * (JSON Schema patterns search, they do not match whole strings).
 * Lookaround, backreferences and \b are refused.
 */
#ifndef GM_JSONSCHEMA_H
#define GM_JSONSCHEMA_H

#include <json-c/json.h>

#include "base/buf.h"
#include "base/error.h"

/*
 * Appends to out the GBNF rules for schema (a JSON object or a boolean),
 * entry rule "<rule_prefix>root" (rule_prefix may be ""; letters, digits,
 * '-' and '_').  GM_EINVAL naming the keyword for what is not supported;
 * out may then hold part of the rules.
 */
int gm_json_schema_to_gbnf(json_object *schema, const char *rule_prefix, gm_buf *out, gm_error *err);

/* Appends the rules for any JSON object (response_format json_object), entry "<rule_prefix>root". */
void gm_json_object_gbnf(const char *rule_prefix, gm_buf *out);

#endif
