/*
 * rng.h - a small, fast, seedable random number generator (xoshiro256**,
 * seeded through splitmix64) with uniform and normal draws.
 *
 * Streams are deterministic: the same seed gives the same numbers on every
 * machine, which synthetic models and (later) sampling rely on.
 */
#ifndef GM_RNG_H
#define GM_RNG_H

#include <stdint.h>

typedef struct gm_rng {
	uint64_t s[4];
} gm_rng;

void gm_rng_seed(gm_rng *r, uint64_t seed);
/* Seeds an independent stream from a seed and two stream coordinates. */
void gm_rng_seed_stream(gm_rng *r, uint64_t seed, uint64_t a, uint64_t b);
uint64_t gm_rng_next(gm_rng *r);
/* Uniform in [0, 1) with 24 random bits (exact in float). */
float gm_rng_uniform(gm_rng *r);
/* Standard normal (Box-Muller); fills n values. */
void gm_rng_normal(gm_rng *r, float *out, uint64_t n, float mean, float std);

/*
 * A seed nobody chose: /dev/urandom mixed with the clock and the process
 * id (the clock and pid alone when /dev/urandom cannot be read).
 */
uint64_t gm_rng_entropy(void);

/* 64-bit FNV-1a of a string, to derive stream ids from tensor names. */
uint64_t gm_hash_str(const char *s);

#endif
