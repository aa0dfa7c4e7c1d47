"""Issue 14: caches keyed by content, and every I/O fault one line (exit 2), nothing lost.

- The latent cache of user data follows the data's content, not its names, sizes or times:
  rewritten bytes with the same size and mtime, and an added empty class folder (which
  renumbers the labels), are new data.
- Damaged cache files (a byte-flip fuzz) are reported and rebuilt, never fatal, and never
  crash a later run.
- No space left (a 128 KiB tmpfs when this machine can mount one; an injected ENOSPC always),
  read-only folders (injected EROFS), TINYCL_CACHE pointing at a file: one line naming the
  path and the cause, exit 2, the earlier run directory intact.
"""

import errno
import hashlib
import os
import subprocess

import numpy as np
import pytest
from conftest import cli, read_summary, small_run_args, write_arrays
from PIL import Image


def tree_digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def arrays_args(data, weights, out, *extra):
    return ["run", "--benchmark", "arrays", "--data-root", data, "--res", 32, "--epochs", 1, "--scenario", "ni",
            "--weights", weights, "--out", out, *extra]  # not --quiet: a cache hit's note must show


def test_rewritten_bytes_with_the_same_size_and_mtime_are_new_data(tmp_path, weights_file):
    data = tmp_path / "d.npz"
    write_arrays(data)
    code, _, err = cli(*arrays_args(data, weights_file, tmp_path / "a"))
    assert code == 0, err
    stat = data.stat()
    # Same shapes, other labels; then the size and mtime of the old file put back.
    rng = np.random.default_rng(1)
    np.savez(data, train_images=rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8),
             train_labels=(np.arange(40) + 1) % 4, test_images=rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8),
             test_labels=(np.arange(8) + 1) % 4)
    assert data.stat().st_size == stat.st_size
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    code, _, err = cli(*arrays_args(data, weights_file, tmp_path / "b"))
    assert code == 0, err
    assert "reused" not in err  # not served the old latents
    code, _, err = cli(*arrays_args(data, weights_file, tmp_path / "b2"))
    assert code == 0 and "frozen-stage outputs reused" in err  # the control: unchanged data is a hit
    fresh = tmp_path / "fresh-cache"
    env_code, _, err = cli(*arrays_args(data, weights_file, tmp_path / "c", "--no-latent-cache"))
    assert env_code == 0, err
    assert read_summary(tmp_path / "b") == read_summary(tmp_path / "c")
    assert not fresh.exists()


def make_folder(root, classes, res=32, per_class=6):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class if split == "train" else 2):
                Image.fromarray(rng.integers(0, 255, (res, res, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")


def test_an_empty_class_folder_changes_the_labels_and_the_cache_key(tmp_path, weights_file):
    root = tmp_path / "data"
    make_folder(root, ["b", "c"])
    args = ["run", "--benchmark", "folder", "--data-root", root, "--res", 32, "--epochs", 1, "--scenario", "ni",
            "--weights", weights_file]  # not --quiet: a cache hit's note must show
    code, _, err = cli(*args, "--out", tmp_path / "a")
    assert code == 0, err
    (root / "train" / "a").mkdir()  # an empty class folder sorts first: b, c become 1, 2
    code, _, err = cli(*args, "--out", tmp_path / "b")
    assert code == 0, err
    assert "reused" not in err
    code, _, err = cli(*args, "--out", tmp_path / "b2")
    assert code == 0 and "frozen-stage outputs reused" in err  # the control: unchanged data is a hit
    assert read_summary(tmp_path / "b")["num_classes"] == 3
    code, _, err = cli(*args, "--out", tmp_path / "c", "--no-latent-cache")
    assert code == 0, err
    assert read_summary(tmp_path / "b") == read_summary(tmp_path / "c")


def test_byte_flipped_cache_files_are_rebuilt_never_fatal(tmp_path, weights_file, monkeypatch):
    """Single-byte flips of a cache file (the first 64 bytes and 600 random positions): each is
    either detected by ``LatentCache.load`` (reported, None: rebuilt) or lies outside the arrays
    (zip metadata) and the arrays come back intact -- never an exception; a run over a damaged
    file rebuilds it and gives the same summary."""
    import warnings

    from tinycl.train.latent_cache import LatentCache

    cache = tmp_path / "cache"
    monkeypatch.setenv("TINYCL_CACHE", str(cache))
    code, _, err = cli(*small_run_args(weights_file, tmp_path / "ref"))
    assert code == 0, err
    reference = read_summary(tmp_path / "ref")
    target = sorted((cache / "latents").rglob("batch_0002.npz"))[0]
    original = target.read_bytes()
    loader = LatentCache(target.parent.parent, target.parent.name)
    items, labels = loader.load("batch_0002")
    rng = np.random.default_rng(0)
    positions = sorted(set(rng.integers(0, len(original), 600).tolist()) | set(range(64)))
    served = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for pos in positions:
            damaged = bytearray(original)
            damaged[pos] ^= 0xFF
            target.write_bytes(bytes(damaged))
            hit = loader.load("batch_0002")  # never raises
            if hit is not None:  # a flip outside the arrays (zip metadata): the stored arrays, intact
                served += 1
                assert np.array_equal(hit[0], items) and np.array_equal(hit[1], labels)
    assert served < len(positions) // 4
    target.write_bytes(b"not a zip at all")
    with pytest.warns(UserWarning, match="is corrupted or from another version; recomputing it"):
        code, _, err = cli(*small_run_args(weights_file, tmp_path / "again"))
    assert code == 0, err
    assert read_summary(tmp_path / "again") == reference
    assert target.read_bytes() == original  # rebuilt


def test_cache_pointing_at_a_file_is_one_line(tmp_path, weights_file, monkeypatch):
    bad = tmp_path / "a-file"
    bad.write_text("x")
    monkeypatch.setenv("TINYCL_CACHE", str(bad))
    code, _, err = cli(*small_run_args(weights_file, tmp_path / "o"))
    assert code == 2
    assert err == f"tinycl: error: the cache folder {bad} (TINYCL_CACHE) exists and is not a folder\n"


@pytest.mark.parametrize(("number", "cause"), [(errno.ENOSPC, "No space left on device"),
                                               (errno.EROFS, "Read-only file system")])
def test_a_write_fault_is_one_line_and_the_earlier_run_survives(tmp_path, weights_file, monkeypatch, number, cause):
    out = tmp_path / "run"
    code, _, err = cli(*small_run_args(weights_file, out))
    assert code == 0, err
    before = tree_digest(out)
    import tinycl.fileio

    real_fsync = os.fsync

    def failing_fsync(fd):
        if "summary.json" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(number, os.strerror(number))
        return real_fsync(fd)

    monkeypatch.setattr(tinycl.fileio.os, "fsync", failing_fsync)
    code, _, err = cli(*small_run_args(weights_file, out, "--seed", 1))
    assert code == 2
    assert err.startswith("tinycl: error: cannot write ") and err.endswith(f"summary.json: {cause}\n")
    assert err.count("\n") == 1
    assert tree_digest(out) == before


def can_mount_tmpfs(path):
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_a_full_disk_is_one_line(tmp_path, weights_file):
    small = tmp_path / "small"
    if not can_mount_tmpfs(small):
        pytest.skip("cannot mount a tmpfs here (the injected ENOSPC test covers the mechanism)")
    try:
        code, _, err = cli(*small_run_args(weights_file, small / "run", "--replays", 60))
        assert code == 2, err
        assert err.startswith("tinycl: error: cannot write ") and err.endswith("No space left on device\n")
        assert err.count("\n") == 1
    finally:
        subprocess.run(["umount", str(small)], check=False)
