"""The latent replay learner (Pellegrini et al. 2020; ar1-pytorch recipe) and its baselines.

Per experience: new images pass the frozen stage once; the adaptive stage trains for
``epochs`` epochs on mini-batches of ``cur`` new latents plus ``minibatch - cur`` replays;
then the replay memory takes its share of the new latents. DESIGN.md, "Replay training".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tinycl.errors import TinyclError
from tinycl.replay.memory import LatentReplayMemory
from tinycl.train.cwr import CWRStar
from tinycl.train.optim import make_optimizer
from tinycl.train.stages import head_weight, set_train_mode


def channels_last(x: torch.Tensor) -> torch.Tensor:
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
    """Holds the adaptive stage, its optimizer, the replay memory and the CL RNG."""

    def __init__(self, adaptive: nn.Module, memory: LatentReplayMemory, *, lr: float,
                 inc_lr: float, momentum: float, weight_decay: float, epochs: int,
                 minibatch: int, norm: str, cwr: bool, num_classes: int, seed: int,
                 replay_decoder: Callable[[torch.Tensor], torch.Tensor] | None = None):
        # Channels-last makes the adaptive stage's convolutions and normalizations ~1.5x
        # faster on CPU (benchmarks/bench_train.py); the arithmetic is the same.
        self.adaptive = adaptive.to(memory_format=torch.channels_last)
        self.memory = memory
        self.lr, self.inc_lr = lr, inc_lr
        self.epochs, self.minibatch, self.norm = epochs, minibatch, norm
        self.num_classes = num_classes
        self.rng = np.random.default_rng(seed)
        self.optimizer = make_optimizer(adaptive, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.cwr = CWRStar(head_weight(adaptive)) if cwr else None
        # Raw-image replay stores images: they must cross the frozen stage at every use.
        self.replay_decoder = replay_decoder
        self.loss_fn = nn.CrossEntropyLoss()

    def generators(self) -> list[torch.Generator]:
        """The torch generators the adaptive stage draws from (sparse channel choice), in order."""
        found: dict[int, torch.Generator] = {}
        for module in self.adaptive.modules():
            gen = getattr(getattr(module, "selector", None), "generator", None)
            if isinstance(gen, torch.Generator):
                found.setdefault(id(gen), gen)
        return list(found.values())

    def state_dict(self) -> dict:
        """The whole learner: weights, normalization statistics, optimizer, memory, CWR*, RNGs."""
        return {
            "adaptive": self.adaptive.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "memory": self.memory.state_dict(),
            "cwr": self.cwr.state_dict() if self.cwr else None,
            "rng": self.rng.bit_generator.state,
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
        try:
            for gen, gen_state in zip(gens, saved, strict=True):
                gen.set_state(gen_state)
            self.rng.bit_generator.state = state["rng"]
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise TinyclError(f"the checkpoint's RNG states are invalid: {exc}") from None

    def train_experience(self, latents: torch.Tensor, labels: torch.Tensor, index: int,
                         memory_items: torch.Tensor | None = None) -> StepStats:
        """Train on one experience's new latents mixed with replays, then update the memory."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr if index == 0 else self.inc_lr
        current = torch.unique(labels)
        if self.cwr:
            self.cwr.before_batch(current)
        stats = self.fit(latents, labels, index)
        if self.cwr:
            self.cwr.after_batch(current, torch.bincount(labels, minlength=self.num_classes))
        items = latents if memory_items is None else memory_items
        self.memory.update(items, labels, index, self.rng)
        return stats

    def fit(self, latents: torch.Tensor, labels: torch.Tensor, index: int = 0) -> StepStats:
        n, m = len(latents), len(self.memory)
        cur, n_replay, iterations = minibatch_plan(n, m, self.minibatch)
        stats = StepStats()
        set_train_mode(self.adaptive, self.norm)
        for epoch in range(self.epochs):
            new_order = torch.from_numpy(self.rng.permutation(n))
            mem_order = torch.from_numpy(self.rng.permutation(m)) if m else None
            for it in range(iterations):
                pick = new_order[it * cur : (it + 1) * cur]
                x, y = latents[pick], labels[pick]
                if n_replay and mem_order is not None:
                    slots = mem_order[torch.arange(it * n_replay, (it + 1) * n_replay) % m]
                    rx, ry = self.memory.get(slots)
                    if self.replay_decoder is not None:
                        rx = self.replay_decoder(rx)
                    x = torch.cat([x, rx.view(len(rx), *x.shape[1:])])
                    y = torch.cat([y, ry])
                loss = self.loss_fn(self.adaptive(channels_last(x)), y)
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
        return stats

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        self.adaptive.eval()
        return torch.cat([
            self.adaptive(channels_last(latents[i : i + chunk])).argmax(1) for i in range(0, len(latents), chunk)
        ])
