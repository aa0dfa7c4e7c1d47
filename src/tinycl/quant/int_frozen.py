"""The frozen stage in integer-only arithmetic: INT8 weights, UINT8 activations, int32 bias.

A MobileNetV1 frozen layer is ``conv -> BN -> ReLU`` (``IntConvLayer``; the ReLU6 convs, linear
bottlenecks and residual adds of MobileNetV2 and PhiNet are ``tinycl.quant.int_blocks``, the
conversion of a float stage ``tinycl.quant.convert``). After post-training quantization it computes

    acc[c]  = bias_s32[c] + sum_k weight_s8[c, k] * x[k]          (int32 accumulator)
    y[c]    = clamp((acc[c] * multiplier[c] + 2**(shift[c]-1)) >> shift[c], 0, 255)  (uint8)

with ``x`` the previous layer's UINT8 output (zero point 0: ReLU outputs are >= 0, so the
clamp at 0 *is* the ReLU and zero padding is exact) or, for the first layer, the normalized
image quantized to INT8 symmetric per tensor (zero point 0 again, so padding with 0 equals
padding the float image with 0 as PyTorch does). Real scales: ``x ≈ s_x * x_q``,
``w ≈ s_w[c] * w_q``, ``y ≈ s_y * y_q``; ``multiplier * 2**-shift ≈ s_w[c] * s_x / s_y``
(Jacob et al. 2018, eq. 5-6; CMSIS-NN ``arm_convolve_s8`` / PULP-NN ``pulp_nn_conv_u8_u8_i8``
per-channel requantization). The rounding rule is in ``tinycl.quant.fixed_point``.

Two implementations, checked against each other bit for bit in tests/quant:
- ``*_int64_reference``: explicit numpy int64 kernels per primitive (conv, depthwise,
  pointwise), slow and obvious; they also assert that the accumulator stays in int32.
- ``IntFrozenStage.forward_int``: the fast path, a float convolution of integer operands
  followed by requantization in float64 (``fixed_point.requantize_float64``: one multiply-add,
  clamp and floor, proven to give the int64 rule's bytes when ``right_shift <= 44`` or the
  channel's accumulator bound keeps ``acc * multiplier`` below 2**53; checked per layer, and a
  layer outside both falls back to ``requantize_int64``). Activations are channels-last and
  processed a few images at a time (``IntFrozenStage.auto_chunk``) so that the elementwise
  requantization passes run from cache. Exactness argument for the convolution (checked per
  layer at build time):
  every product ``w_q * x_q`` is an integer; whatever order or grouping a convolution kernel
  sums them in (oneDNN direct/GEMM, FMA included), each partial sum for output channel c is
  the sum of a subset of that channel's products plus possibly the bias, so its magnitude is
  at most ``bound[c] = sum_k |w_q[c, k]| * max|x_q| + |bias[c]|``. Every integer of magnitude
  <= 2**24 is a float32, so if ``bound <= 2**24`` each addition's exact result is
  representable and IEEE round-to-nearest returns it: the float32 convolution is exact. The
  worst case of a 512x3x3 reduction, ``4608 * 127 * 255 ≈ 1.5e8 > 2**24``, is not covered (the
  issue's warning), so such layers use float64, exact up to 2**53 — far above the int32
  bound we enforce anyway. Operand-transforming algorithms (Winograd/FFT in NNPACK) would
  break the argument, so NNPACK is disabled during the integer forward; tensors stay on CPU
  (CUDA convolutions may use TF32). The memory format (NCHW or NHWC) changes only the order of
  the sums, so the argument covers both.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinycl.errors import TinyclError
from tinycl.quant.fixed_point import (
    INT32_MAX,
    float64_requant_is_exact,
    quantize_multipliers,
    requant_scale_float64,
    requantize_float64,
    requantize_int64,
    requantize_int64_reference,
)
from tinycl.quant.fold import fold_bn
from tinycl.quant.observers import INT8_MAX, UINT8_MAX, check_finite

if TYPE_CHECKING:
    from tinycl.quant.int_blocks import IntBlock

FLOAT32_EXACT_INT = 2**24  # largest magnitude below which every integer is a float32
INPUT_QMIN, INPUT_QMAX = -INT8_MAX, INT8_MAX  # symmetric int8 input codes
DEFAULT_CHUNK = 32  # images per chunk of the float passes (calibration, fidelity)
# At one intra-op thread the integer forward picks its chunk so that one layer's float64
# requantization buffer of the chunk stays near this size: the elementwise passes then run from
# cache, not DRAM (at 128 px, width 1.0, 2 images per chunk ran about 2x faster than 32).
CHUNK_CACHE_BYTES = 4 * 2**20
MAX_CHUNK = 64
# With several threads each elementwise op is a parallel region whose synchronization must be
# amortized over enough work: on the project's 2-core machine shared with other jobs, 2 threads
# ran 0.9 img/s with chunks of 2 and 9.6 img/s with chunks of 32 (width 1.0, 128 px).
MULTI_THREAD_CHUNK = 32


@contextlib.contextmanager
def ieee_float_convolutions() -> Iterator[None]:
    """oneDNN convolutions in full IEEE float32 while the integer forward runs.

    Since PyTorch 2.9 a user may set ``torch.backends.mkldnn.conv.fp32_precision`` to "bf16"
    or "tf32"; reduced-precision products would break the exactness argument above.
    """
    conv = getattr(getattr(torch.backends, "mkldnn", None), "conv", None)
    before = getattr(conv, "fp32_precision", None)
    if before is None or before == "ieee":  # older PyTorch: always IEEE on CPU
        yield
        return
    conv.fp32_precision = "ieee"  # also overrides a reduced precision inherited from a parent
    try:
        yield
    finally:
        conv.fp32_precision = before


# ---------------------------------------------------------------- weight quantization


def quantize_weight_s8(
    weight: torch.Tensor, per_channel: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """INT8 symmetric weights: ``(weight_s8 [C_out, ...], scale float64 [C_out])``.

    ``scale = max|w| / 127`` per output channel (or one for the tensor); codes in -127..127
    (CMSIS-NN / TFLite int8 weight spec: symmetric, zero point 0). Rounding: half to even.
    An all-zero channel gets scale 1.0.
    """
    w = weight.detach().double()
    flat = w.reshape(w.shape[0], -1).abs()
    max_abs = flat.amax(dim=1) if per_channel else flat.max().expand(w.shape[0])
    scale = torch.where(max_abs > 0, max_abs / INT8_MAX, torch.ones_like(max_abs))
    codes = torch.round(w / scale.view(-1, *[1] * (w.dim() - 1))).clamp_(-INT8_MAX, INT8_MAX)
    return codes.to(torch.int8), scale.clone()


def quantize_bias_s32(bias: torch.Tensor, weight_scale: torch.Tensor, input_scale: float
                      ) -> torch.Tensor:
    """``round(bias / (s_w * s_x))`` as int64 values (range checked by the layer bound)."""
    return torch.round(bias.double() / (weight_scale * input_scale)).to(torch.int64)


def quantize_input_s8(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Normalized float images -> INT8 symmetric codes ``clamp(round(x / scale), -127, 127)``."""
    check_finite(images, "input images")
    return torch.round(images.double() / scale).clamp_(INPUT_QMIN, INPUT_QMAX).to(torch.int8)


# ---------------------------------------------------------------- int64 reference kernels


def pad_nchw(x: np.ndarray, padding: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def tap(xp: np.ndarray, i: int, j: int, h_out: int, w_out: int, stride: int) -> np.ndarray:
    """Input pixels multiplied by kernel tap (i, j) for every output position."""
    rows = slice(i, i + stride * (h_out - 1) + 1, stride)
    cols = slice(j, j + stride * (w_out - 1) + 1, stride)
    return xp[:, :, rows, cols]


def conv2d_int64_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int,
                           padding: int) -> np.ndarray:
    """Dense conv accumulator, int64: ``x [N, C_in, H, W]``, ``weight [C_out, C_in, kh, kw]``."""
    x = np.asarray(x, np.int64)
    weight = np.asarray(weight, np.int64)
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    h_out, w_out = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    xp = pad_nchw(x, padding)
    acc = np.zeros((n, c_out, h_out, w_out), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = tap(xp, i, j, h_out, w_out, stride)  # [N, C_in, Ho, Wo]
            acc += np.einsum("nchw,oc->nohw", patch, weight[:, :, i, j])
    return acc + np.asarray(bias, np.int64).reshape(1, -1, 1, 1)


def depthwise_conv2d_int64_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                                     stride: int, padding: int) -> np.ndarray:
    """Depthwise conv accumulator, int64: ``weight [C, 1, kh, kw]``, one filter per channel."""
    x = np.asarray(x, np.int64)
    weight = np.asarray(weight, np.int64)
    n, c, h, w = x.shape
    _, _, kh, kw = weight.shape
    h_out, w_out = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    xp = pad_nchw(x, padding)
    acc = np.zeros((n, c, h_out, w_out), np.int64)
    for i in range(kh):
        for j in range(kw):
            acc += tap(xp, i, j, h_out, w_out, stride) * weight[:, 0, i, j].reshape(1, c, 1, 1)
    return acc + np.asarray(bias, np.int64).reshape(1, -1, 1, 1)


def pointwise_conv2d_int64_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                                     stride: int = 1) -> np.ndarray:
    """1x1 conv accumulator, int64: a product over channels, ``weight [C_out, C_in, 1, 1]``."""
    x = np.asarray(x, np.int64)[:, :, ::stride, ::stride]
    weight = np.asarray(weight, np.int64)[:, :, 0, 0]
    acc = np.einsum("nchw,oc->nohw", x, weight)
    return acc + np.asarray(bias, np.int64).reshape(1, -1, 1, 1)


# ---------------------------------------------------------------- one integer layer


@dataclass
class IntConvLayer:
    """One ``conv -> BN -> ReLU`` layer, quantized. Parameters live on CPU."""

    kind: str  # conv | dw | pw
    weight_s8: torch.Tensor  # int8 [C_out, C_in / groups, kh, kw]
    bias_s32: torch.Tensor  # int64 holding int32 values [C_out]
    multiplier: torch.Tensor  # int64 [C_out], in [2**30, 2**31)
    right_shift: torch.Tensor  # int64 [C_out]
    stride: int
    padding: int
    groups: int
    input_scale: float
    output_scale: float
    weight_scale: torch.Tensor  # float64 [C_out]
    input_signed: bool  # True for the first layer (INT8 image), else UINT8
    accumulator_bound: int  # max_c sum_k |w| * max|x| + |b|
    exact_dtype: torch.dtype = torch.float32  # float dtype in which the fast conv is exact

    def __post_init__(self) -> None:
        """Derived tensors of the fast path; call again after editing parameters in place."""
        # channels-last (NHWC) like the activations of ``IntFrozenStage.forward_int``: oneDNN's
        # NHWC kernels, depthwise above all, ran faster here than NCHW (bench_quant.py)
        self.weight_float = self.weight_s8.to(self.exact_dtype).contiguous(
            memory_format=torch.channels_last)
        self.bias_float = self.bias_s32.to(self.exact_dtype)
        self.multiplier_view = self.multiplier.view(1, -1, 1, 1)
        self.shift_view = self.right_shift.view(1, -1, 1, 1)
        # float64 requantization where it is proven exact on every channel (fixed_point), the
        # int64 rule otherwise; the bound comes from the current parameters, not a stored copy
        bound = channel_accumulator_bound(self.weight_s8, self.bias_s32, self.input_signed)
        self.requant_float64 = bool(float64_requant_is_exact(self.multiplier, self.right_shift,
                                                             bound).all())
        self.requant_scale = requant_scale_float64(self.multiplier, self.right_shift).view(1, -1, 1, 1)

    @property
    def out_channels(self) -> int:
        return int(self.weight_s8.shape[0])

    @property
    def requant_path(self) -> str:
        """``float64`` (proven exact for this layer's parameters) or ``int64``."""
        return "float64" if self.requant_float64 else "int64"

    @property
    def output_signed(self) -> bool:
        """ReLU output: UINT8 codes (``IntBlock`` outputs may be INT8)."""
        return False

    @property
    def output_range(self) -> tuple[int, int]:
        """Smallest and largest output code: the ReLU clamp."""
        return 0, UINT8_MAX

    def peak_values(self, height: int, width: int) -> int:
        """Values of the largest activation this layer writes for one image of ``height x width``."""
        return self.out_channels * math.prod(self.output_hw(height, width))

    def requantize(self, acc: torch.Tensor, lo: int = 0, hi: int = UINT8_MAX) -> torch.Tensor:
        """Exact accumulator (integer-valued float) -> codes ``lo..hi`` (0..255: the ReLU), float64
        or int64. ``IntConvUnit`` passes other bounds (ReLU6, linear); the proof of the float64
        path covers any bounds inside [-255, 255]."""
        if self.requant_float64:
            return requantize_float64(acc, self.requant_scale, lo, hi)
        return requantize_int64(acc.to(torch.int64), self.multiplier_view, self.shift_view, lo, hi)

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        """Integer-valued ``x`` -> the exact int32 accumulator as an integer-valued float (fast path)."""
        return F.conv2d(x.to(self.exact_dtype), self.weight_float, self.bias_float, self.stride,
                        self.padding, 1, self.groups)

    def forward_codes(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Integer-valued ``x`` -> output codes 0..255 as ``dtype`` (fast path)."""
        return self.requantize(self.accumulate(x)).to(dtype)

    def forward_int(self, x: torch.Tensor) -> torch.Tensor:
        """Integer-valued float ``x`` -> integer-valued float32 output codes 0..255 (fast path)."""
        return self.forward_codes(x, torch.float32)

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        kh, kw = self.weight_s8.shape[2:]
        return (output_size(height, kh, self.stride, self.padding),
                output_size(width, kw, self.stride, self.padding))

    def accumulate_int64_reference(self, x: np.ndarray) -> np.ndarray:
        weight = self.weight_s8.numpy()
        bias = self.bias_s32.numpy()
        if self.kind == "dw":
            return depthwise_conv2d_int64_reference(x, weight, bias, self.stride, self.padding)
        if self.kind == "pw":
            return pointwise_conv2d_int64_reference(x, weight, bias, self.stride)
        return conv2d_int64_reference(x, weight, bias, self.stride, self.padding)

    def forward_int64_reference(self, x: np.ndarray) -> np.ndarray:
        """int64 codes in, int64 codes 0..255 out, by the explicit reference kernels."""
        acc = self.accumulate_int64_reference(x)
        return requantize_int64_reference(acc, self.multiplier.numpy(), self.right_shift.numpy())


if TYPE_CHECKING:
    IntLayer = IntConvLayer | IntBlock  # one numbered layer of the integer frozen stage


def layer_kind_of(conv: nn.Conv2d) -> str:
    if conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1:
        return "dw"
    if conv.groups == 1 and conv.kernel_size == (1, 1) and conv.padding == (0, 0):
        return "pw"
    if conv.groups == 1:
        return "conv"
    raise TinyclError(f"grouped conv with groups={conv.groups} is not supported in the INT8 stage")


def channel_accumulator_bound(weight_s8: torch.Tensor, bias_s32: torch.Tensor, input_signed: bool
                              ) -> torch.Tensor:
    """int64 ``[C_out]``: ``sum_k |w[c, k]| * max|x| + |bias[c]|``, the largest ``|acc[c]|``."""
    # max |x_q| of the layer's input; 128 covers any int8 input, not only the -127..127 codes
    x_max = INT8_MAX + 1 if input_signed else UINT8_MAX
    weight_abs = weight_s8.to(torch.int64).abs().reshape(weight_s8.shape[0], -1)
    return weight_abs.sum(dim=1) * x_max + bias_s32.to(torch.int64).abs()


def make_int_conv_layer(kind: str, weight_s8: torch.Tensor, bias_s32: torch.Tensor,
                        multiplier: torch.Tensor, right_shift: torch.Tensor, stride: int,
                        padding: int, groups: int, input_signed: bool, input_scale: float = 1.0,
                        output_scale: float = 1.0, weight_scale: torch.Tensor | None = None,
                        index: int = 0) -> IntConvLayer:
    """An integer layer from integer parameters: checks the int32 bound, picks the exact dtype."""
    bias_s32 = bias_s32.to(torch.int64)
    bound = int(channel_accumulator_bound(weight_s8, bias_s32, input_signed).max())
    if bound > INT32_MAX:
        raise TinyclError(
            f"frozen layer {index}: int32 accumulator could overflow (bound {bound}); "
            "the bias or reduction is too large for INT8 execution"
        )
    if weight_scale is None:
        weight_scale = torch.ones(weight_s8.shape[0], dtype=torch.float64)
    return IntConvLayer(
        kind=kind,
        weight_s8=weight_s8.to(torch.int8),
        bias_s32=bias_s32,
        multiplier=multiplier.to(torch.int64),
        right_shift=right_shift.to(torch.int64),
        stride=int(stride),
        padding=int(padding),
        groups=int(groups),
        input_scale=float(input_scale),
        output_scale=float(output_scale),
        weight_scale=weight_scale,
        input_signed=input_signed,
        accumulator_bound=bound,
        exact_dtype=torch.float32 if bound <= FLOAT32_EXACT_INT else torch.float64,
    )


def build_int_layer(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, input_scale: float,
                    output_scale: float, input_signed: bool, per_channel: bool,
                    index: int) -> IntConvLayer:
    """Fold BN, quantize weights and bias, derive per-channel multipliers and the exact dtype."""
    weight, bias = fold_bn(conv, bn)
    weight_s8, weight_scale = quantize_weight_s8(weight, per_channel)
    bias_s32 = quantize_bias_s32(bias, weight_scale, input_scale)
    multiplier, right_shift = quantize_multipliers(
        (weight_scale * input_scale / output_scale).numpy()
    )
    return make_int_conv_layer(
        layer_kind_of(conv), weight_s8, bias_s32, torch.from_numpy(multiplier),
        torch.from_numpy(right_shift), conv.stride[0], conv.padding[0], conv.groups,
        input_signed, input_scale, output_scale, weight_scale, index,
    )


# ---------------------------------------------------------------- the whole stage


def code_dtype(layer: IntLayer) -> torch.dtype:
    """torch dtype of a layer's output codes: int8 (signed, e.g. a linear bottleneck) or uint8."""
    return torch.int8 if layer.output_signed else torch.uint8


@dataclass
class IntFrozenStage:
    """The quantized frozen stage: an INT8 input quantizer and a list of integer layers.

    A layer is an ``IntConvLayer`` (conv -> BN -> ReLU, MobileNetV1) or an ``IntBlock``
    (``tinycl.quant.int_blocks``: ReLU6 / linear convs and residual adds, MobileNetV2 and PhiNet).
    Outputs are UINT8 codes, or INT8 codes where the last layer's output is signed.
    """

    input_scale: float
    layers: list[IntLayer]

    @property
    def output_scale(self) -> float:
        """Float value of one code step of the LR layer's output."""
        return self.layers[-1].output_scale

    @property
    def output_signed(self) -> bool:
        """True when the LR layer's codes are INT8 (a linear bottleneck or a residual add)."""
        return self.layers[-1].output_signed

    def quantize_input(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized float images ``[N, 3, H, W]`` -> int8 codes (see ``quantize_input_s8``)."""
        return quantize_input_s8(images, self.input_scale)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """UINT8 (or INT8) latents -> float32 in the units of the float model's LR activations."""
        return codes.to(torch.float32) * self.output_scale

    def check_input(self, x_int: torch.Tensor) -> None:
        if x_int.dtype != torch.int8 or x_int.dim() != 4:
            raise TinyclError(
                f"integer input must be int8 [N, C, H, W], got {x_int.dtype} {tuple(x_int.shape)}"
            )

    def auto_chunk(self, height: int, width: int, threads: int | None = None) -> int:
        """Images per chunk: at one thread (``torch.get_num_threads()`` by default), keep the
        largest float64 requantization buffer near ``CHUNK_CACHE_BYTES`` (1 to ``MAX_CHUNK``
        images); with more threads, ``MULTI_THREAD_CHUNK``."""
        if (threads or torch.get_num_threads()) > 1:
            return MULTI_THREAD_CHUNK
        largest = 1
        for layer in self.layers:
            largest = max(largest, layer.peak_values(height, width))
            height, width = layer.output_hw(height, width)
        return max(1, min(MAX_CHUNK, CHUNK_CACHE_BYTES // (8 * largest)))

    def forward_int(self, x_int: torch.Tensor, chunk: int | None = None,
                    return_all: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """int8 images -> uint8 (int8 if signed) ``[N, C, H, W]`` LR activations (or every
        layer's output).

        ``chunk``: images per pass through the layers; ``None`` picks ``auto_chunk``.
        """
        self.check_input(x_int)
        if x_int.shape[0] == 0:
            raise TinyclError("no images to run through the frozen stage")
        if chunk is None:
            chunk = self.auto_chunk(*x_int.shape[2:])
        if chunk < 1:
            raise TinyclError(f"chunk must be >= 1, got {chunk}")
        last = len(self.layers) - 1
        outputs: list[list[torch.Tensor]] = [[] for _ in self.layers]
        with torch.no_grad(), torch.backends.nnpack.flags(enabled=False), ieee_float_convolutions():
            for start in range(0, x_int.shape[0], chunk):
                x = x_int[start : start + chunk].cpu().to(torch.float32)
                x = x.contiguous(memory_format=torch.channels_last)
                for i, layer in enumerate(self.layers):
                    if i == last:
                        outputs[i].append(layer.forward_codes(x, code_dtype(layer)))
                        break
                    x = layer.forward_codes(x, torch.float32)
                    if return_all:
                        outputs[i].append(x.to(code_dtype(layer)))
        stacked = [torch.cat(parts).contiguous() if parts else None for parts in outputs]
        return stacked if return_all else stacked[-1]

    def forward_reference_int64(self, x_int: torch.Tensor, return_all: bool = False
                                ) -> torch.Tensor | list[torch.Tensor]:
        """The same computation by the explicit int64 reference kernels (slow)."""
        self.check_input(x_int)
        x = x_int.cpu().numpy().astype(np.int64)
        outputs = []
        for layer in self.layers:
            x = layer.forward_int64_reference(x)
            outputs.append(torch.from_numpy(x).to(code_dtype(layer)))
        return outputs if return_all else outputs[-1]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized float images -> uint8 (int8) LR activations: quantize then ``forward_int``, a
        block of ``MULTI_THREAD_CHUNK`` images at a time (bounds the float64 input quantization
        buffer)."""
        if images.shape[0] <= MULTI_THREAD_CHUNK:
            return self.forward_int(self.quantize_input(images))
        return torch.cat([self.forward_int(self.quantize_input(images[start : start + MULTI_THREAD_CHUNK]))
                          for start in range(0, images.shape[0], MULTI_THREAD_CHUNK)])
