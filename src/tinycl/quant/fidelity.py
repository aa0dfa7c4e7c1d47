"""Fidelity of the integer frozen stage: per-layer output error and end-to-end accuracy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from tinycl.models.probe import inspecting
from tinycl.quant.int_blocks import IntBlock
from tinycl.quant.int_frozen import DEFAULT_CHUNK, IntConvLayer, IntFrozenStage


@dataclass(frozen=True)
class LayerError:
    """Error of one integer layer's dequantized output against the float layer's output.

    Both paths start from the same float images; the error therefore accumulates through the
    stage, as it does on the device. ``sqnr_db = 10 log10(sum f**2 / sum (f - q)**2)``.
    """

    index: int
    kind: str
    max_abs_error: float
    mean_abs_error: float
    mean_abs_value: float
    sqnr_db: float
    # share of outputs at the end of the code range (255; -127 or 127 for INT8 outputs): clipped
    # by the observer bound
    saturated_fraction: float


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    signal = float((reference.double() ** 2).sum())
    noise = float(((reference.double() - approx.double()) ** 2).sum())
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def saturated_fraction(codes: torch.Tensor, layer: IntConvLayer | IntBlock) -> float:
    """Share of ``codes`` at the top of ``layer``'s output range, or at either end when signed (a
    ReLU output at 0 is not clipped)."""
    lo, hi = layer.output_range
    clipped = codes == hi
    if layer.output_signed:
        clipped |= codes == lo
    return float(clipped.float().mean())


def float_layer_outputs(frozen: nn.Sequential, images: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's output of the float frozen stage in eval mode (``inspecting``: the stage
    is left exactly as it was)."""
    outputs = []
    with inspecting(frozen):
        x = images
        for layer in frozen:
            x = layer(x)
            outputs.append(x.cpu())
    return outputs


def layer_errors(frozen: nn.Sequential, stage: IntFrozenStage, images: torch.Tensor
                 ) -> list[LayerError]:
    """Per-layer error of ``stage`` (quantized from ``frozen``) on normalized float images; one row
    per numbered layer (a MobileNetV2 / PhiNet block's row is its output, after the add)."""
    float_outputs = float_layer_outputs(frozen, images)
    int_outputs = stage.forward_int(stage.quantize_input(images), return_all=True)
    rows = []
    triples = zip(float_outputs, int_outputs, stage.layers, strict=True)
    for i, (ref, codes, layer) in enumerate(triples):
        approx = codes.to(torch.float32) * layer.output_scale
        diff = (ref - approx).abs()
        rows.append(LayerError(
            index=i,
            kind=layer.kind,
            max_abs_error=float(diff.max()),
            mean_abs_error=float(diff.mean()),
            mean_abs_value=float(ref.abs().mean()),
            sqnr_db=sqnr_db(ref, approx),
            saturated_fraction=saturated_fraction(codes, layer),
        ))
    return rows


def compare_accuracy(frozen: nn.Sequential, adaptive: nn.Sequential, stage: IntFrozenStage,
                     images: torch.Tensor, labels: torch.Tensor, chunk: int = DEFAULT_CHUNK
                     ) -> dict[str, float]:
    """Top-1 accuracy of ``adaptive(frozen(x))`` vs ``adaptive(dequantize(stage(x)))``.

    Returns ``{"float_accuracy", "int_accuracy", "agreement"}`` as fractions in [0, 1];
    agreement is the share of images where both paths predict the same class.
    """
    correct_float = correct_int = agree = 0
    with inspecting(frozen, adaptive):
        for start in range(0, images.shape[0], chunk):
            x = images[start : start + chunk]
            y = labels[start : start + chunk].cpu()
            device = next(adaptive.parameters()).device
            pred_float = adaptive(frozen(x.to(next(frozen.parameters()).device)).to(device)).argmax(dim=1).cpu()
            latents = stage.dequantize(stage(x))
            pred_int = adaptive(latents.to(device)).argmax(dim=1).cpu()
            correct_float += int((pred_float == y).sum())
            correct_int += int((pred_int == y).sum())
            agree += int((pred_float == pred_int).sum())
    n = max(int(images.shape[0]), 1)
    return {"float_accuracy": correct_float / n, "int_accuracy": correct_int / n,
            "agreement": agree / n}
