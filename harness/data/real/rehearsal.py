"""A generated, CUB-sized copy of CUB_200_2011 in the official archive layout, for rehearsing the
real-data path (``nirbench bench data --generate``) where the dataset is not at hand.

Layout (what ``cub200.py`` reads, plus the two archive files it ignores, so the tree is the
archive's): ``ROOT/CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt,
classes.txt, bounding_boxes.txt, images/NNN.Class_name/*.jpg}``.

Sizes, and where they come from (stated, because no copy of CUB is on this machine to measure):
- counts: 200 classes, 11,788 images, 5,864 in classes 1-100 and 5,924 in 101-200 (the official
  split, ``official_ids.py``); per class 58-60 images, spread evenly (real CUB has 41-60, most 60);
- image size: CUB's photographs are resized so the long side is 500 px (Wah et al. 2011, the
  Flickr originals resized), mostly landscape. ``SHAPES`` below: 500 x 333 / 500 x 375 / 500 x 334
  landscape, 333 x 500 / 375 x 500 portrait, 500 x 500 square and a tail with a long side 300-499;
  the shares are an approximation of that description, not a measured histogram;
- file size: CUB_200_2011.tgz is about 1.15 GB for 11,788 JPEGs, i.e. about 95 kB per image, so
  the generated pixels (a smooth random colour field plus grain, never white noise, which would
  not compress) at quality 75-92 average about 60 kB per file (25-95 kB, measured on 40): lighter
  than CUB's 95 kB, so the decode rates measured on it are, if anything, optimistic. The JSON
  reports the mean that was written (``mean_jpeg_bytes``).
Deterministic by seed: image k's pixels, shape and quality come from ``default_rng([seed, k])``,
whatever the number of worker processes.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Callable

import numpy as np

from nirbench.harness.data.real.official_ids import official

FOLDER = "CUB_200_2011"
MANIFEST = "nirbench_rehearsal.json"  # what generated this copy, so a rerun can reuse it
MAX_WORKERS = 2
# (width, height, share); the tail ("tail") draws a long side 300-499 and an aspect 0.6-1.
SHAPES = (
    (500, 333, 0.30),
    (500, 375, 0.25),
    (500, 334, 0.10),
    (333, 500, 0.07),
    (375, 500, 0.08),
    (500, 500, 0.05),
    ("tail", "tail", 0.15),
)
QUALITY = (75, 92)  # inclusive range, uniform per image


def class_name(class_id: int) -> str:
    """``001.Synthetic_bird_001``: the official ``NNN.Name`` folder form, with made-up names."""
    return f"{class_id:03d}.Synthetic_bird_{class_id:03d}"


def full_size_counts() -> dict[int, int]:
    """Class id -> image count of the full-size copy: the official totals per split."""
    o = official("cub200")
    out: dict[int, int] = {}
    for ids, total in ((o.train_ids, o.train_images), (o.test_ids, o.test_images)):
        base, extra = divmod(total, len(ids))
        out.update({c: base + (1 if k < extra else 0) for k, c in enumerate(ids)})
    return out


def small_counts(classes: int, images: int) -> dict[int, int]:
    """A miniature copy: ``classes`` classes, half with train ids (1, 2, ...) and half with test
    ids (101, 102, ...), ``images`` spread over them as evenly as possible."""
    if classes < 2 or classes > 200 or images < classes:
        raise ValueError(
            f"a rehearsal copy needs 2-200 classes and at least one image per class; "
            f"got classes={classes}, images={images}"
        )
    train = (classes + 1) // 2
    ids = list(range(1, train + 1)) + list(range(101, 101 + classes - train))
    base, extra = divmod(images, classes)
    return {c: base + (1 if k < extra else 0) for k, c in enumerate(ids)}


def _shape(rng: np.random.Generator) -> tuple[int, int]:
    shares = np.array([s[2] for s in SHAPES])
    w, h, _ = SHAPES[int(rng.choice(len(SHAPES), p=shares / shares.sum()))]
    if w != "tail":
        return int(w), int(h)
    long_side, aspect = int(rng.integers(300, 500)), float(rng.uniform(0.6, 1.0))
    short = max(64, round(long_side * aspect))
    return (long_side, short) if rng.random() < 0.8 else (short, long_side)


def _write_image(task: tuple[int, str, int]) -> tuple[int, int, int, int]:
    """(image id, width, height, bytes) after writing image ``image_id`` to ``path``."""
    from PIL import Image

    image_id, path, seed = task
    rng = np.random.default_rng([seed, image_id])
    w, h = _shape(rng)
    low = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.int16)
    grain = rng.integers(-28, 29, (h, w, 3), dtype=np.int16)
    quality = int(rng.integers(QUALITY[0], QUALITY[1] + 1))
    Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(path, quality=quality)
    return image_id, w, h, Path(path).stat().st_size


def generate(
    root: str | Path,
    *,
    counts: dict[int, int] | None = None,
    seed: int = 0,
    workers: int = MAX_WORKERS,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Write the copy under ``root/CUB_200_2011`` (``counts``: class id -> images, default the
    full-size CUB). Reuses a copy this function already wrote with the same counts and seed (its
    manifest says so); refuses to write into a folder that holds anything else. Returns the
    manifest: images, classes, seed, bytes, mean_jpeg_bytes, generate_s (0 when reused)."""
    import time

    say = progress or (lambda message: None)
    counts = dict(sorted((counts or full_size_counts()).items()))
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(
            f"workers must be 1-{MAX_WORKERS} (a shared 2-core machine), got {workers}"
        )
    folder = Path(root).expanduser() / FOLDER
    wanted = {"counts": {str(c): n for c, n in counts.items()}, "seed": seed}
    manifest_path = folder / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if {k: manifest.get(k) for k in wanted} == wanted:
            say(f"reusing the generated copy in {folder}")
            return {**manifest, "generate_s": 0.0, "reused": True}
        raise FileExistsError(
            f"{folder} holds a generated copy with other counts or seed; "
            f"remove it (rm -r {folder}) or pass another --root"
        )
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(
            f"{folder} exists and was not written by the rehearsal "
            f"generator; pass an empty or new --root"
        )
    started = time.perf_counter()
    tasks, rows = [], []
    image_id = 0
    for class_id, n in counts.items():
        (folder / "images" / class_name(class_id)).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            image_id += 1
            rel = f"{class_name(class_id)}/{class_name(class_id)[4:]}_{k + 1:04d}.jpg"
            rows.append((image_id, rel, class_id))
            tasks.append((image_id, str(folder / "images" / rel), seed))
    say(
        f"generating {len(tasks):,} JPEGs of {len(counts)} classes in {folder} "
        f"with {workers} processes"
    )
    sizes: dict[int, tuple[int, int, int]] = {}
    if workers == 1:
        results = map(_write_image, tasks)
        pool = None
    else:
        pool = multiprocessing.get_context("spawn").Pool(workers)
        results = pool.imap_unordered(_write_image, tasks, chunksize=64)
    try:
        for done, (i, w, h, size) in enumerate(results, 1):
            sizes[i] = (w, h, size)
            if done % 1000 == 0:
                say(f"  {done:,}/{len(tasks):,} JPEGs")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    _write_text(folder / "images.txt", (f"{i} {rel}" for i, rel, _ in rows))
    _write_text(folder / "image_class_labels.txt", (f"{i} {c}" for i, _, c in rows))
    _write_text(folder / "classes.txt", (f"{c} {class_name(c)}" for c in counts))
    # train_test_split.txt is the classification split (about half of each class), which the
    # DML protocol ignores; written so the tree is the archive's.
    _write_text(folder / "train_test_split.txt", (f"{i} {i % 2}" for i, _, _ in rows))
    _write_text(
        folder / "bounding_boxes.txt",
        (
            f"{i} {sizes[i][0] * 0.2:.1f} {sizes[i][1] * 0.2:.1f} {sizes[i][0] * 0.6:.1f} "
            f"{sizes[i][1] * 0.6:.1f}"
            for i, _, _ in rows
        ),
    )
    total = sum(s[2] for s in sizes.values())
    manifest = {
        **wanted,
        "images": len(rows),
        "classes": len(counts),
        "bytes": total,
        "mean_jpeg_bytes": total / len(rows),
        "shapes": _shape_histogram(sizes.values()),
        "quality_range": list(QUALITY),
    }
    manifest_path.write_text(json.dumps(manifest))
    return {**manifest, "generate_s": time.perf_counter() - started, "reused": False}


def _shape_histogram(sizes) -> dict[str, int]:
    """'landscape' / 'portrait' / 'square' counts of the written images."""
    out = {"landscape": 0, "portrait": 0, "square": 0}
    for w, h, _ in sizes:
        out["landscape" if w > h else "portrait" if h > w else "square"] += 1
    return out


def _write_text(path: Path, lines) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def write_subset(
    full_root: str | Path, subset_root: str | Path, *, train_images: int, test_images: int
) -> dict[str, int]:
    """A partial official-layout copy under ``subset_root/CUB_200_2011`` that lists an evenly
    spread ``train_images`` of the training split and ``test_images`` of the test split of the
    copy under ``full_root``; its ``images`` folder is a symbolic link to the full copy's, so no
    JPEG is duplicated. The reader sees an official copy with fewer images (partial: train with
    dataset.allow_partial=true)."""
    from nirbench.harness.data.real.cub200 import list_images

    full = list_images(full_root)
    if full.layout != "official":
        raise ValueError(f"{full_root}: the subset needs the official layout, found {full.layout}")
    folder = Path(subset_root).expanduser() / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    picked = []
    for mask, n in ((full.train, train_images), (~full.train, test_images)):
        ids = np.flatnonzero(mask)
        if not 1 <= n <= len(ids):
            raise ValueError(
                f"subset wants {n} images of a split of {len(ids)}; choose 1-{len(ids)}"
            )
        picked += ids[np.linspace(0, len(ids) - 1, n).round().astype(int)].tolist()
    rows = [
        (k + 1, full.paths[i].removeprefix("images/"), int(full.class_ids[i]))
        for k, i in enumerate(sorted(picked))
    ]
    _write_text(folder / "images.txt", (f"{i} {rel}" for i, rel, _ in rows))
    _write_text(folder / "image_class_labels.txt", (f"{i} {c}" for i, _, c in rows))
    classes = sorted({c for _, _, c in rows})
    train_classes = len(np.unique(full.class_ids[sorted(picked)][full.train[sorted(picked)]]))
    names = full.class_names
    _write_text(folder / "classes.txt", (f"{c} {names.get(c, class_name(c))}" for c in classes))
    link = folder / "images"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to((full.base / "images").resolve(), target_is_directory=True)
    return {
        "train_images": train_images,
        "test_images": test_images,
        "classes": len(classes),
        "train_classes": int(train_classes),
    }
