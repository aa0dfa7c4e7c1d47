#include "tinycl_runtime.h"

/*
 * Batch renormalization in eval mode, one sample, FP32, from the running statistics, with
 * BatchRenorm2d.forward's operations: "var": scale = gamma / sqrt(running_var + eps),
 * output = x * scale + (beta - running_mean * scale); "std": gamma * ((x - mu) / sigma) + beta.
 * Python reference: tinycl.export.reference_train.batch_renorm_fp32_fw_eval.
 * input, output: [channels][spatial]; they may be the same buffer.
 */
void batch_renorm_fp32_fw_eval(const float *input, int32_t spatial, const tinycl_brn *bn, float *output)
{
    int32_t c, s;
    for (c = 0; c < bn->channels; ++c) {
        const float *x = input + c * spatial;
        float *y = output + c * spatial;
        if (!bn->stats_std) {
            const float scale = bn->gamma[c] / __builtin_sqrtf(bn->running_var[c] + bn->eps);
            const float shift = bn->beta[c] - bn->running_mean[c] * scale;
            for (s = 0; s < spatial; ++s) {
                y[s] = x[s] * scale + shift;
            }
        } else {
            const float mu = bn->running_mean[c], sigma = bn->running_var[c];
            for (s = 0; s < spatial; ++s) {
                y[s] = bn->gamma[c] * ((x[s] - mu) / sigma) + bn->beta[c];
            }
        }
    }
}

