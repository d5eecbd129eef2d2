/*
 * sampler.h - choosing the next token from a row of logits, as
 * transformers' generate() does.
 *
 * The chain, in transformers' order:
 *
 *   1. repetition penalty (a logits processor, applied even when greedy):
 *      for every token already in the sequence (prompt and output), a
 *      logit < 0 is multiplied by the penalty, any other divided by it;
 *   2. temperature: logits divided by it (0 means greedy: the argmax of
 *      the penalized logits, the lowest id on ties; the other stages are
 *      then skipped);
 *   3. top-k: tokens whose logit is below the k-th largest are removed
 *      (ties with the k-th are kept);
 *   4. top-p: of the tokens sorted by probability, those whose cumulative
 *      probability counted from the least likely is <= 1 - top_p are
 *      removed (the most likely token is always kept);
 *   5. min-p: tokens whose probability is below min_p times the largest
 *      are removed;
 *
 * then one token is drawn from the softmax of what is left with the
 * sampler's seeded RNG (rng.h).  Same seed, same logits: same tokens.
 *
 * The stages are exposed on a candidate list (gm_candidates) so that they
 * can be tested one by one; gm_sampler_sample runs the whole chain.
 */
#ifndef GM_SAMPLER_H
#define GM_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "formats/config.h"
#include "base/error.h"
#include "base/rng.h"

typedef struct gm_sampler_params {
	double temperature;        /* 0: greedy */
	int64_t top_k;             /* 0: off */
	double top_p;              /* 1: off; (0, 1] */
	double min_p;              /* 0: off; [0, 1] */
	double repetition_penalty; /* 1: off; > 0 */
	uint64_t seed;
} gm_sampler_params;

/* Greedy, every stage off, seed 0. */
void gm_sampler_params_init(gm_sampler_params *p);
/*
 * The defaults a model asks for in generation_config.json: its
 * temperature, top_k, top_p, min_p and repetition_penalty; do_sample
 * false (transformers' default when the file is missing) gives
 * temperature 0, greedy.  The seed is left as it is.
 */
void gm_sampler_params_from_generation(gm_sampler_params *p, const gm_generation_config *gen);
/* GM_EINVAL, naming the parameter, when a value is out of range. */
int gm_sampler_params_check(const gm_sampler_params *p, gm_error *err);

typedef struct gm_sampler gm_sampler;

/* A sampler for logits rows of n_vocab entries; p is copied. */
int gm_sampler_new(const gm_sampler_params *p, size_t n_vocab, gm_sampler **out, gm_error *err);
void gm_sampler_free(gm_sampler *s);
const gm_sampler_params *gm_sampler_params_of(const gm_sampler *s);
/* Forgets the tokens seen (a new sequence); the RNG goes on. */
void gm_sampler_reset(gm_sampler *s);
/* Records tokens now in the sequence, for the repetition penalty.  Ids
 * outside [0, n_vocab) are ignored. */
void gm_sampler_accept(gm_sampler *s, const int32_t *ids, size_t n);
/* Chooses the next token.  logits[0..n_vocab) are modified (penalty,
 * temperature).  Returns the id. */
int32_t gm_sampler_sample(gm_sampler *s, float *logits);

/* Whether token id may be chosen (constrained decoding); ctx is the caller's. */
typedef int (*gm_sampler_check_fn)(void *ctx, int32_t id);
/*
 * gm_sampler_sample choosing only tokens check accepts, without a mask of
 * the whole vocabulary: the chain runs on the logits as they are, then
 * tokens are drawn from what it leaves, each refused one removed before
 * the next draw (so the draw follows the chain's distribution restricted
 * to accepted tokens; greedy: the most likely accepted token, lowest id on
 * ties).  At most max_tries tokens are checked; -1 when none was accepted
 * (the caller then masks the logits it saved and calls gm_sampler_sample).
 * logits are modified as gm_sampler_sample modifies them, and more.
 */
int32_t gm_sampler_sample_checked(gm_sampler *s, float *logits, gm_sampler_check_fn check, void *ctx,
				  int max_tries);

/* ---------------------------------------------------------------- stages */

/* Applies the repetition penalty to logits at the distinct ids[0..n). */
void gm_sample_repetition_penalty(float *logits, size_t n_vocab, const int32_t *ids, size_t n,
				  float penalty);
/* The index of the largest logit (the first one on ties); -1 when n is 0. */
int32_t gm_sample_argmax(const float *logits, size_t n);
/* The k largest logits' indexes in ids[0..], largest first (ties by index), -inf ones left out, in one
 * pass; returns how many (at most k). */
size_t gm_sample_top_n(const float *logits, size_t n, int32_t *ids, size_t k);

typedef struct gm_token_logit {
	int32_t id;
	float logit;
} gm_token_logit;

/* Tokens still in the running, with their (scaled) logits. */
typedef struct gm_candidates {
	gm_token_logit *items; /* owned */
	size_t n, alloc;
	int sorted;            /* items are in descending logit order (ties by id) */
} gm_candidates;

#define GM_CANDIDATES_INIT { NULL, 0, 0, 0 }

/* Every token of logits[0..n) whose logit is not -inf, in id order. */
void gm_candidates_set(gm_candidates *c, const float *logits, size_t n);
void gm_candidates_release(gm_candidates *c);
/* Sorts by descending logit, ties by ascending id. */
void gm_candidates_sort(gm_candidates *c);
void gm_candidates_temperature(gm_candidates *c, float temperature);
void gm_candidates_top_k(gm_candidates *c, int64_t k);
void gm_candidates_top_p(gm_candidates *c, double top_p);
void gm_candidates_min_p(gm_candidates *c, double min_p);
/* Fills probs[0..c->n) with the softmax of the candidates' logits. */
void gm_candidates_softmax(const gm_candidates *c, double *probs);
/* Draws a token by the softmax of the candidates with u in [0, 1): the
 * first candidate whose cumulative probability exceeds u.  -1 when empty. */
int32_t gm_candidates_pick(const gm_candidates *c, double u);

#endif
