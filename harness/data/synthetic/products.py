"""``synth-sop`` structure: 12 families of random part templates, ~2000 classes of 2-12 images;
sub-modes are viewpoints that rotate, squash and hide parts."""

from __future__ import annotations

import numpy as np

from nirbench.harness.data.synthetic.params import SynthParams
from nirbench.harness.data.synthetic.parts import (
    C1,
    CX,
    CY,
    NPARAM,
    SF,
    SHAPE,
    TH,
    VIS,
    A,
    B,
    perturb_geometry,
    random_colour,
    stripes,
)


def sample_products(p: SynthParams, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
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
    fam[..., C1] = random_colour(rng, (F, K))

    family = rng.permutation(np.arange(C) % F)
    g = p.class_geom_spread
    cp = perturb_geometry(fam[family], rng, 0.06 * g, 0.2 * g, 0.3 * g)
    cp[..., C1] = np.clip(cp[..., C1] + rng.normal(0, p.class_colour_spread, size=(C, K, 3)), 0, 1)
    k = rng.integers(0, K, size=C)
    cp[np.arange(C), k, C1] = random_colour(rng, (C,))  # a distinctive colour detail per product
    cp[..., VIS] = (rng.uniform(size=(C, K)) < 0.85).astype(np.float64)
    cp[:, 0, VIS] = 1.0
    stripes(cp, rng, list(range(K)), p.stripe_prob * 0.4, palette_dark=False)

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
