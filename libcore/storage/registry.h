/*
 * registry.h - the per-user model registry (SQLite).
 *
 * One database per user lists the models git-model manages: their names,
 * where their repositories are, where they came from and the revision last
 * fetched; it has room for worktrees and adapters.  The database is
 *
 *     $GIT_MODEL_REGISTRY                      when set (a file path)
 *     $XDG_DATA_HOME/git-model/registry.db     else
 *     ~/.local/share/git-model/registry.db     when XDG_DATA_HOME is unset
 *
 * Several commands may run at once (two clones in two terminals, a CI
 * matrix): the database is in WAL mode, waits up to a busy timeout for
 * another writer, and every change is one IMMEDIATE transaction, so a
 * reader never sees half a change and writers never interleave.  The schema
 * carries its version in PRAGMA user_version; a newer schema than this
 * build knows is refused rather than misread.
 *
 * Strings returned in structs are owned by the struct; release them with
 * the matching *_release function.
 */
#ifndef GM_REGISTRY_H
#define GM_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef struct gm_registry gm_registry;

typedef struct gm_registry_model {
	char *name;     /* unique; see gm_registry_check_name */
	char *path;     /* absolute path of the repository's work tree */
	char *source;   /* what it was cloned from ("hf:Org/Name@rev", a URL, a path); "" for imports */
	char *revision; /* commit id (hex) recorded at the last clone/import/pull/commit */
	int64_t added;  /* unix time */
	int64_t updated;
} gm_registry_model;

typedef struct gm_registry_worktree {
	char *model;    /* the model's name */
	char *path;     /* absolute path of the worktree */
	char *ref;      /* branch or revision checked out there */
	char *method;   /* how large files are shared (overlay, reflink, hardlink, copy...) */
	int64_t created;
} gm_registry_worktree;

typedef struct gm_registry_adapter {
	char *model;    /* the model's name */
	char *name;     /* adapter name, unique per model */
	char *path;     /* path of the adapter directory, relative to the model's work tree */
	char *base_revision; /* the model revision it was trained on; "" when unknown */
	int64_t created;
} gm_registry_adapter;

/* The database path the rules above give; the caller frees it. */
int gm_registry_default_path(char **out, gm_error *err);

/* Opens (creating it, its directory and its schema as needed) the registry
 * at path, or at gm_registry_default_path when path is NULL. */
int gm_registry_open(const char *path, gm_registry **out, gm_error *err);
void gm_registry_close(gm_registry *r);
const char *gm_registry_path(const gm_registry *r);

/* A model name is 1-100 characters of [A-Za-z0-9._-], not starting with
 * '.' or '-': it becomes a directory name and appears in NAME@REV. */
int gm_registry_check_name(const char *name, gm_error *err);

/* Adds a model; fails with GM_EINVAL naming the existing entry when the
 * name or the path is already registered. */
int gm_registry_add_model(gm_registry *r, const gm_registry_model *m, gm_error *err);
/* Looks a model up by name: GM_ENOENT with a hint when there is none. */
int gm_registry_get_model(gm_registry *r, const char *name, gm_registry_model *out, gm_error *err);
/* Looks a model up by its work tree path; *found is 0 when none. */
int gm_registry_find_by_path(gm_registry *r, const char *path, gm_registry_model *out, int *found,
			     gm_error *err);
/* All models, sorted by name; free with gm_registry_models_free. */
int gm_registry_list_models(gm_registry *r, gm_registry_model **out, size_t *n, gm_error *err);
/* Records a new revision (and updated time) for a model. */
int gm_registry_set_revision(gm_registry *r, const char *name, const char *revision, gm_error *err);
/* Removes a model and, with it, its worktree and adapter entries. */
int gm_registry_remove_model(gm_registry *r, const char *name, gm_error *err);
void gm_registry_model_release(gm_registry_model *m);
void gm_registry_models_free(gm_registry_model *v, size_t n);

/* Worktrees (git model checkout). */
int gm_registry_add_worktree(gm_registry *r, const gm_registry_worktree *w, gm_error *err);
int gm_registry_remove_worktree(gm_registry *r, const char *path, gm_error *err);
int gm_registry_list_worktrees(gm_registry *r, const char *model, gm_registry_worktree **out, size_t *n,
			       gm_error *err);
void gm_registry_worktrees_free(gm_registry_worktree *v, size_t n);

/* Adapters trained on or added to a model. */
int gm_registry_add_adapter(gm_registry *r, const gm_registry_adapter *a, gm_error *err);
int gm_registry_remove_adapter(gm_registry *r, const char *model, const char *name, gm_error *err);
int gm_registry_list_adapters(gm_registry *r, const char *model, gm_registry_adapter **out, size_t *n,
			      gm_error *err);
void gm_registry_adapters_free(gm_registry_adapter *v, size_t n);

#endif
