/*
 * serve.h - an OpenAI-compatible HTTP server over the generation loop
 * (libmicrohttpd; `git infer --serve`).
 *
 *   gm_serve_config c;
 *   gm_serve_config_init(&c);
 *   c.model_dir = "models/pocket-qwen3"; c.addr = "127.0.0.1"; c.port = 8080;
 *   gm_serve_start(&c, &srv, &err);   // listening: /health answers 503
 *   gm_serve_load(srv, &err);         // model, adapters, workers: 200
 *   ... wait for SIGTERM ...
 *   gm_serve_stop(srv);               // stop accepting, finish or cancel
 *   gm_serve_free(srv);
 *
 * Endpoints: GET /health, GET /metrics (Prometheus text), GET /v1/models,
 * GET /v1/models/ID, POST /v1/completions, POST /v1/chat/completions.
 * Errors have OpenAI's shape {"error":{"message","type","param","code"}}.
 *
 * Requests are served by n_parallel workers, each with its own KV cache
 * (gm_forward) over the one mapped model: that many sequences are
 * generated at once, each decoded on its own (no batched decode yet).
 * At most queue_size more requests wait; beyond that the answer is 429.
 * Adapters are loaded once at start and selected per request
 * ("model": "ID:ADAPTER" or "adapters": [{"name", "scale"}]): a worker
 * switches its adapter list between requests, without reloading.
 *
 * Threads: libmicrohttpd runs one thread per connection; a request is
 * parsed and tokenized there, then queued.  A connection thread waiting
 * for its request notices a client that went away (its socket is polled)
 * and cancels the generation, which stops before its next token.
 */
#ifndef GM_SERVE_H
#define GM_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct gm_serve_config {
	const char *model_dir;
	const char *model_id;       /* the id clients use; NULL: gm_serve_model_id(model_dir) */
	const char *addr;           /* numeric IPv4 or IPv6 address, or a host name; NULL: 127.0.0.1 */
	int port;                   /* 0: any free port (see gm_serve_port) */
	int n_parallel;             /* sequences generated at once (workers), >= 1 */
	int queue_size;             /* requests that may wait beyond those, >= 0 */
	const char *api_key;        /* NULL: no authentication */
	size_t max_body;            /* largest request body in bytes (413 beyond) */
	double shutdown_timeout_s;  /* gm_serve_stop: how long in-flight requests may finish */
	int n_ctx;                  /* per sequence; 0: the model's, at most 4096 */
	int n_threads;              /* compute threads in all; 0: one per CPU */
	int kv_type;                /* enum gm_kv_type (kv.h) of the KV memory (git infer: F32 unless --kv-type) */
	/* Extra adapters: "DIR" (named after its base name, without an NN_
	 * prefix) or "NAME=DIR"; those in MODEL/adapters/ are loaded too. */
	const char *const *adapters;
	size_t n_adapters;
} gm_serve_config;

/* 1 parallel sequence, queue of 16, 4 MiB bodies, 10 s to shut down, 127.0.0.1. */
void gm_serve_config_init(gm_serve_config *c);

/*
 * "PORT" or "ADDR:PORT" ("[V6ADDR]:PORT" for IPv6) into *addr (allocated,
 * NULL when not given) and *port (0-65535).  GM_EINVAL with a message.
 */
int gm_serve_parse_listen(const char *spec, char **addr, int *port, gm_error *err);

/*
 * The id clients use for a model given as a directory: the directory's
 * base name (a registered model is served under its registry name, given
 * as the config's model_id).  Allocated.
 */
char *gm_serve_model_id(const char *model_dir);

typedef struct gm_serve gm_serve;

/* Binds and starts answering (503 until gm_serve_load).  c is copied. */
int gm_serve_start(const gm_serve_config *c, gm_serve **out, gm_error *err);
/* The port listened on (the one chosen when the config said 0). */
int gm_serve_port(const gm_serve *s);
/* A description of the address listened on: "127.0.0.1:8080", "[::1]:8080". */
const char *gm_serve_address(const gm_serve *s);
/*
 * Loads the model, its tokenizer and chat template, the adapters, and
 * starts the workers; requests are served from then on.  On failure the
 * server keeps answering 503 until stopped.
 */
int gm_serve_load(gm_serve *s, gm_error *err);
/* The model id and the number of adapters (after gm_serve_load). */
const char *gm_serve_id(const gm_serve *s);
int gm_serve_n_adapters(const gm_serve *s);
const char *gm_serve_adapter_name(const gm_serve *s, int i);

/*
 * Graceful stop: new connections are refused and new requests get 503;
 * requests in flight may finish for shutdown_timeout_s, then are
 * cancelled (a stream ends with an error event, others get 503); then
 * the workers and the connection threads end.  Returns the number of
 * requests cancelled.
 */
int gm_serve_stop(gm_serve *s);
void gm_serve_free(gm_serve *s);

#endif
