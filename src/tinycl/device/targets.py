"""Target MCUs as data files: ``device/targets/<key>.toml``, every figure with its source.

A figure is ``{ value = ..., source = "..." }``; a source starting with ``assumption`` marks a
figure not taken from a public document. Throughput is MAC/cycle per arithmetic and pass
(``int8_forward``, ``fp32_forward``, ``fp32_input_grad``, ``fp32_weight_grad``) and per
primitive (``conv``, ``dw``, ``pw``, ``linear``, ``pool``).

Published MAC/cycle figures are of different natures, and each throughput figure says which in
its ``kind``:

- ``peak``: the best a kernel reached ("up to", "peak" in the source), e.g. PULP-NN's 15.5
  MAC/cycle INT8 or the 2.21 / 1.70 MAC/cycle FP32 forward / backward of arXiv 2007.13631;
- ``sustained``: an average over a whole network or workload;
- ``derived``: computed here from other published figures (the source shows the arithmetic).

The rate the model uses is never taken on trust: every target also lists a ``utilization``
per pass and primitive, the fraction of the listed figure that primitive sustains (in (0, 1]),
each cited or marked ``assumption:`` with its reasoning, and

    effective MAC/cycle = listed MAC/cycle * utilization.

``active_power_w`` carries a ``kind`` too (power at a peak-performance point is not the
power of an average layer). The loader is strict: unknown keys, a figure without a source, a
kind outside the three above or a utilization outside (0, 1] are refused with one line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tinycl.errors import TinyclError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PASSES = ("int8_forward", "fp32_forward", "fp32_input_grad", "fp32_weight_grad")
PRIMITIVES = ("conv", "dw", "pw", "linear", "pool")
MEMORY_LEVELS = ("l1_bytes", "l2_bytes", "nonvolatile_bytes", "external_bytes")
FIGURE_KINDS = ("peak", "sustained", "derived")
FIGURE_KEYS = ("value", "source", "kind")
TOP_LEVEL_KEYS = (
    "key",
    "name",
    "description",
    "basis_note",
    "freq_hz",
    "active_power_w",
    "sleep_power_w",
    "memory",
    "mac_per_cycle",
    "utilization",
    "reference",
)


@dataclass(frozen=True)
class Figure:
    value: float
    source: str
    kind: str | None = None  # peak | sustained | derived; None where the notion does not apply

    @property
    def is_assumption(self) -> bool:
        return self.source.lower().startswith("assumption")


@dataclass(frozen=True)
class RateBasis:
    """How one MAC/cycle figure the model uses was obtained: listed figure x utilization."""

    pass_name: str
    primitive: str
    listed_mac_per_cycle: float
    kind: str  # of the listed figure: peak | sustained | derived
    source: str
    utilization: float
    utilization_source: str

    @property
    def effective_mac_per_cycle(self) -> float:
        return self.listed_mac_per_cycle * self.utilization

    def to_dict(self) -> dict:
        return {
            "listed_mac_per_cycle": self.listed_mac_per_cycle,
            "kind": self.kind,
            "source": self.source,
            "utilization": self.utilization,
            "utilization_source": self.utilization_source,
            "effective_mac_per_cycle": self.effective_mac_per_cycle,
        }


@dataclass(frozen=True)
class Target:
    key: str
    name: str
    description: str
    freq_hz: Figure
    active_power_w: Figure
    sleep_power_w: Figure
    memory: dict[str, Figure]  # level -> bytes
    mac_per_cycle: dict[str, dict[str, Figure]]  # pass -> primitive -> listed MAC/cycle
    utilization: dict[str, dict[str, Figure]]  # pass -> primitive -> fraction of the listed
    basis_note: str = ""  # one line printed with the basis (e.g. a core-count caveat)
    reference: dict[str, Figure] = field(default_factory=dict)  # shown, never used

    def rate(self, pass_name: str, primitive: str) -> float:
        """The MAC/cycle the model uses: listed figure x utilization."""
        return self.rate_basis(pass_name, primitive).effective_mac_per_cycle

    def rate_basis(self, pass_name: str, primitive: str) -> RateBasis:
        listed = self.mac_per_cycle[pass_name][primitive]
        use = self.utilization[pass_name][primitive]
        return RateBasis(
            pass_name=pass_name,
            primitive=primitive,
            listed_mac_per_cycle=listed.value,
            kind=str(listed.kind),
            source=listed.source,
            utilization=use.value,
            utilization_source=use.source,
        )

    def memory_bytes(self, level: str) -> int:
        return int(self.memory[level].value)

    def figures(self) -> dict[str, Figure]:
        """Every figure by a dotted name, for listing sources."""
        out = {
            "freq_hz": self.freq_hz,
            "active_power_w": self.active_power_w,
            "sleep_power_w": self.sleep_power_w,
        }
        out.update({f"memory.{k}": v for k, v in self.memory.items()})
        for p, prims in self.mac_per_cycle.items():
            out.update({f"mac_per_cycle.{p}.{k}": v for k, v in prims.items()})
        for p, prims in self.utilization.items():
            out.update({f"utilization.{p}.{k}": v for k, v in prims.items()})
        out.update({f"reference.{k}": v for k, v in self.reference.items()})
        return out


def _figure(data: object, where: str, kind_required: bool = False) -> Figure:
    if not isinstance(data, dict) or "value" not in data:
        raise TinyclError(f'{where}: expected {{ value = ..., source = "..." }}')
    unknown = sorted(set(data) - set(FIGURE_KEYS))
    if unknown:
        raise TinyclError(
            f"{where}: unknown key {unknown[0]!r} (expected {', '.join(FIGURE_KEYS)})"
        )
    if not str(data.get("source", "")).strip():
        raise TinyclError(f"{where}: missing source (cite it, or start it with 'assumption:')")
    try:
        value = float(data["value"])
    except (TypeError, ValueError):
        raise TinyclError(f"{where}: value must be a number, got {data['value']!r}") from None
    if value < 0:
        raise TinyclError(f"{where}: value must be >= 0, got {value}")
    kind = data.get("kind")
    if kind is None and kind_required:
        raise TinyclError(f"{where}: missing kind (one of {', '.join(FIGURE_KINDS)})")
    if kind is not None and kind not in FIGURE_KINDS:
        raise TinyclError(f"{where}: kind must be one of {', '.join(FIGURE_KINDS)}, got {kind!r}")
    return Figure(value=value, source=str(data["source"]), kind=kind)


def _table(data: dict, name: str, keys: tuple[str, ...], origin: str) -> dict:
    """``data[name]``, a table holding exactly ``keys``."""
    table = data.get(name)
    if not isinstance(table, dict):
        raise TinyclError(f"{origin}: missing table [{name}]")
    for k in keys:
        if k not in table:
            raise TinyclError(f"{origin}: missing {name}.{k}")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise TinyclError(
            f"{origin}: unknown key {name}.{unknown[0]} (expected {', '.join(keys)})"
        )
    return table


def _per_pass(data: dict, name: str, origin: str, utilization: bool) -> dict:
    out: dict[str, dict[str, Figure]] = {}
    passes = _table(data, name, PASSES, origin)
    for p in PASSES:
        prims = _table(passes, p, PRIMITIVES, f"{origin}: {name}")
        out[p] = {}
        for k in PRIMITIVES:
            where = f"{origin}: {name}.{p}.{k}"
            fig = _figure(prims[k], where, kind_required=not utilization)
            if utilization:
                if fig.kind is not None:
                    raise TinyclError(f"{where}: a utilization has no kind (it is a fraction)")
                if not 0 < fig.value <= 1:
                    raise TinyclError(f"{where}: utilization must be in (0, 1], got {fig.value}")
            elif fig.value <= 0:
                raise TinyclError(f"{where}: MAC/cycle must be > 0, got {fig.value}")
            out[p][k] = fig
    return out


def parse_target(data: dict, origin: str) -> Target:
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise TinyclError(
            f"{origin}: unknown key {unknown[0]!r} (expected {', '.join(TOP_LEVEL_KEYS)})"
        )
    for key in ("key", "name", "freq_hz", "active_power_w", "sleep_power_w"):
        if key not in data:
            raise TinyclError(f"{origin}: missing {key!r}")
    memory_table = _table(data, "memory", MEMORY_LEVELS, origin)
    memory = {lvl: _figure(memory_table[lvl], f"{origin}: memory.{lvl}") for lvl in MEMORY_LEVELS}
    reference = data.get("reference", {})
    if not isinstance(reference, dict):
        raise TinyclError(f"{origin}: [reference] must be a table of figures")
    target = Target(
        key=str(data["key"]),
        name=str(data["name"]),
        description=str(data.get("description", "")),
        freq_hz=_figure(data["freq_hz"], f"{origin}: freq_hz"),
        active_power_w=_figure(
            data["active_power_w"], f"{origin}: active_power_w", kind_required=True
        ),
        sleep_power_w=_figure(data["sleep_power_w"], f"{origin}: sleep_power_w"),
        memory=memory,
        mac_per_cycle=_per_pass(data, "mac_per_cycle", origin, utilization=False),
        utilization=_per_pass(data, "utilization", origin, utilization=True),
        basis_note=str(data.get("basis_note", "")),
        reference={k: _figure(v, f"{origin}: reference.{k}") for k, v in reference.items()},
    )
    if target.freq_hz.value <= 0:
        raise TinyclError(f"{origin}: freq_hz must be > 0")
    return target


def _builtin_dir():
    return resources.files("tinycl.device") / "targets"


def target_names() -> list[str]:
    return sorted(
        p.name[: -len(".toml")] for p in _builtin_dir().iterdir() if p.name.endswith(".toml")
    )


def load_target(name: str) -> Target:
    """A built-in target by key (``vega``, ``stm32l4``, ...) or a path to a TOML file."""
    path = Path(name)
    if name.endswith(".toml") and path.is_file():
        text, origin = path.read_text(), str(path)
    else:
        entry = _builtin_dir() / f"{name}.toml"
        if not entry.is_file():
            raise TinyclError(
                f"unknown target {name!r}; known targets: {', '.join(target_names())}"
            )
        text, origin = entry.read_text(), f"{name}.toml"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TinyclError(f"{origin}: not valid TOML ({exc})") from None
    return parse_target(data, origin)
