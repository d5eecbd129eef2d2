/*
 * clock.h - deadlines for pthread_cond_timedwait, which waits on
 * CLOCK_REALTIME (the default attribute of every condition variable here).
 */
#ifndef GM_CLOCK_H
#define GM_CLOCK_H

#include <time.h>

/* The CLOCK_REALTIME instant ms milliseconds from now (ms >= 0), normalized. */
struct timespec gm_deadline_ms(long ms);

#endif
