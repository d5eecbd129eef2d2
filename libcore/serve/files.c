/* files.c - the files API's store on disk (see files.h). */
#include "serve/files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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
#include "train/traindata.h"

struct gm_files {
	char *dir;
	uint64_t max_bytes;
	pthread_mutex_t lock;   /* list, delete and the final renames see whole files */
};

struct gm_files_upload {
	gm_files *f;
	char *tmp;
	int fd;
	uint64_t bytes;
};

/* CLOCK_REALTIME in nanoseconds. */
static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* "file-" and 24 lower-case hex digits: anything else names no file (and no path). */
static int valid_id(const char *id)
{
	size_t i;

	if (strncmp(id, "file-", 5) || strlen(id) != 29)
		return 0;
	for (i = 5; i < 29; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return 0;
	return 1;
}

static char *entry_path(const gm_files *f, const char *id, const char *ext)
{
	gm_buf b = GM_BUF_INIT;

	gm_buf_addf(&b, "%s/%s%s", f->dir, id, ext);
	return gm_buf_detach(&b, NULL);
}

int gm_files_open(const char *dir, uint64_t max_bytes, gm_files **out, gm_error *err)
{
	gm_files *f;
	DIR *d;
	struct dirent *de;
	int ret;

	*out = NULL;
	if ((ret = gm_mkdir_p(dir, 0777, err)))
		return ret;
	f = gm_xcalloc(1, sizeof(*f));
	f->dir = gm_xstrdup(dir);
	f->max_bytes = max_bytes;
	pthread_mutex_init(&f->lock, NULL);
	/* uploads a killed server left behind */
	if ((d = opendir(dir))) {
		while ((de = readdir(d)))
			if (!strncmp(de->d_name, ".upload-", 8)) {
				char *p = gm_path_join(dir, de->d_name);
				unlink(p);
				free(p);
			}
		closedir(d);
	}
	*out = f;
	return 0;
}

void gm_files_close(gm_files *f)
{
	if (!f)
		return;
	pthread_mutex_destroy(&f->lock);
	free(f->dir);
	free(f);
}

uint64_t gm_files_max_bytes(const gm_files *f)
{
	return f->max_bytes;
}

int gm_files_upload_begin(gm_files *f, gm_files_upload **out, gm_error *err)
{
	gm_files_upload *u = gm_xcalloc(1, sizeof(*u));

	u->f = f;
	u->tmp = gm_path_join(f->dir, ".upload-XXXXXX");
	u->fd = mkstemp(u->tmp);
	if (u->fd < 0) {
		int ret = gm_error_errno(err, "cannot create %s", u->tmp);
		free(u->tmp);
		free(u);
		*out = NULL;
		return ret;
	}
	*out = u;
	return 0;
}

int gm_files_upload_write(gm_files_upload *u, const void *data, size_t len, gm_error *err)
{
	const char *p = data;

	if (u->bytes + len > u->f->max_bytes)
		return gm_error_set(err, GM_EINVAL, "the file is over the server's limit of %llu bytes "
				    "(--max-file-size)", (unsigned long long)u->f->max_bytes);
	while (len) {
		ssize_t n = write(u->fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return gm_error_errno(err, "cannot write %s", u->tmp);
		p += n;
		len -= (size_t)n;
		u->bytes += (uint64_t)n;
	}
	return 0;
}

void gm_files_upload_abort(gm_files_upload *u)
{
	if (!u)
		return;
	if (u->fd >= 0)
		close(u->fd);
	unlink(u->tmp);
	free(u->tmp);
	free(u);
}

struct check_ctx {
	const char *tmp;       /* the name gm_td_check gives the lines */
	const char *filename;  /* the one the client knows */
	gm_buf msgs;
	int n;
};

/* "TMP:LINE: reason" -> "FILENAME:LINE: reason", joined with "; ". */
static void on_bad_line(void *ctx, const gm_error *e)
{
	struct check_ctx *c = ctx;
	size_t n = strlen(c->tmp);
	const char *rest = !strncmp(e->msg, c->tmp, n) ? e->msg + n : e->msg;

	gm_buf_addf(&c->msgs, "%s%s%s", c->n++ ? "; " : "", rest != e->msg ? c->filename : "", rest);
}

/* A file name for messages and the object: its last component, printable, at most 255 bytes. */
static char *clean_name(const char *name)
{
	const char *slash = name ? strrchr(name, '/') : NULL;
	char *out;
	size_t i;

	if (slash)
		name = slash + 1;
	if (!name || !*name)
		name = "upload.jsonl";
	out = strndup(name, 255);
	for (i = 0; out[i]; i++)
		if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
			out[i] = '_';
	return out;
}

int gm_files_upload_finish(gm_files_upload *u, const char *filename, const char *purpose, json_object **obj,
			   gm_error *err)
{
	struct check_ctx cc;
	gm_td_stats st;
	gm_error cerr = GM_ERROR_INIT;
	json_object *o, *counts;
	uint64_t r[2];
	int64_t created_ns;
	char id[32], *name = clean_name(filename), *content = NULL, *meta = NULL;
	int ret, k;

	*obj = NULL;
	memset(&cc, 0, sizeof(cc));
	if (!purpose || strcmp(purpose, "fine-tune")) {
		ret = gm_error_set(err, GM_EINVAL, "purpose '%s' is not supported here: this server takes files of "
				   "purpose 'fine-tune'", purpose ? purpose : "");
		goto out;
	}
	if (fsync(u->fd) || close(u->fd)) {
		u->fd = -1;
		ret = gm_error_errno(err, "cannot write %s", u->tmp);
		goto out;
	}
	u->fd = -1;
	cc.tmp = u->tmp;
	cc.filename = name;
	gm_buf_init(&cc.msgs);
	ret = gm_td_check(u->tmp, GM_FILES_MAX_ERRORS, &st, on_bad_line, &cc, &cerr);
	if (ret == GM_EFORMAT && st.errors) {
		ret = gm_error_set(err, GM_EFORMAT, "%s: %lu invalid line%s: %s%s", name, st.errors,
				   st.errors == 1 ? "" : "s", cc.msgs.buf,
				   st.errors > GM_FILES_MAX_ERRORS ? "; ..." : "");
		goto out;
	}
	if (ret == GM_EFORMAT) {
		ret = gm_error_set(err, GM_EINVAL, "%s: no examples (one JSON object a line, with messages, prompt and "
				   "completion, text, or input_ids)", name);
		goto out;
	}
	if (ret) {
		*err = cerr;
		goto out;
	}
	r[0] = gm_rng_entropy();
	r[1] = gm_rng_entropy();
	snprintf(id, sizeof(id), "file-%016llx%08llx", (unsigned long long)r[0],
		 (unsigned long long)(r[1] & 0xffffffffu));
	o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "object", json_object_new_string("file"));
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)u->bytes));
	created_ns = now_ns(); /* one reading: created_at is its second */
	json_object_object_add(o, "created_at", json_object_new_int64(created_ns / 1000000000));
	json_object_object_add(o, "filename", json_object_new_string(name));
	json_object_object_add(o, "purpose", json_object_new_string("fine-tune"));
	json_object_object_add(o, "status", json_object_new_string("processed"));
	json_object_object_add(o, "status_details", NULL);
	{
		json_object *x = json_object_new_object();

		counts = json_object_new_object();
		for (k = 0; k < GM_TD_KIND_COUNT; k++)
			json_object_object_add(counts, gm_td_kind_key((enum gm_td_kind)k),
					       json_object_new_int64((int64_t)st.count[k]));
		json_object_object_add(x, "examples", json_object_new_int64((int64_t)st.examples));
		/* the order of uploads within one second of created_at (the list is newest first) */
		json_object_object_add(x, "created_at_ns", json_object_new_int64(created_ns));
		json_object_object_add(x, "counts", counts);
		json_object_object_add(o, "git_model", x);
	}
	content = entry_path(u->f, id, ".jsonl");
	meta = entry_path(u->f, id, ".json");
	pthread_mutex_lock(&u->f->lock);
	if (rename(u->tmp, content))
		ret = gm_error_errno(err, "cannot store %s", content);
	else if ((ret = gm_json_write_file(meta, o, err)))
		unlink(content);
	pthread_mutex_unlock(&u->f->lock);
	if (ret)
		json_object_put(o);
	else
		*obj = o;
out:
	gm_buf_release(&cc.msgs);
	free(name);
	free(content);
	free(meta);
	gm_files_upload_abort(u); /* the temporary is gone when it was stored */
	return ret;
}

/* The object of id; the caller holds the lock. */
static int read_meta(gm_files *f, const char *id, json_object **obj, gm_error *err)
{
	char *meta;
	int ret;

	*obj = NULL;
	if (!valid_id(id))
		return gm_error_set(err, GM_ENOENT, "no such file: %s", id);
	meta = entry_path(f, id, ".json");
	if (!gm_is_file(meta))
		ret = gm_error_set(err, GM_ENOENT, "no such file: %s", id);
	else
		ret = gm_json_parse_file(meta, obj, err);
	free(meta);
	return ret;
}

/* created_at, then our created_at_ns (files stored before it had none: 0) */
static void created_of(json_object *o, int64_t *sec, int64_t *ns)
{
	json_object *v, *x;

	*sec = *ns = 0;
	if (json_object_object_get_ex(o, "created_at", &v))
		*sec = json_object_get_int64(v);
	if (json_object_object_get_ex(o, "git_model", &x) && json_object_object_get_ex(x, "created_at_ns", &v))
		*ns = json_object_get_int64(v);
}

static int by_created_desc(const void *a, const void *b)
{
	json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b;
	int64_t cx, cy, nx, ny;

	created_of(x, &cx, &nx);
	created_of(y, &cy, &ny);
	if (cx != cy)
		return cx > cy ? -1 : 1;
	if (nx != ny)
		return nx > ny ? -1 : 1;
	return strcmp(json_object_get_string(json_object_object_get(x, "id")),
		      json_object_get_string(json_object_object_get(y, "id")));
}

json_object *gm_files_list(gm_files *f)
{
	json_object *list = json_object_new_array();
	DIR *d;
	struct dirent *de;

	pthread_mutex_lock(&f->lock);
	if ((d = opendir(f->dir))) {
		while ((de = readdir(d))) {
			size_t n = strlen(de->d_name);
			char id[64];
			json_object *o = NULL;

			if (n != 34 || strcmp(de->d_name + 29, ".json"))
				continue;
			memcpy(id, de->d_name, 29);
			id[29] = '\0';
			if (valid_id(id) && !read_meta(f, id, &o, NULL))
				json_object_array_add(list, o);
		}
		closedir(d);
	}
	pthread_mutex_unlock(&f->lock);
	json_object_array_sort(list, by_created_desc);
	return list;
}

int gm_files_get(gm_files *f, const char *id, json_object **obj, gm_error *err)
{
	int ret;

	pthread_mutex_lock(&f->lock);
	ret = read_meta(f, id, obj, err);
	pthread_mutex_unlock(&f->lock);
	return ret;
}

int gm_files_delete(gm_files *f, const char *id, gm_error *err)
{
	char *meta, *content;
	int ret = 0;

	if (!valid_id(id))
		return gm_error_set(err, GM_ENOENT, "no such file: %s", id);
	meta = entry_path(f, id, ".json");
	content = entry_path(f, id, ".jsonl");
	pthread_mutex_lock(&f->lock);
	/* the object first: from then on the file does not exist */
	if (unlink(meta))
		ret = errno == ENOENT ? gm_error_set(err, GM_ENOENT, "no such file: %s", id)
			: gm_error_errno(err, "cannot delete %s", meta);
	else
		unlink(content);
	pthread_mutex_unlock(&f->lock);
	free(meta);
	free(content);
	return ret;
}

int gm_files_path(gm_files *f, const char *id, char **path, gm_error *err)
{
	char *meta;
	int ret = 0;

	*path = NULL;
	if (!valid_id(id))
		return gm_error_set(err, GM_ENOENT, "no such file: %s", id);
	meta = entry_path(f, id, ".json");
	pthread_mutex_lock(&f->lock);
	if (!gm_is_file(meta))
		ret = gm_error_set(err, GM_ENOENT, "no such file: %s", id);
	else
		*path = entry_path(f, id, ".jsonl");
	pthread_mutex_unlock(&f->lock);
	free(meta);
	return ret;
}
