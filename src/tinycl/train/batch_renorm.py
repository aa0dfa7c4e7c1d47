"""Batch renormalization (Ioffe 2017) for the adaptive stage, as in the latent replay recipe.

Small new-data proportions make batch statistics unreliable; batch renorm corrects them
towards the running statistics with r = clip(sigma_B / sigma, 1/r_max, r_max) and
d = clip((mu_B - mu) / sigma, -d_max, d_max). ar1-pytorch uses r_max 1.25, d_max 0.5
(REFERENCES.md).
"""

from __future__ import annotations

import torch
from torch import nn

R_MAX = 1.25  # ar1-pytorch max_r_max
D_MAX = 0.5  # ar1-pytorch max_d_max


class BatchRenorm2d(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.01,
                 r_max: float = R_MAX, d_max: float = D_MAX):
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.r_max = r_max
        self.d_max = d_max
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d, **kwargs) -> BatchRenorm2d:
        """Start from a pretrained BN: same affine parameters and running statistics."""
        brn = cls(bn.num_features, eps=bn.eps, **kwargs)
        with torch.no_grad():
            brn.weight.copy_(bn.weight)
            brn.bias.copy_(bn.bias)
            brn.running_mean.copy_(bn.running_mean)
            brn.running_var.copy_(bn.running_var)
        return brn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        if not self.training:
            scale = self.weight / torch.sqrt(self.running_var + self.eps)
            return x * scale.view(shape) + (self.bias - self.running_mean * scale).view(shape)
        # Two-pass statistics over an [N*H*W, C] view: several times faster on CPU than
        # Tensor.var over dims (0, 2, 3), and a free view when x is channels-last.
        flat = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        mean = flat.mean(0)
        var = (flat - mean).pow(2).mean(0)
        std = torch.sqrt(var + self.eps)
        with torch.no_grad():
            running_std = torch.sqrt(self.running_var + self.eps)
            r = (std / running_std).clamp(1.0 / self.r_max, self.r_max)
            d = ((mean - self.running_mean) / running_std).clamp(-self.d_max, self.d_max)
            n = x.numel() / x.shape[1]
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
        x_hat = (x - mean.view(shape)) / std.view(shape) * r.view(shape) + d.view(shape)
        return x_hat * self.weight.view(shape) + self.bias.view(shape)


def replace_batchnorm(module: nn.Module, **kwargs) -> nn.Module:
    """Swap every BatchNorm2d inside ``module`` for a BatchRenorm2d, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, BatchRenorm2d.from_batchnorm(child, **kwargs))
        else:
            replace_batchnorm(child, **kwargs)
    return module
