"""Decode every image once into a memory-mapped uint8 cache (``PixelStore``).

Preprocessing (the paper's eval transform, first half): ``Resize(256)``, i.e. the shorter side to
256 px with PIL's antialiased bilinear filter, exactly as torchvision does on PIL images (same
output size rule, same PIL call), after ``convert("RGB")``. Evaluation then only needs an integer
centre crop, so ``eval_batch`` reproduces ``Resize(256) + CenterCrop(224)`` bit for bit.

Storage: one flat file ``pixels.u8`` holding every image as contiguous (h, w, 3) uint8, plus
per-image ``offsets``, ``heights`` and ``widths`` in ``index.npz``. Why flat and not a padded
canvas: after the resize the long side varies a lot (CUB about 341 px, Cars up to 3x the short
side, SOP anything), so a canvas wastes space or has to cut the long side, which would change the
random crops; a flat file has no waste, one image is one contiguous block (a crop is a strided
view, no copy), and the OS page cache shares it between processes. Sizes: 196,608 bytes x (long
side / short side) per image, so about 3.3 GB for CUB, 5.2 GB for Cars196 and 23.6-31.5 GB for
SOP (27.5 GB at a realistic aspect mix; ``nirbench bench cache``, ``cache_size.py``).

Kinds (``open_or_build(kind=...)``): ``uint8`` (this module, the default) or ``jpeg``, the
compact cache of ``jpeg_cache.py`` (the same resized pixels re-encoded as JPEG, decoded per batch;
about 6-15x smaller, lossy). Both have the same image sizes, so crop boxes are identical.

Cache key: dataset, layout, preprocessing parameters, ``CACHE_VERSION`` and a hash of the file
list (relative path and byte size of every image, in listing order). Adding, removing or
replacing a file gives a new key and a rebuild; moving the dataset folder does not (paths are
relative). The cache is written to a temporary folder and renamed into place when complete, so an
interrupted build is never mistaken for a cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from nirbench.harness.data.real.layouts import UnreadableImagesError

# Decoding lives below both caches (this one and jpeg_cache.py); re-exported here for callers.
from nirbench.harness.data.real.decode import (  # noqa: F401
    CACHE_VERSION,
    ENV_WORKERS,
    IN_PROCESS_BELOW,
    PREPROCESSING,
    SHORT_SIDE,
    decode_all,
    decode_resized,
    decode_workers,
    imap_with_progress,
    resized_size,
)


def cache_key(
    dataset: str, layout: str, base: Path, paths: list[str], short_side: int = SHORT_SIDE
) -> str:
    """Hash of dataset, layout, preprocessing and the file list (relative path + byte size)."""
    digest = hashlib.sha256()
    header = {
        "dataset": dataset,
        "layout": layout,
        "preprocessing": {**PREPROCESSING, "resize_shorter_side": short_side},
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for path in paths:
        try:
            size = (base / path).stat().st_size
        except OSError:
            size = -1  # missing: the decode reports it
        digest.update(f"\n{path}\t{size}".encode())
    return digest.hexdigest()[:16]


class PixelStore:
    """The opened cache: image ``i`` is ``image(i)``, a read-only-in-effect (h, w, 3) uint8 view
    of the memory map (copy-on-write mapping, so torch.from_numpy accepts it without copying and
    nothing is ever written back). Pickles as its folder, so worker processes re-map it."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        with open(self.directory / "meta.json", encoding="utf-8") as fh:
            self.meta: dict[str, Any] = json.load(fh)
        with np.load(self.directory / "index.npz", allow_pickle=False) as index:
            self.offsets = index["offsets"].astype(np.int64)
            self.heights = index["heights"].astype(np.int64)
            self.widths = index["widths"].astype(np.int64)
        n = len(self.offsets)
        if not (len(self.heights) == len(self.widths) == n == self.meta["images"]):
            raise ValueError(f"cache {self.directory}: index arrays disagree with meta.json")
        expected = int(self.meta["bytes"])
        actual = (self.directory / "pixels.u8").stat().st_size
        if actual != expected or (
            n and int(self.offsets[-1] + 3 * self.heights[-1] * self.widths[-1]) != expected
        ):
            raise ValueError(
                f"cache {self.directory}: pixels.u8 has {actual} bytes, the index says {expected}"
            )
        self.pixels = (
            np.memmap(self.directory / "pixels.u8", dtype=np.uint8, mode="c")
            if expected
            else np.zeros(0, np.uint8)
        )

    def __len__(self) -> int:
        return len(self.offsets)

    def image(self, i: int) -> np.ndarray:
        start, h, w = int(self.offsets[i]), int(self.heights[i]), int(self.widths[i])
        return self.pixels[start : start + 3 * h * w].reshape(h, w, 3)

    def images(self, ids: list[int], device=None) -> list[np.ndarray]:
        """Images ``ids`` as (h, w, 3) uint8 views (nothing to decode; ``device`` is for the
        stores that decode, see ``jpeg_cache.JpegStore``)."""
        return [self.image(i) for i in ids]

    def __reduce__(self):
        return (PixelStore, (str(self.directory),))

    def __repr__(self) -> str:
        return f"PixelStore({str(self.directory)!r}, images={len(self)})"


KINDS = ("uint8", "jpeg")


def open_or_build(
    dataset: str,
    layout: str,
    base: str | Path,
    paths: list[str],
    cache_dir: str | Path,
    *,
    short_side: int = SHORT_SIDE,
    workers: int | None = None,
    progress: bool = True,
    kind: str = "uint8",
) -> tuple[Any, bool]:
    """(store, reused): the cache of the images ``base/paths`` (store index k = paths[k]),
    built first if there is none: a ``PixelStore`` (kind ``uint8``) or a ``JpegStore`` (kind
    ``jpeg``). Raises ``UnreadableImagesError`` naming every image that cannot be decoded (no
    cache is kept)."""
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}; valid: {', '.join(KINDS)}")
    base = Path(base)
    key = cache_key(dataset, layout, base, paths, short_side)
    opener, builder, suffix = PixelStore, _build, ""
    if kind == "jpeg":
        from nirbench.harness.data.real import jpeg_cache

        opener, builder = jpeg_cache.JpegStore, jpeg_cache.build
        key = jpeg_cache.kind_key(key)
        suffix = jpeg_cache.FOLDER_SUFFIX
    cache_dir = Path(cache_dir)
    final = cache_dir / f"{dataset}-{layout}-{short_side}px{suffix}-{key}"
    if final.is_dir():
        try:
            store = opener(final)
            if store.meta.get("key") == key:
                return store, True
            problem = f"its key is {store.meta.get('key')!r}, expected {key!r}"
        except Exception as err:  # noqa: BLE001 - a damaged cache is rebuilt, with a warning
            problem = f"{type(err).__name__}: {err}"
        warnings.warn(
            f"image cache {final} is unusable ({problem}); rebuilding it",
            RuntimeWarning,
            stacklevel=2,
        )
        shutil.rmtree(final)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        builder(dataset, layout, base, paths, tmp, key, short_side, workers, progress)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a concurrent build of the same cache: a real error
                raise
            shutil.rmtree(tmp)  # another process finished the same cache first: use theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return opener(final), False


def _build(
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
    n = len(paths)
    offsets = np.zeros(n, np.int64)
    heights = np.zeros(n, np.int64)
    widths = np.zeros(n, np.int64)
    failures: list[tuple[str, str]] = []
    started = time.perf_counter()
    position = 0
    absolute = [str(base / p) for p in paths]
    with open(folder / "pixels.u8", "wb") as fh:
        for i, pixels, error in decode_all(
            absolute,
            short_side=short_side,
            workers=workers,
            desc=f"{dataset}: decoding once, shorter side {short_side} px",
            progress=progress,
        ):
            if pixels is None:
                failures.append((paths[i], error or "unreadable"))
                continue
            h, w, _ = pixels.shape
            offsets[i], heights[i], widths[i] = position, h, w
            if not failures:  # after a failure only the remaining errors matter
                fh.write(pixels.tobytes())
            position += pixels.nbytes
    if failures:
        raise UnreadableImagesError(dataset, n, failures)
    np.savez(folder / "index.npz", offsets=offsets, heights=heights, widths=widths)
    meta = {
        "key": key,
        "dataset": dataset,
        "layout": layout,
        "images": n,
        "bytes": position,
        "preprocessing": {**PREPROCESSING, "resize_shorter_side": short_side},
        "build_seconds": round(time.perf_counter() - started, 3),
        "source": str(base),
    }
    with open(folder / "meta.json", "w", encoding="utf-8") as fh:  # last: marks it complete
        json.dump(meta, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
