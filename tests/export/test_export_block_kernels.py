"""The runtime's kernels of residual networks (MobileNetV2, PhiNet in MCU mode) against their
Python references, compiled for the host: conv units clamped to any code range (ReLU, ReLU6,
linear bottleneck), INT8-input variants, the residual add, signed latent codes. Identical bytes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_export_kernels import conv_geometry, int_conv_case

from tinycl.export import reference as ref
from tinycl.quant.int_blocks import IntAdd, add_int64_reference, make_int_add, relu6_code_max
from tinycl.quant.latent import LatentQuantizer

EXAMPLES = settings(max_examples=30, deadline=None)
RANGES = st.sampled_from([(0, 255), (0, 200), (0, 17), (-127, 127)])  # ReLU, two ReLU6 bounds, linear


def assert_same(got: np.ndarray, want: np.ndarray, lo: int, hi: int) -> None:
    assert got.dtype == (np.int8 if lo < 0 else np.uint8)
    assert np.array_equal(got, want)
    assert got.astype(int).min() >= lo and got.astype(int).max() <= hi


def centred(case):
    """Biases around zero so a linear output spreads over negative and positive codes."""
    x, weight, bias, mult, shift, stride, padding = case
    return x, weight, bias - int(np.median(bias)), mult, shift, stride, padding


@EXAMPLES
@given(geometry=conv_geometry(), seed=st.integers(0, 2**32 - 1), bounds=RANGES)
def test_conv2d_s8_range(kernels, geometry, seed, bounds):
    x, weight, bias, mult, shift, stride, padding = centred(int_conv_case(geometry, seed, np.int8))
    want = ref.conv2d_s8_range(x, weight, bias, mult, shift, stride, padding, *bounds)
    assert_same(kernels.conv2d_s8_range(x, weight, bias, mult, shift, stride, padding, *bounds), want, *bounds)


@pytest.mark.parametrize("input_dtype", [np.uint8, np.int8])
@EXAMPLES
@given(geometry=conv_geometry(depthwise=True), seed=st.integers(0, 2**32 - 1), bounds=RANGES)
def test_depthwise_conv2d_range(kernels, input_dtype, geometry, seed, bounds):
    name = "depthwise_conv2d_s8_range" if input_dtype == np.int8 else "depthwise_conv2d_u8_range"
    x, weight, bias, mult, shift, stride, padding = centred(int_conv_case(geometry, seed, input_dtype, depthwise=True))
    want = getattr(ref, name)(x, weight, bias, mult, shift, stride, padding, *bounds)
    assert_same(getattr(kernels, name)(x, weight, bias, mult, shift, stride, padding, *bounds), want, *bounds)


@pytest.mark.parametrize("input_dtype", [np.uint8, np.int8])
@EXAMPLES
@given(geometry=conv_geometry(pointwise=True), seed=st.integers(0, 2**32 - 1), bounds=RANGES)
def test_pointwise_conv2d_range(kernels, input_dtype, geometry, seed, bounds):
    name = "pointwise_conv2d_s8_range" if input_dtype == np.int8 else "pointwise_conv2d_u8_range"
    x, weight, bias, mult, shift, stride, _ = centred(int_conv_case(geometry, seed, input_dtype))
    want = getattr(ref, name)(x, weight, bias, mult, shift, stride, *bounds)
    assert_same(getattr(kernels, name)(x, weight, bias, mult, shift, stride, *bounds), want, *bounds)


def test_range_kernels_hit_both_clamps_and_negative_codes(kernels):
    """A linear output really is signed (codes below 0 and both clamps), and the ReLU6 clamp at
    relu6_code_max(s) is where the codes stop: the cases above are not trivially in range."""
    x, weight, bias, mult, shift, stride, _ = centred(int_conv_case((6, 9, 9, 6, 1, 1, 1, 0), 3, np.int8))
    linear = kernels.pointwise_conv2d_s8_range(x, weight, bias, mult, shift, stride, -127, 127)
    assert np.array_equal(linear, ref.pointwise_conv2d_s8_range(x, weight, bias, mult, shift, stride, -127, 127))
    assert (linear == -127).any() and (linear == 127).any() and ((linear > -127) & (linear < 0)).any()
    hi = relu6_code_max(6.0 / 100.5)  # 6 / s + 1/2 = 101 -> 101
    assert hi == 101
    relu6 = kernels.pointwise_conv2d_s8_range(x, weight, bias, mult, shift, stride, 0, hi)
    assert relu6.max() == hi and (relu6 == 0).any()
    assert np.array_equal(relu6, ref.pointwise_conv2d_s8_range(x, weight, bias, mult, shift, stride, 0, hi))


def add_case(seed: int, a_signed: bool, count: int):
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.005, 0.2, 3)
    add = make_int_add(*scales)
    a = rng.integers(-127, 128, count).astype(np.int8) if a_signed else rng.integers(0, 256, count).astype(np.uint8)
    b = rng.integers(-127, 128, count).astype(np.int8)
    return a, b, add


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), a_signed=st.booleans(), count=st.integers(1, 300))
def test_residual_add_s8(kernels, seed, a_signed, count):
    a, b, add = add_case(seed, a_signed, count)
    want = ref.residual_add_s8(a, b, add)
    got = kernels.residual_add_s8(a, b, add)
    assert got.dtype == np.int8 and np.array_equal(got, want)
    assert np.array_equal(want, add_int64_reference(a, b, add))


def test_residual_add_s8_extremes(kernels):
    """Every operand pair at the range ends, equal scales (the 1/2 multipliers) and very unequal
    ones: the int32 intermediates stay in range in C as in the int64 reference."""
    a_values = np.array([-128, -127, -1, 0, 1, 127], np.int8)
    b_values = np.array([-127, -1, 0, 1, 127], np.int8)
    a, b = (v.ravel() for v in np.meshgrid(a_values, b_values))
    for scales in [(0.05, 0.05, 0.05), (0.2, 0.001, 0.003), (0.001, 0.2, 0.5), (0.01, 0.02, 0.0001)]:
        add = make_int_add(*scales)
        assert np.array_equal(kernels.residual_add_s8(a, b, add), ref.residual_add_s8(a, b, add))
        u8 = np.array([0, 1, 128, 254, 255] * 6, np.uint8)
        assert np.array_equal(kernels.residual_add_s8(u8, b, add), ref.residual_add_s8(u8, b, add))


def test_residual_add_is_the_sum_in_real_units():
    """Equal scales: y = a + b, saturated at ±127 (exact values, no rounding left)."""
    add = make_int_add(0.1, 0.1, 0.1)
    assert isinstance(add, IntAdd)
    a = np.array([3, -5, 100, -100, 0], np.int8)
    b = np.array([4, 5, 100, -100, -127], np.int8)
    assert ref.residual_add_s8(a, b, add).tolist() == [7, 0, 127, -127, -127]


@pytest.mark.parametrize("bits", range(1, 9))
def test_latent_shift_s8_every_value(kernels, bits):
    values = np.arange(-128, 128, dtype=np.int8)
    quantizer = LatentQuantizer(bits, "shift", signed=True)
    want = quantizer.encode(values.reshape(1, -1))[0]
    assert np.array_equal(ref.latent_shift_s8(values, bits), want)
    assert np.array_equal(kernels.latent_shift_s8(values, bits), want)
    step = ref.latent_step_fp32(quantizer)
    offset = ref.latent_offset(quantizer)
    assert offset == 1 << (bits - 1)
    decoded = kernels.latent_decode_fp32(want.reshape(1, -1), step, offset)[0]
    assert np.array_equal(decoded, quantizer.decode(want.reshape(1, -1))[0])  # bit-exact
    assert decoded[128] == 0.0  # code of 0 decodes to 0
