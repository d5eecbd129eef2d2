/*
 * git-infer - run a model: generate text from a prompt, chat, or check
 * that a model directory loads.  Argument parsing and printing only; the
 * work is done by libcore (generate.h, sampler.h, tokenizer.h, chat.h,
 * peft.h for --adapter).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "manage/adapter.h"
#include "base/buf.h"
#include "text/chat.h"
#include "text/toolcall.h"
#include "serve/toolreq.h"
#include "base/cmd.h"
#include "cpu/kernels.h"
#include "engine/forward.h"
#include "base/fs.h"
#include "engine/generate.h"
#include "engine/modelfiles.h"
#include "formats/gguf.h"
#include "perplexity.h"
#include "base/json.h"
#include "base/log.h"
#include "formats/model.h"
#include "formats/peft.h"
#include "storage/resolve.h"
#include "formats/sparse.h"
#include "formats/safetensors.h"
#include "base/rng.h"
#include "engine/sampler.h"
#include "serve/serve.h"
#include "serve/learn.h"
#include "text/grammar.h"
#include "text/jsonschema.h"
#include "text/tokenizer.h"

static const char *const usage[] = {
	"git infer -m <model> -p <prompt> [<options>]",
	"git infer -m <model> --chat [-p <prompt>] [--system <text>] [<options>]",
	"git infer -m <model> --check [--adapter <spec>...] [--json] [-v | -q]",
	"git infer -m <model> --tokenize < <text>",
	"git infer -m <model> --render-chat <messages.json> [--tools <tools.json>]",
	"git infer -m <model> --serve [<addr>:]<port> [--parallel <n>] [--queue <n>] [--kv-tokens <n>] "
	"[--adapter [<name>=]<dir>...] [--learn <name> [--learn-sparse <density>]]",
	NULL
};

#define UNSET_LONG LONG_MIN

struct infer_opts {
	const char *model_id; /* --serve: the registered name clients use; NULL: the directory's */
	const char *model, *prompt, *system, *seed, *prompt_ids, *logits_out, *render_chat, *kv_type, *matmul;
	const char *grammar, *json_schema; /* constrained decoding: a GBNF file, a JSON Schema file */
	const char *quant;  /* --quant: which GGUF file of the model directory */
	const char *perplexity; /* --perplexity FILE */
	enum gm_matmul_mode mm; /* --matmul, GM_MATMUL or the CPU's default, resolved */
	long batch;         /* --batch: tokens per evaluation for --perplexity */
	int chat, think, print_ids, tokenize, generation_prompt, verbosity;
	const char *tools, *tool_choice; /* --tools FILE, --tool-choice */
	long max_tokens, top_k, threads, ctx;
	double temperature, top_p, min_p, repeat_penalty;
	gm_strlist stop;
	gm_strlist adapter;
	/* --serve */
	const char *serve, *api_key;
	long parallel, queue, max_body, kv_tokens, prefill_chunk;
	int prefix_cache;     /* -1: not given */
	double shutdown_timeout;
	/* against clients that hold connections; UNSET_LONG / NAN: not given */
	double header_timeout, body_timeout;
	long max_connections, max_client_connections, max_queued_tokens;
	/* the files and fine-tuning API; -1 / UNSET_LONG / NULL: not given */
	int fine_tuning;
	long max_file_size, ft_threads, ft_nice, ft_checkpoint_every;
	const char *ft_dir;
	/* --learn (learn.h); UNSET_LONG / NAN: not given */
	const char *learn;
	double learn_sparse, learn_lr, learn_share, learn_commit_seconds;
	long learn_rank, learn_batch, learn_epochs, learn_threads, learn_commit_steps, learn_max_pending;
};

/* ---------------------------------------------------------------- --adapter */

/* One --adapter SPEC: a PEFT directory or an adapter's name, and a scale. */
struct adapter_spec {
	char *name;     /* SPEC without :SCALE */
	char *dir;      /* once resolved */
	float scale;
	gm_peft_adapter *ad;     /* a LoRA, or */
	gm_sparse_adapter *sp;   /* a sparse delta (sparse_config.json) */
};

struct adapter_set {
	struct adapter_spec *v;
	int n;
};

static void adapter_set_release(struct adapter_set *as)
{
	int i;

	for (i = 0; i < as->n; i++) {
		free(as->v[i].name);
		free(as->v[i].dir);
		gm_peft_close(as->v[i].ad);
		gm_sparse_close(as->v[i].sp);
	}
	free(as->v);
	as->v = NULL;
	as->n = 0;
}

/*
 * Splits each SPEC into a name and a scale: SPEC itself when it is an
 * existing path (a path may hold ':'), else split at its last ':'.  Bad
 * usage: a message in err, -1.
 */
static int parse_adapter_specs(const gm_strlist *specs, struct adapter_set *as, gm_error *err)
{
	size_t i;

	as->v = gm_xcalloc(specs->n ? specs->n : 1, sizeof(*as->v));
	as->n = 0;
	for (i = 0; i < specs->n; i++) {
		const char *spec = specs->items[i], *colon = strrchr(spec, ':');
		struct adapter_spec *a = &as->v[as->n++];

		a->scale = 1.0f;
		if (access(spec, F_OK) && colon) {
			if (gm_adapter_parse_scale(colon + 1, &a->scale))
				return gm_error_set(err, GM_EINVAL, "option '--adapter' expects <dir or "
						    "name>[:<scale>] with a number for the scale, not '%s'", spec);
			a->name = gm_xstrdup(spec);
			a->name[colon - spec] = '\0';
		} else {
			a->name = gm_xstrdup(spec);
		}
		if (!*a->name)
			return gm_error_set(err, GM_EINVAL, "option '--adapter' expects <dir or name>[:<scale>], "
					    "not '%s'", spec);
	}
	return 0;
}

/* The directory of adapter a: an existing directory, or an adapter of the model (adapter.h). */
static int resolve_adapter(const char *model, struct adapter_spec *a, gm_error *err)
{
	return gm_adapter_resolve(model, a->name, &a->dir, err);
}

/* Resolves, opens and checks every adapter against the model; 0, or 1 after printing an error. */
static int load_adapters(const gm_model *m, const char *model_dir, struct adapter_set *as)
{
	gm_error err = GM_ERROR_INIT;
	int i;

	for (i = 0; i < as->n; i++) {
		struct adapter_spec *a = &as->v[i];

		if (resolve_adapter(model_dir, a, &err))
			return gm_cmd_error(&err);
		if (gm_sparse_is_dir(a->dir)) {
			if (gm_sparse_open(a->dir, &a->sp, &err) || gm_forward_check_sparse(m, a->sp, &err))
				return gm_cmd_error(&err);
		} else if (gm_peft_open(a->dir, &a->ad, &err) || gm_forward_check_adapter(m, a->ad, &err)) {
			return gm_cmd_error(&err);
		}
	}
	return 0;
}

/* "r 8, alpha 16, 21 modules, 43.2K parameters" */
static void describe_adapter(const struct adapter_spec *a, gm_buf *b)
{
	if (a->sp) {
		gm_buf_addf(b, "%s (scale %g): sparse delta, density %g, %zu modules, ", a->dir, a->scale,
			    a->sp->density, a->sp->n_modules);
		gm_buf_add_human_count(b, a->sp->nnz);
		gm_buf_adds(b, " non-zeros");
		return;
	}
	gm_buf_addf(b, "%s (scale %g): r %lld, alpha %g%s, %zu modules, ", a->dir, a->scale,
		    (long long)a->ad->config.r, a->ad->config.lora_alpha, a->ad->config.use_rslora ? ", rslora" : "",
		    a->ad->n_modules);
	gm_buf_add_human_count(b, a->ad->n_params);
	gm_buf_adds(b, " parameters");
}

/* ---------------------------------------------------------------- --check */

static void print_summary(const gm_model *m)
{
	const gm_model_config *c = &m->config;
	gm_buf b = GM_BUF_INIT;
	char dtype[64];

	gm_weights_dtype_mix(m->weights, dtype, sizeof(dtype));
	gm_buf_add_human_count(&b, m->n_params);
	printf("ok: %s: %s, %lld layers, hidden %lld, %s parameters, %s, vocab %lld\n", m->dir, c->model_type,
	       (long long)c->num_hidden_layers, (long long)c->hidden_size, b.buf, dtype,
	       (long long)c->vocab_size);
	gm_buf_release(&b);
}

static void print_json(const gm_model *m, const struct adapter_set *as)
{
	const gm_model_config *c = &m->config;
	json_object *o = json_object_new_object();
	char dtype[64];

	gm_weights_dtype_mix(m->weights, dtype, sizeof(dtype));
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	json_object_object_add(o, "path", json_object_new_string(m->dir));
	json_object_object_add(o, "architecture", json_object_new_string(c->architecture));
	json_object_object_add(o, "model_type", json_object_new_string(c->model_type));
	json_object_object_add(o, "layers", json_object_new_int64(c->num_hidden_layers));
	json_object_object_add(o, "hidden_size", json_object_new_int64(c->hidden_size));
	json_object_object_add(o, "parameters", json_object_new_int64((int64_t)m->n_params));
	json_object_object_add(o, "dtype", json_object_new_string(dtype));
	json_object_object_add(o, "vocab_size", json_object_new_int64(c->vocab_size));
	json_object_object_add(o, "tensors", json_object_new_int64((int64_t)gm_weights_count(m->weights)));
	if (as->n) {
		json_object *arr = json_object_new_array();
		int i;

		for (i = 0; i < as->n; i++) {
			const struct adapter_spec *a = &as->v[i];
			json_object *ao = json_object_new_object();

			json_object_object_add(ao, "path", json_object_new_string(a->dir));
			json_object_object_add(ao, "scale", json_object_new_double(a->scale));
			if (a->sp) {
				json_object_object_add(ao, "type", json_object_new_string("sparse"));
				json_object_object_add(ao, "density", json_object_new_double(a->sp->density));
				json_object_object_add(ao, "modules", json_object_new_int64((int64_t)a->sp->n_modules));
				json_object_object_add(ao, "nnz", json_object_new_int64((int64_t)a->sp->nnz));
				json_object_array_add(arr, ao);
				continue;
			}
			json_object_object_add(ao, "r", json_object_new_int64(a->ad->config.r));
			json_object_object_add(ao, "lora_alpha", json_object_new_double(a->ad->config.lora_alpha));
			json_object_object_add(ao, "modules", json_object_new_int64((int64_t)a->ad->n_modules));
			json_object_object_add(ao, "parameters", json_object_new_int64((int64_t)a->ad->n_params));
			json_object_array_add(arr, ao);
		}
		json_object_object_add(o, "adapters", arr);
	}
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static int check_model(const char *dir, struct adapter_set *as, int json, int verbosity)
{
	gm_error err = GM_ERROR_INIT;
	gm_model *m;
	gm_buf b = GM_BUF_INIT;
	int i;

	if (gm_model_open(dir, &m, &err))
		return gm_cmd_error(&err);
	if (load_adapters(m, dir, as)) {
		gm_model_close(m);
		return 1;
	}
	if (json) {
		print_json(m, as);
	} else if (verbosity >= 0) {
		print_summary(m);
		for (i = 0; i < as->n; i++) {
			gm_buf_reset(&b);
			describe_adapter(&as->v[i], &b);
			printf("ok: adapter %s\n", b.buf);
		}
	}
	gm_buf_release(&b);
	gm_model_close(m);
	return 0;
}

/* ---------------------------------------------------------------- helpers */

static int read_stdin(gm_buf *out, gm_error *err)
{
	char chunk[65536];
	size_t n;

	while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
		gm_buf_add(out, chunk, n);
	if (ferror(stdin))
		return gm_error_errno(err, "cannot read standard input");
	return 0;
}

static int write_out(const void *data, size_t len)
{
	if (len && fwrite(data, 1, len, stdout) != len)
		return -1;
	return fflush(stdout) ? -1 : 0;
}

/* "1,2,3" (spaces allowed) into ids; 0 or -1 with a message in err. */
static int parse_ids(const char *s, int32_t **ids, size_t *n, gm_error *err)
{
	size_t alloc = 16;
	const char *p = s;

	*n = 0;
	*ids = gm_xmalloc(alloc * sizeof(**ids));
	for (;;) {
		char *end;
		long long v;

		while (*p == ' ')
			p++;
		errno = 0;
		v = strtoll(p, &end, 10);
		if (end == p || errno || v < 0 || v > INT32_MAX) {
			free(*ids);
			*ids = NULL;
			return gm_error_set(err, GM_EINVAL, "option '--prompt-ids' expects token ids separated by "
					    "commas, not '%s'", s);
		}
		if (*n == alloc) {
			alloc *= 2;
			*ids = gm_xrealloc(*ids, alloc * sizeof(**ids));
		}
		(*ids)[(*n)++] = (int32_t)v;
		p = end;
		while (*p == ' ')
			p++;
		if (!*p)
			return 0;
		if (*p++ != ',') {
			free(*ids);
			*ids = NULL;
			return gm_error_set(err, GM_EINVAL, "option '--prompt-ids' expects token ids separated by "
					    "commas, not '%s'", s);
		}
	}
}

static json_object *message(const char *role, const char *content)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "role", json_object_new_string(role));
	json_object_object_add(o, "content", json_object_new_string(content));
	return o;
}

/* ---------------------------------------------------------------- --tokenize, --render-chat */

static int run_tokenize(const struct infer_opts *io)
{
	gm_error err = GM_ERROR_INIT;
	gm_tokenizer *tok = NULL;
	gm_buf text = GM_BUF_INIT, out = GM_BUF_INIT;
	int32_t *ids = NULL;
	size_t n = 0, i;
	int ret;

	ret = gm_model_tokenizer_load(io->model, &tok, &err);
	if (!ret)
		ret = read_stdin(&text, &err);
	if (!ret)
		ret = gm_tokenizer_encode(tok, text.buf, text.len, &ids, &n, &err);
	if (!ret) {
		gm_buf_addch(&out, '[');
		for (i = 0; i < n; i++)
			gm_buf_addf(&out, "%s%d", i ? ", " : "", ids[i]);
		gm_buf_adds(&out, "]\n");
		if (write_out(out.buf, out.len))
			ret = gm_error_errno(&err, "cannot write to standard output");
	}
	free(ids);
	gm_buf_release(&text);
	gm_buf_release(&out);
	gm_tokenizer_free(tok);
	return ret ? gm_cmd_error(&err) : 0;
}

#define TOOLS_SHAPE "[{\"type\": \"function\", \"function\": {\"name\": ..., \"parameters\": {...}}}]"

/*
 * --tools FILE (an OpenAI tools array) and --tool-choice, read as the
 * server reads a request's; the format from the template t.
 */
static int load_tools(const struct infer_opts *io, const gm_chat_template *t, gm_toolreq *tr, gm_error *err)
{
	json_object *req, *tools = NULL;
	const char *param;
	int ret;

	memset(tr, 0, sizeof(*tr));
	if (!io->tools && !io->tool_choice)
		return 0;
	if (io->tools && (ret = gm_json_parse_file(io->tools, &tools, err)))
		return ret;
	if (tools && !json_object_is_type(tools, json_type_array)) {
		json_object_put(tools);
		return gm_error_set(err, GM_EFORMAT, "%s: expected a JSON array of tools: " TOOLS_SHAPE, io->tools);
	}
	req = json_object_new_object();
	if (tools)
		json_object_object_add(req, "tools", tools);
	if (io->tool_choice) {
		const char *c = io->tool_choice;

		if (!strcmp(c, "auto") || !strcmp(c, "none") || !strcmp(c, "required")) {
			json_object_object_add(req, "tool_choice", json_object_new_string(c));
		} else {
			json_object *o = json_object_new_object(), *f = json_object_new_object();

			json_object_object_add(f, "name", json_object_new_string(c));
			json_object_object_add(o, "type", json_object_new_string("function"));
			json_object_object_add(o, "function", f);
			json_object_object_add(req, "tool_choice", o);
		}
	}
	ret = gm_toolreq_parse(req, gm_toolcall_detect(gm_chat_template_source(t)), tr, &param, err);
	if (ret && !strcmp(param, "tools")) {
		char detail[GM_ERROR_MSG_MAX];

		snprintf(detail, sizeof(detail), "%s", err->msg);
		gm_error_set(err, GM_EFORMAT, "%s: expected a JSON array of tools: " TOOLS_SHAPE " (%s)", io->tools,
			     detail);
	} else if (ret) {
		gm_error_prefix(err, "--tool-choice");
	}
	json_object_put(req);
	return ret;
}

static int run_render_chat(const struct infer_opts *io)
{
	gm_error err = GM_ERROR_INIT;
	gm_chat_template *t = NULL;
	json_object *messages = NULL;
	gm_buf out = GM_BUF_INIT;
	gm_toolreq tr;
	int ret;

	memset(&tr, 0, sizeof(tr));
	ret = gm_model_chat_template_load(io->model, &t, &err);
	if (!ret)
		ret = load_tools(io, t, &tr, &err);
	if (!ret)
		ret = gm_json_parse_file(io->render_chat, &messages, &err);
	if (!ret && !json_object_is_type(messages, json_type_array))
		ret = gm_error_set(&err, GM_EFORMAT, "%s: expected a JSON list of messages", io->render_chat);
	if (!ret) {
		gm_chat_render_opts ro;

		gm_chat_render_opts_init(&ro);
		ro.messages = messages;
		ro.tools = tr.tools;
		ro.add_generation_prompt = io->generation_prompt;
		ro.enable_thinking = (enum gm_chat_thinking)io->think;
		ret = gm_chat_render_ex(t, &ro, &out, &err);
	}
	gm_toolreq_release(&tr);
	if (!ret && write_out(out.buf, out.len))
		ret = gm_error_errno(&err, "cannot write to standard output");
	json_object_put(messages);
	gm_buf_release(&out);
	gm_chat_template_free(t);
	return ret ? gm_cmd_error(&err) : 0;
}

/* ---------------------------------------------------------------- generation */

struct session {
	const struct infer_opts *io;
	gm_model *model;
	gm_tokenizer *tok;
	gm_chat_template *chat;
	gm_forward *f;
	gm_sampler *sampler;
	gm_generator *gen;
	gm_grammar *grammar;
	gm_grammar_vocab *vocab;
	gm_generate_opts opts;
	int n_ctx;
	gm_toolreq tools;          /* --tools, --tool-choice */
	gm_toolcall_parser *tc;    /* the reply read for calls; NULL: no tools */
	uint64_t seed;             /* the sampling seed, which also makes the calls' ids */
	/* output state */
	gm_buf *reply;      /* NULL, or where the text also goes */
	int n_ids_printed;
	char last;          /* the last byte written */
	int write_failed;
};

static int show_text(struct session *s, const char *text, size_t len)
{
	if (s->io->print_ids || !len)
		return 0;
	if (write_out(text, len)) {
		s->write_failed = 1;
		return 1;
	}
	s->last = text[len - 1];
	return 0;
}

/* With --tools the parser releases the content; the calls are printed at the end. */
static int on_tool_event(void *ctx, const gm_toolcall_event *ev)
{
	return ev->index < 0 ? show_text(ctx, ev->text, ev->len) : 0;
}

static int on_text(void *ctx, const char *text, size_t len)
{
	struct session *s = ctx;

	if (s->reply)
		gm_buf_add(s->reply, text, len);
	if (s->tc)
		return gm_toolcall_feed(s->tc, text, len, on_tool_event, s);
	return show_text(s, text, len);
}

/* The calls, one JSON line each ({"id", "type", "function": {"name", "arguments"}}). */
static void print_calls(struct session *s)
{
	json_object *calls;
	size_t i, n;

	gm_toolcall_finish(s->tc, on_tool_event, s);
	calls = gm_toolreq_calls_json(s->tc);
	n = calls ? json_object_array_length(calls) : 0;
	if (n && s->last != '\n')
		putchar('\n');
	for (i = 0; i < n; i++) {
		puts(json_object_to_json_string_ext(json_object_array_get_idx(calls, i),
						    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
		s->last = '\n';
	}
	json_object_put(calls);
}

static int on_token(void *ctx, int32_t id)
{
	struct session *s = ctx;

	if (printf("%s%d", s->n_ids_printed++ ? "," : "", id) < 0 || fflush(stdout)) {
		s->write_failed = 1;
		return 1;
	}
	return 0;
}

static void print_timing(const gm_generate_stats *st)
{
	fprintf(stderr, "prompt: %d tokens in %.3f s (%.1f tok/s); decode: %d tokens in %.3f s (%.1f tok/s)\n",
		st->n_prompt, st->prompt_s, st->prompt_s > 0 ? st->n_prompt / st->prompt_s : 0.0, st->n_decode,
		st->decode_s, st->decode_s > 0 ? st->n_decode / st->decode_s : 0.0);
}

static int write_logits(const char *path, const float *logits, size_t n_prompt, size_t n_vocab, gm_error *err)
{
	gm_st_writer *w = gm_st_writer_new();
	int64_t shape[2] = { (int64_t)n_prompt, (int64_t)n_vocab };
	int ret;

	ret = gm_st_writer_add(w, "logits", GM_DTYPE_F32, 2, shape, logits, err);
	if (!ret)
		ret = gm_st_writer_write(w, path, err);
	gm_st_writer_free(w);
	return ret;
}

/*
 * Generates after ids; the text goes to stdout (and to s->reply).
 * Returns 0, or 1 after printing an error.
 */
static int generate(struct session *s, const int32_t *ids, size_t n)
{
	const struct infer_opts *io = s->io;
	gm_error err = GM_ERROR_INIT;
	gm_generate_stats st;
	gm_generate_opts o = s->opts;
	size_t n_vocab = (size_t)s->model->config.vocab_size;
	float *logits = NULL;
	int ret;

	if (n > (size_t)s->n_ctx) {
		gm_error_set(&err, GM_EINVAL,
			     "the prompt is %zu tokens, longer than the context (%d tokens; see --ctx)", n, s->n_ctx);
		return gm_cmd_error(&err);
	}
	if (io->logits_out) {
		if (n > SIZE_MAX / sizeof(float) / n_vocab) {
			gm_error_set(&err, GM_EINVAL, "--logits-out: %zu x %zu logits do not fit in memory", n,
				     n_vocab);
			return gm_cmd_error(&err);
		}
		logits = malloc(n * n_vocab * sizeof(*logits));
		if (!logits) {
			gm_error_set(&err, GM_ENOMEM, "--logits-out: no memory for %zu x %zu logits", n, n_vocab);
			return gm_cmd_error(&err);
		}
		o.prompt_logits = logits;
	}
	s->n_ids_printed = 0;
	s->last = '\n';
	if (gm_toolreq_active(&s->tools)) {
		gm_toolcall_parser_new(s->tools.format, s->tools.tools, s->seed, &s->tc);
		if (gm_toolcall_needs_special(s->tools.format))
			o.skip_special = 0;
	}
	ret = gm_generate(s->gen, ids, n, &o, &st, &err);
	if (s->tc) {
		if (!ret)
			print_calls(s);
		gm_toolcall_parser_free(s->tc);
		s->tc = NULL;
	}
	if (!ret && io->logits_out)
		ret = write_logits(io->logits_out, logits, n, n_vocab, &err);
	free(logits);
	if (io->print_ids && s->n_ids_printed)
		putchar('\n');
	else if (!io->print_ids && s->last != '\n' && isatty(1))
		putchar('\n');
	if (fflush(stdout) || s->write_failed) {
		if (errno == EPIPE)
			return 0;
		gm_error_errno(&err, "cannot write to standard output");
		return gm_cmd_error(&err);
	}
	if (ret)
		return gm_cmd_error(&err);
	if (st.stop == GM_STOP_CONTEXT)
		gm_warn("the context is full (%d tokens): generation stopped; see --ctx", s->n_ctx);
	gm_debug("stopped: %s, %d tokens generated", gm_stop_reason_name(st.stop), st.n_generated);
	if (io->verbosity > 0)
		print_timing(&st);
	return 0;
}

/* special: a raw prompt, with the post-processor's BOS/EOS (a rendered chat writes its own). */
static int encode(struct session *s, const char *text, size_t len, int special, int32_t **ids, size_t *n)
{
	gm_error err = GM_ERROR_INIT;

	if ((special ? gm_tokenizer_encode_special : gm_tokenizer_encode)(s->tok, text, len, ids, n, &err))
		return gm_cmd_error(&err);
	return 0;
}

static int render(struct session *s, json_object *messages, gm_buf *out)
{
	gm_error err = GM_ERROR_INIT;

	gm_chat_render_opts ro;

	gm_buf_reset(out);
	gm_chat_render_opts_init(&ro);
	ro.messages = messages;
	ro.tools = s->tools.tools;
	ro.add_generation_prompt = 1;
	ro.enable_thinking = (enum gm_chat_thinking)s->io->think;
	if (gm_chat_render_ex(s->chat, &ro, out, &err))
		return gm_cmd_error(&err);
	return 0;
}

/* One prompt, given by -p or --prompt-ids. */
static int run_once(struct session *s)
{
	const struct infer_opts *io = s->io;
	gm_error err = GM_ERROR_INIT;
	gm_buf text = GM_BUF_INIT, rendered = GM_BUF_INIT;
	int32_t *ids = NULL;
	size_t n = 0;
	int ret = 0;

	if (io->prompt_ids) {
		if (parse_ids(io->prompt_ids, &ids, &n, &err))
			return gm_cmd_error(&err);
	} else {
		if (!strcmp(io->prompt, "-")) {
			if (read_stdin(&text, &err)) {
				ret = gm_cmd_error(&err);
				goto out;
			}
		} else {
			gm_buf_adds(&text, io->prompt);
		}
		if (io->chat) {
			json_object *messages = json_object_new_array();

			if (io->system)
				json_object_array_add(messages, message("system", io->system));
			json_object_array_add(messages, message("user", text.buf));
			ret = render(s, messages, &rendered);
			json_object_put(messages);
			if (ret)
				goto out;
			gm_buf_reset(&text);
			gm_buf_add(&text, rendered.buf, rendered.len);
		}
		if ((ret = encode(s, text.buf, text.len, !io->chat, &ids, &n)))
			goto out;
	}
	ret = generate(s, ids, n);
out:
	free(ids);
	gm_buf_release(&text);
	gm_buf_release(&rendered);
	return ret;
}

/* The interactive chat: one user message a line, the history kept. */
static int run_interactive(struct session *s)
{
	const struct infer_opts *io = s->io;
	json_object *messages = json_object_new_array();
	gm_buf rendered = GM_BUF_INIT, reply = GM_BUF_INIT;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int ret = 0;

	if (io->system)
		json_object_array_add(messages, message("system", io->system));
	fprintf(stderr, "Chatting with %s; end with Ctrl-D.\n", s->model->dir);
	for (;;) {
		int32_t *ids = NULL;
		size_t n = 0, count;

		fputs("> ", stdout);
		fflush(stdout);
		len = getline(&line, &cap, stdin);
		if (len < 0) {
			putchar('\n');
			break;
		}
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (!len)
			continue;
		json_object_array_add(messages, message("user", line));
		count = json_object_array_length(messages);
		if (render(s, messages, &rendered) || encode(s, rendered.buf, rendered.len, 0, &ids, &n)) {
			json_object_array_del_idx(messages, count - 1, 1);
			continue;
		}
		gm_buf_reset(&reply);
		s->reply = &reply;
		ret = generate(s, ids, n);
		s->reply = NULL;
		free(ids);
		if (s->write_failed)
			break;
		if (ret) {
			/* Too long, most likely: forget the turn, go on. */
			json_object_array_del_idx(messages, count - 1, 1);
			ret = 0;
			continue;
		}
		json_object_array_add(messages, message("assistant", reply.buf));
	}
	free(line);
	gm_buf_release(&rendered);
	gm_buf_release(&reply);
	json_object_put(messages);
	return ret;
}

static void describe_sampling(const gm_sampler_params *p)
{
	if (p->temperature == 0)
		gm_info("sampling: greedy%s", p->repetition_penalty != 1.0 ? " with a repetition penalty" : "");
	else
		gm_info("sampling: temperature %g, top-k %lld, top-p %g, min-p %g, repetition penalty %g, seed %llu",
			p->temperature, (long long)p->top_k, p->top_p, p->min_p, p->repetition_penalty,
			(unsigned long long)p->seed);
}

/* --grammar FILE or --json-schema FILE: the grammar generation follows. */
static int load_grammar(const struct infer_opts *io, gm_grammar **out, gm_error *err)
{
	gm_buf text = GM_BUF_INIT, gbnf = GM_BUF_INIT;
	const char *path = io->grammar ? io->grammar : io->json_schema;
	int ret;

	if ((ret = gm_read_file(path, &text, err)))
		return ret;
	if (io->json_schema) {
		json_object *schema = NULL;

		if (!(ret = gm_json_parse(text.buf, text.len, path, &schema, err)))
			ret = gm_json_schema_to_gbnf(schema, "", &gbnf, err);
		json_object_put(schema);
		if (!ret)
			ret = gm_grammar_parse(gbnf.buf, gbnf.len, NULL, out, err);
	} else {
		ret = gm_grammar_parse(text.buf, text.len, NULL, out, err);
	}
	if (ret)
		gm_error_prefix(err, "%s", path);
	gm_buf_release(&text);
	gm_buf_release(&gbnf);
	return ret;
}

static int run_generate(const struct gm_cmd_info *cmd, const struct infer_opts *io, struct adapter_set *as)
{
	gm_error err = GM_ERROR_INIT;
	struct session s;
	gm_sampler_params sp;
	gm_forward_opts fo = { 0, 0, GM_KV_F32, io->mm }; /* f32 keys and values by default (the goldens' 1e-4) */
	int interactive = !io->prompt && !io->prompt_ids;
	int need_tok, ret = 1;

	memset(&s, 0, sizeof(s));
	s.io = io;

	/* Usage first, before anything is loaded. */
	if (io->kv_type && gm_kv_type_parse(io->kv_type, &fo.kv_type, &err))
		return gm_cmd_usage_error(cmd, "%s", err.msg);
	if (io->prompt && io->prompt_ids)
		return gm_cmd_usage_error(cmd, "-p and --prompt-ids cannot be combined");
	if (io->chat && io->prompt_ids)
		return gm_cmd_usage_error(cmd, "--chat takes a text prompt (-p), not --prompt-ids");
	if (io->prompt_ids) {
		int32_t *ids;
		size_t n;

		/* a malformed list is bad usage; it is parsed again where it is used */
		if (parse_ids(io->prompt_ids, &ids, &n, &err))
			return gm_cmd_usage_error(cmd, "%s", err.msg);
		free(ids);
	}
	if ((io->system || io->think >= 0) && !io->chat && !interactive)
		return gm_cmd_usage_error(cmd, "--system, --think and --no-think go with --chat");
	if ((io->tools || io->tool_choice) && (!io->chat || !io->prompt))
		return gm_cmd_usage_error(cmd, "--tools goes with --render-chat or --chat -p <prompt> (and "
					  "--tool-choice with --tools)");
	if (io->grammar && io->json_schema)
		return gm_cmd_usage_error(cmd, "--grammar and --json-schema cannot be combined");

	if (interactive) {
		if (!isatty(0))
			return gm_cmd_usage_error(cmd, "missing -p <prompt> (an interactive chat needs a terminal)");
		if (io->logits_out || io->print_ids)
			return gm_cmd_usage_error(cmd, "--logits-out and --print-ids need a prompt "
						  "(-p or --prompt-ids)");
	}
	gm_sampler_params_init(&sp);
	if ((io->grammar || io->json_schema) && load_grammar(io, &s.grammar, &err))
		return gm_cmd_error(&err);

	if ((ret = gm_model_open(io->model, &s.model, &err))) {
		gm_grammar_free(s.grammar);
		return gm_cmd_error(&err);
	}
	gm_sampler_params_from_generation(&sp, &s.model->generation);
	if (!isnan(io->temperature))
		sp.temperature = io->temperature;
	if (io->top_k != UNSET_LONG)
		sp.top_k = io->top_k;
	if (!isnan(io->top_p))
		sp.top_p = io->top_p;
	if (!isnan(io->min_p))
		sp.min_p = io->min_p;
	if (!isnan(io->repeat_penalty))
		sp.repetition_penalty = io->repeat_penalty;
	if (io->seed) {
		char *end;

		errno = 0;
		sp.seed = strtoull(io->seed, &end, 10);
		if (!*io->seed || *end || errno || io->seed[0] == '-') {
			ret = gm_cmd_usage_error(cmd, "option '--seed' expects a non-negative integer, not '%s'",
						 io->seed);
			goto out;
		}
	} else {
		sp.seed = gm_rng_entropy();
	}
	if (gm_sampler_params_check(&sp, &err)) {
		ret = gm_cmd_usage_error(cmd, "%s", err.msg);
		goto out;
	}
	describe_sampling(&sp);
	s.seed = sp.seed;

	need_tok = !io->prompt_ids || !io->print_ids || io->stop.n || interactive || s.grammar;
	if (need_tok && (ret = gm_model_tokenizer_load(io->model, &s.tok, &err)))
		goto fail;
	/* the vocabulary trie is built once, for every turn */
	if (s.grammar && (ret = gm_grammar_vocab_new(s.tok, (size_t)s.model->config.vocab_size, &s.vocab, &err)))
		goto fail;
	if ((io->chat || interactive) && (ret = gm_model_chat_template_load(io->model, &s.chat, &err)))
		goto fail;
	if (s.chat && (ret = load_tools(io, s.chat, &s.tools, &err)))
		goto fail;
	/* --tool-choice required or a name: the calls' grammar */
	if (s.tools.choice == GM_TOOL_CHOICE_REQUIRED || s.tools.choice == GM_TOOL_CHOICE_NAMED) {
		if (s.grammar) {
			ret = gm_cmd_usage_error(cmd, "--tool-choice %s does not go with --grammar or --json-schema",
						 io->tool_choice);
			goto out;
		}
		if ((ret = gm_toolreq_constraint(&s.tools, &s.grammar, &err)) ||
		    (ret = gm_grammar_vocab_new(s.tok, (size_t)s.model->config.vocab_size, &s.vocab, &err)))
			goto fail;
	}
	if ((ret = load_adapters(s.model, io->model, as)))
		goto out;
	fo.n_ctx = (int)io->ctx;
	fo.n_threads = (int)io->threads;
	if ((ret = gm_forward_new_ex(s.model, &fo, &s.f, &err)))
		goto fail;
	gm_debug("KV cache: %s, %zu bytes per token", gm_kv_type_name(gm_forward_kv_type(s.f)),
		 gm_kv_bytes_per_token(s.model, gm_forward_kv_type(s.f)));
	if (as->n) {
		gm_forward_adapter *list = gm_xcalloc((size_t)as->n, sizeof(*list));
		gm_buf b = GM_BUF_INIT;
		int i;

		for (i = 0; i < as->n; i++) {
			list[i].lora = as->v[i].ad;
			list[i].sparse = as->v[i].sp;
			list[i].scale = as->v[i].scale;
			gm_buf_reset(&b);
			describe_adapter(&as->v[i], &b);
			gm_info("adapter: %s", b.buf);
		}
		ret = gm_forward_set_adapter_list(s.f, list, as->n, &err);
		free(list);
		gm_buf_release(&b);
		if (ret)
			goto fail;
	}
	if (
	    (ret = gm_sampler_new(&sp, (size_t)s.model->config.vocab_size, &s.sampler, &err)) ||
	    (ret = gm_generator_new(s.model, s.f, s.tok, &s.gen, &err)))
		goto fail;
	s.n_ctx = gm_forward_n_ctx(s.f);

	gm_generate_opts_init(&s.opts, &s.model->generation);
	if (io->max_tokens != UNSET_LONG)
		s.opts.max_tokens = io->max_tokens;
	else
		s.opts.max_tokens = s.model->generation.max_new_tokens;
	s.opts.stop = io->stop.items;
	s.opts.n_stop = io->stop.n;
	s.opts.sampler = s.sampler;
	s.opts.grammar = s.grammar;
	s.opts.grammar_vocab = s.vocab;
	s.opts.cb_ctx = &s;
	if (s.tok)
		s.opts.on_text = on_text;
	if (io->print_ids)
		s.opts.on_token = on_token;

	ret = interactive ? run_interactive(&s) : run_once(&s);
	goto out;
fail:
	ret = gm_cmd_error(&err);
out:
	gm_generator_free(s.gen);
	gm_grammar_vocab_free(s.vocab);
	gm_grammar_free(s.grammar);
	gm_sampler_free(s.sampler);
	gm_forward_free(s.f);
	gm_chat_template_free(s.chat);
	gm_toolreq_release(&s.tools);
	gm_tokenizer_free(s.tok);
	gm_model_close(s.model);
	return ret;
}

/* ---------------------------------------------------------------- --serve */

/*
 * The products of BF16 weights: --matmul, else GM_MATMUL, else fast where
 * the CPU computes bf16 products (AVX512_BF16 with the AVX-512 kernels),
 * precise elsewhere; the same for --serve, whose steps give each request
 * its own bits in either mode (prompt and decode rows keep their kernels
 * whatever they share a step with: gm_forward_role).  Fast asked for on a
 * CPU without the bf16 products warns and runs precise.  Returns 0, or the
 * usage error's status for an unknown mode.
 */
static int resolve_matmul(struct infer_opts *io, const struct gm_cmd_info *cmd)
{
	const char *name = io->matmul ? io->matmul : getenv("GM_MATMUL");
	int bf16 = gm_kernels_fast_matmul();

	if (!name || !*name) {
		io->mm = bf16 ? GM_MATMUL_FAST : GM_MATMUL_PRECISE;
		return 0;
	}
	if (!strcmp(name, "precise")) {
		io->mm = GM_MATMUL_PRECISE;
	} else if (!strcmp(name, "fast")) {
		io->mm = bf16 ? GM_MATMUL_FAST : GM_MATMUL_PRECISE;
		if (!bf16)
			gm_warn("%s needs AVX-512 with AVX512_BF16, which this CPU (or GM_KERNELS) lacks: the "
				"precise kernels run", io->matmul ? "--matmul fast" : "GM_MATMUL=fast");
	} else {
		return gm_cmd_usage_error(cmd, "unknown %s mode '%s' (precise or fast)",
					  io->matmul ? "--matmul" : "GM_MATMUL", name);
	}
	return 0;
}

/* Options that belong to one generation: with --serve they come in each request. */
static const char *per_request_option(const struct infer_opts *io)
{
	if (io->prompt || io->prompt_ids)
		return io->prompt ? "-p" : "--prompt-ids";
	if (io->chat || io->system || io->think >= 0)
		return io->chat ? "--chat" : io->system ? "--system" : "--think";
	if (io->tools || io->tool_choice)
		return io->tools ? "--tools" : "--tool-choice";
	if (io->max_tokens != UNSET_LONG || io->top_k != UNSET_LONG)
		return io->max_tokens != UNSET_LONG ? "--max-tokens" : "--top-k";
	if (!isnan(io->temperature) || !isnan(io->top_p) || !isnan(io->min_p) || !isnan(io->repeat_penalty))
		return !isnan(io->temperature) ? "--temperature" : !isnan(io->top_p) ? "--top-p"
			: !isnan(io->min_p) ? "--min-p" : "--repeat-penalty";
	if (io->grammar || io->json_schema)
		return io->grammar ? "--grammar" : "--json-schema";
	if (io->seed || io->stop.n || io->print_ids || io->logits_out)
		return io->seed ? "--seed" : io->stop.n ? "--stop" : io->print_ids ? "--print-ids" : "--logits-out";
	return NULL;
}

/* --learn NAME: adapter NAME trained from POST /v1/adapters/NAME/examples (learn.h); 0, or 1 after an error. */
static int start_learning(const struct infer_opts *io, gm_serve *srv, gm_learn **out)
{
	gm_error err = GM_ERROR_INIT;
	gm_learn_opts lo;

	gm_learn_opts_init(&lo);
	if (!isnan(io->learn_sparse))
		lo.online.sparse = io->learn_sparse;
	if (!isnan(io->learn_lr))
		lo.online.lr = io->learn_lr;
	if (!isnan(io->learn_share))
		lo.online.share = io->learn_share;
	if (!isnan(io->learn_commit_seconds))
		lo.commit_seconds = io->learn_commit_seconds;
	if (io->learn_rank != UNSET_LONG)
		lo.online.rank = io->learn_rank, lo.online.alpha = 2.0 * (double)io->learn_rank;
	if (io->learn_batch != UNSET_LONG)
		lo.online.batch = (int)io->learn_batch;
	if (io->learn_epochs != UNSET_LONG)
		lo.online.epochs = (int)io->learn_epochs;
	if (io->learn_threads != UNSET_LONG)
		lo.online.n_threads = (int)io->learn_threads;
	if (io->learn_commit_steps != UNSET_LONG)
		lo.commit_steps = io->learn_commit_steps;
	if (io->learn_max_pending != UNSET_LONG)
		lo.online.max_pending = io->learn_max_pending;
	if (gm_learn_start(srv, io->model, io->learn, &lo, out, &err)) {
		fprintf(stderr, "error: --learn %s: %s\n", io->learn, err.msg);
		return 1;
	}
	fprintf(stderr, "git infer: learning '%s': POST /v1/adapters/%s/examples (%s, lr %g, %d example%s a step, "
		"%d pass%s each)\n", io->learn, io->learn, lo.online.sparse > 0 ? "sparse delta" : "LoRA", lo.online.lr,
		lo.online.batch, lo.online.batch == 1 ? "" : "s", lo.online.epochs, lo.online.epochs == 1 ? "" : "es");
	return 0;
}

static int run_serve(const struct gm_cmd_info *cmd, const struct infer_opts *io)
{
	gm_error err = GM_ERROR_INIT;
	gm_serve_config c;
	gm_serve *srv = NULL;
	gm_learn *learn = NULL;
	char *addr = NULL;
	const char *opt = per_request_option(io), *key = io->api_key;
	int status;
	sigset_t sigs;
	int sig = 0, i, ret;

	gm_serve_config_init(&c);
	if (opt)
		return gm_cmd_usage_error(cmd, "%s does not go with --serve: clients give it in each request", opt);
	c.kv_type = GM_KV_F32;
	c.matmul = io->mm;
	if (io->kv_type) {
		enum gm_kv_type kt;

		if (gm_kv_type_parse(io->kv_type, &kt, &err))
			return gm_cmd_usage_error(cmd, "%s", err.msg);
		c.kv_type = (int)kt;
	}
	if (gm_serve_parse_listen(io->serve, &addr, &c.port, &err))
		return gm_cmd_usage_error(cmd, "option '--serve' expects [<addr>:]<port>: %s", err.msg);
	for (i = 0; i < (int)io->adapter.n; i++)
		if (!strchr(io->adapter.items[i], '=') && !gm_is_dir(io->adapter.items[i])) {
			free(addr);
			return gm_cmd_usage_error(cmd, "with --serve, --adapter takes <dir> or <name>=<dir> (the "
						  "scale is given per request; <model>/adapters/ is loaded anyway), "
						  "not '%s'", io->adapter.items[i]);
		}
	if (!key || !*key)
		key = getenv("GM_API_KEY");

	c.model_dir = io->model;
	c.model_id = io->model_id;
	c.addr = addr;
	if (io->parallel != UNSET_LONG)
		c.n_parallel = (int)io->parallel;
	if (io->queue != UNSET_LONG)
		c.queue_size = (int)io->queue;
	if (io->max_body != UNSET_LONG)
		c.max_body = (size_t)io->max_body;
	if (!isnan(io->shutdown_timeout)) {
		if (io->shutdown_timeout < 0) {
			free(addr);
			return gm_cmd_usage_error(cmd, "option '--shutdown-timeout' expects seconds >= 0");
		}
		c.shutdown_timeout_s = io->shutdown_timeout;
	}
	c.api_key = key && *key ? key : NULL;
	c.n_ctx = (int)io->ctx;
	if (io->kv_tokens != UNSET_LONG)
		c.kv_tokens = io->kv_tokens;
	if (io->prefill_chunk != UNSET_LONG)
		c.prefill_chunk = (int)io->prefill_chunk;
	c.no_prefix_cache = io->prefix_cache == 0;
	if (!isnan(io->header_timeout))
		c.header_timeout_s = io->header_timeout;
	if (!isnan(io->body_timeout))
		c.body_timeout_s = io->body_timeout;
	if (!(c.header_timeout_s > 0) || !(c.body_timeout_s > 0)) {
		free(addr);
		return gm_cmd_usage_error(cmd, "options '--header-timeout' and '--body-timeout' expect seconds > 0");
	}
	if (io->max_connections != UNSET_LONG)
		c.max_connections = (int)io->max_connections;
	if (io->max_client_connections != UNSET_LONG)
		c.max_client_connections = (int)io->max_client_connections;
	if (io->max_queued_tokens != UNSET_LONG)
		c.max_queued_tokens = io->max_queued_tokens;
	c.n_threads = (int)io->threads;
	c.no_fine_tuning = io->fine_tuning == 0;
	if (io->max_file_size != UNSET_LONG)
		c.max_file_size = (uint64_t)io->max_file_size;
	if (io->ft_threads != UNSET_LONG)
		c.ft_threads = (int)io->ft_threads;
	if (io->ft_nice != UNSET_LONG)
		c.ft_nice = (int)io->ft_nice;
	if (io->ft_checkpoint_every != UNSET_LONG)
		c.ft_checkpoint_every = io->ft_checkpoint_every;
	c.ft_dir = io->ft_dir;
	c.adapters = (const char *const *)io->adapter.items;
	c.n_adapters = io->adapter.n;

	/* SIGINT and SIGTERM are taken with sigwait below: every thread the
	 * server starts inherits this mask, so none is interrupted by them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	ret = gm_serve_start(&c, &srv, &err);
	free(addr);
	if (ret)
		return gm_cmd_error(&err);
	fprintf(stderr, "git infer: listening on http://%s (loading %s)\n", gm_serve_address(srv), io->model);
	if (gm_serve_load(srv, &err)) {
		gm_serve_free(srv);
		return gm_cmd_error(&err);
	}
	if (io->learn && start_learning(io, srv, &learn)) {
		gm_serve_stop(srv);
		gm_serve_free(srv);
		return 1;
	}
	fprintf(stderr, "git infer: serving '%s' on http://%s/v1", gm_serve_id(srv), gm_serve_address(srv));
	for (i = 0; i < gm_serve_n_adapters(srv); i++)
		fprintf(stderr, "%s'%s:%s'", i ? ", " : " with adapters ", gm_serve_id(srv),
			gm_serve_adapter_name(srv, i));
	fprintf(stderr, "%s\n", c.api_key ? " (API key required)" : "");
	fprintf(stderr, "git infer: chat and dashboard for a browser at http://%s/\n", gm_serve_address(srv));
	sigwait(&sigs, &sig);
	fprintf(stderr, "git infer: %s: shutting down (in-flight requests have %g s)\n",
		sig == SIGINT ? "SIGINT" : "SIGTERM", c.shutdown_timeout_s);
	ret = gm_serve_stop(srv);
	if (ret)
		fprintf(stderr, "git infer: %d request%s cancelled\n", ret, ret == 1 ? "" : "s");
	status = 0;
	if (learn && gm_learn_stop(learn, &err)) {
		fprintf(stderr, "git infer: --learn %s: the last commit failed: %s\n", io->learn, err.msg);
		status = 1;
	}
	gm_learn_free(learn);
	gm_serve_free(srv);
	fprintf(stderr, "git infer: stopped\n");
	return status;
}

/*
 * -m: a .gguf file as it is; otherwise a directory or registered name, and
 * then, when the directory holds GGUF files (a Hub "-GGUF" repository) and
 * no safetensors weights, or --quant asks for one, the GGUF file chosen.
 */
static int resolve_model(const char *spec, const char *quant, char **out, gm_error *err)
{
	char *dir = NULL, *gguf = NULL, *st, *idx;
	int ret, has_st;

	*out = NULL;
	if (gm_gguf_is_file(spec)) {
		if (quant)
			return gm_error_set(err, GM_EINVAL, "--quant chooses among the GGUF files of a model "
					    "directory; '%s' is a file already", spec);
		*out = gm_xstrdup(spec);
		return 0;
	}
	if ((ret = gm_repo_resolve_model(spec, &dir, err)))
		return ret;
	st = gm_path_join(dir, "model.safetensors");
	idx = gm_path_join(dir, "model.safetensors.index.json");
	has_st = gm_is_file(st) || gm_is_file(idx);
	free(st);
	free(idx);
	/* safetensors and no --quant: that model; not a directory: the model
	 * loader says what is wrong with it */
	if ((has_st && !quant) || !gm_is_dir(dir)) {
		*out = dir;
		return 0;
	}
	ret = gm_gguf_pick(dir, quant, &gguf, err);
	if (ret < 0) {
		free(dir);
		return ret;
	}
	if (ret == 1) {
		free(dir);
		*out = gguf;
	} else {
		*out = dir;
	}
	return 0;
}

int main(int argc, const char **argv)
{
	struct infer_opts io;
	struct adapter_set as = { NULL, 0 };
	gm_error err = GM_ERROR_INIT;
	char *model_dir = NULL;
	int check = 0, json = 0, status, n, modes;
	const struct gm_option options[] = {
		GM_OPT_STRING('m', "model", &io.model, "model",
			      "the model: a directory, or NAME[@REV] of a registered model"),
		GM_OPT_STRING(0, "quant", &io.quant, "type",
			      "the GGUF file to run when the model has several: Q4_K_M, Q8_0... or a file name"),
		GM_OPT_STRING('p', "prompt", &io.prompt, "text", "the prompt (- reads standard input)"),
		GM_OPT_FLAG(0, "chat", &io.chat, "apply the chat template of the model"),
		GM_OPT_STRING(0, "system", &io.system, "text", "with --chat: a system message first"),
		GM_OPT_FLAG(0, "think", &io.think, "with --chat: enable_thinking (--no-think: off)"),
		GM_OPT_STRING(0, "tools", &io.tools, "file",
			      "with --chat or --render-chat: an OpenAI tools array (JSON); calls print as JSON lines"),
		GM_OPT_STRING(0, "tool-choice", &io.tool_choice, "choice",
			      "with --tools: auto (default), none, required or a function name"),
		GM_OPT_INT('n', "max-tokens", &io.max_tokens, "n",
			   "at most n new tokens (0: the prompt only; -1: no limit)", -1, INT_MAX),
		GM_OPT_STRING_LIST(0, "stop", &io.stop, "text", "stop before this text (repeatable)"),
		GM_OPT_STRING(0, "grammar", &io.grammar, "file", "constrain the output to a GBNF grammar"),
		GM_OPT_STRING(0, "json-schema", &io.json_schema, "file",
			      "constrain the output to JSON valid under a JSON Schema"),
		GM_OPT_STRING_LIST(0, "adapter", &io.adapter, "spec",
				   "apply a LoRA or sparse adapter: dir or name[:scale], with --serve [name=]dir "
				   "(repeatable)"),
		GM_OPT_GROUP("sampling (defaults from generation_config.json)"),
		GM_OPT_DOUBLE(0, "temperature", &io.temperature, "t", "0: greedy"),
		GM_OPT_INT(0, "top-k", &io.top_k, "k", "keep the k most likely tokens (0: off)", 0, INT_MAX),
		GM_OPT_DOUBLE(0, "top-p", &io.top_p, "p", "keep the most likely tokens up to mass p (1: off)"),
		GM_OPT_DOUBLE(0, "min-p", &io.min_p, "p", "drop tokens under p times the top one (0: off)"),
		GM_OPT_DOUBLE(0, "repeat-penalty", &io.repeat_penalty, "x", "penalize tokens already seen (1: off)"),
		GM_OPT_STRING(0, "seed", &io.seed, "n", "random seed (default: random): same seed, same text"),
		GM_OPT_GROUP("resources"),
		GM_OPT_INT(0, "threads", &io.threads, "n", "threads (default: all CPUs)", 0, 4096),
		GM_OPT_INT(0, "ctx", &io.ctx, "n", "context length in tokens (default: from the model, at most 4096)",
			   0, 1 << 24),
		GM_OPT_STRING(0, "kv-type", &io.kv_type, "type",
			      "KV cache in f32 (default), auto (the dtype of the model), bf16 or f16"),
		GM_OPT_STRING(0, "matmul", &io.matmul, "mode",
			      "products of bf16 weights: fast (bf16 activations; the default with AVX512_BF16) "
			      "or precise (f32)"),
		GM_OPT_GROUP("serving (OpenAI-compatible HTTP API)"),
		GM_OPT_STRING(0, "serve", &io.serve, "addr:port",
			      "serve the model over HTTP (addr: 127.0.0.1 if left out; port 0: any)"),
		GM_OPT_INT(0, "parallel", &io.parallel, "n", "requests generated at once, in one batch (default 1)", 1,
			   256),
		GM_OPT_INT(0, "queue", &io.queue, "n", "requests that may wait; more get 429 (default 16)", 0, 65536),
		GM_OPT_INT(0, "kv-tokens", &io.kv_tokens, "n",
			   "KV memory for n tokens, shared by all requests (default: parallel * ctx)", 16, 1L << 30),
		GM_OPT_INT(0, "prefill-chunk", &io.prefill_chunk, "n",
			   "prompt tokens read per batched step (default 256)", 1, 1 << 20),
		GM_OPT_FLAG(0, "prefix-cache", &io.prefix_cache,
			    "reuse the KV of shared prompt prefixes (default; --no-prefix-cache: off)"),
		GM_OPT_STRING(0, "api-key", &io.api_key, "key",
			      "clients must send this bearer token (default: $GM_API_KEY)"),
		GM_OPT_INT(0, "max-body", &io.max_body, "bytes", "largest request body; more gets 413 (default 4 MiB)",
			   1, 1L << 30),
		GM_OPT_DOUBLE(0, "shutdown-timeout", &io.shutdown_timeout, "s",
			      "on SIGTERM: seconds requests may take to finish (default 10)"),
		GM_OPT_DOUBLE(0, "header-timeout", &io.header_timeout, "s",
			      "a request's headers must arrive within s seconds (default 30)"),
		GM_OPT_DOUBLE(0, "body-timeout", &io.body_timeout, "s",
			      "and its body within s seconds after them (default 60)"),
		GM_OPT_INT(0, "max-connections", &io.max_connections, "n", "open connections in all (default 256)",
			   1, 65536),
		GM_OPT_INT(0, "max-client-connections", &io.max_client_connections, "n",
			   "open connections per client address (default 32)", 1, 65536),
		GM_OPT_INT(0, "max-queued-tokens", &io.max_queued_tokens, "n",
			   "prompt tokens that may wait in all; more get 429 (default: twice the KV pool)", 1, 1L << 40),
		GM_OPT_GROUP("fine-tuning through the API (/v1/files, /v1/fine_tuning/jobs)"),
		GM_OPT_FLAG(0, "fine-tuning", &io.fine_tuning,
			    "offer the files and fine-tuning API (default; --no-fine-tuning: off)"),
		GM_OPT_INT(0, "max-file-size", &io.max_file_size, "bytes",
			   "largest file uploaded to /v1/files; more gets 413 (default 512 MiB)", 1, 1L << 40),
		GM_OPT_INT(0, "ft-threads", &io.ft_threads, "n", "threads of a fine-tuning job (default: half of --threads)",
			   1, 4096),
		GM_OPT_INT(0, "ft-nice", &io.ft_nice, "n", "a job runs at this much lower priority, 0-19 (default 10)",
			   0, 19),
		GM_OPT_INT(0, "ft-checkpoint-every", &io.ft_checkpoint_every, "n",
			   "a job checkpoints every n steps, where it resumes after a crash (default 25)", 1, 1L << 40),
		GM_OPT_STRING(0, "ft-dir", &io.ft_dir, "dir",
			      "keep files and jobs here (default: in the registry data directory)"),
		GM_OPT_GROUP("learning while serving"),
		GM_OPT_STRING(0, "learn", &io.learn, "name",
			      "train adapter name from POST /v1/adapters/name/examples, publish each step, commit on train/name"),
		GM_OPT_DOUBLE(0, "learn-sparse", &io.learn_sparse, "density",
			      "serve a sparse delta keeping this fraction of entries (0.01: 99% sparse) instead of the LoRA"),
		GM_OPT_DOUBLE(0, "learn-lr", &io.learn_lr, "x", "learning rate, constant (default 1e-3)"),
		GM_OPT_INT(0, "learn-rank", &io.learn_rank, "r", "rank of a new adapter, alpha 2r (default 8)", 1, 1024),
		GM_OPT_INT(0, "learn-batch", &io.learn_batch, "n", "examples per step (default 4)", 1, 4096),
		GM_OPT_INT(0, "learn-epochs", &io.learn_epochs, "n", "passes per example of weight 1 (default 4)", 1,
			   10000),
		GM_OPT_INT(0, "learn-threads", &io.learn_threads, "n", "compute threads of the trainer (default 1)", 1,
			   4096),
		GM_OPT_DOUBLE(0, "learn-share", &io.learn_share, "f",
			      "fraction of the time the trainer may compute, in (0, 1] (default 1)"),
		GM_OPT_INT(0, "learn-commit-steps", &io.learn_commit_steps, "n",
			   "commit every n steps (default 100; 0: by time only)", 0, 1L << 40),
		GM_OPT_DOUBLE(0, "learn-commit-seconds", &io.learn_commit_seconds, "s",
			      "or s seconds after the first step not committed (default 60; 0: by count only)"),
		GM_OPT_INT(0, "learn-max-pending", &io.learn_max_pending, "n",
			   "examples waiting to be trained at most; more get 429 (default 4096)", 1, 1L << 30),
		GM_OPT_GROUP("checking and debugging"),
		GM_OPT_FLAG(0, "check", &check, "load and validate the model, print a summary"),
		GM_OPT_STRING(0, "perplexity", &io.perplexity, "file",
			      "perplexity of a text file as llama-perplexity computes it (chunks of --ctx tokens, default 512)"),
		GM_OPT_INT(0, "batch", &io.batch, "n", "with --perplexity: tokens evaluated at once (default: --ctx)",
			   1, 1 << 24),
		GM_OPT_FLAG(0, "json", &json, "print the summary as one JSON object"),
		GM_OPT_STRING(0, "prompt-ids", &io.prompt_ids, "ids", "the prompt as token ids: 1,2,3"),
		GM_OPT_FLAG(0, "print-ids", &io.print_ids, "print the generated token ids instead of text"),
		GM_OPT_STRING(0, "logits-out", &io.logits_out, "file", "write the logits of the prompt (safetensors)"),
		GM_OPT_FLAG(0, "tokenize", &io.tokenize, "print the token ids of standard input as JSON"),
		GM_OPT_STRING(0, "render-chat", &io.render_chat, "file",
			      "print the chat prompt of a JSON message list"),
		GM_OPT_FLAG(0, "generation-prompt", &io.generation_prompt,
			    "with --render-chat: end with an assistant turn (default)"),
		GM_OPT_VERBOSITY(&io.verbosity),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git infer", "git-infer", usage, options };

	memset(&io, 0, sizeof(io));
	io.think = GM_CHAT_THINKING_UNSET;
	io.generation_prompt = 1;
	io.max_tokens = io.top_k = UNSET_LONG;
	io.temperature = io.top_p = io.min_p = io.repeat_penalty = NAN;
	io.parallel = io.queue = io.max_body = io.kv_tokens = io.prefill_chunk = UNSET_LONG;
	io.prefix_cache = -1;
	io.shutdown_timeout = io.header_timeout = io.body_timeout = NAN;
	io.max_connections = io.max_client_connections = io.max_queued_tokens = UNSET_LONG;
	io.fine_tuning = -1;
	io.max_file_size = io.ft_threads = io.ft_nice = io.ft_checkpoint_every = UNSET_LONG;
	io.learn_sparse = io.learn_lr = io.learn_share = io.learn_commit_seconds = NAN;
	io.learn_rank = io.learn_batch = io.learn_epochs = io.learn_threads = io.learn_commit_steps = UNSET_LONG;
	io.learn_max_pending = UNSET_LONG;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 1, &status);
	if (n < 0)
		goto out;
	if (n > 0) {
		status = gm_cmd_usage_error(&cmd, "unexpected argument '%s'", argv[0]);
		goto out;
	}
	if (!io.model) {
		status = gm_cmd_usage_error(&cmd, "missing -m <model>: a model directory or a registered name");
		goto out;
	}
	if ((status = resolve_matmul(&io, &cmd)))
		goto out;
	modes = !!check + !!io.tokenize + !!io.render_chat + !!io.serve + !!io.perplexity;
	if (modes > 1) {
		status = gm_cmd_usage_error(&cmd, "--check, --tokenize, --render-chat, --perplexity and --serve cannot "
					    "be combined");
		goto out;
	}
	if (io.batch && !io.perplexity) {
		status = gm_cmd_usage_error(&cmd, "--batch goes with --perplexity");
		goto out;
	}
	if (!io.serve && (io.parallel != UNSET_LONG || io.queue != UNSET_LONG || io.api_key ||
			  io.max_body != UNSET_LONG || !isnan(io.shutdown_timeout) || io.kv_tokens != UNSET_LONG ||
			  io.prefill_chunk != UNSET_LONG || io.prefix_cache >= 0 || !isnan(io.header_timeout) ||
			  !isnan(io.body_timeout) || io.max_connections != UNSET_LONG ||
			  io.max_client_connections != UNSET_LONG || io.max_queued_tokens != UNSET_LONG ||
			  io.fine_tuning >= 0 || io.max_file_size != UNSET_LONG || io.ft_threads != UNSET_LONG ||
			  io.ft_nice != UNSET_LONG || io.ft_checkpoint_every != UNSET_LONG || io.ft_dir)) {
		status = gm_cmd_usage_error(&cmd, "--parallel, --queue, --kv-tokens, --prefill-chunk, --prefix-cache, "
					    "--api-key, --max-body, --shutdown-timeout, --header-timeout, "
					    "--body-timeout, --max-connections, --max-client-connections and "
					    "--max-queued-tokens, --fine-tuning, --max-file-size and --ft-* go with --serve");
		goto out;
	}
	if (!io.serve && (io.learn || !isnan(io.learn_sparse) || !isnan(io.learn_lr) || !isnan(io.learn_share) ||
			  !isnan(io.learn_commit_seconds) || io.learn_rank != UNSET_LONG || io.learn_batch != UNSET_LONG ||
			  io.learn_epochs != UNSET_LONG || io.learn_threads != UNSET_LONG ||
			  io.learn_commit_steps != UNSET_LONG || io.learn_max_pending != UNSET_LONG)) {
		status = gm_cmd_usage_error(&cmd, "--learn and the --learn-* options go with --serve");
		goto out;
	}
	if (io.serve && !io.learn && (!isnan(io.learn_sparse) || !isnan(io.learn_lr) || !isnan(io.learn_share) ||
			  !isnan(io.learn_commit_seconds) || io.learn_rank != UNSET_LONG || io.learn_batch != UNSET_LONG ||
			  io.learn_epochs != UNSET_LONG || io.learn_threads != UNSET_LONG ||
			  io.learn_commit_steps != UNSET_LONG || io.learn_max_pending != UNSET_LONG)) {
		status = gm_cmd_usage_error(&cmd, "the --learn-* options go with --learn NAME");
		goto out;
	}
	if (io.serve) {
		/* a registered model is served under its name (NAME or NAME@REV) */
		if (resolve_model(io.model, io.quant, &model_dir, &err)) {
			status = gm_cmd_error(&err);
			goto out;
		}
		io.model_id = strcmp(model_dir, io.model) ? io.model : NULL;
		io.model = model_dir;
		gm_cmd_set_verbosity(io.verbosity);
		status = run_serve(&cmd, &io);
		goto out;
	}
	if (json && !check) {
		status = gm_cmd_usage_error(&cmd, "--json goes with --check");
		goto out;
	}
	if (modes && (io.prompt || io.prompt_ids || io.chat)) {
		status = gm_cmd_usage_error(&cmd, "%s does not take a prompt",
					    check ? "--check" : io.tokenize ? "--tokenize" :
					    io.perplexity ? "--perplexity" : "--render-chat");
		goto out;
	}
	if ((io.tools || io.tool_choice) && (check || io.tokenize)) {
		status = gm_cmd_usage_error(&cmd, "--tools and --tool-choice go with --chat or --render-chat");
		goto out;
	}
	if (io.adapter.n && (io.tokenize || io.render_chat)) {
		status = gm_cmd_usage_error(&cmd, "--adapter does not go with %s",
					    io.tokenize ? "--tokenize" : "--render-chat");
		goto out;
	}
	if (parse_adapter_specs(&io.adapter, &as, &err)) {
		status = gm_cmd_usage_error(&cmd, "%s", err.msg);
		goto out;
	}
	/* -m NAME[@REV]: the registry's work tree, or a view of that revision
	 * whose weights are mmapped from the LFS object store */
	if (resolve_model(io.model, io.quant, &model_dir, &err)) {
		status = gm_cmd_error(&err);
		goto out;
	}
	io.model = model_dir;
	gm_cmd_set_verbosity(io.verbosity);
	if (io.perplexity) {
		if (as.n) {
			status = gm_cmd_usage_error(&cmd, "--adapter does not go with --perplexity");
			goto out;
		}
		status = gm_infer_perplexity(io.model, io.perplexity, io.ctx ? (int)io.ctx : 512, (int)io.batch,
					     (int)io.threads, io.mm, &err) ? gm_cmd_error(&err) : 0;
	} else if (check)
		status = check_model(io.model, &as, json, io.verbosity);
	else if (io.tokenize)
		status = run_tokenize(&io);
	else if (io.render_chat)
		status = run_render_chat(&io);
	else
		status = run_generate(&cmd, &io, &as);
out:
	free(model_dir);
	adapter_set_release(&as);
	gm_strlist_clear(&io.stop);
	gm_strlist_clear(&io.adapter);
	return status;
}
