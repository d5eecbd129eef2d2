/*
 * train.c - LoRA training: the trainable weights, the forward with saved
 * activations and the backward through the whole decoder, AdamW (see
 * train.h).
 *
 * The layer math, forward and backward, is the model definition of
 * qwen3.c over the op layer (ops.h), the same one inference runs: here a
 * layer's attention is over the sequence itself (its probabilities kept
 * for the backward), every activation the backward reads has a buffer of
 * its own, and each adapted projection carries its LoRA as one delta over
 * all rows that keeps u = x A^T.  What stays here: the LoRA parameters and
 * their gradients and moments, the recompute policy (the residual stream
 * entering each layer is kept, each layer's forward is recomputed just
 * before its backward), the loss head (final norm, lm_head and
 * cross-entropy a chunk of target positions at a time) and AdamW.
 *
 * The frozen weights are used where gm_model mapped them for X W^T; for
 * dY W each is transposed once, at gm_train_new, into a copy of the same
 * dtype ([in, out]), so both directions run on the same matrix product.
 */
#include "train/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/sysmem.h"
#include "base/fs.h"
#include "base/json.h"
#include "cpu/kernels.h"
#include "ops/ops.h"
#include "engine/qwen3.h"
#include "base/rng.h"
#include "formats/safetensors.h"
#include "cpu/threadpool.h"

#define GM_TRAIN_HEAD_CHUNK 32 /* positions whose logits exist at a time */
#define NP GM_PEFT_PROJ_COUNT

/* ---------------------------------------------------------------- LoRA weights */

int gm_lora_parse_targets(const char *list, unsigned *out, gm_error *err)
{
	const char *p = list;
	unsigned mask = 0;

	if (!strcmp(list, "all-linear") || !strcmp(list, "all")) {
		*out = GM_LORA_ALL_TARGETS;
		return 0;
	}
	while (*p) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		char name[32];
		enum gm_peft_proj proj;

		if (len == 0 || len >= sizeof(name) ||
		    (memcpy(name, p, len), name[len] = 0, gm_peft_proj_from_name(name, &proj)))
			return gm_error_set(err, GM_EINVAL, "unknown LoRA target '%.*s' in '%s' (expected a list of "
					    "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, or all-linear)",
					    (int)len, p, list);
		mask |= 1u << proj;
		p += len;
		if (*p == ',')
			p++;
	}
	if (!mask)
		return gm_error_set(err, GM_EINVAL, "no LoRA target in '%s'", list);
	*out = mask;
	return 0;
}

static void proj_dims(const gm_model *m, int layer, enum gm_peft_proj p, int64_t *in, int64_t *out)
{
	const gm_layer_weights *lw = &m->layers[layer];
	const gm_tensor *w[NP] = { lw->q_proj, lw->k_proj, lw->v_proj, lw->o_proj,
				   lw->gate_proj, lw->up_proj, lw->down_proj };

	*out = w[p]->shape[0];
	*in = w[p]->shape[1];
}

static gm_lora *lora_alloc(const gm_model *m, int64_t rank, double alpha, int rslora, unsigned targets)
{
	gm_lora *l = gm_xcalloc(1, sizeof(*l));
	int i, p;

	l->n_layers = (int)m->config.num_hidden_layers;
	l->rank = rank;
	l->alpha = alpha;
	l->use_rslora = rslora;
	l->targets = targets;
	l->mods = gm_xcalloc((size_t)l->n_layers * NP, sizeof(*l->mods));
	for (i = 0; i < l->n_layers; i++) {
		for (p = 0; p < NP; p++) {
			gm_lora_module *md = &l->mods[i * NP + p];

			proj_dims(m, i, (enum gm_peft_proj)p, &md->in, &md->out);
			if (!(targets & (1u << p)))
				continue;
			md->rank = rank;
			md->scale = gm_peft_scale(rank, alpha, rslora);
			md->a = gm_xcalloc((size_t)(rank * md->in), sizeof(float));
			md->b = gm_xcalloc((size_t)(md->out * rank), sizeof(float));
			l->n_params += (uint64_t)(rank * (md->in + md->out));
		}
	}
	return l;
}

int gm_lora_init(const gm_model *m, int64_t rank, double alpha, int use_rslora, unsigned targets,
		 uint64_t seed, gm_lora **out, gm_error *err)
{
	gm_lora *l;
	int i, p;

	if (rank < 1 || rank > 65536)
		return gm_error_set(err, GM_EINVAL, "LoRA rank %lld out of range (1 to 65536)", (long long)rank);
	if (!(alpha > 0) || !isfinite(alpha))
		return gm_error_set(err, GM_EINVAL, "LoRA alpha must be a positive number");
	if (!targets || (targets & ~GM_LORA_ALL_TARGETS))
		return gm_error_set(err, GM_EINVAL, "no LoRA target projection");
	l = lora_alloc(m, rank, alpha, use_rslora, targets);
	for (i = 0; i < l->n_layers; i++) {
		for (p = 0; p < NP; p++) {
			gm_lora_module *md = &l->mods[i * NP + p];
			float bound = (float)(1.0 / sqrt((double)md->in));
			gm_rng r;
			int64_t k;

			if (!md->rank)
				continue;
			/* one stream per module: the draw does not depend on which others are adapted */
			gm_rng_seed_stream(&r, seed, (uint64_t)i, (uint64_t)p);
			for (k = 0; k < md->rank * md->in; k++)
				md->a[k] = (2.0f * gm_rng_uniform(&r) - 1.0f) * bound;
		}
	}
	*out = l;
	return 0;
}

int gm_lora_from_peft(const gm_model *m, const gm_peft_adapter *ad, gm_lora **out, gm_error *err)
{
	unsigned targets = 0;
	gm_lora *l;
	size_t i;

	for (i = 0; i < ad->n_modules; i++) {
		const gm_peft_module *pm = &ad->modules[i];
		int64_t in, o;

		if (pm->layer >= m->config.num_hidden_layers)
			return gm_error_set(err, GM_EINVAL, "%s: module %s: the model has %lld layers", ad->dir,
					    pm->name, (long long)m->config.num_hidden_layers);
		proj_dims(m, pm->layer, pm->proj, &in, &o);
		if (pm->in != in || pm->out != o)
			return gm_error_set(err, GM_EINVAL, "%s: module %s is [%lld -> %lld], the model's is [%lld -> %lld]",
					    ad->dir, pm->name, (long long)pm->in, (long long)pm->out, (long long)in,
					    (long long)o);
		if (pm->rank != ad->config.r || pm->alpha != ad->config.lora_alpha)
			return gm_error_set(err, GM_EUNSUPPORTED, "%s: module %s has its own rank or alpha "
					    "(rank_pattern / alpha_pattern): training needs one rank and alpha",
					    ad->dir, pm->name);
		targets |= 1u << pm->proj;
	}
	if (!targets)
		return gm_error_set(err, GM_EINVAL, "%s: the adapter has no module", ad->dir);
	l = lora_alloc(m, ad->config.r, ad->config.lora_alpha, ad->config.use_rslora, targets);
	for (i = 0; i < (size_t)l->n_layers * NP; i++) {
		gm_lora_module *md = &l->mods[i];
		const gm_peft_module *pm;

		if (!md->rank)
			continue;
		pm = gm_peft_find(ad, (int)(i / NP), (enum gm_peft_proj)(i % NP));
		if (!pm) {
			/* a layer the adapter leaves alone (layers_to_transform): start it at B = 0 */
			md->rank = 0;
			free(md->a);
			free(md->b);
			md->a = md->b = NULL;
			l->n_params -= (uint64_t)(l->rank * (md->in + md->out));
			continue;
		}
		gm_load_f32(md->a, pm->a->data, pm->a->dtype, md->rank * md->in);
		gm_load_f32(md->b, pm->b->data, pm->b->dtype, md->out * md->rank);
	}
	if (ad->config.base_model)
		l->base_model = gm_xstrdup(ad->config.base_model);
	*out = l;
	return 0;
}

void gm_lora_free(gm_lora *l)
{
	size_t i;

	if (!l)
		return;
	for (i = 0; l->mods && i < (size_t)l->n_layers * NP; i++) {
		free(l->mods[i].a);
		free(l->mods[i].b);
	}
	free(l->mods);
	free(l->base_model);
	free(l);
}

const gm_lora_module *gm_lora_module_at(const gm_lora *l, int layer, enum gm_peft_proj p)
{
	const gm_lora_module *md = &l->mods[layer * NP + p];

	return md->rank ? md : NULL;
}

static void tensor_name(char *buf, size_t n, int layer, enum gm_peft_proj p, const char *which)
{
	snprintf(buf, n, "base_model.model.model.layers.%d.%s.%s.%s.weight", layer, gm_peft_proj_parent(p),
		 gm_peft_proj_name(p), which);
}

static json_object *json_number(double v)
{
	if (v == floor(v) && fabs(v) < 1e15)
		return json_object_new_int64((int64_t)v);
	return json_object_new_double(v);
}

int gm_lora_save(const gm_lora *l, const char *dir, gm_error *err)
{
	json_object *cfg = json_object_new_object(), *tm = json_object_new_array();
	gm_st_writer *w = gm_st_writer_new();
	char name[160];
	char *path = NULL;
	int i, p, ret;

	/* the keys PEFT 0.x writes for a plain LoRA, in its (sorted) order */
	json_object_object_add(cfg, "alpha_pattern", json_object_new_object());
	json_object_object_add(cfg, "auto_mapping", NULL);
	json_object_object_add(cfg, "base_model_name_or_path",
			       l->base_model ? json_object_new_string(l->base_model) : NULL);
	json_object_object_add(cfg, "bias", json_object_new_string("none"));
	json_object_object_add(cfg, "fan_in_fan_out", json_object_new_boolean(0));
	json_object_object_add(cfg, "inference_mode", json_object_new_boolean(1));
	json_object_object_add(cfg, "init_lora_weights", json_object_new_boolean(1));
	json_object_object_add(cfg, "layers_pattern", NULL);
	json_object_object_add(cfg, "layers_to_transform", NULL);
	json_object_object_add(cfg, "lora_alpha", json_number(l->alpha));
	json_object_object_add(cfg, "lora_bias", json_object_new_boolean(0));
	json_object_object_add(cfg, "lora_dropout", json_object_new_double(0.0));
	json_object_object_add(cfg, "modules_to_save", NULL);
	json_object_object_add(cfg, "peft_type", json_object_new_string("LORA"));
	json_object_object_add(cfg, "r", json_object_new_int64(l->rank));
	json_object_object_add(cfg, "rank_pattern", json_object_new_object());
	json_object_object_add(cfg, "revision", NULL);
	for (p = 0; p < NP; p++)
		if (l->targets & (1u << p))
			json_object_array_add(tm, json_object_new_string(gm_peft_proj_name((enum gm_peft_proj)p)));
	json_object_object_add(cfg, "target_modules", tm);
	json_object_object_add(cfg, "task_type", json_object_new_string("CAUSAL_LM"));
	json_object_object_add(cfg, "use_dora", json_object_new_boolean(0));
	json_object_object_add(cfg, "use_rslora", json_object_new_boolean(l->use_rslora));

	ret = gm_mkdir_p(dir, 0777, err);
	if (!ret) {
		path = gm_path_join(dir, GM_PEFT_CONFIG_FILE);
		ret = gm_json_write_file(path, cfg, err);
		free(path);
	}
	if (!ret)
		ret = gm_st_writer_set_metadata(w, "format", "pt", err);
	for (i = 0; !ret && i < l->n_layers; i++) {
		for (p = 0; !ret && p < NP; p++) {
			const gm_lora_module *md = &l->mods[i * NP + p];
			int64_t sa[2] = { md->rank, md->in }, sb[2] = { md->out, md->rank };

			if (!md->rank)
				continue;
			tensor_name(name, sizeof(name), i, (enum gm_peft_proj)p, "lora_A");
			ret = gm_st_writer_add(w, name, GM_DTYPE_F32, 2, sa, md->a, err);
			tensor_name(name, sizeof(name), i, (enum gm_peft_proj)p, "lora_B");
			if (!ret)
				ret = gm_st_writer_add(w, name, GM_DTYPE_F32, 2, sb, md->b, err);
		}
	}
	if (!ret) {
		path = gm_path_join(dir, GM_PEFT_WEIGHTS_FILE);
		ret = gm_st_writer_write(w, path, err);
		free(path);
	}
	gm_st_writer_free(w);
	json_object_put(cfg);
	return ret;
}

/* ---------------------------------------------------------------- the trainer */

struct frozen {
	const gm_tensor *w;  /* [out, in], as mapped */
	void *wt;            /* W^T [in, out], same dtype, owned */
	gm_tensor wt_view;   /* wt as the ops take it */
};

struct grads {
	float *ga, *gb;      /* like A and B */
	float *ma, *va, *mb, *vb;
};

struct gm_train {
	const gm_model *m;
	gm_lora *lora;
	gm_train_opts o;
	gm_adamw adam;
	gm_ops *ops;             /* the backend the model definition runs on */
	gm_qwen3_dims dims;
	int64_t H, QD, KD, hd, nh, nkv, I, V, L, maxT, rmax;
	float eps;
	int64_t step;

	float *w_in, *w_post, *w_qn, *w_kn, *w_final; /* norm weights in f32 */
	gm_tensor *nt;           /* [L * 4 + 1]: views of them (in, post, q, k per layer; final) */
	struct frozen *fz;       /* [L * NP] */
	struct frozen head;      /* lm_head (or the tied embedding) */
	struct grads *gr;        /* [L * NP] */
	gm_op_lora *lop;         /* [L * NP]: the LoRA modules as the ops take them */

	float *rope_cs, *rope_sn; /* [maxT, hd / 2] */
	float *xs;               /* [L + 1, maxT, H]: the residual stream entering each layer, then the last */

	/* one layer's activations */
	float *n1, *q, *k, *v, *qr, *kr, *att, *x1, *n2, *g, *up, *act, *probs, *tmp;
	float *lu[NP];           /* x A^T per projection, [maxT, rmax] */
	/* backward */
	float *dx, *dn, *dq, *dk, *dv, *datt, *dg, *dup;
	/* loss head */
	float *hg, *hx, *logits, *dhx, *dhn;
	double *row_loss;
	int64_t *rows;           /* positions with a target */
};

/* ---- setup */

static int transpose_weight(gm_train *t, struct frozen *fz, gm_error *err)
{
	const gm_tensor *w = fz->w;
	size_t el = w->dtype == GM_DTYPE_F32 ? 4 : 2;

	if (gm_dtype_is_block(w->dtype)) {
		/* QLoRA: the base stays quantized and is read as W itself (ops.h) */
		if (!gm_qweight_supported(w->dtype))
			return gm_error_set(err, GM_EUNSUPPORTED, "%s: %s not supported for training", w->name,
					    gm_dtype_name(w->dtype));
		fz->wt = NULL;
		fz->wt_view = *w;
		return 0;
	}
	if (w->dtype != GM_DTYPE_F32 && w->dtype != GM_DTYPE_BF16 && w->dtype != GM_DTYPE_F16)
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: dtype not supported for training", w->name);
	fz->wt = malloc(el * w->numel);
	if (!fz->wt)
		return gm_error_set(err, GM_ENOMEM, "out of memory for the transposed %s", w->name);
	gm_op_transpose(t->ops, fz->wt, w);
	fz->wt_view = *w;
	fz->wt_view.shape[0] = w->shape[1];
	fz->wt_view.shape[1] = w->shape[0];
	fz->wt_view.data = fz->wt;
	return 0;
}

static void load_norm(float *dst, const gm_tensor *w, int64_t n)
{
	if (w)
		gm_load_f32(dst, w->data, w->dtype, n);
	else
		for (int64_t i = 0; i < n; i++)
			dst[i] = 1.0f;
}

/* An f32 [n] view of data. */
static void f32_view(gm_tensor *v, const float *data, int64_t n)
{
	memset(v, 0, sizeof(*v));
	v->name = "norm";
	v->dtype = GM_DTYPE_F32;
	v->ndim = 1;
	v->shape[0] = n;
	v->numel = (uint64_t)n;
	v->nbytes = v->numel * 4;
	v->data = data;
}

void gm_train_free(gm_train *t)
{
	int64_t i;

	if (!t)
		return;
	for (i = 0; t->fz && i < t->L * NP; i++)
		free(t->fz[i].wt);
	free(t->fz);
	free(t->head.wt);
	for (i = 0; t->gr && i < t->L * NP; i++) {
		free(t->gr[i].ga);
		free(t->gr[i].gb);
		free(t->gr[i].ma);
		free(t->gr[i].va);
		free(t->gr[i].mb);
		free(t->gr[i].vb);
	}
	free(t->gr);
	free(t->lop);
	free(t->nt);
	for (i = 0; i < NP; i++)
		free(t->lu[i]);
	free(t->w_in); free(t->w_post); free(t->w_qn); free(t->w_kn); free(t->w_final);
	free(t->rope_cs); free(t->rope_sn); free(t->xs);
	free(t->n1); free(t->q); free(t->k); free(t->v); free(t->qr); free(t->kr); free(t->att);
	free(t->x1); free(t->n2); free(t->g); free(t->up); free(t->act); free(t->probs); free(t->tmp);
	free(t->dx); free(t->dn); free(t->dq); free(t->dk); free(t->dv); free(t->datt); free(t->dg);
	free(t->dup);
	free(t->hg); free(t->hx); free(t->logits); free(t->dhx); free(t->dhn);
	free(t->row_loss); free(t->rows);
	gm_ops_free(t->ops);
	free(t);
}

/*
 * Bytes gm_train_new allocates for sequences of up to T tokens: the
 * transposed frozen weights (in their dtype), the saved activations and
 * their gradients (f32, attention probabilities [heads, T, T] included),
 * the head's chunk and AdamW's three copies of every LoRA parameter.
 */
/* Bytes of the transposed copy of a frozen weight: none for a block type (read in place). */
static uint64_t wt_bytes(const gm_tensor *w)
{
	if (gm_dtype_is_block(w->dtype))
		return 0;
	return (w->dtype == GM_DTYPE_F32 ? 4 : 2) * (uint64_t)w->numel;
}

static uint64_t train_bytes(const gm_model *m, const gm_lora *lora, int64_t T)
{
	const gm_model_config *c = &m->config;
	uint64_t H = (uint64_t)c->hidden_size, QD = (uint64_t)(c->num_attention_heads * c->head_dim);
	uint64_t KD = (uint64_t)(c->num_key_value_heads * c->head_dim), I = (uint64_t)c->intermediate_size;
	uint64_t L = (uint64_t)c->num_hidden_layers, V = (uint64_t)c->vocab_size, t = (uint64_t)T;
	uint64_t floats, weights = 0, rmax = 1;
	int64_t i, p;

	for (i = 0; i < c->num_hidden_layers; i++) {
		const gm_layer_weights *lw = &m->layers[i];
		const gm_tensor *w[NP] = { lw->q_proj, lw->k_proj, lw->v_proj, lw->o_proj,
					   lw->gate_proj, lw->up_proj, lw->down_proj };

		for (p = 0; p < NP; p++) {
			const gm_lora_module *md = &lora->mods[i * NP + p];

			weights += wt_bytes(w[p]);
			weights += 4 * 6 * (uint64_t)(md->rank * (md->in + md->out));
			rmax = md->rank > (int64_t)rmax ? (uint64_t)md->rank : rmax;
		}
	}
	weights += wt_bytes(m->lm_head);
	floats = (L + 1) * t * H + 6 * t * H + 5 * t * QD + 5 * t * KD + 5 * t * I +
		(uint64_t)c->num_attention_heads * t * t + NP * t * rmax +
		4 * GM_TRAIN_HEAD_CHUNK * H + GM_TRAIN_HEAD_CHUNK * V + t * (uint64_t)c->head_dim;
	return weights + 4 * floats + 16 * t;
}

int gm_train_new(const gm_model *m, gm_lora *lora, const gm_train_opts *o, gm_train **out, gm_error *err)
{
	const gm_model_config *c = &m->config;
	gm_train *t;
	int64_t i, p, T, half;
	int32_t *pos;
	float *inv;
	int ret;

	/* the Qwen3 stack (q/k norms, no biases, plain RoPE) is what the backward pass implements */
	if (c->arch != GM_ARCH_QWEN3 || !c->qk_norm || c->attention_bias || c->rope_scaling != GM_ROPE_NONE)
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: %s: training supports Qwen3 models only", m->dir,
				    c->architecture);
	if (c->head_dim > 512 || c->head_dim % 2)
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: head_dim %lld not supported for training (even, at most 512)",
				    m->dir, (long long)c->head_dim);
	if (lora->n_layers != c->num_hidden_layers)
		return gm_error_set(err, GM_EINVAL, "the adapter has %d layers, the model %lld", lora->n_layers,
				    (long long)c->num_hidden_layers);
	if (o->max_len < 2 || o->max_len > 1 << 20)
		return gm_error_set(err, GM_EINVAL, "maximum sequence length %lld out of range (2 to 1048576)",
				    (long long)o->max_len);
	if (lora->n_layers == c->num_hidden_layers) {
		uint64_t need = train_bytes(m, lora, o->max_len), avail = gm_mem_available();

		if (avail && need > avail) {
			gm_buf a = GM_BUF_INIT, b = GM_BUF_INIT;

			gm_buf_add_human_bytes(&a, need);
			gm_buf_add_human_bytes(&b, avail);
			ret = gm_error_set(err, GM_ENOMEM, "training sequences of up to %lld tokens needs %s of memory "
					   "(the attention of one sequence grows with the square of its length) and %s "
					   "is available: use a shorter --max-len (longer examples are cut)", (long long)o->max_len, a.buf, b.buf);
			gm_buf_release(&a);
			gm_buf_release(&b);
			return ret;
		}
	}
	t = gm_xcalloc(1, sizeof(*t));
	t->m = m;
	t->lora = lora;
	t->o = *o;
	t->adam.beta1 = o->beta1 > 0 ? o->beta1 : 0.9;
	t->adam.beta2 = o->beta2 > 0 ? o->beta2 : 0.999;
	t->adam.eps = o->eps > 0 ? o->eps : 1e-8;
	t->adam.weight_decay = o->weight_decay;
	if ((ret = gm_ops_cpu_new(o->n_threads > 0 ? o->n_threads : gm_cpu_count(), &t->ops, err))) {
		free(t);
		return ret;
	}
	gm_qwen3_dims_of(m, &t->dims);
	t->H = c->hidden_size;
	t->hd = c->head_dim;
	t->nh = c->num_attention_heads;
	t->nkv = c->num_key_value_heads;
	t->QD = t->nh * t->hd;
	t->KD = t->nkv * t->hd;
	t->I = c->intermediate_size;
	t->V = c->vocab_size;
	t->L = c->num_hidden_layers;
	t->maxT = T = o->max_len;
	t->eps = (float)c->rms_norm_eps;
	t->rmax = 1;
	for (i = 0; i < t->L * NP; i++)
		t->rmax = gm_imax64(t->rmax, lora->mods[i].rank);

	t->w_in = gm_falloc((size_t)(t->L * t->H));
	t->w_post = gm_falloc((size_t)(t->L * t->H));
	t->w_qn = gm_falloc((size_t)(t->L * t->hd));
	t->w_kn = gm_falloc((size_t)(t->L * t->hd));
	t->w_final = gm_falloc((size_t)t->H);
	t->nt = gm_xcalloc((size_t)(t->L * 4 + 1), sizeof(*t->nt));
	load_norm(t->w_final, m->final_norm, t->H);
	f32_view(&t->nt[t->L * 4], t->w_final, t->H);
	t->fz = gm_xcalloc((size_t)(t->L * NP), sizeof(*t->fz));
	t->gr = gm_xcalloc((size_t)(t->L * NP), sizeof(*t->gr));
	t->lop = gm_xcalloc((size_t)(t->L * NP), sizeof(*t->lop));
	ret = 0;
	for (i = 0; i < t->L && !ret; i++) {
		const gm_layer_weights *lw = &m->layers[i];
		const gm_tensor *w[NP] = { lw->q_proj, lw->k_proj, lw->v_proj, lw->o_proj,
					   lw->gate_proj, lw->up_proj, lw->down_proj };

		load_norm(t->w_in + i * t->H, lw->input_norm, t->H);
		load_norm(t->w_post + i * t->H, lw->post_attn_norm, t->H);
		load_norm(t->w_qn + i * t->hd, lw->q_norm, t->hd);
		load_norm(t->w_kn + i * t->hd, lw->k_norm, t->hd);
		f32_view(&t->nt[i * 4 + 0], t->w_in + i * t->H, t->H);
		f32_view(&t->nt[i * 4 + 1], t->w_post + i * t->H, t->H);
		f32_view(&t->nt[i * 4 + 2], t->w_qn + i * t->hd, t->hd);
		f32_view(&t->nt[i * 4 + 3], t->w_kn + i * t->hd, t->hd);
		for (p = 0; p < NP && !ret; p++) {
			struct frozen *fz = &t->fz[i * NP + p];
			const gm_lora_module *md = &lora->mods[i * NP + p];

			fz->w = w[p];
			if (md->rank && (md->in != w[p]->shape[1] || md->out != w[p]->shape[0]))
				ret = gm_error_set(err, GM_EINVAL, "the adapter's %s of layer %lld does not fit the model",
						   gm_peft_proj_name((enum gm_peft_proj)p), (long long)i);
			if (!ret)
				ret = transpose_weight(t, fz, err);
			if (md->rank) {
				struct grads *g = &t->gr[i * NP + p];
				size_t na = (size_t)(md->rank * md->in), nb = (size_t)(md->out * md->rank);

				g->ga = gm_falloc(na);
				g->ma = gm_falloc(na);
				g->va = gm_falloc(na);
				g->gb = gm_falloc(nb);
				g->mb = gm_falloc(nb);
				g->vb = gm_falloc(nb);
				/* A and B are updated in place: the view stays valid */
				t->lop[i * NP + p] = (gm_op_lora){ md->rank, md->a, md->b, (float)md->scale };
			}
		}
	}
	t->head.w = m->lm_head;
	if (!ret)
		ret = transpose_weight(t, &t->head, err);
	if (ret) {
		gm_train_free(t);
		return ret;
	}

	/* the rope of positions 0 .. maxT - 1, as inference computes it */
	half = t->hd / 2;
	t->rope_cs = gm_falloc((size_t)(T * half));
	t->rope_sn = gm_falloc((size_t)(T * half));
	inv = gm_falloc((size_t)half);
	pos = gm_xmalloc((size_t)T * sizeof(*pos));
	for (p = 0; p < T; p++)
		pos[p] = (int32_t)p;
	gm_qwen3_rope_init(m, inv);
	gm_qwen3_rope_rows(inv, t->hd, pos, T, t->rope_cs, t->rope_sn);
	free(inv);
	free(pos);
	t->xs = gm_falloc((size_t)((t->L + 1) * T * t->H));
	t->n1 = gm_falloc((size_t)(T * t->H));
	t->x1 = gm_falloc((size_t)(T * t->H));
	t->n2 = gm_falloc((size_t)(T * t->H));
	t->tmp = gm_falloc((size_t)(T * t->H));
	t->q = gm_falloc((size_t)(T * t->QD));
	t->qr = gm_falloc((size_t)(T * t->QD));
	t->att = gm_falloc((size_t)(T * t->QD));
	t->k = gm_falloc((size_t)(T * t->KD));
	t->kr = gm_falloc((size_t)(T * t->KD));
	t->v = gm_falloc((size_t)(T * t->KD));
	t->g = gm_falloc((size_t)(T * t->I));
	t->up = gm_falloc((size_t)(T * t->I));
	t->act = gm_falloc((size_t)(T * t->I));
	t->probs = gm_falloc((size_t)(t->nh * T * T));
	for (p = 0; p < NP; p++)
		t->lu[p] = gm_falloc((size_t)(T * t->rmax));
	t->dx = gm_falloc((size_t)(T * t->H));
	t->dn = gm_falloc((size_t)(T * t->H));
	t->dq = gm_falloc((size_t)(T * t->QD));
	t->datt = gm_falloc((size_t)(T * t->QD));
	t->dk = gm_falloc((size_t)(T * t->KD));
	t->dv = gm_falloc((size_t)(T * t->KD));
	t->dg = gm_falloc((size_t)(T * t->I));
	t->dup = gm_falloc((size_t)(T * t->I));
	t->hg = gm_falloc((size_t)(GM_TRAIN_HEAD_CHUNK * t->H));
	t->hx = gm_falloc((size_t)(GM_TRAIN_HEAD_CHUNK * t->H));
	t->dhx = gm_falloc((size_t)(GM_TRAIN_HEAD_CHUNK * t->H));
	t->dhn = gm_falloc((size_t)(GM_TRAIN_HEAD_CHUNK * t->H));
	t->logits = gm_falloc((size_t)(GM_TRAIN_HEAD_CHUNK * t->V));
	t->row_loss = gm_xcalloc((size_t)T, sizeof(double));
	t->rows = gm_xcalloc((size_t)T, sizeof(int64_t));
	*out = t;
	return 0;
}

int64_t gm_train_steps_done(const gm_train *t)
{
	return t->step;
}

const float *gm_train_grad_a(const gm_train *t, int layer, enum gm_peft_proj p)
{
	return t->gr[layer * NP + p].ga;
}

const float *gm_train_grad_b(const gm_train *t, int layer, enum gm_peft_proj p)
{
	return t->gr[layer * NP + p].gb;
}

/* ---------------------------------------------------------------- one layer */

/*
 * Layer l as the model definition takes it: the frozen weights, the f32
 * norms, each adapted projection's LoRA as one delta over all T rows that
 * keeps u = x A^T in t->lu[p] (dl: [NP] storage for the deltas).
 */
static void layer_def(gm_train *t, int64_t l, int64_t T, gm_qwen3_layer *L, gm_op_delta *dl)
{
	int p;

	gm_qwen3_layer_of(t->m, l, L);
	L->input_norm = &t->nt[l * 4 + 0];
	L->post_norm = &t->nt[l * 4 + 1];
	L->q_norm = &t->nt[l * 4 + 2];
	L->k_norm = &t->nt[l * 4 + 3];
	for (p = 0; p < NP; p++) {
		const gm_op_lora *lo = &t->lop[l * NP + p];

		if (!lo->rank)
			continue;
		dl[p] = (gm_op_delta){ 0, T, lo, NULL, t->lu[p] };
		L->deltas[p] = &dl[p];
		L->n_deltas[p] = 1;
	}
}

/* Training keeps every activation the backward reads in a buffer of its own. */
static void layer_acts(gm_train *t, const float *x, float *y, int64_t T, gm_qwen3_acts *a)
{
	memset(a, 0, sizeof(*a));
	a->n = T;
	a->x = (float *)x; /* read only: x1 and y are other buffers */
	a->y = y;
	a->n1 = t->n1;
	a->q = t->q;
	a->k = t->k;
	a->v = t->v;
	a->qr = t->qr;
	a->kr = t->kr;
	a->att = t->att;
	a->x1 = t->x1;
	a->tmp = t->tmp;
	a->n2 = t->n2;
	a->g = t->g;
	a->up = t->up;
	a->act = t->act;
	a->cs = t->rope_cs;
	a->sn = t->rope_sn;
	a->probs = t->probs;
	a->rows = GM_OP_ROWS_TRAIN;
}

/* Forward of layer l from x ([T, H]) into y, keeping the activations the backward needs. */
static void layer_fwd(gm_train *t, int64_t l, const float *x, float *y, int64_t T)
{
	gm_qwen3_layer L;
	gm_op_delta dl[NP];
	gm_qwen3_acts a;

	layer_def(t, l, T, &L, dl);
	layer_acts(t, x, y, T, &a);
	gm_qwen3_layer_forward(t->ops, &t->dims, l, &L, &a);
}

/* Backward of layer l (after layer_fwd of the same layer): t->dx from dL/dy to dL/dx. */
static void layer_bwd(gm_train *t, int64_t l, const float *x, int64_t T)
{
	gm_qwen3_layer L;
	gm_op_delta dl[NP];
	gm_qwen3_acts a;
	gm_qwen3_grads g;
	int p;

	layer_def(t, l, T, &L, dl);
	layer_acts(t, x, NULL, T, &a);
	memset(&g, 0, sizeof(g));
	for (p = 0; p < NP; p++) {
		g.wt[p] = &t->fz[l * NP + p].wt_view;
		if (t->lop[l * NP + p].rank) {
			g.lora[p] = &t->lop[l * NP + p];
			g.u[p] = t->lu[p];
			g.ga[p] = t->gr[l * NP + p].ga;
			g.gb[p] = t->gr[l * NP + p].gb;
		}
	}
	g.dx = t->dx;
	g.dn = t->dn;
	g.dq = t->dq;
	g.dk = t->dk;
	g.dv = t->dv;
	g.datt = t->datt;
	g.dg = t->dg;
	g.dup = t->dup;
	gm_qwen3_layer_backward(t->ops, &t->dims, &L, &a, &g);
}

/* ---------------------------------------------------------------- loss */

/*
 * Loss of one sequence from the final residual stream xs[L]: the sum of
 * cross-entropies over its targets (*loss), and, when inv_norm is not 0,
 * t->dx = d(inv_norm * sum)/d(xs[L]).  The positions with a target are
 * gathered a chunk at a time.
 */
static void head(gm_train *t, const gm_train_seq *sq, float inv_norm, double *loss)
{
	const float *xl = t->xs + t->L * t->maxT * t->H;
	const gm_tensor *fin = &t->nt[t->L * 4];
	int64_t H = t->H, n = 0, c0, c, s;
	int32_t tg[GM_TRAIN_HEAD_CHUNK];

	for (s = 0; s + 1 < sq->n; s++)
		if (!sq->mask || sq->mask[s + 1])
			t->rows[n++] = s;
	if (inv_norm != 0)
		memset(t->dx, 0, (size_t)(sq->n * H) * sizeof(float));
	*loss = 0;
	for (c0 = 0; c0 < n; c0 += GM_TRAIN_HEAD_CHUNK) {
		int64_t nc = gm_imin64(GM_TRAIN_HEAD_CHUNK, n - c0);
		gm_op_linear_out lo = { t->head.w, t->logits, t->V, NULL, 0 };

		for (c = 0; c < nc; c++) {
			memcpy(t->hg + c * H, xl + t->rows[c0 + c] * H, (size_t)H * sizeof(float));
			tg[c] = sq->ids[t->rows[c0 + c] + 1];
		}
		gm_op_rmsnorm(t->ops, t->hx, t->hg, fin, nc, H, t->eps);
		gm_op_linear(t->ops, t->hx, H, nc, &lo, 1, GM_OP_ROWS_TRAIN);
		gm_op_cross_entropy(t->ops, t->logits, t->V, tg, nc, t->row_loss + c0, inv_norm);
		if (inv_norm == 0)
			continue;
		gm_op_linear_backward(t->ops, &t->head.wt_view, t->logits, nc, t->dhx, 0, NULL, NULL, NULL, NULL, NULL);
		gm_op_rmsnorm_backward(t->ops, t->dhn, 0, t->dhx, t->hg, fin, nc, H, t->eps);
		for (c = 0; c < nc; c++)
			memcpy(t->dx + t->rows[c0 + c] * H, t->dhn + c * H, (size_t)H * sizeof(float));
	}
	for (c = 0; c < n; c++)
		*loss += t->row_loss[c];
}

int64_t gm_train_seq_targets(const gm_train_seq *s)
{
	int64_t j, n = 0;

	for (j = 1; j < s->n; j++)
		n += !s->mask || s->mask[j];
	return n;
}

static int check_seq(const gm_train *t, const gm_train_seq *s, gm_error *err)
{
	int64_t j;

	if (s->n < 1 || s->n > t->maxT)
		return gm_error_set(err, GM_EINVAL, "a sequence of %lld tokens (1 to %lld allowed)", (long long)s->n,
				    (long long)t->maxT);
	for (j = 0; j < s->n; j++)
		if (s->ids[j] < 0 || s->ids[j] >= t->V)
			return gm_error_set(err, GM_EINVAL, "token id %d out of range (vocabulary of %lld)", s->ids[j],
					    (long long)t->V);
	return 0;
}

/* Forward (and backward when inv_norm != 0) of one sequence; *loss: its summed cross-entropy. */
static void seq_pass(gm_train *t, const gm_train_seq *sq, float inv_norm, double *loss)
{
	int64_t T = sq->n, H = t->H, l;
	size_t lstride = (size_t)(t->maxT * H);
	const gm_tensor *e = t->m->embed_tokens;

	gm_op_embed(t->ops, t->xs, e, sq->ids, T);
	for (l = 0; l < t->L; l++)
		layer_fwd(t, l, t->xs + l * lstride, t->xs + (l + 1) * lstride, T);
	head(t, sq, inv_norm, loss);
	if (inv_norm == 0)
		return;
	for (l = t->L - 1; l >= 0; l--) {
		/* the last layer's activations are still there; the others are recomputed */
		if (l != t->L - 1)
			layer_fwd(t, l, t->xs + l * lstride, t->xs + (l + 1) * lstride, T);
		layer_bwd(t, l, t->xs + l * lstride, T);
	}
}

int gm_train_grad(gm_train *t, const gm_train_seq *seqs, int n, double *loss, gm_error *err)
{
	int64_t count = 0, i;
	double sum = 0;
	int ret;

	for (i = 0; i < n; i++) {
		if ((ret = check_seq(t, &seqs[i], err)))
			return ret;
		count += gm_train_seq_targets(&seqs[i]);
	}
	if (!count)
		return gm_error_set(err, GM_EINVAL, "no token to predict in the batch (every loss mask is 0)");
	for (i = 0; i < t->L * NP; i++) {
		const gm_lora_module *md = &t->lora->mods[i];

		if (!md->rank)
			continue;
		memset(t->gr[i].ga, 0, (size_t)(md->rank * md->in) * sizeof(float));
		memset(t->gr[i].gb, 0, (size_t)(md->out * md->rank) * sizeof(float));
	}
	for (i = 0; i < n; i++) {
		double l;

		seq_pass(t, &seqs[i], (float)(1.0 / (double)count), &l);
		sum += l;
	}
	*loss = sum / (double)count;
	return 0;
}

int gm_train_eval(gm_train *t, const gm_train_seq *seqs, int n, double *loss, gm_error *err)
{
	int64_t count = 0, i;
	double sum = 0;
	int ret;

	for (i = 0; i < n; i++) {
		double l;

		if ((ret = check_seq(t, &seqs[i], err)))
			return ret;
		count += gm_train_seq_targets(&seqs[i]);
		seq_pass(t, &seqs[i], 0, &l);
		sum += l;
	}
	if (!count)
		return gm_error_set(err, GM_EINVAL, "no token to predict in the evaluation data");
	*loss = sum / (double)count;
	return 0;
}

static double sumsq(const float *g, int64_t n)
{
	double s = 0;
	int64_t i;

	for (i = 0; i < n; i++)
		s += (double)g[i] * g[i];
	return s;
}

static void scale_by(float *g, float c, int64_t n)
{
	int64_t i;

	for (i = 0; i < n; i++)
		g[i] *= c;
}

int gm_train_step(gm_train *t, const gm_train_seq *seqs, int n, gm_train_info *info, gm_error *err)
{
	double loss, ss = 0, norm, coef, lr;
	int64_t i, tokens = 0, targets = 0;
	int ret;

	if ((ret = gm_train_grad(t, seqs, n, &loss, err)))
		return ret;
	for (i = 0; i < n; i++) {
		tokens += seqs[i].n;
		targets += gm_train_seq_targets(&seqs[i]);
	}
	for (i = 0; i < t->L * NP; i++) {
		const gm_lora_module *md = &t->lora->mods[i];

		if (md->rank)
			ss += sumsq(t->gr[i].ga, md->rank * md->in) + sumsq(t->gr[i].gb, md->out * md->rank);
	}
	norm = sqrt(ss);
	if (!isfinite(norm))
		return gm_error_set(err, GM_ERROR, "step %lld: the gradient is not finite (loss %g); lower --lr",
				    (long long)t->step, loss);
	coef = gm_clip_coef(norm, t->o.grad_clip);
	lr = gm_schedule_lr(t->o.schedule, t->o.lr, t->o.warmup, t->o.n_steps, t->step);
	for (i = 0; i < t->L * NP; i++) {
		gm_lora_module *md = &t->lora->mods[i];
		struct grads *g = &t->gr[i];
		int64_t na = md->rank * md->in, nb = md->out * md->rank;

		if (!md->rank)
			continue;
		if (coef < 1.0) {
			scale_by(g->ga, (float)coef, na);
			scale_by(g->gb, (float)coef, nb);
		}
		gm_adamw_update(&t->adam, lr, t->step + 1, md->a, g->ga, g->ma, g->va, na);
		gm_adamw_update(&t->adam, lr, t->step + 1, md->b, g->gb, g->mb, g->vb, nb);
	}
	if (info) {
		info->step = t->step;
		info->loss = loss;
		info->grad_norm = norm;
		info->lr = lr;
		info->tokens = tokens;
		info->targets = targets;
	}
	t->step++;
	return 0;
}

/* ---------------------------------------------------------------- optimizer state */

#define GM_OPTIM_FILE "optimizer.safetensors"

int gm_train_save_state(const gm_train *t, const char *dir, gm_error *err)
{
	gm_st_writer *w = gm_st_writer_new();
	char name[200], base[160], num[32];
	char *path;
	int64_t i;
	int ret;

	snprintf(num, sizeof(num), "%lld", (long long)t->step);
	ret = gm_st_writer_set_metadata(w, "step", num, err);
	for (i = 0; !ret && i < t->L * NP; i++) {
		const gm_lora_module *md = &t->lora->mods[i];
		const struct grads *g = &t->gr[i];
		int64_t sa[2] = { md->rank, md->in }, sb[2] = { md->out, md->rank };
		const float *arr[4] = { g->ma, g->va, g->mb, g->vb };
		const char *which[4] = { "lora_A", "lora_A", "lora_B", "lora_B" };
		int k;

		if (!md->rank)
			continue;
		for (k = 0; k < 4 && !ret; k++) {
			tensor_name(base, sizeof(base), (int)(i / NP), (enum gm_peft_proj)(i % NP), which[k]);
			snprintf(name, sizeof(name), "%s.%s", base, k % 2 ? "exp_avg_sq" : "exp_avg");
			ret = gm_st_writer_add(w, name, GM_DTYPE_F32, 2, k < 2 ? sa : sb, arr[k], err);
		}
	}
	if (!ret) {
		path = gm_path_join(dir, GM_OPTIM_FILE);
		ret = gm_st_writer_write(w, path, err);
		free(path);
	}
	gm_st_writer_free(w);
	return ret;
}

int gm_train_load_state(gm_train *t, const char *dir, gm_error *err)
{
	char *path = gm_path_join(dir, GM_OPTIM_FILE);
	char name[200], base[160];
	gm_st_file *f = NULL;
	const char *step;
	char *end;
	int64_t i;
	long long st;
	int ret;

	ret = gm_st_open(path, &f, err);
	if (ret)
		goto out;
	step = gm_st_metadata(f, "step");
	st = step ? strtoll(step, &end, 10) : -1;
	if (!step || *end || st < 0) {
		ret = gm_error_set(err, GM_EFORMAT, "%s: no valid \"step\" in the metadata", path);
		goto out;
	}
	for (i = 0; !ret && i < t->L * NP; i++) {
		const gm_lora_module *md = &t->lora->mods[i];
		struct grads *g = &t->gr[i];
		float *arr[4] = { g->ma, g->va, g->mb, g->vb };
		const char *which[4] = { "lora_A", "lora_A", "lora_B", "lora_B" };
		int k;

		if (!md->rank)
			continue;
		for (k = 0; k < 4 && !ret; k++) {
			const gm_tensor *ts;
			uint64_t numel = (uint64_t)(k < 2 ? md->rank * md->in : md->out * md->rank);

			tensor_name(base, sizeof(base), (int)(i / NP), (enum gm_peft_proj)(i % NP), which[k]);
			snprintf(name, sizeof(name), "%s.%s", base, k % 2 ? "exp_avg_sq" : "exp_avg");
			ts = gm_st_find(f, name);
			if (!ts || ts->dtype != GM_DTYPE_F32 || ts->numel != numel)
				ret = gm_error_set(err, GM_EFORMAT, "%s: %s is missing or does not fit the adapter",
						   path, name);
			else
				memcpy(arr[k], ts->data, numel * sizeof(float));
		}
	}
	if (!ret)
		t->step = st;
out:
	gm_st_close(f);
	free(path);
	return ret;
}
