"""A finished run directory as the export reads it: its deployment, config and test images.

``tinycl run`` saves ``RUN_DIR/deployment.tcd`` when the run's frozen stage is INT8 with
Q-bit latents (``tinycl.train.experiment.deployment_of``) and says in ``summary.json``
(``deployable``, ``not_deployable_because``) when it did not; the refusals here repeat that
reason in one line. The verification images are the run's own benchmark's test images,
rebuilt from ``RUN_DIR/config.toml`` the way the run loaded them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinycl.errors import TinyclError
from tinycl.export.deployment import FILE_NAME, Deployment, load_deployment

CONFIG_FILE = "config.toml"
SUMMARY_FILE = "summary.json"


@dataclass
class RunDirectory:
    path: Path
    deployment: Deployment
    summary: dict  # {} when summary.json is absent or unreadable

    @property
    def replays(self) -> int | None:
        """The replay memory's capacity N (``--replays``), from the summary."""
        value = self.summary.get("replays")
        return int(value) if isinstance(value, int) else None


def read_summary(run_dir: Path) -> dict:
    try:
        data = json.loads((run_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_run(run_dir: Path) -> RunDirectory:
    """The run's deployment; one ``TinyclError`` line saying why when there is none."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise TinyclError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise TinyclError(f"{run_dir} is not a run directory (not a folder)")
    summary = read_summary(run_dir)
    path = run_dir / FILE_NAME
    if not path.exists():
        if not summary:
            raise TinyclError(f"{run_dir} holds no {FILE_NAME} and no {SUMMARY_FILE}: not a finished tinycl run")
        reason = summary.get("not_deployable_because")
        if summary.get("deployable") is False and reason:
            raise TinyclError(f"{run_dir} has no {FILE_NAME}: the run is not deployable: {reason}")
        if "deployable" not in summary:
            raise TinyclError(f"{run_dir} has no {FILE_NAME}: it was written by a tinycl that did not save "
                              f"deployments; rerun it with --config {run_dir / CONFIG_FILE}")
        raise TinyclError(f"{run_dir} has no {FILE_NAME} although its summary says it is deployable "
                          "(deleted or moved?)")
    return RunDirectory(run_dir, load_deployment(path), summary)


def verification_frames(run_dir: Path, count: int, res: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The first ``count`` test images of the run's benchmark as camera frames (uint8 [N, H,
    W, 3]), their labels, and a line saying where they come from.

    The data source is rebuilt from ``RUN_DIR/config.toml`` with the run's own loader
    (``tinycl.train.experiment.load_data``); test images come in the order the run
    evaluated them. Fewer than ``count`` when the test set is smaller.
    """
    from tinycl.config import from_dict, load_toml
    from tinycl.train.experiment import load_data

    config_path = Path(run_dir) / CONFIG_FILE
    if not config_path.is_file():
        raise TinyclError(f"{run_dir} has no {CONFIG_FILE}: --verify rebuilds the run's test images from it")
    cfg = from_dict(load_toml(config_path), source=str(config_path))
    if cfg.model.res != res:
        raise TinyclError(f"{config_path} says res {cfg.model.res}, the deployment takes {res} x {res} frames")
    source = load_data(cfg).source
    images, labels, have = [], [], 0
    for chunk_images, chunk_labels in source.test_chunks():
        images.append(chunk_images[: count - have])
        labels.append(chunk_labels[: count - have])
        have += len(images[-1])
        if have >= count:
            break
    if not have:
        raise TinyclError(f"the run's benchmark ({cfg.data.benchmark}) has no test images")
    frames = np.ascontiguousarray(np.concatenate(images)).astype(np.uint8, copy=False)
    where = f"the first {have} of {source.test_images} test images of {cfg.data.benchmark} ({cfg.data.scenario})"
    return frames, np.concatenate(labels).astype(np.int64), where
