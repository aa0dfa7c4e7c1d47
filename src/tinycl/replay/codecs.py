"""How one replay item is stored: float32 latents, or bytes that decode to them.

A codec turns a batch of float latents (or raw images) into stored rows and back. The
replay memory only moves rows around; the bytes a row takes are the codec's business.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Float32Codec:
    """FP32 latents, the QLR baseline (Q = 32): 4 bytes per value."""

    values: int

    bits = 32
    dtype = torch.float32

    @property
    def row_bytes(self) -> int:
        return 4 * self.values

    @property
    def row_width(self) -> int:
        return self.values

    def encode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.reshape(len(latents), -1).to(torch.float32)

    def decode(self, rows: torch.Tensor) -> torch.Tensor:
        return rows


@dataclass(frozen=True)
class RawImageCodec:
    """Raw uint8 images (H, W, 3), for the raw-image replay baseline: 1 byte per value."""

    values: int

    bits = 8
    dtype = torch.uint8

    @property
    def row_bytes(self) -> int:
        return self.values

    @property
    def row_width(self) -> int:
        return self.values

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.reshape(len(images), -1).to(torch.uint8)

    def decode(self, rows: torch.Tensor) -> torch.Tensor:
        return rows
