"""Plots of a run: the accuracy curve, and the title that tells one run from another."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from tinycl.report.rundir import write_atomic

if TYPE_CHECKING:
    from tinycl.config import RunConfig

FP32_BITS = 32  # as tinycl.quant.packing.FP32_BITS; not imported from there, which loads numpy
# The y axis spans at least this many points: a flat curve is not drawn as noise blown up.
MIN_SPAN_POINTS = 5.0


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    write_atomic(path, buf.getvalue())


def run_title(cfg: RunConfig, summary: dict) -> str:
    """Two lines naming what sets a run apart: model, width, resolution, LR layer, LRs (Q bits x
    N slots, or the baseline), strategy and recipe; then data, seed and the two accuracies.

    What the run actually had is read from ``summary`` (replay capacity, bits, frozen-stage
    arithmetic), the rest from ``cfg``; e.g.
    ``mobilenet_v1 w0.25 64 px, LR layer 19: 750 x 8-bit LRs, latent-replay (recipe tinycl)``.
    """
    m, t = cfg.model, cfg.train
    bits = summary.get("lr_bits", cfg.replay.bits)
    replays = summary.get("replays", cfg.replay.replays)
    strategy = summary.get("strategy", t.strategy)
    if strategy in ("naive", "joint"):
        memory = "no replays"
    elif strategy == "raw-replay":
        memory = f"{replays} raw images"
    elif bits == FP32_BITS:
        stage = " behind the INT8 stage" if summary.get("frozen_arithmetic") == "int8" else ""
        memory = f"{replays} x FP32 LRs{stage}"
    else:
        memory = f"{replays} x {bits}-bit LRs"
    learner = f"{strategy} (recipe {summary.get('recipe', t.recipe)})"
    if t.sparse:
        learner += f", sparse {t.sparse}"
    line1 = f"{m.name} w{m.width:g} {m.res} px, LR layer {m.lr_layer}: {memory}, {learner}"
    line2 = f"{cfg.data.benchmark} {cfg.data.scenario}, seed {cfg.seed}"
    if "final_accuracy" in summary and "average_accuracy" in summary:
        line2 += (f": final {100 * summary['final_accuracy']:.2f} %, "
                  f"average {100 * summary['average_accuracy']:.2f} %")
    return f"{line1}\n{line2}"


def accuracy_limits(values_percent: list[float]) -> tuple[float, float]:
    """y limits around the data (within 0..100 %), spanning at least ``MIN_SPAN_POINTS``."""
    lo, hi = min(values_percent), max(values_percent)
    span = max(hi - lo, MIN_SPAN_POINTS)
    centre = (lo + hi) / 2
    lo, hi = centre - 0.6 * span, centre + 0.6 * span
    if lo < 0:
        lo, hi = 0.0, hi - lo
    if hi > 100:
        lo, hi = max(0.0, lo - (hi - 100)), 100.0
    return lo, hi


def plot_accuracy_curves(curves: dict[str, tuple[list[int], list[float]]], path: Path,
                         title: str) -> None:
    """One line per run: test accuracy after each evaluated batch, y axis scaled to the data,
    batches on integer ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    values = []
    for label, (batches, acc) in curves.items():
        percent = [100 * a for a in acc]
        values += percent
        # Markers where the points are few enough to tell apart (class-incremental: ~5 tasks).
        ax.plot(batches, percent, label=label, lw=1.5, marker="o" if len(batches) <= 30 else None, ms=4)
    ax.set_xlabel("training batch")
    ax.set_ylabel("test accuracy (%)")
    if values:
        ax.set_ylim(*accuracy_limits(values))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    if len(curves) > 1:
        ax.legend()
    save_figure(fig, path)
    plt.close(fig)
