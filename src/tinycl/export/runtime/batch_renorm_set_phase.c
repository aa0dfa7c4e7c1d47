#include "tinycl_runtime.h"

/*
 * The incremental phase (BatchRenorm2d.set_phase, ar1-pytorch change_brn_pars at batch 1):
 * r_max and d_max at their caps, no ramp, a new momentum.
 */
void batch_renorm_set_phase(tinycl_brn *bn, double momentum)
{
    bn->momentum = momentum;
    bn->r_max = bn->max_r_max;
    bn->d_max = bn->max_d_max;
    bn->ramp_per_sample = 0.0;
}
