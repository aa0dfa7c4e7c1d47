"""Bring your own data: arrays or an image folder, turned into the same ImageSets.

Arrays: an ``.npz`` with ``train_images`` (uint8 [N, H, W, 3]), ``train_labels`` and
``test_images``/``test_labels``; optional ``{train,test}_sessions`` (1-based) and
``{train,test}_objects``. Without objects, each label is one object; without sessions,
everything is session 1 (so NICv2 batches are whole classes).

Folder: ``ROOT/{train,test}/CLASS/*.png`` or ``ROOT/{train,test}/CLASS/SESSION/*.png``
(png/jpg/jpeg/bmp); classes are the sorted CLASS names, sessions the sorted SESSION names
numbered from 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinycl.data.base import ImageSet
from tinycl.errors import TinyclError
from tinycl.fileio import read_npz

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def from_arrays(images: np.ndarray, labels: np.ndarray, sessions: np.ndarray | None = None,
                objects: np.ndarray | None = None, res: int | None = None) -> ImageSet:
    """Validate user arrays and wrap them in an ImageSet."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise TinyclError(f"images must have shape [N, H, W, 3], got {list(images.shape)}")
    if images.dtype != np.uint8:
        raise TinyclError(f"images must be uint8, got {images.dtype}")
    if res is not None and images.shape[1:3] != (res, res):
        raise TinyclError(
            f"images are {images.shape[1]}x{images.shape[2]} but the model expects {res}x{res} (--res)"
        )
    n = len(images)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise TinyclError(f"labels must be {n} integers, got {labels.dtype} {list(labels.shape)}")
    if n and labels.min() < 0:
        raise TinyclError("labels must be >= 0")
    objects = labels.copy() if objects is None else np.asarray(objects)
    sessions = np.ones(n, dtype=np.int64) if sessions is None else np.asarray(sessions)
    for name, arr in (("sessions", sessions), ("objects", objects)):
        if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
            raise TinyclError(f"{name} must be {n} integers, got {arr.dtype} {list(arr.shape)}")
    frames = _frame_index(objects, sessions)
    return ImageSet(images, labels.astype(np.int64), sessions.astype(np.int64),
                    objects.astype(np.int64), frames)


def _frame_index(objects: np.ndarray, sessions: np.ndarray) -> np.ndarray:
    """Position of each sample inside its (object, session) video, in array order."""
    frames = np.zeros(len(objects), dtype=np.int64)
    counters: dict[tuple[int, int], int] = {}
    for i, key in enumerate(zip(objects.tolist(), sessions.tolist(), strict=True)):
        frames[i] = counters.get(key, 0)
        counters[key] = frames[i] + 1
    return frames


def load_arrays(path: Path, res: int) -> tuple[ImageSet, ImageSet]:
    if not path.is_file():
        raise TinyclError(f"arrays file not found: {path}")
    data = read_npz(path, "arrays file")
    sets = []
    for split in ("train", "test"):
        for key in (f"{split}_images", f"{split}_labels"):
            if key not in data:
                raise TinyclError(f"arrays file {path} has no {key!r}")
        try:
            sets.append(from_arrays(
                data[f"{split}_images"], data[f"{split}_labels"],
                data.get(f"{split}_sessions"), data.get(f"{split}_objects"), res,
            ))
        except TinyclError as exc:
            raise TinyclError(f"{path} [{split}]: {exc}") from None
    return sets[0], sets[1]


def load_folder(root: Path, res: int) -> tuple[ImageSet, ImageSet]:
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise TinyclError(f"data folder not found: {root}")
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise TinyclError(f"data folder {root} has no {split}/ subfolder")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise TinyclError(f"{root / 'train'} has no class folders")
    index = {c: i for i, c in enumerate(classes)}
    sets = []
    for split in ("train", "test"):
        files = sorted(p for p in (root / split).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise TinyclError(f"{root / split} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        session_names = sorted({f.parent.name for f in files if f.parent.parent != root / split})
        session_id = {s: i + 1 for i, s in enumerate(session_names)}
        images, labels, sessions = [], [], []
        for f in files:
            rel = f.relative_to(root / split).parts
            if rel[0] not in index:
                raise TinyclError(f"{f}: class {rel[0]!r} is not among the train classes")
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError) as exc:
                raise TinyclError(f"cannot read image {f}: {exc}") from None
            if arr.shape[:2] != (res, res):
                raise TinyclError(
                    f"image {f} is {arr.shape[1]}x{arr.shape[0]}, the model expects {res}x{res} (--res)"
                )
            images.append(arr)
            labels.append(index[rel[0]])
            sessions.append(session_id[rel[1]] if len(rel) > 2 else 1)
        sets.append(from_arrays(np.stack(images), np.array(labels), np.array(sessions)))
    return sets[0], sets[1]
