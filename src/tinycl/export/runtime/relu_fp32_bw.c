#include "tinycl_runtime.h"

/*
 * ReLU / ReLU6 backward from the 1-bit mask the forward kept: the gradient where the mask bit
 * is set, 0 elsewhere. Python reference: tinycl.export.reference_train.relu_fp32_bw
 * (MaskedReLUFn.backward). grad_output and grad_input may be the same buffer.
 */
void relu_fp32_bw(const float *grad_output, const uint8_t *mask, int32_t count, float *grad_input)
{
    int32_t i;
    for (i = 0; i < count; ++i) {
        grad_input[i] = (mask[i >> 3] >> (i & 7)) & 1u ? grad_output[i] : 0.0f;
    }
}
