/*
 * cow.c - the copy-on-write drivers: probing, mounting, placing files,
 * disk use (see cow.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "base/buf.h"
#include "storage/cow.h"
#include "base/fs.h"
#include "base/log.h"

extern char **environ;

#ifndef OVERLAYFS_SUPER_MAGIC
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#endif
#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif

static const char *const driver_names[GM_COW_N_DRIVERS] = {
	"auto", "overlay", "fuse", "reflink", "hardlink", "copy"
};

const char *gm_cow_driver_name(enum gm_cow_driver d)
{
	return (unsigned)d < GM_COW_N_DRIVERS ? driver_names[d] : "unknown";
}

int gm_cow_driver_parse(const char *s, enum gm_cow_driver *out, gm_error *err)
{
	int i;

	for (i = 0; i < GM_COW_N_DRIVERS; i++) {
		if (!strcmp(s, driver_names[i])) {
			*out = (enum gm_cow_driver)i;
			return 0;
		}
	}
	return gm_error_set(err, GM_EINVAL, "unknown driver '%s': expected auto, overlay, fuse, reflink, "
			    "hardlink or copy", s);
}

int gm_cow_driver_mounts(enum gm_cow_driver d)
{
	return d == GM_COW_OVERLAY || d == GM_COW_FUSE;
}

int gm_cow_check_option_path(const char *what, const char *path, gm_error *err)
{
	const char *p;

	if (path[0] != '/')
		return gm_error_set(err, GM_EINVAL, "%s '%s' is not an absolute path", what, path);
	for (p = path; *p; p++) {
		if (*p == ',' || *p == ':' || *p == '=' || *p == '\\' || *p == '\n')
			return gm_error_set(err, GM_EINVAL,
					    "%s '%s' contains '%s', which overlayfs options cannot carry; "
					    "use a directory without it, or --driver copy", what, path,
					    *p == '\n' ? "\\n" : (char[]){ *p, 0 });
	}
	return 0;
}

/* ------------------------------------------------------------ environment */

/* Finds name on PATH; the caller frees. */
static char *which(const char *name)
{
	const char *path = getenv("PATH"), *p, *colon;
	gm_buf b = GM_BUF_INIT;

	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path; *p; p = colon ? colon + 1 : p + strlen(p)) {
		colon = strchr(p, ':');
		gm_buf_reset(&b);
		gm_buf_add(&b, p, colon ? (size_t)(colon - p) : strlen(p));
		if (!b.len)
			gm_buf_adds(&b, ".");
		gm_buf_addf(&b, "/%s", name);
		if (access(b.buf, X_OK) == 0 && gm_is_file(b.buf))
			return gm_buf_detach(&b, NULL);
		if (!colon)
			break;
	}
	gm_buf_release(&b);
	return NULL;
}

char *gm_cow_helper_path(void)
{
	const char *env = getenv("GIT_MODEL_MOUNT");

	if (env && *env)
		return gm_xstrdup(env);
	return which("git-model-mount");
}

/* 1 when this process runs in a user namespace other than the initial one:
 * overlayfs then needs "userxattr" (trusted.* xattrs are not ours). */
static int in_child_userns(void)
{
	FILE *f = fopen("/proc/self/uid_map", "r");
	unsigned long a = 0, b = 0, c = 0;
	int n;

	if (!f)
		return 0;
	n = fscanf(f, "%lu %lu %lu", &a, &b, &c);
	fclose(f);
	return !(n == 3 && a == 0 && b == 0 && c == 4294967295UL);
}

static int kernel_has_fs(const char *fs)
{
	FILE *f = fopen("/proc/filesystems", "r");
	char line[256];
	int found = 0;

	if (!f)
		return 1; /* cannot tell: let the mount say */
	while (!found && fgets(line, sizeof(line), f)) {
		char *tab = strrchr(line, '\t');
		char *name = tab ? tab + 1 : line;
		name[strcspn(name, "\n")] = 0;
		found = !strcmp(name, fs);
	}
	fclose(f);
	return found;
}

/* 1 when the helper at path can mount: owned by root and setuid, or given
 * file capabilities by the administrator. */
static int helper_privileged(const char *path)
{
	struct stat st;

	if (stat(path, &st))
		return 0;
	if (st.st_uid == 0 && (st.st_mode & S_ISUID))
		return 1;
	return getxattr(path, "security.capability", NULL, 0) > 0;
}

/* Creates a scratch file in dir for probes; returns its fd and path. */
static int probe_file(const char *dir, char **path)
{
	gm_buf b = GM_BUF_INIT;
	int fd;

	gm_buf_addf(&b, "%s/.gm-cow-probe-XXXXXX", dir);
	fd = mkstemp(b.buf);
	if (fd < 0) {
		gm_buf_release(&b);
		return -1;
	}
	*path = gm_buf_detach(&b, NULL);
	return fd;
}

int gm_cow_probe(enum gm_cow_driver d, const char *objects_dir, const char *target_dir, gm_buf *reason)
{
	char *src_path = NULL, *dst_path = NULL, *bin;
	int src = -1, dst = -1, ok = 0;
	struct statfs sf;

	gm_buf_reset(reason);
	switch (d) {
	case GM_COW_OVERLAY:
		if (!kernel_has_fs("overlay")) {
			gm_buf_adds(reason, "the kernel has no overlay filesystem");
			return 0;
		}
		if (statfs(objects_dir, &sf) == 0 && (sf.f_type == OVERLAYFS_SUPER_MAGIC ||
						      sf.f_type == FUSE_SUPER_MAGIC)) {
			gm_buf_addf(reason, "%s is itself on overlayfs or FUSE, which cannot hold an upper layer",
				    objects_dir);
			return 0;
		}
		if (geteuid() == 0)
			return 1;
		bin = gm_cow_helper_path();
		if (!bin) {
			gm_buf_adds(reason, "not root, and git-model-mount is not installed (see git-model-mount(1)); "
				    "or run in a user namespace: unshare -Urm");
			return 0;
		}
		ok = helper_privileged(bin);
		if (!ok)
			gm_buf_addf(reason, "not root, and %s is neither setuid root nor given CAP_SYS_ADMIN "
				    "(see git-model-mount(1))", bin);
		free(bin);
		return ok;
	case GM_COW_FUSE:
		bin = which("fuse-overlayfs");
		if (!bin) {
			gm_buf_adds(reason, "fuse-overlayfs is not installed (Debian package fuse-overlayfs)");
			return 0;
		}
		free(bin);
		if (access("/dev/fuse", R_OK | W_OK)) {
			gm_buf_addf(reason, "/dev/fuse is not usable: %s", strerror(errno));
			return 0;
		}
		if (geteuid() != 0 && !(bin = which("fusermount3")) && !(bin = which("fusermount"))) {
			gm_buf_adds(reason, "fusermount3 is not installed (Debian package fuse3)");
			return 0;
		}
		if (geteuid() != 0)
			free(bin);
		return 1;
	case GM_COW_REFLINK:
	case GM_COW_HARDLINK:
		if (d == GM_COW_HARDLINK && geteuid() == 0) {
			gm_buf_adds(reason, "running as root, whom read-only permissions do not stop: a write "
				    "through a hard link would change the LFS object store");
			return 0;
		}
		if ((src = probe_file(objects_dir, &src_path)) < 0) {
			gm_buf_addf(reason, "cannot write a probe file in %s: %s", objects_dir, strerror(errno));
			return 0;
		}
		if (d == GM_COW_HARDLINK) {
			dst_path = gm_path_join(target_dir, ".gm-cow-probe-link");
			unlink(dst_path);
			if (link(src_path, dst_path) == 0) {
				ok = 1;
			} else if (errno == EXDEV) {
				gm_buf_addf(reason, "%s and the LFS object store are on different filesystems",
					    target_dir);
			} else {
				gm_buf_addf(reason, "hard links from %s to %s fail: %s", objects_dir, target_dir,
					    strerror(errno));
			}
		} else {
			if (gm_write_all(src, "reflink probe\n", 14) == 0 &&
			    (dst = probe_file(target_dir, &dst_path)) >= 0) {
				if (ioctl(dst, FICLONE, src) == 0)
					ok = 1;
				else if (errno == EXDEV)
					gm_buf_addf(reason, "%s and the LFS object store are on different "
						    "filesystems (FICLONE: %s)", target_dir, strerror(errno));
				else
					gm_buf_addf(reason, "the filesystem does not support reflinks "
						    "(FICLONE: %s)", strerror(errno));
			} else {
				gm_buf_addf(reason, "cannot write a probe file in %s: %s", target_dir,
					    strerror(errno));
			}
		}
		if (src >= 0)
			close(src);
		if (dst >= 0)
			close(dst);
		if (src_path)
			unlink(src_path);
		if (dst_path)
			unlink(dst_path);
		free(src_path);
		free(dst_path);
		return ok;
	case GM_COW_COPY:
		return 1;
	default:
		gm_buf_adds(reason, "no such driver");
		return 0;
	}
}

/* ------------------------------------------------------------ processes */

/* Runs argv (argv[0] searched on PATH), stdin from /dev/null, stdout to
 * stderr's log level; a failure's message carries what it printed. */
static int run(const char *const *argv, gm_error *err)
{
	posix_spawn_file_actions_t fa;
	int pipefd[2], status, ret;
	pid_t pid;
	gm_buf out = GM_BUF_INIT;
	char chunk[512];
	ssize_t n;

	if (pipe2(pipefd, O_CLOEXEC))
		return gm_error_errno(err, "pipe");
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
	ret = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pipefd[1]);
	if (ret) {
		close(pipefd[0]);
		errno = ret;
		return gm_error_errno(err, "cannot run %s", argv[0]);
	}
	while ((n = read(pipefd[0], chunk, sizeof(chunk))) > 0 || (n < 0 && errno == EINTR))
		if (n > 0 && out.len < 4096)
			gm_buf_add(&out, chunk, (size_t)n);
	close(pipefd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	while (out.len && (out.buf[out.len - 1] == '\n' || out.buf[out.len - 1] == ' '))
		out.buf[--out.len] = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		ret = gm_error_set(err, GM_EIO, "%s failed%s%s", argv[0], out.len ? ": " : "",
				   out.len ? out.buf : "");
	} else {
		if (out.len)
			gm_debug("%s: %s", argv[0], out.buf);
		ret = 0;
	}
	gm_buf_release(&out);
	return ret;
}

/* ------------------------------------------------------------ mounts */

/* Undoes the octal escapes (\040 ...) of /proc/self/mountinfo in place. */
static void unescape_mountinfo(char *s)
{
	char *w = s;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 4;
		} else {
			*w++ = *s++;
		}
	}
	*w = 0;
}

int gm_cow_is_mounted(const char *path, char **fstype)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char *line = NULL;
	size_t cap = 0;
	int found = 0;

	if (!f)
		return 0;
	/* The last matching line wins: it is the mount on top. */
	while (getline(&line, &cap, f) > 0) {
		char *fields[10], *save = NULL, *tok, *sep;
		int n = 0;

		for (tok = strtok_r(line, " \n", &save); tok && n < 5; tok = strtok_r(NULL, " \n", &save))
			fields[n++] = tok;
		if (n < 5)
			continue;
		unescape_mountinfo(fields[4]);
		if (strcmp(fields[4], path))
			continue;
		found = 1;
		/* Optional fields end at "-"; the type follows. */
		while ((sep = strtok_r(NULL, " \n", &save)) && strcmp(sep, "-"))
			;
		tok = sep ? strtok_r(NULL, " \n", &save) : NULL;
		if (fstype) {
			free(*fstype);
			*fstype = gm_xstrdup(tok ? tok : "");
		}
	}
	free(line);
	fclose(f);
	return found;
}

int gm_cow_mount(enum gm_cow_driver d, const gm_cow_layers *l, gm_error *err)
{
	gm_buf opts = GM_BUF_INIT;
	int ret;

	if ((ret = gm_cow_check_option_path("lower layer", l->lower, err)) ||
	    (ret = gm_cow_check_option_path("upper layer", l->upper, err)) ||
	    (ret = gm_cow_check_option_path("work directory", l->work, err)) ||
	    (ret = gm_cow_check_option_path("worktree", l->target, err)))
		return ret;
	gm_buf_addf(&opts, "lowerdir=%s,upperdir=%s,workdir=%s", l->lower, l->upper, l->work);
	if (d == GM_COW_OVERLAY && geteuid() == 0) {
		/* Features that let an upper layer redirect lookups or hold
		 * metadata-only copies are never turned on: the layers belong
		 * to a user. */
		gm_buf_adds(&opts, ",redirect_dir=nofollow,metacopy=off,index=off");
		if (in_child_userns())
			gm_buf_adds(&opts, ",userxattr");
		if (mount("git-model", l->target, "overlay", MS_NOSUID | MS_NODEV, opts.buf)) {
			ret = gm_error_errno(err, "cannot mount overlayfs on %s", l->target);
			if (errno == EINVAL)
				gm_error_prefix(err, "%s",
						"the kernel refused the layers (dmesg tells why)");
		}
	} else if (d == GM_COW_OVERLAY) {
		char *helper = gm_cow_helper_path();
		const char *argv[] = { helper, "mount", l->lower, l->upper, l->work, l->target, NULL };

		if (!helper)
			ret = gm_error_set(err, GM_EUNSUPPORTED, "overlay: not root, and git-model-mount is not "
					   "installed (see git-model-mount(1)); or run the command inside "
					   "'unshare -Urm'");
		else
			ret = run(argv, err);
		free(helper);
	} else if (d == GM_COW_FUSE) {
		const char *argv[] = { "fuse-overlayfs", "-o", NULL, l->target, NULL };

		gm_buf_adds(&opts, ",nosuid,nodev");
		argv[2] = opts.buf;
		ret = run(argv, err);
	} else {
		ret = gm_error_set(err, GM_EINVAL, "driver %s does not mount", gm_cow_driver_name(d));
	}
	gm_buf_release(&opts);
	return ret;
}

int gm_cow_unmount(enum gm_cow_driver d, const char *target, gm_error *err)
{
	if (!gm_cow_is_mounted(target, NULL))
		return 0;
	if (geteuid() == 0) {
		if (umount2(target, UMOUNT_NOFOLLOW))
			return gm_error_errno(err, "cannot unmount %s", target);
		return 0;
	}
	if (d == GM_COW_OVERLAY) {
		char *helper = gm_cow_helper_path();
		const char *argv[] = { helper, "umount", target, NULL };
		int ret;

		if (!helper)
			return gm_error_set(err, GM_EUNSUPPORTED, "cannot unmount %s: not root, and "
					    "git-model-mount is not installed", target);
		ret = run(argv, err);
		free(helper);
		return ret;
	}
	{
		const char *argv3[] = { "fusermount3", "-u", target, NULL };
		const char *argv2[] = { "fusermount", "-u", target, NULL };
		char *bin = which("fusermount3");

		free(bin);
		return run(bin ? argv3 : argv2, err);
	}
}

/* ------------------------------------------------------------ files */

static int copy_fd(int in, int out)
{
	char *buf = NULL;
	ssize_t n;

	for (;;) {
		n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (n > 0)
			continue;
		if (n == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != ENOSYS && errno != EOPNOTSUPP && errno != EINVAL)
			return -1;
		break;
	}
	buf = gm_xmalloc(1 << 20);
	while ((n = read(in, buf, 1 << 20)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			free(buf);
			return -1;
		}
		if (gm_write_all(out, buf, (size_t)n)) {
			free(buf);
			return -1;
		}
	}
	free(buf);
	return 0;
}

int gm_cow_place_file(enum gm_cow_driver d, const char *object_path, const char *dest, mode_t mode,
		      gm_error *err)
{
	gm_buf tmp = GM_BUF_INIT;
	struct stat st;
	int in = -1, out = -1, ret = 0;

	if (d == GM_COW_HARDLINK) {
		/* The link is the object: nobody may write it. */
		if (stat(object_path, &st))
			return gm_error_errno(err, "%s", object_path);
		if ((st.st_mode & 0222) && chmod(object_path, st.st_mode & 07555))
			return gm_error_errno(err, "cannot make %s read-only", object_path);
		if (link(object_path, dest))
			return gm_error_errno(err, "cannot link %s to %s", dest, object_path);
		return 0;
	}
	if (d != GM_COW_REFLINK && d != GM_COW_COPY)
		return gm_error_set(err, GM_EINVAL, "driver %s does not place files", gm_cow_driver_name(d));
	/* Written beside dest under a temporary name, then renamed. */
	gm_buf_addf(&tmp, "%s.gm-tmp-XXXXXX", dest);
	if ((in = open(object_path, O_RDONLY | O_CLOEXEC)) < 0) {
		ret = gm_error_errno(err, "%s", object_path);
		goto out;
	}
	if ((out = mkstemp(tmp.buf)) < 0) {
		ret = gm_error_errno(err, "cannot create a file beside %s", dest);
		goto out;
	}
	if (d == GM_COW_REFLINK) {
		if (ioctl(out, FICLONE, in))
			ret = gm_error_errno(err, "cannot reflink %s to %s", object_path, dest);
	} else if (copy_fd(in, out)) {
		ret = gm_error_errno(err, "cannot copy %s to %s", object_path, dest);
	}
	if (!ret && fchmod(out, mode))
		ret = gm_error_errno(err, "chmod %s", dest);
	if (close(out) && !ret)
		ret = gm_error_errno(err, "%s", dest);
	out = -1;
	if (!ret && rename(tmp.buf, dest))
		ret = gm_error_errno(err, "cannot rename %s to %s", tmp.buf, dest);
	if (ret)
		unlink(tmp.buf);
out:
	if (in >= 0)
		close(in);
	if (out >= 0) {
		close(out);
		unlink(tmp.buf);
	}
	gm_buf_release(&tmp);
	return ret;
}

/* ------------------------------------------------------------ disk use */

/* nftw has no user pointer: the walk's state is per thread. */
static __thread unsigned long long du_total;
static __thread int du_skip_shared;
static __thread dev_t du_dev;

/* Bytes of fd's extents that the filesystem shares with another file. */
static unsigned long long shared_bytes(int fd)
{
	union {
		struct fiemap fm;
		char raw[sizeof(struct fiemap) + 64 * sizeof(struct fiemap_extent)];
	} u;
	unsigned long long shared = 0, start = 0;
	unsigned i;

	for (;;) {
		memset(&u, 0, sizeof(u));
		u.fm.fm_start = start;
		u.fm.fm_length = ~0ULL - start;
		u.fm.fm_extent_count = 64;
		if (ioctl(fd, FS_IOC_FIEMAP, &u.fm) || !u.fm.fm_mapped_extents)
			return shared;
		for (i = 0; i < u.fm.fm_mapped_extents; i++) {
			struct fiemap_extent *e = &u.fm.fm_extents[i];
			if (e->fe_flags & FIEMAP_EXTENT_SHARED)
				shared += e->fe_length;
			start = e->fe_logical + e->fe_length;
			if (e->fe_flags & FIEMAP_EXTENT_LAST)
				return shared;
		}
	}
}

static int du_visit(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	unsigned long long bytes = (unsigned long long)st->st_blocks * 512;

	(void)ftw;
	if (st->st_dev != du_dev)
		return 0;
	if (du_skip_shared && flag == FTW_F && S_ISREG(st->st_mode)) {
		int fd;

		if (st->st_nlink > 1)
			return 0; /* a hard link into the object store */
		if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) >= 0) {
			unsigned long long s = shared_bytes(fd);
			bytes = s >= bytes ? 0 : bytes - s;
			close(fd);
		}
	}
	du_total += bytes;
	return 0;
}

unsigned long long gm_cow_disk_use(const char *dir, int skip_shared)
{
	struct stat st;

	if (lstat(dir, &st))
		return 0;
	du_total = 0;
	du_skip_shared = skip_shared;
	du_dev = st.st_dev;
	nftw(dir, du_visit, 32, FTW_PHYS | FTW_MOUNT);
	return du_total;
}

/* Removes the entries of directory fd (on device dev), recursively.
 * Directories are made writable and searchable first: overlayfs leaves
 * its work/work directory with mode 000, and hard-linked objects are
 * read-only. */
static int remove_at(int dirfd, dev_t dev)
{
	DIR *d = fdopendir(dirfd);
	struct dirent *e;
	int ret = 0;

	if (!d) {
		close(dirfd);
		return -1;
	}
	while (!ret && (e = readdir(d))) {
		struct stat st;
		int sub;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW)) {
			ret = -1;
			break;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (unlinkat(dirfd, e->d_name, 0) && errno != ENOENT)
				ret = -1;
			continue;
		}
		if (st.st_dev != dev) {
			errno = EBUSY;
			ret = -1;
			break;
		}
		if ((st.st_mode & 0700) != 0700)
			fchmodat(dirfd, e->d_name, (st.st_mode & 07777) | 0700, 0);
		/* An empty directory we cannot open (overlayfs's work/work made
		 * by a privileged mounter) can still be removed. */
		if (unlinkat(dirfd, e->d_name, AT_REMOVEDIR) == 0)
			continue;
		sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0 || remove_at(sub, dev) || unlinkat(dirfd, e->d_name, AT_REMOVEDIR))
			ret = -1;
	}
	closedir(d);
	return ret;
}

int gm_cow_remove_tree(const char *dir, gm_error *err)
{
	struct stat st;
	int fd;

	if (lstat(dir, &st))
		return errno == ENOENT ? 0 : gm_error_errno(err, "%s", dir);
	if (!S_ISDIR(st.st_mode)) {
		if (unlink(dir))
			return gm_error_errno(err, "cannot remove %s", dir);
		return 0;
	}
	if (gm_cow_is_mounted(dir, NULL))
		return gm_error_set(err, GM_EIO, "cannot remove %s: it is a mount point", dir);
	if ((st.st_mode & 0700) != 0700)
		chmod(dir, (st.st_mode & 07777) | 0700);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || remove_at(fd, st.st_dev) || rmdir(dir)) {
		if (errno == EBUSY)
			return gm_error_set(err, GM_EIO, "cannot remove %s: a filesystem is mounted under it",
					    dir);
		return gm_error_errno(err, "cannot remove %s", dir);
	}
	return 0;
}
