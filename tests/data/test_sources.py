"""The stream boundary: every experience and test chunk is checked before it reaches the model."""

import numpy as np
import pytest

from tinycl.data.sources import StreamSource, checked
from tinycl.errors import TinyclError


def source_of(images, labels, num_classes=4, res=8):
    return checked(StreamSource(num_classes, res, [len(images)], lambda i: (images, labels),
                                lambda: iter([(images, labels)]), len(images), len(images)))


def good():
    return np.zeros((3, 8, 8, 3), np.uint8), np.array([0, 1, 3])


def test_good_batch_passes_unchanged():
    images, labels = good()
    x, y = source_of(images, labels).batch(0)
    assert x is images and y is labels
    assert len(list(source_of(images, labels).test_chunks())) == 1


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((3, 8, 8, 3), np.float32), np.array([0, 1, 3]), "training batch 0: images must be uint8, got float32"),
    (np.zeros((3, 8, 7, 3), np.uint8), np.array([0, 1, 3]),
     r"training batch 0: images must have shape \[n, 8, 8, 3\], got \[3, 8, 7, 3\]"),
    (np.zeros((3, 8, 8, 3), np.uint8), np.array([0, 1]), r"expected 3 integer labels, got int64 \[2\]"),
    (np.zeros((3, 8, 8, 3), np.uint8), np.array([0.0, 1.0, 2.0]), "expected 3 integer labels, got float64"),
    (np.zeros((3, 8, 8, 3), np.uint8), np.array([0, 4, 1]), r"label 4 is outside the model's classes 0..3"),
    (np.zeros((3, 8, 8, 3), np.uint8), np.array([0, -1, 1]), r"label -1 is outside the model's classes 0..3"),
])
def test_bad_batches_are_refused(images, labels, message):
    with pytest.raises(TinyclError, match=message):
        source_of(images, labels).batch(0)
    with pytest.raises(TinyclError, match=message.replace("training batch 0", "test chunk 0")):
        list(source_of(images, labels).test_chunks())
