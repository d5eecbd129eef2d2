/*
 * lfs-repo.c - repository-level LFS operations: scanning trees for
 * pointers, resolving the LFS endpoint of a remote, fetch, checkout,
 * push, install and track.  See lfs-repo.h.
 */
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <git2.h>

#include "base/buf.h"
#include "base/fs.h"
#include "storage/hub.h"
#include "storage/libgit.h"
#include "storage/lfs.h"
#include "storage/lfs-repo.h"
#include "storage/lfs-transfer.h"
#include "base/log.h"

/* ------------------------------------------------------------ include / exclude */

/* One pattern against one path, with git-lfs's --include meaning. */
static int pattern_matches(const char *pat, const char *path)
{
	const char *base = strrchr(path, '/');
	size_t plen;

	while (*pat == '/')
		pat++;
	plen = strlen(pat);
	if (!plen)
		return 0;
	if (!strchr(pat, '/') || (plen > 1 && pat[plen - 1] == '/' && !memchr(pat, '/', plen - 1))) {
		/* No slash: a name at any depth, file or directory. */
		char name[4096];
		const char *p = path;

		if (pat[plen - 1] == '/')
			plen--;
		snprintf(name, sizeof(name), "%.*s", (int)plen, pat);
		if (fnmatch(name, base ? base + 1 : path, 0) == 0 && pat[plen] != '/')
			return 1;
		while (*p) { /* each directory component */
			const char *slash = strchr(p, '/');
			char comp[4096];

			if (!slash)
				break;
			snprintf(comp, sizeof(comp), "%.*s", (int)(slash - p), p);
			if (fnmatch(name, comp, 0) == 0)
				return 1;
			p = slash + 1;
		}
		return 0;
	}
	if (pat[plen - 1] == '/')
		return !strncmp(path, pat, plen); /* "dir/": everything below */
	if (fnmatch(pat, path, strstr(pat, "**") ? 0 : FNM_PATHNAME) == 0)
		return 1;
	/* A pattern naming a directory selects what is below it. */
	return !strncmp(path, pat, plen) && path[plen] == '/';
}

int gm_lfs_path_selected(const char *path, const char *const *include, const char *const *exclude)
{
	size_t i;
	int inc = !include || !include[0];

	for (i = 0; include && include[i] && !inc; i++)
		if (pattern_matches(include[i], path))
			inc = 1;
	if (!inc)
		return 0;
	for (i = 0; exclude && exclude[i]; i++)
		if (pattern_matches(exclude[i], path))
			return 0;
	return 1;
}

/* ------------------------------------------------------------ scanning trees */

struct scan_ctx {
	git_repository *repo;
	git_odb *odb;
	const char *const *include, *const *exclude;
	gm_lfs_object_list *out;
	gm_error *err;
	int ret;
};

static int scan_cb(const char *root, const git_tree_entry *entry, void *payload)
{
	struct scan_ctx *c = payload;
	git_filemode_t mode = git_tree_entry_filemode(entry);
	git_object_t type;
	size_t size;
	git_blob *blob;
	gm_lfs_pointer p;
	gm_buf path = GM_BUF_INIT;

	if (mode != GIT_FILEMODE_BLOB && mode != GIT_FILEMODE_BLOB_EXECUTABLE)
		return 0;
	if (git_odb_read_header(&size, &type, c->odb, git_tree_entry_id(entry)) < 0) {
		c->ret = gm_libgit_fail(c->err, GM_ERROR, "cannot read a blob header");
		return -1;
	}
	if (size >= GM_LFS_POINTER_MAX)
		return 0;
	gm_buf_addf(&path, "%s%s", root, git_tree_entry_name(entry));
	if (!gm_lfs_path_selected(path.buf, c->include, c->exclude)) {
		gm_buf_release(&path);
		return 0;
	}
	if (git_blob_lookup(&blob, c->repo, git_tree_entry_id(entry)) < 0) {
		gm_buf_release(&path);
		c->ret = gm_libgit_fail(c->err, GM_ERROR, "cannot read a blob");
		return -1;
	}
	if (gm_lfs_pointer_parse(git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob), &p, NULL) == 0) {
		gm_lfs_object_list_add(c->out, p.oid, p.size, path.buf);
		gm_lfs_pointer_release(&p);
	}
	git_blob_free(blob);
	gm_buf_release(&path);
	return 0;
}

static int scan_tree(git_repository *repo, git_tree *tree, const char *const *include,
		     const char *const *exclude, gm_lfs_object_list *out, gm_error *err)
{
	struct scan_ctx c = { repo, NULL, include, exclude, out, err, 0 };
	int ret;

	if (git_repository_odb(&c.odb, repo) < 0)
		return gm_libgit_fail(err, GM_ERROR, "cannot open the object database");
	ret = git_tree_walk(tree, GIT_TREEWALK_PRE, scan_cb, &c);
	git_odb_free(c.odb);
	if (c.ret)
		return c.ret;
	if (ret < 0)
		return gm_libgit_fail(err, GM_ERROR, "cannot walk the tree");
	return 0;
}

static int open_repo(const char *repo_path, git_repository **repo, gm_error *err)
{
	gm_libgit_use();
	if (git_repository_open_ext(repo, repo_path ? repo_path : ".", 0, NULL) < 0) {
		int ret = gm_error_set(err, GM_ENOENT, "'%s' is not in a git repository",
				       repo_path ? repo_path : ".");
		git_libgit2_shutdown();
		return ret;
	}
	return 0;
}

static void close_repo(git_repository *repo)
{
	git_repository_free(repo);
	git_libgit2_shutdown();
}

static int rev_tree(git_repository *repo, const char *rev, git_tree **tree, gm_error *err)
{
	git_object *obj;
	int ret;

	if (git_revparse_single(&obj, repo, rev ? rev : "HEAD") < 0)
		return gm_error_set(err, GM_ENOENT, "unknown revision '%s'", rev ? rev : "HEAD");
	ret = git_object_peel((git_object **)tree, obj, GIT_OBJECT_TREE);
	git_object_free(obj);
	if (ret < 0)
		return gm_error_set(err, GM_EINVAL, "'%s' does not name a commit or tree", rev ? rev : "HEAD");
	return 0;
}

int gm_lfs_scan_tree(const char *repo_path, const char *rev, const char *const *include,
		     const char *const *exclude, gm_lfs_object_list *out, gm_error *err)
{
	git_repository *repo;
	git_tree *tree;
	int ret = open_repo(repo_path, &repo, err);

	if (ret)
		return ret;
	ret = rev_tree(repo, rev, &tree, err);
	if (!ret) {
		ret = scan_tree(repo, tree, include, exclude, out, err);
		git_tree_free(tree);
	}
	close_repo(repo);
	return ret;
}

/* ------------------------------------------------------------ endpoints */

static char *config_string(git_config *cfg, const char *key)
{
	git_buf b = GIT_BUF_INIT;
	char *s = NULL;

	if (git_config_get_string_buf(&b, cfg, key) == 0)
		s = gm_xstrdup(b.ptr);
	git_buf_dispose(&b);
	return s;
}

/* The common git directory of a local repository named by a path or
 * file:// URL, or NULL when url is not local (or not a repository). */
static char *local_gitdir(const char *url)
{
	git_repository *r;
	char *dir = NULL;
	const char *path = url;

	if (!strncmp(url, "file://", 7))
		path = url + 7;
	else if (strstr(url, "://") || (strchr(url, ':') && !strchr(url, '/')) ||
		 (strchr(url, ':') && strchr(url, ':') < strchr(url, '/')))
		return NULL; /* http(s)://, ssh://, or scp-like host:path */
	if (git_repository_open_ext(&r, path, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) == 0) {
		char *c = gm_xstrdup(git_repository_commondir(r));
		size_t n = strlen(c);

		while (n > 1 && c[n - 1] == '/')
			c[--n] = '\0';
		dir = c;
		git_repository_free(r);
	}
	return dir;
}

static int resolve_in_repo(git_repository *repo, const char *remote_name, gm_lfs_endpoint *out, gm_error *err)
{
	git_config *cfg;
	gm_buf key = GM_BUF_INIT;
	char *url = NULL, *git_url = NULL;
	git_reference *head;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	if (!remote_name)
		remote_name = "origin";
	if (git_repository_config_snapshot(&cfg, repo) < 0)
		return gm_libgit_fail(err, GM_ERROR, "cannot read the repository's configuration");
	gm_buf_addf(&key, "remote.%s.url", remote_name);
	git_url = config_string(cfg, key.buf);
	url = config_string(cfg, "lfs.url");
	if (!url) {
		gm_buf_reset(&key);
		gm_buf_addf(&key, "remote.%s.lfsurl", remote_name);
		url = config_string(cfg, key.buf);
	}
	if (!url && git_url) {
		out->local_gitdir = local_gitdir(git_url);
		if (!out->local_gitdir)
			url = gm_lfs_endpoint_for_url(git_url);
	}
	if (!url && !out->local_gitdir) {
		ret = gm_error_set(err, GM_ENOENT, "no remote '%s' to fetch LFS objects from (set remote.%s.url, "
				   "or lfs.url)", remote_name, remote_name);
		goto out;
	}
	if (url) {
		out->url_owned = url;
		url = NULL;
		ret = gm_hub_token_for_url(out->url_owned, &out->token_owned, err);
		if (ret)
			goto out;
	}
	if (git_repository_head(&head, repo) == 0) {
		if (git_reference_is_branch(head))
			out->ref_owned = gm_xstrdup(git_reference_name(head));
		git_reference_free(head);
	}
	out->remote.url = out->url_owned;
	out->remote.token = out->token_owned;
	out->remote.ref = out->ref_owned;
out:
	if (ret)
		gm_lfs_endpoint_release(out);
	free(url);
	free(git_url);
	gm_buf_release(&key);
	git_config_free(cfg);
	return ret;
}

int gm_lfs_endpoint_resolve(const char *repo_path, const char *remote_name, gm_lfs_endpoint *out, gm_error *err)
{
	git_repository *repo;
	int ret = open_repo(repo_path, &repo, err);

	memset(out, 0, sizeof(*out));
	if (ret)
		return ret;
	ret = resolve_in_repo(repo, remote_name, out, err);
	close_repo(repo);
	return ret;
}

void gm_lfs_endpoint_release(gm_lfs_endpoint *e)
{
	free(e->local_gitdir);
	free(e->url_owned);
	free(e->token_owned);
	free(e->ref_owned);
	memset(e, 0, sizeof(*e));
}


/* ------------------------------------------------------------ git credentials */

struct cred {
	char *username, *password;
};

static void cred_release(struct cred *c)
{
	if (c->password)
		explicit_bzero(c->password, strlen(c->password));
	free(c->username);
	free(c->password);
	c->username = c->password = NULL;
}

/*
 * Runs "git credential ACTION" with url (and, for approve/reject, the
 * credentials) on its standard input; for fill, reads username= and
 * password= back.  Returns 0 when git succeeded (and, for fill, gave both).
 * git itself decides whether to prompt (GIT_TERMINAL_PROMPT, helpers).
 */
static int run_git_credential(const char *action, const char *url, struct cred *c)
{
	int in[2], out[2], status;
	gm_buf req = GM_BUF_INIT, resp = GM_BUF_INIT;
	char chunk[4096];
	ssize_t n;
	pid_t pid;

	if (strpbrk(url, "\n") || (c->username && strpbrk(c->username, "\n")) ||
	    (c->password && strpbrk(c->password, "\n")))
		return -1;
	if (pipe(in) < 0)
		return -1;
	if (pipe(out) < 0) {
		close(in[0]);
		close(in[1]);
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		return -1;
	}
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		execlp("git", "git", "credential", action, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	gm_buf_addf(&req, "url=%s\n", url);
	if (c->username)
		gm_buf_addf(&req, "username=%s\n", c->username);
	if (c->password)
		gm_buf_addf(&req, "password=%s\n", c->password);
	gm_buf_addch(&req, '\n');
	if (gm_write_all(in[1], req.buf, req.len) < 0) {
		/* git died early: its status says so below */
	}
	close(in[1]);
	while ((n = read(out[0], chunk, sizeof(chunk))) > 0)
		gm_buf_add(&resp, chunk, (size_t)n);
	close(out[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	explicit_bzero(req.buf, req.len);
	gm_buf_release(&req);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		gm_buf_release(&resp);
		return -1;
	}
	if (!strcmp(action, "fill")) {
		char *save = NULL, *line;

		cred_release(c);
		for (line = strtok_r(resp.buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			if (!strncmp(line, "username=", 9) && !c->username)
				c->username = gm_xstrdup(line + 9);
			else if (!strncmp(line, "password=", 9) && !c->password)
				c->password = gm_xstrdup(line + 9);
		}
		explicit_bzero(resp.buf, resp.len);
		gm_buf_release(&resp);
		return c->username && c->password ? 0 : -1;
	}
	gm_buf_release(&resp);
	return 0;
}

/*
 * Runs a transfer; after a 401 without credentials of ours, asks git's
 * credential helpers and tries once more with what they give, then
 * tells them whether it worked.
 */
static int transfer_with_credentials(gm_lfs_endpoint *ep, int (*run)(void *ctx, gm_lfs_remote *r,
		gm_lfs_transfer_stats *st, gm_error *err), void *ctx, gm_lfs_transfer_stats *stats, gm_error *err)
{
	struct cred c = { NULL, NULL };
	gm_lfs_remote r = ep->remote;
	gm_error first = GM_ERROR_INIT;
	int ret = run(ctx, &r, stats, err);

	if (!ret || !stats->auth_failed || r.token || r.username || !r.url || strstr(r.url, "@"))
		return ret;
	first = *err;
	if (run_git_credential("fill", r.url, &c)) {
		*err = first;
		return ret;
	}
	r.username = c.username;
	r.password = c.password;
	gm_info("LFS: trying the credentials git gave for %s", r.url);
	ret = run(ctx, &r, stats, err);
	if (!ret)
		run_git_credential("approve", r.url, &c);
	else if (stats->auth_failed)
		run_git_credential("reject", r.url, &c);
	cred_release(&c);
	return ret;
}

struct xfer_ctx {
	const gm_lfs_store *s;
	const gm_lfs_object_list *list;
	const gm_lfs_transfer_opts *opts;
	int upload;
};

static int run_xfer(void *ctx, gm_lfs_remote *r, gm_lfs_transfer_stats *st, gm_error *err)
{
	struct xfer_ctx *x = ctx;

	return x->upload ? gm_lfs_upload(x->s, r, x->list, x->opts, st, err)
			 : gm_lfs_download(x->s, r, x->list, x->opts, st, err);
}

/* ------------------------------------------------------------ local copies */

/* Copies the objects of list between two local stores, verified. */
static int copy_local(const gm_lfs_store *from, const gm_lfs_store *to, const gm_lfs_object_list *list,
		      gm_lfs_transfer_stats *stats, gm_error *err)
{
	size_t i;
	int ret = 0;

	for (i = 0; i < list->n; i++) {
		const gm_lfs_object *o = &list->items[i];
		char *src;
		int r;

		if (gm_lfs_store_has(to, o->oid, o->size)) {
			stats->n_present++;
			continue;
		}
		src = gm_lfs_object_path(from, o->oid);
		if (!gm_is_file(src))
			r = gm_error_set(err, GM_ENOENT, "%s: LFS object %s is not in %s either", o->path ? o->path : "",
					 o->oid, from->objects);
		else
			r = gm_lfs_store_import(to, src, o->oid, o->size, err);
		free(src);
		if (r) {
			stats->n_failed++;
			if (!ret)
				ret = r;
			continue;
		}
		stats->n_transferred++;
		stats->bytes += o->size;
	}
	return ret;
}

/* ------------------------------------------------------------ fetch */

int gm_lfs_fetch(const char *repo_path, const gm_lfs_fetch_opts *opts, gm_lfs_transfer_stats *stats,
		 gm_error *err)
{
	static const gm_lfs_fetch_opts defaults = GM_LFS_FETCH_OPTS_INIT;
	gm_lfs_transfer_stats local_stats;
	gm_lfs_transfer_opts topts;
	gm_lfs_object_list list = { NULL, 0, 0 };
	gm_lfs_endpoint ep;
	gm_lfs_store store;
	git_repository *repo;
	git_tree *tree;
	char *cache = NULL;
	int ret;

	if (!opts)
		opts = &defaults;
	if (!stats)
		stats = &local_stats;
	memset(stats, 0, sizeof(*stats));
	ret = open_repo(repo_path, &repo, err);
	if (ret)
		return ret;
	ret = rev_tree(repo, opts->rev, &tree, err);
	if (ret)
		goto out_repo;
	ret = scan_tree(repo, tree, opts->include, opts->exclude, &list, err);
	git_tree_free(tree);
	if (ret)
		goto out_repo;
	ret = gm_lfs_store_init(&store, git_repository_commondir(repo), err);
	if (ret)
		goto out_repo;
	ret = resolve_in_repo(repo, opts->remote, &ep, err);
	if (ret)
		goto out_store;
	topts = opts->transfer;
	if (!topts.hf_cache) {
		cache = gm_hub_cache_dir();
		topts.hf_cache = cache;
	}
	if (ep.local_gitdir) {
		gm_lfs_store from;

		gm_lfs_store_init(&from, ep.local_gitdir, err);
		ret = copy_local(&from, &store, &list, stats, err);
		gm_lfs_store_release(&from);
	} else {
		struct xfer_ctx x = { &store, &list, &topts, 0 };

		ret = transfer_with_credentials(&ep, run_xfer, &x, stats, err);
	}
	gm_lfs_endpoint_release(&ep);
	if (!ret && opts->checkout && !git_repository_is_bare(repo)) {
		size_t written, skipped;

		ret = gm_lfs_checkout(repo_path, opts->include, opts->exclude, &written, &skipped, err);
	}
out_store:
	gm_lfs_store_release(&store);
out_repo:
	free(cache);
	gm_lfs_object_list_release(&list);
	close_repo(repo);
	return ret;
}

int gm_lfs_fetch_one(const gm_lfs_store *s, const char *oid, unsigned long long size, const char *path,
		     gm_error *err)
{
	gm_lfs_transfer_opts topts = GM_LFS_TRANSFER_OPTS_INIT;
	gm_lfs_transfer_stats stats;
	gm_lfs_object_list list = { NULL, 0, 0 };
	gm_lfs_endpoint ep;
	git_repository *repo;
	char *cache = gm_hub_cache_dir();
	int ret;

	gm_libgit_use();
	if (git_repository_open_ext(&repo, s->gitdir, GIT_REPOSITORY_OPEN_NO_SEARCH | GIT_REPOSITORY_OPEN_BARE,
				    NULL) < 0) {
		ret = gm_libgit_fail(err, GM_ENOENT, s->gitdir);
		git_libgit2_shutdown();
		free(cache);
		return ret;
	}
	gm_lfs_object_list_add(&list, oid, size, path);
	ret = resolve_in_repo(repo, NULL, &ep, err);
	if (!ret) {
		if (ep.local_gitdir) {
			gm_lfs_store from;

			memset(&stats, 0, sizeof(stats));
			gm_lfs_store_init(&from, ep.local_gitdir, err);
			ret = copy_local(&from, s, &list, &stats, err);
			gm_lfs_store_release(&from);
		} else {
			struct xfer_ctx x = { s, &list, &topts, 0 };

			topts.progress = GM_LFS_PROGRESS_NEVER;
			topts.hf_cache = cache;
			ret = transfer_with_credentials(&ep, run_xfer, &x, &stats, err);
		}
		gm_lfs_endpoint_release(&ep);
	}
	gm_lfs_object_list_release(&list);
	close_repo(repo);
	free(cache);
	return ret;
}

/* ------------------------------------------------------------ checkout */

/* 1 when the worktree file holds exactly the pointer bytes. */
static int file_is(const char *path, const void *data, size_t len)
{
	gm_buf b = GM_BUF_INIT;
	struct stat st;
	int same;

	if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size != len)
		return 0;
	same = gm_read_file(path, &b, NULL) == 0 && b.len == len && !memcmp(b.buf, data, len);
	gm_buf_release(&b);
	return same;
}

static int atomic_sink(void *ctx, const void *data, size_t len, gm_error *err)
{
	return gm_atomic_write(ctx, data, len, err);
}

int gm_lfs_checkout(const char *repo_path, const char *const *include, const char *const *exclude,
		    size_t *written, size_t *skipped, gm_error *err)
{
	git_repository *repo;
	git_index *index = NULL;
	gm_lfs_store store;
	size_t i, n, w = 0, sk = 0;
	const char *workdir;
	int ret = open_repo(repo_path, &repo, err), changed = 0;

	if (written)
		*written = 0;
	if (skipped)
		*skipped = 0;
	if (ret)
		return ret;
	workdir = git_repository_workdir(repo);
	if (!workdir) {
		ret = gm_error_set(err, GM_EINVAL, "'%s' is a bare repository: nothing to check out", repo_path);
		goto out;
	}
	ret = gm_lfs_store_init(&store, git_repository_commondir(repo), err);
	if (ret)
		goto out;
	if (git_repository_index(&index, repo) < 0) {
		ret = gm_libgit_fail(err, GM_ERROR, "cannot read the index");
		goto out_store;
	}
	n = git_index_entrycount(index);
	for (i = 0; i < n && !ret; i++) {
		const git_index_entry *e = git_index_get_byindex(index, i);
		gm_atomic_file f;
		gm_error ferr = GM_ERROR_INIT;
		gm_lfs_pointer p;
		git_blob *blob;
		char *path;
		const void *raw;
		size_t len;

		if (!e || git_index_entry_stage(e) != 0 || e->file_size >= GM_LFS_POINTER_MAX ||
		    (e->mode != GIT_FILEMODE_BLOB && e->mode != GIT_FILEMODE_BLOB_EXECUTABLE) ||
		    !gm_lfs_path_selected(e->path, include, exclude))
			continue;
		if (git_blob_lookup(&blob, repo, &e->id) < 0)
			continue;
		raw = git_blob_rawcontent(blob);
		len = (size_t)git_blob_rawsize(blob);
		if (gm_lfs_pointer_parse(raw, len, &p, NULL)) {
			git_blob_free(blob);
			continue;
		}
		path = gm_path_join(workdir, e->path);
		if (!file_is(path, raw, len) || !gm_lfs_store_has(&store, p.oid, p.size)) {
			sk++; /* modified, already checked out, or its object is missing */
		} else if (gm_atomic_open(&f, path, e->mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0777 : 0666, &ferr) ==
			   0) {
			if (gm_lfs_smudge(&store, raw, len, e->path, atomic_sink, &f, &ferr) ||
			    gm_atomic_commit(&f, &ferr)) {
				gm_atomic_abort(&f);
				ret = gm_error_set(err, ferr.code, "%s", ferr.msg);
			} else {
				/* Refresh the entry's stat data: same blob (we just
				 * smudged its pointer), the new file's times and size.
				 * Cleaning the file again would re-hash and copy it. */
				git_index_entry ne = *e;
				struct stat st;

				w++;
				changed = 1;
				ne.path = gm_xstrdup(e->path); /* e is replaced by the add */
				if (lstat(path, &st) == 0) {
					ne.ctime.seconds = (int32_t)st.st_ctim.tv_sec;
					ne.ctime.nanoseconds = (uint32_t)st.st_ctim.tv_nsec;
					ne.mtime.seconds = (int32_t)st.st_mtim.tv_sec;
					ne.mtime.nanoseconds = (uint32_t)st.st_mtim.tv_nsec;
					ne.dev = (uint32_t)st.st_dev;
					ne.ino = (uint32_t)st.st_ino;
					ne.uid = (uint32_t)st.st_uid;
					ne.gid = (uint32_t)st.st_gid;
					ne.file_size = (uint32_t)st.st_size;
					if (git_index_add(index, &ne) < 0)
						ret = gm_libgit_fail(err, GM_ERROR, ne.path);
				}
				free((char *)ne.path);
			}
		} else {
			ret = gm_error_set(err, ferr.code, "%s", ferr.msg);
		}
		free(path);
		gm_lfs_pointer_release(&p);
		git_blob_free(blob);
	}
	if (!ret && changed && git_index_write(index) < 0)
		ret = gm_libgit_fail(err, GM_ERROR, "cannot write the index");
	git_index_free(index);
out_store:
	gm_lfs_store_release(&store);
out:
	close_repo(repo);
	if (written)
		*written = w;
	if (skipped)
		*skipped = sk;
	return ret;
}

/* ------------------------------------------------------------ push */

int gm_lfs_push(const char *repo_path, const char *remote_name, const char *rev, const gm_lfs_transfer_opts *opts,
		gm_lfs_transfer_stats *stats, gm_error *err)
{
	gm_lfs_transfer_stats local_stats;
	gm_lfs_object_list list = { NULL, 0, 0 };
	git_repository *repo;
	git_revwalk *walk = NULL;
	git_object *start;
	gm_lfs_endpoint ep;
	gm_lfs_store store;
	gm_buf glob = GM_BUF_INIT;
	git_oid oid;
	int ret = open_repo(repo_path, &repo, err);

	if (!stats)
		stats = &local_stats;
	memset(stats, 0, sizeof(*stats));
	if (ret)
		return ret;
	if (!remote_name)
		remote_name = "origin";
	if (git_revparse_single(&start, repo, rev ? rev : "HEAD") < 0) {
		ret = gm_error_set(err, GM_ENOENT, "unknown revision '%s'", rev ? rev : "HEAD");
		goto out;
	}
	if (git_revwalk_new(&walk, repo) < 0 || git_revwalk_push(walk, git_object_id(start)) < 0) {
		git_object_free(start);
		ret = gm_libgit_fail(err, GM_ERROR, "cannot walk the history");
		goto out;
	}
	git_object_free(start);
	/* What the remote has already (as far as we know) needs no upload. */
	gm_buf_addf(&glob, "refs/remotes/%s/*", remote_name);
	git_revwalk_hide_glob(walk, glob.buf);
	while (!ret && git_revwalk_next(&oid, walk) == 0) {
		git_commit *commit;
		git_tree *tree;

		if (git_commit_lookup(&commit, repo, &oid) < 0 || git_commit_tree(&tree, commit) < 0) {
			ret = gm_libgit_fail(err, GM_ERROR, "cannot read a commit");
			break;
		}
		ret = scan_tree(repo, tree, NULL, NULL, &list, err);
		git_tree_free(tree);
		git_commit_free(commit);
	}
	if (ret)
		goto out;
	ret = gm_lfs_store_init(&store, git_repository_commondir(repo), err);
	if (ret)
		goto out;
	ret = resolve_in_repo(repo, remote_name, &ep, err);
	if (!ret) {
		if (ep.local_gitdir) {
			gm_lfs_store to;

			gm_lfs_store_init(&to, ep.local_gitdir, err);
			ret = copy_local(&store, &to, &list, stats, err);
			gm_lfs_store_release(&to);
		} else {
			struct xfer_ctx x = { &store, &list, opts, 1 };

			ret = transfer_with_credentials(&ep, run_xfer, &x, stats, err);
		}
		gm_lfs_endpoint_release(&ep);
	}
	gm_lfs_store_release(&store);
out:
	git_revwalk_free(walk);
	gm_buf_release(&glob);
	gm_lfs_object_list_release(&list);
	close_repo(repo);
	return ret;
}

/* ------------------------------------------------------------ install */

static const struct {
	const char *key, *value;
} filter_config[] = {
	{ "filter.lfs.clean", "git-model clean -- %f" },
	{ "filter.lfs.smudge", "git-model smudge -- %f" },
	{ "filter.lfs.process", "git-model filter-process" },
	{ "filter.lfs.required", "true" },
};
#define N_FILTER_CONFIG (sizeof(filter_config) / sizeof(filter_config[0]))

/* The file git writes global settings to: ~/.gitconfig unless only the
 * XDG file exists. */
static char *global_config_path(void)
{
	const char *home = getenv("HOME"), *xdg = getenv("XDG_CONFIG_HOME");
	gm_buf b = GM_BUF_INIT;
	char *dot;

	gm_buf_addf(&b, "%s/.gitconfig", home && *home ? home : ".");
	dot = gm_buf_detach(&b, NULL);
	if (gm_is_file(dot))
		return dot;
	if (xdg && *xdg)
		gm_buf_addf(&b, "%s/git/config", xdg);
	else
		gm_buf_addf(&b, "%s/.config/git/config", home && *home ? home : ".");
	if (gm_is_file(b.buf)) {
		free(dot);
		return gm_buf_detach(&b, NULL);
	}
	gm_buf_release(&b);
	return dot;
}

int gm_lfs_install(enum gm_lfs_install_scope scope, const char *repo_path, int force, int *changed,
		   gm_error *err)
{
	git_repository *repo = NULL;
	git_config *cfg = NULL, *parent = NULL;
	char *path = NULL;
	size_t i;
	int ret = 0, did = 0;

	if (changed)
		*changed = 0;
	if (scope == GM_LFS_INSTALL_LOCAL) {
		ret = open_repo(repo_path, &repo, err);
		if (ret)
			return ret;
		if (git_repository_config(&parent, repo) < 0 ||
		    git_config_open_level(&cfg, parent, GIT_CONFIG_LEVEL_LOCAL) < 0) {
			ret = gm_libgit_fail(err, GM_ERROR, "cannot open the repository's configuration");
			goto out;
		}
	} else {
		gm_libgit_use();
		path = global_config_path();
		if (git_config_open_ondisk(&cfg, path) < 0) {
			ret = gm_libgit_fail(err, GM_ERROR, path);
			goto out;
		}
	}
	/* Check everything before writing anything. */
	for (i = 0; i < N_FILTER_CONFIG && !force; i++) {
		char *have = config_string(cfg, filter_config[i].key);

		if (have && strcmp(have, filter_config[i].value)) {
			ret = gm_error_set(err, GM_EINVAL, "%s is already set to '%s' in the %s configuration; "
					   "'git model install --force' replaces it with '%s'", filter_config[i].key,
					   have, scope == GM_LFS_INSTALL_LOCAL ? "repository's" : "global",
					   filter_config[i].value);
			free(have);
			goto out;
		}
		free(have);
	}
	for (i = 0; i < N_FILTER_CONFIG; i++) {
		char *have = config_string(cfg, filter_config[i].key);

		if (!have || strcmp(have, filter_config[i].value)) {
			if (git_config_set_string(cfg, filter_config[i].key, filter_config[i].value) < 0) {
				free(have);
				ret = gm_libgit_fail(err, GM_EIO, "cannot write the git configuration");
				goto out;
			}
			did = 1;
		}
		free(have);
	}
	if (changed)
		*changed = did;
out:
	git_config_free(cfg);
	git_config_free(parent);
	free(path);
	if (repo)
		close_repo(repo);
	else if (scope != GM_LFS_INSTALL_LOCAL)
		git_libgit2_shutdown();
	return ret;
}

/* ------------------------------------------------------------ track */

int gm_lfs_track(const char *dir, const char *const *patterns, size_t n, size_t *added, gm_error *err)
{
	char *path = gm_path_join(dir, ".gitattributes");
	gm_buf file = GM_BUF_INIT, line = GM_BUF_INIT;
	size_t i, count = 0;
	int ret = 0;

	if (added)
		*added = 0;
	for (i = 0; i < n; i++) {
		const char *p = patterns[i];
		size_t j;

		if (!*p || p[0] == '#' || p[0] == '!')
			ret = gm_error_set(err, GM_EINVAL, "invalid pattern '%s': it must not be empty or start "
					   "with '#' or '!'", p);
		for (j = 0; p[j] && !ret; j++)
			if ((unsigned char)p[j] <= ' ' || p[j] == 0x7f || p[j] == '"' || p[j] == '\\')
				ret = gm_error_set(err, GM_EINVAL, "invalid pattern '%s': whitespace, control "
						   "characters, quotes and backslashes are not supported", p);
		if (ret)
			goto out;
	}
	if (gm_is_file(path)) {
		ret = gm_read_file(path, &file, err);
		if (ret)
			goto out;
	}
	for (i = 0; i < n; i++) {
		const char *s = file.buf;
		int found = 0;

		gm_buf_reset(&line);
		gm_buf_addf(&line, "%s filter=lfs diff=lfs merge=lfs -text", patterns[i]);
		while (*s) { /* look for the exact line */
			size_t l = strcspn(s, "\n");
			size_t t = l;

			if (t && s[t - 1] == '\r')
				t--;
			if (t == line.len && !memcmp(s, line.buf, t))
				found = 1;
			s += l + (s[l] == '\n');
		}
		if (found)
			continue;
		if (file.len && file.buf[file.len - 1] != '\n')
			gm_buf_addch(&file, '\n');
		gm_buf_addf(&file, "%s\n", line.buf);
		count++;
	}
	if (count)
		ret = gm_write_file_atomic(path, file.buf, file.len, 0644, err);
	if (!ret && added)
		*added = count;
out:
	free(path);
	gm_buf_release(&file);
	gm_buf_release(&line);
	return ret;
}
