"""The compact image cache (``dataset.cache: jpeg``): every image decoded once, resized exactly as
the uint8 cache does (``cache.decode_resized``: shorter side 256, PIL antialiased bilinear), then
re-encoded as a JPEG and stored in one flat file; batches decode their images again with
``torchvision.io.decode_jpeg`` (libjpeg-turbo on the CPU, nvjpeg in one batched call on CUDA).

Why: the uint8 cache of Stanford Online Products needs about 28 GB of disk (196,608 bytes x
long/short side per image, 120,053 images), more than many machines can spare next to the data;
the JPEG cache is 8-15x smaller on generated photographs (``nirbench bench cache``; 5.6x on
``bench data``'s grain-heavy sample). The price: it is lossy (JPEG at quality ``QUALITY``: a mean
absolute difference of 1.5-1.6 grey levels against the uint8 cache's pixels on generated
photographs, 2.8 on the grain-heavy sample) and each batch pays a decode (``nirbench bench data``
measures both caches against the per-sample PIL reference). The image sizes are the uint8
cache's, so the crop boxes of a seed are identical in both.

Storage: ``jpeg.bin`` (every image's JPEG bytes, back to back) plus ``offsets``, ``lengths``,
``heights``, ``widths`` in ``index.npz`` and ``meta.json`` (written last: marks it complete).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nirbench.harness.data.real.layouts import UnreadableImagesError

QUALITY = 95  # 90 loses visibly more (about 1.5x the error) for 25% fewer bytes (bench cache)
FOLDER_SUFFIX = f"-jpeg{QUALITY}"
KIND = {
    "kind": "jpeg",
    "quality": QUALITY,
    "encoder": "PIL (libjpeg-turbo), 4:2:0 subsampling",
    "version": 1,
}


def kind_key(uint8_key: str) -> str:
    """The cache key of the JPEG cache of the files whose uint8 cache key is ``uint8_key``."""
    digest = hashlib.sha256((uint8_key + json.dumps(KIND, sort_keys=True)).encode())
    return digest.hexdigest()[:16]


def encode(pixels: np.ndarray, quality: int = QUALITY) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _encode_task(
    task: tuple[int, str, int],
) -> tuple[int, tuple[bytes, int, int] | None, str | None]:
    from nirbench.harness.data.real.decode import decode_resized

    index, path, short_side = task
    try:
        pixels = decode_resized(path, short_side)
        return index, (encode(pixels), pixels.shape[0], pixels.shape[1]), None
    except Exception as err:  # noqa: BLE001 - reported per file by the caller, never dropped
        return index, None, f"{type(err).__name__}: {err}"


def _decode_jpeg(data, device: torch.device | None = None):
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():  # torchvision 0.29 flags its image codecs as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(
            data, mode=ImageReadMode.RGB, device=device if device is not None else "cpu"
        )


class JpegStore:
    """The opened JPEG cache; same interface as ``cache.PixelStore`` (``image``, ``images``,
    ``heights``, ``widths``, ``meta``, pickles as its folder)."""

    kind = "jpeg"

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        with open(self.directory / "meta.json", encoding="utf-8") as fh:
            self.meta: dict[str, Any] = json.load(fh)
        with np.load(self.directory / "index.npz", allow_pickle=False) as index:
            self.offsets = index["offsets"].astype(np.int64)
            self.lengths = index["lengths"].astype(np.int64)
            self.heights = index["heights"].astype(np.int64)
            self.widths = index["widths"].astype(np.int64)
        n = len(self.offsets)
        if not (
            len(self.lengths) == len(self.heights) == len(self.widths) == n == self.meta["images"]
        ):
            raise ValueError(f"cache {self.directory}: index arrays disagree with meta.json")
        expected = int(self.meta["bytes"])
        actual = (self.directory / "jpeg.bin").stat().st_size
        if actual != expected or (n and int(self.offsets[-1] + self.lengths[-1]) != expected):
            raise ValueError(
                f"cache {self.directory}: jpeg.bin has {actual} bytes, the index says {expected}"
            )
        self.data = (
            np.memmap(self.directory / "jpeg.bin", dtype=np.uint8, mode="c")
            if expected
            else np.zeros(0, np.uint8)
        )

    def __len__(self) -> int:
        return len(self.offsets)

    def encoded(self, i: int) -> torch.Tensor:
        """The JPEG bytes of image ``i`` as a 1-D uint8 tensor over the memory map (no copy)."""
        start = int(self.offsets[i])
        return torch.from_numpy(self.data[start : start + int(self.lengths[i])])

    def image(self, i: int) -> np.ndarray:
        return _decode_jpeg(self.encoded(i)).permute(1, 2, 0).numpy()

    def images(self, ids: list[int], device: torch.device | None = None) -> list:
        """Images ``ids`` decoded in one call: (h, w, 3) uint8 arrays on the CPU (views of the
        decoded (3, h, w) tensors: the crops then read channel planes, which the resize wants),
        or (3, h, w) uint8 CUDA tensors when ``device`` is a CUDA device (nvjpeg, batched)."""
        if not ids:
            return []
        decoded = _decode_jpeg([self.encoded(i) for i in ids], device)
        if device is not None and device.type == "cuda":
            return decoded
        return [t.permute(1, 2, 0).numpy() for t in decoded]

    def __reduce__(self):
        return (JpegStore, (str(self.directory),))

    def __repr__(self) -> str:
        return f"JpegStore({str(self.directory)!r}, images={len(self)})"


def build(
    dataset: str,
    layout: str,
    base: Path,
    paths: list[str],
    folder: Path,
    key: str,
    short_side: int,
    workers: int | None,
    progress: bool,
) -> None:
    """Decode, resize and re-encode every image (worker processes), write the cache into
    ``folder``; called by ``cache.open_or_build`` (which owns the temporary folder and rename)."""
    from nirbench.harness.data.real.decode import PREPROCESSING, imap_with_progress

    n = len(paths)
    offsets, lengths = np.zeros(n, np.int64), np.zeros(n, np.int64)
    heights, widths = np.zeros(n, np.int64), np.zeros(n, np.int64)
    failures: list[tuple[str, str]] = []
    started = time.perf_counter()
    position = 0
    tasks = [(i, str(base / p), short_side) for i, p in enumerate(paths)]
    with open(folder / "jpeg.bin", "wb") as fh:
        for i, result, error in imap_with_progress(
            _encode_task,
            tasks,
            workers=workers,
            progress=progress,
            chunksize=8,
            desc=f"{dataset}: decoding once, shorter side {short_side} px, JPEG q{QUALITY}",
        ):
            if result is None:
                failures.append((paths[i], error or "unreadable"))
                continue
            data, h, w = result
            offsets[i], lengths[i], heights[i], widths[i] = position, len(data), h, w
            if not failures:
                fh.write(data)
            position += len(data)
    if failures:
        raise UnreadableImagesError(dataset, n, failures)
    np.savez(folder / "index.npz", offsets=offsets, lengths=lengths, heights=heights, widths=widths)
    meta = {
        "key": key,
        "dataset": dataset,
        "layout": layout,
        "kind": "jpeg",
        "images": n,
        "bytes": position,
        "uint8_bytes": int((3 * heights * widths).sum()),
        "preprocessing": {**PREPROCESSING, "resize_shorter_side": short_side, **KIND},
        "build_seconds": round(time.perf_counter() - started, 3),
        "source": str(base),
    }
    with open(folder / "meta.json", "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
