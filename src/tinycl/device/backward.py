"""What the cost model prices in one training step: the adaptive stage's ops as backprop sees them.

``tinycl.train.sparse.backward_ops`` traces a (dense or channel-sparse) adaptive stage into a
list of ``BackwardOp``; ``tinycl.report.sparse_table`` prices it with the formulas of
``tinycl.device.costs`` and ``tinycl.device.memory``. The description lives here, with the cost
model, so that reports depend on the device model and never on the training code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackwardOp:
    """One op of the adaptive stage as backprop sees it, for one sample.

    ``kind``: conv | linear | pool | norm | relu | act (another element-wise activation). For conv
    and linear: ``kernel_hw``, ``groups``, the selectable ``channels`` and the ``chosen`` ones
    (equal when dense, 0 for bias-only), whether the selection slices the kept input
    (``slices_input``: input or depthwise selection) and whether the op's input gradient is
    computed (``input_grad``: False when its input comes straight from the frozen stage).
    """

    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel_hw: tuple[int, int] = (1, 1)
    groups: int = 1
    channels: int = 0
    chosen: int = 0
    slices_input: bool = True
    input_grad: bool = True
    weight_grad: bool = True
