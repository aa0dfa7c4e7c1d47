#include "tinycl_runtime.h"
#include "tinycl_requant.h"

/*
 * Residual add of a block input a and its linear bottleneck b into INT8 codes -127..127,
 * offsets 0, as TFLite's quantized ADD and CMSIS-NN's arm_elementwise_add_s8 compute it
 * (left_shift 20; tinycl.quant.int_blocks, module doc):
 *
 *     a' = requantize(a << 20, multiplier[0], right_shift[0])   into the int32 range
 *     b' = requantize(b << 20, multiplier[1], right_shift[1])   into the int32 range
 *     y  = clamp(requantize(a' + b', multiplier[2], right_shift[2]), -127, 127)
 *
 * Python reference: tinycl.export.reference.residual_add_s8
 * (tinycl.quant.int_blocks.add_int64_reference).
 *
 * a holds `count` bytes, UINT8 codes (a_signed == 0: a ReLU6 output) or INT8 codes in two's
 * complement (a_signed != 0); b holds INT8 codes. |a| <= 255, so a << 20 < 2**28 fits int32
 * (written as a multiplication: << of a negative value is undefined in C99), and a', b' <=
 * 2**27 each (their multipliers are <= 1/2), so the sum fits too. output may be b itself
 * (each value is read before it is written), which the generated code uses.
 */
void residual_add_s8(const uint8_t *a, int32_t a_signed, const int8_t *b, int32_t count, const int32_t *multiplier,
                     const int32_t *right_shift, int8_t *output)
{
    const int8_t *a_s8 = (const int8_t *)a;
    const int32_t scale = (int32_t)1 << 20;
    int32_t i;
    for (i = 0; i < count; ++i) {
        const int32_t x = a_signed ? (int32_t)a_s8[i] : (int32_t)a[i];
        const int32_t xa = tinycl_requantize_range(x * scale, multiplier[0], right_shift[0], INT32_MIN, INT32_MAX);
        const int32_t xb = tinycl_requantize_range((int32_t)b[i] * scale, multiplier[1], right_shift[1], INT32_MIN,
                                                   INT32_MAX);
        output[i] = (int8_t)tinycl_requantize_range(xa + xb, multiplier[2], right_shift[2], -127, 127);
    }
}
