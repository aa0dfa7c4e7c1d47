"""Images -> latents, with exactly the arithmetic the device runs.

``float``: the PyTorch frozen stage, FP32 latents. ``int8``: the integer-only frozen stage
(BN folded, INT8 weights, UINT8 activations, calibrated on the first CL batch), whose UINT8
LR-layer output is requantized to Q bits by the latent quantizer. New latents, replays and
test latents all pass the same quantizer, so training and testing see one distribution
(DESIGN.md, "Quantized latent replays").
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tinycl.data.base import to_tensor_batch
from tinycl.errors import TinyclError
from tinycl.replay.codecs import Float32Codec, PackedCodec
from tinycl.train.stages import frozen_forward


def frozen_arithmetic(requested: str, bits: int) -> str:
    """``auto`` is INT8 whenever replays are quantized (Q <= 8), float for the FP32 baseline."""
    if requested == "auto":
        return "float" if bits == 32 else "int8"
    if requested == "float" and bits != 32:
        raise TinyclError(f"--bits {bits} needs the INT8 frozen stage (--frozen int8 or auto)")
    return requested


class LatentEncoder:
    """Frozen stage (+ latent quantizer) and the replay codec that matches it."""

    def __init__(self, frozen: nn.Module, latent_shape: tuple[int, ...], bits: int, *,
                 arithmetic: str, calib_images: np.ndarray, weight_quant: str, observer: str,
                 latent_mode: str, latent_per_channel: bool, chunk: int = 256):
        from tinycl.quant import LatentQuantizer, quantize_frozen_stage

        self.frozen = frozen
        self.latent_shape = tuple(latent_shape)
        self.values = int(np.prod(latent_shape))
        self.bits = bits
        self.arithmetic = frozen_arithmetic(arithmetic, bits)
        self.chunk = chunk
        self.stage = None
        self.quantizer = None
        if len(calib_images) == 0:
            raise TinyclError("the calibration set (first CL batch) is empty")
        if self.arithmetic == "int8":
            calib = to_tensor_batch(calib_images)
            if not torch.isfinite(calib).all():
                raise TinyclError("calibration images contain NaN or Inf")
            self.stage = quantize_frozen_stage(frozen, calib, weight_quant=weight_quant,
                                               observer=observer)
            if bits != 32:
                self.quantizer = LatentQuantizer(bits, latent_mode, latent_per_channel,
                                                 latent_scale=self.stage.output_scale)
                self.quantizer.calibrate(self.frozen_u8(calib_images))
        if self.quantizer is None:
            self.codec = Float32Codec(self.values)
        else:
            self.codec = PackedCodec(self.values, self.quantizer, self.latent_shape)

    def frozen_u8(self, images: np.ndarray) -> np.ndarray:
        """The INT8 frozen stage's UINT8 output for ``images``, chunk by chunk."""
        outs = [self.stage(to_tensor_batch(images[i : i + self.chunk])).numpy()
                for i in range(0, len(images), self.chunk)]
        return np.concatenate(outs)

    def item_layout(self) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of one stored item: Q-bit codes (uint8) or float32 latents."""
        return self.latent_shape, np.dtype(np.uint8 if self.quantizer is not None else np.float32)

    def from_items(self, items: torch.Tensor) -> torch.Tensor:
        """Float latents from stored items (Q-bit codes decode; float items are latents)."""
        if self.quantizer is None:
            return items
        return torch.from_numpy(self.quantizer.decode(items.numpy()))

    def encode(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(float latents the adaptive stage trains on, items the replay memory stores)."""
        if self.arithmetic == "float":
            latents = frozen_forward(self.frozen, images, self.chunk)
            return latents, latents
        u8 = self.frozen_u8(images)
        if self.quantizer is None:
            latents = torch.from_numpy(u8.astype(np.float32) * np.float32(self.stage.output_scale))
            return latents, latents
        codes = self.quantizer.encode(u8)
        latents = torch.from_numpy(self.quantizer.decode(codes))
        return latents, torch.from_numpy(codes)
