"""Labelled image sets, the common currency of every benchmark and user data path."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinycl.errors import TinyclError

# ImageNet statistics used by ar1-pytorch's preprocessing: images / 255, then mean/std
# (REFERENCES.md, "Latent replay recipe").
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageSet:
    """Images ``uint8 [N, H, W, 3]`` with int64 labels and CORe50-style metadata.

    ``sessions`` are 1-based session ids (CORe50 s1..s11), ``objects`` 0-based object ids,
    ``frames`` the frame index inside its (object, session) video; -1 where unknown.
    """

    images: np.ndarray
    labels: np.ndarray
    sessions: np.ndarray
    objects: np.ndarray
    frames: np.ndarray
    # Which per-sample ids the data really carries ("sessions", "objects"): user data without
    # them gets placeholders (session 1, one object per label) that protocols must not trust.
    ids: frozenset[str] = frozenset({"sessions", "objects"})

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise TinyclError(
                f"images must be uint8 [N, H, W, 3], got {self.images.dtype} {self.images.shape}"
            )
        for name in ("labels", "sessions", "objects", "frames"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise TinyclError(f"{name} must have shape ({n},), got {arr.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def res(self) -> int:
        return int(self.images.shape[1])

    def subset(self, index: np.ndarray) -> ImageSet:
        return ImageSet(
            self.images[index], self.labels[index], self.sessions[index],
            self.objects[index], self.frames[index], self.ids,
        )


def to_tensor_batch(images: np.ndarray):
    """uint8 NHWC -> float32 NCHW normalized as ar1-pytorch does (/255, ImageNet mean/std)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def resize_images(images: np.ndarray, res: int) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 [N, res, res, 3], bilinear (PIL, integer arithmetic: the
    same bytes on every machine). The ``--resize`` preprocessing; a no-op at the same size."""
    from PIL import Image

    if images.shape[1:3] == (res, res):
        return images
    out = np.empty((len(images), res, res, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(image).resize((res, res), Image.BILINEAR))
    return out
