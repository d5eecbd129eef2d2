/*
 * libgit.c - libgit2 set-up and error messages (see libgit.h).
 */
#include <stdarg.h>
#include <stdlib.h>

#include <git2.h>

#include "base/buf.h"
#include "storage/libgit.h"

int gm_libgit_init(gm_error *err)
{
	static int done;

	if (done)
		return 0;
	if (git_libgit2_init() < 0)
		return gm_libgit_error(err, GM_ERROR, "cannot initialize libgit2");
	/* Our tests and users' CI give HOME-less or config-less environments;
	 * libgit2 must not search the real user's files when GIT_CONFIG_NOSYSTEM
	 * asks it not to. */
	if (getenv("GIT_CONFIG_NOSYSTEM"))
		git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, GIT_CONFIG_LEVEL_SYSTEM, "");
	done = 1;
	return 0;
}

int gm_libgit_use(void)
{
	return git_libgit2_init() < 0 ? -1 : 0;
}

int gm_libgit_error(gm_error *err, int code, const char *fmt, ...)
{
	const git_error *e = git_error_last();
	gm_buf b = GM_BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	gm_buf_vaddf(&b, fmt, ap);
	va_end(ap);
	if (e && e->message)
		gm_buf_addf(&b, ": %s", e->message);
	gm_error_set(err, code, "%s", b.buf);
	gm_buf_release(&b);
	return code;
}

int gm_libgit_fail(gm_error *err, int code, const char *what)
{
	const git_error *e = git_error_last();

	return gm_error_set(err, code, "%s: %s", what, e && e->message ? e->message : "libgit2 error");
}
