"""Q-bit latent quantizer: the LR layer's UINT8 output requantized to UINT-Q (QLR-CL).

Two modes (Ravaglia et al. 2021 store LRs at Q < 8 bits; DESIGN.md "Quantized latent
replays"):

- ``shift``: ``code = min((u8 + r) >> (8 - Q), 2**Q - 1)`` with ``r = 2**(7 - Q)`` (round half
  up; 0 at Q = 8, so Q = 8 is the identity on codes), decoded as ``code * 2**(8 - Q)``. Zero
  stays exactly zero, which matters for ReLU latents (mostly zeros); values near 255 saturate.
- ``clip``: a calibrated clipping value ``c`` (in UINT8 steps, 1..255, per tensor or per
  channel) chosen to minimise the squared error on the calibration latents;
  ``code = clamp(round_half_up(u8 * (2**Q - 1) / c), 0, 2**Q - 1)`` evaluated with the same
  fixed-point multiplier/shift as the frozen stage (so a device encodes it with integer ops),
  decoded as ``code * c / (2**Q - 1)``. Per-channel clipping spends the Q bits on each
  channel's own range, a way to go below 7 bits.

Signed latents: a MobileNetV2 / PhiNet LR layer ends in a linear bottleneck or a residual add,
whose INT8 codes -127..127 (zero point 0, ``tinycl.quant.int_blocks``) are quantized in ``shift``
mode as ``code = clamp((s8 + r) >> (8 - Q), -2**(Q-1), 2**(Q-1) - 1) + 2**(Q-1)``: the same
rounding, stored offset-binary in ``0..2**Q - 1`` so that packing is unchanged, decoded as
``(code - 2**(Q-1)) * 2**(8 - Q)``; zero stays exactly zero. Calibrating on int8 latents makes a
quantizer signed (or ``signed=True``); ``clip`` mode takes UINT8 latents only.

``decode`` returns float32 in the float units of the latent, i.e. times the LR layer's UINT8
(INT8) scale ``latent_scale``. Q = 32 is the FP32 baseline: ``encode`` returns the float latent
(``u8 * latent_scale``, or a float input unchanged) and ``decode`` returns it as is.
"""

from __future__ import annotations

import math

import numpy as np

from tinycl.errors import TinyclError
from tinycl.quant.fixed_point import quantize_multiplier
from tinycl.quant.packing import FP32_BITS, check_bits

MODES = ("shift", "clip")
UINT8_LEVELS = 256


def shift_encode(u8: np.ndarray, bits: int) -> np.ndarray:
    drop = 8 - bits
    rounding = (1 << drop) >> 1
    codes = (u8.astype(np.uint16) + rounding) >> drop
    return np.minimum(codes, (1 << bits) - 1).astype(np.uint8)


def shift_encode_signed(s8: np.ndarray, bits: int) -> np.ndarray:
    """INT8 codes -> offset-binary Q-bit codes (module doc): arithmetic shift, round half up."""
    drop = 8 - bits
    rounding = (1 << drop) >> 1
    half = 1 << (bits - 1)
    codes = (s8.astype(np.int16) + rounding) >> drop
    return (np.clip(codes, -half, half - 1) + half).astype(np.uint8)


def clip_encode_table(clip_u8: int, bits: int) -> np.ndarray:
    """Codes of all 256 UINT8 values for one clipping value (fixed-point, round half up)."""
    multiplier, right_shift = quantize_multiplier(((1 << bits) - 1) / clip_u8)
    values = np.arange(UINT8_LEVELS, dtype=np.int64)
    codes = (values * multiplier + (1 << (right_shift - 1))) >> right_shift
    return np.clip(codes, 0, (1 << bits) - 1).astype(np.uint8)


def best_clip_u8(histograms: np.ndarray, bits: int) -> np.ndarray:
    """Per row of ``histograms [G, 256]`` the clip value 1..255 with least squared error."""
    values = np.arange(UINT8_LEVELS, dtype=np.float64)
    levels = (1 << bits) - 1
    errors = np.empty((histograms.shape[0], UINT8_LEVELS - 1))
    for clip in range(1, UINT8_LEVELS):
        decoded = clip_encode_table(clip, bits) * (clip / levels)
        errors[:, clip - 1] = histograms @ (decoded - values) ** 2
    # ties (e.g. an all-zero channel) resolve to the largest clip: never clip more than needed
    return UINT8_LEVELS - 1 - np.argmin(errors[:, ::-1], axis=1)


class LatentQuantizer:
    """UINT8 (or INT8) latents -> UINT-Q codes and back. State: the clip values after ``calibrate``.

    Latents are ``uint8 [N, D]`` (per-tensor) or ``[N, C, ...]``; per-channel scales need the
    channel axis 1, i.e. ``[N, C, H, W]`` or ``[N, C]``. Codes keep the input shape. ``signed``:
    the latents are int8 (module doc).
    """

    def __init__(self, bits: int, mode: str = "shift", per_channel: bool = False,
                 latent_scale: float = 1.0, signed: bool = False):
        self.bits = check_bits(bits)
        if mode not in MODES:
            raise TinyclError(f"unknown latent quantizer mode {mode!r}; choose shift or clip")
        if per_channel and mode != "clip":
            raise TinyclError("per-channel latent scales need mode='clip'")
        if not np.isfinite(latent_scale) or latent_scale <= 0:
            raise TinyclError(f"latent scale must be finite and > 0, got {latent_scale}")
        self.mode = mode
        self.per_channel = per_channel
        self.latent_scale = float(latent_scale)
        self.clip_u8: np.ndarray | None = None  # [1] or [C] clip values in UINT8 steps
        self.tables: np.ndarray | None = None  # [1 or C, 256] encode lookup
        self.signed = False
        if signed:
            self.use_signed()

    def use_signed(self) -> None:
        """Take INT8 latents from now on (shift mode, or Q = 32)."""
        if self.mode == "clip" and self.bits != FP32_BITS:
            raise TinyclError("the LR layer's output is signed (INT8: a linear bottleneck or a residual add); "
                              "clip-mode latent quantization takes UINT8 latents only: use --latent-mode shift")
        self.signed = True

    @property
    def needs_calibration(self) -> bool:
        return self.mode == "clip" and self.bits != FP32_BITS

    @property
    def calibrated(self) -> bool:
        return not self.needs_calibration or self.clip_u8 is not None

    def check_u8(self, latents: np.ndarray) -> np.ndarray:
        """``latents`` as an array of this quantizer's code type: uint8, or int8 when signed."""
        latents = np.asarray(latents)
        dtype = np.int8 if self.signed else np.uint8
        if latents.dtype != dtype or latents.ndim < 2:
            raise TinyclError(
                f"latents must be {np.dtype(dtype).name} [N, D] or [N, C, ...], got {latents.dtype} {latents.shape}"
            )
        return latents

    def channel_view(self, latents: np.ndarray) -> np.ndarray:
        """``[N, G, V]``: G = channels (per-channel) or 1."""
        n = latents.shape[0]
        groups = latents.shape[1] if self.per_channel else 1
        # explicit sizes, not -1: a mini-batch may take no replays (n = 0)
        return latents.reshape(n, groups, math.prod(latents.shape[1:]) // groups)

    def calibrate(self, latents: np.ndarray) -> LatentQuantizer:
        """Choose clip values on calibration latents (shift mode and Q = 32: nothing to choose).
        int8 latents (a signed LR layer) make the quantizer signed."""
        latents = np.asarray(latents)
        if latents.dtype == np.int8:
            self.use_signed()
        latents = self.check_u8(latents)
        if not self.needs_calibration:
            return self
        if latents.shape[0] == 0:
            raise TinyclError("latent calibration set is empty: at least one latent is needed")
        grouped = self.channel_view(latents)
        histograms = np.stack([
            np.bincount(grouped[:, g].ravel(), minlength=UINT8_LEVELS)
            for g in range(grouped.shape[1])
        ]).astype(np.float64)
        self.clip_u8 = best_clip_u8(histograms, self.bits)
        self.tables = np.stack([clip_encode_table(int(c), self.bits) for c in self.clip_u8])
        return self

    def encode(self, latents: np.ndarray) -> np.ndarray:
        """UINT8 (INT8) latents -> codes (uint8 in ``0..2**Q - 1``), same shape; float32 at Q = 32."""
        if self.bits == FP32_BITS:
            latents = np.asarray(latents)
            if latents.dtype in (np.uint8, np.int8):
                return latents.astype(np.float32) * np.float32(self.latent_scale)
            return latents.astype(np.float32)
        latents = self.check_u8(latents)
        if self.mode == "shift":
            return shift_encode_signed(latents, self.bits) if self.signed else shift_encode(latents, self.bits)
        if not self.calibrated:
            raise TinyclError("clip-mode latent quantizer used before calibrate()")
        grouped = self.channel_view(latents)
        if grouped.shape[1] != self.tables.shape[0]:
            raise TinyclError(
                f"latents have {grouped.shape[1]} channels, quantizer was calibrated on "
                f"{self.tables.shape[0]}"
            )
        group_index = np.arange(grouped.shape[1]).reshape(1, -1, 1)
        return self.tables[group_index, grouped].reshape(latents.shape)

    def step_u8(self) -> np.ndarray:
        """UINT8 steps per code: ``[1]`` or ``[C]`` float64."""
        if self.mode == "shift":
            return np.array([float(1 << (8 - self.bits))])
        if not self.calibrated:
            raise TinyclError("clip-mode latent quantizer used before calibrate()")
        return self.clip_u8.astype(np.float64) / ((1 << self.bits) - 1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes -> float32 latents in the float model's units (``* latent_scale``)."""
        codes = np.asarray(codes)
        if self.bits == FP32_BITS:
            return codes.astype(np.float32)
        grouped = self.channel_view(codes).astype(np.float32)
        if self.signed:
            grouped -= np.float32(1 << (self.bits - 1))  # offset-binary back to signed codes
        step = (self.step_u8() * self.latent_scale).astype(np.float32).reshape(1, -1, 1)
        return (grouped * step).reshape(codes.shape)

    def roundtrip(self, latents: np.ndarray) -> np.ndarray:
        """``decode(encode(u8))``: what training sees for new latents and replays alike."""
        return self.decode(self.encode(latents))
