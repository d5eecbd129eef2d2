/*
 * train.h - LoRA fine-tuning on the CPU: trainable LoRA weights
 * (gm_lora_*), the forward and backward pass of a Qwen3-family decoder with
 * them (gm_train_*), and the training run with its checkpoints.
 *
 * The base model is frozen: every adapted projection computes
 *
 *   y = x W^T + scale * (x A^T) B^T        A: [r, in], B: [out, r]
 *
 * and only A and B receive gradients (through the frozen weights of the
 * layers above).  scale = alpha / r, or alpha / sqrt(r) with rsLoRA.
 * Everything is computed in f32 whatever the base dtype (bf16 is
 * converted a panel at a time by the matmul kernels).
 *
 * Loss of one optimizer step over sequences s_1..s_n (batch x accumulation):
 *
 *   L = sum over sequences, over positions j >= 1 with mask[j] = 1,
 *       of -log softmax(logits[j - 1])[ids[j]],  divided by the number of
 *       such positions in the whole step
 *
 * which is the golden traces' rule for a padded batch (padding changes
 * nothing: causal attention never lets a real position see a pad, and pads
 * have mask 0), and makes gradient accumulation equal to one larger batch.
 * Sequences are computed one after the other, each at its own length.
 *
 *   gm_lora_init(m, &spec, seed, &lora, &err);        // A ~ PEFT's kaiming-uniform, B = 0
 *   gm_train_new(m, lora, &opts, &t, &err);
 *   gm_train_step(t, seqs, n, &info, &err);           // one optimizer step
 *   gm_lora_save(lora, "out", &err);                  // a PEFT directory
 *
 * Memory: per sequence, the residual stream entering each layer is kept
 * ([layers + 1, T, hidden] f32); the backward pass recomputes each layer's
 * forward (activation checkpointing), so only one layer's activations
 * exist at a time.  logits are computed in chunks of tokens, and only at
 * the positions whose next token is predicted.
 *
 * Determinism: every sum is taken in an order that does not depend on the
 * number of threads, so the same data, seed and options give the same bits.
 */
#ifndef GM_TRAIN_H
#define GM_TRAIN_H

#include <stdint.h>

#include "base/error.h"
#include "formats/model.h"
#include "train/optim.h"
#include "formats/peft.h"

/* ---------------------------------------------------------------- LoRA weights */

typedef struct gm_lora_module {
	int64_t rank;   /* 0: this projection is not adapted */
	int64_t in, out;
	double scale;   /* alpha / r or alpha / sqrt(r) */
	float *a;       /* [rank, in] */
	float *b;       /* [out, rank] */
} gm_lora_module;

typedef struct gm_lora {
	int n_layers;
	int64_t rank;
	double alpha;
	int use_rslora;
	unsigned targets;          /* bit p set: projection p (enum gm_peft_proj) adapted */
	char *base_model;          /* base_model_name_or_path written in the config (may be NULL) */
	gm_lora_module *mods;      /* [n_layers * GM_PEFT_PROJ_COUNT] */
	uint64_t n_params;
} gm_lora;

#define GM_LORA_ALL_TARGETS ((1u << GM_PEFT_PROJ_COUNT) - 1)

/*
 * Parses "q_proj,v_proj" or "all-linear" (also "all") into a target mask;
 * GM_EINVAL naming an unknown entry.
 */
int gm_lora_parse_targets(const char *list, unsigned *out, gm_error *err);

/*
 * New LoRA weights for model m, as PEFT initialises them: A uniform in
 * [-1/sqrt(in), 1/sqrt(in)] (kaiming_uniform with a = sqrt(5)), from a
 * generator seeded with seed, B = 0.
 */
int gm_lora_init(const gm_model *m, int64_t rank, double alpha, int use_rslora, unsigned targets,
		 uint64_t seed, gm_lora **out, gm_error *err);
/*
 * The weights of a PEFT adapter (converted to f32), checked against m.
 * Every module must share the config's r and lora_alpha (GM_EUNSUPPORTED
 * for rank_pattern / alpha_pattern adapters).
 */
int gm_lora_from_peft(const gm_model *m, const gm_peft_adapter *ad, gm_lora **out, gm_error *err);
/*
 * Writes dir/adapter_config.json and dir/adapter_model.safetensors as PEFT
 * saves them (tensor names base_model.model.model.layers.N.PARENT.PROJ.
 * lora_{A,B}.weight, F32).  dir is created when missing; each file is
 * written atomically.
 */
int gm_lora_save(const gm_lora *l, const char *dir, gm_error *err);
void gm_lora_free(gm_lora *l);
const gm_lora_module *gm_lora_module_at(const gm_lora *l, int layer, enum gm_peft_proj p);

/* ---------------------------------------------------------------- the trainer */

typedef struct gm_train_opts {
	double lr;
	enum gm_schedule schedule;
	int64_t warmup;
	int64_t n_steps;        /* total optimizer steps (for the schedule) */
	double weight_decay;
	double grad_clip;       /* <= 0: no clipping */
	double beta1, beta2, eps;
	int64_t max_len;        /* the longest sequence (buffers are sized for it) */
	int n_threads;          /* 0: one per CPU */
} gm_train_opts;

/* One training sequence.  mask NULL: every position from 1 is predicted. */
typedef struct gm_train_seq {
	const int32_t *ids;
	const uint8_t *mask;    /* [n]: 1 = predict ids[j] from ids[< j] (mask[0] is ignored) */
	int64_t n;
} gm_train_seq;

typedef struct gm_train_info {
	int64_t step;           /* the step just taken (from 0) */
	double loss;            /* mean cross-entropy before the update */
	double grad_norm;       /* global L2 norm before clipping */
	double lr;
	int64_t tokens;         /* tokens evaluated */
	int64_t targets;        /* positions in the loss */
} gm_train_info;

typedef struct gm_train gm_train;

/* lora is borrowed (and updated by gm_train_step); m must outlive t. */
int gm_train_new(const gm_model *m, gm_lora *lora, const gm_train_opts *o, gm_train **out, gm_error *err);
void gm_train_free(gm_train *t);

/* Positions in the loss of a sequence. */
int64_t gm_train_seq_targets(const gm_train_seq *s);

/*
 * Gradients of the mean loss over seqs[0..n) into the gradient buffers
 * (zeroed first); *loss: the mean cross-entropy.  No update.
 */
int gm_train_grad(gm_train *t, const gm_train_seq *seqs, int n, double *loss, gm_error *err);
/* Gradient of A or B of one module after gm_train_grad ([rank, in], [out, rank]); NULL when not adapted. */
const float *gm_train_grad_a(const gm_train *t, int layer, enum gm_peft_proj p);
const float *gm_train_grad_b(const gm_train *t, int layer, enum gm_peft_proj p);

/* gm_train_grad, then clipping and one AdamW update at the schedule's lr. */
int gm_train_step(gm_train *t, const gm_train_seq *seqs, int n, gm_train_info *info, gm_error *err);

/* Mean loss over seqs[0..n) (no gradient). */
int gm_train_eval(gm_train *t, const gm_train_seq *seqs, int n, double *loss, gm_error *err);

/* Optimizer steps taken (the next step's number). */
int64_t gm_train_steps_done(const gm_train *t);

/*
 * Optimizer state: dir/optimizer.safetensors holds the AdamW moments of
 * every A and B (F32, named as the adapter's tensors with ".exp_avg" and
 * ".exp_avg_sq") and the step count in its metadata.  Loading checks the
 * shapes against the trainer's adapter.
 */
int gm_train_save_state(const gm_train *t, const char *dir, gm_error *err);
int gm_train_load_state(gm_train *t, const char *dir, gm_error *err);

#endif
