"""The data contract between datasets and the training engine.

A dataset yields two class-disjoint splits; labels are contiguous ints 0..C-1 within a split (so a
proxy table has C rows). The engine asks a split for whole batches only (``train_batch``,
``eval_batch``), so a split decides where its pixels live and how they are augmented:
``ImageSplit`` keeps small images as one in-memory uint8 tensor (N, 3, H, W) and augments them
batched on the training device; a split of real photographs can subclass it and read a
memory-mapped uint8 cache instead (harness/data/real/), with its own batched transforms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from nirbench.harness.registry import Registry


@dataclass
class ImageSplit:
    images: torch.Tensor  # uint8, (N, 3, H, W)
    labels: torch.Tensor  # int64, (N,), contiguous 0..C-1

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 (N, 3, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image")
        if len(self.labels) and set(self.labels.unique().tolist()) != set(range(self.num_classes)):
            raise ValueError("labels must be contiguous 0..C-1 within a split")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def train_batch(
        self, idx: torch.Tensor, device: torch.device, generator: torch.Generator
    ) -> torch.Tensor:
        """Augmented float32 (B, 3, h, w) training images at positions ``idx``, on ``device``.
        All randomness comes from ``generator`` (seeded by (seed, epoch): identical in both arms)."""
        from nirbench.harness.data.augment import train_augment

        return train_augment(self.images[idx].to(device), generator)

    def eval_batch(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Deterministic float32 (B, 3, h, w) evaluation images ``start:stop``, on ``device``."""
        from nirbench.harness.data.augment import eval_transform

        return eval_transform(self.images[start:stop].to(device))

    def subset(self, mask: torch.Tensor, labels: torch.Tensor) -> "ImageSplit":
        """The images where ``mask`` is true, relabelled with ``labels`` (one per kept image);
        a subclass returns its own kind so validation splits keep the storage and transforms."""
        return ImageSplit(self.images[mask], labels)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max().item()) + 1 if len(self.labels) else 0


@dataclass
class DatasetBundle:
    name: str
    train: ImageSplit
    test: ImageSplit
    # Anything a later stage may want to show (generator parameters, source paths, ...).
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetInfo:
    """Registry entry: how to load a dataset and its standard evaluation protocol."""

    name: str
    load: Callable[..., DatasetBundle]  # load(root: str | None, cache_dir: str) -> DatasetBundle
    recall_at: tuple[int, ...]  # the benchmark's customary Recall@k list
    description: str
    needs_root: bool  # real datasets need dataset.root; embedded ones do not
    # Keyword options ``load`` accepts beyond (root, cache_dir), e.g. ("allow_partial",): the
    # config refuses a dataset.* option the dataset does not have instead of ignoring it.
    options: tuple[str, ...] = ()
    # The data's own version: bumped when a dataset keeps its name but its images or split change
    # (the embedded generators' parameters), so that its runs get a new identity
    # (``dataset.version`` in the resolved config). 1: as first published.
    version: int = 1


DATASETS: Registry[DatasetInfo] = Registry("dataset")
