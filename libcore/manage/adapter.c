/*
 * adapter.c - the adapters kept in a model directory (see adapter.h).
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "manage/adapter.h"
#include "manage/modelcard.h"
#include "train/trainplot.h"
#include "base/buf.h"
#include "formats/dtype.h"
#include "engine/forward.h"
#include "base/fs.h"
#include "base/json.h"
#include "formats/model.h"
#include "formats/peft.h"
#include "storage/registry.h"
#include "storage/repo.h"
#include "base/log.h"
#include "formats/safetensors.h"
#include "formats/sparse.h"
#include "formats/weights.h"

int gm_adapter_parse_scale(const char *s, float *out)
{
	char *end;
	double v;

	if (!*s || isspace((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (*end || errno || !isfinite(v) || !isfinite((float)v))
		return -1;
	*out = (float)v;
	return 0;
}

int gm_adapter_name_check(const char *name, gm_error *err)
{
	size_t i, n = strlen(name);

	if (!n || n > GM_ADAPTER_NAME_MAX)
		return gm_error_set(err, GM_EINVAL, "adapter name '%s' must be 1 to %d characters", name,
				    GM_ADAPTER_NAME_MAX);
	if (name[0] == '.' || name[0] == '-')
		return gm_error_set(err, GM_EINVAL, "adapter name '%s' must not start with '%c'", name, name[0]);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!isalnum(c) && c != '.' && c != '_' && c != '-')
			return gm_error_set(err, GM_EINVAL, "adapter name '%s' may hold only letters, digits, "
					    "'.', '_' and '-'", name);
	}
	return 0;
}

/* Splits "NN_NAME" (at least two digits); 0 on success. */
static int parse_dirname(const char *d, int *index, const char **name)
{
	const char *p = d;
	long v;

	while (isdigit((unsigned char)*p))
		p++;
	if (p - d < 2 || p - d > 6 || *p != '_' || gm_adapter_name_check(p + 1, NULL))
		return -1;
	v = strtol(d, NULL, 10);
	*index = (int)v;
	*name = p + 1;
	return 0;
}

static void entry_fill(gm_adapter_entry *e, const char *root, int index, const char *name, const char *dirname)
{
	e->index = index;
	e->name = gm_xstrdup(name);
	e->dirname = gm_xstrdup(dirname);
	e->path = gm_path_join(root, dirname);
	e->sparse = gm_sparse_is_dir(e->path);
}

void gm_adapter_entry_release(gm_adapter_entry *e)
{
	if (!e)
		return;
	free(e->name);
	free(e->dirname);
	free(e->path);
	memset(e, 0, sizeof(*e));
}

void gm_adapter_entries_free(gm_adapter_entry *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		gm_adapter_entry_release(&v[i]);
	free(v);
}

static int entry_cmp(const void *a, const void *b)
{
	const gm_adapter_entry *x = a, *y = b;

	return x->index != y->index ? (x->index < y->index ? -1 : 1) : strcmp(x->name, y->name);
}

int gm_adapter_list(const char *model_dir, gm_adapter_entry **out, size_t *n, gm_error *err)
{
	char *root = gm_path_join(model_dir, GM_ADAPTER_DIR);
	gm_adapter_entry *v = NULL;
	size_t len = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	*out = NULL;
	*n = 0;
	if (!(d = opendir(root))) {
		int e = errno;
		free(root);
		if (e == ENOENT)
			return 0;
		errno = e;
		return gm_error_errno(err, "cannot read %s/%s", model_dir, GM_ADAPTER_DIR);
	}
	while ((de = readdir(d))) {
		const char *name;
		char *path;
		int index, isdir;

		if (de->d_name[0] == '.' || parse_dirname(de->d_name, &index, &name))
			continue;
		path = gm_path_join(root, de->d_name);
		isdir = gm_is_dir(path);
		free(path);
		if (!isdir)
			continue;
		if (len == cap) {
			cap = cap ? 2 * cap : 8;
			v = gm_xrealloc(v, cap * sizeof(*v));
		}
		entry_fill(&v[len++], root, index, name, de->d_name);
	}
	closedir(d);
	free(root);
	if (len)
		qsort(v, len, sizeof(*v), entry_cmp);
	*out = v;
	*n = len;
	return 0;
}

/* Does spec name entry e: NAME, NN_NAME or NN (any number of leading zeros)? */
static int entry_matches(const gm_adapter_entry *e, const char *spec)
{
	const char *p = spec;

	if (!strcmp(spec, e->name) || !strcmp(spec, e->dirname))
		return 1;
	while (isdigit((unsigned char)*p))
		p++;
	return p > spec && !*p && p - spec <= 6 && atoi(spec) == e->index;
}

/* gm_adapter_find; what says what else spec was tried as, for the message. */
static int find(const char *model_dir, const char *spec, const char *what, gm_adapter_entry *out, gm_error *err)
{
	gm_adapter_entry *v;
	size_t i, n, found = (size_t)-1;
	int ret;

	memset(out, 0, sizeof(*out));
	if ((ret = gm_adapter_list(model_dir, &v, &n, err)))
		return ret;
	for (i = 0; i < n; i++) {
		if (!entry_matches(&v[i], spec))
			continue;
		if (found != (size_t)-1) {
			ret = gm_error_set(err, GM_EINVAL, "adapter '%s' is ambiguous: %s and %s", spec,
					   v[found].path, v[i].path);
			gm_adapter_entries_free(v, n);
			return ret;
		}
		found = i;
	}
	if (found == (size_t)-1) {
		gm_buf b = GM_BUF_INIT;

		for (i = 0; i < n; i++)
			gm_buf_addf(&b, "%s%s", i ? ", " : "", v[i].name);
		ret = gm_error_set(err, GM_ENOENT, "unknown adapter '%s': %s an adapter in %s/%s (%s%s)", spec, what,
				   model_dir, GM_ADAPTER_DIR, n ? "there: " : "there are none", b.buf);
		gm_buf_release(&b);
		gm_adapter_entries_free(v, n);
		return ret;
	}
	*out = v[found];
	memset(&v[found], 0, sizeof(v[found]));
	gm_adapter_entries_free(v, n);
	return 0;
}

int gm_adapter_find(const char *model_dir, const char *spec, gm_adapter_entry *out, gm_error *err)
{
	return find(model_dir, spec, "not", out, err);
}

int gm_adapter_resolve(const char *model_dir, const char *spec, char **dir, gm_error *err)
{
	gm_adapter_entry e;
	int ret;

	*dir = NULL;
	if (gm_is_dir(spec)) {
		*dir = gm_xstrdup(spec);
		return 0;
	}
	if (strchr(spec, '/'))
		return gm_error_set(err, GM_ENOENT, "unknown adapter '%s': no such directory", spec);
	if ((ret = find(model_dir, spec, "not a directory, nor", &e, err)))
		return ret;
	*dir = e.path;
	e.path = NULL;
	gm_adapter_entry_release(&e);
	return 0;
}

/* ---------------------------------------------------------------- files */


/* A new empty directory "ROOT/.tmp-TAG-XXXXXX"; *out malloc'd. */
static int make_tmp_dir(const char *root, const char *tag, char **out, gm_error *err)
{
	gm_buf b = GM_BUF_INIT;

	gm_buf_addf(&b, "%s/.tmp-%s-XXXXXX", root, tag);
	if (!mkdtemp(b.buf)) {
		int ret = gm_error_errno(err, "cannot create a directory in %s", root);
		gm_buf_release(&b);
		return ret;
	}
	*out = gm_buf_detach(&b, NULL);
	return 0;
}

/* The adapter's own files: config and weights. */
static void adapter_files(const char *dir, const char **config, const char **weights)
{
	*config = gm_sparse_is_dir(dir) ? GM_SPARSE_CONFIG_FILE : GM_PEFT_CONFIG_FILE;
	*weights = GM_PEFT_WEIGHTS_FILE;
}

static int copy_adapter_files(const char *src, const char *dst, gm_error *err)
{
	/* the config and weights, then what shows how it was trained (model
	 * card, loss trace and plot: trainplot.h, modelcard.h) when there */
	const char *names[5] = { NULL, NULL, GM_MODELCARD_FILE, GM_TRAINLOG_FILE, GM_TRAINPLOT_FILE };
	int i, ret = 0;

	adapter_files(src, &names[0], &names[1]);
	for (i = 0; i < 5 && !ret; i++) {
		char *s = gm_path_join(src, names[i]), *d = gm_path_join(dst, names[i]);

		if (i >= 2 && !gm_is_file(s)) {
			free(s);
			free(d);
			continue;
		}
		/* the content, also when the source is a link into the LFS store (a view) */
		char *real = realpath(s, NULL);

		ret = real ? gm_copy_file(real, d, err) : gm_error_errno(err, "cannot read %s", s);
		free(real);
		free(s);
		free(d);
	}
	return ret;
}

int gm_adapter_write_info(const char *dir, const gm_adapter_origin *origin, gm_error *err)
{
	json_object *o = json_object_new_object();
	char when[64];
	time_t now = time(NULL);
	struct tm tm;
	char *path;
	int ret;

	if (origin && origin->created)
		snprintf(when, sizeof(when), "%s", origin->created);
	else
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
	json_object_object_add(o, "kind", json_object_new_string(origin && origin->kind ? origin->kind : "imported"));
	if (origin && origin->source)
		json_object_object_add(o, "source", json_object_new_string(origin->source));
	if (origin && origin->base_revision)
		json_object_object_add(o, "base_revision", json_object_new_string(origin->base_revision));
	json_object_object_add(o, "created", json_object_new_string(when));
	path = gm_path_join(dir, GM_ADAPTER_INFO_FILE);
	ret = gm_json_write_file(path, o, err);
	free(path);
	json_object_put(o);
	return ret;
}

static char *opt_string(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
		? gm_xstrdup(json_object_get_string(v)) : NULL;
}

int gm_adapter_info_load(const char *adapter_dir, gm_adapter_info *out, gm_error *err)
{
	char *path = gm_path_join(adapter_dir, GM_ADAPTER_INFO_FILE);
	json_object *o;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	if (gm_is_file(path)) {
		if (!(ret = gm_json_parse_file(path, &o, err))) {
			out->kind = opt_string(o, "kind");
			out->source = opt_string(o, "source");
			out->base_revision = opt_string(o, "base_revision");
			out->created = opt_string(o, "created");
			json_object_put(o);
		}
	}
	free(path);
	return ret;
}

void gm_adapter_info_release(gm_adapter_info *info)
{
	free(info->kind);
	free(info->source);
	free(info->base_revision);
	free(info->created);
	memset(info, 0, sizeof(*info));
}

/* Opens the adapter in dir and checks it against the model's weight shapes. */
static int check_against_model(const char *model_dir, const char *dir, gm_error *err)
{
	gm_model *m = NULL;
	int ret;

	if ((ret = gm_model_open(model_dir, &m, err)))
		return gm_error_prefix(err, "cannot check the adapter against the model");
	if (gm_sparse_is_dir(dir)) {
		gm_sparse_adapter *sp = NULL;
		if (!(ret = gm_sparse_open(dir, &sp, err)))
			ret = gm_forward_check_sparse(m, sp, err);
		gm_sparse_close(sp);
	} else {
		gm_peft_adapter *ad = NULL;
		if (!(ret = gm_peft_open(dir, &ad, err)))
			ret = gm_forward_check_adapter(m, ad, err);
		gm_peft_close(ad);
	}
	gm_model_close(m);
	return ret;
}

/* 1 when the two files have the same bytes. */
static int same_file(const char *a, const char *b)
{
	gm_buf x = GM_BUF_INIT, y = GM_BUF_INIT;
	int same;

	same = !gm_read_file(a, &x, NULL) && !gm_read_file(b, &y, NULL) && x.len == y.len &&
	       !memcmp(x.buf ? x.buf : "", y.buf ? y.buf : "", x.len);
	gm_buf_release(&x);
	gm_buf_release(&y);
	return same;
}

/*
 * 1 when the adapter at e is what an add of src that was interrupted
 * before its commit left: its files are src's, and the model is a
 * repository whose HEAD does not have them.  Adding src again then
 * completes that add instead of refusing the name.
 */
static int interrupted_add(const char *model_dir, const gm_adapter_entry *e, const char *src)
{
	const char *names[2];
	gm_repo *r = NULL;
	gm_buf rel = GM_BUF_INIT, content = GM_BUF_INIT;
	int i, same = 1, committed = 1;

	adapter_files(src, &names[0], &names[1]);
	for (i = 0; i < 2 && same; i++) {
		char *a = gm_path_join(src, names[i]), *b = gm_path_join(e->path, names[i]);
		char *real = realpath(a, NULL);

		same = real && same_file(real, b);
		free(real);
		free(a);
		free(b);
	}
	if (same && gm_repo_is_toplevel(model_dir) && !gm_repo_open(model_dir, &r, NULL)) {
		gm_buf_addf(&rel, "%s/%s/%s", GM_ADAPTER_DIR, e->dirname, names[0]);
		committed = !gm_repo_read_file(r, "HEAD", rel.buf, &content, NULL, NULL);
		gm_repo_close(r);
	}
	gm_buf_release(&rel);
	gm_buf_release(&content);
	return same && !committed;
}

int gm_adapter_add(const char *model_dir, const char *src, const char *name, const gm_adapter_origin *origin,
		   gm_adapter_entry *out, gm_error *err)
{
	gm_adapter_entry *v, e;
	gm_adapter_origin own = { "imported", NULL, NULL, NULL };
	gm_repo *r = NULL;
	size_t i, n;
	char *root = NULL, *tmp = NULL, dirname[GM_ADAPTER_NAME_MAX + 16], head[GM_REPO_OID_HEXLEN + 1];
	int ret, next = 0;

	if (out)
		memset(out, 0, sizeof(*out));
	if ((ret = gm_adapter_name_check(name, err)))
		return ret;
	if (!gm_is_dir(src))
		return gm_error_set(err, GM_ENOENT, "%s: not a directory", src);
	if ((ret = check_against_model(model_dir, src, err)))
		return ret;
	if ((ret = gm_adapter_list(model_dir, &v, &n, err)))
		return ret;
	for (i = 0; i < n; i++) {
		if (!strcmp(v[i].name, name) && interrupted_add(model_dir, &v[i], src)) {
			gm_info("completing the interrupted add of %s/%s", GM_ADAPTER_DIR, v[i].dirname);
			if (out) {
				*out = v[i];
				memset(&v[i], 0, sizeof(v[i]));
			}
			gm_adapter_entries_free(v, n);
			return 0;
		}
		if (!strcmp(v[i].name, name)) {
			ret = gm_error_set(err, GM_EINVAL, "an adapter named '%s' exists already (%s); "
					   "remove or rename it first", name, v[i].dirname);
			gm_adapter_entries_free(v, n);
			return ret;
		}
		if (v[i].index >= next)
			next = v[i].index + 1;
	}
	gm_adapter_entries_free(v, n);
	snprintf(dirname, sizeof(dirname), "%02d_%s", next, name);
	/* made on the model as committed now, when it is a repository */
	if (!(origin && origin->base_revision) && gm_repo_is_toplevel(model_dir) && !gm_repo_open(model_dir, &r, NULL)) {
		if (!gm_repo_resolve(r, NULL, head, NULL)) {
			own = origin ? *origin : own;
			own.base_revision = head;
			origin = &own;
		}
		gm_repo_close(r);
	}

	root = gm_path_join(model_dir, GM_ADAPTER_DIR);
	if ((ret = gm_mkdir_p(root, 0777, err)) || (ret = make_tmp_dir(root, name, &tmp, err)))
		goto out;
	if ((ret = copy_adapter_files(src, tmp, err)) || (ret = gm_adapter_write_info(tmp, origin, err)))
		goto out;
	{
		char *final = gm_path_join(root, dirname);
		if (rename(tmp, final))
			ret = gm_error_errno(err, "cannot rename %s to %s", tmp, final);
		free(final);
	}
	if (!ret) {
		free(tmp);
		tmp = NULL;
		entry_fill(&e, root, next, name, dirname);
		if (out)
			*out = e;
		else
			gm_adapter_entry_release(&e);
	}
out:
	if (tmp) {
		gm_remove_tree(tmp, NULL);
		free(tmp);
	}
	free(root);
	return ret;
}

/*
 * 1 when spec names no adapter of the work tree but one of HEAD: a removal
 * killed before its commit.  e gets that adapter (its path in the work
 * tree, now gone); what the removal left (adapters/.rm-*) is deleted.
 */
static int interrupted_remove(const char *model_dir, const char *spec, gm_adapter_entry *e)
{
	char head[GM_REPO_OID_HEXLEN + 1], *view = NULL, *root;
	gm_adapter_entry c;
	gm_repo *r = NULL;
	DIR *d;
	struct dirent *de;
	int found = 0;

	if (!gm_repo_is_toplevel(model_dir) || gm_repo_open(model_dir, &r, NULL))
		return 0;
	if (!gm_repo_resolve(r, NULL, head, NULL) && !gm_repo_view(r, head, &view, NULL) &&
	    !gm_adapter_find(view, spec, &c, NULL)) {
		root = gm_path_join(model_dir, GM_ADAPTER_DIR);
		entry_fill(e, root, c.index, c.name, c.dirname);
		gm_adapter_entry_release(&c);
		found = 1;
		if ((d = opendir(root))) {
			while ((de = readdir(d)))
				if (!strncmp(de->d_name, ".rm-", 4)) {
					char *p = gm_path_join(root, de->d_name);

					gm_remove_tree(p, NULL);
					free(p);
				}
			closedir(d);
		}
		free(root);
	}
	free(view);
	gm_repo_close(r);
	return found;
}

int gm_adapter_remove(const char *model_dir, const char *spec, gm_adapter_entry *removed, gm_error *err)
{
	gm_adapter_entry e;
	char *root, *tmp;
	int ret;

	if (removed)
		memset(removed, 0, sizeof(*removed));
	if ((ret = gm_adapter_find(model_dir, spec, &e, err))) {
		if (!interrupted_remove(model_dir, spec, &e))
			return ret;
		gm_error_clear(err);
		gm_info("completing the interrupted removal of %s/%s", GM_ADAPTER_DIR, e.dirname);
		if (removed)
			*removed = e;
		else
			gm_adapter_entry_release(&e);
		return 0;
	}
	/* Rename it away first: a crash then leaves a hidden directory, never half an adapter. */
	root = gm_path_join(model_dir, GM_ADAPTER_DIR);
	tmp = gm_path_join(root, ".rm-XXXXXX");
	if (!mkdtemp(tmp)) {
		ret = gm_error_errno(err, "cannot remove %s", e.path);
	} else if (rename(e.path, tmp)) {
		ret = gm_error_errno(err, "cannot remove %s", e.path);
		rmdir(tmp);
	} else {
		ret = gm_remove_tree(tmp, err);
	}
	free(tmp);
	free(root);
	if (!ret && removed)
		*removed = e;
	else
		gm_adapter_entry_release(&e);
	return ret;
}

int gm_adapter_rename(const char *model_dir, const char *spec, const char *new_name, gm_adapter_entry *out,
		      gm_error *err)
{
	gm_adapter_entry e, other;
	char dirname[GM_ADAPTER_NAME_MAX + 16], *root, *final;
	int ret;

	if (out)
		memset(out, 0, sizeof(*out));
	if ((ret = gm_adapter_name_check(new_name, err)))
		return ret;
	if ((ret = gm_adapter_find(model_dir, spec, &e, err)))
		return ret;
	if (!gm_adapter_find(model_dir, new_name, &other, NULL)) {
		ret = gm_error_set(err, GM_EINVAL, "an adapter named '%s' exists already (%s)", new_name,
				   other.dirname);
		gm_adapter_entry_release(&other);
		gm_adapter_entry_release(&e);
		return ret;
	}
	snprintf(dirname, sizeof(dirname), "%02d_%s", e.index, new_name);
	root = gm_path_join(model_dir, GM_ADAPTER_DIR);
	final = gm_path_join(root, dirname);
	/* RENAME_NOREPLACE semantics by hand: the name was checked free above. */
	if (rename(e.path, final))
		ret = gm_error_errno(err, "cannot rename %s to %s", e.path, final);
	else if (out)
		entry_fill(out, root, e.index, new_name, dirname);
	free(final);
	free(root);
	gm_adapter_entry_release(&e);
	return ret;
}

int gm_adapter_export(const char *model_dir, const char *spec, const char *dest, gm_error *err)
{
	gm_adapter_entry e;
	char *parent, *slash, *tmp = NULL;
	struct stat st;
	int ret;

	if ((ret = gm_adapter_find(model_dir, spec, &e, err)))
		return ret;
	if (!lstat(dest, &st)) {
		DIR *d = S_ISDIR(st.st_mode) ? opendir(dest) : NULL;
		struct dirent *de;
		int empty = d != NULL;

		while (d && (de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				empty = 0;
		if (d)
			closedir(d);
		if (!empty) {
			gm_adapter_entry_release(&e);
			return gm_error_set(err, GM_EINVAL, "%s exists and is not an empty directory; "
					    "export writes a new directory", dest);
		}
		rmdir(dest);
	}
	parent = gm_xstrdup(dest);
	while ((slash = strrchr(parent, '/')) && slash > parent && !slash[1])
		*slash = '\0'; /* trailing slashes */
	slash = strrchr(parent, '/');
	if (!slash)
		strcpy(parent, ".");
	else if (slash == parent)
		parent[1] = '\0';
	else
		*slash = '\0';
	if (!(ret = make_tmp_dir(parent, e.name, &tmp, err)) && !(ret = copy_adapter_files(e.path, tmp, err))) {
		if (rename(tmp, dest))
			ret = gm_error_errno(err, "cannot create %s", dest);
		else
			chmod(dest, 0777 & ~(mode_t)0022);
	}
	if (ret && tmp)
		gm_remove_tree(tmp, NULL);
	free(tmp);
	free(parent);
	gm_adapter_entry_release(&e);
	return ret;
}

/* ---------------------------------------------------------------- merge */

struct merge_source {
	float scale;
	gm_peft_adapter *lora;
	gm_sparse_adapter *sparse;
};

/* One tensor being written: the merged values, made on the first fill. */
struct merge_tensor {
	const gm_tensor *t;
	int layer;
	enum gm_peft_proj proj;
	const struct merge_source *src;
	size_t n_src;
	void *data;        /* [out, in] in t->dtype, while being written */
};

/* W' = W + sum of the deltas, in f32, rounded once to W's dtype. */
static int merge_compute(struct merge_tensor *mt, gm_error *err)
{
	const gm_tensor *t = mt->t;
	int64_t out = t->shape[0], in = t->shape[1], o, k, j;
	float *w = gm_xmalloc((size_t)(out * in) * sizeof(float));
	size_t s;
	int ret;

	if ((ret = gm_dtype_to_f32(t->dtype, t->data, w, (size_t)(out * in), err)))
		goto out;
	for (s = 0; s < mt->n_src; s++) {
		const struct merge_source *src = &mt->src[s];

		if (src->lora) {
			const gm_peft_module *m = gm_peft_find(src->lora, mt->layer, mt->proj);
			float *a, *b;

			if (!m)
				continue;
			a = gm_xmalloc((size_t)(m->rank * in) * sizeof(float));
			b = gm_xmalloc((size_t)(out * m->rank) * sizeof(float));
			if (!(ret = gm_dtype_to_f32(m->a->dtype, m->a->data, a, (size_t)(m->rank * in), err)) &&
			    !(ret = gm_dtype_to_f32(m->b->dtype, m->b->data, b, (size_t)(out * m->rank), err))) {
				/* w[o, :] += (src scale * module scale) * sum_k B[o, k] A[k, :] */
				float sc = src->scale * (float)m->scale;
				for (o = 0; o < out; o++)
					for (k = 0; k < m->rank; k++) {
						float c = sc * b[o * m->rank + k];
						const float *ar = a + k * in;
						float *wr = w + o * in;
						for (j = 0; j < in; j++)
							wr[j] += c * ar[j];
					}
			}
			free(a);
			free(b);
			if (ret)
				goto out;
		} else {
			const gm_sparse_module *m = gm_sparse_find(src->sparse, mt->layer, mt->proj);

			if (!m)
				continue;
			for (o = 0; o < out; o++)
				for (k = m->row_offsets[o]; k < m->row_offsets[o + 1]; k++)
					w[o * in + m->col_indices[k]] += src->scale * m->values[k];
		}
	}
	mt->data = gm_xmalloc((size_t)t->nbytes);
	ret = gm_dtype_from_f32(t->dtype, w, mt->data, (size_t)(out * in), err);
out:
	free(w);
	return ret;
}

static int merge_fill(void *ctx, const char *name, void *dst, uint64_t offset, uint64_t len, gm_error *err)
{
	struct merge_tensor *mt = ctx;
	int ret;

	(void)name;
	if (!mt->data && (ret = merge_compute(mt, err)))
		return ret;
	memcpy(dst, (const char *)mt->data + offset, len);
	if (offset + len == mt->t->nbytes) {
		free(mt->data);
		mt->data = NULL;
	}
	return 0;
}

/* Does any source adapt this tensor?  Fills layer and proj when it names a projection weight. */
static int tensor_adapted(const gm_tensor *t, const struct merge_source *src, size_t n, int *layer,
			  enum gm_peft_proj *proj)
{
	char module[256];
	size_t len = strlen(t->name), i;

	if (len < 8 || len - 7 >= sizeof(module) || strcmp(t->name + len - 7, ".weight") || t->ndim != 2)
		return 0;
	memcpy(module, t->name, len - 7);
	module[len - 7] = '\0';
	if (gm_peft_parse_module_name(module, layer, proj, NULL))
		return 0;
	for (i = 0; i < n; i++)
		if (src[i].lora ? gm_peft_find(src[i].lora, *layer, *proj) != NULL
				: gm_sparse_find(src[i].sparse, *layer, *proj) != NULL)
			return 1;
	return 0;
}

/* Writes one weight file of the model with the merged tensors into out_path. */
static int merge_file(const char *in_path, const char *out_path, const struct merge_source *src, size_t n_src,
		      gm_error *err)
{
	gm_st_file *f = NULL;
	gm_st_writer *w = NULL;
	struct merge_tensor *mts = NULL;
	size_t i, n;
	int ret;

	if ((ret = gm_st_open(in_path, &f, err)))
		return ret;
	n = gm_st_count(f);
	mts = gm_xcalloc(n ? n : 1, sizeof(*mts));
	w = gm_st_writer_new();
	for (i = 0; i < gm_st_metadata_count(f) && !ret; i++) {
		const char *k, *v;
		gm_st_metadata_at(f, i, &k, &v);
		ret = gm_st_writer_set_metadata(w, k, v, err);
	}
	for (i = 0; i < n && !ret; i++) {
		const gm_tensor *t = gm_st_tensor(f, i);
		struct merge_tensor *mt = &mts[i];

		mt->t = t;
		mt->src = src;
		mt->n_src = n_src;
		if (tensor_adapted(t, src, n_src, &mt->layer, &mt->proj))
			ret = gm_st_writer_add_fill(w, t->name, t->dtype, t->ndim, t->shape, merge_fill, mt, err);
		else
			ret = gm_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, err);
	}
	if (!ret)
		ret = gm_st_writer_write(w, out_path, err);
	for (i = 0; i < n; i++)
		free(mts[i].data);
	free(mts);
	gm_st_writer_free(w);
	gm_st_close(f);
	return ret;
}

int gm_adapter_merge(const char *model_dir, const gm_adapter_merge_item *items, size_t n_items,
		     const char *out_dir, char ***files, size_t *n_files, gm_error *err)
{
	struct merge_source *src;
	gm_model *m = NULL;
	char **names = NULL;
	size_t i, nf = 0;
	int ret;

	if (files)
		*files = NULL;
	if (n_files)
		*n_files = 0;
	if (!n_items)
		return gm_error_set(err, GM_EINVAL, "nothing to merge: name at least one adapter");
	if ((ret = gm_model_open(model_dir, &m, err)))
		return ret;
	src = gm_xcalloc(n_items, sizeof(*src));
	for (i = 0; i < n_items && !ret; i++) {
		src[i].scale = items[i].scale;
		if (gm_sparse_is_dir(items[i].dir)) {
			if (!(ret = gm_sparse_open(items[i].dir, &src[i].sparse, err)))
				ret = gm_forward_check_sparse(m, src[i].sparse, err);
		} else if (!(ret = gm_peft_open(items[i].dir, &src[i].lora, err))) {
			ret = gm_forward_check_adapter(m, src[i].lora, err);
		}
	}
	if (!ret)
		ret = gm_mkdir_p(out_dir, 0777, err);
	nf = ret ? 0 : gm_weights_file_count(m->weights);
	names = gm_xcalloc(nf ? nf : 1, sizeof(*names));
	for (i = 0; i < nf && !ret; i++) {
		const char *in_path = gm_weights_file_path(m->weights, i);
		const char *base = strrchr(in_path, '/');
		char *out_path;

		names[i] = gm_xstrdup(base ? base + 1 : in_path);
		out_path = gm_path_join(out_dir, names[i]);
		ret = merge_file(in_path, out_path, src, n_items, err);
		free(out_path);
	}
	for (i = 0; i < n_items; i++) {
		gm_peft_close(src[i].lora);
		gm_sparse_close(src[i].sparse);
	}
	free(src);
	gm_model_close(m);
	if (!ret && files) {
		*files = names;
		if (n_files)
			*n_files = nf;
		return 0;
	}
	for (i = 0; i < nf; i++)
		free(names[i]);
	free(names);
	return ret;
}

/* Copies the model's small files (not weights, not directories) into dst. */
static int copy_model_files(const char *src, const char *dst, char **skip, size_t n_skip, gm_error *err)
{
	struct dirent *de;
	DIR *d = opendir(src);
	int ret = 0;

	if (!d)
		return gm_error_errno(err, "cannot read %s", src);
	while (!ret && (de = readdir(d))) {
		char *s, *t;
		size_t i;
		int skipped = de->d_name[0] == '.';
		gm_buf data = GM_BUF_INIT;

		for (i = 0; i < n_skip && !skipped; i++)
			skipped = !strcmp(de->d_name, skip[i]);
		s = gm_path_join(src, de->d_name);
		if (!skipped && gm_is_file(s)) {
			t = gm_path_join(dst, de->d_name);
			if (!(ret = gm_read_file(s, &data, err)))
				ret = gm_write_file_atomic(t, data.buf, data.len, 0644, err);
			free(t);
		}
		gm_buf_release(&data);
		free(s);
	}
	closedir(d);
	return ret;
}

int gm_adapter_merge_model(const char *model_dir, const gm_adapter_merge_item *items, size_t n_items,
			   const char *out_dir, gm_error *err)
{
	char *parent = gm_xstrdup(out_dir), *slash, *tmp = NULL, **files = NULL;
	size_t n_files = 0, i;
	struct stat st;
	int ret;

	if (!lstat(out_dir, &st)) {
		free(parent);
		return gm_error_set(err, GM_EINVAL, "%s exists already; a merged model is written to a new directory",
				    out_dir);
	}
	slash = strrchr(parent, '/');
	if (!slash)
		strcpy(parent, ".");
	else
		slash[slash == parent] = '\0';
	ret = make_tmp_dir(parent, "merge", &tmp, err);
	free(parent);
	if (ret)
		return ret;
	if (!(ret = gm_adapter_merge(model_dir, items, n_items, tmp, &files, &n_files, err)) &&
	    !(ret = copy_model_files(model_dir, tmp, files, n_files, err))) {
		if (rename(tmp, out_dir))
			ret = gm_error_errno(err, "cannot rename %s to %s", tmp, out_dir);
		else
			chmod(out_dir, 0755);
	}
	if (ret)
		gm_remove_tree(tmp, NULL);
	for (i = 0; i < n_files; i++)
		free(files[i]);
	free(files);
	free(tmp);
	return ret;
}

/* ---------------------------------------------------------------- commits */

/* The name of "adapters/NN_NAME" (the part after NN_), or NULL. */
static const char *dir_adapter_name(const char *dir)
{
	const char *base = strrchr(dir, '/'), *name;
	int index;

	return parse_dirname(base ? base + 1 : dir, &index, &name) ? NULL : name;
}

/* Keeps the registry's view of the model's adapters and revision in step. */
static void registry_follow(gm_repo *r, const char *model_dir, const char *const *dirs, size_t n,
			    const char *commit)
{
	gm_error err = GM_ERROR_INIT;
	gm_registry *reg = NULL;
	gm_registry_model m = { 0 };
	int found = 0;
	size_t i;

	if (gm_registry_open(NULL, &reg, &err) ||
	    gm_registry_find_by_path(reg, gm_repo_workdir(r), &m, &found, &err))
		goto out;
	for (i = 0; found && i < n && !err.code; i++) {
		const char *name = dir_adapter_name(dirs[i]);
		char *full = gm_path_join(model_dir, dirs[i]);
		gm_adapter_info info;

		if (!name) {
			free(full);
			continue;
		}
		if (gm_registry_remove_adapter(reg, m.name, name, &err) == GM_ENOENT)
			gm_error_clear(&err);
		if (!err.code && gm_is_dir(full) && !gm_adapter_info_load(full, &info, &err)) {
			gm_registry_adapter a = { m.name, (char *)name, (char *)dirs[i],
						  info.base_revision ? info.base_revision : "", (int64_t)time(NULL) };
			gm_registry_add_adapter(reg, &a, &err);
			gm_adapter_info_release(&info);
		}
		free(full);
	}
	if (found && !err.code)
		gm_registry_set_revision(reg, m.name, commit, &err);
out:
	if (err.code)
		gm_warn("the registry was not updated: %s", err.msg);
	gm_registry_model_release(&m);
	gm_registry_close(reg);
}

int gm_adapter_commit(const char *model_dir, const char *const *dirs, size_t n, const char *message,
		      char commit[41], gm_error *err)
{
	gm_repo *r = NULL;
	char hex[GM_REPO_OID_HEXLEN + 1] = "";
	int ret;

	if (commit)
		*commit = '\0';
	/* a model directory that is not a repository's top (say, inside some
	 * project's tree) is not the model's repository: files only; at the
	 * top, dirs are paths of the work tree as they are */
	if (!gm_repo_is_toplevel(model_dir) || gm_repo_open(model_dir, &r, NULL))
		return 0;
	ret = gm_repo_commit_dirs(r, dirs, n, message, hex, err);
	if (!ret) {
		registry_follow(r, model_dir, dirs, n, hex);
		if (commit)
			memcpy(commit, hex, sizeof(hex));
	}
	gm_repo_close(r);
	return ret;
}

int gm_adapter_merge_commit(const char *model_dir, const gm_adapter_merge_item *items, size_t n_items,
			    const char *branch, const char *message, char commit[41], gm_error *err)
{
	gm_repo *r = NULL;
	char head[GM_REPO_OID_HEXLEN + 1], *view = NULL, *scratch = NULL, *base = NULL, **files = NULL;
	char **locals = NULL;
	size_t n_files = 0, i;
	int ret;

	if ((ret = gm_repo_global_init(err)))
		return ret;
	if (!gm_repo_is_toplevel(model_dir))
		return gm_error_set(err, GM_EINVAL, "%s is not a model repository (the top of a git work tree): "
				    "--into commits to one; -o writes a directory", model_dir);
	if ((ret = gm_repo_open(model_dir, &r, err)))
		return gm_error_prefix(err, "--into commits to the model's repository");
	/* HEAD's weights, straight from the object store; the weight files
	 * are at the top of the tree, under the names merge gives back */
	base = gm_path_join(gm_repo_gitdir(r), "git-model");
	if ((ret = gm_repo_resolve(r, NULL, head, err)) || (ret = gm_repo_view(r, head, &view, err)) ||
	    (ret = gm_mkdir_p(base, 0777, err)) || (ret = make_tmp_dir(base, "merge", &scratch, err)) ||
	    (ret = gm_adapter_merge(view, items, n_items, scratch, &files, &n_files, err)))
		goto out;
	locals = gm_xcalloc(n_files + 1, sizeof(*locals));
	for (i = 0; i < n_files; i++)
		locals[i] = gm_path_join(scratch, files[i]);
	ret = gm_repo_commit_branch(r, GM_REPO_BRANCH_CREATE, head, branch, (const char *const *)files,
				    (const char *const *)locals, n_files, message, commit, err);
out:
	if (scratch)
		gm_remove_tree(scratch, NULL);
	for (i = 0; i < n_files; i++) {
		free(files[i]);
		if (locals)
			free(locals[i]);
	}
	free(files);
	free(locals);
	free(scratch);
	free(base);
	free(view);
	gm_repo_close(r);
	return ret;
}
