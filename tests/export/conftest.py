"""Shared fixtures of the export tests: toolchain checks and the host build of the runtime."""

import os

import numpy as np
import pytest
import torch
from clitools import cli

from tinycl.data.base import to_tensor_batch
from tinycl.export import make_deployment
from tinycl.export.toolchains import missing_tools
from tinycl.models import create_model
from tinycl.quant import LatentQuantizer, pack_bits, quantize_frozen_stage
from tinycl.train.stages import prepare_stages


def check_toolchain(target: str) -> None:
    """Skip (with the reason) when a target's tools are missing; with CI=true, fail instead:
    a CI run must never pass by silently skipping the device checks."""
    missing = missing_tools(target)
    if not missing:
        return
    message = f"{target} toolchain missing: {', '.join(missing)} (run scripts/install_toolchains.sh)"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def require_toolchain():
    return check_toolchain


@pytest.fixture(scope="session")
def kernels(tmp_path_factory):
    """Every runtime kernel compiled once for the host, called through ctypes."""
    from tinycl.export.host_kernels import HostKernels, build_host_library

    check_toolchain("host")
    return HostKernels(build_host_library(tmp_path_factory.mktemp("runtime")))


@pytest.fixture(autouse=True, scope="module")
def export_tests_one_thread(one_thread):
    """One intra-op thread (tests/conftest.py): small torch ops lose to oversubscription."""
    yield


RES = 32  # pixels: small enough for QEMU to run a few dozen frames in a second
LR_LAYER = 19
FRAMES = 24


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


def deployment(bits: int, mode: str, per_channel: bool, replays: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    calib = camera_frames(16, rng)
    frozen, adaptive = tiny_mobilenet(calib, seed)
    stage = quantize_frozen_stage(frozen, to_tensor_batch(calib))
    u8 = stage(to_tensor_batch(calib)).numpy()
    quantizer = LatentQuantizer(bits, mode, per_channel, latent_scale=stage.output_scale).calibrate(u8)
    rows = pack_bits(quantizer.encode(u8[:replays]).reshape(replays, -1), bits) if replays else None
    labels = rng.integers(0, 10, replays) if replays else None
    dep = make_deployment(stage, quantizer, adaptive, (RES, RES), replay_rows=rows, replay_labels=labels,
                          meta={"model": "mobilenet_v1", "width": 0.25, "lr_layer": LR_LAYER})
    return dep, adaptive, camera_frames(FRAMES, rng)


@pytest.fixture(scope="session")
def tiny_deployment():
    """``deployment(bits, mode, per_channel, replays, seed) -> (Deployment, adaptive module, frames)``."""
    return deployment


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory):
    """A finished, deployable run of the default configuration (MobileNetV1 x0.25 with its
    shipped pretrained weights, 64 px, LR layer 19, NICv2-79, 8-bit LRs), made short: 2 frames
    per video, 1 epoch, 60 replays (~10 s). Its synthetic test set holds 300 images."""
    base = tmp_path_factory.mktemp("tiny_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TINYCL_CACHE", str(base / "cache"))
        code, _, err = cli("run", "--frames", 2, "--epochs", 1, "--replays", 60, "--out", base / "run", "--quiet")
    assert code == 0, err
    return base / "run"


@pytest.fixture(scope="session")
def tinycl_cli():
    """``clitools.cli``, as a fixture."""
    return cli
