#include "tinycl_runtime.h"

/*
 * Fully connected layer, input gradient of one sample, FP32.
 * Python reference: tinycl.export.reference_train.linear_fp32_ig (grad_output @ weight).
 *
 *     grad_input[i] = sum_o weight[o][i] * grad_output[o]      (o ascending)
 */
void linear_fp32_ig(const float *grad_output, int32_t out_features, const float *weight, int32_t in_features,
                    float *grad_input)
{
    int32_t o, i;
    for (i = 0; i < in_features; ++i) {
        grad_input[i] = 0.0f;
    }
    for (o = 0; o < out_features; ++o) {
        const float g = grad_output[o];
        const float *row = weight + o * in_features;
        for (i = 0; i < in_features; ++i) {
            grad_input[i] += row[i] * g;
        }
    }
}
