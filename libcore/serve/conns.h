/*
 * conns.h - deadlines on reading a request, against slow clients
 * ("slowloris").
 *
 * libmicrohttpd's connection timeout is an idle timeout: every byte
 * resets it, so a client that trickles a byte now and then holds a
 * connection (and its thread) forever.  A guard gives each connection
 * a deadline per phase of a request:
 *
 *   HEADERS  from the connection's start, or from the end of the previous
 *            request on a kept-alive connection, until the request's
 *            headers are complete: header_timeout_s;
 *   BODY     from then until the whole body is read: body_timeout_s;
 *   ANSWER   while the server answers (a generation, a stream): none.
 *
 * A watchdog thread shuts down the socket of a connection past its
 * deadline (shutdown(2), so libmicrohttpd sees the peer gone and closes
 * it in its own thread) and counts it.  Connections are registered by
 * socket; the caller unregisters a connection before its socket is
 * closed, so a reused descriptor is never shut by mistake.
 */
#ifndef GM_CONNS_H
#define GM_CONNS_H

#include <stdint.h>

#include "base/error.h"

enum gm_conn_phase { GM_CONN_HEADERS, GM_CONN_BODY, GM_CONN_ANSWER };

typedef struct gm_conn_guard gm_conn_guard;
typedef struct gm_conn gm_conn;

/* Starts the watchdog.  Timeouts in seconds, > 0. */
int gm_conn_guard_new(double header_timeout_s, double body_timeout_s, gm_conn_guard **out, gm_error *err);
/* Stops the watchdog; connections still registered are forgotten (not shut). */
void gm_conn_guard_free(gm_conn_guard *g);

/* Registers a new connection on socket fd, in phase HEADERS from now. */
gm_conn *gm_conn_open(gm_conn_guard *g, int fd);
/* Enters a phase; its deadline counts from now. */
void gm_conn_phase(gm_conn_guard *g, gm_conn *c, enum gm_conn_phase phase);
/* Unregisters (before the socket is closed) and frees c.  NULL is a no-op. */
void gm_conn_close(gm_conn_guard *g, gm_conn *c);

/* Connections shut for being too slow, by phase (HEADERS, BODY). */
uint64_t gm_conn_guard_timed_out(gm_conn_guard *g, enum gm_conn_phase phase);

#endif
