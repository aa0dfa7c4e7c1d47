"""A CL stream as the learner consumes it: experiences decoded one at a time, the test set in
chunks. In-memory ImageSets (synthetic, arrays, folders) and real CORe50 (decoded from disk,
bounded memory) look the same from here on."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from tinycl.data.base import ImageSet
from tinycl.data.protocols import build_stream, build_user_stream
from tinycl.errors import TinyclError


@dataclass
class StreamSource:
    num_classes: int
    res: int
    batch_sizes: list[int]
    batch: Callable[[int], tuple[np.ndarray, np.ndarray]]  # experience i -> (uint8 NHWC, int64 labels)
    test_chunks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
    train_images: int
    test_images: int
    note: str | None = None

    @property
    def num_batches(self) -> int:
        return len(self.batch_sizes)


def check_experience(images: np.ndarray, labels: np.ndarray, res: int, num_classes: int, where: str) -> None:
    """The stream boundary: uint8 [n, res, res, 3] images with n labels in 0..num_classes-1."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        kind = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
        raise TinyclError(f"{where}: images must be uint8, got {kind}")
    if images.ndim != 4 or images.shape[1:] != (res, res, 3):
        raise TinyclError(f"{where}: images must have shape [n, {res}, {res}, 3], got {list(images.shape)}")
    is_array = isinstance(labels, np.ndarray)
    if not is_array or labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        got = f"{labels.dtype} {list(labels.shape)}" if isinstance(labels, np.ndarray) else type(labels).__name__
        raise TinyclError(f"{where}: expected {len(images)} integer labels, got {got}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels[(labels < 0) | (labels >= num_classes)][0])
        raise TinyclError(f"{where}: label {bad} is outside the model's classes 0..{num_classes - 1}")


def checked(source: StreamSource) -> StreamSource:
    """``source`` with every experience and test chunk checked at the stream boundary."""
    def batch(i: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = source.batch(i)
        check_experience(images, labels, source.res, source.num_classes, f"training batch {i}")
        return images, labels

    def test_chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for k, (images, labels) in enumerate(source.test_chunks()):
            check_experience(images, labels, source.res, source.num_classes, f"test chunk {k}")
            yield images, labels

    return dataclasses.replace(source, batch=batch, test_chunks=test_chunks)


def category_labels(images: ImageSet, objects_per_category: int) -> ImageSet:
    """The same images labelled by category: CORe50's ``label // 5``."""
    return ImageSet(images.images, images.objects // objects_per_category, images.sessions, images.objects,
                    images.frames)


def from_imagesets(train: ImageSet, test: ImageSet, scenario: str, run: int, num_classes: int,
                   objects_per_category: int | None, joint: bool, chunk: int = 1024,
                   user: tuple[int, int] | None = None) -> StreamSource:
    """A stream over in-memory sets: the benchmark's protocol, or (``user`` = (classes per task,
    batches)) the user-data rules of ``build_user_stream``, whose note the source carries."""
    note = None
    if user is None:
        stream = build_stream(train, scenario, run, objects_per_category)
    else:
        stream, note = build_user_stream(train, scenario, run, *user)
    index = [e.sample_indices for e in stream]
    if joint:
        index = [np.concatenate(index)]

    def batch(i: int) -> tuple[np.ndarray, np.ndarray]:
        return train.images[index[i]], train.labels[index[i]]

    def test_chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(test), chunk):
            yield test.images[start : start + chunk], test.labels[start : start + chunk]

    unseen = sorted(set(np.unique(test.labels).tolist()) - set(np.unique(train.labels).tolist()))
    if unseen:
        shown = ", ".join(map(str, unseen[:10])) + (", ..." if len(unseen) > 10 else "")
        extra = f"test labels never seen in training: {shown} ({len(unseen)} classes count as errors)"
        note = f"{note}; {extra}" if note else extra
    return StreamSource(num_classes, train.res, [len(i) for i in index], batch, test_chunks,
                        len(train), len(test), note)


def from_core50(root: str, scenario: str, run: int, joint: bool, labels: str = "object",
                chunk: int = 256) -> StreamSource:
    """Real CORe50 from its official layout; images are decoded batch by batch."""
    from tinycl.data.core50 import Core50Layout, iter_images, load_core50_protocol

    if joint:
        raise TinyclError("--strategy joint is not available on core50: it would hold every latent in memory")
    layout = Core50Layout.detect(root)
    proto = load_core50_protocol(layout, scenario, run, labels=labels, reduced_test=True)

    def batch(i: int) -> tuple[np.ndarray, np.ndarray]:
        parts = list(iter_images(layout, proto.train_batches[i], chunk=chunk))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def test_chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield from iter_images(layout, proto.test, chunk=chunk)

    return StreamSource(proto.num_classes, proto.res, [len(b) for b in proto.train_batches], batch,
                        test_chunks, sum(len(b) for b in proto.train_batches), len(proto.test), proto.note)


def resized(source: StreamSource, res: int) -> StreamSource:
    """``source`` with every image scaled to ``res`` x ``res`` (``--resize``), noted."""
    from tinycl.data.base import resize_images

    if source.res == res:
        return source

    def batch(i: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = source.batch(i)
        return resize_images(images, res), labels

    def test_chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for images, labels in source.test_chunks():
            yield resize_images(images, res), labels

    note = f"images resized from {source.res}x{source.res} to {res}x{res} (--resize, bilinear)"
    return dataclasses.replace(source, res=res, batch=batch, test_chunks=test_chunks,
                               note=f"{source.note}; {note}" if source.note else note)
