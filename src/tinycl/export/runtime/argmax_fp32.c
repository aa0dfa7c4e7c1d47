#include "tinycl_runtime.h"

/*
 * Index of the largest value, the first one on ties: the predicted class from the logits.
 * Python reference: tinycl.export.reference.argmax_fp32 (torch.argmax, which also returns
 * the first maximal index). count >= 1.
 */
int32_t argmax_fp32(const float *values, int32_t count)
{
    int32_t best = 0, i;
    for (i = 1; i < count; ++i) {
        if (values[i] > values[best]) {
            best = i;
        }
    }
    return best;
}
