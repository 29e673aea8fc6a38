"""The per-pixel renderer: parts, clutter, lighting and noise -> uint8 images (N, 3, 32, 32). It
only uses +, -, *, /, sqrt, floor, min/max and clip, so pixels do not depend on the CPU's SIMD
kernels."""

from __future__ import annotations

import numpy as np

from nirbench.harness.data.synthetic.params import CHUNK, IMAGE_SIZE, SynthParams
from nirbench.harness.data.synthetic.parts import (
    C1,
    C2,
    CX,
    CY,
    ELLIPSE,
    NPARAM,
    ROUNDBOX,
    SA,
    SAMP,
    SF,
    SHAPE,
    TH,
    VIS,
    A,
    B,
    perturb_geometry,
    random_colour,
)

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
    q[..., C1] = random_colour(rng, (n, k))
    q[..., C2] = random_colour(rng, (n, k))
    q[..., SF] = rng.uniform(1.0, 3.0, size=(n, k))
    q[..., SA] = rng.uniform(0, np.pi, size=(n, k))
    q[..., SAMP] = np.where(rng.uniform(size=(n, k)) < 0.2, 1.0, 0.0)
    return q


def render_images(
    p: SynthParams, rng: np.random.Generator, parts: np.ndarray, pose: np.ndarray
) -> np.ndarray:
    """parts: (N, K, NPARAM) per-image parts (object frame), pose: (N, 3) -> uint8 (N, 3, S, S)."""
    N = parts.shape[0]
    P = IMAGE_SIZE * IMAGE_SIZE
    # Per-image nuisance, drawn up front for all images.
    parts = perturb_geometry(parts, rng, p.part_jitter, p.part_jitter * 2, p.part_jitter * 3)
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
    bg_base = 0.5 + p.background_jitter * (random_colour(rng, (N,), 0.15, 0.85, sat=0.5) - 0.5)
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
    for lo in range(0, N, CHUNK):
        sl = slice(lo, min(N, lo + CHUNK))
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
