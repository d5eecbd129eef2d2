/*
 * jinja.c - a Jinja2 subset interpreter over json-c values.
 *
 * Three stages: the lexer turns the source into a flat token array (with
 * the whitespace control of an Environment(trim_blocks=True,
 * lstrip_blocks=True) already applied to the text between tags), the
 * parser builds statement and expression trees, and the renderer walks
 * them with a stack of variable scopes.
 *
 * Values are json-c objects with Python's semantics layered on top: a NULL
 * json_object is None, and two kinds that JSON lacks, Undefined and
 * namespace(), are tagged in struct val.  Every struct val owns one
 * reference to its json_object.
 */
#include "text/jinja.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "base/json.h"

/* ------------------------------------------------------------------ */
/* Tokens */

enum tok_type {
	T_EOF,
	T_DATA,
	T_VAR_BEGIN,
	T_VAR_END,
	T_BLOCK_BEGIN,
	T_BLOCK_END,
	T_NAME,
	T_STRING,
	T_INT,
	T_FLOAT,
	T_OP
};

enum op {
	OP_NONE,
	OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW, OP_TILDE,
	OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN,
	OP_ASSIGN, OP_DOT, OP_COMMA, OP_COLON, OP_PIPE,
	OP_LPAREN, OP_RPAREN, OP_LBRACKET, OP_RBRACKET, OP_LBRACE, OP_RBRACE,
	OP_NOT, OP_NEG, OP_POS
};

static const char *const op_names[] = {
	"", "+", "-", "*", "/", "//", "%", "**", "~",
	"==", "!=", "<", "<=", ">", ">=", "in", "not in",
	"=", ".", ",", ":", "|",
	"(", ")", "[", "]", "{", "}",
	"not", "-", "+"
};

struct token {
	enum tok_type type;
	int line;
	int op;
	char *s;        /* NAME, STRING (decoded), DATA: owned */
	size_t len;
	long long ival;
	double fval;
};

/* ------------------------------------------------------------------ */
/* Syntax trees */

enum expr_kind {
	E_CONST, E_NAME, E_LIST, E_TUPLE, E_DICT, E_ATTR, E_ITEM, E_SLICE,
	E_CALL, E_FILTER, E_TEST, E_UNARY, E_BINARY, E_AND, E_OR, E_COMPARE,
	E_COND, E_CONCAT
};

struct expr {
	enum expr_kind kind;
	int line;
	int op;
	int negate;            /* E_TEST: "is not" */
	json_object *value;    /* E_CONST (NULL is none) */
	char *name;            /* E_NAME, E_ATTR, E_FILTER, E_TEST */
	struct expr *a, *b, *c, *d;
	struct expr **args;    /* items, call/filter/test arguments, dict keys */
	struct expr **args2;   /* dict values */
	int *ops;              /* E_COMPARE: ops[i] joins args[i] and args[i + 1] */
	size_t nargs;
	char **kwnames;
	struct expr **kwargs;
	size_t nkw;
};

enum node_kind {
	N_DATA, N_OUTPUT, N_IF, N_FOR, N_SET, N_SET_BLOCK, N_BREAK, N_CONTINUE, N_WITH, N_BODY,
	N_MACRO,     /* attr: the name; targets, values: parameters and their defaults (NULL: none) */
	N_CALLBLOCK, /* expr: the E_CALL; targets, values: caller()'s parameters; body: caller()'s body */
	N_FILTER     /* filter: the filter chain over the FILTER_ARG placeholder; body: its input */
};

/* The name a filter block's (and a filtered block set's) text is bound to: no identifier looks like it. */
#define FILTER_ARG " body"


struct node;

struct nodelist {
	struct node **v;
	size_t n, alloc;
};

struct node {
	enum node_kind kind;
	int line;
	char *text;           /* N_DATA */
	size_t len;
	struct expr *expr;    /* OUTPUT, IF condition, FOR iterable, SET value */
	struct expr *filter;  /* FOR ... if filter; SET_BLOCK, FILTER: the filter chain */
	char **targets;       /* FOR, SET, WITH names */
	struct expr **values; /* WITH values */
	size_t ntargets;
	char *attr;           /* SET name.attr */
	struct nodelist body, orelse;
};

struct gm_jinja_template {
	char *what;
	struct nodelist root;
};

/* ------------------------------------------------------------------ */
/* Errors */

static int syntax_error(gm_error *err, const char *what, int line, int code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static int syntax_error(gm_error *err, const char *what, int line, int code, const char *fmt, ...)
{
	char msg[GM_ERROR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return gm_error_set(err, code, "%s: line %d: %s", what, line, msg);
}

/* ------------------------------------------------------------------ */
/* UTF-8 */

/* Decodes one code point at s[*i] (advancing *i); bad bytes read as themselves. */
static unsigned utf8_next(const char *s, size_t len, size_t *i)
{
	const unsigned char *u = (const unsigned char *)s;
	unsigned c = u[*i];
	int n, k;

	if (c < 0x80) {
		(*i)++;
		return c;
	}
	if ((c & 0xe0) == 0xc0) {
		n = 1;
		c &= 0x1f;
	} else if ((c & 0xf0) == 0xe0) {
		n = 2;
		c &= 0x0f;
	} else if ((c & 0xf8) == 0xf0) {
		n = 3;
		c &= 0x07;
	} else {
		(*i)++;
		return c;
	}
	if (*i + (size_t)n >= len) {
		(*i)++;
		return u[*i - 1];
	}
	for (k = 1; k <= n; k++) {
		if ((u[*i + k] & 0xc0) != 0x80) {
			(*i)++;
			return u[*i - 1];
		}
		c = (c << 6) | (u[*i + k] & 0x3f);
	}
	*i += n + 1;
	return c;
}

static void utf8_put(gm_buf *b, unsigned c)
{
	if (c < 0x80) {
		gm_buf_addch(b, (int)c);
	} else if (c < 0x800) {
		gm_buf_addch(b, (int)(0xc0 | (c >> 6)));
		gm_buf_addch(b, (int)(0x80 | (c & 0x3f)));
	} else if (c < 0x10000) {
		gm_buf_addch(b, (int)(0xe0 | (c >> 12)));
		gm_buf_addch(b, (int)(0x80 | ((c >> 6) & 0x3f)));
		gm_buf_addch(b, (int)(0x80 | (c & 0x3f)));
	} else {
		gm_buf_addch(b, (int)(0xf0 | (c >> 18)));
		gm_buf_addch(b, (int)(0x80 | ((c >> 12) & 0x3f)));
		gm_buf_addch(b, (int)(0x80 | ((c >> 6) & 0x3f)));
		gm_buf_addch(b, (int)(0x80 | (c & 0x3f)));
	}
}

/* Byte offsets of each code point of s, plus len at the end; *n gets the count. */
static size_t *utf8_offsets(const char *s, size_t len, size_t *n)
{
	size_t *off = gm_xmalloc((len + 1) * sizeof(*off));
	size_t i = 0, k = 0;

	while (i < len) {
		off[k++] = i;
		utf8_next(s, len, &i);
	}
	off[k] = len;
	*n = k;
	return off;
}

static size_t utf8_count(const char *s, size_t len)
{
	size_t i = 0, k = 0;

	while (i < len) {
		utf8_next(s, len, &i);
		k++;
	}
	return k;
}

/* Python's str.isspace() for the code points that matter. */
static int py_isspace(unsigned c)
{
	return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f) || c == 0x85 || c == 0xa0 ||
	       c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
	       c == 0x205f || c == 0x3000;
}

/* ------------------------------------------------------------------ */
/* Lexer */

/*
 * Limits on nesting, so that a hostile template cannot exhaust the stack:
 * brackets in one tag, and the depth of the trees (tags, expressions and
 * chains of operators or filters).
 */
#define MAX_NESTING 100
#define MAX_DEPTH 256

struct lexer {
	const char *src; /* newline-normalized source */
	size_t len, pos;
	int line;
	const char *what;
	gm_error *err;
	struct token *toks;
	size_t ntoks, alloc;
};

static struct token *lex_push(struct lexer *lx, enum tok_type type, int line)
{
	struct token *t;

	if (lx->ntoks == lx->alloc) {
		lx->alloc = lx->alloc ? 2 * lx->alloc : 64;
		lx->toks = gm_xrealloc(lx->toks, lx->alloc * sizeof(*lx->toks));
	}
	t = &lx->toks[lx->ntoks++];
	memset(t, 0, sizeof(*t));
	t->type = type;
	t->line = line;
	return t;
}

static int is_ws(int c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static void count_lines(struct lexer *lx, size_t from, size_t to)
{
	for (; from < to; from++)
		if (lx->src[from] == '\n')
			lx->line++;
}

/*
 * Emits the text src[start..end) that precedes a tag, after the tag's
 * whitespace control: '-' strips all whitespace before it; otherwise, for
 * block and comment tags not marked '+', lstrip_blocks removes the spaces
 * and tabs between the start of the line and the tag.
 */
static void lex_data(struct lexer *lx, size_t start, size_t end, int sign, int lstrip)
{
	size_t e = end;
	int line = lx->line;

	if (sign == '-') {
		while (e > start && is_ws((unsigned char)lx->src[e - 1]))
			e--;
	} else if (sign != '+' && lstrip) {
		size_t l = e;

		while (l > start && lx->src[l - 1] != '\n')
			l--;
		if ((l > start || start == 0 || lx->src[start - 1] == '\n') && l < e) {
			size_t k;

			for (k = l; k < e && is_ws((unsigned char)lx->src[k]); k++)
				;
			if (k == e)
				e = l;
		}
	}
	if (e > start) {
		struct token *t = lex_push(lx, T_DATA, line);

		t->len = e - start;
		t->s = gm_xmalloc(t->len + 1);
		memcpy(t->s, lx->src + start, t->len);
		t->s[t->len] = '\0';
	}
	count_lines(lx, start, end);
}

/* Skips what follows a closing tag: all whitespace after '-', one newline for blocks (trim_blocks). */
static void lex_after_close(struct lexer *lx, int sign, int block)
{
	if (sign == '-') {
		while (lx->pos < lx->len && is_ws((unsigned char)lx->src[lx->pos])) {
			if (lx->src[lx->pos] == '\n')
				lx->line++;
			lx->pos++;
		}
	} else if (sign != '+' && block && lx->pos < lx->len && lx->src[lx->pos] == '\n') {
		lx->pos++;
		lx->line++;
	}
}

static int lex_string(struct lexer *lx)
{
	const char *s = lx->src;
	char q = s[lx->pos];
	size_t i = lx->pos + 1;
	int line = lx->line;
	gm_buf b = GM_BUF_INIT;
	struct token *t;

	while (i < lx->len && s[i] != q) {
		char c = s[i];

		if (c == '\n')
			lx->line++;
		if (c != '\\' || i + 1 >= lx->len) {
			gm_buf_addch(&b, c);
			i++;
			continue;
		}
		c = s[++i];
		i++;
		switch (c) {
		case 'n': gm_buf_addch(&b, '\n'); break;
		case 't': gm_buf_addch(&b, '\t'); break;
		case 'r': gm_buf_addch(&b, '\r'); break;
		case 'a': gm_buf_addch(&b, '\a'); break;
		case 'b': gm_buf_addch(&b, '\b'); break;
		case 'f': gm_buf_addch(&b, '\f'); break;
		case 'v': gm_buf_addch(&b, '\v'); break;
		case '\\': gm_buf_addch(&b, '\\'); break;
		case '\'': gm_buf_addch(&b, '\''); break;
		case '"': gm_buf_addch(&b, '"'); break;
		case '\n': lx->line++; break;
		case 'x': case 'u': case 'U': {
			int n = c == 'x' ? 2 : c == 'u' ? 4 : 8, k;
			unsigned v = 0;

			for (k = 0; k < n; k++) {
				char h = i + k < lx->len ? s[i + k] : '\0';

				if (!isxdigit((unsigned char)h)) {
					gm_buf_release(&b);
					return syntax_error(lx->err, lx->what, lx->line, GM_EFORMAT,
							    "truncated \\%c escape in a string literal", c);
				}
				v = v * 16 + (unsigned)(isdigit((unsigned char)h) ? h - '0' : (tolower((unsigned char)h) - 'a' + 10));
			}
			i += n;
			utf8_put(&b, v);
			break;
		}
		default:
			if (c >= '0' && c <= '7') {
				unsigned v = (unsigned)(c - '0');
				int k;

				for (k = 0; k < 2 && i < lx->len && s[i] >= '0' && s[i] <= '7'; k++)
					v = v * 8 + (unsigned)(s[i++] - '0');
				utf8_put(&b, v);
			} else {
				gm_buf_addch(&b, '\\');
				gm_buf_addch(&b, c);
			}
		}
	}
	if (i >= lx->len) {
		gm_buf_release(&b);
		return syntax_error(lx->err, lx->what, line, GM_EFORMAT, "unterminated string literal");
	}
	t = lex_push(lx, T_STRING, line);
	t->s = gm_buf_detach(&b, &t->len);
	lx->pos = i + 1;
	return 0;
}

static int lex_number(struct lexer *lx)
{
	const char *s = lx->src;
	size_t i = lx->pos;
	int is_float = 0;
	char tmp[128];
	size_t n = 0;
	struct token *t;

	while (i < lx->len && (isdigit((unsigned char)s[i]) || s[i] == '_'))
		i++;
	if (i + 1 < lx->len && s[i] == '.' && isdigit((unsigned char)s[i + 1])) {
		is_float = 1;
		i++;
		while (i < lx->len && (isdigit((unsigned char)s[i]) || s[i] == '_'))
			i++;
	}
	if (i < lx->len && (s[i] == 'e' || s[i] == 'E')) {
		size_t j = i + 1;

		if (j < lx->len && (s[j] == '+' || s[j] == '-'))
			j++;
		if (j < lx->len && isdigit((unsigned char)s[j])) {
			is_float = 1;
			i = j;
			while (i < lx->len && isdigit((unsigned char)s[i]))
				i++;
		}
	}
	if (i - lx->pos >= sizeof(tmp))
		return syntax_error(lx->err, lx->what, lx->line, GM_EFORMAT, "number literal of %zu characters (at most %zu)",
				    i - lx->pos, sizeof(tmp) - 1);
	for (; lx->pos < i; lx->pos++)
		if (s[lx->pos] != '_')
			tmp[n++] = s[lx->pos];
	tmp[n] = '\0';
	lx->pos = i;
	if (!is_float) {
		long long v;

		errno = 0;
		v = strtoll(tmp, NULL, 10);
		if (errno == ERANGE)
			return syntax_error(lx->err, lx->what, lx->line, GM_EFORMAT,
					    "integer literal %.40s%s out of range (64-bit integers)", tmp, n > 40 ? "..." : "");
		t = lex_push(lx, T_INT, lx->line);
		t->ival = v;
		return 0;
	}
	t = lex_push(lx, T_FLOAT, lx->line);
	t->fval = strtod(tmp, NULL);
	return 0;
}

static int lex_op(struct lexer *lx)
{
	static const struct { const char *s; int op; } ops[] = {
		{ "//", OP_FLOORDIV }, { "**", OP_POW }, { "==", OP_EQ }, { "!=", OP_NE },
		{ "<=", OP_LE }, { ">=", OP_GE }, { "+", OP_ADD }, { "-", OP_SUB }, { "*", OP_MUL },
		{ "/", OP_DIV }, { "%", OP_MOD }, { "~", OP_TILDE }, { "<", OP_LT }, { ">", OP_GT },
		{ "=", OP_ASSIGN }, { ".", OP_DOT }, { ",", OP_COMMA }, { ":", OP_COLON }, { "|", OP_PIPE },
		{ "(", OP_LPAREN }, { ")", OP_RPAREN }, { "[", OP_LBRACKET }, { "]", OP_RBRACKET },
		{ "{", OP_LBRACE }, { "}", OP_RBRACE },
	};
	size_t k;

	for (k = 0; k < sizeof(ops) / sizeof(ops[0]); k++) {
		size_t n = strlen(ops[k].s);

		if (lx->pos + n <= lx->len && !memcmp(lx->src + lx->pos, ops[k].s, n)) {
			lex_push(lx, T_OP, lx->line)->op = ops[k].op;
			lx->pos += n;
			return 0;
		}
	}
	return syntax_error(lx->err, lx->what, lx->line, GM_EFORMAT, "unexpected character '%c'", lx->src[lx->pos]);
}

/* Lexes the inside of {{ }} or {% %} up to and including the closing delimiter. */
static int lex_tag(struct lexer *lx, int block, int open_line)
{
	const char *s = lx->src;
	char close = block ? '%' : '}';
	char closers[MAX_NESTING];
	int depth = 0;

	for (;;) {
		while (lx->pos < lx->len && is_ws((unsigned char)s[lx->pos])) {
			if (s[lx->pos] == '\n')
				lx->line++;
			lx->pos++;
		}
		if (lx->pos >= lx->len)
			return syntax_error(lx->err, lx->what, open_line, GM_EFORMAT, "unclosed '%s' tag",
					    block ? "{%" : "{{");
		if (!depth) {
			const char *p = s + lx->pos;
			size_t left = lx->len - lx->pos;
			int sign = 0;

			if (left >= 3 && (p[0] == '-' || (block && p[0] == '+')) && p[1] == close && p[2] == '}')
				sign = p[0];
			if (sign || (left >= 2 && p[0] == close && p[1] == '}')) {
				lex_push(lx, block ? T_BLOCK_END : T_VAR_END, lx->line);
				lx->pos += sign ? 3 : 2;
				lex_after_close(lx, sign, block);
				return 0;
			}
		}
		{
			unsigned char c = (unsigned char)s[lx->pos];
			int ret;

			if (isalpha(c) || c == '_') {
				size_t st = lx->pos;
				struct token *t;

				while (lx->pos < lx->len && (isalnum((unsigned char)s[lx->pos]) || s[lx->pos] == '_'))
					lx->pos++;
				t = lex_push(lx, T_NAME, lx->line);
				t->len = lx->pos - st;
				t->s = gm_xmalloc(t->len + 1);
				memcpy(t->s, s + st, t->len);
				t->s[t->len] = '\0';
				continue;
			}
			if (isdigit(c))
				ret = lex_number(lx);
			else if (c == '\'' || c == '"')
				ret = lex_string(lx);
			else
				ret = lex_op(lx);
			if (ret)
				return ret;
			if (lx->toks[lx->ntoks - 1].type == T_OP) {
				int op = lx->toks[lx->ntoks - 1].op;

				if (op == OP_LPAREN || op == OP_LBRACKET || op == OP_LBRACE) {
					if (depth == MAX_NESTING)
						return syntax_error(lx->err, lx->what, lx->line, GM_EFORMAT,
								    "brackets nested too deeply");
					closers[depth++] = op == OP_LPAREN ? ')' : op == OP_LBRACKET ? ']' : '}';
				} else if (op == OP_RPAREN || op == OP_RBRACKET || op == OP_RBRACE) {
					char closer = op == OP_RPAREN ? ')' : op == OP_RBRACKET ? ']' : '}';

					if (!depth)
						return syntax_error(lx->err, lx->what, lx->line, GM_EFORMAT,
								    "unexpected '%c'", closer);
					if (closers[depth - 1] != closer)
						return syntax_error(lx->err, lx->what, lx->line, GM_EFORMAT,
								    "unexpected '%c', expected '%c'", closer,
								    closers[depth - 1]);
					depth--;
				}
			}
		}
	}
}

/* Matches "{%[-+]?\s*WORD\s*([-+]?%})" at p; returns the length, and the closing sign. */
static size_t match_simple_tag(const char *s, size_t len, size_t p, const char *word, int *open_sign, int *close_sign)
{
	size_t i = p + 2, n = strlen(word);

	if (p + 2 > len || s[p] != '{' || s[p + 1] != '%')
		return 0;
	*open_sign = 0;
	if (i < len && (s[i] == '-' || s[i] == '+'))
		*open_sign = s[i++];
	while (i < len && is_ws((unsigned char)s[i]))
		i++;
	if (i + n > len || memcmp(s + i, word, n) || (i + n < len && (isalnum((unsigned char)s[i + n]) || s[i + n] == '_')))
		return 0;
	i += n;
	while (i < len && is_ws((unsigned char)s[i]))
		i++;
	*close_sign = 0;
	if (i < len && (s[i] == '-' || s[i] == '+'))
		*close_sign = s[i++];
	if (i + 2 > len || s[i] != '%' || s[i + 1] != '}')
		return 0;
	return i + 2 - p;
}

static int lex_raw(struct lexer *lx, size_t tag_len, int close_sign)
{
	size_t p;
	int osign, csign;

	count_lines(lx, lx->pos, lx->pos + tag_len);
	lx->pos += tag_len;
	if (close_sign == '-')
		lex_after_close(lx, '-', 1);
	for (p = lx->pos; p + 1 < lx->len; p++) {
		size_t n = match_simple_tag(lx->src, lx->len, p, "endraw", &osign, &csign);

		if (n) {
			lex_data(lx, lx->pos, p, osign, 1);
			count_lines(lx, p, p + n);
			lx->pos = p + n;
			lex_after_close(lx, csign, 1);
			return 0;
		}
	}
	return syntax_error(lx->err, lx->what, lx->line, GM_EFORMAT, "missing {%% endraw %%}");
}

static int lex(struct lexer *lx)
{
	const char *s = lx->src;

	while (lx->pos < lx->len) {
		size_t p = lx->pos;
		int kind = 0, sign = 0, ret;

		while (p + 1 < lx->len) {
			if (s[p] == '{' && (s[p + 1] == '{' || s[p + 1] == '%' || s[p + 1] == '#')) {
				kind = s[p + 1];
				break;
			}
			p++;
		}
		if (!kind) {
			lex_data(lx, lx->pos, lx->len, 0, 0);
			lx->pos = lx->len;
			break;
		}
		if (p + 2 < lx->len && (s[p + 2] == '-' || s[p + 2] == '+'))
			sign = s[p + 2];
		if (kind == '%') {
			int osign, csign;
			size_t n = match_simple_tag(s, lx->len, p, "raw", &osign, &csign);

			if (n && csign != '+') {
				lex_data(lx, lx->pos, p, sign, 1);
				lx->pos = p;
				if ((ret = lex_raw(lx, n, csign)))
					return ret;
				continue;
			}
		}
		lex_data(lx, lx->pos, p, sign, kind != '{');
		lx->pos = p + 2 + (sign ? 1 : 0);
		if (kind == '#') {
			size_t q;
			int csign = 0, open_line = lx->line;

			for (q = lx->pos; q + 1 < lx->len; q++) {
				if ((s[q] == '-' || s[q] == '+') && q + 2 < lx->len && s[q + 1] == '#' && s[q + 2] == '}') {
					csign = s[q];
					break;
				}
				if (s[q] == '#' && s[q + 1] == '}')
					break;
			}
			if (q + 1 >= lx->len)
				return syntax_error(lx->err, lx->what, open_line, GM_EFORMAT, "unclosed comment");
			count_lines(lx, lx->pos, q);
			lx->pos = q + (csign ? 3 : 2);
			lex_after_close(lx, csign, 1);
			continue;
		}
		lex_push(lx, kind == '%' ? T_BLOCK_BEGIN : T_VAR_BEGIN, lx->line);
		if ((ret = lex_tag(lx, kind == '%', lx->line)))
			return ret;
	}
	lex_push(lx, T_EOF, lx->line);
	return 0;
}

static void free_tokens(struct token *toks, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(toks[i].s);
	free(toks);
}

/* ------------------------------------------------------------------ */
/* Tree construction and destruction */

static struct expr *new_expr(enum expr_kind kind, int line)
{
	struct expr *e = gm_xcalloc(1, sizeof(*e));

	e->kind = kind;
	e->line = line;
	return e;
}

static void free_expr(struct expr *e)
{
	size_t i;

	if (!e)
		return;
	json_object_put(e->value);
	free(e->name);
	free_expr(e->a);
	free_expr(e->b);
	free_expr(e->c);
	free_expr(e->d);
	for (i = 0; i < e->nargs; i++) {
		free_expr(e->args[i]);
		if (e->args2)
			free_expr(e->args2[i]);
	}
	free(e->args);
	free(e->args2);
	free(e->ops);
	for (i = 0; i < e->nkw; i++) {
		free(e->kwnames[i]);
		free_expr(e->kwargs[i]);
	}
	free(e->kwnames);
	free(e->kwargs);
	free(e);
}

static void expr_add_arg(struct expr *e, struct expr *arg)
{
	e->args = gm_xrealloc(e->args, (e->nargs + 1) * sizeof(*e->args));
	e->args[e->nargs++] = arg;
}

static void expr_add_kwarg(struct expr *e, char *name, struct expr *arg)
{
	e->kwnames = gm_xrealloc(e->kwnames, (e->nkw + 1) * sizeof(*e->kwnames));
	e->kwargs = gm_xrealloc(e->kwargs, (e->nkw + 1) * sizeof(*e->kwargs));
	e->kwnames[e->nkw] = name;
	e->kwargs[e->nkw++] = arg;
}

static void free_nodelist(struct nodelist *l);

static void free_node(struct node *n)
{
	size_t i;

	if (!n)
		return;
	free(n->text);
	free_expr(n->expr);
	free_expr(n->filter);
	for (i = 0; i < n->ntargets; i++) {
		free(n->targets[i]);
		if (n->values)
			free_expr(n->values[i]);
	}
	free(n->targets);
	free(n->values);
	free(n->attr);
	free_nodelist(&n->body);
	free_nodelist(&n->orelse);
	free(n);
}

static void free_nodelist(struct nodelist *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free_node(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = l->alloc = 0;
}

static void nodelist_add(struct nodelist *l, struct node *n)
{
	if (l->n == l->alloc) {
		l->alloc = l->alloc ? 2 * l->alloc : 8;
		l->v = gm_xrealloc(l->v, l->alloc * sizeof(*l->v));
	}
	l->v[l->n++] = n;
}

static struct node *new_node(enum node_kind kind, int line)
{
	struct node *n = gm_xcalloc(1, sizeof(*n));

	n->kind = kind;
	n->line = line;
	return n;
}

/* ------------------------------------------------------------------ */
/* Parser */

struct parser {
	struct token *toks;
	size_t pos;
	const char *what;
	gm_error *err;
	int loop_depth;
	int depth;
};

static struct token *cur(struct parser *p)
{
	return &p->toks[p->pos];
}

static struct token *peek(struct parser *p, size_t k)
{
	size_t i = p->pos;

	while (k-- && p->toks[i].type != T_EOF)
		i++;
	return &p->toks[i];
}

static int is_op(struct token *t, int op)
{
	return t->type == T_OP && t->op == op;
}

static int is_name(struct token *t, const char *name)
{
	return t->type == T_NAME && !strcmp(t->s, name);
}

static const char *describe(struct token *t, char *buf, size_t size)
{
	switch (t->type) {
	case T_EOF: return "end of template";
	case T_DATA: return "template text";
	case T_VAR_BEGIN: return "'{{'";
	case T_VAR_END: return "'}}'";
	case T_BLOCK_BEGIN: return "'{%'";
	case T_BLOCK_END: return "'%}'";
	case T_NAME:
		snprintf(buf, size, "'%.50s'", t->s);
		return buf;
	case T_STRING: return "a string";
	case T_INT: return "an integer";
	case T_FLOAT: return "a number";
	case T_OP:
		snprintf(buf, size, "'%s'", op_names[t->op]);
		return buf;
	}
	return "?";
}

static int unexpected(struct parser *p, const char *wanted)
{
	struct token *t = cur(p);
	char buf[64];

	return syntax_error(p->err, p->what, t->line, GM_EFORMAT, "unexpected %s, expected %s",
			    describe(t, buf, sizeof(buf)), wanted);
}

static int expect_op(struct parser *p, int op)
{
	char want[16];

	if (is_op(cur(p), op)) {
		p->pos++;
		return 0;
	}
	snprintf(want, sizeof(want), "'%s'", op_names[op]);
	return unexpected(p, want);
}

static int expect_type(struct parser *p, enum tok_type type, const char *wanted)
{
	if (cur(p)->type == type) {
		p->pos++;
		return 0;
	}
	return unexpected(p, wanted);
}

/* Counts one more level of tree depth; fails past MAX_DEPTH.  The caller undoes it with p->depth--. */
static int enter(struct parser *p)
{
	if (p->depth >= MAX_DEPTH)
		return syntax_error(p->err, p->what, p->toks[p->pos].line, GM_EFORMAT,
				    "template nested too deeply (more than %d levels)", MAX_DEPTH);
	p->depth++;
	return 0;
}

static int parse_expr(struct parser *p, struct expr **out);
static int parse_or(struct parser *p, struct expr **out);
static int parse_unary(struct parser *p, int with_filter, struct expr **out);
static int parse_primary(struct parser *p, struct expr **out);
static int parse_postfix(struct parser *p, struct expr **node);

static int in_list(const char *const *list, const char *s)
{
	for (; *list; list++)
		if (!strcmp(*list, s))
			return 1;
	return 0;
}

/* Parses "(args, name=value)" after the '(' has been seen. */
static int parse_call_args(struct parser *p, struct expr *e)
{
	int ret;

	if ((ret = expect_op(p, OP_LPAREN)))
		return ret;
	while (!is_op(cur(p), OP_RPAREN)) {
		struct expr *arg;

		if (is_op(cur(p), OP_MUL) || is_op(cur(p), OP_POW))
			return syntax_error(p->err, p->what, cur(p)->line, GM_EUNSUPPORTED,
					    "unsupported Jinja construct: *args and **kwargs in calls");
		if (cur(p)->type == T_NAME && is_op(peek(p, 1), OP_ASSIGN)) {
			char *name = gm_xstrdup(cur(p)->s);

			p->pos += 2;
			if ((ret = parse_expr(p, &arg))) {
				free(name);
				return ret;
			}
			expr_add_kwarg(e, name, arg);
		} else {
			if (e->nkw)
				return syntax_error(p->err, p->what, cur(p)->line, GM_EFORMAT,
						    "positional argument after a keyword argument");
			if ((ret = parse_expr(p, &arg)))
				return ret;
			expr_add_arg(e, arg);
		}
		if (is_op(cur(p), OP_COMMA))
			p->pos++;
		else if (!is_op(cur(p), OP_RPAREN))
			return unexpected(p, "',' or ')'");
	}
	p->pos++;
	return 0;
}

static int parse_filter_expr_1(struct parser *p, struct expr **node);

/* Filters, tests and calls after an operand: each wraps *node one level deeper. */
static int parse_filter_expr(struct parser *p, struct expr **node)
{
	int start = p->depth, ret = parse_filter_expr_1(p, node);

	p->depth = start;
	return ret;
}

static int parse_filter_expr_1(struct parser *p, struct expr **node)
{
	int ret;

	for (;;) {
		struct token *t = cur(p);

		if ((is_op(t, OP_PIPE) || is_name(t, "is") || is_op(t, OP_LPAREN)) && (ret = enter(p)))
			return ret;

		if (is_op(t, OP_PIPE)) {
			struct expr *f;

			p->pos++;
			t = cur(p);
			if (t->type != T_NAME)
				return unexpected(p, "a filter name");
			f = new_expr(E_FILTER, t->line);
			f->name = gm_xstrdup(t->s);
			f->a = *node;
			*node = f;
			p->pos++;
			if (is_op(cur(p), OP_LPAREN) && (ret = parse_call_args(p, f)))
				return ret;
		} else if (is_name(t, "is")) {
			struct expr *te = new_expr(E_TEST, t->line);

			te->a = *node;
			*node = te;
			p->pos++;
			if (is_name(cur(p), "not")) {
				te->negate = 1;
				p->pos++;
			}
			t = cur(p);
			if (t->type == T_NAME) {
				te->name = gm_xstrdup(t->s);
			} else if (t->type == T_OP && (t->op == OP_EQ || t->op == OP_NE || t->op == OP_LT ||
						       t->op == OP_LE || t->op == OP_GT || t->op == OP_GE)) {
				te->name = gm_xstrdup(op_names[t->op]);
			} else {
				return unexpected(p, "a test name");
			}
			p->pos++;
			t = cur(p);
			if (is_op(t, OP_LPAREN)) {
				if ((ret = parse_call_args(p, te)))
					return ret;
			} else if ((t->type == T_NAME || t->type == T_STRING || t->type == T_INT || t->type == T_FLOAT ||
				    is_op(t, OP_LPAREN) || is_op(t, OP_LBRACKET) || is_op(t, OP_LBRACE)) &&
				   !is_name(t, "else") && !is_name(t, "or") && !is_name(t, "and")) {
				struct expr *arg;

				if (is_name(t, "is"))
					return syntax_error(p->err, p->what, t->line, GM_EFORMAT,
							    "tests cannot be chained with 'is'");
				if ((ret = parse_primary(p, &arg)))
					return ret;
				expr_add_arg(te, arg);
				if ((ret = parse_postfix(p, &te->args[te->nargs - 1])))
					return ret;
			}
		} else if (is_op(t, OP_LPAREN)) {
			struct expr *c = new_expr(E_CALL, t->line);

			c->a = *node;
			*node = c;
			if ((ret = parse_call_args(p, c)))
				return ret;
		} else {
			return 0;
		}
	}
}

static int parse_postfix_1(struct parser *p, struct expr **node);

/* Attribute, item and call suffixes: each wraps *node one level deeper. */
static int parse_postfix(struct parser *p, struct expr **node)
{
	int start = p->depth, ret = parse_postfix_1(p, node);

	p->depth = start;
	return ret;
}

static int parse_postfix_1(struct parser *p, struct expr **node)
{
	int ret;

	for (;;) {
		struct token *t = cur(p);

		if ((is_op(t, OP_DOT) || is_op(t, OP_LBRACKET) || is_op(t, OP_LPAREN)) && (ret = enter(p)))
			return ret;

		if (is_op(t, OP_DOT)) {
			struct expr *e;

			p->pos++;
			t = cur(p);
			if (t->type == T_NAME) {
				e = new_expr(E_ATTR, t->line);
				e->name = gm_xstrdup(t->s);
			} else if (t->type == T_INT) {
				e = new_expr(E_ITEM, t->line);
				e->b = new_expr(E_CONST, t->line);
				e->b->value = json_object_new_int64(t->ival);
			} else {
				return unexpected(p, "an attribute name");
			}
			p->pos++;
			e->a = *node;
			*node = e;
		} else if (is_op(t, OP_LBRACKET)) {
			struct expr *e, *parts[3] = { NULL, NULL, NULL };
			int k = 0, is_slice = 0;

			p->pos++;
			for (;;) {
				if (!is_op(cur(p), OP_COLON) && !is_op(cur(p), OP_RBRACKET)) {
					if ((ret = parse_expr(p, &parts[k]))) {
						free_expr(parts[0]);
						free_expr(parts[1]);
						free_expr(parts[2]);
						return ret;
					}
				}
				if (is_op(cur(p), OP_COLON) && k < 2) {
					is_slice = 1;
					k++;
					p->pos++;
					continue;
				}
				break;
			}
			if (!is_op(cur(p), OP_RBRACKET) || (!is_slice && !parts[0])) {
				free_expr(parts[0]);
				free_expr(parts[1]);
				free_expr(parts[2]);
				return unexpected(p, "']'");
			}
			p->pos++;
			e = new_expr(is_slice ? E_SLICE : E_ITEM, t->line);
			e->a = *node;
			if (is_slice) {
				e->b = parts[0];
				e->c = parts[1];
				e->d = parts[2];
			} else {
				e->b = parts[0];
			}
			*node = e;
		} else if (is_op(t, OP_LPAREN)) {
			struct expr *c = new_expr(E_CALL, t->line);

			c->a = *node;
			*node = c;
			if ((ret = parse_call_args(p, c)))
				return ret;
		} else {
			return 0;
		}
	}
}

static int parse_primary(struct parser *p, struct expr **out)
{
	struct token *t = cur(p);
	struct expr *e;
	int ret;

	*out = NULL;
	switch (t->type) {
	case T_NAME:
		if (!strcmp(t->s, "true") || !strcmp(t->s, "True") || !strcmp(t->s, "false") ||
		    !strcmp(t->s, "False")) {
			e = new_expr(E_CONST, t->line);
			e->value = json_object_new_boolean(t->s[0] == 't' || t->s[0] == 'T');
		} else if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) {
			e = new_expr(E_CONST, t->line);
		} else {
			e = new_expr(E_NAME, t->line);
			e->name = gm_xstrdup(t->s);
		}
		p->pos++;
		break;
	case T_STRING: {
		gm_buf b = GM_BUF_INIT;
		int line = t->line;

		while (cur(p)->type == T_STRING) {
			gm_buf_add(&b, cur(p)->s, cur(p)->len);
			p->pos++;
		}
		e = new_expr(E_CONST, line);
		e->value = json_object_new_string_len(b.buf, (int)b.len);
		gm_buf_release(&b);
		break;
	}
	case T_INT:
		e = new_expr(E_CONST, t->line);
		e->value = json_object_new_int64(t->ival);
		p->pos++;
		break;
	case T_FLOAT:
		e = new_expr(E_CONST, t->line);
		e->value = gm_json_new_double(t->fval);
		p->pos++;
		break;
	case T_OP:
		if (t->op == OP_LPAREN) {
			struct expr *first = NULL;

			p->pos++;
			if (is_op(cur(p), OP_RPAREN)) {
				p->pos++;
				*out = new_expr(E_TUPLE, t->line);
				return 0;
			}
			if ((ret = parse_expr(p, &first)))
				return ret;
			if (is_op(cur(p), OP_RPAREN)) {
				p->pos++;
				*out = first;
				return 0;
			}
			e = new_expr(E_TUPLE, t->line);
			expr_add_arg(e, first);
			while (is_op(cur(p), OP_COMMA)) {
				struct expr *item;

				p->pos++;
				if (is_op(cur(p), OP_RPAREN))
					break;
				if ((ret = parse_expr(p, &item))) {
					free_expr(e);
					return ret;
				}
				expr_add_arg(e, item);
			}
			if ((ret = expect_op(p, OP_RPAREN))) {
				free_expr(e);
				return ret;
			}
			break;
		}
		if (t->op == OP_LBRACKET) {
			e = new_expr(E_LIST, t->line);
			p->pos++;
			while (!is_op(cur(p), OP_RBRACKET)) {
				struct expr *item;

				if ((ret = parse_expr(p, &item))) {
					free_expr(e);
					return ret;
				}
				expr_add_arg(e, item);
				if (is_op(cur(p), OP_COMMA))
					p->pos++;
				else if (!is_op(cur(p), OP_RBRACKET)) {
					free_expr(e);
					return unexpected(p, "',' or ']'");
				}
			}
			p->pos++;
			break;
		}
		if (t->op == OP_LBRACE) {
			e = new_expr(E_DICT, t->line);
			p->pos++;
			while (!is_op(cur(p), OP_RBRACE)) {
				struct expr *k, *v;

				if ((ret = parse_expr(p, &k))) {
					free_expr(e);
					return ret;
				}
				if ((ret = expect_op(p, OP_COLON)) || (ret = parse_expr(p, &v))) {
					free_expr(k);
					free_expr(e);
					return ret;
				}
				e->args2 = gm_xrealloc(e->args2, (e->nargs + 1) * sizeof(*e->args2));
				e->args2[e->nargs] = v;
				expr_add_arg(e, k);
				if (is_op(cur(p), OP_COMMA))
					p->pos++;
				else if (!is_op(cur(p), OP_RBRACE)) {
					free_expr(e);
					return unexpected(p, "',' or '}'");
				}
			}
			p->pos++;
			break;
		}
		return unexpected(p, "an expression");
	default:
		return unexpected(p, "an expression");
	}
	*out = e;
	return 0;
}

static int parse_unary(struct parser *p, int with_filter, struct expr **out)
{
	struct token *t = cur(p);
	int ret;

	/* Callers free *out when this fails (parse_pow...): it must not be left
	 * as their uninitialized variable (found by fuzz-chat-template). */
	*out = NULL;
	if (is_op(t, OP_SUB) || is_op(t, OP_ADD)) {
		struct expr *e = new_expr(E_UNARY, t->line);

		e->op = t->op == OP_SUB ? OP_NEG : OP_POS;
		p->pos++;
		if ((ret = enter(p))) {
			free_expr(e);
			return ret;
		}
		ret = parse_unary(p, 0, &e->a);
		p->depth--;
		if (ret) {
			free_expr(e);
			return ret;
		}
		*out = e;
	} else if ((ret = parse_primary(p, out))) {
		return ret;
	}
	if ((ret = parse_postfix(p, out)) || (with_filter && (ret = parse_filter_expr(p, out)))) {
		free_expr(*out);
		*out = NULL;
	}
	return ret;
}

typedef int (*parse_fn)(struct parser *p, struct expr **out);

/* Left-associative binary levels: ops lists the operators of the level. */
static int parse_binary(struct parser *p, struct expr **out, parse_fn next, const int *ops, enum expr_kind kind)
{
	int ret = next(p, out), wraps = 0;

	while (!ret) {
		struct token *t = cur(p);
		const int *o;
		struct expr *e;

		for (o = ops; *o && !is_op(t, *o); o++)
			;
		if (!*o || (ret = enter(p)))
			break;
		wraps++;
		p->pos++;
		e = new_expr(kind, t->line);
		e->op = *o;
		e->a = *out;
		*out = e;
		ret = next(p, &e->b);
	}
	p->depth -= wraps;
	if (ret) {
		free_expr(*out);
		*out = NULL;
	}
	return ret;
}

static int parse_pow(struct parser *p, struct expr **out)
{
	int ret = parse_unary(p, 1, out), wraps = 0;

	while (!ret && is_op(cur(p), OP_POW) && !(ret = enter(p))) {
		struct expr *e = new_expr(E_BINARY, cur(p)->line);

		wraps++;
		e->op = OP_POW;
		e->a = *out;
		*out = e;
		p->pos++;
		ret = parse_unary(p, 1, &e->b);
	}
	p->depth -= wraps;
	if (ret) {
		free_expr(*out);
		*out = NULL;
	}
	return ret;
}

static int parse_math2(struct parser *p, struct expr **out)
{
	static const int ops[] = { OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, 0 };

	return parse_binary(p, out, parse_pow, ops, E_BINARY);
}

static int parse_concat(struct parser *p, struct expr **out)
{
	static const int ops[] = { OP_TILDE, 0 };

	return parse_binary(p, out, parse_math2, ops, E_CONCAT);
}

static int parse_math1(struct parser *p, struct expr **out)
{
	static const int ops[] = { OP_ADD, OP_SUB, 0 };

	return parse_binary(p, out, parse_concat, ops, E_BINARY);
}

static int parse_compare(struct parser *p, struct expr **out)
{
	struct expr *first = NULL, *e = NULL;
	int ret = parse_math1(p, &first);

	if (ret)
		return ret;
	for (;;) {
		struct token *t = cur(p);
		int op = 0;
		struct expr *rhs = NULL;

		if (t->type == T_OP && (t->op == OP_EQ || t->op == OP_NE || t->op == OP_LT || t->op == OP_LE ||
					t->op == OP_GT || t->op == OP_GE)) {
			op = t->op;
			p->pos++;
		} else if (is_name(t, "in")) {
			op = OP_IN;
			p->pos++;
		} else if (is_name(t, "not") && is_name(peek(p, 1), "in")) {
			op = OP_NOTIN;
			p->pos += 2;
		} else {
			break;
		}
		if (!e) {
			e = new_expr(E_COMPARE, t->line);
			expr_add_arg(e, first);
		}
		if ((ret = parse_math1(p, &rhs))) {
			free_expr(e);
			*out = NULL;
			return ret;
		}
		e->ops = gm_xrealloc(e->ops, e->nargs * sizeof(*e->ops));
		e->ops[e->nargs - 1] = op;
		expr_add_arg(e, rhs);
	}
	*out = e ? e : first;
	return 0;
}

static int parse_not(struct parser *p, struct expr **out)
{
	struct token *t = cur(p);

	if (is_name(t, "not")) {
		struct expr *e = new_expr(E_UNARY, t->line);
		int ret;

		e->op = OP_NOT;
		p->pos++;
		if ((ret = enter(p))) {
			free_expr(e);
			*out = NULL;
			return ret;
		}
		ret = parse_not(p, &e->a);
		p->depth--;
		if (ret) {
			free_expr(e);
			*out = NULL;
			return ret;
		}
		*out = e;
		return 0;
	}
	return parse_compare(p, out);
}

static int parse_logic(struct parser *p, struct expr **out, parse_fn next, const char *word, enum expr_kind kind)
{
	int ret = next(p, out), wraps = 0;

	while (!ret && is_name(cur(p), word) && !(ret = enter(p))) {
		struct expr *e = new_expr(kind, cur(p)->line);

		wraps++;
		p->pos++;
		e->a = *out;
		*out = e;
		ret = next(p, &e->b);
	}
	p->depth -= wraps;
	if (ret) {
		free_expr(*out);
		*out = NULL;
	}
	return ret;
}

static int parse_and(struct parser *p, struct expr **out)
{
	return parse_logic(p, out, parse_not, "and", E_AND);
}

static int parse_or(struct parser *p, struct expr **out)
{
	return parse_logic(p, out, parse_and, "or", E_OR);
}

/* On failure *out is freed and NULL; on success the caller owns it. */
static int parse_expr_cond(struct parser *p, struct expr **out, int with_condexpr)
{
	int ret, start = p->depth;

	*out = NULL;
	if ((ret = enter(p)))
		return ret;
	ret = parse_or(p, out);
	while (!ret && with_condexpr && is_name(cur(p), "if") && !(ret = enter(p))) {
		struct expr *e = new_expr(E_COND, cur(p)->line);

		p->pos++;
		e->a = *out;
		*out = e;
		ret = parse_or(p, &e->c);
		if (!ret && is_name(cur(p), "else")) {
			p->pos++;
			ret = parse_expr_cond(p, &e->b, 1);
		}
	}
	if (ret) {
		free_expr(*out);
		*out = NULL;
	}
	p->depth = start;
	return ret;
}

static int parse_expr(struct parser *p, struct expr **out)
{
	return parse_expr_cond(p, out, 1);
}

/* An expression, or several separated by commas (a tuple without parentheses). */
static int parse_tuple(struct parser *p, struct expr **out, int with_condexpr)
{
	struct expr *first, *e;
	int ret = parse_expr_cond(p, &first, with_condexpr);

	if (ret)
		return ret;
	if (!is_op(cur(p), OP_COMMA)) {
		*out = first;
		return 0;
	}
	e = new_expr(E_TUPLE, first->line);
	expr_add_arg(e, first);
	while (is_op(cur(p), OP_COMMA)) {
		struct expr *item;

		p->pos++;
		if (cur(p)->type == T_BLOCK_END || cur(p)->type == T_VAR_END || is_name(cur(p), "if"))
			break;
		if ((ret = parse_expr_cond(p, &item, with_condexpr))) {
			free_expr(e);
			return ret;
		}
		expr_add_arg(e, item);
	}
	*out = e;
	return 0;
}

static int parse_nodes(struct parser *p, const char *const *ends, const char *opener, int open_line,
		       struct nodelist *out);

static int expect_block_end(struct parser *p)
{
	return expect_type(p, T_BLOCK_END, "'%}'");
}

/* After "{% if cond" (or elif); consumes through the matching endif. */
static int parse_if(struct parser *p, struct node *n)
{
	static const char *const ends[] = { "elif", "else", "endif", NULL };
	int ret;

	if ((ret = parse_tuple(p, &n->expr, 1)) || (ret = expect_block_end(p)) ||
	    (ret = parse_nodes(p, ends, "if", n->line, &n->body)))
		return ret;
	if (is_name(cur(p), "elif")) {
		struct node *e = new_node(N_IF, cur(p)->line);

		p->pos++;
		nodelist_add(&n->orelse, e);
		if ((ret = enter(p)))
			return ret;
		ret = parse_if(p, e);
		p->depth--;
		return ret;
	}
	if (is_name(cur(p), "else")) {
		static const char *const ends2[] = { "endif", NULL };

		p->pos++;
		if ((ret = expect_block_end(p)) || (ret = parse_nodes(p, ends2, "if", n->line, &n->orelse)))
			return ret;
	}
	p->pos++; /* endif */
	return expect_block_end(p);
}

static int parse_target_names(struct parser *p, struct node *n, const char *what)
{
	do {
		if (n->ntargets && !is_op(cur(p), OP_COMMA))
			break;
		if (n->ntargets)
			p->pos++;
		if (cur(p)->type != T_NAME)
			return unexpected(p, what);
		n->targets = gm_xrealloc(n->targets, (n->ntargets + 1) * sizeof(*n->targets));
		n->targets[n->ntargets++] = gm_xstrdup(cur(p)->s);
		p->pos++;
	} while (is_op(cur(p), OP_COMMA));
	return 0;
}

static int parse_for(struct parser *p, struct node *n)
{
	static const char *const ends[] = { "else", "endfor", NULL };
	static const char *const ends2[] = { "endfor", NULL };
	int ret;

	if (is_op(cur(p), OP_LPAREN))
		return syntax_error(p->err, p->what, cur(p)->line, GM_EUNSUPPORTED,
				    "unsupported Jinja construct: parenthesized for-loop targets");
	if ((ret = parse_target_names(p, n, "a loop variable name")))
		return ret;
	if (!is_name(cur(p), "in"))
		return unexpected(p, "'in'");
	p->pos++;
	if ((ret = parse_tuple(p, &n->expr, 0)))
		return ret;
	if (is_name(cur(p), "if")) {
		p->pos++;
		if ((ret = parse_expr(p, &n->filter)))
			return ret;
	}
	if (is_name(cur(p), "recursive"))
		return syntax_error(p->err, p->what, cur(p)->line, GM_EUNSUPPORTED,
				    "unsupported Jinja construct: recursive for loops");
	if ((ret = expect_block_end(p)))
		return ret;
	p->loop_depth++;
	ret = parse_nodes(p, ends, "for", n->line, &n->body);
	p->loop_depth--;
	if (ret)
		return ret;
	if (is_name(cur(p), "else")) {
		p->pos++;
		if ((ret = expect_block_end(p)) || (ret = parse_nodes(p, ends2, "for", n->line, &n->orelse)))
			return ret;
	}
	p->pos++;
	return expect_block_end(p);
}

/* "NAME[(args)] (| NAME[(args)])*" applied to the FILTER_ARG placeholder, as filter blocks write it. */
static int parse_filter_chain(struct parser *p, struct expr **out)
{
	struct expr *e = new_expr(E_NAME, cur(p)->line);
	int ret = 0;

	e->name = gm_xstrdup(FILTER_ARG);
	for (;;) {
		struct token *t = cur(p);
		struct expr *f;

		if (t->type != T_NAME) {
			ret = unexpected(p, "a filter name");
			break;
		}
		f = new_expr(E_FILTER, t->line);
		f->name = gm_xstrdup(t->s);
		f->a = e;
		e = f;
		p->pos++;
		if (is_op(cur(p), OP_LPAREN) && (ret = parse_call_args(p, f)))
			break;
		if (!is_op(cur(p), OP_PIPE))
			break;
		p->pos++;
	}
	if (ret) {
		free_expr(e);
		return ret;
	}
	*out = e;
	return 0;
}

/* "(name, name=default, ...)" of a macro or call block, into n->targets and n->values. */
static int parse_params(struct parser *p, struct node *n)
{
	int ret;

	if ((ret = expect_op(p, OP_LPAREN)))
		return ret;
	while (!is_op(cur(p), OP_RPAREN)) {
		if (n->ntargets && (ret = expect_op(p, OP_COMMA)))
			return ret;
		if (is_op(cur(p), OP_RPAREN))
			break;
		if (cur(p)->type != T_NAME)
			return unexpected(p, "a parameter name");
		n->targets = gm_xrealloc(n->targets, (n->ntargets + 1) * sizeof(*n->targets));
		n->values = gm_xrealloc(n->values, (n->ntargets + 1) * sizeof(*n->values));
		n->targets[n->ntargets] = gm_xstrdup(cur(p)->s);
		n->values[n->ntargets++] = NULL;
		p->pos++;
		if (is_op(cur(p), OP_ASSIGN)) {
			p->pos++;
			if ((ret = parse_expr(p, &n->values[n->ntargets - 1])))
				return ret;
		} else if (n->ntargets > 1 && n->values[n->ntargets - 2]) {
			return syntax_error(p->err, p->what, cur(p)->line, GM_EFORMAT,
					    "non-default argument follows default argument");
		}
	}
	p->pos++;
	return 0;
}

/* After "{% macro": name(params) %} body {% endmacro %}. */
static int parse_macro(struct parser *p, struct node *n)
{
	static const char *const ends[] = { "endmacro", NULL };
	int ret, loops;

	if (cur(p)->type != T_NAME)
		return unexpected(p, "a macro name");
	n->attr = gm_xstrdup(cur(p)->s);
	p->pos++;
	if ((ret = parse_params(p, n)) || (ret = expect_block_end(p)))
		return ret;
	loops = p->loop_depth; /* a macro body is not inside the loop around it */
	p->loop_depth = 0;
	ret = parse_nodes(p, ends, "macro", n->line, &n->body);
	p->loop_depth = loops;
	if (ret)
		return ret;
	p->pos++;
	return expect_block_end(p);
}

/* After "{% call": [(params)] macro(args) %} body {% endcall %}. */
static int parse_callblock(struct parser *p, struct node *n)
{
	static const char *const ends[] = { "endcall", NULL };
	int ret;

	if (is_op(cur(p), OP_LPAREN) && (ret = parse_params(p, n)))
		return ret;
	if ((ret = parse_expr(p, &n->expr)))
		return ret;
	if (n->expr->kind != E_CALL)
		return syntax_error(p->err, p->what, n->line, GM_EFORMAT, "{%% call %%} expects a macro call");
	if ((ret = expect_block_end(p)) || (ret = parse_nodes(p, ends, "call", n->line, &n->body)))
		return ret;
	p->pos++;
	return expect_block_end(p);
}

/* After "{% filter": chain %} body {% endfilter %}. */
static int parse_filterblock(struct parser *p, struct node *n)
{
	static const char *const ends[] = { "endfilter", NULL };
	int ret;

	if ((ret = parse_filter_chain(p, &n->filter)) || (ret = expect_block_end(p)) ||
	    (ret = parse_nodes(p, ends, "filter", n->line, &n->body)))
		return ret;
	p->pos++;
	return expect_block_end(p);
}

static int parse_set(struct parser *p, struct node *n)
{
	int ret;

	if ((ret = parse_target_names(p, n, "a variable name")))
		return ret;
	if (n->ntargets == 1 && is_op(cur(p), OP_DOT)) {
		p->pos++;
		if (cur(p)->type != T_NAME)
			return unexpected(p, "an attribute name");
		n->attr = gm_xstrdup(cur(p)->s);
		p->pos++;
	}
	if (is_op(cur(p), OP_ASSIGN)) {
		p->pos++;
		if ((ret = parse_tuple(p, &n->expr, 1)))
			return ret;
		return expect_block_end(p);
	}
	if (cur(p)->type == T_BLOCK_END && n->ntargets == 1 && !n->attr) {
		static const char *const ends[] = { "endset", NULL };

		n->kind = N_SET_BLOCK;
		p->pos++;
		if ((ret = parse_nodes(p, ends, "set", n->line, &n->body)))
			return ret;
		p->pos++;
		return expect_block_end(p);
	}
	if (is_op(cur(p), OP_PIPE) && n->ntargets == 1 && !n->attr) {
		static const char *const ends[] = { "endset", NULL };

		p->pos++;
		if ((ret = parse_filter_chain(p, &n->filter)) || (ret = expect_block_end(p)))
			return ret;
		n->kind = N_SET_BLOCK;
		if ((ret = parse_nodes(p, ends, "set", n->line, &n->body)))
			return ret;
		p->pos++;
		return expect_block_end(p);
	}
	return unexpected(p, "'='");
}

static int parse_with(struct parser *p, struct node *n)
{
	static const char *const ends[] = { "endwith", NULL };
	int ret;

	while (cur(p)->type != T_BLOCK_END) {
		struct expr *v;

		if (n->ntargets && (ret = expect_op(p, OP_COMMA)))
			return ret;
		if (cur(p)->type != T_NAME)
			return unexpected(p, "a variable name");
		n->targets = gm_xrealloc(n->targets, (n->ntargets + 1) * sizeof(*n->targets));
		n->values = gm_xrealloc(n->values, (n->ntargets + 1) * sizeof(*n->values));
		n->targets[n->ntargets] = gm_xstrdup(cur(p)->s);
		n->values[n->ntargets++] = NULL;
		p->pos++;
		if ((ret = expect_op(p, OP_ASSIGN)) || (ret = parse_expr(p, &v)))
			return ret;
		n->values[n->ntargets - 1] = v;
	}
	p->pos++;
	if ((ret = parse_nodes(p, ends, "with", n->line, &n->body)))
		return ret;
	p->pos++;
	return expect_block_end(p);
}

static int parse_tag(struct parser *p, struct token *t, struct node **np);

static int parse_statement(struct parser *p, struct nodelist *out)
{
	struct token *t = cur(p);
	struct node *n;
	int ret;

	if (t->type != T_NAME)
		return unexpected(p, "a tag name");
	if ((ret = enter(p)))
		return ret;
	ret = parse_tag(p, t, &n);
	p->depth--;
	if (ret)
		return ret;
	nodelist_add(out, n);
	return 0;
}

/* Parses the tag named t (after its '{%'); *n gets the node. */
static int parse_tag(struct parser *p, struct token *t, struct node **np)
{
	struct node *n;
	int ret;

	*np = NULL;
	if (!strcmp(t->s, "if")) {
		n = new_node(N_IF, t->line);
		p->pos++;
		ret = parse_if(p, n);
	} else if (!strcmp(t->s, "for")) {
		n = new_node(N_FOR, t->line);
		p->pos++;
		ret = parse_for(p, n);
	} else if (!strcmp(t->s, "set")) {
		n = new_node(N_SET, t->line);
		p->pos++;
		ret = parse_set(p, n);
	} else if (!strcmp(t->s, "with")) {
		n = new_node(N_WITH, t->line);
		p->pos++;
		ret = parse_with(p, n);
	} else if (!strcmp(t->s, "generation")) {
		/* transformers' {% generation %} marks assistant text; it renders its body. */
		static const char *const ends[] = { "endgeneration", NULL };

		n = new_node(N_BODY, t->line);
		p->pos++;
		ret = expect_block_end(p);
		if (!ret)
			ret = parse_nodes(p, ends, "generation", n->line, &n->body);
		if (!ret) {
			p->pos++;
			ret = expect_block_end(p);
		}
	} else if (!strcmp(t->s, "break") || !strcmp(t->s, "continue")) {
		if (!p->loop_depth)
			return syntax_error(p->err, p->what, t->line, GM_EFORMAT, "'%s' outside a for loop", t->s);
		n = new_node(t->s[0] == 'b' ? N_BREAK : N_CONTINUE, t->line);
		p->pos++;
		ret = expect_block_end(p);
	} else if (!strcmp(t->s, "macro")) {
		n = new_node(N_MACRO, t->line);
		p->pos++;
		ret = parse_macro(p, n);
	} else if (!strcmp(t->s, "call")) {
		n = new_node(N_CALLBLOCK, t->line);
		p->pos++;
		ret = parse_callblock(p, n);
	} else if (!strcmp(t->s, "filter")) {
		n = new_node(N_FILTER, t->line);
		p->pos++;
		ret = parse_filterblock(p, n);
	} else if (!strcmp(t->s, "include") || !strcmp(t->s, "import") || !strcmp(t->s, "from") ||
		   !strcmp(t->s, "extends") || !strcmp(t->s, "block") || !strcmp(t->s, "autoescape") ||
		   !strcmp(t->s, "do") || !strcmp(t->s, "trans")) {
		return syntax_error(p->err, p->what, t->line, GM_EUNSUPPORTED, "unsupported Jinja tag '%s'", t->s);
	} else {
		return syntax_error(p->err, p->what, t->line, GM_EFORMAT, "unknown tag '%s'", t->s);
	}
	if (ret) {
		free_node(n);
		return ret;
	}
	*np = n;
	return 0;
}

static const char *last_of(const char *const *list)
{
	while (list[1])
		list++;
	return *list;
}

/*
 * Parses nodes into out until a block tag whose name is in ends (left as
 * the current token, after its '{%'), or the end of the template when ends
 * is NULL.
 */
static int parse_nodes(struct parser *p, const char *const *ends, const char *opener, int open_line,
		       struct nodelist *out)
{
	int ret;

	for (;;) {
		struct token *t = cur(p);

		switch (t->type) {
		case T_EOF:
			if (ends)
				return syntax_error(p->err, p->what, open_line, GM_EFORMAT,
						    "'%s' tag is never closed (missing {%% %s %%})", opener,
						    last_of(ends));
			return 0;
		case T_DATA: {
			struct node *n = new_node(N_DATA, t->line);

			n->text = t->s;
			n->len = t->len;
			t->s = NULL;
			nodelist_add(out, n);
			p->pos++;
			break;
		}
		case T_VAR_BEGIN: {
			struct node *n = new_node(N_OUTPUT, t->line);

			p->pos++;
			if ((ret = parse_tuple(p, &n->expr, 1)) || (ret = expect_type(p, T_VAR_END, "'}}'"))) {
				free_node(n);
				return ret;
			}
			nodelist_add(out, n);
			break;
		}
		case T_BLOCK_BEGIN: {
			struct token *name = peek(p, 1);

			if (name->type == T_NAME && ends && in_list(ends, name->s)) {
				p->pos++;
				return 0;
			}
			if (name->type == T_NAME && (!strncmp(name->s, "end", 3) || !strcmp(name->s, "else") ||
						     !strcmp(name->s, "elif")))
				return syntax_error(p->err, p->what, name->line, GM_EFORMAT, "unexpected '%s' tag%s%s",
						    name->s, ends ? ", expected " : "", ends ? last_of(ends) : "");
			p->pos++;
			if ((ret = parse_statement(p, out)))
				return ret;
			break;
		}
		default:
			return unexpected(p, "template text or a tag");
		}
	}
}

int gm_jinja_parse(const char *src, size_t len, const char *what, gm_jinja_template **out, gm_error *err)
{
	struct lexer lx;
	struct parser p;
	gm_buf norm = GM_BUF_INIT;
	gm_jinja_template *t;
	size_t i;
	int ret;

	*out = NULL;
	if (!what)
		what = "template";
	/* Newlines are normalized to \n and one trailing newline dropped (keep_trailing_newline=False). */
	for (i = 0; i < len; i++) {
		if (src[i] == '\r') {
			gm_buf_addch(&norm, '\n');
			if (i + 1 < len && src[i + 1] == '\n')
				i++;
		} else {
			gm_buf_addch(&norm, src[i]);
		}
	}
	if (norm.len && norm.buf[norm.len - 1] == '\n')
		norm.buf[--norm.len] = '\0';

	memset(&lx, 0, sizeof(lx));
	lx.src = norm.buf;
	lx.len = norm.len;
	lx.line = 1;
	lx.what = what;
	lx.err = err;
	ret = lex(&lx);
	gm_buf_release(&norm);
	if (ret) {
		free_tokens(lx.toks, lx.ntoks);
		return ret;
	}

	t = gm_xcalloc(1, sizeof(*t));
	t->what = gm_xstrdup(what);
	memset(&p, 0, sizeof(p));
	p.toks = lx.toks;
	p.what = what;
	p.err = err;
	ret = parse_nodes(&p, NULL, NULL, 0, &t->root);
	free_tokens(lx.toks, lx.ntoks);
	if (ret) {
		gm_jinja_free(t);
		return ret;
	}
	*out = t;
	return 0;
}

void gm_jinja_free(gm_jinja_template *t)
{
	if (!t)
		return;
	free_nodelist(&t->root);
	free(t->what);
	free(t);
}

/* ------------------------------------------------------------------ */
/* Values */

enum val_kind { V_UNDEF, V_JSON, V_NS, V_FUNC, V_MACRO, V_CALLER };

/*
 * A value: JSON (NULL is None), Undefined (with the name it was looked up
 * by), a namespace, one of the global functions (named by name), a macro,
 * or the caller() of a {% call %} block.
 */
struct val {
	enum val_kind kind;
	json_object *j;   /* one owned reference */
	const char *name; /* V_UNDEF: what was undefined; V_FUNC, V_MACRO: the function (borrowed) */
	const struct node *node; /* V_MACRO: the {% macro %}; V_CALLER: the {% call %} block */
	size_t scope;     /* V_MACRO: the scope it was defined in; V_CALLER: the innermost scope at the
			     {% call %}; what the body sees beyond its own variables */
	/*
	 * A string marked safe (markupsafe's Markup, made by |safe and
	 * |escape): as in Python, Markup + str escapes the str and stays Markup.
	 */
	int safe;
};

static const char *const global_functions[] = {
	"dict", "namespace", "raise_exception", "range", "strftime_now", NULL
};

#define VAL_UNDEF ((struct val){ .kind = V_UNDEF })

static struct val val_own(json_object *j)
{
	struct val v = { .kind = V_JSON, .j = j };

	return v;
}

static struct val val_borrow(json_object *j)
{
	return val_own(json_object_get(j));
}

static struct val val_undef(const char *name)
{
	struct val v = { .kind = V_UNDEF, .name = name };

	return v;
}

static void val_clear(struct val *v)
{
	json_object_put(v->j);
	*v = VAL_UNDEF;
}

static struct val val_copy(const struct val *v)
{
	struct val c = *v;

	json_object_get(c.j);
	return c;
}

/* The JSON form of v, consuming v (Undefined becomes null). */
static json_object *val_to_json(struct val *v)
{
	json_object *j = v->j;

	v->j = NULL;
	v->kind = V_UNDEF;
	return j;
}

static struct val val_str(const char *s, size_t len)
{
	return val_own(json_object_new_string_len(s, (int)len));
}

static struct val val_buf(gm_buf *b)
{
	struct val v = val_str(b->buf, b->len);

	gm_buf_release(b);
	return v;
}

static struct val val_int(int64_t i)
{
	return val_own(json_object_new_int64(i));
}

static struct val val_bool(int b)
{
	return val_own(json_object_new_boolean(b));
}

static int jtype(const struct val *v, json_type t)
{
	return v->kind == V_JSON && v->j && json_object_get_type(v->j) == t;
}

#define is_undef(v) ((v)->kind == V_UNDEF)
#define is_fn(v) ((v)->kind >= V_FUNC)
#define is_none(v) ((v)->kind == V_JSON && !(v)->j)
#define is_str(v) jtype((v), json_type_string)
#define is_list(v) jtype((v), json_type_array)
#define is_dict(v) jtype((v), json_type_object)
#define is_bool(v) jtype((v), json_type_boolean)
#define is_int(v) jtype((v), json_type_int)
#define is_float(v) jtype((v), json_type_double)
#define is_intlike(v) (is_int(v) || is_bool(v))
#define is_num(v) (is_intlike(v) || is_float(v))

static const char *str_of(const struct val *v)
{
	return json_object_get_string(v->j);
}

static size_t len_of(const struct val *v)
{
	return (size_t)json_object_get_string_len(v->j);
}

static int64_t int_of(const struct val *v)
{
	return is_bool(v) ? json_object_get_boolean(v->j) : json_object_get_int64(v->j);
}

static double num_of(const struct val *v)
{
	return is_float(v) ? json_object_get_double(v->j) : (double)int_of(v);
}

static const char *type_name(const struct val *v)
{
	if (v->kind == V_UNDEF)
		return "undefined";
	if (v->kind == V_NS)
		return "namespace";
	if (is_fn(v))
		return "function";
	if (!v->j)
		return "NoneType";
	switch (json_object_get_type(v->j)) {
	case json_type_boolean: return "bool";
	case json_type_int: return "int";
	case json_type_double: return "float";
	case json_type_string: return "str";
	case json_type_array: return "list";
	case json_type_object: return "dict";
	default: return "NoneType";
	}
}

static int truthy(const struct val *v)
{
	if (v->kind == V_UNDEF)
		return 0;
	if (v->kind == V_NS || is_fn(v))
		return 1;
	if (!v->j)
		return 0;
	switch (json_object_get_type(v->j)) {
	case json_type_boolean: return json_object_get_boolean(v->j);
	case json_type_int: return json_object_get_int64(v->j) != 0;
	case json_type_double: return json_object_get_double(v->j) != 0.0;
	case json_type_string: return json_object_get_string_len(v->j) != 0;
	case json_type_array: return json_object_array_length(v->j) != 0;
	case json_type_object: return json_object_object_length(v->j) != 0;
	default: return 0;
	}
}

/*
 * Dict keys.  json-c keys are strings, but templates also write {0: 0,
 * 512: 128} and index it with numbers; such a key is stored as KEY_TAG
 * followed by its Python repr ("\x01" "512", "\x01" "None"), which no
 * template string starts with, and turned back into its value wherever
 * keys are seen (iteration, items(), dictsort, repr, tojson).  As in
 * Python, True is the key 1 and 2.0 the key 2.
 */
#define KEY_TAG '\x01'

static int key_of(const struct val *k, gm_buf *b)
{
	if (k->kind != V_JSON)
		return -1;
	if (!k->j) {
		gm_buf_addch(b, KEY_TAG);
		gm_buf_adds(b, "None");
		return 0;
	}
	switch (json_object_get_type(k->j)) {
	case json_type_string:
		gm_buf_add(b, str_of(k), len_of(k));
		return 0;
	case json_type_boolean:
	case json_type_int:
		gm_buf_addf(b, "%c%lld", KEY_TAG, (long long)int_of(k));
		return 0;
	case json_type_double: {
		double d = json_object_get_double(k->j);

		if (d == floor(d) && fabs(d) < 9e18)
			gm_buf_addf(b, "%c%lld", KEY_TAG, (long long)d);
		else
			gm_buf_addf(b, "%c%.17g", KEY_TAG, d);
		return 0;
	}
	default:
		return -1; /* lists and dicts are unhashable */
	}
}

/* The value a stored key stands for (a new value). */
static json_object *key_json(const char *key)
{
	char *end;
	long long i;

	if (key[0] != KEY_TAG)
		return json_object_new_string(key);
	if (!strcmp(key + 1, "None"))
		return NULL;
	i = strtoll(key + 1, &end, 10);
	if (!*end)
		return json_object_new_int64(i);
	return json_object_new_double(strtod(key + 1, NULL));
}

/*
 * Tuples are JSON arrays marked with this userdata, so that they print as
 * Python prints them: (1, 2), ('a',).  Tuple literals, items(), dictsort,
 * groupby and varargs make them; everything else treats them as lists.
 */
static char tuple_marker;

static json_object *new_tuple(void)
{
	json_object *t = json_object_new_array();

	json_object_set_userdata(t, &tuple_marker, NULL);
	return t;
}

static int is_tuple(json_object *j)
{
	return json_object_get_userdata(j) == &tuple_marker;
}

/* Python's repr() of a float. */
static void add_float(gm_buf *b, double d)
{
	char digits[64];
	int p, exp;

	if (isnan(d)) {
		gm_buf_adds(b, "nan");
		return;
	}
	if (isinf(d)) {
		gm_buf_adds(b, d < 0 ? "-inf" : "inf");
		return;
	}
	for (p = 0; p < 17; p++) {
		snprintf(digits, sizeof(digits), "%.*e", p, d);
		if (strtod(digits, NULL) == d)
			break;
	}
	exp = atoi(strchr(digits, 'e') + 1);
	if (d != 0 && (exp < -4 || exp >= 16))
		gm_buf_adds(b, digits);
	else
		gm_buf_addf(b, "%.*f", p - exp > 1 ? p - exp : 1, d);
}

static void add_repr_str(gm_buf *b, const char *s, size_t len)
{
	char q = memchr(s, '\'', len) && !memchr(s, '"', len) ? '"' : '\'';
	size_t i = 0;

	gm_buf_addch(b, q);
	while (i < len) {
		size_t st = i;
		unsigned c = utf8_next(s, len, &i);

		if (c == (unsigned)q || c == '\\') {
			gm_buf_addch(b, '\\');
			gm_buf_addch(b, (int)c);
		} else if (c == '\n') {
			gm_buf_adds(b, "\\n");
		} else if (c == '\r') {
			gm_buf_adds(b, "\\r");
		} else if (c == '\t') {
			gm_buf_adds(b, "\\t");
		} else if (c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad) {
			gm_buf_addf(b, "\\x%02x", c);
		} else {
			gm_buf_add(b, s + st, i - st);
		}
	}
	gm_buf_addch(b, q);
}

static void add_repr_json(gm_buf *b, json_object *j);

/* Python's str() of a JSON value (strings raw, containers as their repr). */
static void add_str_json(gm_buf *b, json_object *j, int repr)
{
	if (!j) {
		gm_buf_adds(b, "None");
		return;
	}
	switch (json_object_get_type(j)) {
	case json_type_boolean:
		gm_buf_adds(b, json_object_get_boolean(j) ? "True" : "False");
		break;
	case json_type_int:
		gm_buf_addf(b, "%lld", (long long)json_object_get_int64(j));
		break;
	case json_type_double:
		add_float(b, json_object_get_double(j));
		break;
	case json_type_string:
		if (repr)
			add_repr_str(b, json_object_get_string(j), (size_t)json_object_get_string_len(j));
		else
			gm_buf_add(b, json_object_get_string(j), (size_t)json_object_get_string_len(j));
		break;
	case json_type_array: {
		size_t i, n = json_object_array_length(j);
		int tuple = is_tuple(j);

		gm_buf_addch(b, tuple ? '(' : '[');
		for (i = 0; i < n; i++) {
			if (i)
				gm_buf_adds(b, ", ");
			add_repr_json(b, json_object_array_get_idx(j, i));
		}
		gm_buf_adds(b, !tuple ? "]" : n == 1 ? ",)" : ")");
		break;
	}
	case json_type_object: {
		int first = 1;
		json_object_object_foreach(j, key, child) {
			gm_buf_adds(b, first ? "{" : ", ");
			first = 0;
			if (key[0] == KEY_TAG)
				gm_buf_adds(b, key + 1);
			else
				add_repr_str(b, key, strlen(key));
			gm_buf_adds(b, ": ");
			add_repr_json(b, child);
		}
		gm_buf_adds(b, first ? "{}" : "}");
		break;
	}
	default:
		gm_buf_adds(b, "None");
	}
}

static void add_repr_json(gm_buf *b, json_object *j)
{
	add_str_json(b, j, 1);
}

static void add_str(gm_buf *b, const struct val *v)
{
	if (v->kind == V_UNDEF)
		return;
	if (is_fn(v)) {
		gm_buf_addf(b, "<function %s>", v->name);
		return;
	}
	if (v->kind == V_NS) {
		gm_buf_adds(b, "<Namespace ");
		add_repr_json(b, v->j);
		gm_buf_addch(b, '>');
		return;
	}
	add_str_json(b, v->j, 0);
}

/* markupsafe's escape(): v's text with & < > " ' escaped, unless v is already safe. */
static void add_escaped(gm_buf *b, const struct val *v)
{
	gm_buf s = GM_BUF_INIT;
	size_t i;

	if (v->safe) {
		add_str(b, v);
		return;
	}
	add_str(&s, v);
	for (i = 0; i < s.len; i++) {
		switch (s.buf[i]) {
		case '&': gm_buf_adds(b, "&amp;"); break;
		case '<': gm_buf_adds(b, "&lt;"); break;
		case '>': gm_buf_adds(b, "&gt;"); break;
		case '"': gm_buf_adds(b, "&#34;"); break;
		case '\'': gm_buf_adds(b, "&#39;"); break;
		default: gm_buf_addch(b, s.buf[i]);
		}
	}
	gm_buf_release(&s);
}

/* json.dumps()'s options, as transformers' tojson passes them. */
struct json_opts {
	int indent;          /* -1: none */
	int ensure_ascii;
	int sort_keys;
	const char *item_sep, *key_sep;
	size_t item_sep_len, key_sep_len;
};

static void add_newline_indent(gm_buf *b, const struct json_opts *o, int level)
{
	int k;

	if (o->indent < 0)
		return;
	gm_buf_addch(b, '\n');
	for (k = 0; k < o->indent * level; k++)
		gm_buf_addch(b, ' ');
}

static void add_json_string(gm_buf *b, const char *s, size_t n, const struct json_opts *o)
{
	size_t i = 0;

	gm_buf_addch(b, '"');
	while (i < n) {
		size_t st = i;
		unsigned c = utf8_next(s, n, &i);

		switch (c) {
		case '"': gm_buf_adds(b, "\\\""); break;
		case '\\': gm_buf_adds(b, "\\\\"); break;
		case '\n': gm_buf_adds(b, "\\n"); break;
		case '\r': gm_buf_adds(b, "\\r"); break;
		case '\t': gm_buf_adds(b, "\\t"); break;
		case '\b': gm_buf_adds(b, "\\b"); break;
		case '\f': gm_buf_adds(b, "\\f"); break;
		default:
			if (c < 0x20 || (o->ensure_ascii && c >= 0x7f && c < 0x10000)) {
				gm_buf_addf(b, "\\u%04x", c);
			} else if (o->ensure_ascii && c >= 0x10000) {
				c -= 0x10000;
				gm_buf_addf(b, "\\u%04x\\u%04x", 0xd800 + (c >> 10), 0xdc00 + (c & 0x3ff));
			} else {
				gm_buf_add(b, s + st, i - st);
			}
		}
	}
	gm_buf_addch(b, '"');
}

/* json.dumps(j, ...) as transformers' tojson filter writes it. */
static int cmp_cstr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void add_json(gm_buf *b, json_object *j, const struct json_opts *o, int level)
{
	if (!j) {
		gm_buf_adds(b, "null");
		return;
	}
	switch (json_object_get_type(j)) {
	case json_type_boolean:
		gm_buf_adds(b, json_object_get_boolean(j) ? "true" : "false");
		break;
	case json_type_int:
		gm_buf_addf(b, "%lld", (long long)json_object_get_int64(j));
		break;
	case json_type_double: {
		double d = json_object_get_double(j);

		if (isnan(d))
			gm_buf_adds(b, "NaN");
		else if (isinf(d))
			gm_buf_adds(b, d < 0 ? "-Infinity" : "Infinity");
		else
			add_float(b, d);
		break;
	}
	case json_type_string:
		add_json_string(b, json_object_get_string(j), (size_t)json_object_get_string_len(j), o);
		break;
	case json_type_array: {
		size_t i, n = json_object_array_length(j);

		if (!n) {
			gm_buf_adds(b, "[]");
			break;
		}
		gm_buf_addch(b, '[');
		for (i = 0; i < n; i++) {
			if (i)
				gm_buf_add(b, o->item_sep, o->item_sep_len);
			add_newline_indent(b, o, level + 1);
			add_json(b, json_object_array_get_idx(j, i), o, level + 1);
		}
		add_newline_indent(b, o, level);
		gm_buf_addch(b, ']');
		break;
	}
	case json_type_object: {
		size_t n = (size_t)json_object_object_length(j), i = 0, m;
		const char **keys;

		if (!n) {
			gm_buf_adds(b, "{}");
			break;
		}
		keys = gm_xmalloc(n * sizeof(*keys));
		{
			json_object_object_foreach(j, key, child) {
				(void)child;
				keys[i++] = key;
			}
		}
		if (o->sort_keys)
			qsort(keys, n, sizeof(*keys), cmp_cstr);
		gm_buf_addch(b, '{');
		for (m = 0; m < n; m++) {
			json_object *child = NULL;

			if (m)
				gm_buf_add(b, o->item_sep, o->item_sep_len);
			add_newline_indent(b, o, level + 1);
			if (keys[m][0] == KEY_TAG) {
				/* json.dumps writes 1 as "1", True as "true", None as "null" */
				const char *k = !strcmp(keys[m] + 1, "None") ? "null" : keys[m] + 1;

				add_json_string(b, k, strlen(k), o);
			} else {
				add_json_string(b, keys[m], strlen(keys[m]), o);
			}
			gm_buf_add(b, o->key_sep, o->key_sep_len);
			json_object_object_get_ex(j, keys[m], &child);
			add_json(b, child, o, level + 1);
		}
		add_newline_indent(b, o, level);
		gm_buf_addch(b, '}');
		free(keys);
		break;
	}
	default:
		gm_buf_adds(b, "null");
	}
}

static int json_equal(json_object *a, json_object *b);

static int val_equal(const struct val *a, const struct val *b)
{
	if (a->kind == V_UNDEF || b->kind == V_UNDEF)
		return a->kind == b->kind;
	if (a->kind == V_NS || b->kind == V_NS)
		return a->kind == b->kind && a->j == b->j;
	if (is_fn(a) || is_fn(b))
		return a->kind == b->kind && !strcmp(a->name, b->name) && a->node == b->node;
	return json_equal(a->j, b->j);
}

static int json_equal(json_object *a, json_object *b)
{
	struct val va = { .kind = V_JSON, .j = a }, vb = { .kind = V_JSON, .j = b };

	if (!a || !b)
		return a == b;
	if (is_num(&va) && is_num(&vb)) {
		if (is_float(&va) || is_float(&vb))
			return num_of(&va) == num_of(&vb);
		return int_of(&va) == int_of(&vb);
	}
	if (json_object_get_type(a) != json_object_get_type(b))
		return 0;
	switch (json_object_get_type(a)) {
	case json_type_string:
		return json_object_get_string_len(a) == json_object_get_string_len(b) &&
		       !memcmp(json_object_get_string(a), json_object_get_string(b),
			       (size_t)json_object_get_string_len(a));
	case json_type_array: {
		size_t i, n = json_object_array_length(a);

		if (n != json_object_array_length(b))
			return 0;
		for (i = 0; i < n; i++)
			if (!json_equal(json_object_array_get_idx(a, i), json_object_array_get_idx(b, i)))
				return 0;
		return 1;
	}
	case json_type_object: {
		if (json_object_object_length(a) != json_object_object_length(b))
			return 0;
		{
			json_object_object_foreach(a, key, child) {
				json_object *other;

				if (!json_object_object_get_ex(b, key, &other) || !json_equal(child, other))
					return 0;
			}
		}
		return 1;
	}
	default:
		return 1;
	}
}

static const char *find_bytes(const char *h, size_t hlen, const char *n, size_t nlen)
{
	size_t i;

	if (!nlen)
		return h;
	for (i = 0; i + nlen <= hlen; i++)
		if (h[i] == n[0] && !memcmp(h + i, n, nlen))
			return h + i;
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Renderer */

struct var {
	const char *name; /* borrowed from the tree */
	struct val v;
};

/*
 * A scope (a for iteration, a with block, a macro call...).  Names are
 * looked up in it, then in its parent: the scope below it, except for a
 * macro's, whose parent is the template's top level (scope 0), and for
 * caller()'s, whose parent is where the {% call %} block stands.
 */
struct scope {
	struct var *v;
	size_t n, alloc;
	size_t parent;
};

enum { CTL_NONE, CTL_BREAK, CTL_CONTINUE };

struct render {
	const gm_jinja_template *t;
	json_object *ctx;
	struct scope *scopes;
	size_t nscopes, alloc;
	gm_error *err;
	int ctl;
	int depth;
	gm_jinja_limits lim;
	size_t calls;        /* macro calls in progress */
	uint64_t iterations; /* for-loop iterations and filter items so far */
	double deadline;     /* monotonic seconds */
};

static int rerr(struct render *r, int line, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int rerr(struct render *r, int line, int code, const char *fmt, ...)
{
	char msg[GM_ERROR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return gm_error_set(r->err, code, "%s: line %d: %s", r->t->what, line, msg);
}

/* A resource limit was reached (GM_EINVAL: the template asked for too much); the message names the limit. */
static int limit_error(struct render *r, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int limit_error(struct render *r, int line, const char *fmt, ...)
{
	char msg[GM_ERROR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return gm_error_set(r->err, GM_EINVAL, "%s: line %d: %s", r->t->what, line, msg);
}

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* "16 MiB" for a byte count. */
static const char *human_bytes(size_t n, char *buf, size_t size)
{
	if (n >= (1u << 20) && n % (1u << 20) == 0)
		snprintf(buf, size, "%zu MiB", n >> 20);
	else if (n >= 1024 && n % 1024 == 0)
		snprintf(buf, size, "%zu KiB", n >> 10);
	else
		snprintf(buf, size, "%zu-byte", n);
	return buf;
}

static int check_string(struct render *r, int line, size_t len)
{
	char b[32];

	if (len <= r->lim.max_string)
		return 0;
	return limit_error(r, line, "string longer than the %s limit", human_bytes(r->lim.max_string, b, sizeof(b)));
}

static int check_list(struct render *r, int line, size_t n)
{
	if (n <= r->lim.max_list)
		return 0;
	return limit_error(r, line, "list longer than the %zu-item limit", r->lim.max_list);
}

static int check_output(struct render *r, int line, size_t len)
{
	char b[32];

	if (len <= r->lim.max_output)
		return 0;
	return limit_error(r, line, "output longer than the %s limit", human_bytes(r->lim.max_output, b, sizeof(b)));
}

/*
 * n more steps of work: loop iterations, items a filter or range() goes
 * through or makes.  Bounds the time and, with max_list, the memory a
 * render can use; the clock is read every 256 steps.
 */
static int charge(struct render *r, int line, uint64_t n)
{
	uint64_t before = r->iterations;

	r->iterations += n;
	if (r->iterations > r->lim.max_iterations || r->iterations < before)
		return limit_error(r, line, "more than the %llu-step limit of loop iterations and items",
				   (unsigned long long)r->lim.max_iterations);
	if ((before >> 8) != (r->iterations >> 8) && mono_now() > r->deadline)
		return limit_error(r, line, "render took longer than the %g s time limit", r->lim.max_seconds);
	return 0;
}

static int tick(struct render *r, int line)
{
	return charge(r, line, 1);
}

static int undefined_error(struct render *r, int line, const struct val *v)
{
	if (v->name)
		return rerr(r, line, GM_EINVAL, "'%s' is undefined", v->name);
	return rerr(r, line, GM_EINVAL, "a value is undefined");
}

static void push_scope(struct render *r)
{
	if (r->nscopes == r->alloc) {
		r->alloc = r->alloc ? 2 * r->alloc : 8;
		r->scopes = gm_xrealloc(r->scopes, r->alloc * sizeof(*r->scopes));
	}
	memset(&r->scopes[r->nscopes], 0, sizeof(struct scope));
	r->scopes[r->nscopes].parent = r->nscopes ? r->nscopes - 1 : 0;
	r->nscopes++;
}

static void pop_scope(struct render *r)
{
	struct scope *s = &r->scopes[--r->nscopes];
	size_t i;

	for (i = 0; i < s->n; i++)
		val_clear(&s->v[i].v);
	free(s->v);
}

/* Binds name in the innermost scope, taking v. */
static void scope_set(struct render *r, const char *name, struct val *v)
{
	struct scope *s = &r->scopes[r->nscopes - 1];
	size_t i;

	for (i = 0; i < s->n; i++) {
		if (!strcmp(s->v[i].name, name)) {
			val_clear(&s->v[i].v);
			s->v[i].v = *v;
			*v = VAL_UNDEF;
			return;
		}
	}
	if (s->n == s->alloc) {
		s->alloc = s->alloc ? 2 * s->alloc : 8;
		s->v = gm_xrealloc(s->v, s->alloc * sizeof(*s->v));
	}
	s->v[s->n].name = name;
	s->v[s->n++].v = *v;
	*v = VAL_UNDEF;
}

static struct val *scope_find(struct render *r, const char *name)
{
	size_t k = r->nscopes - 1, i;

	for (;;) {
		struct scope *s = &r->scopes[k];

		for (i = 0; i < s->n; i++)
			if (!strcmp(s->v[i].name, name))
				return &s->v[i].v;
		if (!k)
			return NULL;
		k = s->parent;
	}
}

static struct val lookup(struct render *r, const char *name)
{
	struct val *v = scope_find(r, name);
	json_object *j;
	size_t k;

	if (v)
		return val_copy(v);
	if (r->ctx && json_object_object_get_ex(r->ctx, name, &j))
		return val_borrow(j);
	for (k = 0; global_functions[k]; k++) {
		if (!strcmp(global_functions[k], name)) {
			struct val f = { .kind = V_FUNC, .name = global_functions[k] };

			return f;
		}
	}
	return val_undef(name);
}

struct args {
	struct val *pos;
	size_t npos;
	char **kwnames; /* borrowed */
	struct val *kw;
	size_t nkw;
};

static void args_free(struct args *a)
{
	size_t i;

	for (i = 0; i < a->npos; i++)
		val_clear(&a->pos[i]);
	for (i = 0; i < a->nkw; i++)
		val_clear(&a->kw[i]);
	free(a->pos);
	free(a->kw);
	memset(a, 0, sizeof(*a));
}

/* The argument at position i or named name, or NULL. */
static struct val *arg(struct args *a, size_t i, const char *name)
{
	size_t k;

	if (i < a->npos)
		return &a->pos[i];
	for (k = 0; name && k < a->nkw; k++)
		if (!strcmp(a->kwnames[k], name))
			return &a->kw[k];
	return NULL;
}

static int eval(struct render *r, const struct expr *e, struct val *out);

static int eval_args(struct render *r, const struct expr *e, struct args *a)
{
	size_t i;
	int ret;

	memset(a, 0, sizeof(*a));
	a->pos = gm_xcalloc(e->nargs + 1, sizeof(*a->pos));
	a->kw = gm_xcalloc(e->nkw + 1, sizeof(*a->kw));
	a->kwnames = e->kwnames;
	for (i = 0; i < e->nargs; i++, a->npos++)
		if ((ret = eval(r, e->args[i], &a->pos[i])))
			goto fail;
	for (i = 0; i < e->nkw; i++, a->nkw++)
		if ((ret = eval(r, e->kwargs[i], &a->kw[i])))
			goto fail;
	return 0;
fail:
	args_free(a);
	return ret;
}

static int check_nargs(struct render *r, int line, const char *what, struct args *a, size_t max)
{
	if (a->npos + a->nkw > max)
		return rerr(r, line, GM_EINVAL, "%s takes at most %zu argument%s (%zu given)", what, max,
			    max == 1 ? "" : "s", a->npos + a->nkw);
	return 0;
}

static int want_str(struct render *r, int line, const char *what, const struct val *v)
{
	if (is_undef(v))
		return undefined_error(r, line, v);
	if (!is_str(v))
		return rerr(r, line, GM_EINVAL, "%s expects a string, not %s", what, type_name(v));
	return 0;
}

static int want_int(struct render *r, int line, const char *what, const struct val *v)
{
	if (is_undef(v))
		return undefined_error(r, line, v);
	if (!is_intlike(v))
		return rerr(r, line, GM_EINVAL, "%s expects an integer, not %s", what, type_name(v));
	return 0;
}

/* The items a for loop (or list()) sees: a new array reference. */
static int iterate(struct render *r, int line, const struct val *v, json_object **out)
{
	if (is_undef(v)) {
		*out = json_object_new_array();
	} else if (is_list(v)) {
		*out = json_object_get(v->j);
	} else if (is_dict(v) || v->kind == V_NS) {
		int ret;

		if (v->kind == V_NS)
			return rerr(r, line, GM_EINVAL, "a namespace is not iterable");
		if ((ret = charge(r, line, (uint64_t)json_object_object_length(v->j))))
			return ret;
		*out = json_object_new_array();
		{
			json_object_object_foreach(v->j, key, child) {
				(void)child;
				json_object_array_add(*out, key_json(key));
			}
		}
	} else if (is_str(v)) {
		const char *s = str_of(v);
		size_t len = len_of(v), i = 0, n = utf8_count(s, len);
		int ret;

		/* one string per character: held to the list limit */
		if ((ret = check_list(r, line, n)) || (ret = charge(r, line, n)))
			return ret;
		*out = json_object_new_array();
		while (i < len) {
			size_t st = i;

			utf8_next(s, len, &i);
			json_object_array_add(*out, json_object_new_string_len(s + st, (int)(i - st)));
		}
	} else {
		return rerr(r, line, GM_EINVAL, "'%s' object is not iterable", type_name(v));
	}
	return 0;
}

/* ---- strings ---- */

struct cpset {
	unsigned *cp;
	size_t n;
};

static int cp_in(const struct cpset *set, unsigned c)
{
	size_t i;

	if (!set)
		return py_isspace(c);
	for (i = 0; i < set->n; i++)
		if (set->cp[i] == c)
			return 1;
	return 0;
}

/* str.strip/lstrip/rstrip: which = 1 left, 2 right, 3 both; chars NULL strips whitespace. */
static struct val do_strip(const char *s, size_t len, const struct val *chars, int which)
{
	struct cpset set = { NULL, 0 }, *setp = NULL;
	size_t n, *off = utf8_offsets(s, len, &n), a = 0, b = n;
	struct val out;

	if (chars && is_str(chars)) {
		const char *c = str_of(chars);
		size_t cl = len_of(chars), i = 0;

		set.cp = gm_xmalloc((cl + 1) * sizeof(*set.cp));
		while (i < cl)
			set.cp[set.n++] = utf8_next(c, cl, &i);
		setp = &set;
	}
	if (which & 1)
		while (a < b) {
			size_t i = off[a];

			if (!cp_in(setp, utf8_next(s, len, &i)))
				break;
			a++;
		}
	if (which & 2)
		while (b > a) {
			size_t i = off[b - 1];

			if (!cp_in(setp, utf8_next(s, len, &i)))
				break;
			b--;
		}
	out = val_str(s + off[a], off[b] - off[a]);
	free(off);
	free(set.cp);
	return out;
}

/* str.replace(); -1 (and nothing in *out) when the result would pass max bytes. */
static int do_replace(const char *s, size_t len, const char *old, size_t olen, const char *new_, size_t nlen,
		      int64_t count, size_t max, struct val *out)
{
	gm_buf b = GM_BUF_INIT;
	size_t i = 0;

	if (!olen) {
		while (count != 0) {
			if (b.len + nlen > max) {
				gm_buf_release(&b);
				return -1;
			}
			gm_buf_add(&b, new_, nlen);
			if (count > 0)
				count--;
			if (i >= len)
				break;
			{
				size_t st = i;

				utf8_next(s, len, &i);
				gm_buf_add(&b, s + st, i - st);
			}
		}
		gm_buf_add(&b, s + i, len - i);
		*out = val_buf(&b);
		return 0;
	}
	while (count != 0) {
		const char *hit = find_bytes(s + i, len - i, old, olen);

		if (!hit)
			break;
		if (b.len + (size_t)(hit - (s + i)) + nlen > max) {
			gm_buf_release(&b);
			return -1;
		}
		gm_buf_add(&b, s + i, (size_t)(hit - (s + i)));
		gm_buf_add(&b, new_, nlen);
		i = (size_t)(hit - s) + olen;
		if (count > 0)
			count--;
	}
	gm_buf_add(&b, s + i, len - i);
	*out = val_buf(&b);
	return 0;
}

static int is_cased(unsigned c)
{
	utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);

	return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

/*
 * Case mapping by code point: 'u' upper, 'l' lower, 'c' capitalize, 't'
 * Python's str.title(), 'T' Jinja's title filter (words start after
 * whitespace, '-', and opening brackets).  Simple (one-to-one) mappings only.
 */
static struct val do_case(const char *s, size_t len, int mode)
{
	gm_buf b = GM_BUF_INIT;
	size_t i = 0;
	int first = 1, prev_cased = 0, word_start = 1;

	while (i < len) {
		unsigned c = utf8_next(s, len, &i), m;

		switch (mode) {
		case 'u':
			m = (unsigned)utf8proc_toupper((utf8proc_int32_t)c);
			break;
		case 'l':
			m = (unsigned)utf8proc_tolower((utf8proc_int32_t)c);
			break;
		case 'c':
			m = (unsigned)(first ? utf8proc_totitle((utf8proc_int32_t)c) : utf8proc_tolower((utf8proc_int32_t)c));
			break;
		case 't':
			m = (unsigned)(prev_cased ? utf8proc_tolower((utf8proc_int32_t)c) : utf8proc_totitle((utf8proc_int32_t)c));
			prev_cased = is_cased(c);
			break;
		default:
			if (py_isspace(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<') {
				m = c;
				word_start = 1;
			} else {
				m = (unsigned)(word_start ? utf8proc_toupper((utf8proc_int32_t)c) : utf8proc_tolower((utf8proc_int32_t)c));
				word_start = 0;
			}
		}
		first = 0;
		utf8_put(&b, m);
	}
	return val_buf(&b);
}

static int do_split(struct render *r, int line, const char *s, size_t len, const struct val *sep,
		    int64_t maxsplit, struct val *out)
{
	json_object *arr = json_object_new_array();
	size_t i = 0;

	if (sep && !is_none(sep)) {
		const char *p = str_of(sep);
		size_t plen = len_of(sep);

		if (!plen) {
			json_object_put(arr);
			return rerr(r, line, GM_EINVAL, "split(): empty separator");
		}
		for (;;) {
			const char *hit = maxsplit != 0 ? find_bytes(s + i, len - i, p, plen) : NULL;

			if (!hit) {
				json_object_array_add(arr, json_object_new_string_len(s + i, (int)(len - i)));
				break;
			}
			json_object_array_add(arr, json_object_new_string_len(s + i, (int)(hit - (s + i))));
			i = (size_t)(hit - s) + plen;
			if (maxsplit > 0)
				maxsplit--;
		}
	} else {
		for (;;) {
			size_t st, j;

			/* skip whitespace */
			while (i < len) {
				j = i;
				if (!py_isspace(utf8_next(s, len, &j)))
					break;
				i = j;
			}
			if (i >= len)
				break;
			if (maxsplit == 0) {
				/* the rest, with trailing whitespace removed */
				struct val rest = do_strip(s + i, len - i, NULL, 2);

				json_object_array_add(arr, val_to_json(&rest));
				break;
			}
			st = i;
			while (i < len) {
				j = i;
				if (py_isspace(utf8_next(s, len, &j)))
					break;
				i = j;
			}
			json_object_array_add(arr, json_object_new_string_len(s + st, (int)(i - st)));
			if (maxsplit > 0)
				maxsplit--;
		}
	}
	*out = val_own(arr);
	return 0;
}

static int starts_ends(struct render *r, int line, const char *s, size_t len, const struct val *what, int ends,
		       int *res)
{
	size_t k, n = 1;
	int ret;

	*res = 0;
	if (is_list(what))
		n = json_object_array_length(what->j);
	for (k = 0; k < n; k++) {
		struct val item = is_list(what) ? (struct val){ .kind = V_JSON, .j = json_object_array_get_idx(what->j, k) }
						: *what;
		const char *p;
		size_t plen;

		if ((ret = want_str(r, line, ends ? "endswith()" : "startswith()", &item)))
			return ret;
		p = str_of(&item);
		plen = len_of(&item);
		if (plen <= len && !memcmp(ends ? s + len - plen : s, p, plen))
			*res = 1;
	}
	return 0;
}

static size_t line_break(const char *s, size_t len, size_t i);
static int bool_arg(struct args *a, size_t i, const char *name, int def);

static int string_method(struct render *r, int line, const struct val *self, const char *name, struct args *a,
			 struct val *out)
{
	const char *s = str_of(self);
	size_t len = len_of(self);
	struct val *x = arg(a, 0, NULL), *y = arg(a, 1, NULL);
	int ret;

	if (!strcmp(name, "format")) {
		/*
		 * str.format(): {} {0} {name} with an optional !s / !r conversion
		 * and {{ }}; a format spec (after ':') is refused.
		 */
		gm_buf b = GM_BUF_INIT;
		size_t i = 0, auto_idx = 0;

		while (i < len) {
			const char *close;
			struct val *av = NULL;
			char field[128];
			size_t flen;
			int conv = 's';

			if (s[i] == '}' && i + 1 < len && s[i + 1] == '}') {
				gm_buf_addch(&b, '}');
				i += 2;
				continue;
			}
			if (s[i] != '{') {
				gm_buf_addch(&b, s[i++]);
				continue;
			}
			if (i + 1 < len && s[i + 1] == '{') {
				gm_buf_addch(&b, '{');
				i += 2;
				continue;
			}
			close = memchr(s + i, '}', len - i);
			if (!close) {
				gm_buf_release(&b);
				return rerr(r, line, GM_EINVAL, "format(): Single '{' encountered in format string");
			}
			flen = (size_t)(close - (s + i + 1));
			if (flen >= sizeof(field) || memchr(s + i + 1, ':', flen) || memchr(s + i + 1, '.', flen) ||
			    memchr(s + i + 1, '[', flen)) {
				gm_buf_release(&b);
				return rerr(r, line, GM_EUNSUPPORTED,
					    "unsupported str.format() field '{%.*s}' (format specs, attributes and items)",
					    (int)(flen < 60 ? flen : 60), s + i + 1);
			}
			memcpy(field, s + i + 1, flen);
			field[flen] = '\0';
			if (flen >= 2 && field[flen - 2] == '!') {
				conv = field[flen - 1];
				field[flen - 2] = '\0';
			}
			if (!field[0]) {
				av = auto_idx < a->npos ? &a->pos[auto_idx] : NULL;
				auto_idx++;
			} else if (isdigit((unsigned char)field[0])) {
				size_t k = (size_t)strtoul(field, NULL, 10);

				av = k < a->npos ? &a->pos[k] : NULL;
			} else {
				av = arg(a, (size_t)-1, field);
			}
			if (!av) {
				gm_buf_release(&b);
				return rerr(r, line, GM_EINVAL, "format(): no argument for '{%s}'", field);
			}
			if (conv == 'r' && av->kind == V_JSON)
				add_str_json(&b, av->j, 1);
			else
				add_str(&b, av);
			if ((ret = check_string(r, line, b.len))) {
				gm_buf_release(&b);
				return ret;
			}
			i = (size_t)(close - s) + 1;
		}
		*out = val_buf(&b);
		return 0;
	}
	if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
		int res;

		if ((ret = check_nargs(r, line, name, a, 1)))
			return ret;
		if (!x)
			return rerr(r, line, GM_EINVAL, "%s() needs an argument", name);
		if ((ret = starts_ends(r, line, s, len, x, name[0] == 'e', &res)))
			return ret;
		*out = val_bool(res);
		return 0;
	}
	if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
		if ((ret = check_nargs(r, line, name, a, 1)))
			return ret;
		if (x && !is_none(x) && (ret = want_str(r, line, name, x)))
			return ret;
		*out = do_strip(s, len, x, name[0] == 'l' ? 1 : name[0] == 'r' ? 2 : 3);
		return 0;
	}
	if (!strcmp(name, "split")) {
		struct val *sep = arg(a, 0, "sep"), *max = arg(a, 1, "maxsplit");

		if ((ret = check_nargs(r, line, name, a, 2)))
			return ret;
		if (sep && !is_none(sep) && (ret = want_str(r, line, "split()", sep)))
			return ret;
		if (max && (ret = want_int(r, line, "split()", max)))
			return ret;
		return do_split(r, line, s, len, sep, max ? int_of(max) : -1, out);
	}
	if (!strcmp(name, "rsplit")) {
		/* str.rsplit(sep=None, maxsplit=-1): split() counted from the right */
		struct val *sep = arg(a, 0, "sep"), *max = arg(a, 1, "maxsplit"), all;
		json_object *arr;
		int64_t m, n, k;
		size_t end;

		if ((ret = check_nargs(r, line, name, a, 2)))
			return ret;
		if (sep && !is_none(sep) && (ret = want_str(r, line, "rsplit()", sep)))
			return ret;
		if (max && (ret = want_int(r, line, "rsplit()", max)))
			return ret;
		m = max ? int_of(max) : -1;
		if ((ret = do_split(r, line, s, len, sep, -1, &all)))
			return ret;
		n = (int64_t)json_object_array_length(all.j);
		if (m < 0 || m >= n - 1) {
			*out = all;
			return 0;
		}
		/* the last m pieces stay; what is left of them is one piece */
		end = len;
		for (k = 0; k < m; k++) {
			json_object *piece = json_object_array_get_idx(all.j, (size_t)(n - 1 - k));
			size_t plen = (size_t)json_object_get_string_len(piece);

			if (sep && !is_none(sep)) {
				end -= plen + len_of(sep);
			} else {
				while (end > 0 && py_isspace((unsigned char)s[end - 1]))
					end--;
				end -= plen;
			}
		}
		if (!sep || is_none(sep))
			while (end > 0 && py_isspace((unsigned char)s[end - 1]))
				end--;
		arr = json_object_new_array();
		json_object_array_add(arr, json_object_new_string_len(s, (int)end));
		for (k = n - m; k < n; k++)
			json_object_array_add(arr, json_object_get(json_object_array_get_idx(all.j, (size_t)k)));
		val_clear(&all);
		*out = val_own(arr);
		return 0;
	}
	if (!strcmp(name, "splitlines")) {
		int keep = bool_arg(a, 0, "keepends", 0);
		json_object *arr = json_object_new_array();
		size_t i = 0, st = 0, brk = 0;

		if ((ret = check_nargs(r, line, name, a, 1))) {
			json_object_put(arr);
			return ret;
		}
		while (i < len) {
			if (!(brk = line_break(s, len, i))) {
				i++;
				continue;
			}
			json_object_array_add(arr, json_object_new_string_len(s + st, (int)(i - st + (keep ? brk : 0))));
			i += brk;
			st = i;
		}
		if (st < len)
			json_object_array_add(arr, json_object_new_string_len(s + st, (int)(len - st)));
		*out = val_own(arr);
		return 0;
	}
	if (!strcmp(name, "replace")) {
		struct val *c = arg(a, 2, "count");

		if ((ret = check_nargs(r, line, name, a, 3)))
			return ret;
		if (!x || !y)
			return rerr(r, line, GM_EINVAL, "replace() needs two arguments");
		if ((ret = want_str(r, line, "replace()", x)) || (ret = want_str(r, line, "replace()", y)) ||
		    (c && (ret = want_int(r, line, "replace()", c))))
			return ret;
		if (do_replace(s, len, str_of(x), len_of(x), str_of(y), len_of(y), c ? int_of(c) : -1, r->lim.max_string,
			       out))
			return check_string(r, line, SIZE_MAX);
		return 0;
	}
	if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "capitalize") ||
	    !strcmp(name, "title")) {
		if ((ret = check_nargs(r, line, name, a, 0)))
			return ret;
		*out = do_case(s, len, name[0] == 'c' ? 'c' : name[0] == 't' ? 't' : name[0] == 'u' ? 'u' : 'l');
		return 0;
	}
	if (!strcmp(name, "find") || !strcmp(name, "count") || !strcmp(name, "rfind")) {
		const char *hit;
		int64_t n = 0, idx = -1;
		size_t i = 0;

		if ((ret = check_nargs(r, line, name, a, 1)))
			return ret;
		if (!x)
			return rerr(r, line, GM_EINVAL, "%s() needs an argument", name);
		if ((ret = want_str(r, line, name, x)))
			return ret;
		while (i <= len && (hit = find_bytes(s + i, len - i, str_of(x), len_of(x)))) {
			if (idx < 0 || name[0] == 'r')
				idx = (int64_t)utf8_count(s, (size_t)(hit - s));
			n++;
			i = (size_t)(hit - s) + (len_of(x) ? len_of(x) : 1);
			if (name[0] == 'f')
				break;
		}
		*out = val_int(name[0] == 'c' ? n : idx);
		return 0;
	}
	if (!strcmp(name, "join")) {
		json_object *items;
		gm_buf b = GM_BUF_INIT;
		size_t i, n;

		if ((ret = check_nargs(r, line, name, a, 1)))
			return ret;
		if (!x)
			return rerr(r, line, GM_EINVAL, "join() needs an argument");
		if ((ret = iterate(r, line, x, &items)))
			return ret;
		n = json_object_array_length(items);
		for (i = 0; i < n; i++) {
			struct val item = { .kind = V_JSON, .j = json_object_array_get_idx(items, i) };

			if (!is_str(&item)) {
				json_object_put(items);
				gm_buf_release(&b);
				return rerr(r, line, GM_EINVAL, "join(): item %zu is %s, not a string", i,
					    type_name(&item));
			}
			if (i)
				gm_buf_add(&b, s, len);
			gm_buf_add(&b, str_of(&item), len_of(&item));
		}
		json_object_put(items);
		*out = val_buf(&b);
		return 0;
	}
	if (!strcmp(name, "isspace") || !strcmp(name, "isdigit") || !strcmp(name, "isalpha") ||
	    !strcmp(name, "isalnum")) {
		size_t i;
		int res = len > 0;

		for (i = 0; i < len; i++) {
			int c = (unsigned char)s[i];

			if ((name[2] == 's' && !isspace(c)) || (name[2] == 'd' && !isdigit(c)) ||
			    (!strcmp(name, "isalpha") && !isalpha(c)) || (!strcmp(name, "isalnum") && !isalnum(c)))
				res = 0;
		}
		*out = val_bool(res);
		return 0;
	}
	return rerr(r, line, GM_EUNSUPPORTED, "unsupported string method '%s'", name);
}

static int dict_method(struct render *r, int line, const struct val *self, const char *name, struct args *a,
		       struct val *out)
{
	int ret;

	if (!strcmp(name, "items") || !strcmp(name, "keys") || !strcmp(name, "values")) {
		json_object *arr = json_object_new_array();

		if ((ret = check_nargs(r, line, name, a, 0))) {
			json_object_put(arr);
			return ret;
		}
		{
			json_object_object_foreach(self->j, key, child) {
				if (name[0] == 'i') {
					json_object *pair = new_tuple();

					json_object_array_add(pair, key_json(key));
					json_object_array_add(pair, json_object_get(child));
					json_object_array_add(arr, pair);
				} else if (name[0] == 'k') {
					json_object_array_add(arr, key_json(key));
				} else {
					json_object_array_add(arr, json_object_get(child));
				}
			}
		}
		*out = val_own(arr);
		return 0;
	}
	if (!strcmp(name, "get")) {
		struct val *k = arg(a, 0, "key"), *d = arg(a, 1, "default");
		json_object *j;

		if ((ret = check_nargs(r, line, name, a, 2)))
			return ret;
		if (!k)
			return rerr(r, line, GM_EINVAL, "get() needs a key");
		{
			gm_buf kb = GM_BUF_INIT;

			if (!key_of(k, &kb) && json_object_object_get_ex(self->j, kb.buf, &j))
				*out = val_borrow(j);
			else
				*out = d ? val_copy(d) : val_own(NULL);
			gm_buf_release(&kb);
		}
		return 0;
	}
	if (!strcmp(name, "cycle")) {
		json_object *idx;

		if (json_object_object_get_ex(self->j, "index0", &idx) && json_object_object_get_ex(self->j, "depth0", NULL) &&
		    a->npos) {
			*out = val_copy(&a->pos[json_object_get_int64(idx) % (int64_t)a->npos]);
			return 0;
		}
	}
	if (json_object_object_get_ex(self->j, name, NULL))
		return rerr(r, line, GM_EINVAL, "'%s' is not callable", name);
	return rerr(r, line, GM_EUNSUPPORTED, "unsupported dict method '%s'", name);
}

/* ---- attribute and item access ---- */

static int get_attr(struct render *r, int line, const struct val *obj, const char *name, struct val *out)
{
	json_object *j;

	if (is_undef(obj)) {
		if (obj->name)
			return rerr(r, line, GM_EINVAL, "'%s' is undefined (reading its attribute '%s')", obj->name,
				    name);
		return rerr(r, line, GM_EINVAL, "reading attribute '%s' of an undefined value", name);
	}
	if ((is_dict(obj) || obj->kind == V_NS) && json_object_object_get_ex(obj->j, name, &j)) {
		*out = val_borrow(j);
		return 0;
	}
	/* groupby's items are namedtuples (grouper, list) */
	if (is_list(obj) && is_tuple(obj->j) && json_object_array_length(obj->j) == 2 &&
	    (!strcmp(name, "grouper") || !strcmp(name, "list"))) {
		*out = val_borrow(json_object_array_get_idx(obj->j, name[0] == 'l'));
		return 0;
	}
	*out = val_undef(name);
	return 0;
}

/*
 * get_attr with a name that does not live in the template's tree (an item
 * key, an attribute= path): an undefined result must not keep it, as it
 * may be freed before the undefined value is reported.
 */
static int get_attr_dyn(struct render *r, int line, const struct val *obj, const char *name, struct val *out)
{
	int ret = get_attr(r, line, obj, name, out);

	if (!ret && is_undef(out))
		out->name = NULL;
	return ret;
}

/* Python's slice.indices(): *start, *stop, *step normalized for length n. */
static int slice_indices(struct render *r, int line, struct val *vs[3], int64_t n, int64_t *start, int64_t *stop,
			 int64_t *step)
{
	int64_t v[3];
	int have[3], k, ret;

	for (k = 0; k < 3; k++) {
		have[k] = vs[k] && !is_none(vs[k]);
		if (have[k] && (ret = want_int(r, line, "a slice index", vs[k])))
			return ret;
		v[k] = have[k] ? int_of(vs[k]) : 0;
	}
	*step = have[2] ? v[2] : 1;
	if (*step == 0)
		return rerr(r, line, GM_EINVAL, "slice step cannot be zero");
	if (*step > 0) {
		*start = have[0] ? v[0] : 0;
		*stop = have[1] ? v[1] : n;
		if (*start < 0 && (*start += n) < 0)
			*start = 0;
		if (*start > n)
			*start = n;
		if (*stop < 0 && (*stop += n) < 0)
			*stop = 0;
		if (*stop > n)
			*stop = n;
	} else {
		*start = have[0] ? v[0] : n - 1;
		*stop = have[1] ? v[1] : -1;
		if (have[0]) {
			if (*start < 0 && (*start += n) < 0)
				*start = -1;
			if (*start >= n)
				*start = n - 1;
		}
		if (have[1]) {
			if (*stop < 0 && (*stop += n) < 0)
				*stop = -1;
			if (*stop >= n)
				*stop = n - 1;
		}
	}
	return 0;
}

static int get_slice(struct render *r, int line, const struct val *obj, struct val *vs[3], struct val *out)
{
	int64_t start, stop, step, i;
	int ret;

	if (is_undef(obj))
		return undefined_error(r, line, obj);
	if (is_list(obj)) {
		json_object *arr = json_object_new_array();
		int64_t n = (int64_t)json_object_array_length(obj->j);

		if ((ret = slice_indices(r, line, vs, n, &start, &stop, &step))) {
			json_object_put(arr);
			return ret;
		}
		for (i = start; step > 0 ? i < stop : i > stop; i += step)
			json_object_array_add(arr, json_object_get(json_object_array_get_idx(obj->j, (size_t)i)));
		*out = val_own(arr);
		return 0;
	}
	if (is_str(obj)) {
		const char *s = str_of(obj);
		size_t n, *off = utf8_offsets(s, len_of(obj), &n);
		gm_buf b = GM_BUF_INIT;

		if ((ret = slice_indices(r, line, vs, (int64_t)n, &start, &stop, &step))) {
			free(off);
			return ret;
		}
		for (i = start; step > 0 ? i < stop : i > stop; i += step)
			gm_buf_add(&b, s + off[i], off[i + 1] - off[i]);
		free(off);
		*out = val_buf(&b);
		return 0;
	}
	return rerr(r, line, GM_EINVAL, "cannot slice a %s", type_name(obj));
}

static int get_item(struct render *r, int line, const struct val *obj, const struct val *key, struct val *out)
{
	if (is_undef(obj)) {
		if (obj->name)
			return rerr(r, line, GM_EINVAL, "'%s' is undefined (reading an item of it)", obj->name);
		return rerr(r, line, GM_EINVAL, "reading an item of an undefined value");
	}
	if (is_list(obj) && is_intlike(key)) {
		int64_t n = (int64_t)json_object_array_length(obj->j), i = int_of(key);

		if (i < 0)
			i += n;
		*out = i >= 0 && i < n ? val_borrow(json_object_array_get_idx(obj->j, (size_t)i)) : val_undef(NULL);
		return 0;
	}
	if (is_str(obj) && is_intlike(key)) {
		const char *s = str_of(obj);
		size_t n, *off = utf8_offsets(s, len_of(obj), &n);
		int64_t i = int_of(key);

		if (i < 0)
			i += (int64_t)n;
		*out = i >= 0 && i < (int64_t)n ? val_str(s + off[i], off[i + 1] - off[i]) : val_undef(NULL);
		free(off);
		return 0;
	}
	if (is_str(key))
		return get_attr_dyn(r, line, obj, str_of(key), out);
	if (is_dict(obj)) {
		gm_buf kb = GM_BUF_INIT;
		json_object *j;

		if (!key_of(key, &kb) && json_object_object_get_ex(obj->j, kb.buf, &j))
			*out = val_borrow(j);
		else
			*out = val_undef(NULL);
		gm_buf_release(&kb);
		return 0;
	}
	*out = val_undef(NULL);
	return 0;
}

/* ---- operators ---- */

static int binary_op(struct render *r, int line, int op, const struct val *a, const struct val *b, struct val *out)
{
	int ret;

	if (is_undef(a))
		return undefined_error(r, line, a);
	if (is_undef(b))
		return undefined_error(r, line, b);
	if (is_num(a) && is_num(b)) {
		int both_int = is_intlike(a) && is_intlike(b);
		int64_t x = int_of(a), y = int_of(b);
		double dx = num_of(a), dy = num_of(b);

		int64_t z;

		if ((op == OP_DIV || op == OP_FLOORDIV || op == OP_MOD) && (both_int ? y == 0 : dy == 0.0))
			return rerr(r, line, GM_EINVAL, "division by zero");
		/* Python's integers have no limit, ours are 64-bit: refuse what would wrap */
		if (both_int && (op == OP_FLOORDIV || op == OP_MOD) && x == INT64_MIN && y == -1)
			return rerr(r, line, GM_EINVAL, "integer overflow in '%s' (64-bit integers)", op_names[op]);
		switch (op) {
		case OP_ADD:
		case OP_SUB:
		case OP_MUL:
			if (!both_int) {
				double v = op == OP_ADD ? dx + dy : op == OP_SUB ? dx - dy : dx * dy;

				*out = val_own(gm_json_new_double(v));
				return 0;
			}
			if (op == OP_ADD ? __builtin_add_overflow(x, y, &z) :
			    op == OP_SUB ? __builtin_sub_overflow(x, y, &z) : __builtin_mul_overflow(x, y, &z))
				return rerr(r, line, GM_EINVAL, "integer overflow in '%s' (64-bit integers)", op_names[op]);
			*out = val_int(z);
			return 0;
		case OP_DIV:
			*out = val_own(gm_json_new_double(dx / dy));
			return 0;
		case OP_FLOORDIV:
			if (both_int) {
				int64_t q = x / y;

				if ((x % y != 0) && ((x < 0) != (y < 0)))
					q--;
				*out = val_int(q);
			} else {
				*out = val_own(gm_json_new_double(floor(dx / dy)));
			}
			return 0;
		case OP_MOD:
			if (both_int) {
				int64_t m = x % y;

				if (m != 0 && ((m < 0) != (y < 0)))
					m += y;
				*out = val_int(m);
			} else {
				double m = fmod(dx, dy);

				if (m != 0 && ((m < 0) != (dy < 0)))
					m += dy;
				*out = val_own(gm_json_new_double(m));
			}
			return 0;
		case OP_POW:
			if (both_int && y >= 0) {
				int64_t p = 1, base = x;
				int over = 0;

				for (; y > 0 && !over; y >>= 1) {
					if (y & 1)
						over |= __builtin_mul_overflow(p, base, &p);
					if (y > 1)
						over |= __builtin_mul_overflow(base, base, &base);
				}
				if (over)
					return rerr(r, line, GM_EINVAL, "integer overflow in '**' (64-bit integers)");
				*out = val_int(p);
			} else {
				*out = val_own(gm_json_new_double(pow(dx, dy)));
			}
			return 0;
		}
	}
	if (op == OP_ADD && is_str(a) && is_str(b)) {
		gm_buf buf = GM_BUF_INIT;

		if ((ret = check_string(r, line, len_of(a) + len_of(b))))
			return ret;
		gm_buf_grow(&buf, len_of(a) + len_of(b));
		if (a->safe || b->safe) {
			add_escaped(&buf, a);
			add_escaped(&buf, b);
			if ((ret = check_string(r, line, buf.len))) {
				gm_buf_release(&buf);
				return ret;
			}
			*out = val_buf(&buf);
			out->safe = 1;
			return 0;
		}
		gm_buf_add(&buf, str_of(a), len_of(a));
		gm_buf_add(&buf, str_of(b), len_of(b));
		*out = val_buf(&buf);
		return 0;
	}
	if (op == OP_ADD && is_list(a) && is_list(b)) {
		json_object *arr;
		size_t i;

		if ((ret = check_list(r, line, json_object_array_length(a->j) + json_object_array_length(b->j))) ||
		    (ret = charge(r, line, json_object_array_length(a->j) + json_object_array_length(b->j))))
			return ret;
		arr = json_object_new_array();
		for (i = 0; i < json_object_array_length(a->j); i++)
			json_object_array_add(arr, json_object_get(json_object_array_get_idx(a->j, i)));
		for (i = 0; i < json_object_array_length(b->j); i++)
			json_object_array_add(arr, json_object_get(json_object_array_get_idx(b->j, i)));
		*out = val_own(arr);
		return 0;
	}
	if (op == OP_MUL && ((is_str(a) || is_list(a)) && is_intlike(b))) {
		int64_t n = int_of(b), i;

		if (n > 0 && is_str(a) && (ret = check_string(r, line, (uint64_t)n * len_of(a) / n == len_of(a)
										? (size_t)n * len_of(a) : SIZE_MAX)))
			return ret;
		if (n > 0 && is_list(a) && (ret = check_list(r, line, (uint64_t)n * json_object_array_length(a->j) /
									  n == json_object_array_length(a->j)
									  ? (size_t)n * json_object_array_length(a->j)
									  : SIZE_MAX)))
			return ret;
		if (n > 0 && is_list(a) && (ret = charge(r, line, (uint64_t)n * json_object_array_length(a->j))))
			return ret;
		if (is_str(a)) {
			gm_buf buf = GM_BUF_INIT;

			for (i = 0; i < n; i++)
				gm_buf_add(&buf, str_of(a), len_of(a));
			*out = val_buf(&buf);
		} else {
			json_object *arr = json_object_new_array();
			size_t k;

			for (i = 0; i < n; i++)
				for (k = 0; k < json_object_array_length(a->j); k++)
					json_object_array_add(arr, json_object_get(json_object_array_get_idx(a->j, k)));
			*out = val_own(arr);
		}
		return 0;
	}
	if (op == OP_MUL && is_intlike(a) && (is_str(b) || is_list(b)))
		return binary_op(r, line, op, b, a, out);
	if (op == OP_MOD && is_str(a))
		return rerr(r, line, GM_EUNSUPPORTED, "unsupported Jinja construct: '%%' string formatting");
	return rerr(r, line, GM_EINVAL, "unsupported operand types for %s: '%s' and '%s'", op_names[op], type_name(a),
		    type_name(b));
}

static int compare(struct render *r, int line, int op, const struct val *a, const struct val *b, int *res)
{
	int c;

	switch (op) {
	case OP_EQ:
		*res = val_equal(a, b);
		return 0;
	case OP_NE:
		*res = !val_equal(a, b);
		return 0;
	case OP_IN:
	case OP_NOTIN:
		if (is_str(b)) {
			if (!is_str(a))
				return rerr(r, line, GM_EINVAL, "'in <string>' requires a string on the left, not %s",
					    type_name(a));
			*res = find_bytes(str_of(b), len_of(b), str_of(a), len_of(a)) != NULL;
		} else if (is_list(b)) {
			size_t i, n = json_object_array_length(b->j);

			*res = 0;
			for (i = 0; i < n && !*res; i++) {
				struct val item = { .kind = V_JSON, .j = json_object_array_get_idx(b->j, i) };

				*res = val_equal(a, &item);
			}
		} else if (is_dict(b) || b->kind == V_NS) {
		{
			gm_buf kb = GM_BUF_INIT;

			*res = !key_of(a, &kb) && json_object_object_get_ex(b->j, kb.buf, NULL);
			gm_buf_release(&kb);
		}
		} else if (is_undef(b)) {
			*res = 0;
		} else {
			return rerr(r, line, GM_EINVAL, "argument of type '%s' is not iterable", type_name(b));
		}
		if (op == OP_NOTIN)
			*res = !*res;
		return 0;
	}
	if (is_undef(a))
		return undefined_error(r, line, a);
	if (is_undef(b))
		return undefined_error(r, line, b);
	if (is_num(a) && is_num(b)) {
		double x = num_of(a), y = num_of(b);

		if (is_intlike(a) && is_intlike(b))
			c = int_of(a) < int_of(b) ? -1 : int_of(a) > int_of(b);
		else
			c = x < y ? -1 : x > y;
	} else if (is_str(a) && is_str(b)) {
		size_t la = len_of(a), lb = len_of(b);

		c = memcmp(str_of(a), str_of(b), la < lb ? la : lb);
		if (!c)
			c = la < lb ? -1 : la > lb;
	} else {
		return rerr(r, line, GM_EINVAL, "'%s' not supported between '%s' and '%s'", op_names[op],
			    type_name(a), type_name(b));
	}
	switch (op) {
	case OP_LT: *res = c < 0; break;
	case OP_LE: *res = c <= 0; break;
	case OP_GT: *res = c > 0; break;
	default: *res = c >= 0; break;
	}
	return 0;
}

/* ---- tests ---- */

static int apply_test(struct render *r, int line, const char *name, const struct val *v, struct args *a, int *res)
{
	struct val *x = arg(a, 0, NULL);
	int ret;

	if (!strcmp(name, "defined")) {
		*res = !is_undef(v);
	} else if (!strcmp(name, "undefined")) {
		*res = is_undef(v);
	} else if (!strcmp(name, "none")) {
		*res = is_none(v);
	} else if (!strcmp(name, "callable")) {
		*res = is_fn(v);
	} else if (!strcmp(name, "boolean")) {
		*res = is_bool(v);
	} else if (!strcmp(name, "true") || !strcmp(name, "false")) {
		*res = is_bool(v) && json_object_get_boolean(v->j) == (name[0] == 't');
	} else if (!strcmp(name, "integer")) {
		*res = is_int(v);
	} else if (!strcmp(name, "float")) {
		*res = is_float(v);
	} else if (!strcmp(name, "number")) {
		*res = is_num(v);
	} else if (!strcmp(name, "string")) {
		*res = is_str(v);
	} else if (!strcmp(name, "mapping")) {
		*res = is_dict(v);
	} else if (!strcmp(name, "iterable") || !strcmp(name, "sequence")) {
		*res = is_str(v) || is_list(v) || is_dict(v) || is_undef(v);
	} else if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
		size_t i;

		*res = is_str(v);
		for (i = 0; *res && i < len_of(v); i++) {
			int c = (unsigned char)str_of(v)[i];

			if (name[0] == 'l' ? isupper(c) : islower(c))
				*res = 0;
		}
	} else if (!strcmp(name, "odd") || !strcmp(name, "even") || !strcmp(name, "divisibleby")) {
		int64_t d = name[0] == 'd' ? 0 : 2;

		if ((ret = want_int(r, line, name, v)))
			return ret;
		if (name[0] == 'd') {
			if (!x)
				return rerr(r, line, GM_EINVAL, "divisibleby needs an argument");
			if ((ret = want_int(r, line, name, x)))
				return ret;
			d = int_of(x);
			if (!d)
				return rerr(r, line, GM_EINVAL, "division by zero");
		}
		*res = int_of(v) % d == 0;
		if (name[0] == 'o')
			*res = !*res;
	} else {
		static const struct { const char *name; int op; } cmp[] = {
			{ "eq", OP_EQ }, { "equalto", OP_EQ }, { "==", OP_EQ }, { "ne", OP_NE }, { "!=", OP_NE },
			{ "lt", OP_LT }, { "<", OP_LT }, { "le", OP_LE }, { "<=", OP_LE }, { "gt", OP_GT },
			{ ">", OP_GT }, { "ge", OP_GE }, { ">=", OP_GE }, { "in", OP_IN },
		};
		size_t k;

		for (k = 0; k < sizeof(cmp) / sizeof(cmp[0]); k++) {
			if (!strcmp(name, cmp[k].name)) {
				if (!x)
					return rerr(r, line, GM_EINVAL, "test '%s' needs an argument", name);
				return compare(r, line, cmp[k].op, v, x, res);
			}
		}
		return rerr(r, line, GM_EUNSUPPORTED, "unsupported Jinja test '%s'", name);
	}
	return 0;
}

/* ---- sorting filters (sort, dictsort, unique, min, max, groupby's order) ---- */

/*
 * Python's ordering of two values: numbers (bools as 0/1), strings (by code
 * point, lowered first unless case_sensitive, as jinja2's ignore_case),
 * lists element by element; anything else is a TypeError, as in Python.
 */
static int order(struct render *r, int line, const struct val *a, const struct val *b, int case_sensitive, int *c)
{
	if (is_num(a) && is_num(b)) {
		if (is_intlike(a) && is_intlike(b))
			*c = int_of(a) < int_of(b) ? -1 : int_of(a) > int_of(b);
		else
			*c = num_of(a) < num_of(b) ? -1 : num_of(a) > num_of(b);
		return 0;
	}
	if (is_str(a) && is_str(b)) {
		struct val la = case_sensitive ? val_copy(a) : do_case(str_of(a), len_of(a), 'l');
		struct val lb = case_sensitive ? val_copy(b) : do_case(str_of(b), len_of(b), 'l');
		size_t na = len_of(&la), nb = len_of(&lb);

		*c = memcmp(str_of(&la), str_of(&lb), na < nb ? na : nb);
		*c = *c < 0 ? -1 : *c > 0;
		if (!*c)
			*c = na < nb ? -1 : na > nb;
		val_clear(&la);
		val_clear(&lb);
		return 0;
	}
	if (is_list(a) && is_list(b)) {
		size_t na = json_object_array_length(a->j), nb = json_object_array_length(b->j), i;
		int ret;

		for (i = 0; i < na && i < nb; i++) {
			struct val x = { .kind = V_JSON, .j = json_object_array_get_idx(a->j, i) };
			struct val y = { .kind = V_JSON, .j = json_object_array_get_idx(b->j, i) };

			if (val_equal(&x, &y))
				continue;
			return order(r, line, &x, &y, case_sensitive, c);
		}
		(void)ret;
		*c = na < nb ? -1 : na > nb;
		return 0;
	}
	if (is_none(a) && is_none(b)) {
		*c = 0;
		return 0;
	}
	return rerr(r, line, GM_EINVAL, "'<' not supported between instances of '%s' and '%s'", type_name(a),
		    type_name(b));
}

struct sort_item {
	json_object *item; /* what is sorted (one reference) */
	struct val key;    /* what it is sorted by */
};

struct sort_ctx {
	struct render *r;
	int line, case_sensitive, reverse, ret;
};

/* A stable merge sort (Python's sorted() is stable) that stops at the first comparison error. */
static void merge_sort(struct sort_ctx *sc, struct sort_item *v, struct sort_item *tmp, size_t n)
{
	size_t mid = n / 2, i = 0, j = mid, k = 0;

	if (n < 2 || sc->ret)
		return;
	merge_sort(sc, v, tmp, mid);
	merge_sort(sc, v + mid, tmp, n - mid);
	while (i < mid && j < n && !sc->ret) {
		int c = 0;

		sc->ret = order(sc->r, sc->line, &v[j].key, &v[i].key, sc->case_sensitive, &c);
		if (sc->reverse)
			c = -c;
		tmp[k++] = c < 0 ? v[j++] : v[i++];
	}
	if (sc->ret)
		return;
	while (i < mid)
		tmp[k++] = v[i++];
	while (j < n)
		tmp[k++] = v[j++];
	memcpy(v, tmp, n * sizeof(*v));
}

/* jinja2's make_attrgetter: "a.b" walks attributes, "0" indexes; "a,b" (sort only) makes a list key. */
static int attr_key(struct render *r, int line, const struct val *item, const struct val *attr, int multi,
		    const struct val *def, struct val *out)
{
	const char *s, *p, *comma;
	int ret = 0;

	if (!attr || is_none(attr)) {
		*out = val_copy(item);
		return 0;
	}
	if (is_intlike(attr)) {
		if ((ret = get_item(r, line, item, attr, out)))
			return ret;
		if (def && is_undef(out)) {
			val_clear(out);
			*out = val_copy(def);
		}
		return 0;
	}
	if ((ret = want_str(r, line, "attribute=", attr)))
		return ret;
	s = str_of(attr);
	if (multi && strchr(s, ',')) {
		json_object *arr = json_object_new_array();

		for (p = s; !ret; p = comma + 1) {
			struct val part, got;

			comma = strchr(p, ',');
			if (!comma)
				comma = p + strlen(p);
			part = val_str(p, (size_t)(comma - p));
			ret = attr_key(r, line, item, &part, 0, def, &got);
			val_clear(&part);
			if (!ret)
				json_object_array_add(arr, val_to_json(&got));
			if (!*comma)
				break;
		}
		if (ret) {
			json_object_put(arr);
			return ret;
		}
		*out = val_own(arr);
		return 0;
	}
	*out = val_copy(item);
	for (p = s; ; p = comma + 1) {
		char part[256];
		size_t len;
		struct val next;

		comma = strchr(p, '.');
		len = comma ? (size_t)(comma - p) : strlen(p);
		if (len >= sizeof(part))
			len = sizeof(part) - 1;
		memcpy(part, p, len);
		part[len] = '\0';
		if (len && strspn(part, "0123456789") == len) {
			struct val idx = val_int(strtoll(part, NULL, 10));

			ret = get_item(r, line, out, &idx, &next);
			val_clear(&idx);
		} else {
			ret = get_attr_dyn(r, line, out, part, &next);
		}
		val_clear(out);
		if (ret)
			return ret;
		*out = next;
		if (def && is_undef(out)) {
			val_clear(out);
			*out = val_copy(def);
		}
		if (!comma)
			break;
	}
	return 0;
}

/*
 * The items of v with their sort keys (attribute, or the [key, value]
 * pair's part for dictsort) in *items; *n of them.
 */
static int sort_items(struct render *r, int line, const struct val *v, const struct val *attr, int multi,
		      struct sort_item **items, size_t *n)
{
	json_object *seq;
	size_t i;
	int ret;

	if ((ret = iterate(r, line, v, &seq)))
		return ret;
	*n = json_object_array_length(seq);
	*items = gm_xcalloc(*n + 1, sizeof(**items));
	for (i = 0; i < *n && !ret; i++) {
		struct val item = val_borrow(json_object_array_get_idx(seq, i));

		(*items)[i].item = json_object_get(item.j);
		if (!(ret = tick(r, line)))
			ret = attr_key(r, line, &item, attr, multi, NULL, &(*items)[i].key);
		val_clear(&item);
	}
	json_object_put(seq);
	if (ret) {
		for (i = 0; i < *n; i++) {
			json_object_put((*items)[i].item);
			val_clear(&(*items)[i].key);
		}
		free(*items);
		*items = NULL;
	}
	return ret;
}

static void free_sort_items(struct sort_item *items, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		json_object_put(items[i].item);
		val_clear(&items[i].key);
	}
	free(items);
}

static int do_sort(struct render *r, int line, struct sort_item *items, size_t n, int case_sensitive, int reverse)
{
	struct sort_item *tmp = gm_xcalloc(n + 1, sizeof(*tmp));
	struct sort_ctx sc = { r, line, case_sensitive, reverse, 0 };

	merge_sort(&sc, items, tmp, n);
	free(tmp);
	return sc.ret;
}

static int bool_arg(struct args *a, size_t i, const char *name, int def)
{
	struct val *x = arg(a, i, name);

	return x ? truthy(x) : def;
}

/* The filters that order or pick by order: sort, dictsort, unique, min, max. */
static int filter_sorting(struct render *r, int line, const char *name, const struct val *v, struct args *a,
			  struct val *out)
{
	struct sort_item *items = NULL;
	size_t n = 0, i;
	int ret;

	if (!strcmp(name, "sort")) {
		/* sort(reverse=False, case_sensitive=False, attribute=None) */
		json_object *arr;

		if ((ret = check_nargs(r, line, name, a, 3)) ||
		    (ret = sort_items(r, line, v, arg(a, 2, "attribute"), 1, &items, &n)))
			return ret;
		ret = do_sort(r, line, items, n, bool_arg(a, 1, "case_sensitive", 0), bool_arg(a, 0, "reverse", 0));
		if (!ret) {
			arr = json_object_new_array();
			for (i = 0; i < n; i++)
				json_object_array_add(arr, json_object_get(items[i].item));
			*out = val_own(arr);
		}
		free_sort_items(items, n);
		return ret;
	}
	if (!strcmp(name, "dictsort")) {
		/* dictsort(case_sensitive=False, by='key', reverse=False): [key, value] pairs */
		struct val *by = arg(a, 1, "by"), pairs, idx;
		json_object *arr;
		int pos = 0;

		if ((ret = check_nargs(r, line, name, a, 3)))
			return ret;
		if (!is_dict(v))
			return rerr(r, line, GM_EINVAL, "dictsort expects a mapping, not %s", type_name(v));
		if (by) {
			if ((ret = want_str(r, line, "dictsort(by=)", by)))
				return ret;
			if (!strcmp(str_of(by), "value"))
				pos = 1;
			else if (strcmp(str_of(by), "key"))
				return rerr(r, line, GM_EINVAL, "You can only sort by either \"key\" or \"value\"");
		}
		{
			json_object *pl = json_object_new_array();

			json_object_object_foreach(v->j, key, child) {
				json_object *pair = new_tuple();

				json_object_array_add(pair, key_json(key));
				json_object_array_add(pair, json_object_get(child));
				json_object_array_add(pl, pair);
			}
			pairs = val_own(pl);
		}
		idx = val_int(pos);
		ret = sort_items(r, line, &pairs, &idx, 0, &items, &n);
		val_clear(&idx);
		val_clear(&pairs);
		if (ret)
			return ret;
		ret = do_sort(r, line, items, n, bool_arg(a, 0, "case_sensitive", 0), bool_arg(a, 2, "reverse", 0));
		if (!ret) {
			arr = json_object_new_array();
			for (i = 0; i < n; i++)
				json_object_array_add(arr, json_object_get(items[i].item));
			*out = val_own(arr);
		}
		free_sort_items(items, n);
		return ret;
	}
	if (!strcmp(name, "groupby")) {
		/*
		 * groupby(attribute, default=None, case_sensitive=False): (grouper,
		 * list) tuples in key order; the grouper is the first item's key.
		 */
		int cs = bool_arg(a, 2, "case_sensitive", 0);
		struct val *def = arg(a, 1, "default");
		json_object *res, *grp = NULL;
		size_t start = 0;

		if ((ret = check_nargs(r, line, name, a, 3)))
			return ret;
		if (!arg(a, 0, "attribute"))
			return rerr(r, line, GM_EINVAL, "groupby() needs an attribute");
		if ((ret = sort_items(r, line, v, arg(a, 0, "attribute"), 0, &items, &n)))
			return ret;
		for (i = 0; i < n; i++) {
			if (def && !is_none(def) && is_undef(&items[i].key)) {
				val_clear(&items[i].key);
				items[i].key = val_copy(def);
			}
		}
		if ((ret = do_sort(r, line, items, n, cs, 0))) {
			free_sort_items(items, n);
			return ret;
		}
		res = json_object_new_array();
		for (i = 0; i <= n; i++) {
			int c = 1;

			if (i < n && i > start && !(ret = order(r, line, &items[start].key, &items[i].key, cs, &c)) && !c)
				continue;
			if (ret)
				break;
			if (i > start) {
				json_object *t = new_tuple();
				struct val k = val_copy(&items[start].key);
				size_t m;

				grp = json_object_new_array();
				for (m = start; m < i; m++)
					json_object_array_add(grp, json_object_get(items[m].item));
				json_object_array_add(t, val_to_json(&k));
				json_object_array_add(t, grp);
				json_object_array_add(res, t);
			}
			start = i;
		}
		free_sort_items(items, n);
		if (ret) {
			json_object_put(res);
			return ret;
		}
		*out = val_own(res);
		return 0;
	}
	if (!strcmp(name, "unique")) {
		/* unique(case_sensitive=False, attribute=None): first of each, in order */
		int cs = bool_arg(a, 0, "case_sensitive", 0);
		json_object *arr;
		size_t k;

		if ((ret = check_nargs(r, line, name, a, 2)) ||
		    (ret = sort_items(r, line, v, arg(a, 1, "attribute"), 0, &items, &n)))
			return ret;
		arr = json_object_new_array();
		for (i = 0; i < n; i++) {
			int dup = 0;

			if (!cs && is_str(&items[i].key)) {
				struct val low = do_case(str_of(&items[i].key), len_of(&items[i].key), 'l');

				val_clear(&items[i].key);
				items[i].key = low;
			}
			for (k = 0; k < i && !dup; k++)
				dup = val_equal(&items[k].key, &items[i].key);
			if (!dup)
				json_object_array_add(arr, json_object_get(items[i].item));
			if ((ret = tick(r, line)))
				break;
		}
		free_sort_items(items, n);
		if (ret) {
			json_object_put(arr);
			return ret;
		}
		*out = val_own(arr);
		return 0;
	}
	/* min / max(case_sensitive=False, attribute=None); undefined when empty */
	if ((ret = check_nargs(r, line, name, a, 2)) ||
	    (ret = sort_items(r, line, v, arg(a, 1, "attribute"), 0, &items, &n)))
		return ret;
	{
		size_t best = 0;

		for (i = 1; i < n && !ret; i++) {
			int c = 0;

			ret = order(r, line, &items[i].key, &items[best].key, bool_arg(a, 0, "case_sensitive", 0), &c);
			if (name[1] == 'a' ? c > 0 : c < 0)
				best = i;
		}
		if (!ret)
			*out = n ? val_borrow(items[best].item) : val_undef(NULL);
	}
	free_sort_items(items, n);
	return ret;
}

/* Python's str.splitlines() boundaries: the length of the line break at s[i], or 0. */
static size_t line_break(const char *s, size_t len, size_t i)
{
	size_t j = i;
	unsigned c;

	if (s[i] == '\r')
		return i + 1 < len && s[i + 1] == '\n' ? 2 : 1;
	if (s[i] == '\n' || s[i] == '\v' || s[i] == '\f' || (s[i] >= 0x1c && s[i] <= 0x1e))
		return 1;
	if ((unsigned char)s[i] < 0x80)
		return 0;
	c = utf8_next(s, len, &j);
	return c == 0x85 || c == 0x2028 || c == 0x2029 ? j - i : 0;
}

/* The other filters the corpus and jinja2 have: indent, sum, wordcount, batch, center, round. */
static int filter_more(struct render *r, int line, const char *name, const struct val *v, struct args *a,
		       struct val *out)
{
	int ret;

	if (!strcmp(name, "indent")) {
		/* indent(width=4, first=False, blank=False), jinja2 3.1's do_indent */
		struct val *w = arg(a, 0, "width");
		int first = bool_arg(a, 1, "first", 0), blank = bool_arg(a, 2, "blank", 0);
		gm_buf src = GM_BUF_INIT, ind = GM_BUF_INIT, b = GM_BUF_INIT;
		size_t i = 0, nlines = 0;

		if ((ret = check_nargs(r, line, name, a, 3)))
			return ret;
		if (w && is_str(w)) {
			gm_buf_add(&ind, str_of(w), len_of(w));
		} else {
			int64_t k, width = 4;

			if (w && (ret = want_int(r, line, "indent(width=)", w)))
				return ret;
			if (w)
				width = int_of(w);
			if (width > 4096)
				return rerr(r, line, GM_EINVAL, "indent(): width %lld is too large", (long long)width);
			for (k = 0; k < width; k++)
				gm_buf_addch(&ind, ' ');
		}
		add_str(&src, v);
		gm_buf_addch(&src, '\n'); /* as jinja2: s += "\n", then splitlines() */
		if (first)
			gm_buf_add(&b, ind.buf, ind.len);
		while (i < src.len) {
			size_t st = i, brk;

			while (i < src.len && !(brk = line_break(src.buf, src.len, i)))
				i++;
			if (i >= src.len)
				brk = 0;
			if (nlines) {
				gm_buf_addch(&b, '\n');
				if (blank || i > st)
					gm_buf_add(&b, ind.buf, ind.len);
			}
			gm_buf_add(&b, src.buf + st, i - st);
			nlines++;
			i += brk;
			if ((ret = check_string(r, line, b.len)))
				break;
		}
		gm_buf_release(&src);
		gm_buf_release(&ind);
		if (ret) {
			gm_buf_release(&b);
			return ret;
		}
		*out = val_buf(&b);
		return 0;
	}
	if (!strcmp(name, "sum")) {
		/* sum(attribute=None, start=0) */
		struct val *start = arg(a, 1, "start"), acc;
		struct sort_item *items;
		size_t n, i;

		if ((ret = check_nargs(r, line, name, a, 2)) ||
		    (ret = sort_items(r, line, v, arg(a, 0, "attribute"), 0, &items, &n)))
			return ret;
		acc = start ? val_copy(start) : val_int(0);
		for (i = 0; i < n && !ret; i++) {
			struct val next;

			if (!(ret = binary_op(r, line, OP_ADD, &acc, &items[i].key, &next))) {
				val_clear(&acc);
				acc = next;
			}
		}
		free_sort_items(items, n);
		if (ret) {
			val_clear(&acc);
			return ret;
		}
		*out = acc;
		return 0;
	}
	if (!strcmp(name, "wordcount")) {
		/* len(re.findall(r"\w+", s)) */
		gm_buf b = GM_BUF_INIT;
		size_t i = 0;
		int64_t words = 0, in_word = 0;

		add_str(&b, v);
		while (i < b.len) {
			unsigned c = utf8_next(b.buf, b.len, &i);
			utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
			int w = c == '_' || (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
				(cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO) ||
				(cat >= UTF8PROC_CATEGORY_MN && cat <= UTF8PROC_CATEGORY_MC);

			if (w && !in_word)
				words++;
			in_word = w;
		}
		gm_buf_release(&b);
		*out = val_int(words);
		return 0;
	}
	if (!strcmp(name, "batch")) {
		/* batch(linecount, fill_with=None): lists of linecount items */
		struct val *cnt = arg(a, 0, "linecount"), *fill = arg(a, 1, "fill_with");
		json_object *seq, *res, *cur = NULL;
		size_t i, n, k;

		if (!cnt || (ret = want_int(r, line, "batch()", cnt)))
			return cnt ? ret : rerr(r, line, GM_EINVAL, "batch() needs a count");
		if (int_of(cnt) <= 0)
			return rerr(r, line, GM_EINVAL, "batch() count must be positive");
		if ((ret = iterate(r, line, v, &seq)))
			return ret;
		n = json_object_array_length(seq);
		k = (size_t)int_of(cnt);
		res = json_object_new_array();
		for (i = 0; i < n; i++) {
			if (!cur)
				cur = json_object_new_array();
			json_object_array_add(cur, json_object_get(json_object_array_get_idx(seq, i)));
			if (json_object_array_length(cur) == k) {
				json_object_array_add(res, cur);
				cur = NULL;
			}
		}
		if (cur) {
			while (fill && json_object_array_length(cur) < k) {
				struct val f = val_copy(fill);

				json_object_array_add(cur, val_to_json(&f));
			}
			json_object_array_add(res, cur);
		}
		json_object_put(seq);
		*out = val_own(res);
		return 0;
	}
	if (!strcmp(name, "center")) {
		struct val *w = arg(a, 0, "width");
		gm_buf s = GM_BUF_INIT, b = GM_BUF_INIT;
		int64_t width = 80, len, left, k;

		if (w && (ret = want_int(r, line, "center()", w)))
			return ret;
		if (w)
			width = int_of(w);
		add_str(&s, v);
		len = (int64_t)utf8_count(s.buf, s.len);
		if (width > len && (ret = check_string(r, line, s.len + (size_t)(width - len)))) {
			gm_buf_release(&s);
			return ret;
		}
		/* str.center: the extra space goes right, except an odd pad on an odd width goes left */
		left = width > len ? (width - len) / 2 + ((width - len) & width & 1) : 0;
		for (k = 0; k < left; k++)
			gm_buf_addch(&b, ' ');
		gm_buf_add(&b, s.buf, s.len);
		for (k = left + len; k < width; k++)
			gm_buf_addch(&b, ' ');
		gm_buf_release(&s);
		*out = val_buf(&b);
		return 0;
	}
	return rerr(r, line, GM_EUNSUPPORTED, "unsupported Jinja filter '%s'", name);
}

/* ---- filters ---- */

static int apply_filter(struct render *r, int line, const char *name, const struct val *v, struct args *a,
			struct val *out);

/* select/reject/selectattr/rejectattr/map over the items of v. */
static int filter_seq(struct render *r, int line, const char *name, const struct val *v, struct args *a,
		      struct val *out)
{
	json_object *items, *res;
	size_t i, n;
	int ret = 0;

	if (!truthy(v)) { /* jinja2's select/map start with "if value:" */
		*out = val_own(json_object_new_array());
		return 0;
	}
	if ((ret = iterate(r, line, v, &items)))
		return ret;
	res = json_object_new_array();
	n = json_object_array_length(items);
	ret = charge(r, line, n);
	for (i = 0; i < n && !ret; i++) {
		struct val item = val_borrow(json_object_array_get_idx(items, i)), got = VAL_UNDEF;
		struct args rest;
		struct val *attr = arg(a, 0, "attribute");

		memset(&rest, 0, sizeof(rest));
		if (!strcmp(name, "map")) {
			struct val *attrkw = arg(a, (size_t)-1, "attribute");

			if (attrkw) {
				ret = attr_key(r, line, &item, attrkw, 0, arg(a, (size_t)-1, "default"), &got);
			} else if (a->npos && is_str(&a->pos[0])) {
				rest.pos = a->pos + 1;
				rest.npos = a->npos - 1;
				rest.kwnames = a->kwnames;
				rest.kw = a->kw;
				rest.nkw = a->nkw;
				ret = apply_filter(r, line, str_of(&a->pos[0]), &item, &rest, &got);
			} else {
				ret = rerr(r, line, GM_EINVAL, "map() needs a filter name or attribute=");
			}
			if (!ret)
				json_object_array_add(res, val_to_json(&got));
		} else if (!strcmp(name, "select") || !strcmp(name, "reject")) {
			int keep = 0;

			if (a->npos >= 1) {
				if ((ret = want_str(r, line, name, &a->pos[0])) == 0) {
					rest.pos = a->pos + 1;
					rest.npos = a->npos - 1;
					ret = apply_test(r, line, str_of(&a->pos[0]), &item, &rest, &keep);
				}
			} else {
				keep = truthy(&item);
			}
			if (!ret && keep == (name[0] == 's'))
				json_object_array_add(res, json_object_get(item.j));
		} else {
			int keep = 0;

			if (!attr || !is_str(attr)) {
				ret = rerr(r, line, GM_EINVAL, "%s() needs an attribute name", name);
			} else {
				ret = attr_key(r, line, &item, attr, 0, NULL, &got);
				if (!ret && a->npos >= 2) {
					if ((ret = want_str(r, line, name, &a->pos[1])) == 0) {
						rest.pos = a->pos + 2;
						rest.npos = a->npos - 2;
						ret = apply_test(r, line, str_of(&a->pos[1]), &got, &rest, &keep);
					}
				} else if (!ret) {
					keep = truthy(&got);
				}
			}
			if (!ret && keep == (name[0] == 's'))
				json_object_array_add(res, json_object_get(item.j));
		}
		val_clear(&got);
		val_clear(&item);
	}
	json_object_put(items);
	if (ret) {
		json_object_put(res);
		return ret;
	}
	*out = val_own(res);
	return 0;
}

static int apply_filter(struct render *r, int line, const char *name, const struct val *v, struct args *a,
			struct val *out)
{
	struct val *x = arg(a, 0, NULL);
	int ret;

	if (!strcmp(name, "default") || !strcmp(name, "d")) {
		struct val *def = arg(a, 0, "default_value"), *boolean = arg(a, 1, "boolean");

		if (is_undef(v) || (boolean && truthy(boolean) && !truthy(v)))
			*out = def ? val_copy(def) : val_str("", 0);
		else
			*out = val_copy(v);
		return 0;
	}
	if (!strcmp(name, "attr")) {
		if (!x)
			return rerr(r, line, GM_EINVAL, "attr needs an attribute name");
		if ((ret = want_str(r, line, "attr", x)))
			return ret;
		if (is_undef(v)) {
			*out = val_undef(NULL);
			return 0;
		}
		return get_attr_dyn(r, line, v, str_of(x), out);
	}
	if (!strcmp(name, "safe")) {
		gm_buf b = GM_BUF_INIT;

		add_str(&b, v);
		*out = val_buf(&b);
		out->safe = 1;
		return 0;
	}
	if (!strcmp(name, "string")) {
		gm_buf b = GM_BUF_INIT;

		add_str(&b, v);
		*out = val_buf(&b);
		return 0;
	}
	if (!strcmp(name, "length") || !strcmp(name, "count")) {
		if (is_undef(v))
			*out = val_int(0);
		else if (is_str(v))
			*out = val_int((int64_t)utf8_count(str_of(v), len_of(v)));
		else if (is_list(v))
			*out = val_int((int64_t)json_object_array_length(v->j));
		else if (is_dict(v))
			*out = val_int(json_object_object_length(v->j));
		else
			return rerr(r, line, GM_EINVAL, "object of type '%s' has no length", type_name(v));
		return 0;
	}
	if (!strcmp(name, "tojson")) {
		/* transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
		struct val *ascii = arg(a, 0, "ensure_ascii"), *indent = arg(a, 1, "indent");
		struct val *seps = arg(a, 2, "separators"), *sort = arg(a, 3, "sort_keys");
		struct json_opts o;
		gm_buf b = GM_BUF_INIT;

		if ((ret = check_nargs(r, line, "tojson", a, 4)))
			return ret;
		if (is_undef(v))
			return undefined_error(r, line, v);
		if (v->kind == V_NS || is_fn(v))
			return rerr(r, line, GM_EINVAL, "a %s is not JSON serializable", type_name(v));
		if (indent && !is_none(indent) && (ret = want_int(r, line, "tojson(indent=)", indent)))
			return ret;
		memset(&o, 0, sizeof(o));
		o.indent = indent && !is_none(indent) ? (int)int_of(indent) : -1;
		if (o.indent > 64)
			o.indent = 64;
		o.ensure_ascii = ascii && truthy(ascii);
		o.sort_keys = sort && truthy(sort);
		o.item_sep = o.indent >= 0 ? "," : ", ";
		o.key_sep = ": ";
		if (seps && !is_none(seps)) {
			json_object *i0, *i1;

			if (!is_list(seps) || json_object_array_length(seps->j) != 2 ||
			    !json_object_is_type(i0 = json_object_array_get_idx(seps->j, 0), json_type_string) ||
			    !json_object_is_type(i1 = json_object_array_get_idx(seps->j, 1), json_type_string))
				return rerr(r, line, GM_EINVAL, "tojson(separators=) expects two strings");
			o.item_sep = json_object_get_string(i0);
			o.key_sep = json_object_get_string(i1);
		}
		o.item_sep_len = strlen(o.item_sep);
		o.key_sep_len = strlen(o.key_sep);
		add_json(&b, v->j, &o, 0);
		*out = val_buf(&b);
		return 0;
	}
	if (!strcmp(name, "e") || !strcmp(name, "escape")) {
		gm_buf b = GM_BUF_INIT;

		add_escaped(&b, v);
		*out = val_buf(&b);
		out->safe = 1;
		return 0;
	}
	if (!strcmp(name, "list")) {
		json_object *items;

		if ((ret = iterate(r, line, v, &items)))
			return ret;
		*out = val_own(items);
		return 0;
	}
	if (!strcmp(name, "items")) {
		struct args none;

		if (is_undef(v)) {
			*out = val_own(json_object_new_array());
			return 0;
		}
		if (!is_dict(v))
			return rerr(r, line, GM_EINVAL, "items filter expects a mapping, not %s", type_name(v));
		memset(&none, 0, sizeof(none));
		return dict_method(r, line, v, "items", &none, out);
	}
	if (!strcmp(name, "first") || !strcmp(name, "last")) {
		json_object *items;
		size_t n;

		if ((ret = iterate(r, line, v, &items)))
			return ret;
		n = json_object_array_length(items);
		*out = n ? val_borrow(json_object_array_get_idx(items, name[0] == 'f' ? 0 : n - 1)) : val_undef(NULL);
		json_object_put(items);
		return 0;
	}
	if (!strcmp(name, "reverse")) {
		json_object *items, *rev;
		size_t n;

		if ((ret = iterate(r, line, v, &items)))
			return ret;
		n = json_object_array_length(items);
		if (is_str(v)) {
			gm_buf b = GM_BUF_INIT;

			while (n-- > 0) {
				json_object *c = json_object_array_get_idx(items, n);

				gm_buf_add(&b, json_object_get_string(c), (size_t)json_object_get_string_len(c));
			}
			*out = val_buf(&b);
		} else {
			rev = json_object_new_array();
			while (n-- > 0)
				json_object_array_add(rev, json_object_get(json_object_array_get_idx(items, n)));
			*out = val_own(rev);
		}
		json_object_put(items);
		return 0;
	}
	if (!strcmp(name, "join")) {
		struct val *sep = arg(a, 0, "d"), *attr = arg(a, 1, "attribute");
		json_object *items;
		gm_buf b = GM_BUF_INIT;
		size_t i, n;

		if ((ret = iterate(r, line, v, &items)))
			return ret;
		if (sep && (ret = want_str(r, line, "join", sep))) {
			json_object_put(items);
			return ret;
		}
		n = json_object_array_length(items);
		for (i = 0; i < n; i++) {
			struct val item = val_borrow(json_object_array_get_idx(items, i));

			if (i && sep)
				gm_buf_add(&b, str_of(sep), len_of(sep));
			if ((ret = check_string(r, line, b.len))) {
				val_clear(&item);
				json_object_put(items);
				gm_buf_release(&b);
				return ret;
			}
			if (attr && is_str(attr)) {
				struct val got;

				if ((ret = attr_key(r, line, &item, attr, 0, NULL, &got))) {
					val_clear(&item);
					json_object_put(items);
					gm_buf_release(&b);
					return ret;
				}
				add_str(&b, &got);
				val_clear(&got);
			} else {
				add_str(&b, &item);
			}
			val_clear(&item);
		}
		json_object_put(items);
		*out = val_buf(&b);
		return 0;
	}
	if (!strcmp(name, "map") || !strcmp(name, "select") || !strcmp(name, "reject") || !strcmp(name, "selectattr") ||
	    !strcmp(name, "rejectattr"))
		return filter_seq(r, line, name, v, a, out);
	if (!strcmp(name, "abs")) {
		if (!is_num(v))
			return rerr(r, line, GM_EINVAL, "abs expects a number, not %s", type_name(v));
		*out = is_float(v) ? val_own(gm_json_new_double(fabs(num_of(v)))) : val_int(llabs(int_of(v)));
		return 0;
	}
	if (!strcmp(name, "int") || !strcmp(name, "float")) {
		struct val *def = arg(a, 0, "default");
		int is_i = name[0] == 'i';
		double d = 0;
		int okv = 1;

		if (is_num(v)) {
			d = num_of(v);
		} else if (is_str(v)) {
			char *end;
			const char *s = str_of(v);

			d = strtod(s, &end);
			okv = end != s && !strpbrk(s, "xXpP");
			while (okv && *end)
				if (!isspace((unsigned char)*end++))
					okv = 0;
		} else {
			okv = 0;
		}
		if (!okv) {
			*out = def ? val_copy(def) : is_i ? val_int(0) : val_own(gm_json_new_double(0.0));
			return 0;
		}
		/* a float past the 64-bit integers (or NaN) has no int: the default, as for a bad string */
		if (is_i && !is_intlike(v) && !(d > -9223372036854775808.0 && d < 9223372036854775808.0)) {
			*out = def ? val_copy(def) : val_int(0);
			return 0;
		}
		*out = is_i ? (is_intlike(v) ? val_int(int_of(v)) : val_int((int64_t)d)) : val_own(gm_json_new_double(d));
		return 0;
	}
	if (!strcmp(name, "trim") || !strcmp(name, "lower") || !strcmp(name, "upper") || !strcmp(name, "capitalize") ||
	    !strcmp(name, "title") || !strcmp(name, "replace")) {
		gm_buf b = GM_BUF_INIT;
		struct val s;

		add_str(&b, v);
		s = val_buf(&b);
		if (!strcmp(name, "trim")) {
			if (x && !is_none(x) && (ret = want_str(r, line, "trim", x))) {
				val_clear(&s);
				return ret;
			}
			*out = do_strip(str_of(&s), len_of(&s), x, 3);
			ret = 0;
		} else if (!strcmp(name, "replace")) {
			struct val *y = arg(a, 1, "new"), *c = arg(a, 2, "count");

			x = arg(a, 0, "old");
			if (!x || !y)
				ret = rerr(r, line, GM_EINVAL, "replace needs two arguments");
			else if (!(ret = want_str(r, line, "replace", x)) && !(ret = want_str(r, line, "replace", y)) &&
				 !(c && !is_none(c) && (ret = want_int(r, line, "replace", c))))
				if (do_replace(str_of(&s), len_of(&s), str_of(x), len_of(x), str_of(y), len_of(y),
					       c && !is_none(c) ? int_of(c) : -1, r->lim.max_string, out))
					ret = check_string(r, line, SIZE_MAX);
		} else {
			*out = do_case(str_of(&s), len_of(&s), name[0] == 'c' ? 'c' : name[0] == 't' ? 'T' : name[0] == 'u' ? 'u' : 'l');
			ret = 0;
		}
		val_clear(&s);
		return ret;
	}
	if (!strcmp(name, "sort") || !strcmp(name, "dictsort") || !strcmp(name, "unique") || !strcmp(name, "min") ||
	    !strcmp(name, "max") || !strcmp(name, "groupby"))
		return filter_sorting(r, line, name, v, a, out);
	return filter_more(r, line, name, v, a, out);
}

/* ---- calls ---- */

static int call_global(struct render *r, int line, const char *name, struct args *a, struct val *out)
{
	size_t i;

	if (!strcmp(name, "raise_exception")) {
		gm_buf b = GM_BUF_INIT;
		int ret;

		if (a->npos)
			add_str(&b, &a->pos[0]);
		ret = rerr(r, line, GM_EINVAL, "the template raised an error: %s", b.buf);
		gm_buf_release(&b);
		return ret;
	}
	if (!strcmp(name, "namespace") || !strcmp(name, "dict")) {
		json_object *obj = json_object_new_object();

		if (a->npos > 1 || (a->npos && !is_dict(&a->pos[0]))) {
			json_object_put(obj);
			return rerr(r, line, GM_EINVAL, "%s() takes keyword arguments or one mapping", name);
		}
		if (a->npos) {
			json_object_object_foreach(a->pos[0].j, key, child)
				json_object_object_add(obj, key, json_object_get(child));
		}
		for (i = 0; i < a->nkw; i++) {
			struct val c = val_copy(&a->kw[i]);

			json_object_object_add(obj, a->kwnames[i], val_to_json(&c));
		}
		*out = val_own(obj);
		if (name[0] == 'n')
			out->kind = V_NS;
		return 0;
	}
	if (!strcmp(name, "range")) {
		int64_t start = 0, stop, step = 1, k;
		json_object *arr;
		int ret;

		if (!a->npos || a->npos > 3 || a->nkw)
			return rerr(r, line, GM_EINVAL, "range() takes 1 to 3 integer arguments");
		for (i = 0; i < a->npos; i++)
			if ((ret = want_int(r, line, "range()", &a->pos[i])))
				return ret;
		stop = int_of(&a->pos[0]);
		if (a->npos >= 2) {
			start = stop;
			stop = int_of(&a->pos[1]);
		}
		if (a->npos == 3)
			step = int_of(&a->pos[2]);
		if (!step)
			return rerr(r, line, GM_EINVAL, "range() step cannot be zero");
		if ((stop - start) / step > (int64_t)r->lim.max_list)
			return check_list(r, line, (size_t)((stop - start) / step));
		if ((stop - start) / step > 0 && (ret = charge(r, line, (uint64_t)((stop - start) / step))))
			return ret;
		arr = json_object_new_array();
		for (k = start; step > 0 ? k < stop : k > stop; k += step)
			json_object_array_add(arr, json_object_new_int64(k));
		*out = val_own(arr);
		return 0;
	}
	if (!strcmp(name, "strftime_now")) {
		char buf[256];
		time_t now = time(NULL);
		struct tm tm;
		int ret;

		if (!a->npos)
			return rerr(r, line, GM_EINVAL, "strftime_now() needs a format");
		if ((ret = want_str(r, line, "strftime_now()", &a->pos[0])))
			return ret;
		if (r->lim.now) {
			now = (time_t)r->lim.now;
			gmtime_r(&now, &tm);
		} else if (getenv("GM_JINJA_NOW") && *getenv("GM_JINJA_NOW")) {
			now = (time_t)strtoll(getenv("GM_JINJA_NOW"), NULL, 10);
			gmtime_r(&now, &tm);
		} else {
			localtime_r(&now, &tm);
		}
		if (!strftime(buf, sizeof(buf), str_of(&a->pos[0]), &tm))
			buf[0] = '\0';
		*out = val_str(buf, strlen(buf));
		return 0;
	}
	return rerr(r, line, GM_EINVAL, "'%s' is undefined (called as a function)", name);
}

static int render_nodes(struct render *r, const struct nodelist *l, gm_buf *out);

/*
 * Calls a macro (or a call block's caller()) f with arguments a, giving
 * the text it renders.  As jinja2: parameters take the positional
 * arguments, then the keyword arguments of their name, then their default
 * (evaluated at the call, seeing the parameters before it), else they are
 * undefined; the other positional arguments are in varargs, the other
 * keyword arguments in kwargs; caller (when not NULL) is bound as caller.
 */
static int call_macro(struct render *r, int line, const struct val *f, struct args *a, struct val *caller,
		      struct val *out)
{
	const struct node *m = f->node;
	size_t i, k;
	json_object *varargs, *kwargs;
	gm_buf b = GM_BUF_INIT;
	unsigned char *used;
	int ret = 0, ctl;
	struct val v;

	if (r->calls >= r->lim.max_call_depth)
		return limit_error(r, line, "macro calls nested deeper than the %zu-call limit",
				   r->lim.max_call_depth);
	if ((ret = tick(r, line)))
		return ret;
	push_scope(r);
	/*
	 * A macro sees the scope it was defined in (the top level, usually),
	 * not its caller's; caller() sees where its {% call %} stands.  Both
	 * scopes are still live: a macro is only reachable from them or from
	 * scopes pushed above them.
	 */
	r->scopes[r->nscopes - 1].parent = f->scope;
	used = gm_xcalloc(a->nkw + 1, 1);
	for (i = 0; i < m->ntargets && !ret; i++) {
		if (i < a->npos) {
			v = val_copy(&a->pos[i]);
		} else {
			v = val_undef(m->targets[i]);
			for (k = 0; k < a->nkw; k++) {
				if (!strcmp(a->kwnames[k], m->targets[i])) {
					v = val_copy(&a->kw[k]);
					used[k] = 1;
					break;
				}
			}
			if (k == a->nkw && m->values[i])
				ret = eval(r, m->values[i], &v);
		}
		if (!ret)
			scope_set(r, m->targets[i], &v);
	}
	varargs = new_tuple();
	for (i = m->ntargets; i < a->npos; i++) {
		v = val_copy(&a->pos[i]);
		json_object_array_add(varargs, val_to_json(&v));
	}
	v = val_own(varargs);
	scope_set(r, "varargs", &v);
	kwargs = json_object_new_object();
	for (k = 0; k < a->nkw; k++) {
		if (used[k])
			continue;
		if (!strcmp(a->kwnames[k], "caller") && f->kind == V_MACRO && !caller) {
			v = val_copy(&a->kw[k]);
			scope_set(r, "caller", &v);
			continue;
		}
		v = val_copy(&a->kw[k]);
		json_object_object_add(kwargs, a->kwnames[k], val_to_json(&v));
	}
	free(used);
	v = val_own(kwargs);
	scope_set(r, "kwargs", &v);
	if (caller) {
		v = val_copy(caller);
		scope_set(r, "caller", &v);
	}
	ctl = r->ctl;
	r->ctl = CTL_NONE;
	r->calls++;
	if (!ret)
		ret = render_nodes(r, &m->body, &b);
	r->calls--;
	r->ctl = ctl;
	pop_scope(r);
	if (ret) {
		gm_buf_release(&b);
		return ret;
	}
	*out = val_buf(&b);
	return 0;
}

static int eval_call(struct render *r, const struct expr *e, struct val *out)
{
	const struct expr *callee = e->a;
	struct args a;
	int ret;

	if (callee->kind == E_ATTR) {
		struct val self;

		if ((ret = eval(r, callee->a, &self)))
			return ret;
		if (is_str(&self) || is_dict(&self)) {
			if ((ret = eval_args(r, e, &a))) {
				val_clear(&self);
				return ret;
			}
			if (is_str(&self))
				ret = string_method(r, e->line, &self, callee->name, &a, out);
			else
				ret = dict_method(r, e->line, &self, callee->name, &a, out);
			args_free(&a);
			val_clear(&self);
			return ret;
		}
		if (is_undef(&self)) {
			ret = get_attr(r, e->line, &self, callee->name, out);
			val_clear(&self);
			return ret;
		}
		ret = rerr(r, e->line, is_list(&self) ? GM_EUNSUPPORTED : GM_EINVAL, "'%s' object has no method '%s'%s",
			   type_name(&self), callee->name, is_list(&self) ? " (unsupported)" : "");
		val_clear(&self);
		return ret;
	}
	{
		struct val f;

		if ((ret = eval(r, callee, &f)))
			return ret;
		if (f.kind == V_MACRO || f.kind == V_CALLER) {
			if ((ret = eval_args(r, e, &a)))
				return ret;
			ret = call_macro(r, e->line, &f, &a, NULL, out);
			args_free(&a);
			return ret;
		}
		if (f.kind != V_FUNC) {
			if (is_undef(&f) && f.name)
				ret = rerr(r, e->line, GM_EINVAL, "'%s' is undefined (called as a function)", f.name);
			else if (callee->kind == E_NAME)
				ret = rerr(r, e->line, GM_EINVAL, "'%s' is not callable", callee->name);
			else
				ret = rerr(r, e->line, GM_EINVAL, "a %s is not callable", type_name(&f));
			val_clear(&f);
			return ret;
		}
		if ((ret = eval_args(r, e, &a)))
			return ret;
		ret = call_global(r, e->line, f.name, &a, out);
		args_free(&a);
		return ret;
	}
}

/*
 * A fresh copy of a literal: the tree is never referenced from values, so
 * that one template may be rendered by several threads at once (json-c's
 * reference counts are not atomic).
 */
static json_object *const_copy(json_object *j)
{
	if (!j)
		return NULL;
	switch (json_object_get_type(j)) {
	case json_type_string:
		return json_object_new_string_len(json_object_get_string(j), json_object_get_string_len(j));
	case json_type_int:
		return json_object_new_int64(json_object_get_int64(j));
	case json_type_double:
		return json_object_new_double(json_object_get_double(j));
	case json_type_boolean:
		return json_object_new_boolean(json_object_get_boolean(j));
	default:
		return NULL;
	}
}

static int eval_1(struct render *r, const struct expr *e, struct val *out);

/* Evaluates e into out (a new value); every string, list and dict an expression makes is held to the limits. */
static int eval(struct render *r, const struct expr *e, struct val *out)
{
	int ret = eval_1(r, e, out);

	/* values looked up or passed through are not new: the context's own strings (messages) are not limited */
	if (ret || out->kind != V_JSON || !out->j || e->kind == E_NAME || e->kind == E_ATTR || e->kind == E_ITEM ||
	    e->kind == E_CONST || e->kind == E_COND || e->kind == E_AND || e->kind == E_OR)
		return ret;
	if (json_object_is_type(out->j, json_type_string))
		ret = check_string(r, e->line, (size_t)json_object_get_string_len(out->j));
	else if (json_object_is_type(out->j, json_type_array))
		ret = check_list(r, e->line, json_object_array_length(out->j));
	else if (json_object_is_type(out->j, json_type_object))
		ret = check_list(r, e->line, (size_t)json_object_object_length(out->j));
	if (ret)
		val_clear(out);
	return ret;
}

static int eval_1(struct render *r, const struct expr *e, struct val *out)
{
	struct val a = VAL_UNDEF, b = VAL_UNDEF;
	size_t i;
	int ret = 0;

	*out = VAL_UNDEF;
	switch (e->kind) {
	case E_CONST:
		*out = val_own(const_copy(e->value));
		return 0;
	case E_NAME:
		*out = lookup(r, e->name);
		return 0;
	case E_LIST:
	case E_TUPLE: {
		json_object *arr = e->kind == E_TUPLE ? new_tuple() : json_object_new_array();

		for (i = 0; i < e->nargs; i++) {
			if ((ret = eval(r, e->args[i], &a))) {
				json_object_put(arr);
				return ret;
			}
			json_object_array_add(arr, val_to_json(&a));
		}
		*out = val_own(arr);
		return 0;
	}
	case E_DICT: {
		json_object *obj = json_object_new_object();

		for (i = 0; i < e->nargs; i++) {
			if ((ret = eval(r, e->args[i], &a)))
				break;
			gm_buf kb = GM_BUF_INIT;

			if (key_of(&a, &kb)) {
				ret = rerr(r, e->line, GM_EINVAL, "unhashable type: '%s' (as a dict key)", type_name(&a));
				break;
			}
			if ((ret = eval(r, e->args2[i], &b))) {
				gm_buf_release(&kb);
				break;
			}
			json_object_object_add(obj, kb.buf, val_to_json(&b));
			gm_buf_release(&kb);
			val_clear(&a);
		}
		val_clear(&a);
		if (ret) {
			json_object_put(obj);
			return ret;
		}
		*out = val_own(obj);
		return 0;
	}
	case E_ATTR:
		if ((ret = eval(r, e->a, &a)))
			return ret;
		ret = get_attr(r, e->line, &a, e->name, out);
		break;
	case E_ITEM:
		if ((ret = eval(r, e->a, &a)) || (ret = eval(r, e->b, &b)))
			break;
		ret = get_item(r, e->line, &a, &b, out);
		break;
	case E_SLICE: {
		struct val parts[3] = { VAL_UNDEF, VAL_UNDEF, VAL_UNDEF };
		struct val *pp[3] = { NULL, NULL, NULL };
		const struct expr *pe[3] = { e->b, e->c, e->d };
		int k;

		if ((ret = eval(r, e->a, &a)))
			break;
		for (k = 0; k < 3 && !ret; k++)
			if (pe[k] && !(ret = eval(r, pe[k], &parts[k])))
				pp[k] = &parts[k];
		if (!ret)
			ret = get_slice(r, e->line, &a, pp, out);
		for (k = 0; k < 3; k++)
			val_clear(&parts[k]);
		break;
	}
	case E_CALL:
		return eval_call(r, e, out);
	case E_FILTER:
	case E_TEST: {
		struct args args;

		if ((ret = eval(r, e->a, &a)))
			break;
		if ((ret = eval_args(r, e, &args)))
			break;
		if (e->kind == E_FILTER) {
			ret = apply_filter(r, e->line, e->name, &a, &args, out);
		} else {
			int res = 0;

			ret = apply_test(r, e->line, e->name, &a, &args, &res);
			if (!ret)
				*out = val_bool(e->negate ? !res : res);
		}
		args_free(&args);
		break;
	}
	case E_UNARY:
		if ((ret = eval(r, e->a, &a)))
			break;
		if (e->op == OP_NOT) {
			*out = val_bool(!truthy(&a));
		} else if (is_undef(&a)) {
			ret = undefined_error(r, e->line, &a);
		} else if (!is_num(&a)) {
			ret = rerr(r, e->line, GM_EINVAL, "bad operand type for unary %s: '%s'", op_names[e->op],
				   type_name(&a));
		} else if (e->op == OP_NEG && !is_float(&a) && int_of(&a) == INT64_MIN) {
			ret = rerr(r, e->line, GM_EINVAL, "integer overflow in unary '-' (64-bit integers)");
		} else if (e->op == OP_NEG) {
			*out = is_float(&a) ? val_own(gm_json_new_double(-num_of(&a))) : val_int(-int_of(&a));
		} else {
			*out = is_float(&a) ? val_copy(&a) : val_int(int_of(&a));
		}
		break;
	case E_BINARY:
		if ((ret = eval(r, e->a, &a)) || (ret = eval(r, e->b, &b)))
			break;
		ret = binary_op(r, e->line, e->op, &a, &b, out);
		break;
	case E_AND:
	case E_OR:
		if ((ret = eval(r, e->a, &a)))
			break;
		if (truthy(&a) == (e->kind == E_OR)) {
			*out = a;
			return 0;
		}
		val_clear(&a);
		return eval(r, e->b, out);
	case E_COMPARE: {
		int res = 1;

		if ((ret = eval(r, e->args[0], &a)))
			break;
		for (i = 1; i < e->nargs && res; i++) {
			if ((ret = eval(r, e->args[i], &b)))
				break;
			if ((ret = compare(r, e->line, e->ops[i - 1], &a, &b, &res)))
				break;
			val_clear(&a);
			a = b;
			b = VAL_UNDEF;
		}
		if (!ret)
			*out = val_bool(res);
		break;
	}
	case E_COND:
		if ((ret = eval(r, e->c, &a)))
			break;
		if (truthy(&a))
			ret = eval(r, e->a, out);
		else if (e->b)
			ret = eval(r, e->b, out);
		else
			*out = val_undef(NULL);
		break;
	case E_CONCAT: {
		gm_buf buf = GM_BUF_INIT;

		if ((ret = eval(r, e->a, &a)) || (ret = eval(r, e->b, &b)))
			break;
		/* refuse before copying when the sizes are known: a doubling template never allocates past the limit */
		if (is_str(&a) && is_str(&b)) {
			if ((ret = check_string(r, e->line, len_of(&a) + len_of(&b))))
				break;
			gm_buf_grow(&buf, len_of(&a) + len_of(&b));
		}
		add_str(&buf, &a);
		if ((ret = check_string(r, e->line, buf.len))) {
			gm_buf_release(&buf);
			break;
		}
		add_str(&buf, &b);
		*out = val_buf(&buf);
		break;
	}
	}
	val_clear(&a);
	val_clear(&b);
	return ret;
}

/* ---- statements ---- */

static int render_nodes(struct render *r, const struct nodelist *l, gm_buf *out);

/* Binds names to v (unpacking a sequence when there are several), consuming v. */
static int bind_targets(struct render *r, int line, char *const *names, size_t n, struct val *v)
{
	size_t i;

	if (n == 1) {
		scope_set(r, names[0], v);
		return 0;
	}
	if (!is_list(v) || json_object_array_length(v->j) != n) {
		int ret = rerr(r, line, GM_EINVAL, "cannot unpack %s into %zu names", type_name(v), n);

		val_clear(v);
		return ret;
	}
	for (i = 0; i < n; i++) {
		struct val item = val_borrow(json_object_array_get_idx(v->j, i));

		scope_set(r, names[i], &item);
	}
	val_clear(v);
	return 0;
}

static int render_for(struct render *r, const struct node *n, gm_buf *out)
{
	struct val seq;
	json_object *items, *kept;
	size_t i, count;
	int ret;

	if ((ret = eval(r, n->expr, &seq)))
		return ret;
	ret = iterate(r, n->line, &seq, &items);
	val_clear(&seq);
	if (ret)
		return ret;
	if (n->filter) {
		kept = json_object_new_array();
		for (i = 0; i < json_object_array_length(items) && !ret; i++) {
			struct val item = val_borrow(json_object_array_get_idx(items, i)), cond;

			if ((ret = tick(r, n->line))) {
				val_clear(&item);
				break;
			}
			push_scope(r);
			ret = bind_targets(r, n->line, n->targets, n->ntargets, &item);
			if (!ret && !(ret = eval(r, n->filter, &cond))) {
				if (truthy(&cond))
					json_object_array_add(kept, json_object_get(json_object_array_get_idx(items, i)));
				val_clear(&cond);
			}
			pop_scope(r);
		}
		json_object_put(items);
		items = kept;
		if (ret) {
			json_object_put(items);
			return ret;
		}
	}
	count = json_object_array_length(items);
	for (i = 0; i < count && !ret; i++) {
		json_object *loop = json_object_new_object();
		struct val item = val_borrow(json_object_array_get_idx(items, i)), lv;

		json_object_object_add(loop, "index", json_object_new_int64((int64_t)i + 1));
		json_object_object_add(loop, "index0", json_object_new_int64((int64_t)i));
		json_object_object_add(loop, "revindex", json_object_new_int64((int64_t)(count - i)));
		json_object_object_add(loop, "revindex0", json_object_new_int64((int64_t)(count - i - 1)));
		json_object_object_add(loop, "first", json_object_new_boolean(i == 0));
		json_object_object_add(loop, "last", json_object_new_boolean(i + 1 == count));
		json_object_object_add(loop, "length", json_object_new_int64((int64_t)count));
		json_object_object_add(loop, "depth", json_object_new_int64(1));
		json_object_object_add(loop, "depth0", json_object_new_int64(0));
		if (i > 0)
			json_object_object_add(loop, "previtem", json_object_get(json_object_array_get_idx(items, i - 1)));
		if (i + 1 < count)
			json_object_object_add(loop, "nextitem", json_object_get(json_object_array_get_idx(items, i + 1)));
		if ((ret = tick(r, n->line))) {
			json_object_put(loop);
			val_clear(&item);
			break;
		}
		push_scope(r);
		lv = val_own(loop);
		scope_set(r, "loop", &lv);
		ret = bind_targets(r, n->line, n->targets, n->ntargets, &item);
		if (!ret)
			ret = render_nodes(r, &n->body, out);
		pop_scope(r);
		if (r->ctl == CTL_BREAK) {
			r->ctl = CTL_NONE;
			break;
		}
		r->ctl = CTL_NONE;
	}
	json_object_put(items);
	if (!ret && !count)
		ret = render_nodes(r, &n->orelse, out);
	return ret;
}

/* The text of n's body, through n's filter chain when it has one (filter blocks, filtered block sets). */
static int render_filtered(struct render *r, const struct node *n, struct val *out)
{
	gm_buf b = GM_BUF_INIT;
	struct val v;
	int ret;

	if ((ret = render_nodes(r, &n->body, &b))) {
		gm_buf_release(&b);
		return ret;
	}
	v = val_buf(&b);
	if (!n->filter) {
		*out = v;
		return 0;
	}
	push_scope(r);
	scope_set(r, FILTER_ARG, &v);
	ret = eval(r, n->filter, out);
	pop_scope(r);
	return ret;
}

static int render_set(struct render *r, const struct node *n)
{
	struct val v;
	int ret;

	if (n->kind == N_SET_BLOCK) {
		if ((ret = render_filtered(r, n, &v)))
			return ret;
		scope_set(r, n->targets[0], &v);
		return 0;
	}
	if ((ret = eval(r, n->expr, &v)))
		return ret;
	if (n->attr) {
		struct val *ns = scope_find(r, n->targets[0]);

		if (!ns || ns->kind != V_NS) {
			val_clear(&v);
			return rerr(r, n->line, GM_EINVAL, "cannot assign attribute '%s' on '%s': not a namespace()",
				    n->attr, n->targets[0]);
		}
		json_object_object_add(ns->j, n->attr, val_to_json(&v));
		return 0;
	}
	return bind_targets(r, n->line, n->targets, n->ntargets, &v);
}

static int render_nodes(struct render *r, const struct nodelist *l, gm_buf *out)
{
	size_t i;
	int ret = 0;

	if (++r->depth > 4 * MAX_DEPTH) {
		r->depth--;
		return rerr(r, l->n ? l->v[0]->line : 0, GM_EINVAL, "template nesting is too deep");
	}
	for (i = 0; i < l->n && !ret && r->ctl == CTL_NONE; i++) {
		const struct node *n = l->v[i];
		struct val v;

		switch (n->kind) {
		case N_DATA:
			if (!(ret = check_output(r, n->line, out->len + n->len)))
				gm_buf_add(out, n->text, n->len);
			break;
		case N_OUTPUT:
			if (!(ret = eval(r, n->expr, &v))) {
				add_str(out, &v);
				val_clear(&v);
				ret = check_output(r, n->line, out->len);
			}
			break;
		case N_MACRO: {
			struct val m = { .kind = V_MACRO, .name = n->attr, .node = n, .scope = r->nscopes - 1 };

			scope_set(r, n->attr, &m);
			break;
		}
		case N_CALLBLOCK: {
			struct val f, caller = { .kind = V_CALLER, .name = "caller", .node = n, .scope = r->nscopes - 1 };
			struct args a;

			if ((ret = eval(r, n->expr->a, &f)))
				break;
			if (f.kind != V_MACRO) {
				ret = rerr(r, n->line, GM_EINVAL, "{%% call %%} needs a macro, not %s", type_name(&f));
				val_clear(&f);
				break;
			}
			if (!(ret = eval_args(r, n->expr, &a))) {
				ret = call_macro(r, n->line, &f, &a, &caller, &v);
				args_free(&a);
			}
			if (!ret) {
				add_str(out, &v);
				val_clear(&v);
				ret = check_output(r, n->line, out->len);
			}
			break;
		}
		case N_FILTER:
			if (!(ret = render_filtered(r, n, &v))) {
				add_str(out, &v);
				val_clear(&v);
				ret = check_output(r, n->line, out->len);
			}
			break;
		case N_IF:
			if (!(ret = eval(r, n->expr, &v))) {
				int t = truthy(&v);

				val_clear(&v);
				ret = render_nodes(r, t ? &n->body : &n->orelse, out);
			}
			break;
		case N_FOR:
			ret = render_for(r, n, out);
			break;
		case N_SET:
		case N_SET_BLOCK:
			ret = render_set(r, n);
			break;
		case N_BREAK:
			r->ctl = CTL_BREAK;
			break;
		case N_CONTINUE:
			r->ctl = CTL_CONTINUE;
			break;
		case N_WITH: {
			size_t k;

			push_scope(r);
			for (k = 0; k < n->ntargets && !ret; k++)
				if (!(ret = eval(r, n->values[k], &v)))
					scope_set(r, n->targets[k], &v);
			if (!ret)
				ret = render_nodes(r, &n->body, out);
			pop_scope(r);
			break;
		}
		case N_BODY:
			ret = render_nodes(r, &n->body, out);
			break;
		}
	}
	r->depth--;
	return ret;
}

void gm_jinja_limits_init(gm_jinja_limits *lim)
{
	memset(lim, 0, sizeof(*lim));
	lim->max_output = (size_t)16 << 20;
	lim->max_string = (size_t)8 << 20;
	lim->max_list = 100000;
	lim->max_iterations = 10000000;
	lim->max_call_depth = 100;
	lim->max_seconds = 10;
}

int gm_jinja_render(const gm_jinja_template *t, json_object *context, gm_buf *out, gm_error *err)
{
	return gm_jinja_render_ex(t, context, NULL, out, err);
}

int gm_jinja_render_ex(const gm_jinja_template *t, json_object *context, const gm_jinja_limits *lim, gm_buf *out,
		       gm_error *err)
{
	struct render r;
	gm_buf b = GM_BUF_INIT;
	int ret;

	if (context && !json_object_is_type(context, json_type_object))
		return gm_error_set(err, GM_EINVAL, "%s: the template context must be a JSON object", t->what);
	memset(&r, 0, sizeof(r));
	r.t = t;
	r.ctx = context;
	r.err = err;
	if (lim)
		r.lim = *lim;
	else
		gm_jinja_limits_init(&r.lim);
	r.deadline = mono_now() + r.lim.max_seconds;
	push_scope(&r);
	ret = render_nodes(&r, &t->root, &b);
	while (r.nscopes)
		pop_scope(&r);
	free(r.scopes);
	if (!ret)
		gm_buf_add(out, b.buf, b.len);
	gm_buf_release(&b);
	return ret;
}
