/*
 * optim.c - schedules, clipping and AdamW (see optim.h).
 */
#include "train/optim.h"

#include <math.h>
#include <string.h>

static const char *const schedule_names[] = { "cosine", "linear", "constant" };

const char *gm_schedule_name(enum gm_schedule s)
{
	return (unsigned)s < 3 ? schedule_names[s] : "?";
}

int gm_schedule_from_name(const char *name, enum gm_schedule *out, gm_error *err)
{
	int i;

	for (i = 0; i < 3; i++) {
		if (!strcmp(name, schedule_names[i])) {
			*out = (enum gm_schedule)i;
			return 0;
		}
	}
	return gm_error_set(err, GM_EINVAL, "unknown schedule '%s' (expected cosine, linear or constant)", name);
}

double gm_schedule_lr(enum gm_schedule s, double lr, int64_t warmup, int64_t n_steps, int64_t step)
{
	double frac;

	if (step < warmup)
		return lr * (double)(step + 1) / (double)warmup;
	if (s == GM_SCHEDULE_CONSTANT || n_steps <= warmup)
		return lr;
	frac = (double)(step - warmup) / (double)(n_steps - warmup);
	if (s == GM_SCHEDULE_LINEAR)
		return lr * (1.0 - frac);
	return lr * 0.5 * (1.0 + cos(M_PI * frac));
}

void gm_adamw_update(const gm_adamw *o, double lr, int64_t t, float *p, const float *g, float *m, float *v,
		     int64_t n)
{
	/* the bias corrections as torch computes them (step_size, bias_correction2_sqrt) */
	double bc1 = 1.0 - pow(o->beta1, (double)t), bc2s = sqrt(1.0 - pow(o->beta2, (double)t));
	double step_size = lr / bc1, decay = 1.0 - lr * o->weight_decay;
	double b1 = o->beta1, b2 = o->beta2;
	int64_t i;

	/* the moments are kept in f32 (as torch keeps them for f32 parameters), updated in double */
	for (i = 0; i < n; i++) {
		double denom, gi = g[i];

		p[i] = (float)((double)p[i] * decay);
		m[i] = (float)(b1 * m[i] + (1.0 - b1) * gi);
		v[i] = (float)(b2 * v[i] + (1.0 - b2) * gi * gi);
		denom = sqrt((double)v[i]) / bc2s + o->eps;
		p[i] = (float)((double)p[i] - step_size * (double)m[i] / denom);
	}
}

double gm_clip_coef(double norm, double max_norm)
{
	double c;

	if (max_norm <= 0)
		return 1.0;
	c = max_norm / (norm + 1e-6);
	return c < 1.0 ? c : 1.0;
}
