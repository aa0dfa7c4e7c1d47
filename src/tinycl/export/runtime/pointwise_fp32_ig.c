#include "tinycl_runtime.h"

/*
 * Pointwise (1x1) convolution, input gradient of one sample, FP32.
 * Python reference: tinycl.export.reference_train.pointwise_fp32_ig (torch.nn.grad.conv2d_input).
 *
 *     grad_input[ci][oy * stride][ox * stride] = sum_co weight[co][ci] * grad_output[co][oy][ox]
 *
 * summed over co in ascending order (both loop orders below add in that order, so they give
 * the same bits): with many output positions the innermost loop runs over positions, with few
 * (1 x 1 to 2 x 2) over input channels. Positions a stride skips get 0. Unlike PULP-TrainLib's
 * channel-first pointwise input gradient (REFERENCES.md: wrong when C_in != C_out), the weight
 * is read transposed by its own strides, [C_out][C_in], whatever the two counts.
 */
#define FEW_POSITIONS 8

void pointwise_fp32_ig(const float *grad_output, const tinycl_conv_shape *shape, const float *weight,
                       float *grad_input)
{
    const int32_t in_c = shape->in_channels, in_h = shape->in_height, in_w = shape->in_width;
    const int32_t out_c = shape->out_channels, out_h = shape->out_height, out_w = shape->out_width;
    const int32_t stride = shape->stride, plane = in_h * in_w;
    int32_t ci, co, oy, ox, i;
    for (i = 0; i < in_c * plane; ++i) {
        grad_input[i] = 0.0f;
    }
    if (out_h * out_w < FEW_POSITIONS) {
        for (co = 0; co < out_c; ++co) {
            const float *row = weight + co * in_c;
            for (oy = 0; oy < out_h; ++oy) {
                for (ox = 0; ox < out_w; ++ox) {
                    const float g = grad_output[(co * out_h + oy) * out_w + ox];
                    float *gi = grad_input + oy * stride * in_w + ox * stride;
                    for (ci = 0; ci < in_c; ++ci) {
                        gi[ci * plane] += row[ci] * g;
                    }
                }
            }
        }
        return;
    }
    for (ci = 0; ci < in_c; ++ci) {
        float *gi = grad_input + ci * plane;
        for (co = 0; co < out_c; ++co) {
            const float w = weight[co * in_c + ci];
            const float *go = grad_output + co * out_h * out_w;
            for (oy = 0; oy < out_h; ++oy) {
                float *line = gi + oy * stride * in_w;
                for (ox = 0; ox < out_w; ++ox) {
                    line[ox * stride] += w * go[oy * out_w + ox];
                }
            }
        }
    }
}
