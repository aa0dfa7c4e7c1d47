"""``synthetic-core50``: a procedurally generated, deterministic CORe50 look-alike.

CORe50 (REFERENCES.md, "CORe50") has 50 hand-held objects in 10 categories filmed in 11
sessions with their own backgrounds and lighting; s3, s7, s10 are the test set. This module
renders the same structure from a seed so that the whole toolkit runs and is tested without
the 164,866 real images:

- 10 categories, each its own geometry (disk, rounded square, triangle, star, ring, cross,
  bar, hexagon, crescent, two-lobed); object ``o`` belongs to category ``o // 5`` as in CORe50.
  The 5 objects of a category differ in colours, surface texture (stripes, checker, dots,
  rings, a printed band, two-tone), texture frequency/orientation, proportions and size; two
  pairs per category are deliberate near-twins, so 50-way accuracy stays well below 100 %.
- 11 sessions, each with its own background (pattern, colours, clutter shapes), lighting
  (gain, colour tint, gradient, noise level), pose statistics (scale, position, rotation) and
  hand colour, so that a model fit on one session generalises poorly to the others.
- Each (object, session) is a short video: the object, held by a hand, follows smooth
  trajectories in position, rotation, scale and out-of-plane tilt while the camera pans
  slightly, so consecutive frames are correlated as in a real clip.
- A disjoint pretraining corpus (other objects, 18 shape families, its own environments)
  stands in for ImageNet when pretraining a backbone.

Rendering is vectorised numpy: each video is computed for all frames at once on a pixel grid,
shapes are signed-distance functions anti-aliased by a one-pixel soft edge. Every video draws
from its own ``np.random.default_rng`` seeded by (seed, object, session), so any subset renders
the same frames as the full set.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tinycl.data.base import ImageSet
from tinycl.errors import TinyclError
from tinycl.fileio import atomic_writer, cache_root, read_npz

# Bump whenever rendering changes, so that stale cache files are never used.
GENERATOR_VERSION = 2

NUM_OBJECTS = 50
NUM_CATEGORIES = 10
OBJECTS_PER_CATEGORY = NUM_OBJECTS // NUM_CATEGORIES
NUM_SESSIONS = 11
# CORe50's test sessions (REFERENCES.md, "CORe50").
TEST_SESSIONS = (3, 7, 10)
TRAIN_SESSIONS = tuple(s for s in range(1, NUM_SESSIONS + 1) if s not in TEST_SESSIONS)

# Shape families. The first NUM_CATEGORIES are the benchmark's categories (index = category);
# the pretraining corpus draws from all of them, like ImageNet holding balls and cups too.
SHAPES = (
    "disk", "square", "triangle", "star", "ring", "cross", "bar", "hexagon", "crescent", "bilobe",
    "pentagon", "flower", "diamond", "semicircle", "lshape", "trapezoid", "arrow", "octagon",
)
CATEGORY_NAMES = SHAPES[:NUM_CATEGORIES]

# Surface textures, drawn in object coordinates so that they move with the object.
TEXTURES = ("band", "stripes", "checker", "dots", "rings", "twotone")

# Pretraining videos are short clips in random environments, for pose/background diversity.
PRETRAIN_CLIP_FRAMES = 10
PRETRAIN_ENVIRONMENTS = 32

# Seed-sequence tags keep the random streams of different kinds of draws independent.
_TAG_OBJECT, _TAG_SESSION, _TAG_VIDEO = 1, 2, 3
_TAG_PRETRAIN_OBJECT, _TAG_PRETRAIN_ENV, _TAG_PRETRAIN_VIDEO = 11, 12, 13

_MAX_RES = 512
_MAX_FRAMES = 1000


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. ``frames`` per (object, session) video; ``test_frames`` for the test
    sessions (None: same as ``frames``); pretraining corpus: ``pretrain_classes`` objects with
    ``pretrain_per_class`` images each."""

    seed: int = 0
    res: int = 64
    frames: int = 20
    test_frames: int | None = None
    pretrain_classes: int = 100
    pretrain_per_class: int = 60

    def __post_init__(self) -> None:
        def check_int(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TinyclError(f"synthetic {name} must be an integer, got {value!r}")
            if not low <= value <= high:
                raise TinyclError(f"synthetic {name} must be in [{low}, {high}], got {value}")

        check_int("seed", 0, 2**63 - 1)
        check_int("res", 16, _MAX_RES)
        check_int("frames", 1, _MAX_FRAMES)
        if self.test_frames is not None:
            check_int("test_frames", 1, _MAX_FRAMES)
        check_int("pretrain_classes", 2, 10_000)
        check_int("pretrain_per_class", 1, 10_000)

    @property
    def frames_test(self) -> int:
        return self.frames if self.test_frames is None else self.test_frames


# ----------------------------------------------------------------------------- specifications


@dataclass(frozen=True)
class ObjectSpec:
    """One object: geometry, proportions and surface. Lengths in object units (radius ~1)."""

    shape: int  # index into SHAPES
    shape_param: float  # in [0, 1]: corner radius, star depth, ring width, ... per shape
    aspect: float  # x stretch
    size: float  # relative size, multiplies the session's scale
    texture: int  # index into TEXTURES
    tex_freq: float  # radians per object unit
    tex_angle: float  # radians
    tex_offset: float  # phase / band position in [-1, 1]
    color_a: tuple[float, float, float]  # RGB in [0, 1]
    color_b: tuple[float, float, float]


@dataclass(frozen=True)
class Clutter:
    """A static distractor shape in a session's background (world coordinates)."""

    shape: int
    x: float
    y: float
    radius: float
    angle: float
    color: tuple[float, float, float]


@dataclass(frozen=True)
class SessionSpec:
    """One recording session (or pretraining environment): scene, light, pose statistics."""

    bg_kind: int  # 0 wall, 1 tiles, 2 wood, 3 foliage, 4 table edge
    bg_color_a: tuple[float, float, float]
    bg_color_b: tuple[float, float, float]
    bg_freq: float
    bg_angle: float
    bg_seed: int  # for the random waves of the foliage pattern
    clutter: tuple[Clutter, ...]
    gain: float
    tint: tuple[float, float, float]
    light_grad: float  # relative brightness change across half the frame
    light_angle: float
    noise_std: float  # sensor noise, in 8-bit levels
    scale: float  # object radius in world units (frame half-width = 1)
    center: tuple[float, float]
    pos_amp: float
    rot_base: float
    rot_amp: float
    tilt_amp: float  # out-of-plane rotation, as horizontal squash
    pan_amp: float  # camera shake, in world units
    skin: tuple[float, float, float]
    hand_angle: float  # where the hand holds the object from (0 = from below)


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (float(r), float(g), float(b))


def _draw_colors(rng: np.random.Generator) -> tuple[tuple[float, ...], tuple[float, ...]]:
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.35, 0.95), rng.uniform(0.4, 0.95)
    color_a = _hsv(hue, sat, val)
    mode = rng.integers(3)
    if mode == 0:  # complementary-ish hue
        color_b = _hsv(hue + rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.95))
    elif mode == 1:  # same hue, other brightness
        color_b = _hsv(hue, sat * rng.uniform(0.3, 1.0), val * rng.uniform(0.25, 0.6))
    else:  # neutral: white, black or grey print
        grey = float(rng.choice([0.08, 0.5, 0.95]))
        color_b = (grey, grey, grey)
    return color_a, color_b


def _draw_object(rng: np.random.Generator, shape: int) -> ObjectSpec:
    color_a, color_b = _draw_colors(rng)
    return ObjectSpec(
        shape=shape,
        shape_param=float(rng.uniform(0, 1)),
        aspect=float(rng.uniform(0.75, 1.3)),
        size=float(rng.uniform(0.85, 1.15)),
        texture=int(rng.integers(len(TEXTURES))),
        tex_freq=float(rng.uniform(3.5, 10.0)),
        tex_angle=float(rng.uniform(0, math.pi)),
        tex_offset=float(rng.uniform(-1, 1)),
        color_a=color_a,
        color_b=color_b,
    )


def _jitter_color(rng: np.random.Generator, rgb: tuple[float, ...]) -> tuple[float, float, float]:
    h, s, v = colorsys.rgb_to_hsv(*rgb)
    return _hsv(
        h + rng.choice([-1, 1]) * rng.uniform(0.03, 0.08),
        s + rng.uniform(-0.12, 0.12),
        v + rng.uniform(-0.12, 0.12),
    )


def _twin(rng: np.random.Generator, base: ObjectSpec) -> ObjectSpec:
    """A near-twin of ``base``: same texture kind, nearby colours, frequency and proportions
    (like two cans of similar brands), so that some pairs are hard to tell apart."""
    return ObjectSpec(
        shape=base.shape,
        shape_param=float(np.clip(base.shape_param + rng.uniform(-0.3, 0.3), 0, 1)),
        aspect=float(base.aspect * rng.uniform(0.88, 1.12)),
        size=float(base.size * rng.uniform(0.9, 1.1)),
        texture=base.texture,
        tex_freq=float(base.tex_freq * rng.choice([0.75, 1.33]) * rng.uniform(0.95, 1.05)),
        tex_angle=float(base.tex_angle + rng.choice([-1, 1]) * rng.uniform(0.3, 0.8)),
        tex_offset=float(np.clip(base.tex_offset + rng.uniform(-0.5, 0.5), -1, 1)),
        color_a=_jitter_color(rng, base.color_a),
        color_b=_jitter_color(rng, base.color_b),
    )


def object_specs(seed: int) -> tuple[ObjectSpec, ...]:
    """The 50 benchmark objects; object ``o`` has category ``o // 5`` and shape ``o // 5``.

    Within a category objects 1 and 3 are near-twins of objects 0 and 2; object 4 is free.
    """
    specs: list[ObjectSpec] = []
    for category in range(NUM_CATEGORIES):
        rng = np.random.default_rng([seed, _TAG_OBJECT, category])
        members: list[ObjectSpec] = []
        for k in range(OBJECTS_PER_CATEGORY):
            twin = k in (1, 3)
            members.append(_twin(rng, members[k - 1]) if twin else _draw_object(rng, category))
        specs.extend(members)
    return tuple(specs)


def _object_vector(spec: ObjectSpec) -> np.ndarray:
    return np.array([*spec.color_a, *spec.color_b], dtype=np.float64)


# Two objects of the same shape and texture whose colours lie closer than this (RGB distance
# over both colours) would be the same object for a viewer; pretraining objects keep clear.
_MIN_COLOR_DISTANCE = 0.35


def pretrain_object_specs(seed: int, classes: int) -> tuple[ObjectSpec, ...]:
    """``classes`` pretraining objects over all shape families, none close to a benchmark
    object (same shape and texture and colours within ``_MIN_COLOR_DISTANCE``)."""
    bench = object_specs(seed)
    specs: list[ObjectSpec] = []
    for index in range(classes):
        rng = np.random.default_rng([seed, _TAG_PRETRAIN_OBJECT, index])
        while True:  # rejection sampling; most draws pass at the first try
            candidate = _draw_object(rng, int(rng.integers(len(SHAPES))))
            if not any(_same_object(candidate, other) for other in bench):
                break
        specs.append(candidate)
    return tuple(specs)


def _same_object(a: ObjectSpec, b: ObjectSpec) -> bool:
    if a.shape != b.shape or a.texture != b.texture:
        return False
    return float(np.linalg.norm(_object_vector(a) - _object_vector(b))) < _MIN_COLOR_DISTANCE


def _draw_session(rng: np.random.Generator, bg_kind: int, wide: bool) -> SessionSpec:
    """One scene. ``wide`` (pretraining environments) widens the pose ranges."""
    hue = rng.uniform(0, 1)
    bg_color_a = _hsv(hue, rng.uniform(0.05, 0.6), rng.uniform(0.3, 0.9))
    bg_color_b = _hsv(
        hue + rng.uniform(-0.25, 0.25), rng.uniform(0.05, 0.7), rng.uniform(0.15, 0.9)
    )
    clutter = tuple(
        Clutter(
            shape=int(rng.integers(len(SHAPES))),
            x=float(rng.uniform(-1.1, 1.1)),
            y=float(rng.uniform(-1.1, 1.1)),
            radius=float(rng.uniform(0.08, 0.22)),
            angle=float(rng.uniform(0, 2 * math.pi)),
            color=_hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.7), rng.uniform(0.2, 0.9)),
        )
        for _ in range(int(rng.integers(0, 6)))
    )
    gain = rng.uniform(0.6, 1.3)
    tint = tuple(float(c) for c in 1.0 + np.clip(rng.normal(0, 0.1, 3), -0.2, 0.2))
    scale = rng.uniform(0.36, 0.56) if not wide else rng.uniform(0.3, 0.62)
    rot_span = math.pi if wide else 0.7
    skin_tone = rng.uniform(0, 1)
    skin = (
        _hsv(0.06 + 0.03 * skin_tone, 0.25 + 0.3 * skin_tone, 0.95 - 0.5 * skin_tone)
        if rng.uniform() < 0.75
        else _hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))  # a glove
    )
    return SessionSpec(
        bg_kind=bg_kind,
        bg_color_a=bg_color_a,
        bg_color_b=bg_color_b,
        bg_freq=float(rng.uniform(4, 14)),
        bg_angle=float(rng.uniform(0, math.pi)),
        bg_seed=int(rng.integers(2**31)),
        clutter=clutter,
        gain=float(gain),
        tint=tint,  # type: ignore[arg-type]
        light_grad=float(rng.uniform(0.0, 0.45)),
        light_angle=float(rng.uniform(0, 2 * math.pi)),
        noise_std=float(rng.uniform(1.5, 5.0) / gain),  # darker scenes are noisier
        scale=float(scale),
        center=(float(rng.uniform(-0.2, 0.2)), float(rng.uniform(-0.2, 0.2))),
        pos_amp=float(rng.uniform(0.05, 0.25)),
        rot_base=float(rng.uniform(-rot_span, rot_span)),
        rot_amp=float(rng.uniform(0.2, 1.3)),
        tilt_amp=float(rng.uniform(0.0, 0.5)),
        pan_amp=float(rng.uniform(0.01, 0.06)),
        skin=skin,
        hand_angle=float(rng.uniform(-0.8, 0.8)),
    )


_BG_KINDS = 5


def session_specs(seed: int) -> tuple[SessionSpec, ...]:
    """The 11 sessions (index 0 is session 1). Background kinds cycle through a seeded
    permutation so that every kind appears and neighbouring sessions differ."""
    order = np.random.default_rng([seed, _TAG_SESSION]).permutation(_BG_KINDS)
    return tuple(
        _draw_session(
            np.random.default_rng([seed, _TAG_SESSION, session]),
            int(order[(session - 1) % _BG_KINDS]),
            wide=False,
        )
        for session in range(1, NUM_SESSIONS + 1)
    )


def pretrain_env_specs(seed: int) -> tuple[SessionSpec, ...]:
    """The pretraining corpus' own environments, disjoint from the benchmark's sessions."""
    return tuple(
        _draw_session(
            np.random.default_rng([seed, _TAG_PRETRAIN_ENV, env]), env % _BG_KINDS, wide=True
        )
        for env in range(PRETRAIN_ENVIRONMENTS)
    )


# ----------------------------------------------------------------------------- rendering


def _grid(res: int, pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x right, y down), frame half-width 1, ``pad`` extra pixels."""
    axis = ((np.arange(-pad, res + pad, dtype=np.float32) + 0.5) / res * 2 - 1).astype(np.float32)
    return axis[None, :], axis[:, None]


def _polygon(u: np.ndarray, v: np.ndarray, sides: int, apothem: float, phase: float) -> np.ndarray:
    """Signed distance (exact on edges) to a regular polygon: max over its edge half-planes."""
    dist = None
    for i in range(sides):
        theta = phase + 2 * math.pi * i / sides
        edge = u * np.float32(math.cos(theta)) + v * np.float32(math.sin(theta))
        dist = edge if dist is None else np.maximum(dist, edge)
    return dist - np.float32(apothem)


def _length(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """sqrt(u² + v²); several times faster than np.hypot, which guards against overflow that
    cannot happen on a unit-sized grid."""
    return np.sqrt(u * u + v * v)


def _box(u: np.ndarray, v: np.ndarray, half_u: float, half_v: float, corner: float) -> np.ndarray:
    qu = np.abs(u) - np.float32(half_u - corner)
    qv = np.abs(v) - np.float32(half_v - corner)
    outside = _length(np.maximum(qu, 0), np.maximum(qv, 0))
    return outside + np.minimum(np.maximum(qu, qv), 0) - np.float32(corner)


def _chebyshev(c: np.ndarray, n: int) -> np.ndarray:
    """cos(n·phi) from c = cos(phi), avoiding arctan2 over the whole grid."""
    prev, cur = np.ones_like(c), c
    for _ in range(n - 1):
        prev, cur = cur, 2 * c * cur - prev
    return cur


def _shape_sdf(shape: int, u: np.ndarray, v: np.ndarray, param: float) -> np.ndarray:
    """Approximate signed distance in object units (radius ~1) for shape family ``shape``."""
    name = SHAPES[shape]
    f = np.float32
    if name in ("disk", "ring", "star", "flower", "crescent", "semicircle"):
        r = _length(u, v)
    if name == "disk":
        return r - f(1)
    if name == "square":
        return _box(u, v, 0.85, 0.85, 0.05 + 0.3 * param)
    if name == "triangle":
        return _polygon(u, v, 3, 0.6 - 0.1 * param, -math.pi / 2) - f(0.1 * param)
    if name in ("star", "flower"):
        points, depth = (5, 0.3 + 0.25 * param) if name == "star" else (6, 0.12 + 0.12 * param)
        lobes = _chebyshev(u / (r + f(1e-6)), points)  # cos(points * phi)
        return (r - (f(1) - f(depth) * (f(0.5) - f(0.5) * lobes))) * f(0.75)
    if name == "ring":
        width = 0.18 + 0.15 * param
        return np.abs(r - f(1 - width)) - f(width)
    if name == "cross":
        arm = 0.22 + 0.15 * param
        return np.minimum(_box(u, v, 1.0, arm, 0.05), _box(u, v, arm, 1.0, 0.05))
    if name == "bar":  # a capsule, like a marker
        radius = 0.3 + 0.15 * (1 - param)
        reach = 1 - radius
        return _length(np.maximum(np.abs(u) - f(reach), 0), v) - f(radius)
    if name == "hexagon":
        return _polygon(u, v, 6, 0.87, 0.0)
    if name == "crescent":
        offset = 0.35 + 0.25 * param
        return np.maximum(r - f(1), f(0.85) - _length(u - f(offset), v))
    if name == "bilobe":
        radius = 0.5 + 0.1 * param
        left = _length(u + f(1 - radius), v)
        right = _length(u - f(1 - radius), v * f(1.1))
        return np.minimum(left, right) - f(radius)
    if name == "pentagon":
        return _polygon(u, v, 5, 0.8, -math.pi / 2)
    if name == "diamond":
        return _polygon(u, v, 4, 0.7, math.pi / 4) - f(0.05 * param)
    if name == "semicircle":
        return np.maximum(r - f(1), v - f(0.3 * param))
    if name == "lshape":
        stem = _box(u + f(0.45), v, 0.35, 0.95, 0.05)
        foot = _box(u - f(0.1), v - f(0.6), 0.9, 0.35, 0.05)
        return np.minimum(stem, foot)
    if name == "trapezoid":
        slope = 0.25 + 0.3 * param
        sides = (np.abs(u) + v * f(slope)) / f(math.hypot(1, slope)) - f(0.7)
        return np.maximum(np.abs(v) - f(0.75), sides)
    if name == "arrow":
        shaft = _box(u + f(0.3), v, 0.6, 0.2 + 0.1 * param, 0.03)
        head = _polygon(u - f(0.35), v, 3, 0.35, math.pi)
        return np.minimum(shaft, head)
    if name == "octagon":
        return _polygon(u, v, 8, 0.9, math.pi / 8)
    raise AssertionError(name)


def _texture(spec: ObjectSpec, u: np.ndarray, v: np.ndarray, period_px: float) -> np.ndarray:
    """Mix weight in [0, 1] between ``color_a`` and ``color_b`` over object coordinates.

    ``period_px`` is the texture period on screen: finer than a few pixels, a camera sees the
    average colour, so contrast fades (this is also the anti-aliasing of the texture)."""
    f = np.float32
    name = TEXTURES[spec.texture]
    cos_a, sin_a = f(math.cos(spec.tex_angle)), f(math.sin(spec.tex_angle))
    along = u * cos_a + v * sin_a
    contrast = f(min(max((period_px - 2.0) / 4.0, 0.0), 1.0))
    sharp = f(min(max(period_px / 4.0, 0.5), 3.0))
    freq = f(spec.tex_freq)
    if name == "band":  # a printed label band
        wave = f(0.5) - np.abs(along - f(0.4 * spec.tex_offset)) * f(2.5)
        sharp, contrast = f(4), f(1)
    elif name == "stripes":
        wave = np.sin(along * freq + f(3 * spec.tex_offset))
    elif name == "checker":
        across = v * cos_a - u * sin_a
        wave = np.sin(along * freq) * np.sin(across * freq)
    elif name == "dots":
        across = v * cos_a - u * sin_a
        cell = freq / f(2 * math.pi)
        du = along * cell - np.floor(along * cell) - f(0.5)
        dv = across * cell - np.floor(across * cell) - f(0.5)
        wave = (f(0.09) - (du * du + dv * dv)) * f(12)
    elif name == "rings":
        wave = np.sin(_length(u - f(0.3 * spec.tex_offset), v) * freq)
    else:  # twotone: two halves, like a phone's screen and body
        wave = (along - f(0.3 * spec.tex_offset)) * f(4)
        sharp, contrast = f(3), f(1)
    return f(0.5) + np.clip(wave * sharp, f(-0.5), f(0.5)) * contrast


def _smooth(rng: np.random.Generator, times: np.ndarray, waves: int = 2) -> np.ndarray:
    """A smooth random trajectory in [-1, 1]: a sum of slow sinusoids (0.3-1.5 cycles per
    video), like a hand turning an object in front of the camera."""
    freqs = rng.uniform(0.3, 1.5, waves)
    phases = rng.uniform(0, 2 * math.pi, waves)
    weights = rng.uniform(0.3, 1.0, waves)
    waves_t = np.sin(2 * math.pi * freqs[:, None] * times + phases[:, None])
    return (weights[:, None] * waves_t).sum(0) / weights.sum()


def _blend(image: np.ndarray, color: np.ndarray, alpha: np.ndarray) -> None:
    """In place: image = image·(1 − alpha) + color·alpha (image [3, F, H, W], alpha [F, H, W])."""
    image *= np.float32(1) - alpha
    image += color * alpha


def _alpha(dist_px: np.ndarray) -> np.ndarray:
    """Coverage of a pixel by a shape from its signed distance in pixels: a one-pixel ramp."""
    alpha = np.subtract(np.float32(0.5), dist_px)
    return np.clip(alpha, 0, 1, out=alpha)


def _ellipse_alpha(
    dx: np.ndarray, dy: np.ndarray, radius_x: np.ndarray, radius_y: np.ndarray, min_px: np.ndarray
) -> np.ndarray:
    """Coverage of an axis-aligned ellipse centred where (dx, dy) = 0. Its distance is
    approximated by (normalised radius − 1) · the smaller radius, in pixels (``min_px``)."""
    qx, qy = dx / radius_x, dy / radius_y
    norm = np.sqrt(qx * qx + qy * qy)
    norm *= min_px
    return np.clip(np.float32(0.5) + min_px - norm, 0, 1, out=norm)


def _rgb(color: tuple[float, ...]) -> np.ndarray:
    """A colour as float32 [3, 1, 1], to broadcast over channel-first images."""
    return np.array(color, dtype=np.float32).reshape(3, 1, 1)


def _background(session: SessionSpec, res: int, pad: int) -> np.ndarray:
    """The session's static scene, rendered once on a canvas ``pad`` pixels wider each side
    so that the camera can pan over it. Returns float32 [3, res+2pad, res+2pad] in [0, 1]
    (channel-first: blending with a per-pixel alpha then broadcasts over a leading axis,
    which numpy does several times faster than over a trailing axis of 3)."""
    f = np.float32
    x, y = _grid(res, pad)
    cos_a, sin_a = f(math.cos(session.bg_angle)), f(math.sin(session.bg_angle))
    along, across = x * cos_a + y * sin_a, y * cos_a - x * sin_a
    freq = f(session.bg_freq)
    kind = session.bg_kind
    if kind == 0:  # painted wall: broad gradient with faint mottling
        mix = f(0.5) + f(0.35) * along + f(0.08) * np.sin(x * f(2.3) + f(1)) * np.sin(y * f(3.1))
    elif kind == 1:  # tiles with grout lines
        cell = freq / f(2 * math.pi) * f(0.5)
        fu = np.abs(along * cell - np.floor(along * cell) - f(0.5))
        fv = np.abs(across * cell - np.floor(across * cell) - f(0.5))
        grout = np.clip((np.maximum(fu, fv) - f(0.44)) * f(30), 0, 1)
        mix = grout + f(0.15) * (np.floor(along * cell) % 2)
    elif kind == 2:  # wood grain: warped stripes
        mix = f(0.5) + f(0.5) * np.sin(along * freq + f(1.5) * np.sin(across * freq * f(0.3)))
    elif kind == 3:  # foliage / outdoor: blotches from a few random waves
        rng = np.random.default_rng(session.bg_seed)
        wave = np.zeros_like(x * y)
        for _ in range(4):
            angle, phase = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
            direction = x * f(math.cos(angle)) + y * f(math.sin(angle))
            wave = wave + np.sin(direction * freq + f(phase))
        mix = np.clip(f(0.5) + wave * f(0.6), 0, 1)
    else:  # a table edge: two surfaces, the lower one lightly striped
        edge = np.clip((across - f(0.2 * math.sin(session.bg_angle * 3))) * f(12), 0, 1)
        mix = edge * (f(0.85) + f(0.15) * np.sin(along * freq)) + (1 - edge) * f(0.1)
    size = res + 2 * pad
    mix = np.broadcast_to(mix, (size, size))
    color_a, color_b = _rgb(session.bg_color_a), _rgb(session.bg_color_b)
    canvas = color_a + (color_b - color_a) * mix
    for item in session.clutter:
        cos_c, sin_c = f(math.cos(item.angle)), f(math.sin(item.angle))
        dx, dy = x - f(item.x), y - f(item.y)
        u = (dx * cos_c + dy * sin_c) / f(item.radius)
        v = (dy * cos_c - dx * sin_c) / f(item.radius)
        alpha = _alpha(_shape_sdf(item.shape, u, v, 0.5) * f(item.radius * res / 2))
        canvas = canvas + (_rgb(item.color) - canvas) * alpha
    return np.ascontiguousarray(canvas, dtype=np.float32)


def _light_field(session: SessionSpec, res: int) -> np.ndarray:
    """Per-pixel multiplicative lighting [3, 1, res, res]: gain, colour tint, linear
    gradient; shaped to broadcast over channel-first video frames [3, frames, res, res]."""
    x, y = _grid(res)
    direction = x * np.float32(math.cos(session.light_angle)) + y * np.float32(
        math.sin(session.light_angle)
    )
    ramp = np.float32(1) + np.float32(session.light_grad) * direction
    tint = _rgb(session.tint) * np.float32(session.gain)
    return (tint * ramp)[:, None].astype(np.float32)


def _pad(res: int) -> int:
    return max(2, math.ceil(0.08 * res))


def render_video(
    spec: ObjectSpec,
    session: SessionSpec,
    frames: int,
    res: int,
    rng: np.random.Generator,
    background: np.ndarray | None = None,
    light: np.ndarray | None = None,
    hand: bool = True,
) -> np.ndarray:
    """All frames of one video at once: uint8 [frames, res, res, 3].

    ``background`` and ``light`` (from ``_background`` / ``_light_field``) may be passed in
    to share them between the videos of a session; they depend on the session only.
    Internally images are channel-first float32 [3, frames, res, res] in [0, 1].
    """
    f = np.float32
    pad = _pad(res)
    if background is None:
        background = _background(session, res, pad)
    if light is None:
        light = _light_field(session, res)
    times = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)

    # Trajectories (float64 [frames]), drawn in a fixed order for determinism.
    start = rng.uniform(-0.15, 0.15, 2)
    cx = session.center[0] + start[0] + session.pos_amp * _smooth(rng, times)
    cy = session.center[1] + start[1] + session.pos_amp * _smooth(rng, times)
    angle = session.rot_base + rng.uniform(-0.3, 0.3) + session.rot_amp * _smooth(rng, times)
    scale = session.scale * spec.size * (1 + 0.15 * _smooth(rng, times))
    squash = 1 - session.tilt_amp * (0.5 - 0.5 * np.cos(math.pi * _smooth(rng, times)))
    pan_x = session.pan_amp * _smooth(rng, times)
    pan_y = session.pan_amp * _smooth(rng, times)
    hand_angle = session.hand_angle + 0.3 * _smooth(rng, times)
    flicker = 1 + 0.03 * _smooth(rng, times, waves=3)

    # Camera pan: the padded background cropped at whole-pixel offsets (a shake of a pixel
    # or two; sub-pixel resampling would cost more than the rest of the frame).
    offset_x = np.rint(np.clip(pad + pan_x * res / 2, 0, 2 * pad)).astype(int)
    offset_y = np.rint(np.clip(pad + pan_y * res / 2, 0, 2 * pad)).astype(int)
    image = np.empty((3, frames, res, res), dtype=np.float32)
    for i in range(frames):
        rows = slice(offset_y[i], offset_y[i] + res)
        image[:, i] = background[:, rows, offset_x[i] : offset_x[i] + res]

    x, y = _grid(res)
    px_per_unit = res / 2  # world units -> pixels
    col = (slice(None), None, None)  # [frames] -> [frames, 1, 1]
    dx = x - cx.astype(np.float32)[col]
    dy = y - cy.astype(np.float32)[col]
    cos_t, sin_t = np.cos(angle).astype(np.float32)[col], np.sin(angle).astype(np.float32)[col]
    stretch_x = (scale * spec.aspect * squash).astype(np.float32)[col]
    stretch_y = scale.astype(np.float32)[col]
    u = dx * (cos_t / stretch_x) + dy * (sin_t / stretch_x)
    v = dy * (cos_t / stretch_y) - dx * (sin_t / stretch_y)
    # Object units -> pixels, using the shorter axis so that edges stay at most 1 px soft.
    unit_px = (scale * np.minimum(spec.aspect * squash, 1.0) * px_per_unit).astype(np.float32)
    unit_px = unit_px[col]

    # Coverage of the three layers in front of the background, back to front: palm, object,
    # thumb. Everything up to the final per-channel sums works on [frames, res, res] arrays.
    to_px = f(px_per_unit)
    dist = _shape_sdf(spec.shape, u, v, spec.shape_param)
    a_obj = _alpha(dist * unit_px)
    if hand:  # a palm behind the object reaching in from one side, a thumb in front of it
        # Offsets from the object's centre in world units, proportional to its size.
        hx = (0.95 * np.sin(hand_angle) * scale).astype(np.float32)[col]
        hy = (0.95 * np.cos(hand_angle) * scale).astype(np.float32)[col]
        a_palm = _ellipse_alpha(
            dx - hx, dy - hy, f(0.55) * stretch_y, f(0.7) * stretch_y, f(0.55) * stretch_y * to_px
        )
        # The thumb sits 60 % of the way from the object's centre to the palm, on its edge.
        a_thumb = _ellipse_alpha(
            dx - f(0.6) * hx, dy - f(0.6) * hy, f(0.18) * stretch_y, f(0.3) * stretch_y,
            f(0.18) * stretch_y * to_px,
        )
    period_px = 2 * math.pi / spec.tex_freq * float(session.scale * spec.size) * px_per_unit
    mix = _texture(spec, u, v, period_px)
    # Fake 3D shading: lit from the session's light direction, darker towards the rim.
    light_u, light_v = f(math.cos(session.light_angle)), f(math.sin(session.light_angle))
    facing = (dx * light_u + dy * light_v) / stretch_y
    shade = f(1.05) - f(0.12) * (u * u + v * v) - f(0.12) * facing

    # Over-compositing as weights: pixel = Σ layer colour · its coverage · (1 − coverage of
    # the layers in front). Flicker and the 8-bit range fold into the weights.
    gain = (flicker * 255).astype(np.float32)[col]
    w_obj = a_obj * gain
    w_bg = (f(1) - a_obj) * gain
    if hand:
        w_obj *= f(1) - a_thumb
        w_skin = a_palm * w_bg
        w_bg *= f(1) - a_palm
        w_bg *= f(1) - a_thumb
        w_skin *= f(1) - a_thumb
        w_skin += f(0.92) * a_thumb * gain  # the thumb, a little darker than the palm
    w_obj *= shade
    w_mix = w_obj * mix
    # Sensor noise, luminance only, after the optics: uniform with the session's standard
    # deviation (cheaper to draw than a Gaussian, indistinguishable at these amplitudes).
    noise = rng.random((frames, res, res), dtype=np.float32)
    noise -= f(0.5)
    noise *= f(session.noise_std * math.sqrt(12))
    noise += f(0.5)  # round to nearest on the cast below

    out = np.empty((frames, res, res, 3), dtype=np.uint8)
    for c in range(3):
        channel = image[c] * w_bg
        if hand:
            channel += f(session.skin[c]) * w_skin
        channel += f(spec.color_a[c]) * w_obj
        channel += f(spec.color_b[c] - spec.color_a[c]) * w_mix
        channel *= light[c]
        channel += noise
        np.clip(channel, 0, 255, out=channel)
        out[..., c] = channel
    return out


# ----------------------------------------------------------------------------- generation


def _empty_set(count: int, res: int) -> ImageSet:
    return ImageSet(
        images=np.empty((count, res, res, 3), dtype=np.uint8),
        labels=np.empty(count, dtype=np.int64),
        sessions=np.empty(count, dtype=np.int64),
        objects=np.empty(count, dtype=np.int64),
        frames=np.empty(count, dtype=np.int64),
    )


def _render_sessions(
    config: SyntheticConfig, sessions: tuple[int, ...], frames: int, progress=None, offset: int = 0
) -> ImageSet:
    """Videos of all 50 objects in ``sessions``, ordered by session, object, frame;
    ``progress(done, total)`` after each session (``offset`` sessions done before)."""
    objects = object_specs(config.seed)
    scenes = session_specs(config.seed)
    res, pad = config.res, _pad(config.res)
    out = _empty_set(len(sessions) * NUM_OBJECTS * frames, res)
    row = 0
    for session in sessions:
        scene = scenes[session - 1]
        background = _background(scene, res, pad)
        light = _light_field(scene, res)
        for obj, spec in enumerate(objects):
            rng = np.random.default_rng([config.seed, _TAG_VIDEO, obj, session])
            block = slice(row, row + frames)
            out.images[block] = render_video(spec, scene, frames, res, rng, background, light)
            out.labels[block] = obj
            out.objects[block] = obj
            out.sessions[block] = session
            out.frames[block] = np.arange(frames)
            row += frames
        if progress:
            progress(offset + sessions.index(session) + 1, len(TRAIN_SESSIONS) + len(TEST_SESSIONS))
    return out


def generate_core50(config: SyntheticConfig, progress=None) -> tuple[ImageSet, ImageSet]:
    """(train, test): the 8 train sessions and the 3 test sessions, labels = object ids;
    ``progress(done, total)`` counts sessions."""
    if progress:
        progress(0, len(TRAIN_SESSIONS) + len(TEST_SESSIONS))
    train = _render_sessions(config, TRAIN_SESSIONS, config.frames, progress)
    test = _render_sessions(config, TEST_SESSIONS, config.frames_test, progress, len(TRAIN_SESSIONS))
    return train, test


def generate_pretrain_corpus(config: SyntheticConfig, progress=None) -> ImageSet:
    """Pretraining images: ``pretrain_classes`` objects disjoint from the benchmark's, each
    seen in clips of up to PRETRAIN_CLIP_FRAMES frames in random environments of its own.
    ``sessions`` holds the 1-based environment id, ``frames`` the frame inside its clip."""
    specs = pretrain_object_specs(config.seed, config.pretrain_classes)
    envs = pretrain_env_specs(config.seed)
    res, pad = config.res, _pad(config.res)
    per_class = config.pretrain_per_class
    out = _empty_set(config.pretrain_classes * per_class, res)
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    row = 0
    if progress:
        progress(0, len(specs))
    for cls, spec in enumerate(specs):
        if progress and cls:
            progress(cls, len(specs))
        for clip, first in enumerate(range(0, per_class, PRETRAIN_CLIP_FRAMES)):
            frames = min(PRETRAIN_CLIP_FRAMES, per_class - first)
            rng = np.random.default_rng([config.seed, _TAG_PRETRAIN_VIDEO, cls, clip])
            env = int(rng.integers(PRETRAIN_ENVIRONMENTS))
            hand = bool(rng.uniform() < 0.5)  # ImageNet objects are not always hand-held
            if env not in cache:
                cache[env] = (_background(envs[env], res, pad), _light_field(envs[env], res))
            background, light = cache[env]
            block = slice(row, row + frames)
            out.images[block] = render_video(
                spec, envs[env], frames, res, rng, background, light, hand=hand
            )
            out.labels[block] = cls
            out.objects[block] = cls
            out.sessions[block] = env + 1
            out.frames[block] = np.arange(frames)
            row += frames
    if progress:
        progress(len(specs), len(specs))
    return out


# ----------------------------------------------------------------------------- disk cache

_FIELDS = ("images", "labels", "sessions", "objects", "frames")


def default_cache_dir() -> Path:
    """``$TINYCL_CACHE`` or ``~/.cache/tinycl`` (``tinycl.fileio.cache_root``)."""
    return cache_root()


def _cache_key(kind: str, fields: dict) -> str:
    blob = json.dumps({"kind": kind, "version": GENERATOR_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _core50_fields(config: SyntheticConfig) -> dict:
    # Only what changes the benchmark: pretraining knobs must not invalidate its cache.
    return {"seed": config.seed, "res": config.res, "frames": config.frames,
            "test_frames": config.frames_test}


def _pretrain_fields(config: SyntheticConfig) -> dict:
    keep = ("seed", "res", "pretrain_classes", "pretrain_per_class")
    return {k: v for k, v in asdict(config).items() if k in keep}


def _digest(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """SHA-256 over the arrays, stored beside them: a flipped byte in an uncompressed .npz is
    otherwise invisible to np.load."""
    hasher = hashlib.sha256()
    for name in sorted(arrays):
        hasher.update(name.encode())
        hasher.update(np.ascontiguousarray(arrays[name]).data)
    return np.frombuffer(hasher.digest(), dtype=np.uint8).copy()


def _write_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Temp file in the same directory + fsync + os.replace: readers see the old file or the
    complete new one, never a partial write."""
    with atomic_writer(path) as stream:
        np.savez(stream, digest=_digest(arrays), **arrays)


def _read_checked(path: Path, expected: dict[str, tuple[tuple[int, ...], np.dtype]]):
    """The arrays of a cache file, or None if it is missing, unreadable or not as expected."""
    if not path.is_file():
        return None
    try:
        data = read_npz(path, "cache file")
    except TinyclError:
        return None
    if set(data) != set(expected) | {"digest"}:
        return None
    arrays = {name: data[name] for name in expected}
    digest = data["digest"]
    for name, (shape, dtype) in expected.items():
        if arrays[name].shape != shape or arrays[name].dtype != dtype:
            return None
    if not np.array_equal(digest, _digest(arrays)):
        return None
    return arrays


def _expected(prefix: str, count: int, res: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    out = {f"{prefix}images": ((count, res, res, 3), np.dtype(np.uint8))}
    for name in _FIELDS[1:]:
        out[f"{prefix}{name}"] = ((count,), np.dtype(np.int64))
    return out


def _as_arrays(prefix: str, images: ImageSet) -> dict[str, np.ndarray]:
    return {f"{prefix}{name}": getattr(images, name) for name in _FIELDS}


def _from_arrays(prefix: str, arrays: dict[str, np.ndarray]) -> ImageSet:
    return ImageSet(**{name: arrays[f"{prefix}{name}"] for name in _FIELDS})


def _cached(path: Path, expected: dict, generate, what: str) -> dict[str, np.ndarray]:
    arrays = _read_checked(path, expected)
    if arrays is not None:
        return arrays
    if path.exists():
        warnings.warn(f"cache file {path} is corrupt or stale; regenerating {what}", stacklevel=3)
    arrays = generate()
    try:
        _write_atomic(path, arrays)
    except OSError as error:  # an unwritable cache costs time, never the result
        warnings.warn(f"could not write cache file {path}: {error}", stacklevel=3)
    return arrays


def core50_cache_path(config: SyntheticConfig, cache_dir: str | os.PathLike | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"synthetic-core50-{_cache_key('core50', _core50_fields(config))}.npz"


def pretrain_cache_path(
    config: SyntheticConfig, cache_dir: str | os.PathLike | None = None
) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"synthetic-pretrain-{_cache_key('pretrain', _pretrain_fields(config))}.npz"


def load_synthetic_core50(
    config: SyntheticConfig, cache_dir: str | os.PathLike | None = None, progress=None
) -> tuple[ImageSet, ImageSet]:
    """``generate_core50(config)``, cached on disk; a corrupt cache file is regenerated;
    ``progress`` sees the generation's sessions (nothing when the cache serves it)."""
    train_count = len(TRAIN_SESSIONS) * NUM_OBJECTS * config.frames
    test_count = len(TEST_SESSIONS) * NUM_OBJECTS * config.frames_test
    expected = {
        **_expected("train_", train_count, config.res),
        **_expected("test_", test_count, config.res),
    }

    def generate() -> dict[str, np.ndarray]:
        train, test = generate_core50(config, progress)
        return {**_as_arrays("train_", train), **_as_arrays("test_", test)}

    arrays = _cached(core50_cache_path(config, cache_dir), expected, generate, "synthetic-core50")
    return _from_arrays("train_", arrays), _from_arrays("test_", arrays)


def load_pretrain_corpus(
    config: SyntheticConfig, cache_dir: str | os.PathLike | None = None, progress=None
) -> ImageSet:
    """``generate_pretrain_corpus(config)``, cached on disk like the benchmark; ``progress``
    counts its classes."""
    count = config.pretrain_classes * config.pretrain_per_class
    expected = _expected("", count, config.res)

    def generate() -> dict[str, np.ndarray]:
        return _as_arrays("", generate_pretrain_corpus(config, progress))

    arrays = _cached(
        pretrain_cache_path(config, cache_dir), expected, generate, "the pretraining corpus"
    )
    return _from_arrays("", arrays)


def categories(labels: np.ndarray) -> np.ndarray:
    """Category of each object label, as CORe50's ``label // 5``."""
    return np.asarray(labels) // OBJECTS_PER_CATEGORY
