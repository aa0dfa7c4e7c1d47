#include "tinycl_runtime.h"

/*
 * Dense 2-D convolution, weight gradient of one sample, FP32, accumulated (square stride,
 * zero padding). Python reference: tinycl.export.reference_train.conv2d_fp32_wg
 * (torch.nn.grad.conv2d_weight; tinycl.train.sparse.SparseConv2dFn for the sparse case).
 *
 *     grad_weight[co][ci][ky][kx] += sum_{oy, ox} grad_output[co][oy][ox] * input[ci][iy][ix],
 *     iy = oy * stride - padding + ky, ix = ox * stride - padding + kx (padded taps add nothing)
 *
 * for the chosen input channels ci = channels[k], read from kept[k] (channels == NULL: all).
 */
void conv2d_fp32_wg(const float *kept, const tinycl_conv_shape *shape, const float *grad_output,
                    const int32_t *channels, int32_t count, float *grad_weight)
{
    const int32_t in_c = shape->in_channels, in_h = shape->in_height, in_w = shape->in_width;
    const int32_t out_h = shape->out_height, out_w = shape->out_width;
    const int32_t kh = shape->kernel_h, kw = shape->kernel_w;
    const int32_t stride = shape->stride, padding = shape->padding;
    int32_t co, k, ky, kx, oy, ox;
    for (co = 0; co < shape->out_channels; ++co) {
        const float *go = grad_output + co * out_h * out_w;
        for (k = 0; k < count; ++k) {
            const float *plane = kept + k * in_h * in_w;
            float *taps = grad_weight + (co * in_c + (channels != 0 ? channels[k] : k)) * kh * kw;
            for (ky = 0; ky < kh; ++ky) {
                for (kx = 0; kx < kw; ++kx) {
                    float acc = 0.0f;
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
                            acc += go[oy * out_w + ox] * plane[iy * in_w + ix];
                        }
                    }
                    taps[ky * kw + kx] += acc;
                }
            }
        }
    }
}
