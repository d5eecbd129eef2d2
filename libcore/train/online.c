/* online.c - a LoRA trained in the background from examples as they come (see online.h). */
#include "train/online.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/log.h"
#include "train/traindata.h"
#include "train/trainrun.h"
#include "train/trainset.h"

/* One example owed passes. */
struct item {
	gm_trainset_example e;
	int remaining;            /* passes still owed */
	int trained;              /* in a step already (its update latency is counted) */
	double t_added;
};

struct gm_online_batch {
	struct item *v;
	size_t n;
	size_t truncated;
	gm_buf jsonl;
};

struct gm_online {
	const gm_model *m;
	const gm_tokenizer *tok;
	gm_online_opts opts;
	gm_lora *lora;
	gm_train *t;
	gm_trainset_encoder *enc;    /* under lock (it keeps a chat template) */
	uint64_t n_exports;

	pthread_mutex_t lock;
	pthread_cond_t cond;         /* work, stop, or idle */
	struct item *items;          /* [n_items] owed passes, in arrival order */
	size_t n_items, cap_items;
	int stop, running, busy;     /* busy: a step (and its hooks) in progress */
	pthread_t thread;
	gm_online_hooks hooks;
	gm_online_status st;
	double latency_sum;
	uint64_t latency_n;
	double t_first_uncommitted;  /* when the oldest step not committed ended; 0: none */
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void gm_online_opts_init(gm_online_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->rank = 8;
	o->alpha = 16;
	o->targets = (1u << GM_PEFT_Q_PROJ) | (1u << GM_PEFT_V_PROJ);
	o->lr = 1e-3;
	o->grad_clip = 1;
	o->batch = 4;
	o->epochs = 4;
	o->max_len = 512;
	o->n_threads = 1;
	o->share = 1;
	o->max_pending = 4096;
	o->max_examples = 1024;
}

const gm_online_opts *gm_online_get_opts(const gm_online *o)
{
	return &o->opts;
}

static int check_opts(const gm_online_opts *o, gm_error *err)
{
	if (o->rank < 1 || !(o->alpha > 0) || !o->targets)
		return gm_error_set(err, GM_EINVAL, "the LoRA needs a rank >= 1, an alpha > 0 and a projection");
	if (!(o->lr > 0) || !isfinite(o->lr))
		return gm_error_set(err, GM_EINVAL, "the learning rate must be > 0");
	if (o->batch < 1 || o->epochs < 1 || o->max_len < 2 || o->n_threads < 1 || o->max_pending < 1 ||
	    o->max_examples < 1)
		return gm_error_set(err, GM_EINVAL, "batch, epochs, threads and the limits must be >= 1, the "
				    "longest sequence >= 2 tokens");
	if (!(o->share > 0 && o->share <= 1))
		return gm_error_set(err, GM_EINVAL, "the trainer's share of the time must be in (0, 1], not %g",
				    o->share);
	if (!(o->sparse >= 0 && o->sparse <= 1))
		return gm_error_set(err, GM_EINVAL, "the sparse density must be in (0, 1], not %g", o->sparse);
	return 0;
}

int gm_online_new(const gm_model *m, const gm_tokenizer *tok, const gm_online_opts *opts, const char *init_dir,
		  gm_online **out, gm_error *err)
{
	gm_train_opts to;
	gm_online *o;
	int ret;

	*out = NULL;
	if ((ret = check_opts(opts, err)))
		return ret;
	o = gm_xcalloc(1, sizeof(*o));
	o->m = m;
	o->tok = tok;
	o->opts = *opts;
	pthread_mutex_init(&o->lock, NULL);
	pthread_cond_init(&o->cond, NULL);
	o->st.loss = NAN;
	o->st.update_latency_s = NAN;
	o->st.update_latency_mean_s = NAN;
	if (init_dir) {
		gm_peft_adapter *ad = NULL;

		if (!(ret = gm_peft_open(init_dir, &ad, err)))
			ret = gm_lora_from_peft(m, ad, &o->lora, err);
		gm_peft_close(ad);
	} else {
		ret = gm_lora_init(m, opts->rank, opts->alpha, 0, opts->targets, opts->seed, &o->lora, err);
	}
	if (ret)
		goto fail;
	memset(&to, 0, sizeof(to));
	to.lr = opts->lr;
	to.schedule = GM_SCHEDULE_CONSTANT;
	to.n_steps = INT64_C(1) << 40;
	to.weight_decay = opts->weight_decay;
	to.grad_clip = opts->grad_clip;
	to.max_len = opts->max_len;
	to.n_threads = opts->n_threads;
	if ((ret = gm_train_new(m, o->lora, &to, &o->t, err)))
		goto fail;
	if (init_dir) {
		char *opt = gm_path_join(init_dir, "optimizer.safetensors");

		if (gm_is_file(opt))
			ret = gm_train_load_state(o->t, init_dir, err);
		free(opt);
		if (ret)
			goto fail;
	}
	o->st.steps = gm_train_steps_done(o->t);
	if ((ret = gm_trainset_encoder_new(m, tok, opts->max_len, &o->enc, err)))
		goto fail;
	*out = o;
	return 0;
fail:
	gm_online_free(o);
	return ret;
}

static void items_free(struct item *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(v[i].e.ids);
		free(v[i].e.mask);
	}
}

void gm_online_free(gm_online *o)
{
	if (!o)
		return;
	gm_online_stop(o);
	items_free(o->items, o->n_items);
	free(o->items);
	gm_trainset_encoder_free(o->enc);
	gm_train_free(o->t);
	gm_lora_free(o->lora);
	pthread_mutex_destroy(&o->lock);
	pthread_cond_destroy(&o->cond);
	free(o);
}

/* ------------------------------------------------------------ examples */

size_t gm_online_batch_count(const gm_online_batch *b) { return b->n; }
size_t gm_online_batch_truncated(const gm_online_batch *b) { return b->truncated; }

const char *gm_online_batch_jsonl(const gm_online_batch *b, size_t *len)
{
	*len = b->jsonl.len;
	return b->jsonl.buf ? b->jsonl.buf : "";
}

void gm_online_batch_free(gm_online_batch *b)
{
	if (!b)
		return;
	items_free(b->v, b->n);
	free(b->v);
	gm_buf_release(&b->jsonl);
	free(b);
}

static const char *compact(json_object *o)
{
	return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/*
 * The example's weight (1 when absent), removed from obj; 0 or a reason
 * in why.
 */
static int take_weight(json_object *obj, double *w, char *why, size_t n)
{
	json_object *v;

	*w = 1;
	if (!json_object_is_type(obj, json_type_object) || !json_object_object_get_ex(obj, "weight", &v))
		return 0;
	if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int)) {
		snprintf(why, n, "'weight' must be a number, not %s", json_type_to_name(json_object_get_type(v)));
		return -1;
	}
	*w = json_object_get_double(v);
	if (!(*w > 0 && *w <= GM_ONLINE_MAX_WEIGHT)) {
		snprintf(why, n, "'weight' must be in (0, %g], not %s", GM_ONLINE_MAX_WEIGHT, compact(v));
		return -1;
	}
	json_object_object_del(obj, "weight");
	return 0;
}

/* A JSON value parsed from the whole of data[0..len); NULL when it is not one value. */
static json_object *parse_whole(const char *data, size_t len)
{
	json_tokener *tok = json_tokener_new();
	json_object *o;
	size_t end;

	if (!tok || len > INT32_MAX - 1) {
		json_tokener_free(tok);
		return NULL;
	}
	o = json_tokener_parse_ex(tok, data, (int)len);
	if (json_tokener_get_error(tok) != json_tokener_success) {
		json_object_put(o);
		o = NULL;
	}
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	for (; o && end < len; end++)
		if (data[end] != ' ' && data[end] != '\t' && data[end] != '\r' && data[end] != '\n') {
			json_object_put(o);
			o = NULL;
		}
	return o;
}

/*
 * The examples' lines without their weights (validated: the reader's
 * input), their weights, and the log's lines (with them).  Lines keep
 * their numbers: a blank line stays blank, a line that is not a JSON
 * object goes to the reader as it is, which says what is wrong with it.
 */
struct prepared {
	gm_buf lines, log;
	double *w;                /* by line number - 1 */
	size_t n_lines;
};

static int prepare_line(struct prepared *p, const char *name, int array, const char *line, size_t len,
			gm_error *err)
{
	json_object *obj;
	char why[256];
	double w = 1;

	p->w = gm_xrealloc(p->w, (p->n_lines + 1) * sizeof(*p->w));
	obj = parse_whole(line, len);
	if (obj && json_object_is_type(obj, json_type_object)) {
		if (take_weight(obj, &w, why, sizeof(why))) {
			json_object_put(obj);
			if (array)
				return gm_error_set(err, GM_EFORMAT, "%s[%zu]: %s", name, p->n_lines, why);
			return gm_error_set(err, GM_EFORMAT, "%s:%zu: %s", name, p->n_lines + 1, why);
		}
		gm_buf_adds(&p->lines, compact(obj));
		if (w != 1)
			json_object_object_add(obj, "weight", json_object_new_double(w));
		gm_buf_adds(&p->log, compact(obj));
		gm_buf_addch(&p->log, '\n');
	} else {
		gm_buf_add(&p->lines, line, len);
	}
	json_object_put(obj);
	gm_buf_addch(&p->lines, '\n');
	p->w[p->n_lines++] = w;
	return 0;
}

static int prepare(gm_online *o, const char *name, const char *data, size_t len, struct prepared *p, int *array,
		   gm_error *err)
{
	json_object *whole = NULL, *list;
	size_t i, n;
	int ret = 0;

	memset(p, 0, sizeof(*p));
	gm_buf_init(&p->lines);
	gm_buf_init(&p->log);
	*array = 0;
	for (i = 0; i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'); i++)
		;
	if (i < len && data[i] == '{')
		whole = parse_whole(data, len);
	if (whole && json_object_is_type(whole, json_type_object) && json_object_object_get_ex(whole, "examples",
											   &list)) {
		*array = 1;
		if (json_object_object_length(whole) != 1 || !json_object_is_type(list, json_type_array)) {
			json_object_put(whole);
			return gm_error_set(err, GM_EFORMAT, "expected {\"examples\": [...]} and nothing else, or "
					    "JSONL (one example a line)");
		}
		n = json_object_array_length(list);
		if (n > (size_t)o->opts.max_examples)
			ret = gm_error_set(err, GM_EINVAL, "%zu examples in one request; at most %lld", n,
					   (long long)o->opts.max_examples);
		for (i = 0; i < n && !ret; i++) {
			const char *s = compact(json_object_array_get_idx(list, i));

			ret = prepare_line(p, "examples", 1, s, strlen(s), err);
		}
		json_object_put(whole);
		return ret;
	}
	json_object_put(whole);
	/* JSONL: line by line, a final line without its newline included */
	while (len && !ret) {
		const char *nl = memchr(data, '\n', len);
		size_t l = nl ? (size_t)(nl - data) : len;

		ret = prepare_line(p, name, 0, data, l && data[l - 1] == '\r' ? l - 1 : l, err);
		data += nl ? l + 1 : l;
		len -= nl ? l + 1 : l;
		if (!ret && p->n_lines > (size_t)o->opts.max_examples * 4 + 1024)
			ret = gm_error_set(err, GM_EINVAL, "%s: too many lines in one request", name);
	}
	return ret;
}

/* "examples:4: reason" (the reader's, lines from 1) -> "examples[3]: reason". */
static void array_error(gm_error *err)
{
	char head[32];
	unsigned long line;
	size_t h, rest;
	int off = 0;

	if (!err || sscanf(err->msg, "examples:%lu: %n", &line, &off) < 1 || !off || !line)
		return;
	h = (size_t)snprintf(head, sizeof(head), "examples[%lu]: ", line - 1);
	rest = strlen(err->msg + off);
	if (h + rest >= sizeof(err->msg))
		rest = sizeof(err->msg) - 1 - h;
	memmove(err->msg + h, err->msg + off, rest);
	memcpy(err->msg, head, h);
	err->msg[h + rest] = '\0';
}

int gm_online_parse(gm_online *o, const char *name, const char *data, size_t len, gm_online_batch **out,
		    gm_error *err)
{
	struct prepared p;
	gm_td_reader *r = NULL;
	gm_online_batch *b;
	int array, ret;

	*out = NULL;
	if ((ret = prepare(o, name, data, len, &p, &array, err)))
		goto done;
	if ((ret = gm_td_open_mem(array ? "examples" : name, p.lines.buf ? p.lines.buf : "", p.lines.len, 0, &r,
				  err)))
		goto done;
	b = gm_xcalloc(1, sizeof(*b));
	gm_buf_init(&b->jsonl);
	pthread_mutex_lock(&o->lock); /* the encoder's chat template */
	for (;;) {
		gm_td_example ex;
		struct item *it;
		int cut = 0;

		if ((ret = gm_td_next(r, &ex, err)) <= 0)
			break;
		b->v = gm_xrealloc(b->v, (b->n + 1) * sizeof(*b->v));
		it = &b->v[b->n];
		memset(it, 0, sizeof(*it));
		if ((ret = gm_trainset_encode(o->enc, &ex, &it->e, &cut, err))) {
			gm_error_prefix(err, "%s:%lu", array ? "examples" : name, ex.line);
			break;
		}
		it->remaining = (int)lround(o->opts.epochs * p.w[ex.line - 1]);
		if (it->remaining < 1)
			it->remaining = 1;
		b->truncated += (size_t)cut;
		b->n++;
	}
	pthread_mutex_unlock(&o->lock);
	if (array && ret)
		array_error(err);
	if (!ret && !b->n)
		ret = gm_error_set(err, GM_EINVAL, "no examples: send {\"examples\": [...]} or JSONL, each example "
				   "one of {\"text\"}, {\"messages\"}, {\"prompt\", \"completion\"}, {\"input_ids\"}");
	if (ret) {
		gm_online_batch_free(b);
	} else {
		gm_buf_add(&b->jsonl, p.log.buf ? p.log.buf : "", p.log.len);
		*out = b;
	}
done:
	gm_td_close(r);
	gm_buf_release(&p.lines);
	gm_buf_release(&p.log);
	free(p.w);
	return ret;
}

int gm_online_add(gm_online *o, gm_online_batch *b, gm_error *err)
{
	double t = now_s();
	size_t i;

	(void)err;
	pthread_mutex_lock(&o->lock);
	if ((int64_t)(o->n_items + b->n) > o->opts.max_pending) {
		pthread_mutex_unlock(&o->lock);
		gm_online_batch_free(b);
		return 1;
	}
	if (o->n_items + b->n > o->cap_items) {
		o->cap_items = (o->n_items + b->n) * 2;
		o->items = gm_xrealloc(o->items, o->cap_items * sizeof(*o->items));
	}
	for (i = 0; i < b->n; i++) {
		b->v[i].t_added = t;
		o->items[o->n_items++] = b->v[i];
	}
	o->st.examples_seen += b->n;
	o->st.pending = (int64_t)o->n_items;
	b->n = 0; /* the items are the trainer's now */
	pthread_cond_broadcast(&o->cond);
	pthread_mutex_unlock(&o->lock);
	gm_online_batch_free(b);
	return 0;
}

/* ------------------------------------------------------------ the trainer thread */

static void cond_wait_s(gm_online *o, double seconds)
{
	/* bounded (an hour) so that no duration overflows; the waits here are short */
	struct timespec ts = gm_deadline_ms(seconds > 0 ? (long)(fmin(seconds, 3600.0) * 1000.0 + 0.5) : 0);

	pthread_cond_timedwait(&o->cond, &o->lock, &ts);
}

static int commit_due(gm_online *o, double t)
{
	const gm_online_hooks *h = &o->hooks;

	if (!h->on_commit || !o->st.steps_uncommitted)
		return 0;
	return (h->commit_steps > 0 && o->st.steps_uncommitted >= h->commit_steps) ||
	       (h->commit_seconds > 0 && t - o->t_first_uncommitted >= h->commit_seconds);
}

static void *trainer_main(void *arg)
{
	gm_online *o = arg;
	gm_train_seq *seqs = gm_xcalloc((size_t)o->opts.batch, sizeof(*seqs));
	size_t *picked = gm_xcalloc((size_t)o->opts.batch, sizeof(*picked));

	pthread_mutex_lock(&o->lock);
	while (!o->stop) {
		gm_error err = GM_ERROR_INIT;
		gm_train_info info;
		double t0, t1, wait;
		size_t i, k, n = 0;
		int ret;

		if (commit_due(o, now_s())) {
			o->busy = 1;
			pthread_mutex_unlock(&o->lock);
			ret = o->hooks.on_commit(o->hooks.ctx, o, &err);
			pthread_mutex_lock(&o->lock);
			o->busy = 0;
			if (ret) {
				gm_warn("online learning: the commit failed (retried later): %s", err.msg);
				o->t_first_uncommitted = now_s(); /* not at once again */
			}
			continue;
		}
		if (!o->n_items) {
			pthread_cond_broadcast(&o->cond); /* idle: gm_online_wait_idle */
			wait = 1;
			if (o->st.steps_uncommitted && o->hooks.commit_seconds > 0)
				wait = fmax(0.01, fmin(wait, o->t_first_uncommitted + o->hooks.commit_seconds - now_s()));
			cond_wait_s(o, wait);
			continue;
		}
		/* the first batch examples owed a pass, in arrival order */
		for (i = 0; i < o->n_items && n < (size_t)o->opts.batch; i++) {
			seqs[n].ids = o->items[i].e.ids;
			seqs[n].mask = o->items[i].e.mask;
			seqs[n].n = o->items[i].e.n;
			picked[n++] = i;
		}
		o->busy = 1;
		pthread_mutex_unlock(&o->lock);

		/* the items picked stay where they are: only this thread removes items */
		t0 = now_s();
		ret = gm_train_step(o->t, seqs, (int)n, &info, &err);
		t1 = now_s();
		if (ret) {
			gm_warn("online learning: a step failed, its examples are dropped: %s", err.msg);
		} else if (o->hooks.on_step && o->hooks.on_step(o->hooks.ctx, o, &info, &err)) {
			gm_warn("online learning: step %lld: %s", (long long)info.step, err.msg);
		}

		pthread_mutex_lock(&o->lock);
		if (!ret) {
			double t2 = now_s();

			o->st.steps = gm_train_steps_done(o->t);
			if (!o->st.steps_uncommitted++)
				o->t_first_uncommitted = t2;
			o->st.passes += n;
			o->st.tokens += (uint64_t)info.tokens;
			o->st.loss = info.loss;
			if (o->st.n_recent == GM_ONLINE_RECENT) {
				memmove(o->st.recent, o->st.recent + 1, (GM_ONLINE_RECENT - 1) * sizeof(double));
				o->st.n_recent--;
			}
			o->st.recent[o->st.n_recent++] = info.loss;
			o->st.train_seconds += t1 - t0;
			o->st.last_step_seconds = t1 - t0;
			for (k = 0; k < n; k++) {
				struct item *it = &o->items[picked[k]];

				if (!it->trained) {
					it->trained = 1;
					o->st.update_latency_s = t2 - it->t_added;
					o->latency_sum += t2 - it->t_added;
					o->latency_n++;
					o->st.update_latency_mean_s = o->latency_sum / (double)o->latency_n;
				}
			}
		}
		/* passes owed: one fewer each (a failed step drops its examples) */
		for (k = 0; k < n; k++) {
			struct item *it = &o->items[picked[k]];

			it->remaining = ret ? 0 : it->remaining - 1;
		}
		for (i = k = 0; i < o->n_items; i++) {
			if (o->items[i].remaining > 0) {
				o->items[k++] = o->items[i];
			} else {
				items_free(&o->items[i], 1);
				o->st.examples_done++;
			}
		}
		o->n_items = k;
		o->st.pending = (int64_t)k;
		o->busy = 0;
		pthread_cond_broadcast(&o->cond);
		/* a share of the time: rest (t1 - t0) (1 - share) / share */
		if (o->opts.share < 1 && !o->stop)
			cond_wait_s(o, (t1 - t0) * (1 - o->opts.share) / o->opts.share);
	}
	o->running = 0;
	pthread_cond_broadcast(&o->cond);
	pthread_mutex_unlock(&o->lock);
	free(seqs);
	free(picked);
	return NULL;
}

int gm_online_start(gm_online *o, const gm_online_hooks *h, gm_error *err)
{
	pthread_mutex_lock(&o->lock);
	if (o->running) {
		pthread_mutex_unlock(&o->lock);
		return gm_error_set(err, GM_EINVAL, "the trainer runs already");
	}
	o->hooks = *h;
	o->stop = 0;
	o->running = 1;
	if (pthread_create(&o->thread, NULL, trainer_main, o)) {
		o->running = 0;
		pthread_mutex_unlock(&o->lock);
		return gm_error_set(err, GM_EIO, "cannot start the trainer thread");
	}
	pthread_mutex_unlock(&o->lock);
	return 0;
}

void gm_online_stop(gm_online *o)
{
	pthread_mutex_lock(&o->lock);
	if (!o->running && !o->thread) {
		pthread_mutex_unlock(&o->lock);
		return;
	}
	o->stop = 1;
	pthread_cond_broadcast(&o->cond);
	pthread_mutex_unlock(&o->lock);
	if (o->thread) {
		pthread_join(o->thread, NULL);
		o->thread = 0;
	}
}

int gm_online_wait_idle(gm_online *o, double timeout_s)
{
	double until = now_s() + timeout_s;
	int idle;

	pthread_mutex_lock(&o->lock);
	while (!(idle = !o->n_items && !o->busy) && o->running && now_s() < until)
		cond_wait_s(o, fmin(0.1, until - now_s()));
	pthread_mutex_unlock(&o->lock);
	return idle ? 0 : 1;
}

void gm_online_mark_committed(gm_online *o)
{
	pthread_mutex_lock(&o->lock);
	o->st.steps_uncommitted = 0;
	o->t_first_uncommitted = 0;
	pthread_mutex_unlock(&o->lock);
}

void gm_online_get_status(gm_online *o, gm_online_status *st)
{
	pthread_mutex_lock(&o->lock);
	*st = o->st;
	pthread_mutex_unlock(&o->lock);
}

/* ------------------------------------------------------------ versions and state */

int gm_online_export(gm_online *o, const char *tmp_root, gm_peft_adapter **lora, gm_sparse_adapter **sparse,
		     gm_error *err)
{
	gm_buf dir = GM_BUF_INIT, sdir = GM_BUF_INIT;
	gm_peft_adapter *ad = NULL;
	int ret;

	*lora = NULL;
	*sparse = NULL;
	gm_buf_addf(&dir, "%s/export-%d-%llu", tmp_root, (int)getpid(), (unsigned long long)++o->n_exports);
	gm_buf_addf(&sdir, "%s.sparse", dir.buf);
	gm_remove_tree(dir.buf, NULL);
	gm_remove_tree(sdir.buf, NULL);
	if ((ret = gm_mkdir_p(tmp_root, 0777, err)) || (ret = gm_lora_save(o->lora, dir.buf, err)) ||
	    (ret = gm_peft_open(dir.buf, &ad, err)))
		goto out;
	if (o->opts.sparse > 0) {
		/* keeping the largest entries of each module's delta; the LoRA itself goes */
		ret = gm_sparse_sparsify(ad, o->opts.sparse, sdir.buf, NULL, err);
		if (!ret)
			ret = gm_sparse_open(sdir.buf, sparse, err);
		gm_peft_close(ad);
		ad = NULL;
	}
	*lora = ad;
out:
	/* opened: the weights stay mapped (or copied) after their files go */
	gm_remove_tree(dir.buf, NULL);
	gm_remove_tree(sdir.buf, NULL);
	gm_buf_release(&dir);
	gm_buf_release(&sdir);
	return ret;
}

int gm_online_save(gm_online *o, const char *dir, json_object *extra, gm_error *err)
{
	json_object *st = json_object_new_object(), *on = json_object_new_object();
	gm_online_status s;
	char *path;
	int ret;

	gm_online_get_status(o, &s);
	if ((ret = gm_mkdir_p(dir, 0777, err)) || (ret = gm_lora_save(o->lora, dir, err)) ||
	    (ret = gm_train_save_state(o->t, dir, err))) {
		json_object_put(st);
		json_object_put(on);
		return ret;
	}
	json_object_object_add(st, "step", json_object_new_int64(gm_train_steps_done(o->t)));
	json_object_object_add(st, "loss", isnan(s.loss) ? NULL : json_object_new_double(s.loss));
	json_object_object_add(on, "lr", json_object_new_double(o->opts.lr));
	json_object_object_add(on, "batch", json_object_new_int(o->opts.batch));
	json_object_object_add(on, "epochs", json_object_new_int(o->opts.epochs));
	json_object_object_add(on, "max_len", json_object_new_int64(o->opts.max_len));
	json_object_object_add(on, "sparse", json_object_new_double(o->opts.sparse));
	json_object_object_add(st, "online", on);
	if (extra) {
		json_object_object_foreach(extra, k, v)
			json_object_object_add(st, k, json_object_get(v));
	}
	path = gm_path_join(dir, GM_TRAIN_STATE_FILE);
	ret = gm_json_write_file(path, st, err);
	free(path);
	json_object_put(st);
	return ret;
}
