"""The uniform model interface: a model is its layer sequence, run in order."""

from __future__ import annotations

import torch
from torch import nn


class LayeredModel(nn.Module):
    """Subclasses define ``layer_sequence()`` (every module in forward order, one numbered
    layer each) and ``layer_names()``; forward runs the sequence, so ``split`` at any layer
    reproduces the model exactly."""

    def __init__(self, num_classes: int, width: float):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.width = width
        self.num_classes = num_classes

    def layer_sequence(self) -> list[nn.Module]:
        raise NotImplementedError

    def layer_names(self) -> list[str]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer_sequence():
            x = layer(x)
        return x
