/* rng.c - xoshiro256** and normal variates. */
#include "base/rng.h"

#include <fcntl.h>
#include <math.h>
#include <time.h>
#include <unistd.h>

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void gm_rng_seed(gm_rng *r, uint64_t seed)
{
	int i;

	for (i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

void gm_rng_seed_stream(gm_rng *r, uint64_t seed, uint64_t a, uint64_t b)
{
	uint64_t x = seed;
	uint64_t mixed = splitmix64(&x) ^ (a * 0xd1b54a32d192ed03ULL);

	x = mixed;
	mixed = splitmix64(&x) ^ (b * 0x8cb92ba72f3d8dd7ULL);
	gm_rng_seed(r, mixed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t gm_rng_next(gm_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

float gm_rng_uniform(gm_rng *r)
{
	return (float)(gm_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

void gm_rng_normal(gm_rng *r, float *out, uint64_t n, float mean, float std)
{
	uint64_t i;

	for (i = 0; i < n; i += 2) {
		uint64_t bits = gm_rng_next(r);
		/* Two 32-bit uniforms; u1 in (0, 1] so log(u1) is finite. */
		double u1 = ((double)(bits >> 32) + 1.0) * (1.0 / 4294967296.0);
		double u2 = (double)(bits & 0xffffffffu) * (1.0 / 4294967296.0);
		double rad = sqrt(-2.0 * log(u1));
		double ang = 6.283185307179586 * u2;

		out[i] = mean + std * (float)(rad * cos(ang));
		if (i + 1 < n)
			out[i + 1] = mean + std * (float)(rad * sin(ang));
	}
}

uint64_t gm_hash_str(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

uint64_t gm_rng_entropy(void)
{
	uint64_t s = 0;
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	struct timespec ts;

	if (fd >= 0) {
		if (read(fd, &s, sizeof(s)) != (ssize_t)sizeof(s))
			s = 0;
		close(fd);
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	return s ^ ((uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 32);
}
