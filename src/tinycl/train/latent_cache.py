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
import zipfile
from pathlib import Path

import numpy as np
import torch

from tinycl.fileio import atomic_writer

FORMAT_VERSION = 1


def cache_key(frozen: torch.nn.Module, settings: dict) -> str:
    """Hash of the frozen stage's tensors and every setting that shapes its outputs."""
    h = hashlib.sha256(f"v{FORMAT_VERSION}:{sorted(settings.items())!r}".encode())
    for name, tensor in frozen.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def data_fingerprint(path: Path) -> str:
    """Identity of user data on disk: every file's relative path, size and modification time
    (a changed, added or removed file changes it; no file is read)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        st = path.stat()
        h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:24]
    for folder, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            st = os.stat(os.path.join(folder, name))
            rel = os.path.relpath(os.path.join(folder, name), path)
            h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:24]


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
            with np.load(path, allow_pickle=False) as z:
                version = int(z["version"])
                items, labels, digest = z["items"], z["labels"], z["digest"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            version, items, labels, digest = -1, None, None, None
        if version != FORMAT_VERSION or items is None or not np.array_equal(digest, _digest(items, labels)):
            warnings.warn(f"latent cache file {path} is corrupted or from another version; recomputing it",
                          stacklevel=2)
            self.rebuilt.append(name)
            return None
        self.hits += 1
        return items, labels

    def store(self, name: str, items: np.ndarray, labels: np.ndarray) -> None:
        with atomic_writer(self.path(name)) as fh:
            np.savez(fh, items=items, labels=labels, digest=_digest(items, labels),
                     version=np.array(FORMAT_VERSION))
