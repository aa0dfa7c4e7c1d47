"""Memory on the device, laid out as the device holds it during continual learning.

Conventions (TinyTL, Cai et al. NeurIPS 2020, as summarised in REFERENCES.md, is the anchor):

- Frozen stage: INT8 weights with BN folded in; per output channel an int32 bias, an int32
  fixed-point multiplier M0 and an int8 shift (DESIGN.md, integer-only requantization) =
  9 bytes per output channel. Activations are UINT8 and only live during the forward pass:
  their cost is the *peak* over layers of (input + output) buffers, not the sum.
- Adaptive stage: FP32 weights (conv/linear weights, BN affine gamma/beta and BN running
  mean/variance), FP32 gradients and FP32 SGD momentum for every trainable value.
- Training activations: *kept* for backward = the FP32 input of every layer whose weight
  gradient is computed, the FP32 normalised input x_hat of every BN (for d_gamma and dx) and a
  1-bit mask per ReLU output (TinyTL); plus the *transient* peak of one layer's working pair
  (input + output forward, dy + dx backward) in FP32. Both per sample, times the samples held
  at once: with batch (re)normalization in training mode (the recipes' ``--norm brn``, or
  ``bn``) every BN needs the whole mini-batch's statistics before any sample can go on, so all
  B samples of a mini-batch are held (the generated C does exactly that, layer by layer); with
  frozen BN statistics (``--norm frozen``) one sample at a time with gradients accumulated over
  the mini-batch (as PULP-TrainLib trains).
- The frozen forward and the adaptive training never run at the same time, so the activation
  term is max(frozen peak, kept + transient).
- Replays: N LRs of D values at Q bits take N * ceil(D * Q / 8) bytes (Q = 32 is FP32); the
  new latents of the current CL batch are stored the same way (the frozen stage runs once per
  new image, DESIGN.md); every latent has a 1-byte label (up to 256 classes).
- Input image: 3 x res x res uint8. Scratch: im2col, the larger of the INT8 inference kernel
  (CMSIS-NN style: two columns of int16, ``2 * 2 * (C_in/g) k_h k_w`` bytes, none for
  depthwise and pointwise) and the FP32 training kernel (PULP-TrainLib: whole im2col matrix,
  ``4 * (C_in/g) k_h k_w H_out W_out * g`` bytes, none for pointwise and linear).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tinycl.device.costs import ADAPTIVE, FROZEN, LayerCost, lr_values

FP32_BYTES = 4
INT8_BYTES = 1
REQUANT_BYTES_PER_CHANNEL = 4 + 4 + 1  # int32 bias + int32 multiplier M0 + int8 shift
LABEL_BYTES = 1


def latent_bytes(values: int, bits: int) -> int:
    """Bytes of one bit-packed latent of ``values`` values at ``bits`` bits (32 = FP32)."""
    if bits == 32:
        return FP32_BYTES * values
    return math.ceil(values * bits / 8)


def replay_bytes(replays: int, values: int, bits: int) -> int:
    """N * ceil(D * Q / 8): the packed replay buffer, labels excluded."""
    return replays * latent_bytes(values, bits)


def relu_mask_bytes(values: int) -> int:
    return math.ceil(values / 8)  # 1 bit per ReLU output (TinyTL)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes of every buffer the device holds; ``total_bytes`` sums them (activations: peak)."""

    frozen_weights_bytes: int
    frozen_requant_bytes: int
    adaptive_weights_bytes: int
    adaptive_grads_bytes: int
    adaptive_momentum_bytes: int
    frozen_activation_peak_bytes: int
    adaptive_kept_activation_bytes: int
    adaptive_transient_peak_bytes: int
    replay_bytes: int
    new_latents_bytes: int
    label_bytes: int
    input_image_bytes: int
    scratch_bytes: int

    @property
    def activation_bytes(self) -> int:
        training = self.adaptive_kept_activation_bytes + self.adaptive_transient_peak_bytes
        return max(self.frozen_activation_peak_bytes, training)

    @property
    def total_bytes(self) -> int:
        return (
            self.frozen_weights_bytes
            + self.frozen_requant_bytes
            + self.adaptive_weights_bytes
            + self.adaptive_grads_bytes
            + self.adaptive_momentum_bytes
            + self.activation_bytes
            + self.replay_bytes
            + self.new_latents_bytes
            + self.label_bytes
            + self.input_image_bytes
            + self.scratch_bytes
        )

    def terms(self) -> dict[str, int]:
        """The terms that add up to the total (the activation term already a peak)."""
        return {
            "frozen_weights_bytes": self.frozen_weights_bytes,
            "frozen_requant_bytes": self.frozen_requant_bytes,
            "adaptive_weights_bytes": self.adaptive_weights_bytes,
            "adaptive_grads_bytes": self.adaptive_grads_bytes,
            "adaptive_momentum_bytes": self.adaptive_momentum_bytes,
            "activation_bytes": self.activation_bytes,
            "replay_bytes": self.replay_bytes,
            "new_latents_bytes": self.new_latents_bytes,
            "label_bytes": self.label_bytes,
            "input_image_bytes": self.input_image_bytes,
            "scratch_bytes": self.scratch_bytes,
        }

    def to_dict(self) -> dict[str, int]:
        return {
            **asdict(self),
            "activation_bytes": self.activation_bytes,
            "total_bytes": self.total_bytes,
        }


def kept_activation_bytes(row: LayerCost, bn_folded: bool = False) -> int:
    """FP32 input (if a weight gradient needs it) + BN x_hat + 1-bit ReLU mask, one sample.
    ``bn_folded`` (``--norm fold``): each BN folded into its conv with frozen statistics, so no
    x_hat is kept (the conv's own input already serves its weight gradient)."""
    kept = 0
    if row.weight_grad_macs > 0:
        kept += math.ceil(FP32_BYTES * row.in_values * row.kept_input_fraction)
    if row.norm_values > 0 and not bn_folded:
        kept += FP32_BYTES * row.out_values
    if row.has_relu:
        kept += relu_mask_bytes(row.out_values)
    return kept


def samples_held_for(norm: str, minibatch_size: int) -> int:
    """Samples whose training activations the device holds at once: the whole mini-batch when
    batch statistics are computed in training (``brn``, ``bn``), one with frozen statistics."""
    return minibatch_size if norm in ("brn", "bn") else 1


def frozen_scratch_bytes(row: LayerCost) -> int:
    """CMSIS-NN style partial im2col: two int16 columns of (C_in/g) k_h k_w values."""
    if row.kind != "conv":
        return 0
    out_pixels = row.out_shape[1] * row.out_shape[2]
    return 2 * 2 * (row.im2col_values // out_pixels)


def memory_breakdown(
    rows: list[LayerCost],
    lr_layer: int,
    replays: int,
    bits: int,
    new_latents: int,
    momentum: bool = True,
    samples_held: int = 1,
    bn_folded: bool = False,
) -> MemoryBreakdown:
    """``samples_held``: training samples whose activations live at once (``samples_held_for``);
    ``bn_folded``: ``--norm fold`` (``kept_activation_bytes``)."""
    frozen = [r for r in rows if r.stage == FROZEN]
    adaptive = [r for r in rows if r.stage == ADAPTIVE]
    trainable = sum(r.trainable_values for r in adaptive)
    d_values = lr_values(rows, lr_layer)
    # input + output of one conv, plus a residual block's input held for its add (the first
    # row's input is the image, counted apart)
    frozen_peak = max(
        (INT8_BYTES * ((r.in_values if r.index > 0 or r.unit else 0) + r.out_values
                       + (r.held_values if r.unit else 0)) for r in frozen),
        default=0,
    )
    transient = samples_held * max((FP32_BYTES * (r.in_values + r.out_values) for r in adaptive), default=0)
    scratch = max(
        [frozen_scratch_bytes(r) for r in frozen]
        + [FP32_BYTES * r.im2col_values for r in adaptive],
        default=0,
    )
    return MemoryBreakdown(
        frozen_weights_bytes=INT8_BYTES * sum(r.weight_values for r in frozen),
        frozen_requant_bytes=REQUANT_BYTES_PER_CHANNEL * sum(r.out_channels for r in frozen),
        adaptive_weights_bytes=FP32_BYTES
        * sum(r.weight_values + r.norm_values + r.norm_stat_values for r in adaptive),
        adaptive_grads_bytes=FP32_BYTES * trainable,
        adaptive_momentum_bytes=FP32_BYTES * trainable if momentum else 0,
        frozen_activation_peak_bytes=frozen_peak,
        adaptive_kept_activation_bytes=samples_held * sum(kept_activation_bytes(r, bn_folded) for r in adaptive),
        adaptive_transient_peak_bytes=transient,
        replay_bytes=replay_bytes(replays, d_values, bits),
        new_latents_bytes=replay_bytes(new_latents, d_values, bits),
        label_bytes=LABEL_BYTES * (replays + new_latents),
        input_image_bytes=INT8_BYTES * rows[0].in_values,
        scratch_bytes=scratch,
    )
