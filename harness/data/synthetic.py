"""Three embedded, offline datasets shaped after CUB200, Cars196 and Stanford Online Products.

Why: the harness must run (tests, smoke runs, CI, laptops) without the real benchmarks, and NIR is
about *intra-class structure*, so a toy dataset of isotropic class blobs would be useless. Every
class here is a mixture of 2-4 sub-modes (distinct appearances of the same class: pose,
articulation, paint colour, viewpoint, hidden parts), rendered with nuisance on top (jitter, scale,
lighting, noise, clutter).

Hierarchy of one dataset: family (super-class) -> class -> sub-mode -> image.
- ``synth-cub``  "birds": soft-ellipse part compositions (tail, body, belly, wing, head, cap, beak,
  eye, legs). Classes of a family share a template; a class is defined by small geometry changes,
  its colour pattern and stripes. Sub-modes: pose, wing/head/tail articulation, occasionally a
  plumage variant.
- ``synth-cars`` "cars": rounded/hard box compositions (body, cabin, windows, lights, trim, rack)
  plus wheels. A class is defined by *geometry* and trim details; paint colour is NOT a class cue
  (as in Cars196, a model comes in many colours): each sub-mode has its own paint and viewpoint
  (squash).
- ``synth-sop``  "products": 12 families (super-classes) of random part templates, ~2000 classes
  with 2-12 images each; sub-modes are viewpoints that rotate, squash and hide parts.

Split: class-disjoint, the first half of the (family-interleaved) class ids train, the second half
test; labels are remapped to 0..C-1 within each split. Images are uint8 (N, 3, 32, 32).

Determinism: everything derives from ``np.random.Generator(PCG64)`` streams spawned from
``SeedSequence(seed, spawn_key=(crc32(name),))``. The per-pixel renderer only uses +, -, *, /,
sqrt, floor, min/max and clip (no SIMD-dispatched transcendentals such as sin/exp), so pixel values
do not depend on which numpy SIMD kernels a CPU selects; cos/sin are only evaluated for per-part
angles.

Cache: ``<cache_dir>/<name>-<key>.npz``; the key hashes the name, seed, generator parameters and
``GENERATOR_VERSION``. Written atomically (temp file + ``os.replace``); an unreadable cache file is
regenerated with a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.data.base import DATASETS, DatasetBundle, DatasetInfo, ImageSplit

GENERATOR_VERSION = 1
"""Bump whenever the rendering or sampling code changes the arrays it produces (new cache key)."""

IMAGE_SIZE = 32
DATA_SEED = 0
"""The registered loaders always use this seed: the data belongs to the benchmark, not the run."""

_CHUNK = 512  # images rendered at once; part of the noise-drawing order, so fixed (version it)

# Layout of one part's parameter vector.
CX, CY, A, B, TH, SHAPE = 0, 1, 2, 3, 4, 5
C1 = slice(6, 9)  # main colour (RGB in [0, 1])
C2 = slice(9, 12)  # stripe colour
SF, SA, SAMP, VIS = (
    12,
    13,
    14,
    15,
)  # stripe frequency (cycles per unit), stripe angle, amplitude, visible
NPARAM = 16
ELLIPSE, ROUNDBOX, BOX = 0, 1, 2


@dataclass(frozen=True)
class SynthParams:
    """Generator parameters of one synthetic dataset (all hashed into the cache key)."""

    kind: str  # "bird" | "car" | "product"
    num_classes: int
    num_families: int
    images_per_class: tuple[int, int]  # inclusive range
    size_decay: (
        float  # 0: uniform over the range; >0: P(n) ~ exp(-(n - lo) / size_decay) (SOP-like)
    )
    sub_modes: tuple[int, int]  # inclusive range of sub-modes per class (capped by the class size)
    family_spread: float  # how far family templates stray from the kind's prototype
    class_geom_spread: float  # geometry differences between classes of one family
    class_colour_spread: float  # colour differences between classes of one family
    stripe_prob: float  # chance that a class puts a stripe pattern on a patternable part
    submode_strength: float  # scale of pose / articulation differences between sub-modes
    submode_colour_prob: float  # chance that a sub-mode recolours one part (plumage variant, ...)
    part_jitter: float  # per-image geometry jitter of the parts (object units)
    translate: float  # per-image translation jitter (image units, image spans [-1, 1])
    scale_range: tuple[float, float]  # per-image object scale
    rot_jitter: float  # per-image rotation jitter (rad)
    brightness: float  # sigma of the log lighting gain
    colour_jitter: float  # sigma of per-channel gain / offset
    noise_std: float  # pixel noise sigma (in [0, 1] intensity units)
    clutter: tuple[int, int]  # inclusive range of distractor shapes behind the object
    clutter_front_prob: float  # chance of one small occluder in front of the object
    background_jitter: float = 1.0  # 0: plain mid-grey background; 1: random colour + gradient


def clean_params(p: SynthParams) -> SynthParams:
    """The same structure (families, classes, sub-modes) with the image nuisance switched off except
    a little geometry jitter: plain background, no clutter, lighting or noise. For analysing
    structure; the class and sub-mode labels are identical to those of ``p``."""
    return dataclasses.replace(
        p,
        translate=0.0,
        scale_range=(1.0, 1.0),
        brightness=0.0,
        colour_jitter=0.0,
        noise_std=0.0,
        clutter=(0, 0),
        clutter_front_prob=0.0,
        background_jitter=0.0,
    )


SYNTH_PARAMS: dict[str, SynthParams] = {
    "synth-cub": SynthParams(
        kind="bird",
        num_classes=160,
        num_families=16,
        images_per_class=(24, 36),
        size_decay=0.0,
        sub_modes=(2, 4),
        family_spread=1.0,
        class_geom_spread=0.5,
        class_colour_spread=0.10,
        stripe_prob=0.3,
        submode_strength=1.0,
        submode_colour_prob=0.25,
        part_jitter=0.02,
        translate=0.12,
        scale_range=(0.85, 1.15),
        rot_jitter=0.12,
        brightness=0.15,
        colour_jitter=0.05,
        noise_std=0.05,
        clutter=(1, 4),
        clutter_front_prob=0.3,
    ),
    "synth-cars": SynthParams(
        kind="car",
        num_classes=140,
        num_families=10,
        images_per_class=(28, 40),
        size_decay=0.0,
        sub_modes=(2, 4),
        family_spread=1.0,
        class_geom_spread=0.5,
        class_colour_spread=0.10,
        stripe_prob=0.3,
        submode_strength=1.0,
        submode_colour_prob=1.0,
        part_jitter=0.02,
        translate=0.12,
        scale_range=(0.85, 1.15),
        rot_jitter=0.08,
        brightness=0.15,
        colour_jitter=0.05,
        noise_std=0.05,
        clutter=(1, 4),
        clutter_front_prob=0.3,
    ),
    "synth-sop": SynthParams(
        kind="product",
        num_classes=2000,
        num_families=12,
        images_per_class=(2, 12),
        size_decay=3.0,
        sub_modes=(2, 4),
        family_spread=1.0,
        class_geom_spread=1.0,
        class_colour_spread=0.25,
        stripe_prob=0.3,
        submode_strength=0.7,
        submode_colour_prob=0.0,
        part_jitter=0.02,
        translate=0.12,
        scale_range=(0.85, 1.15),
        rot_jitter=0.12,
        brightness=0.15,
        colour_jitter=0.05,
        noise_std=0.05,
        clutter=(0, 3),
        clutter_front_prob=0.2,
    ),
}

_DESCRIPTIONS = {
    "synth-cub": "embedded synthetic fine-grained 'birds' (ellipse parts, colour patterns), "
    "CUB-shaped",
    "synth-cars": "embedded synthetic fine-grained 'cars' (box parts, paint is not a class cue), "
    "Cars196-shaped",
    "synth-sop": "embedded synthetic 'online products': ~2000 classes of 2-12 images, "
    "12 super-classes, "
    "SOP-shaped",
}
_RECALL_AT = {
    "synth-cub": (1, 2, 4, 8),
    "synth-cars": (1, 2, 4, 8),
    "synth-sop": (1, 10, 100, 1000),
}


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------
def _streams(name: str, seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(structure stream, image stream) for one dataset; independent across names and seeds."""
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(zlib.crc32(name.encode()),))
    a, b = ss.spawn(2)
    return np.random.Generator(np.random.PCG64(a)), np.random.Generator(np.random.PCG64(b))


def _parts(rows: list[list[float]]) -> np.ndarray:
    """Prototype rows [cx, cy, a, b, theta, shape] -> (K, NPARAM); visible, no stripes."""
    out = np.zeros((len(rows), NPARAM), dtype=np.float64)
    out[:, :6] = np.asarray(rows, dtype=np.float64)
    out[:, VIS] = 1.0
    out[:, SF] = 2.0
    return out


def _rand_colour(
    rng: np.random.Generator,
    size: tuple[int, ...],
    lo: float = 0.05,
    hi: float = 0.95,
    sat: float = 1.0,
) -> np.ndarray:
    """Random RGB colours; sat < 1 pulls them towards their grey value."""
    c = rng.uniform(lo, hi, size=size + (3,))
    grey = c.mean(-1, keepdims=True)
    return grey + sat * (c - grey)


def _perturb_geometry(
    parts: np.ndarray,
    rng: np.random.Generator,
    pos: float,
    size: float,
    ang: float,
    parent: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Jitter centres / axes / angles of (..., K, NPARAM) parts; children follow their parent."""
    p = parts.copy()
    shape = p.shape[:-1]
    d = rng.normal(0.0, pos, size=shape + (2,))
    if parent is not None:
        has = parent >= 0
        d[..., has, :] += d[..., parent[has], :]
    m = np.ones(shape[-1]) if mask is None else mask.astype(np.float64)
    p[..., CX] += d[..., 0] * m
    p[..., CY] += d[..., 1] * m
    p[..., A] *= np.exp(rng.normal(0.0, size, size=shape) * m)
    p[..., B] *= np.exp(rng.normal(0.0, size, size=shape) * m)
    p[..., TH] += rng.normal(0.0, ang, size=shape) * m
    return p


def _class_sizes(p: SynthParams, rng: np.random.Generator) -> np.ndarray:
    lo, hi = p.images_per_class
    n = np.arange(lo, hi + 1)
    if p.size_decay > 0:
        w = np.exp(-(n - lo) / p.size_decay)
    else:
        w = np.ones_like(n, dtype=np.float64)
    return rng.choice(n, size=p.num_classes, p=w / w.sum())


def _stripes(
    parts: np.ndarray,
    rng: np.random.Generator,
    patternable: list[int],
    prob: float,
    palette_dark: bool,
) -> None:
    """Give classes stripe patterns on some patternable parts (in place; parts: (C, K, NPARAM))."""
    C = parts.shape[0]
    for k in patternable:
        on = rng.uniform(size=C) < prob
        parts[:, k, SF] = rng.uniform(1.2, 3.2, size=C)
        parts[:, k, SA] = rng.uniform(0.0, np.pi, size=C)
        parts[:, k, SAMP] = np.where(on, rng.uniform(0.6, 1.0, size=C), 0.0)
        if palette_dark:
            parts[:, k, C2] = parts[:, k, C1] * rng.uniform(0.1, 0.4, size=(C, 1))
        else:
            parts[:, k, C2] = _rand_colour(rng, (C,))


# --------------------------------------------------------------------------------------------------
# Kind-specific structure: families -> classes -> sub-modes
# Each returns class_parts (C, K, NPARAM), family (C,), sub-mode parts (C, S, K, NPARAM) and
# sub-mode poses (C, S, 3) = (rotation, x-squash, y-squash).
# --------------------------------------------------------------------------------------------------
_BIRD = _parts(
    [
        [0.00, 0.34, 0.025, 0.10, 0.0, BOX],  # 0 legs
        [-0.46, 0.02, 0.22, 0.07, 0.35, ELLIPSE],  # 1 tail
        [0.00, 0.05, 0.34, 0.21, 0.0, ELLIPSE],  # 2 body
        [0.05, 0.13, 0.22, 0.11, 0.0, ELLIPSE],  # 3 belly
        [-0.06, 0.00, 0.26, 0.11, 0.15, ELLIPSE],  # 4 wing
        [0.32, -0.20, 0.15, 0.14, 0.0, ELLIPSE],  # 5 head
        [0.32, -0.30, 0.10, 0.05, 0.0, ELLIPSE],  # 6 cap
        [0.49, -0.18, 0.09, 0.035, 0.1, ELLIPSE],  # 7 beak
        [0.37, -0.22, 0.035, 0.035, 0.0, ELLIPSE],  # 8 eye
    ]
)
_BIRD_PARENT = np.array([2, 2, -1, 2, 2, -1, 5, 5, 5])


def _birds(p: SynthParams, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    F, C = p.num_families, p.num_classes
    fam_parts = _perturb_geometry(
        np.broadcast_to(_BIRD, (F,) + _BIRD.shape),
        rng,
        0.05 * p.family_spread,
        0.18 * p.family_spread,
        0.2 * p.family_spread,
        _BIRD_PARENT,
    )
    # Family palette: three colours; parts pick palette entries per family.
    pal = _rand_colour(rng, (F, 3))
    assign = rng.integers(0, 3, size=(F, 9))
    fam_parts[:, :, C1] = np.take_along_axis(pal, assign[..., None], axis=1)
    fam_parts[:, 7, C1] = np.array(
        [[0.9, 0.75, 0.1], [0.95, 0.5, 0.1], [0.15, 0.15, 0.15], [0.6, 0.6, 0.6]]
    )[rng.integers(0, 4, size=F)]  # beak
    fam_parts[:, 8, C1] = 0.05  # eye
    fam_parts[:, 0, C1] = np.array([[0.3, 0.25, 0.2], [0.85, 0.5, 0.2]])[rng.integers(0, 2, size=F)]

    family = rng.permutation(np.arange(C) % F)
    cp = _perturb_geometry(
        fam_parts[family],
        rng,
        0.03 * p.class_geom_spread,
        0.12 * p.class_geom_spread,
        0.15 * p.class_geom_spread,
        _BIRD_PARENT,
    )
    cp[:, :, C1] = np.clip(
        cp[:, :, C1] + rng.normal(0, p.class_colour_spread, size=(C, 9, 3)), 0, 1
    )
    # A class detail: one plumage part takes a fresh colour.
    k = rng.choice([1, 3, 4, 5, 6], size=C)
    cp[np.arange(C), k, C1] = _rand_colour(rng, (C,))
    cp[:, 8, C1] = 0.05
    _stripes(cp, rng, [1, 2, 4, 5], p.stripe_prob, palette_dark=True)
    cp[:, 6, VIS] = (rng.uniform(size=C) < 0.7).astype(np.float64)  # some classes have no cap

    S = p.sub_modes[1]
    s = p.submode_strength
    sm = np.repeat(cp[:, None], S, axis=1)
    # Wing: folded / raised / spread; head: looking forward / turned back; tail: up / down.
    sm[..., 4, TH] += rng.normal(0, 0.6 * s, size=(C, S))
    sm[..., 4, CY] += rng.normal(0, 0.06 * s, size=(C, S))
    sm[..., 4, A] *= np.exp(rng.normal(0, 0.2 * s, size=(C, S)))
    turned = rng.uniform(size=(C, S)) < 0.35
    hx = sm[..., 5, CX]
    for j in (7, 8):  # mirror beak and eye about the head centre
        sm[..., j, CX] = np.where(turned, 2 * hx - sm[..., j, CX], sm[..., j, CX])
        sm[..., j, TH] = np.where(turned, -sm[..., j, TH], sm[..., j, TH])
    head_shift = rng.normal(0, 0.05 * s, size=(C, S, 2))
    for j in (5, 6, 7, 8):
        sm[..., j, CX] += head_shift[..., 0]
        sm[..., j, CY] += head_shift[..., 1]
    sm[..., 1, TH] += rng.normal(0, 0.45 * s, size=(C, S))
    recol = rng.uniform(size=(C, S)) < p.submode_colour_prob
    which = rng.choice([2, 3, 4, 5], size=(C, S))
    new = _rand_colour(rng, (C, S))
    ci, si = np.nonzero(recol)
    sm[ci, si, which[ci, si], C1] = new[ci, si]
    pose = np.stack(
        [
            rng.normal(0, 0.35 * s, size=(C, S)),
            np.exp(rng.normal(0, 0.12 * s, size=(C, S))),
            np.exp(rng.normal(0, 0.12 * s, size=(C, S))),
        ],
        axis=-1,
    )
    return cp, family, sm, pose


_CAR = _parts(
    [
        [-0.10, -0.30, 0.20, 0.025, 0.0, BOX],  # 0 roof rack (optional)
        [-0.05, -0.13, 0.36, 0.14, 0.0, ROUNDBOX],  # 1 cabin
        [0.00, 0.07, 0.62, 0.16, 0.0, ROUNDBOX],  # 2 body
        [0.00, 0.10, 0.56, 0.022, 0.0, BOX],  # 3 trim stripe (optional)
        [0.12, -0.15, 0.13, 0.085, 0.0, BOX],  # 4 front window
        [-0.21, -0.15, 0.13, 0.085, 0.0, BOX],  # 5 rear window
        [0.58, 0.02, 0.045, 0.035, 0.0, BOX],  # 6 headlight
        [-0.59, 0.02, 0.03, 0.03, 0.0, BOX],  # 7 tail light
        [-0.38, 0.23, 0.14, 0.14, 0.0, ELLIPSE],  # 8 rear wheel
        [0.38, 0.23, 0.14, 0.14, 0.0, ELLIPSE],  # 9 front wheel
        [-0.38, 0.23, 0.06, 0.06, 0.0, ELLIPSE],  # 10 rear hub
        [0.38, 0.23, 0.06, 0.06, 0.0, ELLIPSE],  # 11 front hub
    ]
)
_CAR_PARENT = np.array([1, -1, -1, 2, 1, 1, 2, 2, -1, -1, 8, 9])


def _cars(p: SynthParams, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    F, C = p.num_families, p.num_classes
    K = _CAR.shape[0]
    # Body styles: cabin length / height / position, body height and wheel size vary by family.
    no_rot = np.ones(K)
    no_rot[[8, 9, 10, 11]] = 0.0  # wheels stay round: the angle jitter below is masked for them
    fs = p.family_spread
    fam = np.broadcast_to(_CAR, (F, K, NPARAM)).copy()
    fam[:, 1, A] *= np.exp(rng.normal(0, 0.25 * fs, size=F))
    fam[:, 1, B] *= np.exp(rng.normal(0, 0.25 * fs, size=F))
    fam[:, 1, CX] += rng.normal(0, 0.12 * fs, size=F)
    fam[:, 2, B] *= np.exp(rng.normal(0, 0.2 * fs, size=F))
    fam[:, 1, CY] = fam[:, 2, CY] - fam[:, 2, B] - fam[:, 1, B] * 0.7  # cabin sits on the body
    wheel = np.exp(rng.normal(0, 0.15 * fs, size=F))
    fam[:, 8:12, A] *= wheel[:, None]
    fam[:, 8:12, B] *= wheel[:, None]
    fam[:, 8:12, CY] = (fam[:, 2, CY] + fam[:, 2, B])[:, None]
    fam[:, 4:6, CY] = fam[:, 1, CY][:, None]
    fam[:, 4, CX] = fam[:, 1, CX] + 0.45 * fam[:, 1, A]
    fam[:, 5, CX] = fam[:, 1, CX] - 0.45 * fam[:, 1, A]
    fam[:, 4:6, A] = 0.4 * fam[:, 1, A][:, None]
    fam[:, 4:6, B] = 0.6 * fam[:, 1, B][:, None]
    fam[:, 0, CY] = fam[:, 1, CY] - fam[:, 1, B] - 0.03
    fam[:, [4, 5], SHAPE] = rng.choice([ROUNDBOX, BOX], size=(F, 1))

    family = rng.permutation(np.arange(C) % F)
    g = p.class_geom_spread
    cp = _perturb_geometry(fam[family], rng, 0.03 * g, 0.12 * g, 0.0, _CAR_PARENT)
    cp[:, :, TH] += rng.normal(0, 0.08 * g, size=(C, K)) * no_rot  # raked windows, lights
    cp[:, 8:12, B] = cp[:, 8:12, A]  # wheels and hubs stay circular in the object frame
    # Class details (not paint): window tint, hub colour and size, lights, trim and rack.
    tint = _rand_colour(rng, (C,), 0.1, 0.6, sat=0.4)
    cp[:, 4:6, C1] = tint[:, None]
    cp[:, 8:10, C1] = rng.uniform(0.03, 0.2, size=(C, 1, 1))
    cp[:, 10:12, C1] = _rand_colour(rng, (C,), 0.4, 0.95, sat=0.3)[:, None]
    cp[:, 10:12, A] *= np.exp(rng.normal(0, 0.25 * g, size=(C, 1)))
    cp[:, 10:12, B] = cp[:, 10:12, A]
    cp[:, 6, C1] = np.array([[1.0, 0.95, 0.7], [0.9, 0.9, 1.0], [1.0, 0.7, 0.2]])[
        rng.integers(0, 3, C)
    ]
    cp[:, 7, C1] = np.array([[0.9, 0.1, 0.1], [0.8, 0.4, 0.1]])[rng.integers(0, 2, C)]
    cp[:, [6, 7], SHAPE] = rng.choice([ROUNDBOX, BOX, ELLIPSE], size=(C, 1))
    cp[:, 3, VIS] = (rng.uniform(size=C) < 0.5).astype(np.float64)
    cp[:, 3, C1] = _rand_colour(rng, (C,), 0.05, 0.95)
    cp[:, 0, VIS] = (rng.uniform(size=C) < 0.3).astype(np.float64)
    cp[:, 0, C1] = 0.15
    _stripes(cp, rng, [2], p.stripe_prob * 0.5, palette_dark=True)  # two-tone body on a few models

    S = p.sub_modes[1]
    s = p.submode_strength
    sm = np.repeat(cp[:, None], S, axis=1)
    # Paint: per sub-mode (the same model in different colours); cabin shares the body paint.
    paint = _rand_colour(rng, (C, S), 0.05, 0.95)
    dull = rng.uniform(size=(C, S)) < 0.35
    paint = np.where(dull[..., None], paint.mean(-1, keepdims=True) * np.ones(3), paint)
    use_paint = rng.uniform(size=(C, S)) < p.submode_colour_prob
    for j in (1, 2):
        sm[..., j, C1] = np.where(use_paint[..., None], paint, sm[..., j, C1])
        sm[..., j, C2] = sm[..., j, C1] * 0.35
    # Viewpoint: 3/4 views compress the length; slight pitch; wheels become ellipses with it.
    pose = np.stack(
        [
            rng.normal(0, 0.12 * s, size=(C, S)),
            np.clip(rng.uniform(0.55, 1.05, size=(C, S)), 0.5, 1.1) ** s,
            np.exp(rng.normal(0, 0.08 * s, size=(C, S))),
        ],
        axis=-1,
    )
    return cp, family, sm, pose


def _products(p: SynthParams, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    F, C, K = p.num_families, p.num_classes, 7
    fs = p.family_spread
    fam = np.zeros((F, K, NPARAM))
    fam[..., VIS] = 1.0
    fam[..., SF] = 2.0
    shape_pref = rng.dirichlet(np.ones(3) * 0.5, size=F)
    for f in range(F):
        fam[f, :, SHAPE] = rng.choice(3, size=K, p=shape_pref[f])
    fam[..., CX] = np.clip(rng.normal(0, 0.25 * fs, size=(F, K)), -0.5, 0.5)
    fam[..., CY] = np.clip(rng.normal(0, 0.25 * fs, size=(F, K)), -0.5, 0.5)
    fam[..., A] = rng.uniform(0.08, 0.4, size=(F, K))
    fam[..., B] = rng.uniform(0.08, 0.4, size=(F, K))
    fam[..., TH] = rng.uniform(-np.pi / 2, np.pi / 2, size=(F, K))
    fam[:, 0, [CX, CY]] = 0.0  # a big main part anchors every product
    fam[:, 0, [A, B]] = rng.uniform(0.3, 0.5, size=(F, 2))
    order = np.argsort(-(fam[..., A] * fam[..., B]), axis=1, kind="stable")  # big parts drawn first
    fam = np.take_along_axis(fam, order[..., None], axis=1)
    fam[..., C1] = _rand_colour(rng, (F, K))

    family = rng.permutation(np.arange(C) % F)
    g = p.class_geom_spread
    cp = _perturb_geometry(fam[family], rng, 0.06 * g, 0.2 * g, 0.3 * g)
    cp[..., C1] = np.clip(cp[..., C1] + rng.normal(0, p.class_colour_spread, size=(C, K, 3)), 0, 1)
    k = rng.integers(0, K, size=C)
    cp[np.arange(C), k, C1] = _rand_colour(rng, (C,))  # a distinctive colour detail per product
    cp[..., VIS] = (rng.uniform(size=(C, K)) < 0.85).astype(np.float64)
    cp[:, 0, VIS] = 1.0
    _stripes(cp, rng, list(range(K)), p.stripe_prob * 0.4, palette_dark=False)

    S = p.sub_modes[1]
    s = p.submode_strength
    sm = np.repeat(cp[:, None], S, axis=1)
    # Viewpoints: front / side / back; the back view hides some parts and shifts others.
    hide = rng.uniform(size=(C, S, K)) < 0.2 * s
    hide[..., 0] = False
    sm[..., VIS] *= 1.0 - hide
    sm[..., CX] += rng.normal(0, 0.06 * s, size=(C, S, K))
    sm[..., CY] += rng.normal(0, 0.06 * s, size=(C, S, K))
    pose = np.stack(
        [
            rng.normal(0, 0.5 * s, size=(C, S)),
            np.exp(rng.normal(0, 0.2 * s, size=(C, S))),
            np.exp(rng.normal(0, 0.12 * s, size=(C, S))),
        ],
        axis=-1,
    )
    return cp, family, sm, pose


_KINDS = {"bird": _birds, "car": _cars, "product": _products}


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------
_GRID = (np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5) * (2.0 / IMAGE_SIZE) - 1.0
_GX = np.broadcast_to(_GRID[None, :], (IMAGE_SIZE, IMAGE_SIZE)).reshape(-1)  # x varies along width
_GY = np.broadcast_to(_GRID[:, None], (IMAGE_SIZE, IMAGE_SIZE)).reshape(-1)
_PIX = np.float32(2.0 / IMAGE_SIZE)


def _radius(u: np.ndarray, v: np.ndarray, shape: int) -> np.ndarray:
    """Normalised 'radius' of a part (1 on its outline) in part-local coordinates (u, v)."""
    if shape == ELLIPSE:
        return np.sqrt(u * u + v * v)
    if shape == ROUNDBOX:  # superellipse with exponent 4
        u2, v2 = u * u, v * v
        return np.sqrt(np.sqrt(u2 * u2 + v2 * v2))
    return np.maximum(np.abs(u), np.abs(v))  # box


def _composite(
    canvas: np.ndarray, X: np.ndarray, Y: np.ndarray, parts: np.ndarray, pix: np.ndarray
) -> None:
    """Paint parts (n, K, NPARAM) in order onto canvas (n, 3, P), in place.

    X, Y: (n, P) pixel coordinates in the parts' frame; pix: (n,) size of one pixel in that frame,
    so edges are anti-aliased over about one pixel whatever the scale.
    """
    f32 = np.float32
    for k in range(parts.shape[1]):
        q = parts[:, k]
        vis = q[:, VIS].astype(f32)
        if not vis.any():
            continue
        th = q[:, TH]
        c = np.cos(th).astype(f32)[:, None]
        s = np.sin(th).astype(f32)[:, None]
        a = q[:, A].astype(f32)[:, None]
        b = q[:, B].astype(f32)[:, None]
        dx = X - q[:, CX].astype(f32)[:, None]
        dy = Y - q[:, CY].astype(f32)[:, None]
        u = (dx * c + dy * s) / a
        v = (dy * c - dx * s) / b
        shapes = q[:, SHAPE].astype(np.int64)
        present = np.unique(shapes)
        r = _radius(u, v, int(present[0]))
        for sh in present[1:]:
            r = np.where((shapes == sh)[:, None], _radius(u, v, int(sh)), r)
        edge = np.minimum(a, b) / pix.astype(f32)[:, None]
        alpha = np.clip((1.0 - r) * edge + 0.5, 0.0, 1.0) * vis[:, None]
        col = q[:, C1].astype(f32)[:, :, None]  # (n, 3, 1)
        amp = q[:, SAMP].astype(f32)
        if amp.any():
            ca = np.cos(q[:, SA]).astype(f32)[:, None]
            sa = np.sin(q[:, SA]).astype(f32)[:, None]
            # Stripe coordinate in cycles; the stripe angle doubles as the phase offset.
            t = (u * ca + v * sa) * q[:, SF].astype(f32)[:, None] + q[:, SA].astype(f32)[:, None]
            t = t - np.floor(t)
            wave = 4.0 * t * (1.0 - t)  # smooth-ish periodic profile in [0, 1] without sin()
            col = (
                col
                + (amp[:, None] * wave)[:, None, :]
                * (q[:, C2].astype(f32) - q[:, C1].astype(f32))[:, :, None]
            )
        canvas += alpha[:, None, :] * (col - canvas)


def _random_clutter(
    rng: np.random.Generator, n: int, lo: int, hi: int, size: tuple[float, float]
) -> np.ndarray:
    k = max(hi, 0)
    q = np.zeros((n, k, NPARAM))
    if k == 0:
        return q
    count = rng.integers(lo, hi + 1, size=n)
    q[..., VIS] = (np.arange(k)[None, :] < count[:, None]).astype(np.float64)
    q[..., CX] = rng.uniform(-1.0, 1.0, size=(n, k))
    q[..., CY] = rng.uniform(-1.0, 1.0, size=(n, k))
    q[..., A] = rng.uniform(size[0], size[1], size=(n, k))
    q[..., B] = rng.uniform(size[0], size[1], size=(n, k))
    q[..., TH] = rng.uniform(-np.pi / 2, np.pi / 2, size=(n, k))
    q[..., SHAPE] = rng.integers(0, 3, size=(n, k))
    q[..., C1] = _rand_colour(rng, (n, k))
    q[..., C2] = _rand_colour(rng, (n, k))
    q[..., SF] = rng.uniform(1.0, 3.0, size=(n, k))
    q[..., SA] = rng.uniform(0, np.pi, size=(n, k))
    q[..., SAMP] = np.where(rng.uniform(size=(n, k)) < 0.2, 1.0, 0.0)
    return q


def _render_images(
    p: SynthParams, rng: np.random.Generator, parts: np.ndarray, pose: np.ndarray
) -> np.ndarray:
    """parts: (N, K, NPARAM) per-image parts (object frame), pose: (N, 3) -> uint8 (N, 3, S, S)."""
    N = parts.shape[0]
    P = IMAGE_SIZE * IMAGE_SIZE
    # Per-image nuisance, drawn up front for all images.
    parts = _perturb_geometry(parts, rng, p.part_jitter, p.part_jitter * 2, p.part_jitter * 3)
    rot = pose[:, 0] + rng.normal(0, p.rot_jitter, size=N)
    scale = rng.uniform(*p.scale_range, size=N) * 0.95
    sx, sy = scale * pose[:, 1], scale * pose[:, 2]
    t = rng.uniform(-p.translate, p.translate, size=(N, 2))
    cr, sr = np.cos(rot), np.sin(rot)
    # Image -> object frame: q = diag(1/sx, 1/sy) R(-rot) (p - t)
    inv = np.stack(
        [np.stack([cr / sx, sr / sx], -1), np.stack([-sr / sy, cr / sy], -1)], -2
    )  # (N,2,2)
    pix_obj = _PIX / np.sqrt(sx * sy)
    bg_base = 0.5 + p.background_jitter * (_rand_colour(rng, (N,), 0.15, 0.85, sat=0.5) - 0.5)
    bg_grad = rng.normal(0, 0.12, size=(N, 2, 3)) * p.background_jitter
    back = _random_clutter(rng, N, p.clutter[0], p.clutter[1], (0.05, 0.3))
    front = _random_clutter(rng, N, 0, 1, (0.04, 0.12))
    front[..., VIS] *= rng.uniform(size=(N, 1)) < p.clutter_front_prob
    gain = np.exp(rng.normal(0, p.brightness, size=(N, 1))) * (
        1 + rng.normal(0, p.colour_jitter, size=(N, 3))
    )
    offset = rng.normal(0, p.colour_jitter * 0.5, size=(N, 3))

    out = np.empty((N, 3, P), dtype=np.uint8)
    f32 = np.float32
    for lo in range(0, N, _CHUNK):
        sl = slice(lo, min(N, lo + _CHUNK))
        n = sl.stop - sl.start
        X = np.broadcast_to(_GX, (n, P))
        Y = np.broadcast_to(_GY, (n, P))
        canvas = (
            bg_base[sl].astype(f32)[:, :, None]
            + bg_grad[sl, 0].astype(f32)[:, :, None] * _GX[None, None, :]
            + bg_grad[sl, 1].astype(f32)[:, :, None] * _GY[None, None, :]
        )
        canvas = np.ascontiguousarray(canvas, dtype=f32)
        _composite(canvas, X, Y, back[sl], np.full(n, _PIX))
        dx = X - t[sl, 0].astype(f32)[:, None]
        dy = Y - t[sl, 1].astype(f32)[:, None]
        m = inv[sl].astype(f32)
        Xo = m[:, 0, 0, None] * dx + m[:, 0, 1, None] * dy
        Yo = m[:, 1, 0, None] * dx + m[:, 1, 1, None] * dy
        _composite(canvas, Xo, Yo, parts[sl], pix_obj[sl])
        _composite(canvas, X, Y, front[sl], np.full(n, _PIX))
        canvas = canvas * gain[sl].astype(f32)[:, :, None] + offset[sl].astype(f32)[:, :, None]
        canvas += rng.standard_normal(size=canvas.shape, dtype=f32) * f32(p.noise_std)
        np.clip(canvas * 255.0 + 0.5, 0.0, 255.0, out=canvas)
        out[sl] = canvas.astype(np.uint8)  # floor of x + 0.5 == round half up
    return out.reshape(N, 3, IMAGE_SIZE, IMAGE_SIZE)


# --------------------------------------------------------------------------------------------------
# Dataset assembly
# --------------------------------------------------------------------------------------------------
def generate(
    name: str, seed: int = 0, params: SynthParams | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Render one dataset -> (arrays, json-able meta); arrays hold the splits and info arrays."""
    p = params if params is not None else SYNTH_PARAMS[name]
    rng_s, rng_i = _streams(name, seed)
    _, family, sm_parts, sm_pose = _KINDS[p.kind](p, rng_s)
    C = p.num_classes
    sizes = _class_sizes(p, rng_s)
    n_sub = np.minimum(rng_s.integers(p.sub_modes[0], p.sub_modes[1] + 1, size=C), sizes)
    # Per image: class and sub-mode. Every sub-mode of a class gets at least one image.
    cls = np.repeat(np.arange(C), sizes)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(len(cls)) - first[cls]
    sub = np.where(
        rank < n_sub[cls],
        rank,
        np.floor(rng_s.uniform(size=len(cls)) * n_sub[cls]).astype(np.int64),
    )
    parts = sm_parts[cls, sub]
    pose = sm_pose[cls, sub]
    images = _render_images(p, rng_i, parts, pose)

    half = C // 2
    tr = cls < half
    arrays = {
        "train_images": images[tr],
        "train_labels": cls[tr].astype(np.int64),
        "test_images": images[~tr],
        "test_labels": (cls[~tr] - half).astype(np.int64),
        "info_sub_mode_train": sub[tr].astype(np.int64),
        "info_sub_mode_test": sub[~tr].astype(np.int64),
        "info_num_sub_modes_train": n_sub[:half].astype(np.int64),
        "info_num_sub_modes_test": n_sub[half:].astype(np.int64),
        # split label -> generator class id (class-disjointness is checkable from these)
        "info_global_class_train": np.arange(half, dtype=np.int64),
        "info_global_class_test": np.arange(half, C, dtype=np.int64),
        "info_super_class_train": family[:half].astype(np.int64),
        "info_super_class_test": family[half:].astype(np.int64),
        "info_super_label_train": family[cls[tr]].astype(np.int64),
        "info_super_label_test": family[cls[~tr]].astype(np.int64),
    }
    meta = {
        "generator": dataclasses.asdict(p),
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "image_size": IMAGE_SIZE,
        "num_super_classes": p.num_families,
        "num_train_classes": int(half),
        "num_test_classes": int(C - half),
        "num_train_images": int(tr.sum()),
        "num_test_images": int((~tr).sum()),
    }
    return arrays, meta


def cache_key(name: str, seed: int, params: SynthParams | None = None) -> str:
    p = params if params is not None else SYNTH_PARAMS[name]
    blob = json.dumps(
        {
            "name": name,
            "seed": int(seed),
            "params": dataclasses.asdict(p),
            "version": GENERATOR_VERSION,
            "chunk": _CHUNK,
            "size": IMAGE_SIZE,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write_atomic(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            payload = {"meta_json": np.array(json.dumps(meta)), **arrays}
            np.savez(fh, **payload)  # type: ignore[arg-type]  # numpy's stub confuses **kwds
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_EXPECTED = ("train_images", "train_labels", "test_images", "test_labels")


def _read(path: str, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "meta_json"}
        meta = json.loads(str(z["meta_json"]))
    if meta.get("cache_key") != key or any(k not in arrays for k in _EXPECTED):
        raise ValueError("cache content does not match its key")
    for s in ("train", "test"):
        im, lb = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        if im.dtype != np.uint8 or im.ndim != 4 or lb.shape != (im.shape[0],):
            raise ValueError(f"cache holds malformed {s} arrays")
    return arrays, meta


def load_synthetic(name: str, root: str | None, cache_dir: str, seed: int = 0) -> DatasetBundle:
    """Load (or generate and cache) one embedded dataset; ``root``, if given, is the cache dir."""
    if name not in SYNTH_PARAMS:
        raise ValueError(
            f"unknown synthetic dataset {name!r}; valid: {', '.join(sorted(SYNTH_PARAMS))}"
        )
    directory = root if root is not None else cache_dir
    os.makedirs(directory, exist_ok=True)
    key = cache_key(name, seed)
    path = os.path.join(directory, f"{name}-{key}.npz")
    arrays = meta = None
    from_cache = False
    if os.path.exists(path):
        try:
            arrays, meta = _read(path, key)
            from_cache = True
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt, never fatal
            warnings.warn(
                f"synthetic cache {path} is unreadable ({type(exc).__name__}: {exc}); regenerating",
                RuntimeWarning,
                stacklevel=2,
            )
    if arrays is None:
        t0 = time.perf_counter()
        arrays, meta = generate(name, seed)
        meta["cache_key"] = key
        meta["generation_seconds"] = round(time.perf_counter() - t0, 3)
        _write_atomic(path, arrays, meta)
    assert meta is not None
    info: dict[str, Any] = dict(meta)
    info.update({k[len("info_") :]: v for k, v in arrays.items() if k.startswith("info_")})
    info["cache_file"] = path
    info["from_cache"] = from_cache
    train = ImageSplit(
        torch.from_numpy(np.ascontiguousarray(arrays["train_images"])),
        torch.from_numpy(np.ascontiguousarray(arrays["train_labels"])),
    )
    test = ImageSplit(
        torch.from_numpy(np.ascontiguousarray(arrays["test_images"])),
        torch.from_numpy(np.ascontiguousarray(arrays["test_labels"])),
    )
    return DatasetBundle(name=name, train=train, test=test, info=info)


def _make_loader(name: str) -> Callable[[str | None, str], DatasetBundle]:
    def load(root: str | None, cache_dir: str) -> DatasetBundle:
        return load_synthetic(name, root, cache_dir, seed=DATA_SEED)

    load.__name__ = load.__qualname__ = f"load_{name.replace('-', '_')}"
    return load


for _name in SYNTH_PARAMS:
    DATASETS.add(
        _name,
        DatasetInfo(
            name=_name,
            load=_make_loader(_name),
            recall_at=_RECALL_AT[_name],
            description=_DESCRIPTIONS[_name],
            needs_root=False,
        ),
    )
