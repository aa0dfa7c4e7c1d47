#include "tinycl_runtime.h"

/*
 * UINT-Q codes -> FP32 latents in the float model's units: what the adaptive stage reads.
 * Python reference: tinycl.export.reference.latent_decode_fp32 (LatentQuantizer.decode:
 * (float32(code) - offset) * float32(step_u8[g] * latent_scale)).
 *
 * step[g] is that float32 product, computed by the generator with the quantizer's own
 * code, so the one float32 multiply here is bit-exact. offset is 0 for UINT8 latents and
 * 2**(bits-1) for a signed LR layer's offset-binary codes (latent_shift_s8); code - offset
 * is an integer below 2**8, exact in float32 as the Python subtraction is.
 * codes, latent: [groups][group_size].
 */
void latent_decode_fp32(const uint8_t *codes, int32_t groups, int32_t group_size, const float *step,
                        int32_t offset, float *latent)
{
    int32_t g, i;
    for (g = 0; g < groups; ++g) {
        for (i = 0; i < group_size; ++i) {
            latent[g * group_size + i] = (float)((int32_t)codes[g * group_size + i] - offset) * step[g];
        }
    }
}
