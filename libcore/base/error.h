/*
 * error.h - the one error type of libcore.
 *
 * Every fallible libcore function returns 0 on success or a negative GM_E*
 * code, and, when given a non-NULL gm_error, fills it with a message a user
 * can act on.  The library never prints errors and never exits; the commands
 * print err.msg and choose the exit status.
 */
#ifndef GM_ERROR_H
#define GM_ERROR_H

#include <stddef.h>

enum gm_error_code {
	GM_OK = 0,
	GM_ERROR = -1,       /* generic failure */
	GM_ENOENT = -2,      /* a file, tensor or key does not exist */
	GM_EINVAL = -3,      /* bad argument or option value */
	GM_EIO = -4,         /* an operating-system call failed */
	GM_ENOMEM = -5,      /* allocation failed */
	GM_EFORMAT = -6,     /* malformed input file */
	GM_EUNSUPPORTED = -7 /* well-formed but not supported (architecture, dtype...) */
};

#define GM_ERROR_MSG_MAX 1024

typedef struct gm_error {
	int code;
	char msg[GM_ERROR_MSG_MAX];
} gm_error;

#define GM_ERROR_INIT { 0, "" }

/* Clears err (NULL is fine). */
void gm_error_clear(gm_error *err);

/* Sets err to code and the printf-style message; returns code, so that
 * "return gm_error_set(err, GM_EFORMAT, ...);" reads naturally. */
int gm_error_set(gm_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Like gm_error_set with code GM_EIO (GM_ENOENT when errno is ENOENT),
 * appending ": strerror(errno)". */
int gm_error_errno(gm_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Prepends "CONTEXT: " to the message already in err; returns err->code. */
int gm_error_prefix(gm_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* A short name for a code ("format error", ...). */
const char *gm_error_code_name(int code);

#endif
