/* fs.c - atomic file writes and small filesystem helpers. */
#include "base/fs.h"

#include <errno.h>
#include <dirent.h>
#include <ftw.h>
#include <fcntl.h>
#include <limits.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int gm_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static char *dir_of(const char *path)
{
	char *copy = gm_xstrdup(path);
	char *d = gm_xstrdup(dirname(copy));
	free(copy);
	return d;
}

int gm_tmp_lock(int fd)
{
	struct stat st;
	int lock = dup(fd);

	if (lock < 0)
		return -1;
	while (flock(lock, LOCK_EX) < 0) {
		if (errno != EINTR) {
			close(lock);
			return -1;
		}
	}
	/* a cleaner that locked it first has unlinked it by now */
	if (fstat(lock, &st) < 0 || st.st_nlink == 0) {
		close(lock);
		errno = ENOENT;
		return -1;
	}
	return lock;
}

int gm_mkstemp_locked(char *tmpl, int *lock)
{
	size_t len = strlen(tmpl);
	int tries, fd;

	*lock = -1;
	for (tries = 0; tries < 8; tries++) {
		memcpy(tmpl + len - 6, "XXXXXX", 6);
		fd = mkstemp(tmpl);
		if (fd < 0)
			return -1;
		*lock = gm_tmp_lock(fd);
		if (*lock >= 0)
			return fd;
		close(fd); /* removed by a cleaner of stale temporaries before we locked it */
	}
	return -1;
}

int gm_tmp_remove_stale(const char *path)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK), removed = 0;

	if (fd < 0)
		return 0;
	/* unlinked while locked: a writer that locks it later sees it gone */
	if (!fstat(fd, &st) && S_ISREG(st.st_mode) && !flock(fd, LOCK_EX | LOCK_NB))
		removed = unlink(path) == 0;
	close(fd);
	return removed;
}

int gm_atomic_open(gm_atomic_file *f, const char *path, mode_t mode, gm_error *err)
{
	char *copy = gm_xstrdup(path), *dir = dir_of(path);
	gm_buf tmp = GM_BUF_INIT;
	mode_t mask;

	gm_buf_addf(&tmp, "%s/.%s.tmp-XXXXXX", dir, basename(copy));
	free(copy);
	free(dir);
	f->path = f->tmp_path = NULL;
	f->fd = gm_mkstemp_locked(tmp.buf, &f->lock_fd);
	if (f->fd < 0) {
		int ret = gm_error_errno(err, "cannot create a temporary file for '%s'", path);
		gm_buf_release(&tmp);
		return ret;
	}
	mask = umask(0);
	umask(mask);
	if (fchmod(f->fd, mode & ~mask) < 0) {
		int ret = gm_error_errno(err, "cannot set the mode of '%s'", tmp.buf);
		unlink(tmp.buf);
		close(f->fd);
		close(f->lock_fd);
		gm_buf_release(&tmp);
		f->fd = f->lock_fd = -1;
		return ret;
	}
	f->tmp_path = gm_buf_detach(&tmp, NULL);
	f->path = gm_xstrdup(path);
	f->written = 0;
	return 0;
}

int gm_atomic_remove_stale(const char *path)
{
	char *copy = gm_xstrdup(path), *dir = dir_of(path), *base = basename(copy);
	size_t blen = strlen(base);
	struct dirent *e;
	DIR *d = opendir(dir);
	int n = 0;

	while (d && (e = readdir(d))) {
		const char *s = e->d_name;

		/* ".NAME.tmp-XXXXXX", as gm_atomic_open names them */
		if (s[0] == '.' && !strncmp(s + 1, base, blen) && !strncmp(s + 1 + blen, ".tmp-", 5) &&
		    strlen(s + 1 + blen + 5) == 6) {
			char *p = gm_path_join(dir, s);

			n += gm_tmp_remove_stale(p);
			free(p);
		}
	}
	if (d)
		closedir(d);
	free(copy);
	free(dir);
	return n;
}

int gm_atomic_write(gm_atomic_file *f, const void *data, size_t len, gm_error *err)
{
	if (gm_write_all(f->fd, data, len) < 0)
		return gm_error_errno(err, "cannot write '%s'%s", f->tmp_path,
				      errno == ENOSPC ? " (the disk is full)" : "");
	f->written += len;
	return 0;
}

static void fsync_dir(const char *path)
{
	char *dir = dir_of(path);
	int fd = open(dir, O_RDONLY | O_DIRECTORY);

	if (fd >= 0) {
		fsync(fd); /* best effort: some filesystems refuse fsync on dirs */
		close(fd);
	}
	free(dir);
}

int gm_atomic_commit(gm_atomic_file *f, gm_error *err)
{
	int ret = 0;

	if (fsync(f->fd) < 0 && errno != EINVAL)
		ret = gm_error_errno(err, "cannot flush '%s' to disk", f->tmp_path);
	if (close(f->fd) < 0 && !ret)
		ret = gm_error_errno(err, "cannot close '%s'", f->tmp_path);
	f->fd = -1;
	if (!ret && rename(f->tmp_path, f->path) < 0)
		ret = gm_error_errno(err, "cannot rename '%s' to '%s'", f->tmp_path, f->path);
	if (!ret) {
		fsync_dir(f->path);
		free(f->tmp_path);
		f->tmp_path = NULL;
	}
	gm_atomic_abort(f);
	return ret;
}

void gm_atomic_abort(gm_atomic_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	if (f->tmp_path)
		unlink(f->tmp_path);
	/* the lock last: the temporary is gone (or renamed) before a cleaner may take it */
	if (f->path && f->lock_fd >= 0)
		close(f->lock_fd);
	f->lock_fd = -1;
	free(f->tmp_path);
	free(f->path);
	f->tmp_path = f->path = NULL;
}

int gm_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, gm_error *err)
{
	gm_atomic_file f;
	int ret = gm_atomic_open(&f, path, mode, err);

	if (ret)
		return ret;
	ret = gm_atomic_write(&f, data, len, err);
	if (ret) {
		gm_atomic_abort(&f);
		return ret;
	}
	return gm_atomic_commit(&f, err);
}

int gm_read_file(const char *path, gm_buf *out, gm_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char chunk[65536];

	if (fd < 0)
		return gm_error_errno(err, "cannot open '%s'", path);
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int ret = gm_error_errno(err, "cannot read '%s'", path);
			close(fd);
			return ret;
		}
		if (!n)
			break;
		gm_buf_add(out, chunk, (size_t)n);
	}
	close(fd);
	return 0;
}

int gm_mkdir_p(const char *path, mode_t mode, gm_error *err)
{
	char *p = gm_xstrdup(path), *s;
	int ret = 0;

	for (s = p + 1; ; s++) {
		if (*s != '/' && *s)
			continue;
		char c = *s;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST) {
			ret = gm_error_errno(err, "cannot create directory '%s'", p);
			break;
		}
		if (!gm_is_dir(p)) {
			ret = gm_error_set(err, GM_EIO, "'%s' exists and is not a directory", p);
			break;
		}
		*s = c;
		if (!c)
			break;
	}
	free(p);
	return ret;
}

char *gm_path_join(const char *a, const char *b)
{
	gm_buf out = GM_BUF_INIT;
	size_t la = strlen(a);

	gm_buf_add(&out, a, la);
	if (la && a[la - 1] != '/')
		gm_buf_addch(&out, '/');
	gm_buf_adds(&out, b);
	return gm_buf_detach(&out, NULL);
}

int gm_is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int gm_is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

int gm_remove_tree(const char *path, gm_error *err)
{
	struct stat st;

	if (lstat(path, &st))
		return errno == ENOENT ? 0 : gm_error_errno(err, "cannot remove %s", path);
	if (nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS))
		return gm_error_errno(err, "cannot remove %s", path);
	return 0;
}

int gm_copy_file(const char *src, const char *dst, gm_error *err)
{
	struct stat st;
	int in, outfd, ret = 0;
	char buf[1 << 16];

	if (lstat(src, &st))
		return gm_error_errno(err, "cannot stat %s", src);
	if (S_ISLNK(st.st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlink(src, target, sizeof(target) - 1);
		if (n < 0)
			return gm_error_errno(err, "cannot read link %s", src);
		target[n] = '\0';
		if (symlink(target, dst))
			return gm_error_errno(err, "cannot create link %s", dst);
		return 0;
	}
	if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0)
		return gm_error_errno(err, "cannot open %s", src);
	if ((outfd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 0777)) < 0) {
		ret = gm_error_errno(err, "cannot create %s", dst);
		close(in);
		return ret;
	}
	/* copy_file_range shares extents where the file system can (reflink
	 * on btrfs/xfs) and copies in the kernel elsewhere. */
	for (;;) {
		ssize_t n = copy_file_range(in, NULL, outfd, NULL, 1 << 30, 0);
		if (n == 0)
			break;
		if (n > 0)
			continue;
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP) {
			ret = gm_error_errno(err, "cannot copy %s to %s", src, dst);
			break;
		}
		/* fall back to read/write from where we are */
		for (;;) {
			ssize_t r = read(in, buf, sizeof(buf));
			if (r == 0)
				break;
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0 || gm_write_all(outfd, buf, (size_t)r)) {
				ret = gm_error_errno(err, "cannot copy %s to %s", src, dst);
				break;
			}
		}
		break;
	}
	close(in);
	if (!ret && fsync(outfd))
		ret = gm_error_errno(err, "cannot write %s", dst);
	if (close(outfd) && !ret)
		ret = gm_error_errno(err, "cannot write %s", dst);
	if (ret)
		unlink(dst);
	return ret;
}
