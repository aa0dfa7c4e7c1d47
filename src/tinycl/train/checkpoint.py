"""Checkpoint files: the whole state of a run after batch k, safe to write and to read back.

Layout (little endian)::

    magic     8 bytes   b"TINYCLCK"
    version   uint32    FORMAT_VERSION
    length    uint64    payload bytes
    sha256    32 bytes  of the payload
    payload   torch.save of a dict of tensors, numbers, strings, lists and dicts

Writes go through ``tinycl.fileio.atomic_writer`` (temporary file, fsync, rename): the
previous checkpoint stays in place until the new one is complete, and a SIGKILL at any
moment leaves one whole checkpoint or the previous one. Reads check magic, version, length
and checksum before the payload is unpickled, and unpickle with ``weights_only=True``, which
builds tensors and plain containers only and never calls what a file names: a crafted
pickle is refused, not executed.
"""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path
from typing import Any

import torch

from tinycl.errors import TinyclError
from tinycl.fileio import atomic_writer

MAGIC = b"TINYCLCK"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIQ32s")
FILE_NAME = "checkpoint.ckpt"


def encode_checkpoint(state: dict[str, Any], version: int = FORMAT_VERSION) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    return HEADER.pack(MAGIC, version, len(payload), hashlib.sha256(payload).digest()) + payload


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically to ``path``."""
    data = encode_checkpoint(state)
    try:
        with atomic_writer(Path(path)) as fh:
            fh.write(data)
    except OSError as exc:
        raise TinyclError(f"cannot write checkpoint {path}: {exc.strerror or exc}; the previous one is kept") from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read and verify a checkpoint; any problem is one ``TinyclError`` naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TinyclError(f"checkpoint not found: {path}") from None
    except OSError as exc:
        raise TinyclError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if len(data) < HEADER.size or not data.startswith(MAGIC):
        raise TinyclError(f"{path} is not a tinycl checkpoint (no {MAGIC.decode()} header)")
    magic, version, length, digest = HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise TinyclError(
            f"checkpoint {path} has format version {version}; this tinycl reads version {FORMAT_VERSION}")
    payload = data[HEADER.size :]
    if len(payload) != length:
        raise TinyclError(f"checkpoint {path} is truncated: {len(payload)} of {length} payload bytes")
    if hashlib.sha256(payload).digest() != digest:
        raise TinyclError(f"checkpoint {path} is corrupted: its checksum does not match")
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - the unpickler refuses in many ways; one line for all
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TinyclError(f"checkpoint {path} refused: it holds more than tensors and plain data ({first})") from None
    if not isinstance(state, dict):
        raise TinyclError(f"checkpoint {path} does not hold a state dictionary")
    return state


def require(state: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    """``state[key]`` checked to be a ``kind``: a checkpoint of a foreign layout is refused."""
    value = state.get(key)
    if not isinstance(value, kind):
        raise TinyclError(f"checkpoint {path} lacks a valid {key!r} entry")
    return value
