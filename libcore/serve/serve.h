/*
 * serve.h - an OpenAI-compatible HTTP server over the generation loop
 * (libmicrohttpd; `git infer --serve`).
 *
 *   gm_serve_config c;
 *   gm_serve_config_init(&c);
 *   c.model_dir = "models/pocket-qwen3"; c.addr = "127.0.0.1"; c.port = 8080;
 *   gm_serve_start(&c, &srv, &err);   // listening: /health answers 503
 *   gm_serve_load(srv, &err);         // model, adapters, scheduler: 200
 *   ... wait for SIGTERM ...
 *   gm_serve_stop(srv);               // stop accepting, finish or cancel
 *   gm_serve_free(srv);
 *
 * Endpoints: GET /health, GET /metrics (Prometheus text), GET /v1/models,
 * GET /v1/models/ID, POST /v1/completions, POST /v1/chat/completions;
 * GET /v1/stats and GET /v1/stats/stream (stats.h: the numbers, and as
 * server-sent events) and GET / (webui.h: the chat and dashboard page).
 * Errors have OpenAI's shape {"error":{"message","type","param","code"}}.
 * The files and fine-tuning APIs (/v1/files, /v1/fine_tuning/jobs...) are
 * ftapi.h's: jobs train adapters in the background, servable when done.
 *
 * Continuous batching: one scheduler thread owns one forward pass (all
 * the compute threads) and one pool of KV memory in blocks (kv.h) shared
 * by every sequence.  Each step, every running request advances in a
 * single batched evaluation (gm_forward_eval_batch: the weights are read
 * once for all of them): a decoding request by one token, one whose
 * prompt is being read by a chunk of it (prefill_chunk prompt tokens per
 * step in all, so that a long prompt does not stall the streams beside
 * it); each then picks its token with its own sampler and seed, stop
 * strings and text (gm_gen_seq), so its output is what it would be alone.
 * Requests join between steps and leave when done; the n choices of one
 * request are generated one after another.
 *
 * At most n_parallel requests run at once, fewer when the pool is short:
 * a request starts when the free blocks hold its prompt and one block
 * more, and waits in the queue otherwise; at most queue_size wait, beyond
 * that the answer is 429 (with Retry-After).  A prompt that could never
 * fit the pool is a 400 (context_length_exceeded); a request that finds
 * no free block while generating ends there with finish_reason "length".
 * The pool holds kv_tokens tokens (default n_parallel * n_ctx), at
 * gm_kv_bytes_per_token bytes each (Qwen3-0.6B: 224 KiB in f32, 112 KiB in
 * bf16), mapped at start and touched as used.
 *
 * Prefix cache: a finished request's keys and values stay in the pool
 * (cut to whole blocks of GM_KV_BLOCK tokens) until the blocks are needed,
 * least recently used first.  A request whose prompt starts with a block
 * or more of a cached or running sequence's tokens, with the same
 * adapters, shares those blocks and reads only the rest of its prompt
 * (/metrics: gitmodel_prompt_tokens_cached_total, gitmodel_kv_blocks_*).
 *
 * Adapters are loaded once at start and selected per request
 * ("model": "ID:ADAPTER" or "adapters": [{"name", "scale"}]); each
 * selection in use is registered on the forward pass as an adapter set
 * (16 at most at once), so requests with different adapters share a batch.
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

#include "base/error.h"
#include "ops/kv.h"
#include "ops/matmul-mode.h"

/* Prompt tokens evaluated per step (all sequences together) unless configured. */
#define GM_SERVE_PREFILL_CHUNK 256

typedef struct gm_serve_config {
	const char *model_dir;
	const char *model_id;       /* the id clients use; NULL: gm_serve_model_id(model_dir) */
	const char *addr;           /* numeric IPv4 or IPv6 address, or a host name; NULL: 127.0.0.1 */
	int port;                   /* 0: any free port (see gm_serve_port) */
	int n_parallel;             /* requests generated at once (batched), >= 1 */
	int queue_size;             /* requests that may wait beyond those, >= 0 */
	const char *api_key;        /* NULL: no authentication */
	size_t max_body;            /* largest request body in bytes (413 beyond) */
	double shutdown_timeout_s;  /* gm_serve_stop: how long in-flight requests may finish */
	int n_ctx;                  /* per sequence; 0: the model's, at most 4096 */
	int n_threads;              /* compute threads in all; 0: one per CPU */
	int64_t kv_tokens;          /* KV pool size in tokens; 0: n_parallel * n_ctx */
	enum gm_kv_type kv_type;    /* of the KV memory; GM_KV_AUTO (0): the model's dtype (git infer
	                             * passes F32 unless --kv-type, as its own generation keeps them) */
	enum gm_matmul_mode matmul; /* products of BF16 weights (ops.h); 0: GM_MATMUL_PRECISE */
	int prefill_chunk;          /* prompt tokens per step; 0: GM_SERVE_PREFILL_CHUNK */
	int no_prefix_cache;        /* 1: never share prompt prefixes (for comparisons) */
	/* Extra adapters: "DIR" (named after its base name, without an NN_
	 * prefix) or "NAME=DIR"; those in MODEL/adapters/ are loaded too. */
	const char *const *adapters;
	size_t n_adapters;
	/* Against clients that hold connections (conns.h): the request's headers
	 * must arrive within header_timeout_s (from the connection's start or
	 * the previous answer), its body within body_timeout_s after them; at
	 * most max_connections connections, max_client_connections per client
	 * address (more are closed at once). */
	double header_timeout_s;
	double body_timeout_s;
	int max_connections;
	int max_client_connections;
	/* Prompt tokens that may wait in the queue in all (429 beyond); 0: twice the KV pool. */
	int64_t max_queued_tokens;
	/* The files and fine-tuning API (ftapi.h, finetune.h): jobs run git train
	 * in the background with ft_threads threads (0: half the server's) at nice
	 * +ft_nice, checkpointing every ft_checkpoint_every steps; state in ft_dir
	 * (NULL: under the registry's data directory); files of max_file_size
	 * bytes at most (0: 512 MiB). */
	int no_fine_tuning;         /* 1: those endpoints answer 404 */
	const char *ft_dir;
	uint64_t max_file_size;
	int ft_threads;
	int ft_nice;
	int64_t ft_checkpoint_every;
} gm_serve_config;

/* 1 parallel sequence, queue of 16, 4 MiB bodies, 10 s to shut down, 127.0.0.1,
 * 30 s for headers, 60 s for a body, 256 connections, 32 per client;
 * fine-tuning on, jobs at nice +10 checkpointing every 25 steps. */
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
 * starts the scheduler; requests are served from then on.  On failure the
 * server keeps answering 503 until stopped.
 */
int gm_serve_load(gm_serve *s, gm_error *err);
/* The model id and the number of adapters (after gm_serve_load). */
const char *gm_serve_id(const gm_serve *s);
int gm_serve_n_adapters(const gm_serve *s);
const char *gm_serve_adapter_name(const gm_serve *s, int i);

/*
 * For tests and fuzzing: what POST /v1/chat/completions (chat 1) or
 * /v1/completions (chat 0) would make of the body[0..len), parsed and
 * validated as a connection does (JSON, fields, model and adapters, chat
 * template, tokenizer, context), without queueing or generating anything.
 * Needs gm_serve_load.  Fills *out and returns out->status: 200 when the
 * request would be admitted, else the 4xx it would be answered with.
 */
typedef struct gm_serve_request_check {
	int status;
	char message[GM_ERROR_MSG_MAX];  /* the error's message; "" when accepted */
	const char *code;                /* the error's code ("invalid_json"...); static */
	/* an accepted request, as the scheduler would get it */
	size_t n_prompt;
	int32_t prompt_min, prompt_max;  /* smallest and largest prompt token id */
	int64_t max_tokens;              /* -1: up to the context */
	int n, n_stops, n_bias, n_adapters, top_logprobs, logprobs, stream, grammar;
	double temperature, top_p, min_p, repetition_penalty, presence, frequency;
	int64_t top_k;
	float min_bias, max_bias;        /* logit_bias values and token ids (0 when none) */
	int32_t bias_min_id, bias_max_id;
	float min_scale, max_scale;      /* adapter scales (1 when none) */
	int n_ctx;                       /* the server's, for comparisons */
	size_t n_vocab;
} gm_serve_request_check;
int gm_serve_check_request(gm_serve *s, int chat, const char *body, size_t len, gm_serve_request_check *out);

/* ---------------------------------------------------------------- for code beside the server */

struct gm_adapter_set;
struct gm_model;
struct gm_tokenizer;

/*
 * The server's adapters (adapterset.h), after gm_serve_load: requests
 * select them by name and pin a version each.  Adapters may be added and
 * new versions published there at any time (a trainer, a fine-tuning
 * job); an adapter added directly to the set serves at once, but has no
 * row in /v1/stats: gm_serve_add_adapter does both.
 */
struct gm_adapter_set *gm_serve_adapter_set(gm_serve *s);
/*
 * Adds the adapter directory dir (PEFT LoRA, or sparse delta) under name
 * at run time, as --adapter NAME=DIR does at start: servable as
 * MODEL:NAME from the call's return.  *index (may be NULL): its index in
 * the set.
 */
int gm_serve_add_adapter(gm_serve *s, const char *name, const char *dir, int *index, gm_error *err);
/*
 * The same with weights already open (one of lora and sparse, owned by the
 * server from the call on), the first version numbered first (0: 1).
 */
struct gm_peft_adapter;
struct gm_sparse_adapter;
int gm_serve_add_adapter_weights(gm_serve *s, const char *name, struct gm_peft_adapter *lora,
				 struct gm_sparse_adapter *sparse, uint64_t first, int *index, gm_error *err);
/* The model and its tokenizer (after gm_serve_load; owned by the server). */
const struct gm_model *gm_serve_model(const gm_serve *s);
const struct gm_tokenizer *gm_serve_tokenizer(const gm_serve *s);

/*
 * More endpoints: a request whose path starts with prefix (the longest
 * registered prefix wins; the built-in endpoints come first) is handed to
 * fn on its connection's thread, after the API key and readiness checks,
 * with its whole body (at most max_body bytes; 413 beyond), for any
 * method.  fn fills *out (gm_serve_reply_json / _error help); the server
 * frees out->body.  At most GM_SERVE_MAX_ROUTES prefixes; register them
 * after gm_serve_load, ctx must outlive the server's stop.
 */
#define GM_SERVE_MAX_ROUTES 8
typedef struct gm_serve_request {
	const char *method;        /* "GET", "POST", "DELETE"... */
	const char *url;           /* the path, without the query */
	const char *content_type;  /* the request's Content-Type; NULL when none */
	const char *body;          /* [len], NUL-terminated; "" without a body */
	size_t len;
} gm_serve_request;
typedef struct gm_serve_reply {
	int status;
	char *body;                /* malloc'd, [len] */
	size_t len;
	const char *content_type;  /* static; NULL: application/json */
	char headers[4][2][256];   /* extra (name, value) pairs */
	size_t n_headers;
} gm_serve_reply;
typedef void (*gm_serve_route_fn)(void *ctx, const gm_serve_request *rq, gm_serve_reply *out);
int gm_serve_route(gm_serve *s, const char *prefix, gm_serve_route_fn fn, void *ctx, gm_error *err);
/* out's body as the JSON text of o (o is put); content type application/json. */
struct json_object;
void gm_serve_reply_json(gm_serve_reply *out, int status, struct json_object *o);
/* An error in OpenAI's shape {"error": {"message", "type", "param", "code"}}. */
void gm_serve_reply_error(gm_serve_reply *out, int status, const char *param, const char *code, const char *fmt,
			  ...) __attribute__((format(printf, 5, 6)));

/*
 * Graceful stop: new connections are refused and new requests get 503;
 * requests in flight may finish for shutdown_timeout_s, then are
 * cancelled (a stream ends with an error event, others get 503); then
 * the scheduler and the connection threads end.  Returns the number of
 * requests cancelled.
 */
int gm_serve_stop(gm_serve *s);
void gm_serve_free(gm_serve *s);

#endif
