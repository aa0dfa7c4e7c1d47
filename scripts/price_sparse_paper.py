"""Price the sparse-update paper's headline setting with tinycl's cost model (issue 18).

Paissan et al. (CVPRW 2024, abstract; REFERENCES.md) learn "a new class-incremental task
composed of two unseen classes in 18 min with 4.63 MB" with MobileNetV2 on CORe50 on a RISC-V
multi-core MCU. The abstract states neither the width, the resolution, the cut, the replays
nor the images per task, so every one is an assumption here, printed with the table:

- MobileNetV2 width 1.0 at 128 px (CORe50's frames; the model as published);
- LR layer 16 (tinycl's default: the adaptive stage is block 17, the 1280-channel conv and the
  head) and 13 (three more blocks trained);
- 750 replays of 8-bit latents (tinycl's default N), 4 epochs, mini-batches of 128;
- 600 new images per task (one 300-frame CORe50 session video for each of the two classes);
- targets: ``vega`` (PULP, 1+9 RISC-V cores) and ``gap9`` (tinycl's PULP-cluster models);
- dense backprop vs a 0.5 channel ratio on every adaptive conv (``--sparse 0.5``), with batch
  renormalization (the whole mini-batch held, as tinycl trains) or BN folded into the convs
  (``--norm fold``: one sample at a time, nothing kept for BN).

Each row is ``tinycl cost --model mobilenet_v2 --width 1.0 --res 128 --lr-layer L --new-images 600
--norm NORM --sparse R --target T`` (the command is printed in the table). Writes
docs/sparse_paper_priced.md.

    python scripts/price_sparse_paper.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tinycl.device import CostConfig, estimate, report_to_dict

PAPER_MINUTES = 18.0  # Paissan et al. 2024 abstract
PAPER_MB = 4.63  # MB, same source (read as 10**6 bytes)
NEW_IMAGES = 600


def row(lr_layer: int, norm: str, sparse: float, target: str) -> dict:
    config = CostConfig(model="mobilenet_v2", width=1.0, res=128, lr_layer=lr_layer, replays=750, bits=8,
                        new_images=NEW_IMAGES, epochs=4, minibatch_size=128, momentum=True, num_classes=50,
                        norm=norm, sparse_ratio=sparse)
    data = report_to_dict(estimate(config, [target]), 3000.0, 3.7, 60.0)
    t = data["targets"][target]
    memory = data["memory"]
    top = sorted(((v, k) for k, v in memory.items() if k not in ("total_bytes", "activation_bytes")
                  and not k.startswith(("frozen_activation", "adaptive_kept", "adaptive_transient"))), reverse=True)
    return {
        "command": f"tinycl cost --model mobilenet_v2 --width 1.0 --res 128 --lr-layer {lr_layer} --new-images "
                   f"{NEW_IMAGES} --norm {norm} --sparse {sparse:g} --target {target}",
        "lr_layer": lr_layer, "norm": norm, "sparse": sparse, "target": target,
        "task_minutes": t["latency_s"]["per_cl_batch"] / 60,
        "memory_mb": memory["total_bytes"] / 1e6,
        "kept_mb": memory["adaptive_kept_activation_bytes"] / 1e6,
        "largest": ", ".join(f"{k.removesuffix('_bytes')} {v / 1e6:.2f}" for v, k in top[:3]),
        "train_ms": 1e3 * t["latency_s"]["train_per_sample"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/sparse_paper_priced.md")
    args = parser.parse_args()
    rows = [row(lr, norm, sparse, target) for target in ("vega", "gap9") for lr in (16, 13)
            for norm in ("brn", "fold") for sparse in (1.0, 0.5)]
    lines = [
        "# The sparse paper's setting, priced by tinycl's cost model",
        "",
        "Produced by `python scripts/price_sparse_paper.py` (assumptions in its docstring: MobileNetV2 "
        f"w1.0 at 128 px, 750 8-bit replays, 4 epochs, mini-batches of 128, {NEW_IMAGES} new images per "
        "2-class task). Paper: a new 2-class task in "
        f"{PAPER_MINUTES:g} min with {PAPER_MB} MB (Paissan et al., CVPRW 2024, abstract).",
        "",
        "| target | LR layer | norm | channel ratio | task time (min) | × paper's 18 min | memory (MB) "
        "| × paper's 4.63 MB | kept for backward (MB) | largest terms (MB) | FP32 train ms / sample | command |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['lr_layer']} | {r['norm']} | {r['sparse']:g} | {r['task_minutes']:.1f} "
            f"| {r['task_minutes'] / PAPER_MINUTES:.2f} | {r['memory_mb']:.2f} | {r['memory_mb'] / PAPER_MB:.2f} "
            f"| {r['kept_mb']:.3f} | {r['largest']} | {r['train_ms']:.1f} | `{r['command']}` |")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
