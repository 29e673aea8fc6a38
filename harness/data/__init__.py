"""Datasets: the registry, the embedded synthetic benchmarks and the real ones (harness/data/real/),
registered on import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nirbench.harness.data import synthetic  # noqa: F401  (registers synth-cub, synth-cars, synth-sop)
from nirbench.harness.data import real  # noqa: F401  (registers cub200, cars196, sop)
from nirbench.harness.data.base import DATASETS, DatasetBundle, DatasetInfo, ImageSplit

__all__ = ["DATASETS", "DatasetBundle", "DatasetInfo", "ImageSplit", "load_dataset"]


def load_dataset(name: str, root: str | None, cache_dir: Path, **options: Any) -> DatasetBundle:
    """``options`` (allow_partial, cache) go to the loader only when the dataset declares them
    (``DatasetInfo.options``), so loaders that take none (the synthetic ones, test doubles) keep
    their two-argument signature; the config refuses a non-default option they lack."""
    info = DATASETS.get(name)
    return info.load(
        root, str(cache_dir), **{k: v for k, v in options.items() if k in info.options}
    )
