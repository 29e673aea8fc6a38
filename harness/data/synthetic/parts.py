"""One part's parameter vector (geometry, colours, stripes, visibility) and the helpers that draw
class and sub-mode variations of part prototypes."""

from __future__ import annotations

import numpy as np

from nirbench.harness.data.synthetic.params import SynthParams

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


def prototype_parts(rows: list[list[float]]) -> np.ndarray:
    """Prototype rows [cx, cy, a, b, theta, shape] -> (K, NPARAM); visible, no stripes."""
    out = np.zeros((len(rows), NPARAM), dtype=np.float64)
    out[:, :6] = np.asarray(rows, dtype=np.float64)
    out[:, VIS] = 1.0
    out[:, SF] = 2.0
    return out


def random_colour(
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


def perturb_geometry(
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


def class_sizes(p: SynthParams, rng: np.random.Generator) -> np.ndarray:
    lo, hi = p.images_per_class
    n = np.arange(lo, hi + 1)
    if p.size_decay > 0:
        w = np.exp(-(n - lo) / p.size_decay)
    else:
        w = np.ones_like(n, dtype=np.float64)
    return rng.choice(n, size=p.num_classes, p=w / w.sum())


def stripes(
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
            parts[:, k, C2] = random_colour(rng, (C,))
