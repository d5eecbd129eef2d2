/*
 * libgit.h - libgit2's process-wide set-up and its errors as gm_error.
 *
 * The lowest storage module: lfs*, repo*, bundle and worktree all use it,
 * so none of them needs another just to get libgit2 started or to report
 * its failures.  Registering the in-process lfs filter is not done here
 * (that is lfs-filter.h, one layer up): gm_repo_global_init does both.
 */
#ifndef GM_LIBGIT_H
#define GM_LIBGIT_H

#include "base/error.h"

/*
 * Initialises libgit2 once for the process (it is never shut down).  When
 * GIT_CONFIG_NOSYSTEM is set, libgit2 is told not to read the system
 * configuration either, as git does: tests and CI run without one.
 */
int gm_libgit_init(gm_error *err);

/* git_libgit2_init alone, reference counted (pair it with
 * git_libgit2_shutdown, or keep it for the process); 0 or -1. */
int gm_libgit_use(void);

/* Fills err with FMT, then ": <libgit2's last message>" when it has one;
 * returns code. */
int gm_libgit_error(gm_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Fills err with "WHAT: <libgit2's last message>" ("libgit2 error" when
 * it has none); returns code. */
int gm_libgit_fail(gm_error *err, int code, const char *what);

#endif
