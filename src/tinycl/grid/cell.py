"""One cell of a grid, run in memory wherever an executor puts it.

The worker writes nothing into the grid's folder: it returns what the run directory needs
(summary, metrics records, the resolved config.toml text, the deployment bytes) and the
driver writes it, so workers on other machines need no shared file system. Only the data and
latent caches (``TINYCL_CACHE``) are written by workers, on their own node; cache writes are
atomic, so workers building one entry at once are safe.

This module imports neither torch nor the learner at import time: a fresh worker process
sets its thread count before torch loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tinycl.config import RunConfig

# Environment variables that size the OpenMP / MKL / OpenBLAS pools; read once, when torch's
# native libraries load, so they must be set before the worker imports torch.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class CellResult:
    """What a finished cell sends back to the driver (plain data: it crosses processes and nodes)."""

    summary: dict
    records: list[dict]
    config_toml: str
    deployment: bytes | None = None


@dataclass
class CellOutcome:
    """A cell's end on a worker: a result, or the one-line error it failed with."""

    result: CellResult | None = None
    error: str = ""
    # What the worker process was: which node and process ran it (for the report).
    worker: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")


def set_threads(threads: int) -> None:
    """Pin this process's PyTorch to ``threads`` intra-op threads (env first, for a torch not yet loaded)."""
    import sys

    if "torch" not in sys.modules:  # too late otherwise; and the driver's environment stays as it was
        for name in THREAD_ENV:
            os.environ[name] = str(threads)
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def interned(cfg: RunConfig) -> RunConfig:
    """A copy of ``cfg`` whose strings are interned, wherever it was unpickled.

    deployment.tcd is a pickle, and pickle shares one copy of a string among the references
    to the same object: a config that crossed a process boundary holds its own copies of
    "shift", "minmax", ..., where one built in-process holds the interned literals the export
    code uses too, so the bytes (not the content) of deployment.tcd would depend on the
    executor. Interned strings make them the same under every executor."""
    import copy
    import dataclasses
    import sys

    cfg = copy.deepcopy(cfg)
    todo = [cfg]
    while todo:
        node = todo.pop()
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if isinstance(value, str):
                setattr(node, f.name, sys.intern(value))
            elif dataclasses.is_dataclass(value):
                todo.append(value)
    return cfg


def run_cell(cfg: RunConfig) -> CellResult:
    """Run ``cfg`` to its end in memory. No checkpoints: a cell is the grid's unit of retry."""
    from tinycl.config import dump_toml
    from tinycl.train.experiment import Events, run_experiment

    cfg = interned(cfg)

    records: list[dict] = []
    resolved: dict[str, str] = {}
    deployment: dict[str, bytes] = {}

    def on_start(num_batches: int, earlier: list[dict]) -> None:
        # tinycl run writes config.toml at this point (after the data and model are resolved):
        # the same text, so a grid's run directory matches a single run's.
        resolved["toml"] = dump_toml(cfg)
        records.extend(earlier)

    def on_deployment(dep) -> None:
        from tinycl.export.deployment import encode_deployment

        deployment["bytes"] = encode_deployment(dep.validate())

    summary = run_experiment(cfg, Events(on_start=on_start, on_eval=records.append, on_deployment=on_deployment))
    return CellResult(summary, records, resolved.get("toml") or dump_toml(cfg), deployment.get("bytes"))


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_text(exc: BaseException) -> str:
    """The one line a failed cell is reported with: a user error as the CLI would print it,
    anything else with its type and where it was raised (the worker's traceback is not shown)."""
    import traceback

    from tinycl.errors import TinyclError

    if isinstance(exc, TinyclError):
        return one_line(exc)
    if isinstance(exc, OSError):
        from tinycl.cli import os_error_text

        return one_line(os_error_text(exc))
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (raised at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return one_line(f"{type(exc).__name__}: {exc}{where}")


def attempt_cell(cfg: RunConfig, threads: int) -> CellOutcome:
    """Run one cell with ``threads`` threads; an exception becomes the outcome's error (the grid goes
    on). Executors call this: in the driver (serial), a pool process (local) or a Ray task."""
    try:
        set_threads(threads)
        return CellOutcome(result=run_cell(cfg))
    except Exception as exc:  # noqa: BLE001 - any failure of one cell is reported, not raised
        return CellOutcome(error=error_text(exc))
