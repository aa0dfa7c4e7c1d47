"""CWR* head consolidation (Lomonaco & Maltoni; ar1-pytorch ``reset_weights``,
``consolidate_weights``, ``set_consolidate_weights`` at 813f977).

The *current classes* of a batch are those of its new data and, from batch 1 on, every class in
the replay memory; their per-class counts include the replay memory's labels (ar1-pytorch:
``cur_class = set(train_y) | set(rm[1])``, ``cur_j = examples_per_class(train_y + rm[1])``).
Counting only the new batch's classes would zero, and then discard, the head rows of classes
seen only through replays.

- ``before_batch``: the head is zeroed, then the current classes that have consolidated
  weights start from them.
- ``after_batch``: each current class's trained row, centred on the mean of all current rows,
  is merged into its consolidated row with weight sqrt(past / current) (or becomes it, the
  first time); past counts grow by this batch's counts; then every consolidated row is copied
  into the head (rows never consolidated keep their trained values, as in ar1-pytorch).

Arithmetic is float32 torch throughout (ar1-pytorch does it in numpy, where the merge weight
is a float64 scalar): the two agree to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import torch

from tinycl.errors import TinyclError


class CWRStar:
    def __init__(self, head_weight: torch.Tensor):
        self.weight = head_weight  # the live head weight [classes, features]
        device = head_weight.device  # CWR*'s state lives beside the head (CPU or CUDA)
        self.consolidated = torch.zeros_like(head_weight)
        self.past_counts = torch.zeros(head_weight.shape[0], device=device)
        self.has_consolidated = torch.zeros(head_weight.shape[0], dtype=torch.bool, device=device)

    def state_dict(self) -> dict:
        """On the CPU, whatever the device: a checkpoint loads anywhere."""
        return {"consolidated": self.consolidated.cpu().clone(), "past_counts": self.past_counts.cpu().clone(),
                "has_consolidated": self.has_consolidated.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        for key in ("consolidated", "past_counts", "has_consolidated"):
            value, own = state.get(key), getattr(self, key)
            if not isinstance(value, torch.Tensor) or value.shape != own.shape or value.dtype != own.dtype:
                raise TinyclError(f"CWR* state {key}: expected {own.dtype} {list(own.shape)}")
            own.copy_(value.to(own.device))

    @torch.no_grad()
    def before_batch(self, current_classes: torch.Tensor) -> None:
        current_classes = current_classes.to(self.weight.device)
        restore = current_classes[self.has_consolidated[current_classes]]
        self.weight.zero_()
        self.weight[restore] = self.consolidated[restore]

    @torch.no_grad()
    def after_batch(self, current_classes: torch.Tensor, class_counts: torch.Tensor) -> None:
        """``class_counts``: examples per class this batch, replay memory included."""
        current_classes, class_counts = current_classes.to(self.weight.device), class_counts.to(self.weight.device)
        rows = self.weight[current_classes]
        centred = rows - rows.mean()
        counts = class_counts[current_classes].float()
        past = self.past_counts[current_classes]
        w_past = torch.sqrt(past / counts).unsqueeze(1)
        old = self.consolidated[current_classes]
        merged = torch.where(
            self.has_consolidated[current_classes].unsqueeze(1),
            (old * w_past + centred) / (w_past + 1),
            centred,
        )
        self.consolidated[current_classes] = merged
        self.has_consolidated[current_classes] = True
        self.past_counts += class_counts.float()
        self.weight[self.has_consolidated] = self.consolidated[self.has_consolidated]
