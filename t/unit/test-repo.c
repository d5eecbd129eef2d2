/*
 * test-repo.c - unit tests for the registry (registry.h) and the libgit2
 * wrappers (repo.h): every registry call, commits of chosen files (LFS
 * clean, deletions), reading files at a revision without a checkout, views
 * and NAME[@REV] splitting.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/fs.h"
#include "storage/lfs.h"
#include "storage/lfs-repo.h"
#include "storage/repo-internal.h"
#include "storage/registry.h"
#include "storage/repo.h"
#include "storage/resolve.h"
#include "tap.h"

static char tmpdir[] = "/tmp/gm-test-repo-XXXXXX";

static void write_text(const char *dir, const char *name, const char *text)
{
	char *p = gm_path_join(dir, name);
	gm_write_file_atomic(p, text, strlen(text), 0644, NULL);
	free(p);
}

static void test_registry(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_registry *r;
	gm_registry_model m = { 0 }, *v;
	gm_registry_model a = { (char *)"alpha", (char *)"/models/alpha", (char *)"hf:org/alpha",
				(char *)"0123", 0, 0 };
	gm_registry_model b = { (char *)"beta", (char *)"/models/beta", (char *)"", (char *)"", 0, 0 };
	gm_registry_worktree w = { (char *)"alpha", (char *)"/wt/alpha-exp", (char *)"exp", (char *)"reflink", 0 };
	gm_registry_worktree *wv;
	gm_registry_adapter ad = { (char *)"alpha", (char *)"chat", (char *)"adapters/01_chat", (char *)"0123", 0 };
	gm_registry_adapter *av;
	char *path = gm_path_join(tmpdir, "deep/er/registry.db"), *def;
	size_t n;
	int found, ret;

	ok(gm_registry_open(path, &r, &err) == 0, "open creates the database and its directories (%s)", err.msg);
	ok(!strcmp(gm_registry_path(r), path), "gm_registry_path");
	ok(gm_registry_add_model(r, &a, &err) == 0 && gm_registry_add_model(r, &b, &err) == 0, "add two models");
	ret = gm_registry_add_model(r, &a, &err);
	ok_error(ret, &err, GM_EINVAL, "already registered", "the same name again is refused");
	a.name = (char *)"alpha2";
	ret = gm_registry_add_model(r, &a, &err);
	ok_error(ret, &err, GM_EINVAL, "already registered as model 'alpha'", "the same path again is refused");
	a.name = (char *)"al pha";
	ret = gm_registry_add_model(r, &a, &err);
	ok_error(ret, &err, GM_EINVAL, "invalid model name", "a bad name is refused");
	ok(gm_registry_get_model(r, "alpha", &m, &err) == 0 && !strcmp(m.path, "/models/alpha") &&
	   !strcmp(m.source, "hf:org/alpha") && !strcmp(m.revision, "0123") && m.added > 0 &&
	   m.updated == m.added, "get returns what was added");
	gm_registry_model_release(&m);
	ret = gm_registry_get_model(r, "gamma", &m, &err);
	ok_error(ret, &err, GM_ENOENT, "git model list", "get of an unknown name: ENOENT with a hint");
	ok(gm_registry_find_by_path(r, "/models/beta", &m, &found, &err) == 0 && found &&
	   !strcmp(m.name, "beta"), "find by path");
	gm_registry_model_release(&m);
	ok(gm_registry_find_by_path(r, "/nowhere", &m, &found, &err) == 0 && !found, "find by path: none");
	ok(gm_registry_set_revision(r, "beta", "abcd", &err) == 0 &&
	   gm_registry_get_model(r, "beta", &m, &err) == 0 && !strcmp(m.revision, "abcd"), "set_revision");
	gm_registry_model_release(&m);
	ret = gm_registry_set_revision(r, "gamma", "x", &err);
	ok_error(ret, &err, GM_ENOENT, "no model named 'gamma'", "set_revision of an unknown model");
	ok(gm_registry_list_models(r, &v, &n, &err) == 0 && n == 2 && !strcmp(v[0].name, "alpha") &&
	   !strcmp(v[1].name, "beta"), "list, sorted by name");
	gm_registry_models_free(v, n);

	ok(gm_registry_add_worktree(r, &w, &err) == 0, "add a worktree (%s)", err.msg);
	w.model = (char *)"gamma";
	w.path = (char *)"/wt/other";
	ret = gm_registry_add_worktree(r, &w, &err);
	ok_error(ret, &err, GM_ENOENT, "gamma", "a worktree of an unknown model is refused");
	ok(gm_registry_list_worktrees(r, "alpha", &wv, &n, &err) == 0 && n == 1 &&
	   !strcmp(wv[0].path, "/wt/alpha-exp") && !strcmp(wv[0].ref, "exp") && !strcmp(wv[0].method, "reflink"),
	   "list worktrees of a model");
	gm_registry_worktrees_free(wv, n);
	ok(gm_registry_add_adapter(r, &ad, &err) == 0 && gm_registry_add_adapter(r, &ad, &err) == 0,
	   "add an adapter (again: replaced)");
	ok(gm_registry_list_adapters(r, NULL, &av, &n, &err) == 0 && n == 1 && !strcmp(av[0].model, "alpha") &&
	   !strcmp(av[0].path, "adapters/01_chat"), "list all adapters");
	gm_registry_adapters_free(av, n);
	ret = gm_registry_remove_adapter(r, "alpha", "nosuch", &err);
	ok_error(ret, &err, GM_ENOENT, "no adapter 'nosuch'", "remove an unknown adapter");
	ok(gm_registry_remove_model(r, "alpha", &err) == 0, "remove a model");
	ok(gm_registry_list_worktrees(r, NULL, &wv, &n, &err) == 0 && n == 0, "its worktrees went with it");
	gm_registry_worktrees_free(wv, n);
	ok(gm_registry_list_adapters(r, NULL, &av, &n, &err) == 0 && n == 0, "its adapters went with it");
	gm_registry_adapters_free(av, n);
	ret = gm_registry_remove_model(r, "alpha", &err);
	ok_error(ret, &err, GM_ENOENT, "no model named 'alpha'", "remove twice");
	gm_registry_close(r);

	/* a second connection sees the same state */
	ok(gm_registry_open(path, &r, &err) == 0 && gm_registry_list_models(r, &v, &n, &err) == 0 && n == 1,
	   "the data persists across connections");
	gm_registry_models_free(v, n);
	gm_registry_close(r);

	setenv("GIT_MODEL_REGISTRY", "/x/y.db", 1);
	ok(gm_registry_default_path(&def, &err) == 0 && !strcmp(def, "/x/y.db"), "GIT_MODEL_REGISTRY wins");
	free(def);
	unsetenv("GIT_MODEL_REGISTRY");
	setenv("XDG_DATA_HOME", "/data", 1);
	ok(gm_registry_default_path(&def, &err) == 0 && !strcmp(def, "/data/git-model/registry.db"),
	   "then XDG_DATA_HOME");
	free(def);
	unsetenv("XDG_DATA_HOME");
	setenv("HOME", "/home/u", 1);
	ok(gm_registry_default_path(&def, &err) == 0 && !strcmp(def, "/home/u/.local/share/git-model/registry.db"),
	   "then ~/.local/share");
	free(def);
	setenv("HOME", tmpdir, 1);
	free(path);
}

static void test_spec(void)
{
	char *name, *rev;

	gm_repo_split_spec("tiny", &name, &rev);
	ok(!strcmp(name, "tiny") && rev == NULL, "split NAME");
	free(name);
	gm_repo_split_spec("tiny@HEAD~1", &name, &rev);
	ok(!strcmp(name, "tiny") && rev && !strcmp(rev, "HEAD~1"), "split NAME@REV");
	free(name);
	free(rev);
	gm_repo_split_spec("tiny@origin/a@b", &name, &rev);
	ok(!strcmp(name, "tiny") && rev && !strcmp(rev, "origin/a@b"), "split at the first @");
	free(name);
	free(rev);
}

static void test_repo(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_repo *r;
	char *wd = gm_path_join(tmpdir, "model"), *obj = NULL, *view = NULL, *p;
	char first[GM_REPO_OID_HEXLEN + 1], second[GM_REPO_OID_HEXLEN + 1], head[GM_REPO_OID_HEXLEN + 1];
	const char *pattern[] = { "*.safetensors" };
	const char *changed[] = { "model.safetensors", "notes.txt" };
	gm_buf b = GM_BUF_INIT;
	struct stat st;
	int ret;

	setenv("GIT_AUTHOR_NAME", "A U Thor", 1);
	setenv("GIT_AUTHOR_EMAIL", "author@example.com", 1);
	setenv("GIT_AUTHOR_DATE", "1700000000 +0100", 1);
	ok(gm_repo_init(wd, &r, &err) == 0, "init (%s)", err.msg);
	ok(!strcmp(gm_repo_workdir(r), wd), "the work tree is the directory, without a trailing slash");
	ok(gm_lfs_track(wd, pattern, 1, NULL, &err) == 0, "track *.safetensors");
	write_text(wd, "config.json", "{\"a\": 1}\n");
	write_text(wd, "model.safetensors", "first weights\n");
	write_text(wd, "notes.txt", "hello\n");
	ok(gm_repo_commit_files(r, NULL, 0, "first", first, &err) == 0, "commit everything (%s)", err.msg);
	ok(gm_repo_resolve(r, NULL, head, &err) == 0 && !strcmp(head, first), "HEAD is the new commit");

	ok(gm_repo_read_file(r, first, "config.json", &b, &obj, &err) == 0 && obj == NULL &&
	   !strcmp(b.buf, "{\"a\": 1}\n"), "read a regular file at a revision");
	gm_buf_reset(&b);
	ok(gm_repo_read_file(r, first, "model.safetensors", &b, &obj, &err) == 0 && obj && b.len == 0,
	   "an LFS file resolves to its object");
	ok(obj && gm_read_file(obj, &b, &err) == 0 && !strcmp(b.buf, "first weights\n"),
	   "the object holds the content");
	ok(obj && strstr(obj, "/.git/lfs/objects/"), "in the LFS store (%s)", obj ? obj : "");
	free(obj);
	obj = NULL;
	gm_buf_reset(&b);
	ok(gm_repo_read_file(r, NULL, "model.safetensors", &b, NULL, &err) == 0 &&
	   !strcmp(b.buf, "first weights\n"), "without object_path the content is read");
	gm_buf_reset(&b);
	ret = gm_repo_read_file(r, NULL, "nosuch", &b, NULL, &err);
	ok_error(ret, &err, GM_ENOENT, "nosuch does not exist at HEAD", "a missing file");

	/* commit two chosen files: one changed, one deleted */
	write_text(wd, "model.safetensors", "second weights\n");
	p = gm_path_join(wd, "notes.txt");
	unlink(p);
	free(p);
	write_text(wd, "untracked.txt", "not committed\n");
	ok(gm_repo_commit_files(r, changed, 2, "second", second, &err) == 0 && strcmp(first, second),
	   "commit chosen files (%s)", err.msg);
	ret = gm_repo_read_file(r, second, "notes.txt", &b, NULL, &err);
	ok_error(ret, &err, GM_ENOENT, "does not exist", "a deleted file is gone from the new commit");
	ret = gm_repo_read_file(r, second, "untracked.txt", &b, NULL, &err);
	ok_error(ret, &err, GM_ENOENT, "does not exist", "files not named are not committed");
	gm_buf_reset(&b);
	ok(gm_repo_read_file(r, "HEAD~1", "model.safetensors", &b, NULL, &err) == 0 &&
	   !strcmp(b.buf, "first weights\n"), "HEAD~1 still has the first weights");
	gm_buf_reset(&b);
	ok(gm_repo_resolve(r, "HEAD~1", head, &err) == 0 && !strcmp(head, first), "resolve HEAD~1");
	ret = gm_repo_resolve(r, "nosuch", head, &err);
	ok_error(ret, &err, GM_ENOENT, "unknown revision 'nosuch'", "resolve an unknown revision");

	ok(gm_repo_view(r, first, &view, &err) == 0, "a view of the first commit (%s)", err.msg);
	if (view) {
		p = gm_path_join(view, "model.safetensors");
		ok(lstat(p, &st) == 0 && S_ISLNK(st.st_mode), "its LFS file is a symbolic link");
		ok(gm_read_file(p, &b, &err) == 0 && !strcmp(b.buf, "first weights\n"), "to the object");
		gm_buf_reset(&b);
		free(p);
		p = gm_path_join(view, "notes.txt");
		ok(gm_read_file(p, &b, &err) == 0 && !strcmp(b.buf, "hello\n"), "small files are written");
		gm_buf_reset(&b);
		free(p);
		free(view);
		ok(gm_repo_view(r, first, &view, &err) == 0, "the view is reused");
		free(view);
	}
	gm_repo_close(r);

	/* by name, through a registry */
	{
		gm_registry *reg;
		gm_registry_model m = { (char *)"unit", wd, (char *)"", first, 0, 0 };
		char *regpath = gm_path_join(tmpdir, "names.db"), *dir = NULL;

		setenv("GIT_MODEL_REGISTRY", regpath, 1);
		ok(gm_registry_open(NULL, &reg, &err) == 0 && gm_registry_add_model(reg, &m, &err) == 0,
		   "register the repository as 'unit'");
		gm_registry_close(reg);
		ok(gm_repo_open_spec("unit@HEAD~1", &r, head, &err) == 0 && !strcmp(head, first),
		   "open_spec NAME@REV: the repository and the commit (%s)", err.msg);
		gm_repo_close(r);
		ok(gm_repo_open_spec("unit", &r, head, &err) == 0 && !strcmp(head, second), "open_spec NAME: HEAD");
		gm_repo_close(r);
		ret = gm_repo_open_spec("unit@", &r, head, &err);
		ok_error(ret, &err, GM_EINVAL, "a revision is expected", "open_spec NAME@");
		ret = gm_repo_open_spec("nobody", &r, head, &err);
		ok_error(ret, &err, GM_ENOENT, "no model named 'nobody'", "open_spec of an unknown name");
		ok(gm_repo_resolve_model("unit", &dir, &err) == 0 && !strcmp(dir, wd), "resolve_model NAME: the work tree");
		free(dir);
		ok(gm_repo_resolve_model("unit@HEAD~1", &dir, &err) == 0 && strstr(dir, first),
		   "resolve_model NAME@REV: the view of that commit");
		free(dir);
		ok(gm_repo_resolve_model("some/dir", &dir, &err) == 0 && !strcmp(dir, "some/dir"),
		   "resolve_model: a path is a path");
		free(dir);
		unsetenv("GIT_MODEL_REGISTRY");
		free(regpath);
	}
	gm_buf_release(&b);
	free(wd);
}

/* Files committed from temporaries: stored, renamed, committed; the same again commits nothing. */
static void test_commit_atomic(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_repo *r;
	gm_atomic_file af[2];
	char *wd = gm_path_join(tmpdir, "atomic"), *path, *obj, first[GM_REPO_OID_HEXLEN + 1],
	     again[GM_REPO_OID_HEXLEN + 1], head[GM_REPO_OID_HEXLEN + 1];
	const char *pattern[] = { "*.gguf" };
	gm_buf b = GM_BUF_INIT;
	int made = -1, ret;

	ok(gm_repo_init(wd, &r, &err) == 0 && gm_lfs_track(wd, pattern, 1, NULL, &err) == 0, "a repository");
	write_text(wd, "config.json", "{}\n");
	ok(gm_repo_commit_files(r, NULL, 0, "base", head, &err) == 0, "its first commit");
	path = gm_path_join(wd, "m-Q8_0.gguf");
	ok(!gm_atomic_open(&af[0], path, 0644, &err) && !gm_atomic_write(&af[0], "q8 bytes\n", 9, &err),
	   "a file written under a temporary name");
	obj = gm_path_join(wd, "m.txt");
	ok(!gm_atomic_open(&af[1], obj, 0644, &err) && !gm_atomic_write(&af[1], "text\n", 5, &err), "and another");
	free(obj);
	ok(gm_repo_commit_atomic(r, af, 2, "quantize", first, &made, &err) == 0 && made == 1 && strcmp(first, head),
	   "committed (%s)", err.msg);
	ok(gm_read_file(path, &b, &err) == 0 && !strcmp(b.buf, "q8 bytes\n"), "renamed into the work tree");
	gm_buf_reset(&b);
	obj = NULL;
	ok(gm_repo_read_file(r, NULL, "m-Q8_0.gguf", &b, &obj, &err) == 0 && obj, "an LFS object at HEAD");
	free(obj);
	ok(gm_repo_read_file(r, NULL, "m.txt", &b, NULL, &err) == 0 && !strcmp(b.buf, "text\n"), "and a blob");
	gm_buf_reset(&b);

	ok(!gm_atomic_open(&af[0], path, 0644, &err) && !gm_atomic_write(&af[0], "q8 bytes\n", 9, &err),
	   "the same file written again");
	ok(gm_repo_commit_atomic(r, af, 1, "quantize", again, &made, &err) == 0 && made == 0 && !strcmp(again, first),
	   "nothing to commit: HEAD is given (%s)", err.msg);
	ok(gm_repo_resolve(r, NULL, head, &err) == 0 && !strcmp(head, first), "HEAD did not move");
	free(path);

	path = gm_path_join(tmpdir, "elsewhere.gguf");
	ok(!gm_atomic_open(&af[0], path, 0644, &err), "a file outside the work tree");
	ret = gm_repo_commit_atomic(r, af, 1, "x", again, &made, &err);
	ok_error(ret, &err, GM_EINVAL, "is not in the work tree", "is refused");
	ok(!gm_is_file(path) && gm_atomic_remove_stale(path) == 0, "its temporary removed, nothing renamed");
	free(path);
	gm_buf_release(&b);
	gm_repo_close(r);
	free(wd);
}

/*
 * A writer killed while writing its writer mark (GITDIR/git-model/writer,
 * through a temporary) left .writer.tmp-XXXXXX: the next writer removes it
 * (found by t9002's full crash sweep of quantize), never a live one's.
 */
static void test_writer_mark(void)
{
	char *gitdir = gm_path_join(tmpdir, "marked.git"), *dir = gm_path_join(gitdir, "git-model"),
	     *stale = gm_path_join(dir, ".writer.tmp-AbC123"), *mark;
	gm_atomic_file live;
	gm_error err = GM_ERROR_INIT;

	ok(!gm_mkdir_p(dir, 0777, &err) && !gm_write_file_atomic(stale, "1 2\n", 4, 0644, &err),
	   "a killed writer's temporary of its mark");
	mark = gm_path_join(dir, "writer");
	ok(!gm_atomic_open(&live, mark, 0644, &err), "and a live writer's");
	free(mark);
	mark = gm_repo_mark_writer(gitdir);
	ok(mark && gm_is_file(mark) && !gm_is_file(stale) && gm_is_file(live.tmp_path),
	   "marking the repository removes the killed writer's only");
	gm_atomic_abort(&live);
	free(stale);
	stale = mark ? gm_xstrdup(mark) : gm_path_join(dir, "writer");
	gm_repo_unmark_writer(mark);
	ok(!gm_is_file(stale) && gm_atomic_remove_stale(stale) == 0, "unmarked: neither the mark nor a temporary is left");
	free(dir);
	free(gitdir);
}

int main(void)
{
	gm_error err = GM_ERROR_INIT;

	if (!mkdtemp(tmpdir))
		return 1;
	setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
	setenv("HOME", tmpdir, 1);
	ok(gm_repo_global_init(&err) == 0, "libgit2 and the lfs filter (%s)", err.msg);
	test_registry();
	test_spec();
	test_repo();
	test_commit_atomic();
	test_writer_mark();
	{
		char cmd[256];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			tap_diag("could not remove %s", tmpdir);
	}
	return tap_done();
}
