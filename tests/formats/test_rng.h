/* test_rng.h — the formats tests' deterministic random numbers: xorshift64 uniforms in (0, 1) and
 * Box-Muller normals. The including file defines TEST_RNG_SEED (a uint64_t) before including it. */
#ifndef LMX_TESTS_FORMATS_TEST_RNG_H
#define LMX_TESTS_FORMATS_TEST_RNG_H

#include <math.h>
#include <stdint.h>

static uint64_t rng_state = TEST_RNG_SEED;
static double urand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((rng_state >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static float nrand(void) { return (float)(sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand())); }

#endif
