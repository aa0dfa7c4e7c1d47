#include "tinycl_runtime.h"

/*
 * ReLU forward, FP32: output = max(input, 0); NaN passes through as in PyTorch.
 * Python reference: tinycl.export.reference.relu_fp32_fw (torch.relu).
 * input and output may be the same buffer (in place).
 */
void relu_fp32_fw(const float *input, int32_t count, float *output)
{
    int32_t i;
    for (i = 0; i < count; ++i) {
        output[i] = input[i] < 0.0f ? 0.0f : input[i];
    }
}
