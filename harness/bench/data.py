"""``nirbench bench data``: training images per second of the cached pipeline against the classic
per-sample one, in the same process run, with the same number of workers W.

- reference: torchvision ``ImageFolder``-style per-sample PIL decode + ``RandomResizedCrop(224)``
  + ``RandomHorizontalFlip`` + ``ToTensor`` + ``Normalize`` (``harness.data.real.reference``),
  batched by a ``DataLoader`` with W worker processes (persistent, so start-up is not charged);
- ours: ``CachedImageSplit.train_batch`` on the memory-mapped uint8 cache (decoded once, shorter
  side 256) with batched crop boxes, uint8 antialiased resizing, flip and normalisation, in this
  process with torch limited to W threads (its per-image CPU loop runs on one thread, so on a
  CPU ours never uses more cores than the reference's W workers).
- jpeg (``--caches uint8,jpeg``, the default, measures both): the same batches from the compact
  JPEG cache (``harness.data.real.jpeg_cache``), which decodes every batch again
  (``torchvision.io.decode_jpeg``: libjpeg-turbo on the CPU, nvjpeg on CUDA).
All go through the same files with the same batch size. One round = ``batches`` batches, timed
from the start of the epoch to the last batch on the device (the reference's pipeline fill is part
of its cost; its workers are already alive). Rounds alternate (reference, ours, reference, ...);
the best round of each is reported, so a burst of other work on a shared machine does not decide
the ratio. The cache build (decoding every image once) is timed separately as ``cache_build_s``.

Without --root a temporary folder of CUB-like JPEGs is generated (500 x 375, random smooth
textures with grain, quality 90) and removed afterwards.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

GENERATED = {"images": 400, "classes": 20, "width": 500, "height": 375, "quality": 90}


def generate_jpegs(folder: Path, *, images: int = GENERATED["images"],
                   classes: int = GENERATED["classes"], size: tuple[int, int] = (500, 375),
                   quality: int = GENERATED["quality"], seed: int = 0) -> list[Path]:
    """ImageFolder-style ``folder/class_XXX/NNNN.jpg``: smooth random colour fields with grain,
    so JPEG sizes (about 60-100 kB) and decode times are those of real photographs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    files = []
    for k in range(images):
        low = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.int16)
        grain = rng.integers(-24, 25, (h, w, 3), dtype=np.int16)
        path = folder / f"class_{k % classes:03d}" / f"{k:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(path,
                                                                             quality=quality)
        files.append(path)
    return files


def image_folder_files(root: Path, limit: int | None = None) -> list[Path]:
    """Every image below ``root`` (any depth), sorted; ``limit`` keeps an evenly spaced subset."""
    from nirbench.harness.data.real.layouts import IMAGE_SUFFIXES

    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images (*{', *'.join(IMAGE_SUFFIXES)}) below {root}")
    if limit is not None and 0 < limit < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    return files


CACHES = ("uint8", "jpeg")


def run(*, root: str | Path | None = None, workers: int = 2, batch: int = 64, batches: int = 8,
        rounds: int = 2, images: int | None = None, device: str = "auto", seed: int = 0,
        caches: tuple[str, ...] = CACHES,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    from nirbench.harness.bench.eval import _load_average, machine_description
    from nirbench.harness.train.engine import resolve_device

    say = progress or (lambda message: None)
    if not caches or any(c not in CACHES for c in caches) or "uint8" not in caches:
        raise ValueError(f"caches must include uint8 (the ratio's subject) and come from "
                         f"{CACHES}, got {caches}")
    if workers < 0 or batch < 1 or batches < 1 or rounds < 1:
        raise ValueError(f"workers must be >= 0 and batch, batches, rounds >= 1; got workers="
                         f"{workers}, batch={batch}, batches={batches}, rounds={rounds}")
    dev = resolve_device(device)
    scratch = Path(tempfile.mkdtemp(prefix="nirbench-bench-data-"))
    try:
        if root is None:
            say(f"generating {GENERATED['images']} CUB-like JPEGs "
                f"({GENERATED['width']}x{GENERATED['height']}, quality {GENERATED['quality']})")
            source = scratch / "images"
            files = generate_jpegs(source, images=images or GENERATED["images"])
        else:
            source = Path(root).expanduser()
            if not source.is_dir():
                raise FileNotFoundError(f"--root {source} is not a folder")
            files = image_folder_files(source, images)
        out: dict[str, Any] = {"root": str(root) if root is not None else None,
                               "generated": root is None, "images": len(files),
                               "load_average_before": _load_average()}
        out.update(_measure(files, source, scratch, workers, batch, batches, rounds, dev, seed,
                            tuple(caches), say))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out["load_average_after"] = _load_average()  # other work on the machine skews every timing
    out["machine"] = machine_description()
    return out


def _measure(files: list[Path], source: Path, scratch: Path, workers: int, batch: int,
             batches: int, rounds: int, dev: torch.device, seed: int, caches: tuple[str, ...],
             say: Callable[[str], None]) -> dict[str, Any]:
    from nirbench.harness.data.real.cache import open_or_build
    from nirbench.harness.data.real.split import CachedImageSplit

    rel = [f.relative_to(source).as_posix() for f in files]
    stores, build_s = {}, {}
    for kind in caches:
        say(f"building the {kind} cache of {len(files)} images with {max(1, workers)} processes")
        started = time.perf_counter()
        stores[kind], _ = open_or_build("bench", "folder", source, rel, scratch / "cache",
                                        workers=max(1, workers), progress=False, kind=kind)
        build_s[kind] = time.perf_counter() - started
    labels = torch.zeros(len(files), dtype=torch.int64)
    reference = _reference_rounds(files, workers, batch, batches, dev, seed)
    ours = {kind: _our_rounds(CachedImageSplit(store, np.arange(len(files)), labels), workers,
                              batch, batches, dev, seed) for kind, store in stores.items()}
    ref_ips: list[float] = []
    our_ips: dict[str, list[float]] = {kind: [] for kind in caches}
    for r in range(rounds):
        say(f"round {r + 1}/{rounds}: reference (per-sample PIL, {workers} workers)")
        ref_ips.append(batch * batches / next(reference))
        for kind, rounds_of in ours.items():
            say(f"round {r + 1}/{rounds}: ours ({kind} cache + batched transforms, "
                f"{workers} threads)")
            our_ips[kind].append(batch * batches / next(rounds_of))
    reference.close()
    for rounds_of in ours.values():
        rounds_of.close()
    reference_best = max(ref_ips)
    store = stores["uint8"]
    sizes = [store.image(0).shape[:2]] if len(store) else []
    out = {
        "ours_ips": max(our_ips["uint8"]), "reference_ips": reference_best,
        "ratio": max(our_ips["uint8"]) / reference_best, "workers": workers, "batch": batch,
        "batches": batches, "rounds": rounds, "timed_images_per_round": batch * batches,
        "device": dev.type, "ours_round_ips": our_ips["uint8"], "reference_round_ips": ref_ips,
        "cache_build_s": build_s["uint8"], "cache_mb": store.meta["bytes"] / 2**20,
        "cached_image_hw": list(sizes[0]) if sizes else None,
        "source_image_wh": list(_source_size(files[0])),
    }
    if "jpeg" in stores:
        from nirbench.harness.data.real.jpeg_cache import QUALITY

        jpeg = stores["jpeg"]
        out.update({
            "jpeg_ips": max(our_ips["jpeg"]), "jpeg_ratio": max(our_ips["jpeg"]) / reference_best,
            "jpeg_round_ips": our_ips["jpeg"], "jpeg_cache_build_s": build_s["jpeg"],
            "jpeg_cache_mb": jpeg.meta["bytes"] / 2**20, "jpeg_quality": QUALITY,
            "jpeg_size_ratio": store.meta["bytes"] / max(1, jpeg.meta["bytes"]),
            "jpeg_mean_abs_diff": _mean_abs_diff(store, jpeg),
        })
    return out


def _mean_abs_diff(uint8, jpeg, sample: int = 16) -> float:
    """Mean absolute pixel difference (grey levels) between the two caches' images."""
    ids = np.linspace(0, len(uint8) - 1, min(sample, len(uint8))).round().astype(int).tolist()
    return float(np.mean([np.abs(uint8.image(i).astype(np.int16)
                                 - jpeg.image(i).astype(np.int16)).mean() for i in ids]))


def _source_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def _reference_rounds(files: list[Path], workers: int, batch: int, batches: int,
                      dev: torch.device, seed: int):
    """Generator: each ``next`` times one round (an epoch of ``batches`` batches) in seconds."""
    from torch.utils.data import DataLoader, RandomSampler

    from nirbench.harness.data.real.reference import PerSampleImages, train_transform

    dataset = PerSampleImages(files, [0] * len(files), train_transform())
    sampler = RandomSampler(dataset, num_samples=batch * batches,
                            generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                        drop_last=True, persistent_workers=workers > 0,
                        pin_memory=dev.type == "cuda")
    for _ in loader:  # warm-up epoch: starts the workers, untimed
        pass
    while True:
        started = time.perf_counter()
        for images, _ in loader:
            images = images.to(dev, non_blocking=True)
        _sync(dev)
        yield time.perf_counter() - started


def _our_rounds(split, workers: int, batch: int, batches: int, dev: torch.device, seed: int):
    generator = torch.Generator().manual_seed(seed)
    order = torch.Generator().manual_seed(seed + 1)

    def epoch() -> None:
        idx = torch.randint(0, len(split), (batches, batch), generator=order)
        for row in idx:
            split.train_batch(row, dev, generator)
        _sync(dev)

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(max(1, workers))
        epoch()  # warm-up, untimed (page cache, allocator)
        while True:
            torch.set_num_threads(max(1, workers))
            started = time.perf_counter()
            epoch()
            elapsed = time.perf_counter() - started
            torch.set_num_threads(previous)  # the reference's round runs with torch's default
            yield elapsed
    finally:
        torch.set_num_threads(previous)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
