"""The exported program's outputs, the Python run's, and their comparison.

The harness (``runtime/harness/main.c``) writes, per test frame, the LR layer's UINT8 output,
its Q-bit codes, the packed bytes, the FP32 logits and the prediction, and per exported
replay row the unpacked codes, logits, prediction and label. ``reference_outputs`` computes
the same from the ``Deployment`` in Python with the learner's own code path, and
``compare_outputs`` states the verdict: integers bit-identical, logits within ``rtol``
(relative to each image's largest logit magnitude), predictions identical.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tinycl.data.base import to_tensor_batch
from tinycl.errors import TinyclError
from tinycl.export.deployment import Deployment
from tinycl.export.reference import adaptive_fp32_fw, module_logits
from tinycl.quant.packing import pack_bits, unpack_bits

INPUT_MAGIC = b"TCI1"
OUTPUT_MAGIC = b"TCO1"
LOGITS_RTOL = 1e-5  # issue 16: adaptive-stage logits within 1e-5 relative


@dataclass
class Outputs:
    """Per frame: lr_u8 / codes [N, D] uint8, packed [N, R] uint8, logits [N, K] float32,
    predictions [N] int64; per replay row: replay_codes, replay_logits, replay_predictions,
    replay_labels."""

    lr_u8: np.ndarray
    codes: np.ndarray
    packed: np.ndarray
    logits: np.ndarray
    predictions: np.ndarray
    replay_codes: np.ndarray
    replay_logits: np.ndarray
    replay_predictions: np.ndarray
    replay_labels: np.ndarray
    console: str = field(default="", compare=False)


def write_input_file(path: Path, frames: np.ndarray) -> None:
    """Frames uint8 [N, H, W, C] -> the harness's input file."""
    frames = np.ascontiguousarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise TinyclError(f"frames must be uint8 [N, H, W, C], got {frames.dtype} {frames.shape}")
    n, height, width, channels = frames.shape
    Path(path).write_bytes(INPUT_MAGIC + struct.pack("<4I", n, height, width, channels) + frames.tobytes())


def read_output_file(path: Path) -> Outputs:
    data = Path(path).read_bytes()
    if len(data) < 24 or data[:4] != OUTPUT_MAGIC:
        raise RuntimeError(f"{path} is not a tinycl harness output file")
    frames, replays, values, row_bytes, classes = struct.unpack_from("<5I", data, 4)
    frame_record = np.dtype([("lr_u8", np.uint8, values), ("codes", np.uint8, values),
                             ("packed", np.uint8, row_bytes), ("logits", "<f4", classes), ("prediction", "<i4")])
    replay_record = np.dtype([("codes", np.uint8, values), ("logits", "<f4", classes), ("prediction", "<i4"),
                              ("label", "<i4")])
    expected = 24 + frames * frame_record.itemsize + replays * replay_record.itemsize
    if len(data) != expected:
        raise RuntimeError(f"{path} holds {len(data)} bytes, expected {expected}")
    fr = np.frombuffer(data, frame_record, frames, 24)
    rp = np.frombuffer(data, replay_record, replays, 24 + frames * frame_record.itemsize)
    return Outputs(fr["lr_u8"].copy(), fr["codes"].copy(), fr["packed"].copy(), fr["logits"].astype(np.float32),
                   fr["prediction"].astype(np.int64), rp["codes"].copy(), rp["logits"].astype(np.float32),
                   rp["prediction"].astype(np.int64), rp["label"].astype(np.int64))


def reference_outputs(dep: Deployment, frames: np.ndarray, adaptive: nn.Module | None = None) -> Outputs:
    """What the Python run computes for ``frames`` (uint8 [N, H, W, C]) and the replay rows.

    The frozen stage is ``IntFrozenStage.__call__`` on ``to_tensor_batch`` (the path of
    ``LatentEncoder.frozen_u8``); codes, decode and packing are the ``LatentQuantizer``'s and
    ``tinycl.quant.packing``'s. Logits come from ``adaptive`` in eval mode when given (the
    trained module itself), else from the deployment's lowered ops.
    """
    n = len(frames)
    shape = dep.latent_shape
    lr = dep.stage(to_tensor_batch(frames)).numpy().reshape(n, *shape)  # int8 for a signed LR layer
    codes = dep.quantizer.encode(lr)
    lr_u8 = lr.view(np.uint8)  # the bytes the harness writes (INT8 codes in two's complement)

    def logits_of(codes_nchw: np.ndarray) -> np.ndarray:
        latents = torch.from_numpy(dep.quantizer.decode(codes_nchw))
        if adaptive is not None:
            return module_logits(adaptive, latents).numpy().astype(np.float32)
        return adaptive_fp32_fw(dep.adaptive, latents).numpy()

    logits = logits_of(codes)
    flat = codes.reshape(n, -1)
    if dep.replay_rows is not None and len(dep.replay_rows):
        replay_codes = unpack_bits(dep.replay_rows, dep.bits, dep.latent_values)
        replay_logits = logits_of(replay_codes.reshape(-1, *shape))
        replay_labels = dep.replay_labels.astype(np.int64)
    else:
        replay_codes = np.zeros((0, dep.latent_values), np.uint8)
        replay_logits = np.zeros((0, dep.num_classes), np.float32)
        replay_labels = np.zeros(0, np.int64)
    return Outputs(lr_u8.reshape(n, -1), flat, pack_bits(flat, dep.bits), logits, logits.argmax(axis=1),
                   replay_codes, replay_logits, replay_logits.argmax(axis=1), replay_labels)


def max_relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """Largest ``max|got - want| / max|want|`` over rows (0 for no rows)."""
    if got.shape != want.shape:
        return float("inf")
    if want.size == 0:
        return 0.0
    scale = np.maximum(np.abs(want.astype(np.float64)).max(axis=1), np.finfo(np.float32).tiny)
    return float((np.abs(got.astype(np.float64) - want).max(axis=1) / scale).max())


def compare_outputs(want: Outputs, got: Outputs, rtol: float = LOGITS_RTOL) -> dict:
    """The checks of issue 16 as a JSON-ready dict; ``ok`` when every one holds."""

    def same(a: np.ndarray, b: np.ndarray) -> bool:
        return a.shape == b.shape and bool(np.array_equal(a, b))

    checks = {
        "frames": int(len(want.codes)),
        "replay_rows": int(len(want.replay_codes)),
        "lr_u8_identical": same(want.lr_u8, got.lr_u8),
        "codes_identical": same(want.codes, got.codes),
        "packed_identical": same(want.packed, got.packed),
        "predictions_identical": same(want.predictions, got.predictions),
        "logits_max_rel_error": max_relative_error(got.logits, want.logits),
        "replay_codes_identical": same(want.replay_codes, got.replay_codes),
        "replay_predictions_identical": same(want.replay_predictions, got.replay_predictions),
        "replay_labels_identical": same(want.replay_labels, got.replay_labels),
        "replay_logits_max_rel_error": max_relative_error(got.replay_logits, want.replay_logits),
        "logits_rtol": rtol,
    }
    checks["ok"] = all(v for k, v in checks.items() if k.endswith("_identical")) and \
        checks["logits_max_rel_error"] <= rtol and checks["replay_logits_max_rel_error"] <= rtol
    return checks
