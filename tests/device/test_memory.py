"""Device memory layout of the paper's configuration, term by term."""

import pytest
from torch import nn

from tinycl.device import CostConfig, estimate, latent_bytes, replay_bytes
from tinycl.models import create_model, layer_sequence


@pytest.fixture(scope="module")
def paper():
    # MobileNetV1 1.0 at 128x128, LR layer 19, 1500 LRs at 8 bits, 300 new images per batch,
    # one training sample at a time (frozen BN statistics: the per-sample convention).
    return estimate(CostConfig(norm="frozen"))


def test_replay_figures():
    # REFERENCES.md: one LR at layer 19 = 32,768 values; 1500 LRs = 49.15 MB at 8 bits,
    # 196.6 MB FP32, 43.0 MB at 7 bits; 3000 LRs at 8 bits = 98.3 MB; layer 23: 12.3 MB.
    assert replay_bytes(1500, 32_768, 8) == 49_152_000
    assert replay_bytes(1500, 32_768, 32) == 196_608_000
    assert replay_bytes(1500, 32_768, 7) == 43_008_000
    assert replay_bytes(3000, 32_768, 8) == 98_304_000
    assert replay_bytes(1500, 8_192, 8) == 12_288_000
    assert latent_bytes(10, 3) == 4  # ceil(30 / 8): bit-packed, padded to a byte


def test_each_memory_term(paper):
    mem = paper.memory
    assert paper.lr_values == 32_768
    assert mem.replay_bytes == 49_152_000
    assert mem.new_latents_bytes == 300 * 32_768
    assert mem.label_bytes == 1500 + 300  # 1 byte per label
    assert mem.input_image_bytes == 3 * 128 * 128
    assert mem.frozen_weights_bytes == 1_069_504  # INT8, BN folded: conv weights of 0..19
    assert mem.frozen_requant_bytes == 9 * 5_824  # int32 bias + int32 M0 + int8 shift
    assert mem.adaptive_weights_bytes == 8_749_056  # FP32 weights, BN affine and statistics
    assert mem.adaptive_grads_bytes == 4 * 2_177_024
    assert mem.adaptive_momentum_bytes == 4 * 2_177_024
    assert mem.frozen_activation_peak_bytes == 32 * 64 * 64 + 64 * 64 * 64  # layer 2 in + out
    assert mem.adaptive_kept_activation_bytes == 1_334_272
    assert mem.adaptive_transient_peak_bytes == 4 * (32_768 + 32_768)
    assert mem.activation_bytes == 1_334_272 + 262_144  # peak of the two phases, not the sum
    assert mem.scratch_bytes == 4 * 512 * 9 * 8 * 8  # FP32 im2col of depthwise layer 21
    assert mem.total_bytes == 89_096_584
    assert sum(mem.terms().values()) == mem.total_bytes


def test_batch_renorm_holds_the_whole_mini_batch(paper):
    """With batch statistics in training every BN needs all 128 samples before any goes on:
    kept and transient activations are 128 times one sample's; every other term is unchanged."""
    brn = estimate(CostConfig(norm="brn")).memory
    one = paper.memory
    assert brn.adaptive_kept_activation_bytes == 128 * one.adaptive_kept_activation_bytes == 128 * 1_334_272
    assert brn.adaptive_transient_peak_bytes == 128 * one.adaptive_transient_peak_bytes
    assert brn.activation_bytes == 128 * (1_334_272 + 262_144)
    assert brn.total_bytes == one.total_bytes - one.activation_bytes + brn.activation_bytes == 291_841_416
    assert estimate(CostConfig(norm="brn", minibatch_size=32)).memory.activation_bytes == 32 * (1_334_272 + 262_144)


def test_terms_from_the_model(paper):
    seq = layer_sequence(create_model("mobilenet_v1"))
    conv_weights = sum(
        m.weight.numel() for layer in seq[:20] for m in layer.modules() if isinstance(m, nn.Conv2d)
    )
    assert paper.memory.frozen_weights_bytes == conv_weights
    trainable = sum(p.numel() for layer in seq[20:] for p in layer.parameters())
    assert paper.memory.adaptive_grads_bytes == 4 * trainable
    stats = sum(
        b.numel()
        for layer in seq[20:]
        for name, b in layer.named_buffers()
        if name.endswith(("running_mean", "running_var"))
    )
    assert paper.memory.adaptive_weights_bytes == 4 * (trainable + stats)


def test_kept_activations_tinytl_convention(paper):
    # Layer 20 (pw): FP32 input for dW + FP32 BN x_hat + 1-bit ReLU mask.
    # Layer 28 (head): FP32 input only. Pool keeps nothing.
    from tinycl.device.memory import kept_activation_bytes

    rows = paper.layers
    assert kept_activation_bytes(rows[20]) == 4 * 32_768 + 4 * 32_768 + 32_768 // 8
    assert kept_activation_bytes(rows[27]) == 0
    assert kept_activation_bytes(rows[28]) == 4 * 1024


def test_fp32_replays_and_no_momentum():
    fp32 = estimate(CostConfig(bits=32, momentum=False))
    assert fp32.memory.replay_bytes == 196_608_000
    assert fp32.memory.adaptive_momentum_bytes == 0
