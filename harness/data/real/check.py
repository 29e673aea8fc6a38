"""``nirbench data check``: does this copy of a dataset have the expected layout, the official
class ids and image counts, and only readable images? Reads the listing (``layouts``), measures it
against the official split (``official_ids``: missing and unexpected class ids, image totals,
files the annotations list but the copy lacks), then decodes every image (JPEGs at reduced DCT
scale: the whole compressed stream is still parsed, so truncated or corrupt files fail, at a
fraction of the full decode time) and sums the exact size of the pixel cache from the image
sizes. Nothing is written; loading for training builds the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nirbench.harness.data.real import cache_size
from nirbench.harness.data.real.cache import imap_with_progress
from nirbench.harness.data.real.datasets import list_dataset
from nirbench.harness.data.real.official_ids import completeness

SHOWN = 10  # unreadable paths listed in full; the count covers all of them


def verify_image(path: str) -> tuple[str | None, tuple[int, int] | None]:
    """(None, (width, height)) if the image decodes, else (the error, None): "FileNotFoundError:
    ...", "OSError: image file is truncated ..."."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            size = image.size  # before draft(), which shrinks it
            image.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            image.load()
        return None, size
    except Exception as err:  # noqa: BLE001 - every failure is reported with its path
        return f"{type(err).__name__}: {err}", None


def check_dataset(
    name: str,
    root: str | Path,
    *,
    decode: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Split counts, layout, completeness against the official dataset, unreadable images and
    cache sizes of one copy; ``ok`` is False if any image cannot be decoded, ``complete`` is
    False for a partial copy. Layout problems raise ``DatasetLayoutError`` (what is missing,
    what was expected)."""
    listing = list_dataset(name, root)
    report: dict[str, Any] = {
        "dataset": name,
        **listing.split_counts(),
        "layout": listing.layout,
        "root": str(listing.base),
        "images": len(listing.paths),
    }
    if listing.super_class_ids is not None:
        report["super_classes"] = len(set(listing.super_class_ids.tolist()))
    report.update(completeness(listing).report())
    failures: list[str] = []
    sizes: list[tuple[int, int]] = []
    if decode:
        files = [str(listing.base / p) for p in listing.paths]
        for rel, (error, size) in zip(listing.paths, _verify_all(files, workers, progress, name)):
            if error is not None:
                failures.append(f"{rel}: {error}")
            else:
                sizes.append(size)
    report["decoded"] = decode
    report["unreadable_count"] = len(failures)
    report["unreadable"] = failures[:SHOWN]
    report["ok"] = not failures
    exact = cache_size.uint8_bytes(sizes) if decode and not failures else None
    report.update(cache_size.estimate(name, len(listing.paths), uint8=exact))
    return report


def _verify_all(files: list[str], workers: int | None, progress: bool, name: str):
    return imap_with_progress(
        verify_image,
        files,
        workers=workers,
        desc=f"{name}: checking images",
        progress=progress,
        chunksize=16,
    )
