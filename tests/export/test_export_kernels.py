"""Each C kernel of the runtime against its Python reference (tinycl.export.reference), on
random shapes and values, compiled for the host. Integer kernels: identical bytes. FP32
kernels: within float rounding of PyTorch (elementwise ones: identical bits)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycl.data.base import to_tensor_batch
from tinycl.export import reference as ref
from tinycl.quant.fixed_point import quantize_multiplier
from tinycl.quant.int_frozen import quantize_input_s8
from tinycl.quant.latent import LatentQuantizer

EXAMPLES = settings(max_examples=30, deadline=None)
FP32_RTOL = 1e-5


def assert_fp32_close(got: np.ndarray, want: np.ndarray, magnitude: np.ndarray) -> None:
    """Each element within ``FP32_RTOL`` of ``magnitude``, the same op on absolute values
    (sum of |x * w| + |b|): the scale of a float sum's rounding error, which a relative
    error of the result itself is not when terms cancel."""
    assert got.shape == want.shape and got.dtype == np.float32
    assert (np.abs(got.astype(np.float64) - want) <= FP32_RTOL * np.abs(magnitude) + 1e-30).all()


def absolute(*arrays):
    return [None if a is None else np.abs(a) for a in arrays]


@st.composite
def conv_geometry(draw, depthwise=False, pointwise=False):
    """(in_channels, height, width, out_channels, kernel_h, kernel_w, stride, padding) with a
    non-empty output."""
    in_channels = draw(st.integers(1, 6))
    out_channels = in_channels if depthwise else draw(st.integers(1, 6))
    kernel_h, kernel_w = (1, 1) if pointwise else (draw(st.sampled_from([1, 2, 3, 5])), draw(st.sampled_from([1, 3])))
    padding = 0 if pointwise else draw(st.integers(0, 2))
    height = draw(st.integers(max(1, kernel_h - 2 * padding), 9))
    width = draw(st.integers(max(1, kernel_w - 2 * padding), 9))
    stride = draw(st.integers(1, 3))
    return in_channels, height, width, out_channels, kernel_h, kernel_w, stride, padding


def requant_params(acc_max: int, channels: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel multipliers/shifts that map accumulators of magnitude ~acc_max onto 0..~400,
    so outputs spread over the codes and the clamp is hit sometimes."""
    reals = rng.uniform(150, 400, channels) / max(acc_max, 1)
    pairs = [quantize_multiplier(float(r)) for r in reals]
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def int_conv_case(geometry, seed: int, input_dtype, depthwise: bool = False):
    in_c, h, w, out_c, kh, kw, stride, padding = geometry
    rng = np.random.default_rng(seed)
    info = np.iinfo(input_dtype)
    x = rng.integers(info.min, info.max + 1, (in_c, h, w)).astype(input_dtype)
    weight = rng.integers(-127, 128, (out_c, 1 if depthwise else in_c, kh, kw)).astype(np.int8)
    taps = kh * kw * (1 if depthwise else in_c)
    typical = int(np.sqrt(taps) * 127 * 100)
    bias = rng.integers(-typical, typical + 1, out_c).astype(np.int64)
    multiplier, right_shift = requant_params(typical, out_c, rng)
    return x, weight, bias, multiplier, right_shift, stride, padding


@EXAMPLES
@given(geometry=conv_geometry(), seed=st.integers(0, 2**32 - 1))
def test_conv2d_s8(kernels, geometry, seed):
    x, weight, bias, mult, shift, stride, padding = int_conv_case(geometry, seed, np.int8)
    want = ref.conv2d_s8(x, weight, bias, mult, shift, stride, padding)
    got = kernels.conv2d_s8(x, weight, bias, mult, shift, stride, padding)
    assert got.dtype == np.uint8 and np.array_equal(got, want)


@EXAMPLES
@given(geometry=conv_geometry(), seed=st.integers(0, 2**32 - 1))
def test_conv2d_u8(kernels, geometry, seed):
    x, weight, bias, mult, shift, stride, padding = int_conv_case(geometry, seed, np.uint8)
    assert np.array_equal(kernels.conv2d_u8(x, weight, bias, mult, shift, stride, padding),
                          ref.conv2d_u8(x, weight, bias, mult, shift, stride, padding))


@EXAMPLES
@given(geometry=conv_geometry(depthwise=True), seed=st.integers(0, 2**32 - 1))
def test_depthwise_conv2d_u8(kernels, geometry, seed):
    x, weight, bias, mult, shift, stride, padding = int_conv_case(geometry, seed, np.uint8, depthwise=True)
    want = ref.depthwise_conv2d_u8(x, weight, bias, mult, shift, stride, padding)
    assert np.array_equal(kernels.depthwise_conv2d_u8(x, weight, bias, mult, shift, stride, padding), want)


@EXAMPLES
@given(geometry=conv_geometry(pointwise=True), seed=st.integers(0, 2**32 - 1))
def test_pointwise_conv2d_u8(kernels, geometry, seed):
    x, weight, bias, mult, shift, stride, _ = int_conv_case(geometry, seed, np.uint8)
    assert np.array_equal(kernels.pointwise_conv2d_u8(x, weight, bias, mult, shift, stride),
                          ref.pointwise_conv2d_u8(x, weight, bias, mult, shift, stride))


def test_int_conv_cases_are_not_trivial(kernels):
    """The random parameters above give spread-out codes, not all 0 or all 255."""
    x, weight, bias, mult, shift, stride, padding = int_conv_case((4, 9, 9, 6, 3, 3, 1, 1), 7, np.uint8)
    out = kernels.conv2d_u8(x, weight, bias, mult, shift, stride, padding)
    assert np.array_equal(out, ref.conv2d_u8(x, weight, bias, mult, shift, stride, padding))
    assert np.unique(out).size > 50 and (out == 0).any() and (out == 255).any()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), channels=st.integers(1, 5), spatial=st.integers(1, 40))
def test_requantize_u8_extremes(kernels, seed, channels, spatial):
    """The rounding rule on the whole int32 range, zero multipliers and shifts up to 62."""
    rng = np.random.default_rng(seed)
    acc = rng.integers(-(2**31), 2**31, (channels, spatial), dtype=np.int64)
    acc.flat[: min(4, acc.size)] = [-(2**31), 2**31 - 1, 0, -1][: min(4, acc.size)]
    small = rng.integers(-2000, 2000, acc.shape)
    acc = np.where(rng.random(acc.shape) < 0.5, small, acc)
    multiplier = rng.integers(2**30, 2**31, channels)
    multiplier[rng.random(channels) < 0.1] = 0
    right_shift = rng.integers(1, 63, channels)
    want = ref.requantize_u8(acc, multiplier, right_shift)
    assert np.array_equal(kernels.requantize_u8(acc, multiplier, right_shift), want)


def test_requantize_u8_ties_round_up(kernels):
    """Half-way cases round toward +infinity; the float64-unsafe case of tests/quant is exact."""
    acc = np.array([[3, -3, 5, -5, 8473547]], np.int64)
    multiplier, right_shift = np.array([2**30]), np.array([32])  # x 1/4: 0.75, -0.75, 1.25, ...
    got = kernels.requantize_u8(acc[:, :4], multiplier, right_shift)
    assert got.tolist() == [[1, 0, 1, 0]]
    assert kernels.requantize_u8(acc[:, 4:], np.array([1100348957]), np.array([46])).tolist() == [[132]]


# ---------------------------------------------------------------- camera input


@pytest.mark.parametrize("input_scale", [0.004, 0.0187, 0.05])
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), height=st.integers(1, 19), width=st.integers(1, 23))
def test_rgb_u8_to_input_s8_is_the_python_path(kernels, input_scale, seed, height, width):
    """Table lookup in C == IntFrozenStage.quantize_input(to_tensor_batch(frames)), bit for bit,
    on frames of odd sizes (vectorized loops and their scalar tails alike)."""
    frames = np.random.default_rng(seed).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    table = ref.input_table_s8(input_scale)
    python = quantize_input_s8(to_tensor_batch(frames), input_scale).numpy()
    for frame, want in zip(frames, python, strict=True):
        assert np.array_equal(ref.rgb_u8_to_input_s8(frame, table), want)
        assert np.array_equal(kernels.rgb_u8_to_input_s8(frame, table), want)


def test_input_table_saturates_like_the_python_path():
    table = ref.input_table_s8(0.004)  # (255/255 - 0.406) / 0.225 / 0.004 ≈ 660 -> clamped
    assert table.shape == (3, 256) and table.dtype == np.int8
    assert table.max() == 127 and table.min() == -127
    assert (np.diff(table.astype(int), axis=1) >= 0).all()  # monotone in the byte


# ---------------------------------------------------------------- latent codes and packing


@pytest.mark.parametrize("bits", range(1, 9))
def test_latent_shift_u8_every_value(kernels, bits):
    values = np.arange(256, dtype=np.uint8)
    want = LatentQuantizer(bits, "shift").encode(values.reshape(1, -1))[0]
    assert np.array_equal(ref.latent_shift_u8(values, bits), want)
    assert np.array_equal(kernels.latent_shift_u8(values, bits), want)


@pytest.mark.parametrize("bits", range(1, 9))
def test_latent_clip_u8_every_clip_and_value(kernels, bits):
    """All 255 clip values x all 256 bytes: the fixed-point C rule == LatentQuantizer's tables."""
    clips = np.arange(1, 256)
    latent = np.tile(np.arange(256, dtype=np.uint8), (255, 1))
    want = ref.latent_clip_u8(latent, clips, bits)
    assert np.array_equal(kernels.latent_clip_u8(latent, clips, bits), want)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), bits=st.integers(1, 8), channels=st.integers(1, 6),
       per_channel=st.booleans())
def test_latent_clip_and_decode_match_a_calibrated_quantizer(kernels, seed, bits, channels, per_channel):
    rng = np.random.default_rng(seed)
    latents = (rng.gamma(1.0, 30.0, (5, channels, 3, 2)) * rng.random((1, channels, 1, 1)) * 2).clip(0, 255)
    latents = latents.astype(np.uint8)
    quantizer = LatentQuantizer(bits, "clip", per_channel, latent_scale=float(rng.uniform(0.001, 0.2)))
    quantizer.calibrate(latents)
    groups = ref.latent_groups(quantizer, channels)
    step = ref.latent_step_fp32(quantizer)
    for latent in latents:
        codes = quantizer.encode(latent[None])[0]
        got = kernels.latent_clip_u8(latent.reshape(groups, -1), quantizer.clip_u8, bits)
        assert np.array_equal(got.reshape(latent.shape), codes)
        decoded = kernels.latent_decode_fp32(codes.reshape(groups, -1), step).reshape(latent.shape)
        assert np.array_equal(decoded, quantizer.decode(codes[None])[0])  # bit-exact


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), bits=st.integers(1, 8), count=st.integers(1, 150))
def test_pack_and_unpack_bits(kernels, seed, bits, count):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**bits, count, dtype=np.uint8)
    packed = kernels.pack_bits(codes, bits)
    assert np.array_equal(packed, ref.pack_bits(codes, bits))
    assert np.array_equal(kernels.unpack_bits(packed, bits, count), codes)
    noise = rng.integers(0, 256, packed.size, dtype=np.uint8)  # any bytes, unused tail bits too
    assert np.array_equal(kernels.unpack_bits(noise, bits, count), ref.unpack_bits(noise, bits, count))


# ---------------------------------------------------------------- FP32 adaptive stage


def fp32_case(geometry, seed: int, depthwise: bool = False, with_bias: bool = True):
    in_c, h, w, out_c, kh, kw, stride, padding = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((in_c, h, w)).astype(np.float32)
    weight = rng.standard_normal((out_c, 1 if depthwise else in_c, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(out_c).astype(np.float32) if with_bias else None
    return x, weight, bias, stride, padding


@EXAMPLES
@given(geometry=conv_geometry(), seed=st.integers(0, 2**32 - 1), with_bias=st.booleans())
def test_conv2d_fp32_fw(kernels, geometry, seed, with_bias):
    x, weight, bias, stride, padding = fp32_case(geometry, seed, with_bias=with_bias)
    assert_fp32_close(kernels.conv2d_fp32_fw(x, weight, bias, stride, padding),
                      ref.conv2d_fp32_fw(x, weight, bias, stride, padding),
                      ref.conv2d_fp32_fw(*absolute(x, weight, bias), stride, padding))


@EXAMPLES
@given(geometry=conv_geometry(depthwise=True), seed=st.integers(0, 2**32 - 1), with_bias=st.booleans())
def test_depthwise_fp32_fw(kernels, geometry, seed, with_bias):
    x, weight, bias, stride, padding = fp32_case(geometry, seed, depthwise=True, with_bias=with_bias)
    assert_fp32_close(kernels.depthwise_fp32_fw(x, weight, bias, stride, padding),
                      ref.depthwise_fp32_fw(x, weight, bias, stride, padding),
                      ref.depthwise_fp32_fw(*absolute(x, weight, bias), stride, padding))


@EXAMPLES
@given(geometry=conv_geometry(pointwise=True), seed=st.integers(0, 2**32 - 1), with_bias=st.booleans())
def test_pointwise_fp32_fw(kernels, geometry, seed, with_bias):
    x, weight, bias, stride, _ = fp32_case(geometry, seed, with_bias=with_bias)
    assert_fp32_close(kernels.pointwise_fp32_fw(x, weight, bias, stride),
                      ref.pointwise_fp32_fw(x, weight, bias, stride),
                      ref.pointwise_fp32_fw(*absolute(x, weight, bias), stride))


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), channels=st.integers(1, 8), height=st.integers(1, 6), width=st.integers(1, 6))
def test_elementwise_fp32_kernels_are_bit_exact(kernels, seed, channels, height, width):
    """BN inference form, ReLU, ReLU6: the same float operations as PyTorch, so the same bits."""
    from torch import nn

    from tinycl.export.deployment import batch_norm_affine
    from tinycl.train.batch_renorm import BatchRenorm2d

    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((channels, height, width)) * 4).astype(np.float32)
    brn = BatchRenorm2d(channels)
    with torch.no_grad():
        for tensor in (brn.weight, brn.bias, brn.running_mean):
            tensor.copy_(torch.from_numpy(rng.standard_normal(channels).astype(np.float32)))
        brn.running_var.copy_(torch.from_numpy(rng.uniform(0.1, 3, channels).astype(np.float32)))
    affine = batch_norm_affine(brn)
    got = kernels.batch_norm_fp32_fw(x, affine.scale.numpy(), affine.shift.numpy())
    assert np.array_equal(got, ref.batch_norm_fp32_fw(x, affine.scale.numpy(), affine.shift.numpy()))
    assert np.array_equal(got, brn.eval()(torch.from_numpy(x)[None])[0].detach().numpy())
    bn = nn.BatchNorm2d(channels).eval()  # its own fused kernel: equal within rounding
    bn.load_state_dict(brn.state_dict(), strict=False)
    bn_affine = batch_norm_affine(bn)
    scale, shift = bn_affine.scale.numpy(), bn_affine.shift.numpy()
    assert_fp32_close(kernels.batch_norm_fp32_fw(x, scale, shift), bn(torch.from_numpy(x)[None])[0].detach().numpy(),
                      ref.batch_norm_fp32_fw(*absolute(x, scale, shift)))
    assert np.array_equal(kernels.relu_fp32_fw(x), ref.relu_fp32_fw(x))
    assert np.array_equal(kernels.relu6_fp32_fw(x), ref.relu6_fp32_fw(x))


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), channels=st.integers(1, 6), height=st.integers(1, 8), width=st.integers(1, 8),
       data=st.data())
def test_avgpool_fp32_fw(kernels, seed, channels, height, width, data):
    x = np.random.default_rng(seed).standard_normal((channels, height, width)).astype(np.float32)
    kernel_h, kernel_w = data.draw(st.integers(1, height)), data.draw(st.integers(1, width))
    stride = data.draw(st.integers(1, 3))
    assert_fp32_close(kernels.avgpool_fp32_fw(x, kernel_h, kernel_w, stride),
                      ref.avgpool_fp32_fw(x, kernel_h, kernel_w, stride),
                      ref.avgpool_fp32_fw(np.abs(x), kernel_h, kernel_w, stride))
    # global pooling, as nn.AdaptiveAvgPool2d(1) computes it
    global_mean = torch.nn.AdaptiveAvgPool2d(1)(torch.from_numpy(x)[None])[0].numpy()
    assert_fp32_close(kernels.avgpool_fp32_fw(x, height, width, 1), global_mean,
                      ref.avgpool_fp32_fw(np.abs(x), height, width, 1))


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), in_features=st.integers(1, 300), out_features=st.integers(1, 12),
       with_bias=st.booleans())
def test_linear_fp32_fw(kernels, seed, in_features, out_features, with_bias):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(in_features).astype(np.float32)
    weight = rng.standard_normal((out_features, in_features)).astype(np.float32)
    bias = rng.standard_normal(out_features).astype(np.float32) if with_bias else None
    assert_fp32_close(kernels.linear_fp32_fw(x, weight, bias), ref.linear_fp32_fw(x, weight, bias),
                      ref.linear_fp32_fw(*absolute(x, weight, bias)))


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.sampled_from([-1.5, 0.0, 0.25, 2.0, 2.0]), min_size=1, max_size=12))
def test_argmax_fp32_first_of_ties(kernels, values):
    values = np.array(values, np.float32)
    assert kernels.argmax_fp32(values) == ref.argmax_fp32(values) == int(np.argmax(values))
