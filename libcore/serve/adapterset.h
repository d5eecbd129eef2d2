/*
 * adapterset.h - the adapters a server serves, added and updated at run
 * time, each in numbered versions that requests pin.
 *
 * An adapter set maps names ("kjv", "ft-mytask") to adapters; the name is
 * what a client writes after the model id ("MODEL:NAME") or in
 * "adapters": [{"name"}].  Each adapter has a current version: an
 * immutable, reference-counted snapshot of its weights (a PEFT LoRA or a
 * sparse delta, never changed once published).  Version 1 is what
 * gm_adapter_set_add gave; every gm_adapter_set_publish makes the next
 * number current.
 *
 * Pinning.  A request takes a reference on the current version of each of
 * its adapters when it is parsed (gm_adapter_set_acquire) and drops it when
 * it is freed (gm_adapter_version_release).  Everything it computes, from
 * its first token to its last, uses that version: the server's scheduler
 * copies the pinned version's weights into a forward adapter set
 * (gm_forward_adapter_set_add) and keys both those sets and its prefix
 * cache by (adapter, version, scale), so a publish in the middle of a
 * generation changes nothing for it, and a request that comes after the
 * publish gets the new weights from its first token.  The old version is
 * freed when its last request releases it.  Publishing is a pointer swap
 * under the set's lock, so no reader ever sees a half-written adapter: the
 * publisher builds the new version completely first (its own directory,
 * opened and checked) and hands it over.
 *
 * Indices are stable: an adapter, once added, keeps its index for the
 * set's life (adapters are never removed), so a request may keep an index.
 *
 * Thread safety: every function may be called from any thread, except
 * gm_adapter_set_free.  A version's accessors need no lock (it never
 * changes); the name strings returned live as long as the set.
 *
 * Typical use, by a trainer or a fine-tuning job living beside a server
 * (serve.h: gm_serve_adapter_set gives the server's set):
 *
 *   gm_adapter_set *as = gm_serve_adapter_set(srv);
 *   int i;
 *   gm_adapter_set_add_dir(as, "ft-mytask", "/path/to/peft-dir", &i, &err);  // servable now as MODEL:ft-mytask
 *   ...
 *   gm_peft_adapter *next;                 // a complete new adapter, e.g. from gm_peft_open
 *   uint64_t v;
 *   gm_adapter_set_publish(as, i, next, NULL, &v, &err);   // set owns next now; requests from here on use v
 *
 * and by the server, for each request:
 *
 *   gm_adapter_version *pin = gm_adapter_set_acquire(as, i);
 *   ... gm_adapter_version_lora(pin), gm_adapter_version_number(pin) ...
 *   gm_adapter_version_release(pin);
 */
#ifndef GM_ADAPTERSET_H
#define GM_ADAPTERSET_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "formats/model.h"
#include "formats/peft.h"
#include "formats/sparse.h"

typedef struct gm_adapter_set gm_adapter_set;
typedef struct gm_adapter_version gm_adapter_version;

/*
 * A new empty set for the model m (borrowed; it must outlive the set):
 * every adapter added or published is checked against it
 * (gm_forward_check_adapter / gm_forward_check_sparse).
 */
gm_adapter_set *gm_adapter_set_new(const gm_model *m);
/* Frees the set and its current versions; versions still pinned live until released. */
void gm_adapter_set_free(gm_adapter_set *s);

/*
 * Adds adapter name with its first version (number 1): exactly one of lora
 * and sparse, which the set owns from the call on, whatever it returns.
 * dir (may be NULL) is only recorded, for gm_adapter_set_dir.  The name
 * must be non-empty, without ':' or '/' or white space, and new
 * (GM_EINVAL otherwise); the adapter must fit the model.  *index (may be
 * NULL) receives the new adapter's index.
 */
int gm_adapter_set_add(gm_adapter_set *s, const char *name, const char *dir, struct gm_peft_adapter *lora,
		       struct gm_sparse_adapter *sparse, int *index, gm_error *err);
/*
 * gm_adapter_set_add with the first version numbered first (>= 1): an
 * adapter whose versions continue those of an earlier process (a learning
 * run resumed from its commit).
 */
int gm_adapter_set_add_numbered(gm_adapter_set *s, const char *name, const char *dir, struct gm_peft_adapter *lora,
				struct gm_sparse_adapter *sparse, uint64_t first, int *index, gm_error *err);
/*
 * gm_adapter_set_add of the adapter directory dir: a sparse delta when it
 * holds sparse_config.json, else a PEFT LoRA.  Errors name dir.
 */
int gm_adapter_set_add_dir(gm_adapter_set *s, const char *name, const char *dir, int *index, gm_error *err);

/*
 * Makes a new version of adapter index current: exactly one of lora and
 * sparse (owned by the set from the call on, whatever it returns; it need
 * not be of the same kind as the last version).  Checked against the
 * model first: on failure nothing changes.  *number (may be NULL)
 * receives the new version's number.
 */
int gm_adapter_set_publish(gm_adapter_set *s, int index, struct gm_peft_adapter *lora,
			   struct gm_sparse_adapter *sparse, uint64_t *number, gm_error *err);

/* The index of the adapter named name[0..len), or -1. */
int gm_adapter_set_find(gm_adapter_set *s, const char *name, size_t len);
/* Adapters in the set (indices 0 .. count - 1). */
int gm_adapter_set_count(gm_adapter_set *s);
/* The name of adapter index (valid as long as the set). */
const char *gm_adapter_set_name(gm_adapter_set *s, int index);
/* The directory it was added from; NULL when none was given. */
const char *gm_adapter_set_dir(gm_adapter_set *s, int index);
/* The number of its current version (1 until the first publish). */
uint64_t gm_adapter_set_version(gm_adapter_set *s, int index);

/*
 * A reference on the current version of adapter index (never NULL for a
 * valid index); the caller releases it.  The version stays whole and
 * unchanged while referenced, whatever is published meanwhile.
 */
gm_adapter_version *gm_adapter_set_acquire(gm_adapter_set *s, int index);
/* Another reference on v. */
gm_adapter_version *gm_adapter_version_ref(gm_adapter_version *v);
/* Drops a reference (NULL: nothing); the last one frees the version. */
void gm_adapter_version_release(gm_adapter_version *v);

/* The version's weights: one of the two is NULL. */
const struct gm_peft_adapter *gm_adapter_version_lora(const gm_adapter_version *v);
const struct gm_sparse_adapter *gm_adapter_version_sparse(const gm_adapter_version *v);
/* Its number: 1, 2, ... per adapter. */
uint64_t gm_adapter_version_number(const gm_adapter_version *v);
/* "lora" or "sparse". */
const char *gm_adapter_version_kind(const gm_adapter_version *v);
/* When it was published (CLOCK_MONOTONIC seconds; see gm_adapter_set_now). */
double gm_adapter_version_published(const gm_adapter_version *v);
/* The clock the published times use: CLOCK_MONOTONIC in seconds. */
double gm_adapter_set_now(void);

#endif
