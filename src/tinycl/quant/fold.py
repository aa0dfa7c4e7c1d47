"""Batch-norm folding: conv -> BN becomes one conv with a bias (Jacob et al. 2018, sec. 3.2)."""

from __future__ import annotations

import torch
from torch import nn


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 ``(weight, bias)`` of ``bn(conv(x))`` in eval mode (running statistics).

    ``gamma / sqrt(var + eps)`` scales each output channel of the weight; the bias becomes
    ``beta + (conv_bias - mean) * gamma / sqrt(var + eps)``. Without BN the conv is returned.
    """
    weight = conv.weight.detach().double()
    bias = (
        conv.bias.detach().double()
        if conv.bias is not None
        else torch.zeros(conv.out_channels, dtype=torch.float64)
    )
    if bn is None:
        return weight, bias
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(bias)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(bias)
    scale = gamma / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    folded_weight = weight * scale.view(-1, 1, 1, 1)
    folded_bias = beta + (bias - bn.running_mean.detach().double()) * scale
    return folded_weight, folded_bias
