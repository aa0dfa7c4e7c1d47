#include "tinycl_runtime.h"

/*
 * SGD on the chosen channels of a weight only (tinycl.train.optim.ChannelSGD, Paissan et al.
 * CVPRW 2024: only the selected channels are updated), FP32. The weight is seen as
 * [outer][channels][inner]: a pointwise / dense conv / linear weight with input-channel
 * selection is [C_out][C_in][kh * kw] (columns), a depthwise one [1][C][kh * kw] (rows).
 * Each chosen element gets sgd_fp32's update; every other element of param and
 * momentum_buffer stays as it was (no decay, no momentum).
 * Python reference: tinycl.export.reference_train.sgd_fp32_channels (ChannelSGD.step itself).
 */
void sgd_fp32_channels(float *param, const float *grad, float *momentum_buffer, int32_t outer, int32_t channels,
                       int32_t inner, const int32_t *chosen, int32_t count, float lr, float momentum,
                       float weight_decay)
{
    int32_t o, k;
    for (o = 0; o < outer; ++o) {
        for (k = 0; k < count; ++k) {
            const int32_t at = (o * channels + chosen[k]) * inner;
            sgd_fp32(param + at, grad + at, momentum != 0.0f ? momentum_buffer + at : 0, inner, lr, momentum,
                     weight_decay);
        }
    }
}
