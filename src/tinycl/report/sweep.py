"""The QLR experiment's table and plot: final accuracy vs replay-memory bytes per (Q, N, LR layer).

Input: the summaries of a sweep's runs (seeds as repeats). Output: one row per cell with the
mean and standard deviation over seeds, the memory bytes, and the difference to FP32 at the
same N and LR layer; a markdown table and an accuracy-vs-memory plot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinycl.report.plots import save_figure


@dataclass(frozen=True)
class Cell:
    lr_layer: int
    bits: int
    replays: int
    lr_memory_bytes: int
    accuracies: tuple[float, ...]
    arithmetic: str = "float"  # of the frozen stage: "float" only for the FP32 baseline

    @property
    def label(self) -> str:
        """Q column: ``32`` is the float baseline, ``32 (INT8 stage)`` isolates replay compression."""
        return f"{self.bits} (INT8 stage)" if self.bits == 32 and self.arithmetic == "int8" else str(self.bits)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))


def read_summaries(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]


def cells(summaries: list[dict]) -> list[Cell]:
    groups: dict[tuple[int, int, int, str], list[dict]] = {}
    for s in summaries:
        key = (s["lr_layer"], s["lr_bits"], s["replays"], s.get("frozen_arithmetic", "float"))
        groups.setdefault(key, []).append(s)
    out = []
    order = sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][3] != "float", kv[0][2]))
    for (layer, bits, replays, arithmetic), runs in order:
        out.append(Cell(layer, bits, replays, runs[0]["lr_memory_bytes"],
                        tuple(r["final_accuracy"] for r in sorted(runs, key=lambda r: r["seed"])), arithmetic))
    return out


def markdown_table(table: list[Cell]) -> str:
    fp32 = {(c.lr_layer, c.replays): c.mean for c in table if c.bits == 32 and c.arithmetic == "float"}
    lines = [
        "| LR layer | Q bits | N LRs | LR memory (bytes) | final accuracy % (mean ± std) "
        "| Δ vs FP32 (points) | seeds |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in table:
        ref = fp32.get((c.lr_layer, c.replays))
        baseline = c.bits == 32 and c.arithmetic == "float"
        delta = f"{100 * (c.mean - ref):+.2f}" if ref is not None and not baseline else "—"
        lines.append(f"| {c.lr_layer} | {c.label} | {c.replays} | {c.lr_memory_bytes:,} | "
                     f"{100 * c.mean:.2f} ± {100 * c.std:.2f} | {delta} | {len(c.accuracies)} |")
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_memory(table: list[Cell], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len({c.lr_layer for c in table}), figsize=(11, 4), squeeze=False, sharey=True)
    for ax, layer in zip(axes[0], sorted({c.lr_layer for c in table}), strict=True):
        for label in dict.fromkeys(c.label for c in table if c.lr_layer == layer):
            row = sorted((c for c in table if c.lr_layer == layer and c.label == label), key=lambda c: c.replays)
            ax.errorbar([c.lr_memory_bytes / 1e6 for c in row], [100 * c.mean for c in row],
                        yerr=[100 * c.std for c in row], marker="o", capsize=3,
                        label={"32": "FP32"}.get(label, label if label.startswith("32") else f"{label}-bit"))
        ax.set_xscale("log")
        ax.set_xlabel("replay memory (MB)")
        ax.set_title(f"LR layer {layer}")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("final accuracy (%)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)
    plt.close(fig)
