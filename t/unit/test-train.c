/*
 * test-train.c - LoRA training (train.h, optim.h) against the golden PEFT
 * traces in t/fixtures/golden/lora-tiny-qwen3-f32-train-*: losses,
 * step-0 gradients, pre-clip gradient norms, learning rates and final
 * weights; finite-difference gradient checks; the schedule formulas; one
 * AdamW update by hand; thread-count independence; optimizer state
 * round trip.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/json.h"
#include "formats/model.h"
#include "train/optim.h"
#include "formats/peft.h"
#include "formats/safetensors.h"
#include "tap.h"
#include "train/train.h"
#include "engine/forward.h"
#include "cpu/kernels.h"
#include "train/trainset.h"
#include "text/tokenizer.h"
#include "base/fs.h"

#define NP GM_PEFT_PROJ_COUNT

static char *fixture(const char *rel)
{
	gm_buf b = GM_BUF_INIT;

	gm_buf_addf(&b, "%s/t/fixtures/%s", tap_srcdir(), rel);
	return gm_buf_detach(&b, NULL);
}

struct seqs {
	int n;
	int32_t **ids;
	uint8_t **mask;
	gm_train_seq *s;
};

static void seqs_from_json(struct seqs *q, json_object *arr, json_object *masks)
{
	int i, j;

	q->n = (int)json_object_array_length(arr);
	q->ids = calloc((size_t)q->n, sizeof(*q->ids));
	q->mask = calloc((size_t)q->n, sizeof(*q->mask));
	q->s = calloc((size_t)q->n, sizeof(*q->s));
	for (i = 0; i < q->n; i++) {
		json_object *a = json_object_array_get_idx(arr, (size_t)i);
		int n = (int)json_object_array_length(a);

		q->ids[i] = calloc((size_t)n, sizeof(int32_t));
		for (j = 0; j < n; j++)
			q->ids[i][j] = json_object_get_int(json_object_array_get_idx(a, (size_t)j));
		if (masks) {
			json_object *m = json_object_array_get_idx(masks, (size_t)i);

			q->mask[i] = calloc((size_t)n, 1);
			for (j = 0; j < n; j++)
				q->mask[i][j] = (uint8_t)json_object_get_int(json_object_array_get_idx(m, (size_t)j));
		}
		q->s[i].ids = q->ids[i];
		q->s[i].mask = q->mask[i];
		q->s[i].n = n;
	}
}

static void seqs_free(struct seqs *q)
{
	int i;

	for (i = 0; i < q->n; i++) {
		free(q->ids[i]);
		free(q->mask[i]);
	}
	free(q->ids);
	free(q->mask);
	free(q->s);
}

static double jdouble(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_double(v) : 0.0;
}

static json_object *jget(json_object *o, const char *key)
{
	json_object *v = NULL;

	json_object_object_get_ex(o, key, &v);
	return v;
}

/* Compares the trainer's step-0 gradients with grad0.* of the golden safetensors. */
static void check_grad0(gm_train *t, const gm_lora *l, const char *golden_st, double tol, const char *what)
{
	gm_error err = GM_ERROR_INIT;
	gm_st_file *f = NULL;
	double worst = 0;
	char name[256], worst_name[256] = "";
	int i, p, n = 0, missing = 0;

	if (gm_st_open(golden_st, &f, &err)) {
		ok(0, "%s: open %s: %s", what, golden_st, err.msg);
		return;
	}
	for (i = 0; i < l->n_layers; i++) {
		for (p = 0; p < NP; p++) {
			const gm_lora_module *md = gm_lora_module_at(l, i, (enum gm_peft_proj)p);
			int ab;

			if (!md)
				continue;
			for (ab = 0; ab < 2; ab++) {
				const gm_tensor *g;
				double e;

				snprintf(name, sizeof(name), "grad0.base_model.model.model.layers.%d.%s.%s.lora_%c.default.weight",
					 i, gm_peft_proj_parent((enum gm_peft_proj)p), gm_peft_proj_name((enum gm_peft_proj)p),
					 ab ? 'B' : 'A');
				g = gm_st_find(f, name);
				if (!g || g->dtype != GM_DTYPE_F32) {
					missing++;
					continue;
				}
				e = tap_max_rel(ab ? gm_train_grad_b(t, i, (enum gm_peft_proj)p)
						   : gm_train_grad_a(t, i, (enum gm_peft_proj)p),
						g->data, (size_t)g->numel);
				n++;
				if (e > worst) {
					worst = e;
					snprintf(worst_name, sizeof(worst_name), "%s", name + 6);
				}
			}
		}
	}
	ok(!missing && n > 0 && worst < tol, "%s: step-0 gradients of %d tensors within %g (worst %.3g, %s)", what, n,
	   tol, worst, worst_name);
	gm_st_close(f);
}

/*
 * Elements whose gradient, at some step, came out non-zero but below 1e-7.
 *
 * AdamW moves a weight by lr * m / (sqrt(v) + 1e-8): for such a gradient
 * the step is a sizeable fraction of lr that hangs on the gradient's exact
 * value, and float32 gets that value only to ~1e-9 (a relative 1e-6 on
 * the terms of 1e-3 it sums).  The reference is float64.  In b0 one element
 * is in that regime (step 1, layer 0 down_proj lora_A[1, 54]: 1.7e-9 where
 * its neighbours are 1e-3) and ends 1.6% of its tensor's largest value
 * away, dragging that module's B 0.4% away; every other module agrees
 * within 1e-4.  Such modules are checked with a tolerance of 5% and counted
 * in the test's name.
 */
struct fragile {
	uint8_t **m;  /* [layers * NP * 2] (A, B), NULL when not adapted */
	int n;
};

static void fragile_mark(struct fragile *fr, const gm_train *t, const gm_lora *l)
{
	int i, ab;

	if (!fr->m)
		fr->m = calloc((size_t)l->n_layers * NP * 2, sizeof(uint8_t *));
	for (i = 0; i < l->n_layers * NP; i++) {
		const gm_lora_module *md = &l->mods[i];

		for (ab = 0; md->rank && ab < 2; ab++) {
			const float *g = ab ? gm_train_grad_b(t, i / NP, (enum gm_peft_proj)(i % NP)) :
					      gm_train_grad_a(t, i / NP, (enum gm_peft_proj)(i % NP));
			int64_t n = ab ? md->out * md->rank : md->rank * md->in, k;

			if (!fr->m[2 * i + ab])
				fr->m[2 * i + ab] = calloc((size_t)n, 1);
			for (k = 0; k < n; k++) {
				if (g[k] != 0 && fabsf(g[k]) < 1e-7f && !fr->m[2 * i + ab][k]) {
					fr->m[2 * i + ab][k] = 1;
					fr->n++;
				}
			}
		}
	}
}

static void fragile_free(struct fragile *fr, const gm_lora *l)
{
	int i;

	for (i = 0; fr->m && i < l->n_layers * NP * 2; i++)
		free(fr->m[i]);
	free(fr->m);
}

static int fragile_module(const struct fragile *fr, const gm_lora_module *md, int idx)
{
	int64_t k;

	if (!fr->m)
		return 0;
	for (k = 0; fr->m[2 * idx] && k < md->rank * md->in; k++)
		if (fr->m[2 * idx][k])
			return 1;
	for (k = 0; fr->m[2 * idx + 1] && k < md->out * md->rank; k++)
		if (fr->m[2 * idx + 1][k])
			return 1;
	return 0;
}

/*
 * Compares the adapter's weights with a PEFT directory, element by element
 * (max |a - b| / max |b| per tensor): within tol, or 5% for the A and B of
 * a module with a fragile element (the error of A moves B's gradients).
 */
static void check_final(const gm_lora *l, const struct fragile *fr, const char *dir, double tol, const char *what)
{
	gm_error err = GM_ERROR_INIT;
	gm_peft_adapter *ad = NULL;
	double worst = 0, worst_f = 0;
	size_t i;
	int n = 0, nf = 0;

	if (gm_peft_open(dir, &ad, &err)) {
		ok(0, "%s: open %s: %s", what, dir, err.msg);
		return;
	}
	for (i = 0; i < ad->n_modules; i++) {
		const gm_peft_module *pm = &ad->modules[i];
		const gm_lora_module *md = gm_lora_module_at(l, pm->layer, pm->proj);
		double e;

		if (!md || pm->a->dtype != GM_DTYPE_F32 || pm->b->dtype != GM_DTYPE_F32) {
			worst = INFINITY;
			break;
		}
		e = fmax(tap_max_rel(md->a, pm->a->data, (size_t)pm->a->numel),
			 tap_max_rel(md->b, pm->b->data, (size_t)pm->b->numel));
		if (fragile_module(fr, md, pm->layer * NP + (int)pm->proj)) {
			worst_f = fmax(worst_f, e);
			nf++;
			tap_diag("%s: %s has a gradient element in (0, 1e-7): %.3g", what, pm->name, e);
		} else {
			worst = fmax(worst, e);
		}
		n += 2;
	}
	ok(n > 0 && worst < tol && worst_f < 5e-2, "%s: final weights of %d tensors within %g of PEFT element by "
	   "element (worst %.3g); %d module%s with a near-zero gradient element within 5%% (worst %.3g)", what,
	   n - 2 * nf, tol, worst, nf, nf == 1 ? "" : "s", worst_f);
	gm_peft_close(ad);
}

/* One golden trace: b0, brand (one sequence per step, cycled) or batched. */
static void run_trace(const gm_model *m, const char *name, int batched, int n_threads)
{
	gm_error err = GM_ERROR_INIT;
	char rel[256], *json_path, *init_dir, *final_dir, *st_path;
	json_object *g = NULL, *losses, *norms = NULL, *lrs = NULL;
	gm_peft_adapter *ad = NULL;
	gm_lora *l = NULL;
	gm_train *t = NULL;
	gm_train_opts o;
	struct seqs *batches = NULL;
	int n_batches = 0, s, steps, ok_loss = 1, ok_norm = 1, ok_lr = 1;
	double worst_loss = 0, worst_norm = 0;
	struct fragile fr = { NULL, 0 };

	snprintf(rel, sizeof(rel), "golden/lora-tiny-qwen3-f32-train-%s.json", name);
	json_path = fixture(rel);
	snprintf(rel, sizeof(rel), "golden/lora-tiny-qwen3-f32-train-%s.safetensors", name);
	st_path = fixture(rel);
	snprintf(rel, sizeof(rel), "lora/tiny-qwen3-f32-train-%s-init", name);
	init_dir = fixture(rel);
	snprintf(rel, sizeof(rel), "lora/tiny-qwen3-f32-train-%s-final", name);
	final_dir = fixture(rel);
	if (gm_json_parse_file(json_path, &g, &err) || gm_peft_open(init_dir, &ad, &err) ||
	    gm_lora_from_peft(m, ad, &l, &err)) {
		ok(0, "%s: load: %s", name, err.msg);
		goto out;
	}
	steps = json_object_get_int(jget(g, "steps"));
	losses = jget(g, "losses");
	memset(&o, 0, sizeof(o));
	o.lr = jdouble(g, "lr");
	o.weight_decay = jdouble(g, "weight_decay");
	o.n_steps = steps;
	o.schedule = GM_SCHEDULE_CONSTANT;
	o.max_len = 64;
	o.n_threads = n_threads;
	if (batched) {
		json_object *arr = jget(g, "batches");

		o.schedule = GM_SCHEDULE_COSINE;
		o.warmup = json_object_get_int(jget(g, "warmup"));
		o.grad_clip = jdouble(g, "grad_clip_max_norm");
		norms = jget(g, "grad_norms_before_clip");
		lrs = jget(g, "lrs");
		n_batches = (int)json_object_array_length(arr);
		batches = calloc((size_t)n_batches, sizeof(*batches));
		for (s = 0; s < n_batches; s++) {
			json_object *b = json_object_array_get_idx(arr, (size_t)s);

			seqs_from_json(&batches[s], jget(b, "sequences"), jget(b, "loss_mask"));
		}
	} else {
		n_batches = 1;
		batches = calloc(1, sizeof(*batches));
		seqs_from_json(&batches[0], jget(g, "sequences"), NULL);
	}
	if (gm_train_new(m, l, &o, &t, &err)) {
		ok(0, "%s: gm_train_new: %s", name, err.msg);
		goto out;
	}
	for (s = 0; s < steps; s++) {
		gm_train_info info;
		const gm_train_seq *sq;
		int nq;
		double want = json_object_get_double(json_object_array_get_idx(losses, (size_t)s)), e;

		if (batched) {
			sq = batches[s % n_batches].s;
			nq = batches[s % n_batches].n;
		} else {
			sq = &batches[0].s[s % batches[0].n];
			nq = 1;
		}
		if (s == 0 && !batched) {
			double l0;

			if (gm_train_grad(t, sq, nq, &l0, &err)) {
				ok(0, "%s: gm_train_grad: %s", name, err.msg);
				goto out;
			}
			check_grad0(t, l, st_path, 1e-3, name);
		}
		{
			double l0;

			/* the same gradient as the step's (deterministic), to find fragile elements */
			if (gm_train_grad(t, sq, nq, &l0, &err)) {
				ok(0, "%s: gm_train_grad: %s", name, err.msg);
				goto out;
			}
			fragile_mark(&fr, t, l);
		}
		if (gm_train_step(t, sq, nq, &info, &err)) {
			ok(0, "%s: step %d: %s", name, s, err.msg);
			goto out;
		}
		e = fabs(info.loss - want) / fabs(want);
		worst_loss = fmax(worst_loss, e);
		if (e > 1e-4) {
			ok_loss = 0;
			tap_diag("%s step %d: loss %.9g, trace %.9g", name, s, info.loss, want);
		}
		if (norms) {
			double wn = json_object_get_double(json_object_array_get_idx(norms, (size_t)s));
			double wl = json_object_get_double(json_object_array_get_idx(lrs, (size_t)s));

			e = fabs(info.grad_norm - wn) / wn;
			worst_norm = fmax(worst_norm, e);
			if (e > 1e-4) {
				ok_norm = 0;
				tap_diag("%s step %d: grad norm %.9g, trace %.9g", name, s, info.grad_norm, wn);
			}
			if (fabs(info.lr - wl) > 1e-12 * wl)
				ok_lr = 0;
		}
	}
	ok(ok_loss, "%s (%d threads): %d losses within 1e-4 relative of the trace (worst %.3g)", name, n_threads,
	   steps, worst_loss);
	if (norms) {
		ok(ok_norm, "%s: pre-clip gradient norms within 1e-4 (worst %.3g)", name, worst_norm);
		ok(ok_lr, "%s: learning rates (warmup + cosine) as the trace's", name);
	}
	check_final(l, &fr, final_dir, 1e-3, name);
out:
	if (l)
		fragile_free(&fr, l);
	for (s = 0; batches && s < n_batches; s++)
		seqs_free(&batches[s]);
	free(batches);
	gm_train_free(t);
	gm_lora_free(l);
	gm_peft_close(ad);
	json_object_put(g);
	free(json_path);
	free(init_dir);
	free(final_dir);
	free(st_path);
}

/* Central differences on the largest gradients of a few modules. */
static void check_finite_differences(const gm_model *m, const char *what)
{
	gm_error err = GM_ERROR_INIT;
	gm_lora *l = NULL;
	gm_train *t = NULL;
	gm_train_opts o;
	int32_t ids[12] = { 40, 542, 258, 2233, 386, 3588, 69, 309, 1349, 1381, 335, 197 };
	uint8_t mask[12] = { 0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1 };
	gm_train_seq sq = { ids, mask, 12 };
	double loss, worst = 0;
	int i, p, checked = 0;

	memset(&o, 0, sizeof(o));
	o.lr = 1e-3;
	o.n_steps = 1;
	o.max_len = 16;
	o.n_threads = 2;
	if (gm_lora_init(m, 4, 8, 1, GM_LORA_ALL_TARGETS, 7, &l, &err) || gm_train_new(m, l, &o, &t, &err)) {
		ok(0, "finite differences (%s): setup: %s", what, err.msg);
		goto out;
	}
	/* B = 0 after init would leave dA = 0: give B values so both are exercised */
	for (i = 0; i < l->n_layers * NP; i++) {
		gm_lora_module *md = &l->mods[i];
		int64_t k;

		for (k = 0; md->rank && k < md->out * md->rank; k++)
			md->b[k] = (float)(0.05 * sin((double)(k + 1) * (i + 3)));
	}
	if (gm_train_grad(t, &sq, 1, &loss, &err)) {
		ok(0, "finite differences (%s): %s", what, err.msg);
		goto out;
	}
	for (i = 0; i < l->n_layers; i += l->n_layers - 1) {
		for (p = 0; p < NP; p++) {
			gm_lora_module *md = &l->mods[i * NP + p];
			int ab;

			for (ab = 0; ab < 2; ab++) {
				float *w = ab ? md->b : md->a;
				const float *gw = ab ? gm_train_grad_b(t, i, (enum gm_peft_proj)p) :
						       gm_train_grad_a(t, i, (enum gm_peft_proj)p);
				int64_t n = ab ? md->out * md->rank : md->rank * md->in, k, best = 0;
				float saved, h = 1e-2f;
				double lp, lm, fd, an;

				for (k = 1; k < n; k++)
					if (fabsf(gw[k]) > fabsf(gw[best]))
						best = k;
				an = gw[best];
				/* copy: gm_train_eval overwrites nothing of the gradients, but be explicit */
				saved = w[best];
				w[best] = saved + h;
				gm_train_eval(t, &sq, 1, &lp, &err);
				w[best] = saved - h;
				gm_train_eval(t, &sq, 1, &lm, &err);
				w[best] = saved;
				fd = (lp - lm) / (2.0 * h);
				worst = fmax(worst, fabs(fd - an) / fmax(fabs(an), 1e-3));
				checked++;
			}
		}
	}
	ok(checked == 28 && worst < 2e-2, "finite differences agree with the backward pass on %d parameters of %s "
	   "(worst relative error %.3g)", checked, what, worst);
out:
	gm_train_free(t);
	gm_lora_free(l);
}

static void check_schedules(void)
{
	gm_error err = GM_ERROR_INIT;
	enum gm_schedule s;
	int good = 1;

	/* warmup 3 of 10, lr 5e-3: the batched trace's values */
	good &= fabs(gm_schedule_lr(GM_SCHEDULE_COSINE, 5e-3, 3, 10, 0) - 5e-3 / 3) < 1e-15;
	good &= fabs(gm_schedule_lr(GM_SCHEDULE_COSINE, 5e-3, 3, 10, 2) - 5e-3) < 1e-15;
	good &= fabs(gm_schedule_lr(GM_SCHEDULE_COSINE, 5e-3, 3, 10, 9) - 0.00024757783024395244) < 1e-15;
	ok(good, "cosine schedule with warmup");
	good = fabs(gm_schedule_lr(GM_SCHEDULE_LINEAR, 1.0, 2, 6, 1) - 1.0) < 1e-15 &&
	       fabs(gm_schedule_lr(GM_SCHEDULE_LINEAR, 1.0, 2, 6, 2) - 1.0) < 1e-15 &&
	       fabs(gm_schedule_lr(GM_SCHEDULE_LINEAR, 1.0, 2, 6, 3) - 0.75) < 1e-15 &&
	       fabs(gm_schedule_lr(GM_SCHEDULE_LINEAR, 1.0, 2, 6, 5) - 0.25) < 1e-15;
	ok(good, "linear schedule: lr (1 - (s - W) / (N - W))");
	good = gm_schedule_lr(GM_SCHEDULE_CONSTANT, 0.1, 0, 5, 4) == 0.1 &&
	       fabs(gm_schedule_lr(GM_SCHEDULE_CONSTANT, 0.1, 4, 5, 1) - 0.05) < 1e-15;
	ok(good, "constant schedule, with and without warmup");
	ok(!gm_schedule_from_name("linear", &s, &err) && s == GM_SCHEDULE_LINEAR, "schedule names");
	ok_error(gm_schedule_from_name("step", &s, &err), &err, GM_EINVAL, "cosine, linear or constant",
		 "unknown schedule refused");
	ok(gm_clip_coef(2.0, 1.0) == 1.0 / (2.0 + 1e-6) && gm_clip_coef(0.5, 1.0) == 1.0 &&
	   gm_clip_coef(5.0, 0) == 1.0, "clipping factor as clip_grad_norm_");
}

static void check_adamw(void)
{
	gm_adamw o = { 0.9, 0.999, 1e-8, 0.1 };
	float p[2] = { 1.0f, -2.0f }, g[2] = { 0.5f, -0.25f }, m[2] = { 0 }, v[2] = { 0 };
	double lr = 0.01, want0, want1, m1, v1, p1;

	gm_adamw_update(&o, lr, 1, p, g, m, v, 2);
	/* t = 1: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps) after the decay */
	want0 = 1.0 * (1 - lr * 0.1) - lr * 0.5 / (0.5 + 1e-8);
	want1 = -2.0 * (1 - lr * 0.1) - lr * -0.25 / (0.25 + 1e-8);
	ok(fabs(p[0] - want0) < 1e-7 && fabs(p[1] - want1) < 1e-7, "AdamW first step: decay then lr * sign(g)");
	/* t = 2 with g again */
	m1 = 0.9 * 0.05 + 0.1 * 0.5;
	v1 = 0.999 * (0.001 * 0.25) + 0.001 * 0.25;
	p1 = want0 * (1 - lr * 0.1) - lr / (1 - 0.81) * m1 / (sqrt(v1) / sqrt(1 - 0.999 * 0.999) + 1e-8);
	gm_adamw_update(&o, lr, 2, p, g, m, v, 2);
	ok(fabs(m[0] - m1) < 1e-7 && fabs(v[0] - v1) < 1e-9 && fabs(p[0] - p1) < 1e-6,
	   "AdamW second step: moments and bias corrections by hand (%.9g vs %.9g)", p[0], p1);
}

/* Same bits with 1 and 3 threads; the optimizer state survives a save and load. */
static void check_threads_and_state(const gm_model *m)
{
	gm_error err = GM_ERROR_INIT;
	int32_t ids[20];
	gm_train_seq sq = { ids, NULL, 20 };
	gm_lora *l[3] = { NULL, NULL, NULL };
	gm_train *t[3] = { NULL, NULL, NULL };
	gm_train_opts o;
	char dir[] = "/tmp/test-train-XXXXXX";
	int i, k, same = 1, ret = 0;

	for (i = 0; i < 20; i++)
		ids[i] = (i * 977 + 13) % 4096;
	memset(&o, 0, sizeof(o));
	o.lr = 1e-2;
	o.n_steps = 3;
	o.max_len = 32;
	o.weight_decay = 0.01;
	for (i = 0; i < 3 && !ret; i++) {
		o.n_threads = i == 1 ? 3 : 1;
		ret = gm_lora_init(m, 4, 8, 0, GM_LORA_ALL_TARGETS, 42, &l[i], &err);
		if (!ret)
			ret = gm_train_new(m, l[i], &o, &t[i], &err);
	}
	/* t[0] and t[1]: three steps on 1 and 3 threads; t[2]: one step, save, load into t[0]'s twin */
	for (k = 0; k < 3 && !ret; k++) {
		ret = gm_train_step(t[0], &sq, 1, NULL, &err);
		if (!ret)
			ret = gm_train_step(t[1], &sq, 1, NULL, &err);
	}
	if (ret) {
		ok(0, "threads: %s", err.msg);
		goto out;
	}
	for (i = 0; i < l[0]->n_layers * NP; i++) {
		const gm_lora_module *a = &l[0]->mods[i], *b = &l[1]->mods[i];

		same &= !memcmp(a->a, b->a, (size_t)(a->rank * a->in) * sizeof(float)) &&
			!memcmp(a->b, b->b, (size_t)(a->out * a->rank) * sizeof(float));
	}
	ok(same, "1 and 3 threads give the same weights, bit for bit");

	/* resume: t[2] takes one step, its state goes through a directory into a new trainer that takes two more */
	if (!mkdtemp(dir)) {
		ok(0, "mkdtemp");
		goto out;
	}
	ret = gm_train_step(t[2], &sq, 1, NULL, &err);
	if (!ret)
		ret = gm_lora_save(l[2], dir, &err);
	if (!ret)
		ret = gm_train_save_state(t[2], dir, &err);
	gm_train_free(t[2]);
	t[2] = NULL;
	gm_lora_free(l[2]);
	l[2] = NULL;
	if (!ret) {
		gm_peft_adapter *ad = NULL;

		o.n_threads = 2;
		ret = gm_peft_open(dir, &ad, &err);
		if (!ret)
			ret = gm_lora_from_peft(m, ad, &l[2], &err);
		gm_peft_close(ad);
		if (!ret)
			ret = gm_train_new(m, l[2], &o, &t[2], &err);
		if (!ret)
			ret = gm_train_load_state(t[2], dir, &err);
		for (k = 0; k < 2 && !ret; k++)
			ret = gm_train_step(t[2], &sq, 1, NULL, &err);
	}
	if (ret) {
		ok(0, "state round trip: %s", err.msg);
		goto out;
	}
	same = gm_train_steps_done(t[2]) == 3;
	for (i = 0; i < l[0]->n_layers * NP; i++) {
		const gm_lora_module *a = &l[0]->mods[i], *b = &l[2]->mods[i];

		same &= !memcmp(a->a, b->a, (size_t)(a->rank * a->in) * sizeof(float)) &&
			!memcmp(a->b, b->b, (size_t)(a->out * a->rank) * sizeof(float));
	}
	ok(same, "saved adapter + optimizer state, loaded and continued: the same bits as without a stop");
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd))
			tap_diag("could not remove %s", dir);
	}
out:
	for (i = 0; i < 3; i++) {
		gm_train_free(t[i]);
		gm_lora_free(l[i]);
	}
}

/* Decodes the tokens of e whose mask is want (keep: 1) into out. */
static void decode_masked(const gm_tokenizer *tok, const gm_trainset_example *e, int want, gm_buf *out)
{
	gm_error err = GM_ERROR_INIT;
	int64_t j;

	gm_buf_reset(out);
	for (j = 0; j < e->n; j++)
		if ((e->mask[j] != 0) == want)
			gm_tokenizer_decode(tok, &e->ids[j], 1, 0, out, &err);
}

/* JSONL forms to (ids, mask) with the pocket model's tokenizer and chat template. */
static void check_trainset(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_buf dir = GM_BUF_INIT, path = GM_BUF_INIT, b = GM_BUF_INIT;
	gm_model *m = NULL;
	gm_tokenizer *tok = NULL;
	gm_trainset *s = NULL;
	const char *data =
		"{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Who gave gold?\"}, "
		"{\"role\": \"assistant\", \"content\": \"The king.\"}, {\"role\": \"user\", \"content\": \"Which?\"}, "
		"{\"role\": \"assistant\", \"content\": \"The king of Tyre.\"}]}\n"
		"{\"prompt\": \"The king of Gaza gave\", \"completion\": \" Boaz 12 talents.\"}\n"
		"\n"
		"{\"text\": \"And Hur was glad.\"}\n"
		"{\"input_ids\": [40, 542, 258, 2233, 386, 7, 8, 9, 10, 11, 12], \"loss_mask\": [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]}\n";
	char tmpl[] = "/tmp/test-trainset-XXXXXX";
	int fd = mkstemp(tmpl);
	int64_t j;
	int all_text = 1;

	gm_buf_addf(&dir, "%s/contrib/models/pocket-qwen3", tap_srcdir());
	if (fd < 0 || gm_write_all(fd, data, strlen(data)) || gm_model_open(dir.buf, &m, &err) ||
	    gm_tokenizer_load(dir.buf, &tok, &err) || gm_trainset_load(tmpl, m, tok, 1024, &s, &err)) {
		ok(0, "trainset: setup: %s", err.msg);
		goto out;
	}
	ok(s->n == 4 && s->ex[0].line == 1 && s->ex[3].line == 5 && !s->truncated,
	   "trainset: 4 examples, line numbers kept");
	decode_masked(tok, &s->ex[0], 1, &b);
	if (!ok(!strcmp(b.buf, "The king.<|im_end|><think>\n\n</think>\n\nThe king of Tyre.<|im_end|>"),
		"messages: the loss covers the assistant turns (the last with its empty thinking block) and their <|im_end|>"))
		tap_diag("got \"%s\"", b.buf);
	decode_masked(tok, &s->ex[0], 0, &b);
	ok(!strcmp(b.buf, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho gave gold?<|im_end|>\n"
		     "<|im_start|>assistant\n\n<|im_start|>user\nWhich?<|im_end|>\n<|im_start|>assistant\n\n"),
	   "messages: system, user turns and the headers are context only");
	decode_masked(tok, &s->ex[1], 1, &b);
	ok(!strcmp(b.buf, " Boaz 12 talents.<|im_end|>"), "prompt/completion: the completion and eos");
	decode_masked(tok, &s->ex[1], 0, &b);
	ok(!strcmp(b.buf, "The king of Gaza gave"), "prompt/completion: the prompt is context");
	for (j = 0; j < s->ex[2].n; j++)
		all_text &= s->ex[2].mask[j] == 1;
	decode_masked(tok, &s->ex[2], 1, &b);
	ok(all_text && !strcmp(b.buf, "And Hur was glad."), "text: every token");
	ok(s->ex[3].n == 11 && s->ex[3].ids[2] == 258 && s->ex[3].mask[2] == 1 && s->ex[3].mask[5] == 0 &&
	   s->n_targets == gm_train_seq_targets(&(gm_train_seq){ s->ex[0].ids, s->ex[0].mask, s->ex[0].n }) +
	   gm_train_seq_targets(&(gm_train_seq){ s->ex[1].ids, s->ex[1].mask, s->ex[1].n }) +
	   (s->ex[2].n - 1) + 3, "input_ids: ids and mask as given; target count");
	gm_trainset_free(s);
	s = NULL;
	{
		const char *two = "{\"text\": \"And Hur was glad.\"}\n{\"input_ids\": [1, 2, 3, 4, 5, 6], \"loss_mask\": [0, 0, 1, 1, 1, 1]}\n";

		if (ftruncate(fd, 0) || lseek(fd, 0, SEEK_SET) || gm_write_all(fd, two, strlen(two)))
			tap_diag("rewrite failed");
		ok(!gm_trainset_load(tmpl, m, tok, 4, &s, &err) && s->truncated == 2 && s->ex[0].n == 4 &&
		   s->ex[1].n == 4 && s->n_targets == 3 + 2, "--max-len: sequences cut to their first tokens, counted");
		gm_trainset_free(s);
		s = NULL;
	}
	{
		const char *bad = "{\"text\": \"And Hur was glad.\"}\n{\"input_ids\": [5000]}\n";

		if (ftruncate(fd, 0) || lseek(fd, 0, SEEK_SET) || gm_write_all(fd, bad, strlen(bad)))
			tap_diag("rewrite failed");
		ok_error(gm_trainset_load(tmpl, m, tok, 1024, &s, &err), &err, GM_EFORMAT, ":2: input_ids[0] = 5000",
			 "an id outside the vocabulary: FILE:LINE: reason");
		ok(strstr(err.msg, ":1:") == NULL && !strncmp(err.msg, tmpl, strlen(tmpl)), "the message starts with the file");
	}
out:
	if (fd >= 0) {
		close(fd);
		unlink(tmpl);
	}
	gm_trainset_free(s);
	gm_tokenizer_free(tok);
	gm_model_close(m);
	gm_buf_release(&dir);
	gm_buf_release(&path);
	gm_buf_release(&b);
}

/* The training kernels of kernels.c against naive double sums, on every variant the CPU has. */
static void check_kernels(void)
{
	enum { K = 37, M = 21, N = 83 };
	static float a[K * M], b[K * N], c[M * N], tr[N * K];
	static uint16_t h[K * N], ht[N * K];
	enum gm_isa isas[3] = { GM_ISA_PORTABLE, GM_ISA_AVX2, GM_ISA_AVX512 }, keep = gm_kernels_isa();
	int v, i, j, k;

	for (i = 0; i < K * M; i++)
		a[i] = (float)sin(0.37 * i);
	for (i = 0; i < K * N; i++) {
		b[i] = (float)cos(0.11 * i);
		h[i] = (uint16_t)(i * 2654435761u >> 16);
	}
	for (v = 0; v < 3; v++) {
		double worst = 0, want;
		int same = 1;

		if (!gm_kernels_isa_supported(isas[v]))
			continue;
		gm_kernels_set_isa(isas[v]);
		/* C += A^T B over two ranges that tile C: rows [0, 9) all columns, rows [9, M) in two column halves */
		for (i = 0; i < M * N; i++)
			c[i] = 1.0f;
		gm_matmul_tn(c, N, a, M, b, N, K, 0, 9, 0, N);
		gm_matmul_tn(c, N, a, M, b, N, K, 9, M, 0, 40);
		gm_matmul_tn(c, N, a, M, b, N, K, 9, M, 40, N);
		for (i = 0; i < M; i++) {
			for (j = 0; j < N; j++) {
				want = 1.0;
				for (k = 0; k < K; k++)
					want += (double)a[k * M + i] * b[k * N + j];
				worst = fmax(worst, fabs(c[i * N + j] - want));
			}
		}
		ok(worst < 1e-4, "gm_matmul_tn (%s): C += A^T B, any tiling (max error %.2g)", gm_isa_name(isas[v]), worst);
		gm_transpose(tr, b, 4, K, N, 0, 50);
		gm_transpose(tr, b, 4, K, N, 50, N);
		gm_transpose(ht, h, 2, K, N, 0, N);
		for (i = 0; i < K; i++)
			for (j = 0; j < N; j++)
				same &= tr[j * K + i] == b[i * N + j] && ht[j * K + i] == h[i * N + j];
		ok(same, "gm_transpose (%s): 4- and 2-byte elements, by column ranges", gm_isa_name(isas[v]));
	}
	gm_kernels_set_isa(keep);
}

/*
 * The training forward against the inference forward (forward.c): the
 * mean cross-entropy from gm_forward's logits equals gm_train_eval's, with
 * a LoRA attached to both.  On the bf16 model with tied embeddings this
 * covers what the f32 traces do not: bf16 weights and the tied lm_head.
 */
static void check_against_forward(const gm_model *m, const char *what)
{
	gm_error err = GM_ERROR_INIT;
	gm_lora *l = NULL;
	gm_train *t = NULL;
	gm_forward *f = NULL;
	gm_train_opts o;
	char dir[] = "/tmp/test-train-fwd-XXXXXX";
	gm_peft_adapter *ad = NULL;
	int32_t ids[16];
	uint8_t mask[16];
	gm_train_seq sq = { ids, mask, 16 };
	int64_t V = m->config.vocab_size, j, k, n = 0;
	float *logits = NULL;
	double ref = 0, got, max_l;
	int i, ret;

	for (i = 0; i < 16; i++) {
		ids[i] = (int32_t)((i * 2654435761u) % (unsigned)(V < 4000 ? V : 4000));
		mask[i] = (uint8_t)(i % 5 != 2);
	}
	memset(&o, 0, sizeof(o));
	o.lr = 1e-2;
	o.n_steps = 1;
	o.max_len = 16;
	o.n_threads = 2;
	ret = gm_lora_init(m, 4, 8, 0, GM_LORA_ALL_TARGETS, 5, &l, &err);
	for (i = 0; !ret && i < l->n_layers * NP; i++)
		for (k = 0; k < l->mods[i].out * l->mods[i].rank; k++)
			l->mods[i].b[k] = (float)(0.02 * cos((double)(k + 7 * i)));
	if (!ret)
		ret = gm_train_new(m, l, &o, &t, &err);
	if (!ret && !mkdtemp(dir))
		ret = gm_error_set(&err, GM_EIO, "mkdtemp");
	if (!ret)
		ret = gm_lora_save(l, dir, &err);
	if (!ret)
		ret = gm_peft_open(dir, &ad, &err);
	if (!ret)
		ret = gm_forward_new(m, 32, 2, &f, &err);
	if (!ret)
		ret = gm_forward_set_adapters(f, (const gm_peft_adapter *const *)&ad, NULL, 1, &err);
	logits = calloc((size_t)(16 * V), sizeof(float));
	if (!ret)
		ret = gm_forward_eval(f, ids, 16, logits, 1, &err);
	if (!ret)
		ret = gm_train_eval(t, &sq, 1, &got, &err);
	if (ret) {
		ok(0, "%s: training forward vs inference forward: %s", what, err.msg);
		goto out;
	}
	for (j = 1; j < 16; j++) {
		const float *z = logits + (j - 1) * V;
		double sum = 0;

		if (!mask[j])
			continue;
		max_l = z[0];
		for (k = 1; k < V; k++)
			max_l = fmax(max_l, z[k]);
		for (k = 0; k < V; k++)
			sum += exp(z[k] - max_l);
		ref += max_l + log(sum) - z[ids[j]];
		n++;
	}
	ref /= (double)n;
	ok(fabs(got - ref) < 1e-5 * fabs(ref), "%s: the training forward's loss is the inference forward's, LoRA "
	   "attached (%.9g vs %.9g)", what, got, ref);
out:
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd))
			tap_diag("could not remove %s", dir);
	}
	free(logits);
	gm_forward_free(f);
	gm_peft_close(ad);
	gm_train_free(t);
	gm_lora_free(l);
}

int main(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_model *m = NULL;
	char *dir = fixture("models/tiny-qwen3-f32");
	unsigned mask;

	check_kernels();
	check_schedules();
	check_adamw();
	ok(!gm_lora_parse_targets("q_proj,down_proj", &mask, &err) &&
	   mask == ((1u << GM_PEFT_Q_PROJ) | (1u << GM_PEFT_DOWN_PROJ)), "target list parsed");
	ok_error(gm_lora_parse_targets("q_proj,lm_head", &mask, &err), &err, GM_EINVAL, "lm_head",
		 "unknown target refused");
	if (gm_model_open(dir, &m, &err)) {
		ok(0, "open %s: %s", dir, err.msg);
		free(dir);
		return tap_done();
	}
	run_trace(m, "b0", 0, 2);
	run_trace(m, "brand", 0, 1);
	run_trace(m, "batched", 1, 2);
	check_finite_differences(m, "tiny-qwen3-f32");
	check_against_forward(m, "tiny-qwen3-f32");
	check_threads_and_state(m);
	check_trainset();
	gm_model_close(m);
	m = NULL;
	free(dir);
	/* bf16 weights, tied embeddings, the 151936-token vocabulary */
	dir = fixture("models/tiny-qwen3-vocab151k");
	if (gm_model_open(dir, &m, &err)) {
		ok(0, "open %s: %s", dir, err.msg);
	} else {
		check_finite_differences(m, "tiny-qwen3-vocab151k (bf16, tied)");
		check_against_forward(m, "tiny-qwen3-vocab151k (bf16, tied)");
		gm_model_close(m);
	}
	free(dir);
	return tap_done();
}
