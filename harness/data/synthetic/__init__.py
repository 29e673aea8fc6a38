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
- ``synth-sop``  "products": 12 families (super-classes) of random part templates, 1000 classes
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

from collections.abc import Callable

from nirbench.harness.data.base import DATASETS, DatasetBundle, DatasetInfo
from nirbench.harness.data.synthetic.cache import cache_key, load_synthetic
from nirbench.harness.data.synthetic.generate import generate
from nirbench.harness.data.synthetic.params import (
    DATA_VERSIONS,
    DESCRIPTIONS,
    RECALL_AT,
    DATA_SEED,
    GENERATOR_VERSION,
    IMAGE_SIZE,
    SYNTH_PARAMS,
    SynthParams,
    clean_params,
)

__all__ = [
    "DATA_SEED",
    "GENERATOR_VERSION",
    "IMAGE_SIZE",
    "SYNTH_PARAMS",
    "SynthParams",
    "cache_key",
    "clean_params",
    "generate",
    "load_synthetic",
]


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
            recall_at=RECALL_AT[_name],
            description=DESCRIPTIONS[_name],
            needs_root=False,
            version=DATA_VERSIONS[_name],
        ),
    )
