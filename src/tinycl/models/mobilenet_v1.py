"""MobileNetV1 with the ar1-pytorch layer numbering.

Layer 0 is the first 3x3 conv; block k (k = 1..13) is layer 2k-1 (depthwise 3x3) and layer 2k
(pointwise 1x1); then global average pooling and a bias-free linear head (ar1-pytorch uses
``Linear(1024, 50, bias=False)``, REFERENCES.md). Every layer is conv -> BN -> ReLU.
"""

from __future__ import annotations

from torch import nn

from tinycl.models.base import LayeredModel
from tinycl.models.heads import Classifier

# (out_channels, depthwise stride) of the 13 depthwise-separable blocks (Howard et al. 2017,
# Table 1); the first conv has 32 channels and stride 2.
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
FIRST_CHANNELS = 32


def scaled(channels: int, width: float) -> int:
    """Channels after the width multiplier (at least 8, as in the Keras reference)."""
    return max(8, int(channels * width))


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=False),
    )


class MobileNetV1(LayeredModel):
    """MobileNetV1; ``features[i]`` is layer i, so ``layer_sequence()`` is the whole model."""

    def __init__(self, num_classes: int = 50, width: float = 1.0, in_channels: int = 3):
        super().__init__(num_classes, width)
        layers: list[nn.Module] = []
        channels = scaled(FIRST_CHANNELS, width)
        layers.append(conv_bn_relu(in_channels, channels, 3, 2, 1))
        for out, stride in BLOCKS:
            out = scaled(out, width)
            layers.append(conv_bn_relu(channels, channels, 3, stride, channels))  # depthwise
            layers.append(conv_bn_relu(channels, out, 1, 1, 1))  # pointwise
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = Classifier(channels, num_classes)

    def layer_names(self) -> list[str]:
        names = ["conv0"]
        for k in range(1, len(BLOCKS) + 1):
            names += [f"block{k}.dw", f"block{k}.pw"]
        return names + ["pool", "head"]

    def layer_sequence(self) -> list[nn.Module]:
        """Every module in forward order: 0..26 the conv layers, 27 the pool, 28 the head."""
        return [*self.features, self.pool, self.head]
