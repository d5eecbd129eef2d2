/* follow.c - git train --follow FILE|- (see follow.h). */
#include "follow.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/cmd.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/log.h"
#include "formats/model.h"
#include "manage/learnrepo.h"
#include "text/tokenizer.h"
#include "train/trainrun.h"

#define POLL_S 0.2            /* a file at its end is looked at again this often */

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

struct follow {
	const struct follow_opts *opts;
	gm_online *o;
	gm_learnrepo *repo;
	/* the input's bytes consumed: whole lines, each logged; with the log, under lock */
	pthread_mutex_t lock;
	long long offset;
	unsigned long line;       /* lines consumed */
	unsigned long bad;
	uint64_t committed;       /* examples in the last commit */
	char last_commit[41];
};

/* The trainer's hook: the state, with the input offset that matches the log, on train/NAME. */
static int commit(struct follow *f, gm_error *err)
{
	json_object *extra = json_object_new_object(), *fo = json_object_new_object();
	gm_online_status st;
	const char *stage;
	char id[41];
	uint64_t n;
	int ret;

	gm_online_get_status(f->o, &st);
	pthread_mutex_lock(&f->lock); /* no line is logged between the offset and the log's copy */
	json_object_object_add(fo, "file", json_object_new_string(f->opts->path));
	json_object_object_add(fo, "offset", json_object_new_int64(f->offset));
	json_object_object_add(fo, "lines", json_object_new_int64((int64_t)f->line));
	json_object_object_add(extra, "follow", fo);
	if (!(stage = gm_learnrepo_stage(f->repo, err)))
		ret = err ? err->code : GM_EIO;
	else if (!(ret = gm_online_save(f->o, stage, extra, err)))
		ret = gm_learnrepo_commit(f->repo, st.steps, id, &n, err);
	pthread_mutex_unlock(&f->lock);
	json_object_put(extra);
	if (!ret) {
		gm_online_mark_committed(f->o);
		f->committed = n;
		memcpy(f->last_commit, id, sizeof(id));
		gm_info("step %lld, %llu examples: committed %.12s on %s", (long long)st.steps, (unsigned long long)n, id,
			gm_learnrepo_branch(f->repo));
	}
	return ret;
}

static int on_commit(void *ctx, gm_online *o, gm_error *err)
{
	(void)o;
	return commit(ctx, err);
}

static int on_step(void *ctx, gm_online *o, const gm_train_info *info, gm_error *err)
{
	(void)ctx;
	(void)o;
	(void)err;
	gm_debug("step %lld: loss %.4f", (long long)info->step, info->loss);
	return 0;
}

/* "FILE:1: reason" of a one-line parse -> "FILE:LINE: reason". */
static void renumber(gm_error *err, const char *name, unsigned long line)
{
	size_t n = strlen(name);
	char rest[GM_ERROR_MSG_MAX];

	if (strncmp(err->msg, name, n) || strncmp(err->msg + n, ":1: ", 4))
		return;
	snprintf(rest, sizeof(rest), "%s", err->msg + n + 4);
	snprintf(err->msg, sizeof(err->msg), "%.*s:%lu: %.900s", (int)n, name, line, rest);
}

/* One whole line (without its newline): parsed, queued, logged; a bad one is reported and skipped. */
static int take_line(struct follow *f, const char *name, const char *data, size_t len, size_t consumed)
{
	gm_error err = GM_ERROR_INIT;
	gm_online_batch *b = NULL;
	const char *jsonl;
	size_t n = 0, jl;
	int ret;

	size_t k;

	pthread_mutex_lock(&f->lock);
	f->line++;
	for (k = 0; k < len && (data[k] == ' ' || data[k] == '\t' || data[k] == '\r'); k++)
		;
	/* a blank line is no example, and no error */
	ret = k == len ? 1 : gm_online_parse(f->o, name, data, len, &b, &err);
	if (ret) {
		if (ret < 0) {
			renumber(&err, name, f->line);
			fprintf(stderr, "%s (skipped)\n", err.msg);
			f->bad++;
		}
		f->offset += (long long)consumed;
		pthread_mutex_unlock(&f->lock);
		return 0;
	}
	jsonl = gm_online_batch_jsonl(b, &jl);
	n = gm_online_batch_count(b);
	ret = gm_learnrepo_append(f->repo, jsonl, jl, n, &err);
	if (!ret) {
		f->offset += (long long)consumed;
		/* a trainer behind: wait for it (the input waits too) */
		while ((ret = gm_online_add(f->o, b, &err)) == 1 && !stop_requested) {
			pthread_mutex_unlock(&f->lock);
			gm_online_wait_idle(f->o, 0.5);
			pthread_mutex_lock(&f->lock);
			ret = gm_online_parse(f->o, name, data, len, &b, &err);
			if (ret)
				break;
		}
		b = NULL;
	}
	pthread_mutex_unlock(&f->lock);
	gm_online_batch_free(b);
	if (ret < 0)
		return gm_cmd_error(&err);
	return 0;
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };

	nanosleep(&ts, NULL);
}

/* The offset a resumed run of the same file continues from (0 when none or another file). */
static long long resumed_offset(const char *state_dir, const char *path)
{
	char *p = gm_path_join(state_dir, GM_TRAIN_STATE_FILE);
	json_object *st = NULL, *fo, *v;
	long long off = 0;

	if (!gm_json_parse_file(p, &st, NULL) && json_object_object_get_ex(st, "follow", &fo) &&
	    json_object_object_get_ex(fo, "file", &v) && !strcmp(json_object_get_string(v), path) &&
	    json_object_object_get_ex(fo, "offset", &v))
		off = json_object_get_int64(v);
	json_object_put(st);
	free(p);
	return off;
}

int follow_run(const struct follow_opts *opts)
{
	gm_error err = GM_ERROR_INIT;
	gm_online_hooks h = { on_step, on_commit, NULL, 0, 0 };
	struct follow f;
	gm_model *m = NULL;
	gm_tokenizer *tok = NULL;
	char *state = NULL;
	const char *name = strcmp(opts->path, "-") ? opts->path : "<stdin>";
	gm_buf pending = GM_BUF_INIT;
	struct sigaction sa;
	gm_online_status st;
	int fd = -1, status = 0, eof = 0;
	long long start = 0;

	memset(&f, 0, sizeof(f));
	f.opts = opts;
	pthread_mutex_init(&f.lock, NULL);
	if (gm_model_open(opts->model, &m, &err) || gm_tokenizer_load(opts->model, &tok, &err)) {
		status = gm_cmd_error(&err);
		goto out;
	}
	if (gm_learnrepo_open(opts->model, opts->name, &f.repo, &state, &err)) {
		status = gm_cmd_error(&err);
		goto out;
	}
	if (gm_online_new(m, tok, &opts->online, state, &f.o, &err)) {
		status = gm_cmd_error(&err);
		goto out;
	}
	f.committed = gm_learnrepo_examples(f.repo);
	if (state) {
		start = resumed_offset(state, opts->path);
		gm_online_get_status(f.o, &st);
		gm_info("resuming %s at step %lld, %llu examples logged%s", gm_learnrepo_branch(f.repo),
			(long long)st.steps, (unsigned long long)f.committed,
			start ? "; the file is read on from where that commit left it" : "");
	}
	fd = strcmp(opts->path, "-") ? open(opts->path, O_RDONLY | O_CLOEXEC) : 0;
	if (fd < 0) {
		gm_error_errno(&err, "%s: cannot open", opts->path);
		status = gm_cmd_error(&err);
		goto out;
	}
	if (start && lseek(fd, (off_t)start, SEEK_SET) != (off_t)start) {
		gm_error_errno(&err, "%s: cannot seek to %lld, where the last commit left it", opts->path, start);
		status = gm_cmd_error(&err);
		goto out;
	}
	f.offset = start;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; /* no SA_RESTART: a read of standard input ends at once */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	h.ctx = &f;
	h.commit_steps = opts->commit_steps;
	h.commit_seconds = opts->commit_seconds;
	if (gm_online_start(f.o, &h, &err)) {
		status = gm_cmd_error(&err);
		goto out;
	}
	gm_info("following %s: training %s on each example as it comes (Ctrl-C commits and stops)", name,
		opts->name);
	while (!stop_requested && !eof && !status) {
		char buf[65536];
		ssize_t r = read(fd, buf, sizeof(buf));
		char *nl;

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			gm_error_errno(&err, "%s: read error", name);
			status = gm_cmd_error(&err);
			break;
		}
		if (r == 0) {
			if (fd == 0) {
				eof = 1; /* standard input ends the run; a file may grow */
				break;
			}
			sleep_s(POLL_S);
			continue;
		}
		gm_buf_add(&pending, buf, (size_t)r);
		/* whole lines only: the rest waits for its newline */
		while (!status && pending.len && (nl = memchr(pending.buf, '\n', pending.len))) {
			size_t len = (size_t)(nl - pending.buf);

			status = take_line(&f, name, pending.buf, len, len + 1);
			memmove(pending.buf, nl + 1, pending.len - len - 1);
			pending.len -= len + 1;
		}
	}
	/* standard input's last line may lack its newline */
	if (eof && pending.len && !status)
		status = take_line(&f, name, pending.buf, pending.len, pending.len);
	if (eof && !stop_requested) {
		while (gm_online_wait_idle(f.o, 0.5) && !stop_requested)
			;
	}
	gm_online_stop(f.o);
	gm_online_get_status(f.o, &st);
	if (st.steps_uncommitted || gm_learnrepo_examples(f.repo) != f.committed) {
		if (commit(&f, &err))
			status = gm_cmd_error(&err);
	}
	if (!status) {
		char loss[32] = "-";

		if (!isnan(st.loss))
			snprintf(loss, sizeof(loss), "%.4f", st.loss);
		printf("%s: %llu example%s read (%lu bad line%s skipped), %lld steps, loss %s; %s%.12s on %s\n",
		       opts->name, (unsigned long long)st.examples_seen, st.examples_seen == 1 ? "" : "s", f.bad,
		       f.bad == 1 ? "" : "s", (long long)st.steps,
		       loss, *f.last_commit ? "committed " : "nothing new to commit", f.last_commit,
		       gm_learnrepo_branch(f.repo));
	}
out:
	if (fd > 0)
		close(fd);
	gm_buf_release(&pending);
	gm_online_free(f.o);
	gm_learnrepo_close(f.repo);
	gm_tokenizer_free(tok);
	gm_model_close(m);
	free(state);
	pthread_mutex_destroy(&f.lock);
	return status;
}
