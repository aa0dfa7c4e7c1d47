"""What a grid is about to do, printed before it starts: cells, runs, runs already finished,
the executor and its parallelism, and an estimate of the time left."""

from __future__ import annotations

import json
import math
from pathlib import Path


def duration_text(seconds: float) -> str:
    """``45 s``, ``2 min 30 s``, ``13 min``, ``3 h 05 min`` (rounded half up)."""
    whole = int(seconds + 0.5)
    if whole < 90:
        return f"{whole} s"
    if whole < 600:
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = int(seconds / 60 + 0.5)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def finished_seconds(out: Path) -> list[float]:
    """``wall_seconds`` of every finished run (a summary.json) directly under ``out``."""
    seconds = []
    for path in sorted(out.glob("*/summary.json")):
        try:
            value = json.loads(path.read_text()).get("wall_seconds")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            continue  # a damaged summary gives no timing; the sweep reports it when it reads it
        if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
            seconds.append(float(value))
    return seconds


def plan_text(cells: int, run_dirs: list[Path], out: Path, *, skip_finished: bool, detail: str = "",
              executor: str = "", parallel: int = 1) -> str:
    """What a grid is about to do: cells, runs, runs already finished (skipped, or run again
    with --no-resume), where they run (``executor``, e.g. ``local: 2 workers × 1 thread``) and
    the time left, estimated from the mean wall time of the runs already finished in ``out``
    (any cell: runs with more replays take longer, so it is rough) spread over ``parallel``
    runs at a time. ``detail`` goes in parentheses after the cell count."""
    finished = sum((d / "summary.json").is_file() for d in run_dirs)
    todo = len(run_dirs) - finished if skip_finished else len(run_dirs)
    runs = len(run_dirs)
    text = (f"plan: {cells} cell{'s' * (cells != 1)}{f' ({detail})' if detail else ''}, {runs} "
            f"run{'s' * (runs != 1)} in {out}; {finished} already finished")
    text += f" (skipped), {todo} to run" if skip_finished else f", run again (--no-resume): {todo} to run"
    if todo == 0:
        return text + "; nothing to run"
    if executor:
        text += f" on {executor}"
    seconds = finished_seconds(out)
    if not seconds:
        return text + "; estimated time: no estimate yet (no finished run in this folder)"
    mean = sum(seconds) / len(seconds)
    # Runs that share cores slow each other down a little: the estimate is a lower bound there.
    at_once = min(parallel, todo)
    spread = f", {at_once} at a time" if at_once > 1 else ""
    return (text + f"; estimated time: ~{duration_text(todo * mean / at_once)} ({duration_text(mean)} per run, "
            f"the mean wall time of {len(seconds)} finished run{'s' * (len(seconds) != 1)} here{spread})")
