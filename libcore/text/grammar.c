/*
 * grammar.c - GBNF parsing, the stack-set matcher and token masks (see grammar.h).
 *
 * A parsed grammar is a set of rules; a rule is a list of alternatives; an
 * alternative is a sequence of elements ending with E_END.  An element is a
 * character set (sorted, merged code-point ranges; negation is resolved at
 * parse time) or a reference to a rule.  Repetition is rewritten into
 * right-recursive helper rules, so the matcher only knows sequences and
 * alternatives:
 *
 *   x*      R ::= x R | ()          x+    x R(x*)
 *   x?      R ::= x | ()            x{m,n}  m copies of x, then O(n-m),
 *                                           O(k) ::= x O(k-1) | (), O(0) = ()
 *
 * The matcher keeps the set of parse stacks consistent with the input so
 * far.  A stack is a linked list of nodes (position of the next element in
 * the elems array, parent node), allocated in an arena, so that pushing
 * and popping never copy a stack and stacks share their tails; the top of
 * every stack in a set is a character set (rule references are expanded
 * eagerly), or the stack is empty (-1: the root rule is complete).
 */
#include "text/grammar.h"

#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

#define MAX_REPEAT 65535
#define MAX_STACKS 1024  /* a set larger than this is cut (only ambiguous grammars get there) */
#define MAX_CLOSURE 20000 /* rule references expanded in a row (about 1.6 MB of stack); deeper is cut (nested optional repetitions
			  * of something that can be empty); keeps a hostile grammar from a deep recursion */
#define MAX_EXPAND 100000 /* rule expansions for one character; beyond, the rest is cut (a hostile grammar
			   * whose alternatives can all be empty could ask for exponentially many) */
#define MAX_ELEMS (4 << 20) /* elements after repetitions are expanded: a request cannot ask for gigabytes */
#define MAX_CP 0x10FFFF

enum { E_END = 0, E_CHARS = 1, E_REF = 2 };

typedef struct elem {
	int32_t type;
	int32_t val; /* E_CHARS: charset index; E_REF: rule index */
} elem;

typedef struct range {
	uint32_t lo, hi;
} range;

typedef struct charset {
	uint64_t ascii[2];    /* code points 0..127 */
	int32_t first, n;     /* sorted disjoint ranges in g->ranges */
	int32_t lit;          /* 1 + the quoted literal this set is the first character of; 0: none */
} charset;

struct gm_grammar {
	elem *elems;
	size_t n_elems;
	int32_t *alt_pos;     /* first element of each alternative */
	int32_t *rule_alt;    /* [n_rules]: first alternative in alt_pos */
	int32_t *rule_nalt;   /* [n_rules] */
	size_t n_rules;
	charset *sets;
	size_t n_sets;
	range *ranges;
	size_t n_ranges;
	int32_t root;
	/* the quoted literals' texts (UTF-8), for special tokens: literal k is lit_bytes[lit_off[k]..lit_off[k+1]) */
	char *lit_bytes;
	uint32_t *lit_off;
	size_t n_lits;
};

/* ---------------------------------------------------------------- parsing */

typedef struct pvec {
	int32_t *v;
	size_t n, alloc;
} pvec;

static void pvec_push(pvec *p, int32_t x)
{
	if (p->n == p->alloc) {
		p->alloc = p->alloc ? 2 * p->alloc : 8;
		p->v = gm_xrealloc(p->v, p->alloc * sizeof(*p->v));
	}
	p->v[p->n++] = x;
}

/* A rule while parsing: its alternatives, each a pvec of encoded elements. */
typedef struct prule {
	char *name;          /* NULL for generated rules */
	int defined;
	int line;            /* first reference, for "undefined rule" */
	pvec *alts;
	size_t n_alts, alloc_alts;
} prule;

/* Elements while parsing: E_CHARS/E_REF and the index, in one int. */
#define ENC(type, val) ((int32_t)(((uint32_t)(val) << 2) | (uint32_t)(type)))
#define ETYPE(x) ((x) & 3)
#define EVAL(x) ((int32_t)((uint32_t)(x) >> 2))

typedef struct parser {
	const char *s, *end;
	int line;
	prule *rules;
	size_t n_rules, alloc_rules;
	charset *sets;
	size_t n_sets, alloc_sets;
	range *ranges;
	size_t n_ranges, alloc_ranges;
	gm_buf lit_bytes;    /* the literals' texts */
	pvec lit_off;        /* where each begins in lit_bytes */
	gm_error *err;
	int failed;
	int depth;
	size_t n_elems;  /* elements made so far, for MAX_ELEMS */
} parser;

static int perr(parser *p, const char *fmt, const char *what)
{
	if (!p->failed)
		gm_error_set(p->err, GM_EINVAL, "grammar line %d: %s%s", p->line, fmt, what ? what : "");
	p->failed = 1;
	return -1;
}

static int32_t new_rule(parser *p, const char *name, size_t len)
{
	prule *r;

	if (p->n_rules == p->alloc_rules) {
		p->alloc_rules = p->alloc_rules ? 2 * p->alloc_rules : 32;
		p->rules = gm_xrealloc(p->rules, p->alloc_rules * sizeof(*p->rules));
	}
	r = &p->rules[p->n_rules];
	memset(r, 0, sizeof(*r));
	if (name) {
		r->name = gm_xmalloc(len + 1);
		memcpy(r->name, name, len);
		r->name[len] = '\0';
	}
	r->line = p->line;
	return (int32_t)p->n_rules++;
}

static int32_t find_rule(parser *p, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < p->n_rules; i++)
		if (p->rules[i].name && strlen(p->rules[i].name) == len && !memcmp(p->rules[i].name, name, len))
			return (int32_t)i;
	return new_rule(p, name, len);
}

static pvec *add_alt(parser *p, int32_t rule)
{
	prule *r = &p->rules[rule];

	if (r->n_alts == r->alloc_alts) {
		r->alloc_alts = r->alloc_alts ? 2 * r->alloc_alts : 4;
		r->alts = gm_xrealloc(r->alts, r->alloc_alts * sizeof(*r->alts));
	}
	memset(&r->alts[r->n_alts], 0, sizeof(pvec));
	return &r->alts[r->n_alts++];
}

/* Adds an alternative made of elements e[0..n) to rule. */
static void rule_alt(parser *p, int32_t rule, const int32_t *e, size_t n)
{
	pvec *a = add_alt(p, rule);
	size_t i;

	for (i = 0; i < n; i++)
		pvec_push(a, e[i]);
}

static void add_range(parser *p, uint32_t lo, uint32_t hi)
{
	if (p->n_ranges == p->alloc_ranges) {
		p->alloc_ranges = p->alloc_ranges ? 2 * p->alloc_ranges : 64;
		p->ranges = gm_xrealloc(p->ranges, p->alloc_ranges * sizeof(*p->ranges));
	}
	p->ranges[p->n_ranges].lo = lo;
	p->ranges[p->n_ranges].hi = hi;
	p->n_ranges++;
}

static int cmp_range(const void *a, const void *b)
{
	const range *x = a, *y = b;

	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/*
 * A character set from the ranges p->ranges[first..): sorted, merged,
 * complemented when negate; returns its element.
 */
static int32_t finish_set(parser *p, size_t first, int negate)
{
	size_t n = p->n_ranges - first, i, k = 0;
	charset *cs;
	uint32_t c;

	/* An empty set ("[]") can come before any range was stored, when
	 * p->ranges is still NULL: no pointer arithmetic on it then. */
	if (n) {
		range *r = p->ranges + first;

		qsort(r, n, sizeof(*r), cmp_range);
		for (i = 0; i < n; i++) {
			if (k && r[i].lo <= r[k - 1].hi + 1) {
				if (r[i].hi > r[k - 1].hi)
					r[k - 1].hi = r[i].hi;
			} else {
				r[k++] = r[i];
			}
		}
	}
	p->n_ranges = first + k;
	if (negate) {
		range *copy = gm_xmalloc((k ? k : 1) * sizeof(*copy));
		uint32_t next = 0;

		if (k)
			memcpy(copy, p->ranges + first, k * sizeof(*copy));
		p->n_ranges = first;
		for (i = 0; i < k; i++) {
			if (copy[i].lo > next)
				add_range(p, next, copy[i].lo - 1);
			next = copy[i].hi + 1;
		}
		if (next <= MAX_CP)
			add_range(p, next, MAX_CP);
		free(copy);
	}
	if (p->n_sets == p->alloc_sets) {
		p->alloc_sets = p->alloc_sets ? 2 * p->alloc_sets : 64;
		p->sets = gm_xrealloc(p->sets, p->alloc_sets * sizeof(*p->sets));
	}
	cs = &p->sets[p->n_sets];
	memset(cs, 0, sizeof(*cs));
	cs->first = (int32_t)first;
	cs->n = (int32_t)(p->n_ranges - first);
	for (i = first; i < p->n_ranges; i++)
		for (c = p->ranges[i].lo; c <= p->ranges[i].hi && c < 128; c++)
			cs->ascii[c >> 6] |= (uint64_t)1 << (c & 63);
	return ENC(E_CHARS, p->n_sets++);
}

static void utf8_put(gm_buf *b, uint32_t c)
{
	if (c < 0x80) {
		gm_buf_addch(b, (char)c);
	} else if (c < 0x800) {
		gm_buf_addch(b, (char)(0xc0 | (c >> 6)));
		gm_buf_addch(b, (char)(0x80 | (c & 0x3f)));
	} else if (c < 0x10000) {
		gm_buf_addch(b, (char)(0xe0 | (c >> 12)));
		gm_buf_addch(b, (char)(0x80 | ((c >> 6) & 0x3f)));
		gm_buf_addch(b, (char)(0x80 | (c & 0x3f)));
	} else {
		gm_buf_addch(b, (char)(0xf0 | (c >> 18)));
		gm_buf_addch(b, (char)(0x80 | ((c >> 12) & 0x3f)));
		gm_buf_addch(b, (char)(0x80 | ((c >> 6) & 0x3f)));
		gm_buf_addch(b, (char)(0x80 | (c & 0x3f)));
	}
}

static int32_t single_char(parser *p, uint32_t c)
{
	size_t first = p->n_ranges;

	add_range(p, c, c);
	return finish_set(p, first, 0);
}

/* Decodes one UTF-8 character at p->s; -1 on invalid UTF-8. */
static int64_t utf8_next(parser *p)
{
	const unsigned char *s = (const unsigned char *)p->s;
	size_t left = (size_t)(p->end - p->s);
	uint32_t c;
	int n, i;

	if (!left)
		return -1;
	if (s[0] < 0x80) {
		p->s++;
		return s[0];
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2;
		c = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3;
		c = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4;
		c = s[0] & 0x07;
	} else {
		return -1;
	}
	if (left < (size_t)n)
		return -1;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return -1;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))) || (n == 4 && (c < 0x10000 || c > MAX_CP)))
		return -1;
	p->s += n;
	return c;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* One character of a literal or class, escapes decoded; -1 on error. */
static int64_t parse_char(parser *p)
{
	int64_t c;
	int n = 0, i, h;
	uint32_t v = 0;

	if (p->s >= p->end)
		return perr(p, "unexpected end of the grammar", NULL);
	if (*p->s != '\\') {
		if (*p->s == '\n')
			p->line++;
		c = utf8_next(p);
		if (c < 0)
			return perr(p, "invalid UTF-8", NULL);
		return c;
	}
	p->s++;
	if (p->s >= p->end)
		return perr(p, "unexpected end of the grammar after '\\'", NULL);
	switch (*p->s++) {
	case 'n': return '\n';
	case 'r': return '\r';
	case 't': return '\t';
	case '\\': return '\\';
	case '"': return '"';
	case '\'': return '\'';
	case '[': return '[';
	case ']': return ']';
	case '-': return '-';
	case '^': return '^';
	case '/': return '/';
	case 'x': n = 2; break;
	case 'u': n = 4; break;
	case 'U': n = 8; break;
	default:
		p->s--;
		return perr(p, "unknown escape in a string or class: \\", (char[]){ *p->s, 0 });
	}
	for (i = 0; i < n; i++) {
		if (p->s >= p->end || (h = hexval((unsigned char)*p->s)) < 0)
			return perr(p, "expected hexadecimal digits in an escape", NULL);
		v = (v << 4) | (uint32_t)h;
		p->s++;
	}
	if (v > MAX_CP)
		return perr(p, "escaped character beyond U+10FFFF", NULL);
	return v;
}

static int is_name_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Skips spaces, tabs, newlines and comments. */
static void skip_space(parser *p)
{
	while (p->s < p->end) {
		if (*p->s == '#') {
			while (p->s < p->end && *p->s != '\n')
				p->s++;
		} else if (*p->s == '\n') {
			p->line++;
			p->s++;
		} else if (*p->s == ' ' || *p->s == '\t' || *p->s == '\r') {
			p->s++;
		} else {
			break;
		}
	}
}

/* Length of a rule name at s, 0 if none. */
static size_t name_len(const parser *p, const char *s)
{
	const char *t = s;

	while (t < p->end && is_name_char((unsigned char)*t))
		t++;
	return (size_t)(t - s);
}

/* Whether a rule definition ("name ::=") starts at p->s. */
static int at_definition(parser *p)
{
	size_t n = name_len(p, p->s);
	const char *t = p->s + n;

	if (!n)
		return 0;
	while (t < p->end && (*t == ' ' || *t == '\t'))
		t++;
	return p->end - t >= 3 && !memcmp(t, "::=", 3);
}

static int parse_alts(parser *p, int32_t rule, int nested);

/* Wraps elements e[0..n) into a new rule when there is more than one; returns one element. */
static int32_t as_one(parser *p, const int32_t *e, size_t n)
{
	int32_t r;

	if (n == 1)
		return e[0];
	r = new_rule(p, NULL, 0);
	rule_alt(p, r, e, n);
	return ENC(E_REF, r);
}

/* x* as a rule: R ::= x R | () */
static int32_t star_rule(parser *p, int32_t x)
{
	int32_t r = new_rule(p, NULL, 0), e[2];

	e[0] = x;
	e[1] = ENC(E_REF, r);
	rule_alt(p, r, e, 2);
	rule_alt(p, r, NULL, 0);
	return ENC(E_REF, r);
}

/* Appends x repeated {lo, hi} (hi < 0: unbounded) to seq; -1 when the grammar gets too large. */
static int repeat(parser *p, pvec *seq, int32_t x, long lo, long hi)
{
	long i;
	int32_t prev, e[2];

	p->n_elems += (size_t)lo + 3 * (size_t)(hi > lo ? hi - lo : 1);
	if (p->n_elems > MAX_ELEMS)
		return perr(p, "the grammar is too large (repetitions expand to more than 4M elements)", NULL);

	for (i = 0; i < lo; i++)
		pvec_push(seq, x);
	if (hi < 0) {
		pvec_push(seq, star_rule(p, x));
		return 0;
	}
	if (hi == lo)
		return 0;
	/* O(1) ::= x | (); O(k) ::= x O(k-1) | () */
	prev = -1;
	for (i = 0; i < hi - lo; i++) {
		int32_t r = new_rule(p, NULL, 0);

		e[0] = x;
		e[1] = prev;
		rule_alt(p, r, e, prev < 0 ? 1 : 2);
		rule_alt(p, r, NULL, 0);
		prev = ENC(E_REF, r);
	}
	pvec_push(seq, prev);
	return 0;
}

static int parse_count(parser *p, long *out)
{
	long v = 0;

	if (p->s >= p->end || *p->s < '0' || *p->s > '9')
		return perr(p, "expected a number in {m,n}", NULL);
	while (p->s < p->end && *p->s >= '0' && *p->s <= '9') {
		v = v * 10 + (*p->s++ - '0');
		if (v > MAX_REPEAT)
			return perr(p, "repetition count above 65535", NULL);
	}
	*out = v;
	return 0;
}

/* One alternative: a sequence of items up to '|', ')' or the end of the rule. */
static int parse_seq(parser *p, pvec *seq, int nested)
{
	pvec item = { NULL, 0, 0 };
	int ret = 0;

	for (;;) {
		int64_t c;

		skip_space(p);
		if (p->s >= p->end || *p->s == '|' || *p->s == ')')
			break;
		if (!nested && at_definition(p))
			break;
		item.n = 0;
		if (*p->s == '"') {
			size_t lit0 = p->lit_bytes.len;

			p->s++;
			while (p->s < p->end && *p->s != '"') {
				if ((c = parse_char(p)) < 0)
					goto fail;
				pvec_push(&item, single_char(p, (uint32_t)c));
				utf8_put(&p->lit_bytes, (uint32_t)c);
			}
			if (p->s >= p->end) {
				perr(p, "unterminated string literal", NULL);
				goto fail;
			}
			p->s++;
			if (!item.n) /* "" matches nothing: no element */
				continue;
			/* the literal's text, known from its first character's set (see special_at) */
			p->sets[EVAL(item.v[0])].lit = (int32_t)p->lit_off.n + 1;
			pvec_push(&p->lit_off, (int32_t)lit0);
		} else if (*p->s == '[') {
			size_t first = p->n_ranges;
			int negate = 0;

			p->s++;
			if (p->s < p->end && *p->s == '^') {
				negate = 1;
				p->s++;
			}
			while (p->s < p->end && *p->s != ']') {
				int64_t hi;

				if ((c = parse_char(p)) < 0)
					goto fail;
				hi = c;
				if (p->end - p->s >= 2 && p->s[0] == '-' && p->s[1] != ']') {
					p->s++;
					if ((hi = parse_char(p)) < 0)
						goto fail;
					if (hi < c) {
						perr(p, "a character range goes backwards", NULL);
						goto fail;
					}
				}
				add_range(p, (uint32_t)c, (uint32_t)hi);
			}
			if (p->s >= p->end) {
				perr(p, "unterminated character class", NULL);
				goto fail;
			}
			p->s++;
			pvec_push(&item, finish_set(p, first, negate));
		} else if (*p->s == '.') {
			size_t first = p->n_ranges;

			p->s++;
			add_range(p, 0, MAX_CP);
			pvec_push(&item, finish_set(p, first, 0));
		} else if (*p->s == '(') {
			int32_t r = new_rule(p, NULL, 0);

			p->s++;
			if (++p->depth > 200) {
				perr(p, "groups nested too deeply", NULL);
				goto fail;
			}
			if (parse_alts(p, r, 1))
				goto fail;
			p->depth--;
			skip_space(p);
			if (p->s >= p->end || *p->s != ')') {
				perr(p, "expected ')'", NULL);
				goto fail;
			}
			p->s++;
			pvec_push(&item, ENC(E_REF, r));
		} else if (name_len(p, p->s)) {
			size_t n = name_len(p, p->s);

			pvec_push(&item, ENC(E_REF, find_rule(p, p->s, n)));
			p->s += n;
		} else if (*p->s == '<' || *p->s == '!') {
			perr(p, "token references (<[id]>) are not supported", NULL);
			goto fail;
		} else {
			perr(p, "unexpected character: ", (char[]){ *p->s, 0 });
			goto fail;
		}
		/* a quantifier applies to the item just read (no space before it) */
		if (p->s < p->end && (*p->s == '*' || *p->s == '+' || *p->s == '?' || *p->s == '{')) {
			int32_t x = as_one(p, item.v, item.n);
			long lo = 0, hi = -1;

			if (*p->s == '*') {
				p->s++;
			} else if (*p->s == '+') {
				lo = 1;
				p->s++;
			} else if (*p->s == '?') {
				hi = 1;
				p->s++;
			} else {
				p->s++;
				skip_space(p);
				if (parse_count(p, &lo))
					goto fail;
				skip_space(p);
				if (p->s < p->end && *p->s == ',') {
					p->s++;
					skip_space(p);
					if (p->s < p->end && *p->s != '}' && parse_count(p, &hi))
						goto fail;
				} else {
					hi = lo;
				}
				skip_space(p);
				if (p->s >= p->end || *p->s != '}') {
					perr(p, "expected '}'", NULL);
					goto fail;
				}
				p->s++;
				if (hi >= 0 && hi < lo) {
					perr(p, "{m,n} with n < m", NULL);
					goto fail;
				}
			}
			if (repeat(p, seq, x, lo, hi))
				goto fail;
		} else {
			size_t i;

			for (i = 0; i < item.n; i++)
				pvec_push(seq, item.v[i]);
		}
	}
	free(item.v);
	return ret;
fail:
	free(item.v);
	return -1;
}

static int parse_alts(parser *p, int32_t rule, int nested)
{
	for (;;) {
		pvec seq = { NULL, 0, 0 };

		if (parse_seq(p, &seq, nested)) {
			free(seq.v);
			return -1;
		}
		rule_alt(p, rule, seq.v, seq.n);
		free(seq.v);
		skip_space(p);
		if (p->s < p->end && *p->s == '|') {
			p->s++;
			continue;
		}
		return 0;
	}
}

static int parse_all(parser *p)
{
	for (;;) {
		size_t n;
		int32_t r;

		skip_space(p);
		if (p->s >= p->end)
			return 0;
		n = name_len(p, p->s);
		if (!n || !at_definition(p))
			return perr(p, "expected a rule definition (name ::= ...)", NULL);
		r = find_rule(p, p->s, n);
		if (p->rules[r].defined)
			return perr(p, "rule defined twice: ", p->rules[r].name);
		p->rules[r].defined = 1;
		p->s += n;
		skip_space(p);
		p->s += 3; /* ::= */
		if (parse_alts(p, r, 0))
			return -1;
		skip_space(p);
		if (p->s < p->end && *p->s == ')')
			return perr(p, "unbalanced ')'", NULL);
	}
}

/* ---------------------------------------------------------------- checks and layout */

/* Whether a rule can match the empty string, for each rule (a fixpoint). */
static unsigned char *nullable_rules(const parser *p)
{
	unsigned char *nul = gm_xcalloc(p->n_rules ? p->n_rules : 1, 1);
	int changed = 1;
	size_t r, a, i;

	while (changed) {
		changed = 0;
		for (r = 0; r < p->n_rules; r++) {
			if (nul[r])
				continue;
			for (a = 0; a < p->rules[r].n_alts && !nul[r]; a++) {
				const pvec *alt = &p->rules[r].alts[a];
				int all = 1;

				for (i = 0; i < alt->n && all; i++)
					all = ETYPE(alt->v[i]) == E_REF && nul[EVAL(alt->v[i])];
				if (all)
					nul[r] = changed = 1;
			}
		}
	}
	return nul;
}

/* Depth-first search for a cycle of "r can start with s" edges: left recursion. */
static int left_rec(const parser *p, const unsigned char *nul, unsigned char *mark, size_t r)
{
	size_t a, i;

	if (mark[r] == 2)
		return 0;
	if (mark[r] == 1)
		return 1;
	mark[r] = 1;
	for (a = 0; a < p->rules[r].n_alts; a++) {
		const pvec *alt = &p->rules[r].alts[a];

		for (i = 0; i < alt->n; i++) {
			if (ETYPE(alt->v[i]) != E_REF)
				break;
			if (left_rec(p, nul, mark, (size_t)EVAL(alt->v[i])))
				return 1;
			if (!nul[EVAL(alt->v[i])])
				break;
		}
	}
	mark[r] = 2;
	return 0;
}

/* The rule a generated rule belongs to, for messages: the nearest named rule before it. */
static const char *rule_label(const parser *p, size_t r)
{
	while (r > 0 && !p->rules[r].name)
		r--;
	return p->rules[r].name ? p->rules[r].name : "?";
}

static void parser_release(parser *p)
{
	size_t i, a;

	for (i = 0; i < p->n_rules; i++) {
		for (a = 0; a < p->rules[i].n_alts; a++)
			free(p->rules[i].alts[a].v);
		free(p->rules[i].alts);
		free(p->rules[i].name);
	}
	free(p->rules);
	free(p->sets);
	free(p->ranges);
	gm_buf_release(&p->lit_bytes);
	free(p->lit_off.v);
}

int gm_grammar_parse(const char *gbnf, size_t len, const char *root_rule, gm_grammar **out, gm_error *err)
{
	parser p;
	gm_grammar *g;
	unsigned char *nul, *mark;
	size_t r, a, i, n_alts = 0, n_elems = 0;
	int32_t root = -1;

	*out = NULL;
	memset(&p, 0, sizeof(p));
	gm_buf_init(&p.lit_bytes);
	p.s = gbnf;
	p.end = gbnf + len;
	p.line = 1;
	p.err = err;
	if (!root_rule)
		root_rule = "root";
	if (parse_all(&p)) {
		parser_release(&p);
		return GM_EINVAL;
	}
	for (r = 0; r < p.n_rules; r++) {
		if (p.rules[r].name && !p.rules[r].defined) {
			gm_error_set(err, GM_EINVAL, "grammar line %d: rule '%s' is used but not defined",
				     p.rules[r].line, p.rules[r].name);
			parser_release(&p);
			return GM_EINVAL;
		}
		if (p.rules[r].name && !strcmp(p.rules[r].name, root_rule))
			root = (int32_t)r;
	}
	if (root < 0) {
		gm_error_set(err, GM_EINVAL, "grammar: no rule named '%s' (the start rule)", root_rule);
		parser_release(&p);
		return GM_EINVAL;
	}
	nul = nullable_rules(&p);
	mark = gm_xcalloc(p.n_rules, 1);
	for (r = 0; r < p.n_rules; r++) {
		if (left_rec(&p, nul, mark, r)) {
			gm_error_set(err, GM_EINVAL, "grammar: rule '%s' is left-recursive (write it as a repetition)",
				     rule_label(&p, r));
			free(nul);
			free(mark);
			parser_release(&p);
			return GM_EINVAL;
		}
	}
	free(nul);
	free(mark);

	/* flatten: rules' alternatives, each a run of elements ending with E_END */
	g = gm_xcalloc(1, sizeof(*g));
	for (r = 0; r < p.n_rules; r++) {
		n_alts += p.rules[r].n_alts;
		for (a = 0; a < p.rules[r].n_alts; a++)
			n_elems += p.rules[r].alts[a].n + 1;
	}
	g->n_rules = p.n_rules;
	g->rule_alt = gm_xmalloc(p.n_rules * sizeof(*g->rule_alt));
	g->rule_nalt = gm_xmalloc(p.n_rules * sizeof(*g->rule_nalt));
	g->alt_pos = gm_xmalloc((n_alts ? n_alts : 1) * sizeof(*g->alt_pos));
	g->elems = gm_xmalloc((n_elems + 1) * sizeof(*g->elems));
	n_alts = n_elems = 0;
	for (r = 0; r < p.n_rules; r++) {
		g->rule_alt[r] = (int32_t)n_alts;
		g->rule_nalt[r] = (int32_t)p.rules[r].n_alts;
		for (a = 0; a < p.rules[r].n_alts; a++) {
			const pvec *alt = &p.rules[r].alts[a];

			g->alt_pos[n_alts++] = (int32_t)n_elems;
			for (i = 0; i < alt->n; i++) {
				g->elems[n_elems].type = ETYPE(alt->v[i]);
				g->elems[n_elems].val = EVAL(alt->v[i]);
				n_elems++;
			}
			g->elems[n_elems].type = E_END;
			g->elems[n_elems].val = 0;
			n_elems++;
		}
	}
	g->n_elems = n_elems;
	g->sets = p.sets;
	g->n_sets = p.n_sets;
	g->ranges = p.ranges;
	g->n_ranges = p.n_ranges;
	g->root = root;
	g->n_lits = p.lit_off.n;
	g->lit_off = gm_xmalloc((g->n_lits + 1) * sizeof(*g->lit_off));
	for (i = 0; i < g->n_lits; i++)
		g->lit_off[i] = (uint32_t)p.lit_off.v[i];
	g->lit_off[g->n_lits] = (uint32_t)p.lit_bytes.len;
	g->lit_bytes = gm_buf_detach(&p.lit_bytes, NULL);
	p.sets = NULL;
	p.ranges = NULL;
	parser_release(&p);
	*out = g;
	return 0;
}

void gm_grammar_free(gm_grammar *g)
{
	if (!g)
		return;
	free(g->elems);
	free(g->alt_pos);
	free(g->rule_alt);
	free(g->rule_nalt);
	free(g->sets);
	free(g->ranges);
	free(g->lit_bytes);
	free(g->lit_off);
	free(g);
}

/* ---------------------------------------------------------------- character sets */

static int set_has(const gm_grammar *g, const charset *cs, uint32_t c)
{
	const range *r;
	int32_t lo, hi;

	if (c < 128)
		return (cs->ascii[c >> 6] >> (c & 63)) & 1;
	r = g->ranges + cs->first;
	lo = 0;
	hi = cs->n - 1;
	while (lo <= hi) {
		int32_t mid = (lo + hi) / 2;

		if (c < r[mid].lo)
			hi = mid - 1;
		else if (c > r[mid].hi)
			lo = mid + 1;
		else
			return 1;
	}
	return 0;
}

/* Whether some code point in [lo, hi] is in the set. */
static int set_meets(const gm_grammar *g, const charset *cs, uint32_t lo, uint32_t hi)
{
	const range *r = g->ranges + cs->first;
	int32_t i;

	for (i = 0; i < cs->n; i++)
		if (r[i].hi >= lo)
			return r[i].lo <= hi;
	return 0;
}

/* ---------------------------------------------------------------- the matcher */

/*
 * Partial UTF-8: the bits of the character so far and how many bytes are
 * still to come; need == 0 when at a character boundary.
 */
typedef struct u8part {
	uint32_t val;
	int need;
	int len;       /* bytes seen */
	unsigned char lead;
} u8part;

struct gm_grammar_state {
	const gm_grammar *g;
	/* the arena of stack nodes */
	int32_t *pos, *par;
	uint32_t *hash;
	size_t n_nodes, alloc_nodes;
	/* sets of stacks, one after another (the committed one first, then scratch) */
	int32_t *sets;
	size_t n_sets_used, alloc_sets;
	size_t cur_off, cur_n;       /* the committed set */
	u8part part;
	int special;                 /* special tokens allowed where a literal spells them (default on) */
	size_t limit_hit;
	size_t expand;               /* closure() calls for the character being stepped */
};

static int32_t push_node(gm_grammar_state *st, int32_t pos, int32_t parent)
{
	size_t n = st->n_nodes;

	if (n == st->alloc_nodes) {
		st->alloc_nodes = st->alloc_nodes ? 2 * st->alloc_nodes : 1024;
		st->pos = gm_xrealloc(st->pos, st->alloc_nodes * sizeof(*st->pos));
		st->par = gm_xrealloc(st->par, st->alloc_nodes * sizeof(*st->par));
		st->hash = gm_xrealloc(st->hash, st->alloc_nodes * sizeof(*st->hash));
	}
	st->pos[n] = pos;
	st->par[n] = parent;
	st->hash[n] = ((parent < 0 ? 0x9e3779b9u : st->hash[parent]) ^ (uint32_t)pos) * 0x01000193u + 0x7f4a7c15u;
	st->n_nodes = n + 1;
	return (int32_t)n;
}

static int same_stack(const gm_grammar_state *st, int32_t a, int32_t b)
{
	while (a != b) {
		if (a < 0 || b < 0 || st->pos[a] != st->pos[b] || st->hash[a] != st->hash[b])
			return 0;
		a = st->par[a];
		b = st->par[b];
	}
	return 1;
}

/* Appends stack s to the set being built at sets[off..n_sets_used) unless it is there. */
static void set_add(gm_grammar_state *st, size_t off, int32_t s)
{
	size_t i;

	for (i = off; i < st->n_sets_used; i++) {
		int32_t t = st->sets[i];

		if (t == s || (s >= 0 && t >= 0 && st->hash[t] == st->hash[s] && same_stack(st, t, s)))
			return;
	}
	if (st->n_sets_used - off >= MAX_STACKS) {
		st->limit_hit++;
		return;
	}
	if (st->n_sets_used == st->alloc_sets) {
		st->alloc_sets = st->alloc_sets ? 2 * st->alloc_sets : 256;
		st->sets = gm_xrealloc(st->sets, st->alloc_sets * sizeof(*st->sets));
	}
	st->sets[st->n_sets_used++] = s;
}

/* Adds stack s with its top rule references expanded (every top a character set, or empty). */
static void closure(gm_grammar_state *st, size_t off, int32_t s, int depth)
{
	const gm_grammar *g = st->g;
	const elem *e;
	int32_t base, next, a, a_end;

	if (depth > MAX_CLOSURE || ++st->expand > MAX_EXPAND) {
		st->limit_hit++;
		return;
	}
	if (s < 0) {
		set_add(st, off, -1);
		return;
	}
	e = &g->elems[st->pos[s]];
	if (e->type == E_CHARS) {
		set_add(st, off, s);
		return;
	}
	next = st->pos[s] + 1;
	base = g->elems[next].type == E_END ? st->par[s] : push_node(st, next, st->par[s]);
	a_end = g->rule_alt[e->val] + g->rule_nalt[e->val];
	for (a = g->rule_alt[e->val]; a < a_end; a++) {
		int32_t p0 = g->alt_pos[a];

		if (g->elems[p0].type == E_END)
			closure(st, off, base, depth + 1);
		else
			closure(st, off, push_node(st, p0, base), depth + 1);
	}
}

/*
 * Builds at the end of st->sets the set that follows the set at
 * sets[off..off+n) on code point c; returns its size (0: rejected).
 */
static size_t step_cp(gm_grammar_state *st, size_t off, size_t n, uint32_t c, size_t *out_off)
{
	const gm_grammar *g = st->g;
	size_t i, o = st->n_sets_used;

	*out_off = o;
	st->expand = 0;
	for (i = 0; i < n; i++) {
		int32_t s = st->sets[off + i], next;

		if (s < 0 || !set_has(g, &g->sets[g->elems[st->pos[s]].val], c))
			continue;
		next = st->pos[s] + 1;
		closure(st, o, g->elems[next].type == E_END ? st->par[s] : push_node(st, next, st->par[s]), 0);
	}
	return st->n_sets_used - o;
}

/* Whether some stack of the set may take a code point in [lo, hi]. */
static int set_meets_any(gm_grammar_state *st, size_t off, size_t n, uint32_t lo, uint32_t hi)
{
	const gm_grammar *g = st->g;
	size_t i;

	for (i = 0; i < n; i++) {
		int32_t s = st->sets[off + i];

		if (s >= 0 && set_meets(g, &g->sets[g->elems[st->pos[s]].val], lo, hi))
			return 1;
	}
	return 0;
}

/*
 * One byte from (the set at off, n; partial character *u) to a new set
 * (*noff, returned size; 0: rejected) and *u updated.  While a character is
 * incomplete the set stays the same (*noff = off) but must have a stack that
 * can take some character starting with the bytes so far.
 */
static size_t step_byte(gm_grammar_state *st, size_t off, size_t n, u8part *u, unsigned char b, size_t *noff)
{
	uint32_t lo, hi;
	int left;

	if (!u->need) {
		if (b < 0x80)
			return step_cp(st, off, n, b, noff);
		if (b >= 0xc2 && b <= 0xdf) {
			u->need = 1;
			u->val = b & 0x1f;
		} else if (b >= 0xe0 && b <= 0xef) {
			u->need = 2;
			u->val = b & 0x0f;
		} else if (b >= 0xf0 && b <= 0xf4) {
			u->need = 3;
			u->val = b & 0x07;
		} else {
			return 0;
		}
		u->lead = b;
		u->len = 1;
	} else {
		unsigned char mn = 0x80, mx = 0xbf;

		if (u->len == 1) {
			switch (u->lead) {
			case 0xe0: mn = 0xa0; break;
			case 0xed: mx = 0x9f; break;
			case 0xf0: mn = 0x90; break;
			case 0xf4: mx = 0x8f; break;
			}
		}
		if (b < mn || b > mx)
			return 0;
		u->val = (u->val << 6) | (b & 0x3f);
		u->len++;
		if (!--u->need) {
			uint32_t c = u->val;

			u->val = 0;
			u->len = 0;
			return step_cp(st, off, n, c, noff);
		}
	}
	/* incomplete: the characters it may still become */
	left = u->need;
	lo = u->val << (6 * left);
	hi = lo | ((1u << (6 * left)) - 1);
	/* no overlong forms: a 3-byte character is at least U+0800, a 4-byte one U+10000 */
	switch (u->len + left) {
	case 2: if (lo < 0x80) lo = 0x80; break;
	case 3: if (lo < 0x800) lo = 0x800; break;
	case 4: if (lo < 0x10000) lo = 0x10000; break;
	}
	if (hi > MAX_CP)
		hi = MAX_CP;
	if (lo > hi)
		return 0;
	*noff = off;
	return set_meets_any(st, off, n, lo, hi) ? n : 0;
}

static void state_start(gm_grammar_state *st)
{
	const gm_grammar *g = st->g;
	int32_t a, a_end = g->rule_alt[g->root] + g->rule_nalt[g->root];

	st->n_nodes = 0;
	st->n_sets_used = 0;
	st->expand = 0;
	memset(&st->part, 0, sizeof(st->part));
	for (a = g->rule_alt[g->root]; a < a_end; a++) {
		int32_t p0 = g->alt_pos[a];

		closure(st, 0, g->elems[p0].type == E_END ? -1 : push_node(st, p0, -1), 0);
	}
	st->cur_off = 0;
	st->cur_n = st->n_sets_used;
}

void gm_grammar_state_new(const gm_grammar *g, gm_grammar_state **out)
{
	gm_grammar_state *st = gm_xcalloc(1, sizeof(*st));

	st->g = g;
	st->special = 1;
	state_start(st);
	*out = st;
}

void gm_grammar_state_reset(gm_grammar_state *st)
{
	state_start(st);
}

void gm_grammar_state_free(gm_grammar_state *st)
{
	if (!st)
		return;
	free(st->pos);
	free(st->par);
	free(st->hash);
	free(st->sets);
	free(st);
}

/*
 * Makes the set at off, n the committed one, moved to the front of
 * st->sets; nodes are kept (the arena only grows while committing; see
 * compact()).
 */
static void commit(gm_grammar_state *st, size_t off, size_t n)
{
	memmove(st->sets, st->sets + off, n * sizeof(*st->sets));
	st->cur_off = 0;
	st->cur_n = n;
	st->n_sets_used = n;
}

/*
 * Copies the committed stacks into a fresh arena, dropping the nodes only
 * rejected or abandoned paths used.  Run when the arena has grown large.
 */
static void compact(gm_grammar_state *st)
{
	size_t live = 0, i;
	int32_t *map, *npos, *npar;
	uint32_t *nhash;
	size_t nn = 0;

	/* a node's parent always has a lower index: one pass from the tops down marks, one up copies */
	map = gm_xmalloc(st->n_nodes * sizeof(*map));
	for (i = 0; i < st->n_nodes; i++)
		map[i] = -1;
	for (i = 0; i < st->cur_n; i++) {
		int32_t s = st->sets[st->cur_off + i];

		while (s >= 0 && map[s] == -1) {
			map[s] = 0;
			live++;
			s = st->par[s];
		}
	}
	npos = gm_xmalloc((live ? live : 1) * 2 * sizeof(*npos));
	npar = gm_xmalloc((live ? live : 1) * 2 * sizeof(*npar));
	nhash = gm_xmalloc((live ? live : 1) * 2 * sizeof(*nhash));
	for (i = 0; i < st->n_nodes; i++) {
		if (map[i] < 0)
			continue;
		npos[nn] = st->pos[i];
		npar[nn] = st->par[i] < 0 ? -1 : map[st->par[i]];
		nhash[nn] = st->hash[i];
		map[i] = (int32_t)nn++;
	}
	for (i = 0; i < st->cur_n; i++) {
		int32_t s = st->sets[st->cur_off + i];

		st->sets[st->cur_off + i] = s < 0 ? -1 : map[s];
	}
	free(map);
	free(st->pos);
	free(st->par);
	free(st->hash);
	st->pos = npos;
	st->par = npar;
	st->hash = nhash;
	st->n_nodes = nn;
	st->alloc_nodes = (live ? live : 1) * 2;
}

int gm_grammar_state_accept(gm_grammar_state *st, const void *bytes, size_t len)
{
	const unsigned char *b = bytes;
	size_t nodes0 = st->n_nodes, used0 = st->n_sets_used, off = st->cur_off, n = st->cur_n, i;
	u8part u = st->part;

	for (i = 0; i < len; i++) {
		size_t noff;

		n = step_byte(st, off, n, &u, b[i], &noff);
		if (!n) {
			st->n_nodes = nodes0;
			st->n_sets_used = used0;
			return 0;
		}
		off = noff;
	}
	commit(st, off, n);
	st->part = u;
	if (st->n_nodes > 65536)
		compact(st);
	return 1;
}

int gm_grammar_state_can_end(const gm_grammar_state *st)
{
	size_t i;

	if (st->part.need)
		return 0;
	for (i = 0; i < st->cur_n; i++)
		if (st->sets[st->cur_off + i] < 0)
			return 1;
	return 0;
}

int gm_grammar_state_done(const gm_grammar_state *st)
{
	size_t i;

	if (st->part.need)
		return 0;
	for (i = 0; i < st->cur_n; i++)
		if (st->sets[st->cur_off + i] >= 0)
			return 0;
	return 1;
}

int gm_grammar_match(const gm_grammar *g, const void *s, size_t len)
{
	gm_grammar_state *st;
	int ok;

	gm_grammar_state_new(g, &st);
	ok = gm_grammar_state_accept(st, s, len) && gm_grammar_state_can_end(st);
	gm_grammar_state_free(st);
	return ok;
}

/* ---------------------------------------------------------------- vocabulary and masks */

typedef struct tnode {
	int32_t child;    /* first child, -1 */
	int32_t sibling;  /* next sibling (higher byte), -1 */
	int32_t tok;      /* first of the ids ending here in v->sorted, -1 */
	int32_t n_tok;
	unsigned char byte;
} tnode;

struct gm_grammar_vocab {
	size_t n_vocab;
	char *bytes;        /* every token's bytes, one after another */
	uint32_t *off;      /* [n_vocab + 1] */
	int32_t *sorted;    /* ids with bytes, by their bytes */
	size_t n_sorted;
	tnode *nodes;       /* nodes[0] is the root */
	size_t n_nodes;
	/* special tokens with a content, sorted by it: sp_id[k]'s is sp_bytes[sp_off[k]..sp_off[k+1]) */
	int32_t *sp_id;
	uint32_t *sp_off;
	char *sp_bytes;
	size_t n_sp;
};

/* A token while sorting the vocabulary. */
typedef struct sort_tok {
	const char *p;
	uint32_t len;
	int32_t id;
} sort_tok;

static int cmp_tok(const void *a, const void *b)
{
	const sort_tok *x = a, *y = b;
	int c = memcmp(x->p, y->p, x->len < y->len ? x->len : y->len);

	if (c)
		return c;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * The special tokens, apart from the trie: a mask allows one only where a
 * quoted literal of the grammar is exactly its content (special_at), so
 * that a grammar written as text ("[TOOL_CALLS]") lets the model write the
 * marker the way it was trained to, as the one token, and never lets a
 * special token into text the grammar merely allows (a JSON string).
 */
static int vocab_specials(gm_grammar_vocab *v, const gm_tokenizer *tok, size_t n_vocab, size_t n_tok, gm_error *err)
{
	gm_buf bytes = GM_BUF_INIT;
	sort_tok *t;
	size_t i, n = 0, lim = n_vocab < n_tok ? n_vocab : n_tok;
	uint32_t *off;
	int ret;

	for (i = 0; i < lim; i++)
		if (gm_tokenizer_is_special(tok, (int32_t)i))
			n++;
	t = gm_xmalloc((n ? n : 1) * sizeof(*t));
	off = gm_xmalloc((n + 1) * sizeof(*off));
	n = 0;
	for (i = 0; i < lim; i++) {
		if (!gm_tokenizer_is_special(tok, (int32_t)i))
			continue;
		off[n] = (uint32_t)bytes.len;
		if ((ret = gm_tokenizer_token_bytes(tok, (int32_t)i, &bytes, err))) {
			free(t);
			free(off);
			gm_buf_release(&bytes);
			return ret;
		}
		if (bytes.len > off[n])
			t[n] = (sort_tok){ NULL, (uint32_t)bytes.len - off[n], (int32_t)i }, n++;
	}
	for (i = 0; i < n; i++)
		t[i].p = bytes.buf + off[i];
	qsort(t, n, sizeof(*t), cmp_tok);
	v->n_sp = n;
	v->sp_id = gm_xmalloc((n ? n : 1) * sizeof(*v->sp_id));
	v->sp_off = gm_xmalloc((n + 1) * sizeof(*v->sp_off));
	{
		gm_buf sorted = GM_BUF_INIT;

		for (i = 0; i < n; i++) {
			v->sp_id[i] = t[i].id;
			v->sp_off[i] = (uint32_t)sorted.len;
			gm_buf_add(&sorted, t[i].p, t[i].len);
		}
		v->sp_off[n] = (uint32_t)sorted.len;
		v->sp_bytes = gm_buf_detach(&sorted, NULL);
	}
	free(t);
	free(off);
	gm_buf_release(&bytes);
	return 0;
}

int gm_grammar_vocab_new(const gm_tokenizer *tok, size_t n_vocab, gm_grammar_vocab **out, gm_error *err)
{
	gm_grammar_vocab *v;
	gm_buf all = GM_BUF_INIT;
	size_t n_tok = gm_tokenizer_n_tokens(tok), i, alloc;
	int ret;

	*out = NULL;
	if (n_vocab > INT32_MAX)
		return gm_error_set(err, GM_EINVAL, "a vocabulary of %zu tokens", n_vocab);
	v = gm_xcalloc(1, sizeof(*v));
	v->n_vocab = n_vocab;
	v->off = gm_xmalloc((n_vocab + 1) * sizeof(*v->off));
	for (i = 0; i < n_vocab; i++) {
		v->off[i] = (uint32_t)all.len;
		if (i >= n_tok || gm_tokenizer_is_special(tok, (int32_t)i))
			continue;
		if ((ret = gm_tokenizer_token_bytes(tok, (int32_t)i, &all, err))) {
			gm_buf_release(&all);
			gm_grammar_vocab_free(v);
			return ret;
		}
	}
	v->off[n_vocab] = (uint32_t)all.len;
	v->bytes = gm_buf_detach(&all, NULL);
	if ((ret = vocab_specials(v, tok, n_vocab, n_tok, err))) {
		gm_grammar_vocab_free(v);
		return ret;
	}
	{
		sort_tok *t = gm_xmalloc((n_vocab ? n_vocab : 1) * sizeof(*t));
		size_t n = 0;

		for (i = 0; i < n_vocab; i++)
			if (v->off[i + 1] > v->off[i])
				t[n++] = (sort_tok){ v->bytes + v->off[i], v->off[i + 1] - v->off[i], (int32_t)i };
		qsort(t, n, sizeof(*t), cmp_tok);
		v->sorted = gm_xmalloc((n ? n : 1) * sizeof(*v->sorted));
		for (i = 0; i < n; i++)
			v->sorted[i] = t[i].id;
		v->n_sorted = n;
		free(t);
	}

	/* the trie: in sorted order a new child is always its parent's last one */
	alloc = 1024;
	v->nodes = gm_xmalloc(alloc * sizeof(*v->nodes));
	v->nodes[0] = (tnode){ -1, -1, -1, 0, 0 };
	v->n_nodes = 1;
	{
		/* last_child[node]: kept beside the nodes while building */
		int32_t *last_child = gm_xmalloc(alloc * sizeof(*last_child));

		last_child[0] = -1;
		for (i = 0; i < v->n_sorted; i++) {
			int32_t id = v->sorted[i], node = 0;
			const unsigned char *b = (const unsigned char *)v->bytes + v->off[id];
			size_t len = v->off[id + 1] - v->off[id], d;

			for (d = 0; d < len; d++) {
				int32_t c = last_child[node];

				if (c < 0 || v->nodes[c].byte != b[d]) {
					int32_t nn;

					if (v->n_nodes == alloc) {
						alloc *= 2;
						v->nodes = gm_xrealloc(v->nodes, alloc * sizeof(*v->nodes));
						last_child = gm_xrealloc(last_child, alloc * sizeof(*last_child));
					}
					nn = (int32_t)v->n_nodes++;
					v->nodes[nn] = (tnode){ -1, -1, -1, 0, b[d] };
					last_child[nn] = -1;
					if (c < 0)
						v->nodes[node].child = nn;
					else
						v->nodes[c].sibling = nn;
					last_child[node] = nn;
					c = nn;
				}
				node = c;
			}
			if (v->nodes[node].tok < 0)
				v->nodes[node].tok = (int32_t)i;
			v->nodes[node].n_tok++;
		}
		free(last_child);
	}
	*out = v;
	return 0;
}

void gm_grammar_vocab_free(gm_grammar_vocab *v)
{
	if (!v)
		return;
	free(v->bytes);
	free(v->off);
	free(v->sorted);
	free(v->nodes);
	free(v->sp_id);
	free(v->sp_off);
	free(v->sp_bytes);
	free(v);
}

size_t gm_grammar_vocab_size(const gm_grammar_vocab *v)
{
	return v->n_vocab;
}

/* The first of the special tokens whose content is s[0..len) (in sp order), or n_sp. */
static size_t special_find(const gm_grammar_vocab *v, const char *s, size_t len)
{
	size_t lo = 0, hi = v->n_sp;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2, ml = v->sp_off[mid + 1] - v->sp_off[mid];
		int c = memcmp(v->sp_bytes + v->sp_off[mid], s, ml < len ? ml : len);

		if (c < 0 || (!c && ml < len))
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < v->n_sp && v->sp_off[lo + 1] - v->sp_off[lo] == len && !memcmp(v->sp_bytes + v->sp_off[lo], s, len))
		return lo;
	return v->n_sp;
}

/*
 * Calls fn for each special token (index in sp order) that may come next:
 * one whose content is a quoted literal that begins at the top of a stack
 * of the committed set.  Returns how many calls were made.
 */
static size_t special_at(const gm_grammar_state *st, const gm_grammar_vocab *v,
			 int (*fn)(void *ctx, size_t k), void *ctx)
{
	const gm_grammar *g = st->g;
	size_t i, count = 0;

	if (!st->special || !v->n_sp || st->part.need || !g->n_lits)
		return 0;
	for (i = 0; i < st->cur_n; i++) {
		int32_t s = st->sets[st->cur_off + i], lit;
		size_t k;

		if (s < 0 || !(lit = g->sets[g->elems[st->pos[s]].val].lit))
			continue;
		lit--;
		for (k = special_find(v, g->lit_bytes + g->lit_off[lit], g->lit_off[lit + 1] - g->lit_off[lit]);
		     k < v->n_sp && v->sp_off[k + 1] - v->sp_off[k] == g->lit_off[lit + 1] - g->lit_off[lit] &&
		     !memcmp(v->sp_bytes + v->sp_off[k], g->lit_bytes + g->lit_off[lit], v->sp_off[k + 1] - v->sp_off[k]);
		     k++) {
			count++;
			if (fn(ctx, k))
				return count;
		}
	}
	return count;
}

struct special_q {
	const gm_grammar_vocab *v;
	int32_t id;
	int found;
	unsigned char *allowed;
	size_t added;
};

static int special_is(void *ctx, size_t k)
{
	struct special_q *q = ctx;

	if (q->v->sp_id[k] == q->id)
		q->found = 1;
	return q->found;
}

static int special_mark(void *ctx, size_t k)
{
	struct special_q *q = ctx;

	if (!q->allowed[q->v->sp_id[k]]) {
		q->allowed[q->v->sp_id[k]] = 1;
		q->added++;
	}
	return 0;
}

/* Whether special token id may come next (see special_at); its content in *k. */
static int special_allows(const gm_grammar_state *st, const gm_grammar_vocab *v, int32_t id, size_t *k)
{
	struct special_q q = { v, id, 0, NULL, 0 };
	size_t i;

	for (i = 0; i < v->n_sp && v->sp_id[i] != id; i++)
		;
	if (i == v->n_sp)
		return 0;
	*k = i;
	special_at(st, v, special_is, &q);
	return q.found;
}

void gm_grammar_state_set_special(gm_grammar_state *st, int on)
{
	st->special = on != 0;
}

int gm_grammar_state_allows(gm_grammar_state *st, const gm_grammar_vocab *v, int32_t id)
{
	size_t nodes0 = st->n_nodes, used0 = st->n_sets_used, off = st->cur_off, n = st->cur_n, i, len;
	const unsigned char *b;
	u8part u = st->part;

	if (id < 0 || (size_t)id >= v->n_vocab)
		return 0;
	if (v->off[id + 1] == v->off[id])
		return special_allows(st, v, id, &i);
	b = (const unsigned char *)v->bytes + v->off[id];
	len = v->off[id + 1] - v->off[id];
	for (i = 0; i < len && n; i++) {
		size_t noff;

		n = step_byte(st, off, n, &u, b[i], &noff);
		off = noff;
	}
	st->n_nodes = nodes0;
	st->n_sets_used = used0;
	return n != 0;
}

int gm_grammar_state_accept_token(gm_grammar_state *st, const gm_grammar_vocab *v, int32_t id)
{
	size_t k;

	if (id < 0 || (size_t)id >= v->n_vocab)
		return 0;
	if (v->off[id + 1] == v->off[id]) {
		/* a special token: its content, where a literal spells it */
		if (!special_allows(st, v, id, &k))
			return 0;
		return gm_grammar_state_accept(st, v->sp_bytes + v->sp_off[k], v->sp_off[k + 1] - v->sp_off[k]);
	}
	return gm_grammar_state_accept(st, v->bytes + v->off[id], v->off[id + 1] - v->off[id]);
}

/* Depth-first walk of the trie below node with the set at off, n and partial character u. */
static size_t walk(gm_grammar_state *st, const gm_grammar_vocab *v, int32_t node, size_t off, size_t n, u8part u,
		   unsigned char *allowed)
{
	size_t count = 0;
	int32_t c;

	for (c = v->nodes[node].child; c >= 0; c = v->nodes[c].sibling) {
		const tnode *t = &v->nodes[c];
		size_t nodes0 = st->n_nodes, used0 = st->n_sets_used, noff, nn;
		u8part u2 = u;

		nn = step_byte(st, off, n, &u2, t->byte, &noff);
		if (nn) {
			int32_t k;

			for (k = 0; k < t->n_tok; k++)
				allowed[v->sorted[t->tok + k]] = 1;
			count += (size_t)t->n_tok;
			if (t->child >= 0)
				count += walk(st, v, c, noff, nn, u2, allowed);
		}
		st->n_nodes = nodes0;
		st->n_sets_used = used0;
	}
	return count;
}

size_t gm_grammar_state_mask(gm_grammar_state *st, const gm_grammar_vocab *v, unsigned char *allowed)
{
	struct special_q q = { v, -1, 0, allowed, 0 };
	size_t count;

	memset(allowed, 0, v->n_vocab);
	count = walk(st, v, 0, st->cur_off, st->cur_n, st->part, allowed);
	special_at(st, v, special_mark, &q);
	return count + q.added;
}
