#include "tinycl_runtime.h"

/*
 * ReLU6 forward, FP32: output = min(max(input, 0), 6) (MobileNetV2, PhiNet's MCU variant).
 * Python reference: tinycl.export.reference.relu6_fp32_fw (torch.nn.functional.relu6).
 * input and output may be the same buffer (in place).
 */
void relu6_fp32_fw(const float *input, int32_t count, float *output)
{
    int32_t i;
    for (i = 0; i < count; ++i) {
        const float x = input[i];
        output[i] = x < 0.0f ? 0.0f : (x > 6.0f ? 6.0f : x);
    }
}
