"""``synth-cub`` structure: soft-ellipse part compositions (tail, body, belly, wing, head, cap,
beak, eye, legs). Returns class parts, families, sub-mode parts and sub-mode poses."""

from __future__ import annotations

import numpy as np

from nirbench.harness.data.synthetic.params import SynthParams
from nirbench.harness.data.synthetic.parts import (
    BOX,
    C1,
    CX,
    CY,
    ELLIPSE,
    TH,
    VIS,
    A,
    perturb_geometry,
    prototype_parts,
    random_colour,
    stripes,
)

_BIRD = prototype_parts(
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


def sample_birds(p: SynthParams, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    F, C = p.num_families, p.num_classes
    fam_parts = perturb_geometry(
        np.broadcast_to(_BIRD, (F,) + _BIRD.shape),
        rng,
        0.05 * p.family_spread,
        0.18 * p.family_spread,
        0.2 * p.family_spread,
        _BIRD_PARENT,
    )
    # Family palette: three colours; parts pick palette entries per family.
    pal = random_colour(rng, (F, 3))
    assign = rng.integers(0, 3, size=(F, 9))
    fam_parts[:, :, C1] = np.take_along_axis(pal, assign[..., None], axis=1)
    fam_parts[:, 7, C1] = np.array(
        [[0.9, 0.75, 0.1], [0.95, 0.5, 0.1], [0.15, 0.15, 0.15], [0.6, 0.6, 0.6]]
    )[rng.integers(0, 4, size=F)]  # beak
    fam_parts[:, 8, C1] = 0.05  # eye
    fam_parts[:, 0, C1] = np.array([[0.3, 0.25, 0.2], [0.85, 0.5, 0.2]])[rng.integers(0, 2, size=F)]

    family = rng.permutation(np.arange(C) % F)
    cp = perturb_geometry(
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
    cp[np.arange(C), k, C1] = random_colour(rng, (C,))
    cp[:, 8, C1] = 0.05
    stripes(cp, rng, [1, 2, 4, 5], p.stripe_prob, palette_dark=True)
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
    new = random_colour(rng, (C, S))
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
