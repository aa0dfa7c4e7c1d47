#include "tinycl_runtime.h"

/*
 * Fully connected layer, weight gradient of one sample, FP32, accumulated.
 * Python reference: tinycl.export.reference_train.linear_fp32_wg
 * (grad_output^T @ input; tinycl.train.sparse.SparseLinearFn for the sparse case).
 *
 *     grad_weight[o][i] += grad_output[o] * input[i]
 *
 * for the chosen input features i = channels[k], read from kept[k] (channels == NULL: all).
 */
void linear_fp32_wg(const float *kept, int32_t in_features, const float *grad_output, int32_t out_features,
                    const int32_t *channels, int32_t count, float *grad_weight)
{
    int32_t o, k;
    for (o = 0; o < out_features; ++o) {
        const float g = grad_output[o];
        float *row = grad_weight + o * in_features;
        if (channels == 0) {
            for (k = 0; k < count; ++k) {
                row[k] += g * kept[k];
            }
        } else {
            for (k = 0; k < count; ++k) {
                row[channels[k]] += g * kept[k];
            }
        }
    }
}
