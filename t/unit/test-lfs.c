/*
 * test-lfs.c - unit tests for lfs.c (pointers, store, clean/smudge),
 * lfs-repo.c (include/exclude, endpoints, track), the in-process libgit2
 * filter, and hub.c (names, endpoint, token, cache).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <git2.h>

#include "base/buf.h"
#include "base/fs.h"
#include "storage/hub.h"
#include "storage/lfs.h"
#include "storage/lfs-filter.h"
#include "storage/lfs-repo.h"
#include "storage/lfs-transfer.h"
#include "tap.h"

#define OID_A "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"
#define PTR_A "version https://git-lfs.github.com/spec/v1\noid sha256:" OID_A "\nsize 12345\n"

static void bad_pointer(const char *text, const char *fragment, const char *what)
{
	gm_error err = GM_ERROR_INIT;
	gm_lfs_pointer p;

	ok_error(gm_lfs_pointer_parse(text, strlen(text), &p, &err), &err, GM_EFORMAT, fragment, "%s", what);
	ok(p.n_ext == 0 && p.ext == NULL, "%s: nothing left allocated", what);
}

static void test_pointers(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_lfs_pointer p;
	gm_buf b = GM_BUF_INIT;
	const char *ext = "version https://git-lfs.github.com/spec/v1\n"
			  "ext-0-foo sha256:" OID_A "\n"
			  "ext-1-bar sha256:" OID_A "\n"
			  "oid sha256:" OID_A "\nsize 0\n";
	char big[1100];

	ok(gm_lfs_pointer_parse(PTR_A, strlen(PTR_A), &p, &err) == 0 && !strcmp(p.oid, OID_A) &&
	   p.size == 12345, "a pointer parses");
	gm_lfs_pointer_format(&p, &b);
	ok(!strcmp(b.buf, PTR_A), "and formats back byte for byte");
	gm_lfs_pointer_release(&p);
	gm_buf_reset(&b);
	ok(gm_lfs_pointer_parse(ext, strlen(ext), &p, &err) == 0 && p.n_ext == 2 &&
	   !strcmp(p.ext[1].key, "ext-1-bar"), "extension lines are kept");
	gm_lfs_pointer_format(&p, &b);
	ok(!strcmp(b.buf, ext), "and written back in order");
	gm_lfs_pointer_release(&p);
	gm_buf_release(&b);
	ok(gm_lfs_is_pointer(PTR_A, strlen(PTR_A)) && !gm_lfs_is_pointer("hello\n", 6), "gm_lfs_is_pointer");

	bad_pointer("", "empty", "empty input");
	bad_pointer("version https://git-lfs.github.com/spec/v2\noid sha256:" OID_A "\nsize 1\n", "line 1",
		    "another spec version");
	bad_pointer("version https://git-lfs.github.com/spec/v1\nsize 1\noid sha256:" OID_A "\n", "out of order",
		    "keys out of order");
	bad_pointer("version https://git-lfs.github.com/spec/v1\noid sha256:" OID_A "\noid sha256:" OID_A
		    "\nsize 1\n", "repeated", "a repeated key");
	bad_pointer("version https://git-lfs.github.com/spec/v1\noid sha256:4D7A\nsize 1\n", "64 lowercase hex",
		    "a short, uppercase oid");
	bad_pointer("version https://git-lfs.github.com/spec/v1\noid md5:" OID_A "\nsize 1\n", "oid must be",
		    "another hash");
	bad_pointer("version https://git-lfs.github.com/spec/v1\noid sha256:" OID_A "\nsize -1\n", "size must be",
		    "a negative size");
	bad_pointer("version https://git-lfs.github.com/spec/v1\noid sha256:" OID_A "\nsize 012\n", "size must be",
		    "a size with a leading zero");
	bad_pointer("version https://git-lfs.github.com/spec/v1\noid sha256:" OID_A "\nsize 99999999999999999999\n",
		    "size must be", "a size beyond 64 bits");
	bad_pointer("version https://git-lfs.github.com/spec/v1\noid sha256:" OID_A "\nsize 1", "newline",
		    "no final newline");
	bad_pointer("version https://git-lfs.github.com/spec/v1\noid sha256:" OID_A "\n", "no 'size'",
		    "no size");
	bad_pointer("version https://git-lfs.github.com/spec/v1\nsize 1\n", "no 'oid'", "no oid");
	bad_pointer("version https://git-lfs.github.com/spec/v1\noid sha256:" OID_A "\nsize 1\nzzz 1\n",
		    "unknown key", "an unknown key");
	bad_pointer("version https://git-lfs.github.com/spec/v1\noid sha256:" OID_A "\n\nsize 1\n",
		    "expected 'KEY VALUE'", "an empty line");
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	bad_pointer(big, "under 1024", "1099 bytes");
	ok(gm_lfs_pointer_parse("version https://git-lfs.github.com/spec/v1\0\n", 44, &p, &err) == GM_EFORMAT &&
	   strstr(err.msg, "binary"), "NUL bytes are refused");
}

static void test_store(const char *dir)
{
	gm_error err = GM_ERROR_INIT;
	gm_lfs_store s;
	gm_lfs_cleaner *c;
	gm_lfs_pointer p;
	gm_buf out = GM_BUF_INIT;
	char *gitdir = gm_path_join(dir, "store.git"), *path;
	static const char content[] = "hello world\n";
	const char *hello_oid = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";
	int i;

	ok(gm_lfs_store_init(&s, gitdir, &err) == 0, "store init");
	ok(gm_lfs_clean_begin(&s, &c, &err) == 0, "clean begins");
	for (i = 0; content[i]; i++) /* byte by byte: streaming */
		gm_lfs_clean_write(c, content + i, 1, &err);
	ok(gm_lfs_clean_finish(c, &p, &err) == 0 && !strcmp(p.oid, hello_oid) && p.size == 12, "clean hashes");
	path = gm_lfs_object_path(&s, hello_oid);
	ok(strstr(path, "/store.git/lfs/objects/a9/48/a948904f") != NULL, "object path layout: %s", path);
	ok(gm_is_file(path) && gm_lfs_store_has(&s, hello_oid, 12) && !gm_lfs_store_has(&s, hello_oid, 13),
	   "the object is stored");
	ok(gm_lfs_store_verify(&s, hello_oid, 12, &err) == 0, "and verifies");
	gm_buf_reset(&out);
	gm_lfs_pointer_format(&p, &out);
	{
		gm_buf sm = GM_BUF_INIT;
		ok(gm_lfs_smudge(&s, out.buf, out.len, "h.txt", gm_lfs_sink_buf, &sm, &err) == 0 &&
		   !strcmp(sm.buf, content), "smudge returns the content");
		gm_buf_release(&sm);
	}
	/* Corrupt it: verify and smudge refuse it. */
	{
		FILE *f;
		chmod(path, 0644);
		f = fopen(path, "r+");
		fputc('H', f);
		fclose(f);
	}
	ok_error(gm_lfs_store_verify(&s, hello_oid, 12, &err), &err, GM_EFORMAT, "is corrupt", "verify finds corruption");
	{
		gm_buf sm = GM_BUF_INIT;
		ok_error(gm_lfs_smudge(&s, out.buf, out.len, "h.txt", gm_lfs_sink_buf, &sm, &err), &err, GM_EFORMAT,
			 "h.txt: LFS object a948904f", "smudge refuses a corrupt object");
		gm_buf_release(&sm);
	}
	/* Import: the wrong content is refused, the right one accepted. */
	{
		char *src = gm_path_join(dir, "blob");
		unlink(path);
		gm_write_file_atomic(src, "hello world?", 12, 0644, &err);
		ok_error(gm_lfs_store_import(&s, src, hello_oid, 12, &err), &err, GM_EFORMAT, "does not hold",
			 "import refuses content with another hash");
		ok(!gm_is_file(path), "and stores nothing");
		gm_write_file_atomic(src, content, 12, 0644, &err);
		ok(gm_lfs_store_import(&s, src, hello_oid, 12, &err) == 0 && gm_lfs_store_has(&s, hello_oid, 12),
		   "import links or copies verified content");
		free(src);
	}
	/* A killed clean's temporary goes, a running one's stays. */
	{
		char *stale = gm_path_join(s.tmp, "clean-Zz9Zz9"), *part = gm_path_join(s.tmp, "x.part");

		gm_write_file_atomic(stale, "half", 4, 0644, &err);
		gm_write_file_atomic(part, "half", 4, 0644, &err);
		ok(gm_lfs_clean_begin(&s, &c, &err) == 0 && gm_lfs_clean_write(c, "x", 1, &err) == 0, "a clean runs");
		ok(gm_lfs_remove_stale_tmp(&s) == 1 && !gm_is_file(stale) && gm_is_file(part),
		   "gm_lfs_remove_stale_tmp removes the killed clean's file only");
		gm_lfs_clean_abort(c);
		unlink(part);
		free(stale);
		free(part);
	}
	gm_lfs_pointer_release(&p);
	gm_buf_release(&out);
	free(path);
	free(gitdir);
	gm_lfs_store_release(&s);
}

static void test_selection(void)
{
	const char *inc1[] = { "*.gguf", NULL }, *exc1[] = { "*q8*", NULL };
	const char *inc2[] = { "sub/", NULL }, *inc3[] = { "sub", NULL }, *inc4[] = { "a/*.bin", NULL };
	const char *inc5[] = { "a/**/x.bin", NULL };

	ok(gm_lfs_path_selected("x.bin", NULL, NULL), "no patterns: everything");
	ok(gm_lfs_path_selected("m/model-q4.gguf", inc1, exc1) && !gm_lfs_path_selected("model-q8.gguf", inc1, exc1) &&
	   !gm_lfs_path_selected("model.safetensors", inc1, exc1), "include and exclude by file name at any depth");
	ok(gm_lfs_path_selected("sub/x/y.bin", inc2, NULL) && !gm_lfs_path_selected("subx/y.bin", inc2, NULL),
	   "a directory with a slash");
	ok(gm_lfs_path_selected("a/sub/y.bin", inc3, NULL) && !gm_lfs_path_selected("a/subway.bin", inc3, NULL),
	   "a directory name at any depth");
	ok(gm_lfs_path_selected("a/x.bin", inc4, NULL) && !gm_lfs_path_selected("a/b/x.bin", inc4, NULL),
	   "a path pattern: * does not cross /");
	ok(gm_lfs_path_selected("a/b/c/x.bin", inc5, NULL), "** crosses /");
}

static void test_urls(void)
{
	char *s;

	s = gm_lfs_endpoint_for_url("https://huggingface.co/Qwen/Qwen3-0.6B");
	ok(!strcmp(s, "https://huggingface.co/Qwen/Qwen3-0.6B.git/info/lfs"), "endpoint of a URL without .git");
	free(s);
	s = gm_lfs_endpoint_for_url("https://example.com/r.git/");
	ok(!strcmp(s, "https://example.com/r.git/info/lfs"), "endpoint of a URL with .git/");
	free(s);
}

static void test_hub(const char *dir)
{
	gm_error err = GM_ERROR_INIT;
	gm_hub_ref r;
	char *s, *tok;
	char *cache = gm_path_join(dir, "hfcache");
	char *blobs = gm_path_join(cache, "models--a--b/blobs");
	char *blob;

	ok(gm_hub_parse("hf:Qwen/Qwen3-0.6B", &r, &err) == 0 && !strcmp(r.org, "Qwen") &&
	   !strcmp(r.name, "Qwen3-0.6B") && r.rev == NULL, "hf:ORG/NAME");
	gm_hub_ref_release(&r);
	ok(gm_hub_parse("hf:org/name@refs/pr/1", &r, &err) == 0 && !strcmp(r.rev, "refs/pr/1"), "hf:ORG/NAME@REV");
	gm_hub_ref_release(&r);
	ok_error(gm_hub_parse("hf:Qwen", &r, &err), &err, GM_EINVAL, "expected hf:ORG/NAME[@REV]", "no name");
	ok_error(gm_hub_parse("hf:../x", &r, &err), &err, GM_EINVAL, "invalid organization", "a hostile org");
	ok_error(gm_hub_parse("hf:a/b c", &r, &err), &err, GM_EINVAL, "invalid model name", "a space");
	ok_error(gm_hub_parse("hf:a/b/c", &r, &err), &err, GM_EINVAL, "invalid model name", "three parts");
	ok_error(gm_hub_parse("hf:a/b@--upload-pack=x", &r, &err), &err, GM_EINVAL, "invalid revision",
		 "an option-like revision");
	ok_error(gm_hub_parse("hf:a/b@x..y", &r, &err), &err, GM_EINVAL, "invalid revision", "a revision with ..");
	ok_error(gm_hub_parse("Qwen/Qwen3", &r, &err), &err, GM_EINVAL, "not a Hugging Face name", "no hf:");

	setenv("HF_ENDPOINT", "http://127.0.0.1:9/", 1);
	s = gm_hub_endpoint();
	ok(!strcmp(s, "http://127.0.0.1:9"), "HF_ENDPOINT without its trailing slash");
	free(s);
	gm_hub_parse("hf:o/n", &r, &err);
	s = gm_hub_lfs_url(&r);
	ok(!strcmp(s, "http://127.0.0.1:9/o/n.git/info/lfs"), "LFS endpoint of a hub repo");
	free(s);
	s = gm_hub_git_url(&r);
	ok(!strcmp(s, "http://127.0.0.1:9/o/n"), "git URL of a hub repo");
	free(s);
	gm_hub_ref_release(&r);
	unsetenv("HF_ENDPOINT");
	s = gm_hub_endpoint();
	ok(!strcmp(s, "https://huggingface.co"), "the default endpoint");
	free(s);

	setenv("HF_TOKEN", "hf_abc", 1);
	ok(gm_hub_token_for_url("https://huggingface.co/o/n.git/info/lfs", &tok, &err) == 0 && tok &&
	   !strcmp(tok, "hf_abc"), "HF_TOKEN for the hub");
	free(tok);
	ok(gm_hub_token_for_url("https://huggingface.co.evil.example/o/n.git/info/lfs", &tok, &err) == 0 && !tok,
	   "never for another host");
	ok(gm_hub_token_for_url("https://user@huggingface.co/x", &tok, &err) == 0 && !tok,
	   "nor for a URL with its own credentials");
	unsetenv("HF_TOKEN");
	{
		char *home = gm_path_join(dir, "hfhome"), *tf = gm_path_join(home, "token");
		gm_mkdir_p(home, 0755, &err);
		gm_write_file_atomic(tf, "hf_file  \nrest\n", 15, 0600, &err);
		setenv("HF_HOME", home, 1);
		ok(gm_hub_token(&tok, &err) == 0 && tok && !strcmp(tok, "hf_file"), "$HF_HOME/token, first line");
		free(tok);
		{
			char *tp = gm_path_join(dir, "other-token");
			gm_write_file_atomic(tp, "hf_path\n", 8, 0600, &err);
			setenv("HF_TOKEN_PATH", tp, 1);
			ok(gm_hub_token(&tok, &err) == 0 && tok && !strcmp(tok, "hf_path"), "HF_TOKEN_PATH wins");
			free(tok);
			unsetenv("HF_TOKEN_PATH");
			free(tp);
		}
		s = gm_hub_cache_dir();
		ok(!strncmp(s, home, strlen(home)) && !strcmp(s + strlen(home), "/hub"), "cache under HF_HOME");
		free(s);
		unsetenv("HF_HOME");
		free(tf);
		free(home);
	}
	setenv("HF_HUB_CACHE", cache, 1);
	s = gm_hub_cache_dir();
	ok(!strcmp(s, cache), "HF_HUB_CACHE wins");
	free(s);
	unsetenv("HF_HUB_CACHE");
	gm_mkdir_p(blobs, 0755, &err);
	s = gm_path_join(blobs, OID_A);
	gm_write_file_atomic(s, "x", 1, 0644, &err);
	blob = gm_hub_cache_find_blob(cache, OID_A);
	ok(blob && !strcmp(blob, s), "a blob of any cached repo is found by sha256");
	free(blob);
	ok(gm_hub_cache_find_blob(cache, "../../etc/passwd") == NULL, "a hostile oid finds nothing");
	free(s);
	free(blobs);
	free(cache);
}

/* The in-process filter: git_index_add_bypath cleans, checkout smudges. */
static void test_libgit2_filter(const char *dir)
{
	gm_error err = GM_ERROR_INIT;
	git_repository *repo;
	git_index *index;
	const git_index_entry *e;
	git_blob *blob;
	char *wd = gm_path_join(dir, "g2"), *f, *attrs;
	gm_buf content = GM_BUF_INIT, got = GM_BUF_INIT;
	git_checkout_options co;
	git_oid tree_id, commit_id;
	git_tree *tree;
	git_signature *sig;
	int i;

	git_libgit2_init();
	git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
	ok(gm_lfs_filter_register(&err) == 0 && gm_lfs_filter_register(&err) == 0, "register (twice is fine)");
	ok(git_repository_init(&repo, wd, 0) == 0, "init a repository");
	attrs = gm_path_join(wd, ".gitattributes");
	{
		static const char a[] = "*.bin filter=lfs diff=lfs merge=lfs -text\n";
		gm_write_file_atomic(attrs, a, strlen(a), 0644, &err);
	}
	for (i = 0; i < 100000; i++)
		gm_buf_addch(&content, (char)(i * 7));
	f = gm_path_join(wd, "w.bin");
	gm_write_file_atomic(f, content.buf, content.len, 0644, &err);
	git_repository_index(&index, repo);
	ok(git_index_add_bypath(index, ".gitattributes") == 0 && git_index_add_bypath(index, "w.bin") == 0,
	   "git_index_add_bypath through the filter");
	e = git_index_get_bypath(index, "w.bin", 0);
	ok(e && git_blob_lookup(&blob, repo, &e->id) == 0, "the blob exists");
	ok(gm_lfs_is_pointer(git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob)) &&
	   strstr(git_blob_rawcontent(blob), "size 100000\n"), "the blob is a pointer");
	git_blob_free(blob);
	git_index_write(index);
	git_index_write_tree(&tree_id, index);
	git_tree_lookup(&tree, repo, &tree_id);
	git_signature_new(&sig, "A", "a@example.com", 1700000000, 0);
	git_commit_create_v(&commit_id, repo, "HEAD", sig, sig, NULL, "w", tree, 0);
	unlink(f);
	co.checkout_strategy = GIT_CHECKOUT_FORCE;
	ok(git_checkout_head(repo, &co) == 0, "git_checkout_head");
	ok(gm_read_file(f, &got, &err) == 0 && got.len == content.len && !memcmp(got.buf, content.buf, got.len),
	   "checkout smudged the content back");
	/* A missing object fails the checkout with our message. */
	{
		gm_lfs_store s;
		char *obj;
		gm_lfs_pointer p;
		const git_error *ge;

		gm_lfs_store_discover(&s, wd, &err);
		gm_lfs_clean_file(&s, f, &p, &err);
		obj = gm_lfs_object_path(&s, p.oid);
		unlink(obj);
		unlink(f);
		ok(git_checkout_head(repo, &co) < 0, "checkout fails when the object is missing");
		ge = git_error_last();
		ok(ge && strstr(ge->message, "w.bin: LFS object") && strstr(ge->message, "is not in"),
		   "with a message naming the file: %s", ge ? ge->message : "(none)");
		free(obj);
		gm_lfs_pointer_release(&p);
		gm_lfs_store_release(&s);
	}
	git_signature_free(sig);
	git_tree_free(tree);
	git_index_free(index);
	git_repository_free(repo);
	gm_buf_release(&content);
	gm_buf_release(&got);
	free(attrs);
	free(f);
	free(wd);
}

/* gm_hub_resolve_revision against t/lib/hub-server.py (when python3 and
 * git are there): a branch, a commit, a missing revision, a token. */
static void test_hub_http(const char *dir)
{
	const char *src = getenv("GM_SRC_DIR");
	gm_error err = GM_ERROR_INIT;
	gm_buf cmd = GM_BUF_INIT, port = GM_BUF_INIT, url = GM_BUF_INIT, head = GM_BUF_INIT;
	gm_hub_ref r;
	char *sha = NULL, *portfile = gm_path_join(dir, "port");
	int i;

	if (!src || system("python3 -c '' 2>/dev/null && git --version >/dev/null 2>&1") != 0) {
		tap_diag("skipping the hub server checks: no python3, git or GM_SRC_DIR");
		free(portfile);
		return;
	}
	gm_buf_addf(&cmd, "cd '%s' && mkdir -p hub/o && git init -q --bare -b main hub/o/m.git && "
		    "git init -q w && cd w && echo x >f && git add f && "
		    "git -c user.name=a -c user.email=a@b commit -q -m x && git push -q ../hub/o/m.git HEAD:main && "
		    "git rev-parse HEAD >../head && cd .. && "
		    "(python3 '%s/t/lib/hub-server.py' --root hub --port-file port --token tok "
		    ">/dev/null 2>&1 </dev/null & echo $! >pid)", dir, src);
	ok(system(cmd.buf) == 0, "a hub server with one repository");
	for (i = 0; i < 100 && !gm_is_file(portfile); i++)
		usleep(100000);
	if (gm_read_file(portfile, &port, &err) == 0) {
		char *hp = gm_path_join(dir, "head");
		port.buf[strcspn(port.buf, "\n")] = '\0';
		gm_read_file(hp, &head, &err);
		head.buf[strcspn(head.buf, "\n")] = '\0';
		free(hp);
		gm_buf_addf(&url, "http://127.0.0.1:%s", port.buf);
		setenv("HF_ENDPOINT", url.buf, 1);
		unsetenv("HF_HOME");
		setenv("HF_TOKEN", "tok", 1);
		gm_hub_parse("hf:o/m", &r, &err);
		ok(gm_hub_resolve_revision(&r, &sha, &err) == 0 && sha && !strcmp(sha, head.buf),
		   "the default branch resolves to its commit: %s", sha ? sha : err.msg);
		free(sha);
		gm_hub_ref_release(&r);
		gm_buf_reset(&cmd);
		gm_buf_addf(&cmd, "hf:o/m@%s", head.buf);
		gm_hub_parse(cmd.buf, &r, &err);
		ok(gm_hub_resolve_revision(&r, &sha, &err) == 0 && sha && !strcmp(sha, head.buf), "a commit id too");
		free(sha);
		gm_hub_ref_release(&r);
		gm_hub_parse("hf:o/m@nope", &r, &err);
		ok_error(gm_hub_resolve_revision(&r, &sha, &err), &err, GM_ENOENT, "no such model or revision 'nope'",
			 "a missing revision");
		gm_hub_ref_release(&r);
		setenv("HF_TOKEN", "wrong", 1);
		gm_hub_parse("hf:o/m", &r, &err);
		ok_error(gm_hub_resolve_revision(&r, &sha, &err), &err, GM_EINVAL, "check that HF_TOKEN",
			 "a wrong token: 401 explained");
		unsetenv("HF_TOKEN");
		ok_error(gm_hub_resolve_revision(&r, &sha, &err), &err, GM_EINVAL, "set HF_TOKEN",
			 "no token: 401 explained");
		gm_hub_ref_release(&r);
		unsetenv("HF_ENDPOINT");
	} else {
		ok(0, "the hub server started: %s", err.msg);
	}
	gm_buf_reset(&cmd);
	gm_buf_addf(&cmd, "kill $(cat '%s/pid')", dir);
	if (system(cmd.buf) != 0)
		tap_diag("could not stop the hub server");
	gm_buf_release(&cmd);
	gm_buf_release(&port);
	gm_buf_release(&url);
	gm_buf_release(&head);
	free(portfile);
}

/*
 * Batch API answers, parsed without the network (gm_lfs_batch_answer).
 * The refusals are regressions of contrib/fuzz/fuzz-lfs-batch.c: an entry
 * whose "oid" is null made the parser strcmp a NULL; a "verify" href that
 * is not a string was strdup'ed as NULL; and an href on file:// (or any
 * scheme but http(s)) was handed to libcurl, so that a server could make
 * an upload write a local file.
 */
static void test_batch_answers(void)
{
	static const char ok_dl[] = "{\"objects\":[{\"oid\":\"" OID_A "\",\"size\":12345,\"actions\":"
		"{\"download\":{\"href\":\"https://cdn.example/a\",\"header\":{\"X\":\"1\"},\"expires_in\":60}}}]}";
	static const char null_oid[] = "{\"objects\":[{\"oid\":null},{\"oid\":\"" OID_A "\",\"actions\":"
		"{\"download\":{\"href\":\"https://cdn.example/a\"}}}]}";
	static const char file_href[] = "{\"objects\":[{\"oid\":\"" OID_A "\",\"actions\":"
		"{\"upload\":{\"href\":\"file:///tmp/gm-not-written\"}}}]}";
	static const char null_verify[] = "{\"objects\":[{\"oid\":\"" OID_A "\",\"actions\":"
		"{\"upload\":{\"href\":\"https://up.example/a\"},\"verify\":{\"href\":null}}}]}";
	static const char present[] = "{\"objects\":[{\"oid\":\"" OID_A "\",\"size\":12345}]}";
	gm_lfs_object_list list = { NULL, 0, 0 };
	gm_error err = GM_ERROR_INIT;
	size_t ready = 99;

	gm_lfs_object_list_add(&list, OID_A, 12345, "a.bin");
	ok(gm_lfs_batch_answer(ok_dl, strlen(ok_dl), &list, 0, &ready, &err) == 0 && ready == 1,
	   "batch answer: a download action is taken");
	ok(gm_lfs_batch_answer(present, strlen(present), &list, 1, &ready, &err) == 0 && ready == 0,
	   "batch answer: an upload without action is an object the server has");
	ok_error(gm_lfs_batch_answer(present, strlen(present), &list, 0, &ready, &err), &err, GM_EFORMAT,
		 "no download action", "batch answer: a download without action is refused");
	ok(gm_lfs_batch_answer(null_oid, strlen(null_oid), &list, 0, &ready, &err) == 0 && ready == 1,
	   "batch answer: an entry with a null oid is skipped, the next one is taken");
	ok_error(gm_lfs_batch_answer(file_href, strlen(file_href), &list, 1, &ready, &err), &err, GM_EFORMAT,
		 "not http(s): 'file:///tmp/gm-not-written'", "batch answer: a file:// href is refused");
	ok_error(gm_lfs_batch_answer(null_verify, strlen(null_verify), &list, 1, &ready, &err), &err, GM_EFORMAT,
		 "verify action", "batch answer: a verify href that is not a string is refused");
	ok_error(gm_lfs_batch_answer("{}", 2, &list, 0, &ready, &err), &err, GM_EFORMAT, "no 'objects' list",
		 "batch answer: no objects list");
	gm_lfs_object_list_release(&list);
}

int main(void)
{
	char tmpl[] = "/tmp/gm-test-lfs-XXXXXX", *dir = mkdtemp(tmpl);
	gm_buf rm = GM_BUF_INIT;

	if (!dir)
		return 1;
	test_pointers();
	test_store(dir);
	test_selection();
	test_urls();
	test_batch_answers();
	test_hub(dir);
	test_libgit2_filter(dir);
	test_hub_http(dir);
	gm_buf_addf(&rm, "rm -rf '%s'", dir);
	if (system(rm.buf) != 0)
		tap_diag("could not remove %s", dir);
	gm_buf_release(&rm);
	return tap_done();
}
