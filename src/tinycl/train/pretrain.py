"""Pretraining the backbone on the synthetic corpus (the stand-in for ImageNet).

The weights are cached on disk, keyed by the model, width, resolution and corpus; the
default configuration's weights ship with the package (``scripts/pretrain_synthetic.py``
produces them with this very function).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tinycl.data.base import ImageSet, to_tensor_batch
from tinycl.fileio import atomic_writer, cache_root
from tinycl.models import create_model

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"
PRETRAIN_VERSION = 2


@dataclass(frozen=True)
class PretrainConfig:
    model: str
    width: float
    res: int
    corpus_key: str  # identifies the corpus (its generator config)
    epochs: int = 30
    batch: int = 64
    lr: float = 0.05
    seed: int = 0

    def file_name(self) -> str:
        # The device is not part of the name: CPU and CUDA weights differ in float rounding
        # only, and either serves any run.
        text = repr((PRETRAIN_VERSION, self))
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return f"{self.model}_w{self.width:g}_r{self.res}_{digest}.pt"


def cache_dir() -> Path:
    """``$TINYCL_CACHE`` (default ``~/.cache/tinycl``): synthetic data, weights, latents."""
    return cache_root()


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 1/8 of the image (padding by reflection)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    pad = max(1, h // 8)
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    return padded[:, :, dy : dy + h, dx : dx + w]


# Progress is reported every PROGRESS_STEPS SGD steps (and at the last).
PROGRESS_STEPS = 10


def pretrain(cfg: PretrainConfig, corpus: ImageSet, progress=None, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Supervised training on the corpus classes; returns the state dict (head included).
    ``progress(step, steps, loss)`` is called at step 0 and every PROGRESS_STEPS steps."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    classes = int(corpus.labels.max()) + 1
    model = create_model(cfg.model, num_classes=classes, width=cfg.width).to(device)
    x_all = to_tensor_batch(corpus.images)
    y_all = torch.from_numpy(corpus.labels)
    steps = cfg.epochs * (len(corpus) // cfg.batch)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=5e-4,
                          nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    step = 0
    if progress:
        progress(0, steps, float("nan"))
    for _epoch in range(cfg.epochs):
        order = torch.from_numpy(rng.permutation(len(corpus)))
        for i in range(len(corpus) // cfg.batch):
            pick = order[i * cfg.batch : (i + 1) * cfg.batch]
            loss = loss_fn(model(augment(x_all[pick], gen).to(device)), y_all[pick].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress and (step % PROGRESS_STEPS == 0 or step == steps):
                progress(step, steps, loss.item())
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_atomic(state: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_writer(path) as fh:
        torch.save(state, fh)


def find_pretrained(cfg: PretrainConfig) -> Path | None:
    """Shipped weights first, then the cache."""
    for folder in (SHIPPED_DIR, cache_dir() / "weights"):
        path = folder / cfg.file_name()
        if path.is_file():
            return path
    return None
