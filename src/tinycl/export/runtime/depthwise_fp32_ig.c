#include "tinycl_runtime.h"

/*
 * Depthwise convolution, input gradient of one sample, FP32, with stride and zero padding.
 * Python reference: tinycl.export.reference_train.depthwise_fp32_ig
 * (torch.nn.grad.conv2d_input with groups = channels).
 *
 *     grad_input[c][iy][ix] = sum over taps with iy = oy * stride - padding + ky,
 *                             ix = ox * stride - padding + kx of weight[c][ky][kx] * grad_output[c][oy][ox]
 *
 * taps in the padding are dropped (the transposed convolution's cropping).
 */
void depthwise_fp32_ig(const float *grad_output, const tinycl_conv_shape *shape, const float *weight,
                       float *grad_input)
{
    const int32_t in_h = shape->in_height, in_w = shape->in_width;
    const int32_t out_h = shape->out_height, out_w = shape->out_width;
    const int32_t kh = shape->kernel_h, kw = shape->kernel_w;
    const int32_t stride = shape->stride, padding = shape->padding;
    int32_t c, ky, kx, oy, ox, i;
    for (i = 0; i < shape->in_channels * in_h * in_w; ++i) {
        grad_input[i] = 0.0f;
    }
    for (c = 0; c < shape->out_channels; ++c) {
        const float *go = grad_output + c * out_h * out_w;
        const float *taps = weight + c * kh * kw;
        float *gi = grad_input + c * in_h * in_w;
        for (ky = 0; ky < kh; ++ky) {
            for (kx = 0; kx < kw; ++kx) {
                const float w = taps[ky * kw + kx];
                for (oy = 0; oy < out_h; ++oy) {
                    const int32_t iy = oy * stride - padding + ky;
                    if (iy < 0 || iy >= in_h) {
                        continue;
                    }
                    for (ox = 0; ox < out_w; ++ox) {
                        const int32_t ix = ox * stride - padding + kx;
                        if (ix < 0 || ix >= in_w) {
                            continue;
                        }
                        gi[iy * in_w + ix] += w * go[oy * out_w + ox];
                    }
                }
            }
        }
    }
}
