/*
 * learnrepo.h - an online learning run (online.h) recorded in the model's
 * git repository: the state is committed every so often on train/NAME,
 * with the examples it learned from.
 *
 * A commit holds adapters/NN_NAME/ (trainrepo.h's checkpoint layout):
 *
 *   adapter_config.json, adapter_model.safetensors   the LoRA (PEFT)
 *   optimizer.safetensors                            AdamW moments, step
 *   trainer_state.json                               {"step", "loss", "online": {...},
 *                                                     "examples", "examples_sha256"}
 *   examples.lfs.jsonl                               every example received, one JSON line each
 *                                                     (weights kept), in arrival order
 *
 * tagged NAME-step-N, with the message
 *
 *   learn: NAME at step N, E examples
 *
 *   examples.lfs.jsonl: E examples, sha256 HEX
 *
 * The log's name matches the Hub's "*.lfs.*" pattern, so it is stored
 * through LFS (the pattern is added to the work tree's .gitattributes when
 * missing): each commit points at the whole log of its time, a log
 * appended to by the next.  A run can be replayed from it (git train
 * --follow examples.lfs.jsonl).
 *
 * Between commits the log grows in GITDIR/git-model/train/NAME/
 * (scratch), where examples are appended as they are accepted.  A new run
 * of the same name starts from the last commit of train/NAME: its weights,
 * optimizer and log; whatever came after that commit (the uncommitted
 * window: at most the commit interval's examples and steps) is lost, as
 * after kill -9.
 */
#ifndef GM_LEARNREPO_H
#define GM_LEARNREPO_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define GM_LEARN_LOG_FILE "examples.lfs.jsonl"

typedef struct gm_learnrepo gm_learnrepo;

/*
 * Opens the run NAME on the repository of model_dir (its top).  When
 * train/NAME exists, *state_dir (malloc'd) is the committed state to
 * resume from (a read-only view: open it before the next commit) and the
 * log is restored from it; else *state_dir is NULL and the run is new
 * (the name must be free in the work tree).  GM_ENOENT when model_dir is
 * not the top of a git repository's work tree.
 */
int gm_learnrepo_open(const char *model_dir, const char *name, gm_learnrepo **out, char **state_dir,
		      gm_error *err);
void gm_learnrepo_close(gm_learnrepo *l);

/* Appends n examples' JSONL (whole lines) to the log; thread-safe. */
int gm_learnrepo_append(gm_learnrepo *l, const char *jsonl, size_t len, uint64_t n, gm_error *err);
/* Examples in the log (committed or not). */
uint64_t gm_learnrepo_examples(gm_learnrepo *l);
/* "train/NAME"; "adapters/NN_NAME". */
const char *gm_learnrepo_branch(const gm_learnrepo *l);
const char *gm_learnrepo_adapter_path(const gm_learnrepo *l);

/*
 * A fresh directory where the caller writes the state to commit (online.h:
 * gm_online_save); then gm_learnrepo_commit.  Not thread-safe: one commit
 * at a time.
 */
const char *gm_learnrepo_stage(gm_learnrepo *l, gm_error *err);
/*
 * Commits the stage with a copy of the log as it is now (the examples
 * count and sha256 go into trainer_state.json and the message) on
 * train/NAME, tagged NAME-step-STEP.  commit (may be NULL) receives the
 * commit id; *examples (may be NULL) the examples committed.
 */
int gm_learnrepo_commit(gm_learnrepo *l, int64_t step, char commit[41], uint64_t *examples, gm_error *err);
/* The last commit made ("" when none), copied into out under the lock: the
 * trainer's thread commits while the server's threads read it. */
void gm_learnrepo_last_commit(gm_learnrepo *l, char out[41]);

#endif
