"""INT8 residual networks: ReLU6 clamp, linear bottleneck, residual add, MobileNetV2 / PhiNet stages."""

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycl.errors import TinyclError
from tinycl.models import create_model, split
from tinycl.quant import (
    IntBlock,
    IntConvLayer,
    IntConvUnit,
    LatentQuantizer,
    add_int64_reference,
    compare_accuracy,
    layer_errors,
    make_int_add,
    quantize_frozen_stage,
    relu6_code_max,
    requantize_scalar,
)
from tinycl.quant.int_blocks import ADD_LEFT_SHIFT, make_int_conv_unit
from tinycl.quant.int_frozen import make_int_conv_layer

# ---------------------------------------------------------------- primitives


def random_conv(rng, kind, c_in, c_out, kernel, stride, input_signed, output_scale=0.02, weight_max=127,
                shifts=(30, 50)):
    groups = c_in if kind == "dw" else 1
    c_out = c_in if kind == "dw" else c_out
    kernel = 1 if kind == "pw" else kernel
    weight = rng.integers(-weight_max, weight_max + 1, (c_out, c_in // groups, kernel, kernel), dtype=np.int64)
    bias = rng.integers(-5000, 5001, c_out, dtype=np.int64)
    multiplier = rng.integers(2**30, 2**31, c_out, dtype=np.int64)
    shift = rng.integers(shifts[0], shifts[1], c_out, dtype=np.int64)
    return make_int_conv_layer(kind, torch.from_numpy(weight).to(torch.int8), torch.from_numpy(bias),
                               torch.from_numpy(multiplier), torch.from_numpy(shift), stride,
                               0 if kind == "pw" else kernel // 2, groups, input_signed, output_scale=output_scale)


def random_codes(rng, shape, signed):
    lo, hi = (-127, 128) if signed else (0, 256)
    return rng.integers(lo, hi, shape, dtype=np.int64)


def fast(layer, x):
    """The fast path as the stage runs it: float32 channels-last integer codes in, codes out."""
    x = torch.from_numpy(x).to(torch.float32).contiguous(memory_format=torch.channels_last)
    return layer.forward_codes(x, torch.float32).to(torch.int64).numpy()


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["conv", "dw", "pw"]),
    activation=st.sampled_from(["relu", "relu6", "none"]),
    relu6_max=st.integers(0, 255),
    c_in=st.integers(1, 16),
    c_out=st.integers(1, 10),
    kernel=st.sampled_from([1, 3, 5]),
    stride=st.sampled_from([1, 2]),
    size=st.integers(1, 8),
    input_signed=st.booleans(),
    shifts=st.sampled_from([(30, 44), (40, 52), (45, 63)]),
    seed=st.integers(0, 2**32 - 1),
)
def test_conv_units_fast_path_equals_int64_reference(kind, activation, relu6_max, c_in, c_out, kernel, stride,
                                                     size, input_signed, shifts, seed):
    # shifts past 44 make some layers fall back to int64 requantization; the clamp differs per
    # activation: [0, 255] ReLU, [0, relu6_max] ReLU6, [-127, 127] linear
    rng = np.random.default_rng(seed)
    conv = random_conv(rng, kind, c_in, c_out, kernel, stride, input_signed, shifts=shifts)
    if activation == "relu6":
        unit = IntConvUnit(conv, "relu6", 0, relu6_max)
    else:
        unit = make_int_conv_unit(conv, activation)
    x = random_codes(rng, (2, c_in, size, size + 1), input_signed)
    expected = unit.forward_int64_reference(x)
    assert np.array_equal(fast(unit, x), expected)
    assert expected.min() >= unit.lo and expected.max() <= unit.hi


def test_relu6_clamp_in_codes():
    assert relu6_code_max(6 / 255) == 255  # scale calibrated on a ReLU6 output: 6 is the top code
    assert relu6_code_max(0.01) == 255  # 6 / s = 600, clamped to the code range
    assert relu6_code_max(0.05) == 120
    assert relu6_code_max(6 / 100.5) == 101  # 100.5 rounds half up
    assert relu6_code_max(0.5) == 12
    with pytest.raises(TinyclError, match="scale"):
        relu6_code_max(0.0)
    # a unit whose scale leaves room above 6: the clamp, not the code range, caps the output
    conv = make_int_conv_layer("pw", torch.ones(1, 1, 1, 1, dtype=torch.int8), torch.tensor([0]),
                               torch.tensor([2**30]), torch.tensor([30]), 1, 0, 1, False, output_scale=0.05)
    unit = make_int_conv_unit(conv, "relu6")  # multiplier 1: acc = x in codes
    x = np.arange(0, 256, dtype=np.int64).reshape(1, 1, 16, 16)
    assert (unit.lo, unit.hi) == (0, 120)
    assert np.array_equal(unit.forward_int64_reference(x).ravel(), np.minimum(np.arange(256), 120))
    assert np.array_equal(fast(unit, x), unit.forward_int64_reference(x))
    with pytest.raises(TinyclError, match="range"):
        IntConvUnit(conv, "none", 0, 255)


scales = st.floats(1e-3, 1.0)


@settings(max_examples=60, deadline=None)
@given(scale_a=scales, scale_b=scales, scale_y=scales, a_signed=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_residual_add_fast_equals_reference_and_scalar_oracle(scale_a, scale_b, scale_y, a_signed, seed):
    rng = np.random.default_rng(seed)
    add = make_int_add(scale_a, scale_b, scale_y)
    a = random_codes(rng, (2, 3, 4, 5), a_signed)
    b = random_codes(rng, (2, 3, 4, 5), True)
    a[0, 0, 0, :2], b[0, 0, 0, :2] = (255 if not a_signed else 127, 127), (-127, -127)  # the extremes
    expected = add_int64_reference(a, b, add)
    got = add.forward_codes(torch.from_numpy(a).to(torch.float32), torch.from_numpy(b).to(torch.float32))
    assert got.dtype == torch.int64 and np.array_equal(got.numpy(), expected)
    # the same three roundings with unbounded Python ints (arm_elementwise_add_s8, offsets 0)
    (m_a, m_b), (n_a, n_b) = add.multipliers, add.right_shifts
    big = 2**62
    for x, y, out in list(zip(a.ravel().tolist(), b.ravel().tolist(), expected.ravel().tolist(), strict=True))[:40]:
        total = (requantize_scalar(x << ADD_LEFT_SHIFT, m_a, n_a, -big, big)
                 + requantize_scalar(y << ADD_LEFT_SHIFT, m_b, n_b, -big, big))
        assert requantize_scalar(total, add.output_multiplier, add.output_right_shift, -127, 127) == out
    # and it is an add: within half a code plus the input roundings (each <= 1/2 of 2 max(s) / 2**20)
    exact = np.clip((a * scale_a + b * scale_b) / scale_y, -127, 127)
    slack = 0.5 + 2 * max(scale_a, scale_b) / (2**ADD_LEFT_SHIFT * scale_y) + 1e-6 * np.abs(exact)
    assert np.all(np.abs(expected - exact) <= slack)


def test_residual_add_reference_refuses_what_is_not_a_code():
    add = make_int_add(0.1, 0.1, 0.2)
    with pytest.raises(OverflowError, match="codes"):
        add_int64_reference(np.array([256]), np.array([0]), add)
    with pytest.raises(TinyclError, match="scales"):
        make_int_add(0.1, 0.0, 0.2)


@settings(max_examples=25, deadline=None)
@given(
    c_in=st.integers(1, 12),
    expansion=st.sampled_from([None, 2, 6]),
    stride=st.sampled_from([1, 2]),
    size=st.integers(2, 8),
    input_signed=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_blocks_fast_path_equals_int64_reference(c_in, expansion, stride, size, input_signed, seed):
    """Expand (1x1, ReLU6) -> depthwise (ReLU6) -> linear bottleneck (+ the add at stride 1)."""
    rng = np.random.default_rng(seed)
    hidden = c_in * (expansion or 1)
    units = []
    if expansion is not None:
        units.append(make_int_conv_unit(random_conv(rng, "pw", c_in, hidden, 1, 1, input_signed), "relu6"))
    units.append(make_int_conv_unit(random_conv(rng, "dw", hidden, hidden, 3, stride, expansion is None and
                                                input_signed), "relu6"))
    units.append(make_int_conv_unit(random_conv(rng, "pw", hidden, c_in, 1, 1, False), "none"))
    add = make_int_add(*rng.uniform(0.01, 0.5, 3)) if stride == 1 else None
    block = IntBlock(units, add)
    x = random_codes(rng, (2, c_in, size, size), input_signed)
    expected = block.forward_int64_reference(x)
    assert np.array_equal(fast(block, x), expected)
    assert block.output_signed and expected.min() >= -127 and expected.max() <= 127
    assert block.kind.endswith("pw-linear+add" if add else "pw-linear")


# ---------------------------------------------------------------- whole stages


@functools.cache
def tiny(name, **kwargs):
    """Random-init model x0.25 with non-trivial BN statistics (built once per session)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, width=0.25, **kwargs)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, 32, 32) * 1.5)
    model.eval()
    return model


@pytest.mark.parametrize("name", ["mobilenet_v2", "phinet"])
def test_every_block_boundary_quantizes_and_runs(name, one_thread):
    """Every LR layer the layer table allows (up to the last block / conv) at width 0.25, 32 px:
    fast path bit-exact with the int64 references, close to the float stage; the pool refused."""
    model = tiny(name)
    cuts = len(model.layer_sequence()) - 2  # the last allowed cut is the pool
    calib, images = torch.randn(8, 3, 32, 32), torch.randn(3, 3, 32, 32)
    residual_adds = 0
    for cut in range(cuts):
        frozen, _ = split(model, cut)
        stage = quantize_frozen_stage(frozen, calib)
        x = stage.quantize_input(images)
        got, want = stage.forward_int(x, return_all=True), stage.forward_reference_int64(x, return_all=True)
        for layer, fast_codes, ref_codes in zip(stage.layers, got, want, strict=True):
            assert fast_codes.dtype == (torch.int8 if layer.output_signed else torch.uint8)
            assert torch.equal(fast_codes, ref_codes)
        residual_adds += stage.layers[-1].kind.endswith("+add")
        unsigned_cuts = (0, cuts - 1) if name == "mobilenet_v2" else (0,)  # ReLU6 convs; blocks end linear
        assert stage.output_signed == (cut not in unsigned_cuts)
        rows = layer_errors(frozen, stage, images)
        assert rows[-1].sqnr_db > 20, (cut, rows[-1])
    assert residual_adds >= 3
    whole, _ = split(model, cuts)
    with pytest.raises(TinyclError, match=f"layer {cuts} .*cannot run in INT8") as info:
        quantize_frozen_stage(whole, calib)
    assert "\n" not in str(info.value)


def test_layer_types_and_the_unsigned_residual_input():
    # MobileNetV2 x0.25: conv0 (ReLU6) then block 1 (t = 1, 8 -> 8 channels): its add takes the
    # UINT8 output of a ReLU6 conv; PhiNet's stem is a linear depthwise conv then 1x1 + ReLU6
    stage = quantize_frozen_stage(split(tiny("mobilenet_v2"), 3)[0], torch.randn(4, 3, 32, 32))
    assert all(isinstance(layer, IntBlock) for layer in stage.layers)
    assert [layer.kind for layer in stage.layers] == [
        "conv-relu6", "dw-relu6+pw-linear+add", "pw-relu6+dw-relu6+pw-linear", "pw-relu6+dw-relu6+pw-linear+add"]
    assert not stage.layers[0].output_signed and not stage.layers[1].input_signed
    assert stage.layers[1].add.input_scales[0] == stage.layers[0].output_scale
    assert stage.layers[0].units[0].hi == 255  # calibrated on the ReLU6 output: max <= 6
    phinet = quantize_frozen_stage(split(tiny("phinet"), 1)[0], torch.randn(4, 3, 32, 32))
    assert [layer.kind for layer in phinet.layers] == ["dw-linear+pw-relu6", "dw-relu6+pw-linear"]
    assert phinet.layers[0].units[0].output_signed and phinet.layers[0].input_signed
    # MobileNetV1 keeps its IntConvLayer, byte for byte (tests/quant/test_quant_int_frozen.py)
    v1 = quantize_frozen_stage(split(create_model("mobilenet_v1", width=0.25), 2)[0], torch.randn(4, 3, 32, 32))
    assert all(type(layer) is IntConvLayer for layer in v1.layers)


def test_phinet_outside_its_mcu_mode_is_refused_in_one_line():
    frozen, _ = split(tiny("phinet", mcu=False), 3)
    with pytest.raises(TinyclError, match="MCU mode") as info:
        quantize_frozen_stage(frozen, torch.randn(2, 3, 32, 32))
    assert "\n" not in str(info.value)


def test_fidelity_and_signed_latents_of_a_residual_stage(one_thread):
    model = tiny("mobilenet_v2")
    frozen, adaptive = split(model, 13)
    stage = quantize_frozen_stage(frozen, torch.randn(16, 3, 32, 32))
    images, labels = torch.randn(24, 3, 32, 32), torch.randint(0, 10, (24,))
    rows = layer_errors(frozen, stage, images[:8])
    assert [r.kind for r in rows] == [layer.kind for layer in stage.layers] and len(rows) == 14
    assert all(r.sqnr_db > 20 and 0 <= r.saturated_fraction < 0.05 for r in rows)
    acc = compare_accuracy(frozen, adaptive, stage, images, labels)
    assert acc["agreement"] >= 0.5
    latents = stage(images)
    assert latents.dtype == torch.int8 and int(latents.min()) < 0
    # the Q-bit quantizer takes the int8 latents (shift mode): Q = 8 is lossless
    quantizer = LatentQuantizer(8, latent_scale=stage.output_scale).calibrate(latents.numpy())
    assert quantizer.signed
    decoded = quantizer.roundtrip(latents.numpy())
    assert np.array_equal(decoded, stage.dequantize(latents).numpy())


def test_export_takes_the_blocks_but_refuses_a_residual_adaptive_stage_in_one_line():
    """The runtime runs integer blocks (tests/export/test_export_residual.py); an adaptive stage
    cut before a residual block has no FP32 residual add: one line naming the module."""
    from tinycl.export.deployment import make_deployment

    for name, cut in (("mobilenet_v2", 2), ("phinet", 2)):  # PhiNet's layer 0 is already a block
        frozen, adaptive = split(tiny(name), cut)
        stage = quantize_frozen_stage(frozen, torch.randn(4, 3, 32, 32))
        latents = stage(torch.randn(2, 3, 32, 32)).numpy()
        quantizer = LatentQuantizer(8, latent_scale=stage.output_scale).calibrate(latents)
        with pytest.raises(TinyclError, match="adaptive.*: a residual block .* has no FP32 kernel") as info:
            make_deployment(stage, quantizer, adaptive, (32, 32), 10)
        assert "\n" not in str(info.value)


def test_auto_chunk_counts_the_expanded_activation():
    stage = quantize_frozen_stage(split(tiny("mobilenet_v2"), 2)[0], torch.randn(2, 3, 32, 32))
    block = stage.layers[2]  # 8 -> 48 (x6) -> 8 channels, stride 2: the expansion is the peak, at 16 x 16
    assert block.peak_values(16, 16) == 48 * 16 * 16 > block.out_channels * math.prod(block.output_hw(16, 16))
    from tinycl.quant.int_frozen import CHUNK_CACHE_BYTES, MAX_CHUNK

    assert stage.auto_chunk(32, 32, threads=1) == min(MAX_CHUNK, CHUNK_CACHE_BYTES // (8 * 48 * 16 * 16))
