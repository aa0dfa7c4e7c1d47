#include "tinycl_runtime.h"

/*
 * Bias gradient of a convolution or linear layer, one sample, FP32, accumulated: the sum of
 * the output gradient over each channel's positions.
 * Python reference: tinycl.export.reference_train.bias_fp32_wg (grad_out.sum((0, 2, 3)),
 * tinycl.train.sparse.SparseConv2dFn).
 *
 *     grad_bias[c] += sum_s grad_output[c][s]          grad_output: [channels][spatial]
 */
void bias_fp32_wg(const float *grad_output, int32_t channels, int32_t spatial, float *grad_bias)
{
    int32_t c, s;
    for (c = 0; c < channels; ++c) {
        float acc = 0.0f;
        for (s = 0; s < spatial; ++s) {
            acc += grad_output[c * spatial + s];
        }
        grad_bias[c] += acc;
    }
}
