#include "tinycl_runtime.h"
#include "tinycl_requant.h"

/*
 * Dense 2-D convolution on the INT8 image (MobileNetV2's first conv), BN folded, output clamped
 * to [lo, hi]: the conv unit of a residual network's integer block.
 * Python reference: tinycl.export.reference.conv2d_s8_range
 * (tinycl.quant.int_blocks.IntConvUnit.forward_int64_reference: conv2d_int64_reference, then
 * requantize_int64_reference into [lo, hi]).
 *
 *     acc = bias[co] + sum_{ci, ky, kx} weight[co][ci][ky][kx] * input[ci][iy][ix]   (int32)
 *     output[co][oy][ox] = clamp(requantize(acc, multiplier[co], right_shift[co]), lo, hi)
 *
 * [lo, hi]: 0..255 (ReLU), 0..relu6_code_max (ReLU6), -127..127 (linear, stored as int8).
 * Taps outside the input read 0, exact because every activation's zero point is 0.
 */
void conv2d_s8_range(const int8_t *input, const tinycl_conv_shape *shape, const int8_t *weight,
                     const int32_t *bias, const int32_t *multiplier, const int32_t *right_shift, int32_t lo,
                     int32_t hi, uint8_t *output)
{
    const int32_t in_c = shape->in_channels, in_h = shape->in_height, in_w = shape->in_width;
    const int32_t out_h = shape->out_height, out_w = shape->out_width;
    const int32_t kh = shape->kernel_h, kw = shape->kernel_w;
    const int32_t stride = shape->stride, padding = shape->padding;
    int32_t co, oy, ox, ci, ky, kx;
    for (co = 0; co < shape->out_channels; ++co) {
        const int8_t *filter = weight + co * in_c * kh * kw;
        for (oy = 0; oy < out_h; ++oy) {
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t iy0 = oy * stride - padding, ix0 = ox * stride - padding;
                int32_t acc = bias[co];
                for (ci = 0; ci < in_c; ++ci) {
                    const int8_t *plane = input + ci * in_h * in_w;
                    const int8_t *taps = filter + ci * kh * kw;
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
                            acc += (int32_t)plane[iy * in_w + ix] * taps[ky * kw + kx];
                        }
                    }
                }
                output[(co * out_h + oy) * out_w + ox] =
                    tinycl_code_byte(tinycl_requantize_range(acc, multiplier[co], right_shift[co], lo, hi));
            }
        }
    }
}
