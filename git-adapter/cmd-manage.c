/*
 * cmd-manage.c - git adapter list|add|rm|rename|export|merge: the adapters
 * kept in a model repository (libcore/manage/adapter.h), each change a commit.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "manage/adapter.h"
#include "base/buf.h"
#include "builtin.h"
#include "base/cmd.h"
#include "base/fs.h"
#include "base/json.h"
#include "formats/peft.h"
#include "storage/repo.h"
#include "storage/resolve.h"
#include "formats/sparse.h"

static const char *const list_usage[] = { "git adapter list [--json] [<model>]", NULL };
static const char *const add_usage[] = {
	"git adapter add [-m <model>] [--name <name>] [--no-commit] <peft-dir>", NULL };
static const char *const rm_usage[] = { "git adapter rm [-m <model>] [--no-commit] <name>", NULL };
static const char *const rename_usage[] = {
	"git adapter rename [-m <model>] [--no-commit] <name> <new-name>", NULL };
static const char *const export_usage[] = { "git adapter export [-m <model>] <name> <dir>", NULL };
static const char *const merge_usage[] = {
	"git adapter merge [-m <model>] [--scale <s>...] (--into <branch> | -o <dir>) <name>...", NULL };

int adapter_model_upwards(char **dir)
{
	char cwd[PATH_MAX], *p;

	if (!getcwd(cwd, sizeof(cwd)))
		return -1;
	/* the nearest directory upwards that holds a config.json, as git finds .git */
	for (;;) {
		char *cfg = gm_path_join(cwd, "config.json");
		int found = gm_is_file(cfg);

		free(cfg);
		if (found) {
			*dir = gm_xstrdup(cwd);
			return 0;
		}
		p = strrchr(cwd, '/');
		if (!p || p == cwd)
			return -1;
		*p = '\0';
	}
}

int adapter_model_dir(const char *model, char **dir)
{
	gm_error err = GM_ERROR_INIT;

	if (model) {
		if (gm_repo_resolve_model(model, dir, &err))
			return gm_cmd_error(&err);
		if (!gm_is_dir(*dir)) {
			gm_error_set(&err, GM_ENOENT, "model '%s': no such directory", model);
			free(*dir);
			*dir = NULL;
			return gm_cmd_error(&err);
		}
		return 0;
	}
	if (!adapter_model_upwards(dir))
		return 0;
	gm_error_set(&err, GM_ENOENT, "not inside a model directory (no config.json here or above); "
		     "name the model with -m <model>");
	return gm_cmd_error(&err);
}

/* ---------------------------------------------------------------- list */

struct row {
	gm_buf cell[9];
};

static uint64_t file_size(const char *dir, const char *name)
{
	char *p = gm_path_join(dir, name);
	struct stat st;
	uint64_t n = stat(p, &st) ? 0 : (uint64_t)st.st_size;

	free(p);
	return n;
}

static void targets_summary(gm_buf *b, const gm_peft_config *c)
{
	size_t i;

	if (c->target_kind == GM_PEFT_TARGET_ALL_LINEAR) {
		gm_buf_adds(b, "all-linear");
	} else if (c->target_kind == GM_PEFT_TARGET_REGEX) {
		gm_buf_addf(b, "/%s/", c->target_modules[0]);
	} else {
		for (i = 0; i < c->n_target_modules; i++) {
			const char *t = c->target_modules[i], *dot = strrchr(t, '.');
			gm_buf_addf(b, "%s%s", i ? "," : "", dot ? dot + 1 : t);
		}
	}
}

static json_object *describe(const gm_adapter_entry *e, struct row *r, gm_error *err)
{
	json_object *o = json_object_new_object();
	gm_adapter_info info;
	uint64_t size = file_size(e->path, GM_PEFT_WEIGHTS_FILE);
	gm_buf targets = GM_BUF_INIT;
	int64_t rank = 0;
	double alpha = NAN;
	int ret;

	if (e->sparse) {
		gm_sparse_adapter *sp;
		if ((ret = gm_sparse_open(e->path, &sp, err)))
			goto fail;
		rank = sp->source_r;
		alpha = sp->source_r ? sp->source_alpha : NAN;
		gm_buf_addf(&targets, "%zu modules, density %g", sp->n_modules, sp->density);
		gm_sparse_close(sp);
	} else {
		gm_peft_config c;
		char *cfg = gm_path_join(e->path, GM_PEFT_CONFIG_FILE);
		ret = gm_peft_config_load(cfg, &c, err);
		free(cfg);
		if (ret)
			goto fail;
		rank = c.r;
		alpha = c.lora_alpha;
		targets_summary(&targets, &c);
		gm_peft_config_release(&c);
	}
	if ((ret = gm_adapter_info_load(e->path, &info, err)))
		goto fail;

	json_object_object_add(o, "index", json_object_new_int(e->index));
	json_object_object_add(o, "name", json_object_new_string(e->name));
	json_object_object_add(o, "path", json_object_new_string(e->dirname));
	json_object_object_add(o, "type", json_object_new_string(e->sparse ? "sparse" : "lora"));
	json_object_object_add(o, "rank", rank ? json_object_new_int64(rank) : NULL);
	json_object_object_add(o, "alpha", isnan(alpha) ? NULL : gm_json_new_double(alpha));
	json_object_object_add(o, "targets", json_object_new_string(targets.buf));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)size));
	json_object_object_add(o, "base_revision",
			       info.base_revision ? json_object_new_string(info.base_revision) : NULL);
	json_object_object_add(o, "origin", json_object_new_string(info.kind ? info.kind : "unknown"));
	json_object_object_add(o, "created", info.created ? json_object_new_string(info.created) : NULL);

	gm_buf_addf(&r->cell[0], "%02d", e->index);
	gm_buf_adds(&r->cell[1], e->name);
	gm_buf_adds(&r->cell[2], e->sparse ? "sparse" : "lora");
	if (rank)
		gm_buf_addf(&r->cell[3], "%lld", (long long)rank);
	else
		gm_buf_adds(&r->cell[3], "-");
	if (isnan(alpha))
		gm_buf_adds(&r->cell[4], "-");
	else
		gm_buf_addf(&r->cell[4], "%g", alpha);
	gm_buf_adds(&r->cell[5], targets.buf);
	gm_buf_add_human_bytes(&r->cell[6], size);
	gm_buf_addf(&r->cell[7], "%.12s", info.base_revision ? info.base_revision : "-");
	gm_buf_adds(&r->cell[8], info.kind ? info.kind : "unknown");
	gm_adapter_info_release(&info);
	gm_buf_release(&targets);
	return o;
fail:
	gm_buf_release(&targets);
	json_object_put(o);
	gm_error_prefix(err, "adapter %s", e->dirname);
	return NULL;
}

int cmd_list(int argc, const char **argv)
{
	static const char *const heads[9] = { "#", "NAME", "TYPE", "RANK", "ALPHA", "TARGETS", "SIZE",
					      "BASE", "ORIGIN" };
	int json = 0, status, n, ret = 0;
	const struct gm_option options[] = {
		GM_OPT_FLAG(0, "json", &json, "print a JSON list of objects"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git adapter list", "git-adapter", list_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_adapter_entry *v;
	struct row *rows;
	json_object *arr;
	size_t i, k, cnt, width[9];
	char *dir;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n > 1)
		return gm_cmd_usage_error(&cmd, "too many arguments: at most one model");
	if ((ret = adapter_model_dir(n ? argv[0] : NULL, &dir)))
		return ret;
	if (gm_adapter_list(dir, &v, &cnt, &err)) {
		free(dir);
		return gm_cmd_error(&err);
	}
	rows = gm_xcalloc(cnt + 1, sizeof(*rows));
	arr = json_object_new_array();
	for (i = 0; i < cnt && !ret; i++) {
		json_object *o;
		for (k = 0; k < 9; k++)
			gm_buf_init(&rows[i + 1].cell[k]);
		if (!(o = describe(&v[i], &rows[i + 1], &err)))
			ret = gm_cmd_error(&err);
		else
			json_object_array_add(arr, o);
	}
	if (!ret && json) {
		puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
						    JSON_C_TO_STRING_NOSLASHESCAPE));
	} else if (!ret && cnt) {
		for (k = 0; k < 9; k++) {
			gm_buf_init(&rows[0].cell[k]);
			gm_buf_adds(&rows[0].cell[k], heads[k]);
			width[k] = 0;
			for (i = 0; i <= cnt; i++)
				if (rows[i].cell[k].len > width[k])
					width[k] = rows[i].cell[k].len;
		}
		for (i = 0; i <= cnt; i++) {
			for (k = 0; k < 8; k++)
				printf("%-*s  ", (int)width[k], rows[i].cell[k].buf);
			printf("%s\n", rows[i].cell[8].buf);
		}
	} else if (!ret) {
		fprintf(stderr, "no adapters in %s\n", dir);
	}
	for (i = 0; i <= cnt; i++)
		for (k = 0; k < 9; k++)
			gm_buf_release(&rows[i].cell[k]);
	free(rows);
	json_object_put(arr);
	gm_adapter_entries_free(v, cnt);
	free(dir);
	return ret;
}

/* ---------------------------------------------------------------- changes */

int adapter_writable_model(const char *model, char **dir)
{
	gm_error err = GM_ERROR_INIT;
	int ret;

	if ((ret = adapter_model_dir(model, dir)))
		return ret;
	/* NAME@REV is a read-only view, unless a worktree has REV checked out */
	if (model && strchr(model, '@') && !gm_is_dir(model) && !gm_repo_is_toplevel(*dir)) {
		gm_error_set(&err, GM_EINVAL, "'%s' is a past revision; adapters are changed in a work tree "
			     "(-m NAME, a worktree's NAME@BRANCH, or a directory)", model);
		free(*dir);
		*dir = NULL;
		return gm_cmd_error(&err);
	}
	return 0;
}

int adapter_record(const char *dir, int no_commit, const char *changed, const char *changed2,
		   const char *message)
{
	gm_error err = GM_ERROR_INIT;
	const char *dirs[2] = { changed, changed2 };
	char commit[41];

	if (no_commit)
		return 0;
	if (gm_adapter_commit(dir, dirs, changed2 ? 2 : 1, message, commit, &err)) {
		gm_error_prefix(&err, "the files changed, but the commit failed (commit them with git)");
		return gm_cmd_error(&err);
	}
	if (*commit)
		printf("committed %.12s\n", commit);
	return 0;
}

static const char *base_name(const char *path)
{
	size_t n = strlen(path);
	const char *p;

	while (n > 1 && path[n - 1] == '/')
		n--;
	for (p = path + n; p > path && p[-1] != '/'; p--)
		;
	return p;
}

/*
 * Says what changed ("added adapters/NN_NAME", or "renamed OLD to NEW"
 * when old is given) and commits it with message.
 */
static int report_change(const char *dir, int no_commit, const char *verb, const gm_adapter_entry *old,
			 const gm_adapter_entry *e, const char *message)
{
	gm_buf rel = GM_BUF_INIT, rel_old = GM_BUF_INIT;
	int ret;

	gm_buf_addf(&rel, "%s/%s", GM_ADAPTER_DIR, e->dirname);
	if (old) {
		gm_buf_addf(&rel_old, "%s/%s", GM_ADAPTER_DIR, old->dirname);
		printf("%s %s to %s\n", verb, rel_old.buf, rel.buf);
	} else {
		printf("%s %s\n", verb, rel.buf);
	}
	ret = adapter_record(dir, no_commit, old ? rel_old.buf : rel.buf, old ? rel.buf : NULL, message);
	gm_buf_release(&rel);
	gm_buf_release(&rel_old);
	return ret;
}

int cmd_add(int argc, const char **argv)
{
	const char *model = NULL, *name = NULL;
	int no_commit = 0, status, n, ret;
	const struct gm_option options[] = {
		GM_OPT_STRING('m', "model", &model, "model", "the model (default: the one holding the current directory)"),
		GM_OPT_STRING(0, "name", &name, "name", "the adapter's name (default: the directory's name)"),
		GM_OPT_FLAG(0, "no-commit", &no_commit, "change the files only, do not commit"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git adapter add", "git-adapter", add_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_adapter_origin origin = { "imported", NULL, NULL, NULL };
	gm_adapter_entry e;
	gm_buf msg = GM_BUF_INIT;
	char *dir, nm[GM_ADAPTER_NAME_MAX + 1];

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n != 1)
		return gm_cmd_usage_error(&cmd, n ? "too many arguments: one adapter directory expected"
					  : "missing <peft-dir>: the adapter directory to add");
	if (!name) {
		snprintf(nm, sizeof(nm), "%.*s", GM_ADAPTER_NAME_MAX, base_name(argv[0]));
		name = nm;
	}
	if ((ret = adapter_writable_model(model, &dir)))
		return ret;
	origin.source = argv[0];
	if (gm_adapter_add(dir, argv[0], name, &origin, &e, &err)) {
		free(dir);
		return gm_cmd_error(&err);
	}
	gm_buf_addf(&msg, "adapter: add %s\n\nImported from %s as %s/%s.\n", e.name, argv[0], GM_ADAPTER_DIR,
		    e.dirname);
	ret = report_change(dir, no_commit, "added", NULL, &e, msg.buf);
	gm_buf_release(&msg);
	gm_adapter_entry_release(&e);
	free(dir);
	return ret;
}

int cmd_rm(int argc, const char **argv)
{
	const char *model = NULL;
	int no_commit = 0, status, n, ret;
	const struct gm_option options[] = {
		GM_OPT_STRING('m', "model", &model, "model", "the model (default: the one holding the current directory)"),
		GM_OPT_FLAG(0, "no-commit", &no_commit, "change the files only, do not commit"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git adapter rm", "git-adapter", rm_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_adapter_entry e;
	gm_buf msg = GM_BUF_INIT;
	char *dir;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n != 1)
		return gm_cmd_usage_error(&cmd, n ? "too many arguments: one adapter name expected"
					  : "missing <name>: the adapter to remove");
	if ((ret = adapter_writable_model(model, &dir)))
		return ret;
	if (gm_adapter_remove(dir, argv[0], &e, &err)) {
		free(dir);
		return gm_cmd_error(&err);
	}
	gm_buf_addf(&msg, "adapter: remove %s\n\nRemoved %s/%s.\n", e.name, GM_ADAPTER_DIR, e.dirname);
	ret = report_change(dir, no_commit, "removed", NULL, &e, msg.buf);
	gm_buf_release(&msg);
	gm_adapter_entry_release(&e);
	free(dir);
	return ret;
}

int cmd_rename(int argc, const char **argv)
{
	const char *model = NULL;
	int no_commit = 0, status, n, ret;
	const struct gm_option options[] = {
		GM_OPT_STRING('m', "model", &model, "model", "the model (default: the one holding the current directory)"),
		GM_OPT_FLAG(0, "no-commit", &no_commit, "change the files only, do not commit"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git adapter rename", "git-adapter", rename_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_adapter_entry e, old;
	gm_buf msg = GM_BUF_INIT;
	char *dir;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n != 2)
		return gm_cmd_usage_error(&cmd, "expected <name> and <new-name>");
	if ((ret = adapter_writable_model(model, &dir)))
		return ret;
	if (gm_adapter_find(dir, argv[0], &old, &err) || gm_adapter_rename(dir, argv[0], argv[1], &e, &err)) {
		free(dir);
		return gm_cmd_error(&err);
	}
	gm_buf_addf(&msg, "adapter: rename %s to %s\n\nRenamed %s/%s to %s/%s.\n", old.name, e.name,
		    GM_ADAPTER_DIR, old.dirname, GM_ADAPTER_DIR, e.dirname);
	ret = report_change(dir, no_commit, "renamed", &old, &e, msg.buf);
	gm_buf_release(&msg);
	gm_adapter_entry_release(&e);
	gm_adapter_entry_release(&old);
	free(dir);
	return ret;
}

int cmd_export(int argc, const char **argv)
{
	const char *model = NULL;
	int status, n, ret;
	const struct gm_option options[] = {
		GM_OPT_STRING('m', "model", &model, "model", "the model (default: the one holding the current directory)"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git adapter export", "git-adapter", export_usage, options };
	gm_error err = GM_ERROR_INIT;
	char *dir;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n != 2)
		return gm_cmd_usage_error(&cmd, "expected <name> and <dir>");
	if ((ret = adapter_model_dir(model, &dir)))
		return ret;
	if (gm_adapter_export(dir, argv[0], argv[1], &err))
		ret = gm_cmd_error(&err);
	else
		printf("exported %s to %s\n", argv[0], argv[1]);
	free(dir);
	return ret;
}

int cmd_merge(int argc, const char **argv)
{
	const char *model = NULL, *into = NULL, *out = NULL;
	gm_strlist scales = { NULL, 0, 0 };
	int status, n, i, ret = 0;
	const struct gm_option options[] = {
		GM_OPT_STRING('m', "model", &model, "model", "the model (default: the one holding the current directory)"),
		GM_OPT_STRING_LIST(0, "scale", &scales, "s", "scale of the adapter in the same position (default 1)"),
		GM_OPT_STRING(0, "into", &into, "branch", "commit the merged weights on this new branch"),
		GM_OPT_STRING('o', "output", &out, "dir", "write a merged model directory instead (must not exist)"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git adapter merge", "git-adapter", merge_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_adapter_merge_item *items = NULL;
	char **dirs = NULL, *dir = NULL;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (!n)
		return gm_cmd_usage_error(&cmd, "missing <name>: the adapters to merge");
	if (scales.n && scales.n != (size_t)n)
		return gm_cmd_usage_error(&cmd, "%zu --scale for %d adapters: give one per adapter, in order",
					  scales.n, n);
	if (!!into + !!out != 1)
		return gm_cmd_usage_error(&cmd, "say where the merged weights go: --into <branch> or -o <dir>");
	items = gm_xcalloc((size_t)n, sizeof(*items));
	dirs = gm_xcalloc((size_t)n, sizeof(*dirs));
	for (i = 0; i < n; i++) {
		items[i].scale = 1.0f;
		if (scales.n && gm_adapter_parse_scale(scales.items[i], &items[i].scale)) {
			ret = gm_cmd_usage_error(&cmd, "--scale expects a number, not '%s'", scales.items[i]);
			goto out;
		}
	}
	if ((ret = adapter_model_dir(model, &dir)))
		goto out;
	for (i = 0; i < n; i++) {
		if (gm_adapter_resolve(dir, argv[i], &dirs[i], &err)) {
			ret = gm_cmd_error(&err);
			goto out;
		}
		items[i].dir = dirs[i];
	}
	if (out) {
		if (gm_adapter_merge_model(dir, items, (size_t)n, out, &err)) {
			ret = gm_cmd_error(&err);
			goto out;
		}
		printf("wrote %s\n", out);
	} else {
		gm_buf msg = GM_BUF_INIT;
		char commit[41];

		gm_buf_addf(&msg, "adapter: merge");
		for (i = 0; i < n; i++)
			gm_buf_addf(&msg, "%s %s", i ? "," : "", argv[i]);
		gm_buf_addf(&msg, " into the base weights\n\n");
		for (i = 0; i < n; i++)
			gm_buf_addf(&msg, "%s (%s) at scale %g\n", argv[i], items[i].dir, items[i].scale);
		if (gm_adapter_merge_commit(dir, items, (size_t)n, into, msg.buf, commit, &err))
			ret = gm_cmd_error(&err);
		else
			printf("committed %.12s on branch %s\n", commit, into);
		gm_buf_release(&msg);
	}
out:
	for (i = 0; i < n; i++)
		free(dirs[i]);
	free(dirs);
	free(items);
	free(dir);
	gm_strlist_clear(&scales);
	return ret;
}
