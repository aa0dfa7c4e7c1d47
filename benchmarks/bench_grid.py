"""One small QLR grid under the three executors, side by side: wall time, speed-up vs serial,
Ray's overhead per cell, and whether every cell's results are identical.

    python benchmarks/bench_grid.py [--cells 4] [--out runs/bench-grid]

The grid is ``--cells`` default-benchmark runs (64 px, the shipped backbone, NICv2-79, 750
replays, 1 epoch per batch; Q = 8, 6, 4, 7, 5 ... at layer 19, seed 0), each a
``tinycl sweep`` subprocess with a fresh ``--out`` on one warm data and latent cache (the
cache is filled first by a one-cell sweep, so every executor starts equal):

- ``--executor serial``: one run after another in the sweep's process;
- ``--executor local --workers 2``: two worker processes;
- ``--executor ray --workers 2``: a local Ray instance on 127.0.0.1 with 2 CPUs.

Speed-up = serial wall / executor wall (goal on 2 cores: >= 1.7x for local). Ray's overhead per
cell = (ray wall - local wall) / cells: what Ray's start, scheduling and result transfer add to
the same two-way parallel grid. Needs ``pip install -e ".[ray]"`` for the Ray row.
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

BITS = [8, 6, 4, 7, 5, 3, 2, 1]


def computed(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("wall_seconds")
    return summary


def sweep(out: Path, bits: list[int], executor: list[str], env: dict) -> float:
    args = [sys.executable, "-m", "tinycl", "sweep", "--bits", ",".join(map(str, bits)), "--replays", "750",
            "--lr-layers", "19", "--seeds", "0", "--epochs", "1", "--threads", "1", *executor, "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=4, help="grid cells (runs) [4]")
    ap.add_argument("--out", default="runs/bench-grid")
    args = ap.parse_args()
    if not 2 <= args.cells <= len(BITS):
        sys.exit(f"bench_grid: --cells must be 2..{len(BITS)}")
    bits = BITS[: args.cells]
    out = Path(args.out)
    from tinycl.grid.ray_support import ray_available

    executors = {"serial": ["--executor", "serial"], "local": ["--executor", "local", "--workers", "2"]}
    if ray_available():
        executors["ray"] = ["--executor", "ray", "--workers", "2"]
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TINYCL_CACHE=cache)
        warm = sweep(out / "warm-up", bits[:1], ["--executor", "serial"], env)
        print(f"warm-up (data generation, one cell): {warm:.1f} s")
        walls = {name: sweep(out / name, bits, options, env) for name, options in executors.items()}
    names = [f"L19_Q{q}_N750_s0" for q in bits]
    reference = {n: computed(out / "serial" / n) for n in names}
    print(f"{args.cells} cells (Q {','.join(map(str, bits))}, N 750, layer 19, seed 0, 1 epoch), warm cache:")
    print(f"{'executor':<26} {'wall s':>7} {'s / cell':>8} {'speed-up vs serial':>19} {'identical to serial':>20}")
    for name, wall in walls.items():
        same = all(computed(out / name / n) == reference[n] for n in names)
        label = {"serial": "serial", "local": "local, 2 workers", "ray": "ray, local instance, 2 CPUs"}[name]
        print(f"{label:<26} {wall:7.1f} {wall / args.cells:8.1f} {walls['serial'] / wall:18.2f}x {str(same):>20}")
    if "ray" in walls:
        print(f"ray overhead per cell vs local: ({walls['ray']:.1f} - {walls['local']:.1f}) s / {args.cells} = "
              f"{(walls['ray'] - walls['local']) / args.cells:.1f} s")
    else:
        print("ray: not installed (pip install -e \".[ray]\"); its row is missing")


if __name__ == "__main__":
    main()
