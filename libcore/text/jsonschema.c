/* jsonschema.c - JSON Schema to GBNF (see jsonschema.h). */
#include "text/jsonschema.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64
#define MAX_INT_DIGITS 18

enum prim {
	P_WS, P_CHAR, P_STRING, P_NUMBER, P_INTEGER, P_BOOLEAN, P_NULL, P_VALUE, P_OBJECT, P_ARRAY, P_KCHAR, N_PRIM
};

static const char *const prim_names[N_PRIM] = {
	"ws", "char", "string", "number", "integer", "boolean", "null", "value", "object", "array", "kchar"
};

typedef struct conv {
	json_object *root;
	const char *prefix;
	gm_buf *out;
	gm_error *err;
	int n_gen;                 /* generated rule names */
	int have[N_PRIM];
	char **ref_keys, **ref_rules;
	size_t n_refs;
	int depth;
	gm_buf path;               /* where in the schema, for messages */
} conv;

static int refuse(conv *c, const char *fmt, const char *a, const char *b)
{
	char msg[512];

	snprintf(msg, sizeof(msg), fmt, a, b ? b : "");
	return gm_error_set(c->err, GM_EINVAL, "JSON Schema%s%s: %s", c->path.len ? " at " : "",
			    c->path.len ? c->path.buf : "", msg);
}

/* A GBNF string literal for bytes s[0..len). */
static void lit(gm_buf *b, const char *s, size_t len)
{
	size_t i;

	gm_buf_addch(b, '"');
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\') {
			gm_buf_addch(b, '\\');
			gm_buf_addch(b, ch);
		} else if (ch == '\n') {
			gm_buf_adds(b, "\\n");
		} else if (ch == '\r') {
			gm_buf_adds(b, "\\r");
		} else if (ch == '\t') {
			gm_buf_adds(b, "\\t");
		} else if (ch < 0x20 || ch == 0x7f) {
			gm_buf_addf(b, "\\x%02x", ch);
		} else {
			gm_buf_addch(b, ch);
		}
	}
	gm_buf_addch(b, '"');
}

static void lits(gm_buf *b, const char *s)
{
	lit(b, s, strlen(s));
}

/* The name of primitive p, its rules written on first use. */
static const char *prim(conv *c, enum prim p, gm_buf *name)
{
	const char *P = c->prefix;

	gm_buf_reset(name);
	gm_buf_addf(name, "%s%s", P, prim_names[p]);
	if (c->have[p])
		return name->buf;
	c->have[p] = 1;
	switch (p) {
	case P_WS:
		gm_buf_addf(c->out, "%sws ::= ( \" \" | \"\\n\" [ \\t]{0,20} )?\n", P);
		break;
	case P_CHAR:
		/* \u escapes of surrogates are left out: a pair would count as two
		 * characters here and one in the parsed string (minLength) */
		gm_buf_addf(c->out, "%schar ::= [^\"\\\\\\x00-\\x1f] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" ( [0-9a-cA-CeEfF] "
			    "[0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} ) )\n", P);
		break;
	case P_KCHAR:
		/* characters of keys that must differ from declared names: no escapes */
		gm_buf_addf(c->out, "%skchar ::= [^\"\\\\\\x00-\\x1f]\n", P);
		break;
	case P_STRING:
		gm_buf_addf(c->out, "%sstring ::= \"\\\"\" %schar* \"\\\"\"\n", P, P);
		prim(c, P_CHAR, name);
		break;
	case P_NUMBER:
		gm_buf_addf(c->out, "%snumber ::= \"-\"? ( \"0\" | [1-9] [0-9]{0,15} ) ( \".\" [0-9]{1,15} )? "
			    "( [eE] [-+]? [0-9]{1,3} )?\n", P);
		break;
	case P_INTEGER:
		gm_buf_addf(c->out, "%sinteger ::= \"-\"? ( \"0\" | [1-9] [0-9]{0,%d} )\n", P, MAX_INT_DIGITS - 1);
		break;
	case P_BOOLEAN:
		gm_buf_addf(c->out, "%sboolean ::= \"true\" | \"false\"\n", P);
		break;
	case P_NULL:
		gm_buf_addf(c->out, "%snull ::= \"null\"\n", P);
		break;
	case P_VALUE:
		gm_buf_addf(c->out, "%svalue ::= %sobject | %sarray | %sstring | %snumber | %sboolean | %snull\n",
			    P, P, P, P, P, P, P);
		prim(c, P_OBJECT, name);
		prim(c, P_ARRAY, name);
		prim(c, P_STRING, name);
		prim(c, P_NUMBER, name);
		prim(c, P_BOOLEAN, name);
		prim(c, P_NULL, name);
		break;
	case P_OBJECT:
		gm_buf_addf(c->out, "%sobject ::= \"{\" %sws ( %sstring %sws \":\" %sws %svalue %sws ( \",\" %sws "
			    "%sstring %sws \":\" %sws %svalue %sws )* )? \"}\"\n", P, P, P, P, P, P, P, P, P, P, P, P, P);
		prim(c, P_WS, name);
		prim(c, P_STRING, name);
		prim(c, P_VALUE, name);
		break;
	case P_ARRAY:
		gm_buf_addf(c->out, "%sarray ::= \"[\" %sws ( %svalue %sws ( \",\" %sws %svalue %sws )* )? \"]\"\n",
			    P, P, P, P, P, P, P);
		prim(c, P_WS, name);
		prim(c, P_VALUE, name);
		break;
	default:
		break;
	}
	gm_buf_reset(name);
	gm_buf_addf(name, "%s%s", P, prim_names[p]);
	return name->buf;
}

/* Appends primitive p's rule name to expr. */
static void add_prim(conv *c, gm_buf *expr, enum prim p)
{
	gm_buf name = GM_BUF_INIT;

	gm_buf_adds(expr, prim(c, p, &name));
	gm_buf_release(&name);
}

/* A new rule name in *name. */
static void gen_name(conv *c, gm_buf *name, const char *what)
{
	gm_buf_reset(name);
	gm_buf_addf(name, "%s%s-%d", c->prefix, what, ++c->n_gen);
}

static void emit_rule(conv *c, const char *name, const char *body)
{
	gm_buf_addf(c->out, "%s ::= %s\n", name, body);
}

static int gen(conv *c, json_object *s, gm_buf *expr);

/* ---------------------------------------------------------------- keywords */

static const char *const known_keywords[] = {
	"type", "properties", "required", "additionalProperties", "enum", "const", "items", "prefixItems",
	"minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum", "pattern", "anyOf", "oneOf",
	"$ref", "$defs", "definitions", "format",
	/* annotations */
	"$schema", "$id", "$comment", "title", "description", "default", "examples", "deprecated", "readOnly",
	"writeOnly", NULL
};

static int is_annotation(const char *k)
{
	static const char *const a[] = { "$schema", "$id", "$comment", "title", "description", "default",
					 "examples", "deprecated", "readOnly", "writeOnly", "$defs", "definitions",
					 NULL };
	int i;

	for (i = 0; a[i]; i++)
		if (!strcmp(a[i], k))
			return 1;
	return 0;
}

static int check_keywords(conv *c, json_object *s)
{
	json_object_object_foreach(s, k, v) {
		int i, found = 0;

		(void)v;
		for (i = 0; known_keywords[i] && !found; i++)
			found = !strcmp(known_keywords[i], k);
		if (!found)
			return refuse(c, "keyword '%s' is not supported%s", k, NULL);
	}
	return 0;
}

static json_object *kw(json_object *s, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(s, k, &v) ? v : NULL;
}

/* A non-negative integer keyword; -1 when absent. */
static int get_count(conv *c, json_object *s, const char *k, long *out)
{
	json_object *v = kw(s, k);
	double d;

	*out = -1;
	if (!v)
		return 0;
	if (json_object_is_type(v, json_type_int)) {
		int64_t i = json_object_get_int64(v);

		if (i < 0 || i > 65535)
			return refuse(c, "'%s' must be from 0 to 65535%s", k, NULL);
		*out = (long)i;
		return 0;
	}
	d = json_object_is_type(v, json_type_double) ? json_object_get_double(v) : -1;
	if (d >= 0 && d <= 65535 && d == floor(d)) {
		*out = (long)d;
		return 0;
	}
	return refuse(c, "'%s' must be a non-negative integer (at most 65535)%s", k, NULL);
}

static void path_push(conv *c, const char *seg, size_t *mark)
{
	*mark = c->path.len;
	if (c->path.len)
		gm_buf_addch(&c->path, '.');
	gm_buf_adds(&c->path, seg);
}

static void path_pop(conv *c, size_t mark)
{
	c->path.len = mark;
	c->path.buf[mark] = '\0';
}

/* gen() of sub-schema s, with seg added to the path. */
static int gen_at(conv *c, json_object *s, const char *seg, gm_buf *expr)
{
	size_t mark;
	int ret;

	path_push(c, seg, &mark);
	ret = gen(c, s, expr);
	path_pop(c, mark);
	return ret;
}

/* A rule for sub-schema s; its name in *name. */
static int gen_rule(conv *c, json_object *s, const char *seg, gm_buf *name)
{
	gm_buf body = GM_BUF_INIT;
	int ret = gen_at(c, s, seg, &body);

	if (!ret) {
		gen_name(c, name, "r");
		emit_rule(c, name->buf, body.buf);
	}
	gm_buf_release(&body);
	return ret;
}

/* ---------------------------------------------------------------- $ref */

/* The JSON pointer ref ("#", "#/a/b") resolved in the root schema; NULL when not found. */
static json_object *resolve(conv *c, const char *ref)
{
	json_object *cur = c->root;
	const char *p;

	if (ref[0] != '#')
		return NULL;
	p = ref + 1;
	if (!*p)
		return cur;
	if (*p != '/')
		return NULL;
	while (*p == '/') {
		gm_buf seg = GM_BUF_INIT;
		json_object *next = NULL;

		p++;
		while (*p && *p != '/') {
			if (p[0] == '~' && p[1] == '0') {
				gm_buf_addch(&seg, '~');
				p += 2;
			} else if (p[0] == '~' && p[1] == '1') {
				gm_buf_addch(&seg, '/');
				p += 2;
			} else {
				gm_buf_addch(&seg, *p++);
			}
		}
		if (json_object_is_type(cur, json_type_object)) {
			json_object_object_get_ex(cur, seg.buf, &next);
		} else if (json_object_is_type(cur, json_type_array)) {
			char *end;
			long i = strtol(seg.buf, &end, 10);

			if (seg.len && !*end && i >= 0 && (size_t)i < json_object_array_length(cur))
				next = json_object_array_get_idx(cur, (size_t)i);
		}
		gm_buf_release(&seg);
		if (!next)
			return NULL;
		cur = next;
	}
	return cur;
}

static int gen_ref(conv *c, const char *ref, gm_buf *expr)
{
	json_object *target;
	gm_buf name = GM_BUF_INIT, body = GM_BUF_INIT;
	char *saved;
	size_t i;
	int ret;

	for (i = 0; i < c->n_refs; i++)
		if (!strcmp(c->ref_keys[i], ref)) {
			gm_buf_adds(expr, c->ref_rules[i]);
			return 0;
		}
	if (!(target = resolve(c, ref)))
		return refuse(c, "$ref '%s' is not a reference into this schema (only \"#\" and \"#/...\")%s", ref,
			      NULL);
	gen_name(c, &name, "ref");
	/* recorded before the target is generated: a recursive reference finds the rule */
	c->ref_keys = gm_xrealloc(c->ref_keys, (c->n_refs + 1) * sizeof(*c->ref_keys));
	c->ref_rules = gm_xrealloc(c->ref_rules, (c->n_refs + 1) * sizeof(*c->ref_rules));
	c->ref_keys[c->n_refs] = gm_xstrdup(ref);
	c->ref_rules[c->n_refs] = gm_xstrdup(name.buf);
	c->n_refs++;
	saved = gm_xstrdup(c->path.buf);
	gm_buf_reset(&c->path);
	gm_buf_adds(&c->path, ref);
	ret = gen(c, target, &body);
	if (!ret) {
		gm_buf_reset(&c->path);
		gm_buf_adds(&c->path, saved);
		emit_rule(c, name.buf, body.buf);
		gm_buf_adds(expr, name.buf);
	}
	free(saved);
	gm_buf_release(&name);
	gm_buf_release(&body);
	return ret;
}

/* ---------------------------------------------------------------- strings */

/* A GBNF literal for the JSON form of code point cp inside a string. */
static void json_char_lit(gm_buf *b, uint32_t cp)
{
	char u[8];
	int n;

	switch (cp) {
	case '"': lits(b, "\\\""); return;
	case '\\': lits(b, "\\\\"); return;
	case '\n': lits(b, "\\n"); return;
	case '\r': lits(b, "\\r"); return;
	case '\t': lits(b, "\\t"); return;
	case '\b': lits(b, "\\b"); return;
	case '\f': lits(b, "\\f"); return;
	}
	if (cp < 0x20) {
		snprintf(u, sizeof(u), "\\u%04x", cp);
		lits(b, u);
		return;
	}
	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (char)(0xf0 | (cp >> 18));
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	lit(b, u, (size_t)n);
}

/* A set of code points: sorted disjoint ranges. */
typedef struct cpset {
	uint32_t lo[128], hi[128];
	int n;
	int overflow;
} cpset;

static void cps_add(cpset *s, uint32_t lo, uint32_t hi)
{
	if (s->n == 128) {
		s->overflow = 1;
		return;
	}
	s->lo[s->n] = lo;
	s->hi[s->n] = hi;
	s->n++;
}

/* Sorts and merges the ranges. */
static void cps_norm(cpset *s)
{
	int i, j, k = 0;

	for (i = 1; i < s->n; i++)
		for (j = i; j > 0 && s->lo[j] < s->lo[j - 1]; j--) {
			uint32_t t = s->lo[j];

			s->lo[j] = s->lo[j - 1];
			s->lo[j - 1] = t;
			t = s->hi[j];
			s->hi[j] = s->hi[j - 1];
			s->hi[j - 1] = t;
		}
	for (i = 0; i < s->n; i++) {
		if (k && s->lo[i] <= s->hi[k - 1] + 1) {
			if (s->hi[i] > s->hi[k - 1])
				s->hi[k - 1] = s->hi[i];
		} else {
			s->lo[k] = s->lo[i];
			s->hi[k] = s->hi[i];
			k++;
		}
	}
	s->n = k;
}

/* The complement within [0, top]. */
static void cps_negate(cpset *s, uint32_t top)
{
	cpset t;
	uint32_t next = 0;
	int i;

	cps_norm(s);
	memset(&t, 0, sizeof(t));
	for (i = 0; i < s->n && s->lo[i] <= top; i++) {
		if (s->lo[i] > next)
			cps_add(&t, next, s->lo[i] - 1);
		next = s->hi[i] + 1;
	}
	if (next <= top)
		cps_add(&t, next, top);
	t.overflow |= s->overflow;
	*s = t;
}

static void class_char(gm_buf *b, uint32_t cp)
{
	if (cp == ']' || cp == '[' || cp == '\\' || cp == '^' || cp == '-' || cp == '"')
		gm_buf_addf(b, "\\%c", (char)cp);
	else if (cp < 0x20 || cp == 0x7f)
		gm_buf_addf(b, "\\x%02x", cp);
	else if (cp < 0x80)
		gm_buf_addch(b, (char)cp);
	else
		gm_buf_addf(b, cp < 0x10000 ? "\\u%04x" : "\\U%08x", cp);
}

/* The GBNF for one JSON string character whose decoded value is in s. */
static void cps_expr(gm_buf *b, cpset *s)
{
	gm_buf cls = GM_BUF_INIT, alts = GM_BUF_INIT;
	int i, n_cls = 0, n_alt = 0;

	cps_norm(s);
	for (i = 0; i < s->n; i++) {
		uint32_t lo = s->lo[i], hi = s->hi[i], c;

		/* characters JSON writes escaped: one literal each */
		for (c = lo; c <= hi && c < 0x20; c++) {
			if (n_alt++)
				gm_buf_adds(&alts, " | ");
			json_char_lit(&alts, c);
		}
		if (lo < 0x20)
			lo = 0x20;
		while (lo <= hi) {
			uint32_t end = hi;

			if (lo == '"' || lo == '\\') {
				if (n_alt++)
					gm_buf_adds(&alts, " | ");
				json_char_lit(&alts, lo);
				lo++;
				continue;
			}
			if (lo < '"' && end >= '"')
				end = '"' - 1;
			else if (lo < '\\' && end >= '\\')
				end = '\\' - 1;
			class_char(&cls, lo);
			if (end > lo) {
				gm_buf_addch(&cls, '-');
				class_char(&cls, end);
			}
			n_cls++;
			lo = end + 1;
			if (!lo)
				break;
		}
	}
	gm_buf_adds(b, "( ");
	if (n_cls)
		gm_buf_addf(b, "[%s]", cls.buf);
	if (n_alt)
		gm_buf_addf(b, "%s%s", n_cls ? " | " : "", alts.buf);
	if (!n_cls && !n_alt)
		gm_buf_adds(b, "[^\\x00-\\U0010ffff]"); /* matches nothing */
	gm_buf_adds(b, " )");
	gm_buf_release(&cls);
	gm_buf_release(&alts);
}

typedef struct rx {
	conv *c;
	const char *s, *end;
} rx;

static int rx_alts(rx *r, gm_buf *out, int depth);

/* Adds the class escape \d \w \s (upper case: the complement within ASCII). Returns 1 if e is one. */
static int class_escape(cpset *s, char e)
{
	cpset t;

	memset(&t, 0, sizeof(t));
	switch (e | 0x20) {
	case 'd':
		cps_add(&t, '0', '9');
		break;
	case 'w':
		cps_add(&t, '0', '9');
		cps_add(&t, 'A', 'Z');
		cps_add(&t, 'a', 'z');
		cps_add(&t, '_', '_');
		break;
	case 's':
		cps_add(&t, '\t', '\r');
		cps_add(&t, ' ', ' ');
		break;
	default:
		return 0;
	}
	if (e >= 'A' && e <= 'Z')
		cps_negate(&t, 0x7f);
	for (int i = 0; i < t.n; i++)
		cps_add(s, t.lo[i], t.hi[i]);
	return 1;
}

/* A code point of the pattern (after a backslash when esc); -1 on error. */
static int64_t rx_char(rx *r, int esc)
{
	const unsigned char *p = (const unsigned char *)r->s;
	uint32_t c;
	int n, i;

	if (esc) {
		char e = *r->s++;
		int digits = 0;

		switch (e) {
		case 'n': return '\n';
		case 't': return '\t';
		case 'r': return '\r';
		case 'f': return '\f';
		case 'v': return '\v';
		case 'x': digits = 2; break;
		case 'u': digits = 4; break;
		default:
			if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9')) {
				char k[3] = { '\\', e, 0 };

				return refuse(r->c, "pattern: '%s' is not supported%s", k, NULL);
			}
			return (unsigned char)e;
		}
		c = 0;
		for (i = 0; i < digits; i++) {
			char h = r->s < r->end ? *r->s : 0;
			int v = h >= '0' && h <= '9' ? h - '0' : (h | 0x20) >= 'a' && (h | 0x20) <= 'f' ? (h | 0x20) - 'a' + 10 : -1;

			if (v < 0)
				return refuse(r->c, "pattern: bad hexadecimal escape%s%s", "", NULL);
			c = c * 16 + (uint32_t)v;
			r->s++;
		}
		return c;
	}
	if (p[0] < 0x80) {
		r->s++;
		return p[0];
	}
	n = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : 2;
	if (r->end - r->s < n)
		return refuse(r->c, "pattern: invalid UTF-8%s%s", "", NULL);
	c = p[0] & (0x7f >> n);
	for (i = 1; i < n; i++)
		c = (c << 6) | (p[i] & 0x3f);
	r->s += n;
	return c;
}

/* One atom: a character, a class, '.', a group; its GBNF in out. */
static int rx_atom(rx *r, gm_buf *out, int depth)
{
	cpset set;
	int64_t c;

	memset(&set, 0, sizeof(set));
	if (*r->s == '(') {
		r->s++;
		if (r->s < r->end && *r->s == '?') {
			if (r->end - r->s >= 2 && r->s[1] == ':')
				r->s += 2;
			else
				return refuse(r->c, "pattern: '(?%s' (lookaround, named or flagged groups) is not supported%s",
					      (char[]){ r->s + 1 < r->end ? r->s[1] : '?', 0 }, NULL);
		}
		gm_buf_adds(out, "( ");
		if (rx_alts(r, out, depth + 1))
			return -1;
		if (r->s >= r->end || *r->s != ')')
			return refuse(r->c, "pattern: missing ')'%s%s", "", NULL);
		r->s++;
		gm_buf_adds(out, " )");
		return 0;
	}
	if (*r->s == '.') {
		r->s++;
		/* any character but a newline, as JSON writes it */
		cps_add(&set, 0, '\n' - 1);
		cps_add(&set, '\n' + 1, 0x10ffff);
		cps_expr(out, &set);
		return 0;
	}
	if (*r->s == '[') {
		int negate = 0, first = 1;

		r->s++;
		if (r->s < r->end && *r->s == '^') {
			negate = 1;
			r->s++;
		}
		while (r->s < r->end && (*r->s != ']' || first)) {
			int64_t lo, hi;

			first = 0;
			if (*r->s == '\\' && r->s + 1 < r->end && class_escape(&set, r->s[1])) {
				r->s += 2;
				continue;
			}
			if (*r->s == '\\') {
				r->s++;
				if (r->s >= r->end)
					return refuse(r->c, "pattern: ends with '\\'%s%s", "", NULL);
				lo = rx_char(r, 1);
			} else {
				lo = rx_char(r, 0);
			}
			if (lo < 0)
				return -1;
			hi = lo;
			if (r->end - r->s >= 2 && r->s[0] == '-' && r->s[1] != ']') {
				r->s++;
				if (*r->s == '\\') {
					r->s++;
					if (r->s >= r->end)
						return refuse(r->c, "pattern: ends with '\\'%s%s", "", NULL);
					hi = rx_char(r, 1);
				} else {
					hi = rx_char(r, 0);
				}
				if (hi < lo)
					return refuse(r->c, "pattern: a range goes backwards%s%s", "", NULL);
			}
			cps_add(&set, (uint32_t)lo, (uint32_t)hi);
		}
		if (r->s >= r->end)
			return refuse(r->c, "pattern: missing ']'%s%s", "", NULL);
		r->s++;
		if (negate)
			cps_negate(&set, 0x10ffff);
		if (set.overflow)
			return refuse(r->c, "pattern: a character class too complex%s%s", "", NULL);
		cps_expr(out, &set);
		return 0;
	}
	if (*r->s == '\\') {
		r->s++;
		if (r->s >= r->end)
			return refuse(r->c, "pattern: ends with '\\'%s%s", "", NULL);
		if (class_escape(&set, *r->s)) {
			r->s++;
			cps_expr(out, &set);
			return 0;
		}
		if ((c = rx_char(r, 1)) < 0)
			return -1;
		json_char_lit(out, (uint32_t)c);
		return 0;
	}
	if (strchr("*+?{", *r->s))
		return refuse(r->c, "pattern: a quantifier with nothing before it ('%s')%s", (char[]){ *r->s, 0 },
			      NULL);
	if ((c = rx_char(r, 0)) < 0)
		return -1;
	json_char_lit(out, (uint32_t)c);
	return 0;
}

static int rx_seq(rx *r, gm_buf *out, int depth)
{
	int n = 0;

	if (depth > 50)
		return refuse(r->c, "pattern: groups nested too deeply%s%s", "", NULL);
	while (r->s < r->end && *r->s != '|' && *r->s != ')') {
		if (*r->s == '$' && r->s + 1 == r->end)
			break;
		if (*r->s == '^' || *r->s == '$')
			return refuse(r->c, "pattern: '%s' other than at the start or end is not supported%s",
				      (char[]){ *r->s, 0 }, NULL);
		if (n++)
			gm_buf_addch(out, ' ');
		gm_buf_adds(out, "( ");
		if (rx_atom(r, out, depth))
			return -1;
		gm_buf_adds(out, " )");
		if (r->s < r->end && strchr("*+?{", *r->s)) {
			if (*r->s == '{') {
				const char *q = r->s + 1;

				while (q < r->end && ((*q >= '0' && *q <= '9') || *q == ','))
					q++;
				if (q >= r->end || *q != '}' || q == r->s + 1)
					return refuse(r->c, "pattern: a '{' that is not a {m,n} quantifier%s%s", "",
						      NULL);
				gm_buf_add(out, r->s, (size_t)(q + 1 - r->s));
				r->s = q + 1;
			} else {
				gm_buf_addch(out, *r->s++);
			}
			if (r->s < r->end && *r->s == '?')
				r->s++; /* lazy: the same strings */
			if (r->s < r->end && strchr("*+{", *r->s))
				return refuse(r->c, "pattern: a quantifier after a quantifier ('%s')%s",
					      (char[]){ *r->s, 0 }, NULL);
		}
	}
	if (!n)
		gm_buf_adds(out, "\"\"");
	return 0;
}

static int rx_alts(rx *r, gm_buf *out, int depth)
{
	for (;;) {
		if (rx_seq(r, out, depth))
			return -1;
		if (r->s < r->end && *r->s == '|') {
			r->s++;
			gm_buf_adds(out, " | ");
			continue;
		}
		return 0;
	}
}

static int gen_pattern(conv *c, const char *pat, gm_buf *expr)
{
	rx r = { c, pat, pat + strlen(pat) };
	gm_buf body = GM_BUF_INIT, name = GM_BUF_INIT, any = GM_BUF_INIT;
	int start = 0, end = 0, ret;

	if (*r.s == '^') {
		start = 1;
		r.s++;
	}
	if (r.end > r.s && r.end[-1] == '$') {
		/* an anchor unless escaped: an even number of backslashes before it */
		const char *q = r.end - 1;

		while (q > r.s && q[-1] == '\\')
			q--;
		if ((r.end - 1 - q) % 2 == 0) {
			end = 1;
			r.end--;
		}
	}
	ret = rx_alts(&r, &body, 0) ? GM_EINVAL : 0;
	if (!ret && r.s < r.end)
		ret = refuse(c, "pattern: unbalanced ')'%s%s", "", NULL);
	if (!ret) {
		add_prim(c, &any, P_CHAR);
		gen_name(c, &name, "pattern");
		gm_buf_addf(c->out, "%s ::= \"\\\"\" %s%s( %s ) %s%s\"\\\"\"\n", name.buf, start ? "" : any.buf,
			    start ? "" : "* ", body.buf, end ? "" : any.buf, end ? "" : "* ");
		gm_buf_adds(expr, name.buf);
	}
	gm_buf_release(&body);
	gm_buf_release(&name);
	gm_buf_release(&any);
	return ret;
}

static int gen_format(conv *c, const char *f, gm_buf *expr)
{
	const char *body;
	gm_buf name = GM_BUF_INIT;

	if (!strcmp(f, "date"))
		body = "[1-9] [0-9]{3} \"-\" ( ( \"0\" [1-9] | \"1\" [0-2] ) \"-\" ( \"0\" [1-9] | \"1\" [0-9] | \"2\" [0-8] )"
		       " | ( \"0\" [13-9] | \"1\" [0-2] ) \"-\" ( \"29\" | \"30\" ) | ( \"0\" [13578] | \"1\" [02] ) \"-31\" )";
	else if (!strcmp(f, "time"))
		body = "( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] \":\" [0-5] [0-9] ( \".\" [0-9]{1,6} )? "
		       "( \"Z\" | [+-] ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] )";
	else if (!strcmp(f, "uuid"))
		body = "[0-9a-f]{8} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{12}";
	else if (!strcmp(f, "email"))
		body = "[a-zA-Z0-9_+-]{1,32} ( \".\" [a-zA-Z0-9_+-]{1,32} ){0,2} \"@\" [a-zA-Z0-9]{1,20} "
		       "( \".\" [a-zA-Z0-9]{1,20} ){1,3}";
	else
		return refuse(c, "format '%s' is not supported (date, time, uuid, email)%s", f, NULL);
	gen_name(c, &name, f);
	gm_buf_addf(c->out, "%s ::= \"\\\"\" %s \"\\\"\"\n", name.buf, body);
	gm_buf_adds(expr, name.buf);
	gm_buf_release(&name);
	return 0;
}

static int gen_string(conv *c, json_object *s, gm_buf *expr)
{
	json_object *pat = kw(s, "pattern"), *fmt = kw(s, "format");
	long mn, mx;

	if (get_count(c, s, "minLength", &mn) || get_count(c, s, "maxLength", &mx))
		return -1;
	if ((pat || fmt) && (mn >= 0 || mx >= 0))
		return refuse(c, "'%s' together with minLength/maxLength is not supported%s", pat ? "pattern" : "format",
			      NULL);
	if (pat && fmt)
		return refuse(c, "'pattern' together with 'format' is not supported%s%s", "", NULL);
	if (pat) {
		if (!json_object_is_type(pat, json_type_string))
			return refuse(c, "'pattern' must be a string%s%s", "", NULL);
		return gen_pattern(c, json_object_get_string(pat), expr);
	}
	if (fmt) {
		if (!json_object_is_type(fmt, json_type_string))
			return refuse(c, "'format' must be a string%s%s", "", NULL);
		return gen_format(c, json_object_get_string(fmt), expr);
	}
	if (mn < 0 && mx < 0) {
		add_prim(c, expr, P_STRING);
		return 0;
	}
	if (mx >= 0 && mn > mx)
		return refuse(c, "minLength is above maxLength%s%s", "", NULL);
	gm_buf_adds(expr, "\"\\\"\" ");
	add_prim(c, expr, P_CHAR);
	if (mx < 0)
		gm_buf_addf(expr, "{%ld,}", mn < 0 ? 0 : mn);
	else
		gm_buf_addf(expr, "{%ld,%ld}", mn < 0 ? 0 : mn, mx);
	gm_buf_adds(expr, " \"\\\"\"");
	return 0;
}

/* ---------------------------------------------------------------- integers */

/* Digits d[0..n) of decimal strings a and b (same length n, a <= b): every number between them. */
static void digit_range(gm_buf *b, const char *lo, const char *hi, size_t n)
{
	size_t k;

	if (!n)
		return;
	if (n == 1) {
		if (lo[0] == hi[0])
			gm_buf_addf(b, "\"%c\"", lo[0]);
		else
			gm_buf_addf(b, "[%c-%c]", lo[0], hi[0]);
		return;
	}
	if (lo[0] == hi[0]) {
		gm_buf_addf(b, "\"%c\" ", lo[0]);
		digit_range(b, lo + 1, hi + 1, n - 1);
		return;
	}
	{
		char *nines = gm_xmalloc(n), *zeros = gm_xmalloc(n);
		int all_lo0 = 1, all_hi9 = 1;
		char from = lo[0], to = hi[0];

		memset(nines, '9', n);
		memset(zeros, '0', n);
		for (k = 1; k < n; k++) {
			all_lo0 &= lo[k] == '0';
			all_hi9 &= hi[k] == '9';
		}
		gm_buf_adds(b, "( ");
		if (!all_lo0) {
			gm_buf_addf(b, "\"%c\" ( ", lo[0]);
			digit_range(b, lo + 1, nines, n - 1);
			gm_buf_adds(b, " ) | ");
			from++;
		}
		if (!all_hi9)
			to--;
		if (from <= to) {
			if (from == to)
				gm_buf_addf(b, "\"%c\"", from);
			else
				gm_buf_addf(b, "[%c-%c]", from, to);
			gm_buf_addf(b, " [0-9]{%zu}", n - 1);
			if (!all_hi9)
				gm_buf_adds(b, " | ");
		}
		if (!all_hi9) {
			gm_buf_addf(b, "\"%c\" ( ", hi[0]);
			digit_range(b, zeros, hi + 1, n - 1);
			gm_buf_adds(b, " )");
		}
		gm_buf_adds(b, " )");
		free(nines);
		free(zeros);
	}
}

/* Non-negative integers in [lo, hi] without leading zeros (hi < 0: no upper bound, up to the digit cap). */
static void uint_range(gm_buf *b, long long lo, long long hi)
{
	char a[32], z[32];
	int la, lz, len, first = 1;

	snprintf(a, sizeof(a), "%lld", lo);
	la = (int)strlen(a);
	if (hi < 0) {
		lz = MAX_INT_DIGITS;
		memset(z, '9', (size_t)lz);
		z[lz] = 0;
	} else {
		snprintf(z, sizeof(z), "%lld", hi);
		lz = (int)strlen(z);
	}
	gm_buf_adds(b, "( ");
	for (len = la; len <= lz; len++) {
		char from[32], to[32];

		if (len == la)
			strcpy(from, a);
		else {
			memset(from, '0', (size_t)len);
			from[0] = '1';
			from[len] = 0;
		}
		if (len == lz)
			strcpy(to, z);
		else {
			memset(to, '9', (size_t)len);
			to[len] = 0;
		}
		if (!first)
			gm_buf_adds(b, " | ");
		first = 0;
		digit_range(b, from, to, (size_t)len);
	}
	gm_buf_adds(b, " )");
}

static int bound(conv *c, json_object *s, const char *k, int up, long long *out, int *given)
{
	json_object *v = kw(s, k);
	double d;

	*given = 0;
	if (!v)
		return 0;
	if (json_object_is_type(v, json_type_int)) {
		*out = (long long)json_object_get_int64(v);
	} else if (json_object_is_type(v, json_type_double)) {
		d = json_object_get_double(v);
		d = up ? floor(d) : ceil(d);
		if (!(d > -1e18 && d < 1e18))
			return refuse(c, "'%s' is out of the supported range (18 digits)%s", k, NULL);
		*out = (long long)d;
	} else {
		return refuse(c, "'%s' must be a number%s", k, NULL);
	}
	if (*out <= -1000000000000000000LL || *out >= 1000000000000000000LL)
		return refuse(c, "'%s' is out of the supported range (18 digits)%s", k, NULL);
	*given = 1;
	return 0;
}

static int gen_integer(conv *c, json_object *s, gm_buf *expr)
{
	long long lo = 0, hi = 0;
	int has_lo, has_hi, n = 0;

	if (bound(c, s, "minimum", 0, &lo, &has_lo) || bound(c, s, "maximum", 1, &hi, &has_hi))
		return -1;
	if (!has_lo && !has_hi) {
		add_prim(c, expr, P_INTEGER);
		return 0;
	}
	if (has_lo && has_hi && lo > hi)
		return refuse(c, "minimum is above maximum%s%s", "", NULL);
	gm_buf_adds(expr, "( ");
	/* the negative part: "-" and the magnitudes */
	if (!has_lo || lo < 0) {
		long long mlo = has_hi && hi < 0 ? -hi : 1, mhi = has_lo ? -lo : -1;

		gm_buf_adds(expr, "\"-\" ");
		uint_range(expr, mlo, mhi);
		n++;
	}
	if (!has_hi || hi >= 0) {
		if (n)
			gm_buf_adds(expr, " | ");
		uint_range(expr, has_lo && lo > 0 ? lo : 0, has_hi ? hi : -1);
	}
	gm_buf_adds(expr, " )");
	return 0;
}

/* ---------------------------------------------------------------- objects and arrays */

/* Keys other than names[0..n) (no escapes; see P_KCHAR), as a rule; its name appended to expr. */
/* The code point at s (UTF-8 from json-c: valid) and its length in *len. */
static uint32_t utf8_at(const char *s, size_t *len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = p[0] < 0x80 ? 1 : p[0] < 0xe0 ? 2 : p[0] < 0xf0 ? 3 : 4, i;
	uint32_t c = n == 1 ? p[0] : p[0] & (0x7f >> n);

	for (i = 1; i < n && p[i]; i++)
		c = (c << 6) | (p[i] & 0x3f);
	*len = i;
	return c;
}

static void other_key(conv *c, const char *const *names, size_t n, gm_buf *expr)
{
	/* A trie walk: at a node reached by prefix w, the key may end there unless w is a
	 * name; go on with a character that leads to no name (then anything); or follow a
	 * name's next character. */
	gm_buf name = GM_BUF_INIT, kc = GM_BUF_INIT;

	add_prim(c, &kc, P_KCHAR);
	gen_name(c, &name, "key");
	gm_buf_adds(expr, name.buf);
	{
		/* rule for prefix w = names[i][0..d): generated recursively by a helper */
		struct frame {
			char *prefix;
			size_t len;
			char *rule;
		} *stack = gm_xmalloc(sizeof(*stack) * 1);
		size_t sp = 0, alloc = 1;
		gm_buf body = GM_BUF_INIT;

		stack[sp++] = (struct frame){ gm_xstrdup(""), 0, gm_xstrdup(name.buf) };
		gm_buf_addf(c->out, "%s ::= \"\\\"\" %s-t\n", name.buf, name.buf);
		free(stack[0].rule);
		gm_buf_reset(&body);
		gm_buf_addf(&body, "%s-t", name.buf);
		stack[0].rule = gm_buf_detach(&body, NULL);
		while (sp) {
			struct frame f = stack[--sp];
			cpset next;
			size_t i;
			int terminal = 0, k;
			gm_buf b = GM_BUF_INIT;

			memset(&next, 0, sizeof(next));
			for (i = 0; i < n; i++) {
				if (strlen(names[i]) < f.len || memcmp(names[i], f.prefix, f.len))
					continue;
				if (strlen(names[i]) == f.len) {
					terminal = 1;
				} else {
					size_t cl;
					uint32_t cp = utf8_at(names[i] + f.len, &cl);

					cps_add(&next, cp, cp);
				}
			}
			cps_norm(&next);
			if (!terminal)
				gm_buf_adds(&b, "\"\\\"\"");
			/* a character leading to no name, then anything */
			{
				cpset other = next;

				cps_add(&other, 0, 0x1f);
				cps_add(&other, '"', '"');
				cps_add(&other, '\\', '\\');
				cps_negate(&other, 0x10ffff);
				if (b.len)
					gm_buf_adds(&b, " | ");
				cps_expr(&b, &other);
				gm_buf_addf(&b, " %s* \"\\\"\"", kc.buf);
			}
			for (k = 0; k < next.n; k++) {
				uint32_t ch;

				for (ch = next.lo[k]; ch <= next.hi[k]; ch++) {
					char *p = NULL;
					gm_buf rn = GM_BUF_INIT;
					size_t j, cl = 0;

					/* the prefix extended by ch, as a name spells it */
					for (j = 0; j < n && !p; j++) {
						if (strlen(names[j]) > f.len && !memcmp(names[j], f.prefix, f.len) &&
						    utf8_at(names[j] + f.len, &cl) == ch) {
							p = gm_xmalloc(f.len + cl + 1);
							memcpy(p, names[j], f.len + cl);
							p[f.len + cl] = 0;
						}
					}
					gen_name(c, &rn, "key");
					gm_buf_adds(&b, " | ");
					json_char_lit(&b, ch);
					gm_buf_addf(&b, " %s", rn.buf);
					if (sp == alloc) {
						alloc *= 2;
						stack = gm_xrealloc(stack, alloc * sizeof(*stack));
					}
					stack[sp++] = (struct frame){ p, f.len + cl, gm_buf_detach(&rn, NULL) };
				}
			}
			emit_rule(c, f.rule, b.buf);
			gm_buf_release(&b);
			free(f.prefix);
			free(f.rule);
		}
		free(stack);
		gm_buf_release(&body);
	}
	gm_buf_release(&name);
	gm_buf_release(&kc);
}

static int gen_object(conv *c, json_object *s, gm_buf *expr)
{
	json_object *props = kw(s, "properties"), *req = kw(s, "required"), *addl = kw(s, "additionalProperties");
	const char **names = NULL;
	json_object **schemas = NULL;
	int *required = NULL;
	size_t n = 0, i, k;
	gm_buf ws = GM_BUF_INIT, base = GM_BUF_INIT, extra = GM_BUF_INIT, rf = GM_BUF_INIT, rr = GM_BUF_INIT;
	int ret = 0, extras = 0;
	if (props && !json_object_is_type(props, json_type_object))
		return refuse(c, "'properties' must be an object%s%s", "", NULL);
	if (req && !json_object_is_type(req, json_type_array))
		return refuse(c, "'required' must be a list of names%s%s", "", NULL);
	if (addl && !json_object_is_type(addl, json_type_boolean) && !json_object_is_type(addl, json_type_object))
		return refuse(c, "'additionalProperties' must be a boolean or a schema%s%s", "", NULL);
	extras = addl && (!json_object_is_type(addl, json_type_boolean) || json_object_get_boolean(addl));
	if (!props && !req && !addl) {
		add_prim(c, expr, P_OBJECT);
		return 0;
	}
	if (props) {
		size_t np = (size_t)json_object_object_length(props);

		names = gm_xcalloc(np + (req ? json_object_array_length(req) : 0) + 1, sizeof(*names));
		schemas = gm_xcalloc(np + (req ? json_object_array_length(req) : 0) + 1, sizeof(*schemas));
		required = gm_xcalloc(np + (req ? json_object_array_length(req) : 0) + 1, sizeof(*required));
		json_object_object_foreach(props, key, val) {
			names[n] = key;
			schemas[n] = val;
			n++;
		}
	} else {
		names = gm_xcalloc((req ? json_object_array_length(req) : 0) + 1, sizeof(*names));
		schemas = gm_xcalloc((req ? json_object_array_length(req) : 0) + 1, sizeof(*schemas));
		required = gm_xcalloc((req ? json_object_array_length(req) : 0) + 1, sizeof(*required));
	}
	for (i = 0; req && i < json_object_array_length(req); i++) {
		json_object *r = json_object_array_get_idx(req, i);
		const char *rn;

		if (!json_object_is_type(r, json_type_string)) {
			ret = refuse(c, "'required' must be a list of names%s%s", "", NULL);
			goto out;
		}
		rn = json_object_get_string(r);
		for (k = 0; k < n && strcmp(names[k], rn); k++)
			;
		if (k == n) {
			if (!extras) {
				/* a required property that is not declared: any value, as the schema allows */
				names[n] = rn;
				schemas[n] = NULL;
				n++;
			} else {
				names[n] = rn;
				schemas[n] = addl && json_object_is_type(addl, json_type_object) ? addl : NULL;
				n++;
			}
		}
		required[k] = 1;
	}
	add_prim(c, &ws, P_WS);
	gen_name(c, &base, "obj");
	if (extras) {
		gm_buf kv = GM_BUF_INIT, name = GM_BUF_INIT;

		other_key(c, names, n, &kv);
		gm_buf_addf(&kv, " %s \":\" %s ", ws.buf, ws.buf);
		if (json_object_is_type(addl, json_type_object)) {
			if ((ret = gen_at(c, addl, "additionalProperties", &kv))) {
				gm_buf_release(&kv);
				goto out;
			}
		} else {
			add_prim(c, &kv, P_VALUE);
		}
		gm_buf_addf(&kv, " %s", ws.buf);
		gm_buf_addf(&name, "%s-x", base.buf);
		emit_rule(c, name.buf, kv.buf);
		gm_buf_addf(c->out, "%s-%zuf ::= ( %s ( \",\" %s %s )* )?\n", base.buf, n, name.buf, ws.buf, name.buf);
		gm_buf_addf(c->out, "%s-%zur ::= ( \",\" %s %s )*\n", base.buf, n, ws.buf, name.buf);
		gm_buf_release(&kv);
		gm_buf_release(&name);
	} else {
		gm_buf_addf(c->out, "%s-%zuf ::= \"\"\n%s-%zur ::= \"\"\n", base.buf, n, base.buf, n);
	}
	for (i = n; i-- > 0;) {
		gm_buf kv = GM_BUF_INIT, seg = GM_BUF_INIT;
		gm_buf key = GM_BUF_INIT;

		/* the key as JSON writes it */
		{
			json_object *js = json_object_new_string(names[i]);

			gm_buf_adds(&key, json_object_to_json_string_ext(js, JSON_C_TO_STRING_PLAIN |
									   JSON_C_TO_STRING_NOSLASHESCAPE));
			json_object_put(js);
		}
		lit(&kv, key.buf, key.len);
		gm_buf_addf(&kv, " %s \":\" %s ", ws.buf, ws.buf);
		gm_buf_addf(&seg, "properties.%s", names[i]);
		if (schemas[i])
			ret = gen_at(c, schemas[i], seg.buf, &kv);
		else
			add_prim(c, &kv, P_VALUE);
		gm_buf_release(&seg);
		gm_buf_release(&key);
		if (ret) {
			gm_buf_release(&kv);
			goto out;
		}
		gm_buf_addf(&kv, " %s", ws.buf);
		gm_buf_reset(&rf);
		gm_buf_reset(&rr);
		gm_buf_addf(&rf, "%s-%zuf ::= ( %s ) %s-%zur", base.buf, i, kv.buf, base.buf, i + 1);
		gm_buf_addf(&rr, "%s-%zur ::= \",\" %s ( %s ) %s-%zur", base.buf, i, ws.buf, kv.buf, base.buf, i + 1);
		if (!required[i]) {
			gm_buf_addf(&rf, " | %s-%zuf", base.buf, i + 1);
			gm_buf_addf(&rr, " | %s-%zur", base.buf, i + 1);
		}
		gm_buf_addf(c->out, "%s\n%s\n", rf.buf, rr.buf);
		gm_buf_release(&kv);
	}
	gm_buf_addf(expr, "\"{\" %s %s-0f \"}\"", ws.buf, base.buf);
out:
	free(names);
	free(schemas);
	free(required);
	gm_buf_release(&ws);
	gm_buf_release(&base);
	gm_buf_release(&extra);
	gm_buf_release(&rf);
	gm_buf_release(&rr);
	return ret;
}

static int gen_array(conv *c, json_object *s, gm_buf *expr)
{
	json_object *items = kw(s, "items"), *prefix = kw(s, "prefixItems");
	size_t k = 0, i;
	long mn, mx, e;
	gm_buf ws = GM_BUF_INIT, item = GM_BUF_INIT, body = GM_BUF_INIT;
	char **el = NULL;
	int ret = 0, no_more;

	if (get_count(c, s, "minItems", &mn) || get_count(c, s, "maxItems", &mx))
		return -1;
	if (mn < 0)
		mn = 0;
	if (mx >= 0 && mn > mx)
		return refuse(c, "minItems is above maxItems%s%s", "", NULL);
	if (prefix && !json_object_is_type(prefix, json_type_array))
		return refuse(c, "'prefixItems' must be a list of schemas%s%s", "", NULL);
	if (items && json_object_is_type(items, json_type_array))
		return refuse(c, "'items' as a list is not supported: use prefixItems%s%s", "", NULL);
	add_prim(c, &ws, P_WS);
	k = prefix ? json_object_array_length(prefix) : 0;
	no_more = items && json_object_is_type(items, json_type_boolean) && !json_object_get_boolean(items);
	if (no_more && mx < 0)
		mx = (long)k;
	if (no_more && mx > (long)k)
		mx = (long)k;
	if (mn > mx && mx >= 0)
		return refuse(c, "minItems asks for more items than prefixItems and items allow%s%s", "", NULL);
	el = gm_xcalloc(k + 1, sizeof(*el));
	for (i = 0; i < k; i++) {
		gm_buf name = GM_BUF_INIT, seg = GM_BUF_INIT;

		gm_buf_addf(&seg, "prefixItems.%zu", i);
		ret = gen_rule(c, json_object_array_get_idx(prefix, i), seg.buf, &name);
		gm_buf_release(&seg);
		if (ret) {
			gm_buf_release(&name);
			goto out;
		}
		el[i] = gm_buf_detach(&name, NULL);
	}
	if (!no_more) {
		if (items && !json_object_is_type(items, json_type_boolean)) {
			if ((ret = gen_rule(c, items, "items", &item)))
				goto out;
		} else {
			add_prim(c, &item, P_VALUE);
		}
	}
	/* explicit positions: the prefix items and the items minItems asks for */
	e = (long)k > mn ? (long)k : mn;
	if (mx >= 0 && e > mx)
		e = mx;
	{
		/* built from the last position back: position i is required when i < minItems */
		gm_buf tail = GM_BUF_INIT;

		if (!no_more && (mx < 0 || mx > e)) {
			long lo = mn > e ? mn - e : 0, hi = mx < 0 ? -1 : mx - e;

			if (e == 0) {
				/* the first element has no comma before it */
				if (lo >= 1) {
					gm_buf_addf(&tail, "%s %s ( \",\" %s %s %s )", item.buf, ws.buf, ws.buf, item.buf, ws.buf);
					if (hi < 0)
						gm_buf_addf(&tail, "{%ld,}", lo - 1);
					else
						gm_buf_addf(&tail, "{%ld,%ld}", lo - 1, hi - 1);
				} else {
					gm_buf_addf(&tail, "( %s %s ( \",\" %s %s %s )", item.buf, ws.buf, ws.buf, item.buf,
						    ws.buf);
					if (hi < 0)
						gm_buf_adds(&tail, "*");
					else
						gm_buf_addf(&tail, "{0,%ld}", hi - 1);
					gm_buf_adds(&tail, " )?");
				}
			} else {
				gm_buf_addf(&tail, "( \",\" %s %s %s )", ws.buf, item.buf, ws.buf);
				if (hi < 0)
					gm_buf_addf(&tail, "{%ld,}", lo);
				else
					gm_buf_addf(&tail, "{%ld,%ld}", lo, hi);
			}
		}
		for (i = (size_t)e; i-- > 0;) {
			gm_buf one = GM_BUF_INIT;
			const char *name = i < k ? el[i] : item.buf;

			if (i > 0)
				gm_buf_addf(&one, "\",\" %s ", ws.buf);
			gm_buf_addf(&one, "%s %s", name, ws.buf);
			if (tail.len)
				gm_buf_addf(&one, " %s", tail.buf);
			gm_buf_reset(&tail);
			if ((long)i < mn)
				gm_buf_adds(&tail, one.buf);
			else
				gm_buf_addf(&tail, "( %s )?", one.buf);
			gm_buf_release(&one);
		}
		gm_buf_addf(expr, "\"[\" %s %s \"]\"", ws.buf, tail.buf);
		gm_buf_release(&tail);
	}
out:
	for (i = 0; i < k; i++)
		free(el[i]);
	free(el);
	gm_buf_release(&ws);
	gm_buf_release(&item);
	gm_buf_release(&body);
	return ret;
}

/* ---------------------------------------------------------------- the schema */

static int gen_type(conv *c, json_object *s, const char *t, gm_buf *expr)
{
	if (!strcmp(t, "string"))
		return gen_string(c, s, expr);
	if (!strcmp(t, "integer"))
		return gen_integer(c, s, expr);
	if (!strcmp(t, "number")) {
		if (kw(s, "minimum") || kw(s, "maximum"))
			return refuse(c, "'%s' is supported for integers only%s", kw(s, "minimum") ? "minimum" : "maximum",
				      NULL);
		add_prim(c, expr, P_NUMBER);
		return 0;
	}
	if (!strcmp(t, "boolean")) {
		add_prim(c, expr, P_BOOLEAN);
		return 0;
	}
	if (!strcmp(t, "null")) {
		add_prim(c, expr, P_NULL);
		return 0;
	}
	if (!strcmp(t, "object"))
		return gen_object(c, s, expr);
	if (!strcmp(t, "array"))
		return gen_array(c, s, expr);
	return refuse(c, "type '%s' is not a JSON Schema type%s", t, NULL);
}

static void value_lit(gm_buf *expr, json_object *v)
{
	const char *j = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);

	lits(expr, j);
}

/* Whether value v is of JSON Schema type t. */
static int has_type(json_object *v, const char *t)
{
	enum json_type jt = json_object_get_type(v);

	if (!strcmp(t, "string"))
		return jt == json_type_string;
	if (!strcmp(t, "integer"))
		return jt == json_type_int || (jt == json_type_double && json_object_get_double(v) ==
					       floor(json_object_get_double(v)));
	if (!strcmp(t, "number"))
		return jt == json_type_int || jt == json_type_double;
	if (!strcmp(t, "boolean"))
		return jt == json_type_boolean;
	if (!strcmp(t, "null"))
		return jt == json_type_null;
	if (!strcmp(t, "object"))
		return jt == json_type_object;
	if (!strcmp(t, "array"))
		return jt == json_type_array;
	return 0;
}

/* Whether an enum or const value v satisfies the schema's "type" (absent: any). */
static int type_allows(json_object *s, json_object *v)
{
	json_object *t = kw(s, "type");
	size_t i;

	if (!t)
		return 1;
	if (json_object_is_type(t, json_type_string))
		return has_type(v, json_object_get_string(t));
	for (i = 0; json_object_is_type(t, json_type_array) && i < json_object_array_length(t); i++) {
		json_object *e = json_object_array_get_idx(t, i);

		if (json_object_is_type(e, json_type_string) && has_type(v, json_object_get_string(e)))
			return 1;
	}
	return 0;
}

/* Refuses keywords beside key that would be ignored (a $ref, anyOf...). */
static int only_with(conv *c, json_object *s, const char *key)
{
	json_object_object_foreach(s, k, v) {
		(void)v;
		if (strcmp(k, key) && !is_annotation(k))
			return refuse(c, "'%s' beside '%s' is not supported", k, key);
	}
	return 0;
}

static int gen(conv *c, json_object *s, gm_buf *expr)
{
	json_object *v;
	int ret = 0;

	if (json_object_is_type(s, json_type_boolean)) {
		if (!json_object_get_boolean(s))
			return refuse(c, "the schema false matches nothing%s%s", "", NULL);
		add_prim(c, expr, P_VALUE);
		return 0;
	}
	if (!json_object_is_type(s, json_type_object))
		return refuse(c, "a schema must be an object or a boolean%s%s", "", NULL);
	if (++c->depth > MAX_DEPTH) {
		c->depth--;
		return refuse(c, "schemas nested too deeply (%s)%s", "64", NULL);
	}
	if ((ret = check_keywords(c, s)))
		goto out;
	if ((v = kw(s, "$ref"))) {
		if (!json_object_is_type(v, json_type_string)) {
			ret = refuse(c, "'$ref' must be a string%s%s", "", NULL);
			goto out;
		}
		if (!(ret = only_with(c, s, "$ref")))
			ret = gen_ref(c, json_object_get_string(v), expr);
		goto out;
	}
	if ((v = kw(s, "anyOf")) || (v = kw(s, "oneOf"))) {
		const char *k = kw(s, "anyOf") ? "anyOf" : "oneOf";
		size_t i, n;

		if (kw(s, "anyOf") && kw(s, "oneOf")) {
			ret = refuse(c, "'anyOf' beside 'oneOf' is not supported%s%s", "", NULL);
			goto out;
		}
		if ((ret = only_with(c, s, k)))
			goto out;
		if (!json_object_is_type(v, json_type_array) || !(n = json_object_array_length(v))) {
			ret = refuse(c, "'%s' must be a non-empty list of schemas%s", k, NULL);
			goto out;
		}
		gm_buf_adds(expr, "( ");
		for (i = 0; i < n && !ret; i++) {
			char seg[64];

			snprintf(seg, sizeof(seg), "%s.%zu", k, i);
			if (i)
				gm_buf_adds(expr, " | ");
			ret = gen_at(c, json_object_array_get_idx(v, i), seg, expr);
		}
		gm_buf_adds(expr, " )");
		goto out;
	}
	if (json_object_object_get_ex(s, "const", &v)) {
		if (!type_allows(s, v)) {
			ret = refuse(c, "'const' is not of the schema's type: nothing matches%s%s", "", NULL);
			goto out;
		}
		value_lit(expr, v);
		goto out;
	}
	if ((v = kw(s, "enum"))) {
		size_t i, n, k;

		if (!json_object_is_type(v, json_type_array) || !(n = json_object_array_length(v))) {
			ret = refuse(c, "'enum' must be a non-empty list%s%s", "", NULL);
			goto out;
		}
		/* the values of the schema's type (an enum may list others: they never validate) */
		gm_buf_adds(expr, "( ");
		for (i = 0, k = 0; i < n; i++) {
			if (!type_allows(s, json_object_array_get_idx(v, i)))
				continue;
			if (k++)
				gm_buf_adds(expr, " | ");
			value_lit(expr, json_object_array_get_idx(v, i));
		}
		gm_buf_adds(expr, " )");
		if (!k)
			ret = refuse(c, "no 'enum' value is of the schema's type: nothing matches%s%s", "", NULL);
		goto out;
	}
	if ((v = kw(s, "type"))) {
		if (json_object_is_type(v, json_type_string)) {
			ret = gen_type(c, s, json_object_get_string(v), expr);
		} else if (json_object_is_type(v, json_type_array) && json_object_array_length(v)) {
			size_t i, n = json_object_array_length(v);

			gm_buf_adds(expr, "( ");
			for (i = 0; i < n && !ret; i++) {
				json_object *t = json_object_array_get_idx(v, i);

				if (!json_object_is_type(t, json_type_string)) {
					ret = refuse(c, "'type' must be a name or a list of names%s%s", "", NULL);
					break;
				}
				if (i)
					gm_buf_adds(expr, " | ");
				ret = gen_type(c, s, json_object_get_string(t), expr);
			}
			gm_buf_adds(expr, " )");
		} else {
			ret = refuse(c, "'type' must be a name or a list of names%s%s", "", NULL);
		}
		goto out;
	}
	/* no type: the one the keywords are about */
	if (kw(s, "properties") || kw(s, "required") || kw(s, "additionalProperties"))
		ret = gen_object(c, s, expr);
	else if (kw(s, "items") || kw(s, "prefixItems") || kw(s, "minItems") || kw(s, "maxItems"))
		ret = gen_array(c, s, expr);
	else if (kw(s, "minLength") || kw(s, "maxLength") || kw(s, "pattern") || kw(s, "format"))
		ret = gen_string(c, s, expr);
	else if (kw(s, "minimum") || kw(s, "maximum"))
		ret = refuse(c, "'minimum'/'maximum' without \"type\": \"integer\" is not supported%s%s", "", NULL);
	else
		add_prim(c, expr, P_VALUE);
out:
	c->depth--;
	return ret;
}

int gm_json_schema_to_gbnf(json_object *schema, const char *rule_prefix, gm_buf *out, gm_error *err)
{
	conv c;
	gm_buf expr = GM_BUF_INIT;
	size_t i;
	int ret;

	memset(&c, 0, sizeof(c));
	c.root = schema;
	c.prefix = rule_prefix ? rule_prefix : "";
	c.out = out;
	c.err = err;
	gm_buf_init(&c.path);
	for (i = 0; c.prefix[i]; i++) {
		char ch = c.prefix[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
		      ch == '_'))
			return gm_error_set(err, GM_EINVAL, "rule prefix '%s': letters, digits, '-' and '_' only",
					    c.prefix);
	}
	ret = gen(&c, schema, &expr);
	if (!ret)
		gm_buf_addf(out, "%sroot ::= %s\n", c.prefix, expr.buf);
	gm_buf_release(&expr);
	gm_buf_release(&c.path);
	for (i = 0; i < c.n_refs; i++) {
		free(c.ref_keys[i]);
		free(c.ref_rules[i]);
	}
	free(c.ref_keys);
	free(c.ref_rules);
	return ret;
}

void gm_json_object_gbnf(const char *rule_prefix, gm_buf *out)
{
	conv c;
	gm_buf name = GM_BUF_INIT;

	memset(&c, 0, sizeof(c));
	c.prefix = rule_prefix ? rule_prefix : "";
	c.out = out;
	prim(&c, P_OBJECT, &name);
	gm_buf_addf(out, "%sroot ::= %sobject\n", c.prefix, c.prefix);
	gm_buf_release(&name);
}
