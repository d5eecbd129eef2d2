/*
 * git-train - fine-tune a model with LoRA, and check training data files.
 *
 * This file parses options and prints; the work is in libcore: trainset.h
 * (data), train.h (LoRA, forward/backward, AdamW), trainrun.h (the loop and
 * checkpoints), traindata.h (--check-data).
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/cmd.h"
#include "base/fs.h"
#include "base/json.h"
#include "cpu/threadpool.h"
#include "engine/modelfiles.h"
#include "formats/model.h"
#include "formats/peft.h"
#include "text/tokenizer.h"
#include "train/traindata.h"
#include "train/train.h"
#include "train/trainrun.h"
#include "manage/trainrepo.h"
#include "manage/adapter.h"
#include "manage/modelcard.h"
#include "train/trainplot.h"
#include "storage/lfs.h"
#include "storage/repo.h"
#include "storage/resolve.h"
#include "train/trainset.h"
#include "follow.h"

#define MAX_REPORTED_ERRORS 100

static const char *const usage[] = {
	"git train -m <model> --adapter <name> --data <file> [--output <dir>] [<options>]",
	"git train -m <model> --adapter <name> --data <file> --resume train/<name>",
	"git train -m <model> --adapter <name> --data <file> --output <dir> --no-commit [--resume <checkpoint>]",
	"git train -m <model> --adapter <name> --follow <file>|- [--checkpoint-every <n>] [--commit-seconds <s>]",
	"git train --check-data <file> [--json]",
	NULL
};

/* ---------------------------------------------------------------- --check-data */

struct error_list {
	const char *name;
	json_object *messages; /* --json: the reported messages; else NULL */
};

static void report_error(void *ctx, const gm_error *line_error)
{
	struct error_list *l = ctx;

	fprintf(stderr, "%s\n", line_error->msg);
	if (l->messages)
		json_object_array_add(l->messages, json_object_new_string(line_error->msg));
}

static void print_json(const char *name, const gm_td_stats *st, json_object *messages, int ok)
{
	json_object *o = json_object_new_object(), *counts = json_object_new_object();
	int k;

	json_object_object_add(o, "file", json_object_new_string(name));
	json_object_object_add(o, "valid", json_object_new_boolean(ok));
	json_object_object_add(o, "lines", json_object_new_int64((int64_t)st->lines));
	json_object_object_add(o, "examples", json_object_new_int64((int64_t)st->examples));
	for (k = 0; k < GM_TD_KIND_COUNT; k++)
		json_object_object_add(counts, gm_td_kind_key((enum gm_td_kind)k),
				       json_object_new_int64((int64_t)st->count[k]));
	json_object_object_add(o, "counts", counts);
	json_object_object_add(o, "errors", json_object_new_int64((int64_t)st->errors));
	json_object_object_add(o, "error_messages", json_object_get(messages));
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
					    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static void print_summary(const char *name, const gm_td_stats *st)
{
	printf("%s: %lu example%s (text: %lu, messages: %lu, prompt/completion: %lu, token ids: %lu)\n",
	       name, st->examples, st->examples == 1 ? "" : "s", st->count[GM_TD_TEXT],
	       st->count[GM_TD_MESSAGES], st->count[GM_TD_PROMPT_COMPLETION], st->count[GM_TD_TOKENS]);
}

static int check_data(const char *path, int json, int verbosity)
{
	const char *name = strcmp(path, "-") ? path : "<stdin>";
	struct error_list list = { name, json ? json_object_new_array() : NULL };
	gm_error err = GM_ERROR_INIT;
	gm_td_stats st;
	int ret, status = 0;

	ret = gm_td_check(path, MAX_REPORTED_ERRORS, &st, report_error, &list, &err);
	if (ret && ret != GM_EFORMAT) { /* could not open or read the file */
		json_object_put(list.messages);
		return gm_cmd_error(&err);
	}
	if (json)
		print_json(name, &st, list.messages, !ret);
	else if (!ret && verbosity >= 0)
		print_summary(name, &st);
	if (ret) {
		if (st.errors > MAX_REPORTED_ERRORS)
			fprintf(stderr, "%s: %lu more invalid lines not shown\n", name,
				st.errors - MAX_REPORTED_ERRORS);
		if (st.errors)
			gm_error_set(&err, GM_EFORMAT, "%s: %lu invalid line%s (%lu valid example%s)", name,
				     st.errors, st.errors == 1 ? "" : "s", st.examples,
				     st.examples == 1 ? "" : "s");
		status = gm_cmd_error(&err);
	}
	json_object_put(list.messages);
	return status;
}

/* ---------------------------------------------------------------- training options */

/*
 * Hyper-parameters.  Numbers start as "not given" (-1 / NAN) so that a
 * resumed run or --init-adapter can tell what the user asked for from the
 * defaults, which are filled in afterwards.
 */
#define D_RANK 16
#define D_ALPHA 32.0
#define D_TARGETS "all-linear"
#define D_LR 2e-4
#define D_SCHEDULE "cosine"
#define D_WARMUP 0
#define D_WD 0.0
#define D_CLIP 1.0
#define D_BATCH 4
#define D_ACCUM 1
#define D_EPOCHS 1.0
#define D_MAX_LEN 1024
#define D_SEED 0

struct hp {
	long rank;
	double alpha;
	const char *targets;
	int rslora;           /* -1: not given */
	double lr;
	const char *schedule;
	long warmup;
	double weight_decay, grad_clip;
	long batch_size, grad_accum, steps;
	double epochs;
	long max_len;
	unsigned long long seed;
	int seed_given;
	int shuffle;          /* -1: not given */
};

struct train_cmd {
	const char *model, *adapter, *data, *output, *resume, *eval_data, *init_adapter, *trace;
	long threads, checkpoint_every;
	int verbosity;
	struct hp hp;
	unsigned targets_mask;
	enum gm_schedule schedule;
	/* progress */
	int tty;
	double ema;
	int64_t ema_n;
	double last_loss;         /* of the last step, for checkpoint messages */
	gm_atomic_file trace_file;
	int trace_open;
	const char *adapter_name;
	/* without --output: the run is recorded in the model's repository */
	gm_trainrepo *repo;
	const char *model_spec;   /* -m as given */
	int no_commit;            /* --no-commit: --output only */
	char data_sha256[65];     /* of --data ("" for standard input) */
	json_object *hp_json;     /* the hyper-parameters, for commit messages (borrowed) */
	/* the loss curve (trainplot.h): kept in checkpoints, plotted with the adapter */
	gm_trainlog log;
	long progress_fd;         /* --progress-fd: JSON lines for a supervisor (git infer's jobs); -1: none */
	long step_delay_ms;       /* GM_TRAIN_STEP_DELAY_MS: a pause after each step (tests pace a job by it) */
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	if (stop_requested)
		_exit(130); /* a second Ctrl-C: the last checkpoint is intact, leave now */
	stop_requested = 1;
}

/* The hyper-parameters as recorded in a checkpoint (after defaults). */
static json_object *hp_json(const struct train_cmd *c)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "adapter", json_object_new_string(c->adapter));
	json_object_object_add(o, "rank", json_object_new_int64(c->hp.rank));
	json_object_object_add(o, "alpha", json_object_new_double(c->hp.alpha));
	json_object_object_add(o, "targets", json_object_new_int64(c->targets_mask));
	json_object_object_add(o, "rslora", json_object_new_boolean(c->hp.rslora));
	json_object_object_add(o, "lr", json_object_new_double(c->hp.lr));
	json_object_object_add(o, "schedule", json_object_new_string(gm_schedule_name(c->schedule)));
	json_object_object_add(o, "warmup", json_object_new_int64(c->hp.warmup));
	json_object_object_add(o, "weight_decay", json_object_new_double(c->hp.weight_decay));
	json_object_object_add(o, "grad_clip", json_object_new_double(c->hp.grad_clip));
	json_object_object_add(o, "batch_size", json_object_new_int64(c->hp.batch_size));
	json_object_object_add(o, "grad_accum", json_object_new_int64(c->hp.grad_accum));
	json_object_object_add(o, "steps", json_object_new_int64(c->hp.steps));
	json_object_object_add(o, "max_len", json_object_new_int64(c->hp.max_len));
	json_object_object_add(o, "seed", json_object_new_uint64(c->hp.seed));
	json_object_object_add(o, "shuffle", json_object_new_boolean(c->hp.shuffle));
	return o;
}

/* Takes the checkpoint's hyper-parameters, refusing an option given with another value. */
static int hp_from_checkpoint(struct train_cmd *c, json_object *cfg, const char *ckpt, gm_error *err)
{
	int64_t i64;
	double d;
	int b;
	const char *s;
	int ret = 0;

#define CK_INT(key, field, opt)                                                                              \
	if (!ret && !(ret = gm_json_get_int64(cfg, key, ckpt, &i64, err))) {                                 \
		if (c->hp.field >= 0 && c->hp.field != i64)                                                  \
			ret = gm_error_set(err, GM_EINVAL, "--" opt " %ld differs from the checkpoint's %lld in %s " \
					   "(a resumed run keeps its settings)", (long)c->hp.field, (long long)i64, ckpt); \
		c->hp.field = (long)i64;                                                                     \
	}
#define CK_DBL(key, field, opt)                                                                              \
	if (!ret && !(ret = gm_json_get_double(cfg, key, ckpt, &d, err))) {                                  \
		if (!isnan(c->hp.field) && c->hp.field != d)                                                 \
			ret = gm_error_set(err, GM_EINVAL, "--" opt " %g differs from the checkpoint's %g in %s "    \
					   "(a resumed run keeps its settings)", c->hp.field, d, ckpt);              \
		c->hp.field = d;                                                                             \
	}
	CK_INT("rank", rank, "rank")
	CK_DBL("alpha", alpha, "alpha")
	CK_DBL("lr", lr, "lr")
	CK_INT("warmup", warmup, "warmup")
	CK_DBL("weight_decay", weight_decay, "weight-decay")
	CK_DBL("grad_clip", grad_clip, "grad-clip")
	CK_INT("batch_size", batch_size, "batch-size")
	CK_INT("grad_accum", grad_accum, "grad-accum")
	CK_INT("steps", steps, "steps")
	CK_INT("max_len", max_len, "max-len")
#undef CK_INT
#undef CK_DBL
	if (!ret && !isnan(c->hp.epochs))
		ret = gm_error_set(err, GM_EINVAL, "--epochs cannot be given with --resume (the run's step count is "
				   "in the checkpoint)");
	if (!ret && !(ret = gm_json_get_int64(cfg, "targets", ckpt, &i64, err))) {
		if (c->hp.targets && c->targets_mask != (unsigned)i64)
			ret = gm_error_set(err, GM_EINVAL, "--targets differs from the checkpoint's in %s", ckpt);
		c->targets_mask = (unsigned)i64;
	}
	if (!ret && !(ret = gm_json_get_bool(cfg, "rslora", ckpt, &b, err))) {
		if (c->hp.rslora >= 0 && c->hp.rslora != b)
			ret = gm_error_set(err, GM_EINVAL, "--rslora differs from the checkpoint's in %s", ckpt);
		c->hp.rslora = b;
	}
	if (!ret && !(ret = gm_json_get_bool(cfg, "shuffle", ckpt, &b, err))) {
		if (c->hp.shuffle >= 0 && c->hp.shuffle != b)
			ret = gm_error_set(err, GM_EINVAL, "--shuffle/--no-shuffle differs from the checkpoint's in %s",
					   ckpt);
		c->hp.shuffle = b;
	}
	if (!ret && !(ret = gm_json_get_int64(cfg, "seed", ckpt, &i64, err))) {
		if (c->hp.seed_given && c->hp.seed != (unsigned long long)i64)
			ret = gm_error_set(err, GM_EINVAL, "--seed differs from the checkpoint's in %s", ckpt);
		c->hp.seed = (unsigned long long)i64;
	}
	if (!ret && !(ret = gm_json_get_string(cfg, "schedule", ckpt, &s, err))) {
		enum gm_schedule sc;

		ret = gm_schedule_from_name(s, &sc, err);
		if (!ret && c->hp.schedule && sc != c->schedule)
			ret = gm_error_set(err, GM_EINVAL, "--schedule %s differs from the checkpoint's %s in %s",
					   c->hp.schedule, s, ckpt);
		c->schedule = sc;
	}
	return ret;
}

/* --init-adapter: a directory, or an adapter of the model (MODEL/adapters/NAME or NN_NAME). */
static char *resolve_adapter(const char *model, const char *spec)
{
	char *dir = NULL;

	return gm_adapter_resolve(model, spec, &dir, NULL) ? NULL : dir;
}

/* ---------------------------------------------------------------- progress */

/* One line on --progress-fd.  A supervisor that went away is no reason to stop training. */
static void progress(struct train_cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void progress(struct train_cmd *c, const char *fmt, ...)
{
	gm_buf b = GM_BUF_INIT;
	va_list ap;
	size_t off = 0;

	if (c->progress_fd < 0)
		return;
	va_start(ap, fmt);
	gm_buf_vaddf(&b, fmt, ap);
	va_end(ap);
	gm_buf_addch(&b, '\n');
	while (off < b.len) {
		ssize_t n = write((int)c->progress_fd, b.buf + off, b.len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			c->progress_fd = -1;
			break;
		}
		off += (size_t)n;
	}
	gm_buf_release(&b);
}

/* A JSON number, or null for NAN (no evaluation). */
static const char *jnum(char *buf, size_t n, double v)
{
	if (isfinite(v))
		snprintf(buf, n, "%.9g", v);
	else
		snprintf(buf, n, "null");
	return buf;
}

static void fmt_duration(char *buf, size_t n, double s)
{
	long t = s > 0 && s < 1e8 ? (long)(s + 0.5) : 0;

	if (t >= 3600)
		snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
	else
		snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static void on_step(void *ctx, const gm_train_progress *p)
{
	struct train_cmd *c = ctx;
	double smooth, per_step;
	char eta[32];
	int64_t done = p->info.step + 1;

	c->last_loss = p->info.loss;
	if (c->step_delay_ms > 0) {
		struct timespec ts = { c->step_delay_ms / 1000, c->step_delay_ms % 1000 * 1000000L };

		while (nanosleep(&ts, &ts) && errno == EINTR && !stop_requested)
			;
	}
	gm_trainlog_add_loss(&c->log, done, p->info.loss);
	progress(c, "{\"type\": \"step\", \"step\": %lld, \"n_steps\": %lld, \"loss\": %.9g, \"grad_norm\": %.9g, "
		 "\"lr\": %.9g, \"tokens\": %lld, \"tokens_per_s\": %.2f}", (long long)done, (long long)p->n_steps,
		 p->info.loss, p->info.grad_norm, p->info.lr, (long long)p->info.tokens, p->tokens_per_s);
	c->ema = 0.9 * c->ema + 0.1 * p->info.loss;
	c->ema_n++;
	smooth = c->ema / (1.0 - pow(0.9, (double)c->ema_n));
	if (c->trace_open) {
		gm_buf line = GM_BUF_INIT;
		gm_error err = GM_ERROR_INIT;

		gm_buf_addf(&line, "{\"step\": %lld, \"loss\": %.9g, \"grad_norm\": %.9g, \"lr\": %.9g, \"tokens\": %lld, "
			    "\"tokens_per_s\": %.2f}\n", (long long)p->info.step, p->info.loss, p->info.grad_norm,
			    p->info.lr, (long long)p->info.tokens, p->tokens_per_s);
		if (gm_atomic_write(&c->trace_file, line.buf, line.len, &err))
			fprintf(stderr, "warning: --trace: %s\n", err.msg);
		gm_buf_release(&line);
	}
	if (c->verbosity < 0)
		return;
	per_step = p->elapsed_s / (double)(c->ema_n);
	fmt_duration(eta, sizeof(eta), per_step * (double)(p->n_steps - done));
	if (c->verbosity > 0)
		fprintf(stderr, "step %lld/%lld: loss %.4f, grad norm %.3f, lr %.3g, %.1f tok/s\n", (long long)done,
			(long long)p->n_steps, p->info.loss, p->info.grad_norm, p->info.lr, p->tokens_per_s);
	else if (c->tty)
		fprintf(stderr, "\r\033[Kstep %lld/%lld  loss %.4f  lr %.3g  %.1f tok/s  ETA %s", (long long)done,
			(long long)p->n_steps, smooth, p->info.lr, p->tokens_per_s, eta);
}

static void on_eval(void *ctx, int64_t step, double loss)
{
	struct train_cmd *c = ctx;

	gm_trainlog_add_eval(&c->log, step, loss);
	progress(c, "{\"type\": \"eval\", \"step\": %lld, \"eval_loss\": %.9g}", (long long)step, loss);
	if (c->verbosity < 0)
		return;
	if (c->tty && c->verbosity == 0)
		fputs("\r\033[K", stderr);
	fprintf(stderr, "step %lld: eval loss %.4f\n", (long long)step, loss);
}

/* "train: NAME ..." and the run's provenance, for commit messages. */
static void run_message(gm_buf *b, const struct train_cmd *c, const char *what, int64_t step, double loss,
			double eval_loss)
{
	gm_buf_addf(b, "train: %s %s\n\n", c->adapter, what);
	gm_buf_addf(b, "Step %lld of %ld, loss %.6f", (long long)step, c->hp.steps, loss);
	if (!isnan(eval_loss))
		gm_buf_addf(b, ", eval loss %.6f", eval_loss);
	gm_buf_addf(b, ".\n\nBase-revision: %s\n", gm_trainrepo_base(c->repo));
	gm_buf_addf(b, "Data: %s%s%s\n", c->data, *c->data_sha256 ? " sha256:" : "", c->data_sha256);
	if (c->eval_data)
		gm_buf_addf(b, "Eval-data: %s\n", c->eval_data);
	gm_buf_addf(b, "Hyper-parameters: %s\n",
		    json_object_to_json_string_ext(c->hp_json, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
}

static int on_checkpoint(void *ctx, int64_t step, const char *dir, double eval_loss, gm_error *err)
{
	struct train_cmd *c = ctx;
	char commit[41] = "", num[2][40];
	char *trace = gm_path_join(dir, GM_TRAINLOG_FILE);
	int r0;

	/* the curve so far goes with the checkpoint: a resumed run continues it */
	r0 = gm_trainlog_save(&c->log, trace, err);
	free(trace);
	if (r0)
		return r0;
	if (c->repo) {
		gm_buf msg = GM_BUF_INIT, what = GM_BUF_INIT;
		int ret;

		gm_buf_addf(&what, "checkpoint at step %lld", (long long)step);
		run_message(&msg, c, what.buf, step, c->last_loss, eval_loss);
		ret = gm_trainrepo_checkpoint(c->repo, step, dir, msg.buf, commit, err);
		gm_buf_release(&msg);
		gm_buf_release(&what);
		if (ret)
			return ret;
	}
	progress(c, "{\"type\": \"checkpoint\", \"step\": %lld, \"loss\": %s, \"eval_loss\": %s, \"commit\": \"%s\"}",
		 (long long)step, jnum(num[0], sizeof(num[0]), c->last_loss), jnum(num[1], sizeof(num[1]), eval_loss),
		 commit);
	if (c->verbosity < 0)
		return 0;
	if (c->tty && c->verbosity == 0)
		fputs("\r\033[K", stderr);
	if (c->repo)
		fprintf(stderr, "step %lld: checkpoint %.12s on %s, tag %s-step-%lld\n", (long long)step, commit,
			gm_trainrepo_branch(c->repo), c->adapter, (long long)step);
	else
		fprintf(stderr, "step %lld: checkpoint %s\n", (long long)step, dir);
	return 0;
}

/* ---------------------------------------------------------------- the run */

/*
 * What shows how the adapter in dir was made, written next to it: the
 * loss trace, its plot, and the model card (trainplot.h, modelcard.h).
 */
static int write_card(struct train_cmd *c, const char *dir, const gm_trainset *data, const gm_trainset *eval,
		      const char *eval_sha256, const gm_train_run_result *res, gm_error *err)
{
	char *trace = gm_path_join(dir, GM_TRAINLOG_FILE), *svg = gm_path_join(dir, GM_TRAINPLOT_FILE);
	char *base = gm_modelcard_base_model(c->model);
	gm_buf title = GM_BUF_INIT;
	gm_modelcard card;
	int ret;

	gm_buf_addf(&title, "%s: loss per step (%s)", c->adapter, base);
	memset(&card, 0, sizeof(card));
	card.adapter = c->adapter;
	card.base_model = base;
	card.base_revision = c->repo ? gm_trainrepo_base(c->repo) : NULL;
	card.train.file = data->name;
	card.train.sha256 = c->data_sha256;
	card.train.examples = (int64_t)data->n;
	if (eval) {
		card.eval.file = eval->name;
		card.eval.sha256 = eval_sha256;
		card.eval.examples = (int64_t)eval->n;
	}
	card.hyperparameters = c->hp_json;
	card.steps = res->steps;
	card.train_loss = res->loss;
	card.eval_loss = res->eval_loss;
	card.has_plot = 1;
	if (!(ret = gm_trainlog_save(&c->log, trace, err)) &&
	    !(ret = gm_trainlog_save_svg(&c->log, title.buf, svg, err)))
		ret = gm_modelcard_write(dir, &card, err);
	gm_buf_release(&title);
	free(base);
	free(trace);
	free(svg);
	return ret;
}

static int prepare_hp(struct train_cmd *c, gm_error *err)
{
	struct hp *h = &c->hp;

	if (h->rank < 0)
		h->rank = D_RANK;
	if (isnan(h->alpha))
		h->alpha = D_ALPHA;
	if (h->rslora < 0)
		h->rslora = 0;
	if (isnan(h->lr))
		h->lr = D_LR;
	if (h->warmup < 0)
		h->warmup = D_WARMUP;
	if (isnan(h->weight_decay))
		h->weight_decay = D_WD;
	if (isnan(h->grad_clip))
		h->grad_clip = D_CLIP;
	if (h->batch_size < 0)
		h->batch_size = D_BATCH;
	if (h->grad_accum < 0)
		h->grad_accum = D_ACCUM;
	if (h->max_len < 0)
		h->max_len = D_MAX_LEN;
	if (h->shuffle < 0)
		h->shuffle = 1;
	if (!(h->lr > 0))
		return gm_error_set(err, GM_EINVAL, "--lr must be positive");
	if (h->weight_decay < 0 || h->grad_clip < 0)
		return gm_error_set(err, GM_EINVAL, "--weight-decay and --grad-clip must not be negative");
	if (!(h->alpha > 0))
		return gm_error_set(err, GM_EINVAL, "--alpha must be positive");
	return 0;
}

static int train(struct train_cmd *c)
{
	gm_error err = GM_ERROR_INIT;
	gm_model *m = NULL;
	gm_tokenizer *tok = NULL;
	gm_trainset *data = NULL, *eval = NULL;
	gm_peft_adapter *ad = NULL;
	gm_lora *l = NULL;
	gm_train *t = NULL;
	gm_train_opts to;
	gm_train_run_opts ro;
	gm_train_run_result res;
	json_object *state = NULL, *cfg = NULL, *hp = NULL;
	char *ckpt = NULL, *init_dir = NULL, eval_sha256[65] = "";
	int ret, status = 0;

	ret = gm_model_open(c->model, &m, &err);
	if (!ret && c->resume && c->repo) {
		char *dir = NULL;
		/* the tip of train/NAME, read from the object store */
		ret = gm_trainrepo_resume_dir(c->repo, &dir, &err);
		if (ret == 1) {
			/* nothing left to train: the end of the interrupted run was completed */
			gm_model_close(m);
			printf("%s: the finished run's adapter is now on the current branch\n", c->adapter);
			return 0;
		}
		if (!ret)
			ret = gm_train_find_checkpoint(dir, &ckpt, &state, &err);
		free(dir);
		if (!ret && !json_object_object_get_ex(state, "config", &cfg))
			ret = gm_error_set(&err, GM_EFORMAT, "%s/%s: no \"config\"", ckpt, GM_TRAIN_STATE_FILE);
		if (!ret)
			ret = hp_from_checkpoint(c, cfg, ckpt, &err);
	} else if (!ret && c->resume) {
		ret = gm_train_find_checkpoint(c->resume, &ckpt, &state, &err);
		if (!ret && !json_object_object_get_ex(state, "config", &cfg))
			ret = gm_error_set(&err, GM_EFORMAT, "%s/%s: no \"config\"", ckpt, GM_TRAIN_STATE_FILE);
		if (!ret)
			ret = hp_from_checkpoint(c, cfg, ckpt, &err);
	}
	if (!ret && c->init_adapter) {
		init_dir = resolve_adapter(c->model, c->init_adapter);
		if (!init_dir)
			ret = gm_error_set(&err, GM_ENOENT, "--init-adapter %s: not a directory, nor an adapter in %s/adapters",
					   c->init_adapter, c->model);
		if (!ret)
			ret = gm_peft_open(init_dir, &ad, &err);
		if (!ret && ((c->hp.rank >= 0 && c->hp.rank != ad->config.r) ||
			     (!isnan(c->hp.alpha) && c->hp.alpha != ad->config.lora_alpha) ||
			     (c->hp.rslora >= 0 && c->hp.rslora != ad->config.use_rslora) || c->hp.targets))
			ret = gm_error_set(&err, GM_EINVAL, "--rank, --alpha, --targets and --rslora come from the "
					   "adapter given to --init-adapter (%s): leave them out", init_dir);
	}
	if (!ret)
		ret = prepare_hp(c, &err);
	if (!ret)
		ret = gm_model_tokenizer_load(c->model, &tok, &err);
	if (!ret)
		ret = gm_trainset_load(c->data, m, tok, c->hp.max_len, &data, &err);
	if (!ret && c->eval_data)
		ret = gm_trainset_load(c->eval_data, m, tok, c->hp.max_len, &eval, &err);
	if (ret)
		goto out;
	if (c->verbosity >= 0 && (data->truncated || (eval && eval->truncated)))
		fprintf(stderr, "warning: %lu example%s longer than --max-len %ld truncated\n",
			data->truncated + (eval ? eval->truncated : 0),
			data->truncated + (eval ? eval->truncated : 0) == 1 ? "" : "s", c->hp.max_len);
	if (c->hp.steps < 0) {
		double e = isnan(c->hp.epochs) ? D_EPOCHS : c->hp.epochs;
		double per = (double)(c->hp.batch_size * c->hp.grad_accum);

		c->hp.steps = (long)ceil(e * (double)data->n / per);
		if (c->hp.steps < 1)
			c->hp.steps = 1;
	}
	if (state) {
		const char *h;
		char mine[32];

		snprintf(mine, sizeof(mine), "%016llx", (unsigned long long)data->hash);
		if (gm_json_get_string(state, "data_hash", ckpt, &h, &err) || strcmp(h, mine)) {
			ret = gm_error_set(&err, GM_EINVAL, "%s is not the data %s was trained on (after tokenization): "
					   "resume with the same --data", data->name, ckpt);
			goto out;
		}
	}
	/* the adapter: a checkpoint's, --init-adapter's, or new */
	if (ckpt) {
		gm_peft_close(ad);
		ad = NULL;
		ret = gm_peft_open(ckpt, &ad, &err);
	}
	if (!ret && ad) {
		ret = gm_lora_from_peft(m, ad, &l, &err);
		if (!ret) {
			c->hp.rank = (long)l->rank;
			c->hp.alpha = l->alpha;
			c->hp.rslora = l->use_rslora;
			if (!ckpt)
				c->targets_mask = l->targets;
		}
	} else if (!ret) {
		ret = gm_lora_init(m, c->hp.rank, c->hp.alpha, c->hp.rslora, c->targets_mask, c->hp.seed, &l, &err);
	}
	if (ret)
		goto out;
	free(l->base_model);
	l->base_model = gm_xstrdup(c->model);

	memset(&to, 0, sizeof(to));
	to.lr = c->hp.lr;
	to.schedule = c->schedule;
	to.warmup = c->hp.warmup;
	to.n_steps = c->hp.steps;
	to.weight_decay = c->hp.weight_decay;
	to.grad_clip = c->hp.grad_clip;
	/* buffers for the longest sequence there is, not for --max-len */
	to.max_len = 2;
	for (size_t i = 0; i < data->n; i++)
		to.max_len = to.max_len > data->ex[i].n ? to.max_len : data->ex[i].n;
	for (size_t i = 0; eval && i < eval->n; i++)
		to.max_len = to.max_len > eval->ex[i].n ? to.max_len : eval->ex[i].n;
	to.n_threads = (int)c->threads;
	ret = gm_train_new(m, l, &to, &t, &err);
	if (!ret && ckpt)
		ret = gm_train_load_state(t, ckpt, &err);
	if (!ret && ckpt) {
		/* the curve of the steps already taken (a checkpoint made before
		 * traces were kept has none: the plot then starts here) */
		char *trace = gm_path_join(ckpt, GM_TRAINLOG_FILE);

		if (gm_is_file(trace))
			ret = gm_trainlog_load(trace, &c->log, &err);
		gm_trainlog_truncate(&c->log, gm_train_steps_done(t));
		free(trace);
	}
	if (ret)
		goto out;
	if (c->trace) {
		if ((ret = gm_atomic_open(&c->trace_file, c->trace, 0666, &err)))
			goto out;
		c->trace_open = 1;
	}
	if (c->verbosity >= 0)
		fprintf(stderr, "training %s on %s: %zu examples, %lld tokens; LoRA r%ld alpha %g on %llu parameters; "
			"%ld steps of %ld x %ld sequences%s\n", c->adapter, data->name, data->n,
			(long long)data->n_tokens, c->hp.rank, c->hp.alpha, (unsigned long long)l->n_params,
			c->hp.steps, c->hp.batch_size, c->hp.grad_accum,
			ckpt ? " (resumed)" : "");

	hp = hp_json(c);
	c->hp_json = hp;
	if (strcmp(c->data, "-")) {
		unsigned long long size;
		if ((ret = gm_lfs_hash_file(c->data, c->data_sha256, &size, &err)))
			goto out;
	}
	if (c->eval_data && strcmp(c->eval_data, "-")) {
		unsigned long long size;
		if ((ret = gm_lfs_hash_file(c->eval_data, eval_sha256, &size, &err)))
			goto out;
	}
	memset(&ro, 0, sizeof(ro));
	ro.batch_size = c->hp.batch_size;
	ro.grad_accum = c->hp.grad_accum;
	ro.n_steps = c->hp.steps;
	ro.shuffle = c->hp.shuffle;
	ro.seed = c->hp.seed;
	ro.checkpoint_every = c->checkpoint_every;
	ro.checkpoint_root = c->repo ? gm_trainrepo_scratch(c->repo) : c->output;
	ro.eval = eval;
	ro.config = hp;
	ro.on_step = on_step;
	ro.on_eval = on_eval;
	ro.on_checkpoint = on_checkpoint;
	ro.ctx = c;
	ro.stop = &stop_requested;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	ret = gm_train_run(t, l, data, &ro, &res, &err);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	if (c->tty && c->verbosity == 0)
		fputs("\r\033[K", stderr);
	if (c->trace_open) {
		int r2 = gm_atomic_commit(&c->trace_file, ret ? NULL : &err);

		c->trace_open = 0;
		if (!ret)
			ret = r2;
	}
	if (ret)
		goto out;
	if (res.interrupted) {
		if (c->repo)
			fprintf(stderr, "interrupted after step %lld of %ld: continue with --resume %s\n",
				(long long)res.steps, c->hp.steps, gm_trainrepo_branch(c->repo));
		else
			fprintf(stderr, "interrupted after step %lld of %ld: continue with --resume %s\n",
				(long long)res.steps, c->hp.steps, res.last_checkpoint);
		status = 130;
		goto out;
	}
	if (c->repo) {
		char *final = gm_path_join(gm_trainrepo_scratch(c->repo), "final");
		char commit[41] = "";
		gm_buf msg = GM_BUF_INIT;

		gm_remove_tree(final, NULL);
		run_message(&msg, c, "trained", res.steps, res.loss, res.eval_loss);
		if (!(ret = gm_lora_save(l, final, &err)) &&
		    !(ret = write_card(c, final, data, eval, eval_sha256, &res, &err)))
			ret = gm_trainrepo_finish(c->repo, final, msg.buf, commit, &err);
		if (!ret && c->output && !(ret = gm_lora_save(l, c->output, &err)))
			ret = write_card(c, c->output, data, eval, eval_sha256, &res, &err);
		gm_remove_tree(final, NULL);
		free(final);
		gm_buf_release(&msg);
		if (ret)
			goto out;
		{
			char num[40];

			progress(c, "{\"type\": \"done\", \"steps\": %lld, \"loss\": %.9g, \"eval_loss\": %s, "
				 "\"commit\": \"%s\", \"adapter\": \"%s\"}", (long long)res.steps, res.loss,
				 jnum(num, sizeof(num), res.eval_loss), commit, gm_trainrepo_adapter_path(c->repo));
		}
		if (c->verbosity >= 0) {
			printf("%s: %lld steps, loss %.4f", c->adapter, (long long)res.steps, res.loss);
			if (!isnan(res.eval_loss))
				printf(", eval loss %.4f", res.eval_loss);
			printf("; committed %.12s (%s), history on %s\n", commit,
			       gm_trainrepo_adapter_path(c->repo), gm_trainrepo_branch(c->repo));
		}
		goto out;
	}
	ret = gm_lora_save(l, c->output, &err);
	if (!ret)
		ret = write_card(c, c->output, data, eval, eval_sha256, &res, &err);
	if (ret)
		goto out;
	{
		char num[40];

		progress(c, "{\"type\": \"done\", \"steps\": %lld, \"loss\": %.9g, \"eval_loss\": %s, \"commit\": \"\", "
			 "\"adapter\": \"\"}", (long long)res.steps, res.loss, jnum(num, sizeof(num), res.eval_loss));
	}
	if (c->verbosity >= 0) {
		printf("%s: %lld steps, loss %.4f", c->adapter, (long long)res.steps, res.loss);
		if (!isnan(res.eval_loss))
			printf(", eval loss %.4f", res.eval_loss);
		printf("; adapter written to %s\n", c->output);
	}
out:
	if (c->trace_open)
		gm_atomic_abort(&c->trace_file);
	gm_trainlog_release(&c->log);
	if (ret)
		status = gm_cmd_error(&err);
	json_object_put(hp);
	json_object_put(state);
	free(ckpt);
	free(init_dir);
	gm_train_free(t);
	gm_lora_free(l);
	gm_peft_close(ad);
	gm_trainset_free(data);
	gm_trainset_free(eval);
	gm_tokenizer_free(tok);
	gm_model_close(m);
	return status;
}

/*
 * Resolves -m, and without --output opens the model's repository for the
 * run (train/NAME, checkpoint commits and tags, the adapter committed).
 */
static int run(struct train_cmd *c)
{
	gm_error err = GM_ERROR_INIT;
	char *dir = NULL, expect[GM_ADAPTER_NAME_MAX + 8];
	int status, applies;

	c->model_spec = c->model;
	if (gm_repo_resolve_model(c->model, &dir, &err))
		return gm_cmd_error(&err);
	c->model = dir;
	/* recorded in the repository unless --no-commit, or --output for a
	 * model that is not a repository of its own (a plain directory) */
	applies = gm_repo_is_toplevel(c->model);
	if (!c->no_commit && (!c->output || applies)) {
		snprintf(expect, sizeof(expect), "train/%s", c->adapter);
		/* NAME@REV is a read-only view, unless a worktree has REV checked out */
		if (!applies && strchr(c->model_spec, '@') && !gm_is_dir(c->model_spec)) {
			gm_error_set(&err, GM_EINVAL, "'%s' is a past revision: train on a work tree (-m NAME) to "
				     "commit the result, or give --output <dir> --no-commit", c->model_spec);
			status = gm_cmd_error(&err);
		} else if (c->resume && strcmp(c->resume, expect)) {
			gm_error_set(&err, GM_EINVAL, "in a model repository, --resume takes the run's branch, %s "
				     "(not '%s'; --no-commit runs resume from their --output directory)", expect,
				     c->resume);
			status = gm_cmd_error(&err);
		} else if (gm_trainrepo_open(c->model, c->adapter, c->resume != NULL, &c->repo, &err)) {
			status = gm_cmd_error(&err);
		} else {
			status = train(c);
		}
	} else {
		status = train(c);
	}
	gm_trainrepo_close(c->repo);
	free(dir);
	return status;
}

/* --follow: online learning from a growing file or standard input (follow.h). */
static int run_follow(const struct gm_cmd_info *cmd, struct train_cmd *c, const char *path, double commit_seconds)
{
	gm_error err = GM_ERROR_INIT;
	struct follow_opts fo;
	char *dir = NULL;
	int status;

	if (!c->model || !c->adapter)
		return gm_cmd_usage_error(cmd, "--follow needs -m <model> and --adapter <name>");
	if (c->data || c->output || c->resume || c->eval_data || c->init_adapter || c->no_commit || c->trace ||
	    c->hp.steps >= 0 || c->hp.grad_accum >= 0 || c->hp.schedule || c->hp.warmup >= 0 || c->hp.shuffle >= 0 ||
	    c->hp.rslora >= 0)
		return gm_cmd_usage_error(cmd, "--follow takes the LoRA and optimizer options, --epochs (passes per "
					  "example), --threads and --checkpoint-every (steps per commit); not --data, "
					  "--output, --resume (a run resumes by itself), --eval-data, --init-adapter, "
					  "--no-commit, --trace, --steps, --grad-accum, --schedule, --warmup, --shuffle "
					  "or --rslora");
	if (gm_adapter_name_check(c->adapter, &err))
		return gm_cmd_usage_error(cmd, "%s", err.msg);
	if (!isnan(commit_seconds) && !(commit_seconds >= 0))
		return gm_cmd_usage_error(cmd, "--commit-seconds must be >= 0");
	memset(&fo, 0, sizeof(fo));
	gm_online_opts_init(&fo.online);
	if (c->hp.rank > 0) {
		fo.online.rank = c->hp.rank;
		fo.online.alpha = 2.0 * (double)c->hp.rank;
	}
	if (!isnan(c->hp.alpha))
		fo.online.alpha = c->hp.alpha;
	if (c->hp.targets && gm_lora_parse_targets(c->hp.targets, &fo.online.targets, &err))
		return gm_cmd_usage_error(cmd, "%s", err.msg);
	if (!isnan(c->hp.lr))
		fo.online.lr = c->hp.lr;
	if (!isnan(c->hp.weight_decay))
		fo.online.weight_decay = c->hp.weight_decay;
	if (!isnan(c->hp.grad_clip))
		fo.online.grad_clip = c->hp.grad_clip;
	if (c->hp.batch_size > 0)
		fo.online.batch = (int)c->hp.batch_size;
	if (!isnan(c->hp.epochs)) {
		if (!(c->hp.epochs >= 1 && c->hp.epochs <= 10000) || c->hp.epochs != floor(c->hp.epochs))
			return gm_cmd_usage_error(cmd, "with --follow, --epochs is a whole number of passes per example "
						  "(1 to 10000)");
		fo.online.epochs = (int)c->hp.epochs;
	}
	if (c->hp.max_len > 0)
		fo.online.max_len = c->hp.max_len;
	if (c->hp.seed != (unsigned long long)-1)
		fo.online.seed = c->hp.seed;
	fo.online.n_threads = c->threads > 0 ? (int)c->threads : (int)gm_cpu_count();
	fo.commit_steps = c->checkpoint_every > 0 ? c->checkpoint_every : 100;
	fo.commit_seconds = isnan(commit_seconds) ? 60 : commit_seconds;
	fo.name = c->adapter;
	fo.path = path;
	fo.verbosity = c->verbosity;
	if (gm_repo_resolve_model(c->model, &dir, &err))
		return gm_cmd_error(&err);
	fo.model = dir;
	if (!gm_repo_is_toplevel(dir)) {
		gm_error_set(&err, GM_EINVAL, "--follow commits on train/%s: give a model repository's work tree "
			     "(a registered name, or the top of its repository), not '%s'", c->adapter, c->model);
		free(dir);
		return gm_cmd_error(&err);
	}
	status = follow_run(&fo);
	free(dir);
	return status;
}

int main(int argc, const char **argv)
{
	const char *check = NULL, *follow = NULL;
	double commit_seconds = NAN;
	int json = 0, status, n;
	struct train_cmd c;
	const struct gm_option options[] = {
		GM_OPT_GROUP("Training"),
		GM_OPT_STRING('m', "model", &c.model, "model", "the model: a registered name or a directory"),
		GM_OPT_STRING(0, "adapter", &c.adapter, "name", "the adapter's name (letters, digits, . _ -)"),
		GM_OPT_STRING(0, "data", &c.data, "file", "JSONL training data ('-' for standard input)"),
		GM_OPT_STRING(0, "output", &c.output, "dir",
			      "also write the adapter (PEFT) here (with --no-commit: and checkpoint-N/, nothing committed)"),
		GM_OPT_FLAG(0, "no-commit", &c.no_commit, "with --output: write the PEFT directory only, commit nothing"),
		GM_OPT_STRING(0, "eval-data", &c.eval_data, "file", "held-out JSONL data: its loss at each checkpoint and at the end"),
		GM_OPT_STRING(0, "resume", &c.resume, "train/name|dir",
			      "continue the run from its last checkpoint (on train/<name>, or in an --output dir)"),
		GM_OPT_STRING(0, "init-adapter", &c.init_adapter, "dir|name", "start from this adapter's weights and settings"),
		GM_OPT_GROUP("LoRA"),
		GM_OPT_INT(0, "rank", &c.hp.rank, "r", "LoRA rank (default 16)", 1, 65536),
		GM_OPT_DOUBLE(0, "alpha", &c.hp.alpha, "a", "LoRA alpha: scale alpha/r (default 32)"),
		GM_OPT_STRING(0, "targets", &c.hp.targets, "list",
			      "projections: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj or all-linear (default)"),
		GM_OPT_FLAG(0, "rslora", &c.hp.rslora, "rank-stabilized scale alpha/sqrt(r)"),
		GM_OPT_GROUP("Optimization"),
		GM_OPT_DOUBLE(0, "lr", &c.hp.lr, "x", "peak learning rate (default 2e-4)"),
		GM_OPT_STRING(0, "schedule", &c.hp.schedule, "name", "cosine (default), linear or constant, after warmup"),
		GM_OPT_INT(0, "warmup", &c.hp.warmup, "n", "linear warmup steps (default 0)", 0, 1L << 40),
		GM_OPT_DOUBLE(0, "weight-decay", &c.hp.weight_decay, "x", "AdamW decoupled weight decay (default 0)"),
		GM_OPT_DOUBLE(0, "grad-clip", &c.hp.grad_clip, "x", "clip the global gradient norm to this; 0: off (default 1)"),
		GM_OPT_INT(0, "batch-size", &c.hp.batch_size, "n", "sequences per micro-batch (default 4)", 1, 65536),
		GM_OPT_INT(0, "grad-accum", &c.hp.grad_accum, "n", "micro-batches per optimizer step (default 1)", 1, 65536),
		GM_OPT_INT(0, "steps", &c.hp.steps, "n", "optimizer steps (default: one epoch)", 1, 1L << 40),
		GM_OPT_DOUBLE(0, "epochs", &c.hp.epochs, "e", "passes over the data, instead of --steps (default 1)"),
		GM_OPT_INT(0, "max-len", &c.hp.max_len, "n", "truncate sequences to n tokens (default 1024)", 2, 1L << 20),
		GM_OPT_U64(0, "seed", &c.hp.seed, "n", "LoRA initialisation and data order (default 0)"),
		GM_OPT_FLAG(0, "shuffle", &c.hp.shuffle, "shuffle the examples every epoch (default; --no-shuffle: file order)"),
		GM_OPT_GROUP("Run"),
		GM_OPT_INT(0, "threads", &c.threads, "n", "worker threads (default: one per CPU)", 0, 4096),
		GM_OPT_INT(0, "checkpoint-every", &c.checkpoint_every, "n",
			   "write a checkpoint every n steps (default 0: only when interrupted)", 0, 1L << 40),
		GM_OPT_STRING(0, "trace", &c.trace, "file", "one JSON line per step: step, loss, grad_norm, lr, tokens, tokens_per_s"),
		GM_OPT_INT(0, "progress-fd", &c.progress_fd, "fd",
			   "write progress as JSON lines to this open descriptor (steps, evals, checkpoints, the end)",
			   0, 65535),
		GM_OPT_GROUP("Online (--follow)"),
		GM_OPT_STRING(0, "follow", &follow, "file",
			      "train on each JSONL example as the file grows ('-': standard input, to its end), committing on train/<name>"),
		GM_OPT_DOUBLE(0, "commit-seconds", &commit_seconds, "s",
			      "with --follow: commit s seconds after the first step not committed (default 60; 0: by count only)"),
		GM_OPT_GROUP("Data check"),
		GM_OPT_STRING(0, "check-data", &check, "file",
			      "validate a JSONL training data file ('-' for standard input)"),
		GM_OPT_FLAG(0, "json", &json, "print the --check-data result as JSON"),
		GM_OPT_VERBOSITY(&c.verbosity),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git train", "git-train", usage, options };
	gm_error err = GM_ERROR_INIT;

	memset(&c, 0, sizeof(c));
	c.hp.rank = c.hp.warmup = c.hp.batch_size = c.hp.grad_accum = c.hp.steps = c.hp.max_len = -1;
	c.hp.alpha = c.hp.lr = c.hp.weight_decay = c.hp.grad_clip = c.hp.epochs = NAN;
	c.hp.rslora = c.hp.shuffle = -1;
	c.hp.seed = (unsigned long long)-1;
	c.progress_fd = -1;
	{
		const char *d = getenv("GM_TRAIN_STEP_DELAY_MS");
		char *end;

		if (d && *d) {
			c.step_delay_ms = strtol(d, &end, 10);
			if (*end || c.step_delay_ms < 0 || c.step_delay_ms > 60000) {
				fprintf(stderr, "git train: GM_TRAIN_STEP_DELAY_MS must be milliseconds, 0 to 60000\n");
				return 129;
			}
		}
	}
	n = gm_cmd_parse(&cmd, argc, argv, 0, 1, &status);
	if (n < 0)
		return status;
	gm_cmd_set_verbosity(c.verbosity);
	if (n > 0)
		return gm_cmd_usage_error(&cmd, "unexpected argument '%s'", argv[0]);
	if (check) {
		if (c.model || c.data || c.output || c.adapter)
			return gm_cmd_usage_error(&cmd, "--check-data is used alone (with --json, -q)");
		return check_data(check, json, c.verbosity);
	}
	if (json)
		return gm_cmd_usage_error(&cmd, "--json goes with --check-data");
	if (!isnan(commit_seconds) && !follow)
		return gm_cmd_usage_error(&cmd, "--commit-seconds goes with --follow");
	if (follow)
		return run_follow(&cmd, &c, follow, commit_seconds);
	if (!c.model || !c.adapter || !c.data)
		return gm_cmd_usage_error(&cmd, "training needs -m <model>, --adapter <name> and --data <file>");
	if (c.no_commit && !c.output)
		return gm_cmd_usage_error(&cmd, "--no-commit needs --output <dir>: the result has to go somewhere");
	if (gm_adapter_name_check(c.adapter, &err))
		return gm_cmd_usage_error(&cmd, "%s", err.msg);
	if (c.hp.steps >= 0 && !isnan(c.hp.epochs))
		return gm_cmd_usage_error(&cmd, "--steps and --epochs are exclusive");
	if (!isnan(c.hp.epochs) && !(c.hp.epochs > 0))
		return gm_cmd_usage_error(&cmd, "--epochs must be positive");
	c.hp.seed_given = c.hp.seed != (unsigned long long)-1;
	if (!c.hp.seed_given)
		c.hp.seed = D_SEED;
	c.schedule = GM_SCHEDULE_COSINE;
	if (c.hp.schedule && gm_schedule_from_name(c.hp.schedule, &c.schedule, &err))
		return gm_cmd_usage_error(&cmd, "%s", err.msg);
	c.targets_mask = GM_LORA_ALL_TARGETS;
	if (c.hp.targets && gm_lora_parse_targets(c.hp.targets, &c.targets_mask, &err))
		return gm_cmd_usage_error(&cmd, "%s", err.msg);
	if (c.resume && c.init_adapter)
		return gm_cmd_usage_error(&cmd, "--resume and --init-adapter are exclusive");
	c.tty = isatty(2);
	if (c.progress_fd >= 0)
		signal(SIGPIPE, SIG_IGN); /* a reader that went away: writes fail, training goes on */
	return run(&c);
}
