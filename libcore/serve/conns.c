/*
 * conns.c - per-phase read deadlines for server connections (conns.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "base/buf.h"
#include "base/clock.h"
#include "serve/conns.h"

/* How often the watchdog looks: the deadlines are honoured to about this. */
#define WATCH_MS 200

struct gm_conn {
	int fd;
	enum gm_conn_phase phase;
	double deadline;           /* monotonic seconds; unused in ANSWER */
	int shut;                  /* already shut down by the watchdog */
	struct gm_conn *prev, *next;
};

struct gm_conn_guard {
	double timeout[2];         /* [GM_CONN_HEADERS], [GM_CONN_BODY] */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t thread;
	int stop;
	struct gm_conn *head;
	uint64_t timed_out[2];
};

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *watch_main(void *arg)
{
	gm_conn_guard *g = arg;
	struct timespec ts;

	pthread_mutex_lock(&g->lock);
	while (!g->stop) {
		double now = mono_s();
		struct gm_conn *c;

		for (c = g->head; c; c = c->next) {
			if (c->phase == GM_CONN_ANSWER || c->shut || now < c->deadline)
				continue;
			/* The connection's own thread sees end of input and closes it. */
			shutdown(c->fd, SHUT_RDWR);
			c->shut = 1;
			g->timed_out[c->phase]++;
		}
		ts = gm_deadline_ms(WATCH_MS);
		pthread_cond_timedwait(&g->wake, &g->lock, &ts);
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

int gm_conn_guard_new(double header_timeout_s, double body_timeout_s, gm_conn_guard **out, gm_error *err)
{
	gm_conn_guard *g;
	int rc;

	*out = NULL;
	if (!(header_timeout_s > 0) || !(body_timeout_s > 0))
		return gm_error_set(err, GM_EINVAL, "the header and body timeouts must be positive (got %g and %g s)",
				    header_timeout_s, body_timeout_s);
	g = gm_xcalloc(1, sizeof(*g));
	g->timeout[GM_CONN_HEADERS] = header_timeout_s;
	g->timeout[GM_CONN_BODY] = body_timeout_s;
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->wake, NULL);
	if ((rc = pthread_create(&g->thread, NULL, watch_main, g))) {
		pthread_cond_destroy(&g->wake);
		pthread_mutex_destroy(&g->lock);
		free(g);
		errno = rc;
		return gm_error_errno(err, "cannot start the connection watchdog thread");
	}
	*out = g;
	return 0;
}

void gm_conn_guard_free(gm_conn_guard *g)
{
	struct gm_conn *c, *next;

	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	g->stop = 1;
	pthread_cond_signal(&g->wake);
	pthread_mutex_unlock(&g->lock);
	pthread_join(g->thread, NULL);
	for (c = g->head; c; c = next) {
		next = c->next;
		free(c);
	}
	pthread_cond_destroy(&g->wake);
	pthread_mutex_destroy(&g->lock);
	free(g);
}

static void set_phase_locked(gm_conn_guard *g, gm_conn *c, enum gm_conn_phase phase)
{
	c->phase = phase;
	if (phase != GM_CONN_ANSWER)
		c->deadline = mono_s() + g->timeout[phase];
}

gm_conn *gm_conn_open(gm_conn_guard *g, int fd)
{
	gm_conn *c = gm_xcalloc(1, sizeof(*c));

	c->fd = fd;
	pthread_mutex_lock(&g->lock);
	set_phase_locked(g, c, GM_CONN_HEADERS);
	c->next = g->head;
	if (g->head)
		g->head->prev = c;
	g->head = c;
	pthread_mutex_unlock(&g->lock);
	return c;
}

void gm_conn_phase(gm_conn_guard *g, gm_conn *c, enum gm_conn_phase phase)
{
	pthread_mutex_lock(&g->lock);
	set_phase_locked(g, c, phase);
	pthread_mutex_unlock(&g->lock);
}

void gm_conn_close(gm_conn_guard *g, gm_conn *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&g->lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		g->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&g->lock);
	free(c);
}

uint64_t gm_conn_guard_timed_out(gm_conn_guard *g, enum gm_conn_phase phase)
{
	uint64_t n;

	if (phase == GM_CONN_ANSWER)
		return 0;
	pthread_mutex_lock(&g->lock);
	n = g->timed_out[phase];
	pthread_mutex_unlock(&g->lock);
	return n;
}
