/*
 * sparse.h - sparse weight-delta adapters (CSR), made from LoRA adapters.
 *
 * A sparse adapter directory holds
 *
 *   sparse_config.json         {"peft_type": "SPARSE_DELTA", "format": "csr", "density": 0.01, ...}
 *   adapter_model.safetensors  base_model.model.MODULE.delta.row_offsets  I64 or I32 [out + 1]
 *                              base_model.model.MODULE.delta.col_indices  I32 [nnz]
 *                              base_model.model.MODULE.delta.values       F32 [nnz]
 *
 * and adds delta W ([out, in], in CSR: row o holds the entries
 * row_offsets[o] .. row_offsets[o + 1] - 1, columns strictly increasing) to
 * the weight of each MODULE: y = W x + s * delta W x, s the caller's scale.
 * The source LoRA's scale is already in the values.
 *
 * The config is a file of its own, sparse_config.json, not an
 * adapter_config.json, so that PEFT tools never take the directory for a
 * LoRA.  Its keys: "peft_type" ("SPARSE_DELTA"), "format" ("csr"),
 * "density" (the requested fraction of entries kept per module), "nnz",
 * "norm_kept" (||kept||_F / ||delta W||_F over all modules), "delta_norm"
 * (||delta W||_F over all modules), "source" ({"path", "base_model_name_or_path",
 * "r", "lora_alpha", "use_rslora", "scale"}), "base_model_name_or_path", and
 * "modules": {MODULE: {"shape": [out, in], "nnz", "norm_kept",
 * "delta_norm", "r", "scale"}}; the module shapes are the base model's
 * weight shapes.
 */
#ifndef GM_SPARSE_H
#define GM_SPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "formats/peft.h"
#include "formats/safetensors.h"

#define GM_SPARSE_CONFIG_FILE "sparse_config.json"
#define GM_SPARSE_WEIGHTS_FILE "adapter_model.safetensors"
#define GM_SPARSE_PEFT_TYPE "SPARSE_DELTA"
#define GM_SPARSE_FORMAT "csr"

/* One module's delta W [out, in] in CSR, owned (copied out of the file). */
typedef struct gm_sparse_module {
	char *name;             /* "model.layers.3.self_attn.q_proj" */
	int layer;
	enum gm_peft_proj proj;
	int64_t out, in, nnz;
	int64_t *row_offsets;   /* [out + 1] */
	int32_t *col_indices;   /* [nnz] */
	float *values;          /* [nnz] */
	double norm_kept;       /* from the config; NAN when absent */
	double delta_norm;      /* ||delta W||_F of the source; NAN when absent */
} gm_sparse_module;

typedef struct gm_sparse_adapter {
	char *dir;
	char *config_path;
	char *weights_path;
	double density;
	double norm_kept;       /* over all modules */
	double delta_norm;
	char *source;           /* the source adapter's path; NULL when absent */
	int64_t source_r;       /* 0 when absent */
	double source_alpha, source_scale;
	int source_rslora;
	char *base_model;       /* NULL when absent */
	gm_sparse_module *modules; /* sorted by layer, then projection */
	size_t n_modules;
	uint64_t nnz;
	uint64_t n_bytes;       /* the tensors' bytes */
	uint64_t dense_bytes;   /* sum of out * in * 4 */
} gm_sparse_adapter;

/* 1 when dir holds a sparse_config.json. */
int gm_sparse_is_dir(const char *dir);

/*
 * Checks one CSR matrix of out rows and in columns: row_offsets[0] == 0,
 * monotone, row_offsets[out] == nnz, column indices in [0, in) and
 * strictly increasing within each row, values finite.  what names it in
 * errors (GM_EFORMAT).
 */
int gm_sparse_check_csr(const char *what, int64_t out, int64_t in, const int64_t *row_offsets,
			const int32_t *col_indices, const float *values, int64_t nnz, gm_error *err);

/*
 * Loads and validates the sparse adapter directory dir: the config (type,
 * format, module shapes), every module's three tensors (dtypes, 1-D shapes
 * of out + 1 and nnz, the CSR checks above), no stray tensor, no module
 * without its tensors.  Errors name the file and the tensor or key at
 * fault.  On success *out is owned by the caller.
 */
int gm_sparse_open(const char *dir, gm_sparse_adapter **out, gm_error *err);
void gm_sparse_close(gm_sparse_adapter *ad);

/* What gm_sparse_sparsify wrote. */
typedef struct gm_sparse_stats {
	uint64_t nnz;
	uint64_t file_bytes;    /* adapter_model.safetensors on disk */
	uint64_t dense_bytes;   /* sum of out * in * 4: the delta stored dense in f32 */
	uint64_t lora_bytes;    /* the source's adapter_model.safetensors on disk */
	double norm_kept;       /* ||kept||_F / ||delta W||_F over all modules */
	double delta_norm;
} gm_sparse_stats;

/*
 * The module's delta W = scale * B * A, rows [r0, r1), into d
 * ([r1 - r0, in]), computed in f32 (a: A as f32 [r, in], b: B as f32
 * [out, r]).  Exposed for tests, which compare against it.
 */
void gm_sparse_delta_rows(const float *a, const float *b, int64_t r, int64_t in, float scale, int64_t r0,
			  int64_t r1, float *d);

/*
 * Turns the LoRA src into a sparse adapter in the new directory out_dir
 * (which must not exist; GM_EINVAL otherwise): per module, delta W =
 * scale * B * A in f32, computed a block of rows at a time (never held
 * whole), keeping the nnz = ceil(density * out * in) entries of largest
 * magnitude (ties broken by position, row-major).  density in (0, 1].
 * The directory is written under a temporary name and renamed.  stats
 * may be NULL.
 */
int gm_sparse_sparsify(const gm_peft_adapter *src, double density, const char *out_dir, gm_sparse_stats *stats,
		       gm_error *err);

/*
 * ceil(density * n), at least 1 and at most n; a product a rounding step
 * above an integer (0.1 * 1000) counts as that integer.
 */
int64_t gm_sparse_keep_count(double density, int64_t n);

/* The module of a layer and projection, or NULL. */
const gm_sparse_module *gm_sparse_find(const gm_sparse_adapter *ad, int layer, enum gm_peft_proj proj);

#endif
