"""The Deployment: lowering the adaptive stage, validation, and its file (save/load, refusals)."""

import hashlib
import io
import struct

import numpy as np
import pytest
import torch
from torch import nn

from tinycl.errors import TinyclError
from tinycl.export import load_deployment, lower_adaptive, save_deployment, write_project
from tinycl.export.deployment import HEADER, MAGIC, ActivationOp, AvgPoolOp, BatchNormOp, ConvOp, FlattenOp, LinearOp
from tinycl.export.generate import float_literal
from tinycl.models.heads import Classifier
from tinycl.train.batch_renorm import BatchRenorm2d


@pytest.fixture(scope="module")
def dep(tiny_deployment):
    return tiny_deployment(5, "clip", True, replays=3)[0]


def generated_files(dep, folder):
    project = write_project(dep, folder)
    return {name: (project.root / name).read_bytes() for name in ("tinycl_model.h", "tinycl_model.c",
                                                                   "tinycl_model_data.c")}


def test_save_load_roundtrip_generates_the_same_c(dep, tmp_path):
    path = tmp_path / "run" / "deployment.tcd"
    save_deployment(path, dep)
    loaded = load_deployment(path)
    assert loaded.input_shape == dep.input_shape and loaded.num_classes == dep.num_classes
    assert loaded.meta == dep.meta and np.array_equal(loaded.replay_rows, dep.replay_rows)
    assert np.array_equal(loaded.quantizer.tables, dep.quantizer.tables)
    assert generated_files(loaded, tmp_path / "a") == generated_files(dep, tmp_path / "b")


def payload_file(path, payload: bytes, version: int = 1) -> None:
    path.write_bytes(HEADER.pack(MAGIC, version, len(payload), hashlib.sha256(payload).digest()) + payload)


class NotPlainData:
    pass


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-10], "is truncated"),
    (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "checksum does not match"),
    (lambda data: b"NOTTINYC" + data[8:], "is not a tinycl deployment"),
    (lambda data: data[:8] + struct.pack("<I", 99) + data[12:], "format version 99"),
    (lambda data: b"", "is not a tinycl deployment"),
])
def test_damaged_file_is_one_line(dep, tmp_path, damage, message):
    path = tmp_path / "deployment.tcd"
    save_deployment(path, dep)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(TinyclError, match=message) as info:
        load_deployment(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_file_and_foreign_payloads_are_one_line(dep, tmp_path):
    with pytest.raises(TinyclError, match="deployment not found"):
        load_deployment(tmp_path / "absent.tcd")
    buf = io.BytesIO()
    torch.save({"kind": "tinycl-deployment", "x": NotPlainData()}, buf)  # checksum fine, pickle not
    payload_file(tmp_path / "pickle.tcd", buf.getvalue())
    with pytest.raises(TinyclError, match="refused: it holds more than tensors") as info:
        load_deployment(tmp_path / "pickle.tcd")
    assert "\n" not in str(info.value)
    for state, message in [({"kind": "other"}, "not a deployment payload"),
                           ({"kind": "tinycl-deployment"}, "missing entry 'frozen'")]:
        buf = io.BytesIO()
        torch.save(state, buf)
        payload_file(tmp_path / "bad.tcd", buf.getvalue())
        with pytest.raises(TinyclError, match=message) as info:
            load_deployment(tmp_path / "bad.tcd")
        assert "\n" not in str(info.value)


def test_inconsistent_content_is_refused(dep, tmp_path):
    """A well-formed file whose shapes disagree must not reach the C generator (out-of-bounds
    reads on the device)."""
    from tinycl.export.deployment import deployment_state, encode_deployment

    state = deployment_state(dep)
    state["frozen"]["layers"][2]["weight_s8"] = state["frozen"]["layers"][2]["weight_s8"][:, :2]  # pw: 2 inputs
    buf = io.BytesIO()
    torch.save(state, buf)
    payload_file(tmp_path / "shapes.tcd", buf.getvalue())
    with pytest.raises(TinyclError, match="frozen layer 2: .* cannot take") as info:
        load_deployment(tmp_path / "shapes.tcd")
    assert "\n" not in str(info.value)
    state = deployment_state(dep)
    state["adaptive"][0]["weight"] = state["adaptive"][0]["weight"].double()
    buf = io.BytesIO()
    torch.save(state, buf)
    payload_file(tmp_path / "dtype.tcd", buf.getvalue())
    with pytest.raises(TinyclError, match="must be finite float32"):
        load_deployment(tmp_path / "dtype.tcd")
    assert encode_deployment(dep)[:8] == MAGIC


def test_lowering_a_mobilenet_tail():
    adaptive = nn.Sequential(
        nn.Sequential(nn.Conv2d(4, 4, 3, 2, 1, groups=4, bias=False), BatchRenorm2d(4), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 6, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU6()),
        nn.Conv2d(6, 6, 3, padding=1), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), Classifier(6, 3))
    ops = lower_adaptive(adaptive)
    assert [type(op) for op in ops] == [ConvOp, BatchNormOp, ActivationOp, ConvOp, BatchNormOp, ActivationOp,
                                        ConvOp, AvgPoolOp, FlattenOp, LinearOp]
    assert [op.kind for op in ops if isinstance(op, ConvOp)] == ["dw", "pw", "conv"]
    assert ops[5].kind == "relu6" and ops[7].kernel_h == 0 and ops[9].bias is None
    assert ops[0].weight is not adaptive[0][0].weight  # copies, not the live parameters


@pytest.mark.parametrize("module, message", [
    (nn.Hardswish(), "Hardswish has no kernel"),
    (nn.Conv2d(4, 4, 3, groups=2), "grouped convolution"),
    (nn.Conv2d(4, 4, 3, dilation=2), "dilated"),
    (nn.Conv2d(4, 4, 3, stride=(1, 2)), "non-square stride"),
    (nn.AdaptiveAvgPool2d(2), "AdaptiveAvgPool2d"),
    (nn.BatchNorm2d(4, track_running_stats=False), "without running statistics"),
])
def test_lowering_refuses_what_the_runtime_lacks(module, message):
    with pytest.raises(TinyclError, match=message) as info:
        lower_adaptive(nn.Sequential(module))
    assert "\n" not in str(info.value)


def test_validation_refuses_mismatches(dep):
    from dataclasses import replace

    with pytest.raises(TinyclError, match="not \\[7\\] logits"):
        replace(dep, num_classes=7).validate()
    with pytest.raises(TinyclError, match="replay rows must be uint8"):
        replace(dep, replay_rows=dep.replay_rows[:, :-1]).validate()
    with pytest.raises(TinyclError, match="replay labels must be"):
        replace(dep, replay_labels=dep.replay_labels + 10).validate()
    with pytest.raises(TinyclError, match="meta must map"):
        replace(dep, meta={"run": object()}).validate()


def test_float_literals_are_exact():
    values = np.array([0.1, -2.5, 0.0, -0.0, 1e-40, 3.4e38, 1 / 3], np.float32)
    for value in values:
        literal = float_literal(float(value))
        assert literal.endswith("f") and np.float32(float.fromhex(literal[:-1])) == value
    assert float_literal(-0.0).startswith("-")
    with pytest.raises(TinyclError, match="non-finite"):
        float_literal(float("nan"))


def test_batch_renorm_with_running_std_lowers_to_its_eval_map():
    """ar1-pytorch's statistics (a running standard deviation): not the same operation order
    as ``x * scale + shift``, so equal within rounding only."""
    try:
        brn = BatchRenorm2d(5, stats="std")
    except TypeError:
        pytest.skip("this BatchRenorm2d has no running-std statistics")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in (brn.weight, brn.bias, brn.running_mean):
            tensor.normal_(generator=generator)
        brn.running_std.uniform_(0.5, 2.0, generator=generator)
    x = torch.randn(2, 5, 3, 3, generator=generator)
    (op,) = lower_adaptive(nn.Sequential(brn))
    got = x * op.scale.view(1, -1, 1, 1) + op.shift.view(1, -1, 1, 1)
    torch.testing.assert_close(got, brn.eval()(x), rtol=1e-6, atol=1e-6)
