/* serve.c - the OpenAI-compatible HTTP server (see serve.h). */
#include "serve/serve.h"
#include "serve/conns.h"
#include "serve/adapterset.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/clock.h"
#include "text/chat.h"
#include "engine/forward.h"
#include "base/fs.h"
#include "engine/generate.h"
#include "engine/modelfiles.h"
#include "base/json.h"
#include "ops/kv.h"
#include "base/log.h"
#include "formats/model.h"
#include "formats/peft.h"
#include "base/rng.h"
#include "engine/sampler.h"
#include "formats/sparse.h"
#include "text/grammar.h"
#include "text/jsonschema.h"
#include "serve/stats.h"
#include "serve/webui.h"
#include "text/tokenizer.h"
#include "text/toolcall.h"
#include "serve/toolreq.h"
#include "serve/ftapi.h"

#define MAX_CHOICES 16       /* n */
#define MAX_STOPS 16         /* stop strings */
#define MAX_SELECTED 16      /* adapters applied to one request */
#define MAX_TOP_LOGPROBS 20
#define MAX_LOGIT_BIAS 1024
#define POLL_MS 100          /* how often a waiting connection checks its client */

/* ---------------------------------------------------------------- config */

void gm_serve_config_init(gm_serve_config *c)
{
	memset(c, 0, sizeof(*c));
	c->n_parallel = 1;
	c->queue_size = 16;
	c->max_body = 4u << 20;
	c->shutdown_timeout_s = 10;
	c->header_timeout_s = 30;
	c->body_timeout_s = 60;
	c->max_connections = 256;
	c->max_client_connections = 32;
	c->ft_nice = 10;
	c->ft_checkpoint_every = 25;
}

int gm_serve_parse_listen(const char *spec, char **addr, int *port, gm_error *err)
{
	const char *p = spec, *colon;
	char *end;
	long v;

	*addr = NULL;
	*port = 0;
	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');

		if (!close || close[1] != ':' || close == spec + 1)
			return gm_error_set(err, GM_EINVAL, "'%s' is not [ADDR:]PORT (an IPv6 address is written "
					    "[ADDR]:PORT)", spec);
		*addr = strndup(spec + 1, (size_t)(close - spec - 1));
		p = close + 2;
	} else if ((colon = strrchr(spec, ':'))) {
		if (colon == spec || strchr(spec, ':') != colon)
			return gm_error_set(err, GM_EINVAL, "'%s' is not [ADDR:]PORT (an IPv6 address is written "
					    "[ADDR]:PORT)", spec);
		*addr = strndup(spec, (size_t)(colon - spec));
		p = colon + 1;
	}
	errno = 0;
	v = isdigit((unsigned char)*p) ? strtol(p, &end, 10) : -1;
	if (v < 0 || v > 65535 || errno || *end) {
		free(*addr);
		*addr = NULL;
		return gm_error_set(err, GM_EINVAL, "'%s' is not [ADDR:]PORT with a port from 0 to 65535", spec);
	}
	*port = (int)v;
	return 0;
}

char *gm_serve_model_id(const char *model_dir)
{
	char *real = realpath(model_dir, NULL), *copy = gm_xstrdup(real ? real : model_dir), *base, *id;
	size_t n = strlen(copy);

	free(real);
	while (n > 1 && copy[n - 1] == '/')
		copy[--n] = '\0';
	base = strrchr(copy, '/');
	id = gm_xstrdup(base && base[1] ? base + 1 : copy);
	free(copy);
	return id;
}

/* ---------------------------------------------------------------- metrics */

/* Histogram bucket bounds (seconds), Prometheus style (cumulative on output). */
static const double ttft_bounds[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 };
static const double tpot_bounds[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1 };
#define N_TTFT (sizeof(ttft_bounds) / sizeof(ttft_bounds[0]))
#define N_TPOT (sizeof(tpot_bounds) / sizeof(tpot_bounds[0]))

struct histogram {
	const double *bounds;
	size_t n_bounds;
	uint64_t counts[16]; /* per bucket (not cumulative); [n_bounds] is +Inf */
	double sum;
	uint64_t count;
};

static void histogram_observe(struct histogram *h, double v)
{
	size_t i = 0;

	while (i < h->n_bounds && v > h->bounds[i])
		i++;
	h->counts[i]++;
	h->sum += v;
	h->count++;
}

enum endpoint { EP_CHAT, EP_COMPLETIONS, EP_MODELS, EP_HEALTH, EP_METRICS, EP_STATS, EP_WEB, EP_FT, EP_OTHER,
	       N_ENDPOINTS };
static const char *const endpoint_names[N_ENDPOINTS] = {
	"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/v1/stats", "/",
	"/v1/fine_tuning", "other"
};
static const int counted_codes[] = { 200, 400, 401, 404, 405, 413, 429, 500, 503 };
#define N_CODES (sizeof(counted_codes) / sizeof(counted_codes[0]))

struct metrics {
	uint64_t requests[N_ENDPOINTS][N_CODES + 1]; /* last: other codes */
	uint64_t prompt_tokens, completion_tokens, cancelled;
	uint64_t prompt_tokens_cached;  /* prompt positions forked from the prefix cache */
	uint64_t steps, batch_tokens;   /* batched forward passes, tokens they evaluated */
	uint64_t step_tokens;           /* in the last one */
	double step_seconds;
	int64_t kv_used;                /* blocks referenced */
	int cache_entries;
	struct histogram ttft, tpot;
};

/* ---------------------------------------------------------------- state */

struct selected {
	int idx;      /* into gm_serve.adapters (adapterset.h) */
	float scale;
	uint64_t version;          /* the version pinned (adapterset.h) */
	gm_adapter_version *pin;   /* a job's own reference on it; NULL in copies (asets, cache entries) */
};

enum job_kind { JOB_CHAT, JOB_COMPLETION };
enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE };
enum cancel_why { CANCEL_NONE, CANCEL_CLIENT, CANCEL_SHUTDOWN };

struct choice {
	gm_buf text;
	const char *finish;
	json_object *logprobs; /* chat: {"content": [...]}, completion: {"tokens": ...}; NULL when not asked */
	json_object *tool_calls; /* message.tool_calls; NULL: none */
};

struct job {
	gm_serve *srv;
	int refs;                  /* connection and scheduler; under srv->lock */
	enum job_kind kind;
	char id[48];
	int64_t created;
	char *model_name;          /* as the client wrote it, echoed back */
	int32_t *prompt;
	size_t n_prompt;
	int64_t max_tokens;        /* -1: up to the context */
	gm_sampler_params sp;
	double presence, frequency;
	int32_t *bias_ids;
	float *bias;
	size_t n_bias;
	char *stops[MAX_STOPS];
	size_t n_stops;
	gm_grammar *grammar;       /* constrained decoding (response_format, "grammar"); NULL: none */
	int n;
	int logprobs, top_logprobs; /* logprobs: asked for at all */
	int stream, include_usage;
	gm_toolreq tools;          /* tools, tool_choice (chat) */
	uint64_t tool_seed;        /* the calls' ids */
	struct selected sel[MAX_SELECTED];
	int n_sel;
	int fd;                    /* the client's socket, polled for a disconnect */
	double t_arrival;

	/* under srv->lock */
	enum job_state state;
	struct job *next;          /* in the queue */
	gm_buf out;                /* server-sent events not yet handed to the connection */
	size_t out_off;
	int http_status;           /* != 200: the error below (when not streaming) */
	char err_msg[GM_ERROR_MSG_MAX];
	const char *err_type, *err_code;

	atomic_int cancel;         /* enum cancel_why */

	struct job *run_next;      /* in the running list; under srv->lock */
	int failed;                /* an error was answered (the scheduler's) */

	/* written by the scheduler, read once the job is done */
	struct choice choices[MAX_CHOICES];
	int64_t completion_tokens;
};

struct run;
struct centry;
struct aset;

struct route {
	char *prefix;
	gm_serve_route_fn fn;
	void *ctx;
};

struct gm_serve {
	gm_serve_config c;
	char *addr_desc;
	int port;
	int listen_fd;
	struct MHD_Daemon *daemon;
	gm_conn_guard *guard;      /* read deadlines of every connection */

	/* after gm_serve_load */
	char *id;
	gm_model *model;
	gm_tokenizer *tok;
	gm_chat_template *chat;    /* NULL: the model has none */
	char *chat_error;          /* why, then */
	gm_adapter_set *adapters;  /* by name, in versions (adapterset.h) */
	struct route routes[GM_SERVE_MAX_ROUTES]; /* more endpoints (gm_serve_route); under lock */
	int n_routes;
	/* the scheduler's own (see sched_main) */
	gm_forward *f;             /* all compute threads */
	gm_grammar_vocab *gvocab;  /* for grammar masks; built at the first request with a grammar */
	gm_kv *kv;                 /* every sequence's keys and values */
	pthread_t sched;
	int sched_started;
	struct run **runs;         /* [c.n_parallel], n_runs running */
	int n_runs;
	struct centry *cache;      /* [MAX_CACHED], n_cache entries */
	int n_cache;
	struct aset *asets;        /* [MAX_ASETS] */
	uint64_t tick;             /* for least-recently-used choices */
	gm_forward_seq *batch;     /* [c.n_parallel] */
	struct run **brun;         /* [c.n_parallel]: batch[i] is brun[i]'s */
	int prefill_chunk;
	int n_ctx;
	int64_t kv_blocks;         /* in the pool */
	size_t n_vocab;
	int64_t created;           /* when the model was loaded: /v1/models' "created" */

	pthread_mutex_t lock;
	pthread_cond_t work_cond;  /* a job was queued, or quit */
	pthread_cond_t done_cond;  /* a job made progress */
	int ready, stopping, quit;
	struct job *head, *tail;   /* waiting */
	struct job *running;       /* taken by the scheduler, not yet done */
	int n_queued, n_running;
	int64_t queued_tokens;     /* prompt tokens of the waiting jobs */
	int64_t max_queued_tokens;
	int n_answering;           /* admitted requests whose answer is not yet sent */
	uint64_t rng;
	uint64_t next_id;
	struct metrics m;
	char *api_key;
	gm_stats *stats;           /* /v1/stats and the page's dashboard (stats.h); after gm_serve_load */
	gm_ftapi *ft;              /* /v1/files, /v1/fine_tuning (ftapi.h); NULL when off */
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* splitmix64 over the server's state; under srv->lock. */
static uint64_t next_random(gm_serve *s)
{
	uint64_t z = (s->rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void count_request(gm_serve *s, enum endpoint ep, int status)
{
	size_t i;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < N_CODES && counted_codes[i] != status; i++)
		;
	s->m.requests[ep][i]++;
	pthread_mutex_unlock(&s->lock);
}

/* ---------------------------------------------------------------- jobs */

static void job_free(struct job *j)
{
	size_t i;

	free(j->model_name);
	free(j->prompt);
	free(j->bias_ids);
	free(j->bias);
	gm_grammar_free(j->grammar);
	for (i = 0; i < j->n_stops; i++)
		free(j->stops[i]);
	for (i = 0; i < MAX_CHOICES; i++) {
		gm_buf_release(&j->choices[i].text);
		json_object_put(j->choices[i].logprobs);
		json_object_put(j->choices[i].tool_calls);
	}
	gm_toolreq_release(&j->tools);
	gm_buf_release(&j->out);
	for (i = 0; i < (size_t)j->n_sel; i++)
		gm_adapter_version_release(j->sel[i].pin);
	free(j);
}

/* Drops one reference; under srv->lock. */
static void job_unref_locked(struct job *j)
{
	if (--j->refs == 0)
		job_free(j);
}

static void job_unref(struct job *j)
{
	gm_serve *s = j->srv;

	pthread_mutex_lock(&s->lock);
	job_unref_locked(j);
	pthread_mutex_unlock(&s->lock);
}

/* ---------------------------------------------------------------- API errors */

struct api_error {
	int status;
	const char *param, *code;
	char msg[GM_ERROR_MSG_MAX];
};

static const char *error_type(int status)
{
	/* as OpenAI's: a wrong key is an invalid_request_error too */
	switch (status) {
	case 429: return "rate_limit_error";
	case 500: return "server_error";
	case 503: return "service_unavailable";
	default: return "invalid_request_error";
	}
}

static int fail(struct api_error *e, int status, const char *param, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static int fail(struct api_error *e, int status, const char *param, const char *code, const char *fmt, ...)
{
	va_list ap;

	e->status = status;
	e->param = param;
	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return -1;
}

static json_object *error_json(int status, const char *param, const char *code, const char *msg)
{
	json_object *o = json_object_new_object(), *e = json_object_new_object();

	json_object_object_add(e, "message", json_object_new_string(msg));
	json_object_object_add(e, "type", json_object_new_string(error_type(status)));
	json_object_object_add(e, "param", param ? json_object_new_string(param) : NULL);
	json_object_object_add(e, "code", code ? json_object_new_string(code) : NULL);
	json_object_object_add(o, "error", e);
	return o;
}

static const char *to_json(json_object *o)
{
	return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* ---------------------------------------------------------------- HTTP replies */

static enum MHD_Result reply(gm_serve *s, struct MHD_Connection *c, enum endpoint ep, int status,
			     const char *type, const char *body, size_t len, int retry_after)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (retry_after)
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
	if (status == 401)
		MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
	ret = MHD_queue_response(c, (unsigned int)status, r);
	MHD_destroy_response(r);
	count_request(s, ep, status);
	return ret;
}

static enum MHD_Result reply_json(gm_serve *s, struct MHD_Connection *c, enum endpoint ep, int status,
				  json_object *o)
{
	const char *text = to_json(o);
	enum MHD_Result ret = reply(s, c, ep, status, "application/json", text, strlen(text), 0);

	json_object_put(o);
	return ret;
}

/*
 * The versions a job pinned, for its response: "NAME=V" for each adapter
 * ("kjv=1, learned=7"), so that a client can tell which weights answered.
 */
#define VERSION_HEADER "X-Adapter-Version"
static void add_version_header(gm_serve *s, struct MHD_Response *r, const struct job *j)
{
	gm_buf b = GM_BUF_INIT;
	int i;

	if (!j->n_sel)
		return;
	for (i = 0; i < j->n_sel; i++)
		gm_buf_addf(&b, "%s%s=%llu", i ? ", " : "", gm_adapter_set_name(s->adapters, j->sel[i].idx),
			    (unsigned long long)j->sel[i].version);
	MHD_add_response_header(r, VERSION_HEADER, b.buf);
	gm_buf_release(&b);
}

static enum MHD_Result reply_error(gm_serve *s, struct MHD_Connection *c, enum endpoint ep,
				   const struct api_error *e)
{
	json_object *o = error_json(e->status, e->param, e->code, e->msg);
	const char *text = to_json(o);
	enum MHD_Result ret = reply(s, c, ep, e->status, "application/json", text, strlen(text), e->status == 429);

	json_object_put(o);
	return ret;
}

/* ---------------------------------------------------------------- the client's socket */

/*
 * Has the client closed its end?  The socket is only peeked at: a
 * pipelined next request stays where it is.
 */
static int peer_gone(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
	char c;
	ssize_t n;

	if (fd < 0 || poll(&p, 1, 0) <= 0)
		return 0;
	if (p.revents & (POLLHUP | POLLERR | POLLNVAL | POLLRDHUP))
		return 1;
	n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void timed_wait(pthread_cond_t *cond, pthread_mutex_t *lock, int ms)
{
	struct timespec ts = gm_deadline_ms(ms);

	pthread_cond_timedwait(cond, lock, &ts);
}

/* ---------------------------------------------------------------- request fields */

/*
 * Field getters: a field that is absent or null is not given (returns 0,
 * *given 0); one of the wrong type or out of range fails with a 400
 * naming it.
 */
static json_object *field(json_object *o, const char *key)
{
	json_object *v = NULL;

	if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
		return NULL;
	return v;
}

static int get_number(json_object *o, const char *key, double lo, double hi, double *out, int *given,
		      struct api_error *e)
{
	json_object *v = field(o, key);
	double d;

	*given = 0;
	if (!v)
		return 0;
	if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
		return fail(e, 400, key, "invalid_type", "'%s' must be a number, not %s", key,
			    json_type_to_name(json_object_get_type(v)));
	d = json_object_get_double(v);
	if (!isfinite(d) || d < lo || d > hi)
		return fail(e, 400, key, "invalid_value", "'%s' must be a number from %g to %g, not %s", key, lo,
			    hi, json_object_to_json_string(v));
	*out = d;
	*given = 1;
	return 0;
}

static int get_int(json_object *o, const char *key, int64_t lo, int64_t hi, int64_t *out, int *given,
		   struct api_error *e)
{
	json_object *v = field(o, key);
	double d;

	*given = 0;
	if (!v)
		return 0;
	if (json_object_is_type(v, json_type_int)) {
		int64_t i = json_object_get_int64(v);

		/* json-c saturates what does not fit in 64 bits */
		if (i < lo || i > hi || i == INT64_MAX || i == INT64_MIN)
			goto range;
		*out = i;
		*given = 1;
		return 0;
	}
	if (!json_object_is_type(v, json_type_double))
		return fail(e, 400, key, "invalid_type", "'%s' must be an integer, not %s", key,
			    json_type_to_name(json_object_get_type(v)));
	d = json_object_get_double(v);
	if (isinf(d) || (isfinite(d) && (d < (double)lo || d > (double)hi)))
		goto range; /* 1e999 is a number, only too large */
	if (!isfinite(d) || d != floor(d))
		return fail(e, 400, key, "invalid_type", "'%s' must be an integer, not %s", key,
			    json_object_to_json_string(v));
	*out = (int64_t)d;
	*given = 1;
	return 0;
range:
	return fail(e, 400, key, "invalid_value", "'%s' must be an integer from %lld to %lld, not %s", key,
		    (long long)lo, (long long)hi, json_object_to_json_string(v));
}

static int get_bool(json_object *o, const char *key, int *out, struct api_error *e)
{
	json_object *v = field(o, key);

	if (!v)
		return 0;
	if (!json_object_is_type(v, json_type_boolean))
		return fail(e, 400, key, "invalid_type", "'%s' must be true or false, not %s", key,
			    json_type_to_name(json_object_get_type(v)));
	*out = json_object_get_boolean(v);
	return 0;
}

/* ---------------------------------------------------------------- parsing a request */

static int find_adapter(const gm_serve *s, const char *name, size_t len)
{
	return gm_adapter_set_find(s->adapters, name, len);
}

/* Selects adapter idx for j, pinning its current version for the whole request (adapterset.h). */
static void select_adapter(gm_serve *s, struct job *j, int idx, float scale)
{
	struct selected *x = &j->sel[j->n_sel++];

	x->idx = idx;
	x->scale = scale;
	x->pin = gm_adapter_set_acquire(s->adapters, idx);
	x->version = gm_adapter_version_number(x->pin);
}

/* "model": "ID" or "ID:ADAPTER"; "adapters": [{"name", "scale"}]. */
static int parse_model(gm_serve *s, json_object *req, struct job *j, struct api_error *e)
{
	json_object *v = field(req, "model"), *list;
	const char *name, *colon;
	size_t i, n;

	if (!v)
		return fail(e, 400, "model", "missing_required_parameter", "'model' is required: '%s' is served",
			    s->id);
	if (!json_object_is_type(v, json_type_string))
		return fail(e, 400, "model", "invalid_type", "'model' must be a string");
	name = json_object_get_string(v);
	j->model_name = gm_xstrdup(name);
	colon = strchr(name, ':');
	if (strlen(s->id) != (colon ? (size_t)(colon - name) : strlen(name)) || strncmp(name, s->id, strlen(s->id)))
		return fail(e, 404, "model", "model_not_found", "The model '%s' does not exist: this server has "
			    "'%s' (GET /v1/models lists it with its adapters)", name, s->id);
	if (colon) {
		int idx = find_adapter(s, colon + 1, strlen(colon + 1));

		if (idx < 0)
			return fail(e, 404, "model", "model_not_found", "The model '%s' does not exist: no adapter "
				    "'%s' is loaded (GET /v1/models lists them)", name, colon + 1);
		select_adapter(s, j, idx, 1.0f);
	}
	if (!(list = field(req, "adapters")))
		return 0;
	if (!json_object_is_type(list, json_type_array))
		return fail(e, 400, "adapters", "invalid_type", "'adapters' must be a list of {\"name\", \"scale\"}");
	n = json_object_array_length(list);
	for (i = 0; i < n; i++) {
		json_object *a = json_object_array_get_idx(list, i), *nm;
		double scale = 1;
		int given, idx;

		if (!json_object_is_type(a, json_type_object) || !(nm = field(a, "name")) ||
		    !json_object_is_type(nm, json_type_string))
			return fail(e, 400, "adapters", "invalid_type", "'adapters' must be a list of "
				    "{\"name\": string, \"scale\": number}");
		if (get_number(a, "scale", -1e6, 1e6, &scale, &given, e)) {
			e->param = "adapters";
			return -1;
		}
		idx = find_adapter(s, json_object_get_string(nm), strlen(json_object_get_string(nm)));
		if (idx < 0)
			return fail(e, 404, "adapters", "adapter_not_found", "no adapter '%s' is loaded (GET "
				    "/v1/models lists them as %s:NAME)", json_object_get_string(nm), s->id);
		if (j->n_sel == MAX_SELECTED)
			return fail(e, 400, "adapters", "invalid_value", "at most %d adapters per request",
				    MAX_SELECTED);
		select_adapter(s, j, idx, (float)scale);
	}
	return 0;
}

static int add_stop(struct job *j, json_object *v, struct api_error *e)
{
	if (!json_object_is_type(v, json_type_string))
		return fail(e, 400, "stop", "invalid_type", "'stop' must be a string or a list of strings");
	if (j->n_stops == MAX_STOPS)
		return fail(e, 400, "stop", "invalid_value", "at most %d stop strings", MAX_STOPS);
	if (json_object_get_string_len(v))
		j->stops[j->n_stops++] = gm_xstrdup(json_object_get_string(v));
	return 0;
}

static int parse_logit_bias(gm_serve *s, json_object *req, struct job *j, struct api_error *e)
{
	json_object *v = field(req, "logit_bias");
	size_t n;

	if (!v)
		return 0;
	if (!json_object_is_type(v, json_type_object))
		return fail(e, 400, "logit_bias", "invalid_type", "'logit_bias' must be an object of token ids "
			    "to numbers");
	n = (size_t)json_object_object_length(v);
	if (n > MAX_LOGIT_BIAS)
		return fail(e, 400, "logit_bias", "invalid_value", "at most %d entries in 'logit_bias'",
			    MAX_LOGIT_BIAS);
	j->bias_ids = gm_xcalloc(n ? n : 1, sizeof(*j->bias_ids));
	j->bias = gm_xcalloc(n ? n : 1, sizeof(*j->bias));
	json_object_object_foreach(v, key, val) {
		char *end;
		long long id;
		double b;

		errno = 0;
		id = strtoll(key, &end, 10);
		if (!*key || *end || errno || id < 0 || (size_t)id >= s->n_vocab)
			return fail(e, 400, "logit_bias", "invalid_value", "'logit_bias': '%s' is not a token id "
				    "(0 to %zu)", key, s->n_vocab - 1);
		if (!json_object_is_type(val, json_type_int) && !json_object_is_type(val, json_type_double))
			return fail(e, 400, "logit_bias", "invalid_type", "'logit_bias' values must be numbers");
		b = json_object_get_double(val);
		if (!isfinite(b) || b < -100 || b > 100)
			return fail(e, 400, "logit_bias", "invalid_value", "'logit_bias' values must be from -100 "
				    "to 100");
		j->bias_ids[j->n_bias] = (int32_t)id;
		j->bias[j->n_bias++] = (float)b;
	}
	return 0;
}

/*
 * Constrained decoding: "response_format" {"type": "text" | "json_object" |
 * "json_schema", "json_schema": {"name", "schema", "strict"}} or a GBNF
 * "grammar" string, parsed into j->grammar; a schema or grammar that is not
 * supported is a 400 naming the keyword.
 */
static int parse_grammar(json_object *req, struct job *j, struct api_error *e)
{
	json_object *v = field(req, "response_format"), *g = field(req, "grammar");
	gm_buf text = GM_BUF_INIT;
	gm_error err = GM_ERROR_INIT;
	const char *param = "response_format", *type = "text";
	int ret = 0;

	if (v) {
		json_object *t = json_object_is_type(v, json_type_object) ? field(v, "type") : NULL;

		if (!t || !json_object_is_type(t, json_type_string))
			return fail(e, 400, "response_format", "invalid_type", "'response_format' must be "
				    "{\"type\": \"text\" | \"json_object\" | \"json_schema\"}");
		type = json_object_get_string(t);
		if (!strcmp(type, "json_object")) {
			gm_json_object_gbnf("", &text);
		} else if (!strcmp(type, "json_schema")) {
			json_object *js = field(v, "json_schema"), *schema;

			if (!js || !json_object_is_type(js, json_type_object))
				return fail(e, 400, "response_format", "invalid_type", "response_format json_schema needs "
					    "\"json_schema\": {\"name\", \"schema\"}");
			if ((schema = field(js, "schema")))
				ret = gm_json_schema_to_gbnf(schema, "", &text, &err);
			else
				gm_json_object_gbnf("", &text);
		} else if (strcmp(type, "text")) {
			return fail(e, 400, "response_format", "unsupported_parameter", "response_format '%s' is not "
				    "supported (\"text\", \"json_object\", \"json_schema\")", type);
		}
	}
	if (g) {
		if (!json_object_is_type(g, json_type_string))
			return fail(e, 400, "grammar", "invalid_type", "'grammar' must be a string (GBNF)");
		if (text.len) {
			gm_buf_release(&text);
			return fail(e, 400, "grammar", "invalid_value", "'grammar' and response_format %s cannot be "
				    "combined", type);
		}
		param = "grammar";
		gm_buf_add(&text, json_object_get_string(g), (size_t)json_object_get_string_len(g));
		if (!text.len)
			param = NULL;
	}
	if (!ret && text.len)
		ret = gm_grammar_parse(text.buf, text.len, NULL, &j->grammar, &err);
	gm_buf_release(&text);
	if (ret)
		return fail(e, 400, param, "invalid_value", "%s", err.msg);
	return 0;
}

/* Fields of both endpoints that shape the generation. */
static int parse_sampling(gm_serve *s, json_object *req, struct job *j, struct api_error *e)
{
	json_object *v, *so;
	double d;
	int64_t i;
	int given, b;

	gm_sampler_params_init(&j->sp);
	gm_sampler_params_from_generation(&j->sp, &s->model->generation);
	if (get_number(req, "temperature", 0, 2, &d, &given, e))
		return -1;
	if (given)
		j->sp.temperature = d;
	if (get_number(req, "top_p", 0, 1, &d, &given, e))
		return -1;
	if (given && d == 0)
		return fail(e, 400, "top_p", "invalid_value", "'top_p' must be greater than 0 (and at most 1)");
	if (given)
		j->sp.top_p = d;
	if (get_int(req, "top_k", -1, INT32_MAX, &i, &given, e))
		return -1;
	if (given)
		j->sp.top_k = i < 0 ? 0 : i; /* -1: off, as vLLM spells it */
	if (get_number(req, "min_p", 0, 1, &d, &given, e))
		return -1;
	if (given)
		j->sp.min_p = d;
	if (get_number(req, "repetition_penalty", 1e-3, 100, &d, &given, e))
		return -1;
	if (given)
		j->sp.repetition_penalty = d;
	if (get_number(req, "presence_penalty", -2, 2, &j->presence, &given, e) ||
	    get_number(req, "frequency_penalty", -2, 2, &j->frequency, &given, e))
		return -1;
	if (get_int(req, "seed", INT64_MIN + 1, INT64_MAX - 1, &i, &given, e))
		return -1;
	if (given) {
		j->sp.seed = (uint64_t)i;
	} else {
		/* this runs on the connection's thread: the server's RNG is shared */
		pthread_mutex_lock(&s->lock);
		j->sp.seed = next_random(s);
		pthread_mutex_unlock(&s->lock);
	}
	if (get_int(req, "n", 1, MAX_CHOICES, &i, &given, e))
		return -1;
	j->n = given ? (int)i : 1;
	if ((v = field(req, "stop"))) {
		if (json_object_is_type(v, json_type_array)) {
			size_t k, n = json_object_array_length(v);

			for (k = 0; k < n; k++)
				if (add_stop(j, json_object_array_get_idx(v, k), e))
					return -1;
		} else if (add_stop(j, v, e)) {
			return -1;
		}
	}
	if (get_bool(req, "stream", &j->stream, e))
		return -1;
	if ((so = field(req, "stream_options"))) {
		if (!json_object_is_type(so, json_type_object))
			return fail(e, 400, "stream_options", "invalid_type", "'stream_options' must be an object");
		b = 0;
		if (get_bool(so, "include_usage", &b, e))
			return -1;
		j->include_usage = b;
	}
	if (parse_logit_bias(s, req, j, e))
		return -1;
	/* What this server does not do is refused, never ignored (tools: parse_messages). */
	if (j->kind != JOB_CHAT && (v = field(req, "tools")) &&
	    (!json_object_is_type(v, json_type_array) || json_object_array_length(v)))
		return fail(e, 400, "tools", "unsupported_parameter", "tools are for /v1/chat/completions");
	if ((v = field(req, "functions")))
		return fail(e, 400, "functions", "unsupported_parameter", "functions are not supported: use tools");
	if (parse_grammar(req, j, e))
		return -1;
	if (parse_model(s, req, j, e))
		return -1;
	return 0;
}

/* The prompt of a completion: a string, or token ids; one prompt per request. */
static int parse_prompt(gm_serve *s, json_object *req, struct job *j, struct api_error *e)
{
	json_object *v = field(req, "prompt");
	gm_error err = GM_ERROR_INIT;
	size_t i, n;

	if (!v)
		return fail(e, 400, "prompt", "missing_required_parameter", "'prompt' is required");
	if (json_object_is_type(v, json_type_array) && json_object_array_length(v) == 1) {
		json_object *first = json_object_array_get_idx(v, 0);

		if (json_object_is_type(first, json_type_string) || json_object_is_type(first, json_type_array))
			v = first;
	}
	if (json_object_is_type(v, json_type_string)) {
		/* a raw prompt: the tokenizer's BOS where it adds one, as llama-server and vLLM encode it */
		if (gm_tokenizer_encode_special(s->tok, json_object_get_string(v),
						(size_t)json_object_get_string_len(v), &j->prompt, &j->n_prompt, &err))
			return fail(e, 400, "prompt", "invalid_value", "%s", err.msg);
		return 0;
	}
	if (!json_object_is_type(v, json_type_array))
		return fail(e, 400, "prompt", "invalid_type", "'prompt' must be a string or a list of token ids");
	n = json_object_array_length(v);
	j->prompt = gm_xcalloc(n ? n : 1, sizeof(*j->prompt));
	for (i = 0; i < n; i++) {
		json_object *t = json_object_array_get_idx(v, i);
		int64_t id;

		if (json_object_is_type(t, json_type_string) || json_object_is_type(t, json_type_array))
			return fail(e, 400, "prompt", "unsupported_parameter", "one prompt per request: a list of "
				    "%zu prompts is not supported", n);
		if (!json_object_is_type(t, json_type_int) ||
		    (id = json_object_get_int64(t)) < 0 || (size_t)id >= s->n_vocab)
			return fail(e, 400, "prompt", "invalid_value", "'prompt' token ids must be integers from 0 "
				    "to %zu", s->n_vocab - 1);
		j->prompt[j->n_prompt++] = (int32_t)id;
	}
	return 0;
}

/* Message content: a string, or a list of {"type": "text", "text"} parts. */
static int message_text(json_object *content, size_t idx, gm_buf *out, struct api_error *e)
{
	size_t i, n;

	if (content && json_object_is_type(content, json_type_string)) {
		gm_buf_add(out, json_object_get_string(content), (size_t)json_object_get_string_len(content));
		return 0;
	}
	if (!content || !json_object_is_type(content, json_type_array))
		return fail(e, 400, "messages", "invalid_type", "messages[%zu].content must be a string or a list "
			    "of text parts", idx);
	n = json_object_array_length(content);
	for (i = 0; i < n; i++) {
		json_object *p = json_object_array_get_idx(content, i), *t, *text;

		if (!json_object_is_type(p, json_type_object) || !(t = field(p, "type")) ||
		    !json_object_is_type(t, json_type_string))
			return fail(e, 400, "messages", "invalid_type", "messages[%zu].content[%zu] must be "
				    "{\"type\": \"text\", \"text\": ...}", idx, i);
		if (strcmp(json_object_get_string(t), "text"))
			return fail(e, 400, "messages", "unsupported_parameter", "messages[%zu].content[%zu]: "
				    "content of type '%s' is not supported (text only)", idx, i,
				    json_object_get_string(t));
		if (!(text = field(p, "text")) || !json_object_is_type(text, json_type_string))
			return fail(e, 400, "messages", "invalid_type", "messages[%zu].content[%zu].text must be a "
				    "string", idx, i);
		gm_buf_add(out, json_object_get_string(text), (size_t)json_object_get_string_len(text));
	}
	return 0;
}

/* tools, tool_choice, parallel_tool_calls (toolreq.h); the model's format from its template. */
static int parse_tools(gm_serve *s, json_object *req, struct job *j, struct api_error *e)
{
	gm_error err = GM_ERROR_INIT;
	const char *param = NULL;

	if (gm_toolreq_parse(req, gm_toolcall_detect(gm_chat_template_source(s->chat)), &j->tools, &param, &err))
		return fail(e, 400, param, err.code == GM_EUNSUPPORTED ? "unsupported_parameter" : "invalid_value",
			    "%s", err.msg);
	/* tool_choice required or named: the calls' grammar */
	if (j->tools.choice == GM_TOOL_CHOICE_REQUIRED || j->tools.choice == GM_TOOL_CHOICE_NAMED) {
		if (j->grammar)
			return fail(e, 400, "tool_choice", "invalid_value", "tool_choice \"required\" or a named "
				    "function cannot be combined with response_format or grammar");
		if (gm_toolreq_constraint(&j->tools, &j->grammar, &err))
			return fail(e, 400, err.code == GM_EUNSUPPORTED ? "tool_choice" : "tools",
				    err.code == GM_EUNSUPPORTED ? "unsupported_parameter" : "invalid_value", "%s",
				    err.msg);
	}
	pthread_mutex_lock(&s->lock);
	j->tool_seed = next_random(s);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int parse_messages(gm_serve *s, json_object *req, struct job *j, struct api_error *e)
{
	json_object *v = field(req, "messages"), *msgs;
	gm_error err = GM_ERROR_INIT;
	gm_buf text = GM_BUF_INIT, prompt = GM_BUF_INIT;
	size_t i, n;
	int ret = 0;

	if (!v)
		return fail(e, 400, "messages", "missing_required_parameter", "'messages' is required");
	if (!json_object_is_type(v, json_type_array))
		return fail(e, 400, "messages", "invalid_type", "'messages' must be a list");
	if (!(n = json_object_array_length(v)))
		return fail(e, 400, "messages", "invalid_value", "'messages' is empty: give at least one message");
	if (!s->chat)
		return fail(e, 400, "messages", "unsupported_model", "%s", s->chat_error);
	if (parse_tools(s, req, j, e))
		return -1;
	msgs = json_object_new_array();
	for (i = 0; i < n && !ret; i++) {
		json_object *m = json_object_array_get_idx(v, i), *role, *copy;
		const char *r;

		if (!json_object_is_type(m, json_type_object) || !(role = field(m, "role")) ||
		    !json_object_is_type(role, json_type_string)) {
			ret = fail(e, 400, "messages", "invalid_type", "messages[%zu] must be an object with a "
				   "string 'role'", i);
			break;
		}
		r = json_object_get_string(role);
		if (strcmp(r, "system") && strcmp(r, "developer") && strcmp(r, "user") && strcmp(r, "assistant") &&
		    strcmp(r, "tool")) {
			ret = fail(e, 400, "messages", "invalid_value", "messages[%zu].role '%s' is not supported "
				   "(system, developer, user, assistant, tool)", i, r);
			break;
		}
		gm_buf_reset(&text);
		/* an assistant message with tool_calls may have no content */
		if ((strcmp(r, "assistant") || (field(m, "content") &&
						!json_object_is_type(field(m, "content"), json_type_null))) &&
		    (ret = message_text(field(m, "content"), i, &text, e)))
			break;
		copy = json_object_new_object();
		/* OpenAI's newer name for the system role; chat templates know "system" */
		json_object_object_add(copy, "role", json_object_new_string(strcmp(r, "developer") ? r : "system"));
		json_object_object_add(copy, "content", json_object_new_string_len(text.buf ? text.buf : "",
										   (int)text.len));
		json_object_array_add(msgs, copy);
		if (gm_toolreq_message(m, i, copy, &err)) {
			ret = fail(e, 400, "messages", "invalid_value", "%s", err.msg);
			break;
		}
	}
	if (!ret) {
		gm_chat_render_opts ro;

		gm_chat_render_opts_init(&ro);
		ro.messages = msgs;
		/* shown to the template with tool_choice "none" too, as vLLM does (0.10 on) */
		ro.tools = j->tools.tools;
		ro.add_generation_prompt = 1;
		if (gm_chat_render_ex(s->chat, &ro, &prompt, &err))
			ret = fail(e, 400, "messages", "invalid_value", "%s", err.msg);
	}
	if (!ret && gm_tokenizer_encode(s->tok, prompt.buf, prompt.len, &j->prompt, &j->n_prompt, &err))
		ret = fail(e, 400, "messages", "invalid_value", "%s", err.msg);
	json_object_put(msgs);
	gm_buf_release(&text);
	gm_buf_release(&prompt);
	return ret;
}

/* The request body into a job; 0, or -1 with e filled. */
static int parse_request(gm_serve *s, enum job_kind kind, const char *body, size_t len, struct job *j,
			 struct api_error *e)
{
	json_tokener *tok;
	json_object *req;
	enum json_tokener_error jerr;
	int64_t i;
	int given, b, ret = -1;
	size_t end;

	if (!len)
		return fail(e, 400, NULL, "invalid_json", "the request body is empty: a JSON object was expected");
	if (len > INT32_MAX)
		return fail(e, 413, NULL, "request_too_large", "the request body is too large");
	tok = json_tokener_new_ex(64);
	/* Strict JSON, and strings must be valid UTF-8. */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	req = json_tokener_parse_ex(tok, body, (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (jerr == json_tokener_continue || (!req && jerr == json_tokener_success))
		return fail(e, 400, NULL, "invalid_json", "invalid JSON: unexpected end of the body");
	if (jerr != json_tokener_success)
		return fail(e, 400, NULL, "invalid_json", "invalid JSON at byte %zu: %s", end,
			    json_tokener_error_desc(jerr));
	for (; end < len; end++)
		if (!strchr(" \t\r\n", body[end])) {
			fail(e, 400, NULL, "invalid_json", "invalid JSON: trailing data at byte %zu", end);
			goto out;
		}
	if (!json_object_is_type(req, json_type_object)) {
		fail(e, 400, NULL, "invalid_json", "the request body must be a JSON object");
		goto out;
	}
	j->kind = kind;
	if (parse_sampling(s, req, j, e))
		goto out;
	if (kind == JOB_CHAT) {
		int lp = 0;

		if (get_int(req, "max_completion_tokens", 1, INT32_MAX, &i, &given, e))
			goto out;
		if (!given && get_int(req, "max_tokens", 1, INT32_MAX, &i, &given, e))
			goto out;
		j->max_tokens = given ? i : -1;
		if (get_bool(req, "logprobs", &lp, e) ||
		    get_int(req, "top_logprobs", 0, MAX_TOP_LOGPROBS, &i, &given, e))
			goto out;
		if (given && i > 0 && !lp) {
			fail(e, 400, "top_logprobs", "invalid_value", "'top_logprobs' needs \"logprobs\": true");
			goto out;
		}
		j->logprobs = lp;
		j->top_logprobs = given ? (int)i : 0;
		if (parse_messages(s, req, j, e))
			goto out;
	} else {
		json_object *v;

		if (get_int(req, "max_tokens", 1, INT32_MAX, &i, &given, e))
			goto out;
		/* OpenAI's default for completions is 16 tokens */
		j->max_tokens = given ? i : 16;
		if (get_int(req, "logprobs", 0, MAX_TOP_LOGPROBS, &i, &given, e))
			goto out;
		j->logprobs = given;
		j->top_logprobs = given ? (int)i : 0;
		b = 0;
		if (get_bool(req, "echo", &b, e))
			goto out;
		if (b) {
			fail(e, 400, "echo", "unsupported_parameter", "echo is not supported");
			goto out;
		}
		if ((v = field(req, "suffix")) && (!json_object_is_type(v, json_type_string) ||
						   json_object_get_string_len(v))) {
			fail(e, 400, "suffix", "unsupported_parameter", "suffix (insertion) is not supported");
			goto out;
		}
		if (get_int(req, "best_of", 1, MAX_CHOICES, &i, &given, e))
			goto out;
		if (given && i != j->n) {
			fail(e, 400, "best_of", "unsupported_parameter", "best_of other than n is not supported");
			goto out;
		}
		if (parse_prompt(s, req, j, e))
			goto out;
	}
	if (!j->n_prompt) {
		fail(e, 400, kind == JOB_CHAT ? "messages" : "prompt", "invalid_value",
		     "the prompt is empty: there is nothing to continue");
		goto out;
	}
	if (j->n_prompt >= (size_t)s->n_ctx || (j->max_tokens > 0 && (int64_t)j->n_prompt + j->max_tokens >
								 s->n_ctx)) {
		fail(e, 400, kind == JOB_CHAT ? "messages" : "prompt", "context_length_exceeded",
		     "This model's maximum context length is %d tokens. However, you requested %lld tokens (%zu in "
		     "the %s, %lld in the completion). Please reduce the length of the %s or completion.", s->n_ctx,
		     (long long)j->n_prompt + (j->max_tokens > 0 ? j->max_tokens : 0), j->n_prompt,
		     kind == JOB_CHAT ? "messages" : "prompt", (long long)(j->max_tokens > 0 ? j->max_tokens : 0),
		     kind == JOB_CHAT ? "messages" : "prompt");
		goto out;
	}
	/* the blocks run_start asks for a prompt alone in the pool */
	if (((int64_t)j->n_prompt + GM_KV_BLOCK - 1) / GM_KV_BLOCK + 1 > s->kv_blocks) {
		fail(e, 400, kind == JOB_CHAT ? "messages" : "prompt", "context_length_exceeded",
		     "The %s is %zu tokens: more than this server's KV memory holds (%lld tokens, --kv-tokens).",
		     kind == JOB_CHAT ? "messages" : "prompt", j->n_prompt,
		     (long long)(s->kv_blocks - 1) * GM_KV_BLOCK);
		goto out;
	}
	ret = 0;
out:
	json_object_put(req);
	return ret;
}

/* serve.h: a request body checked without HTTP, for tests and fuzzing. */
int gm_serve_check_request(gm_serve *s, int chat, const char *body, size_t len, gm_serve_request_check *out)
{
	struct api_error e;
	struct job *j;
	size_t i;
	int ready;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&s->lock);
	ready = s->ready;
	pthread_mutex_unlock(&s->lock);
	out->n_ctx = s->n_ctx;
	out->n_vocab = s->n_vocab;
	if (!ready) {
		out->status = 503;
		out->code = "model_not_loaded";
		snprintf(out->message, sizeof(out->message), "the model is not loaded");
		return out->status;
	}
	j = gm_xcalloc(1, sizeof(*j));
	j->srv = s;
	j->refs = 1;
	j->fd = -1;
	gm_buf_init(&j->out);
	if (parse_request(s, chat ? JOB_CHAT : JOB_COMPLETION, body ? body : "", len, j, &e)) {
		out->status = e.status;
		out->code = e.code;
		snprintf(out->message, sizeof(out->message), "%s", e.msg);
		job_free(j);
		return out->status;
	}
	out->status = 200;
	out->n_prompt = j->n_prompt;
	out->prompt_min = INT32_MAX;
	out->prompt_max = INT32_MIN;
	for (i = 0; i < j->n_prompt; i++) {
		out->prompt_min = j->prompt[i] < out->prompt_min ? j->prompt[i] : out->prompt_min;
		out->prompt_max = j->prompt[i] > out->prompt_max ? j->prompt[i] : out->prompt_max;
	}
	out->max_tokens = j->max_tokens;
	out->n = j->n;
	out->n_stops = (int)j->n_stops;
	out->n_bias = (int)j->n_bias;
	out->n_adapters = j->n_sel;
	out->top_logprobs = j->top_logprobs;
	out->logprobs = j->logprobs;
	out->stream = j->stream;
	out->grammar = j->grammar != NULL;
	out->temperature = j->sp.temperature;
	out->top_p = j->sp.top_p;
	out->min_p = j->sp.min_p;
	out->repetition_penalty = j->sp.repetition_penalty;
	out->top_k = j->sp.top_k;
	out->presence = j->presence;
	out->frequency = j->frequency;
	out->min_bias = out->max_bias = 0;
	out->bias_min_id = out->bias_max_id = 0;
	for (i = 0; i < j->n_bias; i++) {
		if (!i || j->bias[i] < out->min_bias)
			out->min_bias = j->bias[i];
		if (!i || j->bias[i] > out->max_bias)
			out->max_bias = j->bias[i];
		if (!i || j->bias_ids[i] < out->bias_min_id)
			out->bias_min_id = j->bias_ids[i];
		if (!i || j->bias_ids[i] > out->bias_max_id)
			out->bias_max_id = j->bias_ids[i];
	}
	out->min_scale = out->max_scale = 1;
	for (i = 0; i < (size_t)j->n_sel; i++) {
		if (!i || j->sel[i].scale < out->min_scale)
			out->min_scale = j->sel[i].scale;
		if (!i || j->sel[i].scale > out->max_scale)
			out->max_scale = j->sel[i].scale;
	}
	job_free(j);
	return out->status;
}

/* ---------------------------------------------------------------- generation (scheduler side) */

/* One choice being generated. */
struct gen_ctx {
	struct job *job;
	int index;
	int32_t *counts;          /* per token id, for presence/frequency penalties; NULL when off */
	float *raw;               /* the raw logits of the last step (logprobs) */
	double lse;               /* their log-sum-exp */
	int32_t top_ids[MAX_TOP_LOGPROBS];
	int n_top;
	json_object *lp_pending;  /* logprob entries not yet streamed (chat) */
	json_object *lp_tokens, *lp_values, *lp_tops, *lp_offsets; /* completions */
	size_t text_offset;
	gm_buf token_bytes, token_text;
	double t_last;
	int n_tokens;
	gm_toolcall_parser *tc;   /* the text read for tool calls; NULL: no tools */
};

/* A token's text for logprobs: its bytes, invalid UTF-8 as U+FFFD. */
static const char *token_string(struct gen_ctx *g, int32_t id)
{
	gm_utf8_stream u = GM_UTF8_STREAM_INIT;

	gm_buf_reset(&g->token_bytes);
	gm_buf_reset(&g->token_text);
	if ((size_t)id < gm_tokenizer_n_tokens(g->job->srv->tok))
		gm_tokenizer_token_bytes(g->job->srv->tok, id, &g->token_bytes, NULL);
	gm_utf8_stream_feed(&u, g->token_bytes.buf, g->token_bytes.len, &g->token_text);
	gm_utf8_stream_finish(&u, &g->token_text);
	gm_buf_addch(&g->token_text, '\0');
	g->token_text.len--;
	return g->token_text.buf;
}

static json_object *bytes_json(const gm_buf *b)
{
	json_object *a = json_object_new_array();
	size_t i;

	for (i = 0; i < b->len; i++)
		json_object_array_add(a, json_object_new_int((unsigned char)b->buf[i]));
	return a;
}

static json_object *chat_logprob(struct gen_ctx *g, int32_t id, double lp)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "token", json_object_new_string(token_string(g, id)));
	json_object_object_add(o, "logprob", gm_json_new_double(lp));
	json_object_object_add(o, "bytes", bytes_json(&g->token_bytes));
	return o;
}

/* The logits of a step: logprobs from the raw row, then the processors. */
static int on_logits(void *ctx, float *logits, size_t n_vocab)
{
	struct gen_ctx *g = ctx;
	struct job *j = g->job;
	size_t i;

	if (atomic_load(&j->cancel))
		return 1;
	if (j->logprobs) {
		float max = -INFINITY;
		double sum = 0;
		int k;

		for (i = 0; i < n_vocab; i++)
			if (logits[i] > max)
				max = logits[i];
		for (i = 0; i < n_vocab; i++)
			sum += exp((double)(logits[i] - max));
		g->lse = (double)max + log(sum);
		memcpy(g->raw, logits, n_vocab * sizeof(*logits));
		/* the k largest, by selection: k <= 20 */
		g->n_top = 0;
		for (k = 0; k < j->top_logprobs; k++) {
			int32_t best = -1;

			for (i = 0; i < n_vocab; i++) {
				int taken = 0, t;

				if (best >= 0 && !(logits[i] > logits[best]))
					continue;
				for (t = 0; t < g->n_top; t++)
					if (g->top_ids[t] == (int32_t)i)
						taken = 1;
				if (!taken)
					best = (int32_t)i;
			}
			if (best < 0)
				break;
			g->top_ids[g->n_top++] = best;
		}
	}
	/* OpenAI's penalties: mu[j] - c[j] * frequency - (c[j] > 0) * presence, c counting generated tokens */
	if (g->counts)
		for (i = 0; i < n_vocab; i++)
			if (g->counts[i])
				logits[i] -= (float)(g->counts[i] * j->frequency + j->presence);
	for (i = 0; i < j->n_bias; i++)
		logits[j->bias_ids[i]] += j->bias[i];
	return 0;
}

static int is_eos(const gm_serve *s, int32_t id)
{
	int i;

	for (i = 0; i < s->model->generation.n_eos; i++)
		if (s->model->generation.eos_token_ids[i] == id)
			return 1;
	return 0;
}

static int on_token(void *ctx, int32_t id)
{
	struct gen_ctx *g = ctx;
	struct job *j = g->job;
	gm_serve *s = j->srv;
	double t = now_s();

	pthread_mutex_lock(&s->lock);
	if (!j->completion_tokens) {
		histogram_observe(&s->m.ttft, t - j->t_arrival);
		gm_stats_observe(s->stats, GM_STATS_TTFT, t - j->t_arrival);
	} else if (g->n_tokens) {
		histogram_observe(&s->m.tpot, t - g->t_last);
		gm_stats_observe(s->stats, GM_STATS_TPOT, t - g->t_last);
	}
	s->m.completion_tokens++;
	pthread_mutex_unlock(&s->lock);
	g->t_last = t;
	g->n_tokens++;
	j->completion_tokens++;
	if (g->counts && id >= 0 && (size_t)id < s->n_vocab)
		g->counts[id]++;
	/* OpenAI's logprobs list the tokens of the text: not the end-of-sequence token */
	if (j->logprobs && !is_eos(s, id)) {
		double lp = (double)g->raw[id] - g->lse;
		int k;

		if (j->kind == JOB_CHAT) {
			json_object *e = chat_logprob(g, id, lp), *tops = json_object_new_array();

			for (k = 0; k < g->n_top; k++)
				json_object_array_add(tops, chat_logprob(g, g->top_ids[k],
									 (double)g->raw[g->top_ids[k]] - g->lse));
			json_object_object_add(e, "top_logprobs", tops);
			json_object_array_add(g->lp_pending, e);
		} else {
			json_object *tops = json_object_new_object();
			const char *str = token_string(g, id);

			json_object_array_add(g->lp_tokens, json_object_new_string(str));
			json_object_array_add(g->lp_offsets, json_object_new_int64((int64_t)g->text_offset));
			g->text_offset += strlen(str);
			json_object_array_add(g->lp_values, gm_json_new_double(lp));
			for (k = 0; k < g->n_top; k++)
				json_object_object_add(tops, token_string(g, g->top_ids[k]),
						       gm_json_new_double((double)g->raw[g->top_ids[k]] - g->lse));
			json_object_array_add(g->lp_tops, tops);
		}
	}
	return atomic_load(&j->cancel) != 0;
}

static json_object *chunk_base(struct job *j)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "id", json_object_new_string(j->id));
	json_object_object_add(o, "object", json_object_new_string(j->kind == JOB_CHAT ? "chat.completion.chunk"
										       : "text_completion"));
	json_object_object_add(o, "created", json_object_new_int64(j->created));
	json_object_object_add(o, "model", json_object_new_string(j->model_name));
	return o;
}

static json_object *usage_json(const struct job *j)
{
	json_object *u = json_object_new_object();

	json_object_object_add(u, "prompt_tokens", json_object_new_int64((int64_t)j->n_prompt));
	json_object_object_add(u, "completion_tokens", json_object_new_int64(j->completion_tokens));
	json_object_object_add(u, "total_tokens", json_object_new_int64((int64_t)j->n_prompt +
									j->completion_tokens));
	return u;
}

/* Appends one server-sent event and wakes the connection. */
static void emit(struct job *j, json_object *o)
{
	gm_serve *s = j->srv;
	const char *text = o ? to_json(o) : "[DONE]";

	pthread_mutex_lock(&s->lock);
	gm_buf_adds(&j->out, "data: ");
	gm_buf_adds(&j->out, text);
	gm_buf_adds(&j->out, "\n\n");
	pthread_cond_broadcast(&s->done_cond);
	pthread_mutex_unlock(&s->lock);
	json_object_put(o);
}

/* A streamed chunk for choice g->index: text (may be NULL), finish reason (may be NULL). */
static void emit_chunk(struct gen_ctx *g, const char *text, size_t len, const char *finish, int role)
{
	struct job *j = g->job;
	json_object *o = chunk_base(j), *choices = json_object_new_array(), *c = json_object_new_object();
	json_object *lp = NULL;

	json_object_object_add(c, "index", json_object_new_int(g->index));
	if (j->kind == JOB_CHAT) {
		json_object *delta = json_object_new_object();

		if (role)
			json_object_object_add(delta, "role", json_object_new_string("assistant"));
		if (text)
			json_object_object_add(delta, "content", json_object_new_string_len(text, (int)len));
		json_object_object_add(c, "delta", delta);
		if (j->logprobs && json_object_array_length(g->lp_pending)) {
			lp = json_object_new_object();
			json_object_object_add(lp, "content", g->lp_pending);
			g->lp_pending = json_object_new_array();
		}
	} else {
		json_object_object_add(c, "text", json_object_new_string_len(text ? text : "", (int)(text ? len : 0)));
		if (j->logprobs) {
			lp = json_object_new_object();
			json_object_object_add(lp, "tokens", g->lp_tokens);
			json_object_object_add(lp, "token_logprobs", g->lp_values);
			json_object_object_add(lp, "top_logprobs", g->lp_tops);
			json_object_object_add(lp, "text_offset", g->lp_offsets);
			g->lp_tokens = json_object_new_array();
			g->lp_values = json_object_new_array();
			g->lp_tops = json_object_new_array();
			g->lp_offsets = json_object_new_array();
		}
	}
	json_object_object_add(c, "logprobs", lp);
	json_object_object_add(c, "finish_reason", finish ? json_object_new_string(finish) : NULL);
	json_object_array_add(choices, c);
	json_object_object_add(o, "choices", choices);
	if (j->include_usage)
		json_object_object_add(o, "usage", NULL);
	emit(j, o);
}

/* A streamed piece of a tool call: delta.tool_calls. */
static void emit_tool_delta(struct gen_ctx *g, const gm_toolcall_event *ev)
{
	struct job *j = g->job;
	json_object *o = chunk_base(j), *choices = json_object_new_array(), *c = json_object_new_object();
	json_object *delta = json_object_new_object(), *calls = json_object_new_array();

	json_object_object_add(c, "index", json_object_new_int(g->index));
	json_object_array_add(calls, gm_toolreq_delta_json(ev));
	json_object_object_add(delta, "tool_calls", calls);
	json_object_object_add(c, "delta", delta);
	json_object_object_add(c, "logprobs", NULL);
	json_object_object_add(c, "finish_reason", NULL);
	json_object_array_add(choices, c);
	json_object_object_add(o, "choices", choices);
	if (j->include_usage)
		json_object_object_add(o, "usage", NULL);
	emit(j, o);
}

/* What the tool-call parser releases: content, or pieces of calls. */
static int on_tool_event(void *ctx, const gm_toolcall_event *ev)
{
	struct gen_ctx *g = ctx;

	if (ev->index < 0)
		emit_chunk(g, ev->text, ev->len, NULL, 0);
	else
		emit_tool_delta(g, ev);
	return 0;
}

static int on_text(void *ctx, const char *text, size_t len)
{
	struct gen_ctx *g = ctx;
	struct job *j = g->job;

	if (atomic_load(&j->cancel))
		return 1;
	if (g->tc)
		gm_toolcall_feed(g->tc, text, len, j->stream ? on_tool_event : NULL, g);
	else if (j->stream)
		emit_chunk(g, text, len, NULL, 0);
	else
		gm_buf_add(&j->choices[g->index].text, text, len);
	return 0;
}

static const char *finish_reason(enum gm_stop_reason r)
{
	return r == GM_STOP_LENGTH || r == GM_STOP_CONTEXT ? "length" : "stop";
}

static void job_error(struct job *j, int status, const char *code, const char *msg)
{
	gm_serve *s = j->srv;

	pthread_mutex_lock(&s->lock);
	if (j->http_status == 200) {
		j->http_status = status;
		j->err_code = code;
		snprintf(j->err_msg, sizeof(j->err_msg), "%s", msg);
	}
	pthread_mutex_unlock(&s->lock);
	if (j->stream) {
		json_object *o = error_json(status, NULL, code, msg);

		emit(j, o);
	}
}

/* ---------------------------------------------------------------- the scheduler */

/*
 * One thread (sched_main) owns the forward pass and the KV pool.  Each
 * step, every running sequence advances in one gm_forward_eval_batch
 * call: a decoding one by the token it chose last, one still reading its
 * prompt by the next chunk of it (at most prefill_chunk prompt tokens per
 * step for all of them together, so that a long prompt does not stall the
 * streams decoding beside it).  The rows carry their role (prompt or
 * decode, gm_forward_role), so each keeps its kernels whatever it shares
 * a step with: a request's logits are the bits it gets alone, however its
 * prompt is split into chunks, in either matmul mode.  Then each chooses
 * its next token through its own gm_gen_seq: its sampler and seed, stop
 * strings, streamed text, exactly as gm_generate would alone.  Requests
 * join between steps when a slot (--parallel) and KV blocks for their
 * prompt are free; the n choices of a request are generated one after
 * another in its slot.
 *
 * Prefix cache: the KV of a finished sequence's prompt stays in the pool
 * as a cache entry (cut to whole blocks), evicted least recently used when
 * blocks are needed.  A sequence whose prompt starts with at least a block
 * of a cached or running sequence's prompt, computed with the same
 * adapters, forks it (the blocks are shared) and evaluates only the rest.
 * Generated tokens are not shared: computed as decode rows, their keys and
 * values differ in the last bits from the same tokens read as a prompt, and
 * the cache must not change a result.
 *
 * Memory: a sequence is admitted when the free blocks, less those that
 * the prompts being read still need, hold its whole prompt and one more
 * block; so a prompt, once admitted, is always read to its end.  A
 * decoding sequence that finds no free block even after the cache is
 * emptied ends there, finish_reason "length".
 */

#define MAX_ASETS 16          /* distinct adapter selections registered on the forward at once */
#define MAX_CACHED 64         /* prefix cache entries */

/* An adapter selection registered on the forward as an adapter set. */
struct aset {
	struct selected sel[MAX_SELECTED];
	int n_sel;
	int id;                   /* gm_forward_adapter_set_add's; 0: a free entry */
	int users;                /* runs using it */
	uint64_t last_used;
};

/* A prefix cache entry: a sequence of the pool nobody runs. */
struct centry {
	int seq;
	int32_t *toks;            /* the tokens it holds, [n] */
	int n;
	struct selected sel[MAX_SELECTED]; /* the adapters they were computed with */
	int n_sel;
	uint64_t last_used;
};

enum run_state { RUN_WAIT, RUN_PREFILL, RUN_DECODE, RUN_ENDED };

/* A request's slot: the choice being generated. */
struct run {
	struct job *job;
	int choice;
	enum run_state state;
	int seq;                  /* its gm_kv sequence; -1: none */
	int32_t *toks;            /* the prompt, then each token fed: toks[0..n_kv) are in the KV */
	size_t n_toks, alloc_toks;
	int n_kv;
	int aset;                 /* into s->asets; -1: the base model */
	gm_gen_seq *gs;
	gm_generate_opts o;
	gm_sampler *sampler;
	struct gen_ctx g;
	int g_live;               /* g holds allocations */
	float *logits;            /* [n_vocab] */
	int32_t next;             /* decoding: the token to evaluate */
};

static int same_sel(const struct selected *a, int na, const struct selected *b, int nb)
{
	int i;

	if (na != nb)
		return 0;
	for (i = 0; i < na; i++)
		if (a[i].idx != b[i].idx || a[i].scale != b[i].scale || a[i].version != b[i].version)
			return 0;
	return 1;
}

/* A job's selection copied where it is only compared: without the job's references. */
static void copy_sel(struct selected *dst, const struct selected *src, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		dst[i] = src[i];
		dst[i].pin = NULL;
	}
}

/*
 * The adapter set of j's selection into *idx (-1: the base model),
 * registered on the forward when new.  1 when every entry is taken by
 * running sequences (j waits), or an error.
 */
static int aset_get(gm_serve *s, const struct job *j, int *idx, gm_error *err)
{
	gm_forward_adapter list[MAX_SELECTED];
	struct aset *a;
	int i, pick = -1, ret;

	*idx = -1;
	if (!j->n_sel)
		return 0;
	for (i = 0; i < MAX_ASETS; i++)
		if (s->asets[i].id && same_sel(s->asets[i].sel, s->asets[i].n_sel, j->sel, j->n_sel)) {
			*idx = i;
			return 0;
		}
	for (i = 0; i < MAX_ASETS; i++) {
		a = &s->asets[i];
		if (!a->id) {
			pick = i;
			break;
		}
		if (!a->users && (pick < 0 || a->last_used < s->asets[pick].last_used))
			pick = i;
	}
	if (pick < 0)
		return 1;
	a = &s->asets[pick];
	if (a->id) {
		gm_forward_adapter_set_remove(s->f, a->id);
		a->id = 0;
	}
	for (i = 0; i < j->n_sel; i++) {
		/* the weights of the version the job pinned: copied by the forward */
		list[i].lora = gm_adapter_version_lora(j->sel[i].pin);
		list[i].sparse = gm_adapter_version_sparse(j->sel[i].pin);
		list[i].scale = j->sel[i].scale;
	}
	if ((ret = gm_forward_adapter_set_add(s->f, list, j->n_sel, &a->id, err))) {
		a->id = 0;
		return ret;
	}
	copy_sel(a->sel, j->sel, j->n_sel);
	a->n_sel = j->n_sel;
	a->users = 0;
	*idx = pick;
	return 0;
}

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb)
{
	int i, n = na < nb ? na : nb;

	for (i = 0; i < n && a[i] == b[i]; i++)
		;
	return i;
}

/* Publishes the pool's state for /metrics; under s->lock. */
static void kv_gauges_locked(gm_serve *s)
{
	s->m.kv_used = gm_kv_n_blocks(s->kv) - gm_kv_free_blocks(s->kv);
	s->m.cache_entries = s->n_cache;
}

static void cache_drop(gm_serve *s, int i)
{
	gm_kv_seq_free(s->kv, s->cache[i].seq);
	free(s->cache[i].toks);
	s->cache[i] = s->cache[--s->n_cache];
}

/* Evicts the least recently used entry other than the one of sequence keep; 0 when there is none. */
static int cache_evict(gm_serve *s, int keep)
{
	int i, lru = -1;

	for (i = 0; i < s->n_cache; i++)
		if (s->cache[i].seq != keep && (lru < 0 || s->cache[i].last_used < s->cache[lru].last_used))
			lru = i;
	if (lru < 0)
		return 0;
	cache_drop(s, lru);
	return 1;
}

/* Blocks the prompts being read still need (and one for their first token): kept for them. */
static int64_t reserved_blocks(gm_serve *s)
{
	int64_t n = 0;
	int i;

	for (i = 0; i < s->n_runs; i++) {
		struct run *r = s->runs[i];

		if (r->state == RUN_PREFILL)
			n += gm_kv_blocks_needed(s->kv, r->seq, (int)r->job->n_prompt - r->n_kv + 1);
	}
	return n;
}

/*
 * The tokens of r's KV that another prompt may reuse: its prompt's, read
 * as prompt rows.  Its generated tokens' keys and values were computed as
 * decode rows, in the other kernels' order (gm_forward_role): a prompt that
 * reused them would not get the bits it gets on a fresh server.
 */
static int shareable(const struct run *r)
{
	return r->n_kv < (int)r->job->n_prompt ? r->n_kv : (int)r->job->n_prompt;
}

/* The sequence r's KV is kept as a prefix cache entry (its prompt, whole blocks), or freed. */
static void cache_put(gm_serve *s, struct run *r)
{
	struct job *j = r->job;
	int n = shareable(r) / GM_KV_BLOCK * GM_KV_BLOCK, i;
	struct centry *e;

	if (n < GM_KV_BLOCK || s->c.no_prefix_cache) {
		gm_kv_seq_free(s->kv, r->seq);
		return;
	}
	for (i = 0; i < s->n_cache; i++) {
		e = &s->cache[i];
		if (!same_sel(e->sel, e->n_sel, j->sel, j->n_sel))
			continue;
		if (e->n >= n && common_prefix(e->toks, e->n, r->toks, n) == n) {
			/* nothing new: an entry holds these tokens already */
			e->last_used = ++s->tick;
			gm_kv_seq_free(s->kv, r->seq);
			return;
		}
		if (common_prefix(e->toks, e->n, r->toks, n) == e->n) {
			/* this one extends an entry, which goes */
			cache_drop(s, i);
			i--;
		}
	}
	if (s->n_cache == MAX_CACHED)
		cache_evict(s, -1);
	gm_kv_seq_truncate(s->kv, r->seq, n);
	e = &s->cache[s->n_cache++];
	e->seq = r->seq;
	e->toks = gm_xmalloc((size_t)n * sizeof(*e->toks));
	memcpy(e->toks, r->toks, (size_t)n * sizeof(*e->toks));
	e->n = n;
	copy_sel(e->sel, j->sel, j->n_sel);
	e->n_sel = j->n_sel;
	e->last_used = ++s->tick;
}

/*
 * The longest prompt prefix of r that a cached or running sequence with
 * the same adapters holds: its length (0 when under a block) and, in
 * *src, that sequence.  At least the last prompt token is left to
 * evaluate, for its logits.
 */
static int find_prefix(gm_serve *s, const struct run *r, int *src)
{
	const struct job *j = r->job;
	int best = 0, i, c, n_prompt = (int)j->n_prompt;

	*src = -1;
	if (s->c.no_prefix_cache)
		return 0;
	for (i = 0; i < s->n_cache; i++) {
		const struct centry *e = &s->cache[i];

		if (!same_sel(e->sel, e->n_sel, j->sel, j->n_sel))
			continue;
		c = common_prefix(e->toks, e->n, j->prompt, n_prompt);
		if (c > best) {
			best = c;
			*src = e->seq;
		}
	}
	for (i = 0; i < s->n_runs; i++) {
		const struct run *o = s->runs[i];

		if (o == r || o->seq < 0 || !same_sel(o->job->sel, o->job->n_sel, j->sel, j->n_sel))
			continue;
		c = common_prefix(o->toks, shareable(o), j->prompt, n_prompt);
		if (c > best) {
			best = c;
			*src = o->seq;
		}
	}
	if (best > n_prompt - 1)
		best = n_prompt - 1;
	if (best < GM_KV_BLOCK)
		best = 0;
	return best;
}

static void push_tok(struct run *r, int32_t id)
{
	if (r->n_toks == r->alloc_toks) {
		r->alloc_toks = r->alloc_toks ? 2 * r->alloc_toks : 256;
		r->toks = gm_xrealloc(r->toks, r->alloc_toks * sizeof(*r->toks));
	}
	r->toks[r->n_toks++] = id;
}

static void gen_ctx_release(struct gen_ctx *g)
{
	free(g->counts);
	free(g->raw);
	json_object_put(g->lp_pending);
	json_object_put(g->lp_tokens);
	json_object_put(g->lp_values);
	json_object_put(g->lp_tops);
	json_object_put(g->lp_offsets);
	gm_buf_release(&g->token_bytes);
	gm_buf_release(&g->token_text);
	gm_toolcall_parser_free(g->tc);
	memset(g, 0, sizeof(*g));
}

/*
 * Starts r's choice when the pool has room for its prompt: 0 started,
 * 1 not now (r waits), or an error.  Not under s->lock.
 */
static int run_start(gm_serve *s, struct run *r, gm_error *err)
{
	struct job *j = r->job;
	struct gen_ctx *g = &r->g;
	gm_sampler_params sp = j->sp;
	int n_prompt = (int)j->n_prompt, src, use, ret, i, aset;
	int64_t need, avail;

	if ((ret = aset_get(s, j, &aset, err)))
		return ret;
	use = find_prefix(s, r, &src);
	/* the prompt's blocks past the shared ones, a copied partial block, and one to decode into */
	need = (n_prompt + GM_KV_BLOCK - 1) / GM_KV_BLOCK - use / GM_KV_BLOCK + 1 + (use % GM_KV_BLOCK != 0);
	avail = gm_kv_free_blocks(s->kv) - reserved_blocks(s);
	while (avail < need && cache_evict(s, src))
		avail = gm_kv_free_blocks(s->kv) - reserved_blocks(s);
	if (avail < need) {
		int busy = 0;

		for (i = 0; i < s->n_runs; i++)
			busy |= s->runs[i] != r && s->runs[i]->seq >= 0;
		if (!busy && src < 0)
			return gm_error_set(err, GM_ENOMEM, "the prompt (%d tokens) does not fit in the KV memory "
					    "(%lld blocks of %d tokens; --kv-tokens)", n_prompt,
					    (long long)gm_kv_n_blocks(s->kv), GM_KV_BLOCK);
		return 1;
	}
	ret = use ? gm_kv_seq_fork(s->kv, src, use, &r->seq, err) : gm_kv_seq_new(s->kv, &r->seq, err);
	if (ret) {
		r->seq = -1;
		return ret;
	}
	for (i = 0; i < s->n_cache; i++)
		if (s->cache[i].seq == src)
			s->cache[i].last_used = ++s->tick;
	r->aset = aset;
	if (aset >= 0) {
		s->asets[aset].users++;
		s->asets[aset].last_used = ++s->tick;
	}
	r->n_toks = 0;
	for (i = 0; i < n_prompt; i++)
		push_tok(r, j->prompt[i]);
	r->n_kv = use;
	r->state = RUN_PREFILL;

	/* what run_job did for each choice with gm_generate */
	memset(g, 0, sizeof(*g));
	g->job = j;
	g->index = r->choice;
	gm_buf_init(&g->token_bytes);
	gm_buf_init(&g->token_text);
	if (j->presence != 0 || j->frequency != 0)
		g->counts = gm_xcalloc(s->n_vocab, sizeof(*g->counts));
	if (j->logprobs) {
		g->raw = gm_xmalloc(s->n_vocab * sizeof(*g->raw));
		g->lp_pending = json_object_new_array();
		g->lp_tokens = json_object_new_array();
		g->lp_values = json_object_new_array();
		g->lp_tops = json_object_new_array();
		g->lp_offsets = json_object_new_array();
	}
	if (gm_toolreq_active(&j->tools))
		gm_toolcall_parser_new(j->tools.format, j->tools.tools,
				       j->tool_seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(r->choice + 1)), &g->tc);
	r->g_live = 1;
	/* choice i draws from seed + i: reproducible, and not n copies of one text */
	sp.seed = j->sp.seed + (uint64_t)r->choice;
	gm_generate_opts_init(&r->o, &s->model->generation);
	r->o.max_tokens = j->max_tokens;
	r->o.stop = (const char *const *)j->stops;
	r->o.n_stop = j->n_stops;
	r->o.on_text = on_text;
	r->o.on_token = on_token;
	r->o.on_logits = on_logits;
	r->o.cb_ctx = g;
	/* the format's markers may be special tokens: the parser must see them */
	if (g->tc && gm_toolcall_needs_special(j->tools.format))
		r->o.skip_special = 0;
	if ((ret = gm_sampler_new(&sp, s->n_vocab, &r->sampler, err)))
		return ret;
	r->o.sampler = r->sampler;
	if (j->grammar) {
		if (!s->gvocab && (ret = gm_grammar_vocab_new(s->tok, s->n_vocab, &s->gvocab, err)))
			return ret;
		r->o.grammar = j->grammar;
		r->o.grammar_vocab = s->gvocab;
	}
	if ((ret = gm_gen_seq_new(s->tok, s->n_vocab, &r->o, j->prompt, j->n_prompt, &r->gs, err)))
		return ret;
	pthread_mutex_lock(&s->lock);
	s->m.prompt_tokens_cached += (uint64_t)use;
	pthread_mutex_unlock(&s->lock);
	if (j->stream && j->kind == JOB_CHAT)
		emit_chunk(g, "", 0, NULL, 1);
	return 0;
}

/* Lets go of what r's choice holds; its KV goes to the prefix cache when keep. */
static void run_release(gm_serve *s, struct run *r, int keep)
{
	if (r->g_live)
		gen_ctx_release(&r->g);
	r->g_live = 0;
	gm_gen_seq_free(r->gs);
	r->gs = NULL;
	gm_sampler_free(r->sampler);
	r->sampler = NULL;
	if (r->seq >= 0) {
		if (keep)
			cache_put(s, r);
		else
			gm_kv_seq_free(s->kv, r->seq);
		r->seq = -1;
	}
	if (r->aset >= 0) {
		s->asets[r->aset].users--;
		s->asets[r->aset].last_used = ++s->tick;
		r->aset = -1;
	}
	r->n_toks = 0;
	r->n_kv = 0;
}

/* The end of a choice (stop: why), as run_job ended each gm_generate. */
static void run_choice_done(gm_serve *s, struct run *r, enum gm_stop_reason stop)
{
	struct job *j = r->job;
	struct gen_ctx *g = &r->g;

	if (!atomic_load(&j->cancel)) {
		struct choice *c = &j->choices[r->choice];

		c->finish = finish_reason(stop);
		if (g->tc) {
			size_t len;
			const char *content;

			gm_toolcall_finish(g->tc, j->stream ? on_tool_event : NULL, g);
			content = gm_toolcall_content(g->tc, &len);
			if (!j->stream) {
				gm_buf_reset(&c->text);
				gm_buf_add(&c->text, content, len);
				c->tool_calls = gm_toolreq_calls_json(g->tc);
			}
			/* cut short, the answer's finish reason stays "length" */
			if (gm_toolcall_n_calls(g->tc) && strcmp(c->finish, "length"))
				c->finish = "tool_calls";
		}
		if (j->stream) {
			emit_chunk(g, NULL, 0, c->finish, 0);
		} else if (j->logprobs && j->kind == JOB_CHAT) {
			c->logprobs = json_object_new_object();
			json_object_object_add(c->logprobs, "content", g->lp_pending);
			json_object_object_add(c->logprobs, "refusal", NULL);
			g->lp_pending = NULL;
		} else if (j->logprobs) {
			c->logprobs = json_object_new_object();
			json_object_object_add(c->logprobs, "tokens", g->lp_tokens);
			json_object_object_add(c->logprobs, "token_logprobs", g->lp_values);
			json_object_object_add(c->logprobs, "top_logprobs", g->lp_tops);
			json_object_object_add(c->logprobs, "text_offset", g->lp_offsets);
			g->lp_tokens = g->lp_values = g->lp_tops = g->lp_offsets = NULL;
		}
	}
	run_release(s, r, 1);
	if (!atomic_load(&j->cancel) && r->choice + 1 < j->n) {
		r->choice++;
		r->state = RUN_WAIT;
	} else {
		r->state = RUN_ENDED;
	}
}

/* r's request fails (a 500, or an error event when streamed). */
static void run_fail(gm_serve *s, struct run *r, const char *code, const char *msg)
{
	run_release(s, r, 0);
	job_error(r->job, 500, code, msg);
	r->job->failed = 1;
	r->state = RUN_ENDED;
}

/* The request is answered: the end of its stream, the counts; the scheduler lets go of it. */
static void job_finish(gm_serve *s, struct job *j)
{
	if (!j->failed) {
		if (atomic_load(&j->cancel) == CANCEL_SHUTDOWN) {
			job_error(j, 503, "shutting_down", "the server is shutting down: the request was cancelled");
		} else if (j->stream && j->include_usage && !atomic_load(&j->cancel)) {
			json_object *o = chunk_base(j);

			json_object_object_add(o, "choices", json_object_new_array());
			json_object_object_add(o, "usage", usage_json(j));
			emit(j, o);
		}
	}
	if (j->stream)
		emit(j, NULL); /* data: [DONE] */
	{
		int ads[MAX_SELECTED], i;

		for (i = 0; i < j->n_sel; i++)
			ads[i] = j->sel[i].idx;
		gm_stats_request_done(s->stats, ads, j->n_sel, (uint64_t)j->completion_tokens);
	}

	pthread_mutex_lock(&s->lock);
	if (atomic_load(&j->cancel))
		s->m.cancelled++;
	j->state = JOB_DONE;
	/* off the running list */
	{
		struct job **p = &s->running;

		while (*p && *p != j)
			p = &(*p)->run_next;
		if (*p)
			*p = j->run_next;
	}
	s->n_running--;
	pthread_cond_broadcast(&s->done_cond);
	job_unref_locked(j);
	pthread_mutex_unlock(&s->lock);
}

static struct run *run_new(gm_serve *s, struct job *j)
{
	struct run *r = gm_xcalloc(1, sizeof(*r));

	r->job = j;
	r->seq = -1;
	r->aset = -1;
	r->state = RUN_WAIT;
	r->logits = gm_xmalloc(s->n_vocab * sizeof(*r->logits));
	return r;
}

static void run_free(struct run *r)
{
	if (!r)
		return;
	free(r->toks);
	free(r->logits);
	free(r);
}

/*
 * Takes waiting requests into free slots while the pool has room for
 * them; the first that does not fit waits, and those behind it (first
 * come, first served).
 */
static void admit(gm_serve *s)
{
	for (;;) {
		gm_error err = GM_ERROR_INIT;
		struct job *j;
		struct run *r;
		int ret = 0;

		pthread_mutex_lock(&s->lock);
		j = s->head;
		if (!j || s->n_runs >= s->c.n_parallel) {
			pthread_mutex_unlock(&s->lock);
			return;
		}
		pthread_mutex_unlock(&s->lock);
		/* only this thread takes jobs off the queue: j stays its head */
		r = run_new(s, j);
		if (!atomic_load(&j->cancel) && (ret = run_start(s, r, &err)) == 1) {
			run_release(s, r, 0);
			run_free(r);
			return;
		}
		pthread_mutex_lock(&s->lock);
		s->head = j->next;
		if (!s->head)
			s->tail = NULL;
		s->n_queued--;
		s->queued_tokens -= (int64_t)j->n_prompt;
		s->n_running++;
		j->state = JOB_RUNNING;
		j->run_next = s->running;
		s->running = j;
		s->m.prompt_tokens += j->n_prompt;
		pthread_mutex_unlock(&s->lock);
		if (atomic_load(&j->cancel)) {
			run_free(r);
			job_finish(s, j);
		} else if (ret) {
			run_fail(s, r, ret == GM_ENOMEM ? "out_of_memory" : "generation_error", err.msg);
			run_free(r);
			job_finish(s, j);
		} else {
			s->runs[s->n_runs++] = r;
		}
	}
}

/*
 * One step: the runs that left go, waiting choices start, then every
 * running sequence advances in one batched forward pass and chooses its
 * next token.  Returns the number of sequences evaluated.
 */
static int step(gm_serve *s)
{
	gm_error err = GM_ERROR_INIT;
	gm_forward_seq *batch = s->batch;
	struct run **brun = s->brun;
	int budget = s->prefill_chunk, n = 0, i, k, ret;
	int64_t avail;

	for (i = 0; i < s->n_runs; i++) {
		struct run *r = s->runs[i];

		if (atomic_load(&r->job->cancel) && r->state != RUN_ENDED) {
			run_release(s, r, 1);
			r->state = RUN_ENDED;
		}
		if (r->state == RUN_WAIT && (ret = run_start(s, r, &err)) != 1 && ret)
			run_fail(s, r, ret == GM_ENOMEM ? "out_of_memory" : "generation_error", err.msg);
	}
	avail = gm_kv_free_blocks(s->kv) - reserved_blocks(s);
	for (i = 0; i < s->n_runs; i++) {
		struct run *r = s->runs[i];
		gm_forward_seq *b = &batch[n];

		if (r->state == RUN_DECODE) {
			int64_t need = gm_kv_blocks_needed(s->kv, r->seq, 1);

			while (need > avail && cache_evict(s, -1))
				avail = gm_kv_free_blocks(s->kv) - reserved_blocks(s);
			if (need > avail) {
				/* out of KV memory: this sequence ends here */
				run_choice_done(s, r, gm_gen_seq_end(r->gs, GM_STOP_CONTEXT));
				continue;
			}
			avail -= need;
			push_tok(r, r->next);
			b->ids = &r->toks[r->n_kv];
			b->n = 1;
			b->logits = r->logits;
			b->role = GM_FWD_DECODE;
		} else if (r->state == RUN_PREFILL) {
			int left = (int)r->job->n_prompt - r->n_kv, c = left < budget ? left : budget;

			if (!c)
				continue;
			budget -= c;
			b->ids = &r->toks[r->n_kv];
			b->n = c;
			b->logits = c == left ? r->logits : NULL;
			b->role = GM_FWD_PROMPT;
		} else {
			continue;
		}
		b->seq = r->seq;
		b->adapters = r->aset >= 0 ? s->asets[r->aset].id : 0;
		brun[n++] = r;
	}
	if (n) {
		double t0 = now_s();

		ret = gm_forward_eval_batch(s->f, s->kv, batch, n, &err);
		pthread_mutex_lock(&s->lock);
		s->m.steps++;
		s->m.step_tokens = 0;
		for (k = 0; k < n; k++)
			s->m.step_tokens += (uint64_t)batch[k].n;
		s->m.batch_tokens += s->m.step_tokens;
		s->m.step_seconds += now_s() - t0;
		pthread_mutex_unlock(&s->lock);
		for (k = 0; k < n; k++) {
			struct run *r = brun[k];
			int32_t id;
			int rr;

			if (ret) {
				run_fail(s, r, "generation_error", err.msg);
				continue;
			}
			r->n_kv += batch[k].n;
			if (!batch[k].logits)
				continue;
			rr = gm_gen_seq_next(r->gs, r->logits, &id, &err);
			if (rr < 0) {
				run_fail(s, r, "generation_error", err.msg);
			} else if (rr > 0) {
				run_choice_done(s, r, (enum gm_stop_reason)rr);
			} else if (r->n_kv >= s->n_ctx) {
				run_choice_done(s, r, gm_gen_seq_end(r->gs, GM_STOP_CONTEXT));
			} else {
				r->next = id;
				r->state = RUN_DECODE;
			}
		}
	}
	/* the requests whose last choice ended leave */
	for (i = k = 0; i < s->n_runs; i++) {
		struct run *r = s->runs[i];

		if (r->state == RUN_ENDED) {
			struct job *j = r->job;

			run_free(r);
			job_finish(s, j);
		} else {
			s->runs[k++] = r;
		}
	}
	s->n_runs = k;
	pthread_mutex_lock(&s->lock);
	kv_gauges_locked(s);
	pthread_mutex_unlock(&s->lock);
	return n;
}

static void *sched_main(void *arg)
{
	gm_serve *s = arg;

	for (;;) {
		int n;

		admit(s);
		n = step(s);
		pthread_mutex_lock(&s->lock);
		if (!s->n_runs && !s->head && s->quit) {
			pthread_mutex_unlock(&s->lock);
			break;
		}
		if (!s->n_runs && !s->head)
			pthread_cond_wait(&s->work_cond, &s->lock);
		else if (!n)
			timed_wait(&s->work_cond, &s->lock, 5); /* waiting for memory: nothing ran */
		pthread_mutex_unlock(&s->lock);
	}
	return NULL;
}

/* ---------------------------------------------------------------- HTTP side */

/* The state of one request on a connection (MHD's con_cls). */
struct req {
	enum endpoint ep;
	int is_post;
	gm_buf body;
	int too_large;
	int answered;
	int admitted;              /* counted in n_answering */
	void *ft;                  /* EP_FT: ftapi.c's state of the request */
	struct route route;        /* fn set: an endpoint of gm_serve_route */
	char *method, *url;        /* for route */
};

static enum endpoint endpoint_of(const char *url)
{
	if (!strcmp(url, "/v1/chat/completions"))
		return EP_CHAT;
	if (!strcmp(url, "/v1/completions"))
		return EP_COMPLETIONS;
	if (!strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11))
		return EP_MODELS;
	if (!strcmp(url, "/health"))
		return EP_HEALTH;
	if (!strcmp(url, "/metrics"))
		return EP_METRICS;
	if (!strcmp(url, "/v1/stats") || !strcmp(url, "/v1/stats/stream"))
		return EP_STATS;
	if (gm_webui_is_page(url))
		return EP_WEB;
	if (gm_ftapi_is_url(url))
		return EP_FT;
	return EP_OTHER;
}

/* Bearer token check, in time independent of where the strings differ. */
static int authorized(const gm_serve *s, struct MHD_Connection *c)
{
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	size_t i, n, klen;
	unsigned char diff = 0;

	if (!s->api_key)
		return 1;
	if (!h || strncasecmp(h, "Bearer ", 7))
		return 0;
	h += 7;
	while (*h == ' ')
		h++;
	n = strlen(h);
	klen = strlen(s->api_key);
	for (i = 0; i < klen; i++)
		diff |= (unsigned char)(s->api_key[i] ^ (i < n ? h[i] : 0));
	return !diff && n == klen;
}

static json_object *model_entry(const char *id, int64_t created, const char *parent)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "object", json_object_new_string("model"));
	json_object_object_add(o, "created", json_object_new_int64(created));
	json_object_object_add(o, "owned_by", json_object_new_string("git-model"));
	if (parent)
		json_object_object_add(o, "parent", json_object_new_string(parent));
	return o;
}

static enum MHD_Result handle_models(gm_serve *s, struct MHD_Connection *c, const char *url)
{
	json_object *list = json_object_new_array(), *o;
	gm_buf name = GM_BUF_INIT;
	int64_t created = s->created;
	struct api_error e;
	int i;

	json_object_array_add(list, model_entry(s->id, created, NULL));
	for (i = 0; i < gm_adapter_set_count(s->adapters); i++) {
		gm_buf_reset(&name);
		gm_buf_addf(&name, "%s:%s", s->id, gm_adapter_set_name(s->adapters, i));
		json_object_array_add(list, model_entry(name.buf, created, s->id));
	}
	gm_buf_release(&name);
	if (!strncmp(url, "/v1/models/", 11)) {
		size_t n = json_object_array_length(list), k;

		for (k = 0; k < n; k++) {
			json_object *m = json_object_array_get_idx(list, k), *id;

			json_object_object_get_ex(m, "id", &id);
			if (!strcmp(json_object_get_string(id), url + 11)) {
				o = json_object_get(m);
				json_object_put(list);
				return reply_json(s, c, EP_MODELS, 200, o);
			}
		}
		json_object_put(list);
		fail(&e, 404, "model", "model_not_found", "The model '%s' does not exist", url + 11);
		return reply_error(s, c, EP_MODELS, &e);
	}
	o = json_object_new_object();
	json_object_object_add(o, "object", json_object_new_string("list"));
	json_object_object_add(o, "data", list);
	return reply_json(s, c, EP_MODELS, 200, o);
}

static void add_metric_header(gm_buf *b, const char *name, const char *type, const char *help)
{
	gm_buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void add_histogram(gm_buf *b, const char *name, const char *help, const struct histogram *h)
{
	uint64_t cum = 0;
	size_t i;

	add_metric_header(b, name, "histogram", help);
	for (i = 0; i < h->n_bounds; i++) {
		cum += h->counts[i];
		gm_buf_addf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)cum);
	}
	cum += h->counts[h->n_bounds];
	gm_buf_addf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name, (unsigned long long)cum,
		    name, h->sum, name, (unsigned long long)h->count);
}

static enum MHD_Result handle_metrics(gm_serve *s, struct MHD_Connection *c)
{
	gm_buf b = GM_BUF_INIT;
	enum MHD_Result ret;
	size_t ep, k;

	/* counted before the snapshot, so that a scrape sees itself */
	count_request(s, EP_METRICS, 200);
	pthread_mutex_lock(&s->lock);
	add_metric_header(&b, "gitmodel_requests_total", "counter", "HTTP requests answered, by endpoint and status");
	for (ep = 0; ep < N_ENDPOINTS; ep++)
		for (k = 0; k <= N_CODES; k++)
			if (s->m.requests[ep][k])
				gm_buf_addf(&b, "gitmodel_requests_total{endpoint=\"%s\",code=\"%s%d\"} %llu\n",
					    endpoint_names[ep], k < N_CODES ? "" : "other", k < N_CODES ?
					    counted_codes[k] : 0, (unsigned long long)s->m.requests[ep][k]);
	add_metric_header(&b, "gitmodel_prompt_tokens_total", "counter", "prompt tokens of the requests served");
	gm_buf_addf(&b, "gitmodel_prompt_tokens_total %llu\n", (unsigned long long)s->m.prompt_tokens);
	add_metric_header(&b, "gitmodel_completion_tokens_total", "counter", "tokens generated");
	gm_buf_addf(&b, "gitmodel_completion_tokens_total %llu\n", (unsigned long long)s->m.completion_tokens);
	add_metric_header(&b, "gitmodel_requests_cancelled_total", "counter",
			  "generations stopped early (client gone, shutdown)");
	gm_buf_addf(&b, "gitmodel_requests_cancelled_total %llu\n", (unsigned long long)s->m.cancelled);
	add_histogram(&b, "gitmodel_time_to_first_token_seconds", "from the request's arrival to its first token",
		      &s->m.ttft);
	add_histogram(&b, "gitmodel_time_per_output_token_seconds", "between two tokens of one sequence",
		      &s->m.tpot);
	add_metric_header(&b, "gitmodel_queue_depth", "gauge", "requests waiting for a sequence slot");
	gm_buf_addf(&b, "gitmodel_queue_depth %d\n", s->n_queued);
	add_metric_header(&b, "gitmodel_queued_prompt_tokens", "gauge", "prompt tokens of the requests waiting");
	gm_buf_addf(&b, "gitmodel_queued_prompt_tokens %lld\n", (long long)s->queued_tokens);
	add_metric_header(&b, "gitmodel_connections_timed_out_total", "counter",
			  "connections closed for sending their request too slowly, by what was late");
	gm_buf_addf(&b, "gitmodel_connections_timed_out_total{phase=\"headers\"} %llu\n",
		    (unsigned long long)gm_conn_guard_timed_out(s->guard, GM_CONN_HEADERS));
	gm_buf_addf(&b, "gitmodel_connections_timed_out_total{phase=\"body\"} %llu\n",
		    (unsigned long long)gm_conn_guard_timed_out(s->guard, GM_CONN_BODY));
	add_metric_header(&b, "gitmodel_requests_running", "gauge", "requests being generated");
	gm_buf_addf(&b, "gitmodel_requests_running %d\n", s->n_running);
	add_metric_header(&b, "gitmodel_parallel_sequences", "gauge", "sequence slots (--parallel)");
	gm_buf_addf(&b, "gitmodel_parallel_sequences %d\n", s->c.n_parallel);
	add_metric_header(&b, "gitmodel_prompt_tokens_cached_total", "counter",
			  "prompt tokens served from the prefix cache (not evaluated again)");
	gm_buf_addf(&b, "gitmodel_prompt_tokens_cached_total %llu\n", (unsigned long long)s->m.prompt_tokens_cached);
	add_metric_header(&b, "gitmodel_kv_blocks_used", "gauge",
			  "KV memory blocks in use (running sequences and the prefix cache)");
	gm_buf_addf(&b, "gitmodel_kv_blocks_used %lld\n", (long long)s->m.kv_used);
	add_metric_header(&b, "gitmodel_kv_blocks_total", "gauge", "KV memory blocks in the pool (--kv-tokens)");
	gm_buf_addf(&b, "gitmodel_kv_blocks_total %lld\n", (long long)s->kv_blocks);
	add_metric_header(&b, "gitmodel_kv_block_tokens", "gauge", "tokens a KV block holds");
	gm_buf_addf(&b, "gitmodel_kv_block_tokens %d\n", GM_KV_BLOCK);
	add_metric_header(&b, "gitmodel_prefix_cache_entries", "gauge", "finished sequences kept for their prefix");
	gm_buf_addf(&b, "gitmodel_prefix_cache_entries %d\n", s->m.cache_entries);
	add_metric_header(&b, "gitmodel_batch_steps_total", "counter", "batched forward passes");
	gm_buf_addf(&b, "gitmodel_batch_steps_total %llu\n", (unsigned long long)s->m.steps);
	add_metric_header(&b, "gitmodel_batch_tokens_total", "counter", "tokens those passes evaluated");
	gm_buf_addf(&b, "gitmodel_batch_tokens_total %llu\n", (unsigned long long)s->m.batch_tokens);
	add_metric_header(&b, "gitmodel_batch_seconds_total", "counter", "seconds in those passes");
	gm_buf_addf(&b, "gitmodel_batch_seconds_total %.6f\n", s->m.step_seconds);
	pthread_mutex_unlock(&s->lock);
	{
		struct MHD_Response *r = MHD_create_response_from_buffer(b.len, b.buf, MHD_RESPMEM_MUST_COPY);

		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
		ret = MHD_queue_response(c, 200, r);
		MHD_destroy_response(r);
	}
	gm_buf_release(&b);
	return ret;
}

/* The stream's content: events as the scheduler appends them. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct job *j = cls;
	gm_serve *s = j->srv;
	ssize_t n;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		if (j->out.len > j->out_off) {
			size_t avail = j->out.len - j->out_off;

			n = (ssize_t)(avail < max ? avail : max);
			memcpy(buf, j->out.buf + j->out_off, (size_t)n);
			j->out_off += (size_t)n;
			if (j->out_off == j->out.len) {
				gm_buf_reset(&j->out);
				j->out_off = 0;
			}
			break;
		}
		if (j->state == JOB_DONE) {
			n = MHD_CONTENT_READER_END_OF_STREAM;
			break;
		}
		timed_wait(&s->done_cond, &s->lock, POLL_MS);
		if (j->out.len == j->out_off && j->state != JOB_DONE && peer_gone(j->fd)) {
			atomic_store(&j->cancel, CANCEL_CLIENT);
			n = MHD_CONTENT_READER_END_WITH_ERROR;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return n;
}

/* The response is gone (sent, or the client left): the generation stops if it runs. */
static void stream_free(void *cls)
{
	struct job *j = cls;
	gm_serve *s = j->srv;

	pthread_mutex_lock(&s->lock);
	if (j->state != JOB_DONE)
		atomic_store(&j->cancel, CANCEL_CLIENT);
	job_unref_locked(j);
	pthread_mutex_unlock(&s->lock);
}

static json_object *completion_json(struct job *j)
{
	json_object *o = json_object_new_object(), *choices = json_object_new_array();
	int i;

	json_object_object_add(o, "id", json_object_new_string(j->id));
	json_object_object_add(o, "object", json_object_new_string(j->kind == JOB_CHAT ? "chat.completion"
										       : "text_completion"));
	json_object_object_add(o, "created", json_object_new_int64(j->created));
	json_object_object_add(o, "model", json_object_new_string(j->model_name));
	for (i = 0; i < j->n; i++) {
		struct choice *ch = &j->choices[i];
		json_object *c = json_object_new_object();
		const char *text = ch->text.buf ? ch->text.buf : "";

		json_object_object_add(c, "index", json_object_new_int(i));
		if (j->kind == JOB_CHAT) {
			json_object *m = json_object_new_object();

			json_object_object_add(m, "role", json_object_new_string("assistant"));
			/* as OpenAI: no content beside calls is null */
			json_object_object_add(m, "content", ch->tool_calls && !ch->text.len ? NULL :
							     json_object_new_string_len(text, (int)ch->text.len));
			json_object_object_add(m, "refusal", NULL);
			if (ch->tool_calls)
				json_object_object_add(m, "tool_calls", json_object_get(ch->tool_calls));
			json_object_object_add(c, "message", m);
		} else {
			json_object_object_add(c, "text", json_object_new_string_len(text, (int)ch->text.len));
		}
		json_object_object_add(c, "logprobs", json_object_get(ch->logprobs));
		json_object_object_add(c, "finish_reason", json_object_new_string(ch->finish ? ch->finish : "stop"));
		json_object_array_add(choices, c);
	}
	json_object_object_add(o, "choices", choices);
	json_object_object_add(o, "usage", usage_json(j));
	return o;
}

static enum MHD_Result handle_generate(gm_serve *s, struct MHD_Connection *c, struct req *r)
{
	struct api_error e;
	struct job *j = gm_xcalloc(1, sizeof(*j));
	const union MHD_ConnectionInfo *ci;
	enum MHD_Result ret;

	j->srv = s;
	j->refs = 1;
	j->http_status = 200;
	j->t_arrival = now_s();
	j->created = (int64_t)time(NULL);
	j->fd = -1;
	gm_buf_init(&j->out);
	if (parse_request(s, r->ep == EP_CHAT ? JOB_CHAT : JOB_COMPLETION, r->body.buf ? r->body.buf : "",
			  r->body.len, j, &e)) {
		job_free(j);
		return reply_error(s, c, r->ep, &e);
	}
	if ((ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD)))
		j->fd = ci->connect_fd;

	pthread_mutex_lock(&s->lock);
	snprintf(j->id, sizeof(j->id), "%s-%016llx%08llx", j->kind == JOB_CHAT ? "chatcmpl" : "cmpl",
		 (unsigned long long)next_random(s), (unsigned long long)(++s->next_id & 0xffffffffu));
	if (s->stopping) {
		pthread_mutex_unlock(&s->lock);
		job_free(j);
		fail(&e, 503, NULL, "shutting_down", "the server is shutting down");
		return reply_error(s, c, r->ep, &e);
	}
	/* Admitted: running or waiting; beyond the slots and the queue, back-pressure. */
	if (s->n_queued + s->n_running >= s->c.n_parallel + s->c.queue_size) {
		int q = s->n_queued, running = s->n_running;

		pthread_mutex_unlock(&s->lock);
		job_free(j);
		fail(&e, 429, NULL, "queue_full", "the server is busy: %d requests are waiting and %d running "
		     "(--parallel %d, --queue %d); retry later", q, running, s->c.n_parallel,
		     s->c.queue_size);
		return reply_error(s, c, r->ep, &e);
	}
	/* A request is let in when none waits: the limit must not refuse what the pool can hold. */
	if (s->queued_tokens + (int64_t)j->n_prompt > s->max_queued_tokens && s->n_queued) {
		int64_t q = s->queued_tokens;
		size_t n = j->n_prompt;

		pthread_mutex_unlock(&s->lock);
		job_free(j);
		fail(&e, 429, NULL, "queue_full", "the server is busy: %lld prompt tokens are waiting, and %zu more "
		     "would pass the limit of %lld (--max-queued-tokens); retry later", (long long)q, n,
		     (long long)s->max_queued_tokens);
		return reply_error(s, c, r->ep, &e);
	}
	j->refs = 2; /* this connection and the scheduler */
	j->state = JOB_QUEUED;
	r->admitted = 1;
	s->n_answering++;
	if (s->tail)
		s->tail->next = j;
	else
		s->head = j;
	s->tail = j;
	s->n_queued++;
	s->queued_tokens += (int64_t)j->n_prompt;
	pthread_cond_signal(&s->work_cond);
	pthread_mutex_unlock(&s->lock);

	if (j->stream) {
		struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader,
									      j, stream_free);

		if (!resp) {
			atomic_store(&j->cancel, CANCEL_CLIENT);
			job_unref(j);
			return MHD_NO;
		}
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
		add_version_header(s, resp, j);
		ret = MHD_queue_response(c, 200, resp);
		MHD_destroy_response(resp); /* the job's reference now belongs to the response */
		count_request(s, r->ep, 200);
		return ret;
	}

	/* Not streamed: wait here (this connection's own thread), watching the client. */
	pthread_mutex_lock(&s->lock);
	while (j->state != JOB_DONE) {
		timed_wait(&s->done_cond, &s->lock, POLL_MS);
		if (j->state != JOB_DONE && !atomic_load(&j->cancel) && peer_gone(j->fd)) {
			atomic_store(&j->cancel, CANCEL_CLIENT);
			job_unref_locked(j);
			pthread_mutex_unlock(&s->lock);
			return MHD_NO; /* nobody to answer: close the connection */
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (j->http_status != 200) {
		fail(&e, j->http_status, NULL, j->err_code, "%s", j->err_msg);
		ret = reply_error(s, c, r->ep, &e);
	} else {
		json_object *o = completion_json(j);
		const char *text = to_json(o);
		struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), (void *)text,
									    MHD_RESPMEM_MUST_COPY);

		ret = MHD_NO;
		if (resp) {
			MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
			add_version_header(s, resp, j);
			ret = MHD_queue_response(c, 200, resp);
			MHD_destroy_response(resp);
			count_request(s, r->ep, 200);
		}
		json_object_put(o);
	}
	job_unref(j);
	return ret;
}

/* ---------------------------------------------------------------- more endpoints (gm_serve_route) */

int gm_serve_route(gm_serve *s, const char *prefix, gm_serve_route_fn fn, void *ctx, gm_error *err)
{
	int ret = 0;

	pthread_mutex_lock(&s->lock);
	if (s->n_routes == GM_SERVE_MAX_ROUTES) {
		ret = gm_error_set(err, GM_EINVAL, "at most %d route prefixes", GM_SERVE_MAX_ROUTES);
	} else {
		s->routes[s->n_routes].prefix = gm_xstrdup(prefix);
		s->routes[s->n_routes].fn = fn;
		s->routes[s->n_routes++].ctx = ctx;
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

/* The route whose prefix url starts with (the longest), copied into *out (its prefix not owned). */
static int find_route(gm_serve *s, const char *url, struct route *out)
{
	size_t best = 0;
	int i;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->n_routes; i++) {
		size_t n = strlen(s->routes[i].prefix);

		if (n > best && !strncmp(url, s->routes[i].prefix, n)) {
			best = n;
			*out = s->routes[i];
		}
	}
	pthread_mutex_unlock(&s->lock);
	return best > 0;
}

void gm_serve_reply_json(gm_serve_reply *out, int status, json_object *o)
{
	out->status = status;
	out->body = gm_xstrdup(to_json(o));
	out->len = strlen(out->body);
	out->content_type = "application/json";
	json_object_put(o);
}

void gm_serve_reply_error(gm_serve_reply *out, int status, const char *param, const char *code, const char *fmt,
			  ...)
{
	char msg[GM_ERROR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	gm_serve_reply_json(out, status, error_json(status, param, code, msg));
}

static enum MHD_Result handle_route(gm_serve *s, struct MHD_Connection *c, struct req *r)
{
	gm_serve_request rq;
	gm_serve_reply out;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	size_t i;

	memset(&out, 0, sizeof(out));
	rq.method = r->method;
	rq.url = r->url;
	rq.content_type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	rq.body = r->body.buf ? r->body.buf : "";
	rq.len = r->body.len;
	r->route.fn(r->route.ctx, &rq, &out);
	if (!out.body)
		gm_serve_reply_error(&out, 500, NULL, "internal_error", "%s %s: no answer", r->method, r->url);
	resp = MHD_create_response_from_buffer(out.len, out.body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(out.body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				out.content_type ? out.content_type : "application/json");
	for (i = 0; i < out.n_headers; i++)
		MHD_add_response_header(resp, out.headers[i][0], out.headers[i][1]);
	ret = MHD_queue_response(c, (unsigned int)out.status, resp);
	MHD_destroy_response(resp);
	count_request(s, EP_OTHER, out.status);
	return ret;
}

/* Each connection is registered with the guard (conns.h) from its start to its close. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	gm_serve *s = cls;
	const union MHD_ConnectionInfo *ci;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		*socket_context = ci ? gm_conn_open(s->guard, ci->connect_fd) : NULL;
	} else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		gm_conn_close(s->guard, *socket_context);
		*socket_context = NULL;
	}
}

/* Moves the connection of c into a phase of its request (see conns.h). */
static void conn_phase(gm_serve *s, struct MHD_Connection *c, enum gm_conn_phase phase)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	if (ci && ci->socket_context)
		gm_conn_phase(s->guard, ci->socket_context, phase);
}

/* Queues a response made elsewhere (webui.c); NULL: out of memory. */
static enum MHD_Result reply_response(gm_serve *s, struct MHD_Connection *c, enum endpoint ep,
				      struct MHD_Response *resp)
{
	enum MHD_Result ret;

	if (!resp)
		return MHD_NO;
	ret = MHD_queue_response(c, 200, resp);
	MHD_destroy_response(resp);
	count_request(s, ep, 200);
	return ret;
}

/* /v1/files, /v1/fine_tuning/...: ftapi.c reads the body (an upload streams to disk) and answers. */
static enum MHD_Result handle_ft(gm_serve *s, struct MHD_Connection *c, struct req *r, const char *url,
				 const char *method, const char *upload_data, size_t *upload_data_size)
{
	struct api_error e;
	enum MHD_Result ret;
	int status = 0;

	if (!s->ft) {
		r->answered = 1;
		fail(&e, 404, NULL, "not_found", "the files and fine-tuning API is off on this server "
		     "(started with --no-fine-tuning, or its log says why)");
		return reply_error(s, c, r->ep, &e);
	}
	if (r->ft && !*upload_data_size)
		conn_phase(s, c, GM_CONN_ANSWER);
	ret = gm_ftapi_request(s->ft, c, url, method, upload_data, upload_data_size, &r->ft, &status);
	if (status)
		count_request(s, EP_FT, status);
	return ret;
}

/* GET /v1/stats, /v1/stats/stream: a stream is no generation request and holds no slot. */
static enum MHD_Result handle_stats(gm_serve *s, struct MHD_Connection *c, const char *url)
{
	struct api_error e;
	struct MHD_Response *resp;

	if (!strcmp(url, "/v1/stats"))
		return reply_response(s, c, EP_STATS, gm_webui_stats_json(s->stats));
	if (!(resp = gm_webui_stats_stream(s->stats))) {
		fail(&e, 429, NULL, "too_many_streams", "%d stats streams are open already; close one (a dashboard "
		     "tab) or read GET /v1/stats", GM_STATS_MAX_STREAMS);
		return reply_error(s, c, EP_STATS, &e);
	}
	return reply_response(s, c, EP_STATS, resp);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	gm_serve *s = cls;
	struct req *r = *con_cls;
	struct api_error e;

	if (!r) {
		const char *cl;
		int ready, stopping;

		r = gm_xcalloc(1, sizeof(*r));
		gm_buf_init(&r->body);
		*con_cls = r;
		r->ep = endpoint_of(url);
		r->is_post = !strcmp(method, MHD_HTTP_METHOD_POST);
		if (r->ep == EP_OTHER && find_route(s, url, &r->route)) {
			r->method = gm_xstrdup(method);
			r->url = gm_xstrdup(url);
		}
		/* A body is due only with a POST; anything else is answered now. */
		conn_phase(s, c, r->is_post ? GM_CONN_BODY : GM_CONN_ANSWER);
		/* Answers that do not need the body are given at once (the body is then not read). */
		if (r->ep == EP_OTHER && !r->route.fn) {
			r->answered = 1;
			fail(&e, 404, NULL, "not_found", "no such endpoint: %s %s (the API is under /v1: "
			     "/v1/models, /v1/completions, /v1/chat/completions)", method, url);
			return reply_error(s, c, r->ep, &e);
		}
		/* (routes and ftapi.c check their own methods, DELETE among them) */
		if (!r->route.fn && r->ep != EP_FT && ((r->ep == EP_CHAT || r->ep == EP_COMPLETIONS) != r->is_post ||
		    (!r->is_post && strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD)))) {
			r->answered = 1;
			fail(&e, 405, NULL, "method_not_allowed", "%s %s: use %s", method, url,
			     r->ep == EP_CHAT || r->ep == EP_COMPLETIONS ? "POST" : "GET");
			return reply_error(s, c, r->ep, &e);
		}
		pthread_mutex_lock(&s->lock);
		ready = s->ready;
		stopping = s->stopping;
		pthread_mutex_unlock(&s->lock);
		if (r->ep == EP_HEALTH) {
			const char *body = ready && !stopping ? "{\"status\":\"ok\"}"
				: stopping ? "{\"status\":\"shutting down\"}" : "{\"status\":\"loading\"}";

			r->answered = 1;
			return reply(s, c, r->ep, ready && !stopping ? 200 : 503, "application/json", body,
				     strlen(body), 0);
		}
		if (r->ep == EP_METRICS) {
			r->answered = 1;
			return handle_metrics(s, c);
		}
		if (r->ep == EP_WEB) {
			/* the page holds no data and asks for the key itself: a browser's
			 * navigation cannot send one (what it fetches is authorized) */
			r->answered = 1;
			return reply_response(s, c, r->ep, gm_webui_page(url));
		}
		if (!authorized(s, c)) {
			r->answered = 1;
			fail(&e, 401, NULL, "invalid_api_key", "Incorrect or missing API key: send the header "
			     "'Authorization: Bearer KEY' with the key the server was given");
			return reply_error(s, c, r->ep, &e);
		}
		if (!ready || stopping) {
			r->answered = 1;
			fail(&e, 503, NULL, stopping ? "shutting_down" : "model_loading",
			     stopping ? "the server is shutting down" : "the model is loading; retry shortly");
			return reply_error(s, c, r->ep, &e);
		}
		if (r->ep == EP_MODELS) {
			r->answered = 1;
			return handle_models(s, c, url);
		}
		if (r->ep == EP_STATS) {
			r->answered = 1;
			return handle_stats(s, c, url);
		}
		if (r->ep == EP_FT)
			return handle_ft(s, c, r, url, method, upload_data, upload_data_size);
		if (r->route.fn && !r->is_post) {
			r->answered = 1;
			return handle_route(s, c, r);
		}
		cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > s->c.max_body) {
			r->answered = 1;
			fail(&e, 413, NULL, "request_too_large", "the request body (%s bytes) is over the server's limit "
			     "of %zu bytes (--max-body)", cl, s->c.max_body);
			return reply_error(s, c, r->ep, &e);
		}
		return MHD_YES;
	}
	if (r->answered) {
		*upload_data_size = 0; /* discarded */
		return MHD_YES;
	}
	if (r->ep == EP_FT)
		return handle_ft(s, c, r, url, method, upload_data, upload_data_size);
	if (*upload_data_size) {
		/* A body sent in chunks has no Content-Length: the limit is checked as it arrives. */
		if (!r->too_large && r->body.len + *upload_data_size > s->c.max_body) {
			r->too_large = 1;
			gm_buf_release(&r->body);
		}
		if (!r->too_large)
			gm_buf_add(&r->body, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	conn_phase(s, c, GM_CONN_ANSWER);
	r->answered = 1;
	if (r->too_large) {
		fail(&e, 413, NULL, "request_too_large", "the request body is over the server's limit of %zu bytes "
		     "(--max-body)", s->c.max_body);
		return reply_error(s, c, r->ep, &e);
	}
	if (r->route.fn)
		return handle_route(s, c, r);
	return handle_generate(s, c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t)
{
	gm_serve *s = cls;
	struct req *r = *con_cls;

	(void)t;
	conn_phase(s, c, GM_CONN_HEADERS); /* kept alive: the next request's headers are due */
	if (!r)
		return;
	if (r->admitted) {
		pthread_mutex_lock(&s->lock);
		s->n_answering--;
		pthread_cond_broadcast(&s->done_cond);
		pthread_mutex_unlock(&s->lock);
	}
	gm_ftapi_request_done(r->ft);
	gm_buf_release(&r->body);
	free(r->method);
	free(r->url);
	free(r);
	*con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	gm_debug("http: %s", msg);
}

/* ---------------------------------------------------------------- start, load, stop */

static int open_listener(gm_serve *s, gm_error *err)
{
	struct addrinfo hints, *res = NULL;
	const char *host = s->c.addr ? s->c.addr : "127.0.0.1";
	char port[16], name[INET6_ADDRSTRLEN];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	gm_buf b = GM_BUF_INIT;
	int fd, one = 1, rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	snprintf(port, sizeof(port), "%d", s->c.port);
	if ((rc = getaddrinfo(host, port, &hints, &res)))
		return gm_error_set(err, GM_EINVAL, "cannot listen on '%s': %s", host, gai_strerror(rc));
	fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
	if (fd < 0) {
		freeaddrinfo(res);
		return gm_error_errno(err, "cannot create a socket for %s", host);
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 128)) {
		rc = gm_error_errno(err, "cannot listen on %s port %d", host, s->c.port);
		close(fd);
		freeaddrinfo(res);
		return rc;
	}
	freeaddrinfo(res);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl)) {
		close(fd);
		return gm_error_errno(err, "getsockname");
	}
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &a->sin6_addr, name, sizeof(name));
		s->port = ntohs(a->sin6_port);
		gm_buf_addf(&b, "[%s]:%d", name, s->port);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &a->sin_addr, name, sizeof(name));
		s->port = ntohs(a->sin_port);
		gm_buf_addf(&b, "%s:%d", name, s->port);
	}
	s->addr_desc = gm_buf_detach(&b, NULL);
	s->listen_fd = fd;
	return 0;
}

int gm_serve_start(const gm_serve_config *c, gm_serve **out, gm_error *err)
{
	gm_serve *s;
	int ret;

	*out = NULL;
	if (c->n_parallel < 1 || c->queue_size < 0)
		return gm_error_set(err, GM_EINVAL, "the server needs at least 1 parallel sequence and a queue of "
				    "0 or more (got %d and %d)", c->n_parallel, c->queue_size);
	s = gm_xcalloc(1, sizeof(*s));
	s->c = *c;
	s->c.adapters = NULL; /* borrowed only until gm_serve_load, which gets them from c below */
	s->listen_fd = -1;
	s->id = c->model_id ? gm_xstrdup(c->model_id) : gm_serve_model_id(c->model_dir);
	s->api_key = c->api_key && *c->api_key ? gm_xstrdup(c->api_key) : NULL;
	s->rng = gm_rng_entropy();
	s->m.ttft.bounds = ttft_bounds;
	s->m.ttft.n_bounds = N_TTFT;
	s->m.tpot.bounds = tpot_bounds;
	s->m.tpot.n_bounds = N_TPOT;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->work_cond, NULL);
	pthread_cond_init(&s->done_cond, NULL);
	/* the adapter specs are copied: the caller's may go away */
	if (c->n_adapters) {
		size_t i;
		const char **v = gm_xcalloc(c->n_adapters, sizeof(*v));

		for (i = 0; i < c->n_adapters; i++)
			v[i] = gm_xstrdup(c->adapters[i]);
		s->c.adapters = v;
	}
	s->c.model_dir = gm_xstrdup(c->model_dir);
	s->c.ft_dir = c->ft_dir ? gm_xstrdup(c->ft_dir) : NULL;
	s->c.api_key = NULL;
	ret = open_listener(s, err);
	s->c.addr = NULL; /* borrowed: used only by open_listener */
	if (!ret)
		ret = gm_conn_guard_new(c->header_timeout_s, c->body_timeout_s, &s->guard, err);
	if (!ret && (c->max_connections < 1 || c->max_client_connections < 1))
		ret = gm_error_set(err, GM_EINVAL, "the connection limits must be at least 1 (got %d and %d per "
				   "client)", c->max_connections, c->max_client_connections);
	if (!ret) {
		s->daemon = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
					     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG,
					     0, NULL, NULL, on_request, s,
					     MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
					     MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
					     MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
					     MHD_OPTION_CONNECTION_LIMIT, (unsigned int)c->max_connections,
					     MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)c->max_client_connections,
					     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
					     MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
					     MHD_OPTION_END);
		if (!s->daemon)
			ret = gm_error_set(err, GM_EIO, "cannot start the HTTP server on %s (libmicrohttpd)",
					   s->addr_desc);
	}
	if (ret) {
		gm_serve_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

int gm_serve_port(const gm_serve *s)
{
	return s->port;
}

const char *gm_serve_address(const gm_serve *s)
{
	return s->addr_desc;
}

const char *gm_serve_id(const gm_serve *s)
{
	return s->id;
}

struct gm_adapter_set *gm_serve_adapter_set(gm_serve *s)
{
	return s->adapters;
}

const gm_model *gm_serve_model(const gm_serve *s)
{
	return s->model;
}

const gm_tokenizer *gm_serve_tokenizer(const gm_serve *s)
{
	return s->tok;
}

static int serve_add(gm_serve *s, const char *name, const char *dir, gm_peft_adapter *lora, gm_sparse_adapter *sparse,
		     uint64_t first, int *index, gm_error *err)
{
	gm_adapter_version *v;
	int ret, i;

	/* under the lock: the stats rows must come in the set's order */
	pthread_mutex_lock(&s->lock);
	ret = lora || sparse ? gm_adapter_set_add_numbered(s->adapters, name, dir, lora, sparse, first, &i, err)
		: gm_adapter_set_add_dir(s->adapters, name, dir, &i, err);
	if (!ret) {
		v = gm_adapter_set_acquire(s->adapters, i);
		gm_stats_add_adapter(s->stats, name, gm_adapter_version_kind(v));
		gm_adapter_version_release(v);
		if (index)
			*index = i;
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

int gm_serve_add_adapter(gm_serve *s, const char *name, const char *dir, int *index, gm_error *err)
{
	return serve_add(s, name, dir, NULL, NULL, 1, index, err);
}

int gm_serve_add_adapter_weights(gm_serve *s, const char *name, gm_peft_adapter *lora, gm_sparse_adapter *sparse,
				 uint64_t first, int *index, gm_error *err)
{
	if (!lora && !sparse)
		return gm_error_set(err, GM_EINVAL, "adapter %s: no weights", name);
	return serve_add(s, name, NULL, lora, sparse, first, index, err);
}

int gm_serve_n_adapters(const gm_serve *s)
{
	return s->adapters ? gm_adapter_set_count(s->adapters) : 0;
}

const char *gm_serve_adapter_name(const gm_serve *s, int i)
{
	return gm_adapter_set_name(s->adapters, i);
}

/* "03_kjv" -> "kjv": the NN_ ordering prefix of MODEL/adapters/ is not part of the name. */
static char *adapter_name(const char *dir)
{
	char *copy = gm_xstrdup(dir), *base, *p, *name;
	size_t n = strlen(copy);

	while (n > 1 && copy[n - 1] == '/')
		copy[--n] = '\0';
	base = strrchr(copy, '/');
	base = base ? base + 1 : copy;
	for (p = base; isdigit((unsigned char)*p); p++)
		;
	name = gm_xstrdup(p > base && *p == '_' && p[1] ? p + 1 : base);
	free(copy);
	return name;
}

static int add_adapter(gm_serve *s, char *name, char *dir, gm_error *err)
{
	int ret = gm_adapter_set_add_dir(s->adapters, name, dir, NULL, err);

	free(name);
	free(dir);
	return ret;
}

static int load_adapters(gm_serve *s, gm_error *err)
{
	char *root = gm_path_join(s->c.model_dir, "adapters");
	struct dirent **list = NULL;
	int i, n, ret = 0;
	size_t k;

	n = gm_is_dir(root) ? scandir(root, &list, NULL, alphasort) : 0;
	for (i = 0; i < n; i++) {
		char *path = gm_path_join(root, list[i]->d_name);

		if (list[i]->d_name[0] == '.' || !gm_is_dir(path) || ret) {
			free(path);
			continue;
		}
		ret = add_adapter(s, adapter_name(path), path, err);
	}
	for (i = 0; i < n; i++)
		free(list[i]);
	free(list);
	free(root);
	for (k = 0; k < s->c.n_adapters && !ret; k++) {
		const char *spec = s->c.adapters[k], *eq = strchr(spec, '=');

		if (eq && !gm_is_dir(spec))
			ret = add_adapter(s, strndup(spec, (size_t)(eq - spec)), gm_xstrdup(eq + 1), err);
		else
			ret = add_adapter(s, adapter_name(spec), gm_xstrdup(spec), err);
	}
	return ret;
}

/* The server's numbers for a stats sample (stats.h), on the stats thread once a second. */
static void stats_fill(void *ctx, gm_stats_sample *x)
{
	gm_serve *s = ctx;

	pthread_mutex_lock(&s->lock);
	x->running = s->n_running;
	x->queued = s->n_queued;
	x->cancelled = s->m.cancelled;
	x->prompt_tokens = s->m.prompt_tokens;
	x->prompt_tokens_cached = s->m.prompt_tokens_cached;
	x->completion_tokens = s->m.completion_tokens;
	x->kv_blocks_used = s->m.kv_used;
	x->prefix_cache_entries = s->m.cache_entries;
	pthread_mutex_unlock(&s->lock);
}

/* A fine-tuning job's adapter, servable as MODEL:NAME from now on. */
static void ft_publish(void *ctx, const char *name, const char *dir)
{
	gm_serve *s = ctx;
	gm_error err = GM_ERROR_INIT;

	/* a job finished before a restart is served already (MODEL/adapters/ at load) */
	if (gm_adapter_set_find(s->adapters, name, strlen(name)) >= 0)
		return;
	if (gm_serve_add_adapter(s, name, dir, NULL, &err))
		gm_warn("fine-tuned adapter %s: %s", name, err.msg);
	else
		gm_info("serving the fine-tuned adapter %s as %s:%s", dir, s->id, name);
}

static int ft_open(gm_serve *s, int threads, gm_error *err)
{
	gm_ftapi_config fc;

	memset(&fc, 0, sizeof(fc));
	fc.dir = s->c.ft_dir;
	fc.model_dir = s->c.model_dir;
	fc.model_id = s->id;
	fc.max_file_bytes = s->c.max_file_size;
	fc.max_body = s->c.max_body;
	/* fewer threads than the server's, at a lower priority: serving comes first */
	fc.n_threads = s->c.ft_threads > 0 ? s->c.ft_threads : threads / 2 > 0 ? threads / 2 : 1;
	fc.nice = s->c.ft_nice;
	fc.checkpoint_every = s->c.ft_checkpoint_every;
	fc.on_success = ft_publish;
	fc.ctx = s;
	return gm_ftapi_open(&fc, &s->ft, err);
}

int gm_serve_load(gm_serve *s, gm_error *err)
{
	gm_error cerr = GM_ERROR_INIT;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	gm_forward_opts fo;
	int64_t kv_tokens;
	int threads, ret;

	if ((ret = gm_model_open(s->c.model_dir, &s->model, err)) ||
	    (ret = gm_model_tokenizer_load(s->c.model_dir, &s->tok, err)))
		return ret;
	s->n_vocab = (size_t)s->model->config.vocab_size;
	if (gm_model_chat_template_load(s->c.model_dir, &s->chat, &cerr)) {
		/* completions still work; chat says why it cannot */
		s->chat = NULL;
		s->chat_error = gm_xstrdup(cerr.msg);
		gm_warn("%s: no chat template: /v1/chat/completions will refuse requests", cerr.msg);
	}
	s->adapters = gm_adapter_set_new(s->model);
	if ((ret = load_adapters(s, err)))
		return ret;
	/* One forward pass with all the compute threads serves every sequence. */
	threads = s->c.n_threads > 0 ? s->c.n_threads : (int)(cpus > 0 ? cpus : 1);
	/* Keys and values of the type git infer keeps them in (auto: the model's 16 bits), so that
	 * a request's output is the one git infer gives. */
	memset(&fo, 0, sizeof(fo));
	fo.n_ctx = s->c.n_ctx;
	fo.n_threads = threads;
	fo.kv_type = s->c.kv_type;
	fo.matmul = s->c.matmul;
	if ((ret = gm_forward_new_ex(s->model, &fo, &s->f, err)))
		return ret;
	s->n_ctx = gm_forward_n_ctx(s->f);
	kv_tokens = s->c.kv_tokens > 0 ? s->c.kv_tokens : (int64_t)s->c.n_parallel * s->n_ctx;
	if ((ret = gm_kv_new(s->model, gm_forward_kv_type(s->f), kv_tokens, &s->kv, err)))
		return ret;
	s->kv_blocks = gm_kv_n_blocks(s->kv);
	s->max_queued_tokens = s->c.max_queued_tokens > 0 ? s->c.max_queued_tokens
		: 2 * s->kv_blocks * GM_KV_BLOCK;
	s->prefill_chunk = s->c.prefill_chunk > 0 ? s->c.prefill_chunk : GM_SERVE_PREFILL_CHUNK;
	s->runs = gm_xcalloc((size_t)s->c.n_parallel, sizeof(*s->runs));
	s->brun = gm_xcalloc((size_t)s->c.n_parallel, sizeof(*s->brun));
	s->batch = gm_xcalloc((size_t)s->c.n_parallel, sizeof(*s->batch));
	s->cache = gm_xcalloc(MAX_CACHED, sizeof(*s->cache));
	s->asets = gm_xcalloc(MAX_ASETS, sizeof(*s->asets));
	{
		gm_stats_info si = { .model = s->id, .n_parallel = s->c.n_parallel, .queue_size = s->c.queue_size,
				     .n_ctx = s->n_ctx, .kv_blocks = s->kv_blocks, .kv_block_tokens = GM_KV_BLOCK,
				     .kv_type = gm_kv_type_name(gm_kv_type_of(s->kv)) };
		int i;

		if ((ret = gm_stats_new(&si, &s->stats, err)))
			return ret;
		for (i = 0; i < gm_adapter_set_count(s->adapters); i++) {
			gm_adapter_version *v = gm_adapter_set_acquire(s->adapters, i);

			gm_stats_add_adapter(s->stats, gm_adapter_set_name(s->adapters, i), gm_adapter_version_kind(v));
			gm_adapter_version_release(v);
		}
		if ((ret = gm_stats_start(s->stats, stats_fill, s, err)))
			return ret;
	}
	gm_info("serving with %d parallel sequences, KV memory for %lld tokens (%lld blocks of %d, %zu bytes "
		"a token, %s), prompts read %d tokens a step, %s matmul", s->c.n_parallel,
		(long long)s->kv_blocks * GM_KV_BLOCK, (long long)s->kv_blocks, GM_KV_BLOCK,
		gm_kv_bytes_per_token(s->model, gm_kv_type_of(s->kv)), gm_kv_type_name(gm_kv_type_of(s->kv)),
		s->prefill_chunk, s->c.matmul == GM_MATMUL_FAST ? "fast" : "precise");
	if (pthread_create(&s->sched, NULL, sched_main, s))
		return gm_error_set(err, GM_EIO, "cannot start the scheduler thread");
	s->sched_started = 1;
	if (!s->c.no_fine_tuning) {
		gm_error ferr = GM_ERROR_INIT;

		/* serving goes on without it: the endpoints say it is off */
		if (ft_open(s, threads, &ferr))
			gm_warn("the fine-tuning API is off: %s", ferr.msg);
	}
	s->created = (int64_t)time(NULL);
	pthread_mutex_lock(&s->lock);
	s->ready = 1;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int gm_serve_stop(gm_serve *s)
{
	double deadline = now_s() + s->c.shutdown_timeout_s;
	struct job *j;
	int cancelled = 0;
	MHD_socket fd;

	if (!s->daemon)
		return 0;
	pthread_mutex_lock(&s->lock);
	s->stopping = 1;
	pthread_mutex_unlock(&s->lock);
	/* a running fine-tuning job checkpoints and resumes at the next start */
	gm_ftapi_stop(s->ft);
	/* No new connections: the listening socket is closed. */
	fd = MHD_quiesce_daemon(s->daemon);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	s->listen_fd = -1;

	pthread_mutex_lock(&s->lock);
	while (s->n_queued + s->n_running > 0 && now_s() < deadline)
		timed_wait(&s->done_cond, &s->lock, POLL_MS);
	for (j = s->head; j; j = j->next) {
		atomic_store(&j->cancel, CANCEL_SHUTDOWN);
		cancelled++;
	}
	for (j = s->running; j; j = j->run_next) {
		atomic_store(&j->cancel, CANCEL_SHUTDOWN);
		cancelled++;
	}
	s->quit = 1;
	pthread_cond_broadcast(&s->work_cond);
	pthread_mutex_unlock(&s->lock);
	if (s->sched_started) {
		pthread_join(s->sched, NULL);
		s->sched_started = 0;
	}
	/* Every job is done: let the connections send what is left of their
	 * answers (the end of a stream) before they are closed. */
	deadline = now_s() + 2;
	pthread_mutex_lock(&s->lock);
	while (s->n_answering > 0 && now_s() < deadline)
		timed_wait(&s->done_cond, &s->lock, POLL_MS);
	pthread_mutex_unlock(&s->lock);
	/* the stats streams end (they are no requests, and nothing waited for them) */
	gm_stats_stop(s->stats);
	MHD_stop_daemon(s->daemon);
	s->daemon = NULL;
	return cancelled;
}

void gm_serve_free(gm_serve *s)
{
	int i;
	size_t k;

	if (!s)
		return;
	if (s->daemon)
		gm_serve_stop(s);
	gm_conn_guard_free(s->guard); /* after the daemon: no connection is left to watch */
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	/* the scheduler has ended: every run is gone; the cache is freed with the pool */
	for (i = 0; i < s->n_cache; i++)
		free(s->cache[i].toks);
	free(s->cache);
	free(s->asets);
	free(s->runs);
	free(s->brun);
	free(s->batch);
	gm_stats_free(s->stats); /* after the daemon: its streams read it */
	gm_ftapi_free(s->ft);    /* after the daemon: its requests read it */
	gm_kv_free(s->kv);
	gm_forward_free(s->f);
	gm_adapter_set_free(s->adapters);
	for (i = 0; i < s->n_routes; i++)
		free(s->routes[i].prefix);
	for (k = 0; k < s->c.n_adapters; k++)
		free((char *)s->c.adapters[k]);
	free((void *)s->c.adapters);
	free((char *)s->c.model_dir);
	free((char *)s->c.ft_dir);
	gm_chat_template_free(s->chat);
	free(s->chat_error);
	gm_tokenizer_free(s->tok);
	gm_grammar_vocab_free(s->gvocab);
	gm_model_close(s->model);
	free(s->id);
	free(s->api_key);
	free(s->addr_desc);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->work_cond);
	pthread_cond_destroy(&s->done_cond);
	free(s);
}
