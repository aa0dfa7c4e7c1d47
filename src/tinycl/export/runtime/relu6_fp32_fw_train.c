#include "tinycl_runtime.h"

/*
 * ReLU6 forward in training, FP32: output = min(max(input, 0), 6) and a 1-bit mask of
 * 0 < input < 6, where the gradient passes (torch's hardtanh backward; MaskedReLUFn(6)).
 * Python reference: tinycl.export.reference_train.relu6_fp32_fw_train. mask as relu_fp32_fw_train.
 */
void relu6_fp32_fw_train(const float *input, int32_t count, float *output, uint8_t *mask)
{
    int32_t i;
    for (i = 0; i < (count + 7) / 8; ++i) {
        mask[i] = 0;
    }
    for (i = 0; i < count; ++i) {
        const float x = input[i];
        if (x > 0.0f && x < 6.0f) {
            mask[i >> 3] |= (uint8_t)(1u << (i & 7));
        }
        output[i] = x < 0.0f ? 0.0f : (x > 6.0f ? 6.0f : x);
    }
}
