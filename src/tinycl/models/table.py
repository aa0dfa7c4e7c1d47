"""Per-layer table of a model: kind, output shape, parameters and forward MACs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tinycl.models.probe import inspecting
from tinycl.models.split import layer_sequence


@dataclass(frozen=True)
class LayerInfo:
    index: int
    name: str
    kind: str  # conv | dw | pw | pool | linear | other
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    macs: int

    @property
    def out_values(self) -> int:
        n = 1
        for d in self.out_shape:
            n *= d
        return n


def main_op(layer: nn.Module) -> nn.Module:
    """The conv / linear / pool module that defines a layer's arithmetic."""
    for m in layer.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
            return m
    return layer


def layer_kind(layer: nn.Module) -> str:
    convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) > 1:
        return "block"
    op = main_op(layer)
    if isinstance(op, nn.Conv2d):
        if op.groups > 1 and op.groups == op.in_channels:
            return "dw"
        if op.kernel_size == (1, 1):
            return "pw"
        return "conv"
    if isinstance(op, nn.Linear):
        return "linear"
    if isinstance(op, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
        return "pool"
    return "other"


def op_macs(op: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one sample: conv/linear by weights, pooling by its adds."""
    if isinstance(op, nn.Conv2d):
        c_out, h_out, w_out = out_shape
        kh, kw = op.kernel_size
        return c_out * h_out * w_out * (op.in_channels // op.groups) * kh * kw
    if isinstance(op, nn.Linear):
        return op.in_features * op.out_features
    if isinstance(op, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
        # One accumulate per input value (the division is a single scale per output).
        n = 1
        for d in in_shape:
            n *= d
        return n
    return 0


def forward_counting_macs(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Run one layer and add up the MACs of every conv / linear / pool inside it (a residual
    block holds several convs)."""
    total = [0]

    def hook(module, inputs, output):
        total[0] += op_macs(module, tuple(inputs[0].shape[1:]), tuple(output.shape[1:]))

    ops = [m for m in layer.modules()
           if isinstance(m, (nn.Conv2d, nn.Linear, nn.AdaptiveAvgPool2d, nn.AvgPool2d))]
    handles = [m.register_forward_hook(hook) for m in ops]
    try:
        out = layer(x)
    finally:
        for h in handles:
            h.remove()
    return out, total[0]


def layer_table(model: nn.Module, res: int, in_channels: int = 3) -> list[LayerInfo]:
    """Propagate one ``res x res`` image through the layers (in eval mode) and describe each;
    the model is left exactly as it was (``inspecting``)."""
    names = model.layer_names() if hasattr(model, "layer_names") else None
    rows: list[LayerInfo] = []
    x = torch.zeros(1, in_channels, res, res)
    with inspecting(model):
        for i, layer in enumerate(layer_sequence(model)):
            in_shape = tuple(x.shape[1:])
            x, macs = forward_counting_macs(layer, x)
            out_shape = tuple(x.shape[1:])
            rows.append(
                LayerInfo(
                    index=i,
                    name=names[i] if names else type(layer).__name__,
                    kind=layer_kind(layer),
                    in_shape=in_shape,
                    out_shape=out_shape,
                    params=sum(p.numel() for p in layer.parameters()),
                    macs=macs,
                )
            )
    return rows
