/*
 * threadpool.c - a persistent pool with a parallel-for (see threadpool.h).
 *
 * A loop is cut into n_chunks chunks.  One 64-bit word, work, holds the
 * loop's id (32 bits), its chunk count (16 bits) and the next unclaimed
 * chunk (16 bits); a thread claims a chunk with a compare-and-swap on the
 * whole word, so a claim made for a loop that is over fails, and the loop's
 * parameters (fn, ctx, n_items, chunk) are read only after a successful
 * claim, when the caller cannot be rewriting them (it waits for every chunk
 * to be done before the next loop).  The caller waits for the count of
 * chunks done, not for the workers: a worker that was descheduled when the
 * loop began and wakes after it ended finds nothing to claim and costs the
 * caller nothing.  This matters when the machine is oversubscribed (another
 * process on one of two cores): waiting for every worker to check in would
 * stall each of the ~200 loops of a decoded token for a scheduler time
 * slice.
 *
 * Waiting is adaptive, on both sides: a short spin (x86 pause), then a
 * futex sleep.  Workers sleep on seq (the id of the last loop published),
 * which the caller bumps after publishing a loop, waking them only when
 * some are asleep; the caller sleeps on done when the last chunks take
 * long (a worker preempted in the middle of one), and the worker that
 * finishes the last chunk wakes it.  Both handshakes are Dekker-style:
 * each side writes its own flag, then reads the other's, all seq_cst, so
 * at least one side sees the other and no wakeup is lost.
 */
#include "cpu/threadpool.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#include "base/buf.h"

/*
 * Busy-wait iterations (x86 pause: tens of cycles) before a worker sleeps,
 * about a fifth of a millisecond: the next loop of a forward pass comes
 * within microseconds.  The caller, waiting for the last chunks, spins less
 * (about 20 us) before it sleeps and leaves its CPU to a preempted worker.
 */
#define GM_POOL_SPIN (1 << 14)
#define GM_POOL_SPIN_CALLER (1 << 10)

#define WORK(id, n_chunks, next) (((uint64_t)(id) << 32) | ((uint64_t)(n_chunks) << 16) | (uint64_t)(next))
#define WORK_ID(w) ((unsigned)((w) >> 32))
#define WORK_N(w) ((int)(((w) >> 16) & 0xffff))
#define WORK_NEXT(w) ((int)((w) & 0xffff))
#define MAX_CHUNKS 0xffff

struct gm_threadpool {
	int n;                  /* threads including the caller */
	pthread_t *threads;     /* [n - 1] workers */

	/* the current loop: written by the caller before it publishes work */
	gm_parallel_fn fn;
	void *ctx;
	int64_t n_items, chunk;

	_Atomic uint64_t work;  /* WORK(id, n_chunks, next chunk) */
	atomic_int done;        /* chunks of the current loop finished; futex word */
	atomic_int caller_asleep; /* the caller sleeps (or is about to) on done */
	atomic_uint seq;        /* id of the last loop published (or shutdown); futex word */
	atomic_int sleepers;    /* workers asleep (or about to be) on seq */
	atomic_int stop;
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

/* Sleeps while *addr == val (or not at all, or spuriously: callers re-check). */
static void wait_on(atomic_int *addr, int val)
{
#ifdef __linux__
	syscall(SYS_futex, (int *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
#else
	(void)addr;
	(void)val;
	sched_yield();
#endif
}

static void wake_all(atomic_int *addr)
{
#ifdef __linux__
	syscall(SYS_futex, (int *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
	(void)addr;
#endif
}

/* Claims and runs chunks of loop id until none is left (or the loop is over). */
static void run_chunks(gm_threadpool *p, unsigned id, int thread)
{
	uint64_t cur = atomic_load_explicit(&p->work, memory_order_acquire);

	for (;;) {
		int64_t b, e;
		int n_chunks = WORK_N(cur), idx = WORK_NEXT(cur);

		if (WORK_ID(cur) != id || idx >= n_chunks)
			return;
		if (!atomic_compare_exchange_weak_explicit(&p->work, &cur, cur + 1, memory_order_acq_rel,
							   memory_order_acquire))
			continue; /* cur reloaded */
		/* chunk idx is ours: the loop cannot end before it is done, so its parameters hold */
		b = (int64_t)idx * p->chunk;
		e = b + p->chunk < p->n_items ? b + p->chunk : p->n_items;
		p->fn(p->ctx, b, e, thread);
		if (atomic_fetch_add(&p->done, 1) + 1 == n_chunks && atomic_load(&p->caller_asleep))
			wake_all(&p->done);
		cur = atomic_load_explicit(&p->work, memory_order_acquire);
	}
}

static void *worker_main(void *arg_)
{
	struct gm_worker_arg *arg = arg_;
	gm_threadpool *p = arg->p;
	int id = arg->id;
	unsigned seen = 0, s;

	free(arg);
	for (;;) {
		int spins = 0;

		while ((s = atomic_load_explicit(&p->seq, memory_order_acquire)) == seen) {
			if (++spins < GM_POOL_SPIN) {
				cpu_relax();
				continue;
			}
			atomic_fetch_add(&p->sleepers, 1);
			if (atomic_load(&p->seq) == seen)
				wait_on((atomic_int *)&p->seq, (int)seen);
			atomic_fetch_sub(&p->sleepers, 1);
			spins = 0;
		}
		seen = s;
		if (atomic_load(&p->stop))
			return NULL;
		run_chunks(p, s, id);
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
	atomic_init(&p->work, WORK(0, 0, 0));
	atomic_init(&p->done, 0);
	atomic_init(&p->caller_asleep, 0);
	atomic_init(&p->seq, 0);
	atomic_init(&p->sleepers, 0);
	atomic_init(&p->stop, 0);
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

/* Publishes a new seq (a loop or the shutdown) and wakes the workers that sleep. */
static void bump_seq(gm_threadpool *p)
{
	atomic_fetch_add(&p->seq, 1);
	if (atomic_load(&p->sleepers))
		wake_all((atomic_int *)&p->seq);
}

void gm_threadpool_free(gm_threadpool *p)
{
	int i;

	if (!p)
		return;
	atomic_store(&p->stop, 1);
	bump_seq(p);
	for (i = 1; i < p->n; i++)
		pthread_join(p->threads[i - 1], NULL);
	free(p->threads);
	free(p);
}

int gm_threadpool_size(const gm_threadpool *p)
{
	return p->n;
}

void gm_threadpool_for(gm_threadpool *p, int64_t n, int64_t grain, gm_parallel_fn fn, void *ctx)
{
	int64_t chunk, n_chunks;
	unsigned id;
	int spins = 0, d;

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
	if ((n + chunk - 1) / chunk > MAX_CHUNKS)
		chunk = (n + MAX_CHUNKS - 1) / MAX_CHUNKS; /* not reached: at most 8 * 1024 chunks */
	n_chunks = (n + chunk - 1) / chunk;
	p->fn = fn;
	p->ctx = ctx;
	p->n_items = n;
	p->chunk = chunk;
	atomic_store_explicit(&p->done, 0, memory_order_relaxed);
	id = atomic_load_explicit(&p->seq, memory_order_relaxed) + 1;
	atomic_store_explicit(&p->work, WORK(id, n_chunks, 0), memory_order_release);
	bump_seq(p);

	run_chunks(p, id, 0);
	while ((d = atomic_load_explicit(&p->done, memory_order_acquire)) < n_chunks) {
		if (++spins < GM_POOL_SPIN_CALLER) {
			cpu_relax();
			continue;
		}
		/* a chunk is still running on a worker, maybe preempted: give it this CPU */
		atomic_store(&p->caller_asleep, 1);
		if ((d = atomic_load(&p->done)) < n_chunks)
			wait_on(&p->done, d);
		atomic_store(&p->caller_asleep, 0);
	}
}
