"""Decoding photographs for the caches: ``Resize(256)`` (the shorter side to 256 px with PIL's
antialiased bilinear filter, as torchvision does), one image or many in a process pool with a
progress bar. Shared by the uint8 cache (cache.py) and the JPEG cache (jpeg_cache.py)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np


CACHE_VERSION = 1
SHORT_SIDE = 256
PREPROCESSING = {
    "resize_shorter_side": SHORT_SIDE,
    "interpolation": "PIL bilinear (antialiased)",
    "mode": "RGB",
    "size_rule": "torchvision Resize(int)",
    "version": CACHE_VERSION,
}
IN_PROCESS_BELOW = 64  # images; a process pool is not worth starting for fewer
ENV_WORKERS = "NIRBENCH_DECODE_WORKERS"


def resized_size(width: int, height: int, short_side: int = SHORT_SIDE) -> tuple[int, int]:
    """(width, height) after torchvision's ``Resize(short_side)`` on a PIL image."""
    short, long = (width, height) if width <= height else (height, width)
    if short == short_side:
        return width, height
    new_short, new_long = short_side, int(short_side * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def decode_resized(path: str | Path, short_side: int = SHORT_SIDE) -> np.ndarray:
    """One image as uint8 (h, w, 3), its shorter side resized to ``short_side``."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    size = resized_size(*rgb.size, short_side)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _decode_task(task: tuple[int, str, int]) -> tuple[int, np.ndarray | None, str | None]:
    index, path, short_side = task
    try:
        return index, np.ascontiguousarray(decode_resized(path, short_side)), None
    except Exception as err:  # noqa: BLE001 - reported per file by the caller, never dropped
        return index, None, f"{type(err).__name__}: {err}"


def decode_workers(requested: int | None = None) -> int:
    if requested is not None:
        return max(1, requested)
    env = os.environ.get(ENV_WORKERS)
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"{ENV_WORKERS} must be an integer, got {env!r}") from None
    return max(1, min(8, os.cpu_count() or 1))


def decode_all(
    paths: list[str],
    *,
    short_side: int = SHORT_SIDE,
    workers: int | None = None,
    desc: str = "decoding",
    progress: bool = True,
) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """(index, pixels or None, error or None) for every path, in order; a process pool when
    there are enough images, a tqdm progress bar on a terminal."""
    tasks = [(i, p, short_side) for i, p in enumerate(paths)]
    yield from imap_with_progress(
        _decode_task, tasks, workers=workers, desc=desc, progress=progress, chunksize=8
    )


def imap_with_progress(
    func, items: list, *, workers: int | None, desc: str, progress: bool, chunksize: int
) -> Iterator[Any]:
    """``func(item)`` for every item, in order: in this process for few items (or one worker),
    else a process pool; a tqdm bar on a terminal. ``func`` must be a module-level function."""
    from tqdm.auto import tqdm

    n_workers = decode_workers(workers)
    bar = tqdm(
        total=len(items),
        desc=desc,
        unit="img",
        dynamic_ncols=True,
        disable=None if progress else True,
    )
    try:
        if n_workers == 1 or len(items) < IN_PROCESS_BELOW:
            for item in items:
                yield func(item)
                bar.update()
            return
        # forkserver, not fork: a plain fork copies the parent's threads' locks, and a parent that
        # has started Ray, gRPC or MLflow threads (a grid run in a Ray worker, a test session that
        # ran the Ray executor) deadlocks its pool that way; seen here as a 35-minute hang.
        # The fork server is a fresh, single-threaded interpreter that forks the workers.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        with context.Pool(n_workers) as pool:
            for result in pool.imap(func, items, chunksize=chunksize):
                yield result
                bar.update()
    finally:
        bar.close()
