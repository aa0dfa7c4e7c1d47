"""The portable generator behind every random draw of the CL loop: PCG32.

A device repeats a Python run draw for draw only if both use the same generator with the same
integer algorithms, so the learner never draws from numpy's or torch's generators (their
algorithms are not specified and change across versions). Everything here is integer
arithmetic on 64-bit state, written so that a C99 port is a line-by-line transcription.

- Generator: PCG32, i.e. PCG-XSH-RR with 64-bit state and 32-bit output (O'Neill 2014,
  "PCG: A Family of Simple Fast Space-Efficient Statistically Good Algorithms for Random Number
  Generation"; reference code pcg-c-basic ``pcg32_random_r``)::

      old = state;  state = old * 6364136223846793005 + inc          (mod 2**64)
      xorshifted = ((old >> 18) ^ old) >> 27                         (low 32 bits)
      rot = old >> 59
      out = (xorshifted >> rot) | (xorshifted << ((-rot) & 31))       (32-bit rotate right)

- Seeding: pcg-c-basic ``pcg32_srandom_r(initstate, initseq)``: ``state = 0``,
  ``inc = (initseq << 1) | 1``, one step, ``state += initstate``, one step.
- Bounded integers in [0, n): pcg-c-basic ``pcg32_boundedrand_r``, unbiased by rejection:
  ``threshold = (2**32 - n) % n``; draw until ``r >= threshold``; return ``r % n``.
- Shuffles: Fisher-Yates from the top as pcg32-demo deals cards: for ``i = n, n-1, .., 2``:
  ``j = bounded(i)``, swap ``a[j]`` and ``a[i-1]``.
- Sampling k of n without replacement: the first k steps of that shuffle; the sample is
  ``a[n-1], a[n-2], .., a[n-k]`` in the order drawn (so ``choice(n, k)`` equals
  ``permutation(n)[::-1][:k]`` from the same state).
- Floats in [0, 1): ``(next_u32() >> 8) * 2**-24`` (exact in float32).

Test vectors (tests/test_prng.py) are pcg32-demo's published output for seed 42, sequence 54:
the six 32-bit values, the coins, the dice and the dealt cards.
"""

from __future__ import annotations

import numpy as np

from tinycl.errors import TinyclError

MULTIPLIER = 6364136223846793005  # PCG's default 64-bit LCG multiplier (pcg-c-basic)
MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1

# The CL loop's streams (PCG's ``initseq``): the learner's draws (orders, replay picks, memory
# slots) and the sparse update's channel choices use separate streams of the run's seed, so a
# dense and a sparse run of one seed see the same data order.
LOOP_STREAM = 1
SPARSE_STREAM = 2


class Pcg32:
    """PCG32 (XSH-RR 64/32) with pcg-c-basic's seeding, bounded draws and shuffles."""

    def __init__(self, seed: int, stream: int = LOOP_STREAM):
        if not (isinstance(seed, int) and 0 <= seed <= MASK64 and isinstance(stream, int) and 0 <= stream <= MASK64):
            raise TinyclError(f"PCG32 seed and stream must be integers in 0..2**64-1, got {seed!r}, {stream!r}")
        self.state = 0
        self.inc = ((stream << 1) | 1) & MASK64
        self.next_u32()
        self.state = (self.state + seed) & MASK64
        self.next_u32()

    def next_u32(self) -> int:
        old = self.state
        self.state = (old * MULTIPLIER + self.inc) & MASK64
        xorshifted = (((old >> 18) ^ old) >> 27) & MASK32
        rot = old >> 59
        return ((xorshifted >> rot) | (xorshifted << ((-rot) & 31))) & MASK32

    def bounded(self, n: int) -> int:
        """Uniform integer in ``[0, n)``, ``1 <= n <= 2**32``, without modulo bias."""
        if not 1 <= n <= 1 << 32:
            raise TinyclError(f"PCG32 bound must be in 1..2**32, got {n}")
        threshold = ((1 << 32) - n) % n
        while True:
            r = self.next_u32()
            if r >= threshold:
                return r % n

    def random(self) -> float:
        """Uniform float in ``[0, 1)`` with 24 random bits (exact in float32)."""
        return (self.next_u32() >> 8) * (1.0 / (1 << 24))

    def shuffle(self, values: np.ndarray) -> np.ndarray:
        """Shuffle a 1-d array in place (Fisher-Yates from the top) and return it."""
        for i in range(len(values), 1, -1):
            j = self.bounded(i)
            values[j], values[i - 1] = values[i - 1], values[j]
        return values

    def permutation(self, n: int) -> np.ndarray:
        """A random permutation of ``0..n-1`` as int64."""
        return self.shuffle(np.arange(n, dtype=np.int64))

    def choice(self, n: int, k: int) -> np.ndarray:
        """``k`` distinct integers of ``0..n-1`` in the order drawn (partial Fisher-Yates)."""
        if not 0 <= k <= n:
            raise TinyclError(f"cannot choose {k} of {n} without replacement")
        values = np.arange(n, dtype=np.int64)
        picked = np.empty(k, dtype=np.int64)
        for t in range(k):
            i = n - t
            j = self.bounded(i)
            values[j], values[i - 1] = values[i - 1], values[j]
            picked[t] = values[i - 1]
        return picked

    def get_state(self) -> dict[str, int]:
        return {"state": self.state, "inc": self.inc}

    def set_state(self, saved: object) -> None:
        """Restore ``get_state()``; anything else is one TinyclError."""
        ok = (isinstance(saved, dict) and set(saved) == {"state", "inc"}
              and all(isinstance(v, int) and 0 <= v <= MASK64 for v in saved.values()) and saved["inc"] & 1)
        if not ok:
            raise TinyclError(f"invalid PCG32 state {saved!r}")
        self.state, self.inc = saved["state"], saved["inc"]
