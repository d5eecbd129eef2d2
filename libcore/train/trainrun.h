/*
 * trainrun.h - a training run: data order, batches, gradient
 * accumulation, evaluation and checkpoints around gm_train_step.
 *
 * Step s (from gm_train_steps_done, so a resumed run continues) takes the
 * sequences k = s * B * A + i, i < B * A (B: batch size, A: gradient
 * accumulation), of an endless stream: sequence k is example
 * order_e[k mod n] of epoch e = k div n, where order_e is the file order
 * (no shuffle) or a permutation drawn from (seed, e).  The loss of a step
 * is the mean over all its B * A sequences' predicted tokens (train.h), so
 * accumulating A micro-batches equals one batch of B * A.  Everything the
 * order depends on is (seed, step): a checkpoint needs no generator state.
 *
 * A checkpoint of step N (every checkpoint_every steps, at the end when
 * stopped early) is the directory ROOT/checkpoint-N:
 *
 *   adapter_config.json, adapter_model.safetensors   the adapter (PEFT)
 *   optimizer.safetensors                            AdamW moments, step
 *   trainer_state.json                               {"step", "n_steps", "seed", "data_hash",
 *                                                     "n_examples", "loss", "eval_loss", "config"}
 *
 * written in ROOT/.checkpoint-N.tmp-XXXXXX and renamed, so a checkpoint
 * directory is always complete.  on_checkpoint (when set) is called after
 * the rename, with the directory: the hook where a caller records it (a
 * commit, a copy); an error from it stops the run.
 */
#ifndef GM_TRAINRUN_H
#define GM_TRAINRUN_H

#include <signal.h>
#include <stdint.h>

#include <json-c/json.h>

#include "base/error.h"
#include "train/train.h"
#include "train/trainset.h"

#define GM_TRAIN_STATE_FILE "trainer_state.json"

typedef struct gm_train_progress {
	gm_train_info info;
	int64_t n_steps;
	double tokens_per_s;      /* this step */
	double elapsed_s;         /* since the run (or the resumed part) started */
} gm_train_progress;

typedef void (*gm_train_progress_fn)(void *ctx, const gm_train_progress *p);
typedef int (*gm_train_checkpoint_fn)(void *ctx, int64_t step, const char *dir, double eval_loss, gm_error *err);
typedef void (*gm_train_eval_fn)(void *ctx, int64_t step, double eval_loss);

typedef struct gm_train_run_opts {
	int64_t batch_size;
	int64_t grad_accum;
	int64_t n_steps;             /* the run ends after this step count (as gm_train_opts.n_steps) */
	int shuffle;
	uint64_t seed;
	int64_t checkpoint_every;    /* 0: only when stopped early */
	const char *checkpoint_root; /* NULL: no checkpoints */
	const gm_trainset *eval;     /* NULL: none; else evaluated before the first step, at each
				      * checkpoint and at the end */
	json_object *config;         /* recorded as "config" in trainer_state.json (borrowed) */
	gm_train_progress_fn on_step;
	gm_train_eval_fn on_eval;
	gm_train_checkpoint_fn on_checkpoint;
	void *ctx;
	volatile sig_atomic_t *stop; /* set (by a signal handler): checkpoint and return after the step */
} gm_train_run_opts;

typedef struct gm_train_run_result {
	int64_t steps;               /* steps done in total */
	double loss;                 /* of the last step */
	double eval_loss;            /* the last evaluation, NAN when none */
	int interrupted;             /* stopped by *stop before n_steps */
	char last_checkpoint[4096];  /* "" when none was written */
} gm_train_run_result;

int gm_train_run(gm_train *t, const gm_lora *l, const gm_trainset *data, const gm_train_run_opts *o,
		 gm_train_run_result *res, gm_error *err);

/* Mean loss over a whole trainset (no update). */
int gm_train_eval_set(gm_train *t, const gm_trainset *s, double *loss, gm_error *err);

/*
 * Finds the checkpoint to resume from: dir itself when it holds
 * trainer_state.json, else its checkpoint-N with the largest N.  *path:
 * malloc'd; *state: the parsed trainer_state.json (caller puts it).
 */
int gm_train_find_checkpoint(const char *dir, char **path, json_object **state, gm_error *err);

#endif
