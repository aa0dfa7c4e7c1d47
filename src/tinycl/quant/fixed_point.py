"""Fixed-point requantization: a real multiplier as ``multiplier * 2**-right_shift``.

Rounding rule (the one tinycl uses everywhere, and the one a C export must use):

    y = (acc * multiplier + (1 << (right_shift - 1))) >> right_shift      (int64, arithmetic >>)

i.e. round half toward +infinity of ``acc * multiplier / 2**right_shift``. This is CMSIS-NN's
``arm_nn_requantize`` built with ``CMSIS_NN_USE_SINGLE_ROUNDING`` (``new_val >> (total_shift-1)``
then ``(result + 1) >> 1``, which is the same floor by nested floor division) and TFLite's
``MultiplyByQuantizedMultiplier`` in single-rounding mode; PULP-NN's ``pulp_nn_quant_u8`` adds
``1 << (d - 1)`` before the right shift in the same way. The multiplier is normalised to
``2**30 <= multiplier < 2**31`` (a Q0.31 mantissa, Jacob et al. 2018, sec. 2.2), so with an
int32 accumulator the product fits int64: ``|acc * multiplier| < 2**31 * 2**31 = 2**62``, and
adding the rounding term (``<= 2**61``) cannot overflow.

Two torch implementations of that rule give the same bytes: ``requantize_int64`` (int64, any
layer) and ``requantize_float64`` (float64, faster on CPU: no int64 conversion, vectorized
multiply-add), which is exact under a per-channel condition checked by
``float64_requant_is_exact``; the argument is in ``requantize_float64``'s docstring.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tinycl.errors import TinyclError

MULTIPLIER_BITS = 31  # mantissa in [2**30, 2**31): CMSIS-NN / TFLite Q31 convention
MAX_RIGHT_SHIFT = 62  # keeps the rounding term 1 << (shift - 1) below 2**62
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
FLOAT64_EXACT_INT = 2**53  # every integer of magnitude <= 2**53 is a float64
# float64 requantization is exact for any int32 accumulator when right_shift <= 44
# (proof in requantize_float64); beyond, only when bound * multiplier + 2**(shift-1) <= 2**53.
FLOAT64_REQUANT_MAX_SHIFT = 44
FLOAT64_REQUANT_MAX_CODE = 255  # the proof covers clamp ranges inside [-255, 255]
_HALF = torch.tensor(0.5, dtype=torch.float64)  # the rounding term 2**(n-1) / 2**n


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """``real_multiplier ≈ multiplier * 2**-right_shift`` with ``2**30 <= multiplier < 2**31``.

    Tiny multipliers (right shift beyond 62) lose mantissa bits instead of growing the shift;
    a zero multiplier is ``(0, 1)``. Raises ``TinyclError`` for negative, non-finite or huge
    (>= 2**30) multipliers, none of which a ReLU conv layer produces.
    """
    if not math.isfinite(real_multiplier) or real_multiplier < 0:
        raise TinyclError(
            f"requantization multiplier must be finite and >= 0, got {real_multiplier}"
        )
    if real_multiplier == 0:
        return 0, 1
    mantissa, exponent = math.frexp(real_multiplier)  # real = mantissa * 2**exponent, [0.5, 1)
    multiplier = round(mantissa * (1 << MULTIPLIER_BITS))
    if multiplier == 1 << MULTIPLIER_BITS:  # mantissa rounded up to 1.0
        multiplier >>= 1
        exponent += 1
    right_shift = MULTIPLIER_BITS - exponent
    if right_shift < 1:
        raise TinyclError(f"requantization multiplier {real_multiplier} too large (>= 2**30)")
    if right_shift > MAX_RIGHT_SHIFT:
        drop = right_shift - MAX_RIGHT_SHIFT
        multiplier = (multiplier + (1 << (drop - 1))) >> drop
        right_shift = MAX_RIGHT_SHIFT
    return int(multiplier), int(right_shift)


def quantize_multipliers(real_multipliers) -> tuple[np.ndarray, np.ndarray]:
    """Vector form of ``quantize_multiplier``: int64 arrays ``(multiplier, right_shift)``."""
    reals = np.asarray(real_multipliers, np.float64).ravel()
    pairs = [quantize_multiplier(float(m)) for m in reals]
    return (
        np.array([p[0] for p in pairs], dtype=np.int64),
        np.array([p[1] for p in pairs], dtype=np.int64),
    )


def requantize_scalar(acc: int, multiplier: int, right_shift: int, lo: int, hi: int) -> int:
    """Python-int oracle of the rounding rule (unbounded ints, so nothing can overflow)."""
    value = (acc * multiplier + (1 << (right_shift - 1))) >> right_shift
    return min(max(value, lo), hi)


def requantize_int64_reference(
    acc: np.ndarray, multiplier: np.ndarray, right_shift: np.ndarray, lo: int = 0, hi: int = 255,
    channel_axis: int = 1,
) -> np.ndarray:
    """Numpy int64 requantization of an int32-range accumulator with per-channel parameters.

    ``acc`` int64 with channels on ``channel_axis``; returns int64 clamped to ``[lo, hi]``.
    """
    acc = np.asarray(acc, dtype=np.int64)
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    mult = np.asarray(multiplier, np.int64).reshape(shape)
    shift = np.asarray(right_shift, np.int64).reshape(shape)
    if acc.min(initial=0) < INT32_MIN or acc.max(initial=0) > INT32_MAX:
        raise OverflowError("accumulator outside int32: an int32 C kernel would wrap here")
    rounded = (acc * mult + (np.int64(1) << (shift - 1))) >> shift
    return np.clip(rounded, lo, hi)


def requantize_int64(
    acc: torch.Tensor, multiplier: torch.Tensor, right_shift: torch.Tensor, lo: int = 0,
    hi: int = 255,
) -> torch.Tensor:
    """Torch int64 requantization of ``acc`` ([N, C, ...] int64, per-channel on dim 1).

    Same rule and bounds as ``requantize_int64_reference``; ``multiplier`` and ``right_shift``
    are int64 tensors shaped to broadcast (e.g. ``[C, 1, 1]``). The caller guarantees the
    accumulator is in int32 (``IntConvLayer`` checks a static bound), so nothing overflows.
    """
    rounding = torch.bitwise_left_shift(torch.ones_like(right_shift), right_shift - 1)
    out = torch.addcmul(rounding, acc, multiplier)  # one pass for acc * m + 2**(n-1)
    out.bitwise_right_shift_(right_shift)
    return out.clamp_(lo, hi)


def float64_requant_is_exact(multiplier, right_shift, acc_bound) -> np.ndarray:
    """Per channel: does ``requantize_float64`` give the bytes of the int64 rule?

    True where ``right_shift <= 44`` (any int32 accumulator) or where
    ``acc_bound * multiplier + 2**(right_shift - 1) <= 2**53`` (``acc_bound``: the largest
    ``|acc|`` the channel can produce), with Python ints so the check itself cannot overflow.
    """
    mults = np.asarray(multiplier, np.int64).ravel().tolist()
    shifts = np.asarray(right_shift, np.int64).ravel().tolist()
    bounds = np.broadcast_to(np.asarray(acc_bound, np.int64), (len(mults),)).tolist()
    return np.array([
        n <= FLOAT64_REQUANT_MAX_SHIFT or b * m + (1 << (n - 1)) <= FLOAT64_EXACT_INT
        for m, n, b in zip(mults, shifts, bounds, strict=True)
    ], dtype=bool)


def requant_scale_float64(multiplier: torch.Tensor, right_shift: torch.Tensor) -> torch.Tensor:
    """``multiplier * 2**-right_shift`` as float64, exactly: the multiplier has at most 31
    significant bits (< 53) and ``2**-62`` is far above float64's smallest normal (2**-1022)."""
    return torch.ldexp(multiplier.to(torch.float64), -right_shift.to(torch.float64))


def requantize_float64(acc: torch.Tensor, scale: torch.Tensor, lo: int = 0, hi: int = 255
                       ) -> torch.Tensor:
    """The rounding rule in float64: ``clamp(floor(acc * scale + 1/2), lo, hi)``, float64 codes.

    ``acc``: integer-valued float32 or float64 (an exact convolution output) of int32
    magnitude, per-channel on dim 1; ``scale = requant_scale_float64(multiplier, shift)``
    shaped to broadcast. Gives the bytes of ``requantize_int64`` on every channel where
    ``float64_requant_is_exact`` holds, for ``-255 <= lo <= hi <= 255``. Why, per element,
    with ``p = acc * multiplier`` (an integer), ``n = right_shift``, ``q = p + 2**(n-1)``; the
    int64 rule returns ``clamp(floor(E), lo, hi)`` with ``E = q * 2**-n``:

    - ``acc`` converts to float64 exactly (``|acc| <= 2**31``); ``scale`` is exact
      (``requant_scale_float64``); multiplying by ``2**-n`` commutes with rounding (no
      underflow: ``|p| * 2**-n >= 2**-62``).
    - (i) ``|p| <= 2**53`` and ``|q| <= 2**53``: ``p * 2**-n`` and ``q * 2**-n`` are
      representable, so the product and the ``+ 1/2`` are exact, whether computed as two
      rounded operations or one fused multiply-add: the float result is ``E`` itself.
      The bound condition (``acc_bound * multiplier + 2**(n-1) <= 2**53``) makes every element
      of the channel fall here.
    - (ii) otherwise ``|p| > 2**53 - 2**(n-1) >= 2**52`` (n <= 53), so with ``n <= 44``,
      ``|p * 2**-n| > 2**8 = 256``. Rounding is monotone and +-256 are floats, so the float
      product is also >= 256 (or <= -256), and after ``+ 1/2`` the float sum is >= 256 (or
      <= -255.5): both the float and the exact result clamp to ``hi`` (or ``lo``).
    - ``floor`` and ``clamp`` commute for integer bounds, and are exact in float64.

    Without either condition it is wrong: ``acc = 8473547, multiplier = 1100348957,
    right_shift = 46`` gives 133 in float64 instead of 132 (tests/quant).
    """
    if not -FLOAT64_REQUANT_MAX_CODE <= lo <= hi <= FLOAT64_REQUANT_MAX_CODE:
        raise ValueError(f"float64 requantization is proven for clamp bounds in [-255, 255], got [{lo}, {hi}]")
    out = torch.addcmul(_HALF, acc, scale)  # acc * scale + 1/2, float64 (type promotion, exact cast)
    return out.clamp_(lo, hi).floor_()
