#include "tinycl_runtime.h"

/*
 * LR layer's UINT8 output -> UINT-Q codes, "shift" mode of the latent quantizer.
 * Python reference: tinycl.export.reference.latent_shift_u8
 * (tinycl.quant.latent.shift_encode, what LatentQuantizer(mode="shift").encode runs).
 *
 *     code = min((u8 + r) >> (8 - bits), 2**bits - 1),   r = 2**(7 - bits) (0 at bits = 8)
 *
 * i.e. round half up, saturating near 255; zero stays zero. bits in 1..8.
 */
void latent_shift_u8(const uint8_t *latent, int32_t count, int32_t bits, uint8_t *codes)
{
    const int32_t drop = 8 - bits;
    const int32_t rounding = (1 << drop) >> 1;
    const int32_t top = (1 << bits) - 1;
    int32_t i;
    for (i = 0; i < count; ++i) {
        const int32_t code = ((int32_t)latent[i] + rounding) >> drop;
        codes[i] = (uint8_t)(code > top ? top : code);
    }
}
