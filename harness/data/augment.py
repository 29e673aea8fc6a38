"""Batched image transforms on uint8 tensors, run on the training device.

Why batched: datasets keep each split as one uint8 tensor (see ``harness.data.base``), so a whole
batch is cropped and flipped with two ``gather`` calls instead of a Python loop over images.

Normalisation: per-channel mean 0.5 and std 0.5 on [0, 1] intensities, i.e. ``x / 127.5 - 1`` in
[-1, 1]. (The paper normalised with ImageNet statistics for a pretrained ResNet50; the small
embedded datasets and from-scratch backbones use this symmetric choice. Backbones that need other
statistics should re-normalise in their stem.)

Randomness: all draws come from the caller's ``torch.Generator`` (on the CPU, or on the images'
device if the generator lives there) and are then moved to the images' device, so results depend
only on the generator state, not on the device the images sit on.
"""

from __future__ import annotations

import torch

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def _normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4 or images_uint8.shape[1] != 3:
        raise ValueError(
            f"expected uint8 (B, 3, H, W), got {images_uint8.dtype} {tuple(images_uint8.shape)}"
        )
    # mean = std = 0.5 for every channel: ((x / 255) - 0.5) / 0.5 == x / 127.5 - 1
    return images_uint8.to(torch.float32) / 127.5 - 1.0


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Map [-size+1, 2*size-2] into [0, size) like ``F.pad(mode='reflect')`` (edge not repeated)."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def train_augment(
    images_uint8: torch.Tensor, generator: torch.Generator, *, pad: int = 4
) -> torch.Tensor:
    """Random crop with reflect padding + random horizontal flip, then float + normalisation.

    Equivalent per image to ``RandomCrop(H, padding=pad, padding_mode='reflect')`` followed by
    ``RandomHorizontalFlip(0.5)``: each image gets an offset (dy, dx) in [0, 2*pad] of the
    reflect-padded image and a coin flip. Implemented as index arithmetic + gather: no padded copy,
    no per-image loop.
    Returns float32 (B, 3, H, W) on the input's device.
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4 or images_uint8.shape[1] != 3:
        raise ValueError(
            f"expected uint8 (B, 3, H, W), got {images_uint8.dtype} {tuple(images_uint8.shape)}"
        )
    Bn, C, H, W = images_uint8.shape
    if pad < 0 or pad >= min(H, W):
        raise ValueError(
            f"pad must be in [0, {min(H, W) - 1}] for {H}x{W} images (reflect padding), got {pad}"
        )
    device = images_uint8.device
    gdev = generator.device
    offsets = torch.randint(0, 2 * pad + 1, (Bn, 2), generator=generator, device=gdev).to(device)
    flip = (torch.rand(Bn, generator=generator, device=gdev) < 0.5).to(device)
    if Bn == 0:
        return _normalise(images_uint8)
    ar_h = torch.arange(H, device=device)
    ar_w = torch.arange(W, device=device)
    rows = _reflect(ar_h[None, :] + offsets[:, :1] - pad, H)  # (B, H)
    cols_src = torch.where(
        flip[:, None], (W - 1) - ar_w[None, :], ar_w[None, :]
    )  # flip after the crop
    cols = _reflect(cols_src + offsets[:, 1:] - pad, W)  # (B, W)
    out = images_uint8.gather(2, rows[:, None, :, None].expand(Bn, C, H, W))
    out = out.gather(3, cols[:, None, None, :].expand(Bn, C, H, W))
    return _normalise(out)


def eval_transform(images_uint8: torch.Tensor) -> torch.Tensor:
    """Deterministic: float32 + the training normalisation (no crop: the images are small)."""
    return _normalise(images_uint8)
