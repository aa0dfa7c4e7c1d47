#include "tinycl_runtime.h"

/*
 * Dense 2-D convolution forward, FP32 (groups = 1, square stride, zero padding).
 * Python reference: tinycl.export.reference.conv2d_fp32_fw (torch.nn.functional.conv2d).
 *
 *     output[co][oy][ox] = sum_{ci, ky, kx} weight[co][ci][ky][kx] * input[ci][iy][ix] (+ bias[co])
 *
 * summed in that loop order, then the bias added; bias may be NULL. PyTorch sums in another
 * order, so results agree within float rounding, not to the bit.
 */
void conv2d_fp32_fw(const float *input, const tinycl_conv_shape *shape, const float *weight,
                    const float *bias, float *output)
{
    const int32_t in_c = shape->in_channels, in_h = shape->in_height, in_w = shape->in_width;
    const int32_t out_h = shape->out_height, out_w = shape->out_width;
    const int32_t kh = shape->kernel_h, kw = shape->kernel_w;
    const int32_t stride = shape->stride, padding = shape->padding;
    int32_t co, oy, ox, ci, ky, kx;
    for (co = 0; co < shape->out_channels; ++co) {
        const float *filter = weight + co * in_c * kh * kw;
        for (oy = 0; oy < out_h; ++oy) {
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t iy0 = oy * stride - padding, ix0 = ox * stride - padding;
                float acc = 0.0f;
                for (ci = 0; ci < in_c; ++ci) {
                    const float *plane = input + ci * in_h * in_w;
                    const float *taps = filter + ci * kh * kw;
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
                }
                output[(co * out_h + oy) * out_w + ox] = bias != 0 ? acc + bias[co] : acc;
            }
        }
    }
}
