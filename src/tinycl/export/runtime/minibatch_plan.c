#include "tinycl_runtime.h"

/*
 * The learner's mini-batch plan and ar1-pytorch's padding of batch 0.
 * Python references: tinycl.train.learner.minibatch_plan and padded_rows (through
 * tinycl.export.reference_train).
 *
 * minibatch_plan: ar1-pytorch cur = n // ((n + rm_sz) // mb) new latents per mini-batch,
 * mb - cur replays, n // cur iterations per epoch; without replays min(mb, n) new ones.
 * padded_rows: rows 0..n-1 with the first mb - n % mb of them (at most n) repeated in front;
 * returns the row count. rows: n + mb - 1 int32 at most.
 */
tinycl_plan minibatch_plan(int32_t new_items, int32_t replay_items, int32_t minibatch)
{
    tinycl_plan plan = {0, 0, 0};
    int32_t cur, groups;
    if (new_items <= 0) {
        return plan;
    }
    if (replay_items == 0) {
        cur = minibatch < new_items ? minibatch : new_items;
        plan.new_per_batch = cur;
        plan.iterations = new_items / cur;
        return plan;
    }
    groups = (new_items + replay_items) / minibatch;
    cur = groups > 0 ? new_items / groups : new_items;
    cur = cur < new_items ? cur : new_items;
    cur = cur < minibatch ? cur : minibatch;
    cur = cur > 1 ? cur : 1;
    plan.new_per_batch = cur;
    plan.replays_per_batch = minibatch - cur;
    plan.iterations = new_items / cur;
    return plan;
}

int32_t padded_rows(int32_t count, int32_t minibatch, int32_t *rows)
{
    const int32_t missing = count % minibatch;
    int32_t prefix = 0, i;
    if (missing != 0) {
        prefix = minibatch - missing < count ? minibatch - missing : count;
    }
    for (i = 0; i < prefix; ++i) {
        rows[i] = i;
    }
    for (i = 0; i < count; ++i) {
        rows[prefix + i] = i;
    }
    return prefix + count;
}
