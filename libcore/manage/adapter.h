/*
 * adapter.h - the adapters kept in a model directory.
 *
 * A model repository holds its adapters as
 *
 *   adapters/NN_NAME/adapter_config.json        PEFT LoRA (peft.h), or
 *                    sparse_config.json         a sparse delta (sparse.h)
 *                    adapter_model.safetensors
 *                    git-model.json             where it came from (ours; PEFT ignores it)
 *
 * NN is a decimal index of at least two digits, the next free one when an
 * adapter is added; it never changes on rename, so "03" keeps naming the
 * same adapter.  NAME is 1-64 characters of [A-Za-z0-9._-], not starting
 * with '.' or '-'.
 *
 * These functions change files only; the commands commit the result (repo.h).
 * Every change is atomic: a new directory is assembled under a temporary
 * name inside adapters/ and renamed into place, a removed one is renamed
 * away before it is deleted.
 */
#ifndef GM_ADAPTER_H
#define GM_ADAPTER_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define GM_ADAPTER_DIR "adapters"
#define GM_ADAPTER_INFO_FILE "git-model.json"
#define GM_ADAPTER_NAME_MAX 64

/* One adapters/NN_NAME directory. */
typedef struct gm_adapter_entry {
	int index;      /* NN */
	char *name;     /* NAME */
	char *dirname;  /* "NN_NAME" */
	char *path;     /* MODEL/adapters/NN_NAME */
	int sparse;     /* 1: sparse_config.json, 0: PEFT LoRA */
} gm_adapter_entry;

/* Where an adapter came from, kept in git-model.json. */
typedef struct gm_adapter_origin {
	const char *kind;          /* "imported", "trained", "sparsified", "renamed"... */
	const char *source;        /* a path or description; may be NULL */
	const char *base_revision; /* the model's commit when it was made; may be NULL */
	const char *created;       /* "YYYY-MM-DDTHH:MM:SSZ"; NULL: now */
} gm_adapter_origin;

/* An adapter's scale ("1.5", "-0.5"): a number that is finite as a float,
 * the whole string, no leading space; 0 and *out set, or -1. */
int gm_adapter_parse_scale(const char *s, float *out);

/* 0 for a valid NAME, GM_EINVAL with a message saying why otherwise. */
int gm_adapter_name_check(const char *name, gm_error *err);

/*
 * The adapters of model_dir sorted by index (an absent adapters/ is an
 * empty list).  Entries that are not NN_NAME directories are skipped.
 * *out is owned by the caller: gm_adapter_entries_free.
 */
int gm_adapter_list(const char *model_dir, gm_adapter_entry **out, size_t *n, gm_error *err);
void gm_adapter_entries_free(gm_adapter_entry *v, size_t n);

/*
 * The adapter of model_dir that spec names: its NAME, its NN_NAME, or its
 * index NN.  GM_ENOENT (message listing what there is) when none does.
 * *out is a copy owned by the caller.
 */
int gm_adapter_find(const char *model_dir, const char *spec, gm_adapter_entry *out, gm_error *err);
void gm_adapter_entry_release(gm_adapter_entry *e);

/*
 * The directory an --adapter SPEC means: SPEC itself when it is a
 * directory, else the adapter of model_dir it names.  *dir is malloc'd.
 */
int gm_adapter_resolve(const char *model_dir, const char *spec, char **dir, gm_error *err);

/*
 * Copies the PEFT (or sparse) adapter directory src into
 * model_dir/adapters/NN_NAME, NN the next free index, after opening it and
 * checking every module's shapes against the model in model_dir.  NAME must
 * be free.  The new entry is returned in *out (may be NULL).
 */
int gm_adapter_add(const char *model_dir, const char *src, const char *name, const gm_adapter_origin *origin,
		   gm_adapter_entry *out, gm_error *err);

/* Deletes the adapter spec names; *removed (may be NULL) describes it. */
int gm_adapter_remove(const char *model_dir, const char *spec, gm_adapter_entry *removed, gm_error *err);

/* Renames NN_OLD to NN_NEW (same index); *out (may be NULL) is the new entry. */
int gm_adapter_rename(const char *model_dir, const char *spec, const char *new_name, gm_adapter_entry *out,
		      gm_error *err);

/*
 * Writes the adapter's files, without git-model.json, into the new
 * directory dest (which must not exist, or be an empty directory): a plain
 * PEFT directory any tool loads.
 */
int gm_adapter_export(const char *model_dir, const char *spec, const char *dest, gm_error *err);

/* Writes git-model.json into an adapter directory (created now). */
int gm_adapter_write_info(const char *dir, const gm_adapter_origin *origin, gm_error *err);

/* Reads git-model.json of an adapter directory; fields malloc'd, NULL when absent. */
typedef struct gm_adapter_info {
	char *kind, *source, *base_revision, *created;
} gm_adapter_info;
int gm_adapter_info_load(const char *adapter_dir, gm_adapter_info *out, gm_error *err);
void gm_adapter_info_release(gm_adapter_info *info);

/* One adapter of a merge and its scale (as --adapter SPEC:SCALE). */
typedef struct gm_adapter_merge_item {
	const char *dir;
	float scale;
} gm_adapter_merge_item;

/*
 * Folds the adapters into the model's weights: for every adapted weight W
 * [out, in], W' = W + sum_i scale_i * delta_i, delta_i = s_i B_i A_i for a
 * LoRA (s_i its alpha / r), the CSR delta for a sparse adapter; summed in
 * f32 and rounded once to W's dtype.  Every weight file of the model (the
 * single model.safetensors or each shard) is written under the same name
 * into out_dir, tensors in the same order with the same metadata; weights
 * no adapter touches keep their bytes.  *files (may be NULL) receives the
 * written file names, relative to out_dir, owned by the caller (free each
 * and the array); *n_files their count.
 */
int gm_adapter_merge(const char *model_dir, const gm_adapter_merge_item *items, size_t n_items,
		     const char *out_dir, char ***files, size_t *n_files, gm_error *err);

/*
 * gm_adapter_merge into a new model directory out_dir (which must not
 * exist): the merged weights plus copies of the model's other top-level
 * files (config, tokenizer...), assembled under a temporary name and renamed.
 */
int gm_adapter_merge_model(const char *model_dir, const gm_adapter_merge_item *items, size_t n_items,
			   const char *out_dir, gm_error *err);

/*
 * Records a change to the adapter directories dirs (paths relative to
 * model_dir, e.g. "adapters/03_coding"; each added, changed or removed) as
 * one commit with message on the current branch of the repository whose
 * work tree holds model_dir: the files under those directories now, and
 * the ones the index had there (removals).  Weights go to LFS by the
 * repository's .gitattributes.  When the model is registered, its adapter
 * entries and revision in the registry follow (a registry that cannot be
 * updated is a warning, not a failure: the commit is what counts).
 * *commit (may be NULL) receives the commit id, or "" when model_dir is not
 * the top of a git work tree (then nothing is done and 0 returned: a model
 * directory inside some other project's tree is not its repository).
 */
int gm_adapter_commit(const char *model_dir, const char *const *dirs, size_t n, const char *message,
		      char commit[41], gm_error *err);

/*
 * gm_adapter_merge of HEAD's weights (read from the object store, without
 * a checkout), committed on the new branch (which must not exist) of the
 * model's repository, with message; the current branch, index and work
 * tree are untouched.  Adapter directories are read as given.
 */
int gm_adapter_merge_commit(const char *model_dir, const gm_adapter_merge_item *items, size_t n_items,
			    const char *branch, const char *message, char commit[41], gm_error *err);

#endif
