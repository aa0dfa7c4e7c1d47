"""TensorBoard events read back with TensorBoard's own reader; the accuracy-matrix CSV parsed back."""

import csv
import os

import pytest

from tinycl.errors import TinyclError
from tinycl.report import loggers
from tinycl.report.loggers import TensorBoardLogger, write_accuracy_matrix_csv
from tinycl.report.metrics import forgetting

# Three evaluated batches of a 3-class stream; class 2 has no test images (None).
RECORDS = [
    {"batch": 0, "accuracy": 0.5, "classes_seen": 2, "new_samples": 20, "replays_in_memory": 20, "loss": 2.5,
     "steps": 1, "wall_seconds_batch": 0.25, "per_class": [1.0, 0.0, None]},
    {"batch": 1, "accuracy": 0.75, "classes_seen": 3, "new_samples": 10, "replays_in_memory": 30, "loss": 1.5,
     "steps": 2, "wall_seconds_batch": 0.5, "per_class": [0.5, 1.0, None]},
    {"batch": 3, "accuracy": 0.625, "classes_seen": 3, "new_samples": 10, "replays_in_memory": 30, "loss": 1.25,
     "steps": 2, "wall_seconds_batch": 0.125, "per_class": [0.25, 1.0, None]},
]


def tensorboard_or_skip():
    """The [test] extra installs tensorboard, so CI must have it; elsewhere its absence skips."""
    if not loggers.tensorboard_available():
        if os.environ.get("CI") == "true":
            pytest.fail('CI=true but tensorboard is not installed: pip install -e ".[test]"')
        pytest.skip("tensorboard not installed (pip install -e \".[tensorboard]\")")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator


def scalars(accumulator, tag):
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_tensorboard_events_read_back_with_tensorboards_reader(tmp_path):
    EventAccumulator = tensorboard_or_skip()
    with TensorBoardLogger(tmp_path / "tb") as logger:
        for record in RECORDS:
            logger(record)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {
        "Top1_Acc_Stream/eval_phase/test_stream/Task000", "Loss/train", "Forgetting/per_class",
        "Memory/replays_in_memory", "Stream/classes_seen", "Stream/new_samples", "Time/batch_seconds"}
    # Values are dyadic fractions: exact in the events' float32.
    assert scalars(events, "Top1_Acc_Stream/eval_phase/test_stream/Task000") == [(0, 0.5), (1, 0.75), (3, 0.625)]
    assert scalars(events, "Loss/train") == [(0, 2.5), (1, 1.5), (3, 1.25)]
    assert scalars(events, "Memory/replays_in_memory") == [(0, 20), (1, 30), (3, 30)]
    assert scalars(events, "Stream/classes_seen") == [(0, 2), (1, 3), (3, 3)]
    assert scalars(events, "Stream/new_samples") == [(0, 20), (1, 10), (3, 10)]
    assert scalars(events, "Time/batch_seconds") == [(0, 0.25), (1, 0.5), (3, 0.125)]
    # Forgetting so far (per class, best earlier - now; classes never above 0 before do not count):
    # batch 1: class 0 1.0 -> 0.5, class 1 not counted: 0.5; batch 3: class 0 1.0 -> 0.25, class 1
    # 1.0 -> 1.0: (0.75 + 0) / 2.
    assert scalars(events, "Forgetting/per_class") == [(0, 0.0), (1, 0.5), (3, 0.375)]
    assert 0.375 == forgetting([r["per_class"] for r in RECORDS])  # the summary's definition


def test_a_resumed_run_seeds_forgetting_without_writing_earlier_batches(tmp_path):
    EventAccumulator = tensorboard_or_skip()
    with TensorBoardLogger(tmp_path / "tb") as logger:
        logger.seed(RECORDS[:2])
        logger(RECORDS[2])
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert scalars(events, "Forgetting/per_class") == [(3, 0.375)]
    assert scalars(events, "Loss/train") == [(3, 1.25)]


def test_without_tensorboard_the_logger_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(loggers, "tensorboard_available", lambda: False)
    with pytest.raises(TinyclError) as exc:
        TensorBoardLogger(tmp_path / "tb")
    message = str(exc.value)
    assert 'pip install -e ".[tensorboard]"' in message and "\n" not in message
    assert not (tmp_path / "tb").exists()


def test_accuracy_matrix_csv_parses_back(tmp_path):
    path = write_accuracy_matrix_csv(RECORDS, tmp_path / "accuracy_matrix.csv")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["batch", "class_0", "class_1", "class_2"]
    assert [int(r[0]) for r in rows[1:]] == [0, 1, 3]
    matrix = [[float(c) if c else None for c in r[1:]] for r in rows[1:]]
    assert matrix == [r["per_class"] for r in RECORDS]  # exact round trip; empty = no test images


def test_accuracy_matrix_of_a_real_metrics_log_round_trips(tmp_path):
    # Thirds and fifths are not exact in binary: the CSV holds repr(), which reads back exactly.
    records = [{"batch": b, "per_class": [1 / 3, 2 / 15, None, 0.2 * b]} for b in range(4)]
    path = write_accuracy_matrix_csv(records, tmp_path / "m.csv")
    rows = list(csv.reader(path.open(newline="")))
    assert [[float(c) if c else None for c in r[1:]] for r in rows[1:]] == [r["per_class"] for r in records]


def test_forgetting_so_far_equals_the_summarys_definition_at_every_batch(tmp_path):
    EventAccumulator = tensorboard_or_skip()
    import random

    rng = random.Random(0)
    records = [{"batch": b, "accuracy": 0.5, "loss": 1.0, "per_class": [
        None if rng.random() < 0.2 else rng.choice([0.0, 0.125, 0.25, 0.5, 0.75, 1.0]) for _ in range(6)]}
        for b in range(25)]
    with TensorBoardLogger(tmp_path / "tb") as logger:
        for record in records:
            logger(record)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    logged = [value for _, value in scalars(events, "Forgetting/per_class")]
    expected = [forgetting([r["per_class"] for r in records[: i + 1]]) for i in range(len(records))]
    assert logged == pytest.approx(expected, abs=1e-7)  # float32 in the event file
