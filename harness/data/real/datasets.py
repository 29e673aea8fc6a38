"""``cub200``, ``cars196``, ``sop``: list the copy under ``root``, open (or build) its pixel
cache under ``cache_dir``, and return a ``DatasetBundle`` of two ``CachedImageSplit``s.

Labels are contiguous 0..C-1 within each split, in ascending order of the dataset's class ids;
``bundle.info`` maps them back (``global_class_train/test``: the official id of each label) and,
for SOP, keeps the super-classes (``super_class_train/test``: super-class id of each label,
``super_label_train/test``: of each image, ``super_class_names``).

A copy that is not the complete official dataset (missing or unexpected class ids, other image
counts, files the annotations list but the copy lacks) is refused before anything is decoded,
unless ``allow_partial``; ``info["partial"]`` and ``info["missing_class_count"]`` say which it was
(the runner turns them into the run's ``dataset.partial`` tag).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nirbench.harness.data.base import DATASETS, DatasetBundle, DatasetInfo
from nirbench.harness.data.real import cars196, cub200, sop
from nirbench.harness.data.real.cache import PREPROCESSING, open_or_build
from nirbench.harness.data.real.layouts import Listing
from nirbench.harness.data.real.official_ids import require_complete
from nirbench.harness.data.real.split import CachedImageSplit

READERS: dict[str, Callable[[str | Path | None], Listing]] = {
    "cub200": cub200.list_images,
    "cars196": cars196.list_images,
    "sop": sop.list_images,
}
RECALL_AT = {"cub200": (1, 2, 4, 8), "cars196": (1, 2, 4, 8), "sop": (1, 10, 100, 1000)}
DESCRIPTIONS = {
    "cub200": "CUB200-2011 birds: classes 1-100 train (5,864 images), 101-200 test (5,924); "
    "needs dataset.root",
    "cars196": "Cars196: official class ids 1-98 train (8,054 images), 99-196 test (8,131); "
    "needs dataset.root",
    "sop": "Stanford Online Products: Ebay_train.txt 11,318 classes (59,551 images), "
    "Ebay_test.txt 11,316 classes (60,502); needs dataset.root",
}
HELP = {"cub200": cub200.HELP, "cars196": cars196.HELP, "sop": sop.HELP}


def list_dataset(name: str, root: str | Path | None) -> Listing:
    if name not in READERS:
        raise ValueError(f"unknown real dataset {name!r}; valid: {', '.join(sorted(READERS))}")
    return READERS[name](root)


def _split(
    store,
    listing: Listing,
    mask: np.ndarray,
    info: dict[str, Any],
    tag: str,
) -> CachedImageSplit:
    ids = np.flatnonzero(mask)
    classes, labels = np.unique(listing.class_ids[ids], return_inverse=True)
    info[f"global_class_{tag}"] = classes
    if listing.super_class_ids is not None:
        supers = listing.super_class_ids[ids]
        first = np.unique(labels, return_index=True)[1]
        info[f"super_class_{tag}"] = supers[first]  # per label: its products' super-class
        info[f"super_label_{tag}"] = supers
    return CachedImageSplit(store, ids, torch.from_numpy(labels.astype(np.int64)))


def load_real(
    name: str,
    root: str | Path | None,
    cache_dir: str | Path,
    *,
    allow_partial: bool = False,
    cache: str = "uint8",
    workers: int | None = None,
    progress: bool = True,
) -> DatasetBundle:
    """``cache``: ``uint8`` (decoded pixels, the default) or ``jpeg`` (the compact cache of
    jpeg_cache.py, lossy, 6-15x smaller)."""
    listing = list_dataset(name, root)
    report = require_complete(listing, allow_partial)  # before any decoding: fail in seconds
    store, reused = open_or_build(
        listing.dataset,
        listing.layout,
        listing.base,
        listing.paths,
        cache_dir,
        workers=workers,
        progress=progress,
        kind=cache,
    )
    info: dict[str, Any] = {
        "layout": listing.layout,
        "root": str(listing.base),
        "cache_dir": str(store.directory),
        "from_cache": reused,
        "cache_kind": cache,
        "preprocessing": dict(PREPROCESSING),
        **listing.split_counts(),
        "partial": not report.complete,
        "missing_class_count": len(report.missing_ids),
    }
    train = _split(store, listing, listing.train, info, "train")
    test = _split(store, listing, ~listing.train, info, "test")
    if listing.class_names:
        info["class_names"] = {int(k): v for k, v in listing.class_names.items()}
    if listing.super_class_names:
        info["super_class_names"] = dict(listing.super_class_names)
    return DatasetBundle(name=name, train=train, test=test, info=info)


def _make_loader(name: str) -> Callable[..., DatasetBundle]:
    def load(
        root: str | None, cache_dir: str, *, allow_partial: bool = False, cache: str = "uint8"
    ) -> DatasetBundle:
        return load_real(name, root, cache_dir, allow_partial=allow_partial, cache=cache)

    load.__name__ = load.__qualname__ = f"load_{name}"
    return load


for _name in READERS:
    DATASETS.add(
        _name,
        DatasetInfo(
            name=_name,
            load=_make_loader(_name),
            recall_at=RECALL_AT[_name],
            description=DESCRIPTIONS[_name],
            needs_root=True,
            options=("allow_partial", "cache"),
        ),
    )
