/*
 * stats.h - the live numbers of a server, for its dashboard and for
 * scripts: GET /v1/stats (one JSON document) and GET /v1/stats/stream
 * (server-sent events, one a second).
 *
 *   gm_stats_info info = { .model = "pocket-qwen3", ... };
 *   gm_stats_new(&info, &st);
 *   gm_stats_add_adapter(st, "kjv", "lora");
 *   gm_stats_start(st, fill, srv, &err);  // a thread: fill() each second
 *   ... gm_stats_observe(st, GM_STATS_TTFT, seconds) as tokens come ...
 *   gm_stats_stop(st);                    // the thread ends, streams end
 *   gm_stats_free(st);
 *
 * Counters (tokens, requests, cancellations) and gauges (running, queued,
 * KV blocks) come from the server's own state through the fill callback,
 * once a second, into a ring of samples (the last GM_STATS_HISTORY
 * seconds); rates are the difference between two samples.  Latencies are
 * kept as raw observations (a ring of the most recent ones, with their
 * time), so percentiles are exact over a window of time rather than
 * bucket guesses.
 *
 * Thread safety: every function may be called from any thread; the
 * fill callback runs on the stats thread with no stats lock held, so it
 * may take the server's lock (which may itself be held while calling
 * gm_stats_observe: the order is server lock, then stats lock).
 */
#ifndef GM_STATS_H
#define GM_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"

#define GM_STATS_HISTORY 120        /* seconds of samples kept and sent */
#define GM_STATS_WINDOW_S 60.0      /* latency percentiles of /v1/stats: over the last minute */
#define GM_STATS_CHART_WINDOW_S 10.0 /* those of each history point: over the 10 s before it */
#define GM_STATS_MAX_STREAMS 32     /* stats streams at once (beyond: 429) */

/* What does not change while serving; the strings are copied. */
typedef struct gm_stats_info {
	const char *model;          /* the id clients use */
	int n_parallel, queue_size, n_ctx;
	int64_t kv_blocks;          /* in the pool */
	int kv_block_tokens;
	const char *kv_type;        /* "f32", "bf16" */
} gm_stats_info;

/* The server's counters and gauges at one time (filled by the callback). */
typedef struct gm_stats_sample {
	double t;                   /* CLOCK_MONOTONIC seconds; set by the stats thread */
	int running, queued;        /* requests being generated, waiting for a slot */
	uint64_t requests;          /* generation requests finished (set by the stats: gm_stats_request_done) */
	uint64_t cancelled;         /* of those, stopped early (client gone, shutdown) */
	uint64_t prompt_tokens, prompt_tokens_cached, completion_tokens;
	int64_t kv_blocks_used;     /* running sequences and the prefix cache */
	int prefix_cache_entries;
} gm_stats_sample;

enum gm_stats_kind { GM_STATS_TTFT, GM_STATS_TPOT, GM_STATS_N_KINDS };

typedef struct gm_stats gm_stats;

typedef void (*gm_stats_fill_fn)(void *ctx, gm_stats_sample *out);

int gm_stats_new(const gm_stats_info *info, gm_stats **out, gm_error *err);
/* After gm_stats_stop (or when never started). NULL is ignored. */
void gm_stats_free(gm_stats *st);

/* An adapter the server loaded, in the server's order (index 0, 1, ...). */
void gm_stats_add_adapter(gm_stats *st, const char *name, const char *kind);

/* Starts the thread that samples fill(ctx) each second (one sample at once). */
int gm_stats_start(gm_stats *st, gm_stats_fill_fn fill, void *ctx, gm_error *err);
/* Ends the thread and every stream waiting in gm_stats_wait; idempotent. */
void gm_stats_stop(gm_stats *st);

/* A latency in seconds: time to first token, or between two tokens of a sequence.  NULL st: nothing. */
void gm_stats_observe(gm_stats *st, enum gm_stats_kind kind, double seconds);
/* A generation request finished (or was cancelled), with the adapters it used (indexes of
 * gm_stats_add_adapter) and the tokens it generated.  NULL st: nothing. */
void gm_stats_request_done(gm_stats *st, const int *adapters, int n_adapters, uint64_t completion_tokens);

/*
 * The snapshot as JSON text appended to out: the latest sample, rates,
 * latency percentiles, KV use, adapters; with history, the series of the
 * last GM_STATS_HISTORY seconds too.  See man/git-infer.1 for the fields.
 */
void gm_stats_json(gm_stats *st, int history, gm_buf *out);

/* The number of samples taken so far. */
uint64_t gm_stats_seq(gm_stats *st);

/*
 * Waits (at most timeout_ms) for a sample newer than *seq: 1 when there
 * is one (*seq updated), 0 on timeout, -1 once stopped.
 */
int gm_stats_wait(gm_stats *st, uint64_t *seq, int timeout_ms);

/* A stream starts (0), or is refused because GM_STATS_MAX_STREAMS run (-1); and ends. */
int gm_stats_stream_begin(gm_stats *st);
void gm_stats_stream_end(gm_stats *st);

#endif
