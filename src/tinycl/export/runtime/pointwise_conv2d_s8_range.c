#include "tinycl_runtime.h"
#include "tinycl_requant.h"

/*
 * Pointwise (1x1) convolution of a block, INT8 input (a linear bottleneck or residual sum: the
 * next block's expansion), output clamped to [lo, hi].
 * Python reference: tinycl.export.reference.pointwise_conv2d_s8_range
 * (tinycl.quant.int_blocks.IntConvUnit.forward_int64_reference: pointwise_conv2d_int64_reference,
 * then requantize_int64_reference into [lo, hi]).
 *
 *     acc = bias[co] + sum_ci weight[co][ci] * input[ci][oy * stride][ox * stride]
 *     output[co][oy][ox] = clamp(requantize(acc, multiplier[co], right_shift[co]), lo, hi)
 *
 * shape->kernel_h == shape->kernel_w == 1 and shape->padding == 0.
 */
void pointwise_conv2d_s8_range(const int8_t *input, const tinycl_conv_shape *shape, const int8_t *weight,
                               const int32_t *bias, const int32_t *multiplier, const int32_t *right_shift, int32_t lo,
                               int32_t hi, uint8_t *output)
{
    const int32_t in_c = shape->in_channels, in_h = shape->in_height, in_w = shape->in_width;
    const int32_t out_h = shape->out_height, out_w = shape->out_width, stride = shape->stride;
    int32_t co, oy, ox, ci;
    for (co = 0; co < shape->out_channels; ++co) {
        const int8_t *row = weight + co * in_c;
        for (oy = 0; oy < out_h; ++oy) {
            for (ox = 0; ox < out_w; ++ox) {
                const int8_t *pixel = input + (oy * stride) * in_w + ox * stride;
                int32_t acc = bias[co];
                for (ci = 0; ci < in_c; ++ci) {
                    acc += (int32_t)pixel[ci * in_h * in_w] * row[ci];
                }
                output[(co * out_h + oy) * out_w + ox] =
                    tinycl_code_byte(tinycl_requantize_range(acc, multiplier[co], right_shift[co], lo, hi));
            }
        }
    }
}
