/*
 * model.c - binding a model's tensors to its architecture (see model.h).
 *
 * Every tensor an architecture needs is looked up by its transformers name
 * and checked against the shape config.json implies.  Tied embeddings
 * follow transformers: with tie_word_embeddings the output projection is
 * model.embed_tokens.weight; an lm_head.weight stored anyway (some exports
 * do) is checked for shape and dtype and then ignored.  Any other tensor
 * left over is an error, so that a misspelled name or a checkpoint of
 * another shape cannot load silently; only buffers transformers itself
 * never reads (rotary_emb.inv_freq and friends) are tolerated.
 */
#include "formats/model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/log.h"

/* What binding needs besides the model: the tensors bound so far. */
struct gm_binder {
	gm_model *m;
	const gm_tensor **bound; /* every tensor accounted for, incl. ignored ones */
	size_t n_bound, alloc;
};

static void binder_add(struct gm_binder *b, const gm_tensor *t)
{
	if (b->n_bound == b->alloc) {
		b->alloc = b->alloc ? 2 * b->alloc : 64;
		b->bound = gm_xrealloc(b->bound, b->alloc * sizeof(*b->bound));
	}
	b->bound[b->n_bound++] = t;
}

static void format_shape(char *out, size_t n, int ndim, const int64_t *shape)
{
	size_t len = 0;
	int i;

	len += (size_t)snprintf(out + len, n - len, "[");
	for (i = 0; i < ndim && len < n; i++)
		len += (size_t)snprintf(out + len, n - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
	if (len < n)
		snprintf(out + len, n - len, "]");
}

static int is_float(enum gm_dtype t)
{
	return t == GM_DTYPE_F32 || t == GM_DTYPE_F16 || t == GM_DTYPE_BF16;
}

/* Checks t's dtype and shape against the expected ones. */
static int check_tensor(const gm_model *m, const gm_tensor *t, int ndim, const int64_t *shape, gm_error *err)
{
	char want[96], got[160];
	int i, same = t->ndim == ndim;

	for (i = 0; same && i < ndim; i++)
		same = t->shape[i] == shape[i];
	if (!same) {
		format_shape(want, sizeof(want), ndim, shape);
		format_shape(got, sizeof(got), t->ndim, t->shape);
		return gm_error_set(err, GM_EFORMAT,
				    "%s: tensor '%s' has shape %s, expected %s for this config.json", m->dir,
				    t->name, got, want);
	}
	/* matrices may be block-quantized (GGUF); vectors are always float */
	if (!is_float(t->dtype) && !(ndim == 2 && gm_dtype_is_block(t->dtype)))
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: tensor '%s' has dtype %s; expected a float type (F32, F16 or BF16)%s",
				    m->dir, t->name, gm_dtype_name(t->dtype),
				    ndim == 2 ? " or a block-quantized type" : "");
	return 0;
}

/* Finds, checks and records a required tensor named by printf-style fmt. */
static int bind(struct gm_binder *b, const gm_tensor **slot, int ndim, int64_t d0, int64_t d1,
		gm_error *err, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static int bind(struct gm_binder *b, const gm_tensor **slot, int ndim, int64_t d0, int64_t d1,
		gm_error *err, const char *fmt, ...)
{
	int64_t shape[2] = { d0, d1 };
	char name[256], want[96];
	const gm_tensor *t;
	va_list ap;
	int ret;

	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	t = gm_weights_find(b->m->weights, name);
	if (!t) {
		format_shape(want, sizeof(want), ndim, shape);
		return gm_error_set(err, GM_ENOENT, "%s: missing tensor '%s' (%s), needed by %s", b->m->dir,
				    name, want, b->m->config.architecture);
	}
	if ((ret = check_tensor(b->m, t, ndim, shape, err)))
		return ret;
	*slot = t;
	binder_add(b, t);
	b->m->n_params += t->numel;
	return 0;
}

static int bind_layer(struct gm_binder *b, gm_layer_weights *l, int64_t i, gm_error *err)
{
	const gm_model_config *c = &b->m->config;
	int64_t h = c->hidden_size, q = c->num_attention_heads * c->head_dim;
	int64_t kv = c->num_key_value_heads * c->head_dim, ff = c->intermediate_size;
	const char *p = "model.layers";
	long long n = (long long)i;
	int ret;

	if ((ret = bind(b, &l->input_norm, 1, h, 0, err, "%s.%lld.input_layernorm.weight", p, n)) ||
	    (ret = bind(b, &l->post_attn_norm, 1, h, 0, err, "%s.%lld.post_attention_layernorm.weight", p, n)) ||
	    (ret = bind(b, &l->q_proj, 2, q, h, err, "%s.%lld.self_attn.q_proj.weight", p, n)) ||
	    (ret = bind(b, &l->k_proj, 2, kv, h, err, "%s.%lld.self_attn.k_proj.weight", p, n)) ||
	    (ret = bind(b, &l->v_proj, 2, kv, h, err, "%s.%lld.self_attn.v_proj.weight", p, n)) ||
	    (ret = bind(b, &l->o_proj, 2, h, q, err, "%s.%lld.self_attn.o_proj.weight", p, n)) ||
	    (ret = bind(b, &l->gate_proj, 2, ff, h, err, "%s.%lld.mlp.gate_proj.weight", p, n)) ||
	    (ret = bind(b, &l->up_proj, 2, ff, h, err, "%s.%lld.mlp.up_proj.weight", p, n)) ||
	    (ret = bind(b, &l->down_proj, 2, h, ff, err, "%s.%lld.mlp.down_proj.weight", p, n)))
		return ret;
	if (c->attention_bias &&
	    ((ret = bind(b, &l->q_bias, 1, q, 0, err, "%s.%lld.self_attn.q_proj.bias", p, n)) ||
	     (ret = bind(b, &l->k_bias, 1, kv, 0, err, "%s.%lld.self_attn.k_proj.bias", p, n)) ||
	     (ret = bind(b, &l->v_bias, 1, kv, 0, err, "%s.%lld.self_attn.v_proj.bias", p, n))))
		return ret;
	if (c->qk_norm &&
	    ((ret = bind(b, &l->q_norm, 1, c->head_dim, 0, err, "%s.%lld.self_attn.q_norm.weight", p, n)) ||
	     (ret = bind(b, &l->k_norm, 1, c->head_dim, 0, err, "%s.%lld.self_attn.k_norm.weight", p, n))))
		return ret;
	return 0;
}

/* lm_head: its own tensor, or the embeddings when tied (a stored copy is checked, then ignored). */
static int bind_lm_head(struct gm_binder *b, gm_error *err)
{
	const gm_model_config *c = &b->m->config;
	const gm_tensor *stored = gm_weights_find(b->m->weights, "lm_head.weight");
	int64_t shape[2] = { c->vocab_size, c->hidden_size };
	int ret;

	if (!c->tie_word_embeddings)
		return bind(b, &b->m->lm_head, 2, c->vocab_size, c->hidden_size, err, "lm_head.weight");
	b->m->lm_head = b->m->embed_tokens;
	if (stored) {
		if ((ret = check_tensor(b->m, stored, 2, shape, err)))
			return ret;
		binder_add(b, stored);
		gm_info("%s: tie_word_embeddings is set: ignoring the stored lm_head.weight", b->m->dir);
	}
	return 0;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);

	return ls >= lx && !strcmp(s + ls - lx, suffix);
}

/* Non-persistent buffers some exports include; transformers never loads them. */
static int is_harmless(const char *name)
{
	return ends_with(name, "rotary_emb.inv_freq") || ends_with(name, "rotary_emb.cos_cached") ||
	       ends_with(name, "rotary_emb.sin_cached");
}

static int cmp_ptr(const void *a, const void *b)
{
	const void *pa = *(const void *const *)a, *pb = *(const void *const *)b;

	return pa < pb ? -1 : pa > pb;
}

/* Every stored tensor must have been bound (or be harmless). */
static int check_leftovers(struct gm_binder *b, gm_error *err)
{
	size_t i, n = gm_weights_count(b->m->weights), n_left = 0;
	const gm_tensor *first = NULL;

	qsort(b->bound, b->n_bound, sizeof(*b->bound), cmp_ptr);
	for (i = 0; i < n; i++) {
		const gm_tensor *t = gm_weights_tensor(b->m->weights, i);
		if (bsearch(&t, b->bound, b->n_bound, sizeof(*b->bound), cmp_ptr))
			continue;
		if (is_harmless(t->name)) {
			gm_debug("%s: ignoring '%s'", b->m->dir, t->name);
			continue;
		}
		if (!first)
			first = t;
		n_left++;
	}
	if (!first)
		return 0;
	if (n_left == 1)
		return gm_error_set(err, GM_EFORMAT,
				    "%s: unexpected tensor '%s': %s with this config.json does not use it "
				    "(a misspelled name, or a checkpoint of another shape?)", b->m->dir,
				    first->name, b->m->config.architecture);
	return gm_error_set(err, GM_EFORMAT,
			    "%s: unexpected tensor '%s' and %zu more: %s with this config.json does not "
			    "use them (misspelled names, or a checkpoint of another shape?)", b->m->dir,
			    first->name, n_left - 1, b->m->config.architecture);
}

static int bind_all(gm_model *m, gm_error *err)
{
	const gm_model_config *c = &m->config;
	struct gm_binder b = { m, NULL, 0, 0 };
	gm_layer_weights scratch;
	int64_t i, n_alloc;
	int ret;

	/*
	 * Every layer binds at least 9 tensors of its own, so a config.json
	 * claiming more layers than the weights can hold fails on a missing
	 * tensor within the first count / 9 + 1 layers: allocate no more than
	 * that, lest a bogus num_hidden_layers exhaust memory before the error.
	 */
	n_alloc = (int64_t)(gm_weights_count(m->weights) / 9 + 1);
	if (n_alloc > c->num_hidden_layers)
		n_alloc = c->num_hidden_layers;
	m->layers = gm_xcalloc((size_t)n_alloc, sizeof(*m->layers));
	ret = bind(&b, &m->embed_tokens, 2, c->vocab_size, c->hidden_size, err, "model.embed_tokens.weight");
	if (!ret)
		ret = bind(&b, &m->final_norm, 1, c->hidden_size, 0, err, "model.norm.weight");
	if (!ret)
		ret = bind_lm_head(&b, err);
	for (i = 0; !ret && i < c->num_hidden_layers; i++)
		ret = bind_layer(&b, i < n_alloc ? &m->layers[i] : &scratch, i, err);
	if (!ret)
		ret = check_leftovers(&b, err);
	free(b.bound);
	return ret;
}

static void log_opened(const gm_model *m)
{
	gm_info("%s: %s, %zu tensors in %zu file(s), %llu parameters", m->dir, m->config.architecture,
		gm_weights_count(m->weights), gm_weights_file_count(m->weights),
		(unsigned long long)m->n_params);
	gm_debug("%s: %zu of %zu weight file(s) resident in huge-page memory, the rest mapped", m->dir,
		 gm_weights_resident_count(m->weights), gm_weights_file_count(m->weights));
}

/* A GGUF file: weights first, then the config and generation defaults from its metadata. */
static int open_gguf(const char *path, enum gm_weights_mode mode, gm_model **out, gm_error *err)
{
	gm_model *m = gm_xcalloc(1, sizeof(*m));
	int ret;

	m->dir = gm_xstrdup(path);
	if ((ret = gm_weights_open_mode(path, mode, &m->weights, err)) ||
	    (ret = gm_model_config_from_gguf(gm_weights_gguf(m->weights), &m->config, err)) ||
	    (ret = gm_generation_config_from_gguf(gm_weights_gguf(m->weights), &m->config, &m->generation, err)) ||
	    (ret = bind_all(m, err))) {
		gm_model_close(m);
		return ret;
	}
	log_opened(m);
	*out = m;
	return 0;
}

int gm_model_open(const char *dir, gm_model **out, gm_error *err)
{
	return gm_model_open_mode(dir, GM_WEIGHTS_AUTO, out, err);
}

int gm_model_open_mode(const char *dir, enum gm_weights_mode mode, gm_model **out, gm_error *err)
{
	gm_model *m;
	int ret;

	*out = NULL;
	if (gm_gguf_is_file(dir))
		return open_gguf(dir, mode, out, err);
	if (!gm_is_dir(dir))
		return gm_error_set(err, GM_ENOENT, gm_is_file(dir) ?
				    "%s: not a model directory (a file; give the directory that holds config.json)" :
				    "%s: not a model directory (no such directory)", dir);
	m = gm_xcalloc(1, sizeof(*m));
	m->dir = gm_xstrdup(dir);
	if ((ret = gm_model_config_load(dir, &m->config, err)) ||
	    (ret = gm_generation_config_load(dir, &m->config, &m->generation, err)) ||
	    (ret = gm_weights_open_mode(dir, mode, &m->weights, err)) ||
	    (ret = bind_all(m, err))) {
		gm_model_close(m);
		return ret;
	}
	log_opened(m);
	*out = m;
	return 0;
}

void gm_model_close(gm_model *m)
{
	if (!m)
		return;
	gm_weights_close(m->weights);
	free(m->layers);
	free(m->dir);
	free(m);
}
