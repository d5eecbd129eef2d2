/*
 * sysmem.h - how much memory the machine can give us, so that a context,
 * a KV pool or a training batch that cannot fit is refused up front, with
 * the numbers, instead of the process being killed half way.
 */
#ifndef GM_SYSMEM_H
#define GM_SYSMEM_H

#include <stdint.h>

/*
 * Bytes the kernel estimates can be allocated without swapping
 * (/proc/meminfo MemAvailable), lowered to the cgroup's memory.max less
 * its memory.current when that is smaller; the environment variable
 * GM_MEM_AVAILABLE (bytes) overrides both, for tests.  0 when unknown:
 * callers then do not refuse anything.
 */
uint64_t gm_mem_available(void);

#endif
