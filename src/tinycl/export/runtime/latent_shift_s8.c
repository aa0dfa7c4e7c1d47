#include "tinycl_runtime.h"

/*
 * LR layer's INT8 output (a linear bottleneck or a residual sum) -> offset-binary UINT-Q codes,
 * "shift" mode of the latent quantizer for a signed LR layer.
 * Python reference: tinycl.export.reference.latent_shift_s8
 * (tinycl.quant.latent.shift_encode_signed, what a signed LatentQuantizer(mode="shift") runs).
 *
 *     code = clamp(floor((s8 + r) / 2**(8 - bits)), -2**(bits-1), 2**(bits-1) - 1) + 2**(bits-1)
 *
 * with r = 2**(7 - bits) (0 at bits = 8): round half up; latent_decode_fp32 subtracts the
 * offset 2**(bits-1) again. The floor is written with a non-negative shift: s8 + r + 128 >= 0.
 */
void latent_shift_s8(const int8_t *latent, int32_t count, int32_t bits, uint8_t *codes)
{
    const int32_t drop = 8 - bits;
    const int32_t rounding = (1 << drop) >> 1;
    const int32_t half = 1 << (bits - 1);
    const int32_t bias = 128 >> drop;  /* floor((v + 128) / 2**drop) - 128 / 2**drop = floor(v / 2**drop) */
    int32_t i;
    for (i = 0; i < count; ++i) {
        int32_t code = (((int32_t)latent[i] + rounding + 128) >> drop) - bias;
        code = code < -half ? -half : (code > half - 1 ? half - 1 : code);
        codes[i] = (uint8_t)(code + half);
    }
}
