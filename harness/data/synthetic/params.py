"""Generator parameters of the three embedded datasets (all hashed into the cache key), their
descriptions and Recall@k lists, and the constants that version the generated arrays."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

GENERATOR_VERSION = 1
"""Bump whenever the rendering or sampling code changes the arrays it produces (new cache key)."""

IMAGE_SIZE = 32
DATA_SEED = 0
"""The registered loaders always use this seed: the data belongs to the benchmark, not the run."""

CHUNK = 512  # images rendered at once; part of the noise-drawing order, so fixed (version it)


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
        num_classes=1000,  # version 2 (was 2000): half the images per epoch, see DATA_VERSIONS
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

# Per dataset: bumped when its parameters change (the run identity follows, dataset.version).
# synth-sop 2: 1000 classes instead of 2000, so that its converged budget fits the main job
# (README, "The embedded protocol").
DATA_VERSIONS = {"synth-cub": 1, "synth-cars": 1, "synth-sop": 2}

DESCRIPTIONS = {
    "synth-cub": "embedded synthetic fine-grained 'birds' (ellipse parts, colour patterns), "
    "CUB-shaped",
    "synth-cars": "embedded synthetic fine-grained 'cars' (box parts, paint is not a class cue), "
    "Cars196-shaped",
    "synth-sop": "embedded synthetic 'online products': 1000 classes of 2-12 images, "
    "12 super-classes, "
    "SOP-shaped",
}
RECALL_AT = {
    "synth-cub": (1, 2, 4, 8),
    "synth-cars": (1, 2, 4, 8),
    "synth-sop": (1, 10, 100, 1000),
}
