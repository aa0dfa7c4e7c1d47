import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycl.errors import TinyclError
from tinycl.quant.fixed_point import (
    FLOAT64_REQUANT_MAX_SHIFT,
    float64_requant_is_exact,
    quantize_multiplier,
    requant_scale_float64,
    requantize_float64,
    requantize_int64,
    requantize_int64_reference,
    requantize_scalar,
)


def test_quantize_multiplier_known_values():
    assert quantize_multiplier(0.5) == (2**30, 31)
    assert quantize_multiplier(1.0) == (2**30, 30)
    assert quantize_multiplier(0.75) == (3 * 2**29, 31)
    assert quantize_multiplier(0.0) == (0, 1)
    # a tiny multiplier keeps the shift at 62 and gives up mantissa bits
    m, s = quantize_multiplier(2.0**-40)
    assert s == 62 and m == 2**22


@given(st.floats(min_value=1e-9, max_value=1000.0))
def test_quantize_multiplier_is_accurate_and_normalised(real):
    m, s = quantize_multiplier(real)
    assert 2**30 <= m < 2**31
    assert 1 <= s <= 62
    assert abs(m * 2.0**-s - real) <= real * 2.0**-31


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, 2.0**31])
def test_quantize_multiplier_rejects(bad):
    with pytest.raises(TinyclError, match="multiplier"):
        quantize_multiplier(bad)


def test_rounding_rule_is_half_up():
    # 0.5 multiplier: acc * 0.5 with ties toward +inf
    m, s = quantize_multiplier(0.5)
    got = [requantize_scalar(a, m, s, -100, 100) for a in (-3, -1, 1, 3, 5)]
    assert got == [-1, 0, 1, 2, 3]


accumulators = st.integers(min_value=-(2**31), max_value=2**31 - 1)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(accumulators, min_size=1, max_size=40),
    st.integers(min_value=2**30, max_value=2**31 - 1),
    st.integers(min_value=1, max_value=62),
)
def test_vectorised_requantization_matches_python_ints(accs, multiplier, shift):
    expected = [requantize_scalar(a, multiplier, shift, 0, 255) for a in accs]
    acc = np.array(accs, dtype=np.int64).reshape(1, -1)  # channels on axis 1
    mult = np.full(acc.shape[1], multiplier, dtype=np.int64)
    shifts = np.full(acc.shape[1], shift, dtype=np.int64)
    ref = requantize_int64_reference(acc, mult, shifts)
    fast = requantize_int64(torch.from_numpy(acc.copy()), torch.from_numpy(mult),
                            torch.from_numpy(shifts))
    assert ref.ravel().tolist() == expected
    assert fast.ravel().tolist() == expected


def test_reference_rejects_int32_overflow():
    with pytest.raises(OverflowError):
        requantize_int64_reference(np.array([[2**31]]), np.array([2**30]), np.array([31]))


def float64_codes(accs, multiplier, shift, dtype=torch.float64):
    acc = torch.tensor(accs, dtype=dtype).reshape(1, -1)
    scale = requant_scale_float64(torch.tensor([multiplier]), torch.tensor([shift]))
    return requantize_float64(acc, scale.view(1, 1)).to(torch.int64).ravel().tolist()


def near_thresholds(multiplier, shift, deltas=(-2, -1, 0, 1, 2)):
    """Accumulators next to every rounding threshold (k - 1/2) * 2**shift / multiplier, k = 0..256,
    where a wrong float rounding would show; kept inside int32."""
    accs = []
    for k in range(257):
        centre = ((2 * k - 1) << (shift - 1)) // multiplier if multiplier else 0
        accs += [a for d in deltas for a in (centre + d, -centre - d) if -(2**31) <= a < 2**31]
    return accs


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=2**30, max_value=2**31 - 1),
    st.integers(min_value=1, max_value=FLOAT64_REQUANT_MAX_SHIFT),
    st.lists(accumulators, max_size=20),
)
def test_float64_requantization_is_exact_up_to_shift_44(multiplier, shift, extra):
    # any int32 accumulator: the case analysis in requantize_float64's docstring
    accs = near_thresholds(multiplier, shift) + extra + [-(2**31), 2**31 - 1, 0]
    expected = [requantize_scalar(a, multiplier, shift, 0, 255) for a in accs]
    assert float64_codes(accs, multiplier, shift) == expected
    assert float64_requant_is_exact([multiplier], [shift], [2**31]).all()


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**31 - 1),
    st.integers(min_value=FLOAT64_REQUANT_MAX_SHIFT + 1, max_value=62),
    st.integers(min_value=1, max_value=2**31),
)
def test_float64_requantization_within_the_bound(multiplier, shift, bound):
    # beyond shift 44 the fast path is used only where bound * m + 2**(n-1) <= 2**53
    if not float64_requant_is_exact([multiplier], [shift], [bound]).all():
        assert bound * multiplier + (1 << (shift - 1)) > 2**53
        return
    accs = [a for a in near_thresholds(multiplier, shift) if abs(a) <= bound] + [bound, -bound, 0]
    expected = [requantize_scalar(a, multiplier, shift, 0, 255) for a in accs]
    assert float64_codes(accs, multiplier, shift) == expected


def test_float64_requantization_from_float32_accumulators():
    # the conv output is float32 when its bound is <= 2**24; the cast to float64 is exact
    m, s = quantize_multiplier(0.0123)
    accs = [a for a in near_thresholds(m, s) if abs(a) <= 2**24]
    expected = [requantize_scalar(a, m, s, 0, 255) for a in accs]
    assert float64_codes(accs, m, s, torch.float32) == expected


def test_float64_requantization_fails_beyond_its_condition():
    # shift 46 and a product above 2**53: float64 rounds acc * m up onto the threshold
    acc, multiplier, shift = 8473547, 1100348957, 46
    assert acc * multiplier > 2**53
    assert requantize_scalar(acc, multiplier, shift, 0, 255) == 132
    assert float64_codes([acc], multiplier, shift) == [133]
    assert not float64_requant_is_exact([multiplier], [shift], [acc]).any()
    largest = (2**53 - 2**(shift - 1)) // multiplier  # the largest bound the fast path accepts
    assert float64_requant_is_exact([multiplier], [shift], [largest]).all()
    assert not float64_requant_is_exact([multiplier], [shift], [largest + 1]).any()


def test_float64_requantization_rejects_unproven_clamp_bounds():
    acc = torch.zeros(1, 1, dtype=torch.float64)
    scale = requant_scale_float64(torch.tensor([2**30]), torch.tensor([31])).view(1, 1)
    with pytest.raises(ValueError, match="clamp bounds"):
        requantize_float64(acc, scale, 0, 256)
    assert requantize_float64(acc, scale, -255, 255).item() == 0
