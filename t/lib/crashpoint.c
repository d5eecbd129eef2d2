/*
 * crashpoint.c - an LD_PRELOAD library for the crash-consistency tests
 * (t/t9000-crash.sh, contrib/crash/run.sh): it kills the command under
 * test, with SIGKILL, at its N-th file-system change.
 *
 * Every call that changes files - write, pwrite, ftruncate, fsync,
 * fdatasync, copy_file_range, rename*, link*, symlink*, unlink*, mkdir*,
 * rmdir - counts as one point, in the command and in every process it
 * starts (git, git-lfs: they inherit LD_PRELOAD), through one counter in a
 * shared file.  With GM_CRASH_AT=N the N-th point kills the whole process
 * group before the call is made (run the command under setsid); with
 * GM_CRASH_AT unset or 0 nothing is killed and the counter only counts,
 * which tells the test how many points a command has.
 *
 *   GM_CRASH_COUNTER  a file of at least 8 bytes (the counter, shared);
 *                     without it the library does nothing
 *   GM_CRASH_AT       the point to die at (1-based)
 *
 * Test code only: it is never linked into git-model.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static volatile uint64_t *counter; /* shared between the processes */
static uint64_t crash_at;
static int state;                  /* 0: not set up, 1: active, 2: off */

static void setup(void)
{
	const char *path = getenv("GM_CRASH_COUNTER"), *at = getenv("GM_CRASH_AT");
	void *map;
	int fd;

	state = 2;
	if (!path || !*path)
		return;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return;
	map = mmap(NULL, 8, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return;
	counter = map;
	crash_at = at ? strtoull(at, NULL, 10) : 0;
	state = 1;
}

/* One point: counts it, and dies when it is the one. */
static void point(void)
{
	uint64_t n;

	if (!state)
		setup();
	if (state != 1)
		return;
	n = __atomic_add_fetch(counter, 1, __ATOMIC_SEQ_CST);
	if (crash_at && n == crash_at) {
		kill(0, SIGKILL);
		raise(SIGKILL);
	}
}

/* The next definition of a libc function (the real one). */
#define REAL(name) \
	static __typeof__(name) *real_##name; \
	if (!real_##name) \
		real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t n)
{
	REAL(write);
	point();
	return real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite);
	point();
	return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	REAL(pwrite64);
	point();
	return real_pwrite64(fd, buf, n, off);
}

int ftruncate(int fd, off_t len)
{
	REAL(ftruncate);
	point();
	return real_ftruncate(fd, len);
}

int fsync(int fd)
{
	REAL(fsync);
	point();
	return real_fsync(fd);
}

int fdatasync(int fd)
{
	REAL(fdatasync);
	point();
	return real_fdatasync(fd);
}

ssize_t copy_file_range(int in, off64_t *in_off, int out, off64_t *out_off, size_t n, unsigned int flags)
{
	REAL(copy_file_range);
	point();
	return real_copy_file_range(in, in_off, out, out_off, n, flags);
}

int rename(const char *a, const char *b)
{
	REAL(rename);
	point();
	return real_rename(a, b);
}

int renameat(int da, const char *a, int db, const char *b)
{
	REAL(renameat);
	point();
	return real_renameat(da, a, db, b);
}

int renameat2(int da, const char *a, int db, const char *b, unsigned int flags)
{
	REAL(renameat2);
	point();
	return real_renameat2(da, a, db, b, flags);
}

int link(const char *a, const char *b)
{
	REAL(link);
	point();
	return real_link(a, b);
}

int linkat(int da, const char *a, int db, const char *b, int flags)
{
	REAL(linkat);
	point();
	return real_linkat(da, a, db, b, flags);
}

int symlink(const char *a, const char *b)
{
	REAL(symlink);
	point();
	return real_symlink(a, b);
}

int symlinkat(const char *a, int d, const char *b)
{
	REAL(symlinkat);
	point();
	return real_symlinkat(a, d, b);
}

int unlink(const char *a)
{
	REAL(unlink);
	point();
	return real_unlink(a);
}

int unlinkat(int d, const char *a, int flags)
{
	REAL(unlinkat);
	point();
	return real_unlinkat(d, a, flags);
}

int mkdir(const char *a, mode_t mode)
{
	REAL(mkdir);
	point();
	return real_mkdir(a, mode);
}

int mkdirat(int d, const char *a, mode_t mode)
{
	REAL(mkdirat);
	point();
	return real_mkdirat(d, a, mode);
}

int rmdir(const char *a)
{
	REAL(rmdir);
	point();
	return real_rmdir(a);
}
