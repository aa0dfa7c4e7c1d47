"""On-disk cache of frozen-stage outputs, reused by later runs of the same setting.

The frozen stage never changes during a run and is the same across runs that share the model
weights, the LR layer, the frozen-stage arithmetic and quantization settings and the data:
its outputs (already Q-bit codes when replays are quantized) are stored per experience, with
their labels, under a folder named by a hash of all of those. Each file carries a format
version and a SHA-256 of its arrays; a truncated, corrupted or mismatched file is detected,
reported, and recomputed — never used.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from tinycl.errors import TinyclError
from tinycl.fileio import atomic_writer, read_npz

FORMAT_VERSION = 1


def cache_key(frozen: torch.nn.Module, settings: dict) -> str:
    """Hash of the frozen stage's tensors and every setting that shapes its outputs."""
    h = hashlib.sha256(f"v{FORMAT_VERSION}:{sorted(settings.items())!r}".encode())
    for name, tensor in frozen.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def arrays_fingerprint(*sets) -> str:
    """Identity of data already in memory (``ImageSet``s): the bytes of every image, label,
    session and object id, in order. It changes with the content, and with the class -> label
    mapping (a renamed or an empty class folder renumbers the labels), never with file names,
    sizes or times."""
    h = hashlib.sha256()
    for image_set in sets:
        for name in ("images", "labels", "sessions", "objects"):
            arr = np.ascontiguousarray(getattr(image_set, name))
            h.update(f"{name}:{arr.dtype}:{arr.shape};".encode())
            h.update(memoryview(arr).cast("B"))
    return h.hexdigest()[:24]


def data_fingerprint(path: Path, index: ContentIndex | None = None) -> str:
    """Identity of data on disk by content: every directory's relative name (an empty class
    folder counts) and every file's relative name and SHA-256 (``ContentIndex``: hashed once,
    re-hashed whenever its inode, size, mtime or ctime changes)."""
    path = Path(path)
    index = index or ContentIndex(None)
    h = hashlib.sha256()
    if path.is_file():
        h.update(index.sha256(path).encode())
        return h.hexdigest()[:24]
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        rel_folder = os.path.relpath(folder, path)
        h.update(f"dir:{rel_folder};".encode())
        for name in sorted(files):
            full = Path(folder) / name
            h.update(f"{os.path.join(rel_folder, name)}:{index.sha256(full)};".encode())
    index.save()
    return h.hexdigest()[:24]


class ContentIndex:
    """SHA-256 of files, remembered by (device, inode, size, mtime, ctime).

    The fast path is still correct: any write to a file changes its ctime, which no user call
    can set back (``os.utime`` sets mtime and itself updates ctime), so a file whose five stat
    fields are unchanged has the bytes it was hashed with. Stored as JSON at ``path`` (None:
    in memory only); a damaged index is ignored and rebuilt.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, list] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                import json

                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict):
                    self.entries = {k: v for k, v in loaded.items() if isinstance(v, list) and len(v) == 6}
            except (OSError, ValueError, UnicodeDecodeError):
                self.entries = {}

    def sha256(self, file: Path) -> str:
        st = os.stat(file)
        stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        key = os.path.realpath(file)
        known = self.entries.get(key)
        if known is not None and known[:5] == stamp:
            return known[5]
        h = hashlib.sha256()
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        self.entries[key] = [*stamp, h.hexdigest()]
        self.dirty = True
        return h.hexdigest()

    def save(self) -> None:
        """Write the index back (best effort: a read-only cache only loses the fast path)."""
        if self.path is None or not self.dirty:
            return
        import json

        try:
            with atomic_writer(self.path) as fh:
                fh.write(json.dumps(self.entries).encode())
            self.dirty = False
        except OSError:
            pass


def _digest(items: np.ndarray, labels: np.ndarray) -> np.ndarray:
    h = hashlib.sha256()
    for arr in (items, labels):
        h.update(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8).copy()


class LatentCache:
    """Files ``<root>/<key>/<name>.npz`` holding (items, labels, digest, version)."""

    def __init__(self, root: Path, key: str):
        self.folder = Path(root) / key
        self.hits = 0
        self.rebuilt: list[str] = []

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.npz"

    def load(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            z = read_npz(path, "latent cache file")
            version = int(z["version"])
            items, labels, digest = z["items"], z["labels"], z["digest"]
        except (TinyclError, KeyError, TypeError, ValueError):
            version, items, labels, digest = -1, None, None, None
        if version != FORMAT_VERSION or items is None or not isinstance(digest, np.ndarray) \
                or not np.array_equal(digest, _digest(items, labels)):
            warnings.warn(f"latent cache file {path} is corrupted or from another version; recomputing it",
                          stacklevel=2)
            self.rebuilt.append(name)
            return None
        self.hits += 1
        return items, labels

    def reject(self, name: str, problem: str) -> None:
        """A file that loaded but does not fit the stream: reported, then recomputed."""
        warnings.warn(f"latent cache file {self.path(name)} {problem}; recomputing it", stacklevel=2)
        self.hits -= 1
        self.rebuilt.append(name)

    def store(self, name: str, items: np.ndarray, labels: np.ndarray) -> None:
        with atomic_writer(self.path(name)) as fh:
            np.savez(fh, items=items, labels=labels, digest=_digest(items, labels),
                     version=np.array(FORMAT_VERSION))
