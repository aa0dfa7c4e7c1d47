"""Integer blocks of residual networks: ReLU6 and linear convs, residual adds (MobileNetV2, PhiNet).

A MobileNetV2 inverted-residual block (Sandler et al. 2018) or a PhiNet block in its MCU mode
(Paissan et al. 2022) is a chain of conv units ``Conv2d [-> BatchNorm2d] [-> ReLU6]`` -- the
1x1 expansion and the depthwise conv with ReLU6, the 1x1 *linear bottleneck* without activation
-- plus, when the stride is 1 and the channels match, the identity shortcut ``x + block(x)``.
``IntBlock`` is one such numbered layer in integer arithmetic; PhiNet's stem (depthwise on the
image, then 1x1 -> BN -> ReLU6) and MobileNetV2's first and last convs are blocks without a
shortcut. Every conv is the integer conv of ``IntConvLayer`` (INT8 weights, int32 bias,
per-channel ``multiplier * 2**-shift``, the rounding rule of ``tinycl.quant.fixed_point``);
only the clamp after the requantization differs.

Activation codes, zero point 0 everywhere (as the MobileNetV1 stage and the INT8 input image):

- after ReLU or ReLU6: UINT8 codes 0..255, ``x ≈ s * code``;
- after a linear bottleneck or a residual add: INT8 codes -127..127, ``x ≈ s * code``
  (symmetric, scale = observed max|x| / 127). Signed with zero point 0, not UINT8 with a zero
  point, because (1) the next block's 1x1 expansion then sums ``w * x`` with no zero-point term
  (an asymmetric input adds ``-z * sum_k w[c, k]`` per channel, and zero padding would have to
  pad with ``z``); (2) the residual add then takes both operands with offset 0; (3) a linear
  bottleneck's output is a BN output centred near 0, so a symmetric range loses little of the
  eight bits, and -128 is left out so that the range is symmetric like the image's. CMSIS-NN's
  s8 kernels run it with ``input_offset = output_offset = 0``.

Integer formulas (``requant(v, m, n) = (v * m + 2**(n-1)) >> n``, the single rounding rule of
``tinycl.quant.fixed_point``: round half toward +infinity; CMSIS-NN ``arm_nn_requantize`` with
``CMSIS_NN_USE_SINGLE_ROUNDING``):

- conv unit: ``y = clamp(requant(acc, m[c], n[c]), lo, hi)`` with ``[lo, hi]`` = ``[0, 255]``
  (ReLU), ``[0, min(255, floor(6 / s_y + 1/2))]`` (ReLU6: the clamp at 6 in codes, as TFLite's
  ``CalculateActivationRangeQuantized`` takes ``min(qmax, round(6 / scale))``; when ``s_y`` is
  calibrated on the ReLU6 output, max ≤ 6 gives ``6 / s_y >= 255`` and the bound is 255) or
  ``[-127, 127]`` (linear bottleneck).
- residual add of ``a`` (block input, scale ``s_a``) and ``b`` (bottleneck output, ``s_b``) into
  ``y`` (scale ``s_y``), as TFLite's quantized ADD (``tensorflow/lite/kernels/add.cc``, int8:
  ``left_shift = 20``, multipliers from ``twice_max_input_scale``) and CMSIS-NN's
  ``arm_elementwise_add_s8`` compute it, offsets 0::

      a' = requant(a << 20, m_a, n_a)          m_a 2**-n_a ≈ s_a / (2 max(s_a, s_b))
      b' = requant(b << 20, m_b, n_b)          m_b 2**-n_b ≈ s_b / (2 max(s_a, s_b))
      y  = clamp(requant(a' + b', m_y, n_y), -127, 127)
                                               m_y 2**-n_y ≈ 2 max(s_a, s_b) / (2**20 s_y)

  ``a`` may be UINT8 (MobileNetV2 x0.25's block 1 adds the ReLU6 output of conv0): in CMSIS-NN
  terms an int8 tensor ``a - 128`` with ``input_1_offset = 128``. Three roundings, each the
  single rule above; with ``CMSIS_NN_USE_SINGLE_ROUNDING`` the C kernel gives the same bytes
  (TFLite's default build rounds twice per requantization instead: doubling high multiply, then
  rounding shift). int32 holds every intermediate: ``|a| <= 255``
  so ``|a << 20| < 2**28``; ``|a'|, |b'| <= 2**27`` (multiplier <= 1/2), their sum < 2**28; each
  product with a multiplier < 2**31 stays below 2**62 in int64 (``fixed_point``).

Each primitive has an explicit numpy int64 reference (``*_int64_reference``, asserting the int32
ranges) and a fast torch path (``forward_codes``), checked bit for bit in tests/quant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from tinycl.errors import TinyclError
from tinycl.quant.fixed_point import (
    INT32_MAX,
    INT32_MIN,
    quantize_multiplier,
    requantize_int64,
    requantize_int64_reference,
)
from tinycl.quant.int_frozen import IntConvLayer
from tinycl.quant.observers import INT8_MAX, UINT8_MAX

ACTIVATIONS = ("relu", "relu6", "none")  # "none": a linear bottleneck
RELU6_MAX = 6.0  # ReLU6's upper bound in float units
# int8 operands are shifted left by 20 bits before rescaling: TFLite add.cc ("20 in case of
# 8-bit"), which TFLM passes to CMSIS-NN's arm_elementwise_add_s8 as left_shift.
ADD_LEFT_SHIFT = 20
SIGNED_RANGE = (-INT8_MAX, INT8_MAX)  # symmetric INT8 codes of linear and residual outputs
UNSIGNED_RANGE = (0, UINT8_MAX)
CODE_MIN = -(INT8_MAX + 1)  # any code an INT8 or UINT8 activation can hold: -128..255
CODE_MAX = UINT8_MAX


def relu6_code_max(output_scale: float) -> int:
    """ReLU6's upper clamp in UINT8 codes: ``min(255, floor(6 / s + 1/2))`` (round half up, the
    project's rule; TFLite's ``TfLiteRound`` agrees on positive values)."""
    if not math.isfinite(output_scale) or output_scale <= 0:
        raise TinyclError(f"output scale must be finite and > 0, got {output_scale}")
    return min(UINT8_MAX, math.floor(RELU6_MAX / output_scale + 0.5))


def activation_range(activation: str, output_scale: float) -> tuple[int, int]:
    """Output code range ``(lo, hi)`` of a conv unit with ``activation``."""
    if activation == "relu":
        return UNSIGNED_RANGE
    if activation == "relu6":
        return 0, relu6_code_max(output_scale)
    if activation == "none":
        return SIGNED_RANGE
    raise TinyclError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")


def check_codes(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, np.int64)
    if x.size and (x.min() < CODE_MIN or x.max() > CODE_MAX):
        raise OverflowError(f"{what} codes outside -128..255: not an INT8 / UINT8 activation")
    return x


# ---------------------------------------------------------------- one conv of a block


@dataclass
class IntConvUnit:
    """``conv [-> BN] [-> ReLU | ReLU6]`` with its own output clamp.

    ``conv`` holds the integer conv (weights, bias, multipliers, exact dtype, int32 bound) as an
    ``IntConvLayer``; the unit replaces that layer's ReLU clamp [0, 255] by ``[lo, hi]``.
    """

    conv: IntConvLayer
    activation: str  # relu | relu6 | none
    lo: int
    hi: int

    def __post_init__(self) -> None:
        expected = activation_range(self.activation, self.conv.output_scale)
        if self.activation == "relu6":
            ok = self.lo == 0 and 0 <= self.hi <= UINT8_MAX
        else:
            ok = (self.lo, self.hi) == expected
        if not ok:
            raise TinyclError(f"{self.activation} conv: output range [{self.lo}, {self.hi}] is not valid "
                              f"(expected {list(expected)})")

    @property
    def kind(self) -> str:
        """``pw-relu6``, ``dw-relu6``, ``pw-linear``, ..."""
        return f"{self.conv.kind}-{'linear' if self.activation == 'none' else self.activation}"

    @property
    def output_scale(self) -> float:
        return self.conv.output_scale

    @property
    def output_signed(self) -> bool:
        return self.activation == "none"

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        return self.conv.output_hw(height, width)

    def forward_codes(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Integer-valued ``x`` -> output codes ``lo..hi`` as ``dtype`` (fast path: the exact
        float convolution and requantization of ``IntConvLayer``, with this unit's clamp)."""
        return self.conv.requantize(self.conv.accumulate(x), self.lo, self.hi).to(dtype)

    def forward_int64_reference(self, x: np.ndarray) -> np.ndarray:
        """int64 codes in, int64 codes ``lo..hi`` out, by the explicit reference kernels."""
        acc = self.conv.accumulate_int64_reference(check_codes(x, "conv input"))
        return requantize_int64_reference(acc, self.conv.multiplier.numpy(), self.conv.right_shift.numpy(),
                                          self.lo, self.hi)


def make_int_conv_unit(conv: IntConvLayer, activation: str) -> IntConvUnit:
    """A unit whose clamp follows ``activation`` and the conv's output scale."""
    lo, hi = activation_range(activation, conv.output_scale)
    return IntConvUnit(conv, activation, lo, hi)


# ---------------------------------------------------------------- the residual add


@dataclass
class IntAdd:
    """``y = a + b`` on codes with zero point 0: ``a`` the block input (INT8 or UINT8 codes),
    ``b`` the linear bottleneck's INT8 codes, ``y`` INT8 codes -127..127 (formula: module doc)."""

    input_scales: tuple[float, float]  # (s_a, s_b)
    output_scale: float  # s_y
    multipliers: tuple[int, int]  # (m_a, m_b), each in [2**30, 2**31)
    right_shifts: tuple[int, int]  # (n_a, n_b)
    output_multiplier: int  # m_y
    output_right_shift: int  # n_y

    def __post_init__(self) -> None:
        mults = (*self.multipliers, self.output_multiplier)
        shifts = (*self.right_shifts, self.output_right_shift)
        if any(not 0 <= m < 2**31 for m in mults) or any(not 1 <= n <= 62 for n in shifts):
            raise TinyclError(f"residual add: multipliers {mults} or shifts {shifts} out of range")
        self.multiplier_tensors = [torch.tensor(m, dtype=torch.int64) for m in mults]
        self.shift_tensors = [torch.tensor(n, dtype=torch.int64) for n in shifts]

    def forward_codes(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Integer-valued ``a``, ``b`` (any dtype, same shape) -> int64 codes -127..127 (fast path:
        torch int64; the accumulators fit int32, see the module doc)."""
        m_a, m_b, m_y = self.multiplier_tensors
        n_a, n_b, n_y = self.shift_tensors
        shift = ADD_LEFT_SHIFT
        scaled_a = requantize_int64(torch.bitwise_left_shift(a.to(torch.int64), shift), m_a, n_a, INT32_MIN, INT32_MAX)
        scaled_b = requantize_int64(torch.bitwise_left_shift(b.to(torch.int64), shift), m_b, n_b, INT32_MIN, INT32_MAX)
        return requantize_int64(scaled_a.add_(scaled_b), m_y, n_y, *SIGNED_RANGE)


def add_int64_reference(a: np.ndarray, b: np.ndarray, add: IntAdd) -> np.ndarray:
    """Residual add, int64 numpy: ``a``, ``b`` codes of one shape -> int64 codes -127..127.

    Step by step as ``arm_elementwise_add_s8`` (offsets 0); ``requantize_int64_reference``
    raises if an operand leaves int32, where a C kernel would wrap.
    """
    a, b = check_codes(a, "residual add input"), check_codes(b, "residual add input")
    if a.shape != b.shape:
        raise ValueError(f"residual add of shapes {a.shape} and {b.shape}")
    (m_a, m_b), (n_a, n_b) = add.multipliers, add.right_shifts
    flat = {"channel_axis": 0}  # one multiplier for the whole tensor
    scaled_a = requantize_int64_reference((a << ADD_LEFT_SHIFT).reshape(-1), [m_a], [n_a], INT32_MIN,
                                          INT32_MAX, **flat)
    scaled_b = requantize_int64_reference((b << ADD_LEFT_SHIFT).reshape(-1), [m_b], [n_b], INT32_MIN,
                                          INT32_MAX, **flat)
    out = requantize_int64_reference(scaled_a + scaled_b, [add.output_multiplier], [add.output_right_shift],
                                     *SIGNED_RANGE, **flat)
    return out.reshape(a.shape)


def make_int_add(scale_a: float, scale_b: float, output_scale: float) -> IntAdd:
    """Multipliers of the add from the three scales (TFLite add.cc ``Prepare``)."""
    scales = (scale_a, scale_b, output_scale)
    if not all(math.isfinite(s) and s > 0 for s in scales):
        raise TinyclError(f"residual add scales must be finite and > 0, got {scales}")
    twice_max_input_scale = 2 * max(scale_a, scale_b)
    m_a, n_a = quantize_multiplier(scale_a / twice_max_input_scale)
    m_b, n_b = quantize_multiplier(scale_b / twice_max_input_scale)
    m_y, n_y = quantize_multiplier(twice_max_input_scale / ((1 << ADD_LEFT_SHIFT) * output_scale))
    return IntAdd((float(scale_a), float(scale_b)), float(output_scale), (m_a, m_b), (n_a, n_b), m_y, n_y)


# ---------------------------------------------------------------- one numbered layer


@dataclass
class IntBlock:
    """One numbered frozen layer that is not a plain conv -> BN -> ReLU: conv units in a chain
    and, for an identity shortcut, the residual add of the block input and the last unit's
    (linear) output. Same interface as ``IntConvLayer`` for ``IntFrozenStage``."""

    units: list[IntConvUnit]
    add: IntAdd | None = None

    def __post_init__(self) -> None:
        if not self.units:
            raise TinyclError("an integer block needs at least one conv")
        if self.add is not None and not self.units[-1].output_signed:
            raise TinyclError("a residual add must follow a linear bottleneck (its INT8 output)")

    @property
    def kind(self) -> str:
        """The units' kinds, e.g. ``pw-relu6+dw-relu6+pw-linear+add``."""
        return "+".join(u.kind for u in self.units) + ("+add" if self.add is not None else "")

    @property
    def input_scale(self) -> float:
        return self.units[0].conv.input_scale

    @property
    def input_signed(self) -> bool:
        return self.units[0].conv.input_signed

    @property
    def output_scale(self) -> float:
        return self.add.output_scale if self.add is not None else self.units[-1].output_scale

    @property
    def output_signed(self) -> bool:
        return self.add is not None or self.units[-1].output_signed

    @property
    def output_range(self) -> tuple[int, int]:
        """Smallest and largest output code."""
        if self.add is not None:
            return SIGNED_RANGE
        return self.units[-1].lo, self.units[-1].hi

    @property
    def out_channels(self) -> int:
        return self.units[-1].out_channels

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        for unit in self.units:
            height, width = unit.output_hw(height, width)
        return height, width

    def peak_values(self, height: int, width: int) -> int:
        """Values of the largest activation inside the block (the expanded one) for one image."""
        largest = 0
        for unit in self.units:
            height, width = unit.output_hw(height, width)
            largest = max(largest, unit.out_channels * height * width)
        return largest

    def forward_codes(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Integer-valued ``x`` -> output codes as ``dtype`` (fast path)."""
        y = x
        for unit in self.units:
            y = unit.forward_codes(y, torch.float32)
        if self.add is not None:
            y = self.add.forward_codes(x, y)
        return y.to(dtype)

    def forward_int64_reference(self, x: np.ndarray) -> np.ndarray:
        """int64 codes in, int64 codes out, by the explicit reference kernels."""
        y = x
        for unit in self.units:
            y = unit.forward_int64_reference(y)
        if self.add is not None:
            y = add_int64_reference(x, y, self.add)
        return y
