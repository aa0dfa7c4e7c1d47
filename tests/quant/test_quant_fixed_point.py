import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycl.errors import TinyclError
from tinycl.quant.fixed_point import (
    quantize_multiplier,
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
