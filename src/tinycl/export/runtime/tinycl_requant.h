/*
 * The one requantization rule of tinycl (tinycl.quant.fixed_point, module docstring):
 *
 *     y = clamp((acc * multiplier + 2**(right_shift - 1)) >> right_shift, 0, hi)
 *
 * with an int64 intermediate and an arithmetic (flooring) shift: one rounding, half toward
 * +infinity (CMSIS-NN arm_nn_requantize with CMSIS_NN_USE_SINGLE_ROUNDING). multiplier is
 * in [2**30, 2**31) or 0 and right_shift in 1..62, so |acc * multiplier| < 2**62 and the sum
 * cannot overflow int64. Python reference: tinycl.quant.fixed_point.requantize_scalar.
 */
#ifndef TINYCL_REQUANT_H
#define TINYCL_REQUANT_H

#include <stdint.h>

static inline int32_t tinycl_requantize(int32_t acc, int32_t multiplier, int32_t right_shift, int32_t hi)
{
    const int64_t sum = (int64_t)acc * multiplier + ((int64_t)1 << (right_shift - 1));
    uint64_t code;
    /* A negative sum floors to a negative code, which the clamp turns into 0: returning early
     * leaves only non-negative values to shift, and they are shifted unsigned because >> of
     * a negative signed integer is implementation-defined in C99. */
    if (sum < 0) {
        return 0;
    }
    code = (uint64_t)sum >> right_shift;
    return code > (uint64_t)hi ? hi : (int32_t)code;
}

static inline uint8_t tinycl_requantize_u8(int32_t acc, int32_t multiplier, int32_t right_shift)
{
    return (uint8_t)tinycl_requantize(acc, multiplier, right_shift, 255);
}

/*
 * The same rule into any code range [lo, hi] (tinycl.quant.int_blocks: ReLU6 clamps at
 * 0..hi, linear bottlenecks and residual adds at -127..127, the add's operand rescaling at the
 * int32 range). A negative sum is floored by hand (-((-sum + 2**n - 1) >> n), unsigned shifts
 * only): >> of a negative signed integer is implementation-defined in C99. -sum cannot
 * overflow: |sum| < 2**62.
 */
static inline int32_t tinycl_requantize_range(int32_t acc, int32_t multiplier, int32_t right_shift, int32_t lo,
                                              int32_t hi)
{
    const int64_t sum = (int64_t)acc * multiplier + ((int64_t)1 << (right_shift - 1));
    int64_t code;
    if (sum >= 0) {
        code = (int64_t)((uint64_t)sum >> right_shift);
    } else {
        code = -(int64_t)(((uint64_t)(-sum) + (((uint64_t)1 << right_shift) - 1)) >> right_shift);
    }
    return code < lo ? lo : (code > hi ? hi : (int32_t)code);
}

/* A code in -128..255 as the byte an activation buffer holds: UINT8 codes as they are, INT8
 * codes in two's complement (a conversion to an unsigned type is defined modulo 2**8 in C99;
 * a reader of a signed buffer reads it through const int8_t *, exact-width and so two's
 * complement). */
static inline uint8_t tinycl_code_byte(int32_t code)
{
    return (uint8_t)code;
}

#endif /* TINYCL_REQUANT_H */
