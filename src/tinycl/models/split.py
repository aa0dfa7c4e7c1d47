"""Cut a model at its latent replay layer into a frozen and an adaptive stage."""

from __future__ import annotations

from torch import nn

from tinycl.errors import TinyclError


def layer_sequence(model: nn.Module) -> list[nn.Module]:
    if not hasattr(model, "layer_sequence"):
        raise TinyclError(f"{type(model).__name__} does not expose layer_sequence(); cannot split it")
    return list(model.layer_sequence())


def check_lr_layer(model: nn.Module, lr_layer: int) -> None:
    """The LR layer must leave at least the head in the adaptive stage."""
    last = len(layer_sequence(model)) - 2
    if not 0 <= lr_layer <= last:
        raise TinyclError(
            f"LR layer {lr_layer} out of range for {type(model).__name__}: choose 0..{last}"
        )


def split(model: nn.Module, lr_layer: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Return ``(frozen, adaptive)``: layers ``0..lr_layer`` and the rest, head included.

    The stages share their modules with ``model`` (no copy), so training the adaptive stage
    trains the model; ``adaptive(frozen(x))`` runs exactly the ops of ``model(x)``.
    """
    check_lr_layer(model, lr_layer)
    seq = layer_sequence(model)
    return nn.Sequential(*seq[: lr_layer + 1]), nn.Sequential(*seq[lr_layer + 1 :])
