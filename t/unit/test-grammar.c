/* test-grammar.c - GBNF parsing and matching, JSON Schema to GBNF, token masks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "base/json.h"
#include "engine/generate.h"
#include "text/grammar.h"
#include "text/jsonschema.h"
#include "tap.h"

/* s with control characters escaped, for test names (one line each); a rotating static buffer. */
static const char *esc(const char *s)
{
	static char bufs[4][512];
	static int k;
	char *b = bufs[k++ % 4];
	size_t n = 0;

	for (; *s && n < sizeof(bufs[0]) - 5; s++) {
		if ((unsigned char)*s < 0x20)
			n += (size_t)snprintf(b + n, 5, "\\x%02x", (unsigned char)*s);
		else
			b[n++] = *s;
	}
	b[n] = '\0';
	return b;
}

static gm_grammar *parse(const char *text)
{
	gm_error err = GM_ERROR_INIT;
	gm_grammar *g = NULL;

	if (gm_grammar_parse(text, strlen(text), NULL, &g, &err))
		tap_diag("parse failed: %s", err.msg);
	return g;
}

static int matches(const gm_grammar *g, const char *s)
{
	return g && gm_grammar_match(g, s, strlen(s));
}

/* Every string in yes matches, none in no does. */
static void check(const char *what, const char *gbnf, const char *const *yes, const char *const *no)
{
	gm_grammar *g = parse(gbnf);
	int i;

	ok(g != NULL, "%s: parses", what);
	for (i = 0; yes && yes[i]; i++)
		ok(matches(g, yes[i]), "%s: accepts '%s'", what, esc(yes[i]));
	for (i = 0; no && no[i]; i++)
		ok(g && !matches(g, no[i]), "%s: rejects '%s'", what, esc(no[i]));
	gm_grammar_free(g);
}

static void test_parser(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_grammar *g = NULL;

	check("literal", "root ::= \"ab\" \"c\"", (const char *[]){ "abc", NULL },
	      (const char *[]){ "", "ab", "abcd", "abd", NULL });
	check("alternatives and groups", "root ::= (\"a\" | \"bc\") \"-\" x\nx ::= [0-9]",
	      (const char *[]){ "a-1", "bc-9", NULL }, (const char *[]){ "b-1", "a-", "a-x", NULL });
	check("repetition", "root ::= \"a\"* \"b\"+ \"c\"? \"d\"{2} \"e\"{1,} \"f\"{0,2} \"g\"{1,3}",
	      (const char *[]){ "bddeg", "aabbcddeeeffggg", NULL },
	      (const char *[]){ "bdeg", "bddg", "bddefffg", "bddegggg", "abcddeg ", NULL });
	check("classes", "root ::= [a-c0-9_] [^a-z\\n] .",
	      (const char *[]){ "a5x", "_A\n", "9\xc3\xa9\xe2\x82\xac", NULL },
	      (const char *[]){ "d5x", "aax", "a\nx", "a5", NULL });
	check("escapes", "root ::= \"\\x41\\u00e9\\U0001F600\\t\\\"\\\\\" [\\]\\[]",
	      (const char *[]){ "A\xc3\xa9\xf0\x9f\x98\x80\t\"\\]", "A\xc3\xa9\xf0\x9f\x98\x80\t\"\\[", NULL },
	      (const char *[]){ "A\xc3\xa9\xf0\x9f\x98\x80\t\"\\x", NULL });
	check("comments and lines", "# a grammar\nroot ::= a # first\n  | b\nb ::= \"b\" # the b\na ::= (\n  \"a\"\n)\n",
	      (const char *[]){ "a", "b", NULL }, (const char *[]){ "ab", NULL });
	check("multi-line rules, leading empty alternative, comments inside",
	      "root ::= list\n"
	      "list ::=\n"
	      "  \"[\" sp (\n"
	      "      item # the first\n"
	      "      (\",\" sp item)*\n"
	      "  )? \"]\"\n"
	      "item ::= [^\\]\\x00-\\x1F,\\x7F ]+ sp\n"
	      "# optional space\n"
	      "sp ::= | \" \" | \"\\n\" [ \\t]{0,4}\n",
	      (const char *[]){ "[]", "[ a, b ]", "[x,\n\t\ty]", NULL },
	      (const char *[]){ "[,]", "[a,,b]", "[a  ]", NULL });
	check("empty alternative", "root ::= \"x\" | ", (const char *[]){ "", "x", NULL },
	      (const char *[]){ "xx", NULL });
	check("recursion", "root ::= \"(\" root \")\" | \"\"", (const char *[]){ "", "()", "((()))", NULL },
	      (const char *[]){ "(()", "())", NULL });
	check("utf-8 class ranges", "root ::= [\\u00e0-\\u00ff]+", (const char *[]){ "\xc3\xa9\xc3\xa0", NULL },
	      (const char *[]){ "e", "\xc3\x9f", "\xc3", NULL });
	check("names with dashes", "root ::= my-rule_2\nmy-rule_2 ::= \"z\"", (const char *[]){ "z", NULL }, NULL);

	ok_error(gm_grammar_parse("root ::= x", 10, NULL, &g, &err), &err, GM_EINVAL, "'x' is used but not defined",
		 "undefined rule refused");
	ok_error(gm_grammar_parse("x ::= \"a\"", 9, NULL, &g, &err), &err, GM_EINVAL, "no rule named 'root'",
		 "missing root refused");
	ok_error(gm_grammar_parse("root ::= root \"a\" | \"b\"", 23, NULL, &g, &err), &err, GM_EINVAL,
		 "left-recursive", "left recursion refused");
	ok_error(gm_grammar_parse("root ::= e root \"a\" | \"b\"\ne ::= \"\"", 34, NULL, &g, &err), &err, GM_EINVAL,
		 "left-recursive", "left recursion through an empty rule refused");
	ok_error(gm_grammar_parse("root ::= \"abc", 13, NULL, &g, &err), &err, GM_EINVAL, "unterminated string",
		 "unterminated literal refused");
	ok_error(gm_grammar_parse("root ::= [abc", 13, NULL, &g, &err), &err, GM_EINVAL, "line 1: unterminated",
		 "unterminated class refused");
	ok_error(gm_grammar_parse("root ::= (\"a\"", 13, NULL, &g, &err), &err, GM_EINVAL, "expected ')'",
		 "unbalanced group refused");
	ok_error(gm_grammar_parse("root ::= \"a\"{3,2}", 17, NULL, &g, &err), &err, GM_EINVAL, "n < m",
		 "bad repetition refused");
	ok_error(gm_grammar_parse("root ::= \"a\"{99999}", 19, NULL, &g, &err), &err, GM_EINVAL, "above 65535",
		 "huge repetition refused");
	ok_error(gm_grammar_parse("root ::= <[12]>", 15, NULL, &g, &err), &err, GM_EINVAL, "token references",
		 "token references refused");
	ok_error(gm_grammar_parse("root ::= \"a\"\nroot ::= \"b\"", 25, NULL, &g, &err), &err, GM_EINVAL,
		 "defined twice", "duplicate rule refused");
	ok(gm_grammar_parse("start ::= \"s\"", 13, "start", &g, &err) == 0 && matches(g, "s"), "another root rule");
	gm_grammar_free(g);
	g = NULL;
	{
		/* fuzz-serve-request: an empty set as the grammar's first set did
		 * arithmetic on the ranges' NULL array (UBSan) */
		static const char *const yes[] = { "a", NULL }, *const no[] = { "", "b", NULL };
		static const char *const any[] = { "b", "\xc3\xa9", NULL }, *const none[] = { "", "bb", NULL };

		check("an empty set first", "root ::= [] | \"a\"", yes, no);
		check("an empty negated set first", "root ::= [^]", any, none);
	}
	{
		gm_buf big = GM_BUF_INIT;
		int i;

		gm_buf_adds(&big, "root ::=");
		for (i = 0; i < 25; i++)
			gm_buf_adds(&big, " \"a\"{0,60000}");
		ok_error(gm_grammar_parse(big.buf, big.len, NULL, &g, &err), &err, GM_EINVAL, "too large",
			 "a grammar that expands to too many elements is refused");
		gm_buf_release(&big);
	}
	{
		/* optional repetitions of something that can be empty: deep expansions, bounded */
		const char *deep = "root ::= (\"a\"?){0,500} \"b\"";
		const char *hostile = "root ::= ((\"a\"?){0,5000}){0,5000} \"b\"";

		if (ok(gm_grammar_parse(deep, strlen(deep), NULL, &g, &err) == 0, "a deep grammar parses"))
			ok(matches(g, "aab") && matches(g, "b") && !matches(g, "aac"), "a deep grammar matches");
		gm_grammar_free(g);
		g = NULL;
		if (ok(gm_grammar_parse(hostile, strlen(hostile), NULL, &g, &err) == 0, "a hostile grammar parses"))
			ok(!matches(g, "c"), "a hostile grammar (exponentially many expansions) is cut, not followed");
	}
	gm_grammar_free(g);
}

static void test_state(void)
{
	gm_grammar *g = parse("root ::= \"{\" [a-z\\u00e9]* \"}\"");
	gm_grammar_state *st;

	gm_grammar_state_new(g, &st);
	ok(!gm_grammar_state_can_end(st) && !gm_grammar_state_done(st), "start: cannot end");
	ok(gm_grammar_state_accept(st, "{ab", 3), "accepts a prefix");
	ok(!gm_grammar_state_accept(st, "X", 1), "rejects a wrong byte");
	ok(gm_grammar_state_accept(st, "\xc3", 1), "accepts the first byte of a character in the class");
	ok(!gm_grammar_state_can_end(st), "cannot end inside a character");
	ok(!gm_grammar_state_accept(st, "\xa8", 1), "rejects a continuation that makes U+00E8");
	ok(gm_grammar_state_accept(st, "\xa9}", 2), "accepts the rest of U+00E9 and the end");
	ok(gm_grammar_state_can_end(st) && gm_grammar_state_done(st), "complete and done");
	ok(!gm_grammar_state_accept(st, "}", 1), "nothing after the end");
	gm_grammar_state_reset(st);
	ok(!gm_grammar_state_accept(st, "\xc4", 1), "a lead byte of no character in the class is rejected at once");
	ok(gm_grammar_state_accept(st, "{", 1) && !gm_grammar_state_accept(st, "\xe0", 1) &&
	   !gm_grammar_state_accept(st, "\xf0", 1), "a 3- or 4-byte lead byte cannot start an ASCII character");
	gm_grammar_state_reset(st);
	ok(!gm_grammar_state_accept(st, "{\xff", 2), "invalid UTF-8 rejected");
	ok(gm_grammar_state_accept(st, "{", 1), "state unchanged by a rejection");
	gm_grammar_state_free(st);
	gm_grammar_free(g);
}

static gm_grammar *schema_grammar(const char *schema, gm_error *err, gm_buf *text)
{
	json_object *j = NULL;
	gm_grammar *g = NULL;

	gm_buf_reset(text);
	if (gm_json_parse(schema, strlen(schema), "schema", &j, err))
		return NULL;
	if (gm_json_schema_to_gbnf(j, "", text, err) == 0 && gm_grammar_parse(text->buf, text->len, NULL, &g, err))
		tap_diag("grammar: %s", text->buf);
	json_object_put(j);
	return g;
}

static void schema_case(const char *what, const char *schema, const char *const *yes, const char *const *no)
{
	gm_error err = GM_ERROR_INIT;
	gm_buf text = GM_BUF_INIT;
	gm_grammar *g = schema_grammar(schema, &err, &text);
	int i;

	if (!ok(g != NULL, "schema %s: converts and parses", what))
		tap_diag("%s", err.msg);
	for (i = 0; yes && yes[i]; i++)
		if (!ok(matches(g, yes[i]), "schema %s: accepts %s", what, esc(yes[i])))
			tap_diag("grammar:\n%s", text.buf);
	for (i = 0; no && no[i]; i++)
		ok(g && !matches(g, no[i]), "schema %s: rejects %s", what, esc(no[i]));
	gm_grammar_free(g);
	gm_buf_release(&text);
}

static void refused(const char *schema, const char *fragment)
{
	gm_error err = GM_ERROR_INIT;
	gm_buf text = GM_BUF_INIT;
	json_object *j = NULL;
	int ret;

	if (gm_json_parse(schema, strlen(schema), "schema", &j, &err)) {
		ok(0, "refused: %s parses", schema);
		return;
	}
	ret = gm_json_schema_to_gbnf(j, "", &text, &err);
	ok_error(ret, &err, GM_EINVAL, fragment, "schema %s refused", schema);
	json_object_put(j);
	gm_buf_release(&text);
}

static void test_schema(void)
{
	gm_buf text = GM_BUF_INIT;
	json_object *j;
	gm_error err = GM_ERROR_INIT;
	gm_grammar *g = NULL;

	schema_case("object", "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":4},"
		    "\"age\":{\"type\":\"integer\"},\"ok\":{\"type\":\"boolean\"}},\"required\":[\"name\",\"ok\"],"
		    "\"additionalProperties\":false}",
		    (const char *[]){ "{\"name\":\"ab\",\"ok\":true}", "{ \"name\" : \"abcd\", \"age\": -12,\n  \"ok\": false }",
				      "{\"name\":\"\\u00e9\\n\",\"age\":0,\"ok\":false}", NULL },
		    (const char *[]){ "{\"name\":\"abcde\",\"ok\":true}", "{\"ok\":true}", "{\"name\":\"a\"}",
				      "{\"ok\":true,\"name\":\"a\"}", "{\"name\":\"a\",\"age\":01,\"ok\":true}",
				      "{\"name\":\"a\",\"ok\":true,\"x\":1}", " {\"name\":\"a\",\"ok\":true}",
				      "{\"name\":\"a\",   \"ok\":true}", "{\"name\":\"a\",\"ok\":true}\n", NULL });
	schema_case("optional properties", "{\"properties\":{\"a\":{\"const\":1},\"b\":{\"const\":2},\"c\":{\"const\":3}},"
		    "\"required\":[\"b\"]}",
		    (const char *[]){ "{\"b\":2}", "{\"a\":1,\"b\":2}", "{\"b\":2,\"c\":3}", "{\"a\":1,\"b\":2,\"c\":3}", NULL },
		    (const char *[]){ "{}", "{\"a\":1}", "{\"a\":1,,\"b\":2}", "{,\"b\":2}", "{\"b\":2,}", NULL });
	schema_case("additional properties", "{\"properties\":{\"id\":{\"type\":\"integer\"}},\"additionalProperties\":"
		    "{\"type\":\"string\"}}",
		    (const char *[]){ "{}", "{\"id\":1}", "{\"id\":1,\"x\":\"y\"}", "{\"x\":\"y\",\"i\":\"z\",\"idd\":\"w\"}", NULL },
		    (const char *[]){ "{\"x\":1}", "{\"id\":1,\"id\":\"y\"}", "{\"id\":\"y\"}", NULL });
	schema_case("additional properties, non-ASCII names", "{\"properties\":{\"\xc3\xa9t\xc3\xa9\":{\"const\":1}},"
		    "\"additionalProperties\":{\"const\":2}}",
		    (const char *[]){ "{\"\xc3\xa9t\xc3\xa9\":1}", "{\"\xc3\xa9t\":2}", "{\"\xc3\xa9t\xc3\xa9s\":2}",
				      "{\"\xc3\xa9t\xc3\xa8\":2}", NULL },
		    (const char *[]){ "{\"\xc3\xa9t\xc3\xa9\":2}", NULL });
	schema_case("enum and const", "{\"type\":\"object\",\"properties\":{\"c\":{\"enum\":[\"red\",\"green\",3,null]},"
		    "\"k\":{\"const\":\"v\\\"q\"}},\"required\":[\"c\",\"k\"]}",
		    (const char *[]){ "{\"c\":\"red\",\"k\":\"v\\\"q\"}", "{\"c\":3,\"k\":\"v\\\"q\"}",
				      "{\"c\":null,\"k\":\"v\\\"q\"}", NULL },
		    (const char *[]){ "{\"c\":\"blue\",\"k\":\"v\\\"q\"}", "{\"c\":\"red\",\"k\":\"v\"}", NULL });
	schema_case("enum filtered by type", "{\"type\":\"string\",\"enum\":[\"a\",1,null,\"b\"]}",
		    (const char *[]){ "\"a\"", "\"b\"", NULL }, (const char *[]){ "1", "null", NULL });
	schema_case("const null", "{\"const\":null}", (const char *[]){ "null", NULL }, (const char *[]){ "1", NULL });
	schema_case("type union", "{\"type\":[\"string\",\"null\"],\"maxLength\":2}",
		    (const char *[]){ "\"ab\"", "null", NULL }, (const char *[]){ "\"abc\"", "1", NULL });
	schema_case("arrays", "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2,\"maxItems\":3}",
		    (const char *[]){ "[1,2]", "[ 1 , 2 , 3 ]", NULL },
		    (const char *[]){ "[]", "[1]", "[1,2,3,4]", "[1,,2]", "[1,2,]", NULL });
	schema_case("array without bounds", "{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\"]}}",
		    (const char *[]){ "[]", "[\"a\"]", "[\"a\",\"b\",\"a\",\"b\"]", NULL },
		    (const char *[]){ "[\"c\"]", "[,]", NULL });
	schema_case("prefixItems", "{\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"boolean\"}],\"items\":false}",
		    (const char *[]){ "[]", "[\"x\"]", "[\"x\",true]", NULL },
		    (const char *[]){ "[true]", "[\"x\",true,1]", NULL });
	schema_case("prefixItems and items", "{\"prefixItems\":[{\"const\":0}],\"items\":{\"const\":1},\"minItems\":2}",
		    (const char *[]){ "[0,1]", "[0,1,1,1]", NULL }, (const char *[]){ "[0]", "[1,1]", "[0,0]", NULL });
	schema_case("integer range", "{\"type\":\"integer\",\"minimum\":-15,\"maximum\":123}",
		    (const char *[]){ "-15", "-9", "-1", "0", "7", "10", "99", "100", "119", "123", NULL },
		    (const char *[]){ "-16", "-0", "124", "130", "200", "007", "1000", NULL });
	schema_case("integer minimum only", "{\"type\":\"integer\",\"minimum\":18}",
		    (const char *[]){ "18", "19", "99", "100", "123456789012345678", NULL },
		    (const char *[]){ "17", "0", "-1", "1234567890123456789", NULL });
	schema_case("integer maximum only", "{\"type\":\"integer\",\"maximum\":-3}",
		    (const char *[]){ "-3", "-4", "-1000", NULL }, (const char *[]){ "-2", "0", "5", NULL });
	schema_case("number", "{\"type\":\"number\"}", (const char *[]){ "0", "-1.5", "3e10", "2.25E-3", NULL },
		    (const char *[]){ "01", ".5", "1.", "+1", NULL });
	schema_case("strings", "{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}",
		    (const char *[]){ "\"ab\"", "\"a\\\"c\"", "\"\\u00e9\\n\"", "\"\xc3\xa9\xc3\xa9\"", NULL },
		    (const char *[]){ "\"a\"", "\"abcd\"", "\"a\nb\"", "\"\\ud800x\"", "\"a\\qb\"", NULL });
	schema_case("pattern", "{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-\\\\d{3}(x|yz)?$\"}",
		    (const char *[]){ "\"AB-123\"", "\"ZZ-000x\"", "\"QQ-999yz\"", NULL },
		    (const char *[]){ "\"ab-123\"", "\"AB-12\"", "\"AB-123y\"", "\"AB-123 \"", NULL });
	schema_case("pattern escapes", "{\"pattern\":\"^a\\\\.b[^a-z]\\\"\\\\\\\\$\"}",
		    (const char *[]){ "\"a.bX\\\"\\\\\"", "\"a.b\\n\\\"\\\\\"", NULL },
		    (const char *[]){ "\"aXbX\\\"\\\\\"", "\"a.bx\\\"\\\\\"", NULL });
	schema_case("unanchored pattern", "{\"pattern\":\"ab\"}", (const char *[]){ "\"ab\"", "\"xxabyy\"", NULL },
		    (const char *[]){ "\"a b\"", NULL });
	schema_case("formats", "{\"type\":\"array\",\"prefixItems\":[{\"format\":\"date\"},{\"format\":\"time\"},"
		    "{\"format\":\"uuid\"},{\"format\":\"email\"}],\"items\":false,\"minItems\":4}",
		    (const char *[]){ "[\"2024-02-28\",\"23:59:01Z\",\"123e4567-e89b-12d3-a456-426614174000\",\"a.b@c.org\"]",
				      "[\"1999-12-31\",\"00:00:00.5+05:30\",\"00000000-0000-0000-0000-000000000000\",\"x@y.z\"]",
				      NULL },
		    (const char *[]){ "[\"2024-02-30\",\"23:59:01Z\",\"123e4567-e89b-12d3-a456-426614174000\",\"a@c.org\"]",
				      "[\"2024-02-28\",\"24:00:00Z\",\"123e4567-e89b-12d3-a456-426614174000\",\"a@c.org\"]",
				      "[\"2024-02-28\",\"23:59:01Z\",\"123e4567e89b-12d3-a456-426614174000\",\"a@c.org\"]",
				      "[\"2024-02-28\",\"23:59:01Z\",\"123e4567-e89b-12d3-a456-426614174000\",\"ac.org\"]",
				      NULL });
	schema_case("anyOf", "{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"array\",\"items\":{\"type\":\"null\"}}]}",
		    (const char *[]){ "5", "[null,null]", NULL }, (const char *[]){ "\"5\"", "[1]", NULL });
	schema_case("$ref recursion", "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
		    "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"},\"maxItems\":2}},"
		    "\"required\":[\"v\"],\"additionalProperties\":false}},\"$ref\":\"#/$defs/node\"}",
		    (const char *[]){ "{\"v\":1}", "{\"v\":1,\"kids\":[{\"v\":2},{\"v\":3,\"kids\":[{\"v\":4,\"kids\":[]}]}]}",
				      NULL },
		    (const char *[]){ "{\"v\":1,\"kids\":[{}]}", "{\"v\":1,\"kids\":[{\"v\":2},{\"v\":2},{\"v\":2}]}", NULL });
	schema_case("root recursion", "{\"type\":\"array\",\"items\":{\"$ref\":\"#\"},\"maxItems\":2}",
		    (const char *[]){ "[]", "[[],[[]]]", NULL }, (const char *[]){ "[1]", "[[],[],[]]", NULL });
	schema_case("any value", "{}", (const char *[]){ "{\"a\":[1,\"x\",null,{}]}", "3", NULL },
		    (const char *[]){ "{a:1}", NULL });

	refused("{\"type\":\"string\",\"not\":{}}", "keyword 'not' is not supported");
	refused("{\"allOf\":[{}]}", "keyword 'allOf' is not supported");
	refused("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\",\"exclusiveMinimum\":0}}}",
		"at properties.a: keyword 'exclusiveMinimum' is not supported");
	refused("{\"type\":\"number\",\"minimum\":0}", "'minimum' is supported for integers only");
	refused("{\"format\":\"date-time\"}", "format 'date-time' is not supported");
	refused("{\"$ref\":\"http://x/y\"}", "not a reference into this schema");
	refused("{\"$ref\":\"#/$defs/missing\"}", "not a reference into this schema");
	refused("{\"pattern\":\"(?=a)\"}", "lookaround");
	refused("{\"pattern\":\"\\\\bx\"}", "'\\b' is not supported");
	refused("{\"type\":\"string\",\"pattern\":\"a\",\"maxLength\":3}", "pattern' together with minLength");
	refused("{\"type\":\"widget\"}", "type 'widget'");
	refused("{\"type\":\"integer\",\"enum\":[\"a\"]}", "no 'enum' value is of the schema's type");
	refused("{\"items\":false,\"minItems\":1}", "minItems asks for more");
	refused("{\"$ref\":\"#/$defs/a\",\"type\":\"object\",\"$defs\":{\"a\":{}}}", "'type' beside '$ref'");

	/* a prefix: the rules embed in a larger grammar */
	gm_buf_adds(&text, "root ::= \"<call>\" fn-root \"</call>\"\n");
	j = json_tokener_parse("{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\"}},\"required\":[\"x\"]}");
	ok(gm_json_schema_to_gbnf(j, "fn-", &text, &err) == 0, "schema with a prefix");
	ok(!strstr(text.buf + strlen("root ::= \"<call>\" fn-root \"</call>\"\n"), "\nroot") &&
	   gm_grammar_parse(text.buf, text.len, NULL, &g, &err) == 0 && matches(g, "<call>{\"x\":5}</call>"),
	   "prefixed rules embed in a larger grammar");
	json_object_put(j);
	gm_grammar_free(g);
	gm_buf_reset(&text);
	gm_json_object_gbnf("", &text);
	g = NULL;
	ok(gm_grammar_parse(text.buf, text.len, NULL, &g, &err) == 0 && matches(g, "{\"a\":[1,{\"b\":null}]}") &&
	   !matches(g, "[1]") && !matches(g, "\"x\""), "json_object grammar");
	gm_grammar_free(g);
	gm_buf_release(&text);
}

/* The mask and the one-token check agree on every token, at each prefix of text. */
static void mask_agrees(gm_tokenizer *tok, const gm_grammar_vocab *v, const char *gbnf, const char *text,
			const char *what)
{
	gm_grammar *g = parse(gbnf);
	gm_grammar_state *st;
	size_t n = gm_grammar_vocab_size(v), i, k, bad = 0, total = 0;
	unsigned char *allowed = malloc(n);
	gm_buf b = GM_BUF_INIT;
	gm_error err = GM_ERROR_INIT;

	gm_grammar_state_new(g, &st);
	for (k = 0; k <= strlen(text); k++) {
		gm_grammar_state_reset(st);
		if (!gm_grammar_state_accept(st, text, k)) {
			ok(0, "%s: the text is accepted up to %zu", what, k);
			break;
		}
		total += gm_grammar_state_mask(st, v, allowed);
		for (i = 0; i < n; i++) {
			int one = gm_grammar_state_allows(st, v, (int32_t)i), by_bytes;

			/* and the token's bytes fed directly */
			gm_buf_reset(&b);
			gm_tokenizer_token_bytes(tok, (int32_t)i, &b, &err);
			by_bytes = b.len && !gm_tokenizer_is_special(tok, (int32_t)i) &&
				   gm_grammar_state_accept(st, b.buf, b.len);
			if (by_bytes) {
				gm_grammar_state_reset(st);
				gm_grammar_state_accept(st, text, k);
			}
			if (one != allowed[i] || one != by_bytes) {
				if (bad++ < 3)
					tap_diag("%s at %zu: token %zu '%s': mask %d, check %d, bytes %d", what, k, i,
						 b.buf, allowed[i], one, by_bytes);
			}
		}
	}
	ok(!bad, "%s: the mask, the one-token check and the bytes agree on every token (%zu allowed in all)", what,
	   total);
	gm_buf_release(&b);
	free(allowed);
	gm_grammar_state_free(st);
	gm_grammar_free(g);
}

/* A "model" that always prefers token `favorite`, then `second`. */
struct fake {
	int32_t favorite, second;
};

static void fake_logits(const struct fake *f, float *logits, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		logits[i] = (float)(i % 7) * 0.01f;
	logits[f->favorite] = 10;
	logits[f->second] = 9;
}

static int collect(void *ctx, const char *text, size_t len)
{
	gm_buf_add(ctx, text, len);
	return 0;
}

static void test_masks(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_tokenizer *tok = NULL;
	gm_grammar_vocab *v = NULL;
	char *path = gm_path_join(tap_srcdir(), "contrib/models/pocket-qwen3");
	gm_grammar *g;
	gm_generate_opts o;
	gm_gen_seq *gs;
	gm_buf text = GM_BUF_INIT;
	float *logits;
	struct fake fk;
	int32_t id, prompt = 0, n_tok, eos = 4093, r, steps;
	size_t n;

	if (gm_tokenizer_load(path, &tok, &err)) {
		ok(0, "the pocket tokenizer loads: %s", err.msg);
		free(path);
		return;
	}
	free(path);
	n = gm_tokenizer_n_tokens(tok);
	ok(gm_grammar_vocab_new(tok, 4096, &v, &err) == 0 && gm_grammar_vocab_size(v) == 4096, "vocabulary trie");
	mask_agrees(tok, v, "root ::= \"{\" [ ]? \"\\\"\" [a-z\u00e0-\u00ff]{0,6} \"\\\":\" ( [0-9]+ | \"null\" ) \"}\"",
		    "{ \"ab\xc3\xa9\":12}", "JSON-like grammar");
	mask_agrees(tok, v, "root ::= [^\"]* \"\\n\"", "The day is\xe2\x80\x99", "negated class, UTF-8");

	/* generation: the favorite token is refused; the grammar decides */
	g = parse("root ::= \"yes\" | \"no\"");
	logits = malloc(4096 * sizeof(*logits));
	n_tok = gm_tokenizer_token_id(tok, "yes");
	fk.favorite = gm_tokenizer_token_id(tok, "the") >= 0 ? gm_tokenizer_token_id(tok, "the") : 100;
	fk.second = n_tok >= 0 ? n_tok : gm_tokenizer_token_id(tok, "y");
	gm_generate_opts_init(&o, NULL);
	o.eos_ids[0] = eos;
	o.n_eos = 1;
	o.grammar = g;
	o.grammar_vocab = v;
	o.on_text = collect;
	o.cb_ctx = &text;
	ok(gm_gen_seq_new(tok, 4096, &o, &prompt, 1, &gs, &err) == 0, "a constrained sequence");
	r = 0;
	for (steps = 0; steps < 10 && !r; steps++) {
		fake_logits(&fk, logits, 4096);
		logits[eos] = 20; /* EOS first whenever the grammar allows it */
		r = gm_gen_seq_next(gs, logits, &id, &err);
	}
	ok(r == GM_STOP_EOS && id == eos && (!strcmp(text.buf, "yes") || !strcmp(text.buf, "no")),
	   "greedy under a grammar: EOS refused until the text is complete (got '%s', %d)", text.buf, r);
	gm_gen_seq_free(gs);

	/* no EOS id: the sequence ends when the grammar is complete */
	gm_buf_reset(&text);
	o.n_eos = 0;
	ok(gm_gen_seq_new(tok, 4096, &o, &prompt, 1, &gs, &err) == 0, "a constrained sequence without EOS");
	r = 0;
	for (steps = 0; steps < 10 && !r; steps++) {
		fake_logits(&fk, logits, 4096);
		r = gm_gen_seq_next(gs, logits, &id, &err);
	}
	ok(r == GM_STOP_EOS && id == -1 && (!strcmp(text.buf, "yes") || !strcmp(text.buf, "no")),
	   "a complete grammar ends the sequence (got '%s')", text.buf);
	gm_gen_seq_free(gs);

	/* sampling: every seed gives a text of the grammar */
	{
		gm_sampler_params sp;
		gm_sampler *s;
		int seed, good = 0;

		gm_sampler_params_init(&sp);
		sp.temperature = 1.5;
		sp.top_k = 50;
		o.n_eos = 1;
		for (seed = 0; seed < 20; seed++) {
			sp.seed = (uint64_t)seed;
			gm_sampler_new(&sp, 4096, &s, &err);
			o.sampler = s;
			gm_buf_reset(&text);
			gm_gen_seq_new(tok, 4096, &o, &prompt, 1, &gs, &err);
			r = 0;
			for (steps = 0; steps < 10 && !r; steps++) {
				fake_logits(&fk, logits, 4096);
				r = gm_gen_seq_next(gs, logits, &id, &err);
			}
			good += r == GM_STOP_EOS && (!strcmp(text.buf, "yes") || !strcmp(text.buf, "no"));
			gm_gen_seq_free(gs);
			gm_sampler_free(s);
		}
		ok(good == 20, "sampling under a grammar: 20 seeds, %d texts of the grammar", good);
		o.sampler = NULL;
	}
	(void)n;
	gm_grammar_free(g);

	/* special tokens (the pocket's <think> 4094, </think> 4095, <|im_end|> 4093): where a literal spells them */
	{
		unsigned char *allowed = malloc(4096);
		gm_grammar_state *st;
		size_t na;

		g = parse("root ::= \"<think>\" [a-z]{1,3} \"</think>\"");
		gm_grammar_state_new(g, &st);
		na = gm_grammar_state_mask(st, v, allowed);
		ok(allowed[4094] && !allowed[4095] && gm_grammar_state_allows(st, v, 4094) &&
		   !gm_grammar_state_allows(st, v, 4095) && na > 1,
		   "a literal that is a special token's content allows the token (and its text: %zu tokens)", na);
		ok(gm_grammar_state_accept_token(st, v, 4094) && !gm_grammar_state_allows(st, v, 4094) &&
		   gm_grammar_state_accept(st, "ab", 2), "accepting the special token accepts its content");
		gm_grammar_state_mask(st, v, allowed);
		ok(allowed[4095] && gm_grammar_state_accept_token(st, v, 4095) && gm_grammar_state_can_end(st),
		   "the closing literal: the other special token");
		gm_grammar_state_reset(st);
		gm_grammar_state_set_special(st, 0);
		gm_grammar_state_mask(st, v, allowed);
		ok(!allowed[4094] && !gm_grammar_state_allows(st, v, 4094) && !gm_grammar_state_accept_token(st, v, 4094),
		   "special tokens off (skip_special): never allowed");
		gm_grammar_state_free(st);
		gm_grammar_free(g);

		g = parse("root ::= \"<think>x\" | \"\\\"\" [^\"]* \"\\\"\"");
		gm_grammar_state_new(g, &st);
		gm_grammar_state_mask(st, v, allowed);
		ok(!allowed[4094] && !gm_grammar_state_allows(st, v, 4094),
		   "a longer literal that begins with the content: not the special token");
		gm_grammar_state_accept(st, "\"", 1);
		gm_grammar_state_mask(st, v, allowed);
		ok(!allowed[4094] && !allowed[4093] && gm_grammar_state_accept(st, "<think>", 7),
		   "text the grammar merely allows (a string) never lets a special token in");
		gm_grammar_state_free(st);
		gm_grammar_free(g);
		free(allowed);

		/* generation: the model's favorite special token is taken where spelled, EOS only at the end */
		g = parse("root ::= \"<think>\" \"a\" \"<|im_end|>\" \"b\"");
		fk.favorite = 4094;
		fk.second = 4093;
		o.grammar = g;
		o.sampler = NULL;
		o.n_eos = 1;
		o.skip_special = 0;
		gm_buf_reset(&text);
		ok(gm_gen_seq_new(tok, 4096, &o, &prompt, 1, &gs, &err) == 0, "a constrained sequence, specials kept");
		r = 0;
		for (steps = 0; steps < 20 && !r; steps++) {
			fake_logits(&fk, logits, 4096);
			r = gm_gen_seq_next(gs, logits, &id, &err);
			if (steps == 0)
				ok(id == 4094, "the special token the literal spells is chosen (%d)", id);
		}
		ok(r == GM_STOP_EOS && !strcmp(text.buf, "<think>a<|im_end|>b"),
		   "EOS spelled by a literal is not the end: its text is written (got '%s', %d)", text.buf, r);
		gm_gen_seq_free(gs);
		gm_grammar_free(g);
	}
	free(logits);
	gm_buf_release(&text);
	gm_grammar_vocab_free(v);
	gm_tokenizer_free(tok);
}

static void test_top_n(void)
{
	float l[8] = { 1, 3, -INFINITY, 3, 2, NAN, 0.5f, 2 };
	int32_t ids[8];
	size_t n = gm_sample_top_n(l, 8, ids, 4);

	ok(n == 4 && ids[0] == 1 && ids[1] == 3 && ids[2] == 4 && ids[3] == 7, "top-n: descending, ties by id");
	n = gm_sample_top_n(l, 8, ids, 8);
	ok(n == 6 && ids[4] == 0 && ids[5] == 6, "top-n: -inf and NaN left out");
	ok(ids[0] == gm_sample_argmax(l, 8), "top-n starts with the argmax");
}

int main(void)
{
	test_top_n();
	test_parser();
	test_state();
	test_schema();
	test_masks();
	return tap_done();
}
