/*
 * fuzz-common.h - what the libFuzzer targets of contrib/fuzz share: the
 * CHECK macro that turns a broken invariant into a crash libFuzzer saves,
 * the splitting of one input into several files, and scratch space.
 *
 * Header-only (static functions): each target is one translation unit
 * linked with the instrumented libcore archive, see README.md.
 */
#ifndef GM_FUZZ_COMMON_H
#define GM_FUZZ_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/fs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A checked invariant: abort() so that libFuzzer records the input. */
#define CHECK(cond)                                                                              \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                 \
		}                                                                                \
	} while (0)

/*
 * With GM_FUZZ_VERBOSE set in the environment, the targets say what they
 * decided ("refused: MESSAGE" or "accepted: WHAT") on stderr: for replaying
 * one input by hand, and for checking that the valid-* and bad-* seeds get
 * the verdict their names promise.
 */
static inline int fuzz_verbose(void)
{
	static int v = -1;

	if (v < 0)
		v = getenv("GM_FUZZ_VERBOSE") != NULL;
	return v;
}

static inline void fuzz_accepted(const char *what)
{
	if (fuzz_verbose())
		fprintf(stderr, "accepted: %s\n", what);
}

/* A refusal explains itself: a negative code and a non-empty message. */
#define CHECK_REFUSAL(ret, err)                                                                  \
	do {                                                                                     \
		if (fuzz_verbose())                                                              \
			fprintf(stderr, "refused: %s\n", (err).msg);                             \
		if ((ret) >= 0 || !(err).msg[0] || (err).code != (ret)) {                         \
			fprintf(stderr, "refusal without a message at %s:%d: ret %d, code %d, '%s'\n", \
				__FILE__, __LINE__, (int)(ret), (err).code, (err).msg);            \
			abort();                                                                 \
		}                                                                                \
	} while (0)

/*
 * Inputs made of several files separate them with this line; the seeds are
 * written that way (see README.md), and libFuzzer's dictionary-free
 * mutations keep it intact often enough.
 */
#define FUZZ_SPLIT "\n--8<--\n"

/*
 * Splits data at the first FUZZ_SPLIT into [data, *len1) and the rest.
 * Without a separator the second part is empty.
 */
static inline void fuzz_split(const uint8_t *data, size_t size, size_t *len1, const uint8_t **rest,
			      size_t *rest_len)
{
	const size_t n = sizeof(FUZZ_SPLIT) - 1;
	const uint8_t *p = size >= n ? memmem(data, size, FUZZ_SPLIT, n) : NULL;

	if (!p) {
		*len1 = size;
		*rest = data + size;
		*rest_len = 0;
		return;
	}
	*len1 = (size_t)(p - data);
	*rest = p + n;
	*rest_len = size - *len1 - n;
}

/*
 * A private scratch directory for this process, on tmpfs when there is one
 * (the targets that need files write small ones for every input).
 */
static char fuzz_dir[256];

static inline void fuzz_scratch_remove(void)
{
	if (fuzz_dir[0])
		gm_remove_tree(fuzz_dir, NULL);
}

static inline const char *fuzz_scratch_dir(const char *tag)
{
	char *dir = fuzz_dir;

	if (!dir[0]) {
		const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
		snprintf(dir, sizeof(fuzz_dir), "%s/gm-fuzz-%s-%ld", base, tag, (long)getpid());
		gm_remove_tree(dir, NULL);
		if (mkdir(dir, 0700) && errno != EEXIST) {
			perror(dir);
			abort();
		}
		atexit(fuzz_scratch_remove);
	}
	return dir;
}

/* Writes a whole file (the environment failing is not a finding: abort loudly). */
static inline void fuzz_write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0 || gm_write_all(fd, data, len) < 0 || close(fd)) {
		perror(path);
		abort();
	}
}

/* An anonymous file holding data, positioned at its start (for fd-reading code). */
static inline int fuzz_memfd(const void *data, size_t len)
{
	int fd = memfd_create("gm-fuzz", MFD_CLOEXEC);

	if (fd < 0 || (len && gm_write_all(fd, data, len) < 0) || lseek(fd, 0, SEEK_SET) != 0) {
		perror("memfd");
		abort();
	}
	return fd;
}

/* 1 when s[0..n) is valid UTF-8 (no surrogates, no overlongs, <= U+10FFFF). */
static inline int fuzz_utf8_valid(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i];
		size_t k, len;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			len = 2, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			len = 3, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			len = 4, cp = c & 0x07;
		else
			return 0;
		if (i + len > n)
			return 0;
		for (k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += len;
	}
	return 1;
}

#endif
