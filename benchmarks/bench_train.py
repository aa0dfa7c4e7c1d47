"""Adaptive-stage training throughput: tinycl's Learner vs a plain hand-written PyTorch loop.

Both train the same adaptive stage (MobileNetV1 above the LR layer, batch renorm as in the
recipe) on the same latents with the same batch composition (cur new + replays per
mini-batch of 128) for the same number of steps, in one process, one after the other.

    python benchmarks/bench_train.py [--width 0.25 --res 64 --lr-layer 19 --steps 60]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from tinycl.models import create_model, split
from tinycl.prng import Pcg32
from tinycl.replay.codecs import Float32Codec
from tinycl.replay.memory import LatentReplayMemory
from tinycl.train.batch_renorm import replace_batchnorm
from tinycl.train.learner import Learner, minibatch_plan


def plain_loop(adaptive, new_x, new_y, mem_x, mem_y, epochs, minibatch, lr):
    """The reference: what a user would write by hand with no tinycl in sight."""
    opt = torch.optim.SGD(adaptive.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    cur, n_replay, iterations = minibatch_plan(len(new_x), len(mem_x), minibatch)
    adaptive.train()
    steps = 0
    for _ in range(epochs):
        perm_new = torch.randperm(len(new_x))
        perm_mem = torch.randperm(len(mem_x))
        for it in range(iterations):
            pick = perm_new[it * cur : (it + 1) * cur]
            slots = perm_mem[torch.arange(it * n_replay, (it + 1) * n_replay) % len(mem_x)]
            x = torch.cat([new_x[pick], mem_x[slots]])
            y = torch.cat([new_y[pick], mem_y[slots]])
            loss = torch.nn.functional.cross_entropy(adaptive(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    return steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--lr-layer", type=int, default=19)
    ap.add_argument("--new", type=int, default=100)  # the default run: 5 videos x 20 frames
    ap.add_argument("--replays", type=int, default=750)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("mobilenet_v1", width=args.width)
    frozen, adaptive = split(model, args.lr_layer)
    replace_batchnorm(adaptive)
    with torch.no_grad():
        shape = frozen.eval()(torch.zeros(1, 3, args.res, args.res)).shape[1:]
    new_x = torch.rand(args.new, *shape)
    new_y = torch.randint(0, 50, (args.new,))
    mem_x = torch.rand(args.replays, *shape)
    mem_y = torch.randint(0, 50, (args.replays,))

    # Warm-up (oneDNN primitive creation, allocator) for both paths, outside the timings.
    plain_loop(copy.deepcopy(adaptive), new_x, new_y, mem_x, mem_y, 1, 128, 1e-3)
    ref = copy.deepcopy(adaptive)
    t0 = time.perf_counter()
    ref_steps = plain_loop(ref, new_x, new_y, mem_x, mem_y, args.epochs, 128, 1e-3)
    ref_s = time.perf_counter() - t0

    memory = LatentReplayMemory(args.replays, Float32Codec(mem_x[0].numel()), 50)
    memory.update(mem_x, mem_y, 0, Pcg32(0))
    def make_learner(epochs: int) -> Learner:
        return Learner(copy.deepcopy(adaptive), memory, lr=1e-3, inc_lr=1e-3, momentum=0.9,
                       weight_decay=5e-4, epochs=epochs, minibatch=128, norm="brn", cwr=False,
                       num_classes=50, seed=0)

    make_learner(1).fit(new_x, new_y)
    learner = make_learner(args.epochs)
    t0 = time.perf_counter()
    stats, _ = learner.fit(new_x, new_y)
    ours_s = time.perf_counter() - t0
    assert stats.steps == ref_steps
    samples = ref_steps * 128
    print(f"adaptive stage: mobilenet_v1 w{args.width:g} r{args.res} above layer {args.lr_layer}, "
          f"latent {tuple(shape)}, {ref_steps} steps of 128 ({args.new} new + {args.replays} replays, "
          f"{args.epochs} epochs), {args.threads} thread(s)")
    print(f"plain PyTorch loop : {samples / ref_s:8.0f} samples/s ({1000 * ref_s / ref_steps:.1f} ms/step)")
    print(f"tinycl Learner.fit : {samples / ours_s:8.0f} samples/s ({1000 * ours_s / ref_steps:.1f} ms/step)")
    print(f"ratio tinycl / plain: {ref_s / ours_s:.2f}x (target >= 0.9x)")


if __name__ == "__main__":
    main()
