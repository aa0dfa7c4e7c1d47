"""The adaptive stage's optimizer: SGD with momentum and weight decay (ar1-pytorch recipe).

With a structured sparse update (``tinycl.train.sparse``) torch's SGD would still move every
row of a sparse layer's weight: weight decay adds ``wd * W`` to the exactly-zero gradient of
the channels left out of the step, and momentum keeps pushing them along their old buffer.
``ChannelSGD`` applies decay and momentum to the chosen channels only: the other rows of the
weight and of its momentum buffer stay bit-identical, as on a device that never touches them
(Paissan et al., CVPRW 2024: only the selected channels are updated). Every other parameter
(and every parameter of a dense run) gets torch's SGD, bit-identical, through torch's code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from tinycl.train.sparse import sparse_modules

# For one weight: (axis, channels) of the rows its last training step updated; channels None =
# every row. ``SparseConv2d.updated_channels`` / ``SparseLinear.updated_channels`` answer it.
ChannelQuery = Callable[[], tuple[int, torch.Tensor | None]]


class ChannelSGD(torch.optim.SGD):
    """``torch.optim.SGD`` (momentum, weight decay, nesterov) with channel-sparse weights.

    ``channel_queries`` maps a Parameter to a function returning the (axis, channels) its
    last gradient covers. For those parameters decay and momentum touch only those channels
    (the momentum buffer stays a full tensor, keyed ``momentum_buffer`` as in torch, so
    ``state_dict()`` / ``load_state_dict()`` are torch's and interchangeable with SGD's).
    A query answering channels None (ratio 1, dense) gives torch's update. No dampening
    argument: with it, a row chosen for the first time would differ from torch's first step.
    """

    def __init__(self, params: Iterable[nn.Parameter], *, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False,
                 channel_queries: dict[nn.Parameter, ChannelQuery] | None = None):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         nesterov=nesterov)
        self.channel_queries = dict(channel_queries or {})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Hide the channel-sparse gradients from torch's step, run it, then update their rows.
        held: list[tuple[nn.Parameter, torch.Tensor, int, torch.Tensor, dict]] = []
        for group in self.param_groups:
            for p in group["params"]:
                query = self.channel_queries.get(p)
                if query is None or p.grad is None:
                    continue
                axis, channels = query()
                if channels is None:
                    continue  # dense this step: torch's update
                held.append((p, p.grad, axis, channels, group))
                p.grad = None
        try:
            super().step()
        finally:
            for p, grad, _, _, _ in held:
                p.grad = grad
        for p, grad, axis, channels, group in held:
            self._channel_step(p, grad, axis, channels, group)
        return loss

    def _channel_step(self, p: nn.Parameter, grad: torch.Tensor, axis: int, channels: torch.Tensor,
                      group: dict) -> None:
        """torch's ``_single_tensor_sgd`` on the rows ``channels`` of ``p`` along ``axis``."""
        if channels.numel() == 0:
            return
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        d_p = grad.index_select(axis, channels)
        if group["maximize"]:
            d_p = -d_p
        rows = p.index_select(axis, channels)
        if wd != 0:
            d_p = d_p.add(rows, alpha=wd)
        if momentum != 0:
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                # Rows never updated keep a zero buffer: 0 * momentum + d_p = d_p, torch's
                # first step, whenever they are first chosen.
                buf = state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                buf_rows = d_p.clone()
            else:
                buf_rows = buf.index_select(axis, channels).mul_(momentum).add_(d_p, alpha=1 - group["dampening"])
            buf.index_copy_(axis, channels, buf_rows)
            d_p = d_p.add(buf_rows, alpha=momentum) if group["nesterov"] else buf_rows
        p.index_copy_(axis, channels, rows.add_(d_p, alpha=-lr))


def make_optimizer(adaptive: nn.Module, *, lr: float, momentum: float, weight_decay: float
                   ) -> ChannelSGD:
    """SGD over the adaptive stage's trainable parameters; sparse layers' weights move only on
    the channels chosen for the step (``ChannelSGD``)."""
    queries = {m.weight: m.updated_channels for m in sparse_modules(adaptive) if m.weight.requires_grad}
    return ChannelSGD(
        [p for p in adaptive.parameters() if p.requires_grad],
        lr=lr, momentum=momentum, weight_decay=weight_decay, channel_queries=queries,
    )
