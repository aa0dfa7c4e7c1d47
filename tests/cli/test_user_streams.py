"""Issue 15: your own data gives a continual stream for every scenario, or says why not.

One test per row of README's "Your own data" table, through the CLI."""

import json

import numpy as np
import pytest
from conftest import cli, read_summary
from PIL import Image

RES = 32


def arrays(path, ids=False, classes=6, per_class=10):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), per_class)
    data = {"train_images": rng.integers(0, 255, (len(labels), RES, RES, 3), dtype=np.uint8), "train_labels": labels,
            "test_images": rng.integers(0, 255, (classes * 2, RES, RES, 3), dtype=np.uint8),
            "test_labels": np.repeat(np.arange(classes), 2)}
    if ids:  # 2 objects per class, 3 sessions
        data["train_objects"] = labels * 2 + np.arange(len(labels)) % 2
        data["train_sessions"] = 1 + (np.arange(len(labels)) // 2) % 3
    np.savez(path, **data)
    return path


def run(tmp_path, weights, data, scenario, *extra, benchmark="arrays"):
    out = tmp_path / scenario
    code, _, err = cli("run", "--benchmark", benchmark, "--data-root", data, "--res", RES, "--scenario", scenario,
                       "--epochs", 1, "--replays", 20, "--weights", weights, "--out", out, "--quiet", *extra)
    return code, err, out


@pytest.mark.parametrize("scenario", ["nicv2_391", "nicv2_196", "nicv2_79"])
def test_nicv2_without_ids_is_refused_naming_the_keys(tmp_path, weights_file, scenario):
    code, err, _ = run(tmp_path, weights_file, arrays(tmp_path / "d.npz"), scenario)
    assert code == 2
    assert err == (f"tinycl: error: --scenario {scenario} needs per-sample sessions and objects ids "
                   "(train_sessions, train_objects in the arrays file; a folder has no object ids); "
                   "this data fits: ni, nc, ci\n")


def test_nicv2_with_ids_is_a_stream(tmp_path, weights_file):
    code, err, out = run(tmp_path, weights_file, arrays(tmp_path / "d.npz", ids=True), "nicv2_391")
    assert code == 0, err
    s = read_summary(out)
    # 12 objects x 3 sessions = 36 videos; batch 0 = the first object of each class in session 1.
    assert s["num_batches"] == 1 + 36 - 6 and s["data_note"] is None


def test_ni_without_sessions_is_k_shuffled_batches_of_every_class(tmp_path, weights_file):
    code, err, out = run(tmp_path, weights_file, arrays(tmp_path / "d.npz"), "ni", "--batches", 4)
    assert code == 0, err
    s = read_summary(out)
    assert s["num_batches"] == 4 and "split into 4 shuffled batches" in s["data_note"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["new_samples"] for r in records] == [15, 15, 15, 15]


def test_ni_with_sessions_is_one_batch_per_session(tmp_path, weights_file):
    code, err, out = run(tmp_path, weights_file, arrays(tmp_path / "d.npz", ids=True), "ni")
    assert code == 0, err
    assert read_summary(out)["num_batches"] == 3


@pytest.mark.parametrize("scenario", ["nc", "ci"])
def test_nc_and_ci_are_tasks_of_new_classes(tmp_path, weights_file, scenario):
    code, err, out = run(tmp_path, weights_file, arrays(tmp_path / "d.npz"), scenario, "--classes-per-task", 3)
    assert code == 0, err
    s = read_summary(out)
    assert s["num_batches"] == 2 and "2 tasks of 3 new classes" in s["data_note"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["classes_seen"] for r in records] == [3, 6]


def test_a_folder_with_sessions_gives_ni_per_session_and_nc_tasks(tmp_path, weights_file):
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for split, sessions in (("train", ("s1", "s2")), ("test", ("s1",))):
        for c in ("cat", "dog", "owl", "yak"):
            for session in sessions:
                (root / split / c / session).mkdir(parents=True)
                for i in range(3):
                    Image.fromarray(rng.integers(0, 255, (RES, RES, 3), dtype=np.uint8)).save(
                        root / split / c / session / f"{i}.png")
    code, err, out = run(tmp_path, weights_file, root, "ni", benchmark="folder")
    assert code == 0, err
    assert read_summary(out)["num_batches"] == 2
    code, err, out = run(tmp_path, weights_file, root, "nc", benchmark="folder")
    assert code == 0, err
    assert read_summary(out)["num_batches"] == 2
    code, err, _ = run(tmp_path, weights_file, root, "nicv2_79", benchmark="folder")
    assert code == 2 and "needs per-sample objects ids" in err and "this data fits: ni, nc, ci" in err


def test_test_labels_never_seen_in_training_get_a_note(tmp_path, weights_file):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(path, train_images=rng.integers(0, 255, (20, RES, RES, 3), dtype=np.uint8), train_labels=np.arange(20) % 2,
             test_images=rng.integers(0, 255, (6, RES, RES, 3), dtype=np.uint8), test_labels=np.arange(6) % 3)
    code, err, out = run(tmp_path, weights_file, path, "nc")
    assert code == 0, err
    assert "test labels never seen in training: 2 (1 classes count as errors)" in read_summary(out)["data_note"]


def test_resize_scales_other_sizes_and_is_part_of_the_cache_key(tmp_path, weights_file):
    rng = np.random.default_rng(0)
    path = tmp_path / "big.npz"
    np.savez(path, train_images=rng.integers(0, 255, (24, 48, 48, 3), dtype=np.uint8), train_labels=np.arange(24) % 4,
             test_images=rng.integers(0, 255, (8, 48, 48, 3), dtype=np.uint8), test_labels=np.arange(8) % 4)
    code, err, _ = run(tmp_path, weights_file, path, "ci")
    assert code == 2 and "images are 48x48 but the model expects 32x32" in err
    code, err, out = run(tmp_path, weights_file, path, "ci", "--resize")
    assert code == 0, err
    assert read_summary(out)["num_batches"] == 2
    code, err, out2 = run(tmp_path / "again", weights_file, path, "ci", "--resize", "--no-latent-cache")
    assert code == 0, err
    assert read_summary(out2) == read_summary(out)
