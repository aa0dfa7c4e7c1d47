"""Structured sparse update vs dense: host time per training step and bytes saved for backward.

The adaptive stage of MobileNetV1 (width 0.25, 64x64 input) above LR layer 19; every conv of
layers 20..26 gets the channel ratio (input channels; depthwise: its channels), the head stays
dense. One SGD step = forward, cross-entropy, backward, optimizer step (the learner's,
``make_optimizer``) on a mini-batch of 128 latents. "conv/lin B" = bytes the conv / linear
kernels keep for backward (their inputs, or the kept channel slices and indices) -- the
accounting of Paissan et al. and tiny-training, what a device kernel stores. "live B" =
distinct activation storage PyTorch keeps for the whole step (``saved_tensors_hooks``,
parameters excluded, shared tensors once): in eager PyTorch a ReLU keeps its full output for
its own backward, so the conv's sliced copy comes on top of it and
the live total would not drop: ``sparsify`` therefore swaps ReLUs for ``MaskedReLU`` (1-byte
masks; tiny-training counts 1 bit), the default ``relu_masks=True``.

    python benchmarks/bench_sparse.py [--steps 30 --batch 128 --threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from tinycl.models import split
from tinycl.models.mobilenet_v1 import MobileNetV1
from tinycl.train.optim import make_optimizer
from tinycl.train.sparse import SparseUpdateConfig, live_saved_bytes, sparsify

LR_LAYER = 19


def build(ratio: float | None, seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    model = MobileNetV1(num_classes=50, width=0.25)
    _, adaptive = split(model, LR_LAYER)
    if ratio is not None:
        ratios = {str(i): ratio for i in range(LR_LAYER + 1, 27)}
        sparsify(adaptive, SparseUpdateConfig(ratios=ratios, seed=seed), first_index=LR_LAYER + 1)
    return adaptive.train()


def saved_bytes(adaptive: torch.nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> int:
    """Distinct activation storage autograd keeps for backward in one step (parameters excluded)."""
    return live_saved_bytes(adaptive, lambda: torch.nn.functional.cross_entropy(adaptive(x), y))


def kernel_saved_bytes(adaptive: torch.nn.Sequential, x: torch.Tensor) -> int:
    """Bytes the conv / linear kernels alone keep (inputs, or their kept slices, and indices)."""
    params = {p.data_ptr() for p in adaptive.parameters()}
    total = 0
    inside = [False]

    def pack(t):
        nonlocal total
        if inside[0] and t.data_ptr() not in params:
            total += t.numel() * t.element_size()
        return t

    def enter(*_):
        inside[0] = True

    def leave(*_):
        inside[0] = False

    ops = [m for m in adaptive.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    handles = [m.register_forward_pre_hook(enter) for m in ops] + [m.register_forward_hook(leave) for m in ops]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        adaptive(x).sum().backward()
    for h in handles:
        h.remove()
    return total


def step_time_s(adaptive: torch.nn.Sequential, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    # The learner's optimizer: sparse layers' weights move on the chosen channels only.
    opt = make_optimizer(adaptive, lr=1e-3, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):  # warm-up
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(adaptive(x), y).backward()
        opt.step()
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(adaptive(x), y).backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(args.batch, 128, 4, 4, generator=gen))  # layer-19 latents
    y = torch.randint(0, 50, (args.batch,), generator=gen)

    dense = build(None)
    dense_s = step_time_s(dense, x, y, args.steps)
    dense_all = saved_bytes(dense, x, y)
    dense_kernel = kernel_saved_bytes(dense, x)
    print(f"MobileNetV1 w0.25 @64px, adaptive stage above layer {LR_LAYER}, batch {args.batch}, "
          f"{args.steps} steps, {args.threads} thread(s)")
    print(f"{'ratio':>6} {'dense ms':>9} {'sparse ms':>10} {'time ratio':>10} "
          f"{'live B dense':>14} {'live B sparse':>15} {'bytes ratio':>11} "
          f"{'conv/lin B dense':>17} {'conv/lin B sparse':>18} {'ratio':>6}")
    for ratio in (1.0, 0.5, 0.25):
        sparse = build(ratio)
        sparse_s = step_time_s(sparse, x, y, args.steps)
        sparse_all = saved_bytes(sparse, x, y)
        sparse_kernel = kernel_saved_bytes(sparse, x)
        print(f"{ratio:>6} {dense_s * 1e3:>9.2f} {sparse_s * 1e3:>10.2f} {sparse_s / dense_s:>10.2f} "
              f"{dense_all:>14,} {sparse_all:>15,} {sparse_all / dense_all:>11.3f} "
              f"{dense_kernel:>17,} {sparse_kernel:>18,} {sparse_kernel / dense_kernel:>6.3f}")


if __name__ == "__main__":
    main()
