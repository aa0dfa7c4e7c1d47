#include "tinycl_runtime.h"

/*
 * Average pooling forward, FP32, no padding: the mean of each kernel_h x kernel_w window.
 * Global average pooling (nn.AdaptiveAvgPool2d(1)) is the window of the whole input.
 * Python reference: tinycl.export.reference.avgpool_fp32_fw (torch.nn.functional.avg_pool2d).
 *
 *     output[c][oy][ox] = (sum_{ky, kx} input[c][oy * stride + ky][ox * stride + kx]) / (kh * kw)
 *
 * shape->in_channels == shape->out_channels, shape->padding == 0.
 */
void avgpool_fp32_fw(const float *input, const tinycl_conv_shape *shape, float *output)
{
    const int32_t in_h = shape->in_height, in_w = shape->in_width;
    const int32_t out_h = shape->out_height, out_w = shape->out_width;
    const int32_t kh = shape->kernel_h, kw = shape->kernel_w, stride = shape->stride;
    const float count = (float)(kh * kw);
    int32_t c, oy, ox, ky, kx;
    for (c = 0; c < shape->out_channels; ++c) {
        const float *plane = input + c * in_h * in_w;
        for (oy = 0; oy < out_h; ++oy) {
            for (ox = 0; ox < out_w; ++ox) {
                float sum = 0.0f;
                for (ky = 0; ky < kh; ++ky) {
                    for (kx = 0; kx < kw; ++kx) {
                        sum += plane[(oy * stride + ky) * in_w + ox * stride + kx];
                    }
                }
                output[(c * out_h + oy) * out_w + ox] = sum / count;
            }
        }
    }
}
