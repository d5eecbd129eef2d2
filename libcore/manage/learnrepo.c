/* learnrepo.c - an online learning run committed on train/NAME (see learnrepo.h). */
#include "manage/learnrepo.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/log.h"
#include "manage/trainrepo.h"
#include "storage/lfs.h"
#include "storage/lfs-repo.h"
#include "storage/repo.h"
#include "train/trainrun.h"

struct gm_learnrepo {
	gm_trainrepo *t;
	char *name;
	char *log_path;        /* scratch/examples.lfs.jsonl */
	char *stage;           /* scratch/commit (the state being committed) */
	pthread_mutex_t lock;  /* the log */
	int log_fd;
	uint64_t n_examples;
	off_t log_len;
	char last_commit[41];
};

static uint64_t count_lines(const char *data, size_t len)
{
	uint64_t n = 0;
	size_t i;

	for (i = 0; i < len; i++)
		n += data[i] == '\n';
	return n;
}

void gm_learnrepo_close(gm_learnrepo *l)
{
	if (!l)
		return;
	if (l->log_fd >= 0)
		close(l->log_fd);
	gm_trainrepo_close(l->t);
	free(l->name);
	free(l->log_path);
	free(l->stage);
	pthread_mutex_destroy(&l->lock);
	free(l);
}

int gm_learnrepo_open(const char *model_dir, const char *name, gm_learnrepo **out, char **state_dir,
		      gm_error *err)
{
	static const char *const lfs_pattern[] = { "*.lfs.*" };
	gm_learnrepo *l;
	gm_error e1 = GM_ERROR_INIT;
	gm_buf log = GM_BUF_INIT;
	gm_trainrepo *probe = NULL;
	char *dir = NULL;
	size_t added = 0;
	int ret, resume;

	*out = NULL;
	*state_dir = NULL;
	if (!gm_repo_is_toplevel(model_dir))
		return gm_error_set(err, GM_ENOENT, "%s is not the top of a git repository's work tree", model_dir);
	/* resumed when the branch exists: a first open without resume says so */
	ret = gm_trainrepo_open(model_dir, name, 0, &probe, &e1);
	if (ret == GM_ENOENT) {
		if (err)
			*err = e1;
		return ret;
	}
	resume = ret != 0;
	if (resume) {
		gm_error e2 = GM_ERROR_INIT;
		int r2 = gm_trainrepo_open(model_dir, name, 1, &probe, &e2);

		if (r2) {
			/* not resumable either: the first reason is the one to give */
			if (err)
				*err = r2 == GM_ENOENT ? e1 : e2;
			return r2 == GM_ENOENT ? ret : r2;
		}
	}
	l = gm_xcalloc(1, sizeof(*l));
	l->t = probe;
	l->log_fd = -1;
	l->name = gm_xstrdup(name);
	pthread_mutex_init(&l->lock, NULL);
	l->log_path = gm_path_join(gm_trainrepo_scratch(l->t), GM_LEARN_LOG_FILE);
	l->stage = gm_path_join(gm_trainrepo_scratch(l->t), "commit");
	if ((ret = gm_lfs_track(model_dir, lfs_pattern, 1, &added, err)))
		goto out;
	if (added)
		gm_info("added '*.lfs.*' to %s/.gitattributes: the examples log (%s) is stored through LFS", model_dir,
			GM_LEARN_LOG_FILE);
	if (resume) {
		char *p;

		ret = gm_trainrepo_resume_dir(l->t, &dir, err);
		if (ret == 1)
			ret = gm_error_set(err, GM_EINVAL, "the run on %s had finished: learn under another name",
					   gm_trainrepo_branch(l->t));
		if (ret)
			goto out;
		p = gm_path_join(dir, GM_LEARN_LOG_FILE);
		if (gm_is_file(p) && (ret = gm_read_file(p, &log, err))) {
			free(p);
			goto out;
		}
		free(p);
	}
	/* the log restarts from the committed one: what came after it is the lost window */
	if ((ret = gm_write_file_atomic(l->log_path, log.buf ? log.buf : "", log.len, 0666, err)))
		goto out;
	l->n_examples = count_lines(log.buf ? log.buf : "", log.len);
	l->log_len = (off_t)log.len;
	l->log_fd = open(l->log_path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (l->log_fd < 0) {
		ret = gm_error_errno(err, "%s: cannot open", l->log_path);
		goto out;
	}
out:
	gm_buf_release(&log);
	if (ret) {
		free(dir);
		gm_learnrepo_close(l);
		return ret;
	}
	*state_dir = dir;
	*out = l;
	return 0;
}

int gm_learnrepo_append(gm_learnrepo *l, const char *jsonl, size_t len, uint64_t n, gm_error *err)
{
	size_t done = 0;
	int ret = 0;

	pthread_mutex_lock(&l->lock);
	while (done < len) {
		ssize_t w = write(l->log_fd, jsonl + done, len - done);

		if (w < 0) {
			ret = gm_error_errno(err, "%s: cannot append", l->log_path);
			break;
		}
		done += (size_t)w;
	}
	if (!ret) {
		l->n_examples += n;
		l->log_len += (off_t)len;
	} else if (done && ftruncate(l->log_fd, l->log_len)) {
		/* a partial line would break the log: it is cut back (or the next commit says why) */
		gm_warn("%s: cannot cut a partial append back", l->log_path);
	}
	pthread_mutex_unlock(&l->lock);
	return ret;
}

uint64_t gm_learnrepo_examples(gm_learnrepo *l)
{
	uint64_t n;

	pthread_mutex_lock(&l->lock);
	n = l->n_examples;
	pthread_mutex_unlock(&l->lock);
	return n;
}

const char *gm_learnrepo_branch(const gm_learnrepo *l) { return gm_trainrepo_branch(l->t); }
const char *gm_learnrepo_adapter_path(const gm_learnrepo *l) { return gm_trainrepo_adapter_path(l->t); }
void gm_learnrepo_last_commit(gm_learnrepo *l, char out[41])
{
	pthread_mutex_lock(&l->lock);
	memcpy(out, l->last_commit, sizeof(l->last_commit));
	pthread_mutex_unlock(&l->lock);
}

const char *gm_learnrepo_stage(gm_learnrepo *l, gm_error *err)
{
	gm_remove_tree(l->stage, NULL);
	if (gm_mkdir_p(l->stage, 0777, err))
		return NULL;
	return l->stage;
}

/* The first len bytes of the log into path. */
static int copy_log(gm_learnrepo *l, const char *path, off_t len, gm_error *err)
{
	gm_buf b = GM_BUF_INIT;
	int ret;

	if ((ret = gm_read_file(l->log_path, &b, err)))
		return ret;
	if ((off_t)b.len < len)
		ret = gm_error_set(err, GM_EIO, "%s: shorter than written (%zu < %lld bytes)", l->log_path, b.len,
				   (long long)len);
	else
		ret = gm_write_file_atomic(path, b.buf ? b.buf : "", (size_t)len, 0666, err);
	gm_buf_release(&b);
	return ret;
}

int gm_learnrepo_commit(gm_learnrepo *l, int64_t step, char commit[41], uint64_t *examples, gm_error *err)
{
	char hex[GM_LFS_OID_HEXLEN + 1], id[41];
	unsigned long long size;
	json_object *st = NULL;
	gm_buf msg = GM_BUF_INIT;
	char *log_copy = gm_path_join(l->stage, GM_LEARN_LOG_FILE);
	char *state = gm_path_join(l->stage, GM_TRAIN_STATE_FILE);
	uint64_t n;
	off_t len;
	int ret;

	/* the log as it is now: appends after this belong to the next commit */
	pthread_mutex_lock(&l->lock);
	n = l->n_examples;
	len = l->log_len;
	pthread_mutex_unlock(&l->lock);
	if ((ret = copy_log(l, log_copy, len, err)) || (ret = gm_lfs_hash_file(log_copy, hex, &size, err)))
		goto out;
	/* the state says which examples it had */
	if ((ret = gm_json_parse_file(state, &st, err)))
		goto out;
	json_object_object_add(st, "examples", json_object_new_int64((int64_t)n));
	json_object_object_add(st, "examples_sha256", json_object_new_string(hex));
	if ((ret = gm_json_write_file(state, st, err)))
		goto out;
	gm_buf_addf(&msg, "learn: %s at step %lld, %llu example%s\n\n%s: %llu example%s, sha256 %s\n", l->name,
		    (long long)step, (unsigned long long)n, n == 1 ? "" : "s", GM_LEARN_LOG_FILE,
		    (unsigned long long)n, n == 1 ? "" : "s", hex);
	if ((ret = gm_trainrepo_checkpoint(l->t, step, l->stage, msg.buf, id, err)))
		goto out;
	pthread_mutex_lock(&l->lock);  /* read by the server's threads (gm_learnrepo_last_commit) */
	memcpy(l->last_commit, id, sizeof(id));
	pthread_mutex_unlock(&l->lock);
	if (commit)
		memcpy(commit, id, sizeof(id));
	if (examples)
		*examples = n;
out:
	json_object_put(st);
	gm_buf_release(&msg);
	free(log_copy);
	free(state);
	return ret;
}
