#include "tinycl_runtime.h"

/*
 * Softmax cross-entropy, mean over the mini-batch (nn.CrossEntropyLoss), and its gradient with
 * respect to the logits, FP32. Python reference: tinycl.export.reference_train.cross_entropy_fp32
 * (nn.CrossEntropyLoss and autograd).
 *
 * As PyTorch composes it: log_softmax per row, log p = (x - max) - log(sum exp(x - max));
 * loss = -(sum_b log p[b][label_b]) / batch; backward of nll_loss gives -1 / batch at the label,
 * then log_softmax's backward: grad = g - exp(log p) * sum(g), with sum(g) = -1 / batch:
 *
 *     grad_logits[b][k] = (k == label_b ? -1 / batch : 0) - exp(log p[b][k]) * (-1 / batch)
 *
 * logits, grad_logits: [batch][classes]; labels: [batch]. Returns the loss.
 */
float cross_entropy_fp32(const float *logits, const uint8_t *labels, int32_t batch, int32_t classes,
                         float *grad_logits)
{
    const float sum_g = -(1.0f / (float)batch);
    float total = 0.0f;
    int32_t b, k;
    for (b = 0; b < batch; ++b) {
        const float *row = logits + b * classes;
        float *grad = grad_logits + b * classes;
        float largest = row[0], sum = 0.0f, log_sum;
        for (k = 1; k < classes; ++k) {
            largest = row[k] > largest ? row[k] : largest;
        }
        for (k = 0; k < classes; ++k) {
            sum += tinycl_expf(row[k] - largest);
        }
        log_sum = tinycl_logf(sum);
        for (k = 0; k < classes; ++k) {
            const float log_p = (row[k] - largest) - log_sum;
            grad[k] = (k == (int32_t)labels[b] ? sum_g : 0.0f) - tinycl_expf(log_p) * sum_g;
            if (k == (int32_t)labels[b]) {
                total -= log_p;
            }
        }
    }
    return total / (float)batch;
}
