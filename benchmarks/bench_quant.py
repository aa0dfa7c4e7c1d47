"""Integer frozen stage vs float PyTorch forward, and Q-bit unpack throughput, in one run.

    .venv/bin/python benchmarks/bench_quant.py [--images 64] [--repeats 5] [--threads 1]

Prints images/s of the INT8 integer-only frozen stage (``IntFrozenStage.forward_int``, bit-exact
with the int64 reference) and of the float forward of the same layers (conv -> BN -> ReLU,
eval mode, float32), their ratio (target >= 0.5x, issue 3), and unpack throughput in values/s
for Q in 8, 7, 4 on LRs of 32,768 values (layer 19 at 128x128, REFERENCES.md).

The float forward is timed in chunks of 32 images and in chunks as small as the integer path's
(which picks them to stay in cache); the ratio is taken against the faster of the two, so the
cache effect is not credited to the integer arithmetic. Float and integer repeats alternate, so
both see the same machine load; each figure is the best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
import torch

from tinycl.models import create_model, split
from tinycl.quant import pack_bits, quantize_frozen_stage, unpack_bits

FLOAT_CHUNK = 32
EXACT_CHECK_IMAGES = 3  # compared with the int64 reference: crosses a chunk boundary


def best_time_s(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN builds its kernels on the first call of each shape
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_times_s(fns: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each function, their repeats interleaved (same load for all)."""
    for fn in fns.values():
        fn()  # warm-up
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_frozen(width: float, res: int, lr_layer: int, images: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = create_model("mobilenet_v1", num_classes=50, width=width).eval()
    frozen, _ = split(model, lr_layer)
    frozen.eval()
    calib = torch.randn(32, 3, res, res)
    stage = quantize_frozen_stage(frozen, calib)
    x = torch.randn(images, 3, res, res)
    x_int = stage.quantize_input(x)
    int_chunk = stage.auto_chunk(res, res)

    def run_float(chunk: int):
        with torch.no_grad():
            for start in range(0, images, chunk):
                frozen(x[start : start + chunk])

    times = best_times_s({
        "float": lambda: run_float(FLOAT_CHUNK),
        "float_small": lambda: run_float(int_chunk),
        "int": lambda: stage.forward_int(x_int),
    }, repeats)
    float_s = min(times["float"], times["float_small"])
    check = x_int[:EXACT_CHECK_IMAGES]
    exact = torch.equal(stage.forward_int(check, return_all=True)[-1],
                        stage.forward_reference_int64(check))
    dtypes = sorted({str(layer.exact_dtype).replace("torch.", "") for layer in stage.layers})
    paths = Counter(layer.requant_path for layer in stage.layers)
    print(
        f"mobilenet_v1 w{width} res{res} layers 0..{lr_layer}: "
        f"float {images / times['float']:7.1f} img/s (chunk {FLOAT_CHUNK}), "
        f"{images / times['float_small']:7.1f} img/s (chunk {int_chunk}) | "
        f"int {images / times['int']:7.1f} img/s (chunk {int_chunk}) | "
        f"ratio int/float {float_s / times['int']:.2f}x (vs the faster float; target >= 0.5) | "
        f"exact vs int64 reference: {exact} | conv dtypes {','.join(dtypes)} | "
        f"requant {', '.join(f'{k} x{v}' for k, v in sorted(paths.items()))}"
    )


def bench_unpack(latents: int, values: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    for bits in (8, 7, 4):
        codes = rng.integers(0, 2**bits, (latents, values), dtype=np.uint8)
        packed = pack_bits(codes, bits)
        unpack_s = best_time_s(lambda p=packed, b=bits: unpack_bits(p, b, values), repeats)
        pack_s = best_time_s(lambda c=codes, b=bits: pack_bits(c, b), repeats)
        print(
            f"Q={bits}: {latents} LRs x {values} values, {packed.shape[1]} B/LR | "
            f"unpack {latents * values / unpack_s / 1e6:8.1f} M values/s | "
            f"pack {latents * values / pack_s / 1e6:8.1f} M values/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_frozen(1.0, 128, 19, args.images, args.repeats)
    bench_frozen(0.5, 64, 11, args.images, args.repeats)
    bench_unpack(128, 32768, args.repeats)


if __name__ == "__main__":
    main()
