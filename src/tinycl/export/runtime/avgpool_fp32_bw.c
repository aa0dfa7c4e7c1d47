#include "tinycl_runtime.h"

/*
 * Average pooling backward, FP32, no padding: each window's output gradient, divided by the
 * window's size, added to every input position of the window (overlapping windows add up).
 * Python reference: tinycl.export.reference_train.avgpool_fp32_bw (autograd of
 * torch.nn.functional.avg_pool2d / adaptive_avg_pool2d(1) for the global window).
 *
 *     grad_input[c][oy * stride + ky][ox * stride + kx] += grad_output[c][oy][ox] / (kh * kw)
 *
 * grad_input is overwritten (zeroed first); shape as for avgpool_fp32_fw.
 */
void avgpool_fp32_bw(const float *grad_output, const tinycl_conv_shape *shape, float *grad_input)
{
    const int32_t in_h = shape->in_height, in_w = shape->in_width;
    const int32_t out_h = shape->out_height, out_w = shape->out_width;
    const int32_t kh = shape->kernel_h, kw = shape->kernel_w, stride = shape->stride;
    const float count = (float)(kh * kw);
    int32_t c, oy, ox, ky, kx, i;
    for (i = 0; i < shape->in_channels * in_h * in_w; ++i) {
        grad_input[i] = 0.0f;
    }
    for (c = 0; c < shape->out_channels; ++c) {
        float *plane = grad_input + c * in_h * in_w;
        for (oy = 0; oy < out_h; ++oy) {
            for (ox = 0; ox < out_w; ++ox) {
                const float g = grad_output[(c * out_h + oy) * out_w + ox] / count;
                for (ky = 0; ky < kh; ++ky) {
                    for (kx = 0; kx < kw; ++kx) {
                        plane[(oy * stride + ky) * in_w + ox * stride + kx] += g;
                    }
                }
            }
        }
    }
}
