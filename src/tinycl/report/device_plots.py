"""PNG plots of the device cost model: per-layer latency, memory breakdown, Pareto front."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tinycl.device.estimate import CostReport  # noqa: E402
from tinycl.device.latency import TargetEstimate  # noqa: E402

MB = 1e6


def plot_layer_latency(report: CostReport, estimate: TargetEstimate, path: Path) -> Path:
    """Bars per layer: forward (INT8 frozen / FP32 adaptive) and backward, ms per sample."""
    timings = estimate.layers
    x = [t.index for t in timings]
    forward_ms = [1e3 * t.forward_s for t in timings]
    backward_ms = [1e3 * t.backward_s for t in timings]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar([i - 0.2 for i in x], forward_ms, width=0.4, label="forward")
    ax.bar([i + 0.2 for i in x], backward_ms, width=0.4, label="backward (input + weight grad)")
    ax.axvline(report.config.lr_layer + 0.5, color="k", linestyle="--", linewidth=1)
    ax.text(
        report.config.lr_layer + 0.6,
        max(forward_ms + backward_ms) * 0.95,
        "adaptive (FP32) ->",
        fontsize=8,
    )
    ax.set_xlabel("layer")
    ax.set_ylabel("ms per sample")
    ax.set_title(
        f"{report.config.model} @ {report.config.res}, LR layer {report.config.lr_layer}"
        f" on {estimate.target.name}"
    )
    ax.legend()
    # The rates behind the bars: listed MAC/cycle (peak / derived / sustained) x utilization.
    fig.text(0.01, 0.01, textwrap.fill(estimate.basis_summary(), 170), fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_memory(
    reports: list[tuple[str, CostReport]], path: Path, levels: dict[str, int] | None = None,
    title: str = "Device memory (cost model)",
) -> Path:
    """One stacked bar per configuration, one segment per memory term (MB), its total on top.

    The axis is scaled to the bars, not to the target's memory levels: a 3 MB configuration
    drawn against a 64 MB external RAM is a flat line. Levels within the axis are drawn; those
    above it are named in a note with their size.
    """
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(reports) + 3), 4.5))
    bottoms = [0.0] * len(reports)
    names = list(reports[0][1].memory.terms())
    colors = plt.get_cmap("tab20").colors
    for i, name in enumerate(names):
        heights = [r.memory.terms()[name] / MB for _, r in reports]
        ax.bar(
            range(len(reports)),
            heights,
            bottom=bottoms,
            label=name.removesuffix("_bytes").replace("_", " "),
            color=colors[i % len(colors)],
        )
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    top = 1.18 * max(bottoms)  # room for the totals written above the bars
    for x, total in enumerate(bottoms):
        ax.text(x, total, f"{total:.2f} MB", ha="center", va="bottom", fontsize=8, fontweight="bold")
    above = []
    for level, size in (levels or {}).items():
        if size <= 0:
            continue
        if size / MB <= top:
            ax.axhline(size / MB, linestyle=":", color="gray", linewidth=1)
            ax.text(-0.45, size / MB, f"{level} {size / MB:.2f} MB", fontsize=7, va="bottom", ha="left")
        else:
            above.append(f"{level} {size / MB:,.1f} MB")
    ax.set_ylim(0, top)
    if above:
        ax.text(0.01, 0.99, "above the axis: " + ", ".join(above), transform=ax.transAxes, fontsize=7,
                va="top", ha="left", color="gray")
    ax.set_xticks(
        range(len(reports)), [label for label, _ in reports], rotation=30, ha="right", fontsize=7
    )
    ax.set_ylabel("MB on the device")
    total = f"total {bottoms[0]:.2f} MB" if len(reports) == 1 else f"totals {min(bottoms):.2f}-{max(bottoms):.2f} MB"
    ax.set_title(f"{title}\n{total}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class ParetoPoint:
    label: str
    memory_bytes: int
    accuracy: float


def pareto_front(points: list[ParetoPoint]) -> list[ParetoPoint]:
    """Points no other point beats on both memory (lower) and accuracy (higher)."""
    front: list[ParetoPoint] = []
    best = float("-inf")
    for p in sorted(points, key=lambda p: (p.memory_bytes, -p.accuracy)):
        if p.accuracy > best:
            front.append(p)
            best = p.accuracy
    return front


def plot_pareto(points: list[ParetoPoint], path: Path, xlabel: str,
                title: str = "Final accuracy vs device memory") -> Path:
    """Every run (gray) and the front of runs no other beats on memory and accuracy (red), each
    labelled; both axes scaled to the runs."""
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter(
        [p.memory_bytes / MB for p in points],
        [100 * p.accuracy for p in points],
        color="gray",
        label="runs",
    )
    ax.plot(
        [p.memory_bytes / MB for p in front],
        [100 * p.accuracy for p in front],
        "o-",
        color="C3",
        label="Pareto front",
    )
    on_front = {id(p) for p in front}
    for p in points:
        ax.annotate(
            p.label,
            (p.memory_bytes / MB, 100 * p.accuracy),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
            color="black" if id(p) in on_front else "gray",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("final accuracy (%)")
    ax.set_title(f"{title}\n{len(front)} of {len(points)} runs on the front", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
