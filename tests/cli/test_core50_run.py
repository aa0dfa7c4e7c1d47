"""`tinycl run --benchmark core50` on a tiny fake CORe50 tree in the official layout."""

import numpy as np
import pytest
from conftest import cli, read_summary
from PIL import Image

RES = 32


def rel(session, obj, frame):
    return f"s{session}/o{obj + 1}/C_{session:02d}_{obj + 1:02d}_{frame:03d}.png"


@pytest.fixture(scope="module")
def core50_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("core50")
    rng = np.random.default_rng(0)
    for s in range(1, 12):
        for o in range(50):
            path = root / "core50_128x128" / rel(s, o, 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (RES, RES, 3), dtype=np.uint8)).save(path)
    run0 = root / "NIC_v2_79" / "run0"
    run0.mkdir(parents=True)
    (run0 / "train_batch_00_filelist.txt").write_text("".join(f"{rel(1, o, 0)} {o}\n" for o in range(0, 50, 5)))
    (run0 / "train_batch_01_filelist.txt").write_text(f"{rel(2, 1, 0)} 1\n{rel(4, 2, 0)} 2\n")
    (run0 / "test_filelist.txt").write_text("".join(f"{rel(s, o, 0)} {o}\n" for s in (3, 7, 10) for o in range(50)))
    return root


def test_core50_with_official_filelists(tmp_path, core50_root, weights_file):
    code, _, err = cli("run", "--benchmark", "core50", "--data-root", core50_root, "--res", RES, "--scenario",
                       "nicv2_79", "--weights", weights_file, "--epochs", 1, "--replays", 8, "--out", tmp_path,
                       "--quiet")
    assert code == 0, err
    s = read_summary(tmp_path)
    assert s["num_batches"] == 2 and s["train_images"] == 12 and s["num_classes"] == 50
    assert s["test_images"] == 8  # reduced test set: one frame in 20 of the 150 listed
    assert s["data_note"] is None


def test_core50_generates_nicv2_without_filelists(tmp_path, core50_root, weights_file):
    code, _, err = cli("run", "--benchmark", "core50", "--data-root", core50_root, "--res", RES, "--scenario",
                       "nicv2_391", "--weights", weights_file, "--epochs", 1, "--replays", 8, "--eval-every", 100,
                       "--out", tmp_path, "--quiet", "--no-fidelity")
    assert code == 0, err
    s = read_summary(tmp_path)
    assert s["num_batches"] == 391 and "generated" in s["data_note"]


def test_core50_missing_dataset_is_one_line(tmp_path):
    code, _, err = cli("run", "--benchmark", "core50", "--data-root", tmp_path / "nothing", "--out", tmp_path / "o",
                       "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "core50" in err.lower()
