#include "tinycl_runtime.h"

/*
 * Batch renormalization forward in training mode over a mini-batch, FP32 (Ioffe 2017), with
 * the very operations of tinycl.train.batch_renorm.BatchRenorm2d.forward in train mode.
 * Python reference: tinycl.export.reference_train.batch_renorm_fp32_fw_train (the module itself).
 *
 * Per channel c, over the batch * spatial values n of input [batch][channels][spatial]:
 *   mean = sum / n, var = sum (x - mean)^2 / n (biased), std = sqrt(var + eps);
 *   "var" statistics (tinycl): sigma = sqrt(running_var + eps),
 *       r = clamp(std / sigma, 1 / r_max, r_max), d = clamp((mean - running_mean) / sigma, -d_max, d_max),
 *       running_mean = lerp(running_mean, mean, momentum),
 *       running_var = lerp(running_var, var * n / max(n - 1, 1), momentum)    (unbiased, as BatchNorm2d),
 *       output = ((x - mean) / std * r + d) * gamma + beta;
 *   "std" statistics (ar1-pytorch models/batch_renorm.py): sigma = running std (no eps),
 *       r, d as above, output = gamma * (((x - mean) * r) / std + d) + beta,
 *       running_mean = mu + momentum * (mean - mu), running_std = sigma + momentum * (std - sigma).
 * Then the r_max / d_max ramp (in double, as the module's float64 buffers): each still below its
 * cap grows by ramp_per_sample * batch. mean, std, r and d are left in bn for the backward.
 *
 * Sums are formed per sample, then over the batch (float32); torch reduces in another order,
 * so the statistics agree within float rounding, not to the bit. lerp is ATen's: for a weight
 * below 0.5, start + weight * (end - start), else end - (end - start) * (1 - weight).
 */
static float clampf(float x, float low, float high)
{
    x = x < low ? low : x;
    return x > high ? high : x;
}

static float lerpf(float start, float end, float weight)
{
    return weight < 0.5f ? start + weight * (end - start) : end - (end - start) * (1.0f - weight);
}

void batch_renorm_fp32_fw_train(const float *input, int32_t batch, int32_t spatial, tinycl_brn *bn,
                                float *output)
{
    const int32_t channels = bn->channels, n = batch * spatial;
    const float count = (float)n, unbiased = (float)(n > 1 ? n - 1 : 1);
    const float momentum = (float)bn->momentum;
    const float r_low = (float)(1.0 / bn->r_max), r_high = (float)bn->r_max;
    const float d_low = (float)(-bn->d_max), d_high = (float)bn->d_max;
    int32_t c, b, s;
    for (c = 0; c < channels; ++c) {
        float sum = 0.0f, squares = 0.0f, mean, var, std, r, d;
        const float gamma = bn->gamma[c], beta = bn->beta[c];
        for (b = 0; b < batch; ++b) {
            const float *x = input + (b * channels + c) * spatial;
            float part = 0.0f;
            for (s = 0; s < spatial; ++s) {
                part += x[s];
            }
            sum += part;
        }
        mean = sum / count;
        for (b = 0; b < batch; ++b) {
            const float *x = input + (b * channels + c) * spatial;
            float part = 0.0f;
            for (s = 0; s < spatial; ++s) {
                const float t = x[s] - mean;
                part += t * t;
            }
            squares += part;
        }
        var = squares / count;
        std = __builtin_sqrtf(var + bn->eps);
        if (!bn->stats_std) {
            const float sigma = __builtin_sqrtf(bn->running_var[c] + bn->eps);
            r = clampf(std / sigma, r_low, r_high);
            d = clampf((mean - bn->running_mean[c]) / sigma, d_low, d_high);
            bn->running_mean[c] = lerpf(bn->running_mean[c], mean, momentum);
            bn->running_var[c] = lerpf(bn->running_var[c], var * count / unbiased, momentum);
            for (b = 0; b < batch; ++b) {
                const float *x = input + (b * channels + c) * spatial;
                float *y = output + (b * channels + c) * spatial;
                for (s = 0; s < spatial; ++s) {
                    const float x_hat = (x[s] - mean) / std * r + d;
                    y[s] = x_hat * gamma + beta;
                }
            }
        } else {
            const float mu = bn->running_mean[c], sigma = bn->running_var[c];
            r = clampf(std / sigma, r_low, r_high);
            d = clampf((mean - mu) / sigma, d_low, d_high);
            for (b = 0; b < batch; ++b) {
                const float *x = input + (b * channels + c) * spatial;
                float *y = output + (b * channels + c) * spatial;
                for (s = 0; s < spatial; ++s) {
                    y[s] = gamma * (((x[s] - mean) * r) / std + d) + beta;
                }
            }
            bn->running_mean[c] = mu + momentum * (mean - mu);
            bn->running_var[c] = sigma + momentum * (std - sigma);
        }
        bn->batch_mean[c] = mean;
        bn->batch_std[c] = std;
        bn->r[c] = r;
        bn->d[c] = d;
    }
    if (bn->ramp_per_sample != 0.0) {
        if (bn->r_max < bn->max_r_max) {
            bn->r_max += bn->ramp_per_sample * (double)batch;
        }
        if (bn->d_max < bn->max_d_max) {
            bn->d_max += bn->ramp_per_sample * (double)batch;
        }
    }
}
