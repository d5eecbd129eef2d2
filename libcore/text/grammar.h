/*
 * grammar.h - GBNF grammars (the format llama.cpp documents) and the
 * matcher that constrains generation to them.
 *
 * The format: rules `name ::= alternatives`; alternatives separated by `|`;
 * a sequence of items: "literal" strings (escapes \n \r \t \\ \" \[ \]
 * \xHH \uHHHH \UHHHHHHHH), character classes `[a-z0-9_]`, negated `[^"\\]`,
 * `.` (any character), rule names, groups `( ... )`; each item may be
 * followed by `*`, `+`, `?`, `{m}`, `{m,}` or `{m,n}`; `#` starts a comment
 * to the end of the line.  A rule may span several lines (a line that
 * starts `name ::=` begins the next rule).  Text is UTF-8 and matched by
 * code point.  Rule names are letters, digits, `-` and `_`.  Left
 * recursion (direct, or through rules that can match nothing) is refused:
 * write it as repetition.  Not supported: llama.cpp's token references
 * `<[id]>`.
 *
 *   gm_grammar_parse(text, len, NULL, &g, &err);   // root rule "root"
 *   gm_grammar_state_new(g, &st);
 *   gm_grammar_state_accept(st, "{\"a\"", 4);      // 1: accepted
 *   gm_grammar_state_can_end(st);                  // 0: not yet
 *
 * A gm_grammar is immutable once parsed and may be shared by any number
 * of states and threads; a gm_grammar_state is one sequence's position
 * and is used by one thread at a time.
 *
 * Matching works on bytes: a state holds the set of parse stacks that
 * agree with the bytes so far, plus the bytes of an incomplete UTF-8
 * character (a token may end in the middle of one).  Invalid UTF-8 is
 * rejected.
 *
 * Quoted literals are remembered as wholes, for special tokens (see
 * gm_grammar_vocab).
 *
 * Limits, so that a grammar sent in a request cannot take the process
 * down: repetitions may expand to at most 4M elements; a set holds at most
 * 1024 stacks, a character expands at most 100000 rule references, at most
 * 20000 in a row.  Only degenerate grammars reach them (repetitions of
 * something that can be empty, such as ("a"?){0,5000}); what goes beyond
 * is cut, so such a grammar may refuse text it describes, never accept
 * text it does not.
 */
#ifndef GM_GRAMMAR_H
#define GM_GRAMMAR_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "text/tokenizer.h"

typedef struct gm_grammar gm_grammar;

/*
 * Parses gbnf[0..len).  root_rule names the start rule (NULL: "root").
 * GM_EINVAL, with the line and what was expected, for a syntax error, an
 * undefined rule, a missing root, left recursion, or a grammar too large
 * (repetition counts above 65535).
 */
int gm_grammar_parse(const char *gbnf, size_t len, const char *root_rule, gm_grammar **out, gm_error *err);
void gm_grammar_free(gm_grammar *g);

typedef struct gm_grammar_state gm_grammar_state;

/* A state at the start of g (borrowed: g must outlive the state). */
void gm_grammar_state_new(const gm_grammar *g, gm_grammar_state **out);
void gm_grammar_state_free(gm_grammar_state *st);
/* Back to the start. */
void gm_grammar_state_reset(gm_grammar_state *st);
/*
 * Feeds bytes: 1 when the grammar allows them after what was accepted
 * before (the state then includes them), 0 when not (the state is
 * unchanged).
 */
int gm_grammar_state_accept(gm_grammar_state *st, const void *bytes, size_t len);
/* Whether the text so far is a complete match of the root rule. */
int gm_grammar_state_can_end(const gm_grammar_state *st);
/* Whether nothing more can be accepted (the match is complete and final). */
int gm_grammar_state_done(const gm_grammar_state *st);

/* Whether s[0..len) as a whole matches g. */
int gm_grammar_match(const gm_grammar *g, const void *s, size_t len);

/* ---------------------------------------------------------------- token masks */

/*
 * A tokenizer's vocabulary seen as bytes, for masks: a byte trie of the
 * tokens' decoded bytes (gm_tokenizer_token_bytes).  Ids without a token
 * (padding rows up to n_vocab) and tokens of no bytes are never allowed by
 * a mask.  A special added token (<|python_tag|>, [TOOL_CALLS]...) is
 * allowed only where a quoted literal of the grammar is exactly its
 * content and begins next, "[TOOL_CALLS]" "[" rather than "[TOOL_CALLS][":
 * there it may come as that one token (what the model was trained to
 * write) or as text; in text the grammar merely allows (a JSON string, a
 * character class) it never comes.  Accepting it accepts its content.
 * The caller must then keep special tokens in the text
 * (gm_grammar_state_set_special otherwise).  End-of-sequence tokens are
 * the caller's to allow (when gm_grammar_state_can_end).  Building it for Qwen3's 151k
 * tokens takes some tens of milliseconds: build one per tokenizer and
 * share it (immutable, thread-safe).
 */
typedef struct gm_grammar_vocab gm_grammar_vocab;

int gm_grammar_vocab_new(const gm_tokenizer *tok, size_t n_vocab, gm_grammar_vocab **out, gm_error *err);
void gm_grammar_vocab_free(gm_grammar_vocab *v);
size_t gm_grammar_vocab_size(const gm_grammar_vocab *v);

/*
 * Whether special tokens may be allowed at all (default 1): off when the
 * text leaves them out (skip_special), which would then lack the content
 * the grammar accepted.
 */
void gm_grammar_state_set_special(gm_grammar_state *st, int on);
/* Whether token id may come next (its bytes are accepted); st is unchanged. */
int gm_grammar_state_allows(gm_grammar_state *st, const gm_grammar_vocab *v, int32_t id);
/* Accepts token id's bytes: 1 when allowed (st advanced), 0 when not. */
int gm_grammar_state_accept_token(gm_grammar_state *st, const gm_grammar_vocab *v, int32_t id);
/*
 * Every token that may come next: allowed[id] = 1 for those, 0 for the
 * others, for id in [0, gm_grammar_vocab_size(v)).  Walks the trie with
 * the state's stacks, skipping every subtree whose prefix is rejected, so
 * the cost follows the number of tokens allowed, not the vocabulary.
 * Returns how many are allowed.  st is unchanged.
 */
size_t gm_grammar_state_mask(gm_grammar_state *st, const gm_grammar_vocab *v, unsigned char *allowed);

#endif
