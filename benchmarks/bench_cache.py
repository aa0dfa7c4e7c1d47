"""Soak of the caches (issue 14): N runs of one setting started together on a cold cache give N
identical summary.json; and what keying the latent cache by content costs against a default run.

    python benchmarks/bench_cache.py [--runs 4] [--out runs/bench-cache]

1. ``--runs`` processes of one small setting (``--frames 2 --epochs 1``), each its own
   ``--out``, one fresh ``TINYCL_CACHE``: every process generates the data, computes latents and
   writes the same cache files concurrently (atomic renames). Their summaries must be equal,
   wall times aside, and equal to a run on the warm cache afterwards.
2. Hashing cost, measured side by side with a default run in this process: the content
   fingerprint of data the size of the default benchmark held in memory (arrays / folder
   benchmarks: ``arrays_fingerprint``), and of a folder of PNG files on disk, cold (every file
   hashed) and warm (``ContentIndex``: stat only), each as a fraction of the default run's time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def summary(path: Path) -> dict:
    s = json.loads((path / "summary.json").read_text())
    s.pop("wall_seconds")
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--out", default="runs/bench-cache")
    ap.add_argument("--default-seconds", type=float, default=None,
                    help="wall time of a default run to compare with (default: run one now)")
    args = ap.parse_args()
    out = Path(args.out)
    small = ["--frames", "2", "--epochs", "1", "--replays", "100", "--quiet"]
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TINYCL_CACHE=cache)
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-m", "tinycl", "run", *small, "--out", str(out / f"cold{i}")],
                                  env=env) for i in range(args.runs)]
        codes = [p.wait() for p in procs]
        cold_s = time.perf_counter() - start
        subprocess.run([sys.executable, "-m", "tinycl", "run", *small, "--out", str(out / "warm")], env=env, check=True)
    summaries = [summary(out / f"cold{i}") for i in range(args.runs)] if not any(codes) else []
    same = bool(summaries) and all(s == summaries[0] for s in summaries) and summary(out / "warm") == summaries[0]
    print(f"{args.runs} runs of one setting together on a cold cache: exit codes {codes}, {cold_s:.1f} s; "
          f"all summary.json identical (and equal to a warm-cache run): {same}")

    from tinycl.data.synthetic import SyntheticConfig, load_synthetic_core50
    from tinycl.train.latent_cache import ContentIndex, arrays_fingerprint, data_fingerprint

    train, test = load_synthetic_core50(SyntheticConfig(seed=0, res=64, frames=20))
    t0 = time.perf_counter()
    arrays_fingerprint(train, test)
    arrays_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as folder:
        from PIL import Image

        root = Path(folder)
        for i, image in enumerate(train.images[:2000]):
            (root / f"c{i % 50}").mkdir(exist_ok=True)
            Image.fromarray(image).save(root / f"c{i % 50}" / f"{i}.png")
        index = ContentIndex(root.parent / f"{root.name}-index.json")
        t0 = time.perf_counter()
        data_fingerprint(root, index)
        cold_files_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        data_fingerprint(root, ContentIndex(index.path))
        warm_files_s = time.perf_counter() - t0
        index.path.unlink(missing_ok=True)
    if args.default_seconds is None:
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "tinycl", "run", "--quiet", "--out", str(out / "default")],
                           env=dict(os.environ, TINYCL_CACHE=cache), check=True)
            default_s = time.perf_counter() - t0
    else:
        default_s = args.default_seconds
    n = len(train) + len(test)
    print(f"default run (fresh cache): {default_s:.1f} s")
    print(f"content key of {n} in-memory images of 64 px (arrays/folder data): {arrays_s:.3f} s = "
          f"{100 * arrays_s / default_s:.2f} % of a default run (target < 5 %)")
    print(f"content key of a folder of 2000 PNG files: cold {cold_files_s:.3f} s "
          f"({100 * cold_files_s / default_s:.2f} %), warm {warm_files_s:.3f} s "
          f"({100 * warm_files_s / default_s:.2f} %)")


if __name__ == "__main__":
    main()
