/*
 * repo-objects.c - the LFS objects the history of a model repository
 * references (see repo-internal.h): what gc keeps, fsck checks, push and
 * bundles carry.  Part of the repository layer, below repo-sync.c and
 * bundle.c, which both use it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <git2.h>

#include "base/buf.h"
#include "storage/libgit.h"
#include "storage/lfs.h"
#include "storage/repo-internal.h"
#include "storage/repo.h"

/* ------------------------------------------------------------ oid sets */

struct oidset {
	git_oid *v;
	unsigned char *used;
	size_t n, cap;
};

static size_t oid_hash(const git_oid *id)
{
	size_t h;
	memcpy(&h, id->id, sizeof(h));
	return h;
}

/* Adds id; returns 1 when it was already there. */
static int oidset_insert(struct oidset *s, const git_oid *id)
{
	size_t i;

	if (2 * (s->n + 1) > s->cap) {
		struct oidset bigger = { NULL, NULL, 0, s->cap ? 2 * s->cap : 256 };
		bigger.v = gm_xcalloc(bigger.cap, sizeof(*bigger.v));
		bigger.used = gm_xcalloc(bigger.cap, 1);
		for (i = 0; i < s->cap; i++)
			if (s->used[i])
				oidset_insert(&bigger, &s->v[i]);
		free(s->v);
		free(s->used);
		*s = bigger;
	}
	for (i = oid_hash(id) & (s->cap - 1); s->used[i]; i = (i + 1) & (s->cap - 1))
		if (!git_oid_cmp(&s->v[i], id))
			return 1;
	s->used[i] = 1;
	s->v[i] = *id;
	s->n++;
	return 0;
}

static void oidset_release(struct oidset *s)
{
	free(s->v);
	free(s->used);
	memset(s, 0, sizeof(*s));
}

/* ------------------------------------------------------------ pointers reachable from refs */

struct scan {
	git_repository *git;
	git_odb *odb;
	struct oidset trees, blobs;
	gm_lfs_object_list *out;
	gm_error *err;
	int ret;
};

static void scan_blob(struct scan *s, const git_oid *id, const char *path)
{
	size_t len;
	git_object_t type;
	git_blob *blob;
	gm_lfs_pointer p = GM_LFS_POINTER_INIT;

	if (oidset_insert(&s->blobs, id))
		return;
	if (git_odb_read_header(&len, &type, s->odb, id) < 0 || len >= GM_LFS_POINTER_MAX)
		return;
	if (git_blob_lookup(&blob, s->git, id) < 0)
		return;
	if (!gm_lfs_pointer_parse(git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob), &p, NULL))
		gm_lfs_object_list_add(s->out, p.oid, p.size, path);
	gm_lfs_pointer_release(&p);
	git_blob_free(blob);
}

static void scan_tree(struct scan *s, const git_tree *tree, const char *prefix)
{
	size_t i, n = git_tree_entrycount(tree);

	if (oidset_insert(&s->trees, git_tree_id(tree)))
		return;
	for (i = 0; i < n && !s->ret; i++) {
		const git_tree_entry *e = git_tree_entry_byindex(tree, i);
		gm_buf path = GM_BUF_INIT;
		gm_buf_addf(&path, "%s%s", prefix, git_tree_entry_name(e));
		if (git_tree_entry_type(e) == GIT_OBJECT_TREE) {
			git_tree *sub;
			if (git_tree_lookup(&sub, s->git, git_tree_entry_id(e)) == 0) {
				gm_buf_addch(&path, '/');
				scan_tree(s, sub, path.buf);
				git_tree_free(sub);
			} else {
				s->ret = gm_libgit_error(s->err, GM_EIO, "cannot read tree %s", path.buf);
			}
		} else if (git_tree_entry_type(e) == GIT_OBJECT_BLOB) {
			scan_blob(s, git_tree_entry_id(e), path.buf);
		}
		gm_buf_release(&path);
	}
}

/* Walks the commits pushed on walk (and not hidden), collecting pointers. */
static int scan_walk(struct scan *s, git_revwalk *walk)
{
	git_oid id;

	while (!s->ret && git_revwalk_next(&id, walk) == 0) {
		git_commit *c;
		git_tree *t;
		if (git_commit_lookup(&c, s->git, &id) < 0)
			return gm_libgit_error(s->err, GM_EIO, "cannot read a commit");
		if (git_commit_tree(&t, c) == 0) {
			scan_tree(s, t, "");
			git_tree_free(t);
		}
		git_commit_free(c);
	}
	return s->ret;
}

static int scan_init(struct scan *s, gm_repo *r, gm_lfs_object_list *out, gm_error *err)
{
	memset(s, 0, sizeof(*s));
	s->git = gm_repo_git(r);
	s->out = out;
	s->err = err;
	if (git_repository_odb(&s->odb, s->git) < 0)
		return gm_libgit_error(err, GM_EIO, "cannot open the object database");
	return 0;
}

static void scan_release(struct scan *s)
{
	oidset_release(&s->trees);
	oidset_release(&s->blobs);
	git_odb_free(s->odb);
}

int gm_repo_reachable_objects(gm_repo *r, int flags, gm_lfs_object_list *out, gm_error *err)
{
	struct scan s;
	git_revwalk *walk = NULL;
	int ret;

	if ((ret = scan_init(&s, r, out, err)))
		return ret;
	if (git_revwalk_new(&walk, s.git) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot walk the history");
		goto out;
	}
	git_revwalk_push_glob(walk, "heads/*");
	git_revwalk_push_glob(walk, "tags/*");
	if (flags & GM_REPO_REACH_REMOTES)
		git_revwalk_push_glob(walk, "remotes/*");
	git_revwalk_push_head(walk); /* fails harmlessly on an unborn HEAD */
	ret = scan_walk(&s, walk);
	if (!ret && (flags & GM_REPO_REACH_INDEX)) {
		git_index *idx;
		size_t i;
		if (git_repository_index(&idx, s.git) == 0) {
			for (i = 0; i < git_index_entrycount(idx); i++) {
				const git_index_entry *e = git_index_get_byindex(idx, i);
				scan_blob(&s, &e->id, e->path);
			}
			git_index_free(idx);
		}
	}
out:
	git_revwalk_free(walk);
	scan_release(&s);
	return ret;
}

static int push_tip(const char *refname, void *payload)
{
	struct scan *s = payload;
	git_reference *ref;
	git_object *obj;

	if (strncmp(refname, "refs/heads/", 11) && strncmp(refname, "refs/tags/", 10) && strcmp(refname, "HEAD"))
		return 0;
	if (git_reference_lookup(&ref, s->git, refname) < 0)
		return 0;
	if (git_reference_peel(&obj, ref, GIT_OBJECT_TREE) == 0) {
		scan_tree(s, (const git_tree *)obj, "");
		git_object_free(obj);
	}
	git_reference_free(ref);
	return s->ret;
}

int gm_repo_tip_objects(gm_repo *r, gm_lfs_object_list *out, gm_error *err)
{
	struct scan s;
	int ret;

	if ((ret = scan_init(&s, r, out, err)))
		return ret;
	push_tip("HEAD", &s);
	if (!s.ret)
		git_reference_foreach_name(s.git, push_tip, &s);
	ret = s.ret;
	scan_release(&s);
	return ret;
}
