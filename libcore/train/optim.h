/*
 * optim.h - learning-rate schedules, global-norm clipping and AdamW, as
 * PyTorch and the golden training traces compute them.
 *
 * Schedule, for step s (from 0) of n_steps with warmup W:
 *
 *   s < W:  lr * (s + 1) / W
 *   else:   cosine    lr * 0.5 * (1 + cos(pi * (s - W) / (n_steps - W)))
 *           linear    lr * (1 - (s - W) / (n_steps - W))
 *           constant  lr
 *
 * AdamW (torch.optim.AdamW), for the t-th update (t from 1) of a parameter
 * p with gradient g:
 *
 *   p <- p * (1 - lr * weight_decay)               decoupled decay, first
 *   m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2
 *   p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *
 * Clipping (torch.nn.utils.clip_grad_norm_): with the global L2 norm N of
 * all gradients, they are multiplied by max_norm / (N + 1e-6) when that is
 * below 1.
 */
#ifndef GM_OPTIM_H
#define GM_OPTIM_H

#include <stdint.h>

#include "base/error.h"

enum gm_schedule {
	GM_SCHEDULE_COSINE,
	GM_SCHEDULE_LINEAR,
	GM_SCHEDULE_CONSTANT
};

/* "cosine", "linear", "constant" */
const char *gm_schedule_name(enum gm_schedule s);
/* 0, or GM_EINVAL with a message listing the names. */
int gm_schedule_from_name(const char *name, enum gm_schedule *out, gm_error *err);
/* The learning rate of step (from 0). */
double gm_schedule_lr(enum gm_schedule s, double lr, int64_t warmup, int64_t n_steps, int64_t step);

typedef struct gm_adamw {
	double beta1, beta2, eps, weight_decay;
} gm_adamw;

#define GM_ADAMW_DEFAULTS { 0.9, 0.999, 1e-8, 0.0 }

/*
 * One AdamW update of n parameters p with gradients g and moments m, v
 * (f32, updated in place); t is the update's number, from 1.
 */
void gm_adamw_update(const gm_adamw *o, double lr, int64_t t, float *p, const float *g, float *m, float *v,
		     int64_t n);

/* The clipping factor for a global norm (1 when max_norm <= 0 or norm <= max_norm). */
double gm_clip_coef(double norm, double max_norm);

#endif
