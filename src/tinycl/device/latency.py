"""Latency, energy and battery lifetime of a configuration on a target.

cycles = MACs / (MAC/cycle of the target for that arithmetic, pass and primitive);
latency_s = cycles / freq_hz; energy_j = latency_s * active_power_w. Element-wise work
(BN, ReLU, requantization) and data movement are not modelled: the MAC/cycle figures of the
targets are measured averages that already include their kernels' overheads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tinycl.device.costs import ADAPTIVE, FROZEN, LayerCost
from tinycl.device.targets import MEMORY_LEVELS, Target

# SGD with momentum and weight decay, per trainable value and mini-batch: g += wd * w;
# v = m * v + g; w -= lr * v  ->  3 MACs (ar1-pytorch recipe, REFERENCES.md).
UPDATE_MACS_PER_VALUE = 3


@dataclass(frozen=True)
class Workload:
    """How many times each piece runs (recipe of DESIGN.md: 4 epochs, mini-batch 128)."""

    new_images: int  # n: new images of one CL batch
    replays: int  # N
    epochs: int
    minibatch_size: int
    new_per_minibatch: int  # cur = n // ((n + N) // 128)

    @property
    def minibatches_per_epoch(self) -> int:
        return math.ceil((self.new_images + self.replays) / self.minibatch_size)

    @property
    def minibatches_per_cl_batch(self) -> int:
        return self.epochs * self.minibatches_per_epoch


def make_workload(
    new_images: int, replays: int, epochs: int = 4, minibatch_size: int = 128
) -> Workload:
    groups = (new_images + replays) // minibatch_size
    cur = new_images // groups if groups > 0 else new_images
    return Workload(new_images, replays, epochs, minibatch_size, min(cur, minibatch_size))


@dataclass(frozen=True)
class LayerTiming:
    """Seconds of one layer for one sample on one target."""

    index: int
    name: str
    stage: str
    forward_s: float
    input_grad_s: float
    weight_grad_s: float

    @property
    def backward_s(self) -> float:
        return self.input_grad_s + self.weight_grad_s


def layer_timings(rows: list[LayerCost], target: Target) -> list[LayerTiming]:
    freq = target.freq_hz.value
    out = []
    for r in rows:
        fwd_pass = "int8_forward" if r.stage == FROZEN else "fp32_forward"
        out.append(
            LayerTiming(
                index=r.index,
                name=r.name,
                stage=r.stage,
                forward_s=r.forward_macs / target.rate(fwd_pass, r.kind) / freq,
                input_grad_s=r.input_grad_macs / target.rate("fp32_input_grad", r.kind) / freq,
                weight_grad_s=r.weight_grad_macs / target.rate("fp32_weight_grad", r.kind) / freq,
            )
        )
    return out


@dataclass(frozen=True)
class BatteryLifetime:
    """lifetime = E_battery / (E_active + P_sleep * (T - t_active)) * T."""

    battery_mah: float
    battery_v: float
    period_s: float
    active_s: float
    active_energy_j: float
    sleep_power_w: float
    keeps_up: bool  # False when one mini-batch takes longer than the period

    @property
    def battery_j(self) -> float:
        return self.battery_mah * 1e-3 * 3600.0 * self.battery_v

    @property
    def energy_per_period_j(self) -> float:
        sleep_s = max(0.0, self.period_s - self.active_s)
        return self.active_energy_j + self.sleep_power_w * sleep_s

    @property
    def lifetime_s(self) -> float:
        period = max(self.period_s, self.active_s)
        return self.battery_j / self.energy_per_period_j * period

    @property
    def lifetime_h(self) -> float:
        return self.lifetime_s / 3600.0

    def formula(self) -> str:
        sleep_s = max(0.0, self.period_s - self.active_s)
        return (
            f"lifetime = E_batt / (E_mb + P_sleep*(T - t_mb)) * T = "
            f"({self.battery_mah:g} mAh * {self.battery_v:g} V = {self.battery_j:.1f} J) / "
            f"({self.active_energy_j:.4g} J + {self.sleep_power_w:.3g} W * {sleep_s:.4g} s) * "
            f"{self.period_s:g} s = {self.lifetime_h:.1f} h"
        )


def battery_lifetime(
    battery_mah: float,
    battery_v: float,
    period_s: float,
    active_s: float,
    active_energy_j: float,
    sleep_power_w: float,
) -> BatteryLifetime:
    return BatteryLifetime(
        battery_mah,
        battery_v,
        period_s,
        active_s,
        active_energy_j,
        sleep_power_w,
        keeps_up=active_s <= period_s,
    )


@dataclass(frozen=True)
class TargetEstimate:
    """Latency (s) and energy (J) of the configuration on one target, and memory fit."""

    target: Target
    layers: list[LayerTiming]
    frozen_forward_s: float  # one new image through the INT8 frozen stage
    train_sample_s: float  # one latent through the FP32 adaptive stage, forward + backward
    update_s: float  # one SGD step over the trainable values
    workload: Workload
    total_memory_bytes: int

    @property
    def sample_s(self) -> float:
        """One new image end to end: frozen forward + adaptive forward and backward."""
        return self.frozen_forward_s + self.train_sample_s

    @property
    def minibatch_s(self) -> float:
        w = self.workload
        return (
            w.new_per_minibatch * self.frozen_forward_s
            + w.minibatch_size * self.train_sample_s
            + self.update_s
        )

    @property
    def cl_batch_s(self) -> float:
        w = self.workload
        return w.new_images * self.frozen_forward_s + w.minibatches_per_cl_batch * (
            w.minibatch_size * self.train_sample_s + self.update_s
        )

    def energy_j(self, latency_s: float) -> float:
        return latency_s * self.target.active_power_w.value

    def latency_s(self) -> dict[str, float]:
        return {
            "frozen_forward_per_image": self.frozen_forward_s,
            "train_per_sample": self.train_sample_s,
            "per_sample": self.sample_s,
            "per_minibatch": self.minibatch_s,
            "per_cl_batch": self.cl_batch_s,
        }

    def energies_j(self) -> dict[str, float]:
        return {k: self.energy_j(v) for k, v in self.latency_s().items()}

    def fits(self) -> dict[str, bool]:
        """Whether the whole working set fits each memory level on its own."""
        return {
            lvl: self.total_memory_bytes <= self.target.memory_bytes(lvl) for lvl in MEMORY_LEVELS
        }

    @property
    def fits_any(self) -> bool:
        return any(self.fits().values())

    def battery(self, battery_mah: float, battery_v: float, period_s: float) -> BatteryLifetime:
        return battery_lifetime(
            battery_mah,
            battery_v,
            period_s,
            self.minibatch_s,
            self.energy_j(self.minibatch_s),
            self.target.sleep_power_w.value,
        )


def evaluate_target(
    rows: list[LayerCost], target: Target, workload: Workload, total_memory_bytes: int
) -> TargetEstimate:
    timings = layer_timings(rows, target)
    trainable = sum(r.trainable_values for r in rows if r.stage == ADAPTIVE)
    update_s = (
        UPDATE_MACS_PER_VALUE
        * trainable
        / target.rate("fp32_forward", "linear")
        / target.freq_hz.value
    )
    return TargetEstimate(
        target=target,
        layers=timings,
        frozen_forward_s=sum(t.forward_s for t in timings if t.stage == FROZEN),
        train_sample_s=sum(t.forward_s + t.backward_s for t in timings if t.stage == ADAPTIVE),
        update_s=update_s,
        workload=workload,
        total_memory_bytes=total_memory_bytes,
    )


@dataclass(frozen=True)
class Comparison:
    """How much faster and more energy-efficient ``fast`` is than ``slow``, per mini-batch."""

    fast: str
    slow: str
    speedup: float
    energy_ratio: float


def compare(fast: TargetEstimate, slow: TargetEstimate) -> Comparison:
    return Comparison(
        fast=fast.target.key,
        slow=slow.target.key,
        speedup=slow.minibatch_s / fast.minibatch_s,
        energy_ratio=slow.energy_j(slow.minibatch_s) / fast.energy_j(fast.minibatch_s),
    )
