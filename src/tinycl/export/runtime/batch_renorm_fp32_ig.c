#include "tinycl_runtime.h"

/*
 * Batch renormalization, input gradient over the mini-batch, FP32, with r and d constants (as
 * the module computes them under no_grad; Ioffe 2017).
 * Python reference: tinycl.export.reference_train.batch_renorm_fp32_ig (autograd of
 * BatchRenorm2d in train mode). With u = (x - mean) / std over the n = batch * spatial values
 * of a channel, the output gamma * (u * r + d) + beta ("std" statistics compute the same
 * u * r as ((x - mean) * r) / std) has
 *
 *     grad_input = (gamma * r / std) * (g - sum(g) / n - u * sum(g * u) / n)
 *
 * the batch-normalization backward (mean and variance are functions of the batch). Two passes
 * per channel: the two sums, then the gradient. grad_output and grad_input may be the same buffer.
 */
void batch_renorm_fp32_ig(const float *grad_output, const float *input, int32_t batch, int32_t spatial,
                          const tinycl_brn *bn, float *grad_input)
{
    const int32_t channels = bn->channels;
    const float count = (float)(batch * spatial);
    int32_t c, b, s;
    for (c = 0; c < channels; ++c) {
        const float mean = bn->batch_mean[c], std = bn->batch_std[c];
        const float scale = bn->gamma[c] * bn->r[c] / std;
        float sum_g = 0.0f, sum_gu = 0.0f, mean_g, mean_gu;
        for (b = 0; b < batch; ++b) {
            const float *x = input + (b * channels + c) * spatial;
            const float *g = grad_output + (b * channels + c) * spatial;
            float part_g = 0.0f, part_gu = 0.0f;
            for (s = 0; s < spatial; ++s) {
                part_g += g[s];
                part_gu += g[s] * ((x[s] - mean) / std);
            }
            sum_g += part_g;
            sum_gu += part_gu;
        }
        mean_g = sum_g / count;
        mean_gu = sum_gu / count;
        for (b = 0; b < batch; ++b) {
            const float *x = input + (b * channels + c) * spatial;
            const float *g = grad_output + (b * channels + c) * spatial;
            float *out = grad_input + (b * channels + c) * spatial;
            for (s = 0; s < spatial; ++s) {
                out[s] = scale * (g[s] - mean_g - (x[s] - mean) / std * mean_gu);
            }
        }
    }
}
