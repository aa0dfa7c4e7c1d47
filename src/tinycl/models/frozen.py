"""A frozen stage that cannot change: BatchNorm fixed to its running statistics, no gradients.

The frozen stage's output must never depend on the batch it is computed in nor change across a
run: the device runs it once per image with folded BN. A plain ``nn.BatchNorm2d`` switches to
batch statistics (and updates its running statistics) whenever anything calls ``.train()`` on
a module above it -- ``split`` shares modules with the whole model, so one stray
``model.train()`` (once: ``layer_table`` restoring the model's flag) silently corrupted every
float-frozen-stage figure. Here that is structurally impossible:

- every BatchNorm of the stage becomes a ``FrozenBatchNorm2d``: a ``BatchNorm2d`` (same
  parameters, buffers and state-dict keys, so weights, folding and INT8 conversion see a BN)
  whose forward always normalizes with the running statistics and whose ``train()`` keeps it
  in eval mode whoever calls it;
- every parameter has ``requires_grad`` off;
- ``FrozenStage`` (the stage's container) is always in eval mode and runs without autograd.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from tinycl.errors import TinyclError

# Modules whose forward depends on their train flag; a frozen stage may hold only BatchNorm2d
# (replaced below) of these.
MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.InstanceNorm2d)


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` in inference form whatever its mode: running statistics only, never updated."""

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        if not bn.track_running_stats or bn.running_mean is None:
            raise TinyclError("a frozen BatchNorm needs running statistics (track_running_stats=True)")
        frozen = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                     device=bn.running_mean.device, dtype=bn.running_mean.dtype)
        frozen.load_state_dict(bn.state_dict())
        frozen.requires_grad_(False)
        return frozen.eval()

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # training=False: F.batch_norm neither uses batch statistics nor writes the buffers.
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class FrozenStage(nn.Sequential):
    """The layers below the LR layer, frozen: eval mode always, no autograd, no trainable tensors."""

    def train(self, mode: bool = True) -> FrozenStage:  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return super().forward(x)


def freeze_batchnorms(module: nn.Module) -> int:
    """Replace every ``BatchNorm2d`` under ``module`` by a ``FrozenBatchNorm2d``, in place
    (the parent's attribute is swapped, so a model sharing the layer sees the frozen one)."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, FrozenBatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d.from_batchnorm(child))
            count += 1
        else:
            count += freeze_batchnorms(child)
    return count


def freeze_stage(layers: nn.Sequential) -> FrozenStage:
    """A ``FrozenStage`` over ``layers`` (modules shared, BNs swapped in place, grads off).

    Raises ``TinyclError`` if a mode-dependent module other than BatchNorm2d is left (its output
    would depend on who last called ``.train()``).
    """
    freeze_batchnorms(layers)
    stage = FrozenStage(*layers)
    stage.requires_grad_(False)
    stage.eval()
    for name, module in stage.named_modules():
        if isinstance(module, MODE_DEPENDENT) and not isinstance(module, FrozenBatchNorm2d):
            raise TinyclError(f"frozen layer {name} ({type(module).__name__}) depends on train/eval mode; "
                              "tinycl cannot freeze it")
    return stage


def state_digest(module: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (name, dtype, shape, bytes): equal iff bit-identical."""
    h = hashlib.sha256()
    tensors = [*module.named_parameters(), *module.named_buffers()]
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
