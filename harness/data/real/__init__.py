"""The real benchmarks (CUB200-2011, Cars196, Stanford Online Products), registered as
``cub200``, ``cars196`` and ``sop``.

- layouts: ``cub200.py``, ``cars196.py``, ``sop.py`` find images, class ids and splits
  (``layouts.py``: the shared ``Listing`` and errors); ``official_ids.py`` holds the official
  splits by class id and measures a copy against them; ``check.py`` validates a copy
  (``nirbench data check``);
- pixels: ``cache.py`` decodes every image once (shorter side 256) into a memory-mapped uint8
  cache (or, with ``dataset.cache=jpeg``, ``jpeg_cache.py``'s compact JPEG cache, decoded per
  batch); ``cache_size.py`` says how much disk either takes; ``split.py``'s
  ``CachedImageSplit`` serves batches from it with the batched transforms of ``transforms.py``;
  ``reference.py`` is the classic per-sample PIL + torchvision pipeline they are measured and
  tested against (``nirbench bench data``).
"""

from nirbench.harness.data.real.datasets import list_dataset, load_real  # noqa: F401  (registers)
from nirbench.harness.data.real.layouts import DatasetLayoutError, Listing, UnreadableImagesError
from nirbench.harness.data.real.official_ids import OFFICIAL, PartialDatasetError, completeness
from nirbench.harness.data.real.split import CachedImageSplit

__all__ = [
    "CachedImageSplit",
    "DatasetLayoutError",
    "Listing",
    "OFFICIAL",
    "PartialDatasetError",
    "UnreadableImagesError",
    "completeness",
    "list_dataset",
    "load_real",
]
