"""An outside check on real data nobody here wrote: scikit-learn's handwritten digits.

scikit-learn ships the UCI "optical recognition of handwritten digits" test set (1,797 8x8
images, 10 classes, ``sklearn.datasets.load_digits``; no download). This script turns it into a
``--benchmark arrays`` file (64x64 RGB, an 80/20 stratified split) and runs the class-incremental
scenario (``--scenario ci``: 5 tasks of 2 digits) with the default backbone for every strategy:

    naive < latent replay (FP32 and 8-bit, within 2 points of each other) < joint

is what a correct learner gives (issue 13's check; the float frozen stage's BatchNorms in train
mode once put FP32 latent replay 38 points below 8-bit on MNIST).

    pip install scikit-learn
    python scripts/real_data_check.py --out runs/digits --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

RES = 64  # the shipped MobileNetV1 w0.25 weights' resolution
TEST_FRACTION = 0.2


def digits_npz(path: Path, seed: int = 0) -> tuple[int, int]:
    """Write the arrays file; returns (train images, test images)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 ink levels -> 0..255, upscaled (bilinear) and copied to three channels.
    gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(g).resize((RES, RES), Image.BILINEAR)) for g in gray])
    rgb = np.repeat(big[..., None], 3, axis=3)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):  # stratified: the same share of every digit in the test split
        members = rng.permutation(np.flatnonzero(labels == c))
        test[members[: round(TEST_FRACTION * len(members))]] = True
    np.savez(path, train_images=rgb[~test], train_labels=labels[~test], test_images=rgb[test],
             test_labels=labels[test])
    return int((~test).sum()), int(test.sum())


RUNS = {  # name -> tinycl run options
    "naive": ["--strategy", "naive", "--bits", "32"],
    "latent replay, FP32": ["--bits", "32"],
    "latent replay, 8-bit": ["--bits", "8"],
    "joint": ["--strategy", "joint", "--bits", "32"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/digits")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--replays", type=int, default=300)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "digits.npz"
    n_train, n_test = digits_npz(data)
    print(f"sklearn digits: {n_train} train / {n_test} test images at {RES} px, scenario ci (5 tasks of 2 digits), "
          f"{args.replays} replays")
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[float]] = {}
    for name, options in RUNS.items():
        for seed in seeds:
            run_dir = out / f"{name.replace(' ', '_').replace(',', '')}_s{seed}"
            if not (run_dir / "summary.json").is_file():
                cmd = [sys.executable, "-m", "tinycl", "run", "--benchmark", "arrays", "--data-root", str(data),
                       "--res", str(RES), "--scenario", "ci", "--replays", str(args.replays), "--seed", str(seed),
                       "--out", str(run_dir), "--quiet", *options]
                subprocess.run(cmd, check=True)
            summary = json.loads((run_dir / "summary.json").read_text())
            results.setdefault(name, []).append(summary["final_accuracy"])
    print(f"| strategy | final accuracy, mean ± sd over seeds {args.seeds} | per seed |")
    print("|---|---:|---|")
    for name, accs in results.items():
        a = 100 * np.array(accs)
        print(f"| {name} | {a.mean():.2f} ± {a.std(ddof=1) if len(a) > 1 else 0:.2f} % | "
              f"{', '.join(f'{v:.2f}' for v in a)} |")
    mean = {k: float(np.mean(v)) for k, v in results.items()}
    gap = 100 * (mean["latent replay, 8-bit"] - mean["latent replay, FP32"])
    order = mean["naive"] < min(mean["latent replay, FP32"], mean["latent replay, 8-bit"]) \
        and max(mean["latent replay, FP32"], mean["latent replay, 8-bit"]) < mean["joint"]
    print(f"8-bit - FP32: {gap:+.2f} points (within 2: {abs(gap) <= 2}); naive < latent replay < joint: {order}")


if __name__ == "__main__":
    main()
