"""``CachedImageSplit``: an ``ImageSplit`` whose pixels live in the memory-mapped cache.

The engine only calls ``train_batch``, ``eval_batch``, ``subset``, ``labels``, ``num_classes`` and
``len``; this class answers them from a store (``cache.PixelStore``, or the compact
``jpeg_cache.JpegStore``, which decodes each batch) plus the positions (``ids``) of its images in
that store, so a validation split (``subset``) shares the same cache file and costs nothing.
There is no ``images`` tensor: real photographs differ in size, and materialising the split
would defeat the cache.
"""

from __future__ import annotations

import numpy as np
import torch

from nirbench.harness.data.base import ImageSplit
from nirbench.harness.data.real.cache import PixelStore
from nirbench.harness.data.real.jpeg_cache import JpegStore
from nirbench.harness.data.real.transforms import (
    CROP,
    RATIO,
    SCALE,
    center_boxes,
    eval_pixels,
    one_thread,
    sample_crop_boxes,
    train_pixels,
)


class CachedImageSplit(ImageSplit):
    def __init__(
        self,
        store: PixelStore | JpegStore,
        ids: np.ndarray | torch.Tensor,
        labels: torch.Tensor,
        crop: int = CROP,
    ) -> None:
        # Not the dataclass __init__: the parent's fields are (images, labels), and this split
        # has no images tensor; __post_init__ still validates what it has.
        # ``crop``: output size (224, the paper's); smaller for low-resolution CPU benchmarks
        # (nirbench bench train), with a cache whose shorter side is scaled alike.
        self.store = store
        self.crop = crop
        self.ids = torch.as_tensor(np.asarray(ids), dtype=torch.int64)
        self.labels = labels
        self.__post_init__()

    def __post_init__(self) -> None:
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(
                f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if self.ids.shape != self.labels.shape:
            raise ValueError(
                f"labels must have one entry per image: {len(self.labels)} labels "
                f"for {len(self.ids)} images"
            )
        if len(self.ids) and (int(self.ids.min()) < 0 or int(self.ids.max()) >= len(self.store)):
            raise ValueError(f"image ids must lie in [0, {len(self.store)}) of {self.store}")
        if len(self.labels) and set(self.labels.unique().tolist()) != set(range(self.num_classes)):
            raise ValueError("labels must be contiguous 0..C-1 within a split")

    @property
    def images(self) -> torch.Tensor:
        raise AttributeError(
            "a CachedImageSplit has no images tensor (variable-size photographs "
            "in a memory-mapped cache); use train_batch / eval_batch, or "
            "image(k) for one (h, w, 3) uint8 array"
        )

    def image(self, k: int) -> np.ndarray:
        """The cached (Resize(256)) image at position ``k`` of this split, (h, w, 3) uint8."""
        return self.store.image(int(self.ids[k]))

    def sizes(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.ids[idx].numpy()
        return (torch.from_numpy(self.store.heights[ids]), torch.from_numpy(self.store.widths[ids]))

    def train_boxes(
        self,
        idx: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The RandomResizedCrop boxes (i, j, h, w) and flip coins ``train_batch`` will use for
        ``idx`` with a generator in this state (it advances the generator the same way)."""
        heights, widths = self.sizes(idx)
        return sample_crop_boxes(heights, widths, generator, SCALE, RATIO)

    def train_batch(
        self, idx: torch.Tensor, device: torch.device, generator: torch.Generator
    ) -> torch.Tensor:
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1)
        # One thread for the many small CPU ops (see transforms.py: waiting for a second OpenMP
        # thread on a busy machine made them ten times slower); the model keeps its threads.
        with one_thread():
            boxes, flips = self.train_boxes(idx, generator)
            views = self.store.images(self.ids[idx].tolist(), device)
        return train_pixels(views, boxes, flips, device, self.crop)

    def eval_batch(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        positions = torch.arange(max(0, start), min(stop, len(self)))
        if len(positions) == 0:
            return torch.empty(0, 3, self.crop, self.crop, dtype=torch.float32, device=device)
        heights, widths = self.sizes(positions)
        with one_thread():
            views = self.store.images(self.ids[positions].tolist(), device)
        return eval_pixels(views, center_boxes(heights, widths, self.crop), device)

    def subset(self, mask: torch.Tensor, labels: torch.Tensor) -> "CachedImageSplit":
        return CachedImageSplit(self.store, self.ids[mask], labels, self.crop)

    def __repr__(self) -> str:
        return f"CachedImageSplit({len(self)} images, {self.num_classes} classes, {self.store!r})"

    __eq__ = object.__eq__  # the dataclass __eq__ would compare the missing images tensor
    __hash__ = object.__hash__
