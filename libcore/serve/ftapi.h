/*
 * ftapi.h - the HTTP side of OpenAI's files and fine-tuning APIs on the
 * server (files.h stores the files, finetune.h runs the jobs):
 *
 *   POST   /v1/files                           multipart/form-data: purpose=fine-tune, file
 *   GET    /v1/files                           {"object": "list", "data": [...]}
 *   GET    /v1/files/ID, DELETE /v1/files/ID
 *   GET    /v1/files/ID/content                the file as uploaded
 *   POST   /v1/fine_tuning/jobs                a new job
 *   GET    /v1/fine_tuning/jobs[/ID]           ?after=ID&limit=N for the list
 *   GET    /v1/fine_tuning/jobs/ID/events      ?after=&limit= (newest first)
 *   GET    /v1/fine_tuning/jobs/ID/checkpoints
 *   POST   /v1/fine_tuning/jobs/ID/cancel
 *
 * The server checks the API key and its readiness before handing a
 * request here (serve.c); errors have OpenAI's shape.  An upload is
 * streamed to disk (at most max_file_bytes); other bodies are at most
 * max_body bytes.
 *
 * State lives under the registry's data directory (registry.h: the
 * directory of registry.db), in ft/ID-HASH/{files,jobs}/ for the served
 * model (ID its id, HASH of its directory's path), unless dir is given.
 */
#ifndef GM_FTAPI_H
#define GM_FTAPI_H

#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>

#include "base/error.h"
#include "serve/finetune.h"

#define GM_FTAPI_MAX_FILE_BYTES (512ull << 20) /* OpenAI's limit for a fine-tuning file */

typedef struct gm_ftapi_config {
	const char *dir;            /* NULL: the registry's data directory (above) */
	const char *model_dir, *model_id;
	uint64_t max_file_bytes;    /* 0: GM_FTAPI_MAX_FILE_BYTES */
	size_t max_body;
	int n_threads;              /* finetune.h */
	int nice;
	int64_t checkpoint_every;
	const char *train_cmd;
	gm_ftjobs_success_fn on_success;
	void *ctx;
} gm_ftapi_config;

typedef struct gm_ftapi gm_ftapi;

int gm_ftapi_open(const gm_ftapi_config *c, gm_ftapi **out, gm_error *err);
/* Stops the jobs' runner (a running job checkpoints and resumes at the next start). */
void gm_ftapi_stop(gm_ftapi *a);
void gm_ftapi_free(gm_ftapi *a);
/* The directory holding files/ and jobs/. */
const char *gm_ftapi_dir(const gm_ftapi *a);

/* Whether url is one of the endpoints above (/v1/files..., /v1/fine_tuning/...). */
int gm_ftapi_is_url(const char *url);

/*
 * One call of libmicrohttpd's access handler for such a url: *state is the
 * request's (NULL at its first call; freed by gm_ftapi_request_done), and
 * *status the answer's HTTP status once it is queued (for the metrics).
 */
enum MHD_Result gm_ftapi_request(gm_ftapi *a, struct MHD_Connection *c, const char *url, const char *method,
				 const char *upload_data, size_t *upload_data_size, void **state, int *status);
void gm_ftapi_request_done(void *state);

#endif
