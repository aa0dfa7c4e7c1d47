#include "tinycl_runtime.h"
#include "tinycl_requant.h"

/*
 * Depthwise 2-D convolution of a block, INT8 input (the image: PhiNet's stem), output clamped
 * to [lo, hi].
 * Python reference: tinycl.export.reference.depthwise_conv2d_s8_range
 * (tinycl.quant.int_blocks.IntConvUnit.forward_int64_reference: depthwise_conv2d_int64_reference,
 * then requantize_int64_reference into [lo, hi]).
 *
 *     acc = bias[c] + sum_{ky, kx} weight[c][ky][kx] * input[c][iy][ix]
 *     output[c][oy][ox] = clamp(requantize(acc, multiplier[c], right_shift[c]), lo, hi)
 *
 * shape->in_channels == shape->out_channels; taps outside the input read 0 (zero point 0).
 */
void depthwise_conv2d_s8_range(const int8_t *input, const tinycl_conv_shape *shape, const int8_t *weight,
                               const int32_t *bias, const int32_t *multiplier, const int32_t *right_shift, int32_t lo,
                               int32_t hi, uint8_t *output)
{
    const int32_t in_h = shape->in_height, in_w = shape->in_width;
    const int32_t out_h = shape->out_height, out_w = shape->out_width;
    const int32_t kh = shape->kernel_h, kw = shape->kernel_w;
    const int32_t stride = shape->stride, padding = shape->padding;
    int32_t c, oy, ox, ky, kx;
    for (c = 0; c < shape->out_channels; ++c) {
        const int8_t *plane = input + c * in_h * in_w;
        const int8_t *taps = weight + c * kh * kw;
        for (oy = 0; oy < out_h; ++oy) {
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t iy0 = oy * stride - padding, ix0 = ox * stride - padding;
                int32_t acc = bias[c];
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
                output[(c * out_h + oy) * out_w + ox] =
                    tinycl_code_byte(tinycl_requantize_range(acc, multiplier[c], right_shift[c], lo, hi));
            }
        }
    }
}
