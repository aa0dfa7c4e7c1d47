"""The adaptive stage as the C training loop runs it: a flat list of trainable ops.

``lower_trainable`` walks the learner's adaptive ``nn.Module`` (after ``prepare_stages`` and
``sparsify``) the way ``tinycl.export.deployment.lower_module`` walks it for inference, but keeps
what training needs: the initial parameters (copies), each ``BatchRenorm2d``'s statistics,
hyper-parameters and ramp state, and each conv / linear layer's channel selection
(``tinycl.train.sparse.ChannelSelector``: dense, random per step from the sparse PCG32 stream,
a fixed list (also top-k, chosen once from the initial weights) or bias-only). Anything the C
side cannot train is refused in one line naming the module: other containers (residual blocks),
BatchNorm2d in train mode (``--norm bn`` / ``frozen``), dropout, output-channel selection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tinycl.errors import TinyclError
from tinycl.export.deployment import conv_output_size, residual_block_chain, square

MAX_CLASSES = 256  # the C memory stores a label in one byte, as LatentReplayMemory does up to 256 classes


@dataclass(frozen=True)
class Selection:
    """Which channels of a conv / linear get a weight gradient: ``policy`` dense | random |
    fixed | bias; ``count`` per step (all when dense, 0 for bias-only); ``channels`` the fixed
    list (top-k and fixed policies), ascending."""

    policy: str
    num_channels: int
    count: int
    channels: tuple[int, ...] = ()

    @property
    def weight_grad(self) -> bool:
        return self.count > 0


@dataclass
class TrainConv:
    kind: str  # conv | dw | pw
    layer: int
    key: str  # state-dict prefix ("0.0")
    weight: np.ndarray  # float32 [C_out, C_in / groups, kh, kw]
    bias: np.ndarray | None
    stride: int
    padding: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    selection: Selection
    op = "conv"

    @property
    def macs(self) -> int:
        """Forward MACs of one sample (padded taps counted, as the cost model counts them)."""
        groups = self.in_shape[0] if self.kind == "dw" else 1
        return int(np.prod(self.out_shape)) * (self.in_shape[0] // groups) * self.weight.shape[2] * self.weight.shape[3]

    @property
    def axis(self) -> int:
        """Axis of the weight the selection picks: depthwise rows (0), input-channel columns (1)."""
        return 0 if self.kind == "dw" else 1


@dataclass
class TrainNorm:
    layer: int
    key: str
    gamma: np.ndarray
    beta: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray  # the running std when stats == "std"
    stats: str
    eps: float
    momentum: float
    r_max: float
    d_max: float
    max_r_max: float
    max_d_max: float
    ramp_per_sample: float
    shape: tuple[int, int, int]
    op = "norm"


@dataclass
class TrainAct:
    layer: int
    kind: str  # relu | relu6
    shape: tuple[int, ...]
    op = "act"


@dataclass
class TrainPool:
    layer: int
    kernel_h: int  # 0: global
    kernel_w: int
    stride: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    op = "pool"

    @property
    def window(self) -> tuple[int, int, int]:
        """(kernel_h, kernel_w, stride) as the kernels take them (global: the whole input)."""
        if self.kernel_h == 0:
            return self.in_shape[1], self.in_shape[2], 1
        return self.kernel_h, self.kernel_w, self.stride


@dataclass
class TrainFlatten:
    shape: tuple[int, ...]
    op = "flatten"


@dataclass
class TrainLinear:
    layer: int
    key: str
    weight: np.ndarray  # float32 [out, in]
    bias: np.ndarray | None
    selection: Selection
    op = "linear"

    @property
    def macs(self) -> int:
        return int(self.weight.size)


TrainOp = TrainConv | TrainNorm | TrainAct | TrainPool | TrainFlatten | TrainLinear


@dataclass
class TrainableStage:
    ops: list[TrainOp]
    latent_shape: tuple[int, int, int]
    num_classes: int
    head_index: int  # the last linear op (CWR*'s head)
    random_layers: list[int] = field(default_factory=list)  # op indices drawing channels per step

    def trainable(self, op: TrainOp) -> bool:
        """Whether ``op`` has a parameter with a gradient (a weight with chosen channels, a bias,
        BN's gamma and beta)."""
        if isinstance(op, (TrainConv, TrainLinear)):
            return op.selection.weight_grad or op.bias is not None
        return isinstance(op, TrainNorm)

    def needs_input_grad(self, index: int) -> bool:
        """An op's input gradient is computed only when an earlier op trains (PULP-TrainLib's
        deployer: input gradients down to the earliest trained layer)."""
        return any(self.trainable(op) for op in self.ops[:index])


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy().copy()


def selection_of(module: nn.Module, channels_total: int, where: str) -> Selection:
    """The module's ``ChannelSelector`` as a ``Selection`` (a plain module: dense)."""
    selector = getattr(module, "selector", None)
    if selector is None:
        return Selection("dense", channels_total, channels_total)
    if getattr(module, "dim", "in") != "in":
        raise TinyclError(f"{where}: the sparse update selects output channels (dim 'out'); the C training loop "
                          "expresses input-channel (and depthwise) selection only")
    if selector.policy == "none":
        return Selection("bias", channels_total, 0)
    if selector.channels is None:
        if selector.policy == "random" and selector.count < selector.num_channels:
            if selector.generator is None:
                raise TinyclError(f"{where}: a random channel selection without its generator")
            return Selection("random", channels_total, int(selector.count))
        return Selection("dense", channels_total, channels_total)
    chosen = tuple(int(c) for c in selector.channels.tolist())
    if not chosen:
        return Selection("bias", channels_total, 0)
    if list(chosen) != sorted(set(chosen)) or chosen[-1] >= channels_total:
        raise TinyclError(f"{where}: fixed channels must be distinct and below {channels_total}")
    return Selection("fixed", channels_total, len(chosen), chosen)


def lower_trainable(adaptive: nn.Module, latent_shape: tuple[int, int, int], first_layer: int,
                    num_classes: int) -> TrainableStage:
    """The adaptive stage as trainable ops; ``first_layer`` is the LR layer + 1 (each conv, pool
    or linear starts the next layer, as ``tinycl layers`` numbers them)."""
    if num_classes > MAX_CLASSES:
        raise TinyclError(f"the C training loop stores labels in one byte: at most {MAX_CLASSES} classes, "
                          f"this run has {num_classes}")
    ops: list[TrainOp] = []
    state = {"shape": tuple(latent_shape), "layer": first_layer - 1}
    _lower(adaptive, "", ops, state)
    linears = [i for i, op in enumerate(ops) if isinstance(op, TrainLinear)]
    if not linears or state["shape"] != (num_classes,) or linears[-1] != len(ops) - 1:
        raise TinyclError(f"the adaptive stage must end with a linear layer giving {num_classes} logits, "
                          f"it ends with shape {list(state['shape'])}")
    random_layers = [i for i, op in enumerate(ops) if isinstance(op, (TrainConv, TrainLinear))
                     and op.selection.policy == "random"]
    return TrainableStage(ops, tuple(latent_shape), num_classes, linears[-1], random_layers)


def _lower(module: nn.Module, key: str, ops: list[TrainOp], state: dict) -> None:
    from tinycl.models.heads import Classifier
    from tinycl.train.batch_renorm import BatchRenorm2d
    from tinycl.train.sparse import MaskedReLU

    where = f"adaptive.{key}" if key else "adaptive"
    shape = state["shape"]
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            _lower(child, f"{key}.{name}" if key else name, ops, state)
        return
    chain = residual_block_chain(module, where)
    if chain is not None:
        _lower(chain, f"{key}.conv", ops, state)
        return
    if isinstance(module, Classifier):
        _flatten(ops, state)
        _lower(module.linear, f"{key}.linear", ops, state)
        return
    if isinstance(module, nn.Conv2d):
        ops.append(_conv(module, key, where, shape, state))
        return
    if isinstance(module, BatchRenorm2d):
        if len(shape) != 3 or shape[0] != module.weight.numel():
            raise TinyclError(f"{where}: batch renorm over {module.weight.numel()} channels cannot take {list(shape)}")
        running = module.running_std if module.stats == "std" else module.running_var
        ops.append(TrainNorm(state["layer"], key, _array(module.weight), _array(module.bias),
                             _array(module.running_mean), _array(running), module.stats, float(module.eps),
                             float(module.momentum), float(module.r_max), float(module.d_max),
                             float(module.max_r_max), float(module.max_d_max), float(module.ramp_per_sample), shape))
        return
    if isinstance(module, nn.BatchNorm2d):
        raise TinyclError(f"{where}: BatchNorm2d trains with its own batch statistics and momentum; the C training "
                          "loop runs batch renormalization (--norm brn) only")
    if isinstance(module, MaskedReLU) and module.upper in (None, 6.0):
        ops.append(TrainAct(state["layer"], "relu6" if module.upper == 6.0 else "relu", shape))
        return
    if isinstance(module, nn.ReLU6):
        ops.append(TrainAct(state["layer"], "relu6", shape))
        return
    if isinstance(module, nn.ReLU):
        ops.append(TrainAct(state["layer"], "relu", shape))
        return
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
        ops.append(_pool(module, where, shape, state))
        return
    if isinstance(module, nn.Flatten):
        _flatten(ops, state)
        return
    if isinstance(module, nn.Linear):
        if len(shape) != 1 or shape[0] != module.in_features:
            raise TinyclError(f"{where}: linear with {module.in_features} inputs cannot take {list(shape)}")
        state["layer"] += 1
        bias = _array(module.bias) if module.bias is not None else None
        ops.append(TrainLinear(state["layer"], key, _array(module.weight), bias,
                               selection_of(module, module.in_features, where)))
        state["shape"] = (module.out_features,)
        return
    if isinstance(module, nn.Identity) or (isinstance(module, nn.Dropout) and module.p == 0):
        return
    raise TinyclError(f"{where}: {type(module).__name__} has no training kernel in the C runtime; it trains "
                      "Conv2d (dense, depthwise, pointwise), BatchRenorm2d, ReLU, ReLU6, average pooling, Flatten "
                      "and Linear in a plain sequence")


def _flatten(ops: list[TrainOp], state: dict) -> None:
    state["shape"] = (int(np.prod(state["shape"])),)
    ops.append(TrainFlatten(state["shape"]))


def _conv(conv: nn.Conv2d, key: str, where: str, shape: tuple[int, ...], state: dict) -> TrainConv:
    if len(shape) != 3:
        raise TinyclError(f"{where}: a convolution needs a [C, H, W] input, got {list(shape)}")
    if conv.dilation != (1, 1) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise TinyclError(f"{where}: dilated or non-zero-padded convolutions have no training kernel")
    stride, padding = square(conv.stride, "stride", where), square(conv.padding, "padding", where)
    if conv.groups == 1:
        kind = "pw" if conv.kernel_size == (1, 1) and padding == 0 else "conv"
    elif conv.groups == conv.in_channels == conv.out_channels:
        kind = "dw"
    else:
        raise TinyclError(f"{where}: grouped convolution (groups={conv.groups}) has no training kernel")
    if shape[0] != conv.in_channels:
        raise TinyclError(f"{where}: conv over {conv.in_channels} channels cannot take {list(shape)}")
    kh, kw = conv.kernel_size
    out = (conv.out_channels, conv_output_size(shape[1], kh, stride, padding),
           conv_output_size(shape[2], kw, stride, padding))
    if min(out) < 1:
        raise TinyclError(f"{where}: empty output {list(out)} from {list(shape)}")
    state["layer"] += 1
    state["shape"] = out
    bias = _array(conv.bias) if conv.bias is not None else None
    selection = selection_of(conv, conv.in_channels, where)
    return TrainConv(kind, state["layer"], key, _array(conv.weight), bias, stride, padding, tuple(shape), out,
                     selection)


def _pool(module: nn.Module, where: str, shape: tuple[int, ...], state: dict) -> TrainPool:
    if len(shape) != 3:
        raise TinyclError(f"{where}: pooling needs a [C, H, W] input, got {list(shape)}")
    state["layer"] += 1
    if isinstance(module, nn.AdaptiveAvgPool2d):
        if module.output_size not in (1, (1, 1)):
            raise TinyclError(f"{where}: AdaptiveAvgPool2d({module.output_size}) has no training kernel (only 1)")
        state["shape"] = (shape[0], 1, 1)
        return TrainPool(state["layer"], 0, 0, 1, tuple(shape), state["shape"])
    kernel = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
    if square(module.padding, "padding", where) != 0 or module.ceil_mode or module.divisor_override:
        raise TinyclError(f"{where}: AvgPool2d with padding, ceil_mode or divisor_override has no training kernel")
    stride = square(module.stride, "stride", where)
    out = (shape[0], conv_output_size(shape[1], kernel[0], stride, 0), conv_output_size(shape[2], kernel[1], stride, 0))
    if min(out) < 1:
        raise TinyclError(f"{where}: empty pooling output from {list(shape)}")
    state["shape"] = out
    return TrainPool(state["layer"], int(kernel[0]), int(kernel[1]), stride, tuple(shape), out)
