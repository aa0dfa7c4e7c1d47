"""The run directory contract: summary.json, metrics.jsonl, config.toml (DESIGN.md).

Files are written atomically (temporary file, fsync, rename) so a crash never leaves a
half-written summary or config behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tinycl.fileio import write_atomic


def write_json(path: Path, obj: dict) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


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
        self.fh.write(json.dumps(record, sort_keys=True) + "\n")
        self.fh.flush()

    def close(self) -> None:
        os.fsync(self.fh.fileno())
        self.fh.close()
