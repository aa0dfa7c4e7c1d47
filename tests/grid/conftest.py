"""Fixtures of the grid tests: a random-init backbone, a cache folder of the session's own, and
the tiny grid run once by the serial executor (the reference the other executors must match)."""

import os

import pytest
import torch
from gridtools import GRID, base_config, cli

from tinycl.models import create_model


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory):
    """A random-init backbone: skips pretraining so grid tests stay fast."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "w.pt"
    torch.save(create_model("mobilenet_v1", width=0.25, num_classes=10).state_dict(), path)
    return path


def cache_folder(tmp_path_factory):
    return str(tmp_path_factory.getbasetemp() / "cache")


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TINYCL_CACHE", cache_folder(tmp_path_factory))


@pytest.fixture(autouse=True)
def restore_threads():
    """`tinycl sweep --threads` (and the serial executor) set torch's thread count in this process."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def serial_grid(tmp_path_factory, weights_file):
    """The tiny grid run by ``--executor serial``: (its folder, the base config file)."""
    folder = tmp_path_factory.mktemp("serial")
    base = base_config(folder, weights_file)
    saved = os.environ.get("TINYCL_CACHE"), torch.get_num_threads()
    os.environ["TINYCL_CACHE"] = cache_folder(tmp_path_factory)  # session scope: before the autouse fixture
    try:
        code, out, err = cli("sweep", "--config", base, *GRID, "--executor", "serial", "--out", folder / "grid")
    finally:
        if saved[0] is None:
            os.environ.pop("TINYCL_CACHE", None)
        else:
            os.environ["TINYCL_CACHE"] = saved[0]
        torch.set_num_threads(saved[1])
    assert code == 0, err
    assert out.splitlines()[0].endswith("3 to run on serial: one run at a time in this process × 1 thread; "
                                        "estimated time: no estimate yet (no finished run in this folder)")
    return folder / "grid", base
