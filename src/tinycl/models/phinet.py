"""PhiNet (Paissan, Ancilotto, Farella, ACM TECS 2022, doi:10.1145/3510832), one layer per block.

Our reading of the architecture (paper, Sec. 3, checked against the authors' code in
micromind, ``micromind/networks/phinet.py``):

- stem: a separable conv -- 3x3 depthwise on the input channels, stride 2 -- then a 1x1 conv to
  ``48 alpha`` channels, BN, activation;
- block 0: depthwise 3x3 -> BN -> act -> 1x1 to ``24 alpha`` -> BN (no expansion);
- blocks 1..L (``num_layers`` = L): inverted residual blocks -- 1x1 expansion by t(i) -> BN ->
  act, depthwise k x k (stride s) -> BN -> act, optional squeeze-excite, 1x1 linear
  bottleneck -> BN -- with the identity added when s = 1 and channels match;
- channels: blocks 1, 2 keep ``24 alpha`` (block 1 has stride 2), block 3 goes to ``48 alpha``
  with stride 2, then every block listed in ``downsampling_layers`` doubles the filters with
  stride 2 (default (5, 7));
- expansion: t(i) = t0 * (beta * i / L + (L - i) / L), the shape factor beta interpolating
  linearly from t0 (first block) to beta * t0 (last block);
- activation h-swish and squeeze-excite (reduction 6, sigmoid gate) by default; the
  MCU-compatible mode (micromind's ``compatibility=True``) uses ReLU6 and no squeeze-excite,
  which is what integer MCU kernels run (and what tinycl's INT8 path expects: ReLU-family
  outputs). tinycl defaults to it (``mcu=True``).

Differences from micromind that do not change shapes or MACs: no Dropout2d in the blocks
(identity at inference; the CL recipe has none), symmetric padding k // 2 (micromind pads the
stem asymmetrically, Keras-style), and our bias-free ``Classifier`` head.
"""

from __future__ import annotations

import torch
from torch import nn

from tinycl.models.base import LayeredModel
from tinycl.models.heads import Classifier
from tinycl.models.registry import register_model

# Hard-coded filter counts of the stem and first blocks (micromind: first_conv_filters=48,
# b1_filters=24, b2_filters=48).
STEM_FILTERS = 48
B1_FILTERS = 24
B2_FILTERS = 48
SE_REDUCTION = 6  # micromind: max(1, int(channels / 6)) squeeze channels
BN_EPS = 1e-3  # micromind's BatchNorm2d(eps=1e-3), kept from the Keras original


def expansion_factor(t0: float, beta: float, block_id: int, num_layers: int) -> float:
    """t(i): linear from t0 at block 0 to beta * t0 at block L (Paissan et al. 2022, Eq. 3)."""
    return t0 * beta * block_id / num_layers + t0 * (num_layers - block_id) / num_layers


def activation(mcu: bool) -> nn.Module:
    return nn.ReLU6(inplace=False) if mcu else nn.Hardswish(inplace=False)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, mcu: bool):
        super().__init__()
        squeezed = max(1, channels // SE_REDUCTION)
        self.reduce = nn.Conv2d(channels, squeezed, 1, bias=False)
        self.act = activation(mcu)
        self.expand = nn.Conv2d(squeezed, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class PhiNetBlock(nn.Module):
    """Expand -> depthwise -> (squeeze-excite) -> linear bottleneck, identity when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: float | None,
                 squeeze_excite: bool, mcu: bool, kernel: int = 3, residual: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        hidden = in_ch
        if expansion is not None:
            hidden = int(expansion * in_ch)
            layers += [nn.Conv2d(in_ch, hidden, 1, bias=False), nn.BatchNorm2d(hidden, eps=BN_EPS), activation(mcu)]
        layers += [
            nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden, eps=BN_EPS),
            activation(mcu),
        ]
        if squeeze_excite:
            layers.append(SqueezeExcite(hidden, mcu))
        layers += [nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch, eps=BN_EPS)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = residual and stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class PhiNet(LayeredModel):
    """PhiNet(alpha, beta, t0, L); ``layer_sequence()`` = stem, blocks 0..L, pool, head."""

    def __init__(self, num_classes: int = 50, alpha: float = 0.2, beta: float = 1.0, t0: float = 6.0,
                 num_layers: int = 7, downsampling_layers: tuple[int, ...] = (5, 7), mcu: bool = True,
                 conv5_percent: float = 0.0, residuals: bool = True, in_channels: int = 3):
        if alpha <= 0 or beta <= 0 or t0 <= 0:
            raise ValueError(f"alpha, beta, t0 must be > 0, got {alpha}, {beta}, {t0}")
        if num_layers < 3:
            raise ValueError(f"num_layers must be >= 3 (blocks 1..3 are fixed), got {num_layers}")
        super().__init__(num_classes, alpha)  # alpha is PhiNet's width multiplier
        self.alpha, self.beta, self.t0, self.num_layers = alpha, beta, t0, num_layers
        squeeze_excite = not mcu

        def filters(base: int) -> int:
            return max(1, int(base * alpha))

        stem = filters(STEM_FILTERS)
        layers: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, stem, 1, bias=False),
            nn.BatchNorm2d(stem, eps=BN_EPS),
            activation(mcu),
        )]

        def block(in_ch: int, out_ch: int, stride: int, block_id: int | None) -> PhiNetBlock:
            expansion = None if block_id is None else expansion_factor(t0, beta, block_id, num_layers)
            # micromind: 5x5 depthwise in the last conv5_percent of the blocks.
            kernel = 5 if block_id is not None and block_id / num_layers > 1 - conv5_percent else 3
            return PhiNetBlock(in_ch, out_ch, stride, expansion, squeeze_excite and block_id is not None,
                               mcu, kernel, residuals)

        b1, b2 = filters(B1_FILTERS), filters(B2_FILTERS)
        layers += [block(stem, b1, 1, None), block(b1, b1, 2, 1), block(b1, b1, 1, 2), block(b1, b2, 2, 3)]
        channels, base = b2, B2_FILTERS
        for block_id in range(4, num_layers + 1):
            down = block_id in downsampling_layers
            base = base * 2 if down else base
            layers.append(block(channels, filters(base), 2 if down else 1, block_id))
            channels = filters(base)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = Classifier(channels, num_classes)

    def layer_names(self) -> list[str]:
        return ["stem", *(f"block{k}" for k in range(self.num_layers + 1)), "pool", "head"]

    def layer_sequence(self) -> list[nn.Module]:
        """0 the stem, 1..L+1 blocks 0..L, then the pool and the head."""
        return [*self.features, self.pool, self.head]


@register_model("phinet")
def _phinet(num_classes: int = 50, alpha: float = 0.2, beta: float = 1.0, t0: float = 6.0,
            num_layers: int = 7, width: float | None = None, **kwargs) -> nn.Module:
    # tinycl's uniform --width option is PhiNet's alpha (its width multiplier).
    alpha = alpha if width is None else width
    return PhiNet(num_classes=num_classes, alpha=alpha, beta=beta, t0=t0, num_layers=num_layers, **kwargs)
