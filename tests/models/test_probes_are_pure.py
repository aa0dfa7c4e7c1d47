"""Probes never mutate what they inspect: every module's own train flag, every parameter and
buffer (batch-renorm r_max / d_max included), the sparse update's generator and torch's RNG."""

import pytest
import torch

from tinycl.models import create_model, layer_table, state_digest
from tinycl.quant import compare_accuracy, layer_errors, quantize_frozen_stage
from tinycl.train.batch_renorm import BatchRenorm2d
from tinycl.train.sparse import SparseUpdateConfig, backward_ops, sparsify
from tinycl.train.stages import prepare_stages

MODELS = {"mobilenet_v1": 19, "mobilenet_v2": 16, "phinet": 5}


def snapshot(model, adaptive):
    gens = {id(g): g for m in adaptive.modules() if (g := getattr(getattr(m, "selector", None), "generator", None))}
    return ([m.training for m in model.modules()], [m.training for m in adaptive.modules()],
            state_digest(model), state_digest(adaptive), [g.get_state() for g in gens.values()],
            torch.get_rng_state())


def assert_same(a, b):
    assert a[:5] == b[:5]
    assert torch.equal(a[5], b[5])


@pytest.mark.parametrize("name", list(MODELS))
def test_probes_leave_the_model_as_they_found_it(name, one_thread):
    lr_layer = MODELS[name]
    torch.manual_seed(0)
    model = create_model(name, width=0.25, num_classes=10)
    frozen, adaptive = prepare_stages(model, lr_layer, "brn", ramp_per_sample=4.1e-5, stats="std")
    first = model.layer_names()[lr_layer + 1]
    sparsify(adaptive, SparseUpdateConfig(ratios={first: 0.5}, policy="random", seed=1),
             first_index=lr_layer + 1, layer_names=model.layer_names()[lr_layer + 1 :])
    # A mixed pattern of flags: the adaptive stage training, one of its batch renorms in eval.
    model.train()
    next(m for m in adaptive.modules() if isinstance(m, BatchRenorm2d)).eval()
    before = snapshot(model, adaptive)

    shape = layer_table(model, 32)[lr_layer].out_shape
    assert_same(before, snapshot(model, adaptive))
    backward_ops(adaptive, shape)
    assert_same(before, snapshot(model, adaptive))
    if name == "mobilenet_v1":  # the INT8 stage's calibration and fidelity probes
        images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        stage = quantize_frozen_stage(frozen, images)
        assert_same(before, snapshot(model, adaptive))
        compare_accuracy(frozen, adaptive, stage, images, torch.zeros(8, dtype=torch.long))
        layer_errors(frozen, stage, images)
        assert_same(before, snapshot(model, adaptive))
