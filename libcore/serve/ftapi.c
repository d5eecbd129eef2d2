/* ftapi.c - the files and fine-tuning endpoints (see ftapi.h). */
#include "serve/ftapi.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "serve/files.h"
#include "storage/registry.h"

struct gm_ftapi {
	char *dir;
	size_t max_body;
	gm_files *files;
	gm_ftjobs *jobs;
};

enum route {
	R_NONE,
	R_FILES,          /* /v1/files */
	R_FILE,           /* /v1/files/ID */
	R_FILE_CONTENT,   /* /v1/files/ID/content */
	R_JOBS,           /* /v1/fine_tuning/jobs */
	R_JOB,            /* /v1/fine_tuning/jobs/ID */
	R_JOB_EVENTS,
	R_JOB_CHECKPOINTS,
	R_JOB_CANCEL
};

struct ftreq {
	enum route route;
	char id[64];
	int post, answered;
	/* POST /v1/files */
	struct MHD_PostProcessor *pp;
	gm_files_upload *upload;
	char *filename;
	gm_buf purpose;
	int n_files;
	int failed;               /* the upload is refused: status and message below */
	int fail_status;
	const char *fail_code;
	char fail_msg[GM_ERROR_MSG_MAX];
	/* other POSTs */
	gm_buf body;
	int too_large;
};

/* ---------------------------------------------------------------- open */

/* A directory name for the model: its id (made safe) and a hash of its path, so two models of one id do not meet. */
static char *model_key(const char *model_id, const char *model_dir)
{
	char *real = realpath(model_dir, NULL);
	const char *p = real ? real : model_dir;
	uint64_t h = 1469598103934665603ull;
	gm_buf b = GM_BUF_INIT;
	const char *s;

	for (; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	for (s = model_id; *s && b.len < 64; s++)
		gm_buf_addch(&b, (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
			     *s == '.' || *s == '_' || *s == '-' ? *s : '_');
	gm_buf_addf(&b, "-%08llx", (unsigned long long)(h & 0xffffffffu));
	free(real);
	return gm_buf_detach(&b, NULL);
}

int gm_ftapi_open(const gm_ftapi_config *c, gm_ftapi **out, gm_error *err)
{
	gm_ftapi *a = gm_xcalloc(1, sizeof(*a));
	gm_ftjobs_config jc;
	char *sub;
	int ret;

	*out = NULL;
	if (c->dir) {
		a->dir = gm_xstrdup(c->dir);
	} else {
		char *db = NULL, *slash, *key;
		gm_buf b = GM_BUF_INIT;

		if ((ret = gm_registry_default_path(&db, err))) {
			free(a);
			return ret;
		}
		slash = strrchr(db, '/');
		if (slash)
			*slash = '\0';
		key = model_key(c->model_id, c->model_dir);
		gm_buf_addf(&b, "%s/ft/%s", slash ? db : ".", key);
		a->dir = gm_buf_detach(&b, NULL);
		free(key);
		free(db);
	}
	a->max_body = c->max_body;
	sub = gm_path_join(a->dir, "files");
	ret = gm_files_open(sub, c->max_file_bytes ? c->max_file_bytes : GM_FTAPI_MAX_FILE_BYTES, &a->files, err);
	free(sub);
	if (ret) {
		gm_ftapi_free(a);
		return ret;
	}
	memset(&jc, 0, sizeof(jc));
	sub = gm_path_join(a->dir, "jobs");
	jc.dir = sub;
	jc.model_dir = c->model_dir;
	jc.model_id = c->model_id;
	jc.files = a->files;
	jc.n_threads = c->n_threads;
	jc.nice = c->nice;
	jc.checkpoint_every = c->checkpoint_every;
	jc.train_cmd = c->train_cmd;
	jc.on_success = c->on_success;
	jc.ctx = c->ctx;
	ret = gm_ftjobs_open(&jc, &a->jobs, err);
	free(sub);
	if (ret) {
		gm_ftapi_free(a);
		return ret;
	}
	*out = a;
	return 0;
}

void gm_ftapi_stop(gm_ftapi *a)
{
	if (a)
		gm_ftjobs_stop(a->jobs);
}

void gm_ftapi_free(gm_ftapi *a)
{
	if (!a)
		return;
	gm_ftjobs_free(a->jobs);
	gm_files_close(a->files);
	free(a->dir);
	free(a);
}

const char *gm_ftapi_dir(const gm_ftapi *a)
{
	return a->dir;
}

/* ---------------------------------------------------------------- routing */

/* url after prefix: "" -> base, "/ID" -> one, "/ID/SUB" -> sub (one of subs), else R_NONE. */
static enum route match(const char *url, char id[64])
{
	const char *rest, *slash;
	size_t n;
	int jobs;

	if (!strncmp(url, "/v1/files", 9)) {
		rest = url + 9;
		jobs = 0;
	} else if (!strncmp(url, "/v1/fine_tuning/jobs", 20)) {
		rest = url + 20;
		jobs = 1;
	} else {
		return R_NONE;
	}
	if (!*rest || !strcmp(rest, "/"))
		return jobs ? R_JOBS : R_FILES;
	if (*rest != '/')
		return R_NONE;
	rest++;
	slash = strchr(rest, '/');
	n = slash ? (size_t)(slash - rest) : strlen(rest);
	if (!n || n >= 64)
		return R_NONE;
	memcpy(id, rest, n);
	id[n] = '\0';
	if (!slash || !slash[1])
		return jobs ? R_JOB : R_FILE;
	slash++;
	if (!jobs)
		return !strcmp(slash, "content") ? R_FILE_CONTENT : R_NONE;
	if (!strcmp(slash, "events"))
		return R_JOB_EVENTS;
	if (!strcmp(slash, "checkpoints"))
		return R_JOB_CHECKPOINTS;
	if (!strcmp(slash, "cancel"))
		return R_JOB_CANCEL;
	return R_NONE;
}

int gm_ftapi_is_url(const char *url)
{
	char id[64];

	return !strncmp(url, "/v1/files", 9) || !strncmp(url, "/v1/fine_tuning", 15) ? 1 : match(url, id) != R_NONE;
}

/* ---------------------------------------------------------------- replies */

static enum MHD_Result send_json(struct MHD_Connection *c, int status, json_object *o, int *out_status)
{
	const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret;

	json_object_put(o);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	ret = MHD_queue_response(c, (unsigned int)status, r);
	MHD_destroy_response(r);
	*out_status = status;
	return ret;
}

/* An error in OpenAI's shape (as serve.c's). */
static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *param, const char *code,
				  const char *msg, int *out_status)
{
	json_object *o = json_object_new_object(), *e = json_object_new_object();

	json_object_object_add(e, "message", json_object_new_string(msg));
	json_object_object_add(e, "type", json_object_new_string(status == 500 ? "server_error"
								   : "invalid_request_error"));
	json_object_object_add(e, "param", param ? json_object_new_string(param) : NULL);
	json_object_object_add(e, "code", code ? json_object_new_string(code) : NULL);
	json_object_object_add(o, "error", e);
	return send_json(c, status, o, out_status);
}

static enum MHD_Result send_errorf(struct MHD_Connection *c, int status, const char *param, const char *code,
				   int *out_status, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static enum MHD_Result send_errorf(struct MHD_Connection *c, int status, const char *param, const char *code,
				   int *out_status, const char *fmt, ...)
{
	char msg[GM_ERROR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return send_error(c, status, param, code, msg, out_status);
}

/* A libcore error as an answer: GM_ENOENT is a 404, GM_EINVAL and GM_EFORMAT 400s, the rest 500. */
static enum MHD_Result send_gm_error(struct MHD_Connection *c, const gm_error *err, const char *param,
				     int *out_status)
{
	int status = err->code == GM_ENOENT ? 404 : err->code == GM_EINVAL || err->code == GM_EFORMAT ? 400 : 500;
	const char *code = err->code == GM_ENOENT ? "not_found" : err->code == GM_EFORMAT ? "invalid_file"
		: err->code == GM_EINVAL ? "invalid_request" : "server_error";

	return send_error(c, status, param, code, err->msg, out_status);
}

static int query_limit(struct MHD_Connection *c)
{
	const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
	long n = v ? strtol(v, NULL, 10) : 0;

	return n < 1 ? 0 : n > 100 ? 100 : (int)n;
}

/* ---------------------------------------------------------------- uploads */

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
			       const char *content_type, const char *transfer_encoding, const char *data,
			       uint64_t off, size_t size)
{
	struct ftreq *r = cls;
	gm_error err = GM_ERROR_INIT;

	(void)kind;
	(void)content_type;
	(void)transfer_encoding;
	if (r->failed)
		return MHD_NO;
	if (!strcmp(key, "purpose")) {
		if (r->purpose.len + size > 64) {
			r->failed = 1;
			r->fail_status = 400;
			r->fail_code = "invalid_request";
			snprintf(r->fail_msg, sizeof(r->fail_msg), "'purpose' is too long");
			return MHD_NO;
		}
		gm_buf_add(&r->purpose, data, size);
		return MHD_YES;
	}
	if (strcmp(key, "file"))
		return MHD_YES; /* other fields are ignored, as OpenAI's are */
	if (off == 0 && !r->filename) {
		r->n_files++;
		r->filename = gm_xstrdup(filename ? filename : "upload.jsonl");
	}
	if (size && gm_files_upload_write(r->upload, data, size, &err)) {
		r->failed = 1;
		r->fail_status = err.code == GM_EINVAL ? 413 : 500;
		r->fail_code = err.code == GM_EINVAL ? "file_too_large" : "server_error";
		snprintf(r->fail_msg, sizeof(r->fail_msg), "%s", err.msg);
		return MHD_NO;
	}
	return MHD_YES;
}

static enum MHD_Result finish_upload(gm_ftapi *a, struct MHD_Connection *c, struct ftreq *r, int *status)
{
	gm_error err = GM_ERROR_INIT;
	json_object *o = NULL;
	gm_files_upload *u = r->upload;

	(void)a;
	/* the post processor may hold the end of the last part until it is destroyed */
	if (r->pp) {
		if (MHD_destroy_post_processor(r->pp) != MHD_YES && !r->failed) {
			r->failed = 1;
			r->fail_status = 400;
			r->fail_code = "invalid_request";
			snprintf(r->fail_msg, sizeof(r->fail_msg), "malformed multipart/form-data body");
		}
		r->pp = NULL;
	}
	r->upload = NULL;
	if (r->failed) {
		gm_files_upload_abort(u);
		return send_error(c, r->fail_status, "file", r->fail_code, r->fail_msg, status);
	}
	if (!r->filename) {
		gm_files_upload_abort(u);
		return send_error(c, 400, "file", "invalid_request", "no 'file' part: send multipart/form-data with "
				  "the fields purpose=fine-tune and file", status);
	}
	if (!r->purpose.len) {
		gm_files_upload_abort(u);
		return send_error(c, 400, "purpose", "invalid_request", "'purpose' is required (fine-tune)", status);
	}
	if (gm_files_upload_finish(u, r->filename, r->purpose.buf, &o, &err))
		return send_gm_error(c, &err, err.code == GM_EINVAL && strstr(err.msg, "purpose") ? "purpose" : "file",
				     status);
	return send_json(c, 200, o, status);
}

/* ---------------------------------------------------------------- the handler */

static enum MHD_Result answer_get(gm_ftapi *a, struct MHD_Connection *c, struct ftreq *r, int *status)
{
	gm_error err = GM_ERROR_INIT;
	const char *after = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
	json_object *o = NULL;
	char *path = NULL;

	switch (r->route) {
	case R_FILES: {
		json_object *list = json_object_new_object();

		json_object_object_add(list, "object", json_object_new_string("list"));
		json_object_object_add(list, "data", gm_files_list(a->files));
		json_object_object_add(list, "has_more", json_object_new_boolean(0));
		return send_json(c, 200, list, status);
	}
	case R_FILE:
		if (gm_files_get(a->files, r->id, &o, &err))
			return send_gm_error(c, &err, NULL, status);
		return send_json(c, 200, o, status);
	case R_FILE_CONTENT: {
		struct MHD_Response *resp;
		struct stat st;
		enum MHD_Result ret;
		int fd;

		if (gm_files_path(a->files, r->id, &path, &err))
			return send_gm_error(c, &err, NULL, status);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		free(path);
		if (fd < 0 || fstat(fd, &st)) {
			if (fd >= 0)
				close(fd);
			return send_errorf(c, 404, NULL, "not_found", status, "no such file: %s", r->id);
		}
		resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd); /* owns fd */
		if (!resp) {
			close(fd);
			return MHD_NO;
		}
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
		ret = MHD_queue_response(c, 200, resp);
		MHD_destroy_response(resp);
		*status = 200;
		return ret;
	}
	case R_JOBS:
		return send_json(c, 200, gm_ftjobs_list(a->jobs, after, query_limit(c)), status);
	case R_JOB:
		if (gm_ftjobs_get(a->jobs, r->id, &o, &err))
			return send_gm_error(c, &err, NULL, status);
		return send_json(c, 200, o, status);
	case R_JOB_EVENTS:
		if (gm_ftjobs_events(a->jobs, r->id, after, query_limit(c), &o, &err))
			return send_gm_error(c, &err, NULL, status);
		return send_json(c, 200, o, status);
	case R_JOB_CHECKPOINTS:
		if (gm_ftjobs_checkpoints(a->jobs, r->id, after, query_limit(c), &o, &err))
			return send_gm_error(c, &err, NULL, status);
		return send_json(c, 200, o, status);
	default:
		return send_error(c, 500, NULL, "server_error", "unrouted request", status);
	}
}

static enum MHD_Result answer_post(gm_ftapi *a, struct MHD_Connection *c, struct ftreq *r, int *status)
{
	gm_error err = GM_ERROR_INIT;
	json_object *req = NULL, *o = NULL;
	const char *param = NULL;
	enum MHD_Result ret;

	if (r->route == R_FILES)
		return finish_upload(a, c, r, status);
	if (r->too_large)
		return send_errorf(c, 413, NULL, "request_too_large", status, "the request body is over the server's "
				   "limit of %zu bytes (--max-body)", a->max_body);
	if (r->route == R_JOB_CANCEL) {
		if (gm_ftjobs_cancel(a->jobs, r->id, &o, &err))
			return send_gm_error(c, &err, NULL, status);
		return send_json(c, 200, o, status);
	}
	/* R_JOBS */
	if (gm_json_parse(r->body.buf ? r->body.buf : "", r->body.len, "the request body", &req, &err))
		return send_error(c, 400, NULL, "invalid_json", err.msg, status);
	if (gm_ftjobs_create(a->jobs, req, &o, &param, &err)) {
		json_object_put(req);
		if (err.code == GM_ENOENT)
			return send_error(c, 400, param, "invalid_file", err.msg, status);
		return send_gm_error(c, &err, param, status);
	}
	json_object_put(req);
	ret = send_json(c, 200, o, status);
	return ret;
}

enum MHD_Result gm_ftapi_request(gm_ftapi *a, struct MHD_Connection *c, const char *url, const char *method,
				 const char *upload_data, size_t *upload_data_size, void **state, int *status)
{
	struct ftreq *r = *state;

	if (!r) {
		int get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
		int del = !strcmp(method, MHD_HTTP_METHOD_DELETE);
		const char *allowed;

		r = gm_xcalloc(1, sizeof(*r));
		gm_buf_init(&r->purpose);
		gm_buf_init(&r->body);
		*state = r;
		r->route = match(url, r->id);
		r->post = !strcmp(method, MHD_HTTP_METHOD_POST);
		switch (r->route) {
		case R_FILES: allowed = "GET, POST"; break;
		case R_FILE: allowed = "GET, DELETE"; break;
		case R_JOBS: allowed = "GET, POST"; break;
		case R_JOB_CANCEL: allowed = "POST"; break;
		case R_NONE: allowed = NULL; break;
		default: allowed = "GET"; break;
		}
		if (!allowed) {
			r->answered = 1;
			return send_errorf(c, 404, NULL, "not_found", status, "no such endpoint: %s %s (files: /v1/files"
					   "[/ID[/content]], jobs: /v1/fine_tuning/jobs[/ID[/events|/checkpoints|"
					   "/cancel]])", method, url);
		}
		if (!((get && strstr(allowed, "GET")) || (del && strstr(allowed, "DELETE")) ||
		      (r->post && strstr(allowed, "POST")))) {
			r->answered = 1;
			return send_errorf(c, 405, NULL, "method_not_allowed", status, "%s %s: use %s", method, url,
					   allowed);
		}
		if (del) {
			gm_error err = GM_ERROR_INIT;
			json_object *o;

			r->answered = 1;
			if (gm_files_delete(a->files, r->id, &err))
				return send_gm_error(c, &err, NULL, status);
			o = json_object_new_object();
			json_object_object_add(o, "id", json_object_new_string(r->id));
			json_object_object_add(o, "object", json_object_new_string("file"));
			json_object_object_add(o, "deleted", json_object_new_boolean(1));
			return send_json(c, 200, o, status);
		}
		if (!r->post) {
			r->answered = 1;
			return answer_get(a, c, r, status);
		}
		if (r->route == R_FILES) {
			const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
			const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
			gm_error err = GM_ERROR_INIT;
			/* the multipart framing around the file: headers, boundaries, the purpose */
			uint64_t limit = gm_files_max_bytes(a->files) + 64 * 1024;

			if (cl && strtoull(cl, NULL, 10) > limit) {
				r->answered = 1;
				return send_errorf(c, 413, "file", "file_too_large", status, "the upload (%s bytes) is over "
						   "the server's limit of %llu bytes a file (--max-file-size)", cl,
						   (unsigned long long)gm_files_max_bytes(a->files));
			}
			if (!ct || strncasecmp(ct, "multipart/form-data", 19) ||
			    !(r->pp = MHD_create_post_processor(c, 64 * 1024, on_part, r))) {
				r->answered = 1;
				return send_error(c, 400, NULL, "invalid_request", "POST /v1/files takes multipart/form-data "
						  "with the fields purpose=fine-tune and file", status);
			}
			if (gm_files_upload_begin(a->files, &r->upload, &err)) {
				r->answered = 1;
				return send_gm_error(c, &err, NULL, status);
			}
		}
		return MHD_YES;
	}
	if (r->answered) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (r->pp) {
			/* after a refusal the rest is read and dropped: the answer goes out at the end */
			if (!r->failed && MHD_post_process(r->pp, upload_data, *upload_data_size) != MHD_YES &&
			    !r->failed) {
				r->failed = 1;
				r->fail_status = 400;
				r->fail_code = "invalid_request";
				snprintf(r->fail_msg, sizeof(r->fail_msg), "malformed multipart/form-data body");
			}
		} else if (!r->too_large && r->body.len + *upload_data_size > a->max_body) {
			r->too_large = 1;
			gm_buf_release(&r->body);
		} else if (!r->too_large) {
			gm_buf_add(&r->body, upload_data, *upload_data_size);
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	r->answered = 1;
	return answer_post(a, c, r, status);
}

void gm_ftapi_request_done(void *state)
{
	struct ftreq *r = state;

	if (!r)
		return;
	if (r->pp)
		MHD_destroy_post_processor(r->pp);
	gm_files_upload_abort(r->upload);
	free(r->filename);
	gm_buf_release(&r->purpose);
	gm_buf_release(&r->body);
	free(r);
}
