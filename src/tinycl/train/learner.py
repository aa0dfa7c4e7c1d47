"""The latent replay learner (Pellegrini et al. 2020; ar1-pytorch's AR1*) and its baselines.

Per experience: new images pass the frozen stage once; the adaptive stage trains for
``epochs`` epochs on mini-batches of ``cur`` new latents plus ``minibatch - cur`` replays;
then the replay memory takes its share of the new latents. DESIGN.md, "Replay training".

Every random draw comes from one PCG32 stream (``tinycl.prng``), in this order per batch, so a
device can repeat a run draw for draw:

- ``shuffle="epoch"`` (tinycl): per epoch ``permutation(n)`` of the new data, then (when
  replaying in shuffled order) ``permutation(m)`` of the memory; the memory is offered all n
  new items.
- ``shuffle="batch"`` (ar1-pytorch): one ``permutation`` of the (padded) new data per batch;
  the memory is offered the items trained in an epoch, in that order (ar1-pytorch stores the
  latents it collected during epoch 0).
- then the memory update (``LatentReplayMemory.update``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tinycl.errors import TinyclError
from tinycl.prng import LOOP_STREAM, Pcg32
from tinycl.replay.memory import LatentReplayMemory
from tinycl.train.batch_renorm import set_phase
from tinycl.train.cwr import CWRStar
from tinycl.train.optim import make_optimizer
from tinycl.train.stages import head_weight, set_train_mode

SHUFFLES = ("epoch", "batch")
REPLAY_ORDERS = ("shuffled", "memory")


def channels_last(x: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    x = x if device is None else x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def minibatch_plan(new_items: int, replay_items: int, minibatch: int) -> tuple[int, int, int]:
    """(new per mini-batch, replays per mini-batch, iterations per epoch).

    ar1-pytorch: ``cur = n // ((n + rm_sz) // mb)``, ``n2inject = mb - cur``,
    ``iterations = n // cur`` (REFERENCES.md: 1500 LRs with n = 3000 gives 21 + 107 when
    the memory is full).
    """
    if new_items <= 0:
        return 0, 0, 0
    if replay_items == 0:
        cur = min(minibatch, new_items)
        return cur, 0, new_items // cur
    groups = (new_items + replay_items) // minibatch
    cur = new_items // groups if groups > 0 else new_items
    cur = max(1, min(cur, new_items, minibatch))
    return cur, minibatch - cur, new_items // cur


def padded_rows(n: int, minibatch: int) -> np.ndarray:
    """ar1-pytorch ``pad_data``: the first ``mb - n % mb`` rows repeated in front (fewer if
    n is smaller), so batch 0 splits into whole mini-batches."""
    missing = n % minibatch
    rows = np.arange(n, dtype=np.int64)
    return rows if missing == 0 else np.concatenate([rows[: minibatch - missing], rows])


class NonFiniteError(TinyclError):
    """NaN or Inf in what the learner was given or computed."""


@dataclass
class StepStats:
    loss_sum: float = 0.0
    steps: int = 0

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(1, self.steps)


class Learner:
    """Holds the adaptive stage, its optimizer, the replay memory and the CL generator.

    Recipe behaviours (``tinycl.config.RECIPES``): ``shuffle``; ``replay_order`` "shuffled"
    (a new permutation of the memory each epoch, wrapping) or "memory" (slots in memory order,
    ``it * n2inject`` onwards, as ar1-pytorch slices ``rm``); ``pad_first_batch``;
    ``reset_sgd`` (a new optimizer at batch 1, momentum buffers dropped); ``brn_inc_momentum``
    (batch renorm's momentum from batch 1, r_max / d_max at their caps).
    """

    def __init__(self, adaptive: nn.Module, memory: LatentReplayMemory, *, lr: float,
                 inc_lr: float, momentum: float, weight_decay: float, epochs: int,
                 minibatch: int, norm: str, cwr: bool, num_classes: int, seed: int,
                 shuffle: str = "epoch", replay_order: str = "shuffled", pad_first_batch: bool = False,
                 reset_sgd: bool = False, brn_inc_momentum: float | None = None,
                 replay_decoder: Callable[[torch.Tensor], torch.Tensor] | None = None, device: str = "cpu"):
        if shuffle not in SHUFFLES or replay_order not in REPLAY_ORDERS:
            raise TinyclError(f"unknown shuffle {shuffle!r} or replay order {replay_order!r}")
        # Channels-last makes the adaptive stage's convolutions and normalizations ~1.5x
        # faster on CPU (benchmarks/bench_train.py); the arithmetic is the same. The adaptive
        # stage, its optimizer and CWR* live on ``device``; latents, replays and draws stay on
        # the CPU and each mini-batch moves over.
        self.device = torch.device(device)
        self.adaptive = adaptive.to(self.device).to(memory_format=torch.channels_last)
        self.memory = memory
        self.lr, self.inc_lr = lr, inc_lr
        self.momentum, self.weight_decay = momentum, weight_decay
        self.epochs, self.minibatch, self.norm = epochs, minibatch, norm
        self.shuffle, self.replay_order = shuffle, replay_order
        self.pad_first_batch, self.reset_sgd = pad_first_batch, reset_sgd
        self.brn_inc_momentum = brn_inc_momentum
        self.num_classes = num_classes
        self.rng = Pcg32(seed, LOOP_STREAM)
        self.optimizer = self._new_optimizer()
        self.cwr = CWRStar(head_weight(adaptive)) if cwr else None
        # Raw-image replay stores images: they must cross the frozen stage at every use.
        self.replay_decoder = replay_decoder
        self.loss_fn = nn.CrossEntropyLoss()

    def _new_optimizer(self):
        return make_optimizer(self.adaptive, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def generators(self) -> list[Pcg32]:
        """The generators the adaptive stage draws from (sparse channel choice), in order."""
        found: dict[int, Pcg32] = {}
        for module in self.adaptive.modules():
            gen = getattr(getattr(module, "selector", None), "generator", None)
            if isinstance(gen, Pcg32):
                found.setdefault(id(gen), gen)
        return list(found.values())

    def state_dict(self) -> dict:
        """The whole learner: weights, normalization statistics, optimizer, memory, CWR*, RNGs."""
        return {
            "adaptive": {k: v.cpu() for k, v in self.adaptive.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "memory": self.memory.state_dict(),
            "cwr": self.cwr.state_dict() if self.cwr else None,
            "rng": self.rng.get_state(),
            "generators": [g.get_state() for g in self.generators()],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``; anything that does not fit this learner is one TinyclError."""
        try:
            self.adaptive.load_state_dict(state["adaptive"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TinyclError(f"the checkpoint does not fit this run's adaptive stage: {first}") from None
        self.memory.load_state_dict(state.get("memory") or {})
        if (state.get("cwr") is None) != (self.cwr is None):
            raise TinyclError("the checkpoint and this run disagree on CWR*")
        if self.cwr:
            self.cwr.load_state_dict(state["cwr"])
        gens, saved = self.generators(), state.get("generators")
        if not isinstance(saved, list) or len(saved) != len(gens):
            raise TinyclError("the checkpoint and this run disagree on the sparse update's generators")
        for gen, gen_state in zip(gens, saved, strict=True):
            gen.set_state(gen_state)
        self.rng.set_state(state.get("rng"))

    def current_classes(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CWR*'s current classes and per-class counts: the new labels plus every replay label
        (ar1-pytorch: ``set(train_y) | set(rm[1])``)."""
        stored = self.memory.labels[: len(self.memory)].long()
        counts = torch.bincount(labels, minlength=self.num_classes) + torch.bincount(stored, minlength=self.num_classes)
        return torch.nonzero(counts).flatten(), counts

    def train_experience(self, latents: torch.Tensor, labels: torch.Tensor, index: int,
                         memory_items: torch.Tensor | None = None) -> StepStats:
        """Train on one experience's new latents mixed with replays, then update the memory."""
        if index == 1 and self.reset_sgd:
            self.optimizer = self._new_optimizer()  # ar1-pytorch re-creates SGD at batch 1
        if index >= 1 and self.brn_inc_momentum is not None:
            set_phase(self.adaptive, self.brn_inc_momentum)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr if index == 0 else self.inc_lr
        if self.cwr:
            current, counts = self.current_classes(labels)
            self.cwr.before_batch(current)
        stats, offered = self.fit(latents, labels, index)
        if self.cwr:
            self.cwr.after_batch(current, counts)
        items = latents if memory_items is None else memory_items
        pick = torch.from_numpy(offered)
        self.memory.update(items[pick], labels[pick], index, self.rng)
        return stats

    def fit(self, latents: torch.Tensor, labels: torch.Tensor, index: int = 0) -> tuple[StepStats, np.ndarray]:
        """Train the epochs of one batch; returns the stats and the rows offered to the memory."""
        n = len(latents)
        rows = padded_rows(n, self.minibatch) if self.pad_first_batch and index == 0 else np.arange(n)
        # ar1-pytorch sizes later mini-batches with the nominal memory size rm_sz.
        replay_items = self.memory.capacity if self.replay_order == "memory" and index > 0 else len(self.memory)
        cur, n_replay, iterations = minibatch_plan(len(rows), replay_items, self.minibatch)
        m = len(self.memory)
        order = rows[self.rng.permutation(len(rows))] if self.shuffle == "batch" else rows
        stats = StepStats()
        set_train_mode(self.adaptive, self.norm)
        for epoch in range(self.epochs):
            if self.shuffle == "epoch":
                order = rows[self.rng.permutation(len(rows))]
            if n_replay and m and self.replay_order == "shuffled":
                mem_order = self.rng.permutation(m)
            for it in range(iterations):
                pick = torch.from_numpy(order[it * cur : (it + 1) * cur])
                x, y = latents[pick], labels[pick]
                if n_replay and m:
                    if self.replay_order == "shuffled":
                        slots = mem_order[np.arange(it * n_replay, (it + 1) * n_replay) % m]
                    else:
                        slots = np.arange(min(it * n_replay, m), min((it + 1) * n_replay, m))
                    rx, ry = self.memory.get(torch.from_numpy(slots))
                    if self.replay_decoder is not None:
                        rx = self.replay_decoder(rx)
                    x = torch.cat([x, rx.view(len(rx), *x.shape[1:])])
                    y = torch.cat([y, ry])
                loss = self.loss_fn(self.adaptive(channels_last(x, self.device)), y.to(self.device))
                value = loss.item()
                if not math.isfinite(value):
                    # Never step on a non-finite loss: the weights stay as they were.
                    raise NonFiniteError(f"the loss is {value} at batch {index}, step {stats.steps} "
                                         f"(epoch {epoch}, iteration {it}): training stopped")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                stats.loss_sum += value
                stats.steps += 1
        offered = order[: iterations * cur] if self.shuffle == "batch" else np.arange(n)
        return stats, offered

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        self.adaptive.eval()
        return torch.cat([
            self.adaptive(channels_last(latents[i : i + chunk], self.device)).argmax(1).cpu()
            for i in range(0, len(latents), chunk)
        ])
