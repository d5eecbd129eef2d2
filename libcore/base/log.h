/*
 * log.h - leveled diagnostics on stderr.
 *
 * The verbosity is a process-wide setting (commands map -q/-v to it);
 * messages above it are dropped.  The library logs progress and warnings
 * here, never errors: those travel in gm_error.
 */
#ifndef GM_LOG_H
#define GM_LOG_H

enum gm_log_level {
	GM_LOG_QUIET = -1, /* errors only (printed by the command) */
	GM_LOG_WARN = 0,   /* default: warnings */
	GM_LOG_INFO = 1,   /* -v */
	GM_LOG_DEBUG = 2   /* -vv */
};

void gm_log_set_level(int level);
int gm_log_level(void);

void gm_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void gm_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void gm_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
