#include "tinycl_runtime.h"

/*
 * exp and log in portable float arithmetic: bare-metal builds link no C library (no libm), and
 * a float-only implementation gives the same bits on every target (-ffp-contract=off).
 * Python references: tinycl.export.reference_train.tinycl_expf / tinycl_logf (numpy's float64
 * exp / log, rounded to float32; tests hold these within 2 units in the last place).
 *
 * expf: x = k ln2 + r with |r| <= ln2 / 2, ln2 split in two (Cody & Waite 1980) so that k * ln2_hi
 * is exact; exp(r) by its Taylor polynomial to r^7 (truncation < 6e-9 relative), Horner form;
 * then times 2^k built from the exponent bits (in two steps below 2^-126).
 * logf: x = m 2^e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m - 1) / (m + 1),
 * |s| < 0.172, by its odd series to s^9 (truncation < 1e-9 relative); plus e ln2 (two parts).
 */
typedef union {
    float value;
    uint32_t bits;
} float_bits;

static float from_bits(uint32_t bits)
{
    float_bits v;
    v.bits = bits;
    return v.value;
}

static const float LN2_HI = 0.693145751953125f;          /* 0x3f317200: 15 significant bits */
static const float LN2_LO = 1.428606765330187045e-06f;   /* ln 2 - LN2_HI */
static const float LOG2_E = 1.442695040888963407f;

float tinycl_expf(float x)
{
    float t, r, p;
    int32_t k;
    if (x != x) {
        return x;
    }
    if (x > 88.72283935546875f) {
        return from_bits(0x7f800000u); /* +inf */
    }
    if (x < -103.97208404541015625f) {
        return 0.0f;
    }
    t = x * LOG2_E;
    k = (int32_t)(t < 0.0f ? t - 0.5f : t + 0.5f);
    r = (x - (float)k * LN2_HI) - (float)k * LN2_LO;
    p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6.0f + r * (1.0f / 24.0f + r * (1.0f / 120.0f
        + r * (1.0f / 720.0f + r * (1.0f / 5040.0f)))))));
    if (k >= -126) {
        return p * from_bits((uint32_t)(k + 127) << 23);
    }
    return p * from_bits((uint32_t)(k + 127 + 64) << 23) * from_bits((uint32_t)(127 - 64) << 23);
}

float tinycl_logf(float x)
{
    float_bits v;
    int32_t e;
    float m, s, s2, log_m;
    if (x != x || x < 0.0f) {
        return from_bits(0x7fc00000u); /* NaN */
    }
    if (x == 0.0f) {
        return from_bits(0xff800000u); /* -inf */
    }
    v.value = x;
    if (v.bits >= 0x7f800000u) {
        return x; /* +inf */
    }
    e = 0;
    if (v.bits < 0x00800000u) { /* subnormal: scale into the normal range */
        v.value = x * from_bits((uint32_t)(127 + 25) << 23);
        e = -25;
    }
    e += (int32_t)(v.bits >> 23) - 127;
    v.bits = (v.bits & 0x007fffffu) | 0x3f800000u; /* m in [1, 2) */
    m = v.value;
    if (m > 1.41421353816986083984f) {
        m *= 0.5f;
        e += 1;
    }
    s = (m - 1.0f) / (m + 1.0f);
    s2 = s * s;
    log_m = 2.0f * s * (1.0f + s2 * (1.0f / 3.0f + s2 * (1.0f / 5.0f + s2 * (1.0f / 7.0f + s2 * (1.0f / 9.0f)))));
    return (float)e * LN2_HI + ((float)e * LN2_LO + log_m);
}
