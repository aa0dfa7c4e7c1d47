"""ImageNet-pretrained weights from other libraries' files, mapped onto tinycl's models.

Nothing is downloaded: the user hands us a local file, read with ``torch.load(weights_only=True)``
(``weights.read_state_dict``), so a pickle that tries to run code is refused.

pytorchcv ``mobilenet_w1`` (osmr/pytorchcv, ``pytorchcv/models/mobilenet.py``, checked at commit
08805dd): ``features.init_block`` is a conv3x3 block (``conv``, ``bn``, ``activ``); then
``features.stage1..stage5`` hold 1, 2, 2, 6, 2 depthwise-separable units, each ``unitU`` with a
``dw_conv`` and a ``pw_conv`` block (``conv`` without bias, ``bn``); ``output`` is
``Linear(1024, 1000)`` with bias. The 13 units in order are MobileNetV1's 13 blocks, the same
channels and strides as ``mobilenet_v1.BLOCKS``, so tinycl's ``features[0]`` is the init block and
``features[2k-1]`` / ``features[2k]`` are the k-th unit's ``dw_conv`` / ``pw_conv``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tinycl.errors import TinyclError
from tinycl.models.mobilenet_v1 import BLOCKS, MobileNetV1
from tinycl.models.weights import load_backbone, read_state_dict

# Units per stage in pytorchcv's get_mobilenet: channels [[64], [128]*2, [256]*2, [512]*6, [1024]*2].
PYTORCHCV_STAGE_UNITS = (1, 2, 2, 6, 2)
# tinycl's Sequential(Conv2d, BatchNorm2d, ReLU) index -> pytorchcv ConvBlock attribute.
_PARTS = {"0": "conv", "1": "bn"}


def pytorchcv_mobilenet_names(model: MobileNetV1) -> dict[str, str]:
    """tinycl state-dict name -> pytorchcv name, for every backbone tensor (not the head)."""
    assert sum(PYTORCHCV_STAGE_UNITS) == len(BLOCKS)
    blocks = ["features.init_block"]
    for stage, units in enumerate(PYTORCHCV_STAGE_UNITS, start=1):
        for unit in range(1, units + 1):
            prefix = f"features.stage{stage}.unit{unit}"
            blocks += [f"{prefix}.dw_conv", f"{prefix}.pw_conv"]
    names: dict[str, str] = {}
    for name in model.state_dict():
        if not name.startswith("features."):
            continue
        _, layer, part, tensor = name.split(".", 3)
        names[name] = f"{blocks[int(layer)]}.{_PARTS[part]}.{tensor}"
    return names


def import_pytorchcv_mobilenet(path: Path | str, model: torch.nn.Module) -> list[str]:
    """Load a pytorchcv ``mobilenet_w1`` (or ``_w3d4``, ``_wd2``, ``_wd4`` into the same width)
    state dict into tinycl's MobileNetV1, checking every tensor's shape.

    Returns the tinycl names left as they were: the head, whose 1000 ImageNet classes (and
    bias) do not match the CL classes. Any missing, misshapen or unexpected tensor raises one
    ``TinyclError`` line naming it.
    """
    path = Path(path)
    if not isinstance(model, MobileNetV1):
        raise TinyclError(
            f"pytorchcv MobileNet weights fit tinycl's mobilenet_v1 only, not {type(model).__name__}"
        )
    state = read_state_dict(path)
    names = pytorchcv_mobilenet_names(model)
    own = model.state_dict()
    known = set(names.values())
    unexpected = [k for k in state if k not in known and not k.startswith("output.")]
    if unexpected:
        raise TinyclError(
            f"weights {path}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} in all); "
            f"not a pytorchcv mobilenet state dict"
        )
    renamed: dict[str, torch.Tensor] = {}
    for ours, theirs in names.items():
        if theirs not in state:
            if ours.endswith("num_batches_tracked"):
                # Older pytorchcv files (converted from other frameworks) lack this counter;
                # it never enters eval-mode arithmetic.
                renamed[ours] = own[ours]
                continue
            raise TinyclError(f"weights {path} lack tensor {theirs!r} (tinycl {ours!r})")
        if tuple(state[theirs].shape) != tuple(own[ours].shape):
            raise TinyclError(
                f"weights {path}: tensor {theirs!r} has shape {tuple(state[theirs].shape)}, "
                f"tinycl's mobilenet_v1 (width {model.width}) needs {tuple(own[ours].shape)} for {ours!r}"
            )
        renamed[ours] = state[theirs]
    return load_backbone(model, renamed, str(path))
