/*
 * repo-sync.c - clone, fetch, pull, push, fsck and gc of model repositories
 * (see repo-sync.h).
 *
 * Git objects move with libgit2 (clone, fetch, push: in process, no
 * dependency on a git executable, and the same credentials path for both
 * halves); LFS objects move with lfs.h's Batch API client, or straight
 * between object stores when the other repository is a local path.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <git2.h>

#include "base/buf.h"
#include "storage/bundle.h"
#include "base/fs.h"
#include "storage/hub.h"
#include "storage/libgit.h"
#include "storage/lfs.h"
#include "storage/lfs-repo.h"
#include "storage/lfs-transfer.h"
#include "base/log.h"
#include "storage/repo-internal.h"
#include "storage/repo-sync.h"
#include "storage/repo.h"

/* ------------------------------------------------------------ fsck and gc */

/* Calls fn for each object file in the store: (oid, path, size). */
typedef int (*store_fn)(void *ctx, const char *oid, const char *path, unsigned long long size);

static int store_foreach(const gm_lfs_store *s, store_fn fn, void *ctx)
{
	DIR *d1 = opendir(s->objects);
	struct dirent *a;
	int ret = 0;

	if (!d1)
		return 0; /* no object stored yet */
	while (!ret && (a = readdir(d1))) {
		char *p1;
		DIR *d2;
		struct dirent *b;
		if (a->d_name[0] == '.')
			continue;
		p1 = gm_path_join(s->objects, a->d_name);
		if ((d2 = opendir(p1))) {
			while (!ret && (b = readdir(d2))) {
				char *p2;
				DIR *d3;
				struct dirent *c;
				if (b->d_name[0] == '.')
					continue;
				p2 = gm_path_join(p1, b->d_name);
				if ((d3 = opendir(p2))) {
					while (!ret && (c = readdir(d3))) {
						char *p3;
						struct stat st;
						if (c->d_name[0] == '.')
							continue;
						p3 = gm_path_join(p2, c->d_name);
						if (lstat(p3, &st) == 0 && S_ISREG(st.st_mode))
							ret = fn(ctx, c->d_name, p3, (unsigned long long)st.st_size);
						free(p3);
					}
					closedir(d3);
				}
				free(p2);
			}
			closedir(d2);
		}
		free(p1);
	}
	closedir(d1);
	return ret;
}

static int list_has(const gm_lfs_object_list *l, const char *oid)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (!strcmp(l->items[i].oid, oid))
			return 1;
	return 0;
}

struct fsck_ctx {
	gm_repo *r;
	const gm_lfs_object_list *refd;
	gm_repo_report_fn report;
	void *ctx;
	size_t checked, bad;
};

static int fsck_unreferenced(void *vctx, const char *oid, const char *path, unsigned long long size)
{
	struct fsck_ctx *f = vctx;
	gm_error e = GM_ERROR_INIT;

	(void)path;
	if (list_has(f->refd, oid))
		return 0; /* checked with its path already */
	f->checked++;
	if (!gm_lfs_oid_valid(oid)) {
		f->report(f->ctx, "stray", oid, path, "a file in the object store that is not named by a sha256");
		f->bad++;
	} else if (gm_lfs_store_verify(gm_repo_lfs(f->r), oid, size, &e)) {
		f->report(f->ctx, "corrupt", oid, NULL, e.msg);
		f->bad++;
	}
	return 0;
}

int gm_repo_fsck(gm_repo *r, gm_repo_report_fn report, void *ctx, size_t *n_checked, size_t *n_bad,
		 gm_error *err)
{
	gm_lfs_object_list refd = { NULL, 0, 0 };
	struct fsck_ctx f = { r, &refd, report, ctx, 0, 0 };
	size_t i;
	int ret;

	/* what checking out HEAD or any branch or tag needs: older commits
	 * of a clone were never fetched, and that is not damage */
	if ((ret = gm_repo_tip_objects(r, &refd, err)))
		goto out;
	for (i = 0; i < refd.n; i++) {
		gm_error e = GM_ERROR_INIT;
		int rc = gm_lfs_store_verify(gm_repo_lfs(r), refd.items[i].oid, refd.items[i].size, &e);
		f.checked++;
		if (rc == GM_ENOENT) {
			report(ctx, "missing", refd.items[i].oid, refd.items[i].path, e.msg);
			f.bad++;
		} else if (rc) {
			report(ctx, "corrupt", refd.items[i].oid, refd.items[i].path, e.msg);
			f.bad++;
		}
	}
	store_foreach(gm_repo_lfs(r), fsck_unreferenced, &f);
out:
	*n_checked = f.checked;
	*n_bad = f.bad;
	gm_lfs_object_list_release(&refd);
	return ret;
}

struct gc_ctx {
	const gm_lfs_object_list *keep;
	int dry_run;
	size_t removed;
	unsigned long long bytes;
	gm_error *err;
};

static int gc_one(void *vctx, const char *oid, const char *path, unsigned long long size)
{
	struct gc_ctx *g = vctx;

	if (list_has(g->keep, oid))
		return 0;
	if (!g->dry_run && unlink(path))
		return gm_error_errno(g->err, "cannot remove %s", path);
	g->removed++;
	g->bytes += size;
	return 0;
}

int gm_repo_gc(gm_repo *r, int dry_run, size_t *n_removed, unsigned long long *bytes_freed, gm_error *err)
{
	gm_lfs_object_list keep = { NULL, 0, 0 };
	struct gc_ctx g = { &keep, dry_run, 0, 0, err };
	int ret;

	*n_removed = 0;
	*bytes_freed = 0;
	/* keep what origin's branches use too: deleting objects a later
	 * checkout needs would only make it download them again */
	if ((ret = gm_repo_reachable_objects(r, GM_REPO_REACH_INDEX | GM_REPO_REACH_REMOTES, &keep, err)))
		goto out;
	ret = store_foreach(gm_repo_lfs(r), gc_one, &g);
	if (!ret && !dry_run) {
		/* views link to objects; they are rebuilt on demand */
		char *views = gm_path_join(gm_repo_gitdir(r), "git-model/views");
		gm_repo_remove_tree(views);
		free(views);
	}
	*n_removed = g.removed;
	*bytes_freed = g.bytes;
out:
	gm_lfs_object_list_release(&keep);
	return ret;
}

/* ------------------------------------------------------------ remotes */

/* Where a remote's objects come from: a local repository's store, or an
 * HTTP endpoint with an optional token. */
struct remote_info {
	char *url;      /* the git URL */
	char *token;    /* Authorization: Bearer, or NULL */
	char *header;   /* "Authorization: Bearer TOKEN" for libgit2, or NULL */
	int local;      /* url is a local path */
};

static void remote_info_release(struct remote_info *ri)
{
	free(ri->url);
	free(ri->token);
	free(ri->header);
	memset(ri, 0, sizeof(*ri));
}

static int is_local_url(const char *url)
{
	return url[0] == '/' || !strncmp(url, "file://", 7) || gm_is_dir(url);
}

/* Fills ri for a git URL: the header libgit2 sends. */
static int remote_info_init(struct remote_info *ri, const char *url, gm_error *err)
{
	int ret;

	memset(ri, 0, sizeof(*ri));
	ri->url = gm_xstrdup(url);
	ri->local = is_local_url(url);
	if (ri->local)
		return 0;
	/* only to the Hub's own host, even for a model cloned from hf: when
	 * HF_ENDPOINT has changed since */
	if ((ret = gm_hub_token_for_url(url, &ri->token, err)))
		return ret;
	if (ri->token) {
		gm_buf b = GM_BUF_INIT;
		gm_buf_addf(&b, "Authorization: Bearer %s", ri->token);
		ri->header = gm_buf_detach(&b, NULL);
	}
	return 0;
}

/* Downloads the LFS objects of commit hex that the store lacks, from the
 * remote's LFS server (or its store, for a local remote): lfs.h resolves
 * the endpoint as git-lfs does, attaches the Hub token only on the Hub and
 * asks git's credential helpers elsewhere.  checkout then smudges work-tree
 * files that are still pointers. */
static int lfs_fetch(gm_repo *r, const char *hex, const gm_repo_transfer_opts *opts, int checkout,
		     gm_error *err)
{
	gm_lfs_fetch_opts fo = GM_LFS_FETCH_OPTS_INIT;
	gm_lfs_transfer_stats st;
	int ret;

	fo.rev = hex;
	fo.include = opts->include;
	fo.exclude = opts->exclude;
	fo.checkout = checkout;
	fo.transfer.progress = opts->quiet ? GM_LFS_PROGRESS_NEVER : GM_LFS_PROGRESS_AUTO;
	ret = gm_lfs_fetch(gm_repo_workdir(r), &fo, &st, err);
	if (!ret)
		gm_info("LFS: %zu objects present, %zu reused from the Hugging Face cache, %zu downloaded "
			"(%llu bytes, %zu resumed)", st.n_present, st.n_reused, st.n_transferred, st.bytes,
			st.n_resumed);
	return ret;
}

static void set_headers(git_strarray *h, const struct remote_info *ri, char **slot)
{
	slot[0] = ri->header;
	h->strings = slot;
	h->count = ri->header ? 1 : 0;
}

/* ------------------------------------------------------------ checkout */

struct pathlist {
	char **v;
	size_t n, alloc;
};

static int collect_paths(const char *root, const git_tree_entry *e, void *payload)
{
	struct pathlist *p = payload;
	gm_buf b = GM_BUF_INIT;

	if (git_tree_entry_type(e) == GIT_OBJECT_TREE)
		return 0;
	gm_buf_addf(&b, "%s%s", root, git_tree_entry_name(e));
	if (p->n == p->alloc) {
		p->alloc = p->alloc ? 2 * p->alloc : 64;
		p->v = gm_xrealloc(p->v, p->alloc * sizeof(*p->v));
	}
	p->v[p->n++] = gm_buf_detach(&b, NULL);
	return 0;
}

static void pathlist_release(struct pathlist *p)
{
	size_t i;

	for (i = 0; i < p->n; i++)
		free(p->v[i]);
	free(p->v);
	memset(p, 0, sizeof(*p));
}

static int tree_of(git_repository *git, const char *hex, git_tree **tree)
{
	git_oid id;
	git_commit *c;
	int rc;

	if (git_oid_fromstr(&id, hex) < 0 || git_commit_lookup(&c, git, &id) < 0)
		return -1;
	rc = git_commit_tree(tree, c);
	git_commit_free(c);
	return rc;
}

/* How checkout_commit treats work-tree files that differ from old_hex's. */
enum checkout_mode {
	CHECKOUT_SAFE,   /* refuse (they are the user's edits) */
	CHECKOUT_FORCE,  /* overwrite them (a clone's fresh work tree) */
	/* overwrite only the paths that differ between old_hex and hex: a
	 * checkout of old -> hex was killed half way (its safe check passed,
	 * so what differs there is what it wrote) */
	CHECKOUT_RESUME
};

/* Whether path is one that differs between trees a and b (sorted diff list). */
static int in_diff(const struct pathlist *d, const char *path)
{
	size_t i;

	for (i = 0; i < d->n; i++)
		if (!strcmp(d->v[i], path))
			return 1;
	return 0;
}

static int diff_paths(git_repository *git, git_tree *a, git_tree *b, struct pathlist *out)
{
	git_diff *diff = NULL;
	size_t i;

	if (git_diff_tree_to_tree(&diff, git, a, b, NULL) < 0)
		return -1;
	for (i = 0; i < git_diff_num_deltas(diff); i++) {
		const git_diff_delta *d = git_diff_get_delta(diff, i);

		if (out->n + 2 > out->alloc) {
			out->alloc = out->alloc ? 2 * out->alloc : 64;
			out->v = gm_xrealloc(out->v, out->alloc * sizeof(*out->v));
		}
		out->v[out->n++] = gm_xstrdup(d->new_file.path);
		if (strcmp(d->old_file.path, d->new_file.path))
			out->v[out->n++] = gm_xstrdup(d->old_file.path);
	}
	git_diff_free(diff);
	return 0;
}

/*
 * Checks out commit hex (from the tree of old_hex, NULL for an empty work
 * tree).  LFS files whose objects are not in the store are written as
 * their pointer files (as git-lfs does for excluded files) instead of
 * failing the smudge; they can be fetched later.
 */
static int checkout_commit(gm_repo *r, const char *old_hex, const char *hex, enum checkout_mode mode,
			   gm_error *err)
{
	git_repository *git = gm_repo_git(r);
	git_checkout_options co;
	git_tree *tree = NULL, *old = NULL;
	struct pathlist all = { NULL, 0, 0 }, olds = { NULL, 0, 0 }, changed = { NULL, 0, 0 };
	gm_lfs_object_list ptrs = { NULL, 0, 0 }, absent = { NULL, 0, 0 };
	const char **keep = NULL;
	size_t i, j, nkeep = 0;
	git_index *idx = NULL;
	int ret = 0;

	if (tree_of(git, hex, &tree) < 0)
		return gm_libgit_error(err, GM_EIO, "cannot read commit %s", hex);
	if (old_hex && tree_of(git, old_hex, &old) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot read commit %s", old_hex);
		goto out;
	}
	git_tree_walk(tree, GIT_TREEWALK_PRE, collect_paths, &all);
	if (old)
		git_tree_walk(old, GIT_TREEWALK_PRE, collect_paths, &olds);
	if (mode == CHECKOUT_RESUME && (!old || diff_paths(git, old, tree, &changed) < 0)) {
		ret = gm_libgit_error(err, GM_EIO, "cannot compare %s with %s", old_hex ? old_hex : "nothing", hex);
		goto out;
	}
	if ((ret = gm_lfs_scan_tree(gm_repo_workdir(r), hex, NULL, NULL, &ptrs, err)))
		goto out;
	for (i = 0; i < ptrs.n; i++)
		if (!gm_lfs_store_has(gm_repo_lfs(r), ptrs.items[i].oid, ptrs.items[i].size))
			gm_lfs_object_list_add(&absent, ptrs.items[i].oid, ptrs.items[i].size, ptrs.items[i].path);
	keep = gm_xcalloc(all.n + olds.n + 1, sizeof(*keep));
	for (i = 0; i < all.n; i++) {
		int skip = 0;
		for (j = 0; j < absent.n && !skip; j++)
			skip = absent.items[j].path && !strcmp(absent.items[j].path, all.v[i]);
		if (!skip && (mode != CHECKOUT_RESUME || in_diff(&changed, all.v[i])))
			keep[nkeep++] = all.v[i];
	}
	for (i = 0; i < olds.n; i++)
		if (mode != CHECKOUT_RESUME || in_diff(&changed, olds.v[i]))
			keep[nkeep++] = olds.v[i];
	git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
	co.checkout_strategy = (mode == CHECKOUT_SAFE ? GIT_CHECKOUT_SAFE : GIT_CHECKOUT_FORCE) |
			       GIT_CHECKOUT_DISABLE_PATHSPEC_MATCH;
	co.paths.strings = (char **)keep;
	co.paths.count = nkeep;
	if (nkeep && git_checkout_tree(git, (git_object *)tree, &co) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot check out %s in %s", hex, gm_repo_workdir(r));
		goto out;
	}
	if (!absent.n)
		goto out;
	/* pointer files for what is not here, staged as they are */
	if (git_repository_index(&idx, git) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot read the index");
		goto out;
	}
	for (i = 0; i < absent.n && !ret; i++) {
		gm_lfs_pointer p = GM_LFS_POINTER_INIT;
		gm_buf text = GM_BUF_INIT;
		char *full = gm_path_join(gm_repo_workdir(r), absent.items[i].path), *slash = strrchr(full, '/');
		memcpy(p.oid, absent.items[i].oid, sizeof(p.oid));
		p.size = absent.items[i].size;
		gm_lfs_pointer_format(&p, &text);
		*slash = '\0';
		ret = gm_mkdir_p(full, 0755, err);
		*slash = '/';
		if (!ret)
			ret = gm_write_file_atomic(full, text.buf, text.len, 0644, err);
		if (!ret && git_index_add_bypath(idx, absent.items[i].path) < 0)
			ret = gm_libgit_error(err, GM_EIO, "cannot stage %s", absent.items[i].path);
		gm_buf_release(&text);
		free(full);
	}
	if (!ret && git_index_write(idx) < 0)
		ret = gm_libgit_error(err, GM_EIO, "cannot write the index");
	if (!ret)
		gm_info("%zu LFS files were not fetched and are pointer files ('git model fetch' gets them)",
			absent.n);
out:
	git_index_free(idx);
	free(keep);
	gm_lfs_object_list_release(&ptrs);
	gm_lfs_object_list_release(&absent);
	pathlist_release(&all);
	pathlist_release(&olds);
	pathlist_release(&changed);
	git_tree_free(tree);
	git_tree_free(old);
	return ret;
}

/* ------------------------------------------------------------ clone */

static int fetch_remote(git_remote *remote, const struct remote_info *ri, gm_error *err);

static char *default_name(const char *source)
{
	char *s = gm_xstrdup(source), *slash, *name;
	size_t n;

	while ((n = strlen(s)) > 1 && s[n - 1] == '/')
		s[n - 1] = '\0';
	slash = strrchr(s, '/');
	name = gm_xstrdup(slash ? slash + 1 : (strchr(s, ':') ? strrchr(s, ':') + 1 : s));
	n = strlen(name);
	if (n > 4 && !strcmp(name + n - 4, ".git"))
		name[n - 4] = '\0';
	else if (n > 4 && !strcmp(name + n - 4, ".tar"))
		name[n - 4] = '\0';
	free(s);
	return name;
}

static int is_bundle(const char *source)
{
	size_t n = strlen(source);
	return n > 4 && !strcmp(source + n - 4, ".tar") && gm_is_file(source);
}

/* Creates branch name at c, or moves it there when it exists (libgit2
 * refuses to force-create the branch HEAD is on). */
static int make_branch(git_repository *git, const char *name, git_commit *c, git_reference **out)
{
	git_reference *old;
	int rc;

	if (git_branch_lookup(&old, git, name, GIT_BRANCH_LOCAL) < 0)
		return git_branch_create(out, git, name, c, 0);
	rc = git_reference_set_target(out, old, git_commit_id(c), "git model clone");
	git_reference_free(old);
	return rc;
}

/* Puts HEAD on rev: a branch of origin becomes a local tracking branch,
 * anything else (a commit, a tag) a detached HEAD. */
static int checkout_rev_head(git_repository *git, const char *rev, char hex[GM_REPO_OID_HEXLEN + 1],
			     gm_error *err)
{
	gm_buf b = GM_BUF_INIT;
	git_reference *remote_ref = NULL, *branch = NULL;
	git_object *obj = NULL, *commit = NULL;
	int ret = 0;

	gm_buf_addf(&b, "refs/remotes/origin/%s", rev);
	if (git_reference_lookup(&remote_ref, git, b.buf) == 0) {
		git_commit *c = NULL;
		gm_buf_reset(&b);
		gm_buf_addf(&b, "origin/%s", rev);
		/* force: in a clone being made the local branch is ours to move
		 * (a resumed clone's may lag behind a fetch) */
		if (git_commit_lookup(&c, git, git_reference_target(remote_ref)) < 0 ||
		    make_branch(git, rev, c, &branch) < 0 ||
		    git_branch_set_upstream(branch, b.buf) < 0 ||
		    git_repository_set_head(git, git_reference_name(branch)) < 0)
			ret = gm_libgit_error(err, GM_EIO, "cannot check out branch %s", rev);
		else
			git_oid_tostr(hex, GM_REPO_OID_HEXLEN + 1, git_reference_target(remote_ref));
		git_commit_free(c);
		goto out;
	}
	if (git_revparse_single(&obj, git, rev) < 0 || git_object_peel(&commit, obj, GIT_OBJECT_COMMIT) < 0) {
		ret = gm_error_set(err, GM_ENOENT, "the source has no branch, tag or commit '%s'", rev);
		goto out;
	}
	if (git_repository_set_head_detached(git, git_object_id(commit)) < 0)
		ret = gm_libgit_error(err, GM_EIO, "cannot check out %s", rev);
	else
		git_oid_tostr(hex, GM_REPO_OID_HEXLEN + 1, git_object_id(commit));
out:
	git_object_free(obj);
	git_object_free(commit);
	git_reference_free(remote_ref);
	git_reference_free(branch);
	gm_buf_release(&b);
	return ret;
}

/* After a clone at a revision, the local branches are what was asked for
 * (as with git clone --branch): the default branch libgit2 created is
 * deleted unless HEAD is on it. */
static int drop_other_branches(git_repository *git, gm_error *err)
{
	git_branch_iterator *it;
	git_reference *ref;
	git_branch_t type;
	int ret = 0;

	if (git_branch_iterator_new(&it, git, GIT_BRANCH_LOCAL) < 0)
		return gm_libgit_error(err, GM_EIO, "cannot list branches");
	while (!ret && git_branch_next(&ref, &type, it) == 0) {
		if (git_branch_is_head(ref) != 1 && git_branch_delete(ref) < 0)
			ret = gm_libgit_error(err, GM_EIO, "cannot delete branch %s", git_reference_shorthand(ref));
		git_reference_free(ref);
	}
	git_branch_iterator_free(it);
	return ret;
}

/*
 * Lock files a killed clone left in the partial repository's git
 * directory (config.lock, HEAD.lock, refs/.../X.lock): the clone's own
 * lock (gm_repo_dest_lock) is held, so no other process owns them.
 */
static void remove_stale_locks(const char *partial)
{
	char *gitdir = gm_path_join(partial, ".git");

	gm_repo_unlink_locks(gitdir);
	free(gitdir);
}

/*
 * A partial directory left by an interrupted clone of the same URL is
 * reused (its git objects and partial LFS downloads are kept) once its git
 * clone had finished: HEAD resolves.  One killed inside git_clone may have
 * its remote configured and no branch yet; it is cloned again.
 */
static int reusable_partial(const char *partial, const char *url)
{
	git_repository *git;
	git_remote *rem;
	git_oid head;
	int ok = 0;

	if (!gm_is_dir(partial) || git_repository_open_ext(&git, partial, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL))
		return 0;
	if (git_reference_name_to_id(&head, git, "HEAD") == 0 && git_remote_lookup(&rem, git, "origin") == 0) {
		ok = git_remote_url(rem) && !strcmp(git_remote_url(rem), url);
		git_remote_free(rem);
	}
	git_repository_free(git);
	return ok;
}

static int clone_bundle(const char *source, const char *name, gm_registry_model *out, gm_error *err)
{
	gm_repo_dest d;
	gm_registry *reg = NULL;
	gm_repo *r = NULL;
	char *head = NULL, *abs = gm_repo_absolute(source), *def = default_name(source);
	int ret;

	ret = gm_repo_dest_init(&d, name, def, err);
	free(def);
	if (ret) {
		free(abs);
		return ret;
	}
	if ((ret = gm_registry_open(NULL, &reg, err)) || (ret = gm_repo_dest_check(&d, reg, err)) ||
	    (ret = gm_repo_dest_lock(&d, err)))
		goto out;
	gm_repo_remove_tree(d.partial);
	if ((ret = gm_repo_bundle_unpack(abs, d.partial, &head, err)) ||
	    (ret = gm_repo_open(d.partial, &r, err)) ||
	    (ret = gm_lfs_install(GM_LFS_INSTALL_LOCAL, d.partial, 0, NULL, err)) ||
	    (ret = checkout_commit(r, NULL, head, CHECKOUT_FORCE, err)))
		goto out;
	gm_repo_close(r);
	r = NULL;
	ret = gm_repo_dest_finish(&d, reg, abs, head, out, err);
out:
	if (ret && d.lock_fd >= 0)
		gm_repo_remove_tree(d.partial);
	gm_repo_close(r);
	gm_registry_close(reg);
	gm_repo_dest_release(&d);
	free(head);
	free(abs);
	return ret;
}

int gm_repo_clone(const char *source, const char *name, const gm_repo_transfer_opts *opts,
		  gm_registry_model *out, gm_error *err)
{
	static const gm_repo_transfer_opts defaults = { NULL, NULL, 0 };
	gm_hub_ref hub = GM_HUB_REF_INIT;
	struct remote_info ri;
	gm_repo_dest d;
	gm_registry *reg = NULL;
	gm_repo *r = NULL;
	git_repository *git = NULL;
	git_clone_options co;
	char *url = NULL, *def = NULL, *slot[1], hex[GM_REPO_OID_HEXLEN + 1];
	const char *rev = NULL;
	int ret, is_hub = gm_hub_is_source(source), keep_partial = 0;

	if (!opts)
		opts = &defaults;
	if ((ret = gm_repo_global_init(err)))
		return ret;
	memset(&ri, 0, sizeof(ri));
	memset(&d, 0, sizeof(d));
	d.lock_fd = -1;
	if (!is_hub && is_bundle(source)) {
		if (opts->include || opts->exclude)
			return gm_error_set(err, GM_EINVAL, "--include and --exclude do not apply to a bundle "
					    "(it holds every object)");
		return clone_bundle(source, name, out, err);
	}
	if (is_hub) {
		if ((ret = gm_hub_parse(source, &hub, err)))
			return ret;
		url = gm_hub_git_url(&hub);
		def = gm_xstrdup(hub.name);
		rev = hub.rev;
	} else {
		struct stat st;
		if (!strchr(source, ':') && stat(source, &st)) {
			ret = gm_error_set(err, GM_ENOENT, "%s does not exist, and is not a URL, hf:ORG/NAME or a "
					   "FILE.tar bundle", source);
			goto out;
		}
		url = is_local_url(source) && !strstr(source, "://") ? realpath(source, NULL) : gm_xstrdup(source);
		if (!url) {
			ret = gm_error_errno(err, "cannot resolve %s", source);
			goto out;
		}
		def = default_name(source);
	}
	if ((ret = remote_info_init(&ri, url, err)) ||
	    (ret = gm_repo_dest_init(&d, name, def, err)) ||
	    (ret = gm_registry_open(NULL, &reg, err)) || (ret = gm_repo_dest_check(&d, reg, err)) ||
	    (ret = gm_repo_dest_lock(&d, err)))
		goto out;

	if (reusable_partial(d.partial, url)) {
		git_remote *origin = NULL;
		gm_info("resuming the interrupted clone in %s", d.partial);
		remove_stale_locks(d.partial);
		if (git_repository_open(&git, d.partial) < 0) {
			ret = gm_libgit_error(err, GM_EIO, "cannot open %s", d.partial);
			goto out;
		}
		/* the source may have moved on since: resume from where it is now */
		if (git_remote_lookup(&origin, git, "origin") == 0)
			ret = fetch_remote(origin, &ri, err);
		git_remote_free(origin);
		if (ret)
			goto out;
	} else {
		if (gm_repo_remove_tree(d.partial)) {
			ret = gm_error_errno(err, "cannot remove the leftover %s", d.partial);
			goto out;
		}
		git_clone_options_init(&co, GIT_CLONE_OPTIONS_VERSION);
		co.checkout_opts.checkout_strategy = GIT_CHECKOUT_NONE;
		set_headers(&co.fetch_opts.custom_headers, &ri, slot);
		if (git_clone(&git, url, d.partial, &co) < 0) {
			ret = gm_libgit_error(err, GM_EIO, "cannot clone %s", is_hub ? source : url);
			gm_repo_remove_tree(d.partial);
			goto out;
		}
	}
	keep_partial = 1;
	if (rev) {
		if ((ret = checkout_rev_head(git, rev, hex, err)) || (ret = drop_other_branches(git, err)))
			goto out;
	} else {
		git_oid id;
		git_reference *head = NULL;
		/* a resumed clone: the default branch follows origin's, which the
		 * fetch above may have moved */
		if (git_repository_head(&head, git) == 0 && git_reference_is_branch(head)) {
			gm_buf up = GM_BUF_INIT;
			git_reference *upstream = NULL, *moved = NULL;
			gm_buf_addf(&up, "refs/remotes/origin/%s", git_reference_shorthand(head));
			if (git_reference_lookup(&upstream, git, up.buf) == 0 &&
			    git_oid_cmp(git_reference_target(upstream), git_reference_target(head)))
				git_reference_set_target(&moved, head, git_reference_target(upstream),
							 "git model clone: resume");
			git_reference_free(moved);
			git_reference_free(upstream);
			gm_buf_release(&up);
		}
		git_reference_free(head);
		if (git_reference_name_to_id(&id, git, "HEAD") < 0) {
			ret = gm_error_set(err, GM_EINVAL, "%s has no commits", source);
			goto out;
		}
		git_oid_tostr(hex, sizeof(hex), &id);
	}
	git_repository_free(git);
	git = NULL;
	if ((ret = gm_repo_open(d.partial, &r, err)) ||
	    (ret = gm_lfs_install(GM_LFS_INSTALL_LOCAL, d.partial, 0, NULL, err)) ||
	    (ret = lfs_fetch(r, hex, opts, 0, err)))
		goto out;
	if ((ret = checkout_commit(r, NULL, hex, CHECKOUT_FORCE, err)))
		goto out;
	gm_repo_close(r);
	r = NULL;
	ret = gm_repo_dest_finish(&d, reg, is_hub ? source : url, hex, out, err);
out:
	if (ret && keep_partial && d.lock_fd >= 0 && gm_is_dir(d.partial))
		gm_warn("the partial clone stays in %s: running the same command again resumes it", d.partial);
	git_repository_free(git);
	gm_repo_close(r);
	gm_registry_close(reg);
	gm_repo_dest_release(&d);
	remote_info_release(&ri);
	gm_hub_ref_release(&hub);
	free(url);
	free(def);
	return ret;
}

/* ------------------------------------------------------------ fetch, pull, push */

/* The model's origin: its remote info (hf: sources authenticate as such). */
static int model_remote(gm_repo *r, const gm_registry_model *m, const char *remote_name,
			struct remote_info *ri, git_remote **remote, gm_error *err)
{
	*remote = NULL;
	if (git_remote_lookup(remote, gm_repo_git(r), remote_name) < 0)
		return gm_error_set(err, GM_ENOENT, "model '%s' has no remote '%s'%s", m->name, remote_name,
				    !strcmp(remote_name, "origin") ? " (it was not cloned; add one with "
				    "'git remote add origin URL' in its directory)" : "");
	return remote_info_init(ri, git_remote_url(*remote), err);
}

static int fetch_remote(git_remote *remote, const struct remote_info *ri, gm_error *err)
{
	git_fetch_options fo;
	char *slot[1];

	git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION);
	set_headers(&fo.custom_headers, ri, slot);
	if (git_remote_fetch(remote, NULL, &fo, NULL) < 0)
		return gm_libgit_error(err, GM_EIO, "cannot fetch from %s", ri->url);
	return 0;
}

static int head_hex(gm_repo *r, char hex[GM_REPO_OID_HEXLEN + 1])
{
	git_oid id;

	if (git_reference_name_to_id(&id, gm_repo_git(r), "HEAD") < 0)
		return -1;
	git_oid_tostr(hex, GM_REPO_OID_HEXLEN + 1, &id);
	return 0;
}

int gm_repo_fetch(const char *name, const char *rev, const gm_repo_transfer_opts *opts, gm_error *err)
{
	static const gm_repo_transfer_opts defaults = { NULL, NULL, 0 };
	gm_registry *reg = NULL;
	gm_registry_model m = { 0 };
	gm_repo *r = NULL;
	git_remote *remote = NULL;
	struct remote_info ri;
	char hex[GM_REPO_OID_HEXLEN + 1], head[GM_REPO_OID_HEXLEN + 1];
	int ret;

	if (!opts)
		opts = &defaults;
	memset(&ri, 0, sizeof(ri));
	if ((ret = gm_registry_open(NULL, &reg, err)) || (ret = gm_repo_open_model(reg, name, &m, &r, err)))
		goto out;
	gm_repo_write_begin(r); /* fetch writes refs (and a killed one left their locks) */
	if ((ret = model_remote(r, &m, "origin", &ri, &remote, err)) ||
	    (ret = fetch_remote(remote, &ri, err)) ||
	    (ret = gm_repo_resolve(r, rev, hex, err)))
		goto out;
	/* pointer files of the checked-out commit get their content (edited
	 * files are left alone), as git lfs checkout does */
	ret = lfs_fetch(r, hex, opts, head_hex(r, head) == 0 && !strcmp(head, hex), err);
out:
	if (ret)
		gm_error_prefix(err, "git model fetch %s", name);
	git_remote_free(remote);
	remote_info_release(&ri);
	gm_repo_close(r);
	gm_registry_model_release(&m);
	gm_registry_close(reg);
	return ret;
}

/* Whether the pull mark at path says a pull from old to new was killed. */
static int pull_mark_matches(const char *path, const char *old, const char *new)
{
	char a[GM_REPO_OID_HEXLEN + 1], b[GM_REPO_OID_HEXLEN + 1];
	FILE *fp = fopen(path, "r");
	int ok;

	if (!fp)
		return 0;
	ok = fscanf(fp, "%40s %40s", a, b) == 2 && !strcmp(a, old) && !strcmp(b, new);
	fclose(fp);
	return ok;
}

int gm_repo_pull(const char *name, const gm_repo_transfer_opts *opts, int *updated, gm_error *err)
{
	static const gm_repo_transfer_opts defaults = { NULL, NULL, 0 };
	gm_registry *reg = NULL;
	gm_registry_model m = { 0 };
	gm_repo *r = NULL;
	git_remote *remote = NULL;
	git_reference *head = NULL, *upstream = NULL, *moved = NULL;
	struct remote_info ri;
	char old[GM_REPO_OID_HEXLEN + 1], new[GM_REPO_OID_HEXLEN + 1], *mark = NULL;
	git_repository *git;
	int ret, resume = 0;

	*updated = 0;
	if (!opts)
		opts = &defaults;
	memset(&ri, 0, sizeof(ri));
	if ((ret = gm_registry_open(NULL, &reg, err)) || (ret = gm_repo_open_model(reg, name, &m, &r, err)))
		goto out;
	gm_repo_write_begin(r);
	git = gm_repo_git(r);
	if (git_repository_head(&head, git) < 0 || !git_reference_is_branch(head)) {
		ret = gm_error_set(err, GM_EINVAL, "HEAD of model '%s' is not on a branch (a clone at a commit); "
				   "pull needs a branch", name);
		goto out;
	}
	if ((ret = model_remote(r, &m, "origin", &ri, &remote, err)) || (ret = fetch_remote(remote, &ri, err)))
		goto out;
	if (git_branch_upstream(&upstream, head) < 0) {
		gm_buf b = GM_BUF_INIT;
		gm_buf_addf(&b, "refs/remotes/origin/%s", git_reference_shorthand(head));
		if (git_reference_lookup(&upstream, git, b.buf) < 0)
			ret = gm_error_set(err, GM_ENOENT, "branch %s of model '%s' has no upstream on origin",
					   git_reference_shorthand(head), name);
		gm_buf_release(&b);
		if (ret)
			goto out;
	}
	git_oid_tostr(old, sizeof(old), git_reference_target(head));
	git_oid_tostr(new, sizeof(new), git_reference_target(upstream));
	if (!strcmp(old, new))
		goto out; /* up to date */
	if (git_graph_descendant_of(git, git_reference_target(upstream), git_reference_target(head)) != 1) {
		ret = gm_error_set(err, GM_EINVAL, "cannot pull model '%s': its branch %s and origin's have "
				   "diverged (not a fast-forward); merge or reset it with git in %s", name,
				   git_reference_shorthand(head), m.path);
		goto out;
	}
	if ((ret = lfs_fetch(r, new, opts, 0, err)))
		goto out;
	/* The work tree is updated before the branch moves: a pull killed in
	 * between leaves a mark naming both commits, and the next pull from
	 * the same commit finishes the files the killed one was changing. */
	mark = gm_path_join(gm_repo_gitdir(r), "git-model/pull");
	resume = pull_mark_matches(mark, old, new);
	if (resume)
		gm_info("finishing the update of the work tree that an interrupted pull started");
	{
		char line[2 * GM_REPO_OID_HEXLEN + 3];

		snprintf(line, sizeof(line), "%s %s\n", old, new);
		*strrchr(mark, '/') = 0;
		ret = gm_mkdir_p(mark, 0777, err);
		mark[strlen(mark)] = '/';
		if (ret || (ret = gm_write_file_atomic(mark, line, strlen(line), 0644, err)))
			goto out;
	}
	if ((ret = checkout_commit(r, old, new, resume ? CHECKOUT_RESUME : CHECKOUT_SAFE, err)))
		goto out;
	if (git_reference_set_target(&moved, head, git_reference_target(upstream), "git model pull: fast-forward")
	    < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot move branch %s", git_reference_shorthand(head));
		goto out;
	}
	*updated = 1;
	ret = gm_registry_set_revision(reg, name, new, err);
out:
	/* a failed checkout wrote nothing (its safe check comes first) */
	if (mark && (!ret || !resume))
		unlink(mark);
	free(mark);
	git_reference_free(moved);
	git_reference_free(upstream);
	git_reference_free(head);
	git_remote_free(remote);
	remote_info_release(&ri);
	gm_repo_close(r);
	gm_registry_model_release(&m);
	gm_registry_close(reg);
	return ret;
}

struct push_status {
	gm_buf rejected;
};

static int push_update_ref(const char *refname, const char *status, void *data)
{
	struct push_status *ps = data;

	if (status)
		gm_buf_addf(&ps->rejected, "%s%s (%s)", ps->rejected.len ? ", " : "", refname, status);
	return 0;
}

/* Marks the git directory of the local remote at url as written by us
 * (gm_repo_mark_writer), clearing the locks a killed push left there. */
static char *mark_local_remote(const char *url)
{
	const char *path = strncmp(url, "file://", 7) ? url : url + 7;
	char *dotgit = gm_path_join(path, ".git"), *mark;

	mark = gm_repo_mark_writer(gm_is_dir(dotgit) ? dotgit : path);
	free(dotgit);
	return mark;
}

int gm_repo_push(const char *name, const char *remote_name, const gm_repo_transfer_opts *opts, gm_error *err)
{
	static const gm_repo_transfer_opts defaults = { NULL, NULL, 0 };
	gm_registry *reg = NULL;
	gm_registry_model m = { 0 };
	gm_repo *r = NULL;
	git_remote *remote = NULL;
	git_reference *head = NULL;
	struct remote_info ri;
	git_push_options po;
	struct push_status ps = { GM_BUF_INIT };
	gm_buf spec = GM_BUF_INIT;
	char *slot[1], *specs[1], *remote_mark = NULL;
	git_strarray refspecs;
	int ret;

	if (!opts)
		opts = &defaults;
	if (!remote_name)
		remote_name = "origin";
	memset(&ri, 0, sizeof(ri));
	if ((ret = gm_registry_open(NULL, &reg, err)) || (ret = gm_repo_open_model(reg, name, &m, &r, err)) ||
	    (ret = model_remote(r, &m, remote_name, &ri, &remote, err)))
		goto out;
	gm_repo_write_begin(r); /* the push updates the remote-tracking ref */
	if (git_repository_head(&head, gm_repo_git(r)) < 0 || !git_reference_is_branch(head)) {
		ret = gm_error_set(err, GM_EINVAL, "HEAD of model '%s' is not on a branch: nothing to push", name);
		goto out;
	}
	/* the LFS objects of the commits the remote does not have yet (as far
	 * as its tracking refs know) go first; the server skips what it has */
	{
		gm_lfs_transfer_opts to = GM_LFS_TRANSFER_OPTS_INIT;
		gm_lfs_transfer_stats st;
		to.progress = opts->quiet ? GM_LFS_PROGRESS_NEVER : GM_LFS_PROGRESS_AUTO;
		if ((ret = gm_lfs_push(gm_repo_workdir(r), remote_name, NULL, &to, &st, err)))
			goto out;
		gm_info("LFS: %zu objects already on the remote, %zu uploaded (%llu bytes)", st.n_present,
			st.n_transferred, st.bytes);
	}
	gm_buf_addf(&spec, "%s:%s", git_reference_name(head), git_reference_name(head));
	specs[0] = spec.buf;
	refspecs.strings = specs;
	refspecs.count = 1;
	git_push_options_init(&po, GIT_PUSH_OPTIONS_VERSION);
	set_headers(&po.custom_headers, &ri, slot);
	po.callbacks.push_update_reference = push_update_ref;
	po.callbacks.payload = &ps;
	/* libgit2 pushes into a local remote itself: its ref locks are ours */
	if (ri.local)
		remote_mark = mark_local_remote(ri.url);
	if (git_remote_push(remote, &refspecs, &po) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot push %s to %s", git_reference_shorthand(head), ri.url);
		goto out;
	}
	if (ps.rejected.len)
		ret = gm_error_set(err, GM_EINVAL, "%s refused %s (fetch and pull first if it moved)", ri.url,
				   ps.rejected.buf);
out:
	gm_repo_unmark_writer(remote_mark);
	gm_buf_release(&ps.rejected);
	gm_buf_release(&spec);
	git_reference_free(head);
	git_remote_free(remote);
	remote_info_release(&ri);
	gm_repo_close(r);
	gm_registry_model_release(&m);
	gm_registry_close(reg);
	return ret;
}
