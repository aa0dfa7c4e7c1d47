#include "tinycl_runtime.h"

/*
 * ReLU forward in training, FP32: output = max(input, 0) and a 1-bit mask of input > 0, the
 * positions where the gradient passes (TinyTL and tiny-training count a ReLU at one bit for
 * backward; torch's ReLU keeps its whole float output).
 * Python reference: tinycl.export.reference_train.relu_fp32_fw_train
 * (tinycl.train.sparse.MaskedReLUFn). mask: ceil(count / 8) bytes, bit i of byte i / 8.
 * input and output may be the same buffer.
 */
void relu_fp32_fw_train(const float *input, int32_t count, float *output, uint8_t *mask)
{
    int32_t i;
    for (i = 0; i < (count + 7) / 8; ++i) {
        mask[i] = 0;
    }
    for (i = 0; i < count; ++i) {
        const float x = input[i];
        if (x > 0.0f) {
            mask[i >> 3] |= (uint8_t)(1u << (i & 7));
        }
        output[i] = x < 0.0f ? 0.0f : x;
    }
}
