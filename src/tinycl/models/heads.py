"""Classifier heads shared by the models."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """Flatten then a linear layer; a module of its own so the head is one numbered layer."""

    def __init__(self, in_features: int, num_classes: int, bias: bool = False):
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(x, 1))
