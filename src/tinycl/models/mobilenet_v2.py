"""MobileNetV2 (Sandler et al., CVPR 2018), one numbered layer per inverted residual block.

Layer 0 is the first 3x3 conv (stride 2); layers 1..17 are the inverted residual blocks of the
paper's Table 2; layer 18 is the final 1x1 conv to 1280 channels; 19 the global average pool
and 20 the linear head. A block is ONE layer, so ``split`` cuts only between blocks and never
through a residual connection.

Each block: 1x1 expansion conv (t x channels, skipped when t = 1) -> BN -> ReLU6, 3x3
depthwise conv (stride s) -> BN -> ReLU6, 1x1 linear bottleneck conv -> BN (no activation),
plus the identity when the stride is 1 and the channels match.

MACs: ``layer_table`` counts one conv per layer (the first one), so for a block it reports
only the expansion (or depthwise) conv; ``block_macs`` gives the sum over every conv inside.
"""

from __future__ import annotations

import torch
from torch import nn

from tinycl.models.base import LayeredModel
from tinycl.models.heads import Classifier
from tinycl.models.registry import register_model

# (expansion t, out channels c, repeats n, first stride s), Sandler et al. 2018, Table 2.
SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
FIRST_CHANNELS = 32
LAST_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor``, never below 90 % of ``value``.

    The rule of the TensorFlow reference (slim/nets/mobilenet/mobilenet.py), which torchvision
    and timm keep, so width-multiplied models have the usual channel counts.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int, act: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=False))
    return layers


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear bottleneck (1x1), identity when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_ch * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += conv_bn(in_ch, hidden, 1, 1, 1, act=True)
        layers += conv_bn(hidden, hidden, 3, stride, hidden, act=True)
        layers += conv_bn(hidden, out_ch, 1, 1, 1, act=False)  # linear bottleneck
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(LayeredModel):
    """MobileNetV2 at any width and input resolution; ``layer_sequence()`` is the whole model."""

    def __init__(self, num_classes: int = 50, width: float = 1.0, in_channels: int = 3):
        super().__init__(num_classes, width)
        channels = make_divisible(FIRST_CHANNELS * width)
        layers: list[nn.Module] = [nn.Sequential(*conv_bn(in_channels, channels, 3, 2, 1, act=True))]
        for expansion, out, repeats, stride in SETTINGS:
            out = make_divisible(out * width)
            for i in range(repeats):
                layers.append(InvertedResidual(channels, out, stride if i == 0 else 1, expansion))
                channels = out
        # The last conv is not narrowed below 1280 (Sandler et al. 2018, Sec. 6.1).
        last = make_divisible(LAST_CHANNELS * max(1.0, width))
        layers.append(nn.Sequential(*conv_bn(channels, last, 1, 1, 1, act=True)))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = Classifier(last, num_classes)

    def layer_names(self) -> list[str]:
        blocks = len(self.features) - 2
        return ["conv0", *(f"block{k}" for k in range(1, blocks + 1)), "conv_last", "pool", "head"]

    def layer_sequence(self) -> list[nn.Module]:
        """0 the first conv, 1..17 the blocks, 18 the last conv, 19 the pool, 20 the head."""
        return [*self.features, self.pool, self.head]


def block_macs(layer: nn.Module, x: torch.Tensor) -> int:
    """MACs of one sample through every Conv2d / Linear inside ``layer`` (forward hooks).

    What ``layer_table`` should report for multi-conv layers (inverted residual / PhiNet
    blocks): the sum over all convs, each counted as out values x in/groups x kernel area.
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        per_out = module.in_features if isinstance(module, nn.Linear) else (
            module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        )
        total += output[0].numel() * per_out

    handles = [m.register_forward_hook(hook) for m in layer.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            layer(x[:1])
    finally:
        for h in handles:
            h.remove()
    return total


@register_model("mobilenet_v2")
def _mobilenet_v2(num_classes: int = 50, width: float = 1.0, **kwargs) -> nn.Module:
    return MobileNetV2(num_classes=num_classes, width=width, **kwargs)
