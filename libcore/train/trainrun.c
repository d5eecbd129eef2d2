/*
 * trainrun.c - the training loop and its checkpoints (see trainrun.h).
 */
#include "train/trainrun.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/rng.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The example order of epoch e: file order, or a Fisher-Yates permutation drawn from (seed, e). */
static void epoch_order(size_t *order, size_t n, int shuffle, uint64_t seed, int64_t e)
{
	gm_rng r;
	size_t i;

	for (i = 0; i < n; i++)
		order[i] = i;
	if (!shuffle)
		return;
	gm_rng_seed_stream(&r, seed, 0x6570636fULL /* "epoc" */, (uint64_t)e);
	for (i = n - 1; i > 0; i--) {
		size_t j = (size_t)(gm_rng_next(&r) % (uint64_t)(i + 1)), tmp = order[i];

		order[i] = order[j];
		order[j] = tmp;
	}
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_rf(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY);

	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

static int write_state(const char *dir, const gm_train *t, const gm_trainset *data, const gm_train_run_opts *o,
		       double loss, double eval_loss, gm_error *err)
{
	json_object *st = json_object_new_object();
	char hash[32], *path = gm_path_join(dir, GM_TRAIN_STATE_FILE);
	int ret;

	snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)data->hash);
	json_object_object_add(st, "step", json_object_new_int64(gm_train_steps_done(t)));
	json_object_object_add(st, "n_steps", json_object_new_int64(o->n_steps));
	json_object_object_add(st, "seed", json_object_new_uint64(o->seed));
	json_object_object_add(st, "data_hash", json_object_new_string(hash));
	json_object_object_add(st, "n_examples", json_object_new_int64((int64_t)data->n));
	json_object_object_add(st, "loss", json_object_new_double(loss));
	json_object_object_add(st, "eval_loss", isnan(eval_loss) ? NULL : json_object_new_double(eval_loss));
	json_object_object_add(st, "config", o->config ? json_object_get(o->config) : NULL);
	ret = gm_json_write_file(path, st, err);
	json_object_put(st);
	free(path);
	return ret;
}

/* Writes ROOT/checkpoint-N through a temporary directory; path receives the final name. */
static int write_checkpoint(gm_train *t, const gm_lora *l, const gm_trainset *data, const gm_train_run_opts *o,
			    double loss, double eval_loss, char *path, size_t path_len, gm_error *err)
{
	int64_t step = gm_train_steps_done(t);
	gm_buf tmp = GM_BUF_INIT, old = GM_BUF_INIT;
	int ret;

	if ((ret = gm_mkdir_p(o->checkpoint_root, 0777, err)))
		return ret;
	snprintf(path, path_len, "%s/checkpoint-%lld", o->checkpoint_root, (long long)step);
	gm_buf_addf(&tmp, "%s/.checkpoint-%lld.tmp-XXXXXX", o->checkpoint_root, (long long)step);
	if (!mkdtemp(tmp.buf)) {
		ret = gm_error_errno(err, "cannot create a directory in %s", o->checkpoint_root);
		goto out;
	}
	ret = gm_lora_save(l, tmp.buf, err);
	if (!ret)
		ret = gm_train_save_state(t, tmp.buf, err);
	if (!ret)
		ret = write_state(tmp.buf, t, data, o, loss, eval_loss, err);
	if (!ret && gm_is_dir(path)) {
		/* a checkpoint of the same step from an earlier run: set aside, replaced, removed */
		gm_buf_addf(&old, "%s/.checkpoint-%lld.old-XXXXXX", o->checkpoint_root, (long long)step);
		if (!mkdtemp(old.buf) || rename(path, old.buf))
			ret = gm_error_errno(err, "cannot replace %s", path);
	}
	if (!ret && rename(tmp.buf, path))
		ret = gm_error_errno(err, "cannot rename %s to %s", tmp.buf, path);
	if (!ret)
		fsync_dir(o->checkpoint_root);
	if (old.len)
		rm_rf(old.buf);
	if (ret)
		rm_rf(tmp.buf);
out:
	gm_buf_release(&tmp);
	gm_buf_release(&old);
	return ret;
}

static gm_train_seq *set_seqs(const gm_trainset *s)
{
	gm_train_seq *q = gm_xcalloc(s->n ? s->n : 1, sizeof(*q));
	size_t i;

	for (i = 0; i < s->n; i++) {
		q[i].ids = s->ex[i].ids;
		q[i].mask = s->ex[i].mask;
		q[i].n = s->ex[i].n;
	}
	return q;
}

int gm_train_eval_set(gm_train *t, const gm_trainset *s, double *loss, gm_error *err)
{
	gm_train_seq *q = set_seqs(s);
	int ret = gm_train_eval(t, q, (int)s->n, loss, err);

	free(q);
	return ret;
}

int gm_train_run(gm_train *t, const gm_lora *l, const gm_trainset *data, const gm_train_run_opts *o,
		 gm_train_run_result *res, gm_error *err)
{
	int64_t per_step = o->batch_size * o->grad_accum, cur_epoch = -1, step;
	size_t *order = gm_xcalloc(data->n, sizeof(*order));
	gm_train_seq *all = set_seqs(data), *batch = NULL;
	double t_start = now_s(), loss = NAN, eval_loss = NAN;
	int ret = 0;

	memset(res, 0, sizeof(*res));
	res->eval_loss = NAN;
	if (o->batch_size < 1 || o->grad_accum < 1 || per_step > 1 << 20) {
		ret = gm_error_set(err, GM_EINVAL, "batch size and gradient accumulation must be at least 1");
		goto out;
	}
	batch = gm_xcalloc((size_t)per_step, sizeof(*batch));
	/* the held-out loss before any update, the baseline the later ones compare to */
	if (o->eval && gm_train_steps_done(t) == 0) {
		if ((ret = gm_train_eval_set(t, o->eval, &eval_loss, err)))
			goto out;
		res->eval_loss = eval_loss;
		if (o->on_eval)
			o->on_eval(o->ctx, 0, eval_loss);
		eval_loss = NAN;
	}
	for (step = gm_train_steps_done(t); step < o->n_steps; step++) {
		gm_train_progress p;
		double t0 = now_s(), dt;
		int64_t i;

		for (i = 0; i < per_step; i++) {
			int64_t k = step * per_step + i, e = k / (int64_t)data->n;

			if (e != cur_epoch) {
				epoch_order(order, data->n, o->shuffle, o->seed, e);
				cur_epoch = e;
			}
			batch[i] = all[order[k % (int64_t)data->n]];
		}
		if ((ret = gm_train_step(t, batch, (int)per_step, &p.info, err)))
			goto out;
		loss = p.info.loss;
		dt = now_s() - t0;
		p.n_steps = o->n_steps;
		p.tokens_per_s = dt > 0 ? (double)p.info.tokens / dt : 0;
		p.elapsed_s = now_s() - t_start;
		if (o->on_step)
			o->on_step(o->ctx, &p);
		{
			int64_t done = step + 1;
			int stopping = o->stop && *o->stop && done < o->n_steps;
			int due = o->checkpoint_every > 0 && done % o->checkpoint_every == 0;

			if ((due || stopping) && o->eval) {
				if ((ret = gm_train_eval_set(t, o->eval, &eval_loss, err)))
					goto out;
				res->eval_loss = eval_loss;
				if (o->on_eval)
					o->on_eval(o->ctx, done, eval_loss);
			}
			if ((due || stopping) && o->checkpoint_root) {
				ret = write_checkpoint(t, l, data, o, loss, eval_loss, res->last_checkpoint,
						       sizeof(res->last_checkpoint), err);
				if (!ret && o->on_checkpoint)
					ret = o->on_checkpoint(o->ctx, done, res->last_checkpoint, eval_loss, err);
				if (ret)
					goto out;
			}
			if (stopping) {
				res->interrupted = 1;
				break;
			}
		}
	}
	/* the final evaluation, unless the last checkpoint just did it */
	if (o->eval && !res->interrupted &&
	    !(o->checkpoint_every > 0 && o->n_steps % o->checkpoint_every == 0 && !isnan(eval_loss))) {
		if ((ret = gm_train_eval_set(t, o->eval, &eval_loss, err)))
			goto out;
		res->eval_loss = eval_loss;
		if (o->on_eval)
			o->on_eval(o->ctx, gm_train_steps_done(t), eval_loss);
	}
out:
	res->steps = gm_train_steps_done(t);
	res->loss = loss;
	free(order);
	free(all);
	free(batch);
	return ret;
}

int gm_train_find_checkpoint(const char *dir, char **path, json_object **state, gm_error *err)
{
	char *p = gm_path_join(dir, GM_TRAIN_STATE_FILE);
	long long best = -1;
	char *found = NULL;
	int ret;

	if (gm_is_file(p)) {
		found = gm_xstrdup(dir);
	} else {
		DIR *d = opendir(dir);
		struct dirent *e;

		if (!d) {
			free(p);
			return gm_error_errno(err, "cannot resume from %s", dir);
		}
		while ((e = readdir(d))) {
			char *end;
			long long n;

			if (strncmp(e->d_name, "checkpoint-", 11))
				continue;
			n = strtoll(e->d_name + 11, &end, 10);
			if (*end || n <= best)
				continue;
			best = n;
			free(found);
			found = gm_path_join(dir, e->d_name);
		}
		closedir(d);
		if (!found) {
			free(p);
			return gm_error_set(err, GM_ENOENT, "%s: no checkpoint here (neither %s nor checkpoint-N/)", dir,
					    GM_TRAIN_STATE_FILE);
		}
	}
	free(p);
	p = gm_path_join(found, GM_TRAIN_STATE_FILE);
	ret = gm_json_parse_file(p, state, err);
	free(p);
	if (ret) {
		free(found);
		return ret;
	}
	*path = found;
	return 0;
}
