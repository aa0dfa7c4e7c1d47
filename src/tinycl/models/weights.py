"""Loading weights users hand us: never executes code, checks every tensor's shape."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from tinycl.errors import TinyclError


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)``: a pickle that tries to run code is refused."""
    if not path.is_file():
        raise TinyclError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError,
            ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TinyclError(f"cannot load weights {path}: {first}") from None
    except Exception as exc:  # noqa: BLE001 - a damaged archive fails in many more ways; one line for all
        raise TinyclError(f"cannot load weights {path}: damaged or not a weights file ({type(exc).__name__})") \
            from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TinyclError(f"weights file {path} does not hold a state dict of tensors")
    for name, tensor in state.items():
        problem = tensor_problem(tensor)
        if problem:
            raise TinyclError(f"weights file {path}: tensor {name!r} {problem}")
    return state


def tensor_problem(tensor: torch.Tensor) -> str | None:
    """Why a tensor cannot be weights (None: a plain dense CPU tensor of real numbers that are
    all finite). Sparse, quantized, meta, complex or non-finite tensors are refused rather than
    converted: each would be silently wrong or crash later."""
    if tensor.layout != torch.strided:
        return f"is {str(tensor.layout).replace('torch.', '')}, not a dense tensor"
    if tensor.is_quantized:
        return "is quantized; tinycl quantizes the frozen stage itself from float weights"
    if tensor.device.type != "cpu":
        return f"is on {tensor.device.type}, not cpu"
    if tensor.is_complex() or tensor.dtype == torch.bool:
        return f"has dtype {tensor.dtype}"
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        return "holds NaN or Inf values"
    return None


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                  skip_prefixes: tuple[str, ...] = ("head.",)) -> list[str]:
    """Copy every tensor except the head into ``model``; a missing or misshapen one is an error.

    Returns the names skipped (the head, whose classes differ between pretraining and CL).
    """
    own = model.state_dict()
    skipped = [k for k in own if k.startswith(skip_prefixes)]
    for name, tensor in own.items():
        if name in skipped:
            continue
        if name not in state:
            raise TinyclError(f"weights {source} lack tensor {name!r}")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise TinyclError(
                f"weights {source}: tensor {name!r} has shape {tuple(state[name].shape)}, "
                f"the model needs {tuple(tensor.shape)}"
            )
    with torch.no_grad():
        for name, tensor in own.items():
            if name not in skipped:
                tensor.copy_(state[name].to(tensor.dtype))
    return skipped
