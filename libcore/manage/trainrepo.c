/*
 * trainrepo.c - a training run recorded in the model's git repository
 * (see trainrepo.h).
 */
#include <json-c/json.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manage/adapter.h"
#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/log.h"
#include "storage/repo.h"
#include "storage/repo-internal.h"
#include "manage/trainrepo.h"
#include "train/trainrun.h"

struct gm_trainrepo {
	gm_repo *repo;
	char *model_dir;
	char *name;
	char *branch;        /* "train/NAME" */
	char *adapter_path;  /* "adapters/NN_NAME" */
	char *scratch;       /* GITDIR/git-model/train/NAME */
	char base[GM_REPO_OID_HEXLEN + 1];
};

void gm_trainrepo_close(gm_trainrepo *t)
{
	if (!t)
		return;
	gm_repo_close(t->repo);
	free(t->model_dir);
	free(t->name);
	free(t->branch);
	free(t->adapter_path);
	free(t->scratch);
	free(t);
}

const char *gm_trainrepo_scratch(const gm_trainrepo *t) { return t->scratch; }
const char *gm_trainrepo_branch(const gm_trainrepo *t) { return t->branch; }
const char *gm_trainrepo_adapter_path(const gm_trainrepo *t) { return t->adapter_path; }
const char *gm_trainrepo_base(const gm_trainrepo *t) { return t->base; }

static int branch_exists(gm_trainrepo *t)
{
	char hex[GM_REPO_OID_HEXLEN + 1];
	gm_buf ref = GM_BUF_INIT;
	int found;

	gm_buf_addf(&ref, "refs/heads/%s", t->branch);
	found = gm_repo_resolve(t->repo, ref.buf, hex, NULL) == 0;
	gm_buf_release(&ref);
	return found;
}

/* adapters/NN_NAME of the branch tip, from a view of it (a resumed run). */
static int adapter_path_on_branch(gm_trainrepo *t, gm_error *err)
{
	char hex[GM_REPO_OID_HEXLEN + 1], *view = NULL;
	gm_adapter_entry e;
	int ret;

	if ((ret = gm_repo_resolve(t->repo, t->branch, hex, err)) || (ret = gm_repo_view(t->repo, hex, &view, err)))
		return ret;
	if (!(ret = gm_adapter_find(view, t->name, &e, err))) {
		gm_buf p = GM_BUF_INIT;
		gm_buf_addf(&p, "%s/%s", GM_ADAPTER_DIR, e.dirname);
		t->adapter_path = gm_buf_detach(&p, NULL);
		gm_adapter_entry_release(&e);
	} else {
		gm_error_prefix(err, "branch %s", t->branch);
	}
	free(view);
	return ret;
}

/* adapters/NN_NAME with NN the work tree's next free index; the name must be free. */
static int adapter_path_new(gm_trainrepo *t, gm_error *err)
{
	gm_adapter_entry *v;
	gm_buf p = GM_BUF_INIT;
	size_t i, n;
	int ret, next = 0;

	if ((ret = gm_adapter_list(t->model_dir, &v, &n, err)))
		return ret;
	for (i = 0; i < n; i++) {
		if (!strcmp(v[i].name, t->name)) {
			ret = gm_error_set(err, GM_EINVAL, "the model has an adapter named '%s' already (%s/%s); "
					   "remove or rename it, or train under another name", t->name,
					   GM_ADAPTER_DIR, v[i].dirname);
			break;
		}
		if (v[i].index >= next)
			next = v[i].index + 1;
	}
	gm_adapter_entries_free(v, n);
	if (ret)
		return ret;
	gm_buf_addf(&p, "%s/%02d_%s", GM_ADAPTER_DIR, next, t->name);
	t->adapter_path = gm_buf_detach(&p, NULL);
	return 0;
}

int gm_trainrepo_open(const char *model_dir, const char *name, int resume, gm_trainrepo **out, gm_error *err)
{
	gm_trainrepo *t;
	gm_buf b = GM_BUF_INIT;
	char *real = NULL;
	int ret;

	*out = NULL;
	if ((ret = gm_adapter_name_check(name, err)) || (ret = gm_repo_global_init(err)))
		return ret;
	t = gm_xcalloc(1, sizeof(*t));
	t->model_dir = gm_xstrdup(model_dir);
	t->name = gm_xstrdup(name);
	gm_buf_addf(&b, "train/%s", name);
	t->branch = gm_buf_detach(&b, NULL);
	if (gm_repo_open(model_dir, &t->repo, NULL)) {
		ret = gm_error_set(err, GM_ENOENT, "%s is not in a git repository: give --output <dir> for the "
				   "result, or import the model first ('git model import')", model_dir);
		goto out;
	}
	real = realpath(model_dir, NULL);
	if (!real || strcmp(real, gm_repo_workdir(t->repo))) {
		ret = gm_error_set(err, GM_EINVAL, "%s is not the top of its repository's work tree (%s): train "
				   "the model as a whole repository, or give --output <dir>", model_dir,
				   gm_repo_workdir(t->repo));
		goto out;
	}
	if ((ret = gm_repo_resolve(t->repo, NULL, t->base, err)))
		goto out;
	if (resume && !branch_exists(t)) {
		ret = gm_error_set(err, GM_ENOENT, "there is no branch %s to resume in %s", t->branch, real);
		goto out;
	}
	if (!resume && branch_exists(t)) {
		ret = gm_error_set(err, GM_EINVAL, "branch %s exists already in %s: continue it with --resume, "
				   "or delete it (git branch -D %s)", t->branch, real, t->branch);
		goto out;
	}
	if ((ret = resume ? adapter_path_on_branch(t, err) : adapter_path_new(t, err)))
		goto out;
	gm_buf_addf(&b, "%s/git-model/train/%s", gm_repo_gitdir(t->repo), name);
	t->scratch = gm_buf_detach(&b, NULL);
	ret = gm_mkdir_p(t->scratch, 0777, err);
out:
	free(real);
	if (ret)
		gm_trainrepo_close(t);
	else
		*out = t;
	return ret;
}

/*
 * A run killed between a checkpoint's commit (moving the branch) and its
 * tag left the commit untagged: tag it now, as the run would have.
 */
static int tag_checkpoint_again(gm_trainrepo *t, const char *state, const char *hex, gm_error *err)
{
	json_object *st = NULL, *v;
	char tagged[GM_REPO_OID_HEXLEN + 1];
	gm_buf tag = GM_BUF_INIT;
	int ret = 0;

	if (gm_json_parse_file(state, &st, NULL) || !json_object_object_get_ex(st, "step", &v) ||
	    !json_object_is_type(v, json_type_int)) {
		json_object_put(st);
		return 0; /* the resume reads the state and says what is wrong with it */
	}
	gm_buf_addf(&tag, "refs/tags/%s-step-%lld", t->name, (long long)json_object_get_int64(v));
	if (gm_repo_resolve(t->repo, tag.buf, tagged, NULL)) {
		gm_info("tagging the checkpoint %.12s as %s, which the interrupted run did not", hex, tag.buf + 10);
		ret = gm_repo_tag(t->repo, tag.buf + 10, hex, err);
	}
	gm_buf_release(&tag);
	json_object_put(st);
	return ret;
}

/*
 * The branch's finished adapter (dir) added to the current branch, as git
 * adapter add would, with the same git-model.json: its time included, so
 * the two commits hold the same files.
 */
static int add_here(gm_trainrepo *t, const char *dir, gm_adapter_entry *e, gm_error *err)
{
	gm_adapter_origin origin = { "trained", t->branch, t->base, NULL };
	gm_adapter_info info;
	int ret;

	if (gm_adapter_info_load(dir, &info, NULL))
		memset(&info, 0, sizeof(info));
	origin.created = info.created;
	ret = gm_adapter_add(t->model_dir, dir, t->name, &origin, e, err);
	gm_adapter_info_release(&info);
	return ret;
}

/*
 * The tip of the branch is the finished adapter.  When the current branch
 * has not committed it, the run was killed between its last commit on the
 * branch and committing the adapter here (gm_trainrepo_finish): that is
 * done now, from the tip (dir), and 1 returned.  Otherwise the run is
 * finished.
 */
static int finish_again(gm_trainrepo *t, const char *dir, const char *hex, gm_error *err)
{
	gm_adapter_entry e;
	gm_buf rel = GM_BUF_INIT, msg = GM_BUF_INIT;
	char commit[GM_REPO_OID_HEXLEN + 1];
	const char *dirs[1];
	int ret;

	/* gm_adapter_add also completes an add that was killed before its commit */
	if (add_here(t, dir, &e, NULL))
		return gm_error_set(err, GM_ENOENT, "the tip of %s (%.12s) is not a checkpoint: that run is "
				    "finished", t->branch, hex);
	gm_info("the run on %s finished, but was killed before its adapter was committed here: committing it",
		t->branch);
	gm_buf_addf(&rel, "%s/%s", GM_ADAPTER_DIR, e.dirname);
	gm_buf_addf(&msg, "train: %s trained\n\nThe adapter of %s at %.12s, committed here when the run was "
		    "resumed: it had been killed before.\n", t->name, t->branch, hex);
	dirs[0] = rel.buf;
	ret = gm_adapter_commit(t->model_dir, dirs, 1, msg.buf, commit, err);
	gm_buf_release(&rel);
	gm_buf_release(&msg);
	gm_adapter_entry_release(&e);
	return ret ? ret : 1;
}

int gm_trainrepo_resume_dir(gm_trainrepo *t, char **dir, gm_error *err)
{
	char hex[GM_REPO_OID_HEXLEN + 1], *view = NULL, *state;
	int ret;

	*dir = NULL;
	if ((ret = gm_repo_resolve(t->repo, t->branch, hex, err)) || (ret = gm_repo_view(t->repo, hex, &view, err)))
		return ret;
	*dir = gm_path_join(view, t->adapter_path);
	state = gm_path_join(*dir, GM_TRAIN_STATE_FILE);
	if (!gm_is_file(state)) {
		ret = finish_again(t, *dir, hex, err);
		free(*dir);
		*dir = NULL;
	} else {
		ret = tag_checkpoint_again(t, state, hex, err);
	}
	free(state);
	free(view);
	return ret;
}

/* Commits dir's files as adapter_path/ on the branch, removing the names in gone[]. */
static int commit_dir(gm_trainrepo *t, const char *dir, const char *const *gone, const char *message,
		      char commit[41], gm_error *err)
{
	gm_repo_paths names = { NULL, 0, 0 };
	char **paths, **files;
	size_t n, k, i, n_gone = 0;
	int ret;

	while (gone && gone[n_gone])
		n_gone++;
	if ((ret = gm_repo_list_files(dir, &names, err)))
		return ret;
	n = names.n;
	paths = gm_xcalloc(n + n_gone + 1, sizeof(*paths));
	files = gm_xcalloc(n + n_gone + 1, sizeof(*files));
	for (i = 0; i < n; i++) {
		gm_buf p = GM_BUF_INIT;
		gm_buf_addf(&p, "%s/%s", t->adapter_path, names.v[i]);
		paths[i] = gm_buf_detach(&p, NULL);
		files[i] = gm_path_join(dir, names.v[i]);
	}
	for (k = 0; k < n_gone; k++) {
		gm_buf p = GM_BUF_INIT;
		gm_buf_addf(&p, "%s/%s", t->adapter_path, gone[k]);
		paths[n + k] = gm_buf_detach(&p, NULL);
	}
	ret = gm_repo_commit_branch(t->repo, branch_exists(t) ? GM_REPO_BRANCH_ADVANCE : GM_REPO_BRANCH_CREATE,
				    t->base, t->branch, (const char *const *)paths, (const char *const *)files,
				    n + n_gone, message, commit, err);
	for (i = 0; i < n + n_gone; i++) {
		free(paths[i]);
		free(files[i]);
	}
	gm_repo_paths_release(&names);
	free(paths);
	free(files);
	return ret;
}

int gm_trainrepo_checkpoint(gm_trainrepo *t, int64_t step, const char *dir, const char *message,
			    char commit[41], gm_error *err)
{
	char hex[GM_REPO_OID_HEXLEN + 1];
	gm_buf tag = GM_BUF_INIT;
	int ret;

	if ((ret = commit_dir(t, dir, NULL, message, hex, err)))
		return ret;
	gm_buf_addf(&tag, "%s-step-%lld", t->name, (long long)step);
	ret = gm_repo_tag(t->repo, tag.buf, hex, err);
	gm_buf_release(&tag);
	if (!ret) {
		/* committed: the scratch copy has done its job */
		gm_remove_tree(dir, NULL);
		if (commit)
			memcpy(commit, hex, sizeof(hex));
	}
	return ret;
}

int gm_trainrepo_finish(gm_trainrepo *t, const char *adapter_dir, const char *message, char commit[41],
			gm_error *err)
{
	static const char *const checkpoint_only[] = { "optimizer.safetensors", GM_TRAIN_STATE_FILE, NULL };
	gm_adapter_origin origin = { "trained", t->branch, t->base, NULL };
	gm_adapter_entry e;
	gm_buf rel = GM_BUF_INIT;
	const char *dirs[1];
	int ret, had_checkpoints = branch_exists(t);

	if ((ret = gm_adapter_write_info(adapter_dir, &origin, err)) ||
	    (ret = commit_dir(t, adapter_dir, had_checkpoints ? checkpoint_only : NULL, message, NULL, err)))
		return ret;
	/* then on the current branch */
	if ((ret = add_here(t, adapter_dir, &e, err)))
		return gm_error_prefix(err, "the adapter is on branch %s, but adding it here failed", t->branch);
	gm_buf_addf(&rel, "%s/%s", GM_ADAPTER_DIR, e.dirname);
	dirs[0] = rel.buf;
	ret = gm_adapter_commit(t->model_dir, dirs, 1, message, commit, err);
	gm_buf_release(&rel);
	gm_adapter_entry_release(&e);
	return ret;
}
