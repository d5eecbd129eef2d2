/*
 * peft.h - PEFT LoRA adapter directories.
 *
 * An adapter directory, as Hugging Face PEFT saves it, holds
 *
 *   adapter_config.json        {"peft_type": "LORA", "r": 8, "lora_alpha": 16,
 *                               "target_modules": [...], ...}
 *   adapter_model.safetensors  base_model.model.MODULE.lora_A.weight  [r, in]
 *                              base_model.model.MODULE.lora_B.weight  [out, r]
 *
 * and adds scale * B * A to the weight of each MODULE (y = W x + scale B A x),
 * where scale = alpha / r, or alpha / sqrt(r) with use_rslora; r and alpha
 * may be overridden per module by rank_pattern and alpha_pattern.
 *
 * Supported: plain LoRA on the seven projections of decoder layers
 * (model.layers.N.self_attn.{q,k,v,o}_proj, model.layers.N.mlp.{gate,up,
 * down}_proj) in F32, F16 or BF16.  Refused with GM_EUNSUPPORTED: another
 * peft_type, use_dora, bias other than "none", lora_bias, modules_to_save.
 *
 * Patterns follow PEFT: a target_modules list matches a module whose name is
 * an entry or ends with "." + an entry; a target_modules string is a regular
 * expression the whole name must match; "all-linear" matches every supported
 * projection.  A rank_pattern / alpha_pattern key K applies to a module whose
 * name matches "(.*\.)?(K)$" (the first such key in file order wins).
 * Regular expressions are Python's; they are run as POSIX extended ones after
 * translating (?:...), \d and \D; lookarounds and named groups are refused.
 */
#ifndef GM_PEFT_H
#define GM_PEFT_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "base/error.h"
#include "formats/safetensors.h"

#define GM_PEFT_CONFIG_FILE "adapter_config.json"
#define GM_PEFT_WEIGHTS_FILE "adapter_model.safetensors"

/* The projections a LoRA module may sit on, in layer order. */
enum gm_peft_proj {
	GM_PEFT_Q_PROJ,
	GM_PEFT_K_PROJ,
	GM_PEFT_V_PROJ,
	GM_PEFT_O_PROJ,
	GM_PEFT_GATE_PROJ,
	GM_PEFT_UP_PROJ,
	GM_PEFT_DOWN_PROJ,
	GM_PEFT_PROJ_COUNT
};

/* "q_proj", ... */
const char *gm_peft_proj_name(enum gm_peft_proj p);
/* "self_attn" or "mlp" */
const char *gm_peft_proj_parent(enum gm_peft_proj p);
/* 0 and *out set for a known projection name, GM_ENOENT otherwise (no message). */
int gm_peft_proj_from_name(const char *name, enum gm_peft_proj *out);

/*
 * Parses "model.layers.N.PARENT.PROJ" into its layer and projection;
 * GM_EUNSUPPORTED (message naming the module) for anything else.
 */
int gm_peft_parse_module_name(const char *module, int *layer, enum gm_peft_proj *proj, gm_error *err);

enum gm_peft_target_kind {
	GM_PEFT_TARGET_LIST,      /* names or name suffixes */
	GM_PEFT_TARGET_REGEX,     /* one regular expression, matched in full */
	GM_PEFT_TARGET_ALL_LINEAR /* "all-linear" */
};

/* A rank_pattern or alpha_pattern entry. */
struct gm_peft_pattern {
	char *key;    /* as written in the config */
	double value; /* the rank (an integer) or the alpha */
	regex_t re;   /* "^(.*\.)?(KEY)$" */
};

typedef struct gm_peft_config {
	char *peft_type;          /* "LORA" */
	int64_t r;
	double lora_alpha;
	int use_rslora;
	double lora_dropout;
	char *bias;               /* "none" */
	char *base_model;         /* base_model_name_or_path; NULL when absent */
	char *task_type;          /* NULL when absent */
	enum gm_peft_target_kind target_kind;
	char **target_modules;    /* LIST: the entries; REGEX: the expression */
	size_t n_target_modules;
	regex_t target_re;        /* REGEX only */
	struct gm_peft_pattern *rank_pattern;
	size_t n_rank_pattern;
	struct gm_peft_pattern *alpha_pattern;
	size_t n_alpha_pattern;
} gm_peft_config;

/*
 * Parses an adapter_config.json object; what names it in errors.  Unknown
 * keys are ignored.  On failure cfg holds nothing to release.
 */
int gm_peft_config_parse(json_object *obj, const char *what, gm_peft_config *cfg, gm_error *err);
/* Reads and parses an adapter_config.json file. */
int gm_peft_config_load(const char *path, gm_peft_config *cfg, gm_error *err);
void gm_peft_config_release(gm_peft_config *cfg);

/* 1 when target_modules selects the module ("model.layers.0.self_attn.q_proj"). */
int gm_peft_config_targets(const gm_peft_config *cfg, const char *module);
/* The module's rank and alpha after rank_pattern / alpha_pattern. */
int64_t gm_peft_config_rank(const gm_peft_config *cfg, const char *module);
double gm_peft_config_alpha(const gm_peft_config *cfg, const char *module);
/* alpha / r, or alpha / sqrt(r) with use_rslora. */
double gm_peft_scale(int64_t r, double alpha, int use_rslora);
/* The config's default scale (r and lora_alpha, no pattern). */
double gm_peft_config_scale(const gm_peft_config *cfg);

/* One adapted projection. */
typedef struct gm_peft_module {
	char *name;             /* "model.layers.3.self_attn.q_proj" */
	int layer;
	enum gm_peft_proj proj;
	const gm_tensor *a;     /* lora_A [rank, in], a view into the adapter's file */
	const gm_tensor *b;     /* lora_B [out, rank] */
	int64_t rank, in, out;
	double alpha;
	double scale;           /* delta W = scale * B * A, [out, in] */
} gm_peft_module;

typedef struct gm_peft_adapter {
	char *dir;
	char *config_path;
	char *weights_path;
	gm_peft_config config;
	gm_st_file *st;
	gm_peft_module *modules; /* sorted by layer, then projection */
	size_t n_modules;
	uint64_t n_params;       /* elements of all A and B */
	uint64_t n_bytes;        /* their bytes */
} gm_peft_adapter;

/*
 * Loads and validates the adapter directory dir.  Errors name the file and
 * the tensor or key at fault: a missing config or weights file, a config we
 * cannot honour, a tensor that is not a LoRA weight, an A without its B or
 * the reverse, a rank that disagrees with A, B or the config, a module
 * target_modules does not select, a shape that is not 2-D, a dtype other
 * than F32, F16 and BF16.  On success *out is owned by the caller.
 */
int gm_peft_open(const char *dir, gm_peft_adapter **out, gm_error *err);
void gm_peft_close(gm_peft_adapter *ad);

/* The module of a layer and projection, or NULL. */
const gm_peft_module *gm_peft_find(const gm_peft_adapter *ad, int layer, enum gm_peft_proj proj);

/*
 * ||scale * B * A||_F without forming B * A:
 *   ||BA||_F^2 = sum_ij (B^T B)_ij (A A^T)_ij,
 * with both r x r Gram matrices accumulated in double.  a is [r, in], b is
 * [out, r], both F32, F16, BF16 or F64.
 */
int gm_peft_delta_norm(const gm_tensor *a, const gm_tensor *b, double scale, double *out,
		       gm_error *err);
int gm_peft_module_norm(const gm_peft_module *m, double *out, gm_error *err);

#endif
