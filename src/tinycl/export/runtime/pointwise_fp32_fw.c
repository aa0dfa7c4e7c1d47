#include "tinycl_runtime.h"

/*
 * Pointwise (1x1) convolution forward, FP32.
 * Python reference: tinycl.export.reference.pointwise_fp32_fw
 * (torch.nn.functional.conv2d with a 1x1 kernel).
 *
 *     output[co][oy][ox] = sum_ci weight[co][ci] * input[ci][oy * stride][ox * stride] (+ bias[co])
 *
 * bias may be NULL; shape->kernel_h == shape->kernel_w == 1, shape->padding == 0.
 */
void pointwise_fp32_fw(const float *input, const tinycl_conv_shape *shape, const float *weight,
                       const float *bias, float *output)
{
    const int32_t in_c = shape->in_channels, in_h = shape->in_height, in_w = shape->in_width;
    const int32_t out_h = shape->out_height, out_w = shape->out_width, stride = shape->stride;
    int32_t co, oy, ox, ci;
    for (co = 0; co < shape->out_channels; ++co) {
        const float *row = weight + co * in_c;
        for (oy = 0; oy < out_h; ++oy) {
            for (ox = 0; ox < out_w; ++ox) {
                const float *pixel = input + (oy * stride) * in_w + ox * stride;
                float acc = 0.0f;
                for (ci = 0; ci < in_c; ++ci) {
                    acc += pixel[ci * in_h * in_w] * row[ci];
                }
                output[(co * out_h + oy) * out_w + ox] = bias != 0 ? acc + bias[co] : acc;
            }
        }
    }
}
