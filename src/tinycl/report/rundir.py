"""The run directory contract: summary.json, metrics.jsonl, config.toml (DESIGN.md).

Files are written atomically (temporary file, fsync, rename) so a crash never leaves a
half-written summary or config behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tinycl.fileio import named, write_atomic


def write_json(path: Path, obj: dict) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_run_outputs(out: Path, cfg, summary: dict, records: list[dict], *, metrics: bool = True,
                      config: bool = False, deployment: bytes | None = None) -> None:
    """A finished run's files in ``out``: metrics.jsonl (``metrics``: rewritten from ``records``;
    a live run appends it as it goes), config.toml (``config``), deployment.tcd (its encoded
    bytes), accuracy.png, accuracy_matrix.csv, then summary.json last: it marks the run finished.
    What ``tinycl run`` writes at its end and what a grid's driver writes from a worker's result."""
    from tinycl.config import dump_toml
    from tinycl.report.loggers import write_accuracy_matrix_csv
    from tinycl.report.plots import plot_accuracy_curves, run_title

    if metrics:
        MetricsLog(out / "metrics.jsonl", records).close()
    if config:
        write_atomic(out / "config.toml", dump_toml(cfg))
    if deployment is not None:
        from tinycl.export.deployment import FILE_NAME

        write_atomic(out / FILE_NAME, deployment)
    curve = ([r["batch"] for r in records], [r["accuracy"] for r in records])
    plot_accuracy_curves({cfg.train.strategy: curve}, out / "accuracy.png", run_title(cfg, summary))
    write_accuracy_matrix_csv(records, out / "accuracy_matrix.csv")
    write_json(out / "summary.json", summary)


class MetricsLog:
    """metrics.jsonl: one JSON line per evaluation, appended and flushed as the run goes.

    A resumed run starts it over from the records its checkpoint holds, so lines written
    after that checkpoint (or half-written when the run was killed) are dropped.
    """

    def __init__(self, path: Path, records: list[dict] | tuple = ()):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fh = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        for record in records:
            self.append(record)

    def append(self, record: dict) -> None:
        try:
            self.fh.write(json.dumps(record, sort_keys=True) + "\n")
            self.fh.flush()
        except OSError as exc:
            raise named(exc, self.path) from None

    def close(self) -> None:
        try:
            os.fsync(self.fh.fileno())
            self.fh.close()
        except OSError as exc:
            raise named(exc, self.path) from None


# ---------------------------------------------------------------- ownership and replacement

# renameat2(2) flag: atomically exchange two paths (Linux >= 3.15; glibc >= 2.28 exports it).
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step; False where the OS or file system cannot."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0


class RunDirectory:
    """One owner per run directory, and a finished run replaced all at once or not at all.

    - **Owner.** ``acquire`` takes an exclusive ``flock`` on ``.<name>.lock`` beside the
      directory for the run's whole life. The kernel drops it when the process ends, however it
      ends (SIGKILL included), so no stale lock survives; a second run is refused in one line
      naming the directory and the owner's pid. The lock file itself stays (deleting it would
      let two processes lock two different files of one name).
    - **Replacement.** A new run in a directory that holds a finished run (its ``summary.json``)
      is written into ``.<name>.staging`` beside it; ``commit`` swaps the two directories in one
      ``renameat2(RENAME_EXCHANGE)`` (or, where the file system lacks it, two renames that
      ``begin`` completes or undoes after a crash) and deletes the old run. A run that fails or
      is interrupted before ``commit`` leaves the previous run byte for byte as it was; its
      staging folder is the unfinished run (``--resume DIR`` continues it when it has a
      checkpoint). Elsewhere the run writes in place: there is nothing to protect.
    """

    def __init__(self, final: Path):
        self.final = Path(final)
        parent, name = self.final.parent, self.final.name
        self.lock_path = parent / f".{name}.lock"
        self.staging = parent / f".{name}.staging"
        self.old = parent / f".{name}.old"
        self.work = self.final
        self._fh = None

    def acquire(self) -> RunDirectory:
        import fcntl

        from tinycl.errors import TinyclError

        self.final.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.lock_path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown"
            fh.close()
            raise TinyclError(f"run directory {self.final} is in use by another tinycl run (pid {owner}); "
                              "wait for it or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing drops the flock
            self._fh = None

    def __enter__(self) -> RunDirectory:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _recover(self) -> None:
        """Finish or undo a two-rename swap a crash interrupted."""
        import shutil

        if self.old.exists():
            if not self.final.exists():
                os.replace(self.old, self.final)  # the new run never arrived: the old one is back
            else:
                shutil.rmtree(self.old)  # the new run arrived: the old one was on its way out

    def in_progress(self) -> Path | None:
        """The staging folder when it holds an interrupted replacement run (a config.toml)."""
        return self.staging if (self.staging / "config.toml").is_file() else None

    def begin(self, resuming: bool = False) -> Path:
        """Choose where this run writes (``self.work``): the staging folder when it replaces a
        finished run or resumes such a replacement, the directory itself otherwise."""
        import shutil

        self._recover()
        if resuming:
            self.work = self.in_progress() or self.final
        elif (self.final / "summary.json").is_file():
            if self.staging.exists():
                shutil.rmtree(self.staging)
            self.staging.mkdir()
            self.work = self.staging
        else:
            self.work = self.final  # created by the first file written into it
        return self.work

    def abandon(self, keep: bool) -> None:
        """A run that failed: its staging folder goes unless ``keep`` (it can be resumed)."""
        import shutil

        if self.work == self.staging and not keep and self.staging.exists():
            shutil.rmtree(self.staging)

    def commit(self) -> None:
        """Make the finished run in ``work`` the directory's content (no-op when in place)."""
        import shutil

        if self.work == self.final:
            return
        if _exchange(self.work, self.final):
            shutil.rmtree(self.work)  # now the old run
        else:
            os.replace(self.final, self.old)
            os.replace(self.work, self.final)
            shutil.rmtree(self.old)
        self.work = self.final
