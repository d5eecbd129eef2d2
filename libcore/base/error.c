/* error.c - the libcore error object. */
#include "base/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void gm_error_clear(gm_error *err)
{
	if (!err)
		return;
	err->code = 0;
	err->msg[0] = '\0';
}

static void set_va(gm_error *err, int code, const char *fmt, va_list ap)
{
	err->code = code;
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
}

int gm_error_set(gm_error *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return code;
	va_start(ap, fmt);
	set_va(err, code, fmt, ap);
	va_end(ap);
	return code;
}

int gm_error_errno(gm_error *err, const char *fmt, ...)
{
	int saved = errno;
	int code = saved == ENOENT ? GM_ENOENT : saved == ENOMEM ? GM_ENOMEM : GM_EIO;
	va_list ap;
	size_t len;

	if (!err)
		return code;
	va_start(ap, fmt);
	set_va(err, code, fmt, ap);
	va_end(ap);
	len = strlen(err->msg);
	snprintf(err->msg + len, sizeof(err->msg) - len, ": %s", strerror(saved));
	return code;
}

int gm_error_prefix(gm_error *err, const char *fmt, ...)
{
	char out[GM_ERROR_MSG_MAX];
	size_t n, old_len;
	va_list ap;

	if (!err)
		return GM_ERROR;
	va_start(ap, fmt);
	vsnprintf(out, sizeof(out), fmt, ap);
	va_end(ap);
	n = strlen(out);
	if (n + 2 < sizeof(out)) {
		memcpy(out + n, ": ", 3);
		n += 2;
	}
	/* Keep as much of the old message as fits; truncation is acceptable. */
	old_len = strlen(err->msg);
	if (old_len > sizeof(out) - 1 - n)
		old_len = sizeof(out) - 1 - n;
	memcpy(out + n, err->msg, old_len);
	out[n + old_len] = '\0';
	memcpy(err->msg, out, sizeof(out));
	return err->code ? err->code : GM_ERROR;
}

const char *gm_error_code_name(int code)
{
	switch (code) {
	case GM_OK: return "success";
	case GM_ENOENT: return "not found";
	case GM_EINVAL: return "invalid argument";
	case GM_EIO: return "I/O error";
	case GM_ENOMEM: return "out of memory";
	case GM_EFORMAT: return "format error";
	case GM_EUNSUPPORTED: return "unsupported";
	default: return "error";
	}
}
