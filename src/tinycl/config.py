"""The run configuration: one tree of dataclasses, validated once at the boundary.

``tinycl run`` builds it from defaults, ``--config FILE.toml`` and command-line options (in
that order of precedence, last wins) and writes it back as ``config.toml`` in the run
directory, which ``--config`` reads to rerun the same experiment.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from tinycl.errors import TinyclError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STRATEGIES = ("latent-replay", "naive", "joint", "raw-replay")
NORMS = ("brn", "bn", "frozen", "fold")
BENCHMARKS = ("synthetic-core50", "core50", "arrays", "folder")
FROZEN = ("auto", "int8", "float")
WEIGHT_QUANT = ("per-channel", "per-tensor")
OBSERVERS = ("minmax", "percentile", "mse")
LATENT_MODES = ("shift", "clip")
MAX_SEED = 2**32 - 1
# Far above any MCU's memory (1e7 LRs of 1 KB = 10 GB): a typo, not a setting.
MAX_REPLAYS = 10_000_000


@dataclass
class ModelConfig:
    name: str = "mobilenet_v1"
    width: float = 0.25
    res: int = 64
    lr_layer: int = 19
    weights: str = ""  # a state-dict file; empty = the synthetic-pretrained weights


@dataclass
class DataConfig:
    benchmark: str = "synthetic-core50"
    # NICv2-79 by default: the same 391-batch order grouped by five, so the default run fits
    # in ~3 minutes on 2 CPU cores; --scenario nicv2_391 is the paper's protocol.
    scenario: str = "nicv2_79"
    data_root: str = ""
    run: int = 0
    frames: int = 20  # frames per (object, session) video of synthetic-core50
    labels: str = "object"  # object (50 classes) | category (10 classes, label // 5)
    data_seed: int = 0  # seed of the synthetic benchmark's generator
    classes_per_task: int = 2  # user data, nc and ci: new classes per task (Paissan et al. 2024: 2)
    batches: int = 5  # user data without session ids, ni: batches of a shuffle of every class
    resize: bool = False  # scale core50 / arrays / folder images to --res (bilinear) instead of refusing


@dataclass
class ReplayConfig:
    # 750 LRs: ~9 % of the default benchmark's 8,000 training images (the recipe's 1500 LRs
    # are 1.25 % of CORe50's 119,894), and half the training steps of 1500, which keeps the
    # default run within 3 minutes on 2 cores. --replays 1500 is the recipe's value.
    replays: int = 750
    bits: int = 8  # QLR-CL's 8-bit LRs; 32 = the FP32 baseline
    policy: str = "recipe"


@dataclass
class QuantConfig:
    frozen: str = "auto"  # auto | int8 | float: auto = int8 when bits <= 8
    weight_quant: str = "per-channel"
    observer: str = "minmax"
    latent_mode: str = "shift"  # shift | clip
    latent_per_channel: bool = False


@dataclass
class TrainConfig:
    strategy: str = "latent-replay"
    epochs: int = 4
    minibatch: int = 128
    lr: float = 0.001
    inc_lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0005
    norm: str = "brn"
    # Structured sparse update (Paissan et al. 2024): "LAYER=RATIO,..." with layer indices or
    # names of the adaptive stage, e.g. "20=0.25,22=0.25"; empty = dense backprop.
    sparse: str = ""
    sparse_policy: str = "random"  # random (per step) | topk (by weight norm, fixed) | fixed
    joint_epochs: int = 30  # the joint upper bound trains to convergence on the whole stream
    cwr: bool = False
    # Where the float paths run (the float frozen stage, pretraining, the adaptive stage): cpu |
    # cuda | auto (cuda when available). The INT8 frozen stage always runs its exact CPU path.
    device: str = "cpu"
    # The named preset the constants and behaviours below came from (RECIPES); settings
    # changed after it are listed in summary.json -> recipe_overrides.
    recipe: str = "tinycl"
    shuffle: str = "epoch"  # epoch: new data reshuffled every epoch | batch: once per CL batch
    replay_order: str = "shuffled"  # shuffled: a new memory permutation each epoch | memory: slot order
    pad_first_batch: bool = False  # batch 0 padded to a multiple of the mini-batch (ar1 pad_data)
    reset_sgd: bool = False  # a new SGD (momentum buffers dropped) at batch 1
    brn_momentum: float = 0.01  # batch renorm running-statistics momentum in batch 0
    brn_inc_momentum: float = 0.01  # ... from batch 1 on
    brn_ramp: float = 0.0  # r_max / d_max rise from 1 / 0 by this per sample in batch 0; 0 = at caps
    brn_stats: str = "var"  # var: running variance (torch BN) | std: running std (ar1-pytorch)


@dataclass
class EvalConfig:
    every: int = 1  # evaluate after every k-th batch (and always after the last)
    fidelity: bool = True  # INT8 frozen stage: accuracy vs float and per-layer error at the end
    latent_cache: bool = True  # reuse frozen-stage outputs of an identical earlier setting


@dataclass
class RunConfig:
    seed: int = 0
    out: str = "runs/default"
    checkpoint_every: int = 0  # write DIR/checkpoint.ckpt after every k-th batch; 0 = never
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


SECTIONS = ("model", "data", "replay", "quant", "train", "eval")

# Named presets of every constant and behaviour of the CL loop (section, field) -> value.
# tinycl: this project's defaults, tuned for the small default benchmark. ar1star: ar1-pytorch's
# AR1* with latent replay as published (vlomonaco/ar1-pytorch at 813f977: ar1star_lat_replay.py,
# params.cfg, utils.py, models/batch_renorm.py; REFERENCES.md).
RECIPES: dict[str, dict[tuple[str, str], Any]] = {
    "tinycl": {
        ("train", "lr"): 0.001, ("train", "inc_lr"): 0.001, ("train", "momentum"): 0.9,
        ("train", "weight_decay"): 0.0005, ("train", "epochs"): 4, ("train", "minibatch"): 128,
        ("train", "norm"): "brn", ("train", "cwr"): False, ("train", "shuffle"): "epoch",
        ("train", "replay_order"): "shuffled", ("train", "pad_first_batch"): False,
        ("train", "reset_sgd"): False, ("train", "brn_momentum"): 0.01, ("train", "brn_inc_momentum"): 0.01,
        ("train", "brn_ramp"): 0.0, ("train", "brn_stats"): "var",
        ("replay", "replays"): 750, ("replay", "policy"): "recipe",
    },
    "ar1star": {
        # params.cfg: init_lr, inc_lr, momentum, l2, init/inc_train_ep, mb_size, rm_sz.
        ("train", "lr"): 0.001, ("train", "inc_lr"): 5e-5, ("train", "momentum"): 0.9,
        ("train", "weight_decay"): 0.0005, ("train", "epochs"): 4, ("train", "minibatch"): 128,
        # ar1star_lat_replay.py: BN -> batch renorm, CWR* always, shuffle_in_unison once per batch,
        # replays rm[it*n2inject:(it+1)*n2inject], pad_data on batch 0, SGD re-created at batch 1.
        ("train", "norm"): "brn", ("train", "cwr"): True, ("train", "shuffle"): "batch",
        ("train", "replay_order"): "memory", ("train", "pad_first_batch"): True, ("train", "reset_sgd"): True,
        # params.cfg init_update_rate 0.01, inc_update_rate 5e-5, inc_step 4.1e-5;
        # models/batch_renorm.py tracks a running std.
        ("train", "brn_momentum"): 0.01, ("train", "brn_inc_momentum"): 5e-5, ("train", "brn_ramp"): 4.1e-5,
        ("train", "brn_stats"): "std",
        ("replay", "replays"): 1500, ("replay", "policy"): "ar1",
    },
}


def apply_recipe(cfg: RunConfig, name: str) -> RunConfig:
    """Set every constant and behaviour of recipe ``name`` on ``cfg`` (in place) and return it."""
    if name not in RECIPES:
        raise TinyclError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    for (section, key), value in RECIPES[name].items():
        setattr(getattr(cfg, section), key, value)
    cfg.train.recipe = name
    return cfg


def recipe_overrides(cfg: RunConfig) -> dict[str, Any]:
    """The recipe's settings this config changed: ``{"section.field": value}``."""
    preset = RECIPES.get(cfg.train.recipe, {})
    return {f"{section}.{key}": getattr(getattr(cfg, section), key) for (section, key), value in preset.items()
            if getattr(getattr(cfg, section), key) != value}


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(raw: dict[str, Any], base: RunConfig | None = None, source: str = "config") -> RunConfig:
    """Overlay ``raw`` (nested like config.toml) on ``base``; unknown keys and types are errors."""
    cfg = copy.deepcopy(base) if base else RunConfig()
    if not isinstance(raw, dict):
        raise TinyclError(f"{source}: expected a table of settings")
    for key, value in raw.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise TinyclError(f"{source}: [{key}] must be a table")
            for sub, sub_value in value.items():
                _set(getattr(cfg, key), sub, sub_value, f"{source}: {key}.{sub}")
        else:
            _set(cfg, key, value, f"{source}: {key}")
    return cfg


def _set(obj: Any, key: str, value: Any, where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(obj) if f.name not in SECTIONS}
    if key not in fields:
        raise TinyclError(f"{where}: unknown setting")
    current = getattr(obj, key)
    kind = type(current)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise TinyclError(f"{where}: expected {kind.__name__}, got {value!r}")
    setattr(obj, key, value)


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise TinyclError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TinyclError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TinyclError(f"config file {path} is not valid TOML: {exc}") from None


def dump_toml(cfg: RunConfig) -> str:
    return tomli_w.dumps(to_dict(cfg))


@dataclass(frozen=True)
class SparseSpec:
    """A parsed ``--sparse`` spec: channel ratios, bias-only layers, fixed channel lists."""

    ratios: dict[str, float]
    bias_only: tuple[str, ...] = ()
    fixed: dict[str, list[int]] = field(default_factory=dict)


def parse_sparse_spec(text: str) -> SparseSpec:
    """``LAYER=RATIO`` (RATIO in (0, 1]), ``LAYER=bias`` (bias-only update) or
    ``LAYER=channels:0/3/5`` (a fixed channel list), comma-separated; channel lists and
    ratios are not mixed in one spec (a fixed list is its own policy)."""
    ratios: dict[str, float] = {}
    bias: list[str] = []
    fixed: dict[str, list[int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        layer, sep, value = (p.strip() for p in item.partition("="))
        if not sep or not layer or layer in ratios or layer in bias:
            raise TinyclError(f"--sparse entry {item!r} must be LAYER=RATIO, LAYER=bias or LAYER=channels:C/C/...,"
                              " one entry per layer")
        if value == "bias":
            bias.append(layer)
            continue
        if value.startswith("channels:"):
            channels = value[len("channels:"):].split("/")
            if not all(c.strip().isascii() and c.strip().isdigit() and len(c.strip()) <= 6 for c in channels):
                raise TinyclError(f"--sparse entry {item!r}: channels must be integers separated by '/'")
            fixed[layer] = sorted({int(c) for c in channels})
            ratios[layer] = 1.0  # the list decides the count
            continue
        try:
            ratio = float(value)
        except ValueError:
            ratio = math.nan
        if not (0 < ratio <= 1):
            raise TinyclError(f"--sparse entry {item!r} must be LAYER=RATIO with RATIO in (0, 1]")
        ratios[layer] = ratio
    if fixed and len(fixed) != len(ratios):
        raise TinyclError("--sparse: fixed channel lists and ratios cannot be mixed in one spec")
    return SparseSpec(ratios, tuple(bias), fixed)


def parse_sparse(text: str) -> dict[str, float]:
    """"20=0.25,head=1.0" -> {"20": 0.25, "head": 1.0}: the channel ratio of each layer."""
    return parse_sparse_spec(text).ratios


def validate(cfg: RunConfig) -> RunConfig:
    """Check every value a user can set; raise one TinyclError naming the first bad one."""
    from tinycl.data.protocols import SCENARIOS
    from tinycl.models import model_names
    from tinycl.replay.memory import POLICIES

    m, d, r, t = cfg.model, cfg.data, cfg.replay, cfg.train

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise TinyclError(message)

    need(m.name in model_names(), f"unknown model {m.name!r}; known models: {', '.join(model_names())}")
    need(math.isfinite(m.width) and 0 < m.width <= 4, f"--width must be in (0, 4], got {m.width}")
    need(16 <= m.res <= 512, f"--res must be in 16..512, got {m.res}")
    need(d.benchmark in BENCHMARKS, f"unknown benchmark {d.benchmark!r}; known: {', '.join(BENCHMARKS)}")
    need(d.scenario in SCENARIOS, f"unknown scenario {d.scenario!r}; known: {', '.join(SCENARIOS)}")
    need(d.run >= 0, f"--run must be >= 0, got {d.run}")
    need(d.labels in ("object", "category"), f"--labels must be object or category, got {d.labels!r}")
    need(1 <= d.frames <= 300, f"--frames must be in 1..300, got {d.frames}")
    need(d.classes_per_task >= 1, f"--classes-per-task must be >= 1, got {d.classes_per_task}")
    need(d.batches >= 1, f"--batches must be >= 1, got {d.batches}")
    need(0 <= r.replays <= MAX_REPLAYS, f"--replays must be in 0..{MAX_REPLAYS}, got {r.replays}")
    need(r.bits in (*range(1, 9), 32), f"--bits must be 1..8 or 32, got {r.bits}")
    need(r.policy in POLICIES, f"unknown replay policy {r.policy!r}; known: {', '.join(POLICIES)}")
    need(t.strategy in STRATEGIES, f"unknown strategy {t.strategy!r}; known: {', '.join(STRATEGIES)}")
    need(1 <= t.epochs <= 1000, f"--epochs must be in 1..1000, got {t.epochs}")
    need(1 <= t.joint_epochs <= 1000, f"--joint-epochs must be in 1..1000, got {t.joint_epochs}")
    need(2 <= t.minibatch <= 65536, f"--minibatch must be in 2..65536, got {t.minibatch}")
    for name in ("lr", "inc_lr"):
        value = getattr(t, name)
        need(math.isfinite(value) and 0 < value < 10, f"--{name.replace('_', '-')} must be in (0, 10), got {value}")
    need(math.isfinite(t.momentum) and 0 <= t.momentum < 1, f"--momentum must be in [0, 1), got {t.momentum}")
    need(math.isfinite(t.weight_decay) and t.weight_decay >= 0, f"--weight-decay must be >= 0, got {t.weight_decay}")
    parse_sparse_spec(t.sparse)
    need(t.sparse_policy in ("random", "topk"), f"unknown --sparse-policy {t.sparse_policy!r}; known: random, topk")
    need(t.norm in NORMS, f"unknown norm {t.norm!r}; known: {', '.join(NORMS)}")
    need(t.recipe in RECIPES, f"unknown recipe {t.recipe!r}; known: {', '.join(RECIPES)}")
    need(t.device in ("cpu", "cuda", "auto"), f"--device must be cpu, cuda or auto, got {t.device!r}")
    need(t.shuffle in ("epoch", "batch"), f"--shuffle must be epoch or batch, got {t.shuffle!r}")
    need(t.replay_order in ("shuffled", "memory"), f"replay_order must be shuffled or memory, got {t.replay_order!r}")
    need(t.brn_stats in ("var", "std"), f"brn_stats must be var or std, got {t.brn_stats!r}")
    for name in ("brn_momentum", "brn_inc_momentum"):
        value = getattr(t, name)
        need(math.isfinite(value) and 0 <= value <= 1, f"{name} must be in [0, 1], got {value}")
    need(math.isfinite(t.brn_ramp) and 0 <= t.brn_ramp <= 1, f"brn_ramp must be in [0, 1], got {t.brn_ramp}")
    q = cfg.quant
    need(q.frozen in FROZEN, f"unknown frozen arithmetic {q.frozen!r}; known: {', '.join(FROZEN)}")
    need(q.weight_quant in WEIGHT_QUANT,
         f"unknown weight quantization {q.weight_quant!r}; known: {', '.join(WEIGHT_QUANT)}")
    need(q.observer in OBSERVERS, f"unknown observer {q.observer!r}; known: {', '.join(OBSERVERS)}")
    need(q.latent_mode in LATENT_MODES,
         f"unknown latent mode {q.latent_mode!r}; known: {', '.join(LATENT_MODES)}")
    need(not (q.latent_per_channel and q.latent_mode != "clip"),
         "--latent-per-channel needs --latent-mode clip")
    need(not (q.frozen == "float" and r.bits != 32),
         f"--bits {r.bits} needs the INT8 frozen stage (--frozen int8 or auto)")
    need(cfg.eval.every >= 1, f"--eval-every must be >= 1, got {cfg.eval.every}")
    # Seeds seed PCG32 (64-bit), torch and numpy (32-bit for numpy's legacy seeding): 0..2**32-1.
    need(0 <= cfg.seed <= MAX_SEED, f"--seed must be in 0..{MAX_SEED}, got {cfg.seed}")
    need(0 <= d.data_seed <= MAX_SEED, f"--data-seed must be in 0..{MAX_SEED}, got {d.data_seed}")
    need(cfg.checkpoint_every >= 0, f"--checkpoint-every must be >= 0, got {cfg.checkpoint_every}")
    if d.benchmark in ("core50", "arrays", "folder"):
        need(bool(d.data_root), f"--benchmark {d.benchmark} needs --data-root")
    return cfg
