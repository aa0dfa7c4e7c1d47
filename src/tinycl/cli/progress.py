"""What a run shows while it works, on stderr: rich bars on a terminal, timestamped lines when
the output is a pipe or a file (one per evaluated batch, and the start, pace and end of every
phase), nothing with ``--quiet``."""

from __future__ import annotations

import sys
import time
from datetime import datetime

# Without a terminal, a phase prints at its start, at most every LINE_INTERVAL_S while it
# runs, and at its end; phases shorter than a second print only their start.
LINE_INTERVAL_S = 10.0


def clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Reporter:
    """Phases (data generation, pretraining, calibration, encoding) and the stream's batches."""

    def __init__(self, quiet: bool, stream=None):
        self.stream = stream or sys.stderr
        self.mode = "quiet" if quiet else ("bar" if self.stream.isatty() else "lines")
        self.started: dict[str, float] = {}
        self.last_line: dict[str, float] = {}
        self.progress = None
        self.tasks: dict[str, int] = {}
        self.first_batch: int | None = None  # a resumed stream's ETA counts only batches run here
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                     console=Console(file=self.stream), transient=False)

    def __enter__(self) -> Reporter:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def line(self, text: str) -> None:
        if self.mode == "lines":
            print(f"[{datetime.now():%H:%M:%S}] {text}", file=self.stream, flush=True)

    def phase(self, name: str, done: int, total: int, detail: str = "") -> None:
        """``done`` of ``total`` steps of phase ``name``; 0 starts it, ``total`` ends it."""
        now = time.monotonic()
        start = self.started.setdefault(name, now)
        if self.mode == "bar":
            assert self.progress is not None
            if name not in self.tasks:
                self.tasks[name] = self.progress.add_task(name, total=total, detail=detail)
            self.progress.update(self.tasks[name], completed=done, total=total, detail=detail)
            return
        elapsed = now - start
        if done == 0:
            self.line(f"{name}: started ({total} steps){'; ' + detail if detail else ''}")
        elif done >= total:
            if elapsed >= 1.0:
                self.line(f"{name}: done in {clock(elapsed)}{'; ' + detail if detail else ''}")
        elif now - self.last_line.get(name, start) >= LINE_INTERVAL_S:
            eta = elapsed / done * (total - done)
            self.line(f"{name}: {done}/{total}, elapsed {clock(elapsed)}, ETA {clock(eta)}"
                      f"{'; ' + detail if detail else ''}")
        else:
            return
        self.last_line[name] = now

    def batch(self, record: dict, num_batches: int) -> None:
        """One evaluated batch of the stream: batch, accuracy, elapsed, ETA."""
        name = "stream"
        done = record["batch"] + 1
        now = time.monotonic()
        start = self.started.setdefault(name, now - record.get("wall_seconds_batch", 0.0))
        if self.first_batch is None:
            self.first_batch = done - 1
        accuracy = f"acc {100 * record['accuracy']:.1f}%"
        if self.mode == "bar":
            self.phase(name, done, num_batches, accuracy)
            return
        elapsed = now - start
        eta = elapsed / max(1, done - self.first_batch) * (num_batches - done)
        self.line(f"batch {done - 1}/{num_batches - 1}: accuracy {100 * record['accuracy']:.2f}%, "
                  f"elapsed {clock(elapsed)}, ETA {clock(eta)}")
