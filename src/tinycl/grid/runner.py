"""The grid runner: every (run directory, config) of a grid through one executor.

- **Plan first**: cells, runs, runs already finished, the executor and an estimate of the time.
- **Resumable**: a run whose directory holds a summary.json is skipped (``skip_finished``).
- **Fault-tolerant**: a run that fails is reported with its one-line error and the grid goes
  on; a run whose worker died (SIGKILL, node loss) is retried ``retries`` times; the closing
  report lists the runs that never finished.
- **One writer**: the driver owns each run directory (``RunDirectory``: lock, staging over a
  finished run, commit) from the moment its run is sent out until the worker's result is
  written into it, so workers need no access to the grid's folder.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tinycl.errors import TinyclError
from tinycl.grid.executors import EXECUTORS, Executor, Lost, default_workers
from tinycl.grid.plan import duration_text, plan_text

if TYPE_CHECKING:
    from tinycl.config import RunConfig
    from tinycl.grid.cell import CellResult
    from tinycl.report.rundir import RunDirectory


@dataclass
class GridSettings:
    """How a grid runs: the executor, its parallelism, PyTorch threads per run, retries of lost runs.

    ``threads`` is part of what a run computes (the thread count changes float rounding), so
    it is the same for every executor; ``workers`` is how many runs go at once."""

    executor: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    threads: int = 1
    retries: int = 2

    def check(self) -> None:
        """Bad settings, an uninstalled Ray, an unreachable cluster: one error before anything runs."""
        if self.executor not in EXECUTORS:
            raise TinyclError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.workers is not None and self.workers < 1:
            raise TinyclError(f"--workers must be at least 1, got {self.workers}")
        if self.threads < 1:
            raise TinyclError(f"--threads must be at least 1, got {self.threads}")
        if self.executor == "serial" and self.workers not in (None, 1):
            raise TinyclError("--workers is for --executor local or ray: serial runs one run at a time")
        if self.ray_address is not None and self.executor != "ray":
            raise TinyclError("--ray-address is for --executor ray")
        if self.executor == "ray":
            from tinycl.grid import ray_support

            ray_support.require_ray()
            if self.ray_address is not None:
                ray_support.probe(self.ray_address)

    def at_once(self, runs: int) -> int | None:
        """Runs in flight at most for a grid of ``runs`` runs to do: no more workers than runs
        (None: as many as the Ray cluster's CPUs allow, known once connected)."""
        if self.executor == "serial":
            return 1
        if self.executor == "ray" and self.ray_address is not None and self.workers is None:
            return None
        return max(1, min(self.workers or default_workers(self.threads), runs))

    def preview(self, runs: int) -> tuple[str, int]:
        """(where ``runs`` runs would go, how many at once) without starting anything (--dry-run)."""
        threads = f"{self.threads} thread{'s' * (self.threads != 1)}"
        if self.executor == "serial":
            return f"serial: one run at a time in this process × {threads}", 1
        workers = self.at_once(runs) or 1
        if self.executor == "local":
            return f"local: {workers} worker process{'es' * (workers != 1)} × {threads}", workers
        if self.ray_address is None:
            return f"ray: a local Ray instance on 127.0.0.1, {workers} run{'s' * (workers != 1)} at a time × " \
                   f"{threads}", workers
        at_once = f"{workers} at a time" if self.workers else "as many at a time as its CPUs allow"
        return f"ray: the Ray cluster at {self.ray_address} (not contacted: --dry-run), {at_once} × {threads}", \
            workers

    def open(self, runs: int) -> Executor:
        """Start the executor for a grid of ``runs`` runs to do."""
        from tinycl.grid.executors import LocalExecutor, RayExecutor, SerialExecutor

        if self.executor == "serial":
            return SerialExecutor(self.threads)
        if self.executor == "local":
            return LocalExecutor(self.at_once(runs) or 1, self.threads)
        return RayExecutor(self.ray_address, self.at_once(runs), self.threads)


@dataclass
class RunOutcome:
    """What became of one run of the grid."""

    run_dir: Path
    status: str = "pending"  # skipped | finished | failed | lost (never finished: its worker died every try)
    tries: int = 0
    error: str = ""
    summary: dict | None = None

    @property
    def done(self) -> bool:
        return self.status in ("skipped", "finished")


@dataclass
class GridReport:
    outcomes: list[RunOutcome]
    seconds: float = 0.0
    where: str = ""
    lines: list[str] = field(default_factory=list)

    def unfinished(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if not o.done]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    def totals_text(self) -> str:
        runs = len(self.outcomes)
        text = (f"grid: {runs} run{'s' * (runs != 1)}: {self.count('finished')} finished now, "
                f"{self.count('skipped')} skipped (finished before), {self.count('failed')} failed, "
                f"{self.count('lost')} never finished (worker lost)")
        return text + (f"; {duration_text(self.seconds)} on {self.where}" if self.where else "")

    def unfinished_table(self) -> str:
        """Markdown: every run that did not finish, why, after how many tries."""
        rows = ["| run | status | tries | error |", "| --- | --- | ---: | --- |"]
        for o in self.unfinished():
            status = "never finished" if o.status == "lost" else o.status
            rows.append(f"| {o.run_dir.name} | {status} | {o.tries} | {o.error.replace('|', '/')} |")
        return "\n".join(rows)

    def exit_if_incomplete(self) -> None:
        """Exit 1 (after everything else is written) when some run did not finish."""
        missing = self.unfinished()
        if not missing:
            return
        print(f"tinycl: {len(missing)} of {len(self.outcomes)} runs did not finish ({self.count('failed')} failed, "
              f"{self.count('lost')} never finished): the same command retries only them (finished runs are "
              "skipped)", file=sys.stderr)
        raise SystemExit(1)


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file()


def run_grid(configs: Sequence[tuple[Path, RunConfig]], *, out: Path, cells: int, settings: GridSettings,
             skip_finished: bool = True, detail: str = "", dry_run: bool = False) -> GridReport:
    """Print the plan, then run every (run directory, config) not finished yet on the executor of
    ``settings``, one line per run as it ends, and a closing line; returns what became of each run
    (nothing runs with ``dry_run``). Raises TinyclError for bad settings before anything starts."""
    settings.check()
    run_dirs = [d for d, _ in configs]
    report = GridReport([RunOutcome(d) for d in run_dirs])
    todo = []
    for i, outcome in enumerate(report.outcomes):
        if skip_finished and is_finished(outcome.run_dir):
            outcome.status = "skipped"
        else:
            todo.append(i)
    plan = {"skip_finished": skip_finished, "detail": detail}
    if dry_run or not todo:
        where, parallel = settings.preview(len(todo))
        print(plan_text(cells, run_dirs, out, executor=where, parallel=parallel, **plan), flush=True)
        return report
    started = time.perf_counter()
    with settings.open(len(todo)) as executor:
        report.where = executor.name
        print(plan_text(cells, run_dirs, out, executor=executor.describe(), parallel=executor.slots, **plan),
              flush=True)
        _drive(executor, configs, todo, report, settings.retries, skip_finished)
    report.seconds = time.perf_counter() - started
    print(report.totals_text(), flush=True)
    if report.unfinished():
        print(report.unfinished_table(), flush=True)
    return report


def _drive(executor: Executor, configs: Sequence[tuple[Path, RunConfig]], todo: list[int], report: GridReport,
           retries: int, skip_finished: bool) -> None:
    """Keep ``executor.slots`` runs in flight until every run has ended."""
    total = len(configs)
    queue = deque(todo)
    owned: dict[int, RunDirectory] = {}
    in_flight: set[int] = set()

    def say(i: int, text: str) -> None:
        print(f"[{i + 1}/{total}] {configs[i][0].name}: {text}", flush=True)

    def settle(i: int, status: str, error: str = "") -> None:
        outcome = report.outcomes[i]
        outcome.status, outcome.error = status, error
        rundir = owned.pop(i, None)
        if rundir is not None:
            rundir.release()

    try:
        while queue or in_flight:
            while queue and len(in_flight) < executor.slots:
                i = queue.popleft()
                if i not in owned and not _claim(i, configs[i][0], owned, report, skip_finished):
                    if report.outcomes[i].status == "failed":
                        say(i, f"failed: {report.outcomes[i].error}")
                    continue
                report.outcomes[i].tries += 1
                executor.submit(i, configs[i][1])
                in_flight.add(i)
            if not in_flight:  # every run left was claimed elsewhere or could not be: nothing to wait for
                continue
            for key, end in executor.wait():
                i = int(key)  # type: ignore[call-overload]
                in_flight.discard(i)
                outcome = report.outcomes[i]
                if isinstance(end, Lost):
                    if outcome.tries <= retries:
                        say(i, f"worker lost ({end.reason}); retrying, try {outcome.tries + 1} of {retries + 1}")
                        queue.appendleft(i)
                    else:
                        settle(i, "lost", f"worker lost {outcome.tries} times; last: {end.reason}")
                        say(i, f"never finished: {outcome.error}")
                    continue
                if end.result is None:
                    settle(i, "failed", end.error)
                    say(i, f"failed: {end.error}")
                    continue
                try:
                    _write(owned[i], end.result)
                except (OSError, TinyclError) as exc:
                    from tinycl.grid.cell import error_text

                    settle(i, "failed", f"writing {configs[i][0]}: {error_text(exc)}")
                    say(i, f"failed: {outcome.error}")
                    continue
                summary = end.result.summary
                outcome.summary = summary
                settle(i, "finished")
                say(i, f"final {100 * summary['final_accuracy']:.2f}% ({summary['lr_memory_bytes']:,} B LRs) "
                       f"in {summary['wall_seconds']:.0f} s")
    finally:
        for rundir in owned.values():
            rundir.release()


def _claim(i: int, run_dir: Path, owned: dict[int, RunDirectory], report: GridReport, skip_finished: bool) -> bool:
    """Own ``run_dir`` for run ``i`` until its result is written; False (and the outcome set) when
    another tinycl process owns it, another grid finished it meanwhile, or it holds an
    unfinished ``tinycl run`` that only --resume may continue."""
    from tinycl.cli.run import refuse_unfinished
    from tinycl.report.rundir import RunDirectory

    outcome = report.outcomes[i]
    rundir = RunDirectory(run_dir)
    try:
        rundir.acquire()
    except TinyclError as exc:
        outcome.status, outcome.error = "failed", str(exc)
        return False
    try:
        if skip_finished and is_finished(run_dir):
            outcome.status = "skipped"
            rundir.release()
            return False
        refuse_unfinished(rundir)
    except TinyclError as exc:
        outcome.status, outcome.error = "failed", str(exc)
        rundir.release()
        return False
    owned[i] = rundir
    return True


def _write(rundir: RunDirectory, result: CellResult) -> None:
    """A worker's finished run into its directory, as ``tinycl run`` leaves it (summary.json last)."""
    from tinycl.config import from_dict
    from tinycl.fileio import write_atomic
    from tinycl.report.rundir import write_run_outputs

    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib

    work = rundir.begin()
    try:
        write_atomic(work / "config.toml", result.config_toml)
        cfg = from_dict(tomllib.loads(result.config_toml), source="a worker's config")
        write_run_outputs(work, cfg, result.summary, result.records, metrics=True, deployment=result.deployment)
    except BaseException:
        rundir.abandon(keep=False)
        raise
    rundir.commit()
