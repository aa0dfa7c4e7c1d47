"""End-to-end time of the default ``tinycl run`` on a fresh cache, with its baselines.

Runs, in one go and as subprocesses (a user's view): the default latent-replay run with an
empty data cache (so benchmark generation is included; the default backbone weights ship
with the package), then naive fine-tuning and joint training on the same cached data.

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
        for strategy in ("latent-replay", "naive", "joint"):
            out = f"{args.out}/{strategy}"
            wall, summary = run(["--strategy", strategy, "--out", out], env)
            rows.append((strategy, wall, summary))
    print(f"{'strategy':<14} {'wall s':>7} {'final acc':>9} {'avg acc':>8} {'LR bytes':>11}")
    for strategy, wall, s in rows:
        print(f"{strategy:<14} {wall:7.1f} {100 * s['final_accuracy']:8.2f}% {100 * s['average_accuracy']:7.2f}% "
              f"{s['lr_memory_bytes']:>11,}")
    print(f"default run end to end (fresh data cache): {rows[0][1]:.1f} s (target <= 180 s)")
    plot_curves(Path(args.out))


def plot_curves(out: Path) -> None:
    """All three accuracy curves in one figure: out/curves.png."""
    from tinycl.report.plots import plot_accuracy_curves

    curves = {}
    for strategy in ("latent-replay", "naive", "joint"):
        lines = (out / strategy / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        curves[strategy] = ([r["batch"] for r in records], [r["accuracy"] for r in records])
    # Joint training sees the whole stream at once: draw its accuracy as a level.
    last = max(curves["latent-replay"][0])
    curves["joint"] = ([0, last], [curves["joint"][1][-1]] * 2)
    plot_accuracy_curves(curves, out / "curves.png", "default run vs baselines (synthetic-core50, NICv2-79)")
    print(f"wrote {out / 'curves.png'}")


if __name__ == "__main__":
    main()
