/* rng.c: keyed counter-based randomness (DESIGN §3). A draw is a pure
 * function of (seed, purpose, a, b, c), e.g. (seed, RNG_PRIOR, layer,
 * position, channel), so results never depend on thread count or order, and
 * resampling one position changes no other position's noise. */
#include <math.h>
#include "internal.h"

static inline uint64_t mix64(uint64_t z) {   /* splitmix64 finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t rng_key(uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ULL);
    h = mix64(h ^ (purpose + 0x632be59bd9b4e019ULL));
    h = mix64(h ^ (a + 0x8cb92ba72f3d8dd7ULL));
    h = mix64(h ^ (b + 0x2545f4914f6cdd1dULL));
    h = mix64(h ^ (c + 0x9e3779b97f4a7c15ULL));
    return h;
}

double rng_uniform(uint64_t key) {
    /* 53 random bits, shifted off 0: (k + 0.5) / 2^53 in (0, 1) */
    uint64_t r = mix64(key ^ 0xd1b54a32d192ed03ULL) >> 11;
    return ((double)r + 0.5) * (1.0 / 9007199254740992.0);
}

double rng_normal(uint64_t key) {
    /* Box-Muller from two independent uniforms derived from the key */
    double u1 = rng_uniform(key);
    double u2 = rng_uniform(mix64(key + 0x5851f42d4c957f2dULL));
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}
