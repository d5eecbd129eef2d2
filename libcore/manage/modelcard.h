/*
 * modelcard.h - the model card (README.md) every committed adapter carries.
 *
 * The Hub reads a README.md's YAML front matter as the repository's
 * metadata: base_model (the Hub id of the model the adapter applies to)
 * and library_name: peft make it list the adapter under its base model and
 * show PEFT's loading snippet.  Ours also records what the adapter was
 * trained from, so the card alone answers "what is this":
 *
 *   ---
 *   base_model: "Qwen/Qwen3-0.6B"
 *   library_name: "peft"
 *   pipeline_tag: "text-generation"
 *   tags: ["lora", "git-model"]
 *   git_model:
 *     adapter: "kings"
 *     base_revision: "0123abcd..."
 *     datasets:
 *       - {file: "kings.jsonl", sha256: "...", examples: 24}
 *     hyperparameters: {"rank": 4, ...}
 *     results: {steps: 6, train_loss: 1.23, eval_loss: 1.4}
 *   ---
 *
 * Strings are written as JSON strings and the hyper-parameters as a JSON
 * object: JSON is a subset of YAML 1.2, so the block is valid YAML whatever
 * the names contain.  The body says how to load the adapter and shows the
 * loss plot (trainplot.h) when there is one.
 */
#ifndef GM_MODELCARD_H
#define GM_MODELCARD_H

#include <stdint.h>

#include <json-c/json.h>

#include "base/error.h"

#define GM_MODELCARD_FILE "README.md"

typedef struct gm_modelcard_data {
	const char *file;          /* as the run named it */
	const char *sha256;        /* hex; NULL or "" when unknown (standard input) */
	int64_t examples;          /* -1: unknown */
} gm_modelcard_data;

typedef struct gm_modelcard {
	const char *adapter;       /* its name */
	const char *base_model;    /* the Hub id, or the model's name */
	const char *base_revision; /* the model's commit; may be NULL */
	gm_modelcard_data train, eval; /* eval.file NULL: none */
	json_object *hyperparameters; /* borrowed; may be NULL */
	int64_t steps;
	double train_loss, eval_loss; /* NAN: none */
	int has_plot;              /* the directory holds the loss plot */
} gm_modelcard;

/* Writes dir/README.md, atomically. */
int gm_modelcard_write(const char *dir, const gm_modelcard *card, gm_error *err);

/*
 * The Hub id of the model in model_dir when the registry knows it came
 * from the Hub ("hf:Org/Name@rev" -> "Org/Name"), else its registered
 * name, else the directory's base name.  malloc'd.
 */
char *gm_modelcard_base_model(const char *model_dir);

#endif
