"""``nirbench data check``: does this copy of a dataset have the expected layout, split sizes and
only readable images? Reads the listing (``layouts``), then decodes every image (JPEGs at reduced
DCT scale: the whole compressed stream is still parsed, so truncated or corrupt files fail, at a
fraction of the full decode time). Nothing is written; loading for training builds the cache."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.data.real.cache import imap_with_progress
from harness.data.real.datasets import list_dataset

SHOWN = 10  # unreadable paths listed in full; the count covers all of them


def verify_image(path: str) -> str | None:
    """None if the image decodes, else the error ("FileNotFoundError: ...", "OSError: image
    file is truncated ...")."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (max(1, image.size[0] // 8), max(1, image.size[1] // 8)))
            image.load()
        return None
    except Exception as err:  # noqa: BLE001 - every failure is reported with its path
        return f"{type(err).__name__}: {err}"


def check_dataset(name: str, root: str | Path, *, decode: bool = True,
                  workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Split counts, layout and unreadable images of one copy; ``ok`` is False if any image
    cannot be decoded. Layout problems raise ``DatasetLayoutError`` (what is missing, what was
    expected)."""
    listing = list_dataset(name, root)
    report: dict[str, Any] = {"dataset": name, **listing.split_counts(),
                              "layout": listing.layout, "root": str(listing.base),
                              "images": len(listing.paths)}
    if listing.super_class_ids is not None:
        report["super_classes"] = len(set(listing.super_class_ids.tolist()))
    failures: list[str] = []
    if decode:
        files = [str(listing.base / p) for p in listing.paths]
        for rel, error in zip(listing.paths, _verify_all(files, workers, progress, name)):
            if error is not None:
                failures.append(f"{rel}: {error}")
    report["decoded"] = decode
    report["unreadable_count"] = len(failures)
    report["unreadable"] = failures[:SHOWN]
    report["ok"] = not failures
    return report


def _verify_all(files: list[str], workers: int | None, progress: bool, name: str):
    return imap_with_progress(verify_image, files, workers=workers,
                              desc=f"{name}: checking images", progress=progress, chunksize=16)
