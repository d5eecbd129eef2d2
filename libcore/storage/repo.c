/*
 * repo.c - libgit2 wrappers and model repositories (see repo.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <git2.h>

#include "base/buf.h"
#include "base/fs.h"
#include "storage/hub.h"
#include "storage/libgit.h"
#include "storage/lfs.h"
#include "storage/lfs-filter.h"
#include "storage/lfs-repo.h"
#include "base/log.h"
#include "storage/registry.h"
#include "storage/repo.h"
#include "storage/repo-internal.h"

struct gm_repo {
	git_repository *git;
	char *workdir;
	char *gitdir;
	gm_lfs_store lfs;
	char *writer_mark;         /* GITDIR/git-model/writer while this process writes; NULL before */
};

/* ------------------------------------------------------------ helpers */

/* Removes a directory tree (or a file); 0, or -1 with errno. */
int gm_repo_remove_tree(const char *path)
{
	return gm_remove_tree(path, NULL) ? -1 : 0;
}

void gm_repo_paths_add(gm_repo_paths *p, const char *s)
{
	if (p->n == p->alloc) {
		p->alloc = p->alloc ? 2 * p->alloc : 32;
		p->v = gm_xrealloc(p->v, p->alloc * sizeof(*p->v));
	}
	p->v[p->n++] = gm_xstrdup(s);
}

void gm_repo_paths_release(gm_repo_paths *p)
{
	size_t i;

	for (i = 0; i < p->n; i++)
		free(p->v[i]);
	free(p->v);
	memset(p, 0, sizeof(*p));
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Regular files and symbolic links under root (relative paths, sorted),
 * skipping .git. */
static int list_files_rec(const char *root, const char *rel, gm_repo_paths *out, gm_error *err)
{
	char *dir = rel[0] ? gm_path_join(root, rel) : gm_xstrdup(root);
	DIR *d = opendir(dir);
	struct dirent *de;
	int ret = 0;

	if (!d) {
		ret = gm_error_errno(err, "cannot read directory %s", dir);
		free(dir);
		return ret;
	}
	while (!ret && (de = readdir(d))) {
		char *childrel, *child;
		struct stat st;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    (!rel[0] && !strcmp(de->d_name, ".git")))
			continue;
		childrel = rel[0] ? gm_path_join(rel, de->d_name) : gm_xstrdup(de->d_name);
		child = gm_path_join(root, childrel);
		if (lstat(child, &st))
			ret = gm_error_errno(err, "cannot stat %s", child);
		else if (S_ISDIR(st.st_mode))
			ret = list_files_rec(root, childrel, out, err);
		else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode))
			gm_repo_paths_add(out, childrel);
		else
			gm_warn("skipping %s: not a regular file", child);
		free(child);
		free(childrel);
	}
	closedir(d);
	free(dir);
	return ret;
}

int gm_repo_list_files(const char *root, gm_repo_paths *out, gm_error *err)
{
	int ret = list_files_rec(root, "", out, err);

	if (!ret)
		qsort(out->v, out->n, sizeof(*out->v), cmp_str);
	return ret;
}

/* Copies a regular file (mode kept) or a symbolic link; dst must not exist. */
int gm_repo_copy_file(const char *src, const char *dst, gm_error *err)
{
	return gm_copy_file(src, dst, err);
}

/* An absolute version of path (relative to the current directory), without
 * trailing slashes; the file need not exist. */
char *gm_repo_absolute(const char *path)
{
	gm_buf b = GM_BUF_INIT;
	char cwd[PATH_MAX];

	if (path[0] != '/') {
		if (!getcwd(cwd, sizeof(cwd)))
			strcpy(cwd, ".");
		gm_buf_addf(&b, "%s/", cwd);
	}
	gm_buf_adds(&b, path);
	while (b.len > 1 && b.buf[b.len - 1] == '/')
		b.buf[--b.len] = '\0';
	return gm_buf_detach(&b, NULL);
}

/* ------------------------------------------------------------ repositories */

int gm_repo_global_init(gm_error *err)
{
	static int done;
	int ret;

	if (done)
		return 0;
	if ((ret = gm_libgit_init(err)))
		return ret;
	/* the in-process lfs filter, so that libgit2 cleans and smudges as
	 * git with git-lfs does */
	if (gm_lfs_filter_register(err))
		return err ? err->code : GM_ERROR;
	done = 1;
	return 0;
}

static int wrap(git_repository *git, gm_repo **out, gm_error *err)
{
	gm_repo *r = gm_xcalloc(1, sizeof(*r));
	const char *wd = git_repository_workdir(git);
	int ret;

	r->git = git;
	if (!wd) {
		gm_repo_close(r);
		return gm_error_set(err, GM_EINVAL, "%s is a bare repository; a model needs a work tree",
				    git_repository_path(git));
	}
	r->workdir = gm_repo_absolute(wd);
	r->gitdir = gm_repo_absolute(git_repository_commondir(git));
	if ((ret = gm_lfs_store_init(&r->lfs, r->gitdir, err))) {
		gm_repo_close(r);
		return ret;
	}
	*out = r;
	return 0;
}

int gm_repo_init(const char *workdir, gm_repo **out, gm_error *err)
{
	git_repository_init_options o;
	git_repository *git;
	int ret;

	*out = NULL;
	if ((ret = gm_repo_global_init(err)))
		return ret;
	git_repository_init_options_init(&o, GIT_REPOSITORY_INIT_OPTIONS_VERSION);
	o.flags = GIT_REPOSITORY_INIT_MKPATH | GIT_REPOSITORY_INIT_NO_REINIT;
	o.initial_head = "main";
	if (git_repository_init_ext(&git, workdir, &o) < 0)
		return gm_libgit_error(err, GM_EIO, "cannot create a repository in %s", workdir);
	return wrap(git, out, err);
}

int gm_repo_open(const char *path, gm_repo **out, gm_error *err)
{
	git_repository *git;
	int ret;

	*out = NULL;
	if ((ret = gm_repo_global_init(err)))
		return ret;
	if (git_repository_open_ext(&git, path, 0, NULL) < 0)
		return gm_libgit_error(err, GM_ENOENT, "%s is not a git repository", path);
	return wrap(git, out, err);
}

int gm_repo_is_toplevel(const char *dir)
{
	gm_repo *r = NULL;
	char *real;
	int yes;

	if (gm_repo_global_init(NULL) || gm_repo_open(dir, &r, NULL))
		return 0;
	real = realpath(dir, NULL);
	yes = real && !strcmp(real, gm_repo_workdir(r));
	free(real);
	gm_repo_close(r);
	return yes;
}

void gm_repo_close(gm_repo *r)
{
	if (!r)
		return;
	gm_repo_unmark_writer(r->writer_mark);
	if (r->git)
		git_repository_free(r->git);
	gm_lfs_store_release(&r->lfs);
	free(r->workdir);
	free(r->gitdir);
	free(r);
}

const char *gm_repo_workdir(const gm_repo *r) { return r->workdir; }
const char *gm_repo_gitdir(const gm_repo *r) { return r->gitdir; }
struct git_repository *gm_repo_git(gm_repo *r) { return r->git; }
const gm_lfs_store *gm_repo_lfs(gm_repo *r) { return &r->lfs; }

int gm_repo_resolve(gm_repo *r, const char *rev, char out[GM_REPO_OID_HEXLEN + 1], gm_error *err)
{
	git_object *obj = NULL, *commit = NULL;
	gm_buf b = GM_BUF_INIT;
	int ret = 0;

	if (!rev)
		rev = "HEAD";
	if (git_revparse_single(&obj, r->git, rev) < 0) {
		/* a branch of origin that has no local branch */
		gm_buf_addf(&b, "refs/remotes/origin/%s", rev);
		if (git_revparse_single(&obj, r->git, b.buf) < 0) {
			gm_buf_release(&b);
			if (!strcmp(rev, "HEAD"))
				return gm_error_set(err, GM_ENOENT, "%s has no commit yet", r->workdir);
			return gm_error_set(err, GM_ENOENT, "unknown revision '%s' in %s (fetch it first: "
					    "'git model fetch NAME %s')", rev, r->workdir, rev);
		}
	}
	gm_buf_release(&b);
	if (git_object_peel(&commit, obj, GIT_OBJECT_COMMIT) < 0)
		ret = gm_libgit_error(err, GM_EINVAL, "'%s' does not name a commit", rev);
	else
		git_oid_tostr(out, GM_REPO_OID_HEXLEN + 1, git_object_id(commit));
	git_object_free(commit);
	git_object_free(obj);
	return ret;
}

/* ------------------------------------------------------------ commits */

/* "SECONDS [+-]HHMM" (git's internal format, optionally with '@'). */
static int parse_git_date(const char *s, git_time_t *t, int *offset)
{
	char *end;
	long long secs;
	long tz;

	if (*s == '@')
		s++;
	secs = strtoll(s, &end, 10);
	if (end == s || *end != ' ')
		return -1;
	s = end + 1;
	tz = strtol(s, &end, 10);
	if (end == s || *end || (s[0] != '+' && s[0] != '-'))
		return -1;
	*t = (git_time_t)secs;
	*offset = (int)((tz / 100) * 60 + (tz % 100));
	return 0;
}

static int make_signature(git_repository *git, const char *who, git_signature **out, gm_error *err)
{
	char key[64];
	const char *name, *email, *date;
	git_signature *def = NULL;
	git_time_t t;
	int offset, rc;

	snprintf(key, sizeof(key), "GIT_%s_NAME", who);
	name = getenv(key);
	snprintf(key, sizeof(key), "GIT_%s_EMAIL", who);
	email = getenv(key);
	snprintf(key, sizeof(key), "GIT_%s_DATE", who);
	date = getenv(key);
	if ((!name || !email) && git_signature_default(&def, git) == 0) {
		if (!name)
			name = def->name;
		if (!email)
			email = def->email;
	}
	if (!name || !*name)
		name = "git-model";
	if (!email)
		email = "git-model@localhost";
	if (date && parse_git_date(date, &t, &offset) == 0)
		rc = git_signature_new(out, name, email, t, offset);
	else
		rc = git_signature_now(out, name, email);
	git_signature_free(def);
	if (rc < 0)
		return gm_libgit_error(err, GM_EINVAL, "cannot make a signature for '%s <%s>'", name, email);
	return 0;
}

static int is_lfs_path(git_repository *git, const char *rel)
{
	const char *v = NULL;

	/* the attribute cache follows .gitattributes edits by mtime */
	if (git_attr_get(&v, git, 0, rel, "filter") < 0)
		return 0;
	return git_attr_value(v) == GIT_ATTR_VALUE_STRING && !strcmp(v, "lfs");
}

static void entry_from_stat(git_index_entry *e, const struct stat *st, const char *rel)
{
	memset(e, 0, sizeof(*e));
	e->ctime.seconds = (int32_t)st->st_ctim.tv_sec;
	e->ctime.nanoseconds = (uint32_t)st->st_ctim.tv_nsec;
	e->mtime.seconds = (int32_t)st->st_mtim.tv_sec;
	e->mtime.nanoseconds = (uint32_t)st->st_mtim.tv_nsec;
	e->dev = (uint32_t)st->st_dev;
	e->ino = (uint32_t)st->st_ino;
	e->mode = (st->st_mode & 0111) ? GIT_FILEMODE_BLOB_EXECUTABLE : GIT_FILEMODE_BLOB;
	e->uid = (uint32_t)st->st_uid;
	e->gid = (uint32_t)st->st_gid;
	e->file_size = (uint32_t)st->st_size;
	e->path = rel;
}

/* Stages one work-tree path: LFS-cleaned when its filter is lfs (with the
 * pointer known, when given and of the file's size: nothing is copied). */
static int stage_path(gm_repo *r, git_index *idx, const char *rel, const gm_lfs_pointer *known, gm_error *err)
{
	char *full = gm_path_join(r->workdir, rel);
	struct stat st;
	int ret = 0;

	if (lstat(full, &st)) {
		if (errno == ENOENT) {
			if (git_index_remove_bypath(idx, rel) < 0)
				ret = gm_libgit_error(err, GM_ERROR, "cannot remove %s from the index", rel);
		} else {
			ret = gm_error_errno(err, "cannot stat %s", full);
		}
	} else if (S_ISREG(st.st_mode) && is_lfs_path(r->git, rel)) {
		gm_lfs_pointer p = GM_LFS_POINTER_INIT;
		gm_buf text = GM_BUF_INIT;
		git_index_entry e;

		/* Done here rather than through the filter so that the pointer
		 * and the stat data recorded in the index come from the same
		 * file state (git add does the same). */
		if (known && known->size == (unsigned long long)st.st_size && !known->n_ext) {
			memcpy(p.oid, known->oid, sizeof(p.oid));
			p.size = known->size;
		} else {
			ret = gm_lfs_clean_file(&r->lfs, full, &p, err);
		}
		if (!ret) {
			gm_lfs_pointer_format(&p, &text);
			entry_from_stat(&e, &st, rel);
			if (git_blob_create_from_buffer(&e.id, r->git, text.buf, text.len) < 0 ||
			    git_index_add(idx, &e) < 0)
				ret = gm_libgit_error(err, GM_EIO, "cannot stage %s", rel);
		} else {
			gm_error_prefix(err, "%s", rel);
		}
		gm_lfs_pointer_release(&p);
		gm_buf_release(&text);
	} else if (git_index_add_bypath(idx, rel) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot stage %s", rel);
	}
	free(full);
	return ret;
}

/* ------------------------------------------------------------ stale locks */

/*
 * git's lock files (index.lock, HEAD.lock, refs/.../X.lock) tell a process
 * killed while writing from a live one only by asking the user.  Before
 * its first write on a repository, this process records itself in
 * GITDIR/git-model/writer ("PID START", START its start time in clock
 * ticks from /proc/PID/stat, so a reused PID is not taken for it), and
 * removes the record when it closes the repository.  The next writer that
 * finds a record of a process that is gone removes the lock files, as
 * that process left them.  A stock git leaves no record, so its locks are
 * never cleared on its account; the one risk is a stock git writing at the
 * very moment a git-model writer starts after a killed one (git holds a
 * lock for milliseconds), which then fails with git's usual lock error.
 */
static unsigned long long proc_start(long pid)
{
	char path[64], buf[1024], *p;
	unsigned long long start = 0;
	size_t n;
	int field;
	FILE *fp;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	if (!(fp = fopen(path, "r")))
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	/* after the command name in parentheses: field 3 on; the start time is field 22 */
	if (!(p = strrchr(buf, ')')))
		return 0;
	for (field = 2; *p && field < 22; p++)
		if (*p == ' ')
			field++;
	if (field == 22)
		start = strtoull(p, NULL, 10);
	return start;
}

static int unlink_git_lock(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	size_t n = strlen(path);

	(void)st;
	(void)ftw;
	if (flag == FTW_F && n > 5 && !strcmp(path + n - 5, ".lock"))
		unlink(path);
	return 0;
}

void gm_repo_unlink_locks(const char *dir)
{
	nftw(dir, unlink_git_lock, 16, FTW_PHYS);
}

static void remove_stale_locks(const char *gitdir, const char *mark)
{
	static const char *const top[] = { "index.lock", "HEAD.lock", "config.lock", "packed-refs.lock",
					   "ORIG_HEAD.lock", "FETCH_HEAD.lock" };
	long pid = 0;
	unsigned long long start = 0;
	size_t i;
	char *refs;
	FILE *fp = fopen(mark, "r");

	if (!fp)
		return;
	if (fscanf(fp, "%ld %llu", &pid, &start) != 2)
		pid = 0;
	fclose(fp);
	if (pid <= 0 || (proc_start(pid) == start && start))
		return; /* unreadable, or its writer is still running */
	gm_info("%s: removing the lock files left by git-model process %ld, which was killed while writing",
		gitdir, pid);
	for (i = 0; i < sizeof(top) / sizeof(top[0]); i++) {
		char *p = gm_path_join(gitdir, top[i]);

		unlink(p);
		free(p);
	}
	refs = gm_path_join(gitdir, "refs");
	gm_repo_unlink_locks(refs);
	free(refs);
	unlink(mark);
}

char *gm_repo_mark_writer(const char *gitdir)
{
	char *dir, *mark, line[64];
	long pid = (long)getpid();

	dir = gm_path_join(gitdir, "git-model");
	mark = gm_path_join(dir, "writer");
	remove_stale_locks(gitdir, mark);
	/* and the temporary of a mark whose writer was killed while writing it (.writer.tmp-XXXXXX) */
	gm_atomic_remove_stale(mark);
	snprintf(line, sizeof(line), "%ld %llu\n", pid, proc_start(pid));
	if (gm_mkdir_p(dir, 0777, NULL) || gm_write_file_atomic(mark, line, strlen(line), 0644, NULL)) {
		free(mark); /* best effort: without a mark, only the user can clear a lock */
		mark = NULL;
	}
	free(dir);
	return mark;
}

void gm_repo_unmark_writer(char *mark)
{
	if (mark)
		unlink(mark);
	free(mark);
}

/* Called before each write through libgit2 (see above); the first one marks the repository. */
void gm_repo_write_begin(gm_repo *r)
{
	if (!r->writer_mark) {
		r->writer_mark = gm_repo_mark_writer(r->gitdir);
		/* as the lock files above: what killed cleans left in lfs/tmp */
		gm_lfs_remove_stale_tmp(&r->lfs);
	}
}

static int commit_paths(gm_repo *r, const char *const *paths, const gm_lfs_pointer *known, size_t n,
			const char *message, int skip_same, char out[GM_REPO_OID_HEXLEN + 1], int *made,
			gm_error *err)
{
	git_index *idx = NULL;
	git_oid tree_id, commit_id, parent_id;
	git_tree *tree = NULL;
	git_commit *parent = NULL;
	git_signature *author = NULL, *committer = NULL;
	gm_repo_paths all = { NULL, 0, 0 };
	const git_commit *parents[1];
	size_t i;
	int ret = 0, has_parent;

	gm_repo_write_begin(r);
	if (git_repository_index(&idx, r->git) < 0)
		return gm_libgit_error(err, GM_EIO, "cannot read the index of %s", r->workdir);
	if (n == 0) {
		if ((ret = gm_repo_list_files(r->workdir, &all, err)))
			goto out;
		paths = (const char *const *)all.v;
		n = all.n;
	}
	for (i = 0; i < n && !ret; i++)
		ret = stage_path(r, idx, paths[i], known ? &known[i] : NULL, err);
	if (ret)
		goto out;
	has_parent = git_reference_name_to_id(&parent_id, r->git, "HEAD") == 0;
	if (has_parent && git_commit_lookup(&parent, r->git, &parent_id) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot read HEAD of %s", r->workdir);
		goto out;
	}
	if ((ret = make_signature(r->git, "AUTHOR", &author, err)) ||
	    (ret = make_signature(r->git, "COMMITTER", &committer, err)))
		goto out;
	if (git_index_write_tree(&tree_id, idx) < 0 || git_tree_lookup(&tree, r->git, &tree_id) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot write the tree of %s", r->workdir);
		goto out;
	}
	/* The index first, then the branch: moving the branch is the commit
	 * point, and if it fails the index merely holds staged changes. */
	if (git_index_write(idx) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot write the index of %s", r->workdir);
		goto out;
	}
	parents[0] = parent;
	if (skip_same && has_parent && !git_oid_cmp(&tree_id, git_commit_tree_id(parent))) {
		/* nothing new: HEAD has these files as they are */
		if (out)
			git_oid_tostr(out, GM_REPO_OID_HEXLEN + 1, &parent_id);
		goto out;
	}
	if (git_commit_create(&commit_id, r->git, "HEAD", author, committer, NULL, message, tree,
			      has_parent ? 1 : 0, parents) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot commit in %s", r->workdir);
		goto out;
	}
	if (made)
		*made = 1;
	if (out)
		git_oid_tostr(out, GM_REPO_OID_HEXLEN + 1, &commit_id);
out:
	gm_repo_paths_release(&all);
	git_signature_free(author);
	git_signature_free(committer);
	git_commit_free(parent);
	git_tree_free(tree);
	git_index_free(idx);
	return ret;
}

int gm_repo_commit_files(gm_repo *r, const char *const *paths, size_t n, const char *message,
			 char out[GM_REPO_OID_HEXLEN + 1], gm_error *err)
{
	return commit_paths(r, paths, NULL, n, message, 0, out, NULL, err);
}

int gm_repo_commit_cleaned(gm_repo *r, const char *const *paths, const gm_lfs_pointer *pointers, size_t n,
			   const char *message, char out[GM_REPO_OID_HEXLEN + 1], int *made, gm_error *err)
{
	*made = 0;
	if (!n)
		return gm_error_set(err, GM_EINVAL, "no file to commit");
	return commit_paths(r, paths, pointers, n, message, 1, out, made, err);
}

/*
 * Space first, then names: every byte is stored (the files written, their
 * LFS objects) before anything gets a name that git, the user or another
 * command sees, so a full disk or an error fails with nothing changed, and
 * a kill leaves at most temporaries (removed by the next run) and complete
 * objects that nothing uses yet (which gc removes, or the next run reuses).
 */
int gm_repo_commit_atomic(gm_repo *r, gm_atomic_file *files, size_t n, const char *message,
			  char out[GM_REPO_OID_HEXLEN + 1], int *made, gm_error *err)
{
	size_t wlen = strlen(r->workdir), i, done = 0, renamed = 0;
	gm_lfs_pointer *ptrs = gm_xcalloc(n ? n : 1, sizeof(*ptrs));
	char **rel = gm_xcalloc(n ? n : 1, sizeof(*rel));
	char *added = gm_xcalloc(n ? n : 1, 1); /* objects stored by this call */
	int ret = 0;

	*made = 0;
	for (i = 0; i < n && !ret; i++) {
		if (strncmp(files[i].path, r->workdir, wlen) || files[i].path[wlen] != '/')
			ret = gm_error_set(err, GM_EINVAL, "%s is not in the work tree %s", files[i].path, r->workdir);
		else
			rel[i] = gm_xstrdup(files[i].path + wlen + 1); /* files[i] is freed once renamed */
	}
	gm_repo_write_begin(r); /* also removes what killed cleans left in lfs/tmp */
	for (i = 0; i < n && !ret; i++) {
		char hex[GM_LFS_OID_HEXLEN + 1];
		unsigned long long size;

		if (!is_lfs_path(r->git, rel[i]))
			continue;
		if ((ret = gm_lfs_hash_file(files[i].tmp_path, hex, &size, err)))
			break;
		if (!gm_lfs_store_has(&r->lfs, hex, size)) {
			gm_lfs_pointer p = GM_LFS_POINTER_INIT;

			if ((ret = gm_lfs_clean_file(&r->lfs, files[i].tmp_path, &p, err))) {
				gm_error_prefix(err, "%s", rel[i]);
				break;
			}
			gm_lfs_pointer_release(&p);
			added[i] = 1;
		}
		memcpy(ptrs[i].oid, hex, sizeof(ptrs[i].oid));
		ptrs[i].size = size;
	}
	/* the names: each file fsynced and renamed into the work tree */
	for (; done < n && !ret; done++)
		if (!(ret = gm_atomic_commit(&files[done], err)))
			renamed++;
	if (!ret)
		ret = commit_paths(r, (const char *const *)rel, ptrs, n, message, 1, out, made, err);
	if (ret && !renamed) {
		/* nothing renamed: the objects stored for these files are used by nothing */
		for (i = 0; i < n; i++)
			if (added[i]) {
				char *obj = gm_lfs_object_path(&r->lfs, ptrs[i].oid);
				unlink(obj);
				free(obj);
			}
	}
	for (i = done; i < n; i++)
		gm_atomic_abort(&files[i]);
	for (i = 0; i < n; i++)
		free(rel[i]);
	free(added);
	free(rel);
	free(ptrs);
	return ret;
}

/* ------------------------------------------------------------ reading without a checkout */

static int commit_tree(gm_repo *r, const char *rev, git_tree **tree, char hex[GM_REPO_OID_HEXLEN + 1],
		       gm_error *err)
{
	git_oid id;
	git_commit *c;
	int ret;

	if ((ret = gm_repo_resolve(r, rev, hex, err)))
		return ret;
	git_oid_fromstr(&id, hex);
	if (git_commit_lookup(&c, r->git, &id) < 0)
		return gm_libgit_error(err, GM_EIO, "cannot read commit %s", hex);
	if (git_commit_tree(tree, c) < 0)
		ret = gm_libgit_error(err, GM_EIO, "cannot read the tree of %s", hex);
	git_commit_free(c);
	return ret;
}

/* For a blob that is an LFS pointer: the object's path, or GM_ENOENT. */
static int pointer_object(gm_repo *r, const git_blob *blob, const char *path, const char *rev, int *is_ptr,
			  char **object_path, gm_error *err)
{
	const void *data = git_blob_rawcontent(blob);
	size_t len = (size_t)git_blob_rawsize(blob);
	gm_lfs_pointer p = GM_LFS_POINTER_INIT;
	int ret = 0;

	*is_ptr = 0;
	if (len >= GM_LFS_POINTER_MAX || gm_lfs_pointer_parse(data, len, &p, NULL))
		return 0;
	*is_ptr = 1;
	if (!gm_lfs_store_has(&r->lfs, p.oid, p.size))
		ret = gm_error_set(err, GM_ENOENT, "%s at %s: its LFS object %s (%llu bytes) is not in the "
				   "local store of %s; fetch it with 'git model fetch NAME %s'", path, rev,
				   p.oid, p.size, r->workdir, rev);
	else
		*object_path = gm_lfs_object_path(&r->lfs, p.oid);
	gm_lfs_pointer_release(&p);
	return ret;
}

int gm_repo_read_file(gm_repo *r, const char *rev, const char *path, gm_buf *content, char **object_path,
		      gm_error *err)
{
	char hex[GM_REPO_OID_HEXLEN + 1], *obj = NULL;
	git_tree *tree = NULL;
	git_tree_entry *e = NULL;
	git_blob *blob = NULL;
	int ret, is_ptr;

	if (object_path)
		*object_path = NULL;
	if ((ret = commit_tree(r, rev, &tree, hex, err)))
		return ret;
	if (git_tree_entry_bypath(&e, tree, path) < 0) {
		ret = gm_error_set(err, GM_ENOENT, "%s does not exist at %s", path, rev ? rev : "HEAD");
		goto out;
	}
	if (git_tree_entry_type(e) != GIT_OBJECT_BLOB) {
		ret = gm_error_set(err, GM_EINVAL, "%s is not a file at %s", path, rev ? rev : "HEAD");
		goto out;
	}
	if (git_blob_lookup(&blob, r->git, git_tree_entry_id(e)) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot read %s at %s", path, hex);
		goto out;
	}
	if ((ret = pointer_object(r, blob, path, rev ? rev : "HEAD", &is_ptr, &obj, err)))
		goto out;
	if (!is_ptr)
		gm_buf_add(content, git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob));
	else if (object_path)
		*object_path = obj, obj = NULL;
	else
		ret = gm_read_file(obj, content, err);
out:
	free(obj);
	git_blob_free(blob);
	git_tree_entry_free(e);
	git_tree_free(tree);
	return ret;
}

struct view_ctx {
	gm_repo *r;
	const char *root;
	const char *rev;
	gm_error *err;
	int ret;
};

static int view_entry(const char *dir, const git_tree_entry *e, void *payload)
{
	struct view_ctx *v = payload;
	gm_buf rel = GM_BUF_INIT;
	char *full = NULL, *obj = NULL;
	git_blob *blob = NULL;
	git_filemode_t mode = git_tree_entry_filemode(e);
	int is_ptr, fd;

	gm_buf_addf(&rel, "%s%s", dir, git_tree_entry_name(e));
	full = gm_path_join(v->root, rel.buf);
	if (mode == GIT_FILEMODE_TREE) {
		if (mkdir(full, 0755))
			v->ret = gm_error_errno(v->err, "cannot create %s", full);
		goto out;
	}
	if (mode == GIT_FILEMODE_COMMIT)
		goto out; /* submodules are not part of a model */
	if (git_blob_lookup(&blob, v->r->git, git_tree_entry_id(e)) < 0) {
		v->ret = gm_libgit_error(v->err, GM_EIO, "cannot read %s", rel.buf);
		goto out;
	}
	if (mode == GIT_FILEMODE_LINK) {
		gm_buf t = GM_BUF_INIT;
		gm_buf_add(&t, git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob));
		if (symlink(t.buf, full))
			v->ret = gm_error_errno(v->err, "cannot create link %s", full);
		gm_buf_release(&t);
		goto out;
	}
	if ((v->ret = pointer_object(v->r, blob, rel.buf, v->rev, &is_ptr, &obj, v->err)))
		goto out;
	if (is_ptr) {
		if (symlink(obj, full))
			v->ret = gm_error_errno(v->err, "cannot create link %s", full);
		goto out;
	}
	fd = open(full, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
		  mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0755 : 0644);
	if (fd < 0 || gm_write_all(fd, git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob)) ||
	    close(fd))
		v->ret = gm_error_errno(v->err, "cannot write %s", full);
out:
	git_blob_free(blob);
	free(obj);
	free(full);
	gm_buf_release(&rel);
	return v->ret ? -1 : 0;
}

/* 1 when every symbolic link under dir resolves (a gc may have removed an
 * object a cached view points to). */
static int links_resolve(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int ok = 1;

	if (!d)
		return 0;
	while (ok && (de = readdir(d))) {
		char *p;
		struct stat st;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		p = gm_path_join(dir, de->d_name);
		if (lstat(p, &st))
			ok = 0;
		else if (S_ISLNK(st.st_mode))
			ok = stat(p, &st) == 0;
		else if (S_ISDIR(st.st_mode))
			ok = links_resolve(p);
		free(p);
	}
	closedir(d);
	return ok;
}

int gm_repo_view(gm_repo *r, const char *commit, char **dir, gm_error *err)
{
	char hex[GM_REPO_OID_HEXLEN + 1], *views, *final, *tmp;
	git_tree *tree = NULL;
	struct view_ctx v;
	int ret;

	*dir = NULL;
	if ((ret = commit_tree(r, commit, &tree, hex, err)))
		return ret;
	views = gm_path_join(r->gitdir, "git-model/views");
	final = gm_path_join(views, hex);
	if (gm_is_dir(final) && links_resolve(final)) {
		*dir = final;
		goto out;
	}
	if ((ret = gm_mkdir_p(views, 0755, err)))
		goto out_final;
	tmp = gm_path_join(views, ".tmp-XXXXXX");
	if (!mkdtemp(tmp)) {
		ret = gm_error_errno(err, "cannot create a directory in %s", views);
		free(tmp);
		goto out_final;
	}
	chmod(tmp, 0755); /* mkdtemp makes it private; a view is as readable as the repository */
	v.r = r;
	v.root = tmp;
	v.rev = commit;
	v.err = err;
	v.ret = 0;
	if (git_tree_walk(tree, GIT_TREEWALK_PRE, view_entry, &v) < 0 && !v.ret)
		v.ret = gm_libgit_error(err, GM_EIO, "cannot walk the tree of %s", hex);
	ret = v.ret;
	if (!ret && gm_is_dir(final)) {
		/* stale (dangling links) or made by another process meanwhile:
		 * move it aside and replace it */
		char *old = gm_path_join(views, ".old-XXXXXX");
		if (mkdtemp(old) && !rename(final, old))
			gm_repo_remove_tree(old);
		else
			rmdir(old);
		free(old);
	}
	if (!ret && rename(tmp, final) && !gm_is_dir(final))
		ret = gm_error_errno(err, "cannot rename %s to %s", tmp, final);
	gm_repo_remove_tree(tmp); /* nothing left after a successful rename */
	free(tmp);
	if (!ret) {
		*dir = final;
		goto out;
	}
out_final:
	free(final);
out:
	free(views);
	git_tree_free(tree);
	return ret;
}

/* ------------------------------------------------------------ models by name */

int gm_repo_models_dir(char **out, gm_error *err)
{
	const char *home = getenv("GIT_MODEL_HOME"), *data = getenv("XDG_DATA_HOME"), *h = getenv("HOME");
	gm_buf b = GM_BUF_INIT;

	if (home && *home) {
		*out = gm_repo_absolute(home);
		return 0;
	}
	if (data && *data == '/') {
		gm_buf_addf(&b, "%s/git-model/models", data);
	} else {
		if (!h || !*h)
			return gm_error_set(err, GM_EINVAL, "cannot locate the models directory: HOME is not "
					    "set (set GIT_MODEL_HOME)");
		gm_buf_addf(&b, "%s/.local/share/git-model/models", h);
	}
	*out = gm_buf_detach(&b, NULL);
	return 0;
}

void gm_repo_split_spec(const char *spec, char **name, char **rev)
{
	const char *at = strchr(spec, '@');

	if (!at) {
		*name = gm_xstrdup(spec);
		*rev = NULL;
		return;
	}
	*name = gm_xstrdup(spec);
	(*name)[at - spec] = '\0';
	*rev = gm_xstrdup(at + 1);
}

int gm_repo_open_model(gm_registry *reg, const char *name, gm_registry_model *entry, gm_repo **out,
		       gm_error *err)
{
	int ret;

	*out = NULL;
	if ((ret = gm_registry_get_model(reg, name, entry, err)))
		return ret;
	if (!gm_is_dir(entry->path)) {
		ret = gm_error_set(err, GM_ENOENT, "model '%s' is registered at %s, which does not exist any "
				   "more ('git model rm %s' forgets it)", name, entry->path, name);
	} else if ((ret = gm_repo_open(entry->path, out, err))) {
		gm_error_prefix(err, "model '%s'", name);
	}
	if (ret)
		gm_registry_model_release(entry);
	return ret;
}

int gm_repo_open_spec(const char *spec, gm_repo **out, char commit[GM_REPO_OID_HEXLEN + 1], gm_error *err)
{
	gm_registry *reg = NULL;
	gm_registry_model m = { 0 };
	char *name, *rev;
	int ret;

	*out = NULL;
	gm_repo_split_spec(spec, &name, &rev);
	if (rev && !*rev)
		ret = gm_error_set(err, GM_EINVAL, "'%s': a revision is expected after '@'", spec);
	else if (!(ret = gm_registry_check_name(name, err)) && !(ret = gm_registry_open(NULL, &reg, err)) &&
		 !(ret = gm_repo_open_model(reg, name, &m, out, err)) && (ret = gm_repo_resolve(*out, rev, commit, err))) {
		gm_repo_close(*out);
		*out = NULL;
	}
	gm_registry_model_release(&m);
	gm_registry_close(reg);
	free(name);
	free(rev);
	return ret;
}

/* ------------------------------------------------------------ new model directories */

int gm_repo_dest_init(gm_repo_dest *d, const char *name_or_path, const char *default_name, gm_error *err)
{
	const char *slash;
	char *models = NULL;
	int ret;

	memset(d, 0, sizeof(*d));
	d->lock_fd = -1;
	if (name_or_path && strchr(name_or_path, '/')) {
		d->path = gm_repo_absolute(name_or_path);
		slash = strrchr(d->path, '/');
		d->name = gm_xstrdup(slash + 1);
		d->parent = gm_xstrdup(d->path);
		d->parent[slash == d->path ? 1 : slash - d->path] = '\0';
	} else {
		d->name = gm_xstrdup(name_or_path ? name_or_path : default_name);
		if ((ret = gm_repo_models_dir(&models, err)))
			goto fail;
		d->parent = models;
		d->path = gm_path_join(models, d->name);
	}
	if ((ret = gm_registry_check_name(d->name, err)))
		goto fail;
	{
		gm_buf b = GM_BUF_INIT;
		gm_buf_addf(&b, "%s/.%s.partial", d->parent, d->name);
		d->partial = gm_buf_detach(&b, NULL);
	}
	return 0;
fail:
	gm_repo_dest_release(d);
	return ret;
}

/* Takes the per-name lock, so that two commands making the same model do
 * not share a partial directory. */
int gm_repo_dest_lock(gm_repo_dest *d, gm_error *err)
{
	gm_buf b = GM_BUF_INIT;
	int ret;

	if ((ret = gm_mkdir_p(d->parent, 0755, err)))
		return ret;
	gm_buf_addf(&b, "%s/.%s.lock", d->parent, d->name);
	d->lock_path = gm_buf_detach(&b, NULL);
	d->lock_fd = open(d->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (d->lock_fd < 0)
		return gm_error_errno(err, "cannot create %s", d->lock_path);
	if (flock(d->lock_fd, LOCK_EX | LOCK_NB)) {
		/* lock_fd >= 0 means "ours": the partial directory is not */
		close(d->lock_fd);
		d->lock_fd = -1;
		return gm_error_set(err, GM_EINVAL, "another git model command is making '%s' right now "
				    "(lock %s)", d->name, d->lock_path);
	}
	return 0;
}

/* Registers the finished partial directory and renames it to its name. */
int gm_repo_dest_finish(gm_repo_dest *d, gm_registry *reg, const char *source, const char *revision,
			gm_registry_model *out, gm_error *err)
{
	gm_registry_model m = { 0 };
	int ret;

	if (gm_is_dir(d->path) || gm_is_file(d->path))
		return gm_error_set(err, GM_EINVAL, "%s already exists", d->path);
	if (d->stale_entry) {
		/* under the name's lock: no other command is between its claim and its rename */
		gm_info("'%s' was registered by a command killed before its directory was in place; "
			"registering it again", d->name);
		if ((ret = gm_registry_remove_model(reg, d->name, err)))
			return ret;
	}
	m.name = d->name;
	m.path = d->path;
	m.source = (char *)source;
	m.revision = (char *)revision;
	/* the registry claims the name first: a concurrent command making the
	 * same name fails here, before anything is renamed */
	if ((ret = gm_registry_add_model(reg, &m, err)))
		return ret;
	if (rename(d->partial, d->path)) {
		ret = gm_error_errno(err, "cannot rename %s to %s", d->partial, d->path);
		gm_registry_remove_model(reg, d->name, NULL);
		return ret;
	}
	if (out && (ret = gm_registry_get_model(reg, d->name, out, err)))
		return ret;
	return 0;
}

void gm_repo_dest_release(gm_repo_dest *d)
{
	if (d->lock_fd >= 0) {
		/* the lock file stays: removing it would race with a waiter */
		close(d->lock_fd);
	}
	free(d->name);
	free(d->path);
	free(d->parent);
	free(d->partial);
	free(d->lock_path);
	memset(d, 0, sizeof(*d));
	d->lock_fd = -1;
}

/* Refuses early (before any work) when the name is taken or the path exists. */
int gm_repo_dest_check(gm_repo_dest *d, gm_registry *reg, gm_error *err)
{
	gm_registry_model old = { 0 };
	int found, ret;

	if (gm_registry_get_model(reg, d->name, &old, NULL) == 0) {
		/*
		 * The registry claims a name just before the directory is renamed
		 * into place (gm_repo_dest_finish): a command killed in between
		 * left the name on a path that does not exist.  Making the same
		 * name at the same place then takes it over, at the finish.
		 */
		if (!strcmp(old.path, d->path) && !gm_is_dir(d->path) && !gm_is_file(d->path)) {
			d->stale_entry = 1;
			gm_registry_model_release(&old);
			return 0;
		}
		ret = gm_error_set(err, GM_EINVAL, "a model named '%s' is already registered (at %s); choose "
				   "another name or remove it with 'git model rm %s'", d->name, old.path, d->name);
		gm_registry_model_release(&old);
		return ret;
	}
	if ((ret = gm_registry_find_by_path(reg, d->path, &old, &found, err)))
		return ret;
	if (found) {
		ret = gm_error_set(err, GM_EINVAL, "%s is already registered as model '%s'", d->path, old.name);
		gm_registry_model_release(&old);
		return ret;
	}
	if (gm_is_dir(d->path) || gm_is_file(d->path))
		return gm_error_set(err, GM_EINVAL, "%s already exists", d->path);
	return 0;
}

/* ------------------------------------------------------------ import */

/* Hugging Face's default .gitattributes patterns, plus GGUF. */
static const char *const hf_lfs_patterns[] = {
	"*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gguf", "*.gz", "*.h5", "*.joblib",
	"*.lfs.*", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet",
	"*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*",
	"*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*"
};
/* Files at least this large go to LFS whatever their name, as the Hub
 * requires (tokenizer.json of Qwen3 is 11 MB). */
#define GM_LFS_LARGE_FILE (10ULL << 20)

static int track_large_files(gm_repo *r, gm_error *err)
{
	gm_repo_paths files = { NULL, 0, 0 };
	const char **extra = NULL;
	size_t i, n = 0;
	int ret;

	if ((ret = gm_repo_list_files(r->workdir, &files, err)))
		return ret;
	extra = gm_xcalloc(files.n + 1, sizeof(*extra));
	for (i = 0; i < files.n; i++) {
		char *full = gm_path_join(r->workdir, files.v[i]);
		struct stat st;
		if (lstat(full, &st) == 0 && S_ISREG(st.st_mode) && (unsigned long long)st.st_size >=
		    GM_LFS_LARGE_FILE && !is_lfs_path(r->git, files.v[i])) {
			if (strpbrk(files.v[i], " \t\n*?[\\#!"))
				gm_warn("%s is large but its name cannot be a .gitattributes pattern: "
					"stored in git", files.v[i]);
			else
				extra[n++] = files.v[i];
		}
		free(full);
	}
	if (n)
		ret = gm_lfs_track(r->workdir, extra, n, NULL, err);
	free(extra);
	gm_repo_paths_release(&files);
	return ret;
}

int gm_repo_import(const char *dir, const char *name, gm_registry_model *out, gm_error *err)
{
	gm_repo_dest d;
	gm_registry *reg = NULL;
	gm_repo *r = NULL;
	gm_repo_paths files = { NULL, 0, 0 };
	char *src = NULL, *cfg = NULL, *base, hex[GM_REPO_OID_HEXLEN + 1];
	gm_buf msg = GM_BUF_INIT;
	size_t i;
	int ret;

	if (!gm_is_dir(dir))
		return gm_error_set(err, GM_ENOENT, "%s is not a directory", dir);
	cfg = gm_path_join(dir, "config.json");
	if (!gm_is_file(cfg)) {
		ret = gm_error_set(err, GM_EINVAL, "%s has no config.json: not a Hugging Face-layout model "
				   "directory", dir);
		free(cfg);
		return ret;
	}
	free(cfg);
	src = realpath(dir, NULL);
	if (!src)
		return gm_error_errno(err, "cannot resolve %s", dir);
	base = strrchr(src, '/') + 1;
	if ((ret = gm_repo_dest_init(&d, name, *base ? base : "model", err))) {
		free(src);
		return ret;
	}
	if ((ret = gm_registry_open(NULL, &reg, err)) || (ret = gm_repo_dest_check(&d, reg, err)) ||
	    (ret = gm_repo_dest_lock(&d, err)))
		goto out;
	if (!strncmp(d.path, src, strlen(src)) && (d.path[strlen(src)] == '/' || !d.path[strlen(src)])) {
		ret = gm_error_set(err, GM_EINVAL, "cannot import %s into itself (%s)", src, d.path);
		goto out;
	}
	/* nothing to resume for an import: start over */
	if (gm_repo_remove_tree(d.partial)) {
		ret = gm_error_errno(err, "cannot remove the leftover %s", d.partial);
		goto out;
	}
	if ((ret = gm_repo_init(d.partial, &r, err)))
		goto out;
	if ((ret = gm_repo_list_files(src, &files, err)))
		goto out;
	for (i = 0; i < files.n && !ret; i++) {
		char *from = gm_path_join(src, files.v[i]), *to = gm_path_join(d.partial, files.v[i]);
		char *slash = strrchr(to, '/');
		*slash = '\0';
		ret = gm_mkdir_p(to, 0755, err);
		*slash = '/';
		if (!ret)
			ret = gm_repo_copy_file(from, to, err);
		free(from);
		free(to);
	}
	if (ret)
		goto out;
	if ((ret = gm_lfs_track(d.partial, hf_lfs_patterns, sizeof(hf_lfs_patterns) / sizeof(*hf_lfs_patterns),
				NULL, err)) ||
	    (ret = track_large_files(r, err)) ||
	    (ret = gm_lfs_install(GM_LFS_INSTALL_LOCAL, d.partial, 0, NULL, err)))
		goto out;
	gm_buf_addf(&msg, "Import %s\n\nImported by git model import from %s.\n", d.name, src);
	if ((ret = gm_repo_commit_files(r, NULL, 0, msg.buf, hex, err)))
		goto out;
	gm_repo_close(r);
	r = NULL;
	ret = gm_repo_dest_finish(&d, reg, src, hex, out, err);
out:
	if (ret && d.lock_fd >= 0)
		gm_repo_remove_tree(d.partial);
	gm_buf_release(&msg);
	gm_repo_paths_release(&files);
	gm_repo_close(r);
	gm_registry_close(reg);
	gm_repo_dest_release(&d);
	free(src);
	return ret;
}

/* ------------------------------------------------------------ disk usage */

unsigned long long gm_repo_disk_usage(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	unsigned long long total = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		char *p;
		struct stat st;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		p = gm_path_join(dir, de->d_name);
		if (lstat(p, &st) == 0) {
			if (S_ISDIR(st.st_mode))
				total += gm_repo_disk_usage(p);
			else if (S_ISREG(st.st_mode))
				total += (unsigned long long)st.st_size;
		}
		free(p);
	}
	closedir(d);
	return total;
}

/* ------------------------------------------------------------ commits on a new branch */

int gm_repo_commit_branch(gm_repo *r, int mode, const char *base, const char *branch,
			  const char *const *paths, const char *const *files, size_t n, const char *message,
			  char out[GM_REPO_OID_HEXLEN + 1], gm_error *err)
{
	git_tree_update *upd = gm_xcalloc(n ? n : 1, sizeof(*upd));
	git_signature *author = NULL, *committer = NULL;
	git_commit *parent = NULL;
	git_tree *base_tree = NULL, *tree = NULL;
	git_reference *existing = NULL;
	git_oid tree_id, commit_id;
	const git_commit *parents[1];
	gm_buf ref = GM_BUF_INIT;
	char hex[GM_REPO_OID_HEXLEN + 1];
	size_t i;
	int ret, valid = 0;

	gm_repo_write_begin(r);
	gm_buf_addf(&ref, "refs/heads/%s", branch);
	if (git_reference_name_is_valid(&valid, ref.buf) < 0 || !valid) {
		ret = gm_error_set(err, GM_EINVAL, "'%s' is not a valid branch name", branch);
		goto out;
	}
	if (git_reference_lookup(&existing, r->git, ref.buf) == 0) {
		if (mode == GM_REPO_BRANCH_CREATE) {
			ret = gm_error_set(err, GM_EINVAL, "a branch named '%s' exists already in %s; "
					   "choose another name", branch, r->workdir);
			goto out;
		}
		base = ref.buf;
	} else if (mode == GM_REPO_BRANCH_ADVANCE) {
		ret = gm_error_set(err, GM_ENOENT, "there is no branch '%s' in %s", branch, r->workdir);
		goto out;
	}
	if ((ret = commit_tree(r, base, &base_tree, hex, err)))
		goto out;
	for (i = 0; i < n && !ret; i++) {
		upd[i].action = files[i] ? GIT_TREE_UPDATE_UPSERT : GIT_TREE_UPDATE_REMOVE;
		upd[i].filemode = GIT_FILEMODE_BLOB;
		upd[i].path = paths[i];
		if (!files[i]) {
			continue;
		} else if (is_lfs_path(r->git, paths[i])) {
			gm_lfs_pointer p = GM_LFS_POINTER_INIT;
			gm_buf text = GM_BUF_INIT;

			if (!(ret = gm_lfs_clean_file(&r->lfs, files[i], &p, err))) {
				gm_lfs_pointer_format(&p, &text);
				if (git_blob_create_from_buffer(&upd[i].id, r->git, text.buf, text.len) < 0)
					ret = gm_libgit_error(err, GM_EIO, "cannot store %s", paths[i]);
			}
			gm_lfs_pointer_release(&p);
			gm_buf_release(&text);
		} else if (git_blob_create_from_disk(&upd[i].id, r->git, files[i]) < 0) {
			ret = gm_libgit_error(err, GM_EIO, "cannot store %s", files[i]);
		}
	}
	if (ret)
		goto out;
	if (git_tree_create_updated(&tree_id, r->git, base_tree, n, upd) < 0 ||
	    git_tree_lookup(&tree, r->git, &tree_id) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot write the tree of the new commit");
		goto out;
	}
	if (git_oid_fromstr(&commit_id, hex) < 0 || git_commit_lookup(&parent, r->git, &commit_id) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot read commit %s", hex);
		goto out;
	}
	if ((ret = make_signature(r->git, "AUTHOR", &author, err)) ||
	    (ret = make_signature(r->git, "COMMITTER", &committer, err)))
		goto out;
	parents[0] = parent;
	/* creating the branch is the commit point */
	if (git_commit_create(&commit_id, r->git, ref.buf, author, committer, NULL, message, tree, 1,
			      parents) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot commit on branch %s", branch);
		goto out;
	}
	if (out)
		git_oid_tostr(out, GM_REPO_OID_HEXLEN + 1, &commit_id);
out:
	git_reference_free(existing);
	git_signature_free(author);
	git_signature_free(committer);
	git_commit_free(parent);
	git_tree_free(tree);
	git_tree_free(base_tree);
	gm_buf_release(&ref);
	free(upd);
	return ret;
}

struct head_walk {
	gm_repo_paths *paths;
	const char *dir;
};

static int add_head_path(const char *root, const git_tree_entry *e, void *payload)
{
	struct head_walk *w = payload;
	gm_buf p = GM_BUF_INIT;

	if (git_tree_entry_type(e) != GIT_OBJECT_BLOB)
		return 0;
	gm_buf_addf(&p, "%s/%s%s", w->dir, root, git_tree_entry_name(e));
	gm_repo_paths_add(w->paths, p.buf);
	gm_buf_release(&p);
	return 0;
}

/* The files HEAD has under dir (a removal whose index was written, but not its commit, still has them). */
static void add_head_paths(gm_repo *r, const char *dir, gm_repo_paths *paths)
{
	git_object *head = NULL;
	git_tree_entry *te = NULL;
	git_tree *sub = NULL;
	struct head_walk w = { paths, dir };

	if (git_revparse_single(&head, r->git, "HEAD^{tree}") == 0 &&
	    git_tree_entry_bypath(&te, (git_tree *)head, dir) == 0 &&
	    git_tree_entry_type(te) == GIT_OBJECT_TREE &&
	    git_tree_lookup(&sub, r->git, git_tree_entry_id(te)) == 0)
		git_tree_walk(sub, GIT_TREEWALK_PRE, add_head_path, &w);
	git_tree_free(sub);
	git_tree_entry_free(te);
	git_object_free(head);
}

int gm_repo_commit_dirs(gm_repo *r, const char *const *dirs, size_t n, const char *message,
			char out[GM_REPO_OID_HEXLEN + 1], gm_error *err)
{
	gm_repo_paths paths = { NULL, 0, 0 };
	git_index *idx = NULL;
	size_t i, k;
	int ret = 0;

	if (git_repository_index(&idx, r->git) < 0)
		return gm_libgit_error(err, GM_EIO, "cannot read the index of %s", r->workdir);
	for (i = 0; i < n && !ret; i++) {
		add_head_paths(r, dirs[i], &paths);
		gm_buf want = GM_BUF_INIT;
		gm_repo_paths now = { NULL, 0, 0 };
		char *full = gm_path_join(r->workdir, dirs[i]);

		/* what HEAD and the index hold there: removed unless still on disk */
		gm_buf_addf(&want, "%s/", dirs[i]);
		for (k = 0; k < git_index_entrycount(idx); k++) {
			const git_index_entry *e = git_index_get_byindex(idx, k);
			if (!strncmp(e->path, want.buf, want.len))
				gm_repo_paths_add(&paths, e->path);
		}
		if (gm_is_dir(full) && !(ret = gm_repo_list_files(full, &now, err))) {
			for (k = 0; k < now.n; k++) {
				gm_buf p = GM_BUF_INIT;
				gm_buf_addf(&p, "%s%s", want.buf, now.v[k]);
				gm_repo_paths_add(&paths, p.buf);
				gm_buf_release(&p);
			}
		}
		gm_repo_paths_release(&now);
		gm_buf_release(&want);
		free(full);
	}
	git_index_free(idx);
	if (!ret && !paths.n)
		ret = gm_error_set(err, GM_EINVAL, "nothing to commit under %s", n ? dirs[0] : "(nothing)");
	if (!ret)
		ret = gm_repo_commit_files(r, (const char *const *)paths.v, paths.n, message, out, err);
	gm_repo_paths_release(&paths);
	return ret;
}

int gm_repo_tag(gm_repo *r, const char *name, const char *commit, gm_error *err)
{
	git_object *obj = NULL;
	git_oid id, tag;
	int ret = 0;

	gm_repo_write_begin(r);
	if (git_oid_fromstr(&id, commit) < 0 || git_object_lookup(&obj, r->git, &id, GIT_OBJECT_COMMIT) < 0)
		return gm_libgit_error(err, GM_ENOENT, "no commit %s to tag", commit);
	if (git_tag_create_lightweight(&tag, r->git, name, obj, 1) < 0)
		ret = gm_libgit_error(err, GM_EIO, "cannot tag %s as '%s'", commit, name);
	git_object_free(obj);
	return ret;
}
