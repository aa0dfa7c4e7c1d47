"""Where a grid's cells run: ``serial`` (in this process), ``local`` (a pool of worker processes
on this machine) or ``ray`` (tasks on a Ray cluster, or on a local Ray instance bound to
127.0.0.1).

Every executor has ``slots`` cells in flight at most; the runner ``submit``s a cell to a free
slot and ``wait``s for the next ends. An end is a ``CellOutcome`` (a result or a cell's own
error), or ``Lost``: the process running the cell died (SIGKILL, out of memory, node loss),
which the runner retries. Retrying is the runner's job, not Ray's (its tasks run with
``max_retries=0``), so every executor retries and reports alike.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinycl.errors import TinyclError
from tinycl.grid.cell import THREAD_ENV, CellOutcome, attempt_cell

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from tinycl.config import RunConfig

EXECUTORS = ("serial", "local", "ray")


@dataclass
class Lost:
    """The cell's worker ended before returning (killed, crashed, its node gone)."""

    reason: str


Ended = tuple[Hashable, "CellOutcome | Lost"]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers(threads: int) -> int:
    """One worker per ``threads`` cores: the machine full, no core shared."""
    return max(1, usable_cores() // threads)


class Executor:
    """The interface the runner drives; a context manager that starts and stops the workers."""

    name = ""
    slots = 1

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        raise NotImplementedError

    def submit(self, key: Hashable, cfg: RunConfig) -> None:
        raise NotImplementedError

    def wait(self) -> list[Ended]:
        """Block until at least one submitted cell has ended; return every end seen."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class SerialExecutor(Executor):
    """One cell at a time, in this process: the reference the others are tested against."""

    name = "serial"

    def __init__(self, threads: int):
        self.threads = threads
        self.queued: list[tuple[Hashable, RunConfig]] = []

    def describe(self) -> str:
        return f"serial: one run at a time in this process × {self.threads} thread{'s' * (self.threads != 1)}"

    def submit(self, key: Hashable, cfg: RunConfig) -> None:
        self.queued.append((key, cfg))

    def wait(self) -> list[Ended]:
        key, cfg = self.queued.pop(0)
        return [(key, attempt_cell(cfg, self.threads))]


# ---------------------------------------------------------------- local: a process pool


def _worker_main(conn: Connection, threads: int) -> None:
    """A pool process: run the cells the driver sends, one at a time, until told to stop (None)
    or until the driver is gone (its end of the pipe closes)."""
    # Ctrl-C reaches the whole process group: the driver stops the workers itself, so a
    # worker does not die mid-send with a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        key, cfg = message
        outcome = attempt_cell(cfg, threads)
        try:
            conn.send((key, outcome))
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    key: Hashable | None = None


def death_text(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}" if exitcode is not None else "stopped answering"


class LocalExecutor(Executor):
    """``workers`` processes on this machine, each with ``threads`` PyTorch threads, each running
    one cell at a time. A process that dies takes only its own cell with it (a plain
    ``ProcessPoolExecutor`` breaks the whole pool): it is replaced for the next cell."""

    name = "local"

    def __init__(self, workers: int, threads: int):
        import multiprocessing

        self.slots = workers
        self.threads = threads
        # spawn, not fork: a fresh interpreter whose torch loads after THREAD_ENV is set, and
        # no copy of the driver's threads or locks.
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[_Worker] = []
        self.started = 0

    def describe(self) -> str:
        return (f"local: {self.slots} worker process{'es' * (self.slots != 1)} × {self.threads} "
                f"thread{'s' * (self.threads != 1)}")

    def _start_worker(self) -> _Worker:
        parent, child = self.context.Pipe()
        self.started += 1
        process = self.context.Process(target=_worker_main, args=(child, self.threads), daemon=True,
                                       name=f"tinycl-grid-worker-{self.started}")
        # The child inherits the environment at start: its OpenMP / MKL pools are sized from it.
        saved = {name: os.environ.get(name) for name in THREAD_ENV}
        os.environ.update({name: str(self.threads) for name in THREAD_ENV})
        try:
            process.start()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        child.close()  # the driver keeps one end: EOF on it means the worker is gone
        worker = _Worker(process, parent)
        self.workers.append(worker)
        return worker

    def submit(self, key: Hashable, cfg: RunConfig) -> None:
        idle = [w for w in self.workers if w.key is None]
        worker = idle[0] if idle else self._start_worker()
        worker.key = key
        try:
            worker.conn.send((key, cfg))
        except (BrokenPipeError, OSError):
            pass  # died while idle: wait() sees its sentinel and reports the cell lost

    def wait(self) -> list[Ended]:
        from multiprocessing.connection import wait

        busy = [w for w in self.workers if w.key is not None]
        ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
        ended: list[Ended] = []
        for worker in busy:
            if worker.conn not in ready and worker.process.sentinel not in ready:
                continue
            key, worker.key = worker.key, None
            try:
                if worker.conn.poll():
                    ended.append(worker.conn.recv())
                    continue
            except (EOFError, OSError):
                pass  # the pipe closed without a result: the worker died mid-cell
            worker.process.join(timeout=5)
            ended.append((key, Lost(f"worker process {worker.process.pid} {death_text(worker.process.exitcode)}")))
            self._discard(worker)
        return ended

    def _discard(self, worker: _Worker) -> None:
        worker.conn.close()
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)
        self.workers.remove(worker)

    def close(self) -> None:
        for worker in self.workers:
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for worker in list(self.workers):
            # An idle worker exits at once; one still in a cell (the grid was interrupted) is stopped.
            worker.process.join(timeout=0 if worker.key is not None else 10)
            self._discard(worker)


# ---------------------------------------------------------------- ray: tasks on a cluster


class RayExecutor(Executor):
    """Each cell a Ray task needing ``threads`` CPUs. With ``address`` on an existing cluster
    (every node with tinycl installed, its own TINYCL_CACHE); without, on a Ray instance this
    process starts on 127.0.0.1 and stops at the end (``tinycl.grid.ray_support``).
    ``workers`` caps the cells in flight (default: the cluster's CPUs / ``threads``)."""

    name = "ray"

    def __init__(self, address: str | None, workers: int | None, threads: int):
        from tinycl.grid import ray_support

        self.address = address
        self.threads = threads
        self.local: ray_support.LocalRay | None = None
        if address is None:
            cpus = (workers or default_workers(threads)) * threads
            self.local = ray_support.start_local_ray(cpus)
        else:
            ray_support.connect(address)
        import ray

        self.ray = ray
        self.refs: dict = {}
        try:
            self.cpus = int(ray.cluster_resources().get("CPU", 0))
            if self.cpus < threads:
                raise TinyclError(f"the Ray cluster has {self.cpus} CPUs: a run with --threads {threads} would never "
                                  "be scheduled")
        except BaseException:
            self.close()
            raise
        self.slots = workers or max(1, self.cpus // threads)
        self.task = ray.remote(attempt_cell).options(num_cpus=threads, max_retries=0)

    def describe(self) -> str:
        where = "a local Ray instance on 127.0.0.1" if self.local else f"the Ray cluster at {self.address}"
        return (f"ray: {where}, {self.cpus} CPU{'s' * (self.cpus != 1)}, {self.slots} run{'s' * (self.slots != 1)} "
                f"at a time × {self.threads} thread{'s' * (self.threads != 1)}")

    def submit(self, key: Hashable, cfg: RunConfig) -> None:
        self.refs[self.task.remote(cfg, self.threads)] = key

    def wait(self) -> list[Ended]:
        from ray import exceptions

        done: list = []
        while not done:  # short waits: Ctrl-C stays responsive
            done, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=1.0)
        ended: list[Ended] = []
        for ref in done:
            key = self.refs.pop(ref)
            try:
                ended.append((key, self.ray.get(ref)))
            except exceptions.RayTaskError as exc:
                # attempt_cell catches what a run raises: this is Ray failing to run it at all
                # (e.g. tinycl missing or of another version on that node).
                ended.append((key, CellOutcome(error=" ".join(f"Ray task error: {exc.cause!r}".split()))))
            except exceptions.RayError as exc:  # WorkerCrashedError, NodeDiedError, ObjectLostError, ...
                # Its first sentence only: the rest points at worker logs in a session folder that a
                # local instance removes when it stops.
                first = str(exc).strip().splitlines()[0].split(". ")[0].rstrip(".") if str(exc).strip() else ""
                ended.append((key, Lost(f"{type(exc).__name__}: {first}".rstrip(": "))))
        return ended

    def close(self) -> None:
        for ref in list(self.refs):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - best effort: the cluster may be gone
                pass
        self.refs.clear()
        if self.local is not None:
            self.local.stop()
        else:
            self.ray.shutdown()  # disconnects this driver; the cluster stays up
