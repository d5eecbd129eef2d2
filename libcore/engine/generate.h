/*
 * generate.h - the one generation loop every caller uses (git infer, the
 * interactive chat, later the server): prefill, decode with the KV cache,
 * sampling, stop conditions, streamed text.
 *
 *   gm_generator_new(model, forward, tokenizer, &g, &err);
 *   gm_generate_opts_init(&o, &model->generation);
 *   o.sampler = s; o.on_text = print; o.max_tokens = 48;
 *   gm_generate(g, prompt, n_prompt, &o, &stats, &err);
 *
 * Text reaches on_text as complete UTF-8 (a character whose bytes span
 * several tokens is held until it is whole; invalid bytes become U+FFFD),
 * never containing a stop string nor what follows it.
 *
 * Also here, usable on their own: the streaming UTF-8 decoder and the
 * stop-string matcher the loop is built from.
 */
#ifndef GM_GENERATE_H
#define GM_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"
#include "engine/forward.h"
#include "formats/model.h"
#include "engine/sampler.h"
#include "text/grammar.h"
#include "text/tokenizer.h"

/* ---------------------------------------------------------------- UTF-8 */

/*
 * Bytes in, valid UTF-8 out.  An invalid sequence becomes one U+FFFD per
 * maximal ill-formed subpart (Unicode's recommended practice, which
 * tokenizers' decoding follows); an incomplete character at the end of a
 * feed is kept for the next one.
 */
typedef struct gm_utf8_stream {
	unsigned char pend[4];
	int n_pend;  /* bytes of an incomplete character held */
	int need;    /* its full length */
} gm_utf8_stream;

#define GM_UTF8_STREAM_INIT { { 0, 0, 0, 0 }, 0, 0 }

void gm_utf8_stream_init(gm_utf8_stream *s);
/* Appends to out the text of the complete characters so far. */
void gm_utf8_stream_feed(gm_utf8_stream *s, const void *data, size_t len, gm_buf *out);
/* End of input: a held incomplete character becomes U+FFFD. */
void gm_utf8_stream_finish(gm_utf8_stream *s, gm_buf *out);

/* ---------------------------------------------------------------- stop strings */

/*
 * Finds stop strings in text that arrives in pieces.  Text that could be
 * the beginning of a stop string is held back until it is known not to
 * be one; text is released in whole characters.
 */
typedef struct gm_stop_matcher {
	const char *const *stops; /* borrowed; empty strings are ignored */
	size_t n_stops;
	gm_buf pending;           /* received, not yet released */
	int stopped;
} gm_stop_matcher;

void gm_stop_matcher_init(gm_stop_matcher *m, const char *const *stops, size_t n_stops);
void gm_stop_matcher_release(gm_stop_matcher *m);
/*
 * Adds text; appends to out what may be shown.  Returns 1 when a stop
 * string is complete: out then ends with the text before it, and the stop
 * string and anything after it are dropped (later feeds are ignored).
 */
int gm_stop_matcher_feed(gm_stop_matcher *m, const char *text, size_t len, gm_buf *out);
/* End of text: appends what was held back. */
void gm_stop_matcher_flush(gm_stop_matcher *m, gm_buf *out);

/* ---------------------------------------------------------------- the loop */

enum gm_stop_reason {
	GM_STOP_NONE = 0,
	GM_STOP_EOS,      /* an end-of-sequence token was sampled */
	GM_STOP_STRING,   /* a stop string appeared */
	GM_STOP_LENGTH,   /* max_tokens were generated (or 0 were asked for) */
	GM_STOP_CONTEXT,  /* the KV cache is full */
	GM_STOP_CALLBACK  /* a callback asked to stop */
};

const char *gm_stop_reason_name(enum gm_stop_reason r);

/* Callbacks return 0 to go on, anything else to stop (GM_STOP_CALLBACK). */
typedef int (*gm_generate_text_fn)(void *ctx, const char *text, size_t len);
typedef int (*gm_generate_token_fn)(void *ctx, int32_t id);
/*
 * Called with each row of logits before a token is chosen from it (before
 * the sampler's own stages): it sees the model's raw logits (for
 * log-probabilities) and may change them in place, as a logits processor
 * does (penalties, biases).  Returns 0 to go on.
 */
typedef int (*gm_generate_logits_fn)(void *ctx, float *logits, size_t n_vocab);

typedef struct gm_generate_opts {
	int64_t max_tokens;          /* -1: no limit; 0: evaluate the prompt only */
	int64_t eos_ids[GM_MAX_EOS]; /* generation stops after one of these */
	int n_eos;
	const char *const *stop;     /* stop strings (borrowed) */
	size_t n_stop;
	gm_sampler *sampler;         /* borrowed; NULL: greedy */
	gm_generate_text_fn on_text; /* text pieces (needs a tokenizer); may be NULL */
	gm_generate_token_fn on_token; /* every generated id, EOS included; may be NULL */
	gm_generate_logits_fn on_logits; /* each logits row before sampling; may be NULL */
	void *cb_ctx;
	int skip_special;            /* leave special tokens out of the text (default 1) */
	/*
	 * NULL, or [n_prompt, n_vocab] floats to receive the logits of every
	 * prompt position (the whole prompt is then evaluated, none of it
	 * taken from the cache).
	 */
	float *prompt_logits;
	/*
	 * Constrained decoding: NULL, or a grammar (borrowed) the generated
	 * text must follow.  Each step (after on_logits) the sampler's choices
	 * are checked against the grammar, most likely first
	 * (gm_sampler_sample_checked: a refused token is removed and the draw
	 * made again from the rest); only when 16 are refused is the full mask
	 * computed (gm_grammar_state_mask), the refused tokens' logits set to
	 * -inf and the choice made from the logits as they came, through the
	 * whole sampler chain.  So greedy gives exactly the argmax of the masked
	 * logits, and temperature sampling draws from the distribution
	 * restricted to allowed tokens; with top-k/top-p/min-p the cut is made
	 * on all tokens first, and on the allowed ones when none of those
	 * passes.  EOS tokens are allowed only where the grammar may end, other
	 * special tokens only where a quoted literal of the grammar is exactly
	 * their content, and only with skip_special off (text/grammar.h); when the grammar is complete and no EOS id is
	 * known the sequence ends (GM_STOP_EOS, no token).  max_tokens may end
	 * the text before the grammar is complete (GM_STOP_LENGTH): the text is
	 * then a prefix of a match.  Needs a tokenizer.
	 */
	const gm_grammar *grammar;
	/* The tokenizer's vocabulary for masks (borrowed; see gm_grammar_vocab_new): NULL builds one for
	 * the sequence (tens of milliseconds with 151k tokens). */
	const gm_grammar_vocab *grammar_vocab;
} gm_generate_opts;

/* No limit, EOS ids from gen (may be NULL: none), no stop strings, greedy. */
void gm_generate_opts_init(gm_generate_opts *o, const gm_generation_config *gen);

typedef struct gm_generate_stats {
	int n_prompt;          /* prompt tokens evaluated */
	int n_cached;          /* prompt tokens reused from the cache */
	double prompt_s;       /* seconds evaluating them */
	int n_decode;          /* tokens evaluated one at a time */
	double decode_s;       /* seconds for those (sampling included) */
	int n_generated;       /* tokens generated, EOS included */
	enum gm_stop_reason stop;
} gm_generate_stats;

typedef struct gm_generator gm_generator;

/*
 * m, f and tok are borrowed and must outlive g; tok may be NULL when no
 * text is wanted (no on_text, no stop strings).  The generator remembers
 * which tokens f's cache holds, so a prompt that extends the last one (a
 * chat turn) evaluates only what is new; nothing is reused after
 * gm_forward_set_adapters changed the adapters (see forward.h).
 */
int gm_generator_new(const gm_model *m, gm_forward *f, const gm_tokenizer *tok, gm_generator **out,
		     gm_error *err);
void gm_generator_free(gm_generator *g);

/*
 * Generates after prompt[0..n_prompt).  Fails with GM_EINVAL when the
 * prompt is empty or longer than the context, or an id is out of range;
 * with the forward pass's or the tokenizer's error otherwise.  stats may
 * be NULL.  Running out of context is not an error: stats->stop says
 * GM_STOP_CONTEXT.
 */
int gm_generate(gm_generator *g, const int32_t *prompt, size_t n_prompt, const gm_generate_opts *o,
		gm_generate_stats *stats, gm_error *err);

/* The ids generated by the last gm_generate (EOS included); owned by g. */
const int32_t *gm_generator_output(const gm_generator *g, size_t *n);

/* ---------------------------------------------------------------- one sequence, step by step */

/*
 * What gm_generate does after the prompt, a token at a time, for a caller
 * that evaluates the model itself (the server evaluates many sequences in
 * one batched forward pass): each step takes the logits of the position
 * just evaluated and chooses the next token, with the same callbacks,
 * sampling, stop strings and streamed text as gm_generate, so a sequence
 * generated this way is the one gm_generate would give.
 *
 *   gm_gen_seq_new(tok, n_vocab, &o, prompt, n_prompt, &gs, &err);
 *   for (;;) {
 *       ... evaluate; logits of the last position ...
 *       r = gm_gen_seq_next(gs, logits, &id, &err);
 *       if (r) break;            // > 0: why it ended; < 0: an error
 *       if (no room for id)      // the caller's own limits (context, memory)
 *           { gm_gen_seq_end(gs, GM_STOP_CONTEXT); break; }
 *       ... evaluate id next ...
 *   }
 *   gm_gen_seq_free(gs);
 */
typedef struct gm_gen_seq gm_gen_seq;

/*
 * o (with its stop strings, sampler and callback context) and tok are
 * borrowed until gm_gen_seq_free; tok may be NULL when o asks for no text.
 * The sampler is reset and given the prompt (for its penalties), as
 * gm_generate does; o->max_tokens must not be 0 and prompt_logits is not
 * used.  GM_EINVAL when text is asked for without a tokenizer.
 */
int gm_gen_seq_new(const gm_tokenizer *tok, size_t n_vocab, const gm_generate_opts *o, const int32_t *prompt,
		   size_t n_prompt, gm_gen_seq **out, gm_error *err);
void gm_gen_seq_free(gm_gen_seq *gs);
/*
 * One step: logits ([n_vocab], may be changed by o->on_logits) in, the
 * next token out in *id (-1 when none was chosen: a callback stopped
 * first).  Returns 0 when the sequence goes on (the caller evaluates *id),
 * a gm_stop_reason > 0 when it ended (*id, when >= 0, is its last token;
 * the text is complete), or a negative error (the tokenizer's).
 */
int gm_gen_seq_next(gm_gen_seq *gs, float *logits, int32_t *id, gm_error *err);
/*
 * The caller ends the sequence (why: GM_STOP_CONTEXT, GM_STOP_CALLBACK):
 * the text held back is released.  Returns the reason it ended, which is
 * GM_STOP_STRING when that text completes a stop string.
 */
enum gm_stop_reason gm_gen_seq_end(gm_gen_seq *gs, enum gm_stop_reason why);
/* Tokens chosen so far (EOS included). */
int gm_gen_seq_n_generated(const gm_gen_seq *gs);

#endif
