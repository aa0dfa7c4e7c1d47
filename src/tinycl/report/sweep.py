"""The QLR experiment's table and plot: final accuracy vs replay-memory bytes per (Q, N, LR layer).

Input: the summaries of a sweep's runs (seeds as repeats). Output: one row per cell with the
mean and standard deviation over seeds, the memory bytes, and two differences at the same N and
LR layer: to FP32 LRs behind the float frozen stage (the paper's baseline), and to FP32 LRs
behind the INT8 frozen stage (what replay compression alone costs); a markdown table and an
accuracy-vs-memory plot. A seed fixes the stream order, the initialisation and the replay
choices, so differences are paired: the mean of per-seed differences over the seeds both cells
have (equal to the difference of means when they have the same seeds). A second table pools
those per-seed differences over N, per row label and LR layer, with their spread.

Cells are keyed by the Q-bit quantizer too (``shift``, ``clip``, ``clip`` per channel) and by
the INT8 stage's activation observer (min-max, percentile, MSE), read from each run's
``summary.json`` or, where the summary does not state them, its ``config.toml``. A cell with
another observer is compared, in the INT8-stage column, with the INT8 stage of that observer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinycl.config import QuantConfig, load_toml
from tinycl.quant.packing import FP32_BITS
from tinycl.report.metrics import SeedAccuracies
from tinycl.report.plots import save_figure

SHIFT = "shift"
DEFAULT_OBSERVER = QuantConfig.observer  # min-max: what a run without --observer uses


@dataclass(frozen=True)
class Cell(SeedAccuracies):
    lr_layer: int
    bits: int
    replays: int
    lr_memory_bytes: int
    accuracies: tuple[float, ...]  # ordered by seed
    arithmetic: str = "float"  # of the frozen stage: "float" only for the FP32 baseline
    quantizer: str = SHIFT  # Q-bit latent quantizer: shift | clip | clip per-channel
    seeds: tuple[int, ...] = ()
    observer: str = DEFAULT_OBSERVER  # of the INT8 stage's activations; min-max where it has none

    @property
    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.accuracies, strict=True))

    @property
    def baseline(self) -> bool:
        """FP32 LRs behind the float frozen stage: the paper's reference."""
        return self.bits == FP32_BITS and self.arithmetic == "float"

    @property
    def label(self) -> str:
        """Q column: ``32`` is the float baseline, ``32 (INT8 stage)`` isolates replay compression,
        ``4 (clip)`` names a quantizer other than the shift."""
        notes = []
        if self.bits == FP32_BITS:
            notes += ["INT8 stage"] if self.arithmetic == "int8" else []
        elif self.quantizer != SHIFT:
            notes.append(self.quantizer)
        if self.observer != DEFAULT_OBSERVER:
            notes.append(f"{self.observer} observer")
        return f"{self.bits} ({', '.join(notes)})" if notes else str(self.bits)


def quantizer_name(summary: dict, config: dict) -> str:
    """``shift``, ``clip`` or ``clip per-channel``; FP32 LRs have no quantizer (``shift``)."""
    quant = config.get("quant", {})
    mode = summary.get("latent_mode", quant.get("latent_mode", SHIFT))
    per_channel = summary.get("latent_per_channel", quant.get("latent_per_channel", False))
    if summary["lr_bits"] == FP32_BITS or mode == SHIFT:
        return SHIFT
    return f"{mode} per-channel" if per_channel else mode


def observer_name(summary: dict, config: dict) -> str:
    """The INT8 stage's activation observer; min-max for runs behind the float stage."""
    if summary.get("frozen_arithmetic", "float") != "int8":
        return DEFAULT_OBSERVER
    return summary.get("observer", config.get("quant", {}).get("observer", DEFAULT_OBSERVER))


def read_summaries(sweep_dir: Path) -> list[dict]:
    """Every run's summary, with ``quantizer`` and ``observer`` added (from the summary or the
    run's config)."""
    out = []
    for path in sorted(sweep_dir.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        config_path = path.parent / "config.toml"
        config = load_toml(config_path) if config_path.is_file() else {}
        out.append({**summary, "quantizer": quantizer_name(summary, config),
                    "observer": observer_name(summary, config)})
    return out


def cells(summaries: list[dict]) -> list[Cell]:
    groups: dict[tuple[int, int, int, str, str, str], list[dict]] = {}
    for s in summaries:
        key = (s["lr_layer"], s["lr_bits"], s["replays"], s.get("frozen_arithmetic", "float"),
               s.get("quantizer", SHIFT), s.get("observer", DEFAULT_OBSERVER))
        groups.setdefault(key, []).append(s)
    out = []
    # per layer: FP32 first, then Q descending; the shift before the other quantizers, min-max
    # before the other observers; N ascending
    order = sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][3] != "float",
                                                   kv[0][4] != SHIFT, kv[0][4],
                                                   kv[0][5] != DEFAULT_OBSERVER, kv[0][5], kv[0][2]))
    for (layer, bits, replays, arithmetic, quantizer, observer), runs in order:
        runs = sorted(runs, key=lambda r: r["seed"])
        out.append(Cell(layer, bits, replays, runs[0]["lr_memory_bytes"],
                        tuple(r["final_accuracy"] for r in runs), arithmetic, quantizer,
                        tuple(r["seed"] for r in runs), observer))
    return out


def int8_stage_references(table: list[Cell]) -> dict[tuple[int, int, str], dict[int, float]]:
    """Per (LR layer, N, observer): accuracy per seed of FP32 LRs behind the INT8 stage.

    The 8-bit shift is the identity on UINT8 codes and decodes with the same scale, so an 8-bit
    shift run trains on exactly the latents of the ``--frozen int8 --bits 32`` run of the same
    seed (the two give identical accuracies); seeds run either way count, the control's first.
    """
    refs: dict[tuple[int, int, str], dict[int, float]] = {}
    for c in table:
        if c.bits == FP32_BITS and c.arithmetic == "int8":
            refs.setdefault((c.lr_layer, c.replays, c.observer), {}).update(c.by_seed)
    for c in table:
        if c.bits == 8 and c.quantizer == SHIFT:
            ref = refs.setdefault((c.lr_layer, c.replays, c.observer), {})
            ref.update({seed: acc for seed, acc in c.by_seed.items() if seed not in ref})
    return refs


def paired_differences(cell: Cell, ref: dict[int, float] | None) -> list[float]:
    """Per-seed differences in points, over the seeds the cell and the reference both have."""
    return [100 * (cell.by_seed[seed] - ref[seed]) for seed in cell.seeds if ref and seed in ref]


def delta_text(cell: Cell, ref: dict[int, float] | None) -> str:
    """Paired difference in points over the common seeds; ``(k)`` when only k of the cell's."""
    deltas = paired_differences(cell, ref)
    if not deltas:
        return "—"
    return f"{float(np.mean(deltas)):+.2f}" + (f" ({len(deltas)})" if len(deltas) < len(cell.seeds) else "")


def comparisons(table: list[Cell]) -> list[tuple[Cell, dict[int, float] | None, dict[int, float] | None]]:
    """Each cell with its two references at the same LR layer and N, accuracy per seed: the FP32
    baseline, and FP32 LRs behind the INT8 stage of the cell's observer. None where the
    comparison does not apply (the baseline itself; a float-stage cell or an INT8-stage
    reference against the INT8 stage); an empty dict where the reference was not run."""
    fp32 = {(c.lr_layer, c.replays): c.by_seed for c in table if c.baseline}
    int8 = int8_stage_references(table)
    out = []
    for c in table:
        key = (c.lr_layer, c.replays)
        is_int8_ref = c.arithmetic == "int8" and (c.bits == FP32_BITS or (c.bits == 8 and c.quantizer == SHIFT))
        ref_fp32 = None if c.baseline else fp32.get(key, {})
        ref_int8 = None if c.arithmetic == "float" or is_int8_ref else int8.get((*key, c.observer), {})
        out.append((c, ref_fp32, ref_int8))
    return out


def markdown_table(table: list[Cell]) -> str:
    lines = [
        "| LR layer | Q bits | N LRs | LR memory (bytes) | final accuracy % (mean ± std) "
        "| Δ vs FP32 (points) | Δ vs INT8-stage FP32 (points) | seeds |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, ref_fp32, ref_int8 in comparisons(table):
        lines.append(f"| {c.lr_layer} | {c.label} | {c.replays} | {c.lr_memory_bytes:,} | "
                     f"{c.accuracy_text()} | {delta_text(c, ref_fp32)} | "
                     f"{delta_text(c, ref_int8)} | {len(c.accuracies)} |")
    return "\n".join(lines) + "\n"


def pooled_table(table: list[Cell]) -> str:
    """The per-seed paired differences of every row label, pooled over N: per LR layer the mean
    and sample standard deviation, over all layers the mean ± standard error, and the range.

    Single cells rest on 3 seeds whose spread (1-2 points here) hides sub-point effects; pooling
    the pairs of every N and layer is what can tell a real cost from noise.
    """
    groups: dict[tuple[str, str], dict[int, list[float]]] = {}  # (label, reference) -> layer -> points
    for c, ref_fp32, ref_int8 in comparisons(table):
        for reference, ref in (("FP32", ref_fp32), ("INT8-stage FP32", ref_int8)):
            deltas = paired_differences(c, ref)
            if deltas:
                groups.setdefault((c.label, reference), {}).setdefault(c.lr_layer, []).extend(deltas)
    layers = sorted({c.lr_layer for c in table})
    lines = [
        "| Q bits | minus | " + " | ".join(f"layer {layer}: mean (sd, pairs)" for layer in layers)
        + " | all: mean ± s.e. (pairs) | range |",
        "|---|---|" + "---:|" * (len(layers) + 2),
    ]
    for (label, reference), by_layer in groups.items():
        per_layer = [spread_text(by_layer.get(layer, []), standard_error=False) for layer in layers]
        pooled = [d for layer in layers for d in by_layer.get(layer, [])]
        lines.append(f"| {label} | {reference} | " + " | ".join(per_layer)
                     + f" | {spread_text(pooled, standard_error=True)} | {min(pooled):+.2f} … {max(pooled):+.2f} |")
    return "\n".join(lines) + "\n"


def spread_text(deltas: list[float], *, standard_error: bool) -> str:
    """``mean (sd, n)`` or ``mean ± s.e. (n)``, sample statistics (ddof 1); ``mean (1)`` for a
    single pair, ``—`` for none."""
    if not deltas:
        return "—"
    mean = f"{float(np.mean(deltas)):+.2f}"
    if len(deltas) < 2:
        return f"{mean} (1)"
    sd = float(np.std(deltas, ddof=1))
    if standard_error:
        return f"{mean} ± {sd / np.sqrt(len(deltas)):.2f} ({len(deltas)})"
    return f"{mean} ({sd:.2f}, {len(deltas)})"


def sweep_markdown(table: list[Cell]) -> str:
    """``sweep.md``: the per-cell table, then its paired differences pooled over N."""
    return (markdown_table(table) + "\nPer-seed paired differences in points, pooled over N "
            "(sd: sample standard deviation; s.e.: standard error of the mean):\n\n" + pooled_table(table))


def series_style(label: str) -> dict:
    """Legend text and line style: dashed for clipping quantizers, dotted for the INT8 control."""
    if label == str(FP32_BITS):
        return {"label": "FP32", "linestyle": "-", "lw": 2.2}
    if label.startswith(str(FP32_BITS)):
        return {"label": label, "linestyle": ":", "lw": 1.5}
    bits, _, quantizer = label.partition(" ")
    return {"label": f"{bits}-bit {quantizer}".rstrip(), "linestyle": "--" if quantizer else "-",
            "lw": 1.2}


def memory_axis(ax, values_mb: list[float]) -> None:
    """A log MB axis with plain-number ticks (0.2, 0.5, 1, 2, ...), never ``4×10⁻¹``: 1-2-5
    ticks over a decade or more, denser steps when the data spans less than one."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    wide = max(values_mb) / min(values_mb) >= 10
    subs = (1.0, 2.0, 5.0) if wide else (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_accuracy_vs_memory(table: list[Cell], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({c.lr_layer for c in table})
    fig, axes = plt.subplots(1, len(layers), figsize=(max(7, 6 * len(layers)), 4.5), squeeze=False,
                             sharey=True, layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"] + ["#000000", "#7f7f00", "#004c7f"]
    all_labels = list(dict.fromkeys(c.label for c in table))
    for ax, layer in zip(axes[0], layers, strict=True):
        for label in dict.fromkeys(c.label for c in table if c.lr_layer == layer):
            row = sorted((c for c in table if c.lr_layer == layer and c.label == label), key=lambda c: c.replays)
            # A one-seed cell has no spread (std NaN): its point is drawn without an error bar.
            ax.errorbar([c.lr_memory_bytes / 1e6 for c in row], [100 * c.mean for c in row],
                        yerr=[100 * c.std for c in row], marker="o", ms=4, capsize=3,
                        color=colors[all_labels.index(label) % len(colors)], **series_style(label))
        memory_axis(ax, [c.lr_memory_bytes / 1e6 for c in table if c.lr_layer == layer])
        ax.set_xlabel("replay memory (MB, log scale)")
        ax.set_title(f"LR layer {layer}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2)
    axes[0][0].set_ylabel("final accuracy (%)")
    fewest, most = min(len(c.accuracies) for c in table), max(len(c.accuracies) for c in table)
    if most == 1:
        note = "one seed per point: no error bars"
    else:
        seeds = str(most) if fewest == most else f"{fewest}-{most}"
        note = f"mean over {seeds} seeds per point; bars: std over seeds (none for one seed)"
    fig.suptitle(f"{title}\n{note}", fontsize=11)
    save_figure(fig, path)
    plt.close(fig)
