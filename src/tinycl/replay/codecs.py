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


class PackedCodec:
    """UINT-Q codes bit-packed: ceil(D * Q / 8) bytes per LR (QLR-CL; DESIGN.md).

    ``encode`` takes codes already produced by the latent quantizer (uint8 in 0..2^Q - 1);
    ``decode`` unpacks them and maps them back to float latents with the same quantizer.
    """

    dtype = torch.uint8

    def __init__(self, values: int, quantizer, latent_shape: tuple[int, ...]):
        from tinycl.quant import packed_row_bytes

        self.values = values
        self.bits = quantizer.bits
        self.quantizer = quantizer
        self.latent_shape = tuple(latent_shape)
        self._row_bytes = packed_row_bytes(values, self.bits)

    @property
    def row_bytes(self) -> int:
        return self._row_bytes

    @property
    def row_width(self) -> int:
        return self._row_bytes

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        from tinycl.quant import pack_bits

        flat = codes.reshape(len(codes), -1).numpy().astype("uint8", copy=False)
        return torch.from_numpy(pack_bits(flat, self.bits))

    def decode(self, rows: torch.Tensor) -> torch.Tensor:
        from tinycl.quant import unpack_bits

        codes = unpack_bits(rows.numpy(), self.bits, self.values)
        latents = self.quantizer.decode(codes.reshape(len(codes), *self.latent_shape))
        return torch.from_numpy(latents)
