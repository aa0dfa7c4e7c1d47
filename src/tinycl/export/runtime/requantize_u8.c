#include "tinycl_runtime.h"
#include "tinycl_requant.h"

/*
 * int32 accumulators -> uint8 codes, per-channel fixed-point multiplier and right shift.
 * Python reference: tinycl.export.reference.requantize_u8
 * (tinycl.quant.fixed_point.requantize_int64_reference with lo = 0, hi = 255).
 *
 * The convolution kernels apply the same rule (tinycl_requant.h) as they go; this array form
 * exists so that tests can drive the rule with extreme accumulators and shifts.
 * acc, output: [channels][spatial].
 */
void requantize_u8(const int32_t *acc, int32_t channels, int32_t spatial, const int32_t *multiplier,
                   const int32_t *right_shift, uint8_t *output)
{
    int32_t c, i;
    for (c = 0; c < channels; ++c) {
        for (i = 0; i < spatial; ++i) {
            output[c * spatial + i] = tinycl_requantize_u8(acc[c * spatial + i], multiplier[c], right_shift[c]);
        }
    }
}
