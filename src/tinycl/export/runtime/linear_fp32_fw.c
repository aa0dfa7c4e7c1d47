#include "tinycl_runtime.h"

/*
 * Fully connected layer forward, FP32: output[o] = sum_i weight[o][i] * input[i] (+ bias[o]).
 * Python reference: tinycl.export.reference.linear_fp32_fw (torch.nn.functional.linear).
 * bias may be NULL (tinycl's heads have none, as in ar1-pytorch).
 */
void linear_fp32_fw(const float *input, int32_t in_features, const float *weight, const float *bias,
                    int32_t out_features, float *output)
{
    int32_t o, i;
    for (o = 0; o < out_features; ++o) {
        const float *row = weight + o * in_features;
        float acc = 0.0f;
        for (i = 0; i < in_features; ++i) {
            acc += row[i] * input[i];
        }
        output[o] = bias != 0 ? acc + bias[o] : acc;
    }
}
