"""How much disk the image caches of a dataset need (``nirbench data check``, ``nirbench doctor``).

- uint8 cache (the default, ``cache.py``): exact from the image sizes alone. Every image is kept as
  3 x h' x w' bytes after ``Resize(256)``, i.e. 196,608 x (long side / short side) bytes: 192 KiB
  for a square photo, 256 KiB at 4:3. ``data check`` reads the sizes while it decodes, so it
  reports the exact number; without them (``--no-decode``, ``doctor``) the estimate uses the
  dataset's typical aspect ratio (``TYPICAL_ASPECT``) times the official image count.
- compact JPEG cache (``jpeg_cache.py``): the same resized pixels re-encoded as JPEG; its size
  depends on the content, so it is always an estimate: the uint8 bytes divided by the
  compression ratio measured on generated photographs of that dataset's kind
  (``nirbench bench cache``, README "Cache size per dataset").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from nirbench.harness.data.real.decode import SHORT_SIDE, resized_size
from nirbench.harness.data.real.official_ids import official

# Mean long/short side ratio of the photographs: the sample of `nirbench bench cache` (assumed from
# the datasets' published image sizes: CUB mostly 500 x 333-375, Cars196 wide car photos, SOP
# product shots from square to 4:3). Only used when the real sizes are unknown; data check after
# decoding replaces the estimate with the exact number.
TYPICAL_ASPECT = {"cub200": 1.41, "cars196": 1.65, "sop": 1.17}
# uint8 bytes / JPEG bytes of the compact cache. `nirbench bench cache` measured 8.4 (CUB-like),
# 8.1 (Cars-like) and 14.9 (SOP-like product shots on white) on generated photographs, and
# `bench data`'s grain-heavy sample gave 5.6; these estimates sit at the conservative end.
JPEG_RATIO = {"cub200": 6.0, "cars196": 6.0, "sop": 10.0}


def uint8_bytes(sizes: Iterable[tuple[int, int]], short_side: int = SHORT_SIDE) -> int:
    """Exact uint8 cache size for images of the given (width, height)."""
    total = 0
    for width, height in sizes:
        w, h = resized_size(width, height, short_side)
        total += 3 * w * h
    return total


def estimate(
    dataset: str,
    images: int | None = None,
    *,
    uint8: int | None = None,
) -> dict[str, Any]:
    """The cache-size keys of a report: ``cache_uint8_bytes`` (exact when ``uint8`` is given),
    ``cache_jpeg_bytes`` (always an estimate), ``cache_size_source``."""
    n = official(dataset).images if images is None else images
    exact = uint8 is not None
    if uint8 is None:
        uint8 = int(round(n * 3 * SHORT_SIDE * SHORT_SIDE * TYPICAL_ASPECT[dataset]))
    return {
        "cache_uint8_bytes": int(uint8),
        "cache_uint8_gb": round(uint8 / 1e9, 2),
        "cache_jpeg_bytes": int(round(uint8 / JPEG_RATIO[dataset])),
        "cache_jpeg_gb": round(uint8 / JPEG_RATIO[dataset] / 1e9, 2),
        "cache_size_source": (
            "image sizes (exact)"
            if exact
            else f"estimate: {n:,} images at a typical aspect ratio of {TYPICAL_ASPECT[dataset]}"
        )
        + f"; JPEG estimated at 1/{JPEG_RATIO[dataset]:g} of uint8",
    }


def existing_caches(cache_dir: str | Path, dataset: str) -> list[dict[str, Any]]:
    """The complete caches of ``dataset`` already under ``cache_dir`` (folder, kind, bytes)."""
    out = []
    folder = Path(cache_dir)
    if not folder.is_dir():
        return out
    for meta_file in sorted(folder.glob(f"{dataset}-*/meta.json")):
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            continue
        out.append(
            {
                "folder": str(meta_file.parent),
                "kind": meta.get("kind", "uint8"),
                "bytes": int(meta.get("bytes", 0)),
                "images": int(meta.get("images", 0)),
            }
        )
    return out
