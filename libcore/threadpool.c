/*
 * threadpool.c - a persistent pool with a parallel-for (see threadpool.h).
 *
 * A loop is published by filling in fn/ctx/n/chunk and bumping a
 * generation counter; workers waiting for a new generation pick chunks off
 * an atomic cursor until none is left, then decrement the count of busy
 * workers, which the caller spins on.  The generation is bumped under the
 * mutex and followed by a broadcast, so a worker that went to sleep cannot
 * miss it.
 */
#include "threadpool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"

/*
 * Busy-wait iterations (x86 pause: tens of cycles) before a worker sleeps,
 * about a fifth of a millisecond, and before the caller, waiting for the
 * workers, starts yielding its CPU (which matters when the machine is
 * oversubscribed and a worker is not running).
 */
#define GM_POOL_SPIN (1 << 14)
#define GM_POOL_SPIN_CALLER (1 << 10)

struct gm_threadpool {
	int n;                  /* threads including the caller */
	pthread_t *threads;     /* [n - 1] workers */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	atomic_uint gen;        /* bumped for every loop and for shutdown */
	int stop;

	/* the current loop */
	gm_parallel_fn fn;
	void *ctx;
	int64_t n_items, chunk;
	atomic_llong next;
	atomic_int busy;        /* workers not yet done with the current loop */
};

struct gm_worker_arg {
	gm_threadpool *p;
	int id;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static void run_chunks(gm_threadpool *p, int id)
{
	int64_t b;

	while ((b = atomic_fetch_add_explicit(&p->next, p->chunk, memory_order_relaxed)) < p->n_items) {
		int64_t e = b + p->chunk < p->n_items ? b + p->chunk : p->n_items;
		p->fn(p->ctx, b, e, id);
	}
}

static void *worker_main(void *arg_)
{
	struct gm_worker_arg *arg = arg_;
	gm_threadpool *p = arg->p;
	int id = arg->id;
	unsigned seen = 0;

	free(arg);
	for (;;) {
		unsigned g;
		int spins = 0;

		while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
			if (++spins < GM_POOL_SPIN) {
				cpu_relax();
				continue;
			}
			pthread_mutex_lock(&p->lock);
			while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen)
				pthread_cond_wait(&p->wake, &p->lock);
			pthread_mutex_unlock(&p->lock);
			break;
		}
		seen = g;
		if (p->stop)
			return NULL;
		run_chunks(p, id);
		atomic_fetch_sub_explicit(&p->busy, 1, memory_order_release);
	}
}

int gm_cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n >= 1 ? (int)n : 1;
}

int gm_threadpool_new(int n_threads, gm_threadpool **out, gm_error *err)
{
	gm_threadpool *p;
	int i, ret;

	*out = NULL;
	if (n_threads < 1 || n_threads > 1024)
		return gm_error_set(err, GM_EINVAL, "invalid thread count %d (expected 1 to 1024)", n_threads);
	p = gm_xcalloc(1, sizeof(*p));
	p->n = n_threads;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	atomic_init(&p->gen, 0);
	atomic_init(&p->next, 0);
	atomic_init(&p->busy, 0);
	p->threads = gm_xcalloc((size_t)n_threads, sizeof(*p->threads));
	for (i = 1; i < n_threads; i++) {
		struct gm_worker_arg *arg = gm_xmalloc(sizeof(*arg));

		arg->p = p;
		arg->id = i;
		if ((ret = pthread_create(&p->threads[i - 1], NULL, worker_main, arg))) {
			free(arg);
			p->n = i; /* the workers started so far are joined */
			gm_threadpool_free(p);
			errno = ret;
			return gm_error_errno(err, "cannot start worker thread %d", i);
		}
	}
	*out = p;
	return 0;
}

void gm_threadpool_free(gm_threadpool *p)
{
	int i;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = 1;
	atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
	for (i = 1; i < p->n; i++)
		pthread_join(p->threads[i - 1], NULL);
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->lock);
	free(p->threads);
	free(p);
}

int gm_threadpool_size(const gm_threadpool *p)
{
	return p->n;
}

void gm_threadpool_for(gm_threadpool *p, int64_t n, int64_t grain, gm_parallel_fn fn, void *ctx)
{
	int64_t chunk;
	int spins = 0;

	if (n <= 0)
		return;
	if (grain < 1)
		grain = 1;
	if (p->n == 1 || n <= grain) {
		fn(ctx, 0, n, 0);
		return;
	}
	/* about eight chunks per thread, for balance when one is slowed down */
	chunk = (n + 8 * p->n - 1) / (8 * p->n);
	chunk = (chunk + grain - 1) / grain * grain;
	p->fn = fn;
	p->ctx = ctx;
	p->n_items = n;
	p->chunk = chunk;
	atomic_store_explicit(&p->next, 0, memory_order_relaxed);
	atomic_store_explicit(&p->busy, p->n - 1, memory_order_relaxed);
	pthread_mutex_lock(&p->lock);
	atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);

	run_chunks(p, 0);
	while (atomic_load_explicit(&p->busy, memory_order_acquire) > 0) {
		if (++spins < GM_POOL_SPIN_CALLER)
			cpu_relax();
		else
			sched_yield();
	}
}
