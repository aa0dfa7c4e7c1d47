"""Helpers of the export tests that test modules import by name (a module named ``conftest``
is ambiguous when several test folders are collected together)."""

import numpy as np
import torch

from tinycl.data.base import to_tensor_batch
from tinycl.models import create_model
from tinycl.train.stages import prepare_stages

RES = 32  # pixels: small enough for QEMU to run a few dozen frames in a second
LR_LAYER = 19


def camera_frames(count: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [count, RES, RES, 3]: a colour, a gradient, a stripe pattern and noise per frame,
    so that frames differ in more than noise (uniform noise frames all look alike to a CNN)."""
    rows, cols = np.mgrid[0:RES, 0:RES] / (RES - 1)
    frames = []
    for _ in range(count):
        colour, gradient, stripes = rng.uniform(0, 255, 3), rng.uniform(-120, 120, 3), rng.uniform(-80, 80, 3)
        frequency = rng.uniform(0.5, 4)
        frame = colour + rows[..., None] * gradient + np.sin(2 * np.pi * frequency * cols)[..., None] * stripes
        frames.append((frame + rng.normal(0, 20, frame.shape)).clip(0, 255).astype(np.uint8))
    return np.stack(frames)


def tiny_mobilenet(calib: np.ndarray, seed: int = 0, model_name: str = "mobilenet_v1", lr_layer: int = LR_LAYER):
    """MobileNetV1 x0.25 cut at layer 19 (or another model and cut), BRN in the adaptive stage.
    BN statistics are measured on ``calib`` and the affine parameters drawn at random: with
    PyTorch's default init and fresh BNs the signal shrinks layer after layer and every frame
    gets the same logits."""
    torch.manual_seed(seed)
    model = create_model(model_name, width=0.25, num_classes=10)
    generator = torch.Generator().manual_seed(seed + 1)
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in batch_norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration pass
            bn.weight.uniform_(0.5, 1.5, generator=generator)
            bn.bias.uniform_(-0.2, 0.2, generator=generator)
        model.train()
        model(to_tensor_batch(calib))
    model.eval()
    frozen, adaptive = prepare_stages(model, lr_layer, "brn")
    return frozen, adaptive


