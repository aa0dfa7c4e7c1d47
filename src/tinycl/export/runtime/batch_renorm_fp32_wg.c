#include "tinycl_runtime.h"

/*
 * Batch renormalization, gradient of gamma and beta over the mini-batch, FP32, accumulated.
 * Python reference: tinycl.export.reference_train.batch_renorm_fp32_wg (autograd of
 * BatchRenorm2d in train mode).
 *
 *     grad_gamma[c] += sum grad_output * x_hat,   grad_beta[c] += sum grad_output
 *
 * x_hat recomputed from the kept input (the conv output) and the forward's statistics with the
 * forward's own operations ("var": (x - mean) / std * r + d; "std": ((x - mean) * r) / std + d),
 * so it is the forward's x_hat to the bit; only the per-channel batch statistics are kept.
 */
void batch_renorm_fp32_wg(const float *grad_output, const float *input, int32_t batch, int32_t spatial,
                          const tinycl_brn *bn, float *grad_gamma, float *grad_beta)
{
    const int32_t channels = bn->channels;
    int32_t c, b, s;
    for (c = 0; c < channels; ++c) {
        const float mean = bn->batch_mean[c], std = bn->batch_std[c], r = bn->r[c], d = bn->d[c];
        float dgamma = 0.0f, dbeta = 0.0f;
        for (b = 0; b < batch; ++b) {
            const float *x = input + (b * channels + c) * spatial;
            const float *g = grad_output + (b * channels + c) * spatial;
            float part_gamma = 0.0f, part_beta = 0.0f;
            for (s = 0; s < spatial; ++s) {
                const float x_hat = bn->stats_std ? ((x[s] - mean) * r) / std + d : (x[s] - mean) / std * r + d;
                part_gamma += g[s] * x_hat;
                part_beta += g[s];
            }
            dgamma += part_gamma;
            dbeta += part_beta;
        }
        grad_gamma[c] += dgamma;
        grad_beta[c] += dbeta;
    }
}
