/*
 * threadpool.h - a persistent pool of worker threads with a parallel-for.
 *
 * The pool is made once (per gm_forward) and reused for every parallel
 * loop, so that decoding a token creates no thread.  The calling thread
 * takes part in the work: a pool of n threads starts n - 1 workers.
 * Between loops, workers spin for a short while (the next loop of a forward
 * pass comes within microseconds) and then sleep (a futex); the caller
 * waits for the chunks to be done, not for the workers to check in, so a
 * worker descheduled by another process (an oversubscribed machine) does
 * not stall a loop it took no part in; a caller left waiting on a preempted
 * worker's chunk sleeps too, and leaves it the CPU.
 *
 *   gm_threadpool_for(pool, n_rows, 16, fn, ctx);
 *
 * calls fn(ctx, begin, end, thread) over disjoint chunks covering [0, n),
 * each chunk a multiple of grain long (the last excepted), and returns
 * when all are done.  thread is in [0, size) and identifies the caller
 * (for per-thread scratch).  One loop at a time; not reentrant.
 */
#ifndef GM_THREADPOOL_H
#define GM_THREADPOOL_H

#include <stdint.h>

#include "base/error.h"

typedef struct gm_threadpool gm_threadpool;

typedef void (*gm_parallel_fn)(void *ctx, int64_t begin, int64_t end, int thread);

/* n_threads >= 1; 1 runs everything on the caller. */
int gm_threadpool_new(int n_threads, gm_threadpool **out, gm_error *err);
void gm_threadpool_free(gm_threadpool *p);
int gm_threadpool_size(const gm_threadpool *p);
void gm_threadpool_for(gm_threadpool *p, int64_t n, int64_t grain, gm_parallel_fn fn, void *ctx);

/* The number of online CPUs (at least 1). */
int gm_cpu_count(void);

#endif
