"""Time the paper's CORe50 command per batch on a fake CORe50 tree of the real batch sizes.

This machine has no copy of CORe50, so the dataset is imitated where timing depends on it:
the official layout (``core50_128x128/sS/oO/C_SS_OO_FFF.png``, 128x128 PNGs), the official
filelist format (``NIC_v2_391/run0/train_batch_XX_filelist.txt``, ``test_filelist.txt``) and
the NICv2-391 batch sizes (batch 0: the first object of each category in session 1, 10 x 300
frames = 3000 images; then one 300-frame video per batch; REFERENCES.md). Only the first
``--batches`` batches are listed, and the test list holds CORe50's reduced test set (one frame
in 20 of sessions 3, 7 and 10, 2,250 images), which tinycl reduces once more. The pixels are
smooth random images and the pytorchcv ``mobilenet_w1`` weights are random: accuracy means
nothing here, time per batch does.

    python scripts/time_core50_paper_run.py [--batches 4] [--work /tmp/core50-fake] [--bits 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FRAMES = 300  # frames per CORe50 video (REFERENCES.md)
TEST_SESSIONS = (3, 7, 10)


def rel(session: int, obj: int, frame: int) -> str:
    return f"s{session}/o{obj + 1}/C_{session:02d}_{obj + 1:02d}_{frame:03d}.png"


def write_png(root: Path, path: str, rng: np.random.Generator) -> None:
    from PIL import Image

    full = root / "core50_128x128" / path
    if full.exists():
        return
    full.parent.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((128, 128), Image.BILINEAR)
    image.save(full, compress_level=1)


def build_tree(root: Path, batches: int) -> int:
    rng = np.random.default_rng(0)
    run = root / "NIC_v2_391" / "run0"
    run.mkdir(parents=True, exist_ok=True)
    # Batch 0: the first object of each category (objects 0, 5, ..., 45) in session 1.
    lists = [[(rel(1, obj, f), obj) for obj in range(0, 50, 5) for f in range(FRAMES)]]
    for b in range(1, batches):
        obj, session = 1 + (b - 1) % 4, 2 + (b - 1) // 4  # a new object's video, sessions 2, 4, ...
        lists.append([(rel(session if session not in TEST_SESSIONS else session + 2, obj, f), obj)
                      for f in range(FRAMES)])
    test = [(rel(s, obj, f), obj) for s in TEST_SESSIONS for obj in range(50) for f in range(0, FRAMES, 20)]
    for i, samples in enumerate(lists):
        (run / f"train_batch_{i:02d}_filelist.txt").write_text("".join(f"{p} {label}\n" for p, label in samples))
    (run / "test_filelist.txt").write_text("".join(f"{p} {label}\n" for p, label in test))
    everything = [p for samples in lists for p, _ in samples] + [p for p, _ in test]
    for path in everything:
        write_png(root, path, rng)
    return len(everything)


def write_weights(path: Path) -> None:
    """Random weights in pytorchcv ``mobilenet_w1`` naming (what the paper loads)."""
    import torch

    from tinycl.models import create_model
    from tinycl.models.import_weights import pytorchcv_mobilenet_names

    torch.manual_seed(0)
    model = create_model("mobilenet_v1", width=1.0)
    names = pytorchcv_mobilenet_names(model)
    state = {names[k]: v for k, v in model.state_dict().items() if k in names}
    state["output.weight"] = torch.randn(1000, model.head.linear.in_features) * 0.01
    state["output.bias"] = torch.zeros(1000)
    torch.save(state, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--work", default="/tmp/core50-fake")
    ap.add_argument("--bits", type=int, default=8)
    args = ap.parse_args()
    work = Path(args.work)
    start = time.perf_counter()
    images = build_tree(work / "core50", args.batches)
    weights = work / "mobilenet_w1.pth"
    if not weights.exists():
        write_weights(weights)
    print(f"fake CORe50 tree: {images} PNGs at 128x128 in {time.perf_counter() - start:.0f} s")
    out = work / f"run-q{args.bits}"
    cmd = [sys.executable, "-m", "tinycl", "run", "--benchmark", "core50", "--data-root", str(work / "core50"),
           "--scenario", "nicv2_391", "--run", "0", "--model", "mobilenet_v1", "--width", "1.0", "--res", "128",
           "--lr-layer", "19", "--recipe", "ar1star", "--weights", str(weights), "--bits", str(args.bits),
           "--no-latent-cache", "--no-fidelity", "--quiet", "--out", str(out)]
    print("$ tinycl " + " ".join(cmd[3:]))
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        print(f"batch {r['batch']}: {r['new_samples']} new images, {r['steps']} SGD steps, "
              f"{r['wall_seconds_batch']:.1f} s")
    later = [r["wall_seconds_batch"] for r in records[1:]]
    if later:
        print(f"per 300-image batch: {np.mean(later):.1f} s on average; the whole command took {wall:.0f} s")


if __name__ == "__main__":
    main()
