/*
 * sysmem.c - available memory (sysmem.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/sysmem.h"

/* One unsigned number read from a file, or 0 ("max", missing, malformed). */
static uint64_t read_u64_file(const char *path)
{
	unsigned long long v = 0;
	FILE *fp = fopen(path, "r");

	if (!fp)
		return 0;
	if (fscanf(fp, "%llu", &v) != 1)
		v = 0;
	fclose(fp);
	return (uint64_t)v;
}

static uint64_t meminfo_available(void)
{
	char line[256];
	unsigned long long kb = 0;
	FILE *fp = fopen("/proc/meminfo", "r");

	if (!fp)
		return 0;
	while (fgets(line, sizeof(line), fp))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	fclose(fp);
	return (uint64_t)kb * 1024;
}

/* What the cgroup (v2) we run in still allows; 0 when unlimited or unknown. */
static uint64_t cgroup_available(void)
{
	char line[4096], path[4200], dir[4096];
	FILE *fp = fopen("/proc/self/cgroup", "r");
	uint64_t max, cur;
	int found = 0;

	if (!fp)
		return 0;
	while (fgets(line, sizeof(line), fp)) {
		size_t n;

		if (line[0] != '0' || line[1] != ':' || line[2] != ':')
			continue; /* only the v2 hierarchy, "0::/path" */
		for (n = 0; line[n] && line[n] != '\n'; n++)
			;
		line[n] = '\0';
		snprintf(dir, sizeof(dir), "%s", line + 3);
		found = 1;
		break;
	}
	fclose(fp);
	if (!found)
		return 0;
	snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", dir);
	if (!(max = read_u64_file(path)))
		return 0;
	snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.current", dir);
	cur = read_u64_file(path);
	return max > cur ? max - cur : 1;
}

uint64_t gm_mem_available(void)
{
	const char *env = getenv("GM_MEM_AVAILABLE");
	uint64_t avail, cg;

	if (env && *env) {
		char *end;
		unsigned long long v;

		errno = 0;
		v = strtoull(env, &end, 10);
		if (!errno && !*end)
			return (uint64_t)v;
	}
	avail = meminfo_available();
	cg = cgroup_available();
	if (cg && (!avail || cg < avail))
		avail = cg;
	return avail;
}
