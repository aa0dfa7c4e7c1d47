import pytest
import torch
from torch import nn

from tinycl.models import layer_table, split
from tinycl.models.mobilenet_v2 import MobileNetV2, block_macs, make_divisible
from tinycl.models.phinet import PhiNet, expansion_factor
from tinycl.models.registry import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def hook_macs(model: nn.Module, res: int) -> int:
    """Independent count: forward hooks on every Conv2d / Linear of the whole model."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
        else:
            kh, kw = module.kernel_size
            total += output[0].numel() * module.in_channels // module.groups * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, res, res))
    for h in handles:
        h.remove()
    return total


def test_mobilenet_v2_matches_the_paper_at_224():
    # Sandler et al. 2018, Table 4: MobileNetV2 1.0, 224x224, 1000 classes: 300 M MACs, 3.4 M
    # params (3.5 M counting BN, as torchvision reports 3,504,872 with the head's bias).
    model = MobileNetV2(num_classes=1000)
    assert hook_macs(model, 224) == 300_774_272
    assert sum(p.numel() for p in model.parameters()) == 3_503_872
    x = torch.zeros(1, 3, 224, 224)
    per_layer, shapes = [], []
    with torch.no_grad():
        for layer in model.layer_sequence():
            per_layer.append(block_macs(layer, x) if not isinstance(layer, nn.AdaptiveAvgPool2d) else 0)
            x = layer(x)
            shapes.append(tuple(x.shape[1:]))
    assert sum(per_layer) == 300_774_272
    # layer_table sums every op of a block: the same total (+ the pool's 1280 x 7 x 7 adds).
    assert sum(r.macs for r in layer_table(model, 224)) == 300_774_272 + 1280 * 49
    assert len(shapes) == 21 and shapes[0] == (32, 112, 112)
    assert shapes[17] == (320, 7, 7) and shapes[18] == (1280, 7, 7) and shapes[20] == (1000,)
    assert model.layer_names()[:2] == ["conv0", "block1"] and model.layer_names()[-3:] == ["conv_last", "pool", "head"]


def test_mobilenet_v2_width_and_resolution():
    assert make_divisible(32 * 0.35) == 16 and make_divisible(16 * 0.35) == 8
    model = create_model("mobilenet_v2", width=0.35, num_classes=50)
    rows = layer_table(model, 96)
    # Inverted-residual blocks hold several convs: the table calls them "block".
    assert [r.kind for r in rows[:3]] == ["conv", "block", "block"] and rows[20].kind == "linear"
    assert [r.params for r in rows] == [sum(p.numel() for p in m.parameters()) for m in model.layer_sequence()]
    assert rows[0].out_shape == (16, 48, 48)
    assert rows[17].out_shape == (112, 3, 3) and rows[18].out_shape == (1280, 3, 3)  # 1280 kept
    assert rows[20].out_shape == (50,)
    residual = [m.use_residual for m in create_model("mobilenet_v2").features[1:18]]
    assert sum(residual) == 10  # 17 blocks, 7 of them change stride or width


def test_phinet_matches_micromind_counts():
    # micromind's PhiNet((3, 224, 224)) doctest (alpha 0.2, beta 1, t0 6, 7 layers, h-swish and
    # squeeze-excite on, no top): 30,917 params and 9,817,670 mult-adds (torchinfo, which also
    # counts a few non-conv ops; our conv-only count is within 0.1 %).
    model = PhiNet(num_classes=10, mcu=False)
    assert sum(p.numel() for p in model.features.parameters()) == 30_917
    conv_macs = block_macs(model.features, torch.zeros(1, 3, 224, 224))
    assert abs(conv_macs - 9_817_670) / 9_817_670 < 1e-3
    rows = layer_table(model, 224)
    assert len(rows) == 11 and model.layer_names()[1] == "block0"
    assert [r.out_shape for r in rows[:9:4]] == [(9, 112, 112), (9, 28, 28), (38, 7, 7)]


def test_phinet_mcu_mode_and_shape_factor():
    mcu = create_model("phinet", alpha=0.5, beta=0.75, t0=5, num_layers=7)
    kinds = {type(m) for m in mcu.modules()}
    assert nn.Hardswish not in kinds and nn.ReLU6 in kinds
    assert not any(type(m).__name__ == "SqueezeExcite" for m in mcu.modules())
    assert expansion_factor(5, 0.75, 0, 7) == 5 and expansion_factor(5, 0.75, 7, 7) == 3.75
    block7 = mcu.features[-1].conv  # expansion t(7) = 3.75 on 96 alpha = 48 input channels
    assert block7[0].in_channels == 48 and block7[0].out_channels == 180
    rows = layer_table(mcu, 128)
    assert rows[-3].out_shape == (96, 4, 4) and rows[-1].out_shape == (50,)


@pytest.mark.parametrize(("name", "kwargs", "cuts"), [
    ("mobilenet_v2", {"width": 0.35}, [0, 3, 10, 17, 19]),
    ("phinet", {"alpha": 0.5}, [0, 2, 5, 9]),
    ("phinet", {"alpha": 0.5, "mcu": False}, [4, 8]),
])
def test_split_is_bit_exact_in_eval_mode(name, kwargs, cuts):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, **kwargs).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        whole = model(x)
        for cut in cuts:
            frozen, adaptive = split(model, cut)
            assert torch.equal(adaptive(frozen(x)), whole)
            assert len(frozen) == cut + 1
