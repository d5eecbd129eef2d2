/*
 * finetune.h - OpenAI's fine-tuning jobs (POST /v1/fine_tuning/jobs...)
 * run as `git train` in the background of a server.
 *
 * A job trains a LoRA adapter named ft-SUFFIX (ft-ID when no suffix was
 * given; a suffix already taken gets -XXXXXX of the job id) on a file of
 * the files API (files.h).  Its hyper-parameters are OpenAI's n_epochs,
 * batch_size and learning_rate_multiplier (of git train's default 2e-4),
 * and ours under "git_model" (rank, alpha, targets, rslora, steps,
 * grad_accum, max_len, warmup, schedule, weight_decay, learning_rate,
 * checkpoint_every).
 *
 * Jobs run one at a time, each as a child process running git train on the
 * served model's directory (found beside the server's executable, else on
 * PATH) with --progress-fd: the same code as the command, so the result is
 * committed as `git train` commits it (train/NAME with a commit and tag per
 * checkpoint, the adapter committed on the current branch; a model that is
 * no git repository gets the adapter in the job's directory instead).  Its
 * CPU share is bounded: it runs with n_threads threads (default half the
 * server's) at nice level +nice (default 10), so the server's requests
 * come first; it is killed if the server dies (PR_SET_PDEATHSIG).
 *
 * State, in the jobs directory (owned by the registry's data directory):
 *
 *   ftjob-ID.json          the job object, rewritten atomically at each
 *                          change of status and each checkpoint
 *   ftjob-ID.events.jsonl  its events, one a line, appended as they come
 *   ftjob-ID.log           git train's standard output and error
 *
 * A server that starts finds the jobs it had not finished: queued ones
 * wait their turn, a running one resumes from its last checkpoint (git
 * train --resume; from the start when it had none).  On a graceful stop
 * the running job is asked to checkpoint (SIGTERM) and resumes at the next
 * start.  A job that succeeds calls on_success with the adapter's name and
 * directory: the server makes it servable as MODEL:NAME, the job's
 * fine_tuned_model.
 */
#ifndef GM_FINETUNE_H
#define GM_FINETUNE_H

#include <stdint.h>

#include <json-c/json.h>

#include "base/error.h"
#include "serve/files.h"

typedef void (*gm_ftjobs_success_fn)(void *ctx, const char *name, const char *dir);

typedef struct gm_ftjobs_config {
	const char *dir;            /* the jobs directory (created) */
	const char *model_dir;      /* the served model: git train -m */
	const char *model_id;       /* the id clients use: a job's "model" must be it */
	gm_files *files;            /* borrowed */
	int n_threads;              /* git train --threads; >= 1 */
	int nice;                   /* added to the child's nice level, 0-19 */
	int64_t checkpoint_every;   /* default --checkpoint-every (steps); 0: git train's */
	const char *train_cmd;      /* NULL: git-train beside the executable, else on PATH */
	gm_ftjobs_success_fn on_success;
	void *ctx;
} gm_ftjobs_config;

typedef struct gm_ftjobs gm_ftjobs;

/* Loads the jobs of dir and starts the runner thread; c is copied. */
int gm_ftjobs_open(const gm_ftjobs_config *c, gm_ftjobs **out, gm_error *err);
/* Stops the runner: a running job checkpoints and stays "running" (it resumes at the next open). */
void gm_ftjobs_stop(gm_ftjobs *j);
void gm_ftjobs_free(gm_ftjobs *j);

/*
 * A new job from a request body (parsed JSON).  On a bad request GM_EINVAL
 * (or GM_ENOENT for a file that does not exist) with err set and *param
 * naming the field.  *job: the job object (new reference).
 */
int gm_ftjobs_create(gm_ftjobs *j, json_object *req, json_object **job, const char **param, gm_error *err);
/* {"object": "list", "data": [jobs, newest first], "has_more"}: after a job id, at most limit. */
json_object *gm_ftjobs_list(gm_ftjobs *j, const char *after, int limit);
/* One job; GM_ENOENT when there is none. */
int gm_ftjobs_get(gm_ftjobs *j, const char *id, json_object **job, gm_error *err);
/* Its events or checkpoints as a list (newest first), after an event/checkpoint id, at most limit. */
int gm_ftjobs_events(gm_ftjobs *j, const char *id, const char *after, int limit, json_object **list,
		     gm_error *err);
int gm_ftjobs_checkpoints(gm_ftjobs *j, const char *id, const char *after, int limit, json_object **list,
			  gm_error *err);
/* Cancels a job not yet finished (GM_EINVAL when it is); *job: the job object after. */
int gm_ftjobs_cancel(gm_ftjobs *j, const char *id, json_object **job, gm_error *err);

#endif
