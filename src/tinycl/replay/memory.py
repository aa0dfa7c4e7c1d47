"""``LatentReplayMemory``: N slots of stored latents with their labels, and update policies.

Labels are stored with their latents and move with them (never re-derived from dataset
order: Avalanche's AR1 misaligns the two, REFERENCES.md).
"""

from __future__ import annotations

import numpy as np
import torch

from tinycl.errors import TinyclError
from tinycl.prng import Pcg32

# recipe: tinycl's ``h = min(N // (i+1), n)`` update, filling free slots first (so a memory
# larger than batch 0 keeps growing); ar1: ar1-pytorch's AR1*, the same update but the memory
# is batch 0's sample and never grows past it; reservoir; class-balanced.
POLICIES = ("recipe", "ar1", "reservoir", "class-balanced")


def recipe_replace_count(capacity: int, batch_index: int, new_items: int) -> int:
    """ar1-pytorch's update size: h = min(N // (i + 1), n) after batch i (0-based)."""
    return min(capacity // (batch_index + 1), new_items)


class LatentReplayMemory:
    """Fixed-capacity replay memory; rows are stored in the codec's format."""

    def __init__(self, capacity: int, codec, num_classes: int, policy: str = "recipe"):
        if capacity < 0:
            raise TinyclError(f"replay capacity must be >= 0, got {capacity}")
        if policy not in POLICIES:
            raise TinyclError(f"unknown replay policy {policy!r}; known: {', '.join(POLICIES)}")
        self.capacity = capacity
        self.codec = codec
        self.policy = policy
        self.num_classes = num_classes
        try:
            self.rows = torch.zeros((capacity, codec.row_width), dtype=codec.dtype)
        except (RuntimeError, MemoryError):
            raise TinyclError(f"cannot allocate a replay memory of {capacity:,} x {codec.row_bytes:,} B") from None
        # Labels fit one byte up to 256 classes; the summary states the label bytes.
        self.label_dtype = torch.uint8 if num_classes <= 256 else torch.int32
        self.labels = torch.zeros(capacity, dtype=self.label_dtype)
        self.size = 0
        self.seen = 0  # items offered so far (reservoir sampling)
        self.seen_per_class = np.zeros(num_classes, dtype=np.int64)

    def __len__(self) -> int:
        return self.size

    @property
    def latent_bytes(self) -> int:
        """Bytes of the stored latents when full: N rows of the codec's row size."""
        return self.capacity * self.codec.row_bytes

    @property
    def label_bytes(self) -> int:
        return self.capacity * self.labels.element_size()

    def state_dict(self) -> dict:
        """Everything a resumed run needs: the packed rows, their labels and the counters."""
        return {"rows": self.rows.clone(), "labels": self.labels.clone(), "size": self.size,
                "seen": self.seen, "seen_per_class": torch.from_numpy(self.seen_per_class.copy())}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``; a memory of another capacity, codec or class count is refused."""
        expected = {"rows": (self.rows.shape, self.rows.dtype), "labels": (self.labels.shape, self.labels.dtype),
                    "seen_per_class": (torch.Size([self.num_classes]), torch.int64)}
        for key, (shape, dtype) in expected.items():
            value = state.get(key)
            if not isinstance(value, torch.Tensor) or value.shape != shape or value.dtype != dtype:
                got = f"{value.dtype} {list(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
                raise TinyclError(f"replay memory {key}: expected {dtype} {list(shape)}, got {got}")
        size, seen = state.get("size"), state.get("seen")
        if not isinstance(size, int) or not 0 <= size <= self.capacity or not isinstance(seen, int) or seen < size:
            raise TinyclError(f"replay memory counters are inconsistent (size {size!r}, seen {seen!r})")
        if size and int(state["labels"][:size].max()) >= self.num_classes:
            raise TinyclError(f"replay memory holds labels outside 0..{self.num_classes - 1}")
        self.rows.copy_(state["rows"])
        self.labels.copy_(state["labels"])
        self.size, self.seen = size, seen
        self.seen_per_class = state["seen_per_class"].numpy().copy()

    def get(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded latents and int64 labels of ``slots``."""
        return self.codec.decode(self.rows[slots]), self.labels[slots].long()

    def _write(self, slots: np.ndarray, rows: torch.Tensor, labels: torch.Tensor) -> None:
        index = torch.from_numpy(np.asarray(slots, dtype=np.int64))
        self.rows[index] = rows
        self.labels[index] = labels.to(self.label_dtype)

    def update(self, items: torch.Tensor, labels: torch.Tensor, batch_index: int, rng: Pcg32) -> None:
        """Offer a batch of new items (latents or images) after training on batch ``batch_index``.

        Draws (the order a device repeats): recipe / ar1: ``choice(n, h)`` new items, then
        ``choice(size, h - free)`` occupied slots; reservoir and class-balanced: per item."""
        n = len(items)
        if n == 0 or self.capacity == 0:
            return
        rows = self.codec.encode(items)
        if self.policy in ("recipe", "ar1"):
            self._update_recipe(rows, labels, batch_index, rng)
        elif self.policy == "reservoir":
            self._update_reservoir(rows, labels, rng)
        else:
            self._update_class_balanced(rows, labels, rng)
        self.seen_per_class += np.bincount(labels.numpy(), minlength=self.num_classes)

    def _update_recipe(self, rows, labels, batch_index, rng) -> None:
        h = recipe_replace_count(self.capacity, batch_index, len(rows))
        # Free slots are filled first (batch 0 fills the memory when n >= N, as in the
        # recipe); the rest overwrite h random occupied slots. ar1-pytorch's memory is batch 0's
        # sample: it has no free slots later, and replaces at most as many as it holds.
        free = min(self.capacity - self.size, h) if self.policy == "recipe" or self.size == 0 else 0
        h = min(h, free + self.size)
        chosen = rng.choice(len(rows), h)
        slots = np.arange(self.size, self.size + free)
        if h > free:
            slots = np.concatenate([slots, rng.choice(self.size, h - free)])
        self.size += free
        self._write(slots, rows[chosen], labels[chosen])
        self.seen += len(rows)

    def _update_reservoir(self, rows, labels, rng) -> None:
        for k in range(len(rows)):
            self.seen += 1
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
            else:
                j = rng.bounded(self.seen)
                if j >= self.capacity:
                    continue
                slot = j
            self._write(np.array([slot]), rows[k : k + 1], labels[k : k + 1])

    def _update_class_balanced(self, rows, labels, rng) -> None:
        # Class-balanced reservoir (Chrysakis & Moens 2020): when full, a new item evicts a
        # random slot of the currently largest class; a largest-class item replaces one of
        # its own class with probability (its class's slots / items of it seen).
        counts = np.bincount(self.labels[: self.size].long().numpy(), minlength=self.num_classes)
        seen_class = self.seen_per_class.copy()
        for k in range(len(rows)):
            c = int(labels[k])
            seen_class[c] += 1
            self.seen += 1
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
            else:
                largest = int(counts.max())
                if counts[c] < largest:
                    victims = np.flatnonzero(counts == largest)
                    victim_class = int(victims[rng.bounded(len(victims))])
                else:
                    if rng.random() >= counts[c] / seen_class[c]:
                        continue
                    victim_class = c
                candidates = np.flatnonzero(self.labels[: self.size].long().numpy() == victim_class)
                slot = int(candidates[rng.bounded(len(candidates))])
                counts[victim_class] -= 1
            counts[c] += 1
            self._write(np.array([slot]), rows[k : k + 1], labels[k : k + 1])
