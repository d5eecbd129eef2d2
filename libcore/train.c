/*
 * train.c - LoRA training: forward with saved activations, backward through
 * the whole decoder, AdamW (see train.h).
 *
 * One decoder layer (x: [T, hidden], the residual stream entering it):
 *
 *   n1 = rmsnorm(x, w_in)
 *   q, k, v = lin_q(n1), lin_k(n1), lin_v(n1)        lin_p(x) = x W^T + s (x A^T) B^T
 *   qr, kr = rope(rmsnorm_head(q, w_qn)), rope(rmsnorm_head(k, w_kn))
 *   P_h = softmax(qr_h kr_g^T / sqrt(hd), causal);  o_h = P_h v_g     (g: the kv head of h)
 *   x1 = x + lin_o(o)
 *   n2 = rmsnorm(x1, w_post)
 *   a = silu(lin_gate(n2)) * lin_up(n2)
 *   x2 = x1 + lin_down(a)
 *
 * and its backward, given dx2 = dL/dx2 (the same buffer becomes dL/dx):
 *
 *   lin backward (dY: [T, out], input X, u = X A^T saved by the forward):
 *     dB += s dY^T u            gu = s dY B           dA += gu^T X
 *     dX  = dY W + gu A         (dY W as gm_matmul with W^T as the weight)
 *   silu: dg = da * up * sig(g) (1 + g (1 - sig(g))), dup = da * silu(g)
 *   rmsnorm (y = x r w, r = (mean x^2 + eps)^-1/2):
 *     dx = r (dy w) - x r^3 sum(dy w x) / n
 *   attention, per head and query row i (P row p, dO row do; computed as
 *   matrix products, see att_fwd_run):
 *     dp_j = do . v_j;  ds_j = p_j (dp_j - sum_k p_k dp_k) / sqrt(hd)
 *     dq_i = sum_j ds_j k_j;  dk_j += ds_j q_i;  dv_j += p_j do
 *   rope: the inverse rotation (the transpose of a rotation).
 *
 * The frozen weights are used where gm_model mapped them for X W^T; for
 * dY W each is transposed once, at gm_train_new, into a copy of the same
 * dtype ([in, out]), so both directions run on gm_matmul.
 */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "buf.h"
#include "fs.h"
#include "json.h"
#include "kernels.h"
#include "rng.h"
#include "safetensors.h"
#include "threadpool.h"

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
	gm_threadpool *pool;
	int nth;
	int64_t H, QD, KD, hd, nh, nkv, I, V, L, maxT, rmax, max_in;
	float eps, att_scale;
	int64_t step;

	float *w_in, *w_post, *w_qn, *w_kn, *w_final; /* norm weights in f32 */
	struct frozen *fz;       /* [L * NP] */
	struct frozen head;      /* lm_head (or the tied embedding) */
	struct grads *gr;        /* [L * NP] */

	float *rope_cs, *rope_sn; /* [maxT, hd / 2] */
	float *xs;               /* [L + 1, maxT, H]: the residual stream entering each layer, then the last */

	/* one layer's activations */
	float *n1, *q, *k, *v, *qr, *kr, *att, *x1, *n2, *g, *up, *act, *probs;
	float *lu[NP];           /* x A^T per projection, [maxT, rmax] */
	/* backward */
	float *dx, *dn, *dq, *dk, *dv, *datt, *dg, *dup, *tmp, *tmp2, *gu, *lt;
	float *at, *bt;          /* A^T [in, r], B^T [r, out] of the module being differentiated */

	float *xt, *xt2;         /* packed activations */
	float **panel;           /* per thread */
	float **axt;             /* per thread: packed attention operand, gm_matmul_xt_len(maxT, max(maxT, hd)) */
	float **amat;            /* per thread: [maxT, maxT] (dP, then dS) */
	float **aw;              /* per thread: [hd, maxT] (V^T or K^T of one kv head) */
	/* loss head */
	float *hx, *logits, *hxt, *dhx;
	double *row_loss;
	int64_t *rows;           /* positions with a target */
};

static float *falloc(size_t n)
{
	return gm_xcalloc(n ? n : 1, sizeof(float));
}

static inline int64_t imin(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

static inline int64_t imax(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

/* ---- parallel helpers */

struct mm_job {
	gm_train *t;
	float *y;
	int64_t ldy, n, ldw, in;
	const float *xt;
	const void *w;
	enum gm_dtype wt;
};

static void mm_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct mm_job *j = ctx;

	gm_matmul(j->y, j->ldy, j->xt, j->n, j->w, j->wt, j->ldw, j->in, b, e, j->t->panel[th]);
}

/* Y[s, r] = sum_k W[r, k] X[s, k] for s < n, r < rows; W: [rows, in] of type wt, X packed in xt. */
static void mm(gm_train *t, float *y, int64_t ldy, const float *xt, int64_t n, const void *w, enum gm_dtype wt,
	       int64_t rows, int64_t in)
{
	struct mm_job j = { t, y, ldy, n, in, in, xt, w, wt };
	int64_t grain = (int64_t)(gm_matmul_panel_len(in) / (size_t)in);

	/* enough chunks for every thread even when the rows are few */
	if (rows / grain < 2 * t->nth)
		grain = imax(GM_MATMUL_TR, (rows / (2 * t->nth)) / GM_MATMUL_TR * GM_MATMUL_TR);
	gm_threadpool_for(t->pool, rows, grain, mm_run, &j);
}

static void add_to(float *y, const float *x, int64_t n)
{
	int64_t i;

	for (i = 0; i < n; i++)
		y[i] += x[i];
}

/* ---- setup */

struct tr_job {
	void *dst;
	const void *src;
	size_t el;
	int64_t rows, cols;
};

static void tr_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct tr_job *j = ctx;

	(void)th;
	gm_transpose(j->dst, j->src, j->el, j->rows, j->cols, b, e);
}

static int transpose_weight(gm_train *t, const gm_tensor *w, void **out, gm_error *err)
{
	size_t el = w->dtype == GM_DTYPE_F32 ? 4 : 2;
	struct tr_job j;

	if (w->dtype != GM_DTYPE_F32 && w->dtype != GM_DTYPE_BF16 && w->dtype != GM_DTYPE_F16)
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: dtype not supported for training", w->name);
	j.dst = malloc(el * w->numel);
	if (!j.dst)
		return gm_error_set(err, GM_ENOMEM, "out of memory for the transposed %s", w->name);
	j.src = w->data;
	j.el = el;
	j.rows = w->shape[0];
	j.cols = w->shape[1];
	gm_threadpool_for(t->pool, j.cols, 32, tr_run, &j);
	*out = j.dst;
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
	for (i = 0; i < t->nth; i++) {
		if (t->panel)
			free(t->panel[i]);
		if (t->axt)
			free(t->axt[i]);
		if (t->amat)
			free(t->amat[i]);
		if (t->aw)
			free(t->aw[i]);
	}
	free(t->axt);
	free(t->amat);
	free(t->aw);
	free(t->panel);
	for (i = 0; i < NP; i++)
		free(t->lu[i]);
	free(t->w_in); free(t->w_post); free(t->w_qn); free(t->w_kn); free(t->w_final);
	free(t->rope_cs); free(t->rope_sn); free(t->xs);
	free(t->n1); free(t->q); free(t->k); free(t->v); free(t->qr); free(t->kr); free(t->att);
	free(t->x1); free(t->n2); free(t->g); free(t->up); free(t->act); free(t->probs);
	free(t->dx); free(t->dn); free(t->dq); free(t->dk); free(t->dv); free(t->datt); free(t->dg);
	free(t->dup); free(t->tmp); free(t->tmp2); free(t->gu); free(t->lt); free(t->at); free(t->bt);
	free(t->xt); free(t->xt2); free(t->hx); free(t->logits); free(t->hxt); free(t->dhx);
	free(t->row_loss); free(t->rows);
	gm_threadpool_free(t->pool);
	free(t);
}

int gm_train_new(const gm_model *m, gm_lora *lora, const gm_train_opts *o, gm_train **out, gm_error *err)
{
	const gm_model_config *c = &m->config;
	gm_train *t;
	int64_t i, p, T, half;
	size_t panel_len;
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
	t = gm_xcalloc(1, sizeof(*t));
	t->m = m;
	t->lora = lora;
	t->o = *o;
	t->adam.beta1 = o->beta1 > 0 ? o->beta1 : 0.9;
	t->adam.beta2 = o->beta2 > 0 ? o->beta2 : 0.999;
	t->adam.eps = o->eps > 0 ? o->eps : 1e-8;
	t->adam.weight_decay = o->weight_decay;
	t->nth = o->n_threads > 0 ? o->n_threads : gm_cpu_count();
	if ((ret = gm_threadpool_new(t->nth, &t->pool, err))) {
		free(t);
		return ret;
	}
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
	t->att_scale = (float)(1.0 / sqrt((double)t->hd));
	t->max_in = imax(imax(t->H, t->QD), imax(t->I, t->KD));
	t->rmax = 1;
	for (i = 0; i < t->L * NP; i++)
		t->rmax = imax(t->rmax, lora->mods[i].rank);

	t->w_in = falloc((size_t)(t->L * t->H));
	t->w_post = falloc((size_t)(t->L * t->H));
	t->w_qn = falloc((size_t)(t->L * t->hd));
	t->w_kn = falloc((size_t)(t->L * t->hd));
	t->w_final = falloc((size_t)t->H);
	load_norm(t->w_final, m->final_norm, t->H);
	t->fz = gm_xcalloc((size_t)(t->L * NP), sizeof(*t->fz));
	t->gr = gm_xcalloc((size_t)(t->L * NP), sizeof(*t->gr));
	ret = 0;
	for (i = 0; i < t->L && !ret; i++) {
		const gm_layer_weights *lw = &m->layers[i];
		const gm_tensor *w[NP] = { lw->q_proj, lw->k_proj, lw->v_proj, lw->o_proj,
					   lw->gate_proj, lw->up_proj, lw->down_proj };

		load_norm(t->w_in + i * t->H, lw->input_norm, t->H);
		load_norm(t->w_post + i * t->H, lw->post_attn_norm, t->H);
		load_norm(t->w_qn + i * t->hd, lw->q_norm, t->hd);
		load_norm(t->w_kn + i * t->hd, lw->k_norm, t->hd);
		for (p = 0; p < NP && !ret; p++) {
			struct frozen *fz = &t->fz[i * NP + p];
			const gm_lora_module *md = &lora->mods[i * NP + p];

			fz->w = w[p];
			if (md->rank && (md->in != w[p]->shape[1] || md->out != w[p]->shape[0]))
				ret = gm_error_set(err, GM_EINVAL, "the adapter's %s of layer %lld does not fit the model",
						   gm_peft_proj_name((enum gm_peft_proj)p), (long long)i);
			if (!ret)
				ret = transpose_weight(t, w[p], &fz->wt, err);
			if (md->rank) {
				struct grads *g = &t->gr[i * NP + p];
				size_t na = (size_t)(md->rank * md->in), nb = (size_t)(md->out * md->rank);

				g->ga = falloc(na);
				g->ma = falloc(na);
				g->va = falloc(na);
				g->gb = falloc(nb);
				g->mb = falloc(nb);
				g->vb = falloc(nb);
			}
		}
	}
	t->head.w = m->lm_head;
	if (!ret)
		ret = transpose_weight(t, m->lm_head, &t->head.wt, err);
	if (ret) {
		gm_train_free(t);
		return ret;
	}

	half = t->hd / 2;
	t->rope_cs = falloc((size_t)(T * half));
	t->rope_sn = falloc((size_t)(T * half));
	for (i = 0; i < half; i++) {
		/* inv_freq rounded to f32 as transformers keeps it, the angle in double */
		float inv = (float)(1.0 / pow(c->rope_theta, (double)(2 * i) / (double)t->hd));

		for (p = 0; p < T; p++) {
			double a = (double)p * (double)inv;

			t->rope_cs[p * half + i] = (float)cos(a);
			t->rope_sn[p * half + i] = (float)sin(a);
		}
	}
	t->xs = falloc((size_t)((t->L + 1) * T * t->H));
	t->n1 = falloc((size_t)(T * t->H));
	t->x1 = falloc((size_t)(T * t->H));
	t->n2 = falloc((size_t)(T * t->H));
	t->q = falloc((size_t)(T * t->QD));
	t->qr = falloc((size_t)(T * t->QD));
	t->att = falloc((size_t)(T * t->QD));
	t->k = falloc((size_t)(T * t->KD));
	t->kr = falloc((size_t)(T * t->KD));
	t->v = falloc((size_t)(T * t->KD));
	t->g = falloc((size_t)(T * t->I));
	t->up = falloc((size_t)(T * t->I));
	t->act = falloc((size_t)(T * t->I));
	t->probs = falloc((size_t)(t->nh * T * T));
	for (p = 0; p < NP; p++)
		t->lu[p] = falloc((size_t)(T * t->rmax));
	t->dx = falloc((size_t)(T * t->H));
	t->dn = falloc((size_t)(T * t->H));
	t->dq = falloc((size_t)(T * t->QD));
	t->datt = falloc((size_t)(T * t->QD));
	t->dk = falloc((size_t)(T * t->KD));
	t->dv = falloc((size_t)(T * t->KD));
	t->dg = falloc((size_t)(T * t->I));
	t->dup = falloc((size_t)(T * t->I));
	t->tmp = falloc((size_t)(T * t->max_in));
	t->tmp2 = falloc((size_t)(T * t->max_in));
	t->gu = falloc((size_t)(T * t->rmax));
	t->lt = falloc((size_t)(T * t->rmax));
	t->at = falloc((size_t)(t->max_in * t->rmax));
	t->bt = falloc((size_t)(t->max_in * t->rmax));
	t->xt = falloc(gm_matmul_xt_len(T, t->max_in));
	t->xt2 = falloc(gm_matmul_xt_len(T, t->rmax));
	panel_len = gm_matmul_panel_len(t->max_in);
	if (gm_matmul_panel_len(t->V) > panel_len)
		panel_len = gm_matmul_panel_len(t->V);
	if (gm_matmul_panel_len(T) > panel_len)
		panel_len = gm_matmul_panel_len(T);
	t->panel = gm_xcalloc((size_t)t->nth, sizeof(float *));
	t->axt = gm_xcalloc((size_t)t->nth, sizeof(float *));
	t->amat = gm_xcalloc((size_t)t->nth, sizeof(float *));
	t->aw = gm_xcalloc((size_t)t->nth, sizeof(float *));
	for (i = 0; i < t->nth; i++) {
		t->panel[i] = falloc(panel_len);
		t->axt[i] = falloc(gm_matmul_xt_len(T, imax(T, t->hd)));
		t->amat[i] = falloc((size_t)(T * T));
		t->aw[i] = falloc((size_t)(t->hd * T));
	}
	t->hx = falloc((size_t)(GM_TRAIN_HEAD_CHUNK * t->H));
	t->dhx = falloc((size_t)(GM_TRAIN_HEAD_CHUNK * t->H));
	t->logits = falloc((size_t)(GM_TRAIN_HEAD_CHUNK * t->V));
	t->hxt = falloc(gm_matmul_xt_len(GM_TRAIN_HEAD_CHUNK, imax(t->V, t->H)));
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

/* ---------------------------------------------------------------- linear layers */

/*
 * Y = X W^T + s (X A^T) B^T for projection p of layer l, with X
 * ([T, in]) already packed in t->xt.  u = X A^T is kept in t->lu[p].
 */
static void lin_fwd(gm_train *t, int64_t l, int p, float *y, int64_t T)
{
	const struct frozen *fz = &t->fz[l * NP + p];
	const gm_lora_module *md = &t->lora->mods[l * NP + p];
	int64_t in = fz->w->shape[1], out = fz->w->shape[0], s, r;

	mm(t, y, out, t->xt, T, fz->w->data, fz->w->dtype, out, in);
	if (!md->rank)
		return;
	r = md->rank;
	mm(t, t->lu[p], r, t->xt, T, md->a, GM_DTYPE_F32, r, in);
	for (s = 0; s < T * r; s++)
		t->lt[s] = (float)md->scale * t->lu[p][s];
	gm_matmul_pack_all(t->pool, t->xt2, t->lt, r, T, r);
	mm(t, t->tmp2, out, t->xt2, T, md->b, GM_DTYPE_F32, out, r);
	add_to(y, t->tmp2, T * out);
}

/* C += A^T B (gm_matmul_tn), split over the rows of C or, when they are few, its columns. */
struct tn_job {
	float *c;
	const float *a, *b;
	int64_t ldc, lda, ldb, K, M, N;
	int by_cols;
};

static void tn_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct tn_job *j = ctx;

	(void)th;
	if (j->by_cols)
		gm_matmul_tn(j->c, j->ldc, j->a, j->lda, j->b, j->ldb, j->K, 0, j->M, b, e);
	else
		gm_matmul_tn(j->c, j->ldc, j->a, j->lda, j->b, j->ldb, j->K, b, e, 0, j->N);
}

static void matmul_tn(gm_train *t, float *c, int64_t ldc, const float *a, int64_t lda, const float *b, int64_t ldb,
		      int64_t K, int64_t M, int64_t N)
{
	struct tn_job j = { c, a, b, ldc, lda, ldb, K, M, N, M < 8 * t->nth };

	if (j.by_cols)
		gm_threadpool_for(t->pool, N, 64, tn_run, &j);
	else
		gm_threadpool_for(t->pool, M, 16, tn_run, &j);
}

/*
 * Backward of lin_fwd: dY ([T, out]) is packed into t->xt here; X is the
 * forward's input.  dX ([T, in]) is set, or added to when add.  The LoRA
 * gradients are accumulated.
 */
static void lin_bwd(gm_train *t, int64_t l, int p, const float *dy, const float *x, float *dx, int add, int64_t T)
{
	const struct frozen *fz = &t->fz[l * NP + p];
	const gm_lora_module *md = &t->lora->mods[l * NP + p];
	struct grads *g = &t->gr[l * NP + p];
	int64_t in = fz->w->shape[1], out = fz->w->shape[0], r, s;

	gm_matmul_pack_all(t->pool, t->xt, dy, out, T, out);
	/* dX = dY W, with W^T [in, out] as the weight */
	mm(t, add ? t->tmp2 : dx, in, t->xt, T, fz->wt, fz->w->dtype, in, out);
	if (add)
		add_to(dx, t->tmp2, T * in);
	if (!md->rank)
		return;
	r = md->rank;
	/* dB += dY^T (s u) */
	for (s = 0; s < T * r; s++)
		t->lt[s] = (float)md->scale * t->lu[p][s];
	matmul_tn(t, g->gb, r, dy, out, t->lt, r, T, out, r);
	/* gu = s dY B, with B^T [r, out] as the weight */
	gm_transpose(t->bt, md->b, 4, out, r, 0, r);
	mm(t, t->gu, r, t->xt, T, t->bt, GM_DTYPE_F32, r, out);
	for (s = 0; s < T * r; s++)
		t->gu[s] *= (float)md->scale;
	/* dA += gu^T X */
	matmul_tn(t, g->ga, in, t->gu, r, x, in, T, r, in);
	/* dX += gu A, with A^T [in, r] as the weight */
	gm_transpose(t->at, md->a, 4, r, in, 0, in);
	gm_matmul_pack_all(t->pool, t->xt2, t->gu, r, T, r);
	mm(t, t->tmp2, in, t->xt2, T, t->at, GM_DTYPE_F32, in, r);
	add_to(dx, t->tmp2, T * in);
}

/* ---------------------------------------------------------------- norms, rope */

static void rms_rows(float *out, const float *x, const float *w, int64_t T, int64_t n, int64_t ld, float eps)
{
	int64_t s;

	for (s = 0; s < T; s++)
		gm_rmsnorm(out + s * ld, x + s * ld, w, GM_DTYPE_F32, n, eps);
}

/* dx (+)= backward of y = rmsnorm(x) * w for one row of n, given dy. */
static void rms_bwd(float *dx, int add, const float *dy, const float *x, const float *w, int64_t n, float eps)
{
	double ss = 0, dot = 0, r, c;
	int64_t i;

	for (i = 0; i < n; i++) {
		ss += (double)x[i] * x[i];
		dot += (double)dy[i] * w[i] * x[i];
	}
	r = 1.0 / sqrt(ss / (double)n + (double)eps);
	c = r * r * r * dot / (double)n;
	for (i = 0; i < n; i++) {
		float v = (float)(r * (double)(dy[i] * w[i]) - c * (double)x[i]);

		dx[i] = add ? dx[i] + v : v;
	}
}

static void rope_fwd(float *v, const float *cs, const float *sn, int64_t d)
{
	gm_rope(v, cs, sn, d);
}

static void rope_bwd(float *dv, const float *cs, const float *sn, int64_t d)
{
	int64_t j, half = d / 2;

	for (j = 0; j < half; j++) {
		float a = dv[j], b = dv[j + half];

		dv[j] = a * cs[j] + b * sn[j];
		dv[j + half] = b * cs[j] - a * sn[j];
	}
}

/* ---------------------------------------------------------------- attention */

/* dst [cols, rows] = src^T, src [rows, cols] with row stride ld (f32). */
static void transpose_strided(float *dst, const float *src, int64_t rows, int64_t cols, int64_t ld)
{
	int64_t r, c;

	for (r = 0; r < rows; r++)
		for (c = 0; c < cols; c++)
			dst[c * rows + r] = src[r * ld + c];
}

/*
 * Attention runs one head (forward) or one kv head (backward) per task,
 * single-threaded inside, on the matmul kernels: the products over the
 * head dimension or over positions are gm_matmul (Y = X W^T, with K, V,
 * or their transposes as the weight, read in place as f32) and
 * gm_matmul_tn (C += A^T B).  The full T x T products are computed and the
 * causal mask applied after: twice the flops of a triangular loop, at the
 * kernel's speed.  P and dS are zero above the diagonal.
 */
struct att_job {
	gm_train *t;
	int64_t T;
};

/* Heads [b, e): probabilities P_h = softmax(q k^T * scale, causal) and outputs o_h = P_h v. */
static void att_fwd_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct att_job *j = ctx;
	gm_train *t = j->t;
	int64_t h, i, k, T = j->T, hd = t->hd, grp = t->nh / t->nkv;
	float *xt = t->axt[th], *vt = t->aw[th], *panel = t->panel[th];

	for (h = b; h < e; h++) {
		int64_t g = h / grp;
		float *P = t->probs + h * T * T;

		/* S[i, k] = q_i . k_k: X = q_h [T, hd], W = k_g [T, hd] */
		gm_matmul_pack(xt, t->qr + h * hd, t->QD, T, hd, 0, (T + GM_MATMUL_TB - 1) / GM_MATMUL_TB);
		gm_matmul(P, T, xt, T, t->kr + g * hd, GM_DTYPE_F32, t->KD, hd, 0, T, panel);
		for (i = 0; i < T; i++) {
			float *p = P + i * T;

			for (k = 0; k <= i; k++)
				p[k] *= t->att_scale;
			gm_softmax(p, i + 1);
			memset(p + i + 1, 0, (size_t)(T - i - 1) * sizeof(float));
		}
		/* o_h = P v_g: X = P [T, T], W = v_g^T [hd, T] */
		transpose_strided(vt, t->v + g * hd, T, hd, t->KD);
		gm_matmul_pack(xt, P, T, T, T, 0, (T + GM_MATMUL_TB - 1) / GM_MATMUL_TB);
		gm_matmul(t->att + h * hd, t->QD, xt, T, vt, GM_DTYPE_F32, T, T, 0, hd, panel);
	}
}

/* KV heads [b, e): dq of their query heads, dk, dv (the heads of a group in order). */
static void att_bwd_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct att_job *j = ctx;
	gm_train *t = j->t;
	int64_t g, h, i, k, T = j->T, hd = t->hd, grp = t->nh / t->nkv;
	float *xt = t->axt[th], *wt = t->aw[th], *panel = t->panel[th], *dS = t->amat[th];

	for (g = b; g < e; g++) {
		for (i = 0; i < T; i++) {
			memset(t->dk + i * t->KD + g * hd, 0, (size_t)hd * sizeof(float));
			memset(t->dv + i * t->KD + g * hd, 0, (size_t)hd * sizeof(float));
		}
		for (h = g * grp; h < (g + 1) * grp; h++) {
			const float *P = t->probs + h * T * T;

			/* dP = dO_h v_g^T: X = dO_h [T, hd], W = v_g [T, hd] */
			gm_matmul_pack(xt, t->datt + h * hd, t->QD, T, hd, 0, (T + GM_MATMUL_TB - 1) / GM_MATMUL_TB);
			gm_matmul(dS, T, xt, T, t->v + g * hd, GM_DTYPE_F32, t->KD, hd, 0, T, panel);
			/* dS = P (dP - rowsum(P dP)) * scale, zero above the diagonal */
			for (i = 0; i < T; i++) {
				const float *p = P + i * T;
				float *d = dS + i * T;
				double sum = 0;

				for (k = 0; k <= i; k++)
					sum += (double)p[k] * d[k];
				for (k = 0; k <= i; k++)
					d[k] = p[k] * (d[k] - (float)sum) * t->att_scale;
				memset(d + i + 1, 0, (size_t)(T - i - 1) * sizeof(float));
			}
			/* dv_g += P^T dO_h;  dk_g += dS^T q_h */
			gm_matmul_tn(t->dv + g * hd, t->KD, P, T, t->datt + h * hd, t->QD, T, 0, T, 0, hd);
			gm_matmul_tn(t->dk + g * hd, t->KD, dS, T, t->qr + h * hd, t->QD, T, 0, T, 0, hd);
			/* dq_h = dS k_g: X = dS [T, T], W = k_g^T [hd, T] */
			transpose_strided(wt, t->kr + g * hd, T, hd, t->KD);
			gm_matmul_pack(xt, dS, T, T, T, 0, (T + GM_MATMUL_TB - 1) / GM_MATMUL_TB);
			gm_matmul(t->dq + h * hd, t->QD, xt, T, wt, GM_DTYPE_F32, T, T, 0, hd, panel);
		}
	}
}

/* ---------------------------------------------------------------- one layer */

/* Per-position elementwise work, split over positions (rows) among the threads. */
enum row_op { ROW_QK_FWD, ROW_QK_BWD, ROW_SILU_BWD };

struct row_job {
	gm_train *t;
	int64_t l;
	enum row_op op;
};

static void row_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct row_job *j = ctx;
	gm_train *t = j->t;
	int64_t hd = t->hd, half = hd / 2, s, h, i, l = j->l;
	float tmp[512];

	(void)th;
	for (s = b; s < e; s++) {
		const float *cs = t->rope_cs + s * half, *sn = t->rope_sn + s * half;

		switch (j->op) {
		case ROW_QK_FWD:
			/* qr, kr = rope(rmsnorm per head) */
			for (h = 0; h < t->nh; h++) {
				float *qr = t->qr + s * t->QD + h * hd;

				gm_rmsnorm(qr, t->q + s * t->QD + h * hd, t->w_qn + l * hd, GM_DTYPE_F32, hd, t->eps);
				rope_fwd(qr, cs, sn, hd);
			}
			for (h = 0; h < t->nkv; h++) {
				float *kr = t->kr + s * t->KD + h * hd;

				gm_rmsnorm(kr, t->k + s * t->KD + h * hd, t->w_kn + l * hd, GM_DTYPE_F32, hd, t->eps);
				rope_fwd(kr, cs, sn, hd);
			}
			break;
		case ROW_QK_BWD:
			/* dq, dk through the inverse rotation, then the per-head norms */
			for (h = 0; h < t->nh; h++) {
				float *d = t->dq + s * t->QD + h * hd;

				rope_bwd(d, cs, sn, hd);
				memcpy(tmp, d, (size_t)hd * sizeof(float));
				rms_bwd(d, 0, tmp, t->q + s * t->QD + h * hd, t->w_qn + l * hd, hd, t->eps);
			}
			for (h = 0; h < t->nkv; h++) {
				float *d = t->dk + s * t->KD + h * hd;

				rope_bwd(d, cs, sn, hd);
				memcpy(tmp, d, (size_t)hd * sizeof(float));
				rms_bwd(d, 0, tmp, t->k + s * t->KD + h * hd, t->w_kn + l * hd, hd, t->eps);
			}
			break;
		case ROW_SILU_BWD:
			/* dg holds d(act) on entry: dup = da silu(g), dg = da up silu'(g) */
			for (i = s * t->I; i < (s + 1) * t->I; i++) {
				float gv = t->g[i], sg = 1.0f / (1.0f + expf(-gv)), da = t->dg[i];

				t->dup[i] = da * gv * sg;
				t->dg[i] = da * t->up[i] * sg * (1.0f + gv * (1.0f - sg));
			}
			break;
		}
	}
}

static void rows_op(gm_train *t, int64_t l, enum row_op op, int64_t T)
{
	struct row_job j = { t, l, op };

	gm_threadpool_for(t->pool, T, 8, row_run, &j);
}

/* Forward of layer l from x ([T, H]) into y, keeping the activations the backward needs. */
static void layer_fwd(gm_train *t, int64_t l, const float *x, float *y, int64_t T)
{
	int64_t H = t->H, s;
	struct att_job aj = { t, T };

	rms_rows(t->n1, x, t->w_in + l * H, T, H, H, t->eps);
	gm_matmul_pack_all(t->pool, t->xt, t->n1, H, T, H);
	lin_fwd(t, l, GM_PEFT_Q_PROJ, t->q, T);
	lin_fwd(t, l, GM_PEFT_K_PROJ, t->k, T);
	lin_fwd(t, l, GM_PEFT_V_PROJ, t->v, T);
	rows_op(t, l, ROW_QK_FWD, T);
	gm_threadpool_for(t->pool, t->nh, 1, att_fwd_run, &aj);
	gm_matmul_pack_all(t->pool, t->xt, t->att, t->QD, T, t->QD);
	lin_fwd(t, l, GM_PEFT_O_PROJ, t->tmp, T);
	for (s = 0; s < T * H; s++)
		t->x1[s] = x[s] + t->tmp[s];
	rms_rows(t->n2, t->x1, t->w_post + l * H, T, H, H, t->eps);
	gm_matmul_pack_all(t->pool, t->xt, t->n2, H, T, H);
	lin_fwd(t, l, GM_PEFT_GATE_PROJ, t->g, T);
	lin_fwd(t, l, GM_PEFT_UP_PROJ, t->up, T);
	memcpy(t->act, t->g, (size_t)(T * t->I) * sizeof(float));
	gm_silu_mul(t->act, t->up, T * t->I);
	gm_matmul_pack_all(t->pool, t->xt, t->act, t->I, T, t->I);
	lin_fwd(t, l, GM_PEFT_DOWN_PROJ, t->tmp, T);
	for (s = 0; s < T * H; s++)
		y[s] = t->x1[s] + t->tmp[s];
}

/* Backward of layer l (after layer_fwd of the same layer): t->dx from dL/dy to dL/dx. */
static void layer_bwd(gm_train *t, int64_t l, const float *x, int64_t T)
{
	int64_t H = t->H, s;
	struct att_job aj = { t, T };

	/* MLP */
	lin_bwd(t, l, GM_PEFT_DOWN_PROJ, t->dx, t->act, t->dg, 0, T); /* dg holds d(act) for now */
	rows_op(t, l, ROW_SILU_BWD, T);
	lin_bwd(t, l, GM_PEFT_GATE_PROJ, t->dg, t->n2, t->dn, 0, T);
	lin_bwd(t, l, GM_PEFT_UP_PROJ, t->dup, t->n2, t->dn, 1, T);
	for (s = 0; s < T; s++)
		rms_bwd(t->dx + s * H, 1, t->dn + s * H, t->x1 + s * H, t->w_post + l * H, H, t->eps);
	/* attention */
	lin_bwd(t, l, GM_PEFT_O_PROJ, t->dx, t->att, t->datt, 0, T);
	gm_threadpool_for(t->pool, t->nkv, 1, att_bwd_run, &aj);
	rows_op(t, l, ROW_QK_BWD, T);
	lin_bwd(t, l, GM_PEFT_Q_PROJ, t->dq, t->n1, t->dn, 0, T);
	lin_bwd(t, l, GM_PEFT_K_PROJ, t->dk, t->n1, t->dn, 1, T);
	lin_bwd(t, l, GM_PEFT_V_PROJ, t->dv, t->n1, t->dn, 1, T);
	for (s = 0; s < T; s++)
		rms_bwd(t->dx + s * H, 1, t->dn + s * H, x + s * H, t->w_in + l * H, H, t->eps);
}

/* ---------------------------------------------------------------- loss */

struct ce_job {
	gm_train *t;
	const int32_t *target; /* [n] */
	double *loss;          /* [n] */
	float inv_norm;        /* dlogits scale; 0: no gradient */
};

/* Rows [b, e) of t->logits: cross-entropy, and the logits replaced by dL/dlogits. */
static void ce_run(void *ctx, int64_t b, int64_t e, int th)
{
	struct ce_job *j = ctx;
	int64_t V = j->t->V, r, v;

	(void)th;
	for (r = b; r < e; r++) {
		float *z = j->t->logits + r * V, zt = z[j->target[r]], mx = z[0];
		int64_t am = 0;

		for (v = 1; v < V; v++)
			if (z[v] > mx) {
				mx = z[v];
				am = v;
			}
		/*
		 * The vectorised softmax.  After it p[argmax] = 1 / sum exp(z - max)
		 * (never below 1 / V), so log-sum-exp = max - log p[argmax] without a
		 * second pass, and the loss stays exact where p[target] underflows.
		 */
		gm_softmax(z, V);
		j->loss[r] = (double)mx - log((double)z[am]) - (double)zt;
		if (j->inv_norm == 0)
			continue;
		for (v = 0; v < V; v++)
			z[v] *= j->inv_norm;
		z[j->target[r]] -= j->inv_norm;
	}
}

/*
 * Loss of one sequence from the final residual stream xs[L]: the sum of
 * cross-entropies over its targets (*loss), and, when inv_norm is not 0,
 * t->dx = d(inv_norm * sum)/d(xs[L]).
 */
static void head(gm_train *t, const gm_train_seq *sq, float inv_norm, double *loss)
{
	const float *xl = t->xs + t->L * t->maxT * t->H;
	int64_t H = t->H, n = 0, c0, c, s;
	int32_t tg[GM_TRAIN_HEAD_CHUNK];

	for (s = 0; s + 1 < sq->n; s++)
		if (!sq->mask || sq->mask[s + 1])
			t->rows[n++] = s;
	if (inv_norm != 0)
		memset(t->dx, 0, (size_t)(sq->n * H) * sizeof(float));
	*loss = 0;
	for (c0 = 0; c0 < n; c0 += GM_TRAIN_HEAD_CHUNK) {
		int64_t nc = imin(GM_TRAIN_HEAD_CHUNK, n - c0);
		struct ce_job j = { t, tg, t->row_loss + c0, inv_norm };

		for (c = 0; c < nc; c++) {
			gm_rmsnorm(t->hx + c * H, xl + t->rows[c0 + c] * H, t->w_final, GM_DTYPE_F32, H, t->eps);
			tg[c] = sq->ids[t->rows[c0 + c] + 1];
		}
		gm_matmul_pack_all(t->pool, t->hxt, t->hx, H, nc, H);
		mm(t, t->logits, t->V, t->hxt, nc, t->head.w->data, t->head.w->dtype, t->V, H);
		gm_threadpool_for(t->pool, nc, 1, ce_run, &j);
		if (inv_norm == 0)
			continue;
		gm_matmul_pack_all(t->pool, t->hxt, t->logits, t->V, nc, t->V);
		mm(t, t->dhx, H, t->hxt, nc, t->head.wt, t->head.w->dtype, H, t->V);
		for (c = 0; c < nc; c++)
			rms_bwd(t->dx + t->rows[c0 + c] * H, 0, t->dhx + c * H, xl + t->rows[c0 + c] * H, t->w_final,
				H, t->eps);
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
	int64_t T = sq->n, H = t->H, l, s;
	size_t lstride = (size_t)(t->maxT * H);
	const gm_tensor *e = t->m->embed_tokens;

	for (s = 0; s < T; s++)
		gm_load_f32(t->xs + s * H, (const char *)e->data + (size_t)sq->ids[s] * (size_t)H * (e->dtype == GM_DTYPE_F32 ? 4 : 2),
			    e->dtype, H);
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
