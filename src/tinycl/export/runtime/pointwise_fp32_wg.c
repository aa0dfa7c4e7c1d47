#include "tinycl_runtime.h"

/*
 * Pointwise (1x1) convolution, weight gradient of one sample, FP32, accumulated.
 * Python reference: tinycl.export.reference_train.pointwise_fp32_wg
 * (torch.nn.grad.conv2d_weight; tinycl.train.sparse.SparseConv2dFn for the sparse case).
 *
 *     grad_weight[co][ci] += sum_{oy, ox} grad_output[co][oy][ox] * input[ci][oy * stride][ox * stride]
 *
 * for the chosen input channels ci = channels[k] only, read from kept[k] (see tinycl_runtime.h;
 * channels == NULL: every channel). Two loop orders, by the number of output positions: with
 * many, each (co, ci) sum runs over the positions in a register and is added once; with few
 * (the late layers of a MobileNet, 1 x 1 to 2 x 2), that loop is too short to pay for itself,
 * so each position's products are added straight into the weight row, channel by channel. The
 * two orders round differently; a given shape always takes the same one, on every target.
 */
#define FEW_POSITIONS 8

void pointwise_fp32_wg(const float *kept, const tinycl_conv_shape *shape, const float *grad_output,
                       const int32_t *channels, int32_t count, float *grad_weight)
{
    const int32_t in_c = shape->in_channels, in_h = shape->in_height, in_w = shape->in_width;
    const int32_t out_h = shape->out_height, out_w = shape->out_width, stride = shape->stride;
    const int32_t plane = in_h * in_w;
    int32_t co, k, oy, ox;
    for (co = 0; co < shape->out_channels; ++co) {
        const float *go = grad_output + co * out_h * out_w;
        float *row = grad_weight + co * in_c;
        if (out_h * out_w < FEW_POSITIONS) {
            for (oy = 0; oy < out_h; ++oy) {
                for (ox = 0; ox < out_w; ++ox) {
                    const float g = go[oy * out_w + ox];
                    const float *x = kept + oy * stride * in_w + ox * stride;
                    if (channels != 0) {
                        for (k = 0; k < count; ++k) {
                            row[channels[k]] += g * x[k * plane];
                        }
                    } else {
                        for (k = 0; k < count; ++k) {
                            row[k] += g * x[k * plane];
                        }
                    }
                }
            }
            continue;
        }
        for (k = 0; k < count; ++k) {
            const float *x = kept + k * plane;
            float acc = 0.0f;
            for (oy = 0; oy < out_h; ++oy) {
                const float *line = x + oy * stride * in_w;
                for (ox = 0; ox < out_w; ++ox) {
                    acc += go[oy * out_w + ox] * line[ox * stride];
                }
            }
            row[channels != 0 ? channels[k] : k] += acc;
        }
    }
}
