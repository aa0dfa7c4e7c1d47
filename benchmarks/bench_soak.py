"""Soak: a full 391-batch synthetic run must not grow in memory.

Runs NICv2-391 on synthetic-core50 in this process (the default config otherwise, with a
checkpoint every ``--checkpoint-every`` batches so the checkpoint writer is soaked too),
samples the resident set size after every batch, and prints the least-squares slope of RSS
against the batch index over the steady part of the run (after ``--warmup`` batches, when
the replay memory is full and every buffer has been allocated once), next to the bytes one
batch of new latents takes, as the reference for what a leak of one batch per batch would be.

    python benchmarks/bench_soak.py [--out runs/soak] [--epochs 4] [--checkpoint-every 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; elsewhere the peak, an upper bound)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    import torch

    from tinycl.config import RunConfig
    from tinycl.train.checkpoint import FILE_NAME
    from tinycl.train.experiment import Checkpointing, Events, run_experiment

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/soak")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--replays", type=int, default=750)
    ap.add_argument("--checkpoint-every", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=50, help="batches left out of the slope")
    args = ap.parse_args()
    torch.set_num_threads(1)

    cfg = RunConfig()
    cfg.data.scenario = "nicv2_391"
    cfg.train.epochs = args.epochs
    cfg.replay.replays = args.replays
    cfg.eval.fidelity = False
    cfg.out = args.out
    samples: list[tuple[int, int]] = []

    def on_eval(record: dict) -> None:
        samples.append((record["batch"], rss_bytes()))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / FILE_NAME).unlink(missing_ok=True)
    start = time.perf_counter()
    summary = run_experiment(cfg, Events(on_eval=on_eval), Checkpointing(out / FILE_NAME, args.checkpoint_every))
    wall = time.perf_counter() - start

    batches = np.array([b for b, _ in samples], dtype=np.float64)
    rss = np.array([r for _, r in samples], dtype=np.float64)
    steady = batches >= args.warmup
    slope, _ = np.polyfit(batches[steady], rss[steady], 1)
    batch_latent_bytes = summary["latent_values"] * 4 * summary["train_images"] / summary["num_batches"]
    mib = 2**20
    print(f"NICv2-391 synthetic, {summary['num_batches']} batches, {args.epochs} epochs, "
          f"N={args.replays}, checkpoint every {args.checkpoint_every}: {wall:.0f} s, "
          f"final accuracy {100 * summary['final_accuracy']:.2f}%")
    print(f"RSS after batch 0: {rss[0] / mib:.1f} MiB, after batch {args.warmup}: "
          f"{rss[steady][0] / mib:.1f} MiB, last: {rss[-1] / mib:.1f} MiB, peak: {rss.max() / mib:.1f} MiB")
    print(f"RSS slope over batches {args.warmup}..{int(batches[-1])}: {slope / 1024:+.2f} KiB/batch "
          f"({slope * (batches[-1] - args.warmup) / mib:+.2f} MiB over the steady part)")
    print(f"reference: one batch of new FP32 latents is {batch_latent_bytes / 1024:.1f} KiB; "
          f"slope / that = {slope / batch_latent_bytes:.4f}")


if __name__ == "__main__":
    main()
