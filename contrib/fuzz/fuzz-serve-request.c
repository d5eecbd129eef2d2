/*
 * fuzz-serve-request.c - libFuzzer target for the server's request bodies:
 * the JSON of POST /v1/chat/completions and /v1/completions turned into a
 * validated request (libcore/serve/serve.c's parse_request, through
 * gm_serve_check_request), with the chat template, tool-call and grammar
 * parsing it reaches.
 *
 * The bundled pocket model (contrib/models/pocket-qwen3, or the directory
 * in GM_FUZZ_MODEL) is loaded once, by a server listening on a free port of
 * 127.0.0.1 that is never sent anything.  An input's first byte picks the
 * endpoint (odd, as 'c': chat; even, as 'p': completions); the rest is the
 * body.
 *
 * Invariants: a refused body gets a 4xx status, an error code and a
 * message; an accepted one has every number within what the API allows
 * (sampling parameters, n, max_tokens and the prompt within the context,
 * token ids within the vocabulary, logit_bias, adapter scales).
 */
#include <math.h>

#include "fuzz-common.h"

#include "serve/serve.h"

static gm_serve *srv;

static const char *model_dir(void)
{
	const char *d = getenv("GM_FUZZ_MODEL");

	if (d && *d)
		return d;
#ifdef GM_ASSET_DIR
	/* GM_ASSET_DIR is SRC/libcore/data (make fuzz) */
	return GM_ASSET_DIR "/../../contrib/models/pocket-qwen3";
#else
	return "contrib/models/pocket-qwen3";
#endif
}

static void stop_server(void)
{
	if (srv) {
		gm_serve_stop(srv);
		gm_serve_free(srv);
		srv = NULL;
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	gm_serve_config c;
	gm_error err = GM_ERROR_INIT;

	(void)argc;
	(void)argv;
	gm_serve_config_init(&c);
	c.model_dir = model_dir();
	c.model_id = "pocket-qwen3";
	c.addr = "127.0.0.1";
	c.port = 0;
	c.n_threads = 1;
	c.n_parallel = 2;
	c.shutdown_timeout_s = 0;
	if (gm_serve_start(&c, &srv, &err) || gm_serve_load(srv, &err)) {
		fprintf(stderr, "fuzz-serve-request: cannot load %s: %s (set GM_FUZZ_MODEL)\n", c.model_dir,
			err.msg);
		exit(1);
	}
	atexit(stop_server);
	return 0;
}

static void check_accepted(const gm_serve_request_check *r)
{
	CHECK(r->message[0] == '\0');
	CHECK(r->n_prompt >= 1 && r->n_prompt < (size_t)r->n_ctx);
	CHECK(r->prompt_min >= 0 && r->prompt_max >= r->prompt_min && (size_t)r->prompt_max < r->n_vocab);
	CHECK(r->max_tokens == -1 || (r->max_tokens >= 1 && (int64_t)r->n_prompt + r->max_tokens <= r->n_ctx));
	CHECK(r->n >= 1 && r->n <= 16);
	CHECK(r->n_stops >= 0 && r->n_stops <= 16);
	CHECK(r->n_adapters >= 0 && r->n_adapters <= 16);
	CHECK(r->top_logprobs >= 0 && r->top_logprobs <= 20);
	CHECK(r->logprobs == 0 || r->logprobs == 1);
	CHECK(r->stream == 0 || r->stream == 1);
	CHECK(isfinite(r->temperature) && r->temperature >= 0 && r->temperature <= 2);
	CHECK(isfinite(r->top_p) && r->top_p > 0 && r->top_p <= 1);
	CHECK(isfinite(r->min_p) && r->min_p >= 0 && r->min_p <= 1);
	CHECK(isfinite(r->repetition_penalty) && r->repetition_penalty > 0 && r->repetition_penalty <= 100);
	CHECK(r->top_k >= 0 && r->top_k <= INT32_MAX);
	CHECK(r->presence >= -2 && r->presence <= 2 && r->frequency >= -2 && r->frequency <= 2);
	CHECK(r->n_bias >= 0 && r->n_bias <= 1024);
	CHECK(r->min_bias >= -100 && r->max_bias <= 100 && r->min_bias <= r->max_bias);
	CHECK(r->bias_min_id >= 0 && r->bias_min_id <= r->bias_max_id && (size_t)r->bias_max_id < r->n_vocab);
	CHECK(r->min_scale >= -1e6f && r->max_scale <= 1e6f && r->min_scale <= r->max_scale);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	gm_serve_request_check r;
	int chat, status;

	if (!size)
		return 0;
	chat = data[0] & 1;
	status = gm_serve_check_request(srv, chat, (const char *)data + 1, size - 1, &r);
	CHECK(status == r.status);
	if (status != 200) {
		if (fuzz_verbose())
			fprintf(stderr, "refused: %d %s: %s\n", status, r.code ? r.code : "(null)", r.message);
		/* a body can be refused only as the client's fault, and explained */
		CHECK(status >= 400 && status <= 499);
		CHECK(r.message[0] && r.code && r.code[0]);
		return 0;
	}
	fuzz_accepted(chat ? "chat" : "completion");
	check_accepted(&r);
	return 0;
}
