#include "tinycl_runtime.h"

/*
 * What a channel-sparse layer keeps of its input for the backward pass: the chosen channels
 * only (Paissan et al., CVPRW 2024; tiny-training's "kept input channels").
 * Python reference: tinycl.export.reference_train.keep_channels_fp32
 * (x.index_select(1, channels), as tinycl.train.sparse.SparseConv2dFn saves it).
 *
 *     kept[k][s] = input[channels[k]][s]      (channels == NULL: kept[k][s] = input[k][s])
 *
 * input: [C][spatial]; kept: [count][spatial]; channels ascending.
 */
void keep_channels_fp32(const float *input, int32_t spatial, const int32_t *channels, int32_t count,
                        float *kept)
{
    int32_t k, s;
    for (k = 0; k < count; ++k) {
        const float *plane = input + (channels != 0 ? channels[k] : k) * spatial;
        float *to = kept + k * spatial;
        for (s = 0; s < spatial; ++s) {
            to[s] = plane[s];
        }
    }
}
