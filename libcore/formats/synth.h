/*
 * synth.h - synthetic models: a Hugging Face-layout directory with random
 * weights of a real shape.
 *
 * Benchmarks, demos and users' CI need models of the real sizes where no
 * download is possible.  gm_synth_write writes config.json,
 * generation_config.json, model.safetensors (random weights), and the
 * bundled Qwen3 tokenizer.json / tokenizer_config.json / LICENSE, into a
 * temporary directory beside the target and renames it into place, so an
 * interrupted run leaves nothing under the final name.
 *
 * Weights are a pure function of (seed, tensor name, element index): the
 * same seed gives byte-identical files whatever the thread count.
 */
#ifndef GM_SYNTH_H
#define GM_SYNTH_H

#include <stdint.h>

#include "formats/config.h"
#include "formats/dtype.h"
#include "base/error.h"

typedef void (*gm_synth_progress_fn)(void *ctx, uint64_t done_bytes, uint64_t total_bytes);

typedef struct gm_synth_opts {
	gm_model_config config;     /* shape, ids; config.dtype is overwritten by dtype */
	enum gm_dtype dtype;        /* F32, F16 or BF16 */
	uint64_t seed;
	int threads;                /* 0: one per online CPU */
	gm_synth_progress_fn progress; /* may be NULL */
	void *progress_ctx;
} gm_synth_opts;

/* Fills cfg with a named shape ("qwen3-0.6b", "qwen3-1.7b", "tiny"). */
int gm_synth_shape(const char *name, gm_model_config *cfg, gm_error *err);
/* NULL-terminated list of the shape names. */
const char *const *gm_synth_shape_names(void);
/* Checks a (possibly user-edited) shape: positive sizes, heads divisible by
 * kv heads, even head_dim, a vocabulary that holds the tokenizer's ids. */
int gm_synth_check(const gm_synth_opts *o, gm_error *err);
/* Writes the model directory; dir must not exist or be an empty directory. */
int gm_synth_write(const char *dir, const gm_synth_opts *o, gm_error *err);

#endif
