"""Produce the synthetic-pretrained backbone weights that ship in src/tinycl/weights/.

    python scripts/pretrain_synthetic.py --width 0.25 --res 64
    python scripts/pretrain_synthetic.py --model phinet --epochs 6 --out runs/phinet_w0.25_r64_synthetic_6ep.pt

The second line is the shortened PhiNet pretraining the sparse trade-off uses (6 epochs instead
of 30: 281 s instead of about 27 min on one thread); ``--out`` writes the weights there for
``--weights`` instead of into the package.

Runs exactly what ``tinycl run`` runs when no shipped or cached weights exist
(``tinycl.train.pretrain.pretrain`` on ``load_pretrain_corpus``), then saves the state dict
under the file name ``tinycl run`` looks for.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from tinycl.data.synthetic import load_pretrain_corpus
from tinycl.train.experiment import pretrain_corpus_config, pretrain_key
from tinycl.train.pretrain import SHIPPED_DIR, PretrainConfig, pretrain, save_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v1")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=PretrainConfig.epochs)
    parser.add_argument("--out", help="weights file (default: the shipped weights folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    syn = pretrain_corpus_config(0, args.res)
    cfg = PretrainConfig(args.model, args.width, args.res, pretrain_key(syn), epochs=args.epochs)
    start = time.perf_counter()
    corpus = load_pretrain_corpus(syn)

    def report(step: int, steps: int, loss: float) -> None:
        if step % 100 == 0 or step == steps:
            print(f"step {step}/{steps} loss {loss:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)

    state = pretrain(cfg, corpus, report)
    path = Path(args.out) if args.out else SHIPPED_DIR / cfg.file_name()
    save_atomic(state, path)
    print(f"wrote {path} ({path.stat().st_size:,} B) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
