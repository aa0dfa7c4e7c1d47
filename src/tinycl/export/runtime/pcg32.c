#include "tinycl_runtime.h"

/*
 * PCG32 (PCG-XSH-RR, 64-bit state, 32-bit output; O'Neill 2014) and the draws the learner
 * makes with it, transcribed line by line from tinycl.prng.Pcg32 (Python reference of the same
 * behaviour; tests hold both to pcg32-demo's published round 1 and to each other):
 *
 *   next:     old = state; state = old * 6364136223846793005 + inc (mod 2^64);
 *             xorshifted = ((old >> 18) ^ old) >> 27; rot = old >> 59; rotate right by rot
 *   seed:     pcg-c-basic pcg32_srandom_r: state = 0, inc = (stream << 1) | 1, next,
 *             state += seed, next
 *   bounded:  pcg32_boundedrand_r: threshold = 2^32 mod bound; redraw below it; r mod bound
 *   random:   (next >> 8) * 2^-24, a double in [0, 1)
 *   shuffle:  Fisher-Yates from the top: for i = n .. 2: j = bounded(i), swap a[j], a[i - 1]
 *   choice:   the first k steps of that shuffle on 0..n-1; picked[t] = a[n - 1 - t]
 *
 * 64-bit arithmetic is plain C99 (uint64_t); bare-metal 32-bit targets get libgcc's helpers.
 */
#define PCG32_MULTIPLIER 6364136223846793005ULL /* PCG's default 64-bit LCG multiplier */

uint32_t pcg32_next(tinycl_pcg32 *rng)
{
    const uint64_t old = rng->state;
    const uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    const uint32_t rot = (uint32_t)(old >> 59u);
    rng->state = old * PCG32_MULTIPLIER + rng->inc;
    return (xorshifted >> rot) | (xorshifted << ((0u - rot) & 31u));
}

void pcg32_seed(tinycl_pcg32 *rng, uint64_t seed, uint64_t stream)
{
    rng->state = 0u;
    rng->inc = (stream << 1u) | 1u;
    (void)pcg32_next(rng);
    rng->state += seed;
    (void)pcg32_next(rng);
}

uint32_t pcg32_bounded(tinycl_pcg32 *rng, uint32_t bound)
{
    const uint32_t threshold = (0u - bound) % bound;
    for (;;) {
        const uint32_t r = pcg32_next(rng);
        if (r >= threshold) {
            return r % bound;
        }
    }
}

double pcg32_random(tinycl_pcg32 *rng)
{
    return (double)(pcg32_next(rng) >> 8) * (1.0 / 16777216.0);
}

void pcg32_shuffle(tinycl_pcg32 *rng, int32_t *values, int32_t count)
{
    int32_t i;
    for (i = count; i > 1; --i) {
        const int32_t j = (int32_t)pcg32_bounded(rng, (uint32_t)i);
        const int32_t swap = values[j];
        values[j] = values[i - 1];
        values[i - 1] = swap;
    }
}

void pcg32_permutation(tinycl_pcg32 *rng, int32_t count, int32_t *values)
{
    int32_t i;
    for (i = 0; i < count; ++i) {
        values[i] = i;
    }
    pcg32_shuffle(rng, values, count);
}

void pcg32_choice(tinycl_pcg32 *rng, int32_t count, int32_t k, int32_t *scratch, int32_t *picked)
{
    int32_t i, t;
    for (i = 0; i < count; ++i) {
        scratch[i] = i;
    }
    for (t = 0; t < k; ++t) {
        const int32_t top = count - t;
        const int32_t j = (int32_t)pcg32_bounded(rng, (uint32_t)top);
        const int32_t swap = scratch[j];
        scratch[j] = scratch[top - 1];
        scratch[top - 1] = swap;
        picked[t] = scratch[top - 1];
    }
}

/* Ascending order in place (insertion sort: the sparse update sorts a few hundred channels at
 * most, as ChannelSelector.next sorts its choice). */
void sort_int32(int32_t *values, int32_t count)
{
    int32_t i, j;
    for (i = 1; i < count; ++i) {
        const int32_t v = values[i];
        for (j = i; j > 0 && values[j - 1] > v; --j) {
            values[j] = values[j - 1];
        }
        values[j] = v;
    }
}
