"""Issue 15: a newcomer's first hour, scripted. Real processes, output piped (not a terminal),
an empty cache: every command works or refuses in one line, and a run shows progress lines."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tinycl.models import model_names

RES = 64  # the shipped backbone's resolution: no pretraining in this hour


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    return dict(os.environ, HOME=str(home), TINYCL_CACHE=str(home / ".cache" / "tinycl"))


def tinycl(env, *args, timeout=600):
    done = subprocess.run([sys.executable, "-m", "tinycl", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def one_line_refusal(code, err):
    assert code == 2 and err.count("\n") == 1 and err.startswith("tinycl: error: ") and "Traceback" not in err


@pytest.fixture(scope="module")
def first_run(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "first"
    code, stdout, stderr = tinycl(env, "run", "--frames", 2, "--epochs", 1, "--replays", 60, "--out", out)
    assert code == 0, stderr
    return out, stdout, stderr


def test_a_piped_run_prints_timestamped_progress(first_run):
    out, stdout, stderr = first_run
    lines = stderr.splitlines()
    stamp = r"^\[\d\d:\d\d:\d\d\] "
    assert any(re.match(stamp + "generating synthetic-core50 \\(sessions\\): started", line) for line in lines)
    batches = [line for line in lines if re.match(stamp + r"batch \d+/78: accuracy \d+\.\d\d%, elapsed .*, ETA ", line)]
    assert len(batches) == 79
    assert "\x1b[" not in stderr  # no terminal codes in a pipe
    assert stdout.startswith("latent-replay: final accuracy") and "60 slots of 8-bit LRs" in stdout
    assert (out / "summary.json").is_file() and (out / "accuracy_matrix.csv").is_file()


def test_quiet_is_quiet(env, tmp_path):
    code, stdout, stderr = tinycl(env, "run", "--frames", 2, "--epochs", 1, "--replays", 60, "--quiet",
                                  "--out", tmp_path / "q")
    assert code == 0 and stderr == "" and stdout.count("\n") == 1


def own_arrays(path):
    rng = np.random.default_rng(0)
    np.savez(path, train_images=rng.integers(0, 255, (24, RES, RES, 3), dtype=np.uint8), train_labels=np.arange(24) % 4,
             test_images=rng.integers(0, 255, (8, RES, RES, 3), dtype=np.uint8), test_labels=np.arange(8) % 4)
    return path


@pytest.mark.parametrize("scenario", ["nicv2_391", "nicv2_196", "nicv2_79", "ni", "nc", "ci"])
def test_own_arrays_without_ids_under_every_scenario(env, tmp_path, scenario):
    data = own_arrays(tmp_path / "mine.npz")
    code, stdout, stderr = tinycl(env, "run", "--benchmark", "arrays", "--data-root", data, "--scenario", scenario,
                                  "--epochs", 1, "--replays", 8, "--out", tmp_path / "o")
    if scenario.startswith("nicv2"):
        one_line_refusal(code, stderr)
        assert "train_sessions, train_objects" in stderr and "this data fits: ni, nc, ci" in stderr
    else:
        assert code == 0, stderr
        assert "over 1 batches" not in stdout
        assert re.search(r"batch 1/\d+: accuracy", stderr)


def test_own_folder(env, tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for c in ("apple", "pear"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(4 if split == "train" else 2):
                Image.fromarray(rng.integers(0, 255, (RES, RES, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / c / f"{i}.png")
    code, stdout, stderr = tinycl(env, "run", "--benchmark", "folder", "--data-root", tmp_path / "data",
                                  "--scenario", "nc", "--classes-per-task", 1, "--epochs", 1, "--replays", 4,
                                  "--out", tmp_path / "o")
    assert code == 0, stderr
    assert "over 2 batches" in stdout


def test_cost_from_the_run_report_and_layers(env, first_run, tmp_path):
    out, _, _ = first_run
    code, stdout, stderr = tinycl(env, "cost", "--from", out)
    assert code == 0, stderr
    assert f"priced from {out}" in stdout
    code, _, stderr = tinycl(env, "report", out)
    assert code == 0, stderr
    for model in model_names():
        code, stdout, stderr = tinycl(env, "layers", model)
        assert code == 0, stderr
        assert "default LR layer" in stdout
    one_line_refusal(*tinycl(env, "cost", "--from", tmp_path)[::2])
    one_line_refusal(*tinycl(env, "layers", "resnet9")[::2])
