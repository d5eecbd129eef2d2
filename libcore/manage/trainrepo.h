/*
 * trainrepo.h - a training run recorded in the model's git repository.
 *
 * git train NAME on a model repository runs on the branch train/NAME,
 * created at the current commit (HEAD).  Each checkpoint is a commit on
 * that branch holding adapters/NN_NAME/ as the checkpoint directory
 * (trainrun.h: the PEFT adapter, optimizer.safetensors,
 * trainer_state.json), tagged NAME-step-N; the final adapter is a commit
 * on train/NAME holding the plain PEFT adapter (and git-model.json), and
 * the same adapter is then added to the current branch's work tree and
 * committed there, so that git adapter list and git infer --adapter NAME
 * see it.  The work tree, index and HEAD are never touched before that
 * last step, so training can run while the user works in the repository.
 *
 * NN is the next free adapter index of the work tree (the one already used
 * on train/NAME when a run is resumed).  Checkpoints are assembled in
 * GITDIR/git-model/train/NAME/ and deleted once committed.
 */
#ifndef GM_TRAINREPO_H
#define GM_TRAINREPO_H

#include <stdint.h>

#include "base/error.h"

typedef struct gm_trainrepo gm_trainrepo;

/*
 * Prepares a run of adapter name on the repository holding model_dir.
 * GM_ENOENT when model_dir is not in a git repository (the caller then
 * needs another place for the result).  Without resume, the branch
 * train/NAME must not exist and the name must be free in the work tree;
 * with resume, the branch must exist (its last commit is the checkpoint to
 * continue from).
 */
int gm_trainrepo_open(const char *model_dir, const char *name, int resume, gm_trainrepo **out, gm_error *err);
void gm_trainrepo_close(gm_trainrepo *t);

/* Where checkpoints are written (trainrun.h's checkpoint_root). */
const char *gm_trainrepo_scratch(const gm_trainrepo *t);
/* "train/NAME" and "adapters/NN_NAME". */
const char *gm_trainrepo_branch(const gm_trainrepo *t);
const char *gm_trainrepo_adapter_path(const gm_trainrepo *t);
/* The commit the run started from (the branch's first parent). */
const char *gm_trainrepo_base(const gm_trainrepo *t);

/*
 * With resume: the checkpoint directory of the tip of train/NAME (read
 * from the object store, without a checkout).  GM_ENOENT when that commit
 * is not a checkpoint (the run finished); 1, *dir NULL, when the run had
 * finished but was killed before its adapter was added to the current
 * branch, which this call has now done.  *dir malloc'd.
 */
int gm_trainrepo_resume_dir(gm_trainrepo *t, char **dir, gm_error *err);

/*
 * Commits the checkpoint directory dir of step on train/NAME (creating the
 * branch at the first one) with message, tags it NAME-step-STEP, and
 * deletes dir.  commit (may be NULL) receives the commit id.
 */
int gm_trainrepo_checkpoint(gm_trainrepo *t, int64_t step, const char *dir, const char *message,
			    char commit[41], gm_error *err);

/*
 * Commits the final adapter (the PEFT directory adapter_dir) on
 * train/NAME, then adds it to the current branch as adapters/NN_NAME and
 * commits it there, both with message.  commit (may be NULL) receives the
 * current branch's new commit.
 */
int gm_trainrepo_finish(gm_trainrepo *t, const char *adapter_dir, const char *message, char commit[41],
			gm_error *err);

#endif
