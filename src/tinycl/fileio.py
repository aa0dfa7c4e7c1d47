"""Atomic file writes: a temporary file in the same folder, fsync, then rename.

Readers see the old file or the complete new one, never a partial write; a crash or an
error mid-write leaves what was there before.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary stream whose content replaces ``path`` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise named(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise named(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def named(exc: OSError, path: Path) -> OSError:
    """The same error naming ``path`` when it names no file (a failed write or fsync)."""
    if exc.filename is not None:
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def write_atomic(path: Path, data: str | bytes) -> None:
    with atomic_writer(path) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def read_npz(path: Path, what: str = "file") -> dict:
    """Every array of an ``.npz`` archive, loaded (``allow_pickle=False``), or one TinyclError.

    A damaged archive can fail inside numpy or zipfile in many ways (a byte-flip fuzz of one
    cache file raised OSError, ValueError, KeyError, EOFError, BadZipFile, zlib.error,
    tokenize.TokenError, NotImplementedError, RuntimeError, ...); every one means "not a
    readable .npz", and numpy's advice for some of them ("load it with allow_pickle=True")
    would be wrong here, so none of their messages reach the user.
    """
    import numpy as np

    from tinycl.errors import TinyclError

    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise TinyclError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise TinyclError(f"{what} {path} is a directory, not an .npz file") from None
    except PermissionError:
        raise TinyclError(f"cannot read {what} {path}: permission denied") from None
    except Exception as exc:  # noqa: BLE001 - see the docstring: any failure is a damaged archive
        reason = type(exc).__name__
        raise TinyclError(f"{what} {path} is not a readable .npz archive (damaged or another format: {reason})") \
            from None


def cache_root() -> Path:
    """``$TINYCL_CACHE`` (default ``~/.cache/tinycl``): synthetic data, weights, latents, the
    content index. A path that exists and is not a folder is one TinyclError."""
    import os

    from tinycl.errors import TinyclError

    path = Path(os.environ.get("TINYCL_CACHE") or "~/.cache/tinycl").expanduser()
    if path.exists() and not path.is_dir():
        raise TinyclError(f"the cache folder {path} (TINYCL_CACHE) exists and is not a folder")
    return path
