/* finetune.c - fine-tuning jobs run as git train (see finetune.h). */
#include "serve/finetune.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/log.h"
#include "base/rng.h"
#include "manage/adapter.h"
#include "storage/repo.h"

#define DEFAULT_LR 2e-4        /* git train's: learning_rate_multiplier scales it */
#define MAX_JOBS_LISTED 100
#define STOP_WAIT_S 60         /* a stopping server waits this long for the checkpoint */

enum status { ST_VALIDATING, ST_QUEUED, ST_RUNNING, ST_SUCCEEDED, ST_FAILED, ST_CANCELLED };
static const char *const status_names[] = { "validating_files", "queued", "running", "succeeded", "failed",
					    "cancelled" };

struct ftjob {
	char id[40];
	char *name;              /* the adapter: ft-... */
	json_object *obj;        /* the API object, as persisted */
	json_object *events;     /* array, oldest first */
	enum status st;
	int cancel;              /* asked for while running */
	pid_t pid;               /* the running git train; 0 when none */
	uint64_t next_event;
};

struct gm_ftjobs {
	gm_ftjobs_config c;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct ftjob **jobs;     /* oldest first */
	size_t n_jobs;
	int stopping;
	pthread_t runner;
	int runner_started;
	int is_repo;             /* model_dir is a repository's top level: git train commits */
	int busy;                /* the runner is in run_job */
	int lock_fd;             /* flock of DIR/.lock: one server runs a model's jobs */
};

/* ---------------------------------------------------------------- the jobs' files */

static char *job_path(const gm_ftjobs *j, const char *id, const char *ext)
{
	gm_buf b = GM_BUF_INIT;

	gm_buf_addf(&b, "%s/%s%s", j->c.dir, id, ext);
	return gm_buf_detach(&b, NULL);
}

static void set_status(struct ftjob *job, enum status st)
{
	job->st = st;
	json_object_object_add(job->obj, "status", json_object_new_string(status_names[st]));
}

static json_object *gm_part(struct ftjob *job)
{
	json_object *x;

	if (!json_object_object_get_ex(job->obj, "git_model", &x) || !json_object_is_type(x, json_type_object)) {
		x = json_object_new_object();
		json_object_object_add(job->obj, "git_model", x);
	}
	return x;
}

/* Writes the job object (under the lock); a failure is logged, the job goes on. */
static void save_job(gm_ftjobs *j, struct ftjob *job)
{
	gm_error err = GM_ERROR_INIT;
	char *p = job_path(j, job->id, ".json");

	if (gm_json_write_file(p, job->obj, &err))
		gm_warn("fine-tuning job %s: %s", job->id, err.msg);
	free(p);
}

/* Adds an event (under the lock): kept in memory and appended to the events file. */
static void add_event(gm_ftjobs *j, struct ftjob *job, const char *level, const char *type, json_object *data,
		      const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void add_event(gm_ftjobs *j, struct ftjob *job, const char *level, const char *type, json_object *data,
		      const char *fmt, ...)
{
	json_object *e = json_object_new_object();
	gm_buf msg = GM_BUF_INIT;
	char id[64], *p;
	va_list ap;
	FILE *f;

	va_start(ap, fmt);
	gm_buf_vaddf(&msg, fmt, ap);
	va_end(ap);
	snprintf(id, sizeof(id), "ftevent-%s-%06llu", job->id + 6, (unsigned long long)job->next_event++);
	json_object_object_add(e, "object", json_object_new_string("fine_tuning.job.event"));
	json_object_object_add(e, "id", json_object_new_string(id));
	json_object_object_add(e, "created_at", json_object_new_int64((int64_t)time(NULL)));
	json_object_object_add(e, "level", json_object_new_string(level));
	json_object_object_add(e, "message", json_object_new_string(msg.buf));
	json_object_object_add(e, "data", data ? data : json_object_new_object());
	json_object_object_add(e, "type", json_object_new_string(type));
	json_object_array_add(job->events, e);
	p = job_path(j, job->id, ".events.jsonl");
	if ((f = fopen(p, "a"))) {
		fprintf(f, "%s\n", json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN |
								     JSON_C_TO_STRING_NOSLASHESCAPE));
		fclose(f);
	}
	free(p);
	gm_buf_release(&msg);
}

static void job_free(struct ftjob *job)
{
	if (!job)
		return;
	json_object_put(job->obj);
	json_object_put(job->events);
	free(job->name);
	free(job);
}

static const char *str_of(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
		? json_object_get_string(v) : NULL;
}

static int64_t int_of(json_object *o, const char *key, int64_t dflt)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_int)
		? json_object_get_int64(v) : dflt;
}

/* A job from its files; NULL when they do not make one (skipped with a warning). */
static struct ftjob *load_job(gm_ftjobs *j, const char *id)
{
	gm_error err = GM_ERROR_INIT;
	char *p = job_path(j, id, ".json");
	struct ftjob *job = gm_xcalloc(1, sizeof(*job));
	const char *st, *name;
	gm_buf ev = GM_BUF_INIT;
	int k;

	snprintf(job->id, sizeof(job->id), "%s", id);
	job->events = json_object_new_array();
	if (gm_json_parse_file(p, &job->obj, &err) || !json_object_is_type(job->obj, json_type_object)) {
		gm_warn("fine-tuning job %s: %s", id, err.code ? err.msg : "not a JSON object");
		free(p);
		job_free(job);
		return NULL;
	}
	free(p);
	st = str_of(job->obj, "status");
	name = str_of(gm_part(job), "adapter");
	for (k = 0; st && k <= ST_CANCELLED && strcmp(st, status_names[k]); k++)
		;
	if (!st || k > ST_CANCELLED || !name) {
		gm_warn("fine-tuning job %s: no status or adapter", id);
		job_free(job);
		return NULL;
	}
	job->st = (enum status)k;
	job->name = gm_xstrdup(name);
	p = job_path(j, id, ".events.jsonl");
	if (!gm_read_file(p, &ev, NULL)) {
		char *line = ev.buf, *next;

		for (; line && *line; line = next) {
			json_object *e = NULL;

			next = strchr(line, '\n');
			if (next)
				*next++ = '\0';
			if (*line && !gm_json_parse(line, strlen(line), p, &e, NULL))
				json_object_array_add(job->events, e);
		}
	}
	job->next_event = json_object_array_length(job->events);
	gm_buf_release(&ev);
	free(p);
	return job;
}

static struct ftjob *find_job(gm_ftjobs *j, const char *id)
{
	size_t i;

	for (i = 0; i < j->n_jobs; i++)
		if (!strcmp(j->jobs[i]->id, id))
			return j->jobs[i];
	return NULL;
}

/* ---------------------------------------------------------------- creating a job */

static int take_number(json_object *hp, const char *key, double lo, double hi, int integer, double *out,
		       const char **param, gm_error *err)
{
	json_object *v;

	*out = NAN;
	if (!json_object_object_get_ex(hp, key, &v) || !v)
		return 0;
	if (json_object_is_type(v, json_type_string) && !strcmp(json_object_get_string(v), "auto"))
		return 0;
	if ((!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double)) ||
	    (integer && !json_object_is_type(v, json_type_int))) {
		*param = key;
		return gm_error_set(err, GM_EINVAL, "hyperparameters.%s must be %s or 'auto'", key,
				    integer ? "an integer" : "a number");
	}
	*out = json_object_get_double(v);
	if (!(*out >= lo && *out <= hi)) {
		*param = key;
		return gm_error_set(err, GM_EINVAL, "hyperparameters.%s is %g, not in [%g, %g]", key, *out, lo, hi);
	}
	return 0;
}

/* Our options (the "git_model" object): name, git train flag, kind (i: integer, n: number, s: string, b: bool). */
static const struct vendor_opt {
	const char *key, *flag;
	char kind;
	double lo, hi;
} vendor_opts[] = {
	{ "rank", "--rank", 'i', 1, 65536 },
	{ "alpha", "--alpha", 'n', 1e-9, 1e9 },
	{ "targets", "--targets", 's', 0, 0 },
	{ "rslora", "--rslora", 'b', 0, 0 },
	{ "learning_rate", "--lr", 'n', 1e-12, 10 },
	{ "steps", "--steps", 'i', 1, 1e9 },
	{ "grad_accum", "--grad-accum", 'i', 1, 65536 },
	{ "max_len", "--max-len", 'i', 2, 1 << 20 },
	{ "warmup", "--warmup", 'i', 0, 1e9 },
	{ "schedule", "--schedule", 's', 0, 0 },
	{ "weight_decay", "--weight-decay", 'n', 0, 1e9 },
	{ "checkpoint_every", "--checkpoint-every", 'i', 0, 1e9 },
	{ "shuffle", "--shuffle", 'b', 0, 0 },
};

static int check_vendor(json_object *x, const char **param, gm_error *err)
{
	json_object_object_foreach(x, key, v) {
		size_t i;
		const struct vendor_opt *o = NULL;
		int ok;

		for (i = 0; i < sizeof(vendor_opts) / sizeof(vendor_opts[0]); i++)
			if (!strcmp(vendor_opts[i].key, key))
				o = &vendor_opts[i];
		*param = "git_model";
		if (!o)
			return gm_error_set(err, GM_EINVAL, "git_model.%s: unknown option (rank, alpha, targets, rslora, "
					    "learning_rate, steps, grad_accum, max_len, warmup, schedule, weight_decay, "
					    "checkpoint_every, shuffle)", key);
		if (o->kind == 's')
			ok = json_object_is_type(v, json_type_string) && *json_object_get_string(v) &&
				*json_object_get_string(v) != '-';
		else if (o->kind == 'b')
			ok = json_object_is_type(v, json_type_boolean);
		else
			ok = (json_object_is_type(v, json_type_int) ||
			      (o->kind == 'n' && json_object_is_type(v, json_type_double))) &&
				json_object_get_double(v) >= o->lo && json_object_get_double(v) <= o->hi;
		if (!ok)
			return gm_error_set(err, GM_EINVAL, "git_model.%s must be %s", key,
					    o->kind == 's' ? "a string" : o->kind == 'b' ? "true or false"
					    : o->kind == 'i' ? "an integer in range" : "a number in range");
	}
	return 0;
}

static int name_taken(gm_ftjobs *j, const char *name)
{
	gm_adapter_entry e;
	size_t i;

	for (i = 0; i < j->n_jobs; i++)
		if (!strcmp(j->jobs[i]->name, name))
			return 1;
	if (!gm_adapter_find(j->c.model_dir, name, &e, NULL)) {
		gm_adapter_entry_release(&e);
		return 1;
	}
	if (j->is_repo) {
		gm_repo *r;
		char hex[GM_REPO_OID_HEXLEN + 1];
		gm_buf br = GM_BUF_INIT;
		int taken = 0;

		gm_buf_addf(&br, "refs/heads/train/%s", name);
		if (!gm_repo_open(j->c.model_dir, &r, NULL)) {
			taken = !gm_repo_resolve(r, br.buf, hex, NULL);
			gm_repo_close(r);
		}
		gm_buf_release(&br);
		return taken;
	}
	return 0;
}

static json_object *hp_value(double v, int integer)
{
	if (isnan(v))
		return json_object_new_string("auto");
	/* n_epochs 3 reads back as 3, as OpenAI shows it */
	return integer || v == floor(v) ? json_object_new_int64((int64_t)v) : gm_json_new_double(v);
}

int gm_ftjobs_create(gm_ftjobs *j, json_object *req, json_object **out, const char **param, gm_error *err)
{
	const char *model, *train, *valid = NULL, *suffix = NULL;
	json_object *v, *hp = NULL, *method, *vendor = NULL, *o, *hpo, *x;
	double epochs, batch, mult;
	int64_t seed;
	char id[40], *path = NULL;
	gm_buf name = GM_BUF_INIT;
	struct ftjob *job;
	uint64_t r;
	int ret;

	*out = NULL;
	*param = NULL;
	if (!json_object_is_type(req, json_type_object))
		return gm_error_set(err, GM_EINVAL, "the body must be a JSON object");
	if (!(model = str_of(req, "model"))) {
		*param = "model";
		return gm_error_set(err, GM_EINVAL, "'model' is required: the served model, %s", j->c.model_id);
	}
	if (strcmp(model, j->c.model_id)) {
		*param = "model";
		return gm_error_set(err, GM_EINVAL, "this server fine-tunes '%s' only, not '%s'", j->c.model_id, model);
	}
	if (!(train = str_of(req, "training_file"))) {
		*param = "training_file";
		return gm_error_set(err, GM_EINVAL, "'training_file' is required: the id of a file uploaded with "
				    "purpose fine-tune");
	}
	if ((ret = gm_files_path(j->c.files, train, &path, err))) {
		*param = "training_file";
		return ret;
	}
	free(path);
	if (json_object_object_get_ex(req, "validation_file", &v) && v) {
		if (!(valid = str_of(req, "validation_file"))) {
			*param = "validation_file";
			return gm_error_set(err, GM_EINVAL, "'validation_file' must be a file id");
		}
		if ((ret = gm_files_path(j->c.files, valid, &path, err))) {
			*param = "validation_file";
			return ret;
		}
		free(path);
	}
	if (json_object_object_get_ex(req, "suffix", &v) && v) {
		gm_error e2 = GM_ERROR_INIT;

		suffix = str_of(req, "suffix");
		if (!suffix || strlen(suffix) > 40 || gm_adapter_name_check(suffix, &e2)) {
			*param = "suffix";
			return gm_error_set(err, GM_EINVAL, "'suffix' must be 1-40 characters of letters, digits, "
					    ". _ and - (it names the adapter ft-SUFFIX)");
		}
	}
	/* hyper-parameters: the newer method.supervised form, or the older top-level one */
	if (json_object_object_get_ex(req, "method", &method) && method) {
		json_object *sup;

		if (str_of(method, "type") && strcmp(str_of(method, "type"), "supervised")) {
			*param = "method";
			return gm_error_set(err, GM_EINVAL, "method.type '%s' is not supported: only 'supervised' "
					    "(LoRA) fine-tuning", str_of(method, "type"));
		}
		if (json_object_object_get_ex(method, "supervised", &sup) && sup)
			json_object_object_get_ex(sup, "hyperparameters", &hp);
	}
	if (!hp)
		json_object_object_get_ex(req, "hyperparameters", &hp);
	if (hp && !json_object_is_type(hp, json_type_object)) {
		*param = "hyperparameters";
		return gm_error_set(err, GM_EINVAL, "'hyperparameters' must be an object");
	}
	epochs = batch = mult = NAN;
	if (hp && ((ret = take_number(hp, "n_epochs", 1e-3, 1000, 0, &epochs, param, err)) ||
		   (ret = take_number(hp, "batch_size", 1, 65536, 1, &batch, param, err)) ||
		   (ret = take_number(hp, "learning_rate_multiplier", 1e-6, 1000, 0, &mult, param, err))))
		return ret;
	if (json_object_object_get_ex(req, "git_model", &vendor) && vendor) {
		if (!json_object_is_type(vendor, json_type_object)) {
			*param = "git_model";
			return gm_error_set(err, GM_EINVAL, "'git_model' must be an object of LoRA options");
		}
		if ((ret = check_vendor(vendor, param, err)))
			return ret;
	}
	seed = -1;
	if (json_object_object_get_ex(req, "seed", &v) && v) {
		if (!gm_json_is_integer(v) || json_object_get_int64(v) < 0) {
			*param = "seed";
			return gm_error_set(err, GM_EINVAL, "'seed' must be an integer >= 0");
		}
		seed = json_object_get_int64(v);
	}
	r = gm_rng_entropy();
	if (seed < 0)
		seed = (int64_t)(r >> 33); /* as OpenAI: one is drawn and shown */
	snprintf(id, sizeof(id), "ftjob-%016llx%08llx", (unsigned long long)gm_rng_entropy(),
		 (unsigned long long)(r & 0xffffffffu));

	o = json_object_new_object();
	json_object_object_add(o, "object", json_object_new_string("fine_tuning.job"));
	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "created_at", json_object_new_int64((int64_t)time(NULL)));
	json_object_object_add(o, "finished_at", NULL);
	json_object_object_add(o, "model", json_object_new_string(model));
	json_object_object_add(o, "fine_tuned_model", NULL);
	json_object_object_add(o, "organization_id", json_object_new_string("org-git-model"));
	json_object_object_add(o, "status", json_object_new_string(status_names[ST_VALIDATING]));
	hpo = json_object_new_object();
	json_object_object_add(hpo, "n_epochs", hp_value(epochs, 0));
	json_object_object_add(hpo, "batch_size", hp_value(batch, 1));
	json_object_object_add(hpo, "learning_rate_multiplier", hp_value(mult, 0));
	json_object_object_add(o, "hyperparameters", hpo);
	json_object_object_add(o, "training_file", json_object_new_string(train));
	json_object_object_add(o, "validation_file", valid ? json_object_new_string(valid) : NULL);
	json_object_object_add(o, "result_files", json_object_new_array());
	json_object_object_add(o, "trained_tokens", NULL);
	json_object_object_add(o, "error", NULL);
	json_object_object_add(o, "seed", json_object_new_int64(seed));
	json_object_object_add(o, "suffix", suffix ? json_object_new_string(suffix) : NULL);
	json_object_object_add(o, "estimated_finish", NULL);
	json_object_object_add(o, "integrations", json_object_new_array());
	json_object_object_add(o, "metadata", NULL);
	{
		json_object *m = json_object_new_object(), *sup = json_object_new_object();

		json_object_object_add(m, "type", json_object_new_string("supervised"));
		json_object_object_add(sup, "hyperparameters", json_object_get(hpo));
		json_object_object_add(m, "supervised", sup);
		json_object_object_add(o, "method", m);
	}

	job = gm_xcalloc(1, sizeof(*job));
	snprintf(job->id, sizeof(job->id), "%s", id);
	job->obj = o;
	job->events = json_object_new_array();
	job->st = ST_VALIDATING;
	pthread_mutex_lock(&j->lock);
	gm_buf_addf(&name, "ft-%s", suffix ? suffix : id + 6 + 12);
	if (name_taken(j, name.buf))
		gm_buf_addf(&name, "-%.6s", id + 6 + 16);
	job->name = gm_xstrdup(name.buf);
	x = gm_part(job);
	json_object_object_add(x, "adapter", json_object_new_string(job->name));
	if (j->is_repo) {
		gm_buf br = GM_BUF_INIT;
		gm_buf_addf(&br, "train/%s", job->name);
		json_object_object_add(x, "branch", json_object_new_string(br.buf));
		gm_buf_release(&br);
	}
	json_object_object_add(x, "options", vendor ? json_object_get(vendor) : json_object_new_object());
	json_object_object_add(x, "checkpoints", json_object_new_array());
	add_event(j, job, "info", "message", NULL, "Created fine-tuning job: %s (adapter %s)", id, job->name);
	save_job(j, job);
	j->jobs = gm_xrealloc(j->jobs, (j->n_jobs + 1) * sizeof(*j->jobs));
	j->jobs[j->n_jobs++] = job;
	*out = json_object_get(job->obj);
	{
		json_object *copy = NULL;
		json_object_deep_copy(*out, &copy, NULL);
		json_object_put(*out);
		*out = copy;
	}
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);
	gm_buf_release(&name);
	return 0;
}

/* ---------------------------------------------------------------- reading */

static json_object *copy_of(json_object *o)
{
	json_object *c = NULL;

	json_object_deep_copy(o, &c, NULL);
	return c;
}

/* A list object of arr's items, newest (last) first, those after the item with id `after`, at most limit. */
static json_object *page(json_object *arr, const char *after, int limit)
{
	json_object *list = json_object_new_object(), *data = json_object_new_array();
	size_t n = json_object_array_length(arr), i = n;
	int taken = 0, more = 0;

	if (after && *after) {
		/* from the item older than `after`; nothing when no item has that id */
		for (i = n; i > 0; i--)
			if (!strcmp(str_of(json_object_array_get_idx(arr, i - 1), "id") ?: "", after)) {
				i--;
				break;
			}
	}
	for (; i > 0; i--) {
		if (taken == limit) {
			more = 1;
			break;
		}
		json_object_array_add(data, copy_of(json_object_array_get_idx(arr, i - 1)));
		taken++;
	}
	json_object_object_add(list, "object", json_object_new_string("list"));
	json_object_object_add(list, "data", data);
	json_object_object_add(list, "has_more", json_object_new_boolean(more));
	return list;
}

json_object *gm_ftjobs_list(gm_ftjobs *j, const char *after, int limit)
{
	json_object *arr = json_object_new_array(), *list;
	size_t i;

	pthread_mutex_lock(&j->lock);
	for (i = 0; i < j->n_jobs; i++)
		json_object_array_add(arr, json_object_get(j->jobs[i]->obj));
	list = page(arr, after, limit > 0 ? limit : 20);
	pthread_mutex_unlock(&j->lock);
	json_object_put(arr);
	return list;
}

int gm_ftjobs_get(gm_ftjobs *j, const char *id, json_object **out, gm_error *err)
{
	struct ftjob *job;
	int ret = 0;

	pthread_mutex_lock(&j->lock);
	if (!(job = find_job(j, id)))
		ret = gm_error_set(err, GM_ENOENT, "no such fine-tuning job: %s", id);
	else
		*out = copy_of(job->obj);
	pthread_mutex_unlock(&j->lock);
	return ret;
}

int gm_ftjobs_events(gm_ftjobs *j, const char *id, const char *after, int limit, json_object **out, gm_error *err)
{
	struct ftjob *job;
	int ret = 0;

	pthread_mutex_lock(&j->lock);
	if (!(job = find_job(j, id)))
		ret = gm_error_set(err, GM_ENOENT, "no such fine-tuning job: %s", id);
	else
		*out = page(job->events, after, limit > 0 ? limit : 20);
	pthread_mutex_unlock(&j->lock);
	return ret;
}

int gm_ftjobs_checkpoints(gm_ftjobs *j, const char *id, const char *after, int limit, json_object **out,
			  gm_error *err)
{
	struct ftjob *job;
	json_object *cps;
	int ret = 0;

	pthread_mutex_lock(&j->lock);
	if (!(job = find_job(j, id))) {
		ret = gm_error_set(err, GM_ENOENT, "no such fine-tuning job: %s", id);
	} else {
		if (!json_object_object_get_ex(gm_part(job), "checkpoints", &cps))
			cps = NULL;
		if (cps)
			*out = page(cps, after, limit > 0 ? limit : 10);
		else {
			json_object *empty = json_object_new_array();
			*out = page(empty, NULL, 10);
			json_object_put(empty);
		}
	}
	pthread_mutex_unlock(&j->lock);
	return ret;
}

int gm_ftjobs_cancel(gm_ftjobs *j, const char *id, json_object **out, gm_error *err)
{
	struct ftjob *job;
	int ret = 0;

	pthread_mutex_lock(&j->lock);
	if (!(job = find_job(j, id))) {
		ret = gm_error_set(err, GM_ENOENT, "no such fine-tuning job: %s", id);
	} else if (job->st >= ST_SUCCEEDED) {
		ret = gm_error_set(err, GM_EINVAL, "job %s is %s already: only a job that has not finished can be "
				   "cancelled", id, status_names[job->st]);
	} else if (job->pid > 0) {
		/* git train checkpoints and exits 130; the runner then marks it cancelled */
		job->cancel = 1;
		kill(job->pid, SIGTERM);
		add_event(j, job, "info", "message", NULL, "Cancelling: the run stops after its current step");
	} else {
		job->cancel = 1;
		set_status(job, ST_CANCELLED);
		json_object_object_add(job->obj, "finished_at", json_object_new_int64((int64_t)time(NULL)));
		add_event(j, job, "info", "message", NULL, "Fine-tuning job cancelled");
		save_job(j, job);
	}
	if (!ret)
		*out = copy_of(job->obj);
	pthread_mutex_unlock(&j->lock);
	return ret;
}

/* ---------------------------------------------------------------- running a job */

/* git-train beside the running executable (an installation, the build tree's layout), else PATH's. */
static char *train_program(const gm_ftjobs *j)
{
	char self[PATH_MAX], *slash;
	ssize_t n;
	static const char *const rel[] = { "/git-train", "/../git-train/git-train" };
	size_t i;

	if (j->c.train_cmd)
		return gm_xstrdup(j->c.train_cmd);
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		if ((slash = strrchr(self, '/'))) {
			*slash = '\0';
			for (i = 0; i < 2; i++) {
				gm_buf b = GM_BUF_INIT;
				gm_buf_addf(&b, "%s%s", self, rel[i]);
				if (!access(b.buf, X_OK))
					return gm_buf_detach(&b, NULL);
				gm_buf_release(&b);
			}
		}
	}
	return gm_xstrdup("git-train");
}

struct argv_buf {
	char **v;
	size_t n;
};

static void arg(struct argv_buf *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void arg(struct argv_buf *a, const char *fmt, ...)
{
	gm_buf b = GM_BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	gm_buf_vaddf(&b, fmt, ap);
	va_end(ap);
	a->v = gm_xrealloc(a->v, (a->n + 2) * sizeof(*a->v));
	a->v[a->n++] = gm_buf_detach(&b, NULL);
	a->v[a->n] = NULL;
}

static void argv_free(struct argv_buf *a)
{
	size_t i;

	for (i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
}

/* Whether the run has a checkpoint to resume from (a train/NAME branch, or checkpoint-N in out_dir). */
static int has_checkpoint(gm_ftjobs *j, const struct ftjob *job, const char *out_dir)
{
	if (j->is_repo) {
		gm_repo *r;
		char hex[GM_REPO_OID_HEXLEN + 1];
		gm_buf br = GM_BUF_INIT;
		int found = 0;

		gm_buf_addf(&br, "refs/heads/train/%s", job->name);
		if (!gm_repo_open(j->c.model_dir, &r, NULL)) {
			found = !gm_repo_resolve(r, br.buf, hex, NULL);
			gm_repo_close(r);
		}
		gm_buf_release(&br);
		return found;
	} else {
		DIR *d = opendir(out_dir);
		struct dirent *de;
		int found = 0;

		while (d && (de = readdir(d)))
			if (!strncmp(de->d_name, "checkpoint-", 11))
				found = 1;
		if (d)
			closedir(d);
		return found;
	}
}

/* The command line of the job's run (under the lock: reads the job object). */
static void build_argv(gm_ftjobs *j, struct ftjob *job, const char *train_path, const char *valid_path,
		       const char *out_dir, int resume, int progress_fd, struct argv_buf *a)
{
	json_object *hp = json_object_object_get(job->obj, "hyperparameters"), *v, *opts;
	int has_lr = 0, has_ckpt = 0, has_steps = 0;
	size_t i;

	arg(a, "git-train");
	arg(a, "-m");
	arg(a, "%s", j->c.model_dir);
	arg(a, "--adapter");
	arg(a, "%s", job->name);
	arg(a, "--data");
	arg(a, "%s", train_path);
	if (valid_path) {
		arg(a, "--eval-data");
		arg(a, "%s", valid_path);
	}
	if (!j->is_repo) {
		arg(a, "--output");
		arg(a, "%s", out_dir);
		arg(a, "--no-commit");
	}
	arg(a, "--threads");
	arg(a, "%d", j->c.n_threads);
	arg(a, "--progress-fd");
	arg(a, "%d", progress_fd);
	arg(a, "-v");
	opts = json_object_object_get(gm_part(job), "options");
	if (opts) {
		json_object_object_foreach(opts, key, val) {
			for (i = 0; i < sizeof(vendor_opts) / sizeof(vendor_opts[0]); i++) {
				const struct vendor_opt *o = &vendor_opts[i];

				if (strcmp(o->key, key))
					continue;
				has_lr |= !strcmp(key, "learning_rate");
				has_ckpt |= !strcmp(key, "checkpoint_every");
				has_steps |= !strcmp(key, "steps");
				if (o->kind == 'b') {
					if (!strcmp(key, "shuffle"))
						arg(a, json_object_get_boolean(val) ? "--shuffle" : "--no-shuffle");
					else if (json_object_get_boolean(val))
						arg(a, "%s", o->flag);
				} else {
					arg(a, "%s", o->flag);
					if (json_object_is_type(val, json_type_int))
						arg(a, "%lld", (long long)json_object_get_int64(val));
					else if (json_object_is_type(val, json_type_double))
						arg(a, "%.17g", json_object_get_double(val));
					else
						arg(a, "%s", json_object_get_string(val));
				}
			}
		}
	}
	/* a resumed run takes its settings from its checkpoint (git train refuses others) */
	if (!resume) {
		if (hp && json_object_object_get_ex(hp, "n_epochs", &v) && !json_object_is_type(v, json_type_string) &&
		    !has_steps) {
			arg(a, "--epochs");
			arg(a, "%.17g", json_object_get_double(v));
		}
		if (hp && json_object_object_get_ex(hp, "batch_size", &v) && !json_object_is_type(v, json_type_string)) {
			arg(a, "--batch-size");
			arg(a, "%lld", (long long)json_object_get_int64(v));
		}
		if (hp && json_object_object_get_ex(hp, "learning_rate_multiplier", &v) &&
		    !json_object_is_type(v, json_type_string) && !has_lr) {
			arg(a, "--lr");
			arg(a, "%.17g", DEFAULT_LR * json_object_get_double(v));
		}
		arg(a, "--seed");
		arg(a, "%lld", (long long)int_of(job->obj, "seed", 0));
	}
	if (!has_ckpt && j->c.checkpoint_every > 0) {
		arg(a, "--checkpoint-every");
		arg(a, "%lld", (long long)j->c.checkpoint_every);
	}
	if (resume) {
		arg(a, "--resume");
		if (j->is_repo)
			arg(a, "train/%s", job->name);
		else
			arg(a, "%s", out_dir);
	}
}

/* Handles one --progress-fd line of the job's run (under the lock). */
static void on_progress(gm_ftjobs *j, struct ftjob *job, const char *line, int64_t *tokens)
{
	json_object *p = NULL, *d;
	const char *type;
	double loss, eval;
	int64_t step;

	if (gm_json_parse(line, strlen(line), "progress", &p, NULL) || !(type = str_of(p, "type"))) {
		json_object_put(p);
		return;
	}
	step = int_of(p, "step", 0);
	loss = json_object_object_get_ex(p, "loss", &d) && d ? json_object_get_double(d) : NAN;
	eval = json_object_object_get_ex(p, "eval_loss", &d) && d ? json_object_get_double(d) : NAN;
	if (!strcmp(type, "step")) {
		int64_t n_steps = int_of(p, "n_steps", 0);

		*tokens += int_of(p, "tokens", 0);
		d = json_object_new_object();
		json_object_object_add(d, "step", json_object_new_int64(step));
		json_object_object_add(d, "total_steps", json_object_new_int64(n_steps));
		json_object_object_add(d, "train_loss", gm_json_new_double(loss));
		json_object_object_add(d, "learning_rate", gm_json_new_double(json_object_get_double(
			json_object_object_get(p, "lr"))));
		add_event(j, job, "info", "metrics", d, "Step %lld/%lld: training loss=%.4f", (long long)step,
			  (long long)n_steps, loss);
		json_object_object_add(job->obj, "trained_tokens", json_object_new_int64(*tokens));
		json_object_object_add(gm_part(job), "steps", json_object_new_int64(step));
		json_object_object_add(gm_part(job), "n_steps", json_object_new_int64(n_steps));
	} else if (!strcmp(type, "eval")) {
		d = json_object_new_object();
		json_object_object_add(d, "step", json_object_new_int64(step));
		json_object_object_add(d, "valid_loss", gm_json_new_double(eval));
		add_event(j, job, "info", "metrics", d, "Step %lld: validation loss=%.4f", (long long)step, eval);
	} else if (!strcmp(type, "checkpoint")) {
		json_object *c = json_object_new_object(), *m = json_object_new_object(), *cps;
		char cid[64];
		gm_buf fm = GM_BUF_INIT;

		snprintf(cid, sizeof(cid), "ftckpt-%s-%lld", job->id + 6, (long long)step);
		gm_buf_addf(&fm, "%s:%s-step-%lld", j->c.model_id, job->name, (long long)step);
		json_object_object_add(c, "object", json_object_new_string("fine_tuning.job.checkpoint"));
		json_object_object_add(c, "id", json_object_new_string(cid));
		json_object_object_add(c, "created_at", json_object_new_int64((int64_t)time(NULL)));
		/* the checkpoint is a tag of the repository (NAME-step-N), not a served model */
		json_object_object_add(c, "fine_tuned_model_checkpoint", json_object_new_string(fm.buf));
		json_object_object_add(c, "step_number", json_object_new_int64(step));
		json_object_object_add(m, "step", json_object_new_int64(step));
		json_object_object_add(m, "train_loss", gm_json_new_double(loss));
		if (!isnan(eval))
			json_object_object_add(m, "valid_loss", gm_json_new_double(eval));
		json_object_object_add(c, "metrics", m);
		json_object_object_add(c, "fine_tuning_job_id", json_object_new_string(job->id));
		if (str_of(p, "commit") && *str_of(p, "commit"))
			json_object_object_add(c, "git_model", json_object_new_string(str_of(p, "commit")));
		cps = json_object_object_get(gm_part(job), "checkpoints");
		if (!cps) {
			cps = json_object_new_array();
			json_object_object_add(gm_part(job), "checkpoints", cps);
		}
		json_object_array_add(cps, c);
		add_event(j, job, "info", "message", NULL, "Checkpoint at step %lld%s%.12s", (long long)step,
			  str_of(p, "commit") && *str_of(p, "commit") ? ": commit " : "", str_of(p, "commit") ?: "");
		save_job(j, job);
		gm_buf_release(&fm);
	} else if (!strcmp(type, "done")) {
		json_object_object_add(gm_part(job), "final_loss", gm_json_new_double(loss));
		if (!isnan(eval))
			json_object_object_add(gm_part(job), "final_eval_loss", gm_json_new_double(eval));
		if (str_of(p, "commit") && *str_of(p, "commit"))
			json_object_object_add(gm_part(job), "commit", json_object_new_string(str_of(p, "commit")));
	}
	json_object_put(p);
}

/* The last non-empty line of the run's log: git train's "error: ..." when it failed. */
static char *last_log_line(gm_ftjobs *j, const struct ftjob *job)
{
	char *p = job_path(j, job->id, ".log"), *line = NULL, *s, *e;
	gm_buf b = GM_BUF_INIT;

	if (!gm_read_file(p, &b, NULL) && b.len) {
		e = b.buf + b.len;
		while (e > b.buf && (e[-1] == '\n' || e[-1] == '\r'))
			e--;
		for (s = e; s > b.buf && s[-1] != '\n'; s--)
			;
		line = strndup(s, (size_t)(e - s));
	}
	gm_buf_release(&b);
	free(p);
	return line ? line : gm_xstrdup("git train failed (no message)");
}

static void finish(gm_ftjobs *j, struct ftjob *job, enum status st, const char *code, const char *msg)
{
	set_status(job, st);
	json_object_object_add(job->obj, "finished_at", json_object_new_int64((int64_t)time(NULL)));
	if (code) {
		json_object *e = json_object_new_object();

		json_object_object_add(e, "code", json_object_new_string(code));
		json_object_object_add(e, "message", json_object_new_string(msg));
		json_object_object_add(e, "param", NULL);
		json_object_object_add(job->obj, "error", e);
	}
	save_job(j, job);
}

/* The adapter of a finished run: MODEL/adapters/NN_NAME, or the job's output directory. */
static char *result_dir(gm_ftjobs *j, const struct ftjob *job, const char *out_dir)
{
	gm_adapter_entry e;
	char *dir;

	if (!j->is_repo)
		return gm_xstrdup(out_dir);
	if (gm_adapter_find(j->c.model_dir, job->name, &e, NULL))
		return NULL;
	dir = gm_xstrdup(e.path);
	gm_adapter_entry_release(&e);
	return dir;
}

static void succeed(gm_ftjobs *j, struct ftjob *job, const char *dir)
{
	gm_buf fm = GM_BUF_INIT;

	/* servable first: a client that sees "succeeded" may use the model at once */
	pthread_mutex_unlock(&j->lock);
	if (j->c.on_success)
		j->c.on_success(j->c.ctx, job->name, dir);
	pthread_mutex_lock(&j->lock);
	gm_buf_addf(&fm, "%s:%s", j->c.model_id, job->name);
	json_object_object_add(job->obj, "fine_tuned_model", json_object_new_string(fm.buf));
	json_object_object_add(gm_part(job), "adapter_dir", json_object_new_string(dir));
	add_event(j, job, "info", "message", NULL, "The job has successfully completed: %s", fm.buf);
	finish(j, job, ST_SUCCEEDED, NULL, NULL);
	gm_buf_release(&fm);
}

/* Runs job to its end (or to the server's stop); called and returning with the lock held. */
static void run_job(gm_ftjobs *j, struct ftjob *job)
{
	gm_error err = GM_ERROR_INIT;
	char *train = NULL, *valid = NULL, *out_dir = job_path(j, job->id, ".adapter"), *prog = NULL, *logp = NULL;
	const char *vid = str_of(job->obj, "validation_file");
	struct argv_buf a = { NULL, 0 };
	int was_running = job->st == ST_RUNNING, resume, pfd[2], logfd, status = 0;
	int64_t tokens = int_of(job->obj, "trained_tokens", 0);
	gm_buf pending = GM_BUF_INIT;
	char *dir;
	pid_t pid;

	/* validating_files: the files must still be there */
	if (job->st == ST_VALIDATING || job->st == ST_QUEUED) {
		set_status(job, ST_VALIDATING);
		save_job(j, job);
	}
	if (gm_files_path(j->c.files, str_of(job->obj, "training_file"), &train, &err) ||
	    (vid && gm_files_path(j->c.files, vid, &valid, &err))) {
		add_event(j, job, "error", "message", NULL, "%s", err.msg);
		finish(j, job, ST_FAILED, "invalid_training_file", err.msg);
		goto out;
	}
	/* a run that had finished but was not recorded (the server was killed in between) */
	if (was_running) {
		char *cfg = gm_path_join(out_dir, "adapter_config.json");

		dir = j->is_repo ? result_dir(j, job, out_dir) : gm_is_file(cfg) ? gm_xstrdup(out_dir) : NULL;
		free(cfg);
		if (dir) {
			succeed(j, job, dir);
			free(dir);
			goto out;
		}
	}
	resume = was_running && has_checkpoint(j, job, out_dir);
	set_status(job, ST_RUNNING);
	add_event(j, job, "info", "message", NULL, resume ? "Fine-tuning job resumed from its last checkpoint"
		  : "Fine-tuning job started");
	save_job(j, job);

	if (pipe(pfd)) {
		finish(j, job, ST_FAILED, "server_error", "cannot create a pipe");
		goto out;
	}
	/* the child gets the pipe as descriptor 3, and nothing else of the server's */
	build_argv(j, job, train, valid, out_dir, resume, 3, &a);
	prog = train_program(j);
	logp = job_path(j, job->id, ".log");
	logfd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
	{
		/* what the child does between fork and exec is async-signal-safe only */
		pid_t parent = getpid();
		int nice_by = j->c.nice;

		pid = fork();
		if (pid == 0) {
			sigset_t none;

			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(127);
			sigemptyset(&none);
			sigprocmask(SIG_SETMASK, &none, NULL); /* git infer blocks SIGTERM in its threads */
			signal(SIGPIPE, SIG_DFL);
			if (nice_by > 0)
				setpriority(PRIO_PROCESS, 0, getpriority(PRIO_PROCESS, 0) + nice_by);
			if (logfd >= 0) {
				dup2(logfd, 1);
				dup2(logfd, 2);
			}
			if (pfd[1] != 3 && dup2(pfd[1], 3) < 0)
				_exit(127);
			/* the listening socket, the clients' connections, the model's mappings' fds */
			if (syscall(SYS_close_range, 4u, ~0u, 0u))
				for (int fd = 4; fd < 4096; fd++)
					close(fd);
			if (strchr(prog, '/'))
				execv(prog, a.v);
			else
				execvp(prog, a.v);
			_exit(127);
		}
	}
	close(pfd[1]);
	if (logfd >= 0)
		close(logfd);
	if (pid < 0) {
		close(pfd[0]);
		finish(j, job, ST_FAILED, "server_error", "cannot start git train");
		goto out;
	}
	job->pid = pid;
	if (j->stopping)
		kill(pid, SIGTERM);
	pthread_mutex_unlock(&j->lock);
	for (;;) {
		char buf[4096], *nl;
		ssize_t n = read(pfd[0], buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		gm_buf_add(&pending, buf, (size_t)n);
		pthread_mutex_lock(&j->lock);
		while ((nl = memchr(pending.buf, '\n', pending.len))) {
			size_t len = (size_t)(nl - pending.buf) + 1;

			*nl = '\0';
			on_progress(j, job, pending.buf, &tokens);
			memmove(pending.buf, pending.buf + len, pending.len - len);
			pending.len -= len;
			pending.buf[pending.len] = '\0';
		}
		pthread_mutex_unlock(&j->lock);
	}
	close(pfd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&j->lock);
	job->pid = 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		if ((dir = result_dir(j, job, out_dir))) {
			succeed(j, job, dir);
			free(dir);
		} else {
			finish(j, job, ST_FAILED, "server_error", "git train succeeded, but its adapter is not in the model");
		}
	} else if (job->cancel) {
		add_event(j, job, "info", "message", NULL, "Fine-tuning job cancelled");
		finish(j, job, ST_CANCELLED, NULL, NULL);
	} else if (j->stopping) {
		/* still "running": the next start resumes it from its checkpoint */
		add_event(j, job, "info", "message", NULL, "The server stopped: the job resumes when it starts again");
		save_job(j, job);
	} else {
		char *msg = last_log_line(j, job);

		add_event(j, job, "error", "message", NULL, "Fine-tuning job failed: %s", msg);
		finish(j, job, ST_FAILED, WIFEXITED(status) && WEXITSTATUS(status) == 127 ? "server_error"
		       : "training_failed", msg);
		free(msg);
	}
out:
	argv_free(&a);
	gm_buf_release(&pending);
	free(train);
	free(valid);
	free(out_dir);
	free(prog);
	free(logp);
}

static void *runner_main(void *arg)
{
	gm_ftjobs *j = arg;

	pthread_mutex_lock(&j->lock);
	while (!j->stopping) {
		struct ftjob *next = NULL;
		size_t i;

		/* a run interrupted by the last stop first, then the oldest waiting */
		for (i = 0; i < j->n_jobs && !next; i++)
			if (j->jobs[i]->st == ST_RUNNING)
				next = j->jobs[i];
		for (i = 0; i < j->n_jobs && !next; i++)
			if (j->jobs[i]->st == ST_VALIDATING || j->jobs[i]->st == ST_QUEUED)
				next = j->jobs[i];
		if (!next) {
			pthread_cond_wait(&j->cond, &j->lock);
			continue;
		}
		j->busy = 1;
		run_job(j, next);
		j->busy = 0;
		pthread_cond_broadcast(&j->cond);
	}
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

/* ---------------------------------------------------------------- open and stop */

static int by_created(const void *a, const void *b)
{
	const struct ftjob *x = *(struct ftjob *const *)a, *y = *(struct ftjob *const *)b;
	int64_t cx = int_of(x->obj, "created_at", 0), cy = int_of(y->obj, "created_at", 0);

	return cx != cy ? (cx < cy ? -1 : 1) : strcmp(x->id, y->id);
}

int gm_ftjobs_open(const gm_ftjobs_config *c, gm_ftjobs **out, gm_error *err)
{
	gm_ftjobs *j;
	DIR *d;
	struct dirent *de;
	int ret;

	*out = NULL;
	if ((ret = gm_mkdir_p(c->dir, 0777, err)))
		return ret;
	j = gm_xcalloc(1, sizeof(*j));
	j->lock_fd = -1;
	{
		/* two servers of one model would run each job twice */
		char *lp = gm_path_join(c->dir, ".lock");

		j->lock_fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
		if (j->lock_fd < 0 || flock(j->lock_fd, LOCK_EX | LOCK_NB)) {
			ret = j->lock_fd < 0 ? gm_error_errno(err, "cannot open %s", lp)
				: gm_error_set(err, GM_EINVAL, "another server runs the fine-tuning jobs of this model "
					       "(%s is locked): give this one --ft-dir, or --no-fine-tuning", c->dir);
			if (j->lock_fd >= 0)
				close(j->lock_fd);
			free(lp);
			free(j);
			return ret;
		}
		free(lp);
	}
	j->c = *c;
	j->c.dir = gm_xstrdup(c->dir);
	j->c.model_dir = gm_xstrdup(c->model_dir);
	j->c.model_id = gm_xstrdup(c->model_id);
	j->c.train_cmd = c->train_cmd ? gm_xstrdup(c->train_cmd) : NULL;
	if (j->c.n_threads < 1)
		j->c.n_threads = 1;
	j->is_repo = gm_repo_is_toplevel(c->model_dir);
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->cond, NULL);
	if ((d = opendir(c->dir))) {
		while ((de = readdir(d))) {
			size_t n = strlen(de->d_name);
			struct ftjob *job;
			char id[64];

			if (strncmp(de->d_name, "ftjob-", 6) || n < 6 + 5 || n >= sizeof(id) ||
			    strcmp(de->d_name + n - 5, ".json"))
				continue;
			memcpy(id, de->d_name, n - 5);
			id[n - 5] = '\0';
			if ((job = load_job(j, id))) {
				j->jobs = gm_xrealloc(j->jobs, (j->n_jobs + 1) * sizeof(*j->jobs));
				j->jobs[j->n_jobs++] = job;
			}
		}
		closedir(d);
	}
	if (j->n_jobs)
		qsort(j->jobs, j->n_jobs, sizeof(*j->jobs), by_created);
	if (pthread_create(&j->runner, NULL, runner_main, j)) {
		gm_ftjobs_free(j);
		return gm_error_set(err, GM_EIO, "cannot start the fine-tuning thread");
	}
	j->runner_started = 1;
	*out = j;
	return 0;
}

void gm_ftjobs_stop(gm_ftjobs *j)
{
	size_t i;

	if (!j || !j->runner_started)
		return;
	pthread_mutex_lock(&j->lock);
	j->stopping = 1;
	for (i = 0; i < j->n_jobs; i++)
		if (j->jobs[i]->pid > 0)
			kill(j->jobs[i]->pid, SIGTERM); /* it checkpoints after its step, and exits */
	pthread_cond_broadcast(&j->cond);
	/* the checkpoint is one step away; a step that takes too long is cut (the
	 * last checkpoint stays the place to resume from) */
	{
		struct timespec until;

		until = gm_deadline_ms(STOP_WAIT_S * 1000L);
		while (j->busy && pthread_cond_timedwait(&j->cond, &j->lock, &until) != ETIMEDOUT)
			;
		for (i = 0; j->busy && i < j->n_jobs; i++)
			if (j->jobs[i]->pid > 0)
				kill(j->jobs[i]->pid, SIGKILL);
	}
	pthread_mutex_unlock(&j->lock);
	pthread_join(j->runner, NULL);
	j->runner_started = 0;
}

void gm_ftjobs_free(gm_ftjobs *j)
{
	size_t i;

	if (!j)
		return;
	gm_ftjobs_stop(j);
	for (i = 0; i < j->n_jobs; i++)
		job_free(j->jobs[i]);
	free(j->jobs);
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->cond);
	free((char *)j->c.dir);
	free((char *)j->c.model_dir);
	free((char *)j->c.model_id);
	free((char *)j->c.train_cmd);
	if (j->lock_fd >= 0)
		close(j->lock_fd); /* the lock goes with it */
	free(j);
}
