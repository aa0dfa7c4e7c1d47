import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycl.errors import TinyclError
from tinycl.models import create_model, split
from tinycl.quant import compare_accuracy, layer_errors, quantize_frozen_stage
from tinycl.quant.int_frozen import (
    CHUNK_CACHE_BYTES,
    MAX_CHUNK,
    MULTI_THREAD_CHUNK,
    make_int_conv_layer,
)


def random_layer(rng, kind, c_in, c_out, kernel, stride, weight_max, bias_max, input_signed,
                 shifts=(20, 40)):
    groups = c_in if kind == "dw" else 1
    if kind == "dw":
        c_out = c_in
    if kind == "pw":
        kernel = 1
    shape = (c_out, c_in // groups, kernel, kernel)
    weight = rng.integers(-weight_max, weight_max + 1, shape, dtype=np.int64)
    bias = rng.integers(-bias_max, bias_max + 1, c_out, dtype=np.int64)
    multiplier = rng.integers(2**30, 2**31, c_out, dtype=np.int64)
    shift = rng.integers(shifts[0], shifts[1], c_out, dtype=np.int64)
    return make_int_conv_layer(
        kind, torch.from_numpy(weight).to(torch.int8), torch.from_numpy(bias),
        torch.from_numpy(multiplier), torch.from_numpy(shift), stride,
        0 if kind == "pw" else kernel // 2, groups, input_signed,
    )


def random_input(rng, n, c, h, w, signed):
    lo, hi = (-128, 128) if signed else (0, 256)
    return rng.integers(lo, hi, (n, c, h, w), dtype=np.int64)


def assert_layer_exact(layer, x):
    expected = layer.forward_int64_reference(x)
    got = layer.forward_int(torch.from_numpy(x).to(torch.float32))
    assert got.dtype == torch.float32
    assert np.array_equal(got.to(torch.int64).numpy(), expected)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["conv", "dw", "pw"]),
    c_in=st.integers(1, 24),
    c_out=st.integers(1, 12),
    kernel=st.sampled_from([1, 3, 5]),
    stride=st.sampled_from([1, 2]),
    size=st.integers(1, 9),
    weight_max=st.sampled_from([1, 20, 127]),
    input_signed=st.booleans(),
    shifts=st.sampled_from([(20, 40), (36, 52), (45, 63)]),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_layers_exact(kind, c_in, c_out, kernel, stride, size, weight_max, input_signed,
                             shifts, seed):
    # shifts up to 44 take the float64 requantization; beyond, float64 where the bound allows it
    # and int64 elsewhere; (36, 52) puts most outputs inside 0..255, where rounding matters
    rng = np.random.default_rng(seed)
    layer = random_layer(rng, kind, c_in, c_out, kernel, stride, weight_max, 5000, input_signed,
                         shifts)
    x = random_input(rng, 2, c_in, size, size + 1, input_signed)
    assert_layer_exact(layer, x)


@pytest.mark.parametrize("kind", ["conv", "pw"])
def test_large_reduction_512x9_exact(kind):
    # K = 512 * 9 = 4608 (conv) with full-scale weights: sums reach ~1.5e8 > 2**24, so a float32
    # convolution is not an integer one; the layer must pick float64 and stay exact.
    rng = np.random.default_rng(1)
    c_in = 512 if kind == "conv" else 4608
    layer = random_layer(rng, kind, c_in, 4, 3, 1, 127, 2**20, False)
    assert layer.exact_dtype == torch.float64
    assert layer.accumulator_bound > 2**24
    # worst case: every input at 255 and weights of one sign in one channel
    layer.weight_s8[0] = 127
    layer.__post_init__()
    x = random_input(rng, 1, c_in, 4, 4, False)
    x[:, :, 1:3, 1:3] = 255
    assert_layer_exact(layer, x)


def test_float32_would_not_be_exact_for_512x9():
    rng = np.random.default_rng(2)
    # same-sign products: partial sums climb to ~1.4e8, far past 2**24
    w = rng.integers(100, 128, (8, 512, 3, 3)).astype(np.int64)
    x = rng.integers(200, 256, (1, 512, 6, 6)).astype(np.int64)
    exact = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1)
    f32 = F.conv2d(torch.from_numpy(x).float(), torch.from_numpy(w).float(), padding=1)
    assert not torch.equal(exact, f32.double())  # the warning, demonstrated


def test_float32_fast_path_is_used_for_typical_layers():
    rng = np.random.default_rng(3)
    layer = random_layer(rng, "pw", 512, 16, 1, 1, 20, 1000, False)
    assert layer.exact_dtype == torch.float32
    assert_layer_exact(layer, random_input(rng, 2, 512, 5, 5, False))


def single_channel_layer(bias, multiplier, shift):
    """1x1 conv, one input and one output channel, weight 1: ``acc = bias + x``."""
    return make_int_conv_layer(
        "pw", torch.ones(1, 1, 1, 1, dtype=torch.int8), torch.tensor([bias]),
        torch.tensor([multiplier]), torch.tensor([shift]), 1, 0, 1, False,
    )


def test_layer_beyond_the_float64_condition_falls_back_to_int64():
    # acc = 8473547 with multiplier 1100348957 >> 46: float64 would give 133 (fixed_point tests)
    layer = single_channel_layer(8473547, 1100348957, 46)
    assert layer.requant_path == "int64"
    x = np.zeros((1, 1, 2, 2), np.int64)
    assert_layer_exact(layer, x)
    assert int(layer.forward_int(torch.zeros(1, 1, 2, 2))[0, 0, 0, 0]) == 132
    layer.requant_float64 = True  # what forcing the fast path would do
    assert int(layer.forward_int(torch.zeros(1, 1, 2, 2))[0, 0, 0, 0]) == 133


def test_large_shift_with_small_bound_keeps_float64():
    layer = single_channel_layer(1000, 1100348957, 50)
    assert layer.requant_path == "float64"  # (1000 + 255) * m + 2**49 <= 2**53
    x = np.arange(256, dtype=np.int64).reshape(1, 1, 16, 16)
    assert_layer_exact(layer, x)


def test_typical_layers_use_float64_requantization():
    rng = np.random.default_rng(4)
    for kind in ("conv", "dw", "pw"):
        layer = random_layer(rng, kind, 16, 8, 3, 1, 127, 5000, kind == "conv")
        assert layer.requant_path == "float64"


@functools.cache
def tiny_model(seed=0):
    """Random-init MobileNetV1 x0.25 with non-trivial BN statistics (built once per session)."""
    torch.manual_seed(seed)
    model = create_model("mobilenet_v1", num_classes=10, width=0.25)
    model.train()
    with torch.no_grad():  # non-trivial BN statistics
        for _ in range(2):
            model(torch.randn(8, 3, 32, 32) * 1.5)
    model.eval()
    return model


@pytest.mark.parametrize(
    "weight_quant,observer", [("per-channel", "minmax"), ("per-tensor", "percentile"),
                              ("per-channel", "mse")]
)
def test_stage_forward_equals_int64_reference(weight_quant, observer):
    model = tiny_model()
    frozen, _ = split(model, 8)
    calib = torch.randn(16, 3, 32, 32)
    stage = quantize_frozen_stage(frozen, calib, weight_quant, observer)
    assert [layer.kind for layer in stage.layers] == ["conv"] + ["dw", "pw"] * 4
    assert not model.training and not any(m.training for m in model.modules())
    x = stage.quantize_input(torch.randn(5, 3, 32, 32))
    assert x.dtype == torch.int8
    fast = stage.forward_int(x, chunk=2, return_all=True)
    ref = stage.forward_reference_int64(x, return_all=True)
    for got, expected in zip(fast, ref, strict=True):
        assert got.dtype == torch.uint8 and torch.equal(got, expected)
        assert got.is_contiguous()  # NCHW, whatever the internal memory format
    for chunk in (None, 1, 5):
        assert torch.equal(stage.forward_int(x, chunk=chunk), ref[-1])
    assert tuple(fast[-1].shape) == (5, 64, 4, 4)
    latents = stage.dequantize(fast[-1])
    with torch.no_grad():
        reference = frozen(stage.input_scale * x.float())
    rel = float((latents - reference).abs().mean() / reference.abs().mean())
    assert rel < 0.1


def test_auto_chunk_keeps_the_requantization_buffer_near_the_cache_budget():
    frozen, _ = split(tiny_model(), 8)
    stage = quantize_frozen_stage(frozen, torch.randn(4, 3, 32, 32))
    # largest output: layer 2, 16 channels x 16 x 16 = 4096 values, 8 bytes each in float64
    assert stage.auto_chunk(32, 32, threads=1) == min(MAX_CHUNK, CHUNK_CACHE_BYTES // (8 * 4096))
    assert stage.auto_chunk(4096, 4096, threads=1) == 1
    assert stage.auto_chunk(32, 32, threads=4) == MULTI_THREAD_CHUNK
    with pytest.raises(TinyclError, match="chunk"):
        stage.forward_int(stage.quantize_input(torch.randn(1, 3, 32, 32)), chunk=0)
    images = torch.randn(MULTI_THREAD_CHUNK + 5, 3, 32, 32)  # __call__ quantizes block by block
    assert torch.equal(stage(images), stage.forward_int(stage.quantize_input(images)))


def test_fidelity_report():
    model = tiny_model()
    frozen, adaptive = split(model, 6)
    calib = torch.randn(16, 3, 32, 32)
    stage = quantize_frozen_stage(frozen, calib)
    rows = layer_errors(frozen, stage, torch.randn(8, 3, 32, 32))
    assert [r.index for r in rows] == list(range(7))
    for row in rows:
        assert row.sqnr_db > 15 and row.max_abs_error >= row.mean_abs_error >= 0
    images = torch.randn(24, 3, 32, 32)
    labels = torch.randint(0, 10, (24,))
    acc = compare_accuracy(frozen, adaptive, stage, images, labels)
    assert set(acc) == {"float_accuracy", "int_accuracy", "agreement"}
    assert 0 <= acc["int_accuracy"] <= 1 and acc["agreement"] >= 0.5


def test_bad_calibration_and_layers():
    frozen, _ = split(tiny_model(), 4)
    with pytest.raises(TinyclError, match="calibration set is empty"):
        quantize_frozen_stage(frozen, torch.zeros(0, 3, 32, 32))
    bad = torch.randn(2, 3, 32, 32)
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(TinyclError, match="NaN or Inf"):
        quantize_frozen_stage(frozen, bad)
    bad[0, 0, 0, 0] = math.inf
    with pytest.raises(TinyclError, match="NaN or Inf"):
        quantize_frozen_stage(frozen, bad)
    with pytest.raises(TinyclError, match="unknown observer"):
        quantize_frozen_stage(frozen, torch.randn(2, 3, 32, 32), observer="kl")
    with pytest.raises(TinyclError, match="weight quantization"):
        quantize_frozen_stage(frozen, torch.randn(2, 3, 32, 32), weight_quant="per-group")
    whole, _ = split(tiny_model(), 27)  # includes the global pool
    with pytest.raises(TinyclError, match="layer 27"):
        quantize_frozen_stage(whole, torch.randn(2, 3, 32, 32))
    stage = quantize_frozen_stage(frozen, torch.randn(2, 3, 32, 32))
    with pytest.raises(TinyclError, match="int8"):
        stage.forward_int(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_integer_forward_ignores_reduced_precision_convolution_setting():
    """A user's bf16 oneDNN setting must not leak into the integer path, and is restored."""
    from tinycl.quant.int_frozen import ieee_float_convolutions

    conv = getattr(getattr(torch.backends, "mkldnn", None), "conv", None)
    if getattr(conv, "fp32_precision", None) is None:
        pytest.skip("this PyTorch has no fp32_precision setting")
    before = conv.fp32_precision
    try:
        conv.fp32_precision = "bf16"
        with ieee_float_convolutions():
            assert conv.fp32_precision == "ieee"
        assert conv.fp32_precision == "bf16"
    finally:
        conv.fp32_precision = before
