"""``tinycl run``: a continual-learning experiment, its run directory and its progress bar."""

from __future__ import annotations

from pathlib import Path

import click

from tinycl.cli.progress import Reporter
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
from tinycl.report.rundir import MetricsLog, RunDirectory, write_atomic

# option name -> (section, field); None section = top level of RunConfig.
OPTION_FIELDS = {
    "model": ("model", "name"), "width": ("model", "width"), "res": ("model", "res"),
    "lr_layer": ("model", "lr_layer"), "weights": ("model", "weights"),
    "benchmark": ("data", "benchmark"), "scenario": ("data", "scenario"),
    "data_root": ("data", "data_root"), "run_index": ("data", "run"),
    "frames": ("data", "frames"), "labels": ("data", "labels"), "data_seed": ("data", "data_seed"),
    "classes_per_task": ("data", "classes_per_task"), "batches": ("data", "batches"), "resize": ("data", "resize"),
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
    "recipe": ("train", "recipe"), "device": ("train", "device"),
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
    model_raw = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    if options.get("lr_layer") is None and "lr_layer" not in model_raw:
        from tinycl.models import model_names
        from tinycl.models.registry import default_lr_layer

        if cfg.model.name in model_names():  # an unknown model is refused by validate
            cfg.model.lr_layer = default_lr_layer(cfg.model.name)
    return validate(cfg)


@click.command("run")
@click.option("--config", "config_file", type=str, help="TOML config (a run's config.toml reruns it) [default: none]")
@click.option("--model", type=str, help="model name [default: mobilenet_v1]")
@click.option("--width", type=float, help="width multiplier [default: 0.25]")
@click.option("--res", type=int, help="input resolution in pixels [default: 64]")
@click.option("--lr-layer", type=int, help="latent replay layer: last layer of the frozen stage "
              "[default: the model's, marked by tinycl layers MODEL; mobilenet_v1 19]")
@click.option("--weights", type=str, help="pretrained state dict (.pt) [default: the synthetic-pretrained weights]")
@click.option("--benchmark", type=click.Choice(BENCHMARKS), help="data source [default: synthetic-core50]")
@click.option("--scenario", type=str, help="nicv2_391 | nicv2_196 | nicv2_79 | ni | nc | ci [default: nicv2_79]")
@click.option("--data-root", type=str,
              help="data file or folder for the core50, arrays and folder benchmarks [default: none]")
@click.option("--run", "run_index", type=int, help="protocol run (stream order) index [default: 0]")
@click.option("--labels", type=str,
              help="object (50 classes) | category (10 classes, CORe50 label // 5) [default: object]")
@click.option("--frames", type=int, help="frames per (object, session) video, synthetic [default: 20]")
@click.option("--data-seed", type=int, help="seed of the synthetic benchmark generator [default: 0]")
@click.option("--classes-per-task", type=int, help="arrays/folder data, nc and ci: new classes per task [default: 2]")
@click.option("--resize/--no-resize", default=None,
              help="scale core50 / arrays / folder images to --res (bilinear preprocessing) [default: off]")
@click.option("--batches", type=int, help="arrays/folder data without session ids, ni: shuffled batches [default: 5]")
@click.option("--replays", type=int, help="replay memory slots N [default: 750; ar1star: 1500]")
@click.option("--bits", type=int, help="bits per stored latent value: 1..8 or 32 (FP32) [default: 8]")
@click.option("--policy", type=str,
              help="replay memory policy: recipe | ar1 | reservoir | class-balanced [default: recipe; ar1star: ar1]")
@click.option("--frozen", type=str, help="frozen-stage arithmetic: auto | int8 | float [default: auto]")
@click.option("--weight-quant", type=str, help="INT8 weights: per-channel | per-tensor [default: per-channel]")
@click.option("--observer", type=str, help="activation observer: minmax | percentile | mse [default: minmax]")
@click.option("--latent-mode", type=str, help="Q-bit latent quantizer: shift | clip [default: shift]")
@click.option("--latent-per-channel/--latent-per-tensor", default=None,
              help="per-channel clipping scales for Q-bit latents (clip mode) [default: per-tensor]")
@click.option("--strategy", type=click.Choice(STRATEGIES), help="learner or baseline [default: latent-replay]")
@click.option("--epochs", type=int, help="epochs per batch [default: 4]")
@click.option("--sparse", type=str,
              help="structured sparse update: LAYER=RATIO | LAYER=bias | LAYER=channels:C/C/..., comma-separated "
                   "[default: dense]")
@click.option("--sparse-policy", type=str, help="channels of the sparse update: random | topk [default: random]")
@click.option("--joint-epochs", type=int, help="epochs of the joint upper bound [default: 30]")
@click.option("--minibatch", type=int, help="mini-batch size, new + replays [default: 128]")
@click.option("--lr", type=float, help="learning rate of batch 0 [default: 0.001]")
@click.option("--inc-lr", type=float, help="learning rate of later batches [default: 0.001; ar1star: 5e-5]")
@click.option("--momentum", type=float, help="SGD momentum [default: 0.9]")
@click.option("--weight-decay", type=float, help="SGD weight decay [default: 0.0005]")
@click.option("--norm", type=click.Choice(NORMS), help="adaptive-stage normalization [default: brn]")
@click.option("--cwr/--no-cwr", default=None, help="CWR* head consolidation [default: off; ar1star: on]")
@click.option("--recipe", type=click.Choice(list(RECIPES)),
              help="named preset of the CL loop's constants and behaviours: tinycl | ar1star "
                   "(ar1-pytorch's AR1* as published); other options override it [default: tinycl]")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]),
              help="where the float paths run (float frozen stage, pretraining, adaptive stage); the INT8 stage "
                   "stays on its exact CPU path [default: cpu]")
@click.option("--eval-every", type=int, help="evaluate after every k-th batch [default: 1]")
@click.option("--fidelity/--no-fidelity", default=None,
              help="INT8 runs: report float-vs-integer accuracy and per-layer error [default: on]")
@click.option("--latent-cache/--no-latent-cache", default=None,
              help="reuse frozen-stage outputs cached by an identical earlier setting [default: on]")
@click.option("--seed", type=int, help="training seed [default: 0]")
@click.option("--out", type=str, help="run directory [default: runs/default]")
@click.option("--checkpoint-every", type=int,
              help="write DIR/checkpoint.ckpt after every k-th batch (0: never) [default: 0]")
@click.option("--resume", "resume_dir", type=str,
              help="continue the run in this directory from its last checkpoint [default: none]")
@click.option("--tensorboard", "tensorboard_dir", type=str, default=None,
              help='also write TensorBoard scalars into DIR (pip install -e ".[tensorboard]")  [default: off]')
@click.option("--quiet", is_flag=True, help="no progress output [default: off]")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="CPU threads for PyTorch; results repeat exactly for one thread count on one CPU (thread "
                   "count and SIMD kernels change float rounding: losses differ in the 7th digit)")
def run(config_file: str | None, resume_dir: str | None, quiet: bool, threads: int, tensorboard_dir: str | None,
        **options) -> None:
    """Run a continual-learning experiment and write its run directory."""
    import torch

    torch.set_num_threads(threads)
    if resume_dir is not None:
        extra = [k for k, v in options.items() if v is not None and k not in RESUME_OPTIONS]
        if config_file or extra:
            name = "config" if config_file else extra[0].replace("_", "-")
            raise click.UsageError(f"--resume continues with the run's own config.toml; drop --{name}")
        cfg, summary = resume(Path(resume_dir), options.get("checkpoint_every"), quiet, tensorboard_dir)
    else:
        cfg = resolve_config(config_file, options)
        summary = execute(cfg, quiet, tensorboard_dir=tensorboard_dir)
    used = summary.get("replays_used", summary["replays"])
    print(
        f"{cfg.train.strategy}: final accuracy {100 * summary['final_accuracy']:.2f}%, "
        f"average {100 * summary['average_accuracy']:.2f}% over {summary['num_batches']} batches; "
        f"replay memory {summary['lr_memory_bytes']:,} B ({summary['replays']} slots of "
        f"{summary['lr_bits']}-bit LRs of {summary['latent_values']} values, {used} used) "
        f"+ {summary['lr_label_bytes']:,} B labels; {summary['wall_seconds']:.1f} s -> {cfg.out}"
    )


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


def resume(folder: Path, checkpoint_every: int | None, quiet: bool, tensorboard_dir: str | None = None
           ) -> tuple[RunConfig, dict]:
    """Continue the run in ``folder`` (or the replacement run staged beside it) as its owner."""
    from tinycl.errors import TinyclError

    if not folder.is_dir():
        raise TinyclError(f"--resume {folder}: no such run directory")
    with RunDirectory(folder) as rundir:
        work = rundir.begin(resuming=True)
        cfg, state = resume_point(work, checkpoint_every)
        cfg.out = str(folder)
        return cfg, execute(cfg, quiet, resume=state, rundir=rundir, tensorboard_dir=tensorboard_dir)


def execute(cfg: RunConfig, quiet: bool, resume: dict | None = None, rundir: RunDirectory | None = None,
            tensorboard_dir: str | None = None) -> dict:
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
            return execute(cfg, quiet, resume, owned, tensorboard_dir)
    try:
        summary = run_in(cfg, quiet, resume, rundir.work, tensorboard_dir)
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


def run_in(cfg: RunConfig, quiet: bool, resume: dict | None, out: Path, tensorboard_dir: str | None = None) -> dict:
    """Run ``cfg`` writing into ``out`` (the run directory or its staging folder); with
    ``tensorboard_dir`` every evaluation also goes to a TensorBoard event file there."""
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
                      notes=[] if quiet else [f"the run in {cfg.out} was already complete; outputs rewritten from "
                                              "its checkpoint"])
    if cfg.checkpoint_every and resume is None:
        # Written first so that a run killed at any point, even before its first checkpoint,
        # can be resumed (in a staging folder when it replaces a finished run).
        write_atomic(out / "config.toml", dump_toml(cfg))
    tensorboard = None
    if tensorboard_dir:  # before any work: a missing package is refused in one line
        from tinycl.report.loggers import TensorBoardLogger

        tensorboard = TensorBoardLogger(tensorboard_dir)
    reporter = Reporter(quiet)
    log: MetricsLog | None = None
    records: list[dict] = []
    total = {"batches": 0}

    def on_start(num_batches: int, earlier: list[dict]) -> None:
        nonlocal log
        log = MetricsLog(out / "metrics.jsonl", earlier)
        write_atomic(out / "config.toml", dump_toml(cfg))
        records.extend(earlier)
        total["batches"] = num_batches
        if tensorboard:
            tensorboard.seed(earlier)
        reporter.line(f"{cfg.train.strategy}: {num_batches} batches"
                      + (f", resuming after batch {earlier[-1]['batch']}" if earlier else ""))

    def on_eval(record: dict) -> None:
        assert log is not None
        log.append(record)
        records.append(record)
        reporter.batch(record, total["batches"])
        if tensorboard:
            tensorboard.log(record)

    def on_deployment(deployment) -> None:
        from tinycl.export.deployment import FILE_NAME as DEPLOYMENT_FILE
        from tinycl.export.deployment import save_deployment

        save_deployment(out / DEPLOYMENT_FILE, deployment)

    events = Events(reporter.phase, on_start, on_eval, on_deployment=on_deployment)
    checkpointing = Checkpointing(ckpt_path, cfg.checkpoint_every, resume)
    try:
        with reporter:
            summary = run_experiment(cfg, events, checkpointing)
    finally:
        if tensorboard:
            tensorboard.close()
    if log:
        log.close()
    return finish(cfg, summary, records, rewrite_metrics=False, notes=[] if quiet else events.notes, out=out)


def finish(cfg: RunConfig, summary: dict, records: list[dict], *, rewrite_metrics: bool,
           notes: list[str], out: Path) -> dict:
    """Write the outputs of a finished run into ``out``; the summary comes last, then the notes
    (so a run that fails to write prints its error alone)."""
    from rich.console import Console

    from tinycl.report.rundir import write_run_outputs

    write_run_outputs(out, cfg, summary, records, metrics=rewrite_metrics)
    console = Console(stderr=True)
    for note in notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    return summary
