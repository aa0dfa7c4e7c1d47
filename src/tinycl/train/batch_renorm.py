"""Batch renormalization (Ioffe 2017) for the adaptive stage, as in the latent replay recipe.

Small new-data proportions make batch statistics unreliable; batch renorm corrects them
towards the running statistics with r = clip(sigma_B / sigma, 1/r_max, r_max) and
d = clip((mu_B - mu) / sigma, -d_max, d_max) (r and d treated as constants in backward).

Two conventions for the running statistics (``stats``):

- ``"var"`` (tinycl's recipe): running mean and *unbiased* running variance, as
  ``nn.BatchNorm2d`` keeps them; sigma = sqrt(running_var + eps).
- ``"std"`` (ar1-pytorch ``models/batch_renorm.py`` at 813f977, the AR1* recipe): a running
  *standard deviation* sigma, started at sqrt(running_var) of the pretrained BN (no eps) and
  moved towards the batch's sqrt(biased var + eps); the forward is computed with exactly that
  file's operations and order: ``((x - mu_B) * r) / sigma_B + d``, then ``gamma * x + beta``;
  inference ``(x - mu) / sigma``, then ``gamma * x + beta``.

r_max / d_max: fixed at their caps (``ramp_per_sample = 0``, tinycl), or, as ar1-pytorch
does in its first batch, started at 1 / 0 and raised by ``ramp_per_sample`` x the mini-batch
size after every training forward while below the cap (so the last step may overshoot it, as
there). ``set_phase`` puts every layer in the incremental phase (ar1-pytorch
``change_brn_pars`` at batch 1: caps reached, no ramp, a new momentum).
"""

from __future__ import annotations

import torch
from torch import nn

R_MAX = 1.25  # ar1-pytorch params.cfg max_r_max
D_MAX = 0.5  # ar1-pytorch params.cfg max_d_max
STATS = ("var", "std")


class BatchRenorm2d(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.01,
                 r_max: float = R_MAX, d_max: float = D_MAX, *, ramp_per_sample: float = 0.0,
                 stats: str = "var"):
        super().__init__()
        if stats not in STATS:
            raise ValueError(f"unknown batch renorm statistics {stats!r}; known: {', '.join(STATS)}")
        self.eps = eps
        self.momentum = momentum
        self.stats = stats
        self.max_r_max, self.max_d_max = r_max, d_max
        self.ramp_per_sample = ramp_per_sample
        # float64, as ar1-pytorch's Python floats: the ramp accumulates in double precision.
        # Buffers, so that checkpoints and probes (which restore buffers) cover them.
        self.register_buffer("r_max", torch.tensor(1.0 if ramp_per_sample else r_max, dtype=torch.float64))
        self.register_buffer("d_max", torch.tensor(0.0 if ramp_per_sample else d_max, dtype=torch.float64))
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        if stats == "var":
            self.register_buffer("running_var", torch.ones(channels))
        else:
            self.register_buffer("running_std", torch.ones(channels))

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d, **kwargs) -> BatchRenorm2d:
        """Start from a pretrained BN: same affine parameters and running statistics."""
        brn = cls(bn.num_features, eps=bn.eps, **kwargs)
        with torch.no_grad():
            brn.weight.copy_(bn.weight)
            brn.bias.copy_(bn.bias)
            brn.running_mean.copy_(bn.running_mean)
            if brn.stats == "var":
                brn.running_var.copy_(bn.running_var)
            else:
                brn.running_std.copy_(torch.sqrt(bn.running_var))
        return brn

    def set_phase(self, momentum: float) -> None:
        """The incremental phase: r_max / d_max at their caps, no ramp, ``momentum``."""
        self.momentum = momentum
        self.r_max.fill_(self.max_r_max)
        self.d_max.fill_(self.max_d_max)
        self.ramp_per_sample = 0.0

    def _ramp(self, batch: int) -> None:
        if self.r_max.item() < self.max_r_max:
            self.r_max += self.ramp_per_sample * batch
        if self.d_max.item() < self.max_d_max:
            self.d_max += self.ramp_per_sample * batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stats == "std":
            return self._forward_std(x)
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
            r_max, d_max = self.r_max.item(), self.d_max.item()
            r = (std / running_std).clamp(1.0 / r_max, r_max)
            d = ((mean - self.running_mean) / running_std).clamp(-d_max, d_max)
            n = x.numel() / x.shape[1]
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
        x_hat = (x - mean.view(shape)) / std.view(shape) * r.view(shape) + d.view(shape)
        if self.ramp_per_sample:
            self._ramp(x.shape[0])
        return x_hat * self.weight.view(shape) + self.bias.view(shape)

    def _forward_std(self, x: torch.Tensor) -> torch.Tensor:
        """ar1-pytorch's BatchRenorm2D.forward, operation for operation."""
        shape = (1, -1, 1, 1)
        gamma, beta = self.weight.view(shape), self.bias.view(shape)
        mu, sigma = self.running_mean.view(shape), self.running_std.view(shape)
        if not self.training:
            return gamma * ((x - mu) / sigma) + beta
        batch_mean = torch.mean(x, dim=(0, 2, 3), keepdim=True)
        batch_std = torch.sqrt(torch.var(x, dim=(0, 2, 3), keepdim=True, unbiased=False) + self.eps)
        with torch.no_grad():
            r_max, d_max = self.r_max.item(), self.d_max.item()
            r = torch.clamp(batch_std / sigma, 1.0 / r_max, r_max)
            d = torch.clamp((batch_mean - mu) / sigma, -d_max, d_max)
        out = gamma * (((x - batch_mean) * r) / batch_std + d) + beta
        if self.ramp_per_sample:
            self._ramp(x.shape[0])
        with torch.no_grad():
            self.running_mean.copy_((mu + self.momentum * (batch_mean - mu)).view(-1))
            self.running_std.copy_((sigma + self.momentum * (batch_std - sigma)).view(-1))
        return out

    def extra_repr(self) -> str:
        return (f"{self.weight.numel()}, stats={self.stats}, momentum={self.momentum}, "
                f"r_max={self.r_max.item():g}, d_max={self.d_max.item():g}")


def replace_batchnorm(module: nn.Module, **kwargs) -> nn.Module:
    """Swap every BatchNorm2d inside ``module`` for a BatchRenorm2d, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, BatchRenorm2d.from_batchnorm(child, **kwargs))
        else:
            replace_batchnorm(child, **kwargs)
    return module


def set_phase(module: nn.Module, momentum: float) -> None:
    """Every BatchRenorm2d under ``module`` into the incremental phase (``BatchRenorm2d.set_phase``)."""
    for m in module.modules():
        if isinstance(m, BatchRenorm2d):
            m.set_phase(momentum)
