"""Loggers users already have: TensorBoard scalars and a CSV of the accuracy matrix.

Both read the records ``run_experiment`` passes to ``Events.on_eval`` (one per evaluated batch:
``batch``, ``accuracy``, ``classes_seen``, ``new_samples``, ``replays_in_memory``, ``loss``,
``steps``, ``wall_seconds_batch``, ``per_class``), the same lines as ``metrics.jsonl``, which
stays the run's record of truth.

TensorBoard scalars, one point per evaluated batch (x = the batch, i.e. the experience index):

- ``Top1_Acc_Stream/eval_phase/test_stream/Task000``: test accuracy in [0, 1], under the tag
  Avalanche's ``accuracy_metrics(stream=True)`` gives the same metric, so tinycl and Avalanche
  runs overlay in one TensorBoard;
- ``Loss/train``: mean training loss over the batch's steps;
- ``Forgetting/per_class``: forgetting so far, the mean over classes of best earlier minus current
  accuracy (Chaudhry et al. 2018; the last point is summary.json's ``forgetting``);
- ``Memory/replays_in_memory``: replay slots used;
- ``Stream/classes_seen``, ``Stream/new_samples``: classes seen so far, new images in the batch;
- ``Time/batch_seconds``: wall time of the batch (training and evaluation).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from tinycl.errors import TinyclError
from tinycl.fileio import write_atomic

ACCURACY_TAG = "Top1_Acc_Stream/eval_phase/test_stream/Task000"
SCALARS = {  # tag -> record key, for the values logged as they are
    ACCURACY_TAG: "accuracy",
    "Loss/train": "loss",
    "Memory/replays_in_memory": "replays_in_memory",
    "Stream/classes_seen": "classes_seen",
    "Stream/new_samples": "new_samples",
    "Time/batch_seconds": "wall_seconds_batch",
}
FORGETTING_TAG = "Forgetting/per_class"
INSTALL_HINT = 'pip install -e ".[tensorboard]"'


def tensorboard_available() -> bool:
    """Whether the optional ``tensorboard`` package (the ``[tensorboard]`` extra) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLogger:
    """Writes each evaluated batch's record as TensorBoard scalars into ``log_dir``.

    Built before the run starts (a missing package is refused before any work); ``seed()`` takes
    the records of a resumed run's batches, then ``log(record)`` (or ``logger(record)``) each
    evaluated batch; ``close()`` at the end, or use it as a context manager.
    """

    def __init__(self, log_dir: str | Path) -> None:
        # torch.utils.tensorboard needs the tensorboard package; say how to get it, in one line.
        if not tensorboard_available():
            raise TinyclError(f"TensorBoard logging needs the tensorboard package: {INSTALL_HINT}")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise TinyclError(f"TensorBoard logging cannot load ({exc}): {INSTALL_HINT}") from None
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))
        # Best accuracy per class over the batches logged so far: forgetting in O(classes) per
        # batch, equal to metrics.forgetting() over the whole history (tested).
        self._best: dict[int, float] = {}

    def seed(self, earlier: Sequence[dict]) -> None:
        """Records of batches a resumed run logged before: they feed the forgetting history and
        are not written again."""
        for record in earlier:
            self._remember(record["per_class"])

    def log(self, record: dict) -> None:
        """Write one evaluated batch's scalars and flush them (one flush per CL batch, so that a
        TensorBoard open during the run shows each point as it comes)."""
        step = int(record["batch"])
        for tag, key in SCALARS.items():
            if record.get(key) is not None:
                self._writer.add_scalar(tag, float(record[key]), step)
        self._writer.add_scalar(FORGETTING_TAG, self._forgetting(record["per_class"]), step)
        self._remember(record["per_class"])
        self._writer.flush()

    def _forgetting(self, per_class: Sequence[float | None]) -> float:
        """metrics.forgetting(): mean over classes learned earlier (best > 0) of best - now."""
        drops = [max(0.0, self._best[c] - acc) for c, acc in enumerate(per_class)
                 if acc is not None and self._best.get(c, 0.0) > 0]
        return sum(drops) / len(drops) if drops else 0.0

    def _remember(self, per_class: Sequence[float | None]) -> None:
        for c, acc in enumerate(per_class):
            if acc is not None:
                self._best[c] = max(acc, self._best.get(c, acc))

    __call__ = log

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def accuracy_matrix_rows(records: Sequence[dict]) -> list[list[str]]:
    """The accuracy matrix as text cells: a header ``batch, class_0, ..., class_{C-1}``, then per
    evaluated batch its per-class test accuracy (``repr`` of the float, so it reads back
    exactly); empty where a class has no test images."""
    classes = max((len(r["per_class"]) for r in records), default=0)
    rows = [["batch", *(f"class_{c}" for c in range(classes))]]
    for r in records:
        cells = ["" if acc is None else repr(float(acc)) for acc in r["per_class"]]
        rows.append([str(int(r["batch"])), *cells, *([""] * (classes - len(cells)))])
    return rows


def write_accuracy_matrix_csv(records: Sequence[dict], path: str | Path) -> Path:
    """Write the accuracy matrix (rows: evaluated batches, columns: classes) as CSV, atomically."""
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(accuracy_matrix_rows(records))
    path = Path(path)
    write_atomic(path, buf.getvalue())
    return path
