/* log.c - leveled diagnostics on stderr. */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>

static int log_level = GM_LOG_WARN;

void gm_log_set_level(int level)
{
	if (level < GM_LOG_QUIET)
		level = GM_LOG_QUIET;
	log_level = level;
}

int gm_log_level(void)
{
	return log_level;
}

static void vlog(int level, const char *prefix, const char *fmt, va_list ap)
{
	if (level > log_level)
		return;
	fputs(prefix, stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

#define GM_DEFINE_LOG(name, level, prefix)         \
	void name(const char *fmt, ...)             \
	{                                           \
		va_list ap;                         \
		va_start(ap, fmt);                  \
		vlog(level, prefix, fmt, ap);       \
		va_end(ap);                         \
	}

GM_DEFINE_LOG(gm_warn, GM_LOG_WARN, "warning: ")
GM_DEFINE_LOG(gm_info, GM_LOG_INFO, "")
GM_DEFINE_LOG(gm_debug, GM_LOG_DEBUG, "debug: ")
