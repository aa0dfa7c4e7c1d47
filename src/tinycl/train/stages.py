"""Turn a pretrained model into the two stages the learner runs."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tinycl.data.base import to_tensor_batch
from tinycl.models import FrozenStage, freeze_stage, split
from tinycl.train.batch_renorm import replace_batchnorm


def prepare_stages(model: nn.Module, lr_layer: int, norm: str, **brn) -> tuple[FrozenStage, nn.Module]:
    """The frozen stage, structurally frozen (``tinycl.models.frozen``: BatchNorms fixed to their
    running statistics, no gradients, always eval); the adaptive stage with the chosen norm.
    Both share their modules with ``model``. ``brn``: ``BatchRenorm2d`` options (momentum,
    ramp_per_sample, stats) when ``norm`` is "brn"."""
    layers, adaptive = split(model, lr_layer)
    frozen = freeze_stage(layers)
    if norm == "brn":
        replace_batchnorm(adaptive, **brn)
    elif norm == "fold":
        fold_adaptive_batchnorm(adaptive)
    return frozen, adaptive


@torch.no_grad()
def fold_adaptive_batchnorm(adaptive: nn.Module) -> int:
    """``--norm fold``: every ``Conv2d`` directly followed by a ``BatchNorm2d`` in a Sequential
    becomes one conv with the BN folded in from its running statistics (``tinycl.quant.fold``:
    weights scaled per output channel, a bias added) and the BN an ``nn.Identity``. What on-device
    trainers with frozen statistics run (PULP-TrainLib trains conv layers without BN): nothing is
    kept for a BN backward (no x_hat), and the conv's new bias takes the place of beta. Returns
    the number of BNs folded."""
    from tinycl.quant.fold import fold_bn

    folded = 0
    for module in list(adaptive.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (_, conv), (bn_name, bn) in zip(children, children[1:], strict=False):
            if not (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d):
                continue
            weight, bias = fold_bn(conv, bn)
            conv.weight.copy_(weight.to(conv.weight.dtype))
            if conv.bias is None:
                conv.bias = nn.Parameter(bias.to(conv.weight.dtype))
            else:
                conv.bias.copy_(bias.to(conv.bias.dtype))
            setattr(module, bn_name, nn.Identity())
            folded += 1
    return folded


def set_train_mode(adaptive: nn.Module, norm: str) -> None:
    """Train mode, except BN layers when the norm is ``frozen`` (running statistics kept; with
    ``fold`` there are none left)."""
    adaptive.train()
    if norm == "frozen":
        for m in adaptive.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()


@torch.no_grad()
def frozen_forward(frozen: nn.Module, images: np.ndarray, chunk: int = 256) -> torch.Tensor:
    """Float frozen stage over uint8 NHWC images, in chunks to bound memory, on the stage's
    device; the latents come back to the CPU."""
    device = next(frozen.parameters()).device
    outs = [frozen(to_tensor_batch(images[i : i + chunk]).to(device)).cpu() for i in range(0, len(images), chunk)]
    if not outs:
        raise ValueError("no images")
    return torch.cat(outs)


def head_weight(adaptive: nn.Module) -> torch.Tensor:
    """The last linear layer's weight (the classifier head)."""
    linears = [m for m in adaptive.modules() if isinstance(m, nn.Linear)]
    return linears[-1].weight
