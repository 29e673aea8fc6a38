"""Batched training and evaluation transforms on the cached uint8 images (see ``cache.py``).

Training: the paper's ``RandomResizedCrop(224, scale=(0.08, 1), ratio=(3/4, 4/3))`` +
``RandomHorizontalFlip()`` + ImageNet normalisation. Crop boxes follow torchvision's
``RandomResizedCrop.get_params`` rule exactly (10 attempts of area fraction ~ U(scale) and
log-aspect ~ U(log ratio), the first box that fits wins, else the centre crop with the aspect
clamped into ``ratio``), vectorised: every image draws all its attempts at once from the caller's
generator, so a batch costs a handful of generator calls whatever its size.

Resampling: the crop of each image is resized to 224 x 224 with antialiased bilinear
interpolation (torch's ``interpolate(..., antialias=True)``, the filter of PIL's bilinear resize).
- CPU: one image at a time, on one thread, while it is hot in the CPU cache: crop (a view of the
  memory map, no copy), resize on uint8 (torch's vectorised uint8 kernel, about 0.2 ms, rounded
  to uint8 like PIL), flip, then float32 + normalisation, about 0.5-0.7 ms per image in all on the
  2-core test machine. Why one thread: the per-image calls are too small for intra-op threads, and
  on a busy 2-core machine waiting for a second OpenMP thread made every call up to ten times
  slower (measured). The batch comes back in channels-last memory format (shape (B, 3, 224,
  224) as always): that is the resize kernel's order, and a transposing copy to NCHW cost more
  than the resize itself (measured 90 us per image); convolutions accept either.
- GPU: the crops travel as one zero-padded uint8 canvas (a quarter of the float batch's bytes)
  and are resized there in float32 (no uint8 rounding, so within one grey level of the CPU
  result), then flipped and normalised batch-wide.
Crops are taken from the 256 px cache, not from the original file: the same boxes relative to
the image, at the resolution the paper's eval transform sees.

Evaluation: ``CenterCrop(224)`` on the cached ``Resize(256)`` image (torchvision's offsets), i.e.
the paper's eval transform exactly, then ImageNet normalisation.
"""

from __future__ import annotations

import math
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP = 224
SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)
ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params


def sample_crop_boxes(
    heights: torch.Tensor,
    widths: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = SCALE,
    ratio: tuple[float, float] = RATIO,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RandomResizedCrop boxes and flip coins for images of the given sizes.

    Returns ``boxes`` int64 (B, 4) as (top, left, height, width), torchvision's (i, j, h, w), and
    ``flips`` bool (B,). Random numbers per image, always the same count (so the stream does not
    depend on which attempt succeeded): ATTEMPTS area fractions, ATTEMPTS log-aspects, 2 positions,
    1 flip coin, drawn in that order for the whole batch.
    """
    if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(
            f"scale and ratio must be increasing positive pairs, got scale={scale}, ratio={ratio}"
        )
    n = int(heights.shape[0])
    H = heights.to(torch.float64)
    W = widths.to(torch.float64)
    gdev = generator.device
    u_area = torch.rand(n, ATTEMPTS, generator=generator, dtype=torch.float64, device=gdev).cpu()
    u_ratio = torch.rand(n, ATTEMPTS, generator=generator, dtype=torch.float64, device=gdev).cpu()
    u_pos = torch.rand(n, 2, generator=generator, dtype=torch.float64, device=gdev).cpu()
    flips = torch.rand(n, generator=generator, device=gdev).cpu() < 0.5

    area = (H * W)[:, None] * (scale[0] + (scale[1] - scale[0]) * u_area)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    # torch.round rounds half to even like Python's round() in torchvision
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= W[:, None]) & (h > 0) & (h <= H[:, None])
    first = torch.argmax(fits.to(torch.int8), dim=1)  # first fitting attempt (0 if none fits)
    found = fits.any(dim=1)
    rows = torch.arange(n)
    h_ok, w_ok = h[rows, first], w[rows, first]
    top_ok = torch.floor(u_pos[:, 0] * (H - h_ok + 1)).clamp_max(H - h_ok)
    left_ok = torch.floor(u_pos[:, 1] * (W - w_ok + 1)).clamp_max(W - w_ok)

    # Fallback: the centre crop with the aspect clamped into ratio (torchvision's rule).
    in_ratio = W / H
    w_fb = torch.where(
        in_ratio < ratio[0], W, torch.where(in_ratio > ratio[1], torch.round(H * ratio[1]), W)
    )
    h_fb = torch.where(in_ratio < ratio[0], torch.round(W / ratio[0]), H)
    top_fb = torch.div(H - h_fb, 2, rounding_mode="floor")
    left_fb = torch.div(W - w_fb, 2, rounding_mode="floor")

    boxes = torch.stack(
        [
            torch.where(found, top_ok, top_fb),
            torch.where(found, left_ok, left_fb),
            torch.where(found, h_ok, h_fb),
            torch.where(found, w_ok, w_fb),
        ],
        dim=1,
    )
    return boxes.to(torch.int64), flips


def center_boxes(heights: torch.Tensor, widths: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """torchvision ``CenterCrop(size)`` offsets: int(round((H - size) / 2)), as (i, j, h, w)."""
    if int(heights.min()) < size or int(widths.min()) < size:
        raise ValueError(
            f"images must be at least {size} px on both sides for a centre crop, "
            f"got a {int(heights.min())} x {int(widths.min())} one"
        )
    top = torch.round((heights.to(torch.float64) - size) / 2)
    left = torch.round((widths.to(torch.float64) - size) / 2)
    full = torch.full_like(top, size)
    return torch.stack([top, left, full, full], dim=1).to(torch.int64)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run a block with torch limited to one intra-op thread (restored afterwards)."""
    previous = torch.get_num_threads()
    if previous != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            torch.set_num_threads(previous)


def _hwc(view: np.ndarray) -> torch.Tensor:
    """(h, w, 3) uint8 numpy view -> tensor sharing its memory."""
    return torch.from_numpy(view)


def _normalisation(
    device: torch.device,
    width: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(255 mean, 1 / (255 std)): shaped (1, 3, 1, 1), or tiled along an interleaved RGB row of
    ``width`` pixels (3 * width,) so the CPU path's innermost dimension is long (vectorised)."""
    shift = torch.tensor([255.0 * m for m in IMAGENET_MEAN], device=device)
    scale = torch.tensor([1.0 / (255.0 * s) for s in IMAGENET_STD], device=device)
    if width is None:
        return shift.view(1, 3, 1, 1), scale.view(1, 3, 1, 1)
    return shift.repeat(width), scale.repeat(width)


def train_pixels(
    images: Sequence[np.ndarray],
    boxes: torch.Tensor,
    flips: torch.Tensor,
    device: torch.device,
    size: int = CROP,
) -> torch.Tensor:
    """Crop ``boxes[k]`` of ``images[k]``, resize it to (size, size) (antialiased bilinear),
    mirror it where ``flips[k]``, normalise: float32 (B, 3, size, size) on ``device``."""
    if device.type == "cpu":
        return _cpu_pixels(images, boxes, flips, size, resize=True)
    box_list = boxes.tolist()
    if _on_device(images):  # decoded on the device (JPEG cache, nvjpeg): crop in place
        crops = [
            img[:, i : i + h, j : j + w].unsqueeze(0) for img, (i, j, h, w) in zip(images, box_list)
        ]
    else:
        canvas = _upload_crops(images, box_list, device)
        crops = [
            canvas[k : k + 1, :h, :w].permute(0, 3, 1, 2) for k, (_, _, h, w) in enumerate(box_list)
        ]
    out = torch.empty(len(images), 3, size, size, dtype=torch.float32, device=device)
    for k, crop in enumerate(crops):
        out[k] = F.interpolate(
            crop.to(torch.float32),
            size=(size, size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )[0]
    chosen = flips.to(device)
    out[chosen] = out[chosen].flip(-1)
    shift, scale = _normalisation(device)
    return out.sub_(shift).mul_(scale)


def eval_pixels(
    images: Sequence[np.ndarray],
    boxes: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """Exact crops ``boxes[k]`` (all of one size, no resampling), normalised: float32
    (B, 3, h, w) on ``device``."""
    box_list = boxes.tolist()
    if len({(h, w) for _, _, h, w in box_list}) > 1:
        raise ValueError(f"eval crops must share one size, got {sorted(set(map(tuple, box_list)))}")
    if device.type == "cpu":
        return _cpu_pixels(
            images,
            boxes,
            torch.zeros(len(images), dtype=torch.bool),
            int(box_list[0][2]) if box_list else CROP,
            resize=False,
        )
    shift, scale = _normalisation(device)
    if _on_device(images):
        crops = torch.stack(
            [img[:, i : i + h, j : j + w] for img, (i, j, h, w) in zip(images, box_list)]
        )
        return crops.to(torch.float32).sub_(shift).mul_(scale)
    canvas = _upload_crops(images, box_list, device)
    return canvas.permute(0, 3, 1, 2).to(torch.float32).sub_(shift).mul_(scale)


def _on_device(images: Sequence) -> bool:
    """True when the images are (3, h, w) tensors already on the device (decoded there), False
    for (h, w, 3) host arrays."""
    return len(images) > 0 and isinstance(images[0], torch.Tensor)


class OutputPool:
    """Recycles the float32 output buffers of CPU batches.

    Why: a fresh 38 MB batch (64 x 3 x 224 x 224) is a fresh mapping from the OS, and the page
    faults on its first touch took 40% of the CPU pipeline's time (measured: 0.28 ms per image).
    Safety: a buffer is handed out again only when nothing outside the pool references it. Every
    tensor over its memory (the returned batch, any view of it, autograd's saved input) keeps the
    numpy array alive through ``torch.from_numpy``'s storage, so its reference count says whether
    a caller still holds the batch. At most ``keep`` buffers are kept; beyond that batches are
    allocated as usual."""

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self._buffers: list[np.ndarray] = []
        self._lock = threading.Lock()  # two threads must never be handed the same idle buffer

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        with self._lock:
            return self._take(shape)

    def _take(self, shape: tuple[int, ...]) -> torch.Tensor:
        for buffer in self._buffers:
            # references: the list, this loop variable, getrefcount's argument
            if buffer.shape == shape and sys.getrefcount(buffer) <= 3:
                return torch.from_numpy(buffer)
        buffer = np.empty(shape, dtype=np.float32)
        if len(self._buffers) >= self.keep:  # make room by dropping a buffer nobody holds
            idle = [i for i, b in enumerate(self._buffers) if sys.getrefcount(b) <= 3]
            if not idle:
                return torch.from_numpy(buffer)
            del self._buffers[idle[0]]
        self._buffers.append(buffer)
        return torch.from_numpy(buffer)


_OUTPUTS = OutputPool()


def _cpu_pixels(
    images: Sequence[np.ndarray], boxes: torch.Tensor, flips: torch.Tensor, size: int, resize: bool
) -> torch.Tensor:
    """The CPU path, one image at a time while it is hot in the cache: crop (a view of the
    memory map), resize on uint8, flip, then uint8 -> float32 and normalisation in interleaved
    (h, w, 3) order. The result is (B, 3, size, size) in channels-last memory format: the resize
    kernel produces that order, and a transposing copy to NCHW cost more than the resize itself
    (measured 90 us per image); convolutions accept either."""
    b = len(images)
    out = _OUTPUTS.take((b, size, size * 3))
    shift, scale = _normalisation(torch.device("cpu"), size)
    with one_thread():
        for k, (view, (i, j, h, w), flip) in enumerate(zip(images, boxes.tolist(), flips.tolist())):
            crop = _hwc(view[i : i + h, j : j + w])
            if resize:
                crop = F.interpolate(
                    crop.permute(2, 0, 1).unsqueeze(0),
                    size=(size, size),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )[0].permute(1, 2, 0)
            if flip:
                crop = crop.flip(1)
            row = out[k]
            row.view(size, size, 3).copy_(crop)
            row.sub_(shift).mul_(scale)
    return out.view(b, size, size, 3).permute(0, 3, 1, 2)


def _upload_crops(
    images: Sequence[np.ndarray], box_list: list[list[int]], device: torch.device
) -> torch.Tensor:
    """The crops as one zero-padded uint8 (B, hmax, wmax, 3) canvas on ``device``: one transfer
    of uint8 instead of float32 (4x fewer bytes)."""
    hmax = max((h for _, _, h, _ in box_list), default=1)
    wmax = max((w for _, _, _, w in box_list), default=1)
    canvas = torch.zeros(
        len(images), hmax, wmax, 3, dtype=torch.uint8, pin_memory=device.type == "cuda"
    )
    for k, (view, (i, j, h, w)) in enumerate(zip(images, box_list)):
        canvas[k, :h, :w] = _hwc(view[i : i + h, j : j + w])
    return canvas.to(device, non_blocking=True)
