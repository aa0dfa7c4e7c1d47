"""Price one continual-learning configuration: ``estimate(CostConfig(...)) -> CostReport``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tinycl.device.costs import (
    ADAPTIVE,
    FROZEN,
    LayerCost,
    StageCost,
    layer_costs,
    lr_values,
    stage_cost,
    with_sparse_update,
)
from tinycl.device.latency import (
    Comparison,
    TargetEstimate,
    Workload,
    compare,
    evaluate_target,
    make_workload,
)
from tinycl.device.memory import MemoryBreakdown, latent_bytes, memory_breakdown, samples_held_for
from tinycl.device.targets import Figure, Target, load_target
from tinycl.errors import TinyclError
from tinycl.models import create_model

# The paper's configuration (REFERENCES.md): MobileNetV1 1.0 at 128x128, LR layer 19,
# 1500 LRs at 8 bits; NICv2-391 CL batches hold ~300 images.
DEFAULT_NEW_IMAGES = 300
# The QLR-CL abstract's figures (arXiv 2110.10486; REFERENCES.md), printed next to what the
# model computes: VEGA vs STM32L4 "on average 65x faster", "37x more energy efficient", "a
# lifetime of 535h when learning a new mini-batch of data once every minute", "< 64MB".
PAPER_SPEEDUP = 65.0
PAPER_ENERGY_RATIO = 37.0
PAPER_LIFETIME_H = 535.0
PAPER_PERIOD_S = 60.0
PAPER_MEMORY_BYTES = 64 * 2**20


@dataclass(frozen=True)
class CostConfig:
    model: str = "mobilenet_v1"
    width: float = 1.0
    res: int = 128
    lr_layer: int = 19
    replays: int = 1500
    bits: int = 8
    new_images: int = DEFAULT_NEW_IMAGES
    epochs: int = 4
    minibatch_size: int = 128
    momentum: bool = True
    num_classes: int = 50
    # The adaptive stage's normalization (a run's --norm): batch statistics in training hold a
    # whole mini-batch of activations at once (device/memory.py).
    norm: str = "brn"
    # Structured sparse update: input-channel ratio of every adaptive conv (1 = dense backprop).
    sparse_ratio: float = 1.0

    def validate(self) -> None:
        if not 0 < self.sparse_ratio <= 1:
            raise TinyclError(f"--sparse must be a channel ratio in (0, 1], got {self.sparse_ratio}")
        if self.res < 8:
            raise TinyclError(f"--res must be >= 8, got {self.res}")
        if self.width <= 0:
            raise TinyclError(f"--width must be > 0, got {self.width}")
        if self.bits != 32 and not 1 <= self.bits <= 8:
            raise TinyclError(f"--bits must be 1..8 or 32 (FP32), got {self.bits}")
        if self.replays < 0:
            raise TinyclError(f"--replays must be >= 0, got {self.replays}")
        if self.new_images < 1:
            raise TinyclError(f"--new-images must be >= 1, got {self.new_images}")
        if self.epochs < 1:
            raise TinyclError(f"--epochs must be >= 1, got {self.epochs}")
        if self.minibatch_size < 1:
            raise TinyclError(f"--minibatch must be >= 1, got {self.minibatch_size}")


@dataclass(frozen=True)
class CostReport:
    config: CostConfig
    layers: list[LayerCost]
    frozen: StageCost
    adaptive: StageCost
    lr_values: int
    memory: MemoryBreakdown
    workload: Workload
    targets: list[TargetEstimate] = field(default_factory=list)

    @property
    def lr_bytes(self) -> int:
        return latent_bytes(self.lr_values, self.config.bits)

    @property
    def forward_macs(self) -> int:
        return self.frozen.forward_macs + self.adaptive.forward_macs

    @property
    def train_macs_per_sample(self) -> int:
        return self.adaptive.forward_macs + self.adaptive.backward_macs

    def formulas(self) -> list[str]:
        """MACs, LR bytes and the workload's counts as equations (each evaluates as printed)."""
        f, a, cfg = self.frozen, self.adaptive, self.config
        if cfg.bits == 32:
            one_lr = f"one LR = values * 4 bytes = {self.lr_values:,} values * 4 bytes"
        else:
            one_lr = (
                f"one LR = ceil(values * bits / 8) = ceil({self.lr_values:,} values * "
                f"{cfg.bits} bits / 8)"
            )
        return [
            f"forward MACs per image = frozen + adaptive = {f.forward_macs:,} + "
            f"{a.forward_macs:,} = {self.forward_macs:,} MACs ({self.forward_macs / 1e6:.1f} M)",
            f"training MACs per sample = adaptive forward + input grad + weight grad = "
            f"{a.forward_macs:,} + {a.input_grad_macs:,} + {a.weight_grad_macs:,} = "
            f"{self.train_macs_per_sample:,} MACs",
            f"{one_lr} = {self.lr_bytes:,} bytes",
            f"LR memory = N * one LR = {cfg.replays} LRs * {self.lr_bytes:,} bytes = "
            f"{self.memory.replay_bytes:,} bytes (+ 1 byte label each)",
            *self.workload.formulas(),
        ]

    def comparisons(self) -> list[Comparison]:
        """The first target against each other one (e.g. vega vs stm32l4)."""
        return [compare(self.targets[0], other) for other in self.targets[1:]]

    def findings(self) -> list[str]:
        out = []
        for est in self.targets:
            if not est.fits_any:
                sizes = ", ".join(
                    f"{lvl.removesuffix('_bytes')} {est.target.memory_bytes(lvl):,}"
                    for lvl in est.fits()
                )
                out.append(
                    f"{est.target.key}: the configuration needs "
                    f"{self.memory.total_bytes:,} bytes and fits no memory of the target "
                    f"({sizes} bytes)"
                )
        return out


def estimate(config: CostConfig, targets: list[str] | tuple[str, ...] = ()) -> CostReport:
    config.validate()
    model = create_model(config.model, num_classes=config.num_classes, width=config.width)
    rows = with_sparse_update(layer_costs(model, config.res, config.lr_layer), config.sparse_ratio)
    workload = make_workload(
        config.new_images, config.replays, config.epochs, config.minibatch_size
    )
    memory = memory_breakdown(
        rows, config.lr_layer, config.replays, config.bits, config.new_images, config.momentum,
        samples_held_for(config.norm, config.minibatch_size), bn_folded=config.norm == "fold",
    )
    estimates = [
        evaluate_target(rows, load_target(t), workload, memory.total_bytes) for t in targets
    ]
    return CostReport(
        config=config,
        layers=rows,
        frozen=stage_cost(rows, FROZEN),
        adaptive=stage_cost(rows, ADAPTIVE),
        lr_values=lr_values(rows, config.lr_layer),
        memory=memory,
        workload=workload,
        targets=estimates,
    )


def report_to_dict(
    report: CostReport, battery_mah: float, battery_v: float, period_s: float
) -> dict:
    """Everything ``tinycl cost --json`` prints: MACs and bytes per stage, totals, per target."""

    def stage(s: StageCost, weight_bytes_per_value: int) -> dict:
        return {
            "layers": s.layers,
            "forward_macs": s.forward_macs,
            "input_grad_macs": s.input_grad_macs,
            "weight_grad_macs": s.weight_grad_macs,
            "backward_macs": s.backward_macs,
            "weight_values": s.weight_values,
            "weight_bytes": weight_bytes_per_value * s.weight_values,
            "trainable_values": s.trainable_values,
        }

    w = report.workload
    targets = {}
    for est in report.targets:
        bat = est.battery(battery_mah, battery_v, period_s)
        targets[est.target.key] = {
            "name": est.target.name,
            "freq_hz": est.target.freq_hz.value,
            "active_power_w": est.target.active_power_w.value,
            "sleep_power_w": est.target.sleep_power_w.value,
            "basis": target_basis(est),
            "latency_s": est.latency_s(),
            "energy_j": est.energies_j(),
            "formulas": est.formulas(),
            "memory_levels_bytes": {lvl: est.target.memory_bytes(lvl) for lvl in est.fits()},
            "fits": est.fits(),
            "fits_any": est.fits_any,
            "battery": {
                "battery_mah": bat.battery_mah,
                "battery_v": bat.battery_v,
                "battery_j": bat.battery_j,
                "period_s": bat.period_s,
                "period_used_s": bat.period_used_s,
                "minibatch_s": bat.active_s,
                "minibatch_energy_j": bat.active_energy_j,
                "keeps_up": bat.keeps_up,
                "lifetime_h": bat.lifetime_h,
                "period_formula": bat.period_formula(),
                "formula": bat.formula(),
                "note": bat.note(),
            },
            "layers": [asdict(t) for t in est.layers],
        }
    return {
        "config": asdict(report.config),
        "lr": {
            "values": report.lr_values,
            "bytes": report.lr_bytes,
            "replay_bytes": report.memory.replay_bytes,
        },
        "stages": {
            "frozen": stage(report.frozen, 1),
            "adaptive": stage(report.adaptive, 4),
        },
        "workload": {
            **asdict(w),
            "minibatches_per_cl_batch": w.minibatches_per_cl_batch,
        },
        "memory": report.memory.to_dict(),
        "totals": {
            "forward_macs": report.forward_macs,
            "train_macs_per_sample": report.train_macs_per_sample,
            "memory_bytes": report.memory.total_bytes,
        },
        "formulas": report.formulas(),
        "targets": targets,
        "comparisons": [_comparison_dict(c) for c in report.comparisons()],
        "paper": {
            "source": "QLR-CL abstract, arXiv 2110.10486 (VEGA vs STM32L4)",
            "speedup": PAPER_SPEEDUP,
            "energy_ratio": PAPER_ENERGY_RATIO,
            "lifetime_h": PAPER_LIFETIME_H,
            "period_s": PAPER_PERIOD_S,
            "memory_bytes": PAPER_MEMORY_BYTES,
        },
        "findings": report.findings(),
        "layers": [
            {**asdict(r), "in_values": r.in_values, "out_values": r.out_values}
            for r in report.layers
        ],
    }


def _figure_dict(fig: Figure) -> dict:
    return {
        "value": fig.value,
        "kind": fig.kind,
        "source": fig.source,
        "assumption": fig.is_assumption,
    }


def target_basis(est: TargetEstimate) -> dict:
    """What the target's latency and energy rest on: clock, power, and for every pass and
    primitive the listed MAC/cycle (peak / sustained / derived), the utilization applied and
    the effective rate; per pass also the MAC-weighted rates over this configuration's layers.
    """
    t: Target = est.target
    return {
        "freq_hz": _figure_dict(t.freq_hz),
        "active_power_w": _figure_dict(t.active_power_w),
        "note": t.basis_note,
        "rates": {
            p: {k: t.rate_basis(p, k).to_dict() for k in prims}
            for p, prims in t.mac_per_cycle.items()
        },
        "passes": {p: b.to_dict() for p, b in est.passes.items()},
    }


def _comparison_dict(c: Comparison) -> dict:
    return {
        **c.to_dict(),
        "paper": (
            {"speedup": PAPER_SPEEDUP, "energy_ratio": PAPER_ENERGY_RATIO}
            if (c.fast, c.slow) == ("vega", "stm32l4")
            else None
        ),
    }
