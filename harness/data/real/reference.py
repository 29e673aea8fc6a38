"""The classic pipeline, kept as the reference: per sample, PIL decode (torchvision's
``ImageFolder`` loader) + torchvision transforms, batched by a ``torch.utils.data.DataLoader``
with worker processes. ``nirbench bench data`` measures the cached pipeline against it, and the
tests compare ``CachedImageSplit``'s batches with its transforms."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from nirbench.harness.data.real.transforms import CROP, IMAGENET_MEAN, IMAGENET_STD, RATIO, SCALE


def train_transform() -> Callable:
    """The paper's training transform on PIL images."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(CROP, scale=SCALE, ratio=RATIO),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform() -> Callable:
    """The paper's evaluation transform on PIL images: Resize(256) + CenterCrop(224)."""
    from torchvision import transforms as T

    return T.Compose(
        [T.Resize(256), T.CenterCrop(CROP), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def pil_loader(path: str | Path):
    """torchvision ``ImageFolder``'s default loader."""
    from PIL import Image

    with open(path, "rb") as fh:
        return Image.open(fh).convert("RGB")


class PerSampleImages(Dataset):
    """``ImageFolder``-style: item k is (transform(decode(files[k])), labels[k])."""

    def __init__(
        self, files: Sequence[str | Path], labels: Sequence[int], transform: Callable
    ) -> None:
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.files = [str(f) for f in files]
        self.labels = list(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        return self.transform(pil_loader(self.files[k])), self.labels[k]
