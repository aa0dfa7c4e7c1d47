"""Target MCUs as data files: ``device/targets/<key>.toml``, every figure with its source.

A figure is ``{ value = ..., source = "..." }``; a source starting with ``assumption`` marks a
figure not taken from a public document. Throughput is MAC/cycle per arithmetic and pass
(``int8_forward``, ``fp32_forward``, ``fp32_input_grad``, ``fp32_weight_grad``) and per
primitive (``conv``, ``dw``, ``pw``, ``linear``, ``pool``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Figure:
    value: float
    source: str

    @property
    def is_assumption(self) -> bool:
        return self.source.lower().startswith("assumption")


@dataclass(frozen=True)
class Target:
    key: str
    name: str
    description: str
    freq_hz: Figure
    active_power_w: Figure
    sleep_power_w: Figure
    memory: dict[str, Figure]  # level -> bytes
    mac_per_cycle: dict[str, dict[str, Figure]]  # pass -> primitive -> MAC/cycle

    def rate(self, pass_name: str, kind: str) -> float:
        return self.mac_per_cycle[pass_name][kind].value

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
        for p, kinds in self.mac_per_cycle.items():
            out.update({f"mac_per_cycle.{p}.{k}": v for k, v in kinds.items()})
        return out


def _figure(data: object, where: str) -> Figure:
    if not isinstance(data, dict) or "value" not in data or not data.get("source"):
        raise TinyclError(f'{where}: expected {{ value = ..., source = "..." }}')
    value = float(data["value"])
    if value < 0:
        raise TinyclError(f"{where}: value must be >= 0, got {value}")
    return Figure(value=value, source=str(data["source"]))


def parse_target(data: dict, origin: str) -> Target:
    try:
        memory = {
            lvl: _figure(data["memory"][lvl], f"{origin}: memory.{lvl}") for lvl in MEMORY_LEVELS
        }
        rates: dict[str, dict[str, Figure]] = {}
        for p in PASSES:
            rates[p] = {}
            for k in PRIMITIVES:
                fig = _figure(data["mac_per_cycle"][p][k], f"{origin}: mac_per_cycle.{p}.{k}")
                if fig.value <= 0:
                    raise TinyclError(f"{origin}: mac_per_cycle.{p}.{k} must be > 0")
                rates[p][k] = fig
        target = Target(
            key=str(data["key"]),
            name=str(data["name"]),
            description=str(data.get("description", "")),
            freq_hz=_figure(data["freq_hz"], f"{origin}: freq_hz"),
            active_power_w=_figure(data["active_power_w"], f"{origin}: active_power_w"),
            sleep_power_w=_figure(data["sleep_power_w"], f"{origin}: sleep_power_w"),
            memory=memory,
            mac_per_cycle=rates,
        )
    except KeyError as exc:
        raise TinyclError(f"{origin}: missing {exc.args[0]!r}") from None
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
