"""``tinycl sparse-sweep``: the structured-sparse-update trade-off (Paissan et al., CVPRW 2024).

For every model and sparsity setting (dense, a channel ratio applied to every conv layer above
the LR layer, or a ``--sparse`` spec), every seed: one ``tinycl run``. Then one table and one
plot of final accuracy against backward MACs and bytes kept for backward (cost model, and
saved-tensor bytes measured on one real step) and host time per step, each against dense.
The table covers every run found in ``--out``, so models needing different options (their own
``--weights``, ``--bits 32``) can be swept by separate commands into one directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tinycl.cli.sweep import int_list
from tinycl.config import DataConfig, ModelConfig, ReplayConfig, TrainConfig
from tinycl.errors import TinyclError
from tinycl.grid.options import grid_options

if TYPE_CHECKING:  # the cost model and the learner load inside the command (tinycl --help stays fast)
    from tinycl.report.sparse_table import BackwardCost, SparseRow


def ratio_list(text: str) -> list[float]:
    """"1,0.5,0.25" -> [1.0, 0.5, 0.25]; every ratio in (0, 1] (1 = dense backprop)."""
    values = []
    for item in filter(None, (v.strip() for v in text.split(","))):
        try:
            value = float(item)
        except ValueError:
            value = float("nan")
        if not 0 < value <= 1:
            raise TinyclError(f"--ratios entries must be channel ratios in (0, 1], got {item!r}")
        values.append(value)
    if not values:
        raise TinyclError("--ratios is empty")
    return list(dict.fromkeys(values))


def lr_layer_map(text: str | None, models: list[str]) -> dict[str, int]:
    """"mobilenet_v1=19,phinet=5" over each model's default LR layer (the registry's, as tinycl
    run); a bare integer applies to every model."""
    from tinycl.models.registry import default_lr_layer

    layers = {m: default_lr_layer(m) for m in models}
    for item in filter(None, (v.strip() for v in (text or "").split(","))):
        name, sep, value = item.rpartition("=")
        try:
            layer = int(value)
        except ValueError:
            raise TinyclError(f"--lr-layers entry {item!r} must be MODEL=LAYER or LAYER") from None
        if sep and name not in layers:
            raise TinyclError(f"--lr-layers names {name!r}, which is not in --models")
        for m in [name] if sep else models:
            layers[m] = layer
    return layers


def conv_layers_above(model_name: str, width: float, res: int, lr_layer: int) -> list[str]:
    """Indices of the adaptive layers that hold a conv (the pooling and the classifier excluded:
    in class-incremental learning the head's new rows must see every feature)."""
    from tinycl.models import check_lr_layer, create_model, layer_table

    model = create_model(model_name, num_classes=10, width=width)
    check_lr_layer(model, lr_layer)
    keys = [str(info.index) for info in layer_table(model, res)[lr_layer + 1 :]
            if info.kind not in ("pool", "linear")]
    if not keys:
        raise TinyclError(f"{model_name}: no conv layer above LR layer {lr_layer} to sparsify; choose a lower one")
    return keys


@dataclass(frozen=True)
class Setting:
    """What the costs of a run depend on (read back from its config.toml)."""

    model: str
    width: float
    res: int
    lr_layer: int
    sparse: str
    policy: str
    norm: str
    minibatch: int
    seed: int = 0
    frozen: str = "auto"  # the frozen stage's arithmetic as configured: auto (INT8) | int8 | float

    @classmethod
    def from_config(cls, raw: dict) -> Setting:
        m, t, q = raw.get("model", {}), raw.get("train", {}), raw.get("quant", {})
        return cls(m["name"], float(m["width"]), int(m["res"]), int(m["lr_layer"]), t.get("sparse", ""),
                   t.get("sparse_policy", "random"), t.get("norm", "brn"), int(t.get("minibatch", 128)),
                   int(raw.get("seed", 0)), q.get("frozen", "auto"))

    def group(self, arithmetic: str | None = None) -> str:
        """The row's model column: the model and its frozen stage's arithmetic (rows of one group
        compare against its dense BRN row). ``arithmetic``: what the runs report
        (``summary.json → frozen_arithmetic``; ``auto`` with ``--bits 32`` runs float), else the
        configured one."""
        return f"{self.model} {arithmetic or ('float' if self.frozen == 'float' else 'int8')}"

    def label(self) -> str:
        """"dense", "all×0.25" (one ratio on every conv layer above the LR layer) or the spec."""
        from tinycl.config import parse_sparse_spec

        spec = parse_sparse_spec(self.sparse)
        ratios = spec.ratios
        norm = "" if self.norm == "brn" else f" norm={self.norm}"
        if not ratios and not spec.bias_only:
            return "dense" + norm
        uniform = set(ratios.values())
        above = conv_layers_above(self.model, self.width, self.res, self.lr_layer)
        if not ratios and list(spec.bias_only) == above:
            label = "bias-only"
        elif not spec.bias_only and len(uniform) == 1 and list(ratios) == above:
            label = f"all×{uniform.pop():g}"
        else:
            label = self.sparse
        label = label if self.policy == "random" else f"{label} {self.policy}"
        return label + norm


def setting_costs(s: Setting, num_classes: int) -> tuple[BackwardCost, int]:
    """(cost model per sample, saved-tensor bytes measured on one mini-batch step) of the
    adaptive stage exactly as ``run_experiment`` builds it (norm, sparse update, channels last).
    Raises TinyclError for an unknown layer or a model that cannot be split there."""
    import torch

    from tinycl.config import parse_sparse_spec
    from tinycl.models import check_lr_layer, create_model, layer_table
    from tinycl.report.sparse_table import backward_cost
    from tinycl.train.sparse import SparseUpdateConfig, backward_ops, live_saved_bytes, sparsify
    from tinycl.train.stages import prepare_stages, set_train_mode

    torch.manual_seed(s.seed)
    model = create_model(s.model, num_classes=num_classes, width=s.width)
    check_lr_layer(model, s.lr_layer)
    latent_shape = layer_table(model, s.res)[s.lr_layer].out_shape
    _, adaptive = prepare_stages(model, s.lr_layer, s.norm)
    spec = parse_sparse_spec(s.sparse)
    if spec.ratios or spec.bias_only:  # as run_experiment sparsifies
        names = model.layer_names()[s.lr_layer + 1 :]
        sparsify(adaptive, SparseUpdateConfig(ratios=spec.ratios, policy="fixed" if spec.fixed else s.policy,
                                              bias_only=spec.bias_only, fixed=spec.fixed, seed=s.seed),
                 first_index=s.lr_layer + 1, layer_names=names)
    cost = backward_cost(backward_ops(adaptive, latent_shape))
    adaptive = adaptive.to(memory_format=torch.channels_last)
    set_train_mode(adaptive, s.norm)
    gen = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(s.minibatch, *latent_shape, generator=gen)).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (s.minibatch,), generator=gen)
    measured = live_saved_bytes(adaptive, lambda: torch.nn.functional.cross_entropy(adaptive(x), y))
    return cost, measured


def read_runs(out: Path) -> dict[Setting, list[tuple[dict, list[dict]]]]:
    """Every finished run under ``out``: its setting -> [(summary, metrics records)], by seed."""
    from tinycl.config import load_toml

    groups: dict[Setting, list[tuple[dict, list[dict]]]] = {}
    for path in sorted(out.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        setting = Setting.from_config(load_toml(path.parent / "config.toml"))
        metrics = path.parent / "metrics.jsonl"
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        key = dataclasses.replace(setting, seed=0)
        groups.setdefault(key, []).append((summary, records))
    return groups


def build_rows(out: Path, groups: dict[Setting, list[tuple[dict, list[dict]]]] | None = None) -> list[SparseRow]:
    """One row per setting of the runs under ``out`` (``groups``: ``read_runs(out)``, when read already)."""
    from tinycl.report.sparse_table import SparseRow, step_seconds

    rows = []
    for setting, runs in (read_runs(out) if groups is None else groups).items():
        runs.sort(key=lambda run: run[0]["seed"])
        cost, measured = setting_costs(setting, runs[0][0]["num_classes"])
        rows.append(SparseRow(
            setting.group(runs[0][0].get("frozen_arithmetic")), setting.label(), cost, measured,
            tuple(s["final_accuracy"] for s, _ in runs), tuple(step_seconds(m) for _, m in runs)))
    # Per model (in order of appearance), batch renorm's rows before another norm's, dense first,
    # then by decreasing backward MACs.
    from tinycl.report.sparse_table import norm_of

    order = list(dict.fromkeys(r.model for r in rows))
    return sorted(rows, key=lambda r: (order.index(r.model), norm_of(r.setting), not r.dense,
                                       -r.cost.backward_macs))


@click.command("sparse-sweep")
@click.option("--config", "config_file", type=str,
              help="base TOML config for every run  [default: none, i.e. tinycl run's defaults]")
@click.option("--models", default="mobilenet_v1", show_default=True,
              help="comma-separated models: mobilenet_v1, mobilenet_v2, phinet")
@click.option("--ratios", default="1,0.5,0.25,0.1", show_default=True,
              help="channel ratios applied to every conv layer above the LR layer; 1 = dense")
@click.option("--spec", "specs", multiple=True,
              help="an extra --sparse LAYER=RATIO,... setting (repeatable)  [default: none]")
@click.option("--bias-only", is_flag=True,
              help="add a bias-only cell: every conv layer above the LR layer trains its biases (and BN affine) only  "
                   "[default: off]")
@click.option("--mix", "mixes", default="", show_default=False,
              help="per-layer mixes: for each ratio r, the first half of the conv layers above the LR layer (the "
                   "largest activations) at r and the rest dense, e.g. 0.25  [default: none]")
@click.option("--frozen", "frozen_list", default="auto", show_default=True,
              help="frozen-stage arithmetic of the cells, comma-separated: auto (INT8 where the model has it) | "
                   "int8 | float; float cells keep FP32 latents (--bits 32)")
@click.option("--norms", type=str,
              help="adaptive-stage normalizations of the cells, comma-separated: brn | bn | frozen | fold (fold: BN "
                   "folded into its conv, nothing kept for a BN backward)  [default: the base config's, else brn]")
@click.option("--policy", "sparse_policy", type=str,
              help=f"channel choice: random | topk  [default: the base config's, else {TrainConfig.sparse_policy}]")
@click.option("--seeds", default="0,1,2", show_default=True, help="training seeds (repeats)")
@click.option("--lr-layers", type=str,
              help="MODEL=LAYER,... or one LAYER for every model  [default: each model's default LR layer, "
                   "printed by tinycl layers MODEL]")
@click.option("--width", type=float,
              help=f"width multiplier of every model  [default: the base config's, else {ModelConfig.width:g}]")
@click.option("--res", type=int, help=f"input resolution (px)  [default: the base config's, else {ModelConfig.res}]")
@click.option("--weights", type=str,
              help="pretrained state dict (one model only)  [default: the base config's, else shipped weights]")
@click.option("--scenario", type=str,
              help=f"protocol of every run, e.g. ci  [default: the base config's, else {DataConfig.scenario}]")
@click.option("--labels", type=str, help="object | category (ci: category)  "
              f"[default: the base config's, else {DataConfig.labels}]")
@click.option("--frames", type=int,
              help=f"frames per video, synthetic  [default: the base config's, else {DataConfig.frames}]")
@click.option("--epochs", type=int, help=f"epochs per batch  [default: the base config's, else {TrainConfig.epochs}]")
@click.option("--replays", type=int,
              help=f"replay memory slots N  [default: the base config's, else {ReplayConfig.replays}]")
@click.option("--bits", type=int, help="LR bits (32 for models without an INT8 frozen stage)  "
              f"[default: the base config's, else {ReplayConfig.bits}]")
@click.option("--out", default="runs/sparse-sweep", show_default=True, help="sweep directory")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True, help="CPU threads for PyTorch")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="skip runs whose summary.json already exists")
@click.option("--table-only", is_flag=True,
              help="run nothing: rebuild the table and plot from the runs in --out  [default: off]")
@click.option("--dry-run", is_flag=True, help="print the plan and run nothing  [default: off]")
@grid_options
def sparse_sweep(config_file, models, ratios, specs, bias_only, mixes, frozen_list, norms, sparse_policy, seeds,
                 lr_layers, width, res, weights,
                 scenario, labels, frames, epochs, replays, bits, out, threads, resume, table_only, dry_run,
                 executor, workers, ray_address) -> None:
    """Accuracy vs backward compute and memory of sparse updates; writes sparse_tradeoff.md / .png.

    Prints the plan (cells, runs, runs already finished, executor, estimated time) before it
    starts; runs several at a time (--executor local, the default, or ray); a failed run is
    reported and the others go on (exit 1 at the end); finished runs are skipped when run again."""
    import torch

    from tinycl.cli.run import resolve_config
    from tinycl.config import parse_sparse_spec
    from tinycl.grid import GridSettings, run_grid
    from tinycl.report.rundir import write_atomic
    from tinycl.report.sparse_table import markdown_table, plot_tradeoff, verdict

    settings = GridSettings(executor, workers, ray_address, threads)
    if not table_only:  # an executor that cannot start: one line before the grid is even built
        settings.check()
    torch.set_num_threads(threads)
    names = list(dict.fromkeys(m.strip() for m in models.split(",") if m.strip()))
    if not names:
        raise TinyclError("--models is empty")
    if weights and len(names) > 1:
        raise TinyclError("--weights fits one model: sweep the models one command at a time")
    ratio_values, seed_values = ratio_list(ratios), int_list(seeds, "seeds")
    for spec in specs:
        parsed = parse_sparse_spec(spec)
        if not parsed.ratios and not parsed.bias_only:
            raise TinyclError("--spec is empty")
    layers = lr_layer_map(lr_layers, names)
    mix_values = ratio_list(mixes) if mixes.strip() else []
    frozen_values = list(dict.fromkeys(v.strip() for v in frozen_list.split(",") if v.strip()))
    if not frozen_values or any(v not in ("auto", "int8", "float") for v in frozen_values):
        raise TinyclError(f"--frozen must list auto, int8 or float, got {frozen_list!r}")
    norm_values = list(dict.fromkeys(v.strip() for v in (norms or "").split(",") if v.strip())) or [None]
    base = {"scenario": scenario, "labels": labels, "frames": frames, "epochs": epochs, "replays": replays,
            "bits": bits, "width": width, "res": res, "weights": weights, "sparse_policy": sparse_policy,
            "fidelity": False}
    configs = []
    cells = 0
    for name, frozen, norm in ((n, f, m) for n in names for f in frozen_values for m in norm_values):
        cell_base = {**base, "model": name, "lr_layer": layers[name], "frozen": frozen,
                     **({"bits": 32} if frozen == "float" else {}), **({"norm": norm} if norm else {})}
        first = resolve_config(config_file, cell_base)
        above = conv_layers_above(name, first.model.width, first.model.res, layers[name])
        sparse_specs = ["" if r == 1 else ",".join(f"{k}={r:g}" for k in above) for r in ratio_values]
        if bias_only:
            sparse_specs.append(",".join(f"{k}=bias" for k in above))
        half = above[: max(1, len(above) // 2)]
        sparse_specs += [",".join(f"{k}={r:g}" for k in half) for r in mix_values]
        for spec in dict.fromkeys([*sparse_specs, *specs]):
            cfg = resolve_config(config_file, {**cell_base, "sparse": spec})
            setting = Setting(name, cfg.model.width, cfg.model.res, cfg.model.lr_layer, cfg.train.sparse,
                              cfg.train.sparse_policy, cfg.train.norm, cfg.train.minibatch, 0, cfg.quant.frozen)
            setting_costs(setting, 10)  # unknown layer, unsplittable model: one line before any run
            tag = setting.label().replace("×", "x").replace(",", "_").replace("=", "-").replace(" ", "_")
            if len(tag) > 80:  # a long per-layer spec: its digest keeps the folder name short
                tag = "spec-" + hashlib.sha256(tag.encode()).hexdigest()[:10]
            prefix = name if frozen == "auto" else f"{name}_{frozen}"
            cells += 1
            for seed in seed_values:
                run_dir = Path(out) / f"{prefix}_{tag}_s{seed}"
                configs.append((run_dir, resolve_config(config_file, {**cell_base, "sparse": spec, "seed": seed,
                                                                      "out": str(run_dir)})))
    report = None
    if not table_only:
        at = ", ".join(f"{name} at LR layer {layers[name]}" for name in names)
        report = run_grid(configs, out=Path(out), cells=cells, settings=settings, skip_finished=resume, detail=at,
                          dry_run=dry_run)
        if dry_run:
            return
    groups = read_runs(Path(out))
    rows = build_rows(Path(out), groups)
    if not rows:
        if report:
            report.exit_if_incomplete()
        raise TinyclError(f"no run with a summary.json under {out}")
    minibatch = configs[0][1].train.minibatch
    scenario_name = ", ".join(sorted({summary.get("scenario", "?") for runs in groups.values()
                                      for summary, _ in runs}))
    text = markdown_table(rows, minibatch)
    text += "\n" + "\n".join(f"- {line}" for line in verdict(rows)) + "\n"
    write_atomic(Path(out) / "sparse_tradeoff.md", text)
    plot_tradeoff(rows, Path(out) / "sparse_tradeoff.png",
                  f"Structured sparse update vs dense backprop, scenario {scenario_name}")
    print(text, end="")
    print(f"wrote {Path(out) / 'sparse_tradeoff.md'} and {Path(out) / 'sparse_tradeoff.png'}")
    if report:
        report.exit_if_incomplete()
