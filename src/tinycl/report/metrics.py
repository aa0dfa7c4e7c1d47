"""Continual-learning metrics: accuracy, per-class accuracy, average accuracy, forgetting."""

from __future__ import annotations

import numpy as np


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predictions == labels)) if len(labels) else 0.0


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    """Accuracy on each class's test samples; None for classes absent from the test set."""
    total = np.bincount(labels, minlength=num_classes)
    correct = np.bincount(labels[predictions == labels], minlength=num_classes)
    return [float(c / t) if t else None for c, t in zip(correct, total, strict=True)]


def average_accuracy(history: list[float]) -> float:
    """Mean test accuracy over all evaluations of the stream (CORe50's 'average accuracy')."""
    return float(np.mean(history)) if history else 0.0


def forgetting(per_class_history: list[list[float | None]]) -> float:
    """Mean over classes of (best earlier accuracy - final accuracy), floored at 0.

    Only classes evaluated at least twice with a non-zero best earlier accuracy count, i.e.
    classes that were learned at some point (Chaudhry et al. 2018).
    """
    if len(per_class_history) < 2:
        return 0.0
    final = per_class_history[-1]
    drops = []
    for c, last in enumerate(final):
        if last is None:
            continue
        earlier = [h[c] for h in per_class_history[:-1] if h[c] is not None]
        if earlier and max(earlier) > 0:
            drops.append(max(0.0, max(earlier) - last))
    return float(np.mean(drops)) if drops else 0.0


class SeedAccuracies:
    """Mixin for a table row holding one final accuracy per seed in ``accuracies``."""

    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        """Population standard deviation over the seeds; NaN for a single seed, whose spread is
        unknown rather than zero."""
        if len(self.accuracies) < 2:
            return float("nan")
        return float(np.std(self.accuracies))

    def accuracy_text(self) -> str:
        """``mean ± std`` in percent, ``mean ± n/a`` for a single seed: tables never show a
        ``± 0.00`` that one run cannot support."""
        spread = "n/a" if len(self.accuracies) < 2 else f"{100 * self.std:.2f}"
        return f"{100 * self.mean:.2f} ± {spread}"
