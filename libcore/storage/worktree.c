/*
 * worktree.c - worktrees of registered models, large files shared
 * copy-on-write (see worktree.h and cow.h).
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <git2.h>
#include <openssl/evp.h>

#include "base/buf.h"
#include "storage/cow.h"
#include "base/fs.h"
#include "storage/libgit.h"
#include "storage/lfs.h"
#include "storage/lfs-filter.h"
#include "base/log.h"
#include "storage/registry.h"
#include "storage/worktree.h"

#define LOCK_REASON "git-model: copy-on-write worktree (remove it with: git model worktree rm)"

/* One file of a revision's tree. */
struct tree_file {
	char *path;
	unsigned mode;        /* git file mode */
	git_oid blob;
	int lfs;              /* an LFS pointer whose object is in the store */
	char oid[GM_LFS_OID_HEXLEN + 1];
	unsigned long long size; /* the object's size for LFS files, else the blob's */
};

struct tree_files {
	struct tree_file *v;
	size_t n, alloc;
};

/* A model opened for worktree operations. */
struct model_ctx {
	gm_registry *reg;
	gm_registry_model entry;
	git_repository *repo;
	char *gitdir;      /* common git directory, no trailing '/' */
	char *cowdir;      /* GITDIR/git-model/cow */
	gm_lfs_store store;
	int lock_fd;       /* cow/.lock while held, else -1 */
};

/* The state file of one worktree. */
struct wt_state {
	char *name;   /* directory name under cow/wt */
	char *path, *model, *ref, *commit, *driver, *lower, *fallback;
	int adding;   /* written by an add that has not finished (killed, if read back) */
};

/* ------------------------------------------------------------ helpers */

static char *strip_slash(char *s)
{
	size_t n = strlen(s);

	while (n > 1 && s[n - 1] == '/')
		s[--n] = 0;
	return s;
}

static void tree_files_release(struct tree_files *t)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		free(t->v[i].path);
	free(t->v);
	memset(t, 0, sizeof(*t));
}

static void state_release(struct wt_state *s)
{
	free(s->name);
	free(s->path);
	free(s->model);
	free(s->ref);
	free(s->commit);
	free(s->driver);
	free(s->lower);
	free(s->fallback);
	memset(s, 0, sizeof(*s));
}

void gm_worktree_info_release(gm_worktree_info *w)
{
	free(w->model);
	free(w->path);
	free(w->ref);
	free(w->commit);
	free(w->driver);
	free(w->lower);
	free(w->fallback);
	memset(w, 0, sizeof(*w));
}

void gm_worktree_infos_free(gm_worktree_info *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		gm_worktree_info_release(&v[i]);
	free(v);
}

static void model_close(struct model_ctx *m)
{
	if (m->repo)
		git_repository_free(m->repo);
	if (m->reg) {
		gm_registry_close(m->reg);
		gm_registry_model_release(&m->entry);
	}
	gm_lfs_store_release(&m->store);
	free(m->gitdir);
	free(m->cowdir);
	if (m->lock_fd >= 0)
		close(m->lock_fd); /* releases the lock */
	memset(m, 0, sizeof(*m));
	m->lock_fd = -1;
}

/* Serializes the commands that create, count or delete a model's lower
 * layers and worktree states, so that a lower layer is never deleted
 * while another command is starting to use it. */
static int model_lock(struct model_ctx *m, gm_error *err)
{
	char *path;
	int ret;

	if (m->lock_fd >= 0)
		return 0;
	if ((ret = gm_mkdir_p(m->cowdir, 0755, err)))
		return ret;
	path = gm_path_join(m->cowdir, ".lock");
	m->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (m->lock_fd < 0) {
		ret = gm_error_errno(err, "cannot open %s", path);
	} else if (flock(m->lock_fd, LOCK_EX)) {
		ret = gm_error_errno(err, "cannot lock %s", path);
		close(m->lock_fd);
		m->lock_fd = -1;
	}
	free(path);
	return ret;
}

static int model_open_reg(gm_registry *reg, const char *name, struct model_ctx *m, gm_error *err)
{
	int ret;

	memset(m, 0, sizeof(*m));
	m->lock_fd = -1;
	if ((ret = gm_registry_get_model(reg, name, &m->entry, err)))
		return ret;
	m->reg = reg;
	/* libgit2 with the in-process lfs filter: a status then compares
	 * large files by their pointers, as git with git-lfs does. */
	if ((ret = gm_libgit_init(err)) || (ret = gm_lfs_filter_register(err)))
		return ret;
	if (git_repository_open(&m->repo, m->entry.path)) {
		ret = gm_libgit_fail(err, GM_EIO, m->entry.path);
		gm_error_prefix(err, "model '%s'", name);
		return ret;
	}
	m->gitdir = strip_slash(gm_xstrdup(git_repository_commondir(m->repo)));
	m->cowdir = gm_path_join(m->gitdir, "git-model/cow");
	return gm_lfs_store_init(&m->store, m->gitdir, err);
}

static int model_open(const char *name, struct model_ctx *m, gm_error *err)
{
	gm_registry *reg;
	int ret;

	memset(m, 0, sizeof(*m));
	m->lock_fd = -1;
	if ((ret = gm_registry_open(NULL, &reg, err)))
		return ret;
	if ((ret = model_open_reg(reg, name, m, err))) {
		if (!m->reg)
			gm_registry_close(reg);
		model_close(m);
	}
	return ret;
}

/* ------------------------------------------------------------ state files */

static int state_write(const struct model_ctx *m, const struct wt_state *s, gm_error *err)
{
	gm_buf b = GM_BUF_INIT, dir = GM_BUF_INIT;
	int ret;

	gm_buf_addf(&dir, "%s/wt/%s", m->cowdir, s->name);
	if ((ret = gm_mkdir_p(dir.buf, 0755, err)))
		goto out;
	gm_buf_addf(&b, "path=%s\nmodel=%s\nref=%s\ncommit=%s\ndriver=%s\nlower=%s\nfallback=%s\n", s->path,
		    s->model, s->ref, s->commit, s->driver, s->lower ? s->lower : "",
		    s->fallback ? s->fallback : "");
	if (s->adding)
		gm_buf_adds(&b, "adding=1\n");
	gm_buf_adds(&dir, "/state");
	ret = gm_write_file_atomic(dir.buf, b.buf, b.len, 0644, err);
out:
	gm_buf_release(&b);
	gm_buf_release(&dir);
	return ret;
}

static int state_read(const struct model_ctx *m, const char *name, struct wt_state *s, gm_error *err)
{
	gm_buf b = GM_BUF_INIT;
	char *path = NULL, *line, *save = NULL;
	int ret;

	memset(s, 0, sizeof(*s));
	gm_buf_addf(&b, "%s/wt/%s/state", m->cowdir, name);
	path = gm_buf_detach(&b, NULL);
	ret = gm_read_file(path, &b, err);
	free(path);
	if (ret)
		return ret;
	s->name = gm_xstrdup(name);
	for (line = strtok_r(b.buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(line, '='), **field = NULL;

		if (!eq)
			continue;
		*eq = 0;
		if (!strcmp(line, "path")) field = &s->path;
		else if (!strcmp(line, "model")) field = &s->model;
		else if (!strcmp(line, "ref")) field = &s->ref;
		else if (!strcmp(line, "commit")) field = &s->commit;
		else if (!strcmp(line, "driver")) field = &s->driver;
		else if (!strcmp(line, "lower")) field = &s->lower;
		else if (!strcmp(line, "fallback")) field = &s->fallback;
		else if (!strcmp(line, "adding")) s->adding = !strcmp(eq + 1, "1");
		if (field) {
			free(*field);
			*field = gm_xstrdup(eq + 1);
		}
	}
	gm_buf_release(&b);
	if (!s->path || !s->driver || !s->commit) {
		state_release(s);
		return gm_error_set(err, GM_EFORMAT, "%s/wt/%s/state: incomplete worktree state", m->cowdir,
				    name);
	}
	if (!s->lower) s->lower = gm_xstrdup("");
	if (!s->ref) s->ref = gm_xstrdup("");
	if (!s->model) s->model = gm_xstrdup("");
	if (!s->fallback) s->fallback = gm_xstrdup("");
	return 0;
}

/* Every state of the model's worktrees; the caller frees each and v. */
static int states_list(const struct model_ctx *m, struct wt_state **out, size_t *n, gm_error *err)
{
	char *dir = gm_path_join(m->cowdir, "wt");
	DIR *d = opendir(dir);
	struct dirent *e;
	struct wt_state *v = NULL;
	size_t count = 0;
	int ret = 0;

	*out = NULL;
	*n = 0;
	free(dir);
	if (!d)
		return 0;
	while ((e = readdir(d))) {
		struct wt_state s;
		gm_error ignored = GM_ERROR_INIT;

		if (e->d_name[0] == '.')
			continue;
		if (state_read(m, e->d_name, &s, &ignored))
			continue; /* a half-made worktree: prune's business */
		v = gm_xrealloc(v, (count + 1) * sizeof(*v));
		v[count++] = s;
	}
	closedir(d);
	*out = v;
	*n = count;
	return ret;
}

static void states_free(struct wt_state *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		state_release(&v[i]);
	free(v);
}

static char *state_subdir(const struct model_ctx *m, const struct wt_state *s, const char *sub)
{
	gm_buf b = GM_BUF_INIT;

	gm_buf_addf(&b, "%s/wt/%s/%s", m->cowdir, s->name, sub);
	return gm_buf_detach(&b, NULL);
}

static char *lower_dir(const struct model_ctx *m, const char *set)
{
	gm_buf b = GM_BUF_INIT;

	gm_buf_addf(&b, "%s/lower/%s", m->cowdir, set);
	return gm_buf_detach(&b, NULL);
}

/* ------------------------------------------------------------ trees */

struct walk_ctx {
	git_repository *repo;
	const gm_lfs_store *store;
	struct tree_files *files;
	int failed;
};

static int walk_cb(const char *root, const git_tree_entry *entry, void *payload)
{
	struct walk_ctx *w = payload;
	git_object_t type = git_tree_entry_type(entry);
	struct tree_file f;
	git_blob *blob;

	if (type != GIT_OBJECT_BLOB && type != GIT_OBJECT_COMMIT)
		return 0;
	memset(&f, 0, sizeof(f));
	{
		gm_buf p = GM_BUF_INIT;
		gm_buf_addf(&p, "%s%s", root, git_tree_entry_name(entry));
		f.path = gm_buf_detach(&p, NULL);
	}
	f.mode = git_tree_entry_filemode(entry);
	git_oid_cpy(&f.blob, git_tree_entry_id(entry));
	if (type == GIT_OBJECT_BLOB && f.mode != GIT_FILEMODE_LINK) {
		if (git_blob_lookup(&blob, w->repo, &f.blob)) {
			w->failed = 1;
			free(f.path);
			return -1;
		}
		f.size = (unsigned long long)git_blob_rawsize(blob);
		if (f.size < GM_LFS_POINTER_MAX) {
			gm_lfs_pointer p = GM_LFS_POINTER_INIT;
			gm_error ignored = GM_ERROR_INIT;

			if (gm_lfs_pointer_parse(git_blob_rawcontent(blob), (size_t)f.size, &p, &ignored) == 0) {
				if (gm_lfs_store_has(w->store, p.oid, p.size)) {
					f.lfs = 1;
					memcpy(f.oid, p.oid, sizeof(f.oid));
					f.size = p.size;
				}
				gm_lfs_pointer_release(&p);
			}
		}
		git_blob_free(blob);
	}
	if (w->files->n == w->files->alloc) {
		w->files->alloc = w->files->alloc ? 2 * w->files->alloc : 64;
		w->files->v = gm_xrealloc(w->files->v, w->files->alloc * sizeof(*w->files->v));
	}
	w->files->v[w->files->n++] = f;
	return 0;
}

static int scan_commit(struct model_ctx *m, const char *commit_hex, struct tree_files *out, gm_error *err)
{
	git_oid oid;
	git_commit *c = NULL;
	git_tree *t = NULL;
	struct walk_ctx w = { m->repo, &m->store, out, 0 };
	int ret = 0;

	memset(out, 0, sizeof(*out));
	if (git_oid_fromstr(&oid, commit_hex) || git_commit_lookup(&c, m->repo, &oid) ||
	    git_commit_tree(&t, c) || git_tree_walk(t, GIT_TREEWALK_PRE, walk_cb, &w)) {
		ret = gm_libgit_fail(err, GM_EIO, commit_hex);
		tree_files_release(out);
	}
	git_tree_free(t);
	git_commit_free(c);
	return ret;
}

/* The lower layer's name: a hash of the large files' (mode, oid, path),
 * in tree order, so that revisions with the same blobs share one. */
static void lower_set_id(const struct tree_files *t, char out[33], int *any)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0, i;
	size_t k;

	*any = 0;
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (k = 0; k < t->n; k++) {
		char line[GM_LFS_OID_HEXLEN + 16];

		if (!t->v[k].lfs)
			continue;
		*any = 1;
		snprintf(line, sizeof(line), "%06o %s ", t->v[k].mode, t->v[k].oid);
		EVP_DigestUpdate(ctx, line, strlen(line));
		EVP_DigestUpdate(ctx, t->v[k].path, strlen(t->v[k].path) + 1);
	}
	EVP_DigestFinal_ex(ctx, md, &len);
	EVP_MD_CTX_free(ctx);
	for (i = 0; i < 16 && i < len; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static int mkdir_parents(const char *root, const char *rel, gm_error *err)
{
	char *full = gm_path_join(root, rel), *slash = strrchr(full, '/');
	int ret = 0;

	if (slash) {
		*slash = 0;
		ret = gm_mkdir_p(full, 0755, err);
	}
	free(full);
	return ret;
}

/* Builds (or reuses) the lower layer of t's large files: hard links into
 * the object store, assembled under a temporary name and renamed, so a
 * lower layer that exists is complete. */
static int lower_build(struct model_ctx *m, const struct tree_files *t, const char *set, gm_error *err)
{
	char *final = lower_dir(m, set), *parent = gm_path_join(m->cowdir, "lower");
	gm_buf tmp = GM_BUF_INIT;
	size_t k;
	int ret = 0;

	if (gm_is_dir(final))
		goto out;
	if ((ret = gm_mkdir_p(parent, 0755, err)))
		goto out;
	gm_buf_addf(&tmp, "%s/.tmp-%s-XXXXXX", parent, set);
	if (!mkdtemp(tmp.buf)) {
		ret = gm_error_errno(err, "cannot create a directory in %s", parent);
		goto out;
	}
	chmod(tmp.buf, 0755);
	for (k = 0; k < t->n && !ret; k++) {
		char *obj, *dest;

		if (!t->v[k].lfs)
			continue;
		if ((ret = mkdir_parents(tmp.buf, t->v[k].path, err)))
			break;
		obj = gm_lfs_object_path(&m->store, t->v[k].oid);
		dest = gm_path_join(tmp.buf, t->v[k].path);
		if (link(obj, dest))
			ret = gm_error_errno(err, "cannot link %s into the lower layer", obj);
		free(obj);
		free(dest);
	}
	if (!ret && rename(tmp.buf, final)) {
		if (gm_is_dir(final)) /* another command built it meanwhile */
			ret = 0;
		else
			ret = gm_error_errno(err, "cannot rename %s to %s", tmp.buf, final);
		gm_cow_remove_tree(tmp.buf, NULL);
	} else if (ret) {
		gm_cow_remove_tree(tmp.buf, NULL);
	} else {
		gm_info("built the shared lower layer %s", final);
	}
out:
	gm_buf_release(&tmp);
	free(final);
	free(parent);
	return ret;
}

/* Deletes the lower layer set unless a worktree state still names it. */
static void lower_release(struct model_ctx *m, const char *set)
{
	struct wt_state *v;
	size_t n, i;
	int used = 0;
	char *dir;

	if (!set || !*set)
		return;
	if (states_list(m, &v, &n, NULL))
		return;
	for (i = 0; i < n; i++)
		used += !strcmp(v[i].lower, set);
	states_free(v, n);
	if (used)
		return;
	dir = lower_dir(m, set);
	gm_cow_remove_tree(dir, NULL);
	free(dir);
}

/* ------------------------------------------------------------ checkout */

static int write_small_file(git_repository *repo, const struct tree_file *f, const char *dest, gm_error *err)
{
	git_blob *blob;
	const char *data;
	size_t len;
	int ret = 0, fd;

	if (f->mode == GIT_FILEMODE_COMMIT)
		return mkdir(dest, 0755) && errno != EEXIST ? gm_error_errno(err, "%s", dest) : 0;
	if (git_blob_lookup(&blob, repo, &f->blob))
		return gm_libgit_fail(err, GM_EIO, f->path);
	data = git_blob_rawcontent(blob);
	len = (size_t)git_blob_rawsize(blob);
	if (f->mode == GIT_FILEMODE_LINK) {
		char *target = gm_xmalloc(len + 1);

		memcpy(target, data, len);
		target[len] = 0;
		if (symlink(target, dest))
			ret = gm_error_errno(err, "cannot create the symbolic link %s", dest);
		free(target);
	} else {
		fd = open(dest, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
			  f->mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0755 : 0644);
		if (fd < 0) {
			ret = gm_error_errno(err, "cannot create %s", dest);
		} else {
			if (gm_write_all(fd, data, len))
				ret = gm_error_errno(err, "cannot write %s", dest);
			if (close(fd) && !ret)
				ret = gm_error_errno(err, "cannot write %s", dest);
		}
	}
	git_blob_free(blob);
	return ret;
}

/*
 * Fills the worktree at dir with t: small files from their blobs, large
 * files by driver d (mount drivers already show them), then writes an
 * index whose entries carry the files' stat data, so that git sees an
 * unmodified tree without hashing the large files.
 */
static int populate(struct model_ctx *m, const struct tree_files *t, const char *dir, enum gm_cow_driver d,
		    git_tree *tree, gm_error *err)
{
	git_repository *wt = NULL;
	git_index *idx = NULL;
	size_t k;
	int ret = 0;

	for (k = 0; k < t->n && !ret; k++) {
		const struct tree_file *f = &t->v[k];
		char *dest;

		if (f->lfs && gm_cow_driver_mounts(d))
			continue;
		if ((ret = mkdir_parents(dir, f->path, err)))
			break;
		dest = gm_path_join(dir, f->path);
		if (f->lfs) {
			char *obj = gm_lfs_object_path(&m->store, f->oid);
			ret = gm_cow_place_file(d, obj, dest, f->mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0755 : 0644,
						err);
			free(obj);
		} else {
			ret = write_small_file(m->repo, f, dest, err);
		}
		free(dest);
	}
	if (ret)
		return ret;
	if (git_repository_open(&wt, dir) || git_repository_index(&idx, wt) || git_index_read_tree(idx, tree)) {
		ret = gm_libgit_fail(err, GM_EIO, dir);
		goto out;
	}
	for (k = 0; k < git_index_entrycount(idx); k++) {
		const git_index_entry *e = git_index_get_byindex(idx, k);
		git_index_entry copy;
		struct stat st;
		char *p = gm_path_join(dir, e->path);

		if (lstat(p, &st) == 0) {
			copy = *e;
			copy.ctime.seconds = (int32_t)st.st_ctim.tv_sec;
			copy.ctime.nanoseconds = (uint32_t)st.st_ctim.tv_nsec;
			copy.mtime.seconds = (int32_t)st.st_mtim.tv_sec;
			copy.mtime.nanoseconds = (uint32_t)st.st_mtim.tv_nsec;
			copy.dev = (uint32_t)st.st_dev;
			copy.ino = (uint32_t)st.st_ino;
			copy.uid = st.st_uid;
			copy.gid = st.st_gid;
			copy.file_size = (uint32_t)st.st_size;
			if (git_index_add(idx, &copy)) {
				free(p);
				ret = gm_libgit_fail(err, GM_EIO, e->path);
				goto out;
			}
		}
		free(p);
	}
	if (git_index_write(idx))
		ret = gm_libgit_fail(err, GM_EIO, "writing the worktree's index");
out:
	git_index_free(idx);
	git_repository_free(wt);
	return ret;
}

/* The git worktree's administrative name: the directory's name, made of
 * safe characters, unique in GITDIR/worktrees and cow/wt. */
static char *worktree_name(const struct model_ctx *m, const char *dir)
{
	const char *base = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
	gm_buf b = GM_BUF_INIT, probe = GM_BUF_INIT;
	const char *p;
	int i;

	for (p = base; *p; p++)
		gm_buf_addch(&b, (isalnum((unsigned char)*p) || *p == '-' || *p == '_' || (*p == '.' && p != base))
			     ? *p : '-');
	if (!b.len)
		gm_buf_adds(&b, "wt");
	for (i = 1;; i++) {
		gm_buf_reset(&probe);
		gm_buf_addf(&probe, "%s/worktrees/%s", m->gitdir, b.buf);
		if (i > 1)
			gm_buf_addf(&probe, "-%d", i);
		if (!gm_is_dir(probe.buf)) {
			gm_buf_reset(&probe);
			gm_buf_addf(&probe, "%s/wt/%s", m->cowdir, b.buf);
			if (i > 1)
				gm_buf_addf(&probe, "-%d", i);
			if (!gm_is_dir(probe.buf))
				break;
		}
	}
	if (i > 1)
		gm_buf_addf(&b, "-%d", i);
	gm_buf_release(&probe);
	return gm_buf_detach(&b, NULL);
}

/* An absolute, normalized path for a directory that may not exist yet:
 * its parent must exist. */
static int absolute_dir(const char *dir, char **out, gm_error *err)
{
	char *copy = gm_xstrdup(dir), *slash, *parent, resolved[PATH_MAX];
	gm_buf b = GM_BUF_INIT;

	strip_slash(copy);
	slash = strrchr(copy, '/');
	if (slash) {
		*slash = 0;
		parent = slash == copy ? "/" : copy;
	} else {
		parent = ".";
	}
	if (!realpath(parent, resolved)) {
		int ret = gm_error_errno(err, "the parent directory of %s", dir);
		free(copy);
		return ret;
	}
	gm_buf_addf(&b, "%s/%s", strcmp(resolved, "/") ? resolved : "", slash ? slash + 1 : copy);
	free(copy);
	*out = gm_buf_detach(&b, NULL);
	return 0;
}

static int dir_is_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int empty = 1;

	if (!d)
		return 0;
	while (empty && (e = readdir(d)))
		empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
	closedir(d);
	return empty;
}

/* Mounts a worktree whose state says a mount driver: the .git file
 * libgit2 wrote in dir moves into the upper layer, so that dir is the
 * empty mount point the helper insists on. */
static int mount_worktree(struct model_ctx *m, const struct wt_state *s, enum gm_cow_driver d, gm_error *err)
{
	char *upper = state_subdir(m, s, "upper"), *work = state_subdir(m, s, "work");
	char *lower = lower_dir(m, s->lower), *dotgit = gm_path_join(s->path, ".git");
	char *upper_dotgit = gm_path_join(upper, ".git");
	gm_cow_layers l = { lower, upper, work, s->path };
	gm_buf content = GM_BUF_INIT;
	int ret;

	if ((ret = gm_mkdir_p(upper, 0755, err)) || (ret = gm_mkdir_p(work, 0755, err)))
		goto out;
	if (gm_is_file(dotgit) && !gm_is_file(upper_dotgit)) {
		if ((ret = gm_read_file(dotgit, &content, err)) ||
		    (ret = gm_write_file_atomic(upper_dotgit, content.buf, content.len, 0644, err)))
			goto out;
		unlink(dotgit);
	} else if (gm_is_file(dotgit)) {
		unlink(dotgit);
	}
	if (!gm_is_dir(s->path) && mkdir(s->path, 0755)) {
		ret = gm_error_errno(err, "cannot create the mount point %s", s->path);
		goto out;
	}
	if (!dir_is_empty(s->path)) {
		ret = gm_error_set(err, GM_EINVAL, "%s is not mounted and not empty: files written there while "
				   "it was not mounted would be hidden; move them away, then run "
				   "'git model worktree repair'", s->path);
		goto out;
	}
	ret = gm_cow_mount(d, &l, err);
out:
	if (ret && content.len && !gm_is_file(dotgit))
		gm_write_file_atomic(dotgit, content.buf, content.len, 0644, NULL);
	gm_buf_release(&content);
	free(upper);
	free(work);
	free(lower);
	free(dotgit);
	free(upper_dotgit);
	return ret;
}

/* Makes sure a mount-driver worktree is mounted (lower layer rebuilt when
 * gone); *did is set when something was done. */
static int ensure_mounted(struct model_ctx *m, const struct wt_state *s, int *did, gm_error *err)
{
	enum gm_cow_driver d;
	int ret;

	*did = 0;
	if ((ret = gm_cow_driver_parse(s->driver, &d, err)))
		return ret;
	if (!gm_cow_driver_mounts(d) || gm_cow_is_mounted(s->path, NULL))
		return 0;
	if ((ret = model_lock(m, err)))
		return ret;
	if (*s->lower) {
		char *lower = lower_dir(m, s->lower);
		int exists = gm_is_dir(lower);

		free(lower);
		if (!exists) {
			struct tree_files t;

			if ((ret = scan_commit(m, s->commit, &t, err)))
				return ret;
			ret = lower_build(m, &t, s->lower, err);
			tree_files_release(&t);
			if (ret)
				return ret;
		}
	}
	if ((ret = mount_worktree(m, s, d, err)))
		return gm_error_prefix(err, "cannot re-mount %s", s->path);
	*did = 1;
	return 0;
}

/* The driver order of auto mode. */
static const enum gm_cow_driver driver_order[] = {
	GM_COW_OVERLAY, GM_COW_FUSE, GM_COW_REFLINK, GM_COW_HARDLINK, GM_COW_COPY
};

/* Resolves ref to a local branch for the new worktree, creating one when
 * needed; *branch is its full reference, *commit its commit. */
static int resolve_branch(struct model_ctx *m, const char *ref, const char *wtname, git_reference **branch,
			  char commit[GIT_OID_HEXSZ + 1], int *created, gm_error *err)
{
	git_reference *b = NULL;
	git_object *obj = NULL;
	git_commit *c = NULL;
	const char *new_name = NULL;
	int ret = 0;

	*created = 0;
	*branch = NULL;
	if (ref && git_branch_lookup(&b, m->repo, ref, GIT_BRANCH_LOCAL) == 0) {
		git_oid_tostr(commit, GIT_OID_HEXSZ + 1, git_reference_target(b));
		*branch = b;
		return 0;
	}
	if (ref && git_revparse_single(&obj, m->repo, ref) == 0) {
		new_name = wtname; /* a tag or commit: a branch named after the worktree */
	} else {
		if (git_revparse_single(&obj, m->repo, "HEAD"))
			return gm_libgit_fail(err, GM_EIO, "the model's HEAD");
		new_name = ref ? ref : wtname;
	}
	if (git_object_peel((git_object **)&c, obj, GIT_OBJECT_COMMIT)) {
		ret = gm_libgit_fail(err, GM_EIO, ref ? ref : "HEAD");
		goto out;
	}
	if (git_branch_create(&b, m->repo, new_name, c, 0)) {
		ret = gm_libgit_fail(err, GM_EIO, "creating the branch");
		gm_error_prefix(err, "branch '%s'", new_name);
		goto out;
	}
	*created = 1;
	git_oid_tostr(commit, GIT_OID_HEXSZ + 1, git_commit_id(c));
	*branch = b;
	gm_info("created branch '%s' at %.12s", new_name, commit);
out:
	git_commit_free(c);
	git_object_free(obj);
	return ret;
}

static void fill_info(struct model_ctx *m, const struct wt_state *s, gm_worktree_info *out);

/* Undoes a partly made worktree. */
static void undo_add(struct model_ctx *m, struct wt_state *s, git_worktree *wt, enum gm_cow_driver d)
{
	char *dir;

	if (gm_cow_driver_mounts(d))
		gm_cow_unmount(d, s->path, NULL);
	gm_cow_remove_tree(s->path, NULL);
	if (wt) {
		git_worktree_prune_options po = GIT_WORKTREE_PRUNE_OPTIONS_INIT;

		po.flags = GIT_WORKTREE_PRUNE_VALID | GIT_WORKTREE_PRUNE_LOCKED;
		git_worktree_unlock(wt);
		git_worktree_prune(wt, &po);
	}
	dir = gm_path_join(m->cowdir, "wt");
	{
		char *sdir = gm_path_join(dir, s->name);
		gm_cow_remove_tree(sdir, NULL);
		free(sdir);
	}
	free(dir);
	lower_release(m, s->lower);
}

/*
 * What an add killed before it wrote the worktree's state leaves at path:
 * the directory holding only the .git file libgit2 wrote, naming the
 * administrative directory GITDIR/worktrees/NAME.  Returns NAME (the
 * caller frees it), or NULL when path holds anything else: the user's.
 */
static char *leftover_name(const struct model_ctx *m, const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	gm_buf content = GM_BUF_INIT, prefix = GM_BUF_INIT;
	char *dotgit, *name = NULL;
	int only_git = 1, seen = 0;

	if (!d)
		return NULL;
	while (only_git && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		only_git = !strcmp(e->d_name, ".git");
		seen = 1;
	}
	closedir(d);
	if (!only_git || !seen)
		return NULL;
	dotgit = gm_path_join(path, ".git");
	gm_buf_addf(&prefix, "gitdir: %s/worktrees/", m->gitdir);
	if (gm_is_file(dotgit) && gm_read_file(dotgit, &content, NULL) == 0 && content.len > prefix.len &&
	    !strncmp(content.buf, prefix.buf, prefix.len)) {
		char *rest = content.buf + prefix.len;

		rest[strcspn(rest, "\n")] = 0;
		strip_slash(rest); /* libgit2 writes "worktrees/NAME/" */
		if (*rest && !strchr(rest, '/'))
			name = gm_xstrdup(rest);
	}
	free(dotgit);
	gm_buf_release(&content);
	gm_buf_release(&prefix);
	return name;
}

/* Removes git's administrative entry of worktree wtname (after the
 * directory went), as git worktree prune would. */
static void prune_admin(struct model_ctx *m, const char *wtname)
{
	git_worktree *wt = NULL;

	if (git_worktree_lookup(&wt, m->repo, wtname) == 0) {
		git_worktree_prune_options po = GIT_WORKTREE_PRUNE_OPTIONS_INIT;

		po.flags = GIT_WORKTREE_PRUNE_VALID | GIT_WORKTREE_PRUNE_LOCKED;
		git_worktree_unlock(wt);
		git_worktree_prune(wt, &po);
		git_worktree_free(wt);
	}
}

/*
 * An add of path killed half way is undone before it is made again: the
 * directory it made (after it checked it was absent or empty, so nothing
 * in it is the user's), git's entry, the state and the registry's row.
 */
static int undo_interrupted(struct model_ctx *m, struct wt_state *prev, gm_error *err)
{
	enum gm_cow_driver d;
	git_worktree *wt = NULL;
	int ret;

	if ((ret = gm_cow_driver_parse(prev->driver, &d, err)))
		return ret;
	gm_info("%s: finishing an interrupted 'worktree add': starting it again", prev->path);
	gm_registry_remove_worktree(m->reg, prev->path, NULL);
	git_worktree_lookup(&wt, m->repo, prev->name);
	undo_add(m, prev, wt, d);
	git_worktree_free(wt);
	return 0;
}

int gm_worktree_add(const char *name, const char *ref, const gm_worktree_opts *opts, gm_worktree_info *out,
		    gm_error *err)
{
	struct model_ctx m;
	struct wt_state s;
	struct tree_files t = { 0 };
	git_reference *branch = NULL;
	git_worktree *wt = NULL;
	git_tree *tree = NULL;
	git_oid coid;
	git_commit *commit = NULL;
	char commit_hex[GIT_OID_HEXSZ + 1], set[33], *objects_dir = NULL;
	char *parent = NULL;
	gm_buf reasons = GM_BUF_INIT, reason = GM_BUF_INIT, dirbuf = GM_BUF_INIT;
	enum gm_cow_driver d = GM_COW_AUTO;
	int ret, created = 0, any_lfs, registered = 0;
	size_t i, k;

	memset(&s, 0, sizeof(s));
	if ((ret = model_open(name, &m, err)))
		return ret;
	if ((ret = model_lock(&m, err)))
		goto out;
	if (!ref && !opts->dir) {
		ret = gm_error_set(err, GM_EINVAL, "say which branch (%s@BRANCH) or where (--worktree DIR)", name);
		goto out;
	}
	if (opts->dir) {
		ret = absolute_dir(opts->dir, &s.path, err);
	} else {
		const char *p;

		gm_buf_addf(&dirbuf, "%s@", m.entry.path);
		for (p = ref; *p; p++)
			gm_buf_addch(&dirbuf, *p == '/' ? '-' : *p);
		ret = absolute_dir(dirbuf.buf, &s.path, err);
	}
	if (ret)
		goto out;
	/* Asked again for a worktree that exists: repair it. */
	{
		struct wt_state *v;
		size_t n;

		if (states_list(&m, &v, &n, NULL) == 0) {
			for (i = 0; i < n; i++) {
				int did;

				if (strcmp(v[i].path, s.path))
					continue;
				if (v[i].adding) {
					ret = undo_interrupted(&m, &v[i], err);
					states_free(v, n);
					if (ret)
						goto out;
					break;
				}
				if (ref && strcmp(v[i].ref, ref)) {
					ret = gm_error_set(err, GM_EINVAL, "%s is already a worktree of %s on "
							   "branch '%s'", s.path, name, v[i].ref);
				} else if (!(ret = ensure_mounted(&m, &v[i], &did, err)) && out) {
					fill_info(&m, &v[i], out);
				}
				states_free(v, n);
				goto out;
			}
			if (i == n)
				states_free(v, n);
		}
	}
	if (access(s.path, F_OK) == 0 && gm_is_dir(s.path) && !dir_is_empty(s.path)) {
		char *left = leftover_name(&m, s.path);

		if (left) {
			char *dotgit = gm_path_join(s.path, ".git");

			gm_info("%s: removing what an interrupted 'worktree add' left", s.path);
			unlink(dotgit);
			free(dotgit);
			prune_admin(&m, left);
			free(left);
		}
	}
	if (access(s.path, F_OK) == 0) {
		if (!gm_is_dir(s.path) || !dir_is_empty(s.path)) {
			ret = gm_error_set(err, GM_EINVAL, "%s already exists and is not an empty directory", s.path);
			goto out;
		}
		rmdir(s.path); /* libgit2 creates it */
	}
	s.name = worktree_name(&m, s.path);
	s.model = gm_xstrdup(m.entry.name);
	if ((ret = resolve_branch(&m, ref, s.name, &branch, commit_hex, &created, err)))
		goto out;
	s.ref = gm_xstrdup(git_reference_shorthand(branch));
	s.commit = gm_xstrdup(commit_hex);
	if ((ret = scan_commit(&m, commit_hex, &t, err)))
		goto out;
	lower_set_id(&t, set, &any_lfs);

	/* The drivers to try, best first. */
	objects_dir = gm_is_dir(m.store.objects) ? gm_xstrdup(m.store.objects) : gm_xstrdup(m.gitdir);
	{
		char *slash;
		parent = gm_xstrdup(s.path);
		slash = strrchr(parent, '/');
		if (slash == parent)
			slash[1] = 0;
		else
			*slash = 0;
	}
	{
		git_worktree_add_options wo;

		git_worktree_add_options_init(&wo, GIT_WORKTREE_ADD_OPTIONS_VERSION);

		wo.ref = branch;
		wo.checkout_options.checkout_strategy = GIT_CHECKOUT_NONE;
		if (git_worktree_add(&wt, m.repo, s.name, s.path, &wo)) {
			ret = gm_libgit_fail(err, GM_EIO, "git worktree add");
			gm_error_prefix(err, "%s", s.path);
			goto out;
		}
	}
	if (git_oid_fromstr(&coid, commit_hex) || git_commit_lookup(&commit, m.repo, &coid) ||
	    git_commit_tree(&tree, commit)) {
		ret = gm_libgit_fail(err, GM_EIO, commit_hex);
		goto undo;
	}
	ret = GM_EUNSUPPORTED;
	for (k = 0; k < sizeof(driver_order) / sizeof(driver_order[0]); k++) {
		gm_error attempt = GM_ERROR_INIT;
		gm_registry_worktree rw;

		d = driver_order[k];
		if (opts->driver != GM_COW_AUTO && opts->driver != d)
			continue;
		if (!gm_cow_probe(d, objects_dir, parent, &reason)) {
			gm_buf_addf(&reasons, "%s%s: %s", reasons.len ? "; " : "", gm_cow_driver_name(d), reason.buf);
			continue;
		}
		if (gm_cow_driver_mounts(d) &&
		    (gm_cow_check_option_path("worktree", s.path, &attempt) ||
		     gm_cow_check_option_path("the model's git directory", m.gitdir, &attempt))) {
			gm_buf_addf(&reasons, "%s%s: %s", reasons.len ? "; " : "", gm_cow_driver_name(d),
				    attempt.msg);
			continue;
		}
		free(s.driver);
		s.driver = gm_xstrdup(gm_cow_driver_name(d));
		free(s.lower);
		s.lower = gm_xstrdup(gm_cow_driver_mounts(d) ? set : "");
		free(s.fallback);
		s.fallback = gm_xstrdup(reasons.buf);
		s.adding = 1;
		if ((ret = state_write(&m, &s, err)))
			goto undo;
		/* Registered before mounting: the helper only mounts on
		 * registered worktrees. */
		rw.model = m.entry.name;
		rw.path = s.path;
		rw.ref = s.ref;
		rw.method = s.driver;
		rw.created = 0;
		if (registered)
			gm_registry_remove_worktree(m.reg, s.path, NULL);
		if ((ret = gm_registry_add_worktree(m.reg, &rw, err)))
			goto undo;
		registered = 1;
		if (gm_cow_driver_mounts(d)) {
			if (*s.lower && (ret = lower_build(&m, &t, set, err)))
				goto undo;
			ret = mount_worktree(&m, &s, d, &attempt);
		} else {
			ret = 0;
		}
		if (!ret) {
			if (gm_cow_driver_mounts(d)) {
				char *upper_dotgit = state_subdir(&m, &s, "upper/.git");
				gm_buf content = GM_BUF_INIT;
				char *dotgit = gm_path_join(s.path, ".git");

				/* The mount shows the .git file from the upper layer. */
				if (!gm_is_file(dotgit) && gm_read_file(upper_dotgit, &content, &attempt) == 0)
					gm_write_file_atomic(dotgit, content.buf, content.len, 0644, &attempt);
				gm_buf_release(&content);
				free(dotgit);
				free(upper_dotgit);
			}
			if ((ret = populate(&m, &t, s.path, d, tree, &attempt)) && gm_cow_driver_mounts(d))
				gm_cow_unmount(d, s.path, NULL);
		}
		if (!ret)
			break;
		gm_buf_addf(&reasons, "%s%s: %s", reasons.len ? "; " : "", s.driver, attempt.msg);
		if (gm_cow_driver_mounts(d) && *s.lower) {
			char *upper = state_subdir(&m, &s, "upper"), *work = state_subdir(&m, &s, "work");
			char *dotgit = gm_path_join(upper, ".git"), *target_dotgit = gm_path_join(s.path, ".git");
			gm_buf content = GM_BUF_INIT;

			/* Back to a plain directory holding the .git file. */
			if (gm_read_file(dotgit, &content, NULL) == 0 && !gm_is_file(target_dotgit))
				gm_write_file_atomic(target_dotgit, content.buf, content.len, 0644, NULL);
			gm_cow_remove_tree(upper, NULL);
			gm_cow_remove_tree(work, NULL);
			gm_buf_release(&content);
			free(upper);
			free(work);
			free(dotgit);
			free(target_dotgit);
		}
		if (!gm_cow_driver_mounts(d)) {
			/* Files placed before the failure go; .git stays. */
			break;
		}
	}
	if (ret) {
		if (opts->driver != GM_COW_AUTO)
			ret = gm_error_set(err, GM_EUNSUPPORTED, "driver %s is not available here: %s",
					   gm_cow_driver_name(opts->driver),
					   reasons.len ? reasons.buf : "unknown reason");
		else
			ret = gm_error_set(err, GM_EUNSUPPORTED, "no driver could share the large files: %s",
					   reasons.buf);
		goto undo;
	}
	{
		git_buf reason_buf = { 0 };
		if (git_worktree_is_locked(&reason_buf, wt) == 0)
			git_worktree_lock(wt, LOCK_REASON);
		git_buf_dispose(&reason_buf);
	}
	/* Done: the state loses its mark (an add killed before this point
	 * is undone and made again by the next add of this path). */
	s.adding = 0;
	if ((ret = state_write(&m, &s, err)))
		goto undo;
	/* A lower layer built for a mount that failed, now used by none. */
	if (!*s.lower)
		lower_release(&m, set);
	if (reasons.len && opts->driver == GM_COW_AUTO)
		gm_info("using %s: %s", s.driver, reasons.buf);
	if (out)
		fill_info(&m, &s, out);
	goto out;
undo:
	if (registered)
		gm_registry_remove_worktree(m.reg, s.path, NULL);
	undo_add(&m, &s, wt, d);
	if (created) {
		git_reference *again = NULL;
		if (git_branch_lookup(&again, m.repo, s.ref, GIT_BRANCH_LOCAL) == 0)
			git_branch_delete(again);
		git_reference_free(again);
	}
out:
	git_tree_free(tree);
	git_commit_free(commit);
	git_worktree_free(wt);
	git_reference_free(branch);
	tree_files_release(&t);
	state_release(&s);
	gm_buf_release(&reasons);
	gm_buf_release(&reason);
	gm_buf_release(&dirbuf);
	free(objects_dir);
	free(parent);
	model_close(&m);
	return ret;
}

/* ------------------------------------------------------------ list, rm, prune, repair */

static unsigned long long full_size(struct model_ctx *m, const char *commit)
{
	struct tree_files t;
	unsigned long long sum = 0;
	size_t k;

	if (scan_commit(m, commit, &t, NULL))
		return 0;
	for (k = 0; k < t.n; k++)
		sum += t.v[k].size;
	tree_files_release(&t);
	return sum;
}

static void fill_info(struct model_ctx *m, const struct wt_state *s, gm_worktree_info *out)
{
	enum gm_cow_driver d = GM_COW_COPY;

	memset(out, 0, sizeof(*out));
	out->model = gm_xstrdup(m->entry.name);
	out->path = gm_xstrdup(s->path);
	out->ref = gm_xstrdup(s->ref);
	out->commit = gm_xstrdup(s->commit);
	out->driver = gm_xstrdup(s->driver);
	out->lower = *s->lower ? lower_dir(m, s->lower) : gm_xstrdup("");
	out->fallback = gm_xstrdup(s->fallback);
	gm_cow_driver_parse(s->driver, &d, NULL);
	out->missing = !gm_is_dir(s->path);
	out->mounted = gm_cow_driver_mounts(d) && gm_cow_is_mounted(s->path, NULL);
	if (gm_cow_driver_mounts(d)) {
		char *upper = state_subdir(m, s, "upper");
		out->used = gm_cow_disk_use(upper, 0);
		free(upper);
	} else {
		out->used = gm_cow_disk_use(s->path, 1);
	}
	out->full = full_size(m, s->commit);
}

/* The model names to act on: name, or every registered model. */
static int model_names(gm_registry *reg, const char *name, char ***out, size_t *n, gm_error *err)
{
	gm_registry_model *v;
	size_t i, count;
	int ret;

	if (name) {
		*out = gm_xmalloc(sizeof(char *));
		(*out)[0] = gm_xstrdup(name);
		*n = 1;
		return 0;
	}
	if ((ret = gm_registry_list_models(reg, &v, &count, err)))
		return ret;
	*out = gm_xcalloc(count ? count : 1, sizeof(char *));
	for (i = 0; i < count; i++)
		(*out)[i] = gm_xstrdup(v[i].name);
	*n = count;
	gm_registry_models_free(v, count);
	return 0;
}

static void names_free(char **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

int gm_worktree_list(const char *name, gm_worktree_info **out, size_t *n, gm_error *err)
{
	gm_registry *reg;
	gm_registry_worktree *rv = NULL;
	size_t rn = 0, i, j, count = 0;
	gm_worktree_info *v = NULL;
	int ret;

	*out = NULL;
	*n = 0;
	if ((ret = gm_registry_open(NULL, &reg, err)))
		return ret;
	if (name) {
		gm_registry_model probe;
		if ((ret = gm_registry_get_model(reg, name, &probe, err)))
			goto out;
		gm_registry_model_release(&probe);
	}
	if ((ret = gm_registry_list_worktrees(reg, name, &rv, &rn, err)))
		goto out;
	for (i = 0; i < rn; i++) {
		struct model_ctx m;
		struct wt_state *sv;
		size_t sn;
		int found = 0;

		if (model_open_reg(reg, rv[i].model, &m, NULL)) {
			m.reg = NULL;
			model_close(&m);
			continue;
		}
		v = gm_xrealloc(v, (count + 1) * sizeof(*v));
		if (states_list(&m, &sv, &sn, NULL) == 0) {
			for (j = 0; j < sn && !found; j++) {
				if (!strcmp(sv[j].path, rv[i].path)) {
					fill_info(&m, &sv[j], &v[count]);
					found = 1;
				}
			}
			states_free(sv, sn);
		}
		if (!found) {
			memset(&v[count], 0, sizeof(v[count]));
			v[count].model = gm_xstrdup(rv[i].model);
			v[count].path = gm_xstrdup(rv[i].path);
			v[count].ref = gm_xstrdup(rv[i].ref);
			v[count].commit = gm_xstrdup("");
			v[count].driver = gm_xstrdup(rv[i].method);
			v[count].lower = gm_xstrdup("");
			v[count].fallback = gm_xstrdup("");
			v[count].missing = 1;
		}
		count++;
		m.reg = NULL; /* borrowed */
		gm_registry_model_release(&m.entry);
		model_close(&m);
	}
	*out = v;
	*n = count;
out:
	gm_registry_worktrees_free(rv, rn);
	gm_registry_close(reg);
	return ret;
}

/* Finds the model and state of the worktree at path (absolute). */
static int find_worktree(gm_registry *reg, const char *path, struct model_ctx *m, struct wt_state *s,
			 gm_error *err)
{
	gm_registry_worktree *rv = NULL;
	size_t rn = 0, i, j;
	int ret;

	if ((ret = gm_registry_list_worktrees(reg, NULL, &rv, &rn, err)))
		return ret;
	for (i = 0; i < rn; i++) {
		struct wt_state *sv;
		size_t sn;

		if (strcmp(rv[i].path, path))
			continue;
		if ((ret = model_open_reg(reg, rv[i].model, m, err)))
			break;
		ret = GM_ENOENT;
		if (states_list(m, &sv, &sn, NULL) == 0) {
			for (j = 0; j < sn; j++) {
				if (!strcmp(sv[j].path, path)) {
					*s = sv[j];
					memset(&sv[j], 0, sizeof(sv[j]));
					ret = 0;
					break;
				}
			}
			states_free(sv, sn);
		}
		if (ret) {
			gm_error_set(err, GM_ENOENT, "%s: the worktree's state is missing from %s/wt; "
				     "'git model worktree prune' forgets it", path, m->cowdir);
			m->reg = NULL;
			gm_registry_model_release(&m->entry);
			model_close(m);
		}
		gm_registry_worktrees_free(rv, rn);
		return ret;
	}
	gm_registry_worktrees_free(rv, rn);
	return ret ? ret : gm_error_set(err, GM_ENOENT, "%s is not a registered worktree "
					"(see 'git model worktree list')", path);
}

/* 1 when the worktree has changes git would report (files modified,
 * added or deleted, untracked files), checked with libgit2. */
static int worktree_dirty(const char *path)
{
	git_repository *r = NULL;
	git_status_list *st = NULL;
	git_status_options so;
	size_t n = 0;

	git_status_options_init(&so, GIT_STATUS_OPTIONS_VERSION);

	so.flags = GIT_STATUS_OPT_INCLUDE_UNTRACKED | GIT_STATUS_OPT_EXCLUDE_SUBMODULES;
	if (git_repository_open(&r, path))
		return 0;
	if (git_status_list_new(&st, r, &so) == 0)
		n = git_status_list_entrycount(st);
	git_status_list_free(st);
	git_repository_free(r);
	return n > 0;
}

static int remove_one(struct model_ctx *m, struct wt_state *s, int force, gm_error *err)
{
	enum gm_cow_driver d = GM_COW_COPY;
	git_worktree *wt = NULL;
	char *sdir;
	int ret, did;

	if ((ret = model_lock(m, err)))
		return ret;
	gm_cow_driver_parse(s->driver, &d, NULL);
	if (!force && gm_is_dir(s->path)) {
		/* Look at the files as the user sees them. */
		if (gm_cow_driver_mounts(d) && (ret = ensure_mounted(m, s, &did, err)))
			return gm_error_prefix(err, "cannot check %s for changes (--force removes it anyway)",
					       s->path);
		if (worktree_dirty(s->path))
			return gm_error_set(err, GM_EINVAL, "%s has changes that are not committed; commit them, "
					    "or remove it with --force", s->path);
	}
	if (gm_cow_driver_mounts(d) && (ret = gm_cow_unmount(d, s->path, err)))
		return ret;
	if ((ret = gm_cow_remove_tree(s->path, err)))
		return ret;
	if (git_worktree_lookup(&wt, m->repo, s->name) == 0) {
		git_worktree_prune_options po = GIT_WORKTREE_PRUNE_OPTIONS_INIT;

		po.flags = GIT_WORKTREE_PRUNE_VALID | GIT_WORKTREE_PRUNE_LOCKED;
		git_worktree_unlock(wt);
		if (git_worktree_prune(wt, &po))
			gm_warn("%s: %s", s->path, git_error_last() ? git_error_last()->message : "prune failed");
		git_worktree_free(wt);
	}
	sdir = gm_path_join(m->cowdir, "wt");
	{
		char *one = gm_path_join(sdir, s->name);
		ret = gm_cow_remove_tree(one, err);
		free(one);
	}
	free(sdir);
	if (ret)
		return ret;
	gm_registry_remove_worktree(m->reg, s->path, NULL);
	lower_release(m, s->lower);
	return 0;
}

int gm_worktree_remove(const char *path, int force, gm_error *err)
{
	gm_registry *reg;
	struct model_ctx m;
	struct wt_state s;
	char resolved[PATH_MAX], *abs = NULL;
	int ret;

	memset(&s, 0, sizeof(s));
	if (realpath(path, resolved))
		abs = gm_xstrdup(resolved);
	else if ((ret = absolute_dir(path, &abs, err)))
		return ret;
	if ((ret = gm_registry_open(NULL, &reg, err))) {
		free(abs);
		return ret;
	}
	if ((ret = find_worktree(reg, abs, &m, &s, err)) == 0) {
		ret = remove_one(&m, &s, force, err);
		state_release(&s);
		m.reg = NULL;
		gm_registry_model_release(&m.entry);
		model_close(&m);
	}
	gm_registry_close(reg);
	free(abs);
	return ret;
}

int gm_worktree_remove_all(const char *name, int force, gm_error *err)
{
	struct model_ctx m;
	struct wt_state *v;
	size_t n, i;
	int ret;

	if ((ret = model_open(name, &m, err)))
		return ret;
	if ((ret = states_list(&m, &v, &n, err)) == 0) {
		for (i = 0; i < n && !ret; i++)
			ret = remove_one(&m, &v[i], force, err);
		states_free(v, n);
	}
	model_close(&m);
	return ret;
}

int gm_worktree_prune(const char *name, size_t *n_pruned, gm_error *err)
{
	gm_registry *reg;
	char **names = NULL;
	size_t nn = 0, i, j;
	int ret;

	*n_pruned = 0;
	if ((ret = gm_registry_open(NULL, &reg, err)))
		return ret;
	if ((ret = model_names(reg, name, &names, &nn, err)))
		goto out;
	for (i = 0; i < nn && !ret; i++) {
		struct model_ctx m;
		struct wt_state *v;
		gm_registry_worktree *rv = NULL;
		size_t n, rn = 0;
		char *lowers;
		DIR *d;
		struct dirent *e;

		if ((ret = model_open_reg(reg, names[i], &m, err)))
			break;
		if ((ret = model_lock(&m, err)) == 0 && (ret = states_list(&m, &v, &n, err)) == 0) {
			for (j = 0; j < n && !ret; j++) {
				int gone = !gm_is_dir(v[j].path) && !gm_cow_is_mounted(v[j].path, NULL);

				if (!gone)
					continue;
				gm_info("pruning %s (its directory is gone)", v[j].path);
				if ((ret = remove_one(&m, &v[j], 1, err)) == 0)
					(*n_pruned)++;
			}
			states_free(v, n);
		}
		/* Registry entries with no state left. */
		if (!ret && gm_registry_list_worktrees(reg, names[i], &rv, &rn, NULL) == 0) {
			struct wt_state *sv;
			size_t sn, k;

			if (states_list(&m, &sv, &sn, NULL) == 0) {
				for (j = 0; j < rn; j++) {
					int known = 0;
					for (k = 0; k < sn; k++)
						known |= !strcmp(sv[k].path, rv[j].path);
					if (!known && !gm_is_dir(rv[j].path) &&
					    gm_registry_remove_worktree(reg, rv[j].path, NULL) == 0)
						(*n_pruned)++;
				}
				states_free(sv, sn);
			}
			gm_registry_worktrees_free(rv, rn);
		}
		/* Lower layers no state names (left by an interrupted rm). */
		lowers = gm_path_join(m.cowdir, "lower");
		if (!ret && (d = opendir(lowers))) {
			struct wt_state *sv;
			size_t sn, k;

			if (states_list(&m, &sv, &sn, NULL) == 0) {
				while ((e = readdir(d))) {
					int used = 0;
					if (e->d_name[0] == '.' && strncmp(e->d_name, ".tmp-", 5))
						continue;
					for (k = 0; k < sn; k++)
						used |= !strcmp(sv[k].lower, e->d_name);
					if (!used) {
						char *p = gm_path_join(lowers, e->d_name);
						if (gm_cow_remove_tree(p, NULL) == 0)
							(*n_pruned)++;
						free(p);
					}
				}
				states_free(sv, sn);
			}
			closedir(d);
		}
		free(lowers);
		m.reg = NULL;
		gm_registry_model_release(&m.entry);
		model_close(&m);
	}
out:
	names_free(names, nn);
	gm_registry_close(reg);
	return ret;
}

int gm_worktree_repair(const char *name, const char *path, size_t *n_repaired, gm_error *err)
{
	gm_registry *reg;
	char **names = NULL, *abs = NULL, resolved[PATH_MAX];
	size_t nn = 0, i, j;
	int ret, matched = 0;

	*n_repaired = 0;
	if (path) {
		if (realpath(path, resolved))
			abs = gm_xstrdup(resolved);
		else if ((ret = absolute_dir(path, &abs, err)))
			return ret;
	}
	if ((ret = gm_registry_open(NULL, &reg, err))) {
		free(abs);
		return ret;
	}
	if ((ret = model_names(reg, name, &names, &nn, err)))
		goto out;
	for (i = 0; i < nn && !ret; i++) {
		struct model_ctx m;
		struct wt_state *v;
		size_t n;

		if ((ret = model_open_reg(reg, names[i], &m, err)))
			break;
		if ((ret = states_list(&m, &v, &n, err)) == 0) {
			for (j = 0; j < n && !ret; j++) {
				int did = 0;

				if (abs && strcmp(abs, v[j].path))
					continue;
				matched = 1;
				if ((ret = ensure_mounted(&m, &v[j], &did, err)) == 0 && did) {
					gm_info("re-mounted %s", v[j].path);
					(*n_repaired)++;
				}
			}
			states_free(v, n);
		}
		m.reg = NULL;
		gm_registry_model_release(&m.entry);
		model_close(&m);
	}
	if (!ret && abs && !matched)
		ret = gm_error_set(err, GM_ENOENT, "%s is not a registered worktree (see 'git model worktree list')",
				   abs);
out:
	names_free(names, nn);
	gm_registry_close(reg);
	free(abs);
	return ret;
}

int gm_worktree_find(const char *name, const char *ref, char **dir, int *found, gm_error *err)
{
	struct model_ctx m;
	struct wt_state *v;
	size_t n, i;
	int ret;

	*dir = NULL;
	*found = 0;
	if ((ret = model_open(name, &m, err)))
		return ret;
	if ((ret = states_list(&m, &v, &n, err)) == 0) {
		for (i = 0; i < n; i++) {
			int did;

			if (strcmp(v[i].ref, ref))
				continue;
			if ((ret = ensure_mounted(&m, &v[i], &did, err)) == 0) {
				*dir = gm_xstrdup(v[i].path);
				*found = 1;
			}
			break;
		}
		states_free(v, n);
	}
	model_close(&m);
	return ret;
}

int gm_worktree_ensure(const char *dir, gm_error *err)
{
	char resolved[PATH_MAX], *db = NULL;
	gm_registry *reg;
	gm_registry_worktree *rv = NULL;
	size_t rn = 0, i;
	int ret;

	if (!realpath(dir, resolved))
		return 0; /* the caller reports a missing directory its own way */
	if (gm_registry_default_path(&db, NULL) || access(db, F_OK)) {
		free(db);
		return 0;
	}
	free(db);
	if ((ret = gm_registry_open(NULL, &reg, err)))
		return ret;
	if ((ret = gm_registry_list_worktrees(reg, NULL, &rv, &rn, err)))
		goto out;
	for (i = 0; i < rn; i++) {
		struct model_ctx m;
		struct wt_state *sv;
		size_t sn, j;
		int did;

		if (strcmp(rv[i].path, resolved))
			continue;
		if ((ret = model_open_reg(reg, rv[i].model, &m, err)) == 0 &&
		    (ret = states_list(&m, &sv, &sn, err)) == 0) {
			for (j = 0; j < sn && !ret; j++)
				if (!strcmp(sv[j].path, resolved))
					ret = ensure_mounted(&m, &sv[j], &did, err);
			states_free(sv, sn);
		}
		m.reg = NULL;
		gm_registry_model_release(&m.entry);
		model_close(&m);
		break;
	}
out:
	gm_registry_worktrees_free(rv, rn);
	gm_registry_close(reg);
	return ret;
}
