import os

import pytest
import torch

from tinycl.errors import TinyclError
from tinycl.models import create_model
from tinycl.models.import_weights import import_pytorchcv_mobilenet, pytorchcv_mobilenet_names

WIDTH = 0.25  # small and fast; the mapping does not depend on the width


def fake_pytorchcv_state(width=WIDTH, seed=0):
    """tinycl's own MobileNetV1 state dict renamed to pytorchcv names, plus a 1000-class head."""
    torch.manual_seed(seed)
    source = create_model("mobilenet_v1", width=width)
    with torch.no_grad():
        for tensor in source.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5)  # positive: running_var must be
    names = pytorchcv_mobilenet_names(source)
    state = {names[k]: v.clone() for k, v in source.state_dict().items() if k in names}
    channels = source.head.linear.in_features
    state["output.weight"] = torch.randn(1000, channels)
    state["output.bias"] = torch.randn(1000)
    return source, state


def test_names_follow_pytorchcv_layout():
    model = create_model("mobilenet_v1", width=WIDTH)
    names = pytorchcv_mobilenet_names(model)
    assert names["features.0.0.weight"] == "features.init_block.conv.weight"
    assert names["features.0.1.running_var"] == "features.init_block.bn.running_var"
    assert names["features.1.0.weight"] == "features.stage1.unit1.dw_conv.conv.weight"
    assert names["features.2.1.weight"] == "features.stage1.unit1.pw_conv.bn.weight"
    assert names["features.3.0.weight"] == "features.stage2.unit1.dw_conv.conv.weight"
    assert names["features.19.0.weight"] == "features.stage4.unit5.dw_conv.conv.weight"  # block 10
    assert names["features.26.1.num_batches_tracked"] == "features.stage5.unit2.pw_conv.bn.num_batches_tracked"
    # 27 conv layers x (1 conv weight + 5 BN tensors); the head is not mapped.
    assert len(names) == 27 * 6 and len(set(names.values())) == len(names)


def test_loads_exactly_and_skips_head(tmp_path):
    source, state = fake_pytorchcv_state()
    path = tmp_path / "mobilenet_w1.pth"
    torch.save(state, path)
    model = create_model("mobilenet_v1", width=WIDTH)
    head_before = model.head.linear.weight.clone()
    skipped = import_pytorchcv_mobilenet(path, model)
    assert skipped == ["head.linear.weight"]
    got, want = model.state_dict(), source.state_dict()
    for name in want:
        if not name.startswith("head."):
            assert torch.equal(got[name], want[name]), name
    assert torch.equal(model.head.linear.weight, head_before)
    model.eval()
    source.eval()
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(model.features(x), source.features(x))


def test_wrong_shape_is_one_line(tmp_path):
    _, state = fake_pytorchcv_state()
    state["features.stage2.unit1.dw_conv.conv.weight"] = torch.zeros(5, 1, 3, 3)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(TinyclError) as info:
        import_pytorchcv_mobilenet(path, create_model("mobilenet_v1", width=WIDTH))
    message = str(info.value)
    assert "\n" not in message
    assert "'features.stage2.unit1.dw_conv.conv.weight' has shape (5, 1, 3, 3)" in message
    assert "(16, 1, 3, 3)" in message and "features.3.0.weight" in message


def test_width_mismatch_is_named(tmp_path):
    _, state = fake_pytorchcv_state(width=0.5)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(TinyclError, match="init_block.conv.weight' has shape .*width 0.25"):
        import_pytorchcv_mobilenet(path, create_model("mobilenet_v1", width=WIDTH))


def test_missing_and_unexpected_keys(tmp_path):
    _, state = fake_pytorchcv_state()
    del state["features.stage5.unit2.pw_conv.bn.running_mean"]
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(TinyclError, match=r"lack tensor 'features.stage5.unit2.pw_conv.bn.running_mean' "
                                          r"\(tinycl 'features.26.1.running_mean'\)"):
        import_pytorchcv_mobilenet(path, create_model("mobilenet_v1", width=WIDTH))
    _, state = fake_pytorchcv_state()
    state["features.stage6.unit1.conv.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(TinyclError, match="unexpected tensor 'features.stage6.unit1.conv.weight'"):
        import_pytorchcv_mobilenet(path, create_model("mobilenet_v1", width=WIDTH))


def test_old_files_without_batch_counter_load(tmp_path):
    _, state = fake_pytorchcv_state()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "w.pth"
    torch.save(state, path)
    assert import_pytorchcv_mobilenet(path, create_model("mobilenet_v1", width=WIDTH)) == ["head.linear.weight"]


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_code_in_pickle_and_missing_file_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": _Boom()}, path)
    model = create_model("mobilenet_v1", width=WIDTH)
    with pytest.raises(TinyclError, match="cannot load weights"):
        import_pytorchcv_mobilenet(path, model)
    with pytest.raises(TinyclError, match="weights file not found"):
        import_pytorchcv_mobilenet(tmp_path / "nope.pth", model)
