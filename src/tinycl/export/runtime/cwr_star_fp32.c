#include "tinycl_runtime.h"

/*
 * CWR* head consolidation (Lomonaco & Maltoni; ar1-pytorch reset_weights /
 * consolidate_weights / set_consolidate_weights), with tinycl.train.cwr.CWRStar's operations
 * (Python reference: tinycl.export.reference_train.cwr_before_batch_fp32 / _after_batch_fp32,
 * the class itself). weight, consolidated: [classes][features]; current: the current classes,
 * ascending (new labels and, from batch 1, every replay label).
 *
 * before: the head zeroed, then the current classes with consolidated rows restored.
 * after: the current rows centred on their mean (one scalar over all current rows; summed in
 * double here, torch's float32 sum is pairwise, so the two agree to float rounding), merged
 * into the consolidated rows with weight w = sqrt(past / count) as (old * w + centred) / (w + 1)
 * (or taken as they are, the first time); past counts += this batch's; every consolidated row
 * copied into the head.
 */
void cwr_before_batch_fp32(float *weight, const float *consolidated, const uint8_t *has_consolidated,
                           int32_t classes, int32_t features, const int32_t *current, int32_t count)
{
    int32_t i, j;
    for (i = 0; i < classes * features; ++i) {
        weight[i] = 0.0f;
    }
    for (j = 0; j < count; ++j) {
        const int32_t c = current[j];
        if (has_consolidated[c]) {
            for (i = 0; i < features; ++i) {
                weight[c * features + i] = consolidated[c * features + i];
            }
        }
    }
}

void cwr_after_batch_fp32(float *weight, float *consolidated, uint8_t *has_consolidated, float *past_counts,
                          int32_t classes, int32_t features, const int32_t *current, int32_t count,
                          const int32_t *class_counts)
{
    double sum = 0.0;
    float mean;
    int32_t i, j, c;
    for (j = 0; j < count; ++j) {
        for (i = 0; i < features; ++i) {
            sum += (double)weight[current[j] * features + i];
        }
    }
    mean = count > 0 ? (float)(sum / (double)(count * features)) : 0.0f;
    for (j = 0; j < count; ++j) {
        const int32_t row = current[j] * features;
        const float w_past = __builtin_sqrtf(past_counts[current[j]] / (float)class_counts[current[j]]);
        for (i = 0; i < features; ++i) {
            const float centred = weight[row + i] - mean;
            consolidated[row + i] = has_consolidated[current[j]]
                                        ? (consolidated[row + i] * w_past + centred) / (w_past + 1.0f)
                                        : centred;
        }
        has_consolidated[current[j]] = 1;
    }
    for (c = 0; c < classes; ++c) {
        past_counts[c] += (float)class_counts[c];
        if (has_consolidated[c]) {
            for (i = 0; i < features; ++i) {
                weight[c * features + i] = consolidated[c * features + i];
            }
        }
    }
}
