#include "tinycl_runtime.h"

/*
 * Depthwise convolution, weight gradient of one sample, FP32, accumulated, with stride and
 * zero padding (PULP-TrainLib's depthwise gradients support no padding: REFERENCES.md).
 * Python reference: tinycl.export.reference_train.depthwise_fp32_wg
 * (torch.nn.grad.conv2d_weight with groups = channels; SparseConv2dFn for the sparse case).
 *
 *     grad_weight[c][ky][kx] += sum_{oy, ox} grad_output[c][oy][ox] * input[c][iy][ix]
 *
 * for the chosen channels c = channels[k], read from kept[k] (channels == NULL: all).
 */
void depthwise_fp32_wg(const float *kept, const tinycl_conv_shape *shape, const float *grad_output,
                       const int32_t *channels, int32_t count, float *grad_weight)
{
    const int32_t in_h = shape->in_height, in_w = shape->in_width;
    const int32_t out_h = shape->out_height, out_w = shape->out_width;
    const int32_t kh = shape->kernel_h, kw = shape->kernel_w;
    const int32_t stride = shape->stride, padding = shape->padding;
    int32_t k, ky, kx, oy, ox;
    for (k = 0; k < count; ++k) {
        const int32_t c = channels != 0 ? channels[k] : k;
        const float *plane = kept + k * in_h * in_w;
        const float *go = grad_output + c * out_h * out_w;
        float *taps = grad_weight + c * kh * kw;
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
