"""Per-layer analytic costs of a split model: MACs per pass and sizes per tensor.

The formulas are pure functions of the layer's shape. For a convolution with ``C_in`` input
and ``C_out`` output channels, ``g`` groups, a ``k_h x k_w`` kernel and an ``H_out x W_out``
output, the three passes of back-propagation cost the same number of multiply-accumulates:

- forward          y = W * x                   C_out H_out W_out (C_in/g) k_h k_w
- weight gradient  dW = dy * x (correlation)   one MAC per (weight, output position) pair
- input gradient   dx = W^T * dy (transposed)  one MAC per (weight, output position) pair

which is the triple of kernels PULP-TrainLib implements per layer (REFERENCES.md). A linear
layer is the 1x1 case. Average pooling costs one accumulate per input value forward and one
scaled copy per input value for the input gradient; it has no weights. BatchNorm and ReLU are
element-wise (no MACs): their memory is counted in ``memory.py``, their time is neglected here.

A layer made of several convs (a MobileNetV2 inverted-residual block, a PhiNet block or stem)
is priced conv by conv: one row per conv (``unit`` 0, 1, ...; the layer's index on each), with
its own shapes, BN and activation, so each conv gets its kind's rate on a target. A residual
add is element-wise (no MACs, time neglected like BN); its memory is the block input held while
the block runs (``held_values``, counted in the frozen stage's peak).

The input gradient of the first adaptive layer is never computed: nothing below it trains
(PULP-TrainLib also stops input gradients at the earliest trained layer, REFERENCES.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from tinycl.errors import TinyclError
from tinycl.models import check_lr_layer, layer_sequence, layer_table
from tinycl.models.table import main_op

FROZEN = "frozen"
ADAPTIVE = "adaptive"


def prod(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


# --- pure formulas, one per primitive and pass -------------------------------------------------


def conv_forward_macs(
    in_channels: int,
    out_channels: int,
    kernel_hw: tuple[int, int],
    out_hw: tuple[int, int],
    groups: int = 1,
) -> int:
    """Forward MACs of a (grouped) convolution; depthwise is ``groups == in_channels``."""
    return (
        out_channels * out_hw[0] * out_hw[1] * (in_channels // groups) * kernel_hw[0] * kernel_hw[1]
    )


def conv_weight_grad_macs(
    in_channels: int,
    out_channels: int,
    kernel_hw: tuple[int, int],
    out_hw: tuple[int, int],
    groups: int = 1,
) -> int:
    """dW[o, i, u, v] = sum over output positions of dy[o, p] * x[i, p + (u, v)]."""
    return conv_forward_macs(in_channels, out_channels, kernel_hw, out_hw, groups)


def conv_input_grad_macs(
    in_channels: int,
    out_channels: int,
    kernel_hw: tuple[int, int],
    out_hw: tuple[int, int],
    groups: int = 1,
) -> int:
    """dx = transposed convolution of dy with W: every (weight, output position) pair once."""
    return conv_forward_macs(in_channels, out_channels, kernel_hw, out_hw, groups)


def linear_forward_macs(in_features: int, out_features: int) -> int:
    return in_features * out_features


def linear_weight_grad_macs(in_features: int, out_features: int) -> int:
    return in_features * out_features  # dW = dy x^T, one sample


def linear_input_grad_macs(in_features: int, out_features: int) -> int:
    return in_features * out_features  # dx = W^T dy


def pool_forward_macs(in_values: int) -> int:
    return in_values  # one accumulate per input value; the 1/n scale is one multiply per output


def pool_input_grad_macs(in_values: int) -> int:
    return in_values  # each input receives dy / n


# --- per-layer table ------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCost:
    """Costs of one layer for one sample. MACs per pass; sizes in values (not bytes)."""

    index: int
    name: str
    kind: str  # conv | dw | pw | pool | linear | other
    stage: str  # frozen | adaptive
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight_values: int  # conv / linear weights only (BN folded away in the frozen stage)
    out_channels: int
    norm_values: int  # BatchNorm affine parameters (gamma, beta): trained in the adaptive stage
    norm_stat_values: int  # BatchNorm running mean and variance
    has_relu: bool
    forward_macs: int
    input_grad_macs: int  # 0 in the frozen stage and for the first adaptive layer
    weight_grad_macs: int  # 0 in the frozen stage and for weight-less layers
    im2col_values: int  # scratch of an im2col-based kernel (0 for pw, linear, pool)
    unit: int | None = None  # the conv's position inside a multi-conv layer (None: a plain layer)
    held_values: int = 0  # a residual block's input, held until its add (values)
    kept_input_fraction: float = 1.0  # of the FP32 input kept for the weight gradient (a sparse update)

    @property
    def in_values(self) -> int:
        return prod(self.in_shape)

    @property
    def out_values(self) -> int:
        return prod(self.out_shape)

    @property
    def trainable_values(self) -> int:
        return self.weight_values + self.norm_values if self.stage == ADAPTIVE else 0

    @property
    def backward_macs(self) -> int:
        return self.input_grad_macs + self.weight_grad_macs


def _describe(layer: nn.Module) -> tuple[int, int, bool, tuple[int, int], int]:
    """(out_channels, BN channels, has ReLU, kernel, groups) of a layer built from modules."""
    norm_channels = sum(m.num_features for m in layer.modules() if isinstance(m, nn.BatchNorm2d))
    has_relu = any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in layer.modules())
    op = main_op(layer)
    if isinstance(op, nn.Conv2d):
        return op.out_channels, norm_channels, has_relu, tuple(op.kernel_size), op.groups
    if isinstance(op, nn.Linear):
        return op.out_features, norm_channels, has_relu, (1, 1), 1
    return 0, norm_channels, has_relu, (1, 1), 1


def conv_units(layer: nn.Module, in_shape: tuple[int, ...]) -> list[tuple[nn.Conv2d, tuple, tuple, int, bool]]:
    """The convs of a multi-conv layer in forward order: (conv, in_shape, out_shape, BN channels
    after it, activation after it), traced by one forward of a zero input (modes restored)."""
    import torch

    from tinycl.models.probe import inspecting

    seen: list[tuple[nn.Module, tuple, tuple]] = []
    leaves = [m for m in layer.modules() if not list(m.children())]

    def hook(module, inputs, output):
        seen.append((module, tuple(inputs[0].shape[1:]), tuple(output.shape[1:])))

    with inspecting(layer):
        handles = [m.register_forward_hook(hook) for m in leaves]
        try:
            with torch.no_grad():
                layer.eval()
                layer(torch.zeros(1, *in_shape))
        finally:
            for h in handles:
                h.remove()
    units = []
    for i, (module, shape_in, shape_out) in enumerate(seen):
        if not isinstance(module, nn.Conv2d):
            continue
        norm, act = 0, False
        for follower, _, _ in seen[i + 1 :]:
            if isinstance(follower, nn.Conv2d):
                break
            if isinstance(follower, nn.BatchNorm2d):
                norm += follower.num_features
            elif isinstance(follower, (nn.ReLU, nn.ReLU6)):
                act = True
        units.append((module, shape_in, shape_out, norm, act))
    return units


def conv_row(index: int, name: str, stage: str, conv: nn.Conv2d, in_shape: tuple, out_shape: tuple,
             norm_channels: int, has_relu: bool, first_adaptive: bool, unit: int | None = None,
             held_values: int = 0) -> LayerCost:
    """One conv's costs (``layer_costs``' formulas)."""
    kernel, groups = tuple(conv.kernel_size), conv.groups
    c_in = in_shape[0]
    out_hw = (out_shape[1], out_shape[2])
    args = (c_in, conv.out_channels, kernel, out_hw, groups)
    if groups > 1 and groups == c_in:
        kind = "dw"
    elif kernel == (1, 1):
        kind = "pw"
    else:
        kind = "conv"
    weight_grad, input_grad = conv_weight_grad_macs(*args), conv_input_grad_macs(*args)
    if stage == FROZEN:
        weight_grad = input_grad = 0
    elif first_adaptive:
        input_grad = 0  # nothing below the first adaptive layer is trained
    # im2col buffer: (C_in/g) k_h k_w values per output pixel and channel group; a 1x1 stride-1
    # conv reads its input in place (PULP-TrainLib / CMSIS-NN pointwise).
    im2col = 0 if kind == "pw" else c_in * kernel[0] * kernel[1] * out_hw[0] * out_hw[1]
    return LayerCost(index=index, name=name, kind=kind, stage=stage, in_shape=in_shape, out_shape=out_shape,
                     weight_values=conv.weight.numel(), out_channels=conv.out_channels,
                     norm_values=2 * norm_channels, norm_stat_values=2 * norm_channels, has_relu=has_relu,
                     forward_macs=conv_forward_macs(*args), input_grad_macs=input_grad, weight_grad_macs=weight_grad,
                     im2col_values=im2col, unit=unit, held_values=held_values)


def layer_costs(model: nn.Module, res: int, lr_layer: int) -> list[LayerCost]:
    """Every layer of ``model`` at ``res x res`` with its stage and per-pass MACs; a multi-conv
    layer (``block``) as one row per conv (module doc)."""
    if res < 8:
        raise TinyclError(f"--res must be >= 8, got {res}")
    check_lr_layer(model, lr_layer)
    rows: list[LayerCost] = []
    for info, layer in zip(layer_table(model, res), layer_sequence(model), strict=True):
        stage = FROZEN if info.index <= lr_layer else ADAPTIVE
        first_adaptive = info.index == lr_layer + 1
        if info.kind == "block":
            units = conv_units(layer, info.in_shape)
            if not units:
                raise TinyclError(f"layer {info.index} ({info.name}) holds no conv the cost model can price")
            held = prod(info.in_shape) if getattr(layer, "use_residual", False) else 0
            for u, (conv, shape_in, shape_out, norm, act) in enumerate(units):
                rows.append(conv_row(info.index, f"{info.name}.{u}", stage, conv, shape_in, shape_out, norm, act,
                                     first_adaptive and u == 0, u, held))
            continue
        out_channels, norm_channels, has_relu, kernel, groups = _describe(layer)
        op = main_op(layer)
        if info.kind in ("conv", "dw", "pw"):
            rows.append(conv_row(info.index, info.name, stage, op, info.in_shape, info.out_shape, norm_channels,
                                 has_relu, first_adaptive))
            continue
        if info.kind == "linear":
            forward = linear_forward_macs(op.in_features, op.out_features)
            weight_grad = linear_weight_grad_macs(op.in_features, op.out_features)
            input_grad = linear_input_grad_macs(op.in_features, op.out_features)
            weights = op.weight.numel() + (op.bias.numel() if op.bias is not None else 0)
        elif info.kind == "pool":
            forward = pool_forward_macs(prod(info.in_shape))
            weight_grad = 0
            input_grad = pool_input_grad_macs(prod(info.in_shape))
            weights = 0
        else:
            raise TinyclError(
                f"layer {info.index} ({info.name}) is a {type(layer).__name__}: "
                "the cost model knows conv, depthwise, pointwise, linear, pooling and blocks of convs"
            )
        if stage == FROZEN:
            weight_grad = input_grad = 0
        elif first_adaptive:
            input_grad = 0  # nothing below the first adaptive layer is trained
        rows.append(
            LayerCost(
                index=info.index,
                name=info.name,
                kind=info.kind,
                stage=stage,
                in_shape=info.in_shape,
                out_shape=info.out_shape,
                weight_values=weights,
                out_channels=out_channels,
                norm_values=2 * norm_channels,
                norm_stat_values=2 * norm_channels,
                has_relu=has_relu,
                forward_macs=forward,
                input_grad_macs=input_grad,
                weight_grad_macs=weight_grad,
                im2col_values=0,
            )
        )
    return rows


def with_sparse_update(rows: list[LayerCost], ratio: float) -> list[LayerCost]:
    """The rows under a structured sparse update of input-channel ratio ``ratio`` on every
    adaptive conv (``tinycl run --sparse LAYER=RATIO`` on every conv layer above the LR layer, as
    ``tinycl sparse-sweep`` sets it; the classifier stays dense): weight-gradient MACs and the
    FP32 input kept for them scale with the chosen channels, ``ceil(ratio * C)`` of ``C``
    (``tinycl.train.sparse``); input gradients stay whole (every channel's is needed below)."""
    import dataclasses

    if not 0 < ratio <= 1:
        raise TinyclError(f"--sparse must be a channel ratio in (0, 1], got {ratio}")
    if ratio == 1:
        return rows
    out = []
    for r in rows:
        if r.stage == ADAPTIVE and r.kind in ("conv", "dw", "pw") and r.weight_grad_macs:
            channels = r.in_shape[0]
            fraction = math.ceil(ratio * channels) / channels
            r = dataclasses.replace(r, weight_grad_macs=round(r.weight_grad_macs * fraction),
                                    kept_input_fraction=fraction)
        out.append(r)
    return out


@dataclass(frozen=True)
class StageCost:
    """Sums over the layers of one stage, per sample."""

    stage: str
    layers: int
    forward_macs: int
    input_grad_macs: int
    weight_grad_macs: int
    weight_values: int
    trainable_values: int
    activation_values: int  # sum of the layers' outputs

    @property
    def backward_macs(self) -> int:
        return self.input_grad_macs + self.weight_grad_macs


def stage_cost(rows: list[LayerCost], stage: str) -> StageCost:
    mine = [r for r in rows if r.stage == stage]
    return StageCost(
        stage=stage,
        layers=len(mine),
        forward_macs=sum(r.forward_macs for r in mine),
        input_grad_macs=sum(r.input_grad_macs for r in mine),
        weight_grad_macs=sum(r.weight_grad_macs for r in mine),
        weight_values=sum(r.weight_values for r in mine),
        trainable_values=sum(r.trainable_values for r in mine),
        activation_values=sum(r.out_values for r in mine),
    )


def lr_values(rows: list[LayerCost], lr_layer: int) -> int:
    """Values of one latent replay: the output of the LR layer (its last row)."""
    return [r for r in rows if r.index == lr_layer][-1].out_values
