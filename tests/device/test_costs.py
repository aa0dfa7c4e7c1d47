"""Per-layer MACs: analytic formulas against forward hooks and torch's FLOP counter."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tinycl.device import layer_costs, stage_cost
from tinycl.device.costs import conv_forward_macs, conv_input_grad_macs, conv_weight_grad_macs
from tinycl.errors import TinyclError
from tinycl.models import create_model, layer_sequence, split


@pytest.fixture(scope="module")
def mobilenet():
    return create_model("mobilenet_v1")


@pytest.fixture(scope="module")
def rows(mobilenet):
    return layer_costs(mobilenet, 128, 19)


def hook_macs(model: nn.Module, res: int) -> list[int]:
    """Independent count: MACs read off each layer's real tensors during a forward pass."""
    counts: list[int] = []

    def conv_hook(mod, inputs, output):
        counts[-1] += output[0].numel() * mod.weight[0].numel()  # per output: (C_in/g) k k

    def linear_hook(mod, inputs, output):
        counts[-1] += output[0].numel() * mod.in_features

    def pool_hook(mod, inputs, output):
        counts[-1] += inputs[0][0].numel()

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            handles.append(m.register_forward_hook(pool_hook))
    x = torch.zeros(1, 3, res, res)
    with torch.no_grad():
        for layer in layer_sequence(model):
            counts.append(0)
            x = layer(x)
    for h in handles:
        h.remove()
    return counts


def test_forward_macs_match_forward_hooks(mobilenet, rows):
    assert [r.forward_macs for r in rows] == hook_macs(mobilenet, 128)


def test_forward_macs_match_hooks_other_resolution_and_width():
    model = create_model("mobilenet_v1", width=0.5)
    assert [r.forward_macs for r in layer_costs(model, 96, 10)] == hook_macs(model, 96)


def test_paper_model_figures(rows):
    # REFERENCES.md: 185.4 M MACs; LR layer 19 outputs 512x8x8 = 32,768 values;
    # adaptive stage above layer 19 ~ 59.3 M MACs forward per sample.
    total = sum(r.forward_macs for r in rows)
    assert total == 185_444_352 and round(total / 1e6, 1) == 185.4
    assert rows[19].out_values == 32_768
    adaptive = stage_cost(rows, "adaptive")
    assert adaptive.forward_macs == 59_303_936
    assert stage_cost(rows, "frozen").forward_macs == total - adaptive.forward_macs


def test_backward_passes(rows):
    for r in rows:
        if r.stage == "frozen":
            assert r.input_grad_macs == r.weight_grad_macs == 0
    first = rows[20]
    assert first.input_grad_macs == 0  # nothing below the first adaptive layer trains
    assert first.weight_grad_macs == first.forward_macs
    pool, head = rows[27], rows[28]
    assert pool.weight_grad_macs == 0 and pool.input_grad_macs == 1024 * 4 * 4
    assert head.weight_grad_macs == head.input_grad_macs == 1024 * 50
    adaptive = stage_cost(rows, "adaptive")
    assert adaptive.weight_grad_macs == 59_303_936 - 16_384
    assert adaptive.input_grad_macs == 59_303_936 - 16_777_216


def test_backward_matches_torch_flop_counter_on_dense_layers(mobilenet, rows):
    # torch's FlopCounterMode counts conv backward without groups, so depthwise is left out.
    _, adaptive = split(mobilenet, 19)
    with FlopCounterMode(display=False) as counter:
        adaptive(torch.randn(1, 512, 8, 8)).sum().backward()
    counts = counter.get_flop_counts()
    for offset, r in enumerate(rows[20:]):
        if r.kind not in ("pw", "linear"):
            continue
        flops = sum(
            counts[
                f"Sequential.{offset}" if r.kind == "pw" else f"Sequential.{offset}.linear"
            ].values()
        )
        assert flops // 2 == r.forward_macs + r.backward_macs, r.name


def test_conv_formulas_equal_for_three_passes():
    args = (32, 64, (3, 3), (16, 16), 1)
    assert conv_forward_macs(*args) == 64 * 16 * 16 * 32 * 9
    assert conv_weight_grad_macs(*args) == conv_input_grad_macs(*args) == conv_forward_macs(*args)
    assert conv_forward_macs(32, 32, (3, 3), (16, 16), 32) == 32 * 16 * 16 * 9  # depthwise


def test_lr_layer_out_of_range(mobilenet):
    with pytest.raises(TinyclError, match="out of range"):
        layer_costs(mobilenet, 128, 28)
