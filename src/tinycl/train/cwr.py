"""CWR* head consolidation (Lomonaco & Maltoni; ar1-pytorch ``consolidate_weights``).

Before a batch the head's rows are zeroed except the current classes, which start from
their consolidated weights; after it each current class's row, centred on the mean of the
current rows, is merged into the consolidated weights with weight sqrt(past / current).
"""

from __future__ import annotations

import torch

from tinycl.errors import TinyclError


class CWRStar:
    def __init__(self, head_weight: torch.Tensor):
        self.weight = head_weight  # the live head weight [classes, features]
        self.consolidated = torch.zeros_like(head_weight)
        self.past_counts = torch.zeros(head_weight.shape[0])
        self.has_consolidated = torch.zeros(head_weight.shape[0], dtype=torch.bool)

    def state_dict(self) -> dict:
        return {"consolidated": self.consolidated.clone(), "past_counts": self.past_counts.clone(),
                "has_consolidated": self.has_consolidated.clone()}

    def load_state_dict(self, state: dict) -> None:
        for key in ("consolidated", "past_counts", "has_consolidated"):
            value, own = state.get(key), getattr(self, key)
            if not isinstance(value, torch.Tensor) or value.shape != own.shape or value.dtype != own.dtype:
                raise TinyclError(f"CWR* state {key}: expected {own.dtype} {list(own.shape)}")
            own.copy_(value)

    @torch.no_grad()
    def before_batch(self, current_classes: torch.Tensor) -> None:
        self.weight.zero_()
        self.weight[current_classes] = self.consolidated[current_classes]

    @torch.no_grad()
    def after_batch(self, current_classes: torch.Tensor, class_counts: torch.Tensor) -> None:
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
        self.past_counts[current_classes] += counts
        # Evaluate with every consolidated class row.
        self.weight.copy_(torch.where(self.has_consolidated.unsqueeze(1), self.consolidated,
                                      torch.zeros_like(self.weight)))
