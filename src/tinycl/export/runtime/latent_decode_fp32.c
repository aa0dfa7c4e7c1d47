#include "tinycl_runtime.h"

/*
 * UINT-Q codes -> FP32 latents in the float model's units: what the adaptive stage reads.
 * Python reference: tinycl.export.reference.latent_decode_fp32 (LatentQuantizer.decode:
 * float32(code) * float32(step_u8[g] * latent_scale)).
 *
 * step[g] is that float32 product, computed by the generator with the quantizer's own
 * code, so the one float32 multiply here is bit-exact. codes, latent: [groups][group_size].
 */
void latent_decode_fp32(const uint8_t *codes, int32_t groups, int32_t group_size, const float *step,
                        float *latent)
{
    int32_t g, i;
    for (g = 0; g < groups; ++g) {
        for (i = 0; i < group_size; ++i) {
            latent[g * group_size + i] = (float)codes[g * group_size + i] * step[g];
        }
    }
}
