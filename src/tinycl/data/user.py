"""Bring your own data: arrays or an image folder, turned into the same ImageSets.

Arrays: an ``.npz`` with ``train_images`` (uint8 [N, H, W, 3]), ``train_labels`` and
``test_images``/``test_labels``; optional ``{train,test}_sessions`` (1-based) and
``{train,test}_objects``. Without objects, each label is one object; without sessions,
everything is session 1 (so NICv2 batches are whole classes).

Folder: ``ROOT/{train,test}/CLASS/*.png`` or ``ROOT/{train,test}/CLASS/SESSION/*.png``
(png/jpg/jpeg/bmp); classes are the sorted CLASS names (empty class folders included: they
keep their label), sessions the sorted SESSION names numbered from 1.

What is refused, in one line, rather than converted silently: an empty split; labels above
``MAX_CLASSES - 1`` (one output per label value); symbolic links (a linked folder would be
skipped by the walk, a linked file could be anything); deeper nesting than CLASS/SESSION/file;
images of another size than ``--res`` (checked from the header, before decoding, so a
decompression bomb is never decoded); pixel formats without a faithful 8-bit RGB form (16-bit
or float channels, CMYK, transparency that is not fully opaque). Greyscale, palette and opaque
RGBA images are converted to RGB exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinycl.data.base import ImageSet, resize_images
from tinycl.errors import TinyclError
from tinycl.fileio import read_npz

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MAX_CLASSES = 10_000  # one head output per label value; more is a labelling mistake, not a task
# PIL modes whose conversion to 8-bit RGB loses nothing (alpha checked separately).
EXACT_MODES = ("1", "L", "P", "RGB", "LA", "RGBA", "PA")


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
            f"images are {images.shape[1]}x{images.shape[2]} but the model expects {res}x{res} (--res, or --resize "
            "to scale them)"
        )
    n = len(images)
    ids = {name for name, given in (("sessions", sessions), ("objects", objects)) if given is not None}
    if n == 0:
        raise TinyclError("holds no images")
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise TinyclError(f"labels must be {n} integers, got {labels.dtype} {list(labels.shape)}")
    if labels.min() < 0:
        raise TinyclError(f"labels must be >= 0, found {int(labels.min())}")
    if labels.max() >= MAX_CLASSES:
        raise TinyclError(f"label {int(labels.max())} is too large: tinycl makes one output per label value "
                          f"0..max (at most {MAX_CLASSES}); these {len(np.unique(labels))} distinct labels "
                          "should be renumbered 0..K-1")
    objects = labels.copy() if objects is None else np.asarray(objects)
    sessions = np.ones(n, dtype=np.int64) if sessions is None else np.asarray(sessions)
    for name, arr in (("sessions", sessions), ("objects", objects)):
        if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
            raise TinyclError(f"{name} must be {n} integers, got {arr.dtype} {list(arr.shape)}")
    frames = _frame_index(objects, sessions)
    return ImageSet(images, labels.astype(np.int64), sessions.astype(np.int64),
                    objects.astype(np.int64), frames, frozenset(ids))


def _frame_index(objects: np.ndarray, sessions: np.ndarray) -> np.ndarray:
    """Position of each sample inside its (object, session) video, in array order."""
    frames = np.zeros(len(objects), dtype=np.int64)
    counters: dict[tuple[int, int], int] = {}
    for i, key in enumerate(zip(objects.tolist(), sessions.tolist(), strict=True)):
        frames[i] = counters.get(key, 0)
        counters[key] = frames[i] + 1
    return frames


def load_arrays(path: Path, res: int, resize: bool = False) -> tuple[ImageSet, ImageSet]:
    """The arrays file as (train, test); images of another size than ``res`` are refused, or
    with ``resize`` scaled to it (``resize_images``)."""
    if not path.is_file():
        raise TinyclError(f"arrays file not found: {path}")
    data = read_npz(path, "arrays file")
    sets = []
    for split in ("train", "test"):
        for key in (f"{split}_images", f"{split}_labels"):
            if key not in data:
                raise TinyclError(f"arrays file {path} has no {key!r}")
        images = data[f"{split}_images"]
        if resize and isinstance(images, np.ndarray) and images.ndim == 4 and images.dtype == np.uint8 \
                and images.shape[-1] == 3:
            images = resize_images(images, res)
        try:
            sets.append(from_arrays(
                images, data[f"{split}_labels"],
                data.get(f"{split}_sessions"), data.get(f"{split}_objects"), res,
            ))
        except TinyclError as exc:
            raise TinyclError(f"{path} [{split}]: {exc}") from None
    return sets[0], sets[1]


def load_folder(root: Path, res: int, resize: bool = False) -> tuple[ImageSet, ImageSet]:
    """The image folder as (train, test); images of another size than ``res`` are refused, or
    with ``resize`` scaled to it."""
    if not root.is_dir():
        raise TinyclError(f"data folder not found: {root}")
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise TinyclError(f"data folder {root} has no {split}/ subfolder")
    check_tree(root)
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise TinyclError(f"{root / 'train'} has no class folders")
    index = {c: i for i, c in enumerate(classes)}
    sets = []
    for split in ("train", "test"):
        files = sorted(p for p in (root / split).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise TinyclError(f"{root / split} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        session_names = sorted({f.parent.name for f in files if f.parent.parent != root / split})
        session_id = {s: i + 1 for i, s in enumerate(session_names)}
        images, labels, sessions = [], [], []
        for f in files:
            rel = f.relative_to(root / split).parts
            if rel[0] not in index:
                raise TinyclError(f"{f}: class {rel[0]!r} is not among the train classes")
            arr = read_rgb(f, res, resize)
            images.append(arr)
            labels.append(index[rel[0]])
            sessions.append(session_id[rel[1]] if len(rel) > 2 else 1)
        session_ids = np.array(sessions) if session_names else None  # SESSION subfolders, or none
        sets.append(from_arrays(np.stack(images), np.array(labels), session_ids))
    return sets[0], sets[1]


def check_tree(root: Path) -> None:
    """Refuse symbolic links anywhere and nesting deeper than SPLIT/CLASS/SESSION/file."""
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise TinyclError(f"{path} is a symbolic link: tinycl reads regular files and folders only "
                              "(copy the data, or point --data-root at its real place)")
        depth = len(path.relative_to(root).parts)  # split/class/session/file = 4
        if depth > 4 or (depth == 4 and path.is_dir()):
            raise TinyclError(f"{path} is nested too deep: the layout is SPLIT/CLASS/file or "
                              "SPLIT/CLASS/SESSION/file")


def read_rgb(path: Path, res: int, resize: bool = False) -> np.ndarray:
    """One image as uint8 [res, res, 3], exactly (or scaled to it with ``resize``), or one
    TinyclError naming the file."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # a bomb's size warning would precede our one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            width, height = im.size
            # From the header: nothing is decoded yet. A resize decodes at most 16x the pixels.
            if (width, height) != (res, res) and (not resize or width * height > 16 * 4096 * 4096):
                raise TinyclError(f"image {path} is {width}x{height}, the model expects {res}x{res} "
                                  "(--res, or --resize to scale the images)")
            if im.mode not in EXACT_MODES:
                raise TinyclError(f"image {path} has pixel mode {im.mode} (16-bit, float or CMYK), which has no "
                                  "exact 8-bit RGB form: convert it to 8-bit RGB first")
            if "A" in im.mode or (im.mode == "P" and "transparency" in im.info):
                alpha = np.asarray(im.convert("RGBA"))[..., 3]
                if alpha.min() < 255:
                    raise TinyclError(f"image {path} is partly transparent: flatten it on a background first")
            rgb = np.asarray(im.convert("RGB"))
            return resize_images(rgb[None], res)[0] if resize else rgb
    except TinyclError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise TinyclError(f"cannot read image {path}: {type(exc).__name__}") from None
