"""Assemble one dataset: sample its structure (families -> classes -> sub-modes), render every
image, split class-disjointly (first half of the class ids train, second half test)."""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import numpy as np

from nirbench.harness.data.synthetic.birds import sample_birds
from nirbench.harness.data.synthetic.cars import sample_cars
from nirbench.harness.data.synthetic.params import (
    GENERATOR_VERSION,
    IMAGE_SIZE,
    SYNTH_PARAMS,
    SynthParams,
)
from nirbench.harness.data.synthetic.parts import class_sizes
from nirbench.harness.data.synthetic.products import sample_products
from nirbench.harness.data.synthetic.render import render_images


def random_streams(name: str, seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(structure stream, image stream) for one dataset; independent across names and seeds."""
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(zlib.crc32(name.encode()),))
    a, b = ss.spawn(2)
    return np.random.Generator(np.random.PCG64(a)), np.random.Generator(np.random.PCG64(b))


_KINDS = {"bird": sample_birds, "car": sample_cars, "product": sample_products}


def generate(
    name: str, seed: int = 0, params: SynthParams | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Render one dataset -> (arrays, json-able meta); arrays hold the splits and info arrays."""
    p = params if params is not None else SYNTH_PARAMS[name]
    rng_s, rng_i = random_streams(name, seed)
    _, family, sm_parts, sm_pose = _KINDS[p.kind](p, rng_s)
    C = p.num_classes
    sizes = class_sizes(p, rng_s)
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
    images = render_images(p, rng_i, parts, pose)

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
