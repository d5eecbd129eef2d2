/*
 * adapterset.c - named adapters in reference-counted versions (see
 * adapterset.h).
 */
#include "serve/adapterset.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "engine/forward.h"

struct gm_adapter_version {
	atomic_int refs;
	uint64_t number;
	gm_peft_adapter *lora;
	gm_sparse_adapter *sparse;
	double published;
};

struct entry {
	char *name, *dir;
	gm_adapter_version *cur;   /* the set's own reference */
};

struct gm_adapter_set {
	const gm_model *model;
	pthread_mutex_t lock;
	struct entry *v;
	int n, cap;
};

double gm_adapter_set_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void close_weights(gm_peft_adapter *lora, gm_sparse_adapter *sparse)
{
	gm_peft_close(lora);
	gm_sparse_close(sparse);
}

/* A new version holding one reference (the caller's); the weights are checked against the model. */
static int version_new(gm_adapter_set *s, gm_peft_adapter *lora, gm_sparse_adapter *sparse,
		       gm_adapter_version **out, gm_error *err)
{
	gm_adapter_version *v;
	int ret;

	if (!lora == !sparse) {
		close_weights(lora, sparse);
		return gm_error_set(err, GM_EINVAL, "an adapter version holds exactly one of a LoRA and a sparse "
				    "delta");
	}
	ret = lora ? gm_forward_check_adapter(s->model, lora, err) : gm_forward_check_sparse(s->model, sparse, err);
	if (ret) {
		close_weights(lora, sparse);
		return ret;
	}
	v = gm_xcalloc(1, sizeof(*v));
	atomic_init(&v->refs, 1);
	v->lora = lora;
	v->sparse = sparse;
	v->published = gm_adapter_set_now();
	*out = v;
	return 0;
}

gm_adapter_set *gm_adapter_set_new(const gm_model *m)
{
	gm_adapter_set *s = gm_xcalloc(1, sizeof(*s));

	s->model = m;
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

void gm_adapter_set_free(gm_adapter_set *s)
{
	int i;

	if (!s)
		return;
	for (i = 0; i < s->n; i++) {
		free(s->v[i].name);
		free(s->v[i].dir);
		gm_adapter_version_release(s->v[i].cur);
	}
	free(s->v);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static int find_locked(gm_adapter_set *s, const char *name, size_t len)
{
	int i;

	for (i = 0; i < s->n; i++)
		if (strlen(s->v[i].name) == len && !memcmp(s->v[i].name, name, len))
			return i;
	return -1;
}

static const char *bad_name(const char *name)
{
	const char *p;

	if (!*name)
		return "an empty name";
	for (p = name; *p; p++) {
		if (*p == ':')
			return "a name may not contain ':'";
		if (*p == '/' || isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
			return "a name may not contain '/', white space or control characters";
	}
	return NULL;
}

int gm_adapter_set_add(gm_adapter_set *s, const char *name, const char *dir, gm_peft_adapter *lora,
		       gm_sparse_adapter *sparse, int *index, gm_error *err)
{
	return gm_adapter_set_add_numbered(s, name, dir, lora, sparse, 1, index, err);
}

int gm_adapter_set_add_numbered(gm_adapter_set *s, const char *name, const char *dir, gm_peft_adapter *lora,
				gm_sparse_adapter *sparse, uint64_t first, int *index, gm_error *err)
{
	gm_adapter_version *v;
	const char *why = bad_name(name);
	struct entry *e;
	int ret;

	if (why) {
		close_weights(lora, sparse);
		return gm_error_set(err, GM_EINVAL, "adapter %s: %s", dir ? dir : name, why);
	}
	if ((ret = version_new(s, lora, sparse, &v, err)))
		return gm_error_prefix(err, "adapter %s", name);
	v->number = first ? first : 1;
	pthread_mutex_lock(&s->lock);
	if (find_locked(s, name, strlen(name)) >= 0) {
		pthread_mutex_unlock(&s->lock);
		gm_adapter_version_release(v);
		return gm_error_set(err, GM_EINVAL, "adapter %s: another adapter has this name%s", dir ? dir : name,
				    dir ? "; give one with NAME=DIR" : "");
	}
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 8;
		s->v = gm_xrealloc(s->v, (size_t)s->cap * sizeof(*s->v));
	}
	e = &s->v[s->n];
	e->name = gm_xstrdup(name);
	e->dir = dir ? gm_xstrdup(dir) : NULL;
	e->cur = v;
	if (index)
		*index = s->n;
	s->n++;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int gm_adapter_set_add_dir(gm_adapter_set *s, const char *name, const char *dir, int *index, gm_error *err)
{
	gm_peft_adapter *lora = NULL;
	gm_sparse_adapter *sparse = NULL;
	int ret;

	ret = gm_sparse_is_dir(dir) ? gm_sparse_open(dir, &sparse, err) : gm_peft_open(dir, &lora, err);
	if (ret)
		return ret;
	return gm_adapter_set_add(s, name, dir, lora, sparse, index, err);
}

int gm_adapter_set_publish(gm_adapter_set *s, int index, gm_peft_adapter *lora, gm_sparse_adapter *sparse,
			   uint64_t *number, gm_error *err)
{
	gm_adapter_version *v, *old;
	int ret;

	if (index < 0 || index >= gm_adapter_set_count(s)) {
		close_weights(lora, sparse);
		return gm_error_set(err, GM_EINVAL, "no adapter %d in the set", index);
	}
	if ((ret = version_new(s, lora, sparse, &v, err)))
		return gm_error_prefix(err, "adapter %s", gm_adapter_set_name(s, index));
	pthread_mutex_lock(&s->lock);
	old = s->v[index].cur;
	v->number = old->number + 1;
	v->published = gm_adapter_set_now();
	s->v[index].cur = v;
	pthread_mutex_unlock(&s->lock);
	if (number)
		*number = v->number;
	/* requests that pinned it keep it until they end */
	gm_adapter_version_release(old);
	return 0;
}

int gm_adapter_set_find(gm_adapter_set *s, const char *name, size_t len)
{
	int i;

	pthread_mutex_lock(&s->lock);
	i = find_locked(s, name, len);
	pthread_mutex_unlock(&s->lock);
	return i;
}

int gm_adapter_set_count(gm_adapter_set *s)
{
	int n;

	pthread_mutex_lock(&s->lock);
	n = s->n;
	pthread_mutex_unlock(&s->lock);
	return n;
}

const char *gm_adapter_set_name(gm_adapter_set *s, int index)
{
	const char *name;

	/* the string never moves (only the array of entries does) */
	pthread_mutex_lock(&s->lock);
	name = s->v[index].name;
	pthread_mutex_unlock(&s->lock);
	return name;
}

const char *gm_adapter_set_dir(gm_adapter_set *s, int index)
{
	const char *dir;

	pthread_mutex_lock(&s->lock);
	dir = s->v[index].dir;
	pthread_mutex_unlock(&s->lock);
	return dir;
}

uint64_t gm_adapter_set_version(gm_adapter_set *s, int index)
{
	uint64_t n;

	pthread_mutex_lock(&s->lock);
	n = s->v[index].cur->number;
	pthread_mutex_unlock(&s->lock);
	return n;
}

gm_adapter_version *gm_adapter_set_acquire(gm_adapter_set *s, int index)
{
	gm_adapter_version *v;

	/* taken under the lock: a publish cannot drop the set's reference in between */
	pthread_mutex_lock(&s->lock);
	v = gm_adapter_version_ref(s->v[index].cur);
	pthread_mutex_unlock(&s->lock);
	return v;
}

gm_adapter_version *gm_adapter_version_ref(gm_adapter_version *v)
{
	atomic_fetch_add(&v->refs, 1);
	return v;
}

void gm_adapter_version_release(gm_adapter_version *v)
{
	if (!v || atomic_fetch_sub(&v->refs, 1) != 1)
		return;
	close_weights(v->lora, v->sparse);
	free(v);
}

const gm_peft_adapter *gm_adapter_version_lora(const gm_adapter_version *v) { return v->lora; }
const gm_sparse_adapter *gm_adapter_version_sparse(const gm_adapter_version *v) { return v->sparse; }
uint64_t gm_adapter_version_number(const gm_adapter_version *v) { return v->number; }
const char *gm_adapter_version_kind(const gm_adapter_version *v) { return v->lora ? "lora" : "sparse"; }
double gm_adapter_version_published(const gm_adapter_version *v) { return v->published; }
