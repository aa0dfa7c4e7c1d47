import json

import numpy as np
import pytest
import torch
from clitools import cli  # noqa: F401 - test modules import it from here

from tinycl.models import create_model


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory):
    """A random-init backbone: skips pretraining so CLI tests stay fast."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "w.pt"
    torch.save(create_model("mobilenet_v1", width=0.25, num_classes=10).state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TINYCL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def small_run_args(weights, out, *extra):
    return ["run", "--res", 32, "--frames", 2, "--scenario", "nicv2_79", "--epochs", 1,
            "--replays", 60, "--weights", weights, "--out", out, "--quiet", *extra]


def read_summary(out):
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("wall_seconds")
    return summary


def write_arrays(path, res=32, n=40):
    rng = np.random.default_rng(0)
    np.savez(path, train_images=rng.integers(0, 255, (n, res, res, 3), dtype=np.uint8),
             train_labels=np.arange(n) % 4, test_images=rng.integers(0, 255, (8, res, res, 3), dtype=np.uint8),
             test_labels=np.arange(8) % 4)
