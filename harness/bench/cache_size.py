"""``nirbench bench cache``: how big the image caches get at the real datasets' scale, measured
on a generated sample of each dataset's kind of photograph and extrapolated to its official image
count (CUB 11,788; Cars196 16,185; SOP 120,053).

- uint8 cache: its size per image is a function of the aspect ratio alone (196,608 bytes x
  long / short side after the shorter side goes to 256), so the sample's only job is a realistic
  mix of aspect ratios; the number is checked against that formula (``uint8_formula_bytes``).
- JPEG cache: its size depends on content. The generated photographs are smooth colour fields with
  sensor-like grain (CUB, Cars: whole-frame scenes) or an object on a white studio background
  (SOP, as eBay product shots are). Real photographs are smoother than synthetic grain in places
  and busier in others: read the JPEG number as an estimate within tens of percent.

The sample's sizes (assumptions, from the datasets' published image sizes): CUB about 500 x 333-375
(some portrait), Cars196 640-1024 px wide at aspect 1.3-2.0, SOP square to 4:3 product shots of
400-640 px (some portrait).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nirbench.harness.data.real.official_ids import OFFICIAL

KINDS = ("cub200", "cars196", "sop")


def _sizes(kind: str, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    out = []
    for _ in range(n):
        if kind == "cub200":
            w, h = 500, int(rng.integers(333, 376))
        elif kind == "cars196":
            w = int(rng.integers(640, 1025))
            h = int(w / rng.uniform(1.3, 2.0))
        else:  # sop: square to 4:3 product shots
            w = int(rng.integers(400, 641))
            h = int(w / rng.choice([1.0, 1.0, 1.25, 4 / 3]))
        out.append((w, h) if rng.random() < 0.85 else (h, w))
    return out


def generate(kind: str, folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` JPEGs (quality 90, like the datasets' own files) of ``kind`` under ``folder``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    files = []
    for k, (w, h) in enumerate(_sizes(kind, n, rng)):
        low = rng.integers(0, 256, (max(2, h // 24), max(2, w // 24), 3), dtype=np.uint8)
        scene = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.float32)
        scene += rng.normal(0.0, 6.0, (h, w, 3))  # sensor noise
        if kind == "sop":  # an object on a white studio background
            yy, xx = np.mgrid[0:h, 0:w]
            cy, cx = h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6)
            ry, rx = h * rng.uniform(0.2, 0.4), w * rng.uniform(0.2, 0.4)
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            scene = np.where(inside[..., None], scene, 250.0 + rng.normal(0.0, 1.5, (h, w, 3)))
        path = folder / f"{k:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8)).save(path, quality=90)
        files.append(path)
    return files


def run(
    *,
    datasets: tuple[str, ...] = KINDS,
    images: int = 200,
    workers: int = 2,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    from nirbench.harness.data.real.cache import open_or_build, resized_size
    from nirbench.harness.data.real.jpeg_cache import QUALITY

    say = progress or (lambda message: None)
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    out: dict[str, Any] = {"images_per_sample": images, "jpeg_quality": QUALITY, "datasets": {}}
    for kind in datasets:
        if kind not in KINDS:
            raise ValueError(f"unknown dataset {kind!r}; valid: {', '.join(KINDS)}")
        scratch = Path(tempfile.mkdtemp(prefix=f"nirbench-bench-cache-{kind}-"))
        try:
            say(f"{kind}: generating {images} photographs")
            files = generate(kind, scratch / "images", images, seed)
            rel = [f.relative_to(scratch / "images").as_posix() for f in files]
            row: dict[str, Any] = {
                "source_bytes_per_image": float(np.mean([f.stat().st_size for f in files]))
            }
            for cache in ("uint8", "jpeg"):
                say(f"{kind}: building the {cache} cache")
                started = time.perf_counter()
                store, _ = open_or_build(
                    kind,
                    "sample",
                    scratch / "images",
                    rel,
                    scratch / "cache",
                    workers=workers,
                    progress=False,
                    kind=cache,
                )
                row[f"{cache}_build_s_per_image"] = (time.perf_counter() - started) / images
                row[f"{cache}_bytes_per_image"] = store.meta["bytes"] / images
            from PIL import Image

            aspects, formula = [], 0
            for f in files:
                with Image.open(f) as image:
                    w, h = resized_size(*image.size)
                aspects.append(max(w, h) / min(w, h))
                formula += 3 * w * h
            total = OFFICIAL[kind].images
            row.update(
                {
                    "mean_aspect": float(np.mean(aspects)),
                    "uint8_formula_bytes": formula / images,
                    "jpeg_size_ratio": row["uint8_bytes_per_image"] / row["jpeg_bytes_per_image"],
                    "official_images": total,
                    "uint8_gb": row["uint8_bytes_per_image"] * total / 1e9,
                    "jpeg_gb": row["jpeg_bytes_per_image"] * total / 1e9,
                    "source_gb": row["source_bytes_per_image"] * total / 1e9,
                }
            )
            out["datasets"][kind] = row
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return out
