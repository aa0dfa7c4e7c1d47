"""The adaptive stage's optimizer: SGD with momentum and weight decay (ar1-pytorch recipe)."""

from __future__ import annotations

import torch
from torch import nn


def make_optimizer(adaptive: nn.Module, *, lr: float, momentum: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    """SGD over the adaptive stage's trainable parameters."""
    return torch.optim.SGD(
        [p for p in adaptive.parameters() if p.requires_grad],
        lr=lr, momentum=momentum, weight_decay=weight_decay,
    )
