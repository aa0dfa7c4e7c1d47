"""Probes leave what they inspect exactly as they found it.

A layer table, a cost table or a fidelity check runs a model in eval mode without autograd.
``inspecting`` does that and restores, whatever happens inside, every module's own train flag
(not the top module's flag applied to all: ``split`` shares modules, and a model-wide
``.train(flag)`` once put the float frozen stage's BatchNorms in train mode), every parameter
and buffer, and torch's global RNG.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def inspecting(*modules: nn.Module) -> Iterator[None]:
    """Eval mode and ``torch.no_grad`` inside; modes, parameters, buffers and RNG restored after."""
    flags = {id(m): (m, m.training) for top in modules for m in top.modules()}
    tensors = {id(t): t for top in modules for t in top.state_dict(keep_vars=True).values()
               if isinstance(t, torch.Tensor)}
    saved = {key: t.detach().clone() for key, t in tensors.items()}
    rng = torch.get_rng_state()
    try:
        for module, _ in flags.values():
            module.training = False
        with torch.no_grad():
            yield
    finally:
        with torch.no_grad():
            for key, t in tensors.items():
                t.copy_(saved[key])
        for module, mode in flags.values():
            module.training = mode
        torch.set_rng_state(rng)
