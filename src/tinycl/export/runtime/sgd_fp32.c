#include "tinycl_runtime.h"

/*
 * SGD with momentum and weight decay on one parameter tensor, FP32, element by element in the
 * order of torch.optim.SGD's _single_tensor_sgd (dampening 0, no Nesterov):
 *     d = grad + weight_decay * param                (d_p.add(param, alpha=weight_decay))
 *     buf = buf * momentum + d                       (buf.mul_(momentum).add_(d_p); a zero
 *                                                     buffer gives torch's first step, buf = d)
 *     param = param + (-lr) * buf                    (param.add_(buf, alpha=-lr))
 * with lr, momentum, weight_decay as float32 (torch converts the Python floats so). PyTorch's
 * vectorized add uses fused multiply-adds on AVX2 CPUs; this runtime never fuses
 * (-ffp-contract=off), so the two may differ in the last bit of an update.
 * Python reference: tinycl.export.reference_train.sgd_fp32 (torch.optim.SGD.step itself).
 * momentum 0: no buffer (momentum_buffer may be NULL).
 */
void sgd_fp32(float *param, const float *grad, float *momentum_buffer, int32_t count, float lr, float momentum,
              float weight_decay)
{
    const float step = -lr;
    int32_t i;
    for (i = 0; i < count; ++i) {
        float d = weight_decay != 0.0f ? grad[i] + weight_decay * param[i] : grad[i];
        if (momentum != 0.0f) {
            momentum_buffer[i] = momentum_buffer[i] * momentum + d;
            d = momentum_buffer[i];
        }
        param[i] = param[i] + step * d;
    }
}
