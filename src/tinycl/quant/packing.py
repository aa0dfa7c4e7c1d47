"""Bit packing of Q-bit codes: N latents of D values take N * ceil(D * Q / 8) bytes.

Layout (what a C unpacker must read): each row is one bit stream; value i occupies stream bits
``[i*Q, (i+1)*Q)``, most significant bit first, and stream bit b is bit ``7 - b % 8`` of byte
``b // 8`` (MSB-first, as ``numpy.packbits`` with ``bitorder="big"``). Unused low bits of the
last byte are 0. Eight values of Q bits fill exactly Q bytes, so both directions work on groups
of 8 values held in one big-endian uint64 word: vectorized over all groups, with a loop over
the 8 positions of a group only (never over values).
"""

from __future__ import annotations

import numpy as np

from tinycl.errors import TinyclError

PACKABLE_BITS = range(1, 9)
FP32_BITS = 32  # the float baseline: 4 bytes per value, not bit-packed


def check_bits(bits: int, allow_fp32: bool = True) -> int:
    """Q must be 1..8 (or 32 for the FP32 baseline where allowed)."""
    valid = isinstance(bits, (int, np.integer)) and not isinstance(bits, bool) and (
        int(bits) in PACKABLE_BITS or (allow_fp32 and int(bits) == FP32_BITS)
    )
    if not valid:
        allowed = "1..8 or 32 (FP32)" if allow_fp32 else "1..8"
        raise TinyclError(f"latent replay bits must be {allowed}, got {bits!r}")
    return int(bits)


def packed_row_bytes(d: int, bits: int) -> int:
    """Bytes of one packed latent of ``d`` values: ``ceil(d * bits / 8)`` (4*d at 32 bits)."""
    bits = check_bits(bits)
    if bits == FP32_BITS:
        return 4 * d
    return (d * bits + 7) // 8


def packed_bytes(n: int, d: int, bits: int) -> int:
    """Bytes of ``n`` packed latents of ``d`` values each (labels not included)."""
    return n * packed_row_bytes(d, bits)


def group_shifts(bits: int) -> np.ndarray:
    """Left shift of each of the 8 values of a group inside a 64-bit word (value 0 on top)."""
    return (64 - bits * np.arange(1, 9, dtype=np.uint64)).astype(np.uint64)


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """``uint8 [N, D]`` codes in ``0..2**bits - 1`` -> ``uint8 [N, ceil(D * bits / 8)]``."""
    bits = check_bits(bits, allow_fp32=False)
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.dtype != np.uint8:
        raise TinyclError(f"codes must be uint8 [N, D], got {codes.dtype} {codes.shape}")
    n, d = codes.shape
    if bits < 8 and codes.size and int(codes.max()) >= 1 << bits:
        raise TinyclError(f"codes exceed {bits} bits (max {int(codes.max())})")
    row_bytes = packed_row_bytes(d, bits)
    if bits == 8:
        return codes.copy()
    groups = -(-d // 8)
    padded = np.zeros((n, groups * 8), dtype=np.uint64)
    padded[:, :d] = codes
    words = (padded.reshape(n, groups, 8) << group_shifts(bits)).sum(axis=2, dtype=np.uint64)
    as_bytes = words.astype(">u8").view(np.uint8).reshape(n, groups, 8)[:, :, :bits]
    return np.ascontiguousarray(as_bytes.reshape(n, groups * bits)[:, :row_bytes])


def unpack_bits(packed: np.ndarray, bits: int, d: int) -> np.ndarray:
    """Inverse of ``pack_bits``: ``uint8 [N, ceil(D * bits / 8)]`` -> ``uint8 [N, D]``."""
    bits = check_bits(bits, allow_fp32=False)
    packed = np.asarray(packed)
    row_bytes = packed_row_bytes(d, bits)
    if packed.ndim != 2 or packed.dtype != np.uint8 or packed.shape[1] != row_bytes:
        raise TinyclError(
            f"packed latents must be uint8 [N, {row_bytes}] for D={d} at {bits} bits, "
            f"got {packed.dtype} {packed.shape}"
        )
    n = packed.shape[0]
    if bits == 8:
        return packed.copy()
    groups = -(-d // 8)
    word_bytes = np.zeros((n, groups, 8), dtype=np.uint8)
    stream = np.zeros((n, groups * bits), dtype=np.uint8)
    stream[:, :row_bytes] = packed
    word_bytes[:, :, :bits] = stream.reshape(n, groups, bits)
    words = word_bytes.view(">u8").reshape(n, groups).astype(np.uint64)
    out = np.empty((n, groups, 8), dtype=np.uint8)
    mask = np.uint64((1 << bits) - 1)
    for position, shift in enumerate(group_shifts(bits)):
        out[:, :, position] = (words >> shift) & mask
    return out.reshape(n, groups * 8)[:, :d]
