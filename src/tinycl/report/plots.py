"""Plots of a run: the accuracy curve."""

from __future__ import annotations

import io
from pathlib import Path

from tinycl.report.rundir import write_atomic


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    write_atomic(path, buf.getvalue())


def plot_accuracy_curves(curves: dict[str, tuple[list[int], list[float]]], path: Path,
                         title: str) -> None:
    """One line per run: test accuracy after each evaluated batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (batches, acc) in curves.items():
        ax.plot(batches, [100 * a for a in acc], label=label, lw=1.5)
    ax.set_xlabel("training batch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if len(curves) > 1:
        ax.legend()
    save_figure(fig, path)
    plt.close(fig)
