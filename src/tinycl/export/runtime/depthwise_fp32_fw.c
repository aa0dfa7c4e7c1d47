#include "tinycl_runtime.h"

/*
 * Depthwise 2-D convolution forward, FP32: one kh x kw filter per channel.
 * Python reference: tinycl.export.reference.depthwise_fp32_fw
 * (torch.nn.functional.conv2d with groups = channels).
 *
 *     output[c][oy][ox] = sum_{ky, kx} weight[c][ky][kx] * input[c][iy][ix] (+ bias[c])
 *
 * bias may be NULL; shape->in_channels == shape->out_channels.
 */
void depthwise_fp32_fw(const float *input, const tinycl_conv_shape *shape, const float *weight,
                       const float *bias, float *output)
{
    const int32_t in_h = shape->in_height, in_w = shape->in_width;
    const int32_t out_h = shape->out_height, out_w = shape->out_width;
    const int32_t kh = shape->kernel_h, kw = shape->kernel_w;
    const int32_t stride = shape->stride, padding = shape->padding;
    int32_t c, oy, ox, ky, kx;
    for (c = 0; c < shape->out_channels; ++c) {
        const float *plane = input + c * in_h * in_w;
        const float *taps = weight + c * kh * kw;
        for (oy = 0; oy < out_h; ++oy) {
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t iy0 = oy * stride - padding, ix0 = ox * stride - padding;
                float acc = 0.0f;
                for (ky = 0; ky < kh; ++ky) {
                    const int32_t iy = iy0 + ky;
                    if (iy < 0 || iy >= in_h) {
                        continue;
                    }
                    for (kx = 0; kx < kw; ++kx) {
                        const int32_t ix = ix0 + kx;
                        if (ix < 0 || ix >= in_w) {
                            continue;
                        }
                        acc += plane[iy * in_w + ix] * taps[ky * kw + kx];
                    }
                }
                output[(c * out_h + oy) * out_w + ox] = bias != 0 ? acc + bias[c] : acc;
            }
        }
    }
}
