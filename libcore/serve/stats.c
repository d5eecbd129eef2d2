/* stats.c - the live numbers of a server (see stats.h). */
#include "serve/stats.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "base/clock.h"
#include "base/json.h"

#define N_OBS 4096                  /* latency observations kept per kind (the most recent) */

/* A sample and what was derived from it when it was taken. */
struct point {
	gm_stats_sample x;
	double prompt_per_s, completion_per_s, cached_per_s; /* since the sample before */
	double pct[GM_STATS_N_KINDS][3];  /* p50 p90 p99 over GM_STATS_CHART_WINDOW_S; NAN: none */
};

struct obs {
	double t, v;
};

struct adapter_stats {
	char *name, *kind;
	uint64_t requests, completion_tokens;
};

struct gm_stats {
	gm_stats_info info;
	double t0;                  /* when made: uptime */
	int64_t t0_unix;

	pthread_mutex_t lock;
	pthread_cond_t cond;        /* a new sample, or stopped */
	pthread_t thread;
	int started, stopped;
	gm_stats_fill_fn fill;
	void *ctx;

	struct point ring[GM_STATS_HISTORY];
	uint64_t seq;               /* samples taken; the latest is ring[(seq - 1) % GM_STATS_HISTORY] */

	struct obs obs[GM_STATS_N_KINDS][N_OBS];
	uint64_t n_obs[GM_STATS_N_KINDS]; /* observed in all; the ring holds the last N_OBS */
	double obs_sum[GM_STATS_N_KINDS];

	struct adapter_stats *adapters;
	int n_adapters;
	uint64_t finished;          /* generation requests */
	int streams;
};

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int gm_stats_new(const gm_stats_info *info, gm_stats **out, gm_error *err)
{
	gm_stats *st = gm_xcalloc(1, sizeof(*st));

	(void)err;
	st->info = *info;
	st->info.model = gm_xstrdup(info->model ? info->model : "");
	st->info.kv_type = gm_xstrdup(info->kv_type ? info->kv_type : "");
	st->t0 = mono_s();
	st->t0_unix = (int64_t)time(NULL);
	pthread_mutex_init(&st->lock, NULL);
	pthread_cond_init(&st->cond, NULL);
	*out = st;
	return 0;
}

void gm_stats_free(gm_stats *st)
{
	int i;

	if (!st)
		return;
	gm_stats_stop(st);
	for (i = 0; i < st->n_adapters; i++) {
		free(st->adapters[i].name);
		free(st->adapters[i].kind);
	}
	free(st->adapters);
	free((char *)st->info.model);
	free((char *)st->info.kv_type);
	pthread_mutex_destroy(&st->lock);
	pthread_cond_destroy(&st->cond);
	free(st);
}

void gm_stats_add_adapter(gm_stats *st, const char *name, const char *kind)
{
	struct adapter_stats *a;

	pthread_mutex_lock(&st->lock);
	st->adapters = gm_xrealloc(st->adapters, (size_t)(st->n_adapters + 1) * sizeof(*st->adapters));
	a = &st->adapters[st->n_adapters++];
	memset(a, 0, sizeof(*a));
	a->name = gm_xstrdup(name);
	a->kind = gm_xstrdup(kind);
	pthread_mutex_unlock(&st->lock);
}

void gm_stats_observe(gm_stats *st, enum gm_stats_kind kind, double seconds)
{
	struct obs *o;

	if (!st || kind < 0 || kind >= GM_STATS_N_KINDS)
		return;
	pthread_mutex_lock(&st->lock);
	o = &st->obs[kind][st->n_obs[kind] % N_OBS];
	o->t = mono_s();
	o->v = seconds;
	st->n_obs[kind]++;
	st->obs_sum[kind] += seconds;
	pthread_mutex_unlock(&st->lock);
}

void gm_stats_request_done(gm_stats *st, const int *adapters, int n_adapters, uint64_t completion_tokens)
{
	int i;

	if (!st)
		return;
	pthread_mutex_lock(&st->lock);
	st->finished++;
	for (i = 0; i < n_adapters; i++)
		if (adapters[i] >= 0 && adapters[i] < st->n_adapters) {
			st->adapters[adapters[i]].requests++;
			st->adapters[adapters[i]].completion_tokens += completion_tokens;
		}
	pthread_mutex_unlock(&st->lock);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/*
 * p50, p90, p99 of the observations of kind made after since (nearest
 * rank, so each is a latency that happened); NAN when there are none.
 * The count into *n.  Under st->lock.
 */
static void percentiles_locked(gm_stats *st, enum gm_stats_kind kind, double since, double pct[3], size_t *n)
{
	static const double q[3] = { 0.50, 0.90, 0.99 };
	uint64_t have = st->n_obs[kind] < N_OBS ? st->n_obs[kind] : N_OBS;
	double *v = gm_xmalloc((size_t)(have ? have : 1) * sizeof(*v));
	size_t k = 0, i;

	for (i = 0; i < have; i++)
		if (st->obs[kind][i].t >= since)
			v[k++] = st->obs[kind][i].v;
	qsort(v, k, sizeof(*v), cmp_double);
	for (i = 0; i < 3; i++) {
		size_t rank = (size_t)ceil(q[i] * (double)k);

		pct[i] = k ? v[rank ? rank - 1 : 0] : NAN;
	}
	free(v);
	if (n)
		*n = k;
}

static void take_sample(gm_stats *st)
{
	struct point p;
	const struct point *prev;
	double dt;
	int k;

	memset(&p, 0, sizeof(p));
	st->fill(st->ctx, &p.x);
	p.x.t = mono_s();
	pthread_mutex_lock(&st->lock);
	p.x.requests = st->finished;
	prev = st->seq ? &st->ring[(st->seq - 1) % GM_STATS_HISTORY] : NULL;
	dt = prev ? p.x.t - prev->x.t : 0;
	if (prev && dt > 0) {
		/* counters only grow; a difference below 0 would be a bug, shown as 0 rather than a spike */
		p.prompt_per_s = p.x.prompt_tokens >= prev->x.prompt_tokens
			? (double)(p.x.prompt_tokens - prev->x.prompt_tokens) / dt : 0;
		p.completion_per_s = p.x.completion_tokens >= prev->x.completion_tokens
			? (double)(p.x.completion_tokens - prev->x.completion_tokens) / dt : 0;
		p.cached_per_s = p.x.prompt_tokens_cached >= prev->x.prompt_tokens_cached
			? (double)(p.x.prompt_tokens_cached - prev->x.prompt_tokens_cached) / dt : 0;
	}
	for (k = 0; k < GM_STATS_N_KINDS; k++)
		percentiles_locked(st, (enum gm_stats_kind)k, p.x.t - GM_STATS_CHART_WINDOW_S, p.pct[k], NULL);
	st->ring[st->seq % GM_STATS_HISTORY] = p;
	st->seq++;
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
}

static void *stats_main(void *arg)
{
	gm_stats *st = arg;
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	for (;;) {
		take_sample(st);
		/* on the second, from the start: the samples do not drift apart */
		ts.tv_sec += 1;
		pthread_mutex_lock(&st->lock);
		while (!st->stopped) {
			struct timespec now;

			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec > ts.tv_sec || (now.tv_sec == ts.tv_sec && now.tv_nsec >= ts.tv_nsec))
				break;
			/* the condition variable waits on CLOCK_REALTIME: wait in slices and check the monotonic clock */
			{
				struct timespec rt;
				long ms = (long)(ts.tv_sec - now.tv_sec) * 1000 + (ts.tv_nsec - now.tv_nsec) / 1000000;

				if (ms > 200)
					ms = 200;
				if (ms < 1)
					ms = 1;
				rt = gm_deadline_ms(ms);
				pthread_cond_timedwait(&st->cond, &st->lock, &rt);
			}
		}
		if (st->stopped) {
			pthread_mutex_unlock(&st->lock);
			return NULL;
		}
		pthread_mutex_unlock(&st->lock);
	}
}

int gm_stats_start(gm_stats *st, gm_stats_fill_fn fill, void *ctx, gm_error *err)
{
	st->fill = fill;
	st->ctx = ctx;
	if (pthread_create(&st->thread, NULL, stats_main, st))
		return gm_error_set(err, GM_EIO, "cannot start the stats thread");
	st->started = 1;
	return 0;
}

void gm_stats_stop(gm_stats *st)
{
	if (!st)
		return;
	pthread_mutex_lock(&st->lock);
	st->stopped = 1;
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
	if (st->started) {
		pthread_join(st->thread, NULL);
		st->started = 0;
	}
}

uint64_t gm_stats_seq(gm_stats *st)
{
	uint64_t n;

	pthread_mutex_lock(&st->lock);
	n = st->seq;
	pthread_mutex_unlock(&st->lock);
	return n;
}

int gm_stats_wait(gm_stats *st, uint64_t *seq, int timeout_ms)
{
	struct timespec rt = gm_deadline_ms(timeout_ms);
	int ret = 0;

	pthread_mutex_lock(&st->lock);
	while (!st->stopped && st->seq <= *seq)
		if (pthread_cond_timedwait(&st->cond, &st->lock, &rt) == ETIMEDOUT)
			break;
	if (st->stopped) {
		ret = -1;
	} else if (st->seq > *seq) {
		*seq = st->seq;
		ret = 1;
	}
	pthread_mutex_unlock(&st->lock);
	return ret;
}

int gm_stats_stream_begin(gm_stats *st)
{
	int ret = 0;

	pthread_mutex_lock(&st->lock);
	if (st->stopped || st->streams >= GM_STATS_MAX_STREAMS)
		ret = -1;
	else
		st->streams++;
	pthread_mutex_unlock(&st->lock);
	return ret;
}

void gm_stats_stream_end(gm_stats *st)
{
	pthread_mutex_lock(&st->lock);
	st->streams--;
	pthread_mutex_unlock(&st->lock);
}

/* ---------------------------------------------------------------- JSON */

static json_object *num(double d)
{
	return isfinite(d) ? gm_json_new_double(d) : NULL; /* null: nothing to measure yet */
}

static json_object *u64(uint64_t v)
{
	return json_object_new_int64((int64_t)v);
}

static json_object *latency_json(gm_stats *st, enum gm_stats_kind kind, double now)
{
	json_object *o = json_object_new_object();
	double pct[3];
	size_t n;

	percentiles_locked(st, kind, now - GM_STATS_WINDOW_S, pct, &n);
	json_object_object_add(o, "count", json_object_new_int64((int64_t)n));
	json_object_object_add(o, "p50", num(pct[0]));
	json_object_object_add(o, "p90", num(pct[1]));
	json_object_object_add(o, "p99", num(pct[2]));
	json_object_object_add(o, "count_total", u64(st->n_obs[kind]));
	json_object_object_add(o, "mean_total", st->n_obs[kind] ? num(st->obs_sum[kind] / (double)st->n_obs[kind])
			       : NULL);
	return o;
}

/* The series of the last GM_STATS_HISTORY samples (oldest first); under st->lock. */
static json_object *history_json(gm_stats *st, double now)
{
	static const char *const names[] = {
		"t", "running", "queued", "prompt_per_s", "completion_per_s", "prompt_cached_per_s",
		"kv_blocks_used", "cancelled", "ttft_p50", "ttft_p90", "tpot_p50", "tpot_p90"
	};
	enum { N = sizeof(names) / sizeof(names[0]) };
	json_object *o = json_object_new_object(), *a[N];
	uint64_t first = st->seq > GM_STATS_HISTORY ? st->seq - GM_STATS_HISTORY : 0, i;
	int k;

	for (k = 0; k < N; k++)
		a[k] = json_object_new_array();
	for (i = first; i < st->seq; i++) {
		const struct point *p = &st->ring[i % GM_STATS_HISTORY];
		json_object *v[N];

		/* t: seconds before now (0 and below), so that a client needs no clock of ours */
		v[0] = gm_json_new_double(round((p->x.t - now) * 1000) / 1000);
		v[1] = json_object_new_int(p->x.running);
		v[2] = json_object_new_int(p->x.queued);
		v[3] = num(p->prompt_per_s);
		v[4] = num(p->completion_per_s);
		v[5] = num(p->cached_per_s);
		v[6] = json_object_new_int64(p->x.kv_blocks_used);
		v[7] = u64(p->x.cancelled);
		v[8] = num(p->pct[GM_STATS_TTFT][0]);
		v[9] = num(p->pct[GM_STATS_TTFT][1]);
		v[10] = num(p->pct[GM_STATS_TPOT][0]);
		v[11] = num(p->pct[GM_STATS_TPOT][1]);
		for (k = 0; k < N; k++)
			json_object_array_add(a[k], v[k]);
	}
	json_object_object_add(o, "interval_s", json_object_new_int(1));
	json_object_object_add(o, "latency_window_s", gm_json_new_double(GM_STATS_CHART_WINDOW_S));
	for (k = 0; k < N; k++)
		json_object_object_add(o, names[k], a[k]);
	return o;
}

void gm_stats_json(gm_stats *st, int history, gm_buf *out)
{
	json_object *o = json_object_new_object(), *r, *tk, *lat, *kv, *ads;
	struct point p;
	double now;
	int i;

	pthread_mutex_lock(&st->lock);
	now = mono_s();
	if (st->seq) {
		p = st->ring[(st->seq - 1) % GM_STATS_HISTORY];
	} else {
		memset(&p, 0, sizeof(p));
		p.x.t = now;
	}
	json_object_object_add(o, "object", json_object_new_string("server.stats"));
	json_object_object_add(o, "model", json_object_new_string(st->info.model));
	json_object_object_add(o, "seq", u64(st->seq));
	json_object_object_add(o, "time", json_object_new_int64((int64_t)time(NULL)));
	json_object_object_add(o, "started", json_object_new_int64(st->t0_unix));
	json_object_object_add(o, "uptime_s", gm_json_new_double(round((now - st->t0) * 1000) / 1000));
	json_object_object_add(o, "sample_age_s", gm_json_new_double(round((now - p.x.t) * 1000) / 1000));

	r = json_object_new_object();
	json_object_object_add(r, "running", json_object_new_int(p.x.running));
	json_object_object_add(r, "queued", json_object_new_int(p.x.queued));
	json_object_object_add(r, "parallel", json_object_new_int(st->info.n_parallel));
	json_object_object_add(r, "queue_size", json_object_new_int(st->info.queue_size));
	json_object_object_add(r, "finished_total", u64(p.x.requests));
	json_object_object_add(r, "cancelled_total", u64(p.x.cancelled));
	json_object_object_add(r, "stats_streams", json_object_new_int(st->streams));
	json_object_object_add(o, "requests", r);

	tk = json_object_new_object();
	json_object_object_add(tk, "prompt_total", u64(p.x.prompt_tokens));
	json_object_object_add(tk, "prompt_cached_total", u64(p.x.prompt_tokens_cached));
	json_object_object_add(tk, "completion_total", u64(p.x.completion_tokens));
	json_object_object_add(tk, "prompt_per_s", num(p.prompt_per_s));
	json_object_object_add(tk, "prompt_cached_per_s", num(p.cached_per_s));
	json_object_object_add(tk, "completion_per_s", num(p.completion_per_s));
	json_object_object_add(o, "tokens", tk);

	lat = json_object_new_object();
	json_object_object_add(lat, "window_s", gm_json_new_double(GM_STATS_WINDOW_S));
	json_object_object_add(lat, "time_to_first_token_s", latency_json(st, GM_STATS_TTFT, now));
	json_object_object_add(lat, "time_per_output_token_s", latency_json(st, GM_STATS_TPOT, now));
	{
		/* the latest history point's: what a stream's reader appends to its charts */
		json_object *rc = json_object_new_object();

		json_object_object_add(rc, "window_s", gm_json_new_double(GM_STATS_CHART_WINDOW_S));
		json_object_object_add(rc, "ttft_p50", num(st->seq ? p.pct[GM_STATS_TTFT][0] : NAN));
		json_object_object_add(rc, "ttft_p90", num(st->seq ? p.pct[GM_STATS_TTFT][1] : NAN));
		json_object_object_add(rc, "tpot_p50", num(st->seq ? p.pct[GM_STATS_TPOT][0] : NAN));
		json_object_object_add(rc, "tpot_p90", num(st->seq ? p.pct[GM_STATS_TPOT][1] : NAN));
		json_object_object_add(lat, "recent", rc);
	}
	json_object_object_add(o, "latency", lat);

	kv = json_object_new_object();
	json_object_object_add(kv, "blocks_used", json_object_new_int64(p.x.kv_blocks_used));
	json_object_object_add(kv, "blocks_total", json_object_new_int64(st->info.kv_blocks));
	json_object_object_add(kv, "block_tokens", json_object_new_int(st->info.kv_block_tokens));
	json_object_object_add(kv, "used_fraction", st->info.kv_blocks > 0
			       ? gm_json_new_double((double)p.x.kv_blocks_used / (double)st->info.kv_blocks) : NULL);
	json_object_object_add(kv, "prefix_cache_entries", json_object_new_int(p.x.prefix_cache_entries));
	json_object_object_add(kv, "type", json_object_new_string(st->info.kv_type));
	json_object_object_add(kv, "n_ctx", json_object_new_int(st->info.n_ctx));
	json_object_object_add(o, "kv", kv);

	ads = json_object_new_array();
	for (i = 0; i < st->n_adapters; i++) {
		const struct adapter_stats *a = &st->adapters[i];
		json_object *e = json_object_new_object();
		gm_buf id = GM_BUF_INIT;

		gm_buf_addf(&id, "%s:%s", st->info.model, a->name);
		json_object_object_add(e, "id", json_object_new_string(id.buf));
		gm_buf_release(&id);
		json_object_object_add(e, "name", json_object_new_string(a->name));
		json_object_object_add(e, "kind", json_object_new_string(a->kind));
		json_object_object_add(e, "requests_total", u64(a->requests));
		json_object_object_add(e, "completion_tokens_total", u64(a->completion_tokens));
		/* {"version", "examples_seen", "loss": [...]} once adapters learn while serving */
		json_object_object_add(e, "learning", NULL);
		json_object_array_add(ads, e);
	}
	json_object_object_add(o, "adapters", ads);
	if (history)
		json_object_object_add(o, "history", history_json(st, now));
	pthread_mutex_unlock(&st->lock);
	gm_buf_adds(out, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}
