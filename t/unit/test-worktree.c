/*
 * test-worktree.c - worktrees through the library: the copy driver (which
 * works anywhere, without privileges), gm_worktree_find for "-m NAME@BRANCH",
 * listing with disk use, removal; driver names and overlay path checks.
 * Mounting drivers are covered by t/t8000-t8002 (they need root).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "storage/cow.h"
#include "base/fs.h"
#include "storage/lfs.h"
#include "storage/repo.h"
#include "formats/synth.h"
#include "tap.h"
#include "storage/worktree.h"

static const char *tmp_models_m(const char *tmp, gm_buf *b)
{
	gm_buf_reset(b);
	gm_buf_addf(b, "%s/models/m", tmp);
	return b->buf;
}

int main(void)
{
	char tmpl[] = "/tmp/gm-test-worktree-XXXXXX", *tmp = mkdtemp(tmpl), *dir = NULL;
	gm_error err = GM_ERROR_INIT;
	gm_buf b = GM_BUF_INIT;
	gm_synth_opts so;
	gm_worktree_opts wo = { NULL, GM_COW_COPY };
	gm_worktree_info info, *v = NULL;
	enum gm_cow_driver d;
	size_t n = 0;
	int found = -1, ret;

	if (!tmp) {
		perror("mkdtemp");
		return 1;
	}
	setenv("HOME", tmp, 1);
	gm_buf_addf(&b, "%s/registry.db", tmp);
	setenv("GIT_MODEL_REGISTRY", b.buf, 1);
	gm_buf_reset(&b);
	gm_buf_addf(&b, "%s/models", tmp);
	setenv("GIT_MODEL_HOME", b.buf, 1);
	setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
	setenv("GIT_AUTHOR_NAME", "A U Thor", 1);
	setenv("GIT_AUTHOR_EMAIL", "author@example.com", 1);
	setenv("GIT_COMMITTER_NAME", "C O Mitter", 1);
	setenv("GIT_COMMITTER_EMAIL", "committer@example.com", 1);

	ok(gm_cow_driver_parse("fuse", &d, &err) == 0 && d == GM_COW_FUSE, "driver names parse");
	ok(!strcmp(gm_cow_driver_name(GM_COW_HARDLINK), "hardlink"), "driver names print");
	ok_error(gm_cow_driver_parse("zfs", &d, &err), &err, GM_EINVAL, "expected auto, overlay", "an unknown driver");
	ok_error(gm_cow_check_option_path("worktree", "/a,b", &err), &err, GM_EINVAL, "contains ','",
		 "',' cannot go into overlay options");
	ok_error(gm_cow_check_option_path("worktree", "/a\nb", &err), &err, GM_EINVAL, "contains '\\n'",
		 "nor a newline");
	ok(gm_cow_check_option_path("worktree", "/a b/c@d", &err) == 0, "spaces and '@' can");
	ok(gm_cow_driver_mounts(GM_COW_OVERLAY) && !gm_cow_driver_mounts(GM_COW_COPY), "which drivers mount");

	memset(&so, 0, sizeof(so));
	so.dtype = GM_DTYPE_BF16;
	so.threads = 1;
	gm_buf_reset(&b);
	gm_buf_addf(&b, "%s/src", tmp);
	ret = gm_synth_shape("tiny", &so.config, &err);
	if (!ret)
		ret = gm_synth_write(b.buf, &so, &err);
	if (!ret)
		ret = gm_repo_import(b.buf, "m", NULL, &err);
	ok(ret == 0, "setup: a tiny model imported as m (%s)", err.msg);

	gm_error_clear(&err);
	ret = gm_worktree_add("m", "exp", &wo, &info, &err);
	ok(ret == 0, "a copy worktree of m@exp (%s)", err.msg);
	if (ret == 0) {
		gm_buf_reset(&b);
		gm_buf_addf(&b, "%s/models/m@exp", tmp);
		ok(!strcmp(info.path, b.buf), "beside the model, named after the branch: %s", info.path);
		ok(!strcmp(info.driver, "copy") && !strcmp(info.ref, "exp"), "on branch exp, by copies");
		gm_buf_adds(&b, "/model.safetensors");
		ok(gm_is_file(b.buf), "its weights are there");
		gm_worktree_info_release(&info);
	}

	ok(gm_worktree_find("m", "exp", &dir, &found, &err) == 0 && found && dir && strstr(dir, "/m@exp"),
	   "gm_worktree_find: m@exp is the worktree");
	free(dir);
	ok(gm_worktree_find("m", "main", &dir, &found, &err) == 0 && !found && !dir,
	   "gm_worktree_find: no worktree has main");
	ok_error(gm_worktree_find("nosuch", "exp", &dir, &found, &err), &err, GM_ENOENT, "nosuch",
		 "gm_worktree_find: an unknown model");

	ok(gm_worktree_ensure(tmp, &err) == 0, "gm_worktree_ensure leaves other directories alone");
	ok(gm_worktree_ensure("/nonexistent/dir", &err) == 0, "and missing ones");
	gm_buf_reset(&b);
	gm_buf_addf(&b, "%s/models/m@exp", tmp);
	gm_error_clear(&err);
	ok(gm_worktree_ensure(b.buf, &err) == 0, "a copy worktree needs no mount (%s)", err.msg);
	ok(gm_worktree_list("m", &v, &n, &err) == 0 && n == 1, "one worktree listed");
	if (n == 1) {
		ok(v[0].full > 1000000 && v[0].used >= v[0].full, "a copy uses what a full copy takes (%llu of %llu)",
		   v[0].used, v[0].full);
		ok(!v[0].mounted && !v[0].missing, "not mounted, not missing");
	}
	gm_worktree_infos_free(v, n);

	gm_buf_reset(&b);
	gm_buf_addf(&b, "%s/models/m@exp", tmp);
	gm_error_clear(&err);
	ret = gm_worktree_add("m", "exp", &wo, &info, &err);
	ok(ret == 0, "asking again for the same worktree is fine (%s)", err.msg);
	if (ret == 0)
		gm_worktree_info_release(&info);
	ok_error(gm_worktree_add("m", "other", &(gm_worktree_opts){ b.buf, GM_COW_COPY }, &info, &err), &err,
		 GM_EINVAL, "already a worktree of m on branch 'exp'", "another branch in the same place is refused");

	gm_buf_reset(&b);
	gm_buf_addf(&b, "%s/models/m@exp", tmp);
	gm_error_clear(&err);
	ok(gm_worktree_remove(b.buf, 0, &err) == 0, "rm (%s)", err.msg);
	ok(!gm_is_dir(b.buf), "the directory is gone");
	ok(gm_worktree_find("m", "exp", &dir, &found, &err) == 0 && !found, "and gm_worktree_find forgets it");
	ok_error(gm_worktree_remove(b.buf, 0, &err), &err, GM_ENOENT, "is not a registered worktree",
		 "rm of something that is not a worktree");

	/* Which branch: none given names it after the directory; a revision
	 * that is no branch gets a new one; a branch checked out in the
	 * model itself is refused; nothing at all is a usage error. */
	gm_buf_reset(&b);
	gm_buf_addf(&b, "%s/plain", tmp);
	gm_error_clear(&err);
	ret = gm_worktree_add("m", NULL, &(gm_worktree_opts){ b.buf, GM_COW_COPY }, &info, &err);
	ok(ret == 0 && !strcmp(info.ref, "plain"), "no branch: a new one named after the directory (%s)", err.msg);
	if (ret == 0)
		gm_worktree_info_release(&info);
	gm_buf_reset(&b);
	gm_buf_addf(&b, "%s/fromhead", tmp);
	gm_error_clear(&err);
	ret = gm_worktree_add("m", "HEAD", &(gm_worktree_opts){ b.buf, GM_COW_COPY }, &info, &err);
	ok(ret == 0 && !strcmp(info.ref, "fromhead"), "a revision: a new branch named after the directory (%s)",
	   err.msg);
	if (ret == 0)
		gm_worktree_info_release(&info);
	gm_buf_reset(&b);
	gm_buf_addf(&b, "%s/onmain", tmp);
	ok(gm_worktree_add("m", "main", &(gm_worktree_opts){ b.buf, GM_COW_COPY }, &info, &err) != 0 &&
	   strstr(err.msg, "checked out") && !gm_is_dir(b.buf), "the model's own branch is refused (%s)", err.msg);
	ok_error(gm_worktree_add("m", NULL, &wo, &info, &err), &err, GM_EINVAL, "say which branch",
		 "neither a branch nor a directory");

	/* An LFS object that is not in the store: the file stays a pointer,
	 * as git-lfs leaves it. */
	{
		gm_buf ptr = GM_BUF_INIT, obj = GM_BUF_INIT;
		gm_lfs_pointer p = GM_LFS_POINTER_INIT;
		gm_repo *r = NULL;
		char *objpath = NULL;

		if (gm_repo_open(tmp_models_m(tmp, &obj), &r, &err) == 0 &&
		    gm_repo_read_file(r, NULL, "tokenizer.json", &ptr, &objpath, &err) == 0 && objpath) {
			ok(unlink(objpath) == 0, "setup: tokenizer.json's object removed from the store");
			gm_buf_reset(&b);
			gm_buf_addf(&b, "%s/nopointer", tmp);
			gm_error_clear(&err);
			ret = gm_worktree_add("m", "partial", &(gm_worktree_opts){ b.buf, GM_COW_COPY }, &info, &err);
			ok(ret == 0, "a worktree of a revision with a missing object (%s)", err.msg);
			if (ret == 0)
				gm_worktree_info_release(&info);
			gm_buf_adds(&b, "/tokenizer.json");
			gm_buf_reset(&ptr);
			ok(gm_read_file(b.buf, &ptr, &err) == 0 &&
			   gm_lfs_pointer_parse(ptr.buf, ptr.len, &p, &err) == 0, "holds the pointer file");
			gm_lfs_pointer_release(&p);
		} else {
			ok(0, "setup: find tokenizer.json's object (%s)", err.msg);
		}
		free(objpath);
		gm_repo_close(r);
		gm_buf_release(&ptr);
		gm_buf_release(&obj);
	}

	gm_cow_remove_tree(tmp, NULL);
	gm_buf_release(&b);
	return tap_done();
}
