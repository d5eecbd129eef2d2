/*
 * registry.c - the per-user model registry in SQLite (see registry.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "base/buf.h"
#include "base/fs.h"
#include "storage/registry.h"

/* The schema this build reads and writes (PRAGMA user_version). */
#define GM_REGISTRY_SCHEMA 1
/* How long a command waits for another one holding the write lock.  Long
 * enough for any registry transaction (they are all tiny), short enough that
 * a stuck process is reported instead of hanging a CI job forever. */
#define GM_REGISTRY_BUSY_MS 30000

struct gm_registry {
	sqlite3 *db;
	char *path;
};

static const char schema_v1[] =
	"CREATE TABLE models ("
	"  id INTEGER PRIMARY KEY,"
	"  name TEXT NOT NULL UNIQUE,"
	"  path TEXT NOT NULL UNIQUE,"
	"  source TEXT NOT NULL DEFAULT '',"
	"  revision TEXT NOT NULL DEFAULT '',"
	"  added_at INTEGER NOT NULL,"
	"  updated_at INTEGER NOT NULL);"
	"CREATE TABLE worktrees ("
	"  id INTEGER PRIMARY KEY,"
	"  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,"
	"  path TEXT NOT NULL UNIQUE,"
	"  ref TEXT NOT NULL,"
	"  method TEXT NOT NULL DEFAULT '',"
	"  created_at INTEGER NOT NULL);"
	"CREATE TABLE adapters ("
	"  id INTEGER PRIMARY KEY,"
	"  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,"
	"  name TEXT NOT NULL,"
	"  path TEXT NOT NULL,"
	"  base_revision TEXT NOT NULL DEFAULT '',"
	"  created_at INTEGER NOT NULL,"
	"  UNIQUE (model_id, name));";

static int db_error(gm_registry *r, gm_error *err, const char *what)
{
	return gm_error_set(err, GM_EIO, "registry %s: %s: %s", r->path, what, sqlite3_errmsg(r->db));
}

static int exec(gm_registry *r, const char *sql, gm_error *err)
{
	char *msg = NULL;

	if (sqlite3_exec(r->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		gm_error_set(err, GM_EIO, "registry %s: %s", r->path,
			     msg ? msg : sqlite3_errmsg(r->db));
		sqlite3_free(msg);
		return GM_EIO;
	}
	return 0;
}

/* Every change runs between begin() and end(): BEGIN IMMEDIATE takes the
 * write lock up front (waiting up to the busy timeout), so two writers never
 * both read, then both fail to upgrade. */
static int begin(gm_registry *r, gm_error *err)
{
	return exec(r, "BEGIN IMMEDIATE", err);
}

static int end(gm_registry *r, int ret, gm_error *err)
{
	if (ret) {
		sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
		return ret;
	}
	return exec(r, "COMMIT", err);
}

static int prepare(gm_registry *r, const char *sql, sqlite3_stmt **st, gm_error *err)
{
	if (sqlite3_prepare_v2(r->db, sql, -1, st, NULL) != SQLITE_OK)
		return db_error(r, err, "prepare");
	return 0;
}

static char *col_str(sqlite3_stmt *st, int i)
{
	const unsigned char *s = sqlite3_column_text(st, i);
	return gm_xstrdup(s ? (const char *)s : "");
}

int gm_registry_default_path(char **out, gm_error *err)
{
	const char *env = getenv("GIT_MODEL_REGISTRY"), *data = getenv("XDG_DATA_HOME");
	const char *home = getenv("HOME");
	gm_buf b = GM_BUF_INIT;

	if (env && *env) {
		*out = gm_xstrdup(env);
		return 0;
	}
	if (data && *data == '/') {
		gm_buf_addf(&b, "%s/git-model/registry.db", data);
	} else {
		if (!home || !*home)
			return gm_error_set(err, GM_EINVAL, "cannot locate the model registry: HOME is not set "
					    "(set GIT_MODEL_REGISTRY to a file path)");
		gm_buf_addf(&b, "%s/.local/share/git-model/registry.db", home);
	}
	*out = gm_buf_detach(&b, NULL);
	return 0;
}

static int schema_version(gm_registry *r, int *version, gm_error *err)
{
	sqlite3_stmt *st;
	int ret;

	if ((ret = prepare(r, "PRAGMA user_version", &st, err)))
		return ret;
	*version = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
	sqlite3_finalize(st);
	return 0;
}

static int migrate(gm_registry *r, gm_error *err)
{
	int version, ret;

	/* the common case reads the version without taking the write lock,
	 * so that commands that only read never wait for one another */
	if ((ret = schema_version(r, &version, err)))
		return ret;
	if (version == GM_REGISTRY_SCHEMA)
		return 0;
	if ((ret = begin(r, err)))
		return ret;
	if ((ret = schema_version(r, &version, err))) /* again, under the lock */
		return end(r, ret, err);
	if (version == 0) {
		ret = exec(r, schema_v1, err);
		if (!ret)
			ret = exec(r, "PRAGMA user_version = 1", err);
	} else if (version > GM_REGISTRY_SCHEMA) {
		ret = gm_error_set(err, GM_EUNSUPPORTED,
				   "registry %s has schema version %d, newer than this git-model knows (%d): "
				   "upgrade git-model, or point GIT_MODEL_REGISTRY at another file",
				   r->path, version, GM_REGISTRY_SCHEMA);
	}
	return end(r, ret, err);
}

/*
 * The connection's settings and the schema.  WAL: readers never block the
 * writer and a crash mid-write leaves the last committed state;
 * synchronous=NORMAL is durable enough in WAL mode (a power loss may drop
 * the last commit, never corrupt).
 *
 * While several commands create a new database at once, switching it to
 * WAL or reading its schema can answer SQLITE_BUSY without SQLite calling
 * the busy handler (the other connection holds the exclusive lock of the
 * switch), so these steps are retried here, with short random sleeps, up
 * to the same timeout.
 */
static int setup(gm_registry *r, gm_error *err)
{
	struct timespec start, now, nap;
	int ret, code;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		ret = exec(r, "PRAGMA journal_mode = WAL", err);
		if (!ret)
			ret = exec(r, "PRAGMA synchronous = NORMAL", err);
		if (!ret)
			ret = exec(r, "PRAGMA foreign_keys = ON", err);
		if (!ret)
			ret = migrate(r, err);
		code = sqlite3_errcode(r->db) & 0xff;
		if (!ret || (code != SQLITE_BUSY && code != SQLITE_LOCKED))
			return ret;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 >
		    GM_REGISTRY_BUSY_MS)
			return ret;
		nap.tv_sec = 0;
		nap.tv_nsec = (5 + rand() % 20) * 1000000L;
		nanosleep(&nap, NULL);
	}
}

int gm_registry_open(const char *path, gm_registry **out, gm_error *err)
{
	gm_registry *r;
	char *dir, *slash;
	int ret;

	*out = NULL;
	r = gm_xcalloc(1, sizeof(*r));
	if (path) {
		r->path = gm_xstrdup(path);
	} else if ((ret = gm_registry_default_path(&r->path, err))) {
		free(r);
		return ret;
	}
	dir = gm_xstrdup(r->path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if ((ret = gm_mkdir_p(dir, 0700, err))) {
			free(dir);
			gm_registry_close(r);
			return gm_error_prefix(err, "cannot create the registry directory");
		}
	}
	free(dir);
	if (sqlite3_open_v2(r->path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		ret = gm_error_set(err, GM_EIO, "cannot open the registry %s: %s", r->path,
				   r->db ? sqlite3_errmsg(r->db) : "out of memory");
		gm_registry_close(r);
		return ret;
	}
	sqlite3_busy_timeout(r->db, GM_REGISTRY_BUSY_MS);
	if ((ret = setup(r, err))) {
		gm_registry_close(r);
		return ret;
	}
	*out = r;
	return 0;
}

void gm_registry_close(gm_registry *r)
{
	if (!r)
		return;
	if (r->db)
		sqlite3_close(r->db);
	free(r->path);
	free(r);
}

const char *gm_registry_path(const gm_registry *r)
{
	return r->path;
}

int gm_registry_check_name(const char *name, gm_error *err)
{
	size_t i, n = strlen(name);

	if (n == 0 || n > 100)
		return gm_error_set(err, GM_EINVAL, "invalid model name '%s': 1 to 100 characters expected",
				    name);
	if (name[0] == '.' || name[0] == '-')
		return gm_error_set(err, GM_EINVAL, "invalid model name '%s': it may not start with '%c'",
				    name, name[0]);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return gm_error_set(err, GM_EINVAL, "invalid model name '%s': only letters, digits, "
					    "'.', '_' and '-' are allowed", name);
	}
	return 0;
}

static void model_from_row(sqlite3_stmt *st, gm_registry_model *m)
{
	m->name = col_str(st, 0);
	m->path = col_str(st, 1);
	m->source = col_str(st, 2);
	m->revision = col_str(st, 3);
	m->added = sqlite3_column_int64(st, 4);
	m->updated = sqlite3_column_int64(st, 5);
}

#define MODEL_COLUMNS "name, path, source, revision, added_at, updated_at"

/* One model by a column (name or path); *found 0 when absent. */
static int get_by(gm_registry *r, const char *col_sql, const char *key, gm_registry_model *out, int *found,
		  gm_error *err)
{
	sqlite3_stmt *st;
	gm_buf sql = GM_BUF_INIT;
	int ret, rc;

	*found = 0;
	gm_buf_addf(&sql, "SELECT " MODEL_COLUMNS " FROM models WHERE %s = ?1", col_sql);
	ret = prepare(r, sql.buf, &st, err);
	gm_buf_release(&sql);
	if (ret)
		return ret;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		model_from_row(st, out);
		*found = 1;
	} else if (rc != SQLITE_DONE) {
		ret = db_error(r, err, "lookup");
	}
	sqlite3_finalize(st);
	return ret;
}

int gm_registry_add_model(gm_registry *r, const gm_registry_model *m, gm_error *err)
{
	gm_registry_model old;
	sqlite3_stmt *st = NULL;
	int64_t now = (int64_t)time(NULL);
	int ret, found;

	if ((ret = gm_registry_check_name(m->name, err)))
		return ret;
	if ((ret = begin(r, err)))
		return ret;
	/* Checked inside the transaction, so that two commands adding the same
	 * name get one success and one clear message (the UNIQUE constraints
	 * would catch it anyway). */
	if (!(ret = get_by(r, "name", m->name, &old, &found, err)) && found) {
		ret = gm_error_set(err, GM_EINVAL, "a model named '%s' is already registered (at %s); "
				   "choose another name or remove it with 'git model rm %s'",
				   m->name, old.path, m->name);
		gm_registry_model_release(&old);
	}
	if (!ret && !(ret = get_by(r, "path", m->path, &old, &found, err)) && found) {
		ret = gm_error_set(err, GM_EINVAL, "%s is already registered as model '%s'", m->path, old.name);
		gm_registry_model_release(&old);
	}
	if (!ret)
		ret = prepare(r, "INSERT INTO models (" MODEL_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
			      &st, err);
	if (!ret) {
		sqlite3_bind_text(st, 1, m->name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 2, m->path, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 3, m->source ? m->source : "", -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 4, m->revision ? m->revision : "", -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 5, m->added ? m->added : now);
		if (sqlite3_step(st) != SQLITE_DONE)
			ret = db_error(r, err, "adding a model");
	}
	sqlite3_finalize(st);
	return end(r, ret, err);
}

int gm_registry_get_model(gm_registry *r, const char *name, gm_registry_model *out, gm_error *err)
{
	int found, ret = get_by(r, "name", name, out, &found, err);

	if (!ret && !found)
		ret = gm_error_set(err, GM_ENOENT, "no model named '%s' in the registry (see 'git model list'; "
				   "'git model clone' or 'git model import' adds one)", name);
	return ret;
}

int gm_registry_find_by_path(gm_registry *r, const char *path, gm_registry_model *out, int *found,
			     gm_error *err)
{
	return get_by(r, "path", path, out, found, err);
}

/*
 * Runs a prepared SELECT (?1 bound to key when not NULL) and collects its
 * rows into a new array of elem-byte elements, each filled by fill; on
 * failure what is already filled is freed with free_fn.  what names the
 * listing in errors.
 */
static int list_rows(gm_registry *r, sqlite3_stmt *st, const char *key, size_t elem,
		     void (*fill)(sqlite3_stmt *st, void *e), void (*free_fn)(void *v, size_t n),
		     const char *what, void **out, size_t *n, gm_error *err)
{
	char *v = NULL;
	size_t count = 0, alloc = 0;
	int ret = 0, rc;

	*out = NULL;
	*n = 0;
	if (key)
		sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (count == alloc) {
			alloc = alloc ? 2 * alloc : 8;
			v = gm_xrealloc(v, alloc * elem);
		}
		fill(st, v + count++ * elem);
	}
	if (rc != SQLITE_DONE) {
		ret = db_error(r, err, what);
		free_fn(v, count);
	} else {
		*out = v;
		*n = count;
	}
	sqlite3_finalize(st);
	return ret;
}

static void model_fill(sqlite3_stmt *st, void *e)
{
	model_from_row(st, e);
}

static void models_free(void *v, size_t n)
{
	gm_registry_models_free(v, n);
}

int gm_registry_list_models(gm_registry *r, gm_registry_model **out, size_t *n, gm_error *err)
{
	sqlite3_stmt *st;
	void *v;
	int ret;

	*out = NULL;
	*n = 0;
	if ((ret = prepare(r, "SELECT " MODEL_COLUMNS " FROM models ORDER BY name", &st, err)))
		return ret;
	ret = list_rows(r, st, NULL, sizeof(**out), model_fill, models_free, "listing models", &v, n, err);
	*out = v;
	return ret;
}

/* Runs one UPDATE/DELETE with text parameters in a transaction; fails with
 * GM_ENOENT (message missing) when it changed no row. */
static int change(gm_registry *r, const char *sql, const char *const *params, int nparams,
		  const char *missing, gm_error *err)
{
	sqlite3_stmt *st = NULL;
	int ret, i;

	if ((ret = begin(r, err)))
		return ret;
	if (!(ret = prepare(r, sql, &st, err))) {
		for (i = 0; i < nparams; i++)
			sqlite3_bind_text(st, i + 1, params[i], -1, SQLITE_TRANSIENT);
		if (sqlite3_step(st) != SQLITE_DONE)
			ret = db_error(r, err, "update");
		else if (missing && sqlite3_changes(r->db) == 0)
			ret = gm_error_set(err, GM_ENOENT, "%s", missing);
	}
	sqlite3_finalize(st);
	return end(r, ret, err);
}

int gm_registry_set_revision(gm_registry *r, const char *name, const char *revision, gm_error *err)
{
	char now[32], missing[256];
	const char *params[3] = { revision, now, name };

	snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
	snprintf(missing, sizeof(missing), "no model named '%s' in the registry", name);
	return change(r, "UPDATE models SET revision = ?1, updated_at = CAST(?2 AS INTEGER) WHERE name = ?3",
		      params, 3, missing, err);
}

int gm_registry_remove_model(gm_registry *r, const char *name, gm_error *err)
{
	char missing[256];
	const char *params[1] = { name };

	snprintf(missing, sizeof(missing), "no model named '%s' in the registry", name);
	return change(r, "DELETE FROM models WHERE name = ?1", params, 1, missing, err);
}

void gm_registry_model_release(gm_registry_model *m)
{
	free(m->name);
	free(m->path);
	free(m->source);
	free(m->revision);
	memset(m, 0, sizeof(*m));
}

void gm_registry_models_free(gm_registry_model *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		gm_registry_model_release(&v[i]);
	free(v);
}

/* ---------------------------------------------------------------- worktrees */

int gm_registry_add_worktree(gm_registry *r, const gm_registry_worktree *w, gm_error *err)
{
	char now[32], missing[256];
	const char *params[5] = { w->path, w->ref, w->method ? w->method : "", now, w->model };

	snprintf(now, sizeof(now), "%lld", (long long)(w->created ? w->created : time(NULL)));
	snprintf(missing, sizeof(missing), "no model named '%s' in the registry", w->model);
	return change(r, "INSERT INTO worktrees (model_id, path, ref, method, created_at) "
		      "SELECT id, ?1, ?2, ?3, CAST(?4 AS INTEGER) FROM models WHERE name = ?5",
		      params, 5, missing, err);
}

int gm_registry_remove_worktree(gm_registry *r, const char *path, gm_error *err)
{
	char missing[512];
	const char *params[1] = { path };

	snprintf(missing, sizeof(missing), "no worktree at %s in the registry", path);
	return change(r, "DELETE FROM worktrees WHERE path = ?1", params, 1, missing, err);
}

static void worktree_fill(sqlite3_stmt *st, void *e)
{
	gm_registry_worktree *w = e;

	w->model = col_str(st, 0);
	w->path = col_str(st, 1);
	w->ref = col_str(st, 2);
	w->method = col_str(st, 3);
	w->created = sqlite3_column_int64(st, 4);
}

static void worktrees_free(void *v, size_t n)
{
	gm_registry_worktrees_free(v, n);
}

int gm_registry_list_worktrees(gm_registry *r, const char *model, gm_registry_worktree **out, size_t *n,
			       gm_error *err)
{
	sqlite3_stmt *st;
	void *v;
	int ret;

	*out = NULL;
	*n = 0;
	if ((ret = prepare(r, "SELECT m.name, w.path, w.ref, w.method, w.created_at FROM worktrees w "
			   "JOIN models m ON m.id = w.model_id WHERE ?1 IS NULL OR m.name = ?1 "
			   "ORDER BY m.name, w.path", &st, err)))
		return ret;
	ret = list_rows(r, st, model, sizeof(**out), worktree_fill, worktrees_free, "listing worktrees", &v, n,
			err);
	*out = v;
	return ret;
}

void gm_registry_worktrees_free(gm_registry_worktree *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(v[i].model);
		free(v[i].path);
		free(v[i].ref);
		free(v[i].method);
	}
	free(v);
}

/* ---------------------------------------------------------------- adapters */

int gm_registry_add_adapter(gm_registry *r, const gm_registry_adapter *a, gm_error *err)
{
	char now[32], missing[256];
	const char *params[5] = { a->name, a->path, a->base_revision ? a->base_revision : "", now, a->model };

	snprintf(now, sizeof(now), "%lld", (long long)(a->created ? a->created : time(NULL)));
	snprintf(missing, sizeof(missing), "no model named '%s' in the registry", a->model);
	return change(r, "INSERT OR REPLACE INTO adapters (model_id, name, path, base_revision, created_at) "
		      "SELECT id, ?1, ?2, ?3, CAST(?4 AS INTEGER) FROM models WHERE name = ?5",
		      params, 5, missing, err);
}

int gm_registry_remove_adapter(gm_registry *r, const char *model, const char *name, gm_error *err)
{
	char missing[512];
	const char *params[2] = { name, model };

	snprintf(missing, sizeof(missing), "no adapter '%s' of model '%s' in the registry", name, model);
	return change(r, "DELETE FROM adapters WHERE name = ?1 AND "
		      "model_id = (SELECT id FROM models WHERE name = ?2)", params, 2, missing, err);
}

static void adapter_fill(sqlite3_stmt *st, void *e)
{
	gm_registry_adapter *a = e;

	a->model = col_str(st, 0);
	a->name = col_str(st, 1);
	a->path = col_str(st, 2);
	a->base_revision = col_str(st, 3);
	a->created = sqlite3_column_int64(st, 4);
}

static void adapters_free(void *v, size_t n)
{
	gm_registry_adapters_free(v, n);
}

int gm_registry_list_adapters(gm_registry *r, const char *model, gm_registry_adapter **out, size_t *n,
			      gm_error *err)
{
	sqlite3_stmt *st;
	void *v;
	int ret;

	*out = NULL;
	*n = 0;
	if ((ret = prepare(r, "SELECT m.name, a.name, a.path, a.base_revision, a.created_at FROM adapters a "
			   "JOIN models m ON m.id = a.model_id WHERE ?1 IS NULL OR m.name = ?1 "
			   "ORDER BY m.name, a.name", &st, err)))
		return ret;
	ret = list_rows(r, st, model, sizeof(**out), adapter_fill, adapters_free, "listing adapters", &v, n, err);
	*out = v;
	return ret;
}

void gm_registry_adapters_free(gm_registry_adapter *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(v[i].model);
		free(v[i].name);
		free(v[i].path);
		free(v[i].base_revision);
	}
	free(v);
}
