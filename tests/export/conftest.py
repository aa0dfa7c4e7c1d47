"""Shared fixtures of the export tests: toolchain checks and the host build of the runtime."""

import os

import numpy as np
import pytest
from clitools import cli
from exporttools import LR_LAYER, RES, camera_frames, tiny_mobilenet

from tinycl.data.base import to_tensor_batch
from tinycl.export import make_deployment
from tinycl.export.toolchains import missing_tools
from tinycl.quant import LatentQuantizer, pack_bits, quantize_frozen_stage


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


FRAMES = 24


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
