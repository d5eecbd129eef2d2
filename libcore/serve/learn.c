/* learn.c - a server that keeps learning: examples in, versions out, commits (see learn.h). */
#include "serve/learn.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/log.h"
#include "manage/learnrepo.h"
#include "serve/adapterset.h"
#include "train/trainrun.h"

#define ROUTE "/v1/adapters"

struct gm_learn {
	gm_serve *srv;
	gm_adapter_set *set;
	char *name;
	int index;                 /* in the set */
	gm_online *o;
	gm_learnrepo *repo;        /* NULL: no commits (not a repository) */
	char *tmp;                 /* exports are written here, then opened */
	atomic_uint_least64_t commits; /* counted by the trainer's thread, read by GET /v1/adapters */
	uint64_t committed_examples; /* in the last commit (or the one resumed) */
	/* queueing and logging a batch are one step, and a commit (its state and its copy of the log) another:
	 * so a committed log holds every example its weights were trained on */
	pthread_mutex_t post_lock;
	int started;
};

void gm_learn_opts_init(gm_learn_opts *o)
{
	gm_online_opts_init(&o->online);
	o->commit_steps = 100;
	o->commit_seconds = 60;
}

/* ------------------------------------------------------------ the trainer's hooks */

static int publish(gm_learn *l, gm_error *err)
{
	gm_peft_adapter *lora;
	gm_sparse_adapter *sparse;
	int ret;

	if ((ret = gm_online_export(l->o, l->tmp, &lora, &sparse, err)))
		return ret;
	return gm_adapter_set_publish(l->set, l->index, lora, sparse, NULL, err);
}

static int on_step(void *ctx, gm_online *o, const gm_train_info *info, gm_error *err)
{
	(void)o;
	(void)info;
	return publish(ctx, err);
}

static int commit(gm_learn *l, gm_error *err)
{
	json_object *extra = json_object_new_object();
	const char *stage;
	gm_online_status st;
	char id[41];
	uint64_t n;
	int ret;

	if (!l->repo) {
		gm_online_mark_committed(l->o);
		json_object_put(extra);
		return 0;
	}
	gm_online_get_status(l->o, &st);
	json_object_object_add(extra, "version", json_object_new_int64((int64_t)gm_adapter_set_version(l->set,
												  l->index)));
	pthread_mutex_lock(&l->post_lock);
	if (!(stage = gm_learnrepo_stage(l->repo, err)))
		ret = err ? err->code : GM_EIO;
	else if (!(ret = gm_online_save(l->o, stage, extra, err)))
		ret = gm_learnrepo_commit(l->repo, st.steps, id, &n, err);
	pthread_mutex_unlock(&l->post_lock);
	if (!ret) {
		gm_online_mark_committed(l->o);
		atomic_fetch_add(&l->commits, 1);
		l->committed_examples = n;
		gm_info("learn: %s at step %lld, %llu examples: committed %.12s on %s", l->name, (long long)st.steps,
			(unsigned long long)n, id, gm_learnrepo_branch(l->repo));
	}
	json_object_put(extra);
	return ret;
}

static int on_commit(void *ctx, gm_online *o, gm_error *err)
{
	(void)o;
	return commit(ctx, err);
}

/* ------------------------------------------------------------ endpoints */

static json_object *adapter_json(gm_learn *l, int i)
{
	json_object *a = json_object_new_object();
	gm_adapter_version *v = gm_adapter_set_acquire(l->set, i);
	int learning = i == l->index;

	json_object_object_add(a, "id", json_object_new_string(gm_adapter_set_name(l->set, i)));
	json_object_object_add(a, "object", json_object_new_string("adapter"));
	json_object_object_add(a, "kind", json_object_new_string(gm_adapter_version_kind(v)));
	json_object_object_add(a, "version", json_object_new_int64((int64_t)gm_adapter_version_number(v)));
	json_object_object_add(a, "learning", json_object_new_boolean(learning));
	gm_adapter_version_release(v);
	if (learning) {
		gm_online_status st;
		json_object *recent = json_object_new_array();
		char last_commit[41] = "";
		int k;

		gm_online_get_status(l->o, &st);
		for (k = 0; k < st.n_recent; k++)
			json_object_array_add(recent, json_object_new_double(st.recent[k]));
#define NUM(x) (isnan(x) ? NULL : json_object_new_double(x))
		json_object_object_add(a, "steps", json_object_new_int64(st.steps));
		json_object_object_add(a, "examples_seen", json_object_new_int64((int64_t)st.examples_seen));
		json_object_object_add(a, "examples_done", json_object_new_int64((int64_t)st.examples_done));
		json_object_object_add(a, "examples_logged", json_object_new_int64(l->repo ?
			(int64_t)gm_learnrepo_examples(l->repo) : (int64_t)st.examples_seen));
		json_object_object_add(a, "pending", json_object_new_int64(st.pending));
		json_object_object_add(a, "loss", NUM(st.loss));
		json_object_object_add(a, "recent_loss", recent);
		json_object_object_add(a, "tokens", json_object_new_int64((int64_t)st.tokens));
		json_object_object_add(a, "train_seconds", json_object_new_double(st.train_seconds));
		json_object_object_add(a, "last_step_seconds", json_object_new_double(st.last_step_seconds));
		json_object_object_add(a, "update_latency_s", NUM(st.update_latency_s));
		json_object_object_add(a, "update_latency_mean_s", NUM(st.update_latency_mean_s));
		json_object_object_add(a, "sparse_density", json_object_new_double(gm_online_get_opts(l->o)->sparse));
		json_object_object_add(a, "steps_uncommitted", json_object_new_int64(st.steps_uncommitted));
		json_object_object_add(a, "commits", json_object_new_int64((int64_t)atomic_load(&l->commits)));
		json_object_object_add(a, "branch", l->repo ? json_object_new_string(gm_learnrepo_branch(l->repo))
				       : NULL);
		if (l->repo)
			gm_learnrepo_last_commit(l->repo, last_commit);
		json_object_object_add(a, "last_commit", *last_commit ? json_object_new_string(last_commit) : NULL);
#undef NUM
	}
	return a;
}

static void post_examples(gm_learn *l, const gm_serve_request *rq, gm_serve_reply *out)
{
	gm_error err = GM_ERROR_INIT;
	gm_online_batch *b;
	gm_online_status st;
	json_object *o;
	const char *jsonl;
	size_t len, n, cut;
	int ret;

	if ((ret = gm_online_parse(l->o, "body", rq->body, rq->len, &b, &err))) {
		gm_serve_reply_error(out, 400, "examples", "invalid_examples", "%s", err.msg);
		return;
	}
	n = gm_online_batch_count(b);
	cut = gm_online_batch_truncated(b);
	jsonl = gm_online_batch_jsonl(b, &len);
	/* queued, then logged (a copy of the lines: the batch goes to the trainer) */
	{
		char *copy = gm_xmalloc(len + 1);

		memcpy(copy, jsonl, len);
		pthread_mutex_lock(&l->post_lock);
		if ((ret = gm_online_add(l->o, b, &err))) {
			pthread_mutex_unlock(&l->post_lock);
			free(copy);
			if (ret == 1)
				gm_serve_reply_error(out, 429, NULL, "too_many_examples", "the trainer is %lld examples "
						     "behind (--learn-max-pending); retry later",
						     (long long)gm_online_get_opts(l->o)->max_pending);
			else
				gm_serve_reply_error(out, 500, NULL, "internal_error", "%s", err.msg);
			return;
		}
		ret = l->repo ? gm_learnrepo_append(l->repo, copy, len, n, &err) : 0;
		pthread_mutex_unlock(&l->post_lock);
		free(copy);
		if (ret) {
			gm_serve_reply_error(out, 500, NULL, "log_failed", "the examples are queued, but not logged: %s",
					     err.msg);
			return;
		}
	}
	gm_online_get_status(l->o, &st);
	o = json_object_new_object();
	json_object_object_add(o, "object", json_object_new_string("adapter.examples"));
	json_object_object_add(o, "adapter", json_object_new_string(l->name));
	json_object_object_add(o, "accepted", json_object_new_int64((int64_t)n));
	json_object_object_add(o, "truncated", json_object_new_int64((int64_t)cut));
	json_object_object_add(o, "examples_seen", json_object_new_int64((int64_t)st.examples_seen));
	json_object_object_add(o, "pending", json_object_new_int64(st.pending));
	json_object_object_add(o, "version", json_object_new_int64((int64_t)gm_adapter_set_version(l->set, l->index)));
	gm_serve_reply_json(out, 200, o);
}

static void route(void *ctx, const gm_serve_request *rq, gm_serve_reply *out)
{
	gm_learn *l = ctx;
	const char *rest = rq->url + strlen(ROUTE), *slash;
	int i, get = !strcmp(rq->method, "GET") || !strcmp(rq->method, "HEAD");
	size_t n;

	if (!*rest || !strcmp(rest, "/")) {
		json_object *list = json_object_new_array(), *o = json_object_new_object();

		if (!get) {
			json_object_put(list);
			json_object_put(o);
			gm_serve_reply_error(out, 405, NULL, "method_not_allowed", "%s %s: use GET", rq->method, rq->url);
			return;
		}
		for (i = 0; i < gm_adapter_set_count(l->set); i++)
			json_object_array_add(list, adapter_json(l, i));
		json_object_object_add(o, "object", json_object_new_string("list"));
		json_object_object_add(o, "data", list);
		gm_serve_reply_json(out, 200, o);
		return;
	}
	if (*rest != '/') {
		gm_serve_reply_error(out, 404, NULL, "not_found", "no such endpoint: %s %s", rq->method, rq->url);
		return;
	}
	rest++;
	slash = strchr(rest, '/');
	n = slash ? (size_t)(slash - rest) : strlen(rest);
	i = gm_adapter_set_find(l->set, rest, n);
	if (i < 0) {
		gm_serve_reply_error(out, 404, "adapter", "adapter_not_found", "no adapter '%.*s' is loaded (GET %s "
				     "lists them)", (int)n, rest, ROUTE);
		return;
	}
	if (!slash) {
		if (!get)
			gm_serve_reply_error(out, 405, NULL, "method_not_allowed", "%s %s: use GET", rq->method, rq->url);
		else
			gm_serve_reply_json(out, 200, adapter_json(l, i));
		return;
	}
	if (strcmp(slash, "/examples")) {
		gm_serve_reply_error(out, 404, NULL, "not_found", "no such endpoint: %s %s (POST %s/NAME/examples, GET "
				     "%s/NAME)", rq->method, rq->url, ROUTE, ROUTE);
		return;
	}
	if (strcmp(rq->method, "POST")) {
		gm_serve_reply_error(out, 405, NULL, "method_not_allowed", "%s %s: use POST", rq->method, rq->url);
		return;
	}
	if (i != l->index) {
		gm_serve_reply_error(out, 409, "adapter", "adapter_not_learning", "adapter '%s' is not learning: the "
				     "server learns '%s' (git infer --serve --learn NAME)", gm_adapter_set_name(l->set, i),
				     l->name);
		return;
	}
	post_examples(l, rq, out);
}

/* ------------------------------------------------------------ start, stop */

/* The version a committed state was served as (its trainer_state.json's "version"): the resumed run's first. */
static uint64_t committed_version(const char *state_dir)
{
	char *path = gm_path_join(state_dir, GM_TRAIN_STATE_FILE);
	json_object *st = NULL, *v;
	uint64_t n = 1;

	if (!gm_json_parse_file(path, &st, NULL) && json_object_object_get_ex(st, "version", &v) &&
	    json_object_is_type(v, json_type_int) && json_object_get_int64(v) >= 1)
		n = (uint64_t)json_object_get_int64(v);
	json_object_put(st);
	free(path);
	return n;
}

int gm_learn_start(gm_serve *s, const char *model_dir, const char *name, const gm_learn_opts *opts, gm_learn **out,
		   gm_error *err)
{
	gm_online_hooks h = { on_step, on_commit, NULL, 0, 0 };
	gm_peft_adapter *lora = NULL;
	gm_sparse_adapter *sparse = NULL;
	char tmpl[] = "/tmp/git-model-learn-XXXXXX", *state = NULL;
	const char *tmpdir = getenv("TMPDIR");
	gm_buf t = GM_BUF_INIT;
	uint64_t first = 1;
	gm_learn *l;
	int ret;

	*out = NULL;
	l = gm_xcalloc(1, sizeof(*l));
	l->srv = s;
	l->set = gm_serve_adapter_set(s);
	l->name = gm_xstrdup(name);
	l->index = -1;
	pthread_mutex_init(&l->post_lock, NULL);
	if (gm_adapter_set_find(l->set, name, strlen(name)) >= 0) {
		ret = gm_error_set(err, GM_EINVAL, "--learn %s: the model has an adapter of that name already; learn "
				   "under a new name (its state is then kept on train/%s)", name, name);
		goto fail;
	}
	ret = gm_learnrepo_open(model_dir, name, &l->repo, &state, err);
	if (ret == GM_ENOENT) {
		gm_warn("--learn %s: %s; learning without commits (nothing is kept)", name, err ? err->msg : model_dir);
		ret = 0;
	}
	if (ret)
		goto fail;
	if (l->repo)
		l->committed_examples = gm_learnrepo_examples(l->repo);
	if (state)
		first = committed_version(state);
	if (state)
		gm_info("learn: %s resumes from %s (%llu examples logged)", name, gm_learnrepo_branch(l->repo),
			(unsigned long long)gm_learnrepo_examples(l->repo));
	if ((ret = gm_online_new(gm_serve_model(s), gm_serve_tokenizer(s), &opts->online, state, &l->o, err)))
		goto fail;
	gm_buf_addf(&t, "%s/git-model-learn-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
	if (!mkdtemp(t.buf)) {
		ret = gm_error_errno(err, "cannot make a temporary directory like %s", tmpl);
		goto fail;
	}
	l->tmp = gm_buf_detach(&t, NULL);
	/* version 1: the state resumed, or the fresh LoRA (the base model's answers) */
	if ((ret = gm_online_export(l->o, l->tmp, &lora, &sparse, err)) ||
	    (ret = gm_serve_add_adapter_weights(s, name, lora, sparse, first, &l->index, err)))
		goto fail;
	if ((ret = gm_serve_route(s, ROUTE, route, l, err)))
		goto fail;
	h.ctx = l;
	h.commit_steps = opts->commit_steps;
	h.commit_seconds = opts->commit_seconds;
	if ((ret = gm_online_start(l->o, &h, err)))
		goto fail;
	l->started = 1;
	free(state);
	*out = l;
	return 0;
fail:
	gm_buf_release(&t);
	free(state);
	gm_learn_free(l);
	return ret;
}

int gm_learn_stop(gm_learn *l, gm_error *err)
{
	gm_online_status st;

	if (!l || !l->started)
		return 0;
	l->started = 0;
	gm_online_stop(l->o);
	gm_online_get_status(l->o, &st);
	if (st.steps_uncommitted || (l->repo && gm_learnrepo_examples(l->repo) != l->committed_examples))
		return commit(l, err);
	return 0;
}

void gm_learn_free(gm_learn *l)
{
	if (!l)
		return;
	gm_online_free(l->o);
	gm_learnrepo_close(l->repo);
	if (l->tmp)
		gm_remove_tree(l->tmp, NULL);
	free(l->tmp);
	free(l->name);
	pthread_mutex_destroy(&l->post_lock);
	free(l);
}
