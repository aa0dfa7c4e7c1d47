"""Contact sheets of the synthetic-core50 benchmark, for a person to look at.

    python scripts/show_synthetic.py --out synthetic.png [--res 64] [--seed 0] [--by category]

``--by category``: one row per category, its 5 objects in sessions 1 and 3 (train, test).
``--by session``: one row per session (s1..s11), one object of each category.
``--by video``: consecutive frames of a few videos (smooth motion).
``--by pretrain``: the pretraining corpus, one row per class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tinycl.data import synthetic
from tinycl.data.synthetic import (
    CATEGORY_NAMES,
    NUM_CATEGORIES,
    NUM_SESSIONS,
    OBJECTS_PER_CATEGORY,
    SyntheticConfig,
)

LABEL_PX = 90  # left margin for row labels


def render(obj: int, session: int, config: SyntheticConfig, frames: int) -> np.ndarray:
    """The video of one (object, session) as the benchmark renders it."""
    rng = np.random.default_rng([config.seed, synthetic._TAG_VIDEO, obj, session])
    spec = synthetic.object_specs(config.seed)[obj]
    scene = synthetic.session_specs(config.seed)[session - 1]
    return synthetic.render_video(spec, scene, frames, config.res, rng)


def sheet(rows: list[list[np.ndarray]], labels: list[str], res: int) -> Image.Image:
    """Tiles ``rows`` of [res, res, 3] images with a 2-pixel gap and a label per row."""
    gap = 2
    cols = max(len(r) for r in rows)
    canvas = Image.new(
        "RGB", (LABEL_PX + cols * (res + gap), len(rows) * (res + gap)), (255, 255, 255)
    )
    draw = ImageDraw.Draw(canvas)
    for r, (row, label) in enumerate(zip(rows, labels, strict=True)):
        top = r * (res + gap)
        draw.text((4, top + res // 2 - 6), label, fill=(0, 0, 0))
        for c, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (LABEL_PX + c * (res + gap), top))
    return canvas


def by_category(config: SyntheticConfig) -> tuple[list[list[np.ndarray]], list[str]]:
    rows, labels = [], []
    for category in range(NUM_CATEGORIES):
        row = []
        for session in (1, 3):
            for k in range(OBJECTS_PER_CATEGORY):
                row.append(render(category * OBJECTS_PER_CATEGORY + k, session, config, 1)[0])
        rows.append(row)
        labels.append(f"{CATEGORY_NAMES[category]} s1|s3")
    return rows, labels


def by_session(config: SyntheticConfig) -> tuple[list[list[np.ndarray]], list[str]]:
    rows, labels = [], []
    for session in range(1, NUM_SESSIONS + 1):
        objects = [c * OBJECTS_PER_CATEGORY + (session % OBJECTS_PER_CATEGORY) for c in range(10)]
        rows.append([render(o, session, config, 1)[0] for o in objects])
        test = " (test)" if session in synthetic.TEST_SESSIONS else ""
        labels.append(f"s{session}{test}")
    return rows, labels


def by_video(config: SyntheticConfig) -> tuple[list[list[np.ndarray]], list[str]]:
    rows, labels = [], []
    for obj, session in ((0, 1), (12, 2), (23, 5), (37, 8), (48, 11)):
        rows.append(list(render(obj, session, config, config.frames)))
        labels.append(f"o{obj} s{session}")
    return rows, labels


def by_pretrain(config: SyntheticConfig) -> tuple[list[list[np.ndarray]], list[str]]:
    small = SyntheticConfig(
        seed=config.seed, res=config.res, pretrain_classes=12, pretrain_per_class=20
    )
    corpus = synthetic.generate_pretrain_corpus(small)
    rows, labels = [], []
    for cls in range(small.pretrain_classes):
        images = corpus.images[corpus.labels == cls]
        rows.append(list(images[::2]))
        labels.append(f"class {cls}")
    return rows, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("synthetic_core50.png"))
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--by", choices=("category", "session", "video", "pretrain"), default="category"
    )
    args = parser.parse_args()
    config = SyntheticConfig(seed=args.seed, res=args.res, frames=args.frames)
    builders = {
        "category": by_category, "session": by_session, "video": by_video,
        "pretrain": by_pretrain,
    }
    rows, labels = builders[args.by](config)
    sheet(rows, labels, config.res).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
