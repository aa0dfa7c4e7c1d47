"""Post-training quantization of a float frozen stage into an ``IntFrozenStage``.

Three separate steps, as ``torch.ao.quantization`` keeps them apart:

- **parse** each numbered frozen layer into conv units ``Conv2d [-> BatchNorm2d] [-> ReLU |
  ReLU6]`` and, for a MobileNetV2 ``InvertedResidual`` or a PhiNet ``PhiNetBlock``, whether it
  adds the identity shortcut (their ``forward`` is ``x + conv(x)`` exactly then);
- **observe** the float stage under ``inspecting`` on the calibration images: one observer for
  the input image, one per unit output (a forward hook on the unit's last module, so the
  observed tensors are those of the layer's own ``forward``) and one per residual block output;
- **build** the integer layers: a layer that is one ``conv [-> BN] -> ReLU`` becomes an
  ``IntConvLayer`` exactly as before residual networks were supported (MobileNetV1 gives the
  same bytes), anything else an ``IntBlock`` (``tinycl.quant.int_blocks``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tinycl.errors import TinyclError
from tinycl.models.mobilenet_v2 import InvertedResidual
from tinycl.models.phinet import PhiNetBlock, SqueezeExcite
from tinycl.models.probe import inspecting
from tinycl.quant.int_blocks import IntBlock, make_int_add, make_int_conv_unit
from tinycl.quant.int_frozen import (
    DEFAULT_CHUNK,
    IntConvLayer,
    IntFrozenStage,
    build_int_layer,
    layer_kind_of,
)
from tinycl.quant.observers import Observer, check_finite, make_observer

ACTIVATION_NAMES = {nn.ReLU: "relu", nn.ReLU6: "relu6"}
# Blocks whose forward is ``x + self.conv(x)`` when ``use_residual`` else ``self.conv(x)``.
RESIDUAL_BLOCKS = (InvertedResidual, PhiNetBlock)
SUPPORTED = ("only Conv2d [-> BatchNorm2d] [-> ReLU | ReLU6] chains and MobileNetV2 / PhiNet (MCU mode) "
             "blocks are supported; choose an earlier LR layer")


@dataclass(frozen=True)
class FloatUnit:
    """One conv of a float layer, its optional BN and activation (``none``: linear)."""

    conv: nn.Conv2d
    bn: nn.BatchNorm2d | None
    activation: str  # relu | relu6 | none
    output_module: nn.Module  # the unit's last module: its output is the unit's output


@dataclass(frozen=True)
class FloatLayer:
    units: tuple[FloatUnit, ...]
    residual: bool

    @property
    def is_conv_relu(self) -> bool:
        """One ``conv [-> BN] -> ReLU``: MobileNetV1's layer, an ``IntConvLayer``."""
        return len(self.units) == 1 and self.units[0].activation == "relu" and not self.residual


def check_conv(conv: nn.Conv2d, index: int) -> None:
    if conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        raise TinyclError(f"frozen layer {index}: dilated or non-zero-padded conv not supported")
    if conv.stride[0] != conv.stride[1] or conv.padding[0] != conv.padding[1]:
        raise TinyclError(f"frozen layer {index}: non-square stride/padding not supported")
    layer_kind_of(conv)  # refuses grouped convs other than depthwise


def parse_layer(layer: nn.Module, index: int) -> FloatLayer:
    """Conv units of frozen layer ``index``; one ``TinyclError`` line for anything else."""
    if any(isinstance(m, (nn.Hardswish, SqueezeExcite)) for m in layer.modules()):
        raise TinyclError(f"frozen layer {index} ({type(layer).__name__}) uses h-swish / squeeze-excite and "
                          "cannot run in INT8: build PhiNet in its MCU mode (mcu=True: ReLU6, no squeeze-excite)")
    if isinstance(layer, RESIDUAL_BLOCKS):
        modules, residual = list(layer.conv.children()), bool(layer.use_residual)
    elif isinstance(layer, nn.Sequential):
        modules, residual = list(layer.children()), False
    else:
        modules, residual = [layer], False
    units, i = [], 0
    while i < len(modules) and type(modules[i]) is nn.Conv2d:
        conv, bn, activation = modules[i], None, "none"
        i += 1
        if i < len(modules) and isinstance(modules[i], nn.BatchNorm2d):  # FrozenBatchNorm2d too
            bn = modules[i]
            i += 1
        if i < len(modules) and type(modules[i]) in ACTIVATION_NAMES:
            activation = ACTIVATION_NAMES[type(modules[i])]
            i += 1
        units.append(FloatUnit(conv, bn, activation, modules[i - 1]))
    if not units or i != len(modules) or (residual and units[-1].activation != "none"):
        names = " -> ".join(type(m).__name__ for m in modules)
        raise TinyclError(f"frozen layer {index} ({names}) cannot run in INT8: {SUPPORTED}")
    for unit in units:
        check_conv(unit.conv, index)
    return FloatLayer(tuple(units), residual)


@dataclass
class StageObservers:
    image: Observer
    units: list[list[Observer]]  # per layer, per unit
    outputs: list[Observer | None]  # per layer: the residual block's output (after the add)


def observe_frozen_stage(frozen: nn.Sequential, plans: list[FloatLayer], calib: torch.Tensor, observer: str,
                         chunk: int = DEFAULT_CHUNK) -> StageObservers:
    """Run the float frozen stage (eval mode) on the calibration set; one observer per tensor.

    Scales come from the float model's activations (post-training quantization), not from the
    quantized path. Linear outputs and residual sums are observed signed (INT8), the rest UINT8.
    """
    observers = StageObservers(
        image=make_observer(observer, signed=True),
        units=[[make_observer(observer, signed=u.activation == "none") for u in plan.units] for plan in plans],
        outputs=[make_observer(observer, signed=True) if plan.residual else None for plan in plans],
    )

    def observe_into(obs: Observer):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            obs.observe(output)
        return hook

    handles = [unit.output_module.register_forward_hook(observe_into(obs))
               for plan, unit_observers in zip(plans, observers.units, strict=True)
               for unit, obs in zip(plan.units, unit_observers, strict=True)]
    device = next(frozen.parameters()).device
    try:
        # ``inspecting`` restores every module's own flag, buffer and the RNG afterwards.
        with inspecting(frozen):
            for start in range(0, calib.shape[0], chunk):
                x = calib[start : start + chunk].to(device)
                observers.image.observe(x)
                for layer, out_observer in zip(frozen, observers.outputs, strict=True):
                    x = layer(x)
                    if out_observer is not None:
                        out_observer.observe(x)
    finally:
        for handle in handles:
            handle.remove()
    return observers


def build_block(plan: FloatLayer, unit_observers: list[Observer], output_observer: Observer | None,
                input_scale: float, input_signed: bool, per_channel: bool, index: int) -> IntBlock:
    """Units with the scales observed at their outputs, then the add of the block input and the
    linear bottleneck's output."""
    units = []
    scale, signed = input_scale, input_signed
    for unit, obs in zip(plan.units, unit_observers, strict=True):
        conv = build_int_layer(unit.conv, unit.bn, scale, obs.scale(), signed, per_channel, index)
        units.append(make_int_conv_unit(conv, unit.activation))
        scale, signed = units[-1].output_scale, units[-1].output_signed
    add = make_int_add(input_scale, scale, output_observer.scale()) if plan.residual else None
    return IntBlock(units, add)


def quantize_frozen_stage(frozen: nn.Sequential, calib: torch.Tensor,
                          weight_quant: str = "per-channel", observer: str = "minmax",
                          chunk: int = DEFAULT_CHUNK) -> IntFrozenStage:
    """Post-training quantization of a frozen stage (``parse_layer`` says which layers).

    ``calib``: float normalized images ``[N, C, H, W]`` (the first CL batch by default), never
    empty nor NaN/Inf. ``weight_quant``: "per-channel" or "per-tensor". ``observer``: "minmax",
    "percentile" (99.99th) or "mse".
    """
    if weight_quant not in ("per-channel", "per-tensor"):
        raise TinyclError(
            f"unknown weight quantization {weight_quant!r}; choose per-channel or per-tensor"
        )
    if not isinstance(calib, torch.Tensor) or calib.dim() != 4:
        shape = tuple(calib.shape) if hasattr(calib, "shape") else type(calib).__name__
        raise TinyclError(f"calibration images must be a float tensor [N, C, H, W], got {shape}")
    if calib.shape[0] == 0:
        raise TinyclError("calibration set is empty: at least one image is needed")
    check_finite(calib, "calibration data")
    if len(frozen) == 0:
        raise TinyclError("the frozen stage has no layers to quantize")
    plans = [parse_layer(layer, i) for i, layer in enumerate(frozen)]
    hooked = [id(unit.output_module) for plan in plans for unit in plan.units]
    if len(set(hooked)) != len(hooked):  # a shared activation module would mix two tensors' statistics
        raise TinyclError("the frozen stage reuses one module in two places; INT8 calibration needs one per use")
    observers = observe_frozen_stage(frozen, plans, calib, observer, chunk)
    per_channel = weight_quant == "per-channel"
    input_scale = observers.image.scale()
    layers: list[IntConvLayer | IntBlock] = []
    scale, signed = input_scale, True  # the image: INT8 symmetric
    for i, plan in enumerate(plans):
        if plan.is_conv_relu:
            unit = plan.units[0]
            layers.append(build_int_layer(unit.conv, unit.bn, scale, observers.units[i][0].scale(), signed,
                                          per_channel, i))
        else:
            layers.append(build_block(plan, observers.units[i], observers.outputs[i], scale, signed, per_channel, i))
        scale, signed = layers[-1].output_scale, layers[-1].output_signed
    return IntFrozenStage(input_scale=input_scale, layers=layers)
