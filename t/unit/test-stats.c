/* test-stats.c - the server's live numbers (serve/stats.h): percentiles, rates, JSON, the thread. */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/error.h"
#include "serve/stats.h"
#include "tap.h"

/* The fill callback: counters the test sets. */
static gm_stats_sample counters;

static void fill(void *ctx, gm_stats_sample *out)
{
	(void)ctx;
	*out = counters;
}

static json_object *snapshot(gm_stats *st, int history)
{
	gm_buf b = GM_BUF_INIT;
	json_object *o;

	gm_stats_json(st, history, &b);
	o = json_tokener_parse(b.buf);
	gm_buf_release(&b);
	return o;
}

/* The number at a path of dotted keys; NAN when absent or null. */
static double at(json_object *o, const char *path)
{
	char key[64];
	const char *p = path, *dot;

	while (o && *p) {
		dot = strchr(p, '.');
		snprintf(key, sizeof(key), "%.*s", (int)(dot ? dot - p : (long)strlen(p)), p);
		if (!json_object_object_get_ex(o, key, &o))
			return NAN;
		p = dot ? dot + 1 : p + strlen(p);
	}
	return o ? json_object_get_double(o) : NAN;
}

static void test_snapshot(void)
{
	gm_stats_info info = { .model = "m", .n_parallel = 2, .queue_size = 3, .n_ctx = 128, .kv_blocks = 40,
			       .kv_block_tokens = 16, .kv_type = "f32" };
	gm_error err = GM_ERROR_INIT;
	gm_stats *st;
	json_object *o, *a;
	uint64_t seq = 0;
	int i, ads[2] = { 1, 0 };

	ok(!gm_stats_new(&info, &st, &err), "gm_stats_new");
	gm_stats_add_adapter(st, "kjv", "lora");
	gm_stats_add_adapter(st, "fortunes", "sparse");

	/* before any sample: zeros and nulls, never garbage */
	o = snapshot(st, 1);
	ok(o && at(o, "seq") == 0 && at(o, "requests.parallel") == 2 && at(o, "kv.blocks_total") == 40,
	   "a snapshot before the first sample has the configuration");
	ok(isnan(at(o, "latency.time_to_first_token_s.p50")), "no latency yet: null");
	json_object_put(o);

	/* 1..100 ms: nearest-rank percentiles are measured values */
	for (i = 100; i >= 1; i--)
		gm_stats_observe(st, GM_STATS_TPOT, i / 1000.0);
	gm_stats_observe(st, GM_STATS_TTFT, 0.25);
	gm_stats_request_done(st, ads, 2, 30);
	gm_stats_request_done(st, ads, 1, 12);
	gm_stats_request_done(st, NULL, 0, 5);

	counters.running = 1;
	counters.queued = 2;
	counters.completion_tokens = 100;
	counters.kv_blocks_used = 10;
	ok(!gm_stats_start(st, fill, NULL, &err), "gm_stats_start");
	ok(gm_stats_wait(st, &seq, 5000) == 1 && seq >= 1, "the first sample comes at once");
	counters.completion_tokens = 300;
	counters.prompt_tokens = 50;
	ok(gm_stats_wait(st, &seq, 5000) == 1 && seq >= 2, "then one a second");

	o = snapshot(st, 1);
	ok(at(o, "requests.running") == 1 && at(o, "requests.queued") == 2, "running, queued");
	ok(at(o, "requests.finished_total") == 3, "finished requests");
	ok(fabs(at(o, "tokens.completion_per_s") - 200) < 20, "tokens/s from two samples a second apart: %g",
	   at(o, "tokens.completion_per_s"));
	ok(at(o, "tokens.prompt_total") == 50 && at(o, "tokens.completion_total") == 300, "token totals");
	ok(fabs(at(o, "latency.time_per_output_token_s.p50") - 0.050) < 1e-12 &&
	   fabs(at(o, "latency.time_per_output_token_s.p90") - 0.090) < 1e-12 &&
	   fabs(at(o, "latency.time_per_output_token_s.p99") - 0.099) < 1e-12,
	   "p50 p90 p99 of 1..100 ms are 50, 90, 99 ms");
	ok(at(o, "latency.time_per_output_token_s.count") == 100 &&
	   fabs(at(o, "latency.time_per_output_token_s.mean_total") - 0.0505) < 1e-12, "count and mean");
	ok(fabs(at(o, "latency.time_to_first_token_s.p99") - 0.25) < 1e-12, "one observation is every percentile");
	ok(fabs(at(o, "kv.used_fraction") - 0.25) < 1e-12, "KV use");
	json_object_object_get_ex(o, "adapters", &a);
	ok(a && json_object_array_length(a) == 2, "two adapters");
	if (a && json_object_array_length(a) == 2) {
		json_object *k = json_object_array_get_idx(a, 0), *f = json_object_array_get_idx(a, 1), *v;

		ok(json_object_object_get_ex(k, "id", &v) && !strcmp(json_object_get_string(v), "m:kjv"), "adapter id");
		ok(at(k, "requests_total") == 1 && at(k, "completion_tokens_total") == 30, "kjv: one request");
		ok(at(f, "requests_total") == 2 && at(f, "completion_tokens_total") == 42, "fortunes: two");
		ok(json_object_object_get_ex(k, "learning", &v) && !v, "learning: null for now");
	}
	ok(json_object_object_get_ex(o, "history", &a) &&
	   json_object_object_get_ex(a, "t", &a) && json_object_array_length(a) == seq, "history: every sample");
	json_object_put(o);
	o = snapshot(st, 0);
	ok(!json_object_object_get_ex(o, "history", &a), "no history when not asked");
	json_object_put(o);

	/* streams: counted, bounded, and ended by the stop */
	for (i = 0; i < GM_STATS_MAX_STREAMS; i++)
		gm_stats_stream_begin(st);
	ok(gm_stats_stream_begin(st) == -1, "beyond %d streams: refused", GM_STATS_MAX_STREAMS);
	for (i = 0; i < GM_STATS_MAX_STREAMS; i++)
		gm_stats_stream_end(st);
	gm_stats_stop(st);
	ok(gm_stats_wait(st, &seq, 5000) == -1, "once stopped, a waiting stream ends");
	ok(gm_stats_stream_begin(st) == -1, "and no stream starts");
	gm_stats_free(st);
}

int main(void)
{
	test_snapshot();
	gm_stats_observe(NULL, GM_STATS_TTFT, 1);
	gm_stats_request_done(NULL, NULL, 0, 0);
	ok(1, "NULL stats: nothing happens");
	return tap_done();
}
