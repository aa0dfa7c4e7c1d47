"""End-to-end time of the default ``tinycl run`` on a fresh cache, with its baselines.

Runs, in one go and as subprocesses (a user's view): the default latent-replay run with an
empty data cache (so benchmark generation is included; the default backbone weights ship
with the package), then on the same cached data: the FP32 baseline (``--bits 32``: float
frozen stage, FP32 replays), ar1-pytorch's AR1* recipe (``--recipe ar1star``: its 1500 replays,
CWR*, inc_lr 5e-5, ...), naive fine-tuning and joint training.

    python benchmarks/bench_default_run.py [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name -> tinycl run options; the first is the default run (timed with an empty data cache).
RUNS = {
    "latent-replay": [],
    "latent-replay-fp32": ["--bits", "32"],
    "latent-replay-ar1star": ["--recipe", "ar1star"],
    "naive": ["--strategy", "naive"],
    "joint": ["--strategy", "joint"],
}


def run(args: list[str], env: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tinycl", "run", "--quiet", *args], check=True, env=env)
    wall = time.perf_counter() - start
    out = Path(args[args.index("--out") + 1])
    return wall, json.loads((out / "summary.json").read_text())


def main() -> None:
    import os

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TINYCL_CACHE=cache)
        rows = []
        for name, options in RUNS.items():
            wall, summary = run([*options, "--out", f"{args.out}/{name}"], env)
            rows.append((name, wall, summary))
    print(f"{'run':<24} {'wall s':>7} {'final acc':>9} {'avg acc':>8} {'forgetting':>10} {'LR bytes':>11}")
    for name, wall, s in rows:
        print(f"{name:<24} {wall:7.1f} {100 * s['final_accuracy']:8.2f}% {100 * s['average_accuracy']:7.2f}% "
              f"{s['forgetting'] if s['forgetting'] is not None else float('nan'):10.3f} {s['lr_memory_bytes']:>11,}")
    print(f"default run end to end (fresh data cache): {rows[0][1]:.1f} s (target <= 180 s)")
    plot_curves(Path(args.out))


def plot_curves(out: Path) -> None:
    """All three accuracy curves in one figure: out/curves.png."""
    from tinycl.report.plots import plot_accuracy_curves

    curves = {}
    for name in RUNS:
        lines = (out / name / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        curves[name] = ([r["batch"] for r in records], [r["accuracy"] for r in records])
    # Joint training sees the whole stream at once: draw its accuracy as a level.
    last = max(curves["latent-replay"][0])
    curves["joint"] = ([0, last], [curves["joint"][1][-1]] * 2)
    plot_accuracy_curves(curves, out / "curves.png", "default run vs baselines (synthetic-core50, NICv2-79)")
    print(f"wrote {out / 'curves.png'}")


if __name__ == "__main__":
    main()
