"""``tinycl sweep``: the QLR experiment, a grid of runs over Q bits, N replays, LR layers, seeds.

Before running anything it prints the plan (cells, runs, runs already finished, the executor,
an estimate of the time); runs go through ``tinycl.grid`` (serial, a local process pool or Ray);
torch and the learner load inside the command, so ``tinycl --help`` stays fast.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tinycl.config import DataConfig, QuantConfig, TrainConfig
from tinycl.errors import TinyclError
from tinycl.grid.options import grid_options

if TYPE_CHECKING:
    from tinycl.config import RunConfig


def int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise TinyclError(f"--{name} must be a comma-separated list of integers, got {text!r}") from None
    if not values:
        raise TinyclError(f"--{name} is empty")
    return values


def run_name(cfg: RunConfig) -> str:
    """``L19_Q4_N750_s0``; ``_int8`` marks FP32 LRs behind the INT8 stage, ``_clip`` / ``_clippc``
    a clipping quantizer (per tensor / per channel), ``_mse`` / ``_percentile`` an INT8-stage
    observer other than min-max, so runs of two cells never share a folder."""
    from tinycl.quant.packing import FP32_BITS
    from tinycl.report.sweep import DEFAULT_OBSERVER

    q, bits = cfg.quant, cfg.replay.bits
    if bits == FP32_BITS:
        suffix = "_int8" if q.frozen == "int8" else ""
    elif q.latent_mode != "shift":
        suffix = f"_{q.latent_mode}" + ("pc" if q.latent_per_channel else "")
    else:
        suffix = ""
    int8_stage = bits != FP32_BITS or q.frozen == "int8"
    if int8_stage and q.observer != DEFAULT_OBSERVER:
        suffix += f"_{q.observer}"
    return f"L{cfg.model.lr_layer}_Q{bits}{suffix}_N{cfg.replay.replays}_s{cfg.seed}"


@click.command("sweep")
@click.option("--config", "config_file", type=str,
              help="base TOML config for every run  [default: none, i.e. tinycl run's defaults]")
@click.option("--bits", default="32,8,7,6,5,4", show_default=True, help="Q values")
@click.option("--replays", default="375,750,1500,3000", show_default=True, help="N values")
@click.option("--lr-layers", default="19,23", show_default=True, help="LR layers")
@click.option("--seeds", default="0,1,2", show_default=True, help="training seeds (repeats)")
@click.option("--scenario", type=str,
              help=f"protocol of every run  [default: the base config's, else {DataConfig.scenario}]")
@click.option("--epochs", type=int,
              help=f"epochs per batch of every run  [default: the base config's, else {TrainConfig.epochs}]")
@click.option("--latent-mode", type=str, help="Q-bit latent quantizer: shift | clip  "
              f"[default: the base config's, else {QuantConfig.latent_mode}]")
@click.option("--frozen", type=str, help="frozen-stage arithmetic: auto | int8 (with Q=32: isolates LR compression)  "
              f"[default: the base config's, else {QuantConfig.frozen}]")
@click.option("--latent-per-channel/--latent-per-tensor", default=None,
              help="per-channel clipping scales (clip mode)  [default: the base config's, else per tensor]")
@click.option("--observer", type=str, help="INT8-stage activation observer: minmax | percentile | mse  "
              f"[default: the base config's, else {QuantConfig.observer}]")
@click.option("--out", default="runs/qlr-sweep", show_default=True, help="sweep directory")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True, help="CPU threads for PyTorch")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="skip runs whose summary.json already exists")
@click.option("--table-only", is_flag=True,
              help="run nothing: rebuild sweep.md and the plot from the runs in --out  [default: off]")
@click.option("--dry-run", is_flag=True, help="print the plan and run nothing  [default: off]")
@grid_options
def sweep(config_file, bits, replays, lr_layers, seeds, scenario, epochs, latent_mode, frozen,
          latent_per_channel, observer, out, threads, resume, table_only, dry_run, executor, workers,
          ray_address) -> None:
    """Final accuracy for every (Q, N, LR layer, seed); writes sweep.md and accuracy_vs_memory.png.

    Prints the plan (cells, runs, runs already finished, executor, estimated time) before it
    starts; runs several at a time (--executor local, the default, or ray); a failed run is
    reported and the others go on (exit 1 at the end); finished runs are skipped when run again."""
    import torch

    from tinycl.cli.run import resolve_config
    from tinycl.grid import GridSettings, run_grid
    from tinycl.report.rundir import write_atomic
    from tinycl.report.sweep import cells, plot_accuracy_vs_memory, read_summaries, sweep_markdown

    settings = GridSettings(executor, workers, ray_address, threads)
    if not table_only:  # an executor that cannot start: one line before the grid is even built
        settings.check()
    torch.set_num_threads(threads)
    grid = list(itertools.product(int_list(lr_layers, "lr-layers"), int_list(bits, "bits"),
                                  int_list(replays, "replays"), int_list(seeds, "seeds")))
    base = {"scenario": scenario, "epochs": epochs, "latent_mode": latent_mode, "frozen": frozen,
            "latent_per_channel": latent_per_channel, "observer": observer, "fidelity": False}
    configs = []
    for layer, q, n, seed in grid:
        cfg = resolve_config(config_file, {**base, "lr_layer": layer, "bits": q, "replays": n, "seed": seed})
        run_dir = Path(out) / run_name(cfg)
        cfg.out = str(run_dir)
        configs.append((run_dir, cfg))
    report = None
    if not table_only:
        grid_cells = len({(layer, q, n) for layer, q, n, _ in grid})
        report = run_grid(configs, out=Path(out), cells=grid_cells, settings=settings, skip_finished=resume,
                          dry_run=dry_run)
        if dry_run:
            return
    table = cells(read_summaries(Path(out)))
    if not table:
        if report:
            report.exit_if_incomplete()
        raise TinyclError(f"no run with a summary.json under {out}")
    text = sweep_markdown(table)
    write_atomic(Path(out) / "sweep.md", text)
    plot_accuracy_vs_memory(table, Path(out) / "accuracy_vs_memory.png",
                            f"QLR: final accuracy vs replay memory ({configs[0][1].data.scenario})")
    print(text)
    print(f"wrote {Path(out) / 'sweep.md'} and {Path(out) / 'accuracy_vs_memory.png'}")
    if report:
        report.exit_if_incomplete()
