"""``tinycl run``: a continual-learning experiment, its run directory and its progress bar."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tinycl.config import (
    BENCHMARKS,
    NORMS,
    RECIPES,
    STRATEGIES,
    RunConfig,
    apply_recipe,
    dump_toml,
    from_dict,
    load_toml,
    validate,
)
from tinycl.report.plots import plot_accuracy_curves
from tinycl.report.rundir import MetricsLog, RunDirectory, write_atomic, write_json

# option name -> (section, field); None section = top level of RunConfig.
OPTION_FIELDS = {
    "model": ("model", "name"), "width": ("model", "width"), "res": ("model", "res"),
    "lr_layer": ("model", "lr_layer"), "weights": ("model", "weights"),
    "benchmark": ("data", "benchmark"), "scenario": ("data", "scenario"),
    "data_root": ("data", "data_root"), "run_index": ("data", "run"),
    "frames": ("data", "frames"), "labels": ("data", "labels"), "data_seed": ("data", "data_seed"),
    "classes_per_task": ("data", "classes_per_task"), "batches": ("data", "batches"),
    "replays": ("replay", "replays"), "bits": ("replay", "bits"),
    "policy": ("replay", "policy"), "frozen": ("quant", "frozen"),
    "weight_quant": ("quant", "weight_quant"), "observer": ("quant", "observer"),
    "latent_mode": ("quant", "latent_mode"), "latent_per_channel": ("quant", "latent_per_channel"),
    "strategy": ("train", "strategy"),
    "epochs": ("train", "epochs"),
    "joint_epochs": ("train", "joint_epochs"), "sparse": ("train", "sparse"),
    "sparse_policy": ("train", "sparse_policy"), "minibatch": ("train", "minibatch"), "lr": ("train", "lr"),
    "inc_lr": ("train", "inc_lr"), "momentum": ("train", "momentum"),
    "weight_decay": ("train", "weight_decay"), "norm": ("train", "norm"), "cwr": ("train", "cwr"),
    "recipe": ("train", "recipe"),
    "eval_every": ("eval", "every"), "fidelity": ("eval", "fidelity"),
    "latent_cache": ("eval", "latent_cache"), "seed": (None, "seed"), "out": (None, "out"),
    "checkpoint_every": (None, "checkpoint_every"),
}
# What may accompany --resume: everything else comes from the run directory's config.toml.
RESUME_OPTIONS = ("checkpoint_every",)


def resolve_config(config_file: str | None, options: dict) -> RunConfig:
    """The recipe's preset (``--recipe``, else the file's ``train.recipe``, else tinycl), then the
    TOML file, then every option given on the command line."""
    raw = load_toml(Path(config_file)) if config_file else {}
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    recipe = options.get("recipe") or train.get("recipe") or "tinycl"
    cfg = apply_recipe(RunConfig(), recipe if isinstance(recipe, str) else str(recipe))
    if config_file:
        cfg = from_dict(raw, cfg, source=config_file)
    for key, value in options.items():
        if value is None or key not in OPTION_FIELDS:
            continue
        section, name = OPTION_FIELDS[key]
        setattr(getattr(cfg, section) if section else cfg, name, value)
    return validate(cfg)


@click.command("run")
@click.option("--config", "config_file", type=str, help="TOML config (a run's config.toml reruns it)")
@click.option("--model", type=str, help="model name [mobilenet_v1]")
@click.option("--width", type=float, help="width multiplier [0.25]")
@click.option("--res", type=int, help="input resolution in pixels [64]")
@click.option("--lr-layer", type=int, help="latent replay layer: last layer of the frozen stage [19]")
@click.option("--weights", type=str, help="pretrained state dict (.pt); default: synthetic-pretrained")
@click.option("--benchmark", type=click.Choice(BENCHMARKS), help="data source [synthetic-core50]")
@click.option("--scenario", type=str, help="nicv2_391 | nicv2_196 | nicv2_79 | ni | nc | ci [nicv2_79]")
@click.option("--data-root", type=str, help="data file or folder for the core50, arrays and folder benchmarks")
@click.option("--run", "run_index", type=int, help="protocol run (stream order) index [0]")
@click.option("--labels", type=str, help="object (50 classes) | category (10 classes, CORe50 label // 5)")
@click.option("--frames", type=int, help="frames per (object, session) video, synthetic [20]")
@click.option("--data-seed", type=int, help="seed of the synthetic benchmark generator [0]")
@click.option("--classes-per-task", type=int, help="arrays/folder data, nc and ci: new classes per task [2]")
@click.option("--batches", type=int, help="arrays/folder data without session ids, ni: shuffled batches [5]")
@click.option("--replays", type=int, help="replay memory slots N [750; ar1star: 1500]")
@click.option("--bits", type=int, help="bits per stored latent value: 1..8 or 32 (FP32) [8]")
@click.option("--policy", type=str, help="replay memory policy: recipe | reservoir | class-balanced")
@click.option("--frozen", type=str, help="frozen-stage arithmetic: auto | int8 | float [auto]")
@click.option("--weight-quant", type=str, help="INT8 weights: per-channel | per-tensor")
@click.option("--observer", type=str, help="activation observer: minmax | percentile | mse")
@click.option("--latent-mode", type=str, help="Q-bit latent quantizer: shift | clip [shift]")
@click.option("--latent-per-channel/--latent-per-tensor", default=None,
              help="per-channel clipping scales for Q-bit latents (clip mode)")
@click.option("--strategy", type=click.Choice(STRATEGIES), help="learner or baseline [latent-replay]")
@click.option("--epochs", type=int, help="epochs per batch [4]")
@click.option("--sparse", type=str,
              help="structured sparse update: LAYER=RATIO | LAYER=bias | LAYER=channels:C/C/..., comma-separated")
@click.option("--sparse-policy", type=str, help="channels of the sparse update: random | topk [random]")
@click.option("--joint-epochs", type=int, help="epochs of the joint upper bound [30]")
@click.option("--minibatch", type=int, help="mini-batch size, new + replays [128]")
@click.option("--lr", type=float, help="learning rate of batch 0 [0.001]")
@click.option("--inc-lr", type=float, help="learning rate of later batches [0.001; ar1star: 5e-5]")
@click.option("--momentum", type=float, help="SGD momentum [0.9]")
@click.option("--weight-decay", type=float, help="SGD weight decay [0.0005]")
@click.option("--norm", type=click.Choice(NORMS), help="adaptive-stage normalization [brn]")
@click.option("--cwr/--no-cwr", default=None, help="CWR* head consolidation [off; ar1star: on]")
@click.option("--recipe", type=click.Choice(list(RECIPES)),
              help="named preset of the CL loop's constants and behaviours: tinycl | ar1star "
                   "(ar1-pytorch's AR1* as published) [tinycl]; other options override it")
@click.option("--eval-every", type=int, help="evaluate after every k-th batch [1]")
@click.option("--fidelity/--no-fidelity", default=None,
              help="INT8 runs: report float-vs-integer accuracy and per-layer error [on]")
@click.option("--latent-cache/--no-latent-cache", default=None,
              help="reuse frozen-stage outputs cached by an identical earlier setting [on]")
@click.option("--seed", type=int, help="training seed [0]")
@click.option("--out", type=str, help="run directory [runs/default]")
@click.option("--checkpoint-every", type=int,
              help="write DIR/checkpoint.ckpt after every k-th batch (0: never) [0]")
@click.option("--resume", "resume_dir", type=str,
              help="continue the run in this directory from its last checkpoint")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="CPU threads for PyTorch; results repeat exactly for one thread count on one CPU (thread "
                   "count and SIMD kernels change float rounding: losses differ in the 7th digit)")
def run(config_file: str | None, resume_dir: str | None, quiet: bool, threads: int, **options) -> None:
    """Run a continual-learning experiment and write its run directory."""
    import torch

    torch.set_num_threads(threads)
    if resume_dir is not None:
        extra = [k for k, v in options.items() if v is not None and k not in RESUME_OPTIONS]
        if config_file or extra:
            name = "config" if config_file else extra[0].replace("_", "-")
            raise click.UsageError(f"--resume continues with the run's own config.toml; drop --{name}")
        cfg, summary = resume(Path(resume_dir), options.get("checkpoint_every"), quiet)
    else:
        cfg = resolve_config(config_file, options)
        summary = execute(cfg, quiet)
    print(
        f"{cfg.train.strategy}: final accuracy {100 * summary['final_accuracy']:.2f}%, "
        f"average {100 * summary['average_accuracy']:.2f}% over {summary['num_batches']} batches; "
        f"replay memory {summary['lr_memory_bytes']:,} B ({summary['replays']} x "
        f"{summary['lr_bits']}-bit LRs of {summary['latent_values']} values) "
        f"+ {summary['lr_label_bytes']:,} B labels; {summary['wall_seconds']:.1f} s -> {cfg.out}"
    )


def run_grid(configs: list[tuple[Path, RunConfig]], *, skip_finished: bool) -> None:
    """Run every (run directory, config) of a sweep in order, one line each; with
    ``skip_finished`` a directory that already holds a summary.json is left as it is."""
    for i, (run_dir, cfg) in enumerate(configs):
        if skip_finished and (run_dir / "summary.json").is_file():
            continue
        s = execute(cfg, quiet=True)
        print(f"[{i + 1}/{len(configs)}] {run_dir.name}: final {100 * s['final_accuracy']:.2f}% "
              f"({s['lr_memory_bytes']:,} B LRs) in {s['wall_seconds']:.0f} s", flush=True)


def resume_point(folder: Path, checkpoint_every: int | None) -> tuple[RunConfig, dict | None]:
    """The config of the run in ``folder`` and its last checkpoint (None: start it over)."""
    from tinycl.errors import TinyclError
    from tinycl.train.checkpoint import FILE_NAME, load_checkpoint

    config_path = folder / "config.toml"
    if not config_path.is_file():
        raise TinyclError(f"--resume {folder}: it holds no config.toml, so there is no run to continue")
    cfg = from_dict(load_toml(config_path), source=str(config_path))
    if checkpoint_every is not None:
        cfg.checkpoint_every = checkpoint_every
    validate(cfg)
    path = folder / FILE_NAME
    return cfg, load_checkpoint(path) if path.exists() else None


def resume(folder: Path, checkpoint_every: int | None, quiet: bool) -> tuple[RunConfig, dict]:
    """Continue the run in ``folder`` (or the replacement run staged beside it) as its owner."""
    from tinycl.errors import TinyclError

    if not folder.is_dir():
        raise TinyclError(f"--resume {folder}: no such run directory")
    with RunDirectory(folder) as rundir:
        work = rundir.begin(resuming=True)
        cfg, state = resume_point(work, checkpoint_every)
        cfg.out = str(folder)
        return cfg, execute(cfg, quiet, resume=state, rundir=rundir)


def execute(cfg: RunConfig, quiet: bool, resume: dict | None = None, rundir: RunDirectory | None = None) -> dict:
    """Run ``cfg`` (from checkpoint ``resume`` if given) and write its run directory; returns
    the summary. The summary is written last: it marks a finished run. The directory is owned
    (``RunDirectory``) for the whole run; over a finished run the new one is staged and swapped
    in only when it has finished."""
    if rundir is None:
        out = Path(cfg.out)
        if out.exists() and not out.is_dir():
            raise click.UsageError(f"--out {out} exists and is not a directory")
        with RunDirectory(out) as owned:
            refuse_unfinished(owned)
            owned.begin()
            return execute(cfg, quiet, resume, owned)
    try:
        summary = run_in(cfg, quiet, resume, rundir.work)
    except BaseException:
        from tinycl.train.checkpoint import FILE_NAME

        rundir.abandon(keep=(rundir.work / FILE_NAME).exists())
        raise
    rundir.commit()
    return summary


def refuse_unfinished(rundir: RunDirectory) -> None:
    """A new run may not replace an unfinished run that can be resumed (its checkpoint)."""
    from tinycl.errors import TinyclError
    from tinycl.train.checkpoint import FILE_NAME, load_checkpoint

    for folder in (rundir.final, rundir.staging):
        path = folder / FILE_NAME
        if not path.exists():
            continue
        try:
            finished = isinstance(load_checkpoint(path).get("summary"), dict)
        except TinyclError as exc:
            raise TinyclError(f"{exc}; delete it to start a new run in {rundir.final}") from None
        if not finished:
            raise TinyclError(f"{path} holds an unfinished run: continue it with --resume {rundir.final}, "
                              "or choose another --out")


def run_in(cfg: RunConfig, quiet: bool, resume: dict | None, out: Path) -> dict:
    """Run ``cfg`` writing into ``out`` (the run directory or its staging folder)."""
    from tinycl.errors import TinyclError
    from tinycl.train.checkpoint import FILE_NAME
    from tinycl.train.experiment import Checkpointing, Events, config_digest, run_experiment

    ckpt_path = out / FILE_NAME
    if resume is not None and isinstance(resume.get("summary"), dict):
        if resume.get("config_digest") != config_digest(cfg):
            raise TinyclError(f"checkpoint {ckpt_path} was written by another configuration than this run's "
                              "config.toml (was it edited?)")
        records = (resume.get("stream") or {}).get("records") or []
        return finish(cfg, resume["summary"], records, rewrite_metrics=True, out=out,
                      notes=[f"the run in {cfg.out} was already complete; outputs rewritten from its checkpoint"])
    if cfg.checkpoint_every and resume is None:
        # Written first so that a run killed at any point, even before its first checkpoint,
        # can be resumed (in a staging folder when it replaces a finished run).
        write_atomic(out / "config.toml", dump_toml(cfg))
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("acc {task.fields[acc]}"), TimeElapsedColumn(),
        console=console, disable=quiet or not sys.stderr.isatty(), transient=False,
    )
    log: MetricsLog | None = None
    records: list[dict] = []
    state = {"task": None}

    def on_pretrain(epoch: int, epochs: int, loss: float) -> None:
        if state["task"] is None:
            state["task"] = progress.add_task("pretraining", total=epochs, acc="-")
        progress.update(state["task"], completed=epoch, acc=f"loss {loss:.2f}")

    def on_start(num_batches: int, earlier: list[dict]) -> None:
        nonlocal log
        log = MetricsLog(out / "metrics.jsonl", earlier)
        write_atomic(out / "config.toml", dump_toml(cfg))
        records.extend(earlier)
        done = earlier[-1]["batch"] + 1 if earlier else 0
        state["task"] = progress.add_task(f"{cfg.train.strategy}", total=num_batches, acc="-", completed=done)

    def on_eval(record: dict) -> None:
        assert log is not None
        log.append(record)
        records.append(record)
        progress.update(state["task"], completed=record["batch"] + 1,
                        acc=f"{100 * record['accuracy']:.1f}%")

    def on_deployment(deployment) -> None:
        from tinycl.export.deployment import FILE_NAME as DEPLOYMENT_FILE
        from tinycl.export.deployment import save_deployment

        save_deployment(out / DEPLOYMENT_FILE, deployment)

    events = Events(on_pretrain, on_start, on_eval, on_deployment=on_deployment)
    checkpointing = Checkpointing(ckpt_path, cfg.checkpoint_every, resume)
    with progress:
        summary = run_experiment(cfg, events, checkpointing)
    if log:
        log.close()
    return finish(cfg, summary, records, rewrite_metrics=False, notes=events.notes, out=out)


def finish(cfg: RunConfig, summary: dict, records: list[dict], *, rewrite_metrics: bool,
           notes: list[str], out: Path) -> dict:
    """Write the outputs of a finished run into ``out``; the summary comes last, then the notes
    (so a run that fails to write prints its error alone)."""
    if rewrite_metrics:
        MetricsLog(out / "metrics.jsonl", records).close()
    curve = ([r["batch"] for r in records], [r["accuracy"] for r in records])
    title = f"{cfg.model.name} w{cfg.model.width:g} LR {cfg.model.lr_layer}, {cfg.data.scenario}"
    plot_accuracy_curves({cfg.train.strategy: curve}, out / "accuracy.png", title)
    write_json(out / "summary.json", summary)
    console = Console(stderr=True)
    for note in notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    return summary
