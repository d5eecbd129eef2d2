/*
 * online.h - online learning: a LoRA trained in the background from
 * examples that arrive one request (or one line) at a time, while the
 * model serves (git infer --serve --learn) or from a growing file
 * (git train --follow).
 *
 *   gm_online_new(model, tok, &opts, init_dir, &o, &err);   // fresh LoRA, or resumed from init_dir
 *   gm_online_start(o, &hooks, &err);                       // the trainer thread
 *   gm_online_parse(o, "body", text, len, &b, &err);        // validated, tokenized examples
 *   gm_online_add(o, b, &err);                              // queued: the trainer takes them
 *   ... hooks.on_step publishes each new version (gm_online_export),
 *       hooks.on_commit records the state (gm_online_save) ...
 *   gm_online_stop(o);
 *
 * Examples are the forms of traindata.h (text, messages, prompt and
 * completion, token ids) with one more optional key, "weight" (a number in
 * (0, 100], default 1), given either as {"examples": [EX, ...]} or as JSONL
 * (one EX a line).  Errors name the example: "examples[3]: reason" or
 * "NAME:LINE: reason".
 *
 * Training.  Every example is owed round(epochs * weight) passes (at least
 * one).  The trainer takes up to batch examples that are owed a pass, in
 * arrival order (so a new example is in the next step, whatever came
 * before it), and makes one AdamW step on them at a constant learning
 * rate: the loss is the mean over their predicted tokens (train.h).  It
 * idles when nothing is owed.  Its compute threads are n_threads (the
 * server keeps the others), and with share < 1 it sleeps after each step
 * so that steps take at most that fraction of the wall time.
 *
 * Versions.  After each step, hooks.on_step may turn the weights into a
 * servable adapter (gm_online_export): the LoRA itself, or with sparse > 0
 * the sparse delta scale * B * A keeping the ceil(sparse * out * in)
 * largest entries of each module (sparse.h), which is what then serves.
 *
 * Threads: the trainer thread alone touches the weights; the hooks run on
 * it.  gm_online_parse, _add and _status may be called from any thread.
 */
#ifndef GM_ONLINE_H
#define GM_ONLINE_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "base/error.h"
#include "formats/model.h"
#include "formats/peft.h"
#include "formats/sparse.h"
#include "text/tokenizer.h"
#include "train/train.h"

#define GM_ONLINE_MAX_WEIGHT 100.0
#define GM_ONLINE_RECENT 32          /* losses kept for the status */

typedef struct gm_online_opts {
	int64_t rank;             /* LoRA rank of a fresh adapter (default 8) */
	double alpha;             /* its alpha (default 16) */
	unsigned targets;         /* its projections (default q_proj, v_proj: small, quick to publish) */
	double lr;                /* constant learning rate (default 1e-3) */
	double weight_decay;      /* default 0 */
	double grad_clip;         /* global norm; <= 0: off (default 1) */
	int batch;                /* examples per step (default 4) */
	int epochs;               /* passes per example of weight 1 (default 4) */
	int64_t max_len;          /* tokens per example, longer ones cut (default 512) */
	int n_threads;            /* the trainer's compute threads (default 1) */
	double share;             /* of the wall time the trainer may compute, in (0, 1] (default 1) */
	double sparse;            /* 0: versions are the LoRA; else the density of a sparse delta */
	uint64_t seed;            /* a fresh LoRA's initialisation (default 0) */
	int64_t max_pending;      /* examples owed passes at most; more are refused (default 4096) */
	int64_t max_examples;     /* per gm_online_parse (default 1024) */
} gm_online_opts;

void gm_online_opts_init(gm_online_opts *o);

typedef struct gm_online gm_online;

/*
 * A trainer for model m (m and tok borrowed, outliving it).  init_dir NULL:
 * a fresh LoRA from opts (B = 0: the first version is the base model's
 * behaviour).  Else the PEFT adapter in init_dir is the start (its rank,
 * alpha and targets win over opts), with its optimizer state and step
 * count when init_dir holds optimizer.safetensors (a committed state).
 */
int gm_online_new(const gm_model *m, const gm_tokenizer *tok, const gm_online_opts *opts, const char *init_dir,
		  gm_online **out, gm_error *err);
/* Stops the trainer if it runs, frees everything. */
void gm_online_free(gm_online *o);
const gm_online_opts *gm_online_get_opts(const gm_online *o);

/* ---- examples */

typedef struct gm_online_batch gm_online_batch;

/*
 * Parses, validates and tokenizes data[0..len): {"examples": [...]} or
 * JSONL; name is what errors call the JSONL ("body", a file's name).
 * GM_EFORMAT for a bad example (the first one), GM_EINVAL for an empty or
 * oversized batch.
 */
int gm_online_parse(gm_online *o, const char *name, const char *data, size_t len, gm_online_batch **out,
		    gm_error *err);
size_t gm_online_batch_count(const gm_online_batch *b);
/* Examples cut to max_len. */
size_t gm_online_batch_truncated(const gm_online_batch *b);
/* The examples as JSONL, one compact line each (weights kept): what the examples log holds. */
const char *gm_online_batch_jsonl(const gm_online_batch *b, size_t *len);
void gm_online_batch_free(gm_online_batch *b);

/*
 * Queues the batch's examples for training (b is taken, whatever the
 * result).  1, nothing queued, when they would pass max_pending (the
 * caller answers "busy").
 */
int gm_online_add(gm_online *o, gm_online_batch *b, gm_error *err);

/* ---- the trainer */

typedef struct gm_online_hooks {
	/* after each step, on the trainer thread (e.g. export and publish); an error is logged */
	int (*on_step)(void *ctx, gm_online *o, const gm_train_info *info, gm_error *err);
	/* a commit is due (see below), on the trainer thread; an error is logged, and retried later */
	int (*on_commit)(void *ctx, gm_online *o, gm_error *err);
	void *ctx;
	int64_t commit_steps;     /* commit after this many steps not committed (0: never by count) */
	double commit_seconds;    /* or when the oldest step not committed is this old (0: never by time) */
} gm_online_hooks;

int gm_online_start(gm_online *o, const gm_online_hooks *h, gm_error *err);
/* Ends the trainer thread after the step in progress (none left running after it). */
void gm_online_stop(gm_online *o);
/* Waits until no example is owed a pass (and the last step's hooks have run), or timeout_s; 0 when idle. */
int gm_online_wait_idle(gm_online *o, double timeout_s);
/* Tells the trainer that its state was committed (by on_commit or by the owner after stopping). */
void gm_online_mark_committed(gm_online *o);

/*
 * The weights now as a servable adapter: written under tmp_root (a
 * directory of its own, removed again once opened: the adapter keeps its
 * mapping), opened and returned in *lora, or with opts.sparse in *sparse.
 * Trainer thread only (or when it is not running).
 */
int gm_online_export(gm_online *o, const char *tmp_root, gm_peft_adapter **lora, gm_sparse_adapter **sparse,
		     gm_error *err);
/*
 * The state into dir (created when missing): the PEFT adapter,
 * optimizer.safetensors and trainer_state.json ({"step", "online": {the
 * counters and options}, and extra's keys}).  Trainer thread only (or
 * when it is not running).
 */
int gm_online_save(gm_online *o, const char *dir, json_object *extra, gm_error *err);

typedef struct gm_online_status {
	int64_t steps;                /* optimizer steps, resumed ones included */
	int64_t steps_uncommitted;
	uint64_t examples_seen;       /* examples added (this run) */
	uint64_t examples_done;       /* of those, owed no more passes */
	int64_t pending;              /* examples owed passes */
	uint64_t passes;              /* example passes trained (this run) */
	uint64_t tokens;              /* tokens evaluated (this run) */
	double loss;                  /* of the last step; NAN before one */
	double recent[GM_ONLINE_RECENT]; /* the last n_recent losses, oldest first */
	int n_recent;
	double train_seconds;         /* spent in steps (this run) */
	double last_step_seconds;
	double update_latency_s;      /* example added -> first version trained on it returned by on_step: last */
	double update_latency_mean_s; /* and mean over this run; NAN before any */
} gm_online_status;

void gm_online_get_status(gm_online *o, gm_online_status *st);

#endif
