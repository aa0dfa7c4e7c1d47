"""CORe50 reader: memory while decoding in chunks must not grow with the number of images.

    .venv/bin/python benchmarks/bench_core50.py [--sizes 1000,4000] [--chunk 256] [--workers 1]

Builds a fake CORe50 copy in the official layout in a temporary folder (128x128 RGB PNGs of
about the real files' size, ~49 KB, REFERENCES.md "CORe50"; and the same images as a stored
``core50_imgs.npz`` with ``paths.pkl``), then, for each size, decodes that many images with
``iter_images`` in a fresh process and prints images/s and memory: peak anonymous RSS (the
process's own memory; must stay flat across sizes), its growth over the baseline after the
listing, and peak file-backed RSS (pages of the memory-mapped npz, reclaimable page cache).
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


def child(root: Path, count: int, chunk: int, workers: int) -> dict:
    from tinycl.data.core50 import Core50Layout, Sample, iter_images

    layout = Core50Layout.detect(root)
    samples = [Sample(p, 0) for p in layout.image_paths()[:count]]
    if layout.array_file is not None:
        layout.images_array()
        layout.rows()
    base_anon, _ = rss_kib()
    peak_anon, peak_file, checksum = base_anon, 0, 0
    start = time.perf_counter()
    for images, _ in iter_images(layout, samples, chunk=chunk, workers=workers):
        checksum += int(images[:, 0, 0, 0].sum())
        anon, file = rss_kib()
        peak_anon, peak_file = max(peak_anon, anon), max(peak_file, file)
        del images  # as a consumer would: only the chunk being decoded stays alive
    seconds = time.perf_counter() - start
    return {"images": count, "images_per_s": count / seconds, "peak_anon_mib": peak_anon / 1024,
            "anon_growth_mib": (peak_anon - base_anon) / 1024, "peak_file_mib": peak_file / 1024,
            "checksum": checksum}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,4000")
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), int(args.child[1]), args.chunk, args.workers)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        build(root, max(sizes))
        tree_mb = sum(p.stat().st_size for p in (root / "tree").rglob("*.png")) / 1e6
        print(f"fake CORe50: {max(sizes)} PNGs {RES}x{RES}, {tree_mb / max(sizes) * 1e3:.1f} KB each, "
              f"built in {time.perf_counter() - start:.1f} s; chunk {args.chunk}, workers {args.workers}")
        print(f"{'layout':<6} {'images':>7} {'images/s':>9} {'peak anon MiB':>14} {'anon growth MiB':>16} "
              f"{'peak file MiB':>14}")
        results = {}
        for layout in ("tree", "npz"):
            for size in sizes:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(root / layout), str(size),
                     "--chunk", str(args.chunk), "--workers", str(args.workers)],
                    check=True, capture_output=True, text=True)
                r = json.loads(out.stdout)
                results[(layout, size)] = r
                print(f"{layout:<6} {size:>7} {r['images_per_s']:>9.0f} {r['peak_anon_mib']:>14.1f} "
                      f"{r['anon_growth_mib']:>16.1f} {r['peak_file_mib']:>14.1f}")
        small, large = sizes[0], sizes[-1]
        chunk_mib = args.chunk * RES * RES * 3 / 2**20
        for layout in ("tree", "npz"):
            a, b = results[(layout, small)], results[(layout, large)]
            ratio = b["peak_anon_mib"] / a["peak_anon_mib"]
            print(f"{layout}: {large / small:.1f}x the images -> peak anon RSS x{ratio:.2f}"
                  f" (one chunk = {chunk_mib:.1f} MiB); target: flat (<= 1.1x)")


if __name__ == "__main__":
    main()
