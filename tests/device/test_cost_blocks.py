"""The cost model on residual networks (MobileNetV2, PhiNet): one row per conv of a block, the
sum of which is the layer table's MACs; a uniform sparse update; BN folded (``--norm fold``)."""

import math

import pytest
import torch

from tinycl.device import CostConfig, estimate
from tinycl.device.costs import ADAPTIVE, FROZEN, layer_costs, lr_values, with_sparse_update
from tinycl.device.memory import FP32_BYTES, kept_activation_bytes
from tinycl.models import create_model, layer_table
from tinycl.train.stages import prepare_stages


@pytest.mark.parametrize("name, lr_layer", [("mobilenet_v2", 16), ("mobilenet_v2", 13), ("phinet", 5)])
def test_block_rows_add_up_to_the_layer_table(name, lr_layer):
    model = create_model(name, num_classes=50, width=0.25)
    rows = layer_costs(model, 64, lr_layer)
    table = layer_table(model, 64)
    for info in table:
        mine = [r for r in rows if r.index == info.index]
        assert sum(r.forward_macs for r in mine) == info.macs, info.name
        assert mine[-1].out_shape == info.out_shape
        if info.kind == "block":
            assert [r.unit for r in mine] == list(range(len(mine))) and len(mine) >= 2
    assert lr_values(rows, lr_layer) == math.prod(table[lr_layer].out_shape)
    first = [r for r in rows if r.index == lr_layer + 1]
    assert first[0].input_grad_macs == 0 and all(r.input_grad_macs > 0 for r in first[1:])  # inside the block
    assert all(r.weight_grad_macs == r.forward_macs for r in rows if r.stage == ADAPTIVE and r.kind != "pool"
               and r.kind != "linear")
    assert all(r.weight_grad_macs == r.input_grad_macs == 0 for r in rows if r.stage == FROZEN)


def test_mobilenet_v2_block_units_and_held_input():
    rows = layer_costs(create_model("mobilenet_v2", num_classes=50, width=0.25), 64, 16)
    block3 = [r for r in rows if r.index == 3]  # 8 -> 48 -> 48 -> 8 channels, residual, 16 x 16
    assert [r.kind for r in block3] == ["pw", "dw", "pw"]
    assert [r.out_shape for r in block3] == [(48, 16, 16), (48, 16, 16), (8, 16, 16)]
    assert [r.held_values for r in block3] == [8 * 16 * 16] * 3
    assert [r.norm_values for r in block3] == [96, 96, 16] and [r.has_relu for r in block3] == [True, True, False]


def test_uniform_sparse_update_scales_weight_gradients_and_kept_inputs():
    rows = layer_costs(create_model("mobilenet_v2", num_classes=50, width=0.25), 64, 16)
    sparse = with_sparse_update(rows, 0.25)
    for dense_row, row in zip(rows, sparse, strict=True):
        if row.stage == ADAPTIVE and row.kind in ("conv", "dw", "pw"):
            fraction = math.ceil(0.25 * row.in_shape[0]) / row.in_shape[0]
            assert row.weight_grad_macs == round(dense_row.weight_grad_macs * fraction)
            assert row.input_grad_macs == dense_row.input_grad_macs
            kept = kept_activation_bytes(row) - kept_activation_bytes(dense_row)
            assert kept == math.ceil(FP32_BYTES * row.in_values * fraction) - FP32_BYTES * row.in_values
        else:
            assert row == dense_row  # the head and the frozen stage unchanged
    with pytest.raises(Exception, match="channel ratio"):
        estimate(CostConfig(model="mobilenet_v2", width=0.25, res=64, lr_layer=16, sparse_ratio=0.0))


def test_fold_keeps_no_bn_x_hat_and_one_sample():
    base = dict(model="mobilenet_v2", width=0.25, res=64, lr_layer=16)
    brn, frozen, fold = (estimate(CostConfig(**base, norm=n)).memory for n in ("brn", "frozen", "fold"))
    rows = [r for r in layer_costs(create_model("mobilenet_v2", num_classes=50, width=0.25), 64, 16)
            if r.stage == ADAPTIVE]
    x_hat = sum(FP32_BYTES * r.out_values for r in rows if r.norm_values)
    assert frozen.adaptive_kept_activation_bytes - fold.adaptive_kept_activation_bytes == x_hat > 0
    assert brn.adaptive_kept_activation_bytes == 128 * frozen.adaptive_kept_activation_bytes


def test_norm_fold_folds_every_adaptive_bn_and_keeps_the_function():
    """Before any training the folded adaptive stage computes what the eval-mode BN one does."""
    torch.manual_seed(0)
    model = create_model("mobilenet_v2", num_classes=10, width=0.25)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(4, 3, 64, 64)
    want = model(x)
    frozen, adaptive = prepare_stages(model, 16, "fold")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in adaptive.modules())
    got = adaptive.eval()(frozen(x))
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
