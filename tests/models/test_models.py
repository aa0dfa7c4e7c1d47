import pytest
import torch

from tinycl.errors import TinyclError
from tinycl.models import check_lr_layer, create_model, layer_table, split


def test_mobilenet_v1_table_matches_references():
    # REFERENCES.md: MobileNetV1 1.0 at 128x128, 50-class head: 185.4 M MACs, 3.26 M params,
    # layer 19 outputs 512x8x8, the adaptive stage above 19 costs ~59.3 M MACs.
    rows = layer_table(create_model("mobilenet_v1"), 128)
    assert len(rows) == 29
    assert round(sum(r.macs for r in rows) / 1e6, 1) == 185.4
    assert round(sum(r.params for r in rows) / 1e6, 2) == 3.26
    assert rows[19].out_shape == (512, 8, 8) and rows[19].out_values == 32768
    assert rows[0].out_shape == (32, 64, 64)
    assert rows[23].out_shape == (512, 4, 4) and rows[24].out_shape == (1024, 4, 4)
    assert round(sum(r.macs for r in rows[20:]) / 1e6, 1) == 59.3
    assert [r.kind for r in rows[:5]] == ["conv", "dw", "pw", "dw", "pw"]
    assert rows[27].kind == "pool" and rows[28].kind == "linear" and rows[28].macs == 1024 * 50


def test_width_multiplier_scales_channels():
    rows = layer_table(create_model("mobilenet_v1", width=0.25), 64)
    assert rows[19].out_shape == (128, 4, 4)
    assert rows[26].out_shape == (256, 2, 2)


@pytest.mark.parametrize("lr_layer", [0, 7, 19, 23, 26, 27])
def test_split_is_bit_exact_in_eval_mode(lr_layer):
    torch.manual_seed(0)
    model = create_model("mobilenet_v1", width=0.5).eval()
    # Non-trivial BN statistics so folding mistakes would show.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 64, 64)
    frozen, adaptive = split(model, lr_layer)
    frozen.eval()
    adaptive.eval()
    with torch.no_grad():
        assert torch.equal(adaptive(frozen(x)), model(x))
    assert len(frozen) == lr_layer + 1


def test_split_shares_modules_with_model():
    model = create_model("mobilenet_v1", width=0.25)
    _, adaptive = split(model, 19)
    assert adaptive[-1] is model.head


def test_unknown_model_and_lr_layer_out_of_range():
    with pytest.raises(TinyclError, match="unknown model 'resnet'"):
        create_model("resnet")
    model = create_model("mobilenet_v1", width=0.25)
    with pytest.raises(TinyclError, match="LR layer 28 out of range .* 0..27"):
        check_lr_layer(model, 28)
    with pytest.raises(TinyclError, match="LR layer -1 out of range"):
        split(model, -1)
