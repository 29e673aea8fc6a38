"""``synth-cars`` structure: rounded/hard box compositions plus wheels; paint is not a class cue."""

from __future__ import annotations

import numpy as np

from nirbench.harness.data.synthetic.params import SynthParams
from nirbench.harness.data.synthetic.parts import (
    BOX,
    C1,
    C2,
    CX,
    CY,
    ELLIPSE,
    NPARAM,
    ROUNDBOX,
    SHAPE,
    TH,
    VIS,
    A,
    B,
    perturb_geometry,
    prototype_parts,
    random_colour,
    stripes,
)

_CAR = prototype_parts(
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


def sample_cars(p: SynthParams, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
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
    cp = perturb_geometry(fam[family], rng, 0.03 * g, 0.12 * g, 0.0, _CAR_PARENT)
    cp[:, :, TH] += rng.normal(0, 0.08 * g, size=(C, K)) * no_rot  # raked windows, lights
    cp[:, 8:12, B] = cp[:, 8:12, A]  # wheels and hubs stay circular in the object frame
    # Class details (not paint): window tint, hub colour and size, lights, trim and rack.
    tint = random_colour(rng, (C,), 0.1, 0.6, sat=0.4)
    cp[:, 4:6, C1] = tint[:, None]
    cp[:, 8:10, C1] = rng.uniform(0.03, 0.2, size=(C, 1, 1))
    cp[:, 10:12, C1] = random_colour(rng, (C,), 0.4, 0.95, sat=0.3)[:, None]
    cp[:, 10:12, A] *= np.exp(rng.normal(0, 0.25 * g, size=(C, 1)))
    cp[:, 10:12, B] = cp[:, 10:12, A]
    cp[:, 6, C1] = np.array([[1.0, 0.95, 0.7], [0.9, 0.9, 1.0], [1.0, 0.7, 0.2]])[
        rng.integers(0, 3, C)
    ]
    cp[:, 7, C1] = np.array([[0.9, 0.1, 0.1], [0.8, 0.4, 0.1]])[rng.integers(0, 2, C)]
    cp[:, [6, 7], SHAPE] = rng.choice([ROUNDBOX, BOX, ELLIPSE], size=(C, 1))
    cp[:, 3, VIS] = (rng.uniform(size=C) < 0.5).astype(np.float64)
    cp[:, 3, C1] = random_colour(rng, (C,), 0.05, 0.95)
    cp[:, 0, VIS] = (rng.uniform(size=C) < 0.3).astype(np.float64)
    cp[:, 0, C1] = 0.15
    stripes(cp, rng, [2], p.stripe_prob * 0.5, palette_dark=True)  # two-tone body on a few models

    S = p.sub_modes[1]
    s = p.submode_strength
    sm = np.repeat(cp[:, None], S, axis=1)
    # Paint: per sub-mode (the same model in different colours); cabin shares the body paint.
    paint = random_colour(rng, (C, S), 0.05, 0.95)
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
