"""``tinycl cost``: price a configuration on targets; ``tinycl report``: device plots of runs.

The cost model (and torch, through the models) loads inside the commands, so that
``tinycl --help`` stays fast; defaults are ``tinycl run``'s (config.py's dataclasses).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tinycl.config import ModelConfig, ReplayConfig, TrainConfig
from tinycl.errors import TinyclError

if TYPE_CHECKING:
    from tinycl.device import CostConfig, CostReport
    from tinycl.device.latency import TargetEstimate

# Default battery: assumption (the paper's battery is not in its abstract): one 3.7 V,
# 3000 mAh Li-ion cell.
DEFAULT_BATTERY_MAH = 3000.0
DEFAULT_BATTERY_V = 3.7
# New images per CL batch: device.estimate.DEFAULT_NEW_IMAGES (NICv2-391's ~300-image batches),
# repeated here so that --help needs no torch; tests/cli/test_help.py checks that they agree.
DEFAULT_NEW_IMAGES = 300
DEFAULT_TARGET = "vega"
PASS_LABELS = {
    "int8_forward": "INT8 forward (frozen stage, per image)",
    "fp32_forward": "FP32 forward (adaptive stage, per latent)",
    "fp32_input_grad": "FP32 input grad",
    "fp32_weight_grad": "FP32 weight grad",
}
# What --from takes from the run: these options would contradict it.
RUN_OPTIONS = ("model", "width", "res", "lr_layer", "replays", "bits", "new_images", "epochs", "minibatch",
               "momentum", "num_classes", "norm", "sparse_ratio")
# Strategies the cost model prices: a latent-replay learner (naive = the same with no replays).
PRICED_STRATEGIES = ("latent-replay", "naive")


def builtin_targets() -> list[str]:
    """Keys of the targets shipped in tinycl/device/targets/*.toml, listed from the files (not
    through tinycl.device, which imports the models and torch)."""
    folder = resources.files("tinycl").joinpath("device", "targets")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def _targets(values: tuple[str, ...]) -> list[str]:
    out = [t.strip() for v in values for t in v.split(",") if t.strip()]
    return out or [DEFAULT_TARGET]


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB"


def basis_lines(est: TargetEstimate) -> list[str]:
    """What one target's numbers rest on: clock, power, listed rate x utilization per primitive."""
    from tinycl.device.latency import nature

    t, key = est.target, est.target.key
    lines = [
        f"[{key}] basis: clock {t.freq_hz.value / 1e6:g} MHz ({nature(t.freq_hz)}); active "
        f"power {t.active_power_w.value:g} W ({nature(t.active_power_w)}); MAC/cycle used = "
        "listed (peak / sustained / derived) x utilization, per primitive"
    ]
    for name, pb in est.passes.items():
        if not pb.primitives:
            continue
        rates = ", ".join(
            f"{k} {b.listed_mac_per_cycle:g} {b.kind} x {b.utilization:g} -> "
            f"{b.listed_mac_per_cycle * b.utilization:.4g}"
            for k, b in pb.primitives.items()
        )
        lines.append(
            f"[{key}]   {PASS_LABELS[name]}: {rates}; MAC-weighted over this model "
            f"{pb.effective_mac_per_cycle:.3g} MAC/cycle"
        )
    if t.basis_note:
        lines.append(f"[{key}]   {t.basis_note}")
    return lines


def print_report(
    report: CostReport, battery_mah: float, battery_v: float, period_s: float, show_layers: bool
) -> None:
    from rich.console import Console
    from rich.table import Table

    from tinycl.device.estimate import PAPER_ENERGY_RATIO, PAPER_LIFETIME_H, PAPER_MEMORY_BYTES, PAPER_SPEEDUP
    from tinycl.device.latency import shown

    console = Console(width=140)
    cfg = report.config
    first = report.targets[0]
    if show_layers:
        table = Table(
            title=f"{cfg.model} width {cfg.width} at {cfg.res}x{cfg.res}, LR layer "
            f"{cfg.lr_layer} (per sample; times on {first.target.key})"
        )
        for col in (
            "idx",
            "name",
            "type",
            "stage",
            "output",
            "fwd MACs",
            "in-grad MACs",
            "w-grad MACs",
            "weight bytes",
            "fwd ms",
            "bwd ms",
        ):
            table.add_column(
                col, justify="left" if col in ("name", "type", "stage", "output") else "right"
            )
        for r, t in zip(report.layers, first.layers, strict=True):
            bytes_per = 1 if r.stage == "frozen" else 4
            table.add_row(
                str(r.index),
                r.name,
                r.kind,
                r.stage,
                "x".join(map(str, r.out_shape)),
                f"{r.forward_macs:,}",
                f"{r.input_grad_macs:,}",
                f"{r.weight_grad_macs:,}",
                f"{bytes_per * r.weight_values:,}",
                f"{1e3 * t.forward_s:.3f}",
                f"{1e3 * t.backward_s:.3f}",
            )
        for s in (report.frozen, report.adaptive):
            table.add_row(
                "",
                f"{s.stage} total",
                "",
                "",
                "",
                f"{s.forward_macs:,}",
                f"{s.input_grad_macs:,}",
                f"{s.weight_grad_macs:,}",
                "",
                "",
                "",
            )
        console.print(table)

    mem = Table(title="device memory (bytes)")
    mem.add_column("term")
    mem.add_column("bytes", justify="right")
    for name, value in report.memory.to_dict().items():
        mem.add_row(name, f"{value:,}")
    console.print(mem)

    w = report.workload
    for line in report.formulas():
        print(line)
    print(
        f"CL batch: {w.new_images} new + {w.replays} replays, {w.epochs} epochs of "
        f"{w.minibatches_per_epoch} mini-batches of {w.minibatch_size} "
        f"({w.new_per_minibatch} new each)"
    )
    total = report.memory.total_bytes
    print(
        f"total device memory: {total:,} bytes ({_mb(total)}); paper: < 64 MB "
        f"({PAPER_MEMORY_BYTES:,} bytes) -> {'within' if total < PAPER_MEMORY_BYTES else 'above'}"
    )
    for est in report.targets:
        key = est.target.key
        for line in basis_lines(est):
            print(line)
        print(
            f"[{key}] t_frozen = {shown(est.frozen_forward_s)} s (INT8 forward, one image); "
            f"t_train = {shown(est.train_sample_s)} s (FP32 forward + backward, one latent); "
            f"t_update = {shown(est.update_s)} s (SGD step, once per mini-batch)"
        )
        for line in est.formulas():
            print(f"[{key}] {line}")
        fits = ", ".join(
            f"{lvl.removesuffix('_bytes')} {'yes' if ok else 'no'}"
            for lvl, ok in est.fits().items()
        )
        print(f"[{key}] fits: {fits}")
        bat = est.battery(battery_mah, battery_v, period_s)
        print(f"[{key}] battery: {bat.note()}")
        print(f"[{key}] {bat.period_formula()}")
        print(f"[{key}] {bat.formula()}")
        if not bat.keeps_up:
            print(
                f"finding: {key} cannot keep up with one mini-batch every {shown(period_s)} s "
                f"(one takes {shown(bat.active_s)} s): its lifetime is for back-to-back "
                f"mini-batches, one every {shown(bat.period_used_s)} s"
            )
    comparisons = report.comparisons()
    recap: list[str] = []  # targets whose basis goes next to the comparison's numbers
    if comparisons:
        print(
            "comparison with the QLR-CL paper (arXiv 2110.10486 abstract, VEGA vs STM32L4); "
            "the basis of each side follows"
        )
    for c in comparisons:
        paper = (c.fast, c.slow) == ("vega", "stm32l4")
        print(
            f"{c.fast} vs {c.slow}: {c.speedup_formula()}"
            + (f" (paper: {PAPER_SPEEDUP:g}x on average)" if paper else "")
        )
        print(
            f"{c.fast} vs {c.slow}: {c.energy_formula()}"
            + (f" (paper: {PAPER_ENERGY_RATIO:g}x)" if paper else "")
        )
        recap += [k for k in (c.fast, c.slow) if k not in recap]
    if first.target.key == "vega":
        bat = first.battery(battery_mah, battery_v, period_s)
        print(
            f"vega: battery lifetime {bat.shown_lifetime_h:.1f} h at one mini-batch every "
            f"{shown(period_s)} s (assumed battery {battery_mah:g} mAh at {battery_v:g} V; "
            f"paper: {PAPER_LIFETIME_H:g} h at one mini-batch a minute)"
        )
        recap += [k for k in ("vega",) if k not in recap]
    by_key = {est.target.key: est for est in report.targets}
    for key in recap:
        print(by_key[key].basis_summary())
    for finding in report.findings():
        print(f"finding: {finding}")


@click.command("cost")
@click.option("--from", "run_dir", type=click.Path(path_type=Path), default=None, metavar="RUN_DIR",
              help="price exactly what the finished run in RUN_DIR did: model, width, res, LR layer, replays, "
                   "bits, epochs, mini-batch, momentum and classes from its config.toml and summary.json, new "
                   "images per CL batch from its stream  [default: off, price the options below]")
@click.option("--model", default=ModelConfig.name, show_default=True, help="model name (tinycl layers MODEL)")
@click.option("--width", type=float, default=ModelConfig.width, show_default=True, help="width multiplier")
@click.option("--res", type=int, default=ModelConfig.res, show_default=True, help="input resolution (px)")
@click.option("--lr-layer", type=int, default=None,
              help="LR layer  [default: the model's, as tinycl run; tinycl layers MODEL prints it]")
@click.option("--replays", type=int, default=ReplayConfig.replays, show_default=True, help="LRs in memory (N)")
@click.option("--bits", type=int, default=ReplayConfig.bits, show_default=True, help="LR bits Q (1..8, 32=FP32)")
@click.option(
    "--target",
    "targets",
    multiple=True,
    help=f"target: {' | '.join(builtin_targets())} or a TOML file; repeat or comma-separate; the first "
    f"is compared with the others  [default: {DEFAULT_TARGET}]",
)
@click.option("--new-images", type=int, default=DEFAULT_NEW_IMAGES, show_default=True,
              help="new images per CL batch (300: a CORe50 video, as in NICv2-391)")
@click.option("--epochs", type=int, default=TrainConfig.epochs, show_default=True, help="epochs per CL batch")
@click.option("--minibatch", type=int, default=TrainConfig.minibatch, show_default=True,
              help="mini-batch size, new + replays")
@click.option(
    "--momentum/--no-momentum", default=TrainConfig.momentum > 0, show_default=True,
    help="keep an SGD momentum buffer",
)
@click.option("--num-classes", type=int, default=50, show_default=True, help="head classes")
@click.option("--norm", type=click.Choice(["brn", "bn", "frozen", "fold"]), default=TrainConfig.norm, show_default=True,
              help="adaptive-stage normalization: brn/bn hold a whole mini-batch of activations (batch statistics), "
                   "frozen one sample at a time, fold (BN folded into its conv) also keeps no BN x_hat")
@click.option("--sparse", "sparse_ratio", type=float, default=1.0, show_default=True,
              help="structured sparse update: input-channel ratio of every adaptive conv (1 = dense backprop)")
@click.option("--battery-mah", type=float, default=DEFAULT_BATTERY_MAH, show_default=True,
              help="battery capacity (mAh; assumed: one Li-ion cell)")
@click.option("--battery-v", type=float, default=DEFAULT_BATTERY_V, show_default=True, help="battery voltage (V)")
@click.option(
    "--period-min",
    type=float,
    default=1.0,
    show_default=True,
    help="one mini-batch learned every PERIOD minutes",
)
@click.option("--layers/--no-layers", "show_layers", default=True, show_default=True,
              help="print the per-layer table")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables  [default: off]")
@click.pass_context
def cost(
    ctx: click.Context,
    run_dir: Path | None,
    model: str,
    width: float,
    res: int,
    lr_layer: int | None,
    replays: int,
    bits: int,
    targets: tuple[str, ...],
    new_images: int,
    epochs: int,
    minibatch: int,
    momentum: bool,
    num_classes: int,
    norm: str,
    sparse_ratio: float,
    battery_mah: float,
    battery_v: float,
    period_min: float,
    show_layers: bool,
    as_json: bool,
) -> None:
    """Price a configuration on MCU targets: MACs, bytes, latency, energy, battery life."""
    from tinycl.device import CostConfig, estimate, report_to_dict
    from tinycl.models.registry import default_lr_layer

    if battery_mah <= 0 or battery_v <= 0:
        raise TinyclError("--battery-mah and --battery-v must be > 0")
    if period_min <= 0:
        raise TinyclError(f"--period-min must be > 0, got {period_min}")
    basis: dict | None = None
    if run_dir is not None:
        given = [name for name in RUN_OPTIONS
                 if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if given:
            raise TinyclError(f"--from prices the run as it was: drop --{given[0].replace('_', '-')}")
        config, basis = run_cost_config(run_dir, for_cost=True)
    else:
        config = CostConfig(
            model=model,
            width=width,
            res=res,
            lr_layer=default_lr_layer(model) if lr_layer is None else lr_layer,
            replays=replays,
            bits=bits,
            new_images=new_images,
            epochs=epochs,
            minibatch_size=minibatch,
            momentum=momentum,
            num_classes=num_classes,
            norm=norm,
            sparse_ratio=sparse_ratio,
        )
    report = estimate(config, _targets(targets))
    period_s = 60.0 * period_min
    if as_json:
        data = report_to_dict(report, battery_mah, battery_v, period_s)
        if basis is not None:
            data["from_run"] = basis
        click.echo(json.dumps(data, indent=1))
    else:
        if basis is not None:
            print(basis["text"])
        print_report(report, battery_mah, battery_v, period_s, show_layers)


# --- what a finished run did, as a cost configuration -------------------------------------


def _read_summary(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TinyclError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise TinyclError(f"{path}: expected a JSON object")
    return data


def _first_record(path: Path) -> dict:
    """The first line of a run's metrics.jsonl: batch 0, always evaluated."""
    try:
        with open(path, encoding="utf-8") as fh:
            record = json.loads(fh.readline())
    except FileNotFoundError:
        raise TinyclError(f"{path.parent} is not a finished run: no metrics.jsonl") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TinyclError(f"cannot read {path}: {exc}") from None
    if not isinstance(record, dict) or record.get("batch") != 0 or not isinstance(record.get("new_samples"), int):
        raise TinyclError(f"{path}: its first line is not batch 0 with new_samples")
    return record


def run_cost_config(run_dir: Path, *, for_cost: bool = False) -> tuple[CostConfig, dict]:
    """The cost configuration of exactly what the finished run in ``run_dir`` did, and where each
    figure came from (``basis["text"]`` is one line for people).

    Model, width, resolution, LR layer, replay slots (the capacity the run had: 0 for naive), LR
    bits and classes come from summary.json (what ran); epochs, mini-batch and momentum from
    config.toml. New images per CL batch: the mean of the incremental batches 1..B-1,
    (train_images - batch 0's new_samples) / (num_batches - 1), from summary.json and the first
    line of metrics.jsonl; batch 0 is left out because it only fills the memory and trains with
    no replays, while the cost model prices a batch learned with N replays. With ``for_cost``
    strategies the cost model does not describe (joint training, raw-image replay) are refused.
    """
    from tinycl.config import from_dict, load_toml
    from tinycl.device import CostConfig

    if not run_dir.is_dir():
        raise TinyclError(f"{run_dir}: no such run directory")
    summary_path, config_path = run_dir / "summary.json", run_dir / "config.toml"
    if not summary_path.is_file():
        raise TinyclError(f"{run_dir} is not a finished run: no summary.json (tinycl run writes it last)")
    if not config_path.is_file():
        raise TinyclError(f"{run_dir} is not a finished run: no config.toml")
    summary = _read_summary(summary_path)
    cfg = from_dict(load_toml(config_path), source=str(config_path))
    first = _first_record(run_dir / "metrics.jsonl")
    try:
        strategy = str(summary.get("strategy", cfg.train.strategy))
        num_batches, train_images = int(summary["num_batches"]), int(summary["train_images"])
        values = {"model": str(summary["model"]), "width": float(summary["width"]), "res": int(summary["res"]),
                  "lr_layer": int(summary["lr_layer"]), "replays": int(summary["replays"]),
                  "bits": int(summary["lr_bits"]), "num_classes": int(summary["num_classes"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise TinyclError(f"{summary_path} lacks a valid {exc}") from None
    if for_cost and strategy not in PRICED_STRATEGIES:
        raise TinyclError(f"{run_dir}: the cost model prices latent replay on the device; this run's strategy "
                          f"is {strategy}")
    incremental = num_batches - 1
    if incremental > 0:
        new_images = max(1, round((train_images - first["new_samples"]) / incremental))
        how = (f"(train_images {train_images:,} - batch 0's {first['new_samples']:,}) / {incremental} "
               f"incremental batches = {new_images:,}")
    else:  # one batch: it is the whole stream
        new_images = max(1, train_images)
        how = f"the run's only batch, {new_images:,}"
    t = cfg.train
    config = CostConfig(**values, new_images=new_images, epochs=t.epochs, minibatch_size=t.minibatch,
                        momentum=t.momentum > 0, norm=t.norm)
    text = (f"priced from {run_dir}: {config.model} width {config.width:g} at {config.res} px, LR layer "
            f"{config.lr_layer}, {config.replays} x {config.bits}-bit LRs, {config.num_classes} classes, "
            f"{config.epochs} epoch{'s' * (config.epochs != 1)} of mini-batches of {config.minibatch_size}, "
            f"{'with' if config.momentum else 'no'} momentum, --norm {config.norm} ({strategy}); new images per "
            f"CL batch: {how}")
    if t.sparse:
        text += f"; note: the cost model prices dense backprop, the run used --sparse {t.sparse}"
    basis = {"run_dir": str(run_dir), "strategy": strategy, "new_images": new_images,
             "new_images_basis": "(train_images - batch 0 new_samples) / (num_batches - 1)"
             if incremental > 0 else "train_images (one batch)",
             "sparse": t.sparse, "text": text}
    return config, basis


def _config_of(summary: dict, where: Path) -> CostConfig:
    """A cost configuration from a summary alone (a run folder without config.toml)."""
    from tinycl.device import CostConfig

    try:
        return CostConfig(
            model=str(summary["model"]),
            width=float(summary.get("width", 1.0)),
            res=int(summary.get("res", 128)),
            lr_layer=int(summary["lr_layer"]),
            replays=int(summary["replays"]),
            bits=int(summary["lr_bits"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TinyclError(f"{where}: summary.json lacks a valid {exc}") from None


# --- tinycl report ------------------------------------------------------------------------


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--target", default=DEFAULT_TARGET, show_default=True,
              help=f"target for latency bars and memory levels: {' | '.join(builtin_targets())} or a TOML file")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="where to write PNGs  [default: RUN_DIR]",
)
def report(run_dir: Path, target: str, out: Path | None) -> None:
    """Write device PNGs for a run (latency bars, memory bar) or a sweep (+ Pareto front)."""
    from tinycl.device import estimate
    from tinycl.report.device_plots import (
        ParetoPoint,
        plot_layer_latency,
        plot_memory,
        plot_pareto,
    )

    if not run_dir.is_dir():
        raise TinyclError(f"run directory {run_dir} does not exist")
    out = out or run_dir
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        runs = [(run_dir.name, summary_path)]
    else:
        runs = sorted(
            (d.name, d / "summary.json")
            for d in run_dir.iterdir()
            if (d / "summary.json").is_file()
        )
        if not runs:
            raise TinyclError(f"{run_dir} holds no summary.json, nor subdirectories with one")
    reports = []
    points = []
    for label, path in runs:
        summary = _read_summary(path)
        # A run folder prices what the run did (as cost --from); a bare summary what it states.
        if (path.parent / "config.toml").is_file():
            config = run_cost_config(path.parent)[0]
        else:
            config = _config_of(summary, path)
        rep = estimate(config, [target])
        reports.append((label, rep))
        if "final_accuracy" in summary:
            points.append(
                ParetoPoint(label, rep.memory.total_bytes, float(summary["final_accuracy"]))
            )
    first = reports[0][1].targets[0].target
    levels = {
        lvl.removesuffix("_bytes"): first.memory_bytes(lvl) for lvl in ("l2_bytes", "external_bytes")
    }
    where = f"{run_dir.name}" if len(runs) == 1 else f"{len(runs)} runs in {run_dir.name}"
    written.append(plot_memory(reports, out / "memory.png", levels,
                               f"Device memory of {where} (cost model; levels of {first.key})"))
    if len(runs) == 1:
        rep = reports[0][1]
        written.append(plot_layer_latency(rep, rep.targets[0], out / "latency_per_layer.png"))
    else:
        if points:
            written.append(
                plot_pareto(points, out / "pareto.png", f"device memory on {target} (MB)",
                            f"Final accuracy vs device memory: {len(points)} runs in {run_dir.name}")
            )
    for path in written:
        print(f"wrote {path}")
    for _, rep in reports:
        for finding in rep.findings():
            print(f"finding: {finding}")


COMMANDS = [cost, report]
