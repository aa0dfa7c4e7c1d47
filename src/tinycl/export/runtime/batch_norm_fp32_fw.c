#include "tinycl_runtime.h"

/*
 * Batch normalization (BatchNorm2d or BatchRenorm2d) in inference form: a per-channel affine
 * map from the running statistics, output = input * scale[c] + shift[c].
 * Python reference: tinycl.export.reference.batch_norm_fp32_fw; scale and shift come from
 * tinycl.export.deployment.batch_norm_affine, computed in float32 as
 * BatchRenorm2d.forward does in eval mode (scale = weight / sqrt(running_var + eps),
 * shift = bias - running_mean * scale), so for a "var" BatchRenorm2d this multiply and add
 * (two roundings, -ffp-contract=off) repeat PyTorch's bits.
 * input, output: [channels][spatial]; they may be the same buffer (in place).
 */
void batch_norm_fp32_fw(const float *input, int32_t channels, int32_t spatial, const float *scale,
                        const float *shift, float *output)
{
    int32_t c, i;
    for (c = 0; c < channels; ++c) {
        for (i = 0; i < spatial; ++i) {
            output[c * spatial + i] = input[c * spatial + i] * scale[c] + shift[c];
        }
    }
}
