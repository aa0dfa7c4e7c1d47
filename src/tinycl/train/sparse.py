"""Structured sparse backprop: weight gradients for a subset of channels, activations kept only
for those channels (Paissan et al., CVPRW 2024; MIT tiny-training, NeurIPS 2022).

Which dimension is sparsified. For a conv or linear layer y = W * x the weight gradient is
G_W[o, i] = sum over positions of G_y[o] * x[i]. Choosing *input* channels S, G_W[:, S] needs
only x[:, S]: the activation saved for backward shrinks by |S| / C_in -- the real memory
saving tiny-training counts ("kept input channels"). Choosing *output* channels S, G_W[S] needs
G_y[:, S] but all of x: it saves weight-gradient compute only. So ``dim="in"`` (default) slices
the input channels; ``dim="out"`` is kept for comparison. A depthwise conv maps channel c to
channel c, so both choices coincide: G_W[S] needs x[:, S] only.

Every kernel computes the weight gradient of the chosen channels only (the others are exactly
zero, never computed), the bias gradient in full, and the full input gradient when an earlier
layer needs it (``ctx.needs_input_grad``). Bias-only (ratio 0 through ``bias_only``) keeps no
activation and returns no weight gradient (``weight.grad`` stays None, so SGD leaves the
weight alone, weight decay included).

Reference kernels: ``F.conv2d`` / ``F.linear`` with a dense backward; the tests check the
sparse kernels against them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight

from tinycl.device.backward import BackwardOp
from tinycl.errors import TinyclError
from tinycl.prng import SPARSE_STREAM, Pcg32

POLICIES = ("random", "topk", "fixed")
DIMS = ("in", "out")


# ---------------------------------------------------------------------------------------------
# Kernels: forward saves only the sliced activation; backward computes G_W for the slice.
# ---------------------------------------------------------------------------------------------


class SparseConv2dFn(torch.autograd.Function):
    """conv2d whose weight gradient covers only ``channels`` (of dim ``dim``; see module doc).

    ``channels`` None = all channels (dense weight gradient through the same code path); an
    empty tensor = bias-only (no activation saved, no weight gradient).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, channels, dim, stride, padding, dilation, groups):
        out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        depthwise = groups > 1
        ctx.conf = (x.shape, tuple(weight.shape), dim, stride, padding, dilation, groups, bias is not None)
        if channels is None:
            kept = x
        elif channels.numel() == 0:
            kept = None
        elif depthwise or dim == "in":
            kept = x.index_select(1, channels)
        else:
            kept = x  # output-channel selection: G_W[S] needs every input channel
        need_weight = ctx.needs_input_grad[0]
        ctx.save_for_backward(kept, channels, weight if need_weight else None)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        kept, channels, weight = ctx.saved_tensors
        x_shape, w_shape, dim, stride, padding, dilation, groups, has_bias = ctx.conf
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = conv2d_input(x_shape, weight, grad_out, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1] and kept is not None:
            grad_w = _conv_weight_grad(kept, grad_out, channels, dim, stride, padding, dilation,
                                       groups, w_shape)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


def _conv_weight_grad(kept, grad_out, channels, dim, stride, padding, dilation, groups, w_shape):
    out_ch, in_per_group, kh, kw = w_shape
    if channels is None:
        return conv2d_weight(kept, w_shape, grad_out, stride, padding, dilation, groups)
    k = channels.numel()
    grad_w = grad_out.new_zeros(w_shape)
    if groups > 1:  # depthwise: channel c in -> channel c out
        part = conv2d_weight(kept, (k, 1, kh, kw), grad_out.index_select(1, channels), stride,
                             padding, dilation, k)
        grad_w.index_copy_(0, channels, part)
    elif dim == "in":
        part = conv2d_weight(kept, (out_ch, k, kh, kw), grad_out, stride, padding, dilation, 1)
        grad_w.index_copy_(1, channels, part)
    else:
        part = conv2d_weight(kept, (k, in_per_group, kh, kw), grad_out.index_select(1, channels),
                             stride, padding, dilation, 1)
        grad_w.index_copy_(0, channels, part)
    return grad_w


class SparseLinearFn(torch.autograd.Function):
    """linear whose weight gradient covers only ``channels`` (input features for ``dim="in"``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, channels, dim):
        out = F.linear(x, weight, bias)
        if channels is not None and channels.numel() == 0:
            kept = None
        elif channels is None or dim == "out":
            kept = x
        else:
            kept = x.index_select(-1, channels)
        ctx.conf = (dim, bias is not None, weight.shape)
        ctx.save_for_backward(kept, channels, weight if ctx.needs_input_grad[0] else None)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        kept, channels, weight = ctx.saved_tensors
        dim, has_bias, w_shape = ctx.conf
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ weight
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[1] and kept is not None:
            x2 = kept.reshape(-1, kept.shape[-1])
            if channels is None:
                grad_w = g2.t() @ x2
            elif dim == "in":
                grad_w = g2.new_zeros(w_shape)
                grad_w.index_copy_(1, channels, g2.t() @ x2)
            else:
                grad_w = g2.new_zeros(w_shape)
                grad_w.index_copy_(0, channels, g2.index_select(1, channels).t() @ x2)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b, None, None


class MaskedReLUFn(torch.autograd.Function):
    """ReLU / ReLU6 that keeps a boolean mask for backward instead of its float output.

    Without it a ReLU keeps its whole output, which is the next conv's input, so slicing that
    conv's saved input saves nothing (tiny-training and TinyTL count ReLU masks at 1 bit; torch
    has no bit tensor, so here a mask takes 1 byte per value, a quarter of FP32).
    """

    @staticmethod
    def forward(ctx, x, upper):
        mask = (x > 0) if upper is None else (x > 0) & (x < upper)
        ctx.save_for_backward(mask)
        return x.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad_out):
        (mask,) = ctx.saved_tensors
        return grad_out * mask, None


class MaskedReLU(nn.Module):
    """Drop-in for ``nn.ReLU`` (``upper=None``) or ``nn.ReLU6`` (``upper=6``), same gradients."""

    def __init__(self, upper: float | None = None):
        super().__init__()
        self.upper = upper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return MaskedReLUFn.apply(x, self.upper)
        return x.clamp(0, self.upper)

    def extra_repr(self) -> str:
        return f"upper={self.upper}"


def sparse_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  channels: torch.Tensor | None, dim: str = "in", stride=1, padding=0, dilation=1,
                  groups: int = 1) -> torch.Tensor:
    """``F.conv2d`` with a structured sparse weight gradient (see ``SparseConv2dFn``)."""
    pair = torch.nn.modules.utils._pair
    if groups not in (1, weight.shape[0]) or (groups > 1 and weight.shape[1] != 1):
        raise TinyclError(f"sparse update supports dense and depthwise convs, not groups={groups}")
    return SparseConv2dFn.apply(x, weight, bias, channels, dim, pair(stride), pair(padding),
                                pair(dilation), groups)


def sparse_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  channels: torch.Tensor | None, dim: str = "in") -> torch.Tensor:
    """``F.linear`` with a structured sparse weight gradient (see ``SparseLinearFn``)."""
    return SparseLinearFn.apply(x, weight, bias, channels, dim)


# ---------------------------------------------------------------------------------------------
# Channel selection and the modules that swap in for nn.Conv2d / nn.Linear.
# ---------------------------------------------------------------------------------------------


def channel_count(ratio: float, channels: int) -> int:
    """Channels updated at ``ratio``: round(ratio * C), at least 1 (0 only for bias-only)."""
    return max(1, min(channels, round(ratio * channels)))


def weight_norms(weight: torch.Tensor, dim: str, depthwise: bool) -> torch.Tensor:
    """L2 norm of each selectable channel's weight slice (rows for "out", columns for "in")."""
    w = weight.detach()
    axis = 0 if depthwise or dim == "out" else 1
    return w.transpose(0, axis).reshape(w.shape[axis], -1).norm(dim=1)


class ChannelSelector:
    """Which channels get a weight gradient this step: random (per step), topk, fixed, none."""

    def __init__(self, num_channels: int, ratio: float, policy: str, *,
                 norms: torch.Tensor | None = None, fixed: Sequence[int] | None = None,
                 generator: Pcg32 | None = None, bias_only: bool = False):
        self.num_channels = num_channels
        self.policy = "none" if bias_only else policy
        self.count = 0 if bias_only else channel_count(ratio, num_channels)
        self.generator = generator
        self.channels: torch.Tensor | None = None
        if bias_only:
            self.channels = torch.empty(0, dtype=torch.long)
        elif self.count == num_channels and policy != "fixed":
            self.channels = None  # dense weight gradient
        elif policy == "topk":
            # Chosen once, from the (pretrained) weights, as tiny-training does by default.
            assert norms is not None
            self.channels = norms.topk(self.count).indices.sort().values
        elif policy == "fixed":
            self.channels = torch.as_tensor(sorted(set(fixed or ())), dtype=torch.long)
            self.count = self.channels.numel()

    def next(self) -> torch.Tensor | None:
        if self.policy == "random" and self.channels is None and self.count < self.num_channels:
            # The run's sparse PCG32 stream (tinycl.prng): k of C without replacement, sorted.
            assert self.generator is not None
            return torch.from_numpy(np.sort(self.generator.choice(self.num_channels, self.count)))
        return self.channels


def on_device(channels: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """Channel indices where the weights live (the selectors draw them on the CPU)."""
    return None if channels is None else channels.to(device)


class SparseConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` sharing another conv's Parameters, trained with a sparse weight gradient.

    Forward is exactly the conv's; in eval mode or without grad it is plain ``F.conv2d``.
    """

    def __init__(self, conv: nn.Conv2d, selector: ChannelSelector, dim: str = "in"):
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise TinyclError("sparse update supports zero-padded convs with numeric padding only")
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                         conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                         device="meta")
        self.weight = conv.weight
        self.bias = conv.bias
        self.selector = selector
        self.dim = dim
        self.last_channels: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and self.training and self.weight.requires_grad):
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        self.last_channels = on_device(self.selector.next(), self.weight.device)
        return sparse_conv2d(x, self.weight, self.bias, self.last_channels, self.dim,
                             self.stride, self.padding, self.dilation, self.groups)

    def updated_channels(self) -> tuple[int, torch.Tensor | None]:
        """(axis of ``weight``, channels) the last training forward's weight gradient covers;
        channels None = all. Depthwise and output selection index rows (axis 0), input
        selection columns (axis 1). ``tinycl.train.optim.ChannelSGD`` updates only those."""
        return (0 if self.groups > 1 or self.dim == "out" else 1), self.last_channels


class SparseLinear(nn.Linear):
    """An ``nn.Linear`` sharing another linear's Parameters, trained with a sparse weight gradient."""

    def __init__(self, linear: nn.Linear, selector: ChannelSelector, dim: str = "in"):
        super().__init__(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        self.weight = linear.weight
        self.bias = linear.bias
        self.selector = selector
        self.dim = dim
        self.last_channels: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and self.training and self.weight.requires_grad):
            return F.linear(x, self.weight, self.bias)
        self.last_channels = on_device(self.selector.next(), self.weight.device)
        return sparse_linear(x, self.weight, self.bias, self.last_channels, self.dim)

    def updated_channels(self) -> tuple[int, torch.Tensor | None]:
        """(axis of ``weight``, channels) of the last training forward (see ``SparseConv2d``)."""
        return (0 if self.dim == "out" else 1), self.last_channels


# ---------------------------------------------------------------------------------------------
# Configuration and the swap.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparseUpdateConfig:
    """Per-layer structured sparse update; keys are layer indices ("20") or names ("head").

    ``ratios``: channel ratio in (0, 1] per layer (every conv / linear inside the layer gets
    it); layers not listed are left as they are. ``bias_only``: layers whose conv / linear
    weights get no gradient (biases and BN affine still train). ``fixed``: channel lists for
    ``policy="fixed"``. ``dim``: "in" (memory saving, default) or "out" (see module doc).
    ``relu_masks``: swap every ReLU / ReLU6 of the adaptive stage for ``MaskedReLU`` so that the
    full activations the sparse kernels no longer keep are really freed (see ``MaskedReLUFn``).
    """

    ratios: dict[str, float] = field(default_factory=dict)
    policy: str = "random"
    dim: str = "in"
    bias_only: tuple[str, ...] = ()
    fixed: dict[str, list[int]] = field(default_factory=dict)
    seed: int = 0
    relu_masks: bool = True

    def __post_init__(self) -> None:
        for key, ratio in self.ratios.items():
            if not (isinstance(ratio, (int, float)) and 0 < ratio <= 1 and math.isfinite(ratio)):
                raise TinyclError(f"sparse update ratio for layer {key!r} must be in (0, 1], got {ratio}")
        if self.policy not in POLICIES:
            raise TinyclError(f"sparse update policy {self.policy!r} unknown; choose {', '.join(POLICIES)}")
        if self.dim not in DIMS:
            raise TinyclError(f"sparse update dim {self.dim!r} unknown; choose {', '.join(DIMS)}")
        if self.policy == "fixed" and set(self.fixed) != set(self.ratios):
            raise TinyclError("sparse update policy 'fixed' needs a channel list for every layer in ratios")


def resolve_layers(keys: Sequence[str], num_layers: int, first_index: int,
                   layer_names: Sequence[str] | None) -> dict[str, int]:
    """Map config keys (global index or name) to positions in the adaptive stage."""
    by_key = {str(first_index + i): i for i in range(num_layers)}
    if layer_names is not None:
        by_key.update({name: i for i, name in enumerate(layer_names)})
    known = f"{first_index}..{first_index + num_layers - 1}"
    positions = {}
    for key in keys:
        if str(key) not in by_key:
            raise TinyclError(f"sparse update: unknown layer {key!r}; adaptive stage has layers {known}"
                              + (f" ({', '.join(layer_names)})" if layer_names else ""))
        positions[str(key)] = by_key[str(key)]
    return positions


def _swap(layer: nn.Module, key: str, config: SparseUpdateConfig, ratio: float, bias_only: bool,
          generator: Pcg32) -> int:
    swapped = 0
    for parent in list(layer.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, (SparseConv2d, SparseLinear)):
                raise TinyclError(f"sparse update: layer {key!r} is already sparsified")
            if isinstance(child, nn.Conv2d):
                depthwise = child.groups > 1
                n = child.out_channels if depthwise or config.dim == "out" else child.in_channels
            elif isinstance(child, nn.Linear):
                depthwise = False
                n = child.out_features if config.dim == "out" else child.in_features
            else:
                continue
            fixed = config.fixed.get(key)
            if fixed is not None and not all(0 <= c < n for c in fixed):
                raise TinyclError(f"sparse update: fixed channels for layer {key!r} must be in 0..{n - 1}")
            selector = ChannelSelector(n, ratio, config.policy,
                                       norms=weight_norms(child.weight, config.dim, depthwise),
                                       fixed=fixed, generator=generator, bias_only=bias_only)
            cls = SparseConv2d if isinstance(child, nn.Conv2d) else SparseLinear
            setattr(parent, child_name, cls(child, selector, config.dim))
            swapped += 1
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise TinyclError(f"sparse update: layer {key!r} is a bare module; wrap it in nn.Sequential")
    if swapped == 0:
        raise TinyclError(f"sparse update: layer {key!r} has no conv or linear to update")
    return swapped


def sparsify(adaptive: nn.Sequential, config: SparseUpdateConfig | dict[str, float], *,
             first_index: int = 0, layer_names: Sequence[str] | None = None) -> nn.Sequential:
    """Swap the convs / linears of the configured layers for sparse ones, in place.

    ``adaptive`` is the adaptive stage from ``tinycl.models.split(model, lr_layer)``; pass
    ``first_index=lr_layer + 1`` and ``layer_names=model.layer_names()[lr_layer + 1:]`` so that
    keys use the model's numbering. Parameters are shared (the same ``nn.Parameter`` objects),
    so optimizers and state dicts are unchanged. Returns ``adaptive``.
    """
    if isinstance(config, dict):
        config = SparseUpdateConfig(ratios=dict(config))
    keys = list(dict.fromkeys([*config.ratios, *config.bias_only]))
    positions = resolve_layers(keys, len(adaptive), first_index, layer_names)
    generator = Pcg32(config.seed, SPARSE_STREAM)
    for key in keys:
        bias_only = key in config.bias_only
        _swap(adaptive[positions[str(key)]], str(key), config, config.ratios.get(key, 1.0), bias_only, generator)
    if config.relu_masks:
        mask_relus(adaptive)
    return adaptive


def mask_relus(module: nn.Module) -> int:
    """Replace every ``nn.ReLU`` / ``nn.ReLU6`` inside ``module`` by a ``MaskedReLU``; count them."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, MaskedReLU(6.0))
            elif isinstance(child, nn.ReLU):
                setattr(parent, name, MaskedReLU(None))
            else:
                continue
            count += 1
    return count


def sparse_modules(module: nn.Module) -> list[SparseConv2d | SparseLinear]:
    """The sparse modules inside ``module``, in registration order."""
    return [m for m in module.modules() if isinstance(m, (SparseConv2d, SparseLinear))]


def live_saved_bytes(adaptive: nn.Module, loss_fn) -> int:
    """Distinct activation storage autograd keeps for backward while ``loss_fn()`` builds the
    graph (parameters excluded; a tensor saved by several ops counts once); runs backward.

    The measure behind the sparse-update memory claims, shared by tests and benchmarks.
    """
    params = {p.data_ptr() for p in adaptive.parameters()}
    seen: set[int] = set()
    total = 0

    def pack(t):
        nonlocal total
        ptr = t.untyped_storage().data_ptr()
        if t.data_ptr() not in params and ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    loss.backward()
    return total


# ---------------------------------------------------------------------------------------------
# What one training step of a (sparse or dense) adaptive stage computes and keeps: the op list
# the cost model prices (tinycl.device.backward.BackwardOp, priced by
# tinycl.report.sparse_table.backward_cost).
# ---------------------------------------------------------------------------------------------


def backward_ops(adaptive: nn.Module, latent_shape: Sequence[int]) -> list[BackwardOp]:
    """The conv / linear / norm / activation ops of ``adaptive`` in execution order, traced by
    one forward of a zero latent of ``latent_shape`` (C, H, W) in train mode with grad."""
    from tinycl.train.batch_renorm import BatchRenorm2d

    ops: list[BackwardOp] = []

    def hook(module, inputs, output):
        x = inputs[0]
        shapes = (tuple(x.shape[1:]), tuple(output.shape[1:]))
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            conv = isinstance(module, nn.Conv2d)
            depthwise = conv and module.groups > 1
            selector = getattr(module, "selector", None)
            dim = getattr(module, "dim", "in")
            if conv:
                n = module.out_channels if depthwise or dim == "out" else module.in_channels
            else:
                n = module.out_features if dim == "out" else module.in_features
            chosen = n if selector is None else selector.count
            ops.append(BackwardOp(
                "conv" if conv else "linear", *shapes,
                kernel_hw=tuple(module.kernel_size) if conv else (1, 1),
                groups=module.groups if conv else 1, channels=n, chosen=chosen,
                slices_input=depthwise or dim == "in", input_grad=x.requires_grad,
                weight_grad=module.weight.requires_grad and chosen > 0))
        elif isinstance(module, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
            ops.append(BackwardOp("pool", *shapes, input_grad=x.requires_grad, weight_grad=False))
        elif isinstance(module, (nn.BatchNorm2d, BatchRenorm2d)):
            ops.append(BackwardOp("norm", *shapes))
        elif isinstance(module, (nn.ReLU, nn.ReLU6, MaskedReLU)):
            ops.append(BackwardOp("relu", *shapes))
        elif isinstance(module, (nn.Hardswish, nn.SiLU, nn.Sigmoid, nn.Hardsigmoid)):
            ops.append(BackwardOp("act", *shapes))

    # The trace must leave no trace: running statistics, train flags and channel RNGs restored.
    saved = {k: v.clone() for k, v in adaptive.state_dict().items()}
    modes = [(m, m.training) for m in adaptive.modules()]
    generators = {id(g): (g, g.get_state()) for m in sparse_modules(adaptive)
                  if (g := m.selector.generator) is not None}
    leaves = [m for m in adaptive.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    adaptive.train()
    try:
        with torch.enable_grad():
            adaptive(torch.zeros(2, *latent_shape))  # 2 samples: batch statistics need > 1
    finally:
        for h in handles:
            h.remove()
        adaptive.load_state_dict(saved)
        for m, mode in modes:
            m.training = mode
        for g, state in generators.values():
            g.set_state(state)
    return ops
