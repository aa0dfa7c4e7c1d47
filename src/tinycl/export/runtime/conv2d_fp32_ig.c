#include "tinycl_runtime.h"

/*
 * Dense 2-D convolution, input gradient of one sample, FP32 (square stride, zero padding).
 * Python reference: tinycl.export.reference_train.conv2d_fp32_ig (torch.nn.grad.conv2d_input).
 *
 *     grad_input[ci][iy][ix] = sum over (co, ky, kx) with iy = oy * stride - padding + ky,
 *                              ix = ox * stride - padding + kx of weight[co][ci][ky][kx] * grad_output[co][oy][ox]
 *
 * scattered output position by output position (co, then taps, ascending); taps that fall in
 * the padding are dropped, which is the transposed convolution's cropping.
 */
void conv2d_fp32_ig(const float *grad_output, const tinycl_conv_shape *shape, const float *weight,
                    float *grad_input)
{
    const int32_t in_c = shape->in_channels, in_h = shape->in_height, in_w = shape->in_width;
    const int32_t out_h = shape->out_height, out_w = shape->out_width;
    const int32_t kh = shape->kernel_h, kw = shape->kernel_w;
    const int32_t stride = shape->stride, padding = shape->padding;
    int32_t co, ci, ky, kx, oy, ox, i;
    for (i = 0; i < in_c * in_h * in_w; ++i) {
        grad_input[i] = 0.0f;
    }
    for (co = 0; co < shape->out_channels; ++co) {
        const float *go = grad_output + co * out_h * out_w;
        for (ci = 0; ci < in_c; ++ci) {
            const float *taps = weight + (co * in_c + ci) * kh * kw;
            float *gi = grad_input + ci * in_h * in_w;
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
}
