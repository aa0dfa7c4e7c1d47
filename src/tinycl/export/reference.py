"""Python references of the C runtime: one function per C kernel, of the same name.

Each takes and returns numpy arrays in the C layout (one image, CHW; see
``runtime/tinycl_runtime.h``) and computes what tinycl's Python run computes, mostly by
calling the very functions the learner runs: the INT8 kernels call the int64 reference
kernels of ``tinycl.quant.int_frozen`` and the requantization rule of
``tinycl.quant.fixed_point``; the latent kernels call ``tinycl.quant.latent`` and
``tinycl.quant.packing``; the FP32 kernels call ``torch.nn.functional`` in float32, as the
adaptive stage does. Integer kernels must match to the bit; FP32 kernels within float
rounding (PyTorch sums in its own order).

Also here: the derived constants the generator writes (the input table, the clip-mode
multipliers, the decode steps), computed with the quantizer's own code so that the C side
is exact by construction, and ``adaptive_fp32_fw`` / ``module_logits``, the whole FP32 stage.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinycl.data.base import to_tensor_batch
from tinycl.quant.fixed_point import quantize_multiplier, requantize_int64_reference
from tinycl.quant.int_blocks import IntAdd, add_int64_reference
from tinycl.quant.int_frozen import (
    conv2d_int64_reference,
    depthwise_conv2d_int64_reference,
    pointwise_conv2d_int64_reference,
    quantize_input_s8,
)
from tinycl.quant.latent import LatentQuantizer, clip_encode_table, shift_encode, shift_encode_signed
from tinycl.quant.packing import pack_bits as pack_rows
from tinycl.quant.packing import unpack_bits as unpack_rows

UINT8_LEVELS = 256

# ---------------------------------------------------------------- derived constants


def input_table_s8(input_scale: float, channels: int = 3) -> np.ndarray:
    """int8 ``[channels, 256]``: the INT8 code of byte v in channel c of a camera frame.

    Computed by the Python path itself (``to_tensor_batch`` then ``quantize_input_s8``) on a
    frame holding every byte value once per channel: both are elementwise per channel, so a
    lookup in this table is ``IntFrozenStage.quantize_input(to_tensor_batch(frame))``.
    """
    ramp = np.repeat(np.arange(UINT8_LEVELS, dtype=np.uint8)[:, None], channels, axis=1)
    codes = quantize_input_s8(to_tensor_batch(ramp[None, None]), input_scale)  # [1, C, 1, 256]
    return codes[0, :, 0, :].numpy().copy()


def latent_clip_multipliers(clip_u8: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """int32-range ``(multiplier, right_shift)`` per clip value: the fixed-point factor
    ``(2**bits - 1) / clip`` exactly as ``clip_encode_table`` quantizes it."""
    pairs = [quantize_multiplier(((1 << bits) - 1) / int(clip)) for clip in np.asarray(clip_u8).ravel()]
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def latent_groups(quantizer: LatentQuantizer, channels: int) -> int:
    """Groups of the latent quantizer over a CHW latent: its channels when per channel, else 1."""
    return channels if quantizer.per_channel else 1


def latent_offset(quantizer: LatentQuantizer) -> int:
    """What ``LatentQuantizer.decode`` subtracts from a code before scaling it: ``2**(Q-1)`` for
    the offset-binary codes of a signed LR layer, else 0."""
    return 1 << (quantizer.bits - 1) if quantizer.signed else 0


def latent_step_fp32(quantizer: LatentQuantizer) -> np.ndarray:
    """float32 ``[groups]``: the factor ``LatentQuantizer.decode`` multiplies codes by, computed
    by the same expression."""
    return (quantizer.step_u8() * quantizer.latent_scale).astype(np.float32)


# ---------------------------------------------------------------- INT8 frozen stage


def rgb_u8_to_input_s8(rgb_hwc: np.ndarray, table: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, C]`` frame -> int8 ``[C, H, W]`` codes by ``table [C, 256]``."""
    rgb = np.asarray(rgb_hwc, np.uint8)
    return np.stack([table[c][rgb[:, :, c]] for c in range(rgb.shape[2])]).astype(np.int8)


def requantize_u8(acc: np.ndarray, multiplier: np.ndarray, right_shift: np.ndarray) -> np.ndarray:
    """int32 ``[C, S]`` accumulators -> uint8 codes by the rule of ``tinycl.quant.fixed_point``."""
    return requantize_int64_reference(np.asarray(acc, np.int64), multiplier, right_shift, channel_axis=0
                                      ).astype(np.uint8)


def _requantized(acc: np.ndarray, multiplier: np.ndarray, right_shift: np.ndarray) -> np.ndarray:
    return requantize_int64_reference(acc, multiplier, right_shift)[0].astype(np.uint8)


def conv2d_s8(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
              right_shift: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """int8 ``[C, H, W]`` image codes, int8 weight ``[O, C, kh, kw]`` -> uint8 ``[O, Ho, Wo]``."""
    return _requantized(conv2d_int64_reference(np.asarray(x)[None], weight, bias, stride, padding),
                        multiplier, right_shift)


def conv2d_u8(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
              right_shift: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """uint8 ``[C, H, W]``, int8 weight ``[O, C, kh, kw]`` -> uint8 ``[O, Ho, Wo]``."""
    return conv2d_s8(x, weight, bias, multiplier, right_shift, stride, padding)


def depthwise_conv2d_u8(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
                        right_shift: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """uint8 ``[C, H, W]``, int8 weight ``[C, 1, kh, kw]`` -> uint8 ``[C, Ho, Wo]``."""
    return _requantized(depthwise_conv2d_int64_reference(np.asarray(x)[None], weight, bias, stride, padding),
                        multiplier, right_shift)


def pointwise_conv2d_u8(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
                        right_shift: np.ndarray, stride: int = 1) -> np.ndarray:
    """uint8 ``[C, H, W]``, int8 weight ``[O, C, 1, 1]`` -> uint8 ``[O, Ho, Wo]``."""
    return _requantized(pointwise_conv2d_int64_reference(np.asarray(x)[None], weight, bias, stride),
                        multiplier, right_shift)


# ---------------------------------------------------------------- integer blocks (MobileNetV2, PhiNet)


def _ranged(acc: np.ndarray, multiplier: np.ndarray, right_shift: np.ndarray, lo: int, hi: int,
            signed: bool) -> np.ndarray:
    codes = requantize_int64_reference(acc, multiplier, right_shift, lo, hi)[0]
    return codes.astype(np.int8 if signed else np.uint8)


def conv2d_s8_range(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
                    right_shift: np.ndarray, stride: int, padding: int, lo: int, hi: int) -> np.ndarray:
    """int8 ``[C, H, W]`` image codes -> codes ``lo..hi`` ``[O, Ho, Wo]`` (int8 when lo < 0, else uint8)."""
    return _ranged(conv2d_int64_reference(np.asarray(x)[None], weight, bias, stride, padding), multiplier,
                   right_shift, lo, hi, lo < 0)


def depthwise_conv2d_u8_range(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
                              right_shift: np.ndarray, stride: int, padding: int, lo: int, hi: int) -> np.ndarray:
    """uint8 ``[C, H, W]``, int8 weight ``[C, 1, kh, kw]`` -> codes ``lo..hi``."""
    return _ranged(depthwise_conv2d_int64_reference(np.asarray(x)[None], weight, bias, stride, padding),
                   multiplier, right_shift, lo, hi, lo < 0)


def depthwise_conv2d_s8_range(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
                              right_shift: np.ndarray, stride: int, padding: int, lo: int, hi: int) -> np.ndarray:
    """int8 ``[C, H, W]``, int8 weight ``[C, 1, kh, kw]`` -> codes ``lo..hi``."""
    return depthwise_conv2d_u8_range(x, weight, bias, multiplier, right_shift, stride, padding, lo, hi)


def pointwise_conv2d_u8_range(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
                              right_shift: np.ndarray, stride: int, lo: int, hi: int) -> np.ndarray:
    """uint8 ``[C, H, W]``, int8 weight ``[O, C, 1, 1]`` -> codes ``lo..hi``."""
    return _ranged(pointwise_conv2d_int64_reference(np.asarray(x)[None], weight, bias, stride), multiplier,
                   right_shift, lo, hi, lo < 0)


def pointwise_conv2d_s8_range(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
                              right_shift: np.ndarray, stride: int, lo: int, hi: int) -> np.ndarray:
    """int8 ``[C, H, W]``, int8 weight ``[O, C, 1, 1]`` -> codes ``lo..hi``."""
    return pointwise_conv2d_u8_range(x, weight, bias, multiplier, right_shift, stride, lo, hi)


def residual_add_s8(a: np.ndarray, b: np.ndarray, add: IntAdd) -> np.ndarray:
    """Block input ``a`` (uint8 or int8 codes) + bottleneck ``b`` (int8) -> int8 codes -127..127
    (``tinycl.quant.int_blocks.add_int64_reference``)."""
    return add_int64_reference(np.asarray(a), np.asarray(b), add).astype(np.int8)


# ---------------------------------------------------------------- quantized latent replays


def latent_shift_u8(latent: np.ndarray, bits: int) -> np.ndarray:
    """UINT8 latent -> UINT-Q codes, shift mode (``tinycl.quant.latent.shift_encode``)."""
    return shift_encode(np.asarray(latent, np.uint8), bits)


def latent_shift_s8(latent: np.ndarray, bits: int) -> np.ndarray:
    """INT8 latent (a signed LR layer) -> offset-binary UINT-Q codes (``shift_encode_signed``)."""
    return shift_encode_signed(np.asarray(latent, np.int8), bits)


def latent_clip_u8(latent: np.ndarray, clip_u8: np.ndarray, bits: int) -> np.ndarray:
    """uint8 ``[G, S]`` -> codes by the clip tables of ``LatentQuantizer`` (one clip value per group)."""
    tables = np.stack([clip_encode_table(int(c), bits) for c in np.asarray(clip_u8).ravel()])
    latent = np.asarray(latent, np.uint8)
    return tables[np.arange(latent.shape[0])[:, None], latent]


def latent_decode_fp32(codes: np.ndarray, step: np.ndarray, offset: int = 0) -> np.ndarray:
    """uint8 ``[G, S]`` codes -> float32 latents, as ``LatentQuantizer.decode`` (``offset``:
    ``latent_offset``, subtracted in float32 as decode does)."""
    grouped = np.asarray(codes).astype(np.float32)
    if offset:
        grouped -= np.float32(offset)
    return grouped * np.asarray(step, np.float32).reshape(-1, 1)


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """One latent's codes ``[D]`` -> ``ceil(D * bits / 8)`` bytes (``tinycl.quant.packing``)."""
    return pack_rows(np.asarray(codes, np.uint8).reshape(1, -1), bits)[0]


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack_bits`` for one latent of ``count`` values."""
    return unpack_rows(np.asarray(packed, np.uint8).reshape(1, -1), bits, count)[0]


# ---------------------------------------------------------------- FP32 adaptive stage


def _tensor(array: np.ndarray | torch.Tensor | None) -> torch.Tensor | None:
    if array is None:
        return None
    return torch.as_tensor(np.asarray(array, np.float32))


def conv2d_fp32_fw(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int, padding: int
                   ) -> np.ndarray:
    """float32 ``[C, H, W]``, weight ``[O, C, kh, kw]`` -> ``[O, Ho, Wo]`` (``F.conv2d``)."""
    return F.conv2d(_tensor(x)[None], _tensor(weight), _tensor(bias), stride, padding)[0].numpy()


def depthwise_fp32_fw(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int, padding: int
                      ) -> np.ndarray:
    """float32 ``[C, H, W]``, weight ``[C, 1, kh, kw]`` -> ``[C, Ho, Wo]`` (``F.conv2d``, groups C)."""
    return F.conv2d(_tensor(x)[None], _tensor(weight), _tensor(bias), stride, padding, 1, x.shape[0])[0].numpy()


def pointwise_fp32_fw(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int = 1) -> np.ndarray:
    """float32 ``[C, H, W]``, weight ``[O, C, 1, 1]`` -> ``[O, Ho, Wo]``."""
    return conv2d_fp32_fw(x, weight, bias, stride, 0)


def batch_norm_fp32_fw(x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``x * scale[c] + shift[c]`` as ``BatchRenorm2d.forward`` computes it in eval mode."""
    view = (-1, 1, 1) if np.ndim(x) == 3 else (-1, 1)
    return (_tensor(x) * _tensor(scale).view(view) + _tensor(shift).view(view)).numpy()


def relu_fp32_fw(x: np.ndarray) -> np.ndarray:
    return torch.relu(_tensor(x)).numpy()


def relu6_fp32_fw(x: np.ndarray) -> np.ndarray:
    return F.relu6(_tensor(x)).numpy()


def avgpool_fp32_fw(x: np.ndarray, kernel_h: int, kernel_w: int, stride: int) -> np.ndarray:
    """float32 ``[C, H, W]`` -> window means ``[C, Ho, Wo]`` (no padding)."""
    return F.avg_pool2d(_tensor(x)[None], (kernel_h, kernel_w), stride)[0].numpy()


def linear_fp32_fw(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    return F.linear(_tensor(x), _tensor(weight), _tensor(bias)).numpy()


def argmax_fp32(values: np.ndarray) -> int:
    return int(torch.argmax(_tensor(values)))


def adaptive_fp32_fw(ops: list, latents: torch.Tensor) -> torch.Tensor:
    """The lowered adaptive stage (``tinycl.export.deployment`` ops) on a batch ``[N, C, H, W]``
    in float32 torch ops: the reference of the generated ``tinycl_adaptive_forward``."""
    from tinycl.export.deployment import ActivationOp, AvgPoolOp, BatchNormOp, ConvOp, FlattenOp, LinearOp

    x = latents.to(torch.float32)
    with torch.no_grad():
        for op in ops:
            if isinstance(op, ConvOp):
                groups = x.shape[1] if op.kind == "dw" else 1
                x = F.conv2d(x, op.weight, op.bias, op.stride, op.padding, 1, groups)
            elif isinstance(op, BatchNormOp):
                x = x * op.scale.view(1, -1, 1, 1) + op.shift.view(1, -1, 1, 1)
            elif isinstance(op, ActivationOp):
                x = torch.relu(x) if op.kind == "relu" else F.relu6(x)
            elif isinstance(op, AvgPoolOp):
                kernel = tuple(x.shape[2:]) if op.kernel_h == 0 else (op.kernel_h, op.kernel_w)
                x = F.avg_pool2d(x, kernel, op.stride if op.kernel_h else 1)
            elif isinstance(op, FlattenOp):
                x = torch.flatten(x, 1)
            elif isinstance(op, LinearOp):
                x = F.linear(x, op.weight, op.bias)
    return x


def module_logits(adaptive: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """``adaptive`` in eval mode on ``latents``, every module's own train flag restored after."""
    modes = [(module, module.training) for module in adaptive.modules()]
    adaptive.eval()
    try:
        with torch.no_grad():
            return adaptive(latents)
    finally:
        for module, mode in modes:
            module.training = mode
