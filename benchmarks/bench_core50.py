"""CORe50 streaming: decode and frozen-stage images/s at 128x128, and memory that must not grow.

    .venv/bin/python benchmarks/bench_core50.py [--sizes 1000,4000] [--stage-images 1024]
        [--chunk 256] [--stage-chunk 64] [--workers 1] [--threads 1] [--float-chunk 32]

Builds a fake CORe50 copy in the official layout in a temporary folder (128x128 RGB PNGs of
about the real files' size, ~49 KB, REFERENCES.md "CORe50"; and the same images as a stored
``core50_imgs.npz`` with ``paths.pkl``), then runs each measurement in a fresh process:

1. decode only, both layouts, ``--sizes`` images: ``iter_images`` images/s;
2. decode + frozen stage, PNG tree, ``--stage-images`` images: the paper's setting
   (MobileNetV1 width 1.0, 128x128, LR layer 19, REFERENCES.md) through the float PyTorch
   frozen stage (``frozen_forward``, chunks of ``--float-chunk``) and through the INT8
   integer-only one (``IntFrozenStage``, calibrated on the first 32 images, bit-exact with the
   int64 reference); decode and stage time are split, so stage images/s exclude decoding.

Memory, per run: peak RSS during streaming (``VmHWM``, kernel-tracked, so transient activations
inside a forward count; reset by ``/proc/self/clear_refs`` once the model is built and the
listing read), peak anonymous RSS sampled after each chunk (the process's own memory) and its
growth over the baseline, and peak file-backed RSS (pages of the memory-mapped npz, reclaimable
page cache). Decode-only runs compare fresh processes of each size; a stage run reports its
peaks so far at each quarter of one stream (same process, so allocator warm-up in the first
chunks is not mistaken for growth). Each must stay flat (target <= 1.1x). Weights are random:
throughput does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RES = 128
MODEL, WIDTH, LR_LAYER = "mobilenet_v1", 1.0, 19  # the paper's setting (REFERENCES.md)
CALIB_IMAGES = 32  # INT8 calibration set, decoded before streaming


def status_kib(*keys: str) -> dict[str, int]:
    """Fields of /proc/self/status in KiB (Linux)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            fields[key] = int(value.split()[0])
    return fields


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_kib() -> tuple[int, int]:
    """(anonymous, file-backed) resident memory of this process, KiB (Linux /proc)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon:", "RssFile:")):
            key, value = line.split(":")
            fields[key] = int(value.split()[0])
    return fields.get("RssAnon", 0), fields.get("RssFile", 0)


def fake_images(count: int, seed: int = 0) -> list[bytes]:
    """PNG bytes of smooth-plus-noise images, about as large as CORe50's (~49 KB)."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:RES, 0:RES]
    for i in range(count):
        base = np.stack([(xx * (i + 1) + yy * c) % 256 for c in (1, 2, 3)], -1)
        image = np.clip(base + rng.normal(0, 24, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def build(root: Path, total: int) -> None:
    from PIL import Image

    pngs = fake_images(16)
    paths = []
    for i in range(total):
        session, obj, frame = 1 + i // (50 * 300) % 11, i // 300 % 50, i % 300
        paths.append(f"s{session}/o{obj + 1}/C_{session:02d}_{obj + 1:02d}_{frame:03d}.png")
    for i, rel in enumerate(paths):
        target = root / "tree" / "core50_128x128" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(pngs[i % len(pngs)])
    decoded = [np.asarray(Image.open(root / "tree" / "core50_128x128" / p)) for p in paths[:16]]
    x = np.stack([decoded[i % 16] for i in range(total)])
    (root / "npz").mkdir()
    np.savez(root / "npz" / "core50_imgs.npz", x=x)  # stored: memory-mapped in place
    with open(root / "npz" / "paths.pkl", "wb") as handle:
        pickle.dump(paths, handle, protocol=2)


def make_stage(kind: str, layout, samples, float_chunk: int):
    """``images uint8 [n, H, W, 3] -> LR activations`` for ``kind`` none | float | int8."""
    if kind == "none":
        return lambda images: images[:, 0, 0, 0]
    import torch

    from tinycl.data.base import to_tensor_batch
    from tinycl.data.core50 import iter_images
    from tinycl.models import create_model
    from tinycl.quant import quantize_frozen_stage
    from tinycl.train.stages import frozen_forward, prepare_stages

    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=50, width=WIDTH)
    frozen, _ = prepare_stages(model, LR_LAYER, "frozen")
    if kind == "float":
        return lambda images: frozen_forward(frozen, images, float_chunk)
    calib, _ = next(iter_images(layout, samples[:CALIB_IMAGES], chunk=CALIB_IMAGES))
    stage = quantize_frozen_stage(frozen, to_tensor_batch(calib))
    return lambda images: stage(to_tensor_batch(images))


def child(root: Path, count: int, chunk: int, workers: int, stage_kind: str = "none",
          float_chunk: int = 32, threads: int = 0) -> dict:
    from tinycl.data.core50 import Core50Layout, Sample, iter_images

    if threads:
        import torch

        torch.set_num_threads(threads)
    layout = Core50Layout.detect(root)
    samples = [Sample(p, 0) for p in layout.image_paths()[:count]]
    if layout.array_file is not None:
        layout.images_array()
        layout.rows()
    stage = make_stage(stage_kind, layout, samples, float_chunk)
    hwm_reset = reset_peak_rss()
    base_anon, _ = rss_kib()
    base_rss = status_kib("VmRSS")["VmRSS"]
    peak_anon, peak_file, checksum, done = base_anon, 0, 0, 0
    trace = []  # (images so far, peak RSS MiB so far, peak anon MiB so far), after each chunk
    decode_s = stage_s = 0.0
    start = time.perf_counter()
    chunks = iter_images(layout, samples, chunk=chunk, workers=workers)
    while True:
        tick = time.perf_counter()
        item = next(chunks, None)
        tock = time.perf_counter()
        decode_s += tock - tick
        if item is None:
            break
        outputs = stage(item[0])
        stage_s += time.perf_counter() - tock
        checksum += float(np.asarray(outputs).reshape(len(outputs), -1)[:, 0].sum(dtype=np.float64))
        anon, file = rss_kib()
        peak_anon, peak_file = max(peak_anon, anon), max(peak_file, file)
        done += len(outputs)
        hwm = status_kib("VmHWM")["VmHWM"] / 1024 if hwm_reset else None
        trace.append((done, hwm, peak_anon / 1024))
        del item, outputs  # as a consumer would: only the chunk being processed stays alive
    seconds = time.perf_counter() - start
    peak_rss = status_kib("VmHWM")["VmHWM"] if hwm_reset else None
    return {"images": count, "images_per_s": count / seconds, "decode_images_per_s": count / decode_s,
            "stage_images_per_s": count / stage_s if stage_kind != "none" else None,
            "peak_anon_mib": peak_anon / 1024, "anon_growth_mib": (peak_anon - base_anon) / 1024,
            "peak_file_mib": peak_file / 1024, "base_rss_mib": base_rss / 1024,
            "peak_rss_mib": peak_rss / 1024 if peak_rss is not None else None, "checksum": checksum,
            "trace": trace}


def run_child(root: Path, count: int, args, stage_kind: str) -> dict:
    chunk = args.chunk if stage_kind == "none" else args.stage_chunk
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(root), str(count), "--stage", stage_kind,
         "--chunk", str(chunk), "--workers", str(args.workers), "--threads", str(args.threads),
         "--float-chunk", str(args.float_chunk)],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def flat_line(name: str, small: dict, large: dict, mapped: bool = False) -> str:
    """How peak memory grew from the smallest to the largest run. With a memory-mapped array
    (``mapped``) peak RSS also counts its file-backed pages (reclaimable page cache), so the
    target applies to anonymous memory only."""
    parts = [f"peak anon RSS x{large['peak_anon_mib'] / small['peak_anon_mib']:.2f}"]
    if small["peak_rss_mib"] and large["peak_rss_mib"]:
        total = f"peak RSS x{large['peak_rss_mib'] / small['peak_rss_mib']:.2f}"
        parts.insert(0, total + " (with file-backed pages of the mapped npz)" if mapped else total)
    return (f"{name}: {large['images'] / small['images']:.1f}x the images -> {', '.join(parts)}; "
            f"target: flat (<= 1.1x{' for anon' if mapped else ''})")


def stream_line(name: str, trace: list) -> str:
    """Peak memory so far at each quarter of one stream: flat from the first quarter on."""
    quarters = [next(t for t in trace if t[0] >= trace[-1][0] * q / 4) for q in (1, 2, 3, 4)]
    cells = ", ".join(f"{n}: {mib(rss)}/{anon:.1f}" for n, rss, anon in quarters)
    first, last = quarters[0], quarters[-1]
    growth = f"peak anon x{last[2] / first[2]:.2f}"
    if first[1] and last[1]:
        growth = f"peak RSS x{last[1] / first[1]:.2f}, " + growth
    return (f"{name}: peak RSS/anon MiB after {cells} images; {last[0] / first[0]:.1f}x the images -> {growth}; "
            f"target: flat (<= 1.1x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,4000", help="images per decode-only run")
    parser.add_argument("--stage-images", type=int, default=1024, help="images per decode + frozen-stage run")
    parser.add_argument("--stages", default="float,int8", help="frozen stages to run ('' for none)")
    parser.add_argument("--chunk", type=int, default=256, help="images decoded per chunk")
    parser.add_argument("--stage-chunk", type=int, default=64, help="images decoded per chunk, stage runs")
    parser.add_argument("--workers", type=int, default=1)
    # one thread by default: the project's machine is shared, and an oversubscribed multi-threaded
    # forward spends its time in synchronization (see int_frozen.MULTI_THREAD_CHUNK)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (0: torch's default)")
    parser.add_argument("--float-chunk", type=int, default=32, help="images per float frozen-stage pass")
    parser.add_argument("--stage", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), int(args.child[1]), args.chunk, args.workers,
                               args.stage, args.float_chunk, args.threads)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    stages = [s for s in args.stages.split(",") if s]
    total = max(sizes + [args.stage_images])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        build(root, total)
        tree_mb = sum(p.stat().st_size for p in (root / "tree").rglob("*.png")) / 1e6
        print(f"fake CORe50: {total} PNGs {RES}x{RES}, {tree_mb / total * 1e3:.1f} KB each, "
              f"built in {time.perf_counter() - start:.1f} s; chunk {args.chunk}, workers {args.workers}")
        print(f"{'layout':<6} {'images':>7} {'decode img/s':>12} {'peak RSS MiB':>13} {'peak anon MiB':>14} "
              f"{'anon growth MiB':>16} {'peak file MiB':>14}")
        results = {}
        for layout in ("tree", "npz"):
            for size in sizes:
                r = results[(layout, size)] = run_child(root / layout, size, args, "none")
                print(f"{layout:<6} {size:>7} {r['decode_images_per_s']:>12.0f} {mib(r['peak_rss_mib']):>13} "
                      f"{r['peak_anon_mib']:>14.1f} {r['anon_growth_mib']:>16.1f} {r['peak_file_mib']:>14.1f}")
        if stages:
            print(f"decode (PNG tree, chunks of {args.stage_chunk}) + frozen stage {MODEL} w{WIDTH} {RES}x{RES} "
                  f"layers 0..{LR_LAYER}, float in chunks of {args.float_chunk}, threads {args.threads or 'default'}:")
            print(f"{'stage':<6} {'images':>7} {'decode img/s':>12} {'stage img/s':>12} {'end-to-end':>11} "
                  f"{'peak RSS MiB':>13} {'peak anon MiB':>14} {'anon growth MiB':>16}")
            for kind in stages:
                r = results[kind] = run_child(root / "tree", args.stage_images, args, kind)
                print(f"{kind:<6} {args.stage_images:>7} {r['decode_images_per_s']:>12.0f} "
                      f"{r['stage_images_per_s']:>12.1f} {r['images_per_s']:>11.1f} {mib(r['peak_rss_mib']):>13} "
                      f"{r['peak_anon_mib']:>14.1f} {r['anon_growth_mib']:>16.1f}")
        chunk_mib = args.chunk * RES * RES * 3 / 2**20
        print(f"one decoded chunk = {chunk_mib:.1f} MiB")
        for layout in ("tree", "npz"):
            print(flat_line(f"decode {layout}", results[(layout, sizes[0])], results[(layout, sizes[-1])],
                            mapped=layout == "npz"))
        for kind in stages:
            print(stream_line(f"decode + {kind} stage", results[kind]["trace"]))
        if {"float", "int8"} <= set(stages):
            f, q = results["float"], results["int8"]
            ratio = q["stage_images_per_s"] / f["stage_images_per_s"]
            print(f"frozen stage {RES}x{RES} ({args.stage_images} images): float {f['stage_images_per_s']:.1f} img/s, "
                  f"int8 {q['stage_images_per_s']:.1f} img/s: ratio int8/float {ratio:.2f}x (target >= 0.5)")


if __name__ == "__main__":
    main()
