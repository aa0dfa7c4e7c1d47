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

#endif /* TINYCL_REQUANT_H */
