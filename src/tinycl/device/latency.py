"""Latency, energy and battery lifetime of a configuration on a target.

cycles = MACs / (MAC/cycle the model uses for that arithmetic, pass and primitive), where the
MAC/cycle used is the target's *listed* figure (a peak, a sustained average or a derived
figure, its ``kind``) times a stated *utilization* (``targets.py``); latency_s = cycles /
freq_hz; energy_j = latency_s * active_power_w. Element-wise work (BN, ReLU, requantization)
is not modelled; data movement only through the utilizations.

Every equation this module prints evaluates, with Python arithmetic on the operands as
printed, to the result as printed: operands are shown with 6 significant digits (``shown``)
and the result is computed from those shown operands, in the printed order, before rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tinycl.device.costs import ADAPTIVE, FROZEN, LayerCost
from tinycl.device.targets import MEMORY_LEVELS, PRIMITIVES, Figure, RateBasis, Target

# SGD with momentum and weight decay, per trainable value and mini-batch: g += wd * w;
# v = m * v + g; w -= lr * v  ->  3 MACs (ar1-pytorch recipe, REFERENCES.md).
UPDATE_MACS_PER_VALUE = 3
# 1 mAh = 3.6 C (1e-3 A x 3600 s); times volts gives joules.
COULOMB_PER_MAH = 3.6
SECONDS_PER_HOUR = 3600


def shown(x: float) -> str:
    """An equation operand as printed: 6 significant digits."""
    return f"{x:.6g}"


def _v(x: float) -> float:
    """The value of an operand as printed (what a reader re-computing the equation uses)."""
    return float(shown(x))


def nature(fig: Figure) -> str:
    """'peak, cited', 'derived, assumption', 'cited', ...: what a figure is and where from."""
    parts = [fig.kind] if fig.kind else []
    parts.append("assumption" if fig.is_assumption else "cited")
    return ", ".join(parts)


PASS_SHORT = {
    "int8_forward": "INT8 fwd",
    "fp32_forward": "FP32 fwd",
    "fp32_input_grad": "FP32 in-grad",
    "fp32_weight_grad": "FP32 w-grad",
}


def result_text(x: float) -> str:
    """An equation result as printed: 4 significant digits, thousands as integers."""
    return f"{x:,.0f}" if abs(x) >= 1e4 else f"{x:.4g}"


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

    def formulas(self) -> list[str]:
        """The recipe's counts as equations (ar1-pytorch: cur = n // ((n + N) // B))."""
        n, big_n, b = self.new_images, self.replays, self.minibatch_size
        groups = (n + big_n) // b
        if groups > 0:
            cur = f"min(n // ((n + N) // B), B) = min({n} // (({n} + {big_n}) // {b}), {b})"
        else:
            cur = f"min(n, B) = min({n}, {b})"
        return [
            f"mini-batches per epoch = ceil((n + N) / B) = ceil(({n} new + {big_n} replays) "
            f"/ {b}) = {self.minibatches_per_epoch}",
            f"new images per mini-batch = {cur} = {self.new_per_minibatch}",
            f"mini-batches per CL batch = epochs * per epoch = {self.epochs} * "
            f"{self.minibatches_per_epoch} = {self.minibatches_per_cl_batch}",
        ]


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


def _forward_pass(stage: str) -> str:
    return "int8_forward" if stage == FROZEN else "fp32_forward"


def layer_timings(rows: list[LayerCost], target: Target) -> list[LayerTiming]:
    freq = target.freq_hz.value
    out = []
    for r in rows:
        out.append(
            LayerTiming(
                index=r.index,
                name=r.name,
                stage=r.stage,
                forward_s=r.forward_macs / target.rate(_forward_pass(r.stage), r.kind) / freq,
                input_grad_s=r.input_grad_macs / target.rate("fp32_input_grad", r.kind) / freq,
                weight_grad_s=r.weight_grad_macs / target.rate("fp32_weight_grad", r.kind) / freq,
            )
        )
    return out


@dataclass(frozen=True)
class PassBasis:
    """One pass of this configuration on one target: its MACs and the rates they ran at.

    ``primitives`` holds the rate basis of every primitive carrying MACs in the pass;
    the MAC-weighted rates divide the pass's MACs by its cycles at listed / effective rates.
    """

    pass_name: str
    macs: int  # per sample: one image for int8_forward, one latent for the FP32 passes
    listed_cycles: float
    cycles: float
    primitives: dict[str, RateBasis]
    macs_by_primitive: dict[str, int]

    @property
    def listed_mac_per_cycle(self) -> float:
        return self.macs / self.listed_cycles if self.listed_cycles else 0.0

    @property
    def effective_mac_per_cycle(self) -> float:
        return self.macs / self.cycles if self.cycles else 0.0

    @property
    def utilization(self) -> float:
        """MAC-weighted: effective / listed over this pass's layers."""
        return self.listed_cycles / self.cycles if self.cycles else 0.0

    def to_dict(self) -> dict:
        return {
            "macs_per_sample": self.macs,
            "cycles_per_sample": self.cycles,
            "listed_mac_per_cycle": self.listed_mac_per_cycle,
            "utilization": self.utilization,
            "effective_mac_per_cycle": self.effective_mac_per_cycle,
            "macs_by_primitive": dict(self.macs_by_primitive),
        }


PASS_MACS = {
    "int8_forward": (FROZEN, "forward_macs"),
    "fp32_forward": (ADAPTIVE, "forward_macs"),
    "fp32_input_grad": (ADAPTIVE, "input_grad_macs"),
    "fp32_weight_grad": (ADAPTIVE, "weight_grad_macs"),
}


def pass_bases(rows: list[LayerCost], target: Target) -> dict[str, PassBasis]:
    out = {}
    for pass_name, (stage, attr) in PASS_MACS.items():
        macs = {k: 0 for k in PRIMITIVES}
        for r in rows:
            if r.stage == stage:
                macs[r.kind] += getattr(r, attr)
        used = {k: m for k, m in macs.items() if m > 0}
        bases = {k: target.rate_basis(pass_name, k) for k in used}
        out[pass_name] = PassBasis(
            pass_name=pass_name,
            macs=sum(used.values()),
            listed_cycles=sum(m / bases[k].listed_mac_per_cycle for k, m in used.items()),
            cycles=sum(m / bases[k].effective_mac_per_cycle for k, m in used.items()),
            primitives=bases,
            macs_by_primitive=used,
        )
    return out


@dataclass(frozen=True)
class BatteryLifetime:
    """lifetime = E_battery / (E_active + P_sleep * (T - t_active)) * T.

    T is the period actually used: the requested one, or the mini-batch time when one
    mini-batch takes longer than the period (the device cannot keep up and learns back to
    back; it then learns one mini-batch every ``active_s``, not every ``period_s``).
    """

    battery_mah: float
    battery_v: float
    period_s: float  # requested
    active_s: float
    active_energy_j: float
    sleep_power_w: float
    keeps_up: bool  # False when one mini-batch takes longer than the period

    @property
    def battery_j(self) -> float:
        return self.battery_mah * COULOMB_PER_MAH * self.battery_v

    @property
    def period_used_s(self) -> float:
        return max(self.period_s, self.active_s)

    @property
    def energy_per_period_j(self) -> float:
        sleep_s = self.period_used_s - self.active_s
        return self.active_energy_j + self.sleep_power_w * sleep_s

    @property
    def lifetime_s(self) -> float:
        return self.battery_j / self.energy_per_period_j * self.period_used_s

    @property
    def lifetime_h(self) -> float:
        return self.lifetime_s / SECONDS_PER_HOUR

    @property
    def shown_lifetime_h(self) -> float:
        """The lifetime as ``formula()`` computes it from its printed operands."""
        period, active = _v(self.period_used_s), _v(self.active_s)
        return (
            (_v(self.battery_mah) * COULOMB_PER_MAH * _v(self.battery_v))
            / (_v(self.active_energy_j) + _v(self.sleep_power_w) * (period - active))
            * period
            / SECONDS_PER_HOUR
        )

    def period_formula(self) -> str:
        req, active = shown(self.period_s), shown(self.active_s)
        used = shown(max(float(req), float(active)))
        return f"T = max(T_requested, t_mb) = max({req} s, {active} s) = {used} s"

    def note(self) -> str:
        if self.keeps_up:
            return (
                f"one mini-batch every {shown(self.period_s)} s: t_mb = {shown(self.active_s)} s "
                "fits in the period, the rest is sleep"
            )
        return (
            f"cannot keep up: one mini-batch takes {shown(self.active_s)} s, longer than the "
            f"requested {shown(self.period_s)} s period; it learns back to back, one "
            f"mini-batch every {shown(self.period_used_s)} s, and never sleeps"
        )

    def formula(self) -> str:
        period, active = shown(self.period_used_s), shown(self.active_s)
        return (
            f"lifetime = E_batt / (E_mb + P_sleep * (T - t_mb)) * T = "
            f"({shown(self.battery_mah)} mAh * {COULOMB_PER_MAH:g} C/mAh * "
            f"{shown(self.battery_v)} V) / ({shown(self.active_energy_j)} J + "
            f"{shown(self.sleep_power_w)} W * ({period} s - {active} s)) * {period} s / "
            f"{SECONDS_PER_HOUR} s/h = {self.shown_lifetime_h:.1f} h"
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
    passes: dict[str, PassBasis]

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

    def formulas(self) -> list[str]:
        """Latency and energy per sample, mini-batch and CL batch, as equations."""
        w = self.workload
        fr, tr, up = _v(self.frozen_forward_s), _v(self.train_sample_s), _v(self.update_s)
        f_s, t_s, u_s = shown(fr), shown(tr), shown(up)
        power = _v(self.target.active_power_w.value)
        minibatch = w.new_per_minibatch * fr + w.minibatch_size * tr + up
        cl_batch = w.new_images * fr + w.minibatches_per_cl_batch * (w.minibatch_size * tr + up)
        out = [
            f"t_sample = t_frozen + t_train = {f_s} s + {t_s} s = {result_text(fr + tr)} s",
            f"t_mb = n_new * t_frozen + B * t_train + t_update = {w.new_per_minibatch} * "
            f"{f_s} s + {w.minibatch_size} * {t_s} s + {u_s} s = {result_text(minibatch)} s",
            f"t_CL = n * t_frozen + mini-batches * (B * t_train + t_update) = "
            f"{w.new_images} * {f_s} s + {w.minibatches_per_cl_batch} * "
            f"({w.minibatch_size} * {t_s} s + {u_s} s) = {result_text(cl_batch)} s",
        ]
        for name, seconds in (
            ("E_sample", self.sample_s),
            ("E_mb", self.minibatch_s),
            ("E_CL", self.cl_batch_s),
        ):
            t = _v(seconds)
            symbol = "t_" + name.removeprefix("E_")
            out.append(
                f"{name} = {symbol} * P_active = {shown(t)} s * {shown(power)} W = "
                f"{result_text(t * power)} J"
            )
        return out

    def basis_summary(self) -> str:
        """One line: per pass the MAC-weighted listed rate, its kind, the utilization applied
        and the effective rate over this configuration's layers; the clock and power."""
        t = self.target
        passes = []
        for name, pb in self.passes.items():
            if not pb.primitives:
                continue
            kinds = "/".join(sorted({b.kind for b in pb.primitives.values()}))
            passes.append(
                f"{PASS_SHORT[name]} {pb.listed_mac_per_cycle:.3g} {kinds} at "
                f"{pb.utilization:.0%} -> {pb.effective_mac_per_cycle:.3g}"
            )
        return (
            f"basis [{t.key}]: MAC/cycle {', '.join(passes)}; clock "
            f"{t.freq_hz.value / 1e6:g} MHz ({nature(t.freq_hz)}); active power "
            f"{t.active_power_w.value * 1e3:g} mW ({nature(t.active_power_w)})"
        )

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
    # The SGD step is element-wise over the trainable values: priced at the FP32 linear rate
    # (one load per MAC, like a matrix-vector product).
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
        passes=pass_bases(rows, target),
    )


@dataclass(frozen=True)
class Comparison:
    """How much faster and more energy-efficient ``fast`` is than ``slow``, per mini-batch."""

    fast: str
    slow: str
    fast_minibatch_s: float
    slow_minibatch_s: float
    fast_minibatch_j: float
    slow_minibatch_j: float

    @property
    def speedup(self) -> float:
        return self.slow_minibatch_s / self.fast_minibatch_s

    @property
    def energy_ratio(self) -> float:
        return self.slow_minibatch_j / self.fast_minibatch_j

    def speedup_formula(self) -> str:
        slow, fast = _v(self.slow_minibatch_s), _v(self.fast_minibatch_s)
        return (
            f"speed-up = t_mb({self.slow}) / t_mb({self.fast}) = {shown(slow)} s / "
            f"{shown(fast)} s = {slow / fast:.1f}x"
        )

    def energy_formula(self) -> str:
        slow, fast = _v(self.slow_minibatch_j), _v(self.fast_minibatch_j)
        return (
            f"energy ratio = E_mb({self.slow}) / E_mb({self.fast}) = {shown(slow)} J / "
            f"{shown(fast)} J = {slow / fast:.1f}x"
        )

    def to_dict(self) -> dict:
        return {
            "fast": self.fast,
            "slow": self.slow,
            "speedup": self.speedup,
            "energy_ratio": self.energy_ratio,
            "fast_minibatch_s": self.fast_minibatch_s,
            "slow_minibatch_s": self.slow_minibatch_s,
            "fast_minibatch_j": self.fast_minibatch_j,
            "slow_minibatch_j": self.slow_minibatch_j,
            "formulas": [self.speedup_formula(), self.energy_formula()],
        }


def compare(fast: TargetEstimate, slow: TargetEstimate) -> Comparison:
    return Comparison(
        fast=fast.target.key,
        slow=slow.target.key,
        fast_minibatch_s=fast.minibatch_s,
        slow_minibatch_s=slow.minibatch_s,
        fast_minibatch_j=fast.energy_j(fast.minibatch_s),
        slow_minibatch_j=slow.energy_j(slow.minibatch_s),
    )
