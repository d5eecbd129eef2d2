/*
 * git-model-mount - mounts and unmounts the overlays of git-model worktrees
 * for a user who may not mount.
 *
 *     git-model-mount mount LOWER UPPER WORK TARGET
 *     git-model-mount umount TARGET
 *
 * This is the only git-model code that may run with privileges (installed
 * setuid root, or with CAP_SYS_ADMIN, by an administrator's choice; see
 * git-model-mount(1)), so it does one thing and trusts nothing it is given:
 *
 *   - every path is looked at with the caller's filesystem identity
 *     (setfsuid/setfsgid to the real uid/gid), so it can reach nothing the
 *     caller could not;
 *   - paths with overlayfs option syntax (',' ':' '=' '\\') or control
 *     characters are refused, before and after resolving symbolic links;
 *   - every resolved path must lie in one of the caller's registered model
 *     areas (the repositories and worktrees listed in the caller's own
 *     git-model registry); the target must be a registered worktree or lie
 *     in a model's repository;
 *   - lower, upper, work and target must be directories owned by the caller;
 *     the target must be empty and not already a mount point;
 *   - each directory is opened once and handed to the kernel as
 *     /proc/self/fd/N, so a symbolic link swapped in after the checks
 *     changes nothing;
 *   - the mount is nosuid,nodev with redirect_dir, metacopy and index off,
 *     and carries the caller's marker as its source ("git-model-mount-UID");
 *     umount only removes a mount carrying the caller's marker;
 *   - what it did or refused goes to syslog (authpriv).
 *
 * It links only libsqlite3 (to read the registry) and the C library.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <syslog.h>
#include <unistd.h>

#include <sqlite3.h>

#include "mount-check.h"

#define USAGE "usage: git-model-mount mount <lower> <upper> <work> <target>\n" \
	      "   or: git-model-mount umount <target>\n"

static uid_t ruid;
static gid_t rgid;

/* The caller's registered areas. */
struct areas {
	char **models;     /* repository work trees, resolved */
	size_t n_models;
	char **worktrees;  /* registered worktree paths, resolved */
	size_t n_worktrees;
};

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;
	char msg[2 * PATH_MAX];

	char *p;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* A refused path may hold a newline: it must not forge log lines. */
	for (p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	fprintf(stderr, "git-model-mount: %s\n", msg);
	syslog(LOG_AUTHPRIV | LOG_WARNING, "uid %lu: refused: %s", (unsigned long)ruid, msg);
	return 1;
}

/* Filesystem identity of the caller from here on; privileges stay only for
 * mount(2) itself (CAP_SYS_ADMIN is not a filesystem capability). */
static int become_caller_on_fs(void)
{
	setfsgid(rgid);
	setfsuid(ruid);
	if ((uid_t)setfsuid((uid_t)-1) != ruid || (gid_t)setfsgid((gid_t)-1) != rgid)
		return -1;
	return 0;
}

static char *registry_path(void)
{
	const char *env = getenv("GIT_MODEL_REGISTRY"), *data = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
	struct passwd *pw;
	char buf[PATH_MAX];

	if (env && *env)
		return strdup(env);
	if (data && *data == '/') {
		snprintf(buf, sizeof(buf), "%s/git-model/registry.db", data);
		return strdup(buf);
	}
	if (!home || !*home) {
		pw = getpwuid(ruid);
		home = pw ? pw->pw_dir : NULL;
	}
	if (!home)
		return NULL;
	snprintf(buf, sizeof(buf), "%s/.local/share/git-model/registry.db", home);
	return strdup(buf);
}

static void push(char ***v, size_t *n, const char *path)
{
	char resolved[PATH_MAX];

	if (!realpath(path, resolved))
		return; /* a model whose directory is gone covers nothing */
	*v = realloc(*v, (*n + 1) * sizeof(**v));
	if (!*v)
		abort();
	(*v)[(*n)++] = strdup(resolved);
}

/* Reads the caller's registry (opened with the caller's identity, and
 * required to belong to the caller). */
static int load_areas(struct areas *a)
{
	char *path = registry_path();
	sqlite3 *db = NULL;
	sqlite3_stmt *st;
	struct stat sb;
	int ret = -1;

	memset(a, 0, sizeof(*a));
	if (!path)
		return fail("cannot locate your git-model registry (HOME is not set)");
	if (stat(path, &sb)) {
		ret = fail("your git-model registry %s: %s", path, strerror(errno));
		goto out;
	}
	if (sb.st_uid != ruid) {
		ret = fail("%s is not your registry (owned by uid %lu)", path, (unsigned long)sb.st_uid);
		goto out;
	}
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		ret = fail("cannot open the registry %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
		goto out;
	}
	sqlite3_busy_timeout(db, 10000);
	if (sqlite3_prepare_v2(db, "SELECT path FROM models", -1, &st, NULL) != SQLITE_OK) {
		ret = fail("registry %s: %s", path, sqlite3_errmsg(db));
		goto out;
	}
	while (sqlite3_step(st) == SQLITE_ROW)
		push(&a->models, &a->n_models, (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	if (sqlite3_prepare_v2(db, "SELECT path FROM worktrees", -1, &st, NULL) != SQLITE_OK) {
		ret = fail("registry %s: %s", path, sqlite3_errmsg(db));
		goto out;
	}
	while (sqlite3_step(st) == SQLITE_ROW)
		push(&a->worktrees, &a->n_worktrees, (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	ret = 0;
out:
	sqlite3_close(db);
	free(path);
	return ret;
}

static int in_model_area(const struct areas *a, const char *resolved)
{
	size_t i;

	for (i = 0; i < a->n_models; i++)
		if (gmm_path_within(a->models[i], resolved))
			return 1;
	return 0;
}

static int is_worktree(const struct areas *a, const char *resolved)
{
	size_t i;

	for (i = 0; i < a->n_worktrees; i++)
		if (!strcmp(a->worktrees[i], resolved))
			return 1;
	return 0;
}

/*
 * Checks one argument and opens it: the characters, then the resolved path
 * (symbolic links followed with the caller's identity) against the areas,
 * then an O_PATH descriptor of exactly that directory, owned by the caller.
 * Returns the descriptor, or -1 after reporting.
 */
static int open_checked(const char *what, const char *arg, const struct areas *a, int target,
			char resolved[PATH_MAX])
{
	const char *why;
	char proc[64], link[PATH_MAX];
	struct stat sb;
	ssize_t n;
	int fd;

	if (gmm_check_path_chars(arg, &why))
		return fail("%s '%s' %s", what, arg, why), -1;
	if (!realpath(arg, resolved))
		return fail("%s '%s': %s", what, arg, strerror(errno)), -1;
	if (gmm_check_path_chars(resolved, &why))
		return fail("%s '%s' resolves to '%s', which %s", what, arg, resolved, why), -1;
	if (target ? !(is_worktree(a, resolved) || in_model_area(a, resolved)) : !in_model_area(a, resolved))
		return fail("%s '%s' (%s) is outside your registered model areas", what, arg, resolved), -1;
	fd = open(resolved, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return fail("%s '%s': %s", what, resolved, strerror(errno)), -1;
	/* The directory opened is the one checked (no component swapped). */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, link, sizeof(link) - 1);
	if (n < 0 || (link[n] = 0, strcmp(link, resolved))) {
		close(fd);
		return fail("%s '%s' changed while it was checked", what, resolved), -1;
	}
	if (fstat(fd, &sb) || !S_ISDIR(sb.st_mode) || sb.st_uid != ruid) {
		close(fd);
		return fail("%s '%s' is not a directory owned by you", what, resolved), -1;
	}
	return fd;
}

static int dir_empty(const char *resolved, int pathfd)
{
	struct stat a, b;
	struct dirent *e;
	DIR *d;
	int fd, empty = 1;

	fd = open(resolved, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (fstat(fd, &a) || fstat(pathfd, &b) || a.st_dev != b.st_dev || a.st_ino != b.st_ino ||
	    !(d = fdopendir(fd))) {
		close(fd);
		return 0;
	}
	while (empty && (e = readdir(d)))
		empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
	closedir(d);
	return empty;
}

/* Finds the mountinfo line of mount id (0: of mount point path); copies
 * its type and source. */
static int find_mount(unsigned long id, const char *path, char *fstype, char *source, size_t size)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char *line = NULL;
	size_t cap = 0;
	int found = 0;

	if (!f)
		return 0;
	while (getline(&line, &cap, f) > 0) {
		struct gmm_mountinfo mi;

		if (gmm_parse_mountinfo(line, &mi))
			continue;
		if (id ? mi.id == id && !strcmp(mi.mount_point, path) : !strcmp(mi.mount_point, path)) {
			snprintf(fstype, size, "%s", mi.fstype);
			snprintf(source, size, "%s", mi.source);
			found = 1;
		}
	}
	free(line);
	fclose(f);
	return found;
}

static int do_mount(char **argv)
{
	static const char *const what[4] = { "lower", "upper", "work", "target" };
	char resolved[4][PATH_MAX], opts[512], target[64], marker[32], fstype[64], source[64];
	struct areas a;
	int fd[4] = { -1, -1, -1, -1 }, i, ret = 1;

	if (load_areas(&a))
		return 1;
	for (i = 0; i < 4; i++)
		if ((fd[i] = open_checked(what[i], argv[i], &a, i == 3, resolved[i])) < 0)
			goto out;
	if (find_mount(0, resolved[3], fstype, source, sizeof(fstype))) {
		fail("target '%s' is already a mount point", resolved[3]);
		goto out;
	}
	if (!dir_empty(resolved[3], fd[3])) {
		fail("target '%s' is not empty", resolved[3]);
		goto out;
	}
	for (i = 0; i < 3; i++)
		if (!strcmp(resolved[i], resolved[3]) || gmm_path_within(resolved[i], resolved[3]) ||
		    gmm_path_within(resolved[3], resolved[i])) {
			fail("%s '%s' and target '%s' overlap", what[i], resolved[i], resolved[3]);
			goto out;
		}
	snprintf(opts, sizeof(opts),
		 "lowerdir=/proc/self/fd/%d,upperdir=/proc/self/fd/%d,workdir=/proc/self/fd/%d,"
		 "redirect_dir=nofollow,metacopy=off,index=off", fd[0], fd[1], fd[2]);
	snprintf(target, sizeof(target), "/proc/self/fd/%d", fd[3]);
	gmm_marker((unsigned long)ruid, marker, sizeof(marker));
	/* overlayfs resolves the layers with the mounter's credentials:
	 * the descriptors already pin the checked directories. */
	setfsuid(0);
	setfsgid(0);
	ret = mount(marker, target, "overlay", MS_NOSUID | MS_NODEV, opts);
	become_caller_on_fs();
	if (ret) {
		ret = 1;
		fail("cannot mount overlayfs on '%s': %s%s", resolved[3], strerror(errno),
		     errno == EPERM ? " (git-model-mount is not installed setuid root or with CAP_SYS_ADMIN)" : "");
		goto out;
	}
	syslog(LOG_AUTHPRIV | LOG_NOTICE, "uid %lu: mounted overlay on %s (lower %s, upper %s, work %s)",
	       (unsigned long)ruid, resolved[3], resolved[0], resolved[1], resolved[2]);
	printf("mounted overlay on %s\n", resolved[3]);
	ret = 0;
out:
	for (i = 0; i < 4; i++)
		if (fd[i] >= 0)
			close(fd[i]);
	return ret;
}

static int do_umount(char **argv)
{
	char resolved[PATH_MAX], proc[64], marker[32], fstype[64], source[64];
	struct statx sx;
	struct areas a;
	int fd, ret = 1;

	if (load_areas(&a))
		return 1;
	if ((fd = open_checked("target", argv[0], &a, 1, resolved)) < 0)
		return 1;
	/* The mount this very directory is the root of, by its id. */
	if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &sx) || !(sx.stx_mask & STATX_MNT_ID)) {
		fail("cannot identify the mount at '%s': %s", resolved, strerror(errno));
		goto out;
	}
	gmm_marker((unsigned long)ruid, marker, sizeof(marker));
	if (!find_mount((unsigned long)sx.stx_mnt_id, resolved, fstype, source, sizeof(fstype))) {
		fail("'%s' is not a mount point", resolved);
		goto out;
	}
	if (strcmp(fstype, "overlay") || strcmp(source, marker)) {
		fail("'%s' was not mounted by git-model-mount for you (type %s, source %s)", resolved, fstype,
		     source);
		goto out;
	}
	/* Detached: the descriptor itself holds the mount busy. */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	setfsuid(0);
	ret = umount2(proc, MNT_DETACH);
	become_caller_on_fs();
	if (ret) {
		ret = 1;
		fail("cannot unmount '%s': %s", resolved, strerror(errno));
		goto out;
	}
	syslog(LOG_AUTHPRIV | LOG_NOTICE, "uid %lu: unmounted overlay from %s", (unsigned long)ruid, resolved);
	printf("unmounted %s\n", resolved);
	ret = 0;
out:
	close(fd);
	return ret;
}

int main(int argc, char **argv)
{
	int fd;

	/* Started with 0, 1 or 2 closed, a file opened later would take its
	 * number and receive our messages: keep them taken. */
	for (fd = 0; fd < 3; fd++)
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd)
			return 1;
	ruid = getuid();
	rgid = getgid();
	openlog("git-model-mount", LOG_PID, LOG_AUTHPRIV);
	if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		fputs(USAGE, stdout);
		return 129;
	}
	if (become_caller_on_fs())
		return fail("cannot take your filesystem identity");
	if (argc == 6 && !strcmp(argv[1], "mount"))
		return do_mount(argv + 2);
	if (argc == 3 && !strcmp(argv[1], "umount"))
		return do_umount(argv + 2);
	fputs(USAGE, stderr);
	return 129;
}
