"""What a device needs to run a finished tinycl run: the ``Deployment`` and its file.

A deployment holds the integer frozen stage (``IntFrozenStage``), the Q-bit latent quantizer
(``LatentQuantizer``), the adaptive stage in inference form (a flat list of ops, below),
optionally the replay memory (packed rows + labels), and a few descriptive strings. The C
generator (``tinycl.export.generate``) reads only this, so a run directory that saves one
(``save_deployment``) can be exported later without the model code that trained it.

The adaptive stage is *lowered* from its ``nn.Module`` (``lower_adaptive``) into ops the C
runtime has kernels for: ``conv`` (dense, depthwise ``dw`` or pointwise ``pw``), ``batch_norm``
(BatchNorm2d / BatchRenorm2d in inference form: per-channel ``x * scale + shift`` from the
running statistics), ``relu``, ``relu6``, ``avgpool`` (global or windowed), ``flatten``,
``linear``. Anything else is refused with one line naming the module. Train-mode behaviour
(batch statistics, dropout) is not exported: a device running inference uses the running
statistics, as ``module.eval()`` does.

File layout (little endian), as ``tinycl.train.checkpoint`` but with its own magic::

    magic     8 bytes   b"TINYCLDP"
    version   uint32    FORMAT_VERSION
    length    uint64    payload bytes
    sha256    32 bytes  of the payload
    payload   torch.save of a dict of tensors, numbers, strings, lists, dicts and None

Reads check magic, version, length and checksum, unpickle with ``weights_only=True`` (tensors
and plain containers only; a crafted pickle is refused, not executed), then rebuild and
re-validate every part; any problem is one ``TinyclError`` line naming the file.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinycl.errors import TinyclError
from tinycl.fileio import atomic_writer
from tinycl.quant.int_blocks import IntAdd, IntBlock, IntConvUnit
from tinycl.quant.int_frozen import IntConvLayer, IntFrozenStage, make_int_conv_layer
from tinycl.quant.latent import LatentQuantizer, clip_encode_table
from tinycl.quant.packing import PACKABLE_BITS, packed_row_bytes

MAGIC = b"TINYCLDP"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIQ32s")
FILE_NAME = "deployment.tcd"
FROZEN_KINDS = ("conv", "dw", "pw")


# ---------------------------------------------------------------- the adaptive stage's ops


@dataclass(frozen=True)
class ConvOp:
    """``kind`` conv (groups 1), dw (groups = channels) or pw (1x1, no padding); float32."""

    kind: str
    weight: torch.Tensor  # float32 [C_out, C_in / groups, kh, kw]
    bias: torch.Tensor | None  # float32 [C_out]
    stride: int
    padding: int
    op = "conv"


@dataclass(frozen=True)
class BatchNormOp:
    """Inference form of a BN: ``x * scale[c] + shift[c]`` (float32 [C] each)."""

    scale: torch.Tensor
    shift: torch.Tensor
    op = "batch_norm"


@dataclass(frozen=True)
class ActivationOp:
    kind: str  # relu | relu6
    op = "activation"


@dataclass(frozen=True)
class AvgPoolOp:
    """Average over ``kernel_h x kernel_w`` windows, no padding; ``kernel_h = 0``: the whole input
    (global pooling, ``nn.AdaptiveAvgPool2d(1)``)."""

    kernel_h: int
    kernel_w: int
    stride: int
    op = "avgpool"


@dataclass(frozen=True)
class FlattenOp:
    op = "flatten"


@dataclass(frozen=True)
class LinearOp:
    weight: torch.Tensor  # float32 [out, in]
    bias: torch.Tensor | None  # float32 [out]
    op = "linear"


AdaptiveOp = ConvOp | BatchNormOp | ActivationOp | AvgPoolOp | FlattenOp | LinearOp
OP_TYPES: dict[str, type] = {t.op: t for t in (ConvOp, BatchNormOp, ActivationOp, AvgPoolOp, FlattenOp, LinearOp)}


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def op_output_shape(op: AdaptiveOp, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape after ``op`` of an input of ``shape`` ((C, H, W) or (F,)); refuses a mismatch."""
    if isinstance(op, (ConvOp, AvgPoolOp)) and len(shape) != 3:
        raise TinyclError(f"{op.op} needs a [C, H, W] input, got {list(shape)}")
    if isinstance(op, ConvOp):
        if op.weight.dim() != 4 or op.stride < 1 or op.padding < 0:
            raise TinyclError(f"{op.kind} conv: weight must be 4-D, stride >= 1 and padding >= 0")
        c_out, c_in_per_group, kh, kw = op.weight.shape
        fits = {"conv": c_in_per_group == shape[0],
                "dw": c_in_per_group == 1 and c_out == shape[0],
                "pw": c_in_per_group == shape[0] and (kh, kw, op.padding) == (1, 1, 0)}[op.kind]
        out = (c_out, conv_output_size(shape[1], kh, op.stride, op.padding),
               conv_output_size(shape[2], kw, op.stride, op.padding))
        if not fits or min(out) < 1 or (op.bias is not None and op.bias.shape != (c_out,)):
            raise TinyclError(f"{op.kind} conv with weight {list(op.weight.shape)} cannot take {list(shape)}")
        return out
    if isinstance(op, AvgPoolOp):
        if op.kernel_h == 0:
            return (shape[0], 1, 1)
        if not 1 <= op.kernel_h <= shape[1] or not 1 <= op.kernel_w <= shape[2] or op.stride < 1:
            raise TinyclError(f"avgpool {op.kernel_h}x{op.kernel_w} stride {op.stride} cannot take {list(shape)}")
        return (shape[0], conv_output_size(shape[1], op.kernel_h, op.stride, 0),
                conv_output_size(shape[2], op.kernel_w, op.stride, 0))
    if isinstance(op, BatchNormOp):
        if len(shape) != 3 or op.scale.shape != (shape[0],) or op.shift.shape != (shape[0],):
            raise TinyclError(f"batch_norm over {op.scale.numel()} channels cannot take {list(shape)}")
        return shape
    if isinstance(op, FlattenOp):
        return (int(np.prod(shape)),)
    if isinstance(op, LinearOp):
        bias_ok = op.bias is None or op.bias.shape == (op.weight.shape[0],)
        if len(shape) != 1 or op.weight.dim() != 2 or op.weight.shape[1] != shape[0] or not bias_ok:
            raise TinyclError(f"linear with weight {list(op.weight.shape)} cannot take {list(shape)} (flatten first)")
        return (int(op.weight.shape[0]),)
    return shape  # activation


def batch_norm_affine(bn: nn.Module) -> BatchNormOp:
    """The per-channel affine map a BN computes in eval mode, in float32.

    ``BatchRenorm2d`` with a running variance (tinycl's "var" statistics) and ``BatchNorm2d``:
    ``scale = weight / sqrt(running_var + eps)``, ``shift = bias - running_mean * scale``, the
    very operations ``BatchRenorm2d.forward`` runs in eval mode, so ``x * scale + shift``
    repeats its bits. With a running standard deviation (ar1-pytorch's "std" statistics):
    ``scale = weight / running_std``. ``BatchNorm2d`` evaluates its own fused kernel, equal to
    this within float rounding.
    """
    mean = getattr(bn, "running_mean", None)
    if mean is None:
        raise TinyclError(f"{type(bn).__name__} without running statistics cannot run in inference form")
    channels = mean.numel()
    weight = bn.weight.detach() if getattr(bn, "weight", None) is not None else torch.ones(channels)
    bias = bn.bias.detach() if getattr(bn, "bias", None) is not None else torch.zeros(channels)
    with torch.no_grad():
        if getattr(bn, "running_std", None) is not None:
            scale = weight.float() / bn.running_std.float()
        else:
            scale = weight.float() / torch.sqrt(bn.running_var.float() + bn.eps)
        shift = bias.float() - mean.float() * scale
    return BatchNormOp(scale.clone(), shift.clone())


def square(value: Any, what: str, where: str) -> int:
    """A conv/pool stride or padding given as an int or an equal pair."""
    pair = value if isinstance(value, tuple) else (value, value)
    if not isinstance(pair[0], int) or pair[0] != pair[1]:
        raise TinyclError(f"{where}: non-square {what} {value!r} is not supported by the C runtime")
    return int(pair[0])


def lower_conv(conv: nn.Conv2d, where: str) -> ConvOp:
    if conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        raise TinyclError(f"{where}: dilated or non-zero-padded convolutions are not supported by the C runtime")
    stride, padding = square(conv.stride, "stride", where), square(conv.padding, "padding", where)
    if conv.groups == 1:
        kind = "pw" if conv.kernel_size == (1, 1) and padding == 0 else "conv"
    elif conv.groups == conv.in_channels == conv.out_channels:
        kind = "dw"
    else:
        raise TinyclError(f"{where}: grouped convolution (groups={conv.groups}) is not supported by the C runtime")
    bias = conv.bias.detach().float().clone() if conv.bias is not None else None
    return ConvOp(kind, conv.weight.detach().float().clone(), bias, stride, padding)


def residual_block_chain(module: nn.Module, where: str) -> nn.Sequential | None:
    """A MobileNetV2 / PhiNet block's conv chain when the block is one (None otherwise). A block
    that adds its identity shortcut is refused: the adaptive stage's FP32 ops are a chain, with
    no residual add (move the LR layer past the last residual block)."""
    from tinycl.models.mobilenet_v2 import InvertedResidual
    from tinycl.models.phinet import PhiNetBlock

    if not isinstance(module, (InvertedResidual, PhiNetBlock)):
        return None
    if module.use_residual:
        raise TinyclError(f"{where}: a residual block ({type(module).__name__} with its identity shortcut) has no "
                          "FP32 kernel in the C runtime's adaptive stage; choose an LR layer at or after the last "
                          "residual block")
    return module.conv


def lower_module(module: nn.Module, where: str) -> list[AdaptiveOp]:
    """One module (or a Sequential of them) -> ops, in forward order."""
    from tinycl.models.heads import Classifier  # the one tinycl container with its own forward

    if isinstance(module, nn.Sequential):
        return [op for i, child in enumerate(module) for op in lower_module(child, f"{where}.{i}")]
    if residual_block_chain(module, where) is not None:
        return lower_module(module.conv, f"{where}.conv")
    if isinstance(module, Classifier):
        return [FlattenOp(), *lower_module(module.linear, f"{where}.linear")]
    if isinstance(module, nn.Conv2d):
        return [lower_conv(module, where)]
    # BatchRenorm2d by name: importing tinycl.train here would load the whole learner for one class
    if isinstance(module, nn.BatchNorm2d) or type(module).__name__ == "BatchRenorm2d":
        return [batch_norm_affine(module)]
    if type(module).__name__ == "MaskedReLU":  # the sparse update's ReLU / ReLU6 (tinycl.train.sparse)
        return [ActivationOp("relu6" if module.upper == 6 else "relu")] if module.upper in (None, 6) else \
            _unsupported(module, where)
    if isinstance(module, nn.ReLU6):
        return [ActivationOp("relu6")]
    if isinstance(module, nn.ReLU):
        return [ActivationOp("relu")]
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        if size not in (1, (1, 1)):
            raise TinyclError(f"{where}: AdaptiveAvgPool2d({size}) is not supported by the C runtime (only 1)")
        return [AvgPoolOp(0, 0, 1)]
    if isinstance(module, nn.AvgPool2d):
        kernel = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
        if square(module.padding, "padding", where) != 0 or module.ceil_mode or module.divisor_override:
            raise TinyclError(f"{where}: AvgPool2d with padding, ceil_mode or divisor_override is not supported")
        return [AvgPoolOp(int(kernel[0]), int(kernel[1]), square(module.stride, "stride", where))]
    if isinstance(module, nn.Flatten):
        return [FlattenOp()]
    if isinstance(module, nn.Linear):
        bias = module.bias.detach().float().clone() if module.bias is not None else None
        return [LinearOp(module.weight.detach().float().clone(), bias)]
    if isinstance(module, (nn.Identity, nn.Dropout)):
        return []  # the identity in inference
    return _unsupported(module, where)


def _unsupported(module: nn.Module, where: str) -> list[AdaptiveOp]:
    raise TinyclError(f"{where}: {type(module).__name__} has no kernel in the C runtime; "
                      "supported: Conv2d, BatchNorm2d, BatchRenorm2d, ReLU, ReLU6, average pooling, Flatten, Linear")


def lower_adaptive(adaptive: nn.Module) -> list[AdaptiveOp]:
    """The adaptive stage as a flat list of inference ops (copies: the module is not kept)."""
    return lower_module(adaptive, "adaptive")


# ---------------------------------------------------------------- the deployment


def check_frozen_layer_type(layer: object, index: int) -> None:
    """The runtime has kernels for ``IntConvLayer`` (conv -> BN -> ReLU, MobileNetV1) and for
    ``IntBlock`` (the ReLU6 / linear convs and residual adds of MobileNetV2 and PhiNet)."""
    if type(layer) not in (IntConvLayer, IntBlock):
        kind = getattr(layer, "kind", "?")
        raise TinyclError(f"frozen layer {index}: {type(layer).__name__} ({kind}) has no kernel in the C runtime")


def check_conv_shape(conv: IntConvLayer, where: str, in_channels: int) -> None:
    """An integer conv the runtime's kernels can run on ``in_channels`` input channels (a loaded
    file is untrusted: a wrong shape here would make C read outside its arrays)."""
    if conv.kind not in FROZEN_KINDS:
        raise TinyclError(f"{where}: kind {conv.kind!r} has no kernel in the C runtime")
    weight = conv.weight_s8
    c_out, c_in_per_group, kh, kw = weight.shape if weight.dim() == 4 else (0, 0, 0, 0)
    fits = {"conv": c_in_per_group == in_channels and conv.groups == 1,
            "dw": c_in_per_group == 1 and c_out == in_channels and conv.groups == in_channels,
            "pw": c_in_per_group == in_channels and conv.groups == 1 and (kh, kw, conv.padding) == (1, 1, 0)}
    if not fits[conv.kind] or c_out < 1 or conv.stride < 1 or conv.padding < 0:
        raise TinyclError(f"{where}: {conv.kind} weight {list(weight.shape)} (groups {conv.groups}, "
                          f"stride {conv.stride}, padding {conv.padding}) cannot take {in_channels} channels")


def first_conv(layer: IntConvLayer | IntBlock) -> IntConvLayer:
    return layer.units[0].conv if isinstance(layer, IntBlock) else layer


def check_frozen_layer(layer: IntConvLayer | IntBlock, index: int, in_channels: int, input_signed: bool) -> None:
    """``layer`` takes ``in_channels`` channels of codes that are INT8 when ``input_signed``
    (the image, a linear bottleneck, a residual sum) and UINT8 otherwise; each conv's signedness
    must be its input's, each residual add's shapes must agree."""
    if isinstance(layer, IntConvLayer):
        if layer.input_signed != (index == 0):
            raise TinyclError(f"frozen layer {index}: only the first layer takes INT8 input, and it must")
        check_conv_shape(layer, f"frozen layer {index}", in_channels)
        return
    channels, signed = in_channels, input_signed
    for u, unit in enumerate(layer.units):
        if unit.conv.input_signed != signed:
            raise TinyclError(f"frozen layer {index} conv {u}: input signedness does not match the codes it reads")
        if unit.conv.kind == "conv" and not signed:
            raise TinyclError(f"frozen layer {index} conv {u}: the runtime's dense conv of a block takes the INT8 "
                              "image only (conv2d_s8_range)")
        check_conv_shape(unit.conv, f"frozen layer {index} conv {u}", channels)
        channels, signed = unit.out_channels, unit.output_signed
    if layer.add is not None and channels != in_channels:
        raise TinyclError(f"frozen layer {index}: residual add of {in_channels} and {channels} channels")


@dataclass
class Deployment:
    """Everything the generated C program computes with, held in memory.

    ``input_shape``: (channels, height, width) of the camera frame the frozen stage takes.
    ``replay_rows``: the replay memory's packed rows, uint8 [N, ceil(D * Q / 8)], with their
    int64 ``replay_labels`` [N]; both ``None`` when no memory is exported. ``meta``: strings
    and numbers describing the source (model, LR layer, run directory), written as comments.
    """

    stage: IntFrozenStage
    quantizer: LatentQuantizer
    adaptive: list[AdaptiveOp]
    input_shape: tuple[int, int, int]
    num_classes: int
    replay_rows: np.ndarray | None = None
    replay_labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def frozen_shapes(self) -> list[tuple[int, int, int]]:
        """(C, H, W) after each frozen layer; the last is the LR layer's output."""
        _, height, width = self.input_shape
        shapes = []
        for layer in self.stage.layers:
            height, width = layer.output_hw(height, width)
            shapes.append((layer.out_channels, height, width))
        return shapes

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.frozen_shapes[-1]

    @property
    def latent_values(self) -> int:
        return int(np.prod(self.latent_shape))

    @property
    def bits(self) -> int:
        return self.quantizer.bits

    @property
    def row_bytes(self) -> int:
        return packed_row_bytes(self.latent_values, self.bits)

    def adaptive_shapes(self) -> list[tuple[int, ...]]:
        """Shape after each adaptive op, starting from the latent."""
        shape: tuple[int, ...] = self.latent_shape
        shapes = []
        for op in self.adaptive:
            shape = op_output_shape(op, shape)
            shapes.append(shape)
        return shapes

    def validate(self) -> Deployment:
        """Refuse, in one line, what the C runtime cannot run or what does not fit together."""
        channels, height, width = self.input_shape
        if channels < 1 or height < 1 or width < 1:
            raise TinyclError(f"input shape must be positive (C, H, W), got {self.input_shape}")
        if not self.stage.layers:
            raise TinyclError("the frozen stage has no layers")
        for i, layer in enumerate(self.stage.layers):
            check_frozen_layer_type(layer, i)
        if isinstance(self.stage.layers[0], IntConvLayer) and self.stage.layers[0].kind == "dw":
            raise TinyclError("the first frozen layer must be a dense conv (the runtime has no INT8-input depthwise)")
        in_channels, signed = channels, True
        for i, layer in enumerate(self.stage.layers):
            check_frozen_layer(layer, i, in_channels, signed)
            in_channels, signed = layer.out_channels, layer.output_signed
        if self.quantizer.signed != self.stage.output_signed:
            raise TinyclError("the latent quantizer's signedness does not match the LR layer's codes")
        if self.stage.output_signed and self.quantizer.mode != "shift":
            raise TinyclError("a signed LR layer takes the shift-mode latent quantizer only")
        for i, shape in enumerate(self.frozen_shapes):
            if min(shape) < 1:
                raise TinyclError(f"frozen layer {i} has an empty output {list(shape)} at input {self.input_shape}")
        quantizer = self.quantizer
        if quantizer.bits not in PACKABLE_BITS:
            raise TinyclError(f"export needs Q-bit latents (1..8 bits), got {quantizer.bits}")
        if not quantizer.calibrated:
            raise TinyclError("the clip-mode latent quantizer is not calibrated")
        if quantizer.mode == "clip" and quantizer.per_channel and len(quantizer.clip_u8) != self.latent_shape[0]:
            raise TinyclError(f"the latent quantizer has {len(quantizer.clip_u8)} channel scales, "
                              f"the LR layer {self.latent_shape[0]} channels")
        shapes = self.adaptive_shapes()
        if not any(not isinstance(op, FlattenOp) for op in self.adaptive):
            raise TinyclError("the adaptive stage has no layer to export")
        if shapes[-1] != (self.num_classes,):
            raise TinyclError(f"the adaptive stage ends with shape {list(shapes[-1])}, not [{self.num_classes}] logits")
        for key, value in self.meta.items():
            if not isinstance(key, str) or not isinstance(value, (str, int, float, bool)):
                raise TinyclError(f"deployment meta must map names to strings or numbers, got {key!r}: {value!r}")
        if (self.replay_rows is None) != (self.replay_labels is None):
            raise TinyclError("replay rows and replay labels go together")
        if self.replay_rows is not None:
            rows, labels = self.replay_rows, self.replay_labels
            if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != self.row_bytes:
                raise TinyclError(f"replay rows must be uint8 [N, {self.row_bytes}], got {rows.dtype} {rows.shape}")
            if labels.shape != (rows.shape[0],) or (labels.size and not 0 <= labels.min() <= labels.max()
                                                     < self.num_classes):
                raise TinyclError(f"replay labels must be [{rows.shape[0]}] in 0..{self.num_classes - 1}")
        return self


def make_deployment(stage: IntFrozenStage, quantizer: LatentQuantizer, adaptive: nn.Module,
                    input_hw: tuple[int, int], num_classes: int | None = None,
                    replay_rows: np.ndarray | torch.Tensor | None = None,
                    replay_labels: np.ndarray | torch.Tensor | None = None,
                    meta: dict[str, Any] | None = None) -> Deployment:
    """A validated ``Deployment`` from the objects a run holds in memory.

    ``adaptive`` is lowered to inference ops (copied); ``num_classes`` defaults to the last op's
    width. Replay rows/labels are the ``LatentReplayMemory``'s ``rows[:size]`` / ``labels[:size]``.
    """
    for i, layer in enumerate(stage.layers):  # before reading a layer's weights below
        check_frozen_layer_type(layer, i)
    ops = lower_adaptive(adaptive)
    conv = first_conv(stage.layers[0]) if stage.layers else None
    channels = 3 if conv is None else int(conv.weight_s8.shape[0 if conv.kind == "dw" else 1])
    rows = None if replay_rows is None else np.ascontiguousarray(np.asarray(replay_rows))
    labels = None if replay_labels is None else np.asarray(replay_labels).astype(np.int64)
    dep = Deployment(stage, quantizer, ops, (channels, int(input_hw[0]), int(input_hw[1])), 0, rows, labels,
                     dict(meta or {}))
    dep.num_classes = int(num_classes) if num_classes is not None else int(dep.adaptive_shapes()[-1][0])
    return dep.validate()


# ---------------------------------------------------------------- the file


def op_state(op: AdaptiveOp) -> dict[str, Any]:
    state: dict[str, Any] = {"op": op.op}
    state.update({name: getattr(op, name) for name in op.__dataclass_fields__})
    return state


def op_from_state(state: dict[str, Any]) -> AdaptiveOp:
    kind = OP_TYPES.get(state.get("op"))
    if kind is None:
        raise TinyclError(f"unknown adaptive op {state.get('op')!r}")
    values = {name: state[name] for name in kind.__dataclass_fields__}
    for name, value in values.items():
        if name in ("weight", "scale", "shift") and not isinstance(value, torch.Tensor):
            raise TinyclError(f"adaptive op {kind.op}: {name} is not a tensor")
        if name == "bias" and value is not None and not isinstance(value, torch.Tensor):
            raise TinyclError(f"adaptive op {kind.op}: bias is not a tensor")
        if isinstance(value, torch.Tensor) and (value.dtype != torch.float32 or not torch.isfinite(value).all()):
            raise TinyclError(f"adaptive op {kind.op}: {name} must be finite float32")
    if kind is ConvOp and values["kind"] not in FROZEN_KINDS:
        raise TinyclError(f"adaptive conv kind {values['kind']!r} is unknown")
    if kind is ActivationOp and values["kind"] not in ("relu", "relu6"):
        raise TinyclError(f"adaptive activation {values['kind']!r} is unknown")
    return kind(**values)


def conv_state(layer: IntConvLayer) -> dict[str, Any]:
    return {"kind": layer.kind, "weight_s8": layer.weight_s8, "bias_s32": layer.bias_s32,
            "multiplier": layer.multiplier, "right_shift": layer.right_shift, "stride": layer.stride,
            "padding": layer.padding, "groups": layer.groups, "input_signed": layer.input_signed,
            "input_scale": layer.input_scale, "output_scale": layer.output_scale,
            "weight_scale": layer.weight_scale}


def layer_state(layer: IntConvLayer | IntBlock) -> dict[str, Any]:
    """A plain layer as before blocks existed (same bytes for MobileNetV1); a block as its units
    (each a conv state with its activation and clamp) and its add (scales, multipliers, shifts)."""
    if isinstance(layer, IntConvLayer):
        return conv_state(layer)
    add = None
    if layer.add is not None:
        a = layer.add
        add = {"input_scales": list(a.input_scales), "output_scale": a.output_scale,
               "multipliers": list(a.multipliers), "right_shifts": list(a.right_shifts),
               "output_multiplier": a.output_multiplier, "output_right_shift": a.output_right_shift}
    return {"block": [{"conv": conv_state(u.conv), "activation": u.activation, "lo": u.lo, "hi": u.hi}
                      for u in layer.units], "add": add}


def conv_from_state(state: dict[str, Any], where: str, index: int) -> IntConvLayer:
    tensors = {"weight_s8": torch.int8, "bias_s32": torch.int64, "multiplier": torch.int64,
               "right_shift": torch.int64, "weight_scale": torch.float64}
    for name, dtype in tensors.items():
        value = state[name]
        if not isinstance(value, torch.Tensor) or value.dtype != dtype:
            raise TinyclError(f"{where}: {name} must be a {dtype} tensor")
    channels = state["weight_s8"].shape[0]
    if any(state[name].shape != (channels,) for name in ("bias_s32", "multiplier", "right_shift", "weight_scale")):
        raise TinyclError(f"{where}: per-channel parameters do not have {channels} channels")
    if int(state["multiplier"].min()) < 0 or int(state["multiplier"].max()) >= 2**31 or \
            int(state["right_shift"].min()) < 1 or int(state["right_shift"].max()) > 62:
        raise TinyclError(f"{where}: multiplier or shift out of range")
    return make_int_conv_layer(state["kind"], state["weight_s8"], state["bias_s32"], state["multiplier"],
                               state["right_shift"], int(state["stride"]), int(state["padding"]),
                               int(state["groups"]), bool(state["input_signed"]), float(state["input_scale"]),
                               float(state["output_scale"]), state["weight_scale"], index)


def layer_from_state(state: dict[str, Any], index: int) -> IntConvLayer | IntBlock:
    where = f"frozen layer {index}"
    if "block" not in state:
        return conv_from_state(state, where, index)
    units_state = state["block"]
    if not isinstance(units_state, list) or not units_state:
        raise TinyclError(f"{where}: a block needs a list of convs")
    units = [IntConvUnit(conv_from_state(u["conv"], f"{where} conv {k}", index), str(u["activation"]), int(u["lo"]),
                         int(u["hi"])) for k, u in enumerate(units_state)]
    add = None
    if state["add"] is not None:
        a = state["add"]
        add = IntAdd((float(a["input_scales"][0]), float(a["input_scales"][1])), float(a["output_scale"]),
                     (int(a["multipliers"][0]), int(a["multipliers"][1])),
                     (int(a["right_shifts"][0]), int(a["right_shifts"][1])), int(a["output_multiplier"]),
                     int(a["output_right_shift"]))
    return IntBlock(units, add)


def deployment_state(dep: Deployment) -> dict[str, Any]:
    q = dep.quantizer
    replay = None
    if dep.replay_rows is not None:
        replay = {"rows": torch.from_numpy(np.ascontiguousarray(dep.replay_rows)),
                  "labels": torch.from_numpy(dep.replay_labels.astype(np.int64))}
    return {
        "kind": "tinycl-deployment",
        "input_shape": list(dep.input_shape),
        "num_classes": dep.num_classes,
        "frozen": {"input_scale": dep.stage.input_scale, "layers": [layer_state(la) for la in dep.stage.layers]},
        "latent": {"bits": q.bits, "mode": q.mode, "per_channel": q.per_channel, "latent_scale": q.latent_scale,
                   **({"signed": True} if q.signed else {}),  # absent for UINT8 latents: same bytes as before
                   "clip_u8": None if q.clip_u8 is None else torch.from_numpy(np.asarray(q.clip_u8, np.int64))},
        "adaptive": [op_state(op) for op in dep.adaptive],
        "replay": replay,
        "meta": dict(dep.meta),
    }


def quantizer_from_state(state: dict[str, Any]) -> LatentQuantizer:
    quantizer = LatentQuantizer(int(state["bits"]), str(state["mode"]), bool(state["per_channel"]),
                                float(state["latent_scale"]))
    if state.get("signed", False):
        quantizer.use_signed()
    clip = state["clip_u8"]
    if quantizer.needs_calibration:
        if not isinstance(clip, torch.Tensor) or clip.dim() != 1 or clip.numel() == 0 or \
                int(clip.min()) < 1 or int(clip.max()) > 255:
            raise TinyclError("latent quantizer: clip values must be 1..255")
        # what LatentQuantizer.calibrate would have stored for these clip values
        quantizer.clip_u8 = clip.numpy().astype(np.int64)
        quantizer.tables = np.stack([clip_encode_table(int(c), quantizer.bits) for c in quantizer.clip_u8])
    return quantizer


def deployment_from_state(state: dict[str, Any]) -> Deployment:
    if state.get("kind") != "tinycl-deployment":
        raise TinyclError("not a deployment payload")
    frozen = state["frozen"]
    layers = [layer_from_state(layer, i) for i, layer in enumerate(frozen["layers"])]
    stage = IntFrozenStage(input_scale=float(frozen["input_scale"]), layers=layers)
    replay = state["replay"]
    rows = labels = None
    if replay is not None:
        rows, labels = replay["rows"].numpy(), replay["labels"].numpy()
    shape = tuple(int(v) for v in state["input_shape"])
    if len(shape) != 3:
        raise TinyclError("input_shape must be (C, H, W)")
    meta = state["meta"]
    if not isinstance(meta, dict):
        raise TinyclError("meta must be a dictionary")
    return Deployment(stage, quantizer_from_state(state["latent"]),
                      [op_from_state(op) for op in state["adaptive"]], shape,  # type: ignore[arg-type]
                      int(state["num_classes"]), rows, labels, meta).validate()


def canonical(value: Any) -> Any:
    """``value`` with every string interned: pickle shares equal string objects by identity, so
    without this a config unpickled elsewhere (a grid worker) gives the same content in other
    bytes."""
    import sys

    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {canonical(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(canonical(v) for v in value)
    return value


def encode_deployment(dep: Deployment) -> bytes:
    """The file's bytes: a function of the deployment's content only."""
    buf = io.BytesIO()
    torch.save(canonical(deployment_state(dep)), buf)
    payload = buf.getvalue()
    return HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest()) + payload


def save_deployment(path: Path, dep: Deployment) -> None:
    """Write ``dep`` (validated first) atomically: the previous file stays until the new one is whole."""
    data = encode_deployment(dep.validate())
    try:
        with atomic_writer(Path(path)) as fh:
            fh.write(data)
    except OSError as exc:
        raise TinyclError(f"cannot write deployment {path}: {exc.strerror or exc}") from None


def load_deployment(path: Path) -> Deployment:
    """Read, verify and rebuild a deployment; any problem is one ``TinyclError`` naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TinyclError(f"deployment not found: {path}") from None
    except OSError as exc:
        raise TinyclError(f"cannot read deployment {path}: {exc.strerror or exc}") from None
    if len(data) < HEADER.size or not data.startswith(MAGIC):
        raise TinyclError(f"{path} is not a tinycl deployment (no {MAGIC.decode()} header)")
    _, version, length, digest = HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise TinyclError(f"deployment {path} has format version {version}; this tinycl reads version {FORMAT_VERSION}")
    payload = data[HEADER.size :]
    if len(payload) != length:
        raise TinyclError(f"deployment {path} is truncated: {len(payload)} of {length} payload bytes")
    if hashlib.sha256(payload).digest() != digest:
        raise TinyclError(f"deployment {path} is corrupted: its checksum does not match")
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - the unpickler refuses in many ways; one line for all
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TinyclError(f"deployment {path} refused: it holds more than tensors and plain data ({first})") from None
    try:
        if not isinstance(state, dict):
            raise TinyclError("not a dictionary")
        return deployment_from_state(state)
    except TinyclError as exc:
        raise TinyclError(f"deployment {path} is invalid: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        what = f"missing entry {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise TinyclError(f"deployment {path} is invalid: {what.splitlines()[0] if what else 'malformed'}") from None
