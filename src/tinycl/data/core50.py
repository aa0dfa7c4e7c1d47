"""Real CORe50 from a local copy: its official layout, filelists and protocols.

Nothing is downloaded; CORe50 is published at https://vlomonaco.github.io/core50 (REFERENCES.md,
"CORe50"). Two image sources are read, at the data root:

- ``core50_128x128/sS/oO/C_ss_oo_fff.png`` (session ss, 1-based object oo, frame fff);
- ``core50_imgs.npz`` (one member ``x``: uint8 [164866, 128, 128, 3]) with ``paths.pkl`` (the
  list of those relative paths, row by row). ``paths.pkl`` is read by a restricted unpickler
  that builds lists, tuples and strings only. An npz member stored uncompressed is memory-mapped
  in place; a compressed one cannot be, so it is read once per process (about 8 GB for the full
  set) unless ``extract_npz_images(root)`` has written ``core50_imgs.npy`` beside it, which is
  memory-mapped instead.

Protocols come from the official filelists, ``batches_filelists/{NI_inc,NC_inc,NIC_inc}/runK/``
and ``NIC_v2_{79,196,391}/runK/`` at the root (as Avalanche's ``scen2dirs``), each holding
``train_batch_XX_filelist.txt`` and ``test_filelist.txt`` with lines ``sS/oO/C_ss_oo_fff.png
LABEL`` (0-based object ids). Where a scenario's filelists are absent the stream is generated
from the file names by the synthetic benchmark's rules (``protocols.build_stream``) and the
protocol's ``note`` says so.

A stream is a list of batches of ``Sample(path, label)``; images are decoded only when
``iter_images`` is asked for them, a chunk at a time, so memory stays bounded by the chunk.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tinycl.data.base import ImageSet
from tinycl.data.protocols import build_stream
from tinycl.errors import TinyclError

WHERE = "CORe50 is published at https://vlomonaco.github.io/core50"
IMAGE_DIR = "core50_128x128"
NPZ_FILE = "core50_imgs.npz"
NPY_FILE = "core50_imgs.npy"  # written by extract_npz_images; memory-mapped
PATHS_FILE = "paths.pkl"
# CORe50: 11 sessions, s3, s7, s10 the test set; 50 objects, 5 per category (REFERENCES.md).
SESSIONS = tuple(range(1, 12))
TEST_SESSIONS = (3, 7, 10)
NUM_OBJECTS = 50
OBJECTS_PER_CATEGORY = 5
# The reduced test set keeps one frame in 20 of the test list (44,972 -> 2,249, REFERENCES.md).
REDUCED_TEST_STEP = 20
# Filelist folders relative to the data root (Avalanche's ``scen2dirs``).
FILELIST_DIRS = {
    "nicv2_391": "NIC_v2_391",
    "nicv2_196": "NIC_v2_196",
    "nicv2_79": "NIC_v2_79",
    "ni": "batches_filelists/NI_inc",
    "nc": "batches_filelists/NC_inc",
    "nic": "batches_filelists/NIC_inc",
}
SCENARIOS = tuple(FILELIST_DIRS)
LABELS = ("object", "category")
_NAME = re.compile(r"C_(\d+)_(\d+)_(\d+)\.png$")
_BATCH = re.compile(r"train_batch_(\d+)_filelist\.txt$")


class Sample(NamedTuple):
    """One image: its path relative to ``core50_128x128`` (``s1/o1/C_01_01_000.png``) and label."""

    path: str
    label: int


def parse_name(path: str) -> tuple[int, int, int]:
    """``(session, object, frame)`` of ``.../C_ss_oo_fff.png``: 1-based session, 0-based object."""
    match = _NAME.search(path)
    if match is None:
        raise TinyclError(f"not a CORe50 image name (C_ss_oo_fff.png): {path!r}")
    session, obj, frame = (int(g) for g in match.groups())
    return session, obj - 1, frame


def _normalize(path: str) -> str:
    path = path.replace("\\", "/").strip()
    return path[len(IMAGE_DIR) + 1:] if path.startswith(IMAGE_DIR + "/") else path


class _PathsUnpickler(pickle.Unpickler):
    """Builds only lists, tuples and strings: ``paths.pkl`` needs nothing else."""

    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in ("list", "tuple", "str"):
            return {"list": list, "tuple": tuple, "str": str}[name]
        raise pickle.UnpicklingError(f"it references {module}.{name}")


def read_paths_pickle(path: Path) -> list[str]:
    """The list of image paths in ``paths.pkl``, refusing any pickle that builds other objects."""
    try:
        with open(path, "rb") as handle:
            paths = _PathsUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, ImportError, OSError) as exc:
        raise TinyclError(f"refused {path}: {exc or type(exc).__name__}; only a list of path strings "
                          f"is accepted") from None
    if not isinstance(paths, (list, tuple)) or not all(isinstance(p, str) for p in paths):
        raise TinyclError(f"refused {path}: it does not hold a list of path strings")
    return [_normalize(p) for p in paths]


def _read_npy_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    return np.lib.format._read_array_header(handle, version)  # 3.0 has no public reader


def _npz_member(npz: Path) -> tuple[str, zipfile.ZipInfo]:
    with zipfile.ZipFile(npz) as archive:
        infos = [i for i in archive.infolist() if i.filename.endswith(".npy")]
    chosen = [i for i in infos if i.filename == "x.npy"] or infos
    if len(chosen) != 1:
        raise TinyclError(f"{npz} should hold one image array 'x', found {[i.filename for i in infos]}")
    return chosen[0].filename, chosen[0]


def _memmap_stored_member(npz: Path, info: zipfile.ZipInfo) -> np.ndarray:
    """Memory-map an uncompressed npz member in place: local header, then the .npy bytes."""
    with open(npz, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
        name_len = int.from_bytes(header[26:28], "little")
        extra_len = int.from_bytes(header[28:30], "little")
        handle.seek(info.header_offset + 30 + name_len + extra_len)
        shape, fortran, dtype = _read_npy_header(handle)
        offset = handle.tell()
    return np.memmap(npz, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


_LOADED: dict[tuple[str, float], np.ndarray] = {}  # compressed npz arrays, read once per process


def extract_npz_images(root: Path | str, chunk: int = 1024) -> Path:
    """Write ``core50_imgs.npy`` beside a compressed ``core50_imgs.npz``, streaming (bounded memory),
    so later runs memory-map it. Returns the new file's path."""
    root = Path(root)
    npz, target = root / NPZ_FILE, root / NPY_FILE
    name, _ = _npz_member(npz)
    with zipfile.ZipFile(npz) as archive, archive.open(name) as member, open(target, "wb") as out:
        shape, fortran, dtype = _read_npy_header(member)
        np.lib.format.write_array_header_2_0(out, {"shape": shape, "fortran_order": fortran, "descr":
                                                   np.lib.format.dtype_to_descr(dtype)})
        remaining = int(np.prod(shape)) * dtype.itemsize
        step = chunk * int(np.prod(shape[1:])) * dtype.itemsize
        while remaining:
            block = member.read(min(step, remaining))
            if not block:
                raise TinyclError(f"{npz} is truncated: {remaining} bytes of images missing")
            out.write(block)
            remaining -= len(block)
    return target


@dataclass
class Core50Layout:
    """Where a local CORe50 copy keeps its images and filelists; ``detect`` finds them."""

    root: Path
    image_dir: Path | None = None  # core50_128x128
    array_file: Path | None = None  # core50_imgs.npy or core50_imgs.npz
    paths_file: Path | None = None
    note: str | None = None
    _paths: list[str] | None = field(default=None, repr=False)
    _rows: dict[str, int] | None = field(default=None, repr=False)

    @classmethod
    def detect(cls, root: Path | str) -> Core50Layout:
        root = Path(root).expanduser()
        if root.name == IMAGE_DIR and not (root / IMAGE_DIR).is_dir():
            root = root.parent  # pointed at the image folder itself
        if not root.is_dir():
            raise TinyclError(f"CORe50 data root {root} does not exist; {WHERE}")
        layout = cls(root)
        if (root / NPY_FILE).is_file() or (root / NPZ_FILE).is_file():
            if not (root / PATHS_FILE).is_file():
                raise TinyclError(f"{root / NPZ_FILE} needs {PATHS_FILE} beside it (the path of each row), "
                                  f"missing in {root}; {WHERE}")
            layout.array_file = root / NPY_FILE if (root / NPY_FILE).is_file() else root / NPZ_FILE
            layout.paths_file = root / PATHS_FILE
        elif (root / IMAGE_DIR).is_dir():
            layout.image_dir = root / IMAGE_DIR
        else:
            raise TinyclError(f"no CORe50 images in {root}: expected {IMAGE_DIR}/s1..s11/o1..o50/*.png or "
                              f"{NPZ_FILE} with {PATHS_FILE}; {WHERE}")
        return layout

    def image_paths(self) -> list[str]:
        """Every image, relative to ``core50_128x128``: the tree's sorted by (session, object,
        frame), the npz's in row order (``paths.pkl``)."""
        if self._paths is None:
            if self.paths_file is not None:
                paths = read_paths_pickle(self.paths_file)
            else:
                assert self.image_dir is not None
                paths = []
                for session_dir in os.scandir(self.image_dir):
                    if not (session_dir.is_dir() and session_dir.name.startswith("s")):
                        continue
                    for object_dir in os.scandir(session_dir.path):
                        if object_dir.is_dir() and object_dir.name.startswith("o"):
                            paths += [f"{session_dir.name}/{object_dir.name}/{f.name}"
                                      for f in os.scandir(object_dir.path) if f.name.endswith(".png")]
                paths.sort(key=parse_name)
            self._paths = paths
        return self._paths

    def rows(self) -> dict[str, int]:
        """Row of each path in the image array (npz layout only)."""
        if self._rows is None:
            self._rows = {p: i for i, p in enumerate(self.image_paths())}
        return self._rows

    def images_array(self) -> np.ndarray:
        """The image array of the npz layout: memory-mapped where the format allows it."""
        assert self.array_file is not None
        if self.array_file.suffix == ".npy":
            array = np.load(self.array_file, mmap_mode="r", allow_pickle=False)
        else:
            key = (str(self.array_file), self.array_file.stat().st_mtime)
            name, info = _npz_member(self.array_file)
            if info.compress_type == zipfile.ZIP_STORED:
                array = _memmap_stored_member(self.array_file, info)
            else:
                self.note = (f"{self.array_file.name} is compressed: its images are held in memory once per "
                             f"process; tinycl.data.core50.extract_npz_images(root) writes {NPY_FILE}, "
                             f"which is memory-mapped instead")
                if key not in _LOADED:
                    with np.load(self.array_file, allow_pickle=False) as archive:
                        _LOADED[key] = archive[name[:-4]]
                array = _LOADED[key]
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise TinyclError(f"{self.array_file} should hold uint8 [N, H, W, 3] images, "
                              f"got {array.dtype} {array.shape}")
        if len(array) != len(self.image_paths()):
            raise TinyclError(f"{self.array_file} holds {len(array)} images but {self.paths_file} "
                              f"names {len(self.image_paths())}")
        return array

    def resolution(self) -> int:
        """Side of the (square) images: 128 for CORe50; any square size is accepted."""
        if self.array_file is not None:
            height, width = self.images_array().shape[1:3]
        else:
            paths = self.image_paths()
            if not paths:
                raise TinyclError(f"no images in {self.image_dir}; {WHERE}")
            height, width = _decode(self.image_dir / paths[0]).shape[:2]
        if height != width:
            raise TinyclError(f"CORe50 images must be square, {self.root} has {height}x{width}")
        return int(height)


@dataclass
class Core50Protocol:
    """A CL stream on real CORe50: batches of samples, the test list, and how it was built."""

    scenario: str
    run: int
    labels: str
    train_batches: list[list[Sample]]
    test: list[Sample]
    res: int
    num_classes: int
    source: str  # the filelist folder read, or "generated"
    note: str | None = None

    @property
    def num_batches(self) -> int:
        return len(self.train_batches)


def _read_filelist(path: Path) -> list[Sample]:
    """Lines ``path label``; a filelist that is not text, malformed or empty is refused."""
    samples = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TinyclError(f"{path} is not a UTF-8 text filelist (byte {exc.start})") from None
    except OSError as exc:
        raise TinyclError(f"cannot read filelist {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        # Labels are 0-based object ids: at most a few digits (checked against 0..49 later).
        if len(parts) != 2 or not re.fullmatch(r"-?[0-9]{1,9}", parts[1]):
            raise TinyclError(f"{path}:{number}: expected 'path label', got {line.strip()!r}")
        samples.append(Sample(_normalize(parts[0]), int(parts[1])))
    if not samples:
        raise TinyclError(f"{path} lists no images")
    return samples


def _from_filelists(folder: Path, run: int) -> tuple[list[list[Sample]], list[Sample]]:
    run_dir = folder / f"run{run}"
    if not run_dir.is_dir():
        runs = sorted(int(p.name[3:]) for p in folder.glob("run*") if p.name[3:].isdigit())
        raise TinyclError(f"no filelists for run {run} in {folder} (runs present: "
                          f"{', '.join(map(str, runs)) or 'none'}); {WHERE}")
    numbers = sorted(int(m.group(1)) for p in run_dir.iterdir() if (m := _BATCH.match(p.name)))
    if not numbers:
        raise TinyclError(f"no train_batch_XX_filelist.txt in {run_dir}; {WHERE}")
    missing = sorted(set(range(numbers[-1] + 1)) - set(numbers))
    if missing:
        raise TinyclError(f"{run_dir} is partial: train_batch_{missing[0]:02d}_filelist.txt missing "
                          f"({len(missing)} batches in all); {WHERE}")
    if not (run_dir / "test_filelist.txt").is_file():
        raise TinyclError(f"{run_dir / 'test_filelist.txt'} missing; {WHERE}")
    width = max(2, len(str(numbers[-1])))
    batches = []
    for number in numbers:
        name = run_dir / f"train_batch_{number:0{width}d}_filelist.txt"
        if not name.is_file():  # tolerate unpadded or differently padded numbers
            name = next(p for p in run_dir.iterdir() if (m := _BATCH.match(p.name)) and int(m.group(1)) == number)
        batches.append(_read_filelist(name))
    return batches, _read_filelist(run_dir / "test_filelist.txt")


def _generated(layout: Core50Layout, scenario: str, run: int) -> tuple[list[list[Sample]], list[Sample]]:
    """The stream by the synthetic benchmark's rules, from metadata in the file names."""
    if scenario == "nic":
        raise TinyclError(f"NIC filelists ({FILELIST_DIRS['nic']}) missing in {layout.root} and NIC is not "
                          f"generated; use nicv2_391/196/79; {WHERE}")
    paths = layout.image_paths()
    meta = np.array([parse_name(p) for p in paths], dtype=np.int64).reshape(-1, 3)
    present = {(int(s), int(o)) for s, o, _ in meta}
    missing = [(s, o) for s in SESSIONS for o in range(NUM_OBJECTS) if (s, o) not in present]
    if missing:
        s, o = missing[0]
        raise TinyclError(f"CORe50 at {layout.root} is partial: no images of s{s}/o{o + 1} "
                          f"({len(missing)} of {len(SESSIONS) * NUM_OBJECTS} session/object videos missing); {WHERE}")
    sessions, objects, frames = meta[:, 0], meta[:, 1], meta[:, 2]
    is_test = np.isin(sessions, TEST_SESSIONS)
    train_rows = np.flatnonzero(~is_test)
    # build_stream reads only the metadata: a zero-strided stand-in replaces the images.
    stand_in = np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (len(train_rows), 1, 1, 3))
    train = ImageSet(stand_in, objects[train_rows], sessions[train_rows], objects[train_rows], frames[train_rows])
    stream = build_stream(train, scenario, run, objects_per_category=OBJECTS_PER_CATEGORY)
    batches = [[Sample(paths[train_rows[i]], int(objects[train_rows[i]])) for i in e.sample_indices]
               for e in stream]
    test = [Sample(paths[i], int(objects[i])) for i in np.flatnonzero(is_test)]
    return batches, test


def _check_present(layout: Core50Layout, samples: Sequence[Sample], what: str) -> None:
    known = set(layout.image_paths())
    absent = [s.path for s in samples if s.path not in known]
    if absent:
        where = layout.image_dir or layout.paths_file
        raise TinyclError(f"CORe50 at {layout.root} is partial: {len(absent)} images named in {what} are not in "
                          f"{where}, first {absent[0]}; {WHERE}")


def load_core50_protocol(root: Path | str | Core50Layout, scenario: str = "nicv2_391", run: int = 0,
                         labels: str = "object", reduced_test: bool = False) -> Core50Protocol:
    """The CL stream of ``scenario`` / ``run`` on a local CORe50 copy (no image is decoded).

    Filelists are used where present; otherwise the stream is generated (``note`` says so).
    ``labels="category"`` maps object ids to the 10 categories (``label // 5``);
    ``reduced_test`` keeps one test image in 20, as the CORe50 loader does.
    """
    if scenario not in SCENARIOS:
        raise TinyclError(f"unknown CORe50 scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if labels not in LABELS:
        raise TinyclError(f"labels must be 'object' or 'category', got {labels!r}")
    if run < 0:
        raise TinyclError(f"--run must be >= 0, got {run}")
    layout = root if isinstance(root, Core50Layout) else Core50Layout.detect(root)
    folder = layout.root / FILELIST_DIRS[scenario]
    notes = []
    if folder.is_dir():
        batches, test = _from_filelists(folder, run)
        source = FILELIST_DIRS[scenario] + f"/run{run}"
    else:
        batches, test = _generated(layout, scenario, run)
        source = "generated"
        notes.append(f"no {FILELIST_DIRS[scenario]} filelists in {layout.root}: the {scenario} stream (run {run}) "
                     f"is generated from the file names by tinycl's NICv2/NI/NC rules, not the official lists")
    everything = [s for batch in batches for s in batch] + test
    _check_present(layout, everything, source)
    bad = [s for s in everything if not 0 <= s.label < NUM_OBJECTS]
    if bad:
        raise TinyclError(f"{source}: label {bad[0].label} of {bad[0].path} is not an object id in 0..49")
    if reduced_test:
        test = test[::REDUCED_TEST_STEP]
    num_classes = NUM_OBJECTS
    if labels == "category":
        num_classes = NUM_OBJECTS // OBJECTS_PER_CATEGORY
        batches = [[Sample(s.path, s.label // OBJECTS_PER_CATEGORY) for s in batch] for batch in batches]
        test = [Sample(s.path, s.label // OBJECTS_PER_CATEGORY) for s in test]
    res = layout.resolution()
    if layout.note:
        notes.append(layout.note)
    return Core50Protocol(scenario, run, labels, batches, test, res, num_classes, source,
                          "; ".join(notes) or None)


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise TinyclError(f"CORe50 image missing: {path}; {WHERE}") from None
    except OSError as exc:
        raise TinyclError(f"cannot decode CORe50 image {path}: {exc}") from None


def iter_images(source: Path | str | Core50Layout, samples: Sequence[Sample], chunk: int = 256,
                workers: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Decode ``samples`` in order, ``chunk`` at a time: yields (uint8 [n, H, W, 3], int64 [n] labels).

    Only one chunk is held at a time (plus, for a compressed npz, the array read once per process).
    ``workers`` > 1 decodes PNGs on that many threads (PIL releases the GIL while decoding).
    """
    if chunk < 1:
        raise TinyclError(f"chunk must be >= 1, got {chunk}")
    layout = source if isinstance(source, Core50Layout) else Core50Layout.detect(source)
    array = layout.images_array() if layout.array_file is not None else None
    pool = ThreadPoolExecutor(workers) if workers > 1 and array is None else None
    try:
        for start in range(0, len(samples), chunk):
            part = samples[start:start + chunk]
            labels = np.fromiter((s.label for s in part), np.int64, len(part))
            if array is not None:
                rows = layout.rows()
                try:
                    index = np.fromiter((rows[s.path] for s in part), np.int64, len(part))
                except KeyError as exc:
                    raise TinyclError(f"CORe50 image {exc.args[0]} is not in {layout.paths_file}; {WHERE}") from None
                yield np.asarray(array[index]), labels
                continue
            assert layout.image_dir is not None
            paths = [layout.image_dir / s.path for s in part]
            decoded = pool.map(_decode, paths) if pool else map(_decode, paths)
            images = None
            for i, image in enumerate(decoded):
                if images is None:
                    images = np.empty((len(part), *image.shape), np.uint8)
                if image.shape != images.shape[1:]:
                    raise TinyclError(f"CORe50 image {paths[i]} is {image.shape[1]}x{image.shape[0]}, "
                                      f"the others {images.shape[2]}x{images.shape[1]}")
                images[i] = image
            yield images, labels
    finally:
        if pool:
            pool.shutdown()


__all__ = [
    "Core50Layout", "Core50Protocol", "Sample", "extract_npz_images", "iter_images", "load_core50_protocol",
    "parse_name", "read_paths_pickle",
]
