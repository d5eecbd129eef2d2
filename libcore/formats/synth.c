/* synth.c - synthetic models with random weights (see synth.h). */
#include "formats/synth.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/asset.h"
#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/rng.h"
#include "formats/safetensors.h"

/* The bundled Qwen3 tokenizer's largest id is 151668 (</think>). */
#define GM_QWEN3_TOKENIZER_IDS 151669
/* Elements per independently seeded block: the unit of determinism. */
#define GM_SYNTH_BLOCK 65536u

struct shape {
	const char *name;
	int64_t hidden, intermediate, layers, heads, kv_heads, head_dim, context;
	int tied;
};

/* Released Qwen3 shapes (config.json of Qwen/Qwen3-0.6B and -1.7B), and a
 * tiny one for tests and CI. */
static const struct shape shapes[] = {
	{ "qwen3-0.6b", 1024, 3072, 28, 16, 8, 128, 40960, 1 },
	{ "qwen3-1.7b", 2048, 6144, 28, 16, 8, 128, 40960, 1 },
	{ "tiny", 64, 192, 2, 4, 2, 16, 4096, 1 },
};

static const char *const shape_names[] = { "qwen3-0.6b", "qwen3-1.7b", "tiny", NULL };

const char *const *gm_synth_shape_names(void)
{
	return shape_names;
}

int gm_synth_shape(const char *name, gm_model_config *cfg, gm_error *err)
{
	size_t i;

	for (i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		const struct shape *s = &shapes[i];
		if (strcmp(s->name, name))
			continue;
		memset(cfg, 0, sizeof(*cfg));
		cfg->arch = GM_ARCH_QWEN3;
		snprintf(cfg->architecture, sizeof(cfg->architecture), "Qwen3ForCausalLM");
		snprintf(cfg->model_type, sizeof(cfg->model_type), "qwen3");
		cfg->vocab_size = 151936;
		cfg->hidden_size = s->hidden;
		cfg->intermediate_size = s->intermediate;
		cfg->num_hidden_layers = s->layers;
		cfg->num_attention_heads = s->heads;
		cfg->num_key_value_heads = s->kv_heads;
		cfg->head_dim = s->head_dim;
		cfg->max_position_embeddings = s->context;
		cfg->rms_norm_eps = 1e-6;
		cfg->rope_theta = 1000000.0;
		cfg->rope_scaling = GM_ROPE_NONE;
		cfg->tie_word_embeddings = s->tied;
		cfg->qk_norm = 1;
		cfg->dtype = GM_DTYPE_BF16;
		cfg->bos_token_id = 151643;
		cfg->n_eos = 1;
		cfg->eos_token_ids[0] = 151645;
		return 0;
	}
	return gm_error_set(err, GM_EINVAL, "unknown shape '%s' (known: qwen3-0.6b, qwen3-1.7b, tiny)", name);
}

int gm_synth_check(const gm_synth_opts *o, gm_error *err)
{
	const gm_model_config *c = &o->config;

	if (o->dtype != GM_DTYPE_F32 && o->dtype != GM_DTYPE_F16 && o->dtype != GM_DTYPE_BF16)
		return gm_error_set(err, GM_EINVAL, "dtype must be bf16, f16 or f32, not %s",
				    gm_dtype_name(o->dtype));
	if (c->hidden_size <= 0 || c->intermediate_size <= 0 || c->num_hidden_layers <= 0 ||
	    c->num_attention_heads <= 0 || c->num_key_value_heads <= 0 || c->head_dim <= 0 ||
	    c->max_position_embeddings <= 0)
		return gm_error_set(err, GM_EINVAL, "every dimension of the shape must be positive");
	if (c->num_attention_heads % c->num_key_value_heads)
		return gm_error_set(err, GM_EINVAL, "heads (%lld) must be a multiple of kv heads (%lld)",
				    (long long)c->num_attention_heads, (long long)c->num_key_value_heads);
	if (c->head_dim % 2)
		return gm_error_set(err, GM_EINVAL, "head_dim (%lld) must be even for rotary embeddings",
				    (long long)c->head_dim);
	if (c->vocab_size < GM_QWEN3_TOKENIZER_IDS)
		return gm_error_set(err, GM_EINVAL,
				    "vocab (%lld) must be at least %d to hold the bundled Qwen3 tokenizer's ids",
				    (long long)c->vocab_size, GM_QWEN3_TOKENIZER_IDS);
	if (c->hidden_size > (1 << 20) || c->intermediate_size > (1 << 22) || c->num_hidden_layers > 1024 ||
	    c->head_dim > 1024 || c->num_attention_heads > 1024 || c->vocab_size > (1 << 22))
		return gm_error_set(err, GM_EINVAL, "shape too large for a synthetic model");
	return 0;
}

/* ---------------------------------------------------------------- tensors */

enum init_kind { INIT_NORMAL, INIT_NORM_WEIGHT };

struct synth_tensor {
	char name[96];
	int ndim;
	int64_t shape[2];
	enum init_kind init;
};

struct synth_state {
	const gm_synth_opts *o;
	struct synth_tensor *tensors;
	size_t n;
	uint64_t done, total;
	float *scratch;       /* [threads][GM_SYNTH_BLOCK] */
	float *values;        /* f32 values of the current chunk */
	size_t values_cap;
	int threads;
};

static void add_tensor(struct synth_tensor *t, size_t *n, const char *name, int64_t d0, int64_t d1,
		       enum init_kind init)
{
	struct synth_tensor *x = &t[(*n)++];

	snprintf(x->name, sizeof(x->name), "%s", name);
	x->ndim = d1 ? 2 : 1;
	x->shape[0] = d0;
	x->shape[1] = d1;
	x->init = init;
}

static int cmp_tensor(const void *a, const void *b)
{
	return strcmp(((const struct synth_tensor *)a)->name, ((const struct synth_tensor *)b)->name);
}

/* The Qwen3 tensor list, sorted by name as Hugging Face writes it. */
static struct synth_tensor *list_tensors(const gm_model_config *c, size_t *count)
{
	struct synth_tensor *t = gm_xcalloc((size_t)c->num_hidden_layers * 11 + 3, sizeof(*t));
	int64_t q = c->num_attention_heads * c->head_dim, kv = c->num_key_value_heads * c->head_dim;
	size_t n = 0;
	char name[96];
	int64_t l;

	add_tensor(t, &n, "model.embed_tokens.weight", c->vocab_size, c->hidden_size, INIT_NORMAL);
	add_tensor(t, &n, "model.norm.weight", c->hidden_size, 0, INIT_NORM_WEIGHT);
	if (!c->tie_word_embeddings)
		add_tensor(t, &n, "lm_head.weight", c->vocab_size, c->hidden_size, INIT_NORMAL);
	for (l = 0; l < c->num_hidden_layers; l++) {
#define LAYER(suffix, d0, d1, init)                                                      \
	do {                                                                             \
		snprintf(name, sizeof(name), "model.layers.%lld.%s", (long long)l, suffix); \
		add_tensor(t, &n, name, d0, d1, init);                                   \
	} while (0)
		LAYER("input_layernorm.weight", c->hidden_size, 0, INIT_NORM_WEIGHT);
		LAYER("post_attention_layernorm.weight", c->hidden_size, 0, INIT_NORM_WEIGHT);
		LAYER("self_attn.q_proj.weight", q, c->hidden_size, INIT_NORMAL);
		LAYER("self_attn.k_proj.weight", kv, c->hidden_size, INIT_NORMAL);
		LAYER("self_attn.v_proj.weight", kv, c->hidden_size, INIT_NORMAL);
		LAYER("self_attn.o_proj.weight", c->hidden_size, q, INIT_NORMAL);
		LAYER("self_attn.q_norm.weight", c->head_dim, 0, INIT_NORM_WEIGHT);
		LAYER("self_attn.k_norm.weight", c->head_dim, 0, INIT_NORM_WEIGHT);
		LAYER("mlp.gate_proj.weight", c->intermediate_size, c->hidden_size, INIT_NORMAL);
		LAYER("mlp.up_proj.weight", c->intermediate_size, c->hidden_size, INIT_NORMAL);
		LAYER("mlp.down_proj.weight", c->hidden_size, c->intermediate_size, INIT_NORMAL);
#undef LAYER
	}
	qsort(t, n, sizeof(*t), cmp_tensor);
	*count = n;
	return t;
}

/* Block b of a tensor: GM_SYNTH_BLOCK values from their own stream. */
static void gen_block(const gm_synth_opts *o, const struct synth_tensor *t, uint64_t b, float *out)
{
	gm_rng rng;

	gm_rng_seed_stream(&rng, o->seed, gm_hash_str(t->name), b);
	if (t->init == INIT_NORM_WEIGHT)
		gm_rng_normal(&rng, out, GM_SYNTH_BLOCK, 1.0f, 0.05f);
	else
		gm_rng_normal(&rng, out, GM_SYNTH_BLOCK, 0.0f, 0.02f);
}

struct gen_job {
	const gm_synth_opts *o;
	const struct synth_tensor *t;
	uint64_t e0, e1;   /* element range of the chunk */
	float *values;     /* values[e - e0] */
	float *scratch;
	int index, stride; /* this thread takes blocks index, index+stride, ... */
};

static void *gen_range(void *arg)
{
	struct gen_job *j = arg;
	uint64_t b0 = j->e0 / GM_SYNTH_BLOCK, b1 = (j->e1 + GM_SYNTH_BLOCK - 1) / GM_SYNTH_BLOCK, b;

	for (b = b0 + (uint64_t)j->index; b < b1; b += (uint64_t)j->stride) {
		uint64_t lo = b * GM_SYNTH_BLOCK, hi = lo + GM_SYNTH_BLOCK;
		if (lo < j->e0)
			lo = j->e0;
		if (hi > j->e1)
			hi = j->e1;
		gen_block(j->o, j->t, b, j->scratch);
		memcpy(j->values + (lo - j->e0), j->scratch + (lo - b * GM_SYNTH_BLOCK),
		       (hi - lo) * sizeof(float));
	}
	return NULL;
}

/* Generates elements [e0, e1) of t into st->values, on st->threads threads. */
static void gen_values(struct synth_state *st, const struct synth_tensor *t, uint64_t e0, uint64_t e1)
{
	struct gen_job jobs[64];
	pthread_t tids[64];
	int nt = st->threads, i, started = 0;

	if ((e1 - e0) < 4 * GM_SYNTH_BLOCK)
		nt = 1;
	for (i = 0; i < nt; i++) {
		jobs[i] = (struct gen_job){ st->o, t, e0, e1, st->values,
					    st->scratch + (size_t)i * GM_SYNTH_BLOCK, i, nt };
		if (i && !pthread_create(&tids[i], NULL, gen_range, &jobs[i]))
			started |= 1 << (i % 31);
		else if (i)
			gen_range(&jobs[i]); /* no thread: do it here */
	}
	gen_range(&jobs[0]);
	for (i = 1; i < nt; i++)
		if (started & (1 << (i % 31)))
			pthread_join(tids[i], NULL);
}

static int fill_tensor(void *ctx, const char *name, void *dst, uint64_t offset, uint64_t len, gm_error *err)
{
	struct synth_state *st = ctx;
	const struct synth_tensor *t = NULL;
	uint64_t esize = gm_dtype_bits(st->o->dtype) / 8, e0, e1;
	size_t i;
	unsigned char *tmp;
	int ret;

	for (i = 0; i < st->n; i++)
		if (!strcmp(st->tensors[i].name, name)) {
			t = &st->tensors[i];
			break;
		}
	if (!t)
		return gm_error_set(err, GM_ERROR, "synth: no tensor '%s'", name);
	/* The writer may cut chunks anywhere: cover whole elements, copy bytes. */
	e0 = offset / esize;
	e1 = (offset + len + esize - 1) / esize;
	if ((size_t)(e1 - e0) > st->values_cap) {
		st->values_cap = (size_t)(e1 - e0);
		st->values = gm_xrealloc(st->values, st->values_cap * sizeof(float));
	}
	gen_values(st, t, e0, e1);
	tmp = gm_xmalloc((size_t)(e1 - e0) * esize);
	ret = gm_dtype_from_f32(st->o->dtype, st->values, tmp, (size_t)(e1 - e0), err);
	if (!ret)
		memcpy(dst, tmp + (offset - e0 * esize), (size_t)len);
	free(tmp);
	st->done += len;
	if (st->o->progress)
		st->o->progress(st->o->progress_ctx, st->done, st->total);
	return ret;
}

static int write_weights(const char *path, const gm_synth_opts *o, gm_error *err)
{
	struct synth_state st = { o, NULL, 0, 0, 0, NULL, NULL, 0, 0 };
	gm_st_writer *w = gm_st_writer_new();
	size_t i;
	int ret;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	st.threads = o->threads > 0 ? o->threads : (cpus > 0 ? (int)cpus : 1);
	if (st.threads > 64)
		st.threads = 64;
	st.scratch = gm_xmalloc((size_t)st.threads * GM_SYNTH_BLOCK * sizeof(float));
	st.tensors = list_tensors(&o->config, &st.n);
	ret = gm_st_writer_set_metadata(w, "format", "pt", err);
	for (i = 0; !ret && i < st.n; i++) {
		const struct synth_tensor *t = &st.tensors[i];
		uint64_t numel = (uint64_t)t->shape[0] * (uint64_t)(t->ndim == 2 ? t->shape[1] : 1);

		st.total += numel * (gm_dtype_bits(o->dtype) / 8);
		ret = gm_st_writer_add_fill(w, t->name, o->dtype, t->ndim, t->shape, fill_tensor, &st, err);
	}
	if (!ret)
		ret = gm_st_writer_write(w, path, err);
	gm_st_writer_free(w);
	free(st.tensors);
	free(st.scratch);
	free(st.values);
	return ret;
}

/* ---------------------------------------------------------------- files */

static int write_generation_config(const char *path, const gm_model_config *c, gm_error *err)
{
	json_object *o = json_object_new_object(), *eos = json_object_new_array();
	int ret;

	/* Qwen3's released generation_config.json. */
	json_object_object_add(o, "bos_token_id", json_object_new_int64(c->bos_token_id));
	json_object_object_add(o, "do_sample", json_object_new_boolean(1));
	json_object_array_add(eos, json_object_new_int64(151645));
	json_object_array_add(eos, json_object_new_int64(151643));
	json_object_object_add(o, "eos_token_id", eos);
	json_object_object_add(o, "pad_token_id", json_object_new_int64(151643));
	json_object_object_add(o, "temperature", json_object_new_double_s(0.6, "0.6"));
	json_object_object_add(o, "top_k", json_object_new_int64(20));
	json_object_object_add(o, "top_p", json_object_new_double_s(0.95, "0.95"));
	json_object_object_add(o, "transformers_version", json_object_new_string("4.51.0"));
	ret = gm_json_write_file(path, o, err);
	json_object_put(o);
	return ret;
}

static int write_asset(const char *dir, const char *file, const char *asset, gm_error *err)
{
	gm_buf b = GM_BUF_INIT;
	char *path = gm_path_join(dir, file);
	int ret = gm_asset_read(asset, &b, err);

	if (!ret)
		ret = gm_write_file_atomic(path, b.buf, b.len, 0644, err);
	gm_buf_release(&b);
	free(path);
	return ret;
}

static int write_all(const char *dir, const gm_synth_opts *o, gm_error *err)
{
	json_object *cfg = gm_model_config_to_json(&o->config);
	char *p = gm_path_join(dir, "config.json");
	int ret = gm_json_write_file(p, cfg, err);

	json_object_put(cfg);
	free(p);
	if (!ret) {
		p = gm_path_join(dir, "generation_config.json");
		ret = write_generation_config(p, &o->config, err);
		free(p);
	}
	if (!ret)
		ret = write_asset(dir, "tokenizer.json", "qwen3/tokenizer.json", err);
	if (!ret)
		ret = write_asset(dir, "tokenizer_config.json", "qwen3/tokenizer_config.json", err);
	if (!ret)
		ret = write_asset(dir, "LICENSE", "qwen3/LICENSE", err);
	if (!ret) {
		p = gm_path_join(dir, "model.safetensors");
		ret = write_weights(p, o, err);
		free(p);
	}
	return ret;
}

static int is_empty_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int empty = 1;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			empty = 0;
			break;
		}
	closedir(d);
	return empty;
}

static void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		char *p;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		p = gm_path_join(dir, e->d_name);
		unlink(p); /* synth writes only regular files */
		free(p);
	}
	closedir(d);
	rmdir(dir);
}

int gm_synth_write(const char *dir, const gm_synth_opts *opts, gm_error *err)
{
	gm_synth_opts o = *opts;
	struct stat st;
	gm_buf tmp = GM_BUF_INIT;
	char *copy, *parent;
	mode_t mask;
	int ret;

	o.config.dtype = o.dtype;
	if ((ret = gm_synth_check(&o, err)))
		return ret;
	if (lstat(dir, &st) == 0 && !(S_ISDIR(st.st_mode) && is_empty_dir(dir)))
		return gm_error_set(err, GM_EINVAL, "'%s' already exists and is not an empty directory", dir);
	copy = gm_xstrdup(dir);
	parent = dirname(copy);
	if (!gm_is_dir(parent)) {
		ret = gm_error_set(err, GM_ENOENT, "the parent directory of '%s' does not exist", dir);
		free(copy);
		return ret;
	}
	gm_buf_addf(&tmp, "%s/.synth-tmp-XXXXXX", parent);
	free(copy);
	if (!mkdtemp(tmp.buf)) {
		ret = gm_error_errno(err, "cannot create a temporary directory beside '%s'", dir);
		gm_buf_release(&tmp);
		return ret;
	}
	/* mkdtemp makes 0700; a model directory gets the usual permissions. */
	mask = umask(0);
	umask(mask);
	chmod(tmp.buf, 0777 & ~mask);
	ret = write_all(tmp.buf, &o, err);
	if (!ret && rename(tmp.buf, dir) < 0)
		ret = gm_error_errno(err, "cannot rename '%s' to '%s'", tmp.buf, dir);
	if (ret)
		remove_tree(tmp.buf);
	gm_buf_release(&tmp);
	return ret;
}
