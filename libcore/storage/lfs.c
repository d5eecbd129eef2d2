/*
 * lfs.c - LFS pointers, the object store, clean and smudge, object lists:
 * the core the other lfs files build on (it uses none of them).  Transfers
 * are in lfs-transfer.c, repository-level operations in lfs-repo.c, the
 * filters in lfs-filter.c.  See lfs.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <git2.h>
#include <openssl/evp.h>

#include "base/buf.h"
#include "base/fs.h"
#include "storage/libgit.h"
#include "storage/lfs.h"
#include "storage/lfs-internal.h"

/* ------------------------------------------------------------ pointers */

int gm_lfs_oid_valid(const char *s)
{
	return s && strlen(s) == GM_LFS_OID_HEXLEN && strspn(s, "0123456789abcdef") == GM_LFS_OID_HEXLEN;
}

/* "ext-N-NAME": one digit priority, then a word, as git-lfs defines it. */
static int ext_key_valid(const char *k, size_t len)
{
	size_t i;

	if (len < 7 || strncmp(k, "ext-", 4) || k[4] < '0' || k[4] > '9' || k[5] != '-')
		return 0;
	for (i = 6; i < len; i++)
		if (!(k[i] >= 'a' && k[i] <= 'z') && !(k[i] >= 'A' && k[i] <= 'Z') &&
		    !(k[i] >= '0' && k[i] <= '9') && k[i] != '_')
			return 0;
	return 1;
}

/* "sha256:" and 64 lowercase hex digits, exactly. */
static int sha_value_valid(const char *v, size_t len)
{
	char hex[GM_LFS_OID_HEXLEN + 1];

	if (len != 7 + GM_LFS_OID_HEXLEN || strncmp(v, "sha256:", 7))
		return 0;
	memcpy(hex, v + 7, GM_LFS_OID_HEXLEN);
	hex[GM_LFS_OID_HEXLEN] = '\0';
	return gm_lfs_oid_valid(hex);
}

static void add_ext(gm_lfs_pointer *p, const char *k, size_t klen, const char *v, size_t vlen)
{
	p->ext = gm_xrealloc(p->ext, (p->n_ext + 1) * sizeof(*p->ext));
	p->ext[p->n_ext].key = strndup(k, klen);
	p->ext[p->n_ext].value = strndup(v, vlen);
	if (!p->ext[p->n_ext].key || !p->ext[p->n_ext].value)
		abort();
	p->n_ext++;
}

static int parse_pointer(const char *d, size_t len, gm_lfs_pointer *out, gm_error *err)
{
	static const char version[] = "version " GM_LFS_SPEC_URL "\n";
	const char *line = d, *end = d + len, *prev_key = NULL;
	size_t prev_len = 0;
	int have_oid = 0, have_size = 0, lineno = 1;

	if (len == 0)
		return gm_error_set(err, GM_EFORMAT, "not an LFS pointer: empty");
	if (len >= GM_LFS_POINTER_MAX)
		return gm_error_set(err, GM_EFORMAT, "not an LFS pointer: %zu bytes (pointers are under %d)",
				    len, GM_LFS_POINTER_MAX);
	if (memchr(d, '\0', len))
		return gm_error_set(err, GM_EFORMAT, "not an LFS pointer: binary data");
	if (d[len - 1] != '\n')
		return gm_error_set(err, GM_EFORMAT, "not an LFS pointer: the last line does not end in a newline");
	if (len < sizeof(version) - 1 || memcmp(d, version, sizeof(version) - 1))
		return gm_error_set(err, GM_EFORMAT, "not an LFS pointer: line 1 is not 'version %s'",
				    GM_LFS_SPEC_URL);
	line += sizeof(version) - 1;
	while (line < end) {
		const char *nl = memchr(line, '\n', (size_t)(end - line)), *sp, *val;
		size_t klen, vlen;

		lineno++;
		sp = memchr(line, ' ', (size_t)(nl - line));
		if (!sp || sp == line)
			return gm_error_set(err, GM_EFORMAT, "LFS pointer line %d: expected 'KEY VALUE', got '%.*s'",
					    lineno, (int)(nl - line > 80 ? 80 : nl - line), line);
		klen = (size_t)(sp - line);
		val = sp + 1;
		vlen = (size_t)(nl - val);
		if (prev_key) {
			size_t m = klen < prev_len ? klen : prev_len;
			int c = memcmp(line, prev_key, m);
			if (c < 0 || (c == 0 && klen <= prev_len))
				return gm_error_set(err, GM_EFORMAT, "LFS pointer line %d: key '%.*s' is out of order or "
						    "repeated (keys after 'version' are sorted)", lineno, (int)klen, line);
		}
		prev_key = line;
		prev_len = klen;
		if (klen == 3 && !memcmp(line, "oid", 3)) {
			if (!sha_value_valid(val, vlen))
				return gm_error_set(err, GM_EFORMAT, "LFS pointer line %d: oid must be 'sha256:' and 64 "
						    "lowercase hex digits, got '%.*s'", lineno,
						    (int)(vlen > 80 ? 80 : vlen), val);
			memcpy(out->oid, val + 7, GM_LFS_OID_HEXLEN);
			out->oid[GM_LFS_OID_HEXLEN] = '\0';
			have_oid = 1;
		} else if (klen == 4 && !memcmp(line, "size", 4)) {
			unsigned long long v = 0;
			size_t i;

			if (!vlen || vlen > 19 || (vlen > 1 && val[0] == '0'))
				goto bad_size;
			for (i = 0; i < vlen; i++) {
				if (val[i] < '0' || val[i] > '9')
					goto bad_size;
				v = v * 10 + (unsigned long long)(val[i] - '0');
			}
			out->size = v;
			have_size = 1;
		} else if (ext_key_valid(line, klen)) {
			if (!sha_value_valid(val, vlen))
				return gm_error_set(err, GM_EFORMAT, "LFS pointer line %d: extension value must be "
						    "'sha256:' and 64 lowercase hex digits", lineno);
			add_ext(out, line, klen, val, vlen);
		} else {
			return gm_error_set(err, GM_EFORMAT, "LFS pointer line %d: unknown key '%.*s'", lineno,
					    (int)(klen > 40 ? 40 : klen), line);
		}
		line = nl + 1;
		continue;
bad_size:
		return gm_error_set(err, GM_EFORMAT, "LFS pointer line %d: size must be a decimal number, got '%.*s'",
				    lineno, (int)(vlen > 40 ? 40 : vlen), val);
	}
	if (!have_oid)
		return gm_error_set(err, GM_EFORMAT, "LFS pointer has no 'oid' line");
	if (!have_size)
		return gm_error_set(err, GM_EFORMAT, "LFS pointer has no 'size' line");
	return 0;
}

int gm_lfs_pointer_parse(const void *data, size_t len, gm_lfs_pointer *out, gm_error *err)
{
	gm_lfs_pointer p = GM_LFS_POINTER_INIT;
	int ret = parse_pointer(data, len, &p, err);

	if (ret) {
		gm_lfs_pointer_release(&p);
		*out = p;
		return ret;
	}
	*out = p;
	return 0;
}

int gm_lfs_is_pointer(const void *data, size_t len)
{
	gm_lfs_pointer p;
	int ret;

	if (len >= GM_LFS_POINTER_MAX)
		return 0;
	ret = gm_lfs_pointer_parse(data, len, &p, NULL);
	gm_lfs_pointer_release(&p);
	return ret == 0;
}

void gm_lfs_pointer_format(const gm_lfs_pointer *p, gm_buf *out)
{
	size_t i;

	gm_buf_adds(out, "version " GM_LFS_SPEC_URL "\n");
	/* "ext-..." sorts before "oid" and "size". */
	for (i = 0; i < p->n_ext; i++)
		gm_buf_addf(out, "%s %s\n", p->ext[i].key, p->ext[i].value);
	gm_buf_addf(out, "oid sha256:%s\nsize %llu\n", p->oid, p->size);
}

void gm_lfs_pointer_release(gm_lfs_pointer *p)
{
	size_t i;

	for (i = 0; i < p->n_ext; i++) {
		free(p->ext[i].key);
		free(p->ext[i].value);
	}
	free(p->ext);
	p->ext = NULL;
	p->n_ext = 0;
}

/* ------------------------------------------------------------ object store */

static char *strip_slashes(const char *s)
{
	char *c = gm_xstrdup(s);
	size_t n = strlen(c);

	while (n > 1 && c[n - 1] == '/')
		c[--n] = '\0';
	return c;
}

int gm_lfs_store_init(gm_lfs_store *s, const char *gitdir, gm_error *err)
{
	memset(s, 0, sizeof(*s));
	if (!gitdir || !*gitdir)
		return gm_error_set(err, GM_EINVAL, "no git directory given for the LFS store");
	s->gitdir = strip_slashes(gitdir);
	s->root = gm_path_join(s->gitdir, "lfs");
	s->objects = gm_path_join(s->root, "objects");
	s->tmp = gm_path_join(s->root, "tmp");
	return 0;
}

int gm_lfs_store_discover(gm_lfs_store *s, const char *path, gm_error *err)
{
	git_repository *repo = NULL;
	int ret;

	memset(s, 0, sizeof(*s));
	gm_libgit_use();
	if (path) {
		ret = git_repository_open_ext(&repo, path, 0, NULL);
	} else {
		/* As git runs its filters: GIT_DIR when set (libgit2's
		 * OPEN_FROM_ENV refuses GIT_WORK_TREE, which git sets in linked
		 * worktrees), else discovered from the current directory. */
		const char *gd = getenv("GIT_DIR");

		if (gd && *gd)
			ret = git_repository_open_ext(&repo, gd, GIT_REPOSITORY_OPEN_NO_SEARCH |
						      GIT_REPOSITORY_OPEN_BARE, NULL);
		else
			ret = git_repository_open_ext(&repo, ".", 0, NULL);
	}
	if (ret < 0) {
		ret = gm_libgit_fail(err, ret == GIT_ENOTFOUND ? GM_ENOENT : GM_ERROR,
				       path ? path : "the current directory");
		if (ret == GM_ENOENT)
			gm_error_set(err, GM_ENOENT, "'%s' is not in a git repository", path ? path : ".");
		git_libgit2_shutdown();
		return ret;
	}
	ret = gm_lfs_store_init(s, git_repository_commondir(repo), err);
	git_repository_free(repo);
	git_libgit2_shutdown();
	return ret;
}

void gm_lfs_store_release(gm_lfs_store *s)
{
	free(s->gitdir);
	free(s->root);
	free(s->objects);
	free(s->tmp);
	memset(s, 0, sizeof(*s));
}

char *gm_lfs_object_path(const gm_lfs_store *s, const char *oid)
{
	gm_buf b = GM_BUF_INIT;

	gm_buf_addf(&b, "%s/%.2s/%.2s/%s", s->objects, oid, oid + 2, oid);
	return gm_buf_detach(&b, NULL);
}

int gm_lfs_store_has(const gm_lfs_store *s, const char *oid, unsigned long long size)
{
	char *p;
	struct stat st;
	int ok;

	if (!gm_lfs_oid_valid(oid))
		return 0;
	p = gm_lfs_object_path(s, oid);
	ok = stat(p, &st) == 0 && S_ISREG(st.st_mode) && (unsigned long long)st.st_size == size;
	free(p);
	return ok;
}

void gm_lfs_sha256_hex(const unsigned char *md, char *hex)
{
	static const char digits[] = "0123456789abcdef";
	int i;

	for (i = 0; i < 32; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[64] = '\0';
}

int gm_lfs_hash_file(const char *path, char *hex, unsigned long long *size, gm_error *err)
{
	unsigned char md[EVP_MAX_MD_SIZE], *chunk;
	EVP_MD_CTX *ctx;
	unsigned int mdlen;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return gm_error_errno(err, "cannot open '%s'", path);
	ctx = EVP_MD_CTX_new();
	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
		abort();
	chunk = gm_xmalloc(1 << 20);
	*size = 0;
	for (;;) {
		n = read(fd, chunk, 1 << 20);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = gm_error_errno(err, "cannot read '%s'", path);
			break;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(ctx, chunk, (size_t)n);
		*size += (unsigned long long)n;
	}
	if (!ret) {
		EVP_DigestFinal_ex(ctx, md, &mdlen);
		gm_lfs_sha256_hex(md, hex);
	}
	EVP_MD_CTX_free(ctx);
	free(chunk);
	close(fd);
	return ret;
}

int gm_lfs_store_verify(const gm_lfs_store *s, const char *oid, unsigned long long size, gm_error *err)
{
	char *p = gm_lfs_object_path(s, oid), hex[65];
	unsigned long long got;
	int ret;

	if (!gm_is_file(p)) {
		ret = gm_error_set(err, GM_ENOENT, "LFS object %s is missing (expected at %s)", oid, p);
		free(p);
		return ret;
	}
	ret = gm_lfs_hash_file(p, hex, &got, err);
	if (!ret && (got != size || strcmp(hex, oid)))
		ret = gm_error_set(err, GM_EFORMAT, "LFS object %s is corrupt: %s has sha256 %s and %llu bytes, "
				   "expected %llu bytes", oid, p, hex, got, size);
	free(p);
	return ret;
}

/* Creates the directories of an object path. */
static int make_object_dirs(const gm_lfs_store *s, const char *oid, gm_error *err)
{
	gm_buf d = GM_BUF_INIT;
	int ret;

	gm_buf_addf(&d, "%s/%.2s/%.2s", s->objects, oid, oid + 2);
	ret = gm_mkdir_p(d.buf, 0755, err);
	gm_buf_release(&d);
	return ret;
}

int gm_lfs_store_install(const gm_lfs_store *s, const char *tmp, const char *oid, gm_error *err)
{
	char *final;
	int ret = make_object_dirs(s, oid, err);

	if (ret)
		return ret;
	final = gm_lfs_object_path(s, oid);
	if (rename(tmp, final) < 0)
		ret = gm_error_errno(err, "cannot move '%s' to '%s'", tmp, final);
	free(final);
	return ret;
}

int gm_lfs_tmp_dir(const gm_lfs_store *s, gm_error *err)
{
	return gm_mkdir_p(s->tmp, 0755, err);
}

/* Object files are read-only for everybody but their owner, as git-lfs's. */
#define OBJECT_MODE 0644

int gm_lfs_store_import(const gm_lfs_store *s, const char *src, const char *oid, unsigned long long size,
			gm_error *err)
{
	char hex[65];
	unsigned long long got;
	gm_buf tmp = GM_BUF_INIT;
	int ret, fd = -1;

	if (!gm_lfs_oid_valid(oid))
		return gm_error_set(err, GM_EINVAL, "'%s' is not a sha256 object id", oid);
	ret = gm_lfs_hash_file(src, hex, &got, err);
	if (ret)
		return ret;
	if (got != size || strcmp(hex, oid))
		return gm_error_set(err, GM_EFORMAT, "'%s' does not hold LFS object %s: sha256 %s, %llu bytes "
				    "(expected %llu)", src, oid, hex, got, size);
	if (gm_lfs_store_has(s, oid, size))
		return 0;
	ret = gm_lfs_tmp_dir(s, err);
	if (ret)
		return ret;
	/* A hard link shares the bytes with the cache (both are immutable,
	 * content-addressed files); across file systems, copy. */
	gm_buf_addf(&tmp, "%s/%s-import-%ld", s->tmp, oid, (long)getpid());
	unlink(tmp.buf);
	if (link(src, tmp.buf) < 0) {
		int in = open(src, O_RDONLY | O_CLOEXEC);
		char *chunk;
		ssize_t n;
		unsigned long long copied = 0;

		if (in < 0) {
			ret = gm_error_errno(err, "cannot open '%s'", src);
			goto out;
		}
		fd = open(tmp.buf, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, OBJECT_MODE);
		if (fd < 0) {
			ret = gm_error_errno(err, "cannot create '%s'", tmp.buf);
			close(in);
			goto out;
		}
		chunk = gm_xmalloc(1 << 20);
		while ((n = read(in, chunk, 1 << 20)) > 0) {
			if (gm_write_all(fd, chunk, (size_t)n) < 0) {
				ret = gm_error_errno(err, "cannot write '%s'", tmp.buf);
				break;
			}
			copied += (unsigned long long)n;
		}
		if (!ret && n < 0)
			ret = gm_error_errno(err, "cannot read '%s'", src);
		free(chunk);
		close(in);
		if (!ret && fsync(fd) < 0)
			ret = gm_error_errno(err, "cannot write '%s'", tmp.buf);
		if (close(fd) < 0 && !ret)
			ret = gm_error_errno(err, "cannot write '%s'", tmp.buf);
		if (!ret && copied != size)
			ret = gm_error_set(err, GM_EIO, "'%s' changed while it was copied", src);
		if (ret)
			goto out;
		/* The copy was not hashed: re-verify what landed on disk. */
		ret = gm_lfs_hash_file(tmp.buf, hex, &got, err);
		if (!ret && (got != size || strcmp(hex, oid)))
			ret = gm_error_set(err, GM_EFORMAT, "copy of '%s' does not hash to %s", src, oid);
		if (ret)
			goto out;
	}
	ret = gm_lfs_store_install(s, tmp.buf, oid, err);
out:
	if (ret)
		unlink(tmp.buf);
	gm_buf_release(&tmp);
	return ret;
}

/* ------------------------------------------------------------ clean */

struct gm_lfs_cleaner {
	const gm_lfs_store *s;
	int fd;
	int lock;          /* gm_tmp_lock of tmp, held until it is installed or removed */
	char *tmp;
	EVP_MD_CTX *md;
	unsigned long long size;
	char head[GM_LFS_POINTER_MAX]; /* the first bytes, to recognise a pointer */
	size_t head_len;
};

int gm_lfs_clean_begin(const gm_lfs_store *s, gm_lfs_cleaner **out, gm_error *err)
{
	gm_lfs_cleaner *c;
	gm_buf tmp = GM_BUF_INIT;
	mode_t mask;
	int ret;

	*out = NULL;
	ret = gm_lfs_tmp_dir(s, err);
	if (ret)
		return ret;
	c = gm_xcalloc(1, sizeof(*c));
	c->s = s;
	/* locked while it is ours, so gm_lfs_remove_stale_tmp tells it from a killed writer's */
	gm_buf_addf(&tmp, "%s/clean-XXXXXX", s->tmp);
	c->fd = gm_mkstemp_locked(tmp.buf, &c->lock);
	if (c->fd < 0) {
		ret = gm_error_errno(err, "cannot create a temporary file in '%s'", s->tmp);
		gm_buf_release(&tmp);
		free(c);
		return ret;
	}
	mask = umask(0);
	umask(mask);
	fchmod(c->fd, OBJECT_MODE & ~mask);
	c->tmp = gm_buf_detach(&tmp, NULL);
	c->md = EVP_MD_CTX_new();
	if (!c->md || !EVP_DigestInit_ex(c->md, EVP_sha256(), NULL))
		abort();
	*out = c;
	return 0;
}

int gm_lfs_clean_write(gm_lfs_cleaner *c, const void *data, size_t len, gm_error *err)
{
	if (c->head_len < sizeof(c->head)) {
		size_t n = sizeof(c->head) - c->head_len;
		if (n > len)
			n = len;
		memcpy(c->head + c->head_len, data, n);
		c->head_len += n;
	}
	EVP_DigestUpdate(c->md, data, len);
	if (gm_write_all(c->fd, data, len) < 0)
		return gm_error_errno(err, "cannot write '%s'%s", c->tmp,
				      errno == ENOSPC ? " (the disk is full)" : "");
	c->size += len;
	return 0;
}

void gm_lfs_clean_abort(gm_lfs_cleaner *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	if (c->tmp)
		unlink(c->tmp);
	if (c->lock >= 0)
		close(c->lock); /* after the unlink (or the install): nothing left for a cleaner */
	free(c->tmp);
	EVP_MD_CTX_free(c->md);
	free(c);
}

int gm_lfs_clean_finish(gm_lfs_cleaner *c, gm_lfs_pointer *p, gm_error *err)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	int ret;

	memset(p, 0, sizeof(*p));
	/* Already a pointer: keep it as it is, store nothing. */
	if (c->size < GM_LFS_POINTER_MAX && c->size == c->head_len &&
	    gm_lfs_pointer_parse(c->head, c->head_len, p, NULL) == 0) {
		gm_lfs_clean_abort(c);
		return 0;
	}
	EVP_DigestFinal_ex(c->md, md, &mdlen);
	gm_lfs_sha256_hex(md, p->oid);
	p->size = c->size;
	if (c->size == 0) {
		/* git-lfs cleans an empty file to an empty blob: nothing to store. */
		gm_lfs_clean_abort(c);
		return 0;
	}
	if (fsync(c->fd) < 0) {
		ret = gm_error_errno(err, "cannot write '%s'%s", c->tmp, errno == ENOSPC ? " (the disk is full)" : "");
		gm_lfs_clean_abort(c);
		return ret;
	}
	if (close(c->fd) < 0) {
		c->fd = -1;
		ret = gm_error_errno(err, "cannot write '%s'", c->tmp);
		gm_lfs_clean_abort(c);
		return ret;
	}
	c->fd = -1;
	if (gm_lfs_store_has(c->s, p->oid, p->size)) {
		gm_lfs_clean_abort(c); /* the same bytes are stored already */
		return 0;
	}
	ret = gm_lfs_store_install(c->s, c->tmp, p->oid, err);
	gm_lfs_clean_abort(c);
	return ret;
}

int gm_lfs_remove_stale_tmp(const gm_lfs_store *s)
{
	DIR *d = opendir(s->tmp);
	struct dirent *e;
	int n = 0;

	while (d && (e = readdir(d))) {
		char *p;

		if (strncmp(e->d_name, "clean-", 6) || strlen(e->d_name) != 12)
			continue;
		p = gm_path_join(s->tmp, e->d_name);
		n += gm_tmp_remove_stale(p);
		free(p);
	}
	if (d)
		closedir(d);
	return n;
}

int gm_lfs_clean_fd(const gm_lfs_store *s, int fd, gm_lfs_pointer *p, gm_error *err)
{
	gm_lfs_cleaner *c;
	char *chunk;
	ssize_t n;
	int ret = gm_lfs_clean_begin(s, &c, err);

	memset(p, 0, sizeof(*p));
	if (ret)
		return ret;
	chunk = gm_xmalloc(1 << 20);
	for (;;) {
		n = read(fd, chunk, 1 << 20);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = gm_error_errno(err, "cannot read the content to clean");
			break;
		}
		if (n == 0)
			break;
		ret = gm_lfs_clean_write(c, chunk, (size_t)n, err);
		if (ret)
			break;
	}
	free(chunk);
	if (ret) {
		gm_lfs_clean_abort(c);
		return ret;
	}
	return gm_lfs_clean_finish(c, p, err);
}

int gm_lfs_clean_file(const gm_lfs_store *s, const char *path, gm_lfs_pointer *p, gm_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret;

	memset(p, 0, sizeof(*p));
	if (fd < 0)
		return gm_error_errno(err, "cannot open '%s'", path);
	ret = gm_lfs_clean_fd(s, fd, p, err);
	close(fd);
	if (ret)
		gm_error_prefix(err, "%s", path);
	return ret;
}

/* ------------------------------------------------------------ smudge */

int gm_lfs_sink_fd(void *ctx, const void *data, size_t len, gm_error *err)
{
	if (gm_write_all(*(int *)ctx, data, len) < 0)
		return gm_error_errno(err, "cannot write the smudged content");
	return 0;
}

int gm_lfs_sink_buf(void *ctx, const void *data, size_t len, gm_error *err)
{
	gm_buf_add(ctx, data, len);
	return 0;
}

int gm_lfs_smudge(const gm_lfs_store *s, const void *data, size_t len, const char *path, gm_lfs_sink_fn sink,
		  void *ctx, gm_error *err)
{
	gm_lfs_pointer p;
	unsigned char md[EVP_MAX_MD_SIZE], *chunk;
	unsigned int mdlen;
	unsigned long long got = 0;
	char *obj, hex[65];
	EVP_MD_CTX *mdc;
	ssize_t n;
	int fd, ret = 0;

	if (gm_lfs_pointer_parse(data, len, &p, NULL))
		return len ? sink(ctx, data, len, err) : 0; /* not a pointer: as it is */
	gm_lfs_pointer_release(&p);
	obj = gm_lfs_object_path(s, p.oid);
	fd = open(obj, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			ret = gm_error_set(err, GM_ENOENT, "%s%sLFS object %s (%llu bytes) is not in %s; fetch it with "
					   "'git model lfs-fetch' (or 'git lfs fetch')", path ? path : "",
					   path ? ": " : "", p.oid, p.size, s->objects);
		else
			ret = gm_error_errno(err, "cannot open LFS object '%s'", obj);
		free(obj);
		return ret;
	}
	mdc = EVP_MD_CTX_new();
	if (!mdc || !EVP_DigestInit_ex(mdc, EVP_sha256(), NULL))
		abort();
	chunk = gm_xmalloc(1 << 20);
	for (;;) {
		n = read(fd, chunk, 1 << 20);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = gm_error_errno(err, "cannot read LFS object '%s'", obj);
			break;
		}
		if (n == 0)
			break;
		got += (unsigned long long)n;
		if (got > p.size) {
			ret = gm_error_set(err, GM_EFORMAT, "LFS object %s is corrupt: %s is larger than %llu bytes; "
					   "remove it and fetch it again", p.oid, obj, p.size);
			break;
		}
		EVP_DigestUpdate(mdc, chunk, (size_t)n);
		ret = sink(ctx, chunk, (size_t)n, err);
		if (ret)
			break;
	}
	if (!ret) {
		EVP_DigestFinal_ex(mdc, md, &mdlen);
		gm_lfs_sha256_hex(md, hex);
		if (got != p.size || strcmp(hex, p.oid))
			ret = gm_error_set(err, GM_EFORMAT, "LFS object %s is corrupt: %s has sha256 %s and %llu bytes "
					   "(expected %llu); remove it and fetch it again", p.oid, obj, hex, got, p.size);
	}
	if (ret && path)
		gm_error_prefix(err, "%s", path);
	EVP_MD_CTX_free(mdc);
	free(chunk);
	close(fd);
	free(obj);
	return ret;
}

int gm_lfs_worktree_top(const char *path, char **out, gm_error *err)
{
	git_repository *repo;
	const char *wd;
	int ret = 0;

	*out = NULL;
	gm_libgit_use();
	if (git_repository_open_ext(&repo, path ? path : ".", 0, NULL) < 0) {
		ret = gm_error_set(err, GM_ENOENT, "'%s' is not in a git repository", path ? path : ".");
		git_libgit2_shutdown();
		return ret;
	}
	wd = git_repository_workdir(repo);
	if (!wd)
		ret = gm_error_set(err, GM_EINVAL, "'%s' is a bare repository (no worktree)", path ? path : ".");
	else
		*out = strip_slashes(wd);
	git_repository_free(repo);
	git_libgit2_shutdown();
	return ret;
}

/* ------------------------------------------------------------ object lists */

void gm_lfs_object_list_add(gm_lfs_object_list *l, const char *oid, unsigned long long size, const char *path)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (!strcmp(l->items[i].oid, oid))
			return;
	if (l->n == l->alloc) {
		l->alloc = l->alloc ? 2 * l->alloc : 16;
		l->items = gm_xrealloc(l->items, l->alloc * sizeof(*l->items));
	}
	memset(&l->items[l->n], 0, sizeof(l->items[l->n]));
	snprintf(l->items[l->n].oid, sizeof(l->items[l->n].oid), "%s", oid);
	l->items[l->n].size = size;
	l->items[l->n].path = path ? gm_xstrdup(path) : NULL;
	l->n++;
}

void gm_lfs_object_list_release(gm_lfs_object_list *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->items[i].path);
	free(l->items);
	memset(l, 0, sizeof(*l));
}
