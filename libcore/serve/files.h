/*
 * files.h - the files of OpenAI's files API (POST /v1/files...), kept on
 * disk for fine-tuning jobs (finetune.h).
 *
 * A file is two entries of one directory (owned by the registry's data
 * directory: ftapi.h says where):
 *
 *   file-ID.jsonl   the content, as uploaded
 *   file-ID.json    its object: {"id", "object": "file", "bytes",
 *                   "created_at", "filename", "purpose", "status":
 *                   "processed", "git_model": {"examples", "counts"}}
 *
 * An upload is written to a temporary file (.upload-XXXXXX) as it arrives,
 * at most max_bytes, then checked as `git train --check-data` checks
 * (traindata.h: every line one example of a form git train takes, errors
 * "FILENAME:LINE: reason"), then renamed into place, the object last: a
 * file whose object exists is complete, and an upload cut short leaves no
 * file (its temporary is removed, or on the next open).  Only purpose
 * "fine-tune" is taken.
 */
#ifndef GM_FILES_H
#define GM_FILES_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "base/error.h"

#define GM_FILES_MAX_ERRORS 10 /* bad lines reported of an upload */

typedef struct gm_files gm_files;
typedef struct gm_files_upload gm_files_upload;

/* Opens (creating it) the directory dir; uploads hold at most max_bytes. */
int gm_files_open(const char *dir, uint64_t max_bytes, gm_files **out, gm_error *err);
void gm_files_close(gm_files *f);
uint64_t gm_files_max_bytes(const gm_files *f);

int gm_files_upload_begin(gm_files *f, gm_files_upload **out, gm_error *err);
/* Appends; GM_EINVAL "over the limit" past max_bytes (the upload is then to be aborted). */
int gm_files_upload_write(gm_files_upload *u, const void *data, size_t len, gm_error *err);
/*
 * Checks and stores the upload, named filename (the client's; NULL:
 * "upload.jsonl"), with purpose; *obj: the file object (new reference).
 * GM_EINVAL for a purpose other than fine-tune or an empty file, GM_EFORMAT
 * for bad lines (the message lists up to GM_FILES_MAX_ERRORS of them,
 * "FILENAME:LINE: reason", separated by "; ").  The upload is freed in
 * every case.
 */
int gm_files_upload_finish(gm_files_upload *u, const char *filename, const char *purpose, json_object **obj,
			   gm_error *err);
/* Drops an upload (its temporary file). NULL is a no-op. */
void gm_files_upload_abort(gm_files_upload *u);

/* Every file's object, newest first (new reference, an array). */
json_object *gm_files_list(gm_files *f);
/* The object of file id (new reference); GM_ENOENT when there is none. */
int gm_files_get(gm_files *f, const char *id, json_object **obj, gm_error *err);
/* Deletes file id; GM_ENOENT when there is none. */
int gm_files_delete(gm_files *f, const char *id, gm_error *err);
/* The path of file id's content (malloc'd); GM_ENOENT when there is none. */
int gm_files_path(gm_files *f, const char *id, char **path, gm_error *err);

#endif
