/*
 * bundle.c - model bundles: one tar archive holding a repository's history
 * and its LFS objects, for machines without a network (see bundle.h).
 *
 * Layout (a POSIX tar, members in this order):
 *
 *   git-model-bundle.json   the manifest: format, version, HEAD, refs, and
 *                           the size and sha256 of every other member
 *   pack.pack               a git pack of every object reachable from the refs
 *   lfs/OID                 one member per LFS object (OID = its sha256)
 *
 * Unpacking trusts nothing: the manifest must come first, every member must
 * be listed in it and match its size and sha256 (computed while streaming,
 * LFS objects straight into the store under a temporary name), the pack is
 * checked by libgit2's indexer, and refs must point at commits that arrived.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <git2.h>
#include <git2/sys/odb_backend.h>
#include <json-c/json.h>
#include <openssl/evp.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "storage/bundle.h"
#include "storage/libgit.h"
#include "storage/lfs.h"
#include "storage/repo-internal.h"
#include "storage/repo.h"

#define BUNDLE_FORMAT "git-model-bundle"
#define BUNDLE_VERSION 1
#define MANIFEST_NAME "git-model-bundle.json"
#define PACK_NAME "pack.pack"
#define MANIFEST_MAX (16 << 20)

static void sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[32];
	unsigned int n = 0;
	int i;

	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	for (i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

/* ------------------------------------------------------------ writing */

static int tar_add(struct archive *a, const char *name, unsigned long long size, gm_error *err)
{
	struct archive_entry *e = archive_entry_new();
	int rc;

	archive_entry_set_pathname(e, name);
	archive_entry_set_size(e, (la_int64_t)size);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_mtime(e, 0, 0); /* reproducible archives */
	rc = archive_write_header(a, e);
	archive_entry_free(e);
	if (rc != ARCHIVE_OK)
		return gm_error_set(err, GM_EIO, "cannot write %s into the bundle: %s", name,
				    archive_error_string(a));
	return 0;
}

static int tar_data(struct archive *a, const void *data, size_t len, gm_error *err)
{
	const char *p = data;

	while (len) {
		la_ssize_t n = archive_write_data(a, p, len);
		if (n <= 0)
			return gm_error_set(err, GM_EIO, "cannot write the bundle: %s", archive_error_string(a));
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int tar_file(struct archive *a, const char *name, const char *path, unsigned long long size,
		    gm_error *err)
{
	char buf[1 << 16];
	unsigned long long done = 0;
	int fd, ret;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return gm_error_errno(err, "cannot open %s", path);
	if ((ret = tar_add(a, name, size, err)))
		goto out;
	while (done < size) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n ? gm_error_errno(err, "cannot read %s", path)
				: gm_error_set(err, GM_EIO, "%s shrank while being bundled", path);
			goto out;
		}
		if ((unsigned long long)n > size - done)
			n = (ssize_t)(size - done);
		if ((ret = tar_data(a, buf, (size_t)n, err)))
			goto out;
		done += (unsigned long long)n;
	}
out:
	close(fd);
	return ret;
}

struct ref_ctx {
	git_repository *git;
	json_object *refs;
	git_packbuilder *pb;
	git_revwalk *walk;
};

static int add_ref(git_reference *ref, void *payload)
{
	struct ref_ctx *c = payload;
	git_object *obj = NULL;
	char hex[GM_REPO_OID_HEXLEN + 1];
	const char *name = git_reference_name(ref);

	/* branches and tags; remote-tracking refs describe another machine */
	if ((!strncmp(name, "refs/heads/", 11) || !strncmp(name, "refs/tags/", 10)) &&
	    git_reference_peel(&obj, ref, GIT_OBJECT_COMMIT) == 0) {
		git_oid_tostr(hex, sizeof(hex), git_object_id(obj));
		json_object_object_add(c->refs, name, json_object_new_string(hex));
		git_revwalk_push(c->walk, git_object_id(obj));
		if (git_reference_type(ref) == GIT_REFERENCE_DIRECT &&
		    git_oid_cmp(git_reference_target(ref), git_object_id(obj)))
			git_packbuilder_insert(c->pb, git_reference_target(ref), name); /* the tag object */
	}
	git_object_free(obj);
	git_reference_free(ref);
	return 0;
}

int gm_repo_bundle_create(gm_repo *r, const char *file, size_t *n_objects, gm_error *err)
{
	git_repository *git = gm_repo_git(r);
	struct ref_ctx c = { git, json_object_new_object(), NULL, NULL };
	json_object *manifest = json_object_new_object(), *lfs = json_object_new_array(), *pack;
	gm_lfs_object_list objs = { NULL, 0, 0 };
	git_buf packbuf = { NULL, 0, 0 };
	git_reference *head = NULL;
	gm_atomic_file af = { -1, NULL, NULL, 0, -1 };
	struct archive *a = NULL;
	const char *manifest_text;
	char hex[65];
	size_t i, n = 0;
	int ret = 0;

	*n_objects = 0;
	if (git_packbuilder_new(&c.pb, git) < 0 || git_revwalk_new(&c.walk, git) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot prepare a pack");
		goto out;
	}
	git_reference_foreach(git, add_ref, &c);
	if (!json_object_object_length(c.refs)) {
		ret = gm_error_set(err, GM_EINVAL, "%s has no branch or tag to bundle", gm_repo_workdir(r));
		goto out;
	}
	if (git_packbuilder_insert_walk(c.pb, c.walk) < 0 || git_packbuilder_write_buf(&packbuf, c.pb) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot build the pack");
		goto out;
	}
	if ((ret = gm_repo_reachable_objects(r, 0, &objs, err)))
		goto out;
	/* HEAD as git shows it: a branch name, or a commit when detached */
	if (git_reference_lookup(&head, git, "HEAD") == 0 && git_reference_type(head) == GIT_REFERENCE_SYMBOLIC)
		json_object_object_add(manifest, "head", json_object_new_string(git_reference_symbolic_target(head)));
	else if (gm_repo_resolve(r, NULL, hex, NULL) == 0)
		json_object_object_add(manifest, "head", json_object_new_string(hex));
	json_object_object_add(manifest, "format", json_object_new_string(BUNDLE_FORMAT));
	json_object_object_add(manifest, "version", json_object_new_int(BUNDLE_VERSION));
	json_object_object_add(manifest, "refs", json_object_get(c.refs));
	sha256_hex(packbuf.ptr, packbuf.size, hex);
	pack = json_object_new_object();
	json_object_object_add(pack, "size", json_object_new_int64((int64_t)packbuf.size));
	json_object_object_add(pack, "sha256", json_object_new_string(hex));
	json_object_object_add(manifest, "pack", pack);
	for (i = 0; i < objs.n; i++) {
		json_object *o;
		/* what the store lacks (a partial clone) cannot be bundled; the
		 * receiver gets pointer files for those, as the sender has */
		if (!gm_lfs_store_has(gm_repo_lfs(r), objs.items[i].oid, objs.items[i].size))
			continue;
		o = json_object_new_object();
		json_object_object_add(o, "oid", json_object_new_string(objs.items[i].oid));
		json_object_object_add(o, "size", json_object_new_int64((int64_t)objs.items[i].size));
		json_object_array_add(lfs, o);
	}
	json_object_object_add(manifest, "lfs", json_object_get(lfs));
	manifest_text = json_object_to_json_string_ext(manifest, JSON_C_TO_STRING_PRETTY |
						       JSON_C_TO_STRING_NOSLASHESCAPE);

	if ((ret = gm_atomic_open(&af, file, 0644, err)))
		goto out;
	a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	if (archive_write_open_fd(a, af.fd) != ARCHIVE_OK) {
		ret = gm_error_set(err, GM_EIO, "cannot write %s: %s", file, archive_error_string(a));
		goto out;
	}
	if ((ret = tar_add(a, MANIFEST_NAME, strlen(manifest_text), err)) ||
	    (ret = tar_data(a, manifest_text, strlen(manifest_text), err)) ||
	    (ret = tar_add(a, PACK_NAME, packbuf.size, err)) ||
	    (ret = tar_data(a, packbuf.ptr, packbuf.size, err)))
		goto out;
	for (i = 0; i < json_object_array_length(lfs) && !ret; i++) {
		json_object *o = json_object_array_get_idx(lfs, i);
		const char *oid = json_object_get_string(json_object_object_get(o, "oid"));
		char *path = gm_lfs_object_path(gm_repo_lfs(r), oid);
		gm_buf name = GM_BUF_INIT;
		gm_buf_addf(&name, "lfs/%s", oid);
		ret = tar_file(a, name.buf, path,
			       (unsigned long long)json_object_get_int64(json_object_object_get(o, "size")), err);
		gm_buf_release(&name);
		free(path);
		n++;
	}
	if (ret)
		goto out;
	if (archive_write_close(a) != ARCHIVE_OK) {
		ret = gm_error_set(err, GM_EIO, "cannot finish %s: %s", file, archive_error_string(a));
		goto out;
	}
	ret = gm_atomic_commit(&af, err);
	*n_objects = n;
out:
	if (a)
		archive_write_free(a);
	if (ret)
		gm_atomic_abort(&af);
	git_reference_free(head);
	git_buf_dispose(&packbuf);
	git_packbuilder_free(c.pb);
	git_revwalk_free(c.walk);
	gm_lfs_object_list_release(&objs);
	json_object_put(c.refs);
	json_object_put(lfs);
	json_object_put(manifest);
	return ret;
}

/* ------------------------------------------------------------ reading */

static int read_member(struct archive *a, const char *file, const char *name, gm_buf *out, size_t max,
		       gm_error *err)
{
	char buf[1 << 16];
	la_ssize_t n;

	while ((n = archive_read_data(a, buf, sizeof(buf))) > 0) {
		if (out->len + (size_t)n > max)
			return gm_error_set(err, GM_EFORMAT, "bundle %s: %s is too large", file, name);
		gm_buf_add(out, buf, (size_t)n);
	}
	if (n < 0)
		return gm_error_set(err, GM_EFORMAT, "bundle %s: cannot read %s: %s", file, name,
				    archive_error_string(a));
	return 0;
}

static int index_pack(git_repository *git, const gm_buf *pack, gm_error *err)
{
	git_odb *odb = NULL;
	git_odb_writepack *wp = NULL;
	git_indexer_progress stats;
	int ret = 0;

	memset(&stats, 0, sizeof(stats));
	if (git_repository_odb(&odb, git) < 0 || git_odb_write_pack(&wp, odb, NULL, NULL) < 0 ||
	    wp->append(wp, pack->buf, pack->len, &stats) < 0 || wp->commit(wp, &stats) < 0)
		ret = gm_libgit_error(err, GM_EFORMAT, "the bundle's pack is invalid");
	if (wp)
		wp->free(wp);
	git_odb_free(odb);
	return ret;
}

/* Streams an LFS member into the store and checks it is what it claims. */
static int import_object(gm_repo *r, struct archive *a, const char *file, const char *oid,
			 unsigned long long size, gm_error *err)
{
	gm_lfs_cleaner *c = NULL;
	gm_lfs_pointer p = GM_LFS_POINTER_INIT;
	char buf[1 << 16];
	la_ssize_t n;
	int ret;

	if ((ret = gm_lfs_clean_begin(gm_repo_lfs(r), &c, err)))
		return ret;
	while ((n = archive_read_data(a, buf, sizeof(buf))) > 0)
		if ((ret = gm_lfs_clean_write(c, buf, (size_t)n, err))) {
			gm_lfs_clean_abort(c);
			return ret;
		}
	if (n < 0) {
		gm_lfs_clean_abort(c);
		return gm_error_set(err, GM_EFORMAT, "bundle %s: cannot read lfs/%s: %s", file, oid,
				    archive_error_string(a));
	}
	if ((ret = gm_lfs_clean_finish(c, &p, err)))
		return ret;
	if (strcmp(p.oid, oid) || p.size != size) {
		/* what arrived is stored under its own hash in the temporary
		 * repository, which the caller deletes */
		ret = gm_error_set(err, GM_EFORMAT, "bundle %s is corrupt: LFS object %s (%llu bytes) has "
				   "sha256 %s and %llu bytes; the bundle was not imported", file, oid, size,
				   p.oid, p.size);
	}
	gm_lfs_pointer_release(&p);
	return ret;
}

static int set_refs(gm_repo *r, json_object *manifest, const char *file, char **head_commit, gm_error *err)
{
	git_repository *git = gm_repo_git(r);
	json_object *refs = json_object_object_get(manifest, "refs"), *headv;
	const char *head;
	char hex[GM_REPO_OID_HEXLEN + 1];
	git_oid id;

	if (!refs || !json_object_is_type(refs, json_type_object))
		return gm_error_set(err, GM_EFORMAT, "bundle %s: the manifest has no refs", file);
	json_object_object_foreach(refs, name, v) {
		git_commit *c;
		git_reference *ref;
		const char *target = json_object_get_string(v);
		if (strncmp(name, "refs/heads/", 11) && strncmp(name, "refs/tags/", 10))
			return gm_error_set(err, GM_EFORMAT, "bundle %s: unexpected ref %s", file, name);
		if (!target || git_oid_fromstr(&id, target) < 0 || git_commit_lookup(&c, git, &id) < 0)
			return gm_error_set(err, GM_EFORMAT, "bundle %s: ref %s points to a commit the pack "
					    "does not hold", file, name);
		git_commit_free(c);
		if (git_reference_create(&ref, git, name, &id, 1, "git model clone: from a bundle") < 0)
			return gm_libgit_error(err, GM_EFORMAT, "bundle %s: cannot create ref %s", file, name);
		git_reference_free(ref);
	}
	headv = json_object_object_get(manifest, "head");
	head = headv ? json_object_get_string(headv) : NULL;
	if (!head)
		return gm_error_set(err, GM_EFORMAT, "bundle %s: the manifest has no head", file);
	if (!strncmp(head, "refs/heads/", 11)) {
		if (git_repository_set_head(git, head) < 0)
			return gm_libgit_error(err, GM_EFORMAT, "bundle %s: HEAD %s", file, head);
	} else if (git_oid_fromstr(&id, head) < 0 || git_repository_set_head_detached(git, &id) < 0) {
		return gm_libgit_error(err, GM_EFORMAT, "bundle %s: HEAD %s is not a commit of the bundle",
					 file, head);
	}
	if (gm_repo_resolve(r, NULL, hex, err))
		return gm_error_prefix(err, "bundle %s", file);
	*head_commit = gm_xstrdup(hex);
	return 0;
}

int gm_repo_bundle_unpack(const char *file, const char *dir, char **head_commit, gm_error *err)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	json_object *manifest = NULL, *lfs = NULL, *pack;
	gm_repo *r = NULL;
	gm_buf buf = GM_BUF_INIT;
	char *seen = NULL;
	size_t i, n_lfs = 0;
	int ret = 0, rc, have_pack = 0;

	*head_commit = NULL;
	archive_read_support_format_tar(a);
	if (archive_read_open_filename(a, file, 1 << 16) != ARCHIVE_OK) {
		ret = gm_error_set(err, GM_EFORMAT, "%s is not a git-model bundle: %s", file, archive_error_string(a));
		goto out;
	}
	if ((rc = archive_read_next_header(a, &e)) != ARCHIVE_OK) {
		ret = gm_error_set(err, GM_EFORMAT, "%s is not a git-model bundle: %s", file, archive_error_string(a));
		goto out;
	}
	if (strcmp(archive_entry_pathname(e), MANIFEST_NAME)) {
		ret = gm_error_set(err, GM_EFORMAT, "%s is not a git-model bundle (it must start with %s)", file,
				   MANIFEST_NAME);
		goto out;
	}
	if ((ret = read_member(a, file, MANIFEST_NAME, &buf, MANIFEST_MAX, err)) ||
	    (ret = gm_json_parse(buf.buf, buf.len, MANIFEST_NAME, &manifest, err)))
		goto out;
	if (!json_object_is_type(manifest, json_type_object) ||
	    strcmp(json_object_get_string(json_object_object_get(manifest, "format")) ?: "", BUNDLE_FORMAT)) {
		ret = gm_error_set(err, GM_EFORMAT, "%s is not a git-model bundle", file);
		goto out;
	}
	if (json_object_get_int(json_object_object_get(manifest, "version")) != BUNDLE_VERSION) {
		ret = gm_error_set(err, GM_EUNSUPPORTED, "bundle %s has version %s; this git-model reads "
				   "version %d", file,
				   json_object_get_string(json_object_object_get(manifest, "version")), BUNDLE_VERSION);
		goto out;
	}
	pack = json_object_object_get(manifest, "pack");
	lfs = json_object_object_get(manifest, "lfs");
	if (!pack || !lfs || !json_object_is_type(lfs, json_type_array)) {
		ret = gm_error_set(err, GM_EFORMAT, "bundle %s: the manifest lacks pack or lfs", file);
		goto out;
	}
	n_lfs = json_object_array_length(lfs);
	seen = gm_xcalloc(n_lfs + 1, 1);
	if ((ret = gm_repo_init(dir, &r, err)))
		goto out;
	while ((rc = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		const char *name = archive_entry_pathname(e);
		if (!strcmp(name, PACK_NAME) && !have_pack) {
			char hex[65];
			const char *want = json_object_get_string(json_object_object_get(pack, "sha256"));
			gm_buf_reset(&buf);
			if ((ret = read_member(a, file, name, &buf, (size_t)1 << 40, err)))
				goto out;
			sha256_hex(buf.buf, buf.len, hex);
			if (!want || strcmp(hex, want) ||
			    (int64_t)buf.len != json_object_get_int64(json_object_object_get(pack, "size"))) {
				ret = gm_error_set(err, GM_EFORMAT, "bundle %s is corrupt: its pack has sha256 %s, "
						   "the manifest says %s; the bundle was not imported", file, hex,
						   want ? want : "nothing");
				goto out;
			}
			if ((ret = index_pack(gm_repo_git(r), &buf, err)))
				goto out;
			have_pack = 1;
		} else if (!strncmp(name, "lfs/", 4)) {
			const char *oid = name + 4;
			for (i = 0; i < n_lfs; i++) {
				json_object *o = json_object_array_get_idx(lfs, i);
				if (!seen[i] && !strcmp(json_object_get_string(json_object_object_get(o, "oid")) ?: "",
							oid))
					break;
			}
			if (i == n_lfs || !gm_lfs_oid_valid(oid)) {
				ret = gm_error_set(err, GM_EFORMAT, "bundle %s: member %s is not in its manifest",
						   file, name);
				goto out;
			}
			if ((ret = import_object(r, a, file, oid, (unsigned long long)json_object_get_int64(
				json_object_object_get(json_object_array_get_idx(lfs, i), "size")), err)))
				goto out;
			seen[i] = 1;
		} else {
			ret = gm_error_set(err, GM_EFORMAT, "bundle %s: unexpected member %s", file, name);
			goto out;
		}
	}
	if (rc != ARCHIVE_EOF) {
		ret = gm_error_set(err, GM_EFORMAT, "bundle %s is truncated or damaged: %s", file,
				   archive_error_string(a));
		goto out;
	}
	if (!have_pack) {
		ret = gm_error_set(err, GM_EFORMAT, "bundle %s has no pack", file);
		goto out;
	}
	for (i = 0; i < n_lfs; i++)
		if (!seen[i]) {
			ret = gm_error_set(err, GM_EFORMAT, "bundle %s is incomplete: LFS object %s is listed but "
					   "missing", file, json_object_get_string(json_object_object_get(
						   json_object_array_get_idx(lfs, i), "oid")));
			goto out;
		}
	ret = set_refs(r, manifest, file, head_commit, err);
out:
	free(seen);
	gm_buf_release(&buf);
	json_object_put(manifest);
	gm_repo_close(r);
	archive_read_free(a);
	return ret;
}
