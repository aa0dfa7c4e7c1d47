"""The Python run, rebuilt from ``RUN_DIR/config.toml`` and traced from the outside.

``trace_python_run`` runs ``tinycl.train.experiment.run_experiment`` itself (so the run is
assembled exactly as ``tinycl run`` assembles it: data, pretrained model, stages, sparse
update, INT8 frozen stage calibrated on batch 0, Q-bit quantizer, memory, learner) with two of
its classes swapped for recording subclasses while it runs:

- ``LatentEncoder``: kept, for the INT8 frozen stage and the latent quantizer the C program
  is generated from;
- ``Learner``: at construction the initial adaptive stage is lowered for the C program
  (``lower_trainable``); during ``train_experience`` every draw and result the C program must
  repeat is recorded through wrappers set on the learner's own objects: the loop generator's
  permutations, each step's loss and batch labels (``loss_fn``), replay slots
  (``memory.get``), memory writes (``memory._write``), random channel choices
  (``selector.next``), the experience's packed codes, the memory after the update and the
  adaptive state after the first experiences. After the requested experiences the run is
  stopped (a private exception), with the test predictions of that moment.

Nothing of the learner's code is replaced: every recorded value is what it computed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tinycl.errors import TinyclError
from tinycl.export.train_lower import TrainableStage, lower_trainable


class _StopRun(Exception):
    """Raised inside the traced run once it has done what was asked."""


@dataclass
class StepTrace:
    experience: int
    loss: float
    labels: np.ndarray  # uint8 [batch]
    slots: np.ndarray  # int64 replay slots, [] without replays
    channels: list[np.ndarray]  # the random selections drawn for this step, in draw order


@dataclass
class PythonTrace:
    """What the traced run recorded."""

    stage: TrainableStage | None = None
    int_stage: object = None  # tinycl.quant.IntFrozenStage
    quantizer: object = None  # tinycl.quant.LatentQuantizer
    latent_shape: tuple[int, int, int] = (0, 0, 0)
    num_classes: int = 0
    steps: list[StepTrace] = field(default_factory=list)
    permutations: list[np.ndarray] = field(default_factory=list)
    memory_writes: list[np.ndarray] = field(default_factory=list)  # per experience
    memory_states: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (labels, rows)
    codes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (labels, packed rows)
    params: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # after experience i
    experiences: int = 0  # experiences trained
    test_logits: np.ndarray | None = None  # after the last traced experience, on the first test images
    test_predictions: np.ndarray | None = None
    inference_ops: list = field(default_factory=list)  # the initial adaptive stage, lowered for inference
    adaptive: nn.Module | None = None  # a copy of the initial adaptive stage (sparse modules included)
    test_latents: torch.Tensor | None = None  # the run's test latents (its encoder's), as evaluated
    record_end: Callable[[], None] | None = None  # records the end state when the stream ran out first


def _numpy_state(module: nn.Module) -> dict[str, np.ndarray]:
    return {key: value.detach().cpu().numpy().copy() for key, value in module.state_dict().items()}


def tracing_classes(trace: PythonTrace, experiences: int, test_images: int, enough: Callable[[PythonTrace], bool],
                    param_experiences: int, lr_layer: int):
    """(LatentEncoder subclass, Learner subclass) recording into ``trace``; the run stops
    before experience ``experiences`` or as soon as ``enough(trace)`` holds."""
    from tinycl.export.deployment import lower_adaptive
    from tinycl.export.reference import module_logits
    from tinycl.train.encoder import LatentEncoder
    from tinycl.train.learner import Learner

    class RecordingEncoder(LatentEncoder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trace.int_stage, trace.quantizer = self.stage, self.quantizer
            trace.latent_shape = tuple(int(v) for v in self.latent_shape)

    class TracingLearner(Learner):
        def __init__(self, adaptive, memory, **kwargs):
            super().__init__(adaptive, memory, **kwargs)
            trace.num_classes = self.num_classes
            trace.stage = lower_trainable(self.adaptive, trace.latent_shape, lr_layer + 1, self.num_classes)
            trace.inference_ops = lower_adaptive(self.adaptive)
            trace.adaptive = copy.deepcopy(self.adaptive)  # the initial stage (benchmarks time PyTorch on it)
            self._pending_slots: np.ndarray = np.zeros(0, np.int64)
            self._pending_channels: list[np.ndarray] = []
            self._writes: list[int] = []
            self._test_latents: torch.Tensor | None = None
            self._index = 0
            self._wrap()
            trace.record_end = self._record_end
            if experiences == 0:
                raise _StopRun

        def _wrap(self) -> None:
            rng, memory = self.rng, self.memory
            permutation, get, write = rng.permutation, memory.get, memory._write

            def recording_permutation(n: int) -> np.ndarray:
                values = permutation(n)
                trace.permutations.append(values.copy())
                return values

            def recording_get(slots: torch.Tensor):
                self._pending_slots = slots.numpy().astype(np.int64).copy()
                return get(slots)

            def recording_write(slots, rows, labels) -> None:
                self._writes.extend(np.asarray(slots, np.int64).tolist())
                write(slots, rows, labels)

            rng.permutation = recording_permutation  # type: ignore[method-assign]
            memory.get = recording_get  # type: ignore[method-assign]
            memory._write = recording_write  # type: ignore[method-assign]
            loss_fn = self.loss_fn

            def recording_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                loss = loss_fn(logits, labels)
                trace.steps.append(StepTrace(self._index, float(loss.detach()), labels.numpy().astype(np.uint8),
                                             self._pending_slots, self._pending_channels))
                self._pending_slots, self._pending_channels = np.zeros(0, np.int64), []
                return loss

            self.loss_fn = recording_loss  # type: ignore[assignment]
            for module in self.adaptive.modules():
                selector = getattr(module, "selector", None)
                if selector is not None and selector.policy == "random":
                    selector.next = self._recording_next(selector.next)

        def _recording_next(self, next_channels):
            def recording_next():
                channels = next_channels()
                if channels is not None:
                    self._pending_channels.append(channels.numpy().astype(np.int64).copy())
                return channels

            return recording_next

        def train_experience(self, latents, labels, index, memory_items=None):
            if index >= experiences or enough(trace):
                self._finish()
            self._index = index
            if memory_items is None or memory_items.dtype != torch.uint8:
                raise TinyclError("the traced run holds no Q-bit codes: --train needs --bits 1..8")
            trace.codes.append((labels.numpy().astype(np.uint8), self.memory.codec.encode(memory_items).numpy()))
            self._writes = []
            stats = super().train_experience(latents, labels, index, memory_items)
            trace.memory_writes.append(np.asarray(self._writes, np.int64))
            size = len(self.memory)
            trace.memory_states.append((self.memory.labels[:size].numpy().copy(),
                                        self.memory.rows[:size].numpy().copy()))
            if index < param_experiences:
                trace.params[index] = _numpy_state(self.adaptive)
            trace.experiences = index + 1
            return stats

        def predict(self, latents, chunk=1024):
            self._test_latents = trace.test_latents = latents
            return super().predict(latents, chunk)

        def _record_end(self) -> None:
            """The state after the last traced experience and the test predictions then."""
            if trace.experiences:
                trace.params[trace.experiences - 1] = _numpy_state(self.adaptive)
            if self._test_latents is not None and test_images:
                logits = module_logits(self.adaptive, self._test_latents[:test_images])
                trace.test_logits = logits.numpy().astype(np.float32)
                trace.test_predictions = logits.argmax(1).numpy()

        def _finish(self) -> None:
            self._record_end()
            raise _StopRun

    return RecordingEncoder, TracingLearner


@contextmanager
def _swapped(encoder_class, learner_class):
    """``run_experiment`` with the two recording classes in place of its own, restored after."""
    import tinycl.train.experiment as experiment

    saved = experiment.LatentEncoder, experiment.Learner
    experiment.LatentEncoder, experiment.Learner = encoder_class, learner_class
    try:
        yield
    finally:
        experiment.LatentEncoder, experiment.Learner = saved


def trace_python_run(cfg, experiences: int, test_images: int, min_steps: int = 0, min_experiences: int = 0,
                     param_experiences: int = 3) -> PythonTrace:
    """Rerun ``cfg`` (a ``RunConfig``) traced. ``experiences``: stop before that batch (0: build
    the stages only). With ``min_steps`` / ``min_experiences`` it stops earlier, as soon as it
    has traced at least that many of both. Returns the trace (stage, frozen stage, quantizer,
    records); ``trace.experiences`` says how many it trained."""
    from tinycl.train.experiment import run_experiment

    cfg = copy.deepcopy(cfg)
    cfg.eval.fidelity = False  # not needed, and it would run after the last batch

    def enough(t: PythonTrace) -> bool:
        return bool(min_steps or min_experiences) and len(t.steps) >= min_steps and t.experiences >= min_experiences

    trace = PythonTrace()
    encoder_class, learner_class = tracing_classes(trace, experiences, test_images, enough, param_experiences,
                                                   cfg.model.lr_layer)
    try:
        with _swapped(encoder_class, learner_class):
            run_experiment(cfg)
        if trace.record_end is not None:  # the whole stream ran: its end is the trace's end
            trace.record_end()
    except _StopRun:
        pass
    if trace.stage is None:
        raise TinyclError("the run did not reach its learner (no adaptive stage to export)")
    return trace
