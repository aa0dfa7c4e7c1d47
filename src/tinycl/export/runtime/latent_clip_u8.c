#include "tinycl_runtime.h"
#include "tinycl_requant.h"

/*
 * LR layer's UINT8 output -> UINT-Q codes, "clip" mode of the latent quantizer: a calibrated
 * clipping value c per group (one group per tensor, or one per channel).
 * Python reference: tinycl.export.reference.latent_clip_u8
 * (LatentQuantizer(mode="clip").encode, i.e. tinycl.quant.latent.clip_encode_table).
 *
 *     code = clamp((u8 * multiplier[g] + 2**(right_shift[g] - 1)) >> right_shift[g], 0, 2**bits - 1)
 *
 * with multiplier[g] * 2**-right_shift[g] = quantize_multiplier((2**bits - 1) / c[g]), the
 * fixed-point rule of the frozen stage (tinycl_requant.h), so the device needs 8 bytes per
 * group instead of the 256-entry table Python builds. latent, codes: [groups][group_size]
 * (group g is channel g of a CHW latent when per channel).
 */
void latent_clip_u8(const uint8_t *latent, int32_t groups, int32_t group_size, const int32_t *multiplier,
                    const int32_t *right_shift, int32_t bits, uint8_t *codes)
{
    const int32_t top = (1 << bits) - 1;
    int32_t g, i;
    for (g = 0; g < groups; ++g) {
        for (i = 0; i < group_size; ++i) {
            const int32_t index = g * group_size + i;
            codes[index] = (uint8_t)tinycl_requantize(latent[index], multiplier[g], right_shift[g], top);
        }
    }
}
