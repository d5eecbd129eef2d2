/*
 * learn.h - a server that keeps learning (git infer --serve --learn NAME):
 * adapter NAME is trained in the background (online.h) from the examples
 * clients post, each step published as a new version (adapterset.h), the
 * state committed on train/NAME every so often (learnrepo.h).
 *
 * Endpoints (under the server's API key):
 *
 *   POST /v1/adapters/NAME/examples   {"examples": [EX, ...]} or JSONL (one EX a line); EX is a
 *                                     git train example (text, messages, prompt/completion, input_ids)
 *                                     with an optional "weight" in (0, 100].  200 {"object":
 *                                     "adapter.examples", "accepted", "truncated", "examples_seen",
 *                                     "pending", "version"}; 400 naming the bad example; 429 when the
 *                                     trainer is max_pending examples behind; 409 for an adapter that
 *                                     is not learning.
 *   GET /v1/adapters                  every adapter: {"object": "list", "data": [ADAPTER, ...]}
 *   GET /v1/adapters/NAME             ADAPTER: {"id", "object": "adapter", "kind", "version",
 *                                     "learning"}, and for the learning one "steps", "examples_seen",
 *                                     "examples_logged", "pending", "loss", "recent_loss", "tokens",
 *                                     "train_seconds", "update_latency_s", "update_latency_mean_s",
 *                                     "branch", "last_commit", "steps_uncommitted".
 *
 * The adapter NAME serves at once (MODEL:NAME) from its committed state
 * on train/NAME, or fresh (B = 0: the base model's answers) for a new
 * name.  A model directory outside a git repository learns without
 * commits (a warning says so).
 */
#ifndef GM_LEARN_H
#define GM_LEARN_H

#include <stdint.h>

#include "base/error.h"
#include "serve/serve.h"
#include "train/online.h"

typedef struct gm_learn_opts {
	gm_online_opts online;
	int64_t commit_steps;      /* commit after this many steps (default 100; 0: by time only) */
	double commit_seconds;     /* or this long after the first step not committed (default 60; 0: by count) */
} gm_learn_opts;

void gm_learn_opts_init(gm_learn_opts *o);

typedef struct gm_learn gm_learn;

/* Starts learning adapter name on the loaded server s (model_dir: the model's repository). */
int gm_learn_start(gm_serve *s, const char *model_dir, const char *name, const gm_learn_opts *o, gm_learn **out,
		   gm_error *err);
/*
 * Ends the trainer after its step in progress and commits what was not
 * committed.  Call after gm_serve_stop (no request comes any more), before
 * gm_serve_free.  0, or the commit's error.
 */
int gm_learn_stop(gm_learn *l, gm_error *err);
void gm_learn_free(gm_learn *l);

#endif
