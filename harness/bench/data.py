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

import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

GENERATED = {"images": 400, "classes": 20, "width": 500, "height": 375, "quality": 90}


def generate_jpegs(
    folder: Path,
    *,
    images: int = GENERATED["images"],
    classes: int = GENERATED["classes"],
    size: tuple[int, int] = (500, 375),
    quality: int = GENERATED["quality"],
    seed: int = 0,
) -> list[Path]:
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
        Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(
            path, quality=quality
        )
        files.append(path)
    return files


def image_folder_files(root: Path, limit: int | None = None) -> list[Path]:
    """Every image below ``root`` (any depth), sorted; ``limit`` keeps an evenly spaced subset."""
    from nirbench.harness.data.real.layouts import IMAGE_SUFFIXES

    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images (*{', *'.join(IMAGE_SUFFIXES)}) below {root}")
    if limit is not None and 0 < limit < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    return files


CACHES = ("uint8", "jpeg")


def run(
    *,
    root: str | Path | None = None,
    workers: int = 2,
    batch: int = 64,
    batches: int = 8,
    rounds: int = 2,
    images: int | None = None,
    device: str = "auto",
    seed: int = 0,
    caches: tuple[str, ...] = CACHES,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    from nirbench.harness.bench.eval import _load_average, machine_description
    from nirbench.harness.train.engine import resolve_device

    say = progress or (lambda message: None)
    if not caches or any(c not in CACHES for c in caches) or "uint8" not in caches:
        raise ValueError(
            f"caches must include uint8 (the ratio's subject) and come from {CACHES}, got {caches}"
        )
    if workers < 0 or batch < 1 or batches < 1 or rounds < 1:
        raise ValueError(
            f"workers must be >= 0 and batch, batches, rounds >= 1; got workers="
            f"{workers}, batch={batch}, batches={batches}, rounds={rounds}"
        )
    dev = resolve_device(device)
    scratch = Path(tempfile.mkdtemp(prefix="nirbench-bench-data-"))
    try:
        if root is None:
            say(
                f"generating {GENERATED['images']} CUB-like JPEGs "
                f"({GENERATED['width']}x{GENERATED['height']}, quality {GENERATED['quality']})"
            )
            source = scratch / "images"
            files = generate_jpegs(source, images=images or GENERATED["images"])
        else:
            source = Path(root).expanduser()
            if not source.is_dir():
                raise FileNotFoundError(f"--root {source} is not a folder")
            files = image_folder_files(source, images)
        out: dict[str, Any] = {
            "root": str(root) if root is not None else None,
            "generated": root is None,
            "images": len(files),
            "load_average_before": _load_average(),
        }
        out.update(
            _measure(
                files,
                source,
                scratch,
                workers,
                batch,
                batches,
                rounds,
                dev,
                seed,
                tuple(caches),
                say,
            )
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out["load_average_after"] = _load_average()  # other work on the machine skews every timing
    out["machine"] = machine_description()
    return out


def _measure(
    files: list[Path],
    source: Path,
    scratch: Path,
    workers: int,
    batch: int,
    batches: int,
    rounds: int,
    dev: torch.device,
    seed: int,
    caches: tuple[str, ...],
    say: Callable[[str], None],
) -> dict[str, Any]:
    from nirbench.harness.data.real.cache import open_or_build
    from nirbench.harness.data.real.split import CachedImageSplit

    rel = [f.relative_to(source).as_posix() for f in files]
    stores, build_s = {}, {}
    for kind in caches:
        say(f"building the {kind} cache of {len(files)} images with {max(1, workers)} processes")
        started = time.perf_counter()
        stores[kind], _ = open_or_build(
            "bench",
            "folder",
            source,
            rel,
            scratch / "cache",
            workers=max(1, workers),
            progress=False,
            kind=kind,
        )
        build_s[kind] = time.perf_counter() - started
    labels = torch.zeros(len(files), dtype=torch.int64)
    reference = _reference_rounds(files, workers, batch, batches, dev, seed)
    ours = {
        kind: _our_rounds(
            CachedImageSplit(store, np.arange(len(files)), labels),
            workers,
            batch,
            batches,
            dev,
            seed,
        )
        for kind, store in stores.items()
    }
    ref_ips: list[float] = []
    our_ips: dict[str, list[float]] = {kind: [] for kind in caches}
    for r in range(rounds):
        say(f"round {r + 1}/{rounds}: reference (per-sample PIL, {workers} workers)")
        ref_ips.append(batch * batches / next(reference))
        for kind, rounds_of in ours.items():
            say(
                f"round {r + 1}/{rounds}: ours ({kind} cache + batched transforms, "
                f"{workers} threads)"
            )
            our_ips[kind].append(batch * batches / next(rounds_of))
    reference.close()
    for rounds_of in ours.values():
        rounds_of.close()
    reference_best = max(ref_ips)
    store = stores["uint8"]
    sizes = [store.image(0).shape[:2]] if len(store) else []
    out = {
        "ours_ips": max(our_ips["uint8"]),
        "reference_ips": reference_best,
        "ratio": max(our_ips["uint8"]) / reference_best,
        "workers": workers,
        "batch": batch,
        "batches": batches,
        "rounds": rounds,
        "timed_images_per_round": batch * batches,
        "device": dev.type,
        "ours_round_ips": our_ips["uint8"],
        "reference_round_ips": ref_ips,
        "cache_build_s": build_s["uint8"],
        "cache_mb": store.meta["bytes"] / 2**20,
        "cached_image_hw": list(sizes[0]) if sizes else None,
        "source_image_wh": list(_source_size(files[0])),
    }
    if "jpeg" in stores:
        from nirbench.harness.data.real.jpeg_cache import QUALITY

        jpeg = stores["jpeg"]
        out.update(
            {
                "jpeg_ips": max(our_ips["jpeg"]),
                "jpeg_ratio": max(our_ips["jpeg"]) / reference_best,
                "jpeg_round_ips": our_ips["jpeg"],
                "jpeg_cache_build_s": build_s["jpeg"],
                "jpeg_cache_mb": jpeg.meta["bytes"] / 2**20,
                "jpeg_quality": QUALITY,
                "jpeg_size_ratio": store.meta["bytes"] / max(1, jpeg.meta["bytes"]),
                "jpeg_mean_abs_diff": _mean_abs_diff(store, jpeg),
            }
        )
    return out


def _mean_abs_diff(uint8, jpeg, sample: int = 16) -> float:
    """Mean absolute pixel difference (grey levels) between the two caches' images."""
    ids = np.linspace(0, len(uint8) - 1, min(sample, len(uint8))).round().astype(int).tolist()
    return float(
        np.mean(
            [
                np.abs(uint8.image(i).astype(np.int16) - jpeg.image(i).astype(np.int16)).mean()
                for i in ids
            ]
        )
    )


def _source_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def _reference_rounds(
    files: list[Path], workers: int, batch: int, batches: int, dev: torch.device, seed: int
):
    """Generator: each ``next`` times one round (an epoch of ``batches`` batches) in seconds."""
    from torch.utils.data import DataLoader, RandomSampler

    from nirbench.harness.data.real.reference import PerSampleImages, train_transform

    dataset = PerSampleImages(files, [0] * len(files), train_transform())
    sampler = RandomSampler(
        dataset, num_samples=batch * batches, generator=torch.Generator().manual_seed(seed)
    )
    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
        pin_memory=dev.type == "cuda",
    )
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


# --- The full-size rehearsal of the real-data path (issue 25): a CUB_200_2011 copy -----------

STEP_RATE = 2500  # img/s: the GPU step rate the loader workers are sized against
TRAIN_SUBSET = {"train_images": 2000, "test_images": 500}
REHEARSAL_CONFIG = (
    "dataset.name=cub200",
    "dataset.allow_partial=true",
    "backbone.name=resnet18",
    "backbone.pretrained=false",
    "train.epochs=1",
    "train.warmup_epochs=0",
    "train.device=cpu",
)


def is_cub_official(root: str | Path | None) -> bool:
    """``root`` holds the official CUB_200_2011 layout (at itself or in CUB_200_2011/): the
    rehearsal's subject, rather than a plain folder of images."""
    if root is None:
        return False
    base = Path(root).expanduser()
    return any(
        (folder / "images.txt").is_file()
        for folder in (base, base / "CUB_200_2011", base / "cub_200_2011")
    )


def rehearse(
    root: str | Path,
    *,
    generate: bool = False,
    classes: int | None = None,
    images: int | None = None,
    workers: int = 2,
    batch: int = 64,
    batches: int = 8,
    rounds: int = 2,
    seed: int = 0,
    train_images: int = TRAIN_SUBSET["train_images"],
    test_images: int = TRAIN_SUBSET["test_images"],
    train: bool = True,
    keep_caches: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Rehearse the real-data path on the CUB copy under ``root`` (``generate``: write the
    CUB-sized copy there first, ``harness.data.real.rehearsal``; ``classes``/``images`` make a
    miniature one): build both caches with the real builder, measure per-worker decode +
    augmentation rates against bare PIL decode, size the loader workers for ``STEP_RATE``, and
    train one epoch of ResNet18 on a subset through ``nirbench run``, then aggregate and render
    the report. Every timing is on the CPU of this machine; see docs/rehearsal.md."""
    from nirbench.harness.bench.eval import _load_average, machine_description
    from nirbench.harness.data.real import rehearsal
    from nirbench.harness.data.real.datasets import list_dataset
    from nirbench.harness.data.real.official_ids import completeness

    say = progress or (lambda message: None)
    if not 1 <= workers <= rehearsal.MAX_WORKERS or batch < 1 or batches < 1 or rounds < 1:
        raise ValueError(
            f"workers must be 1-{rehearsal.MAX_WORKERS} and batch, batches, rounds "
            f">= 1; got workers={workers}, batch={batch}, batches={batches}, "
            f"rounds={rounds}"
        )
    root = Path(root).expanduser()
    out: dict[str, Any] = {
        "mode": "rehearsal",
        "root": str(root),
        "load_average_before": _load_average(),
    }
    if generate:
        counts = (
            rehearsal.small_counts(classes or 4, images or 12)
            if classes is not None or images is not None
            else None
        )
        made = rehearsal.generate(root, counts=counts, seed=seed, workers=workers, progress=say)
        out.update(
            {
                "generated": True,
                "generate_s": made["generate_s"],
                "generate_reused": made["reused"],
                "generate_workers": workers,
                "source_bytes": made["bytes"],
                "mean_jpeg_bytes": made["mean_jpeg_bytes"],
                "image_shapes": made["shapes"],
                "jpeg_quality_range": made["quality_range"],
            }
        )
    elif not is_cub_official(root):
        raise FileNotFoundError(
            f"{root} holds no official CUB_200_2011 layout (images.txt); "
            f"pass --generate to write a CUB-sized copy there"
        )
    else:
        out["generated"] = False
    listing = list_dataset("cub200", root)
    report = completeness(listing)
    out.update(
        {
            "images": len(listing.paths),
            "classes": int(len(np.unique(listing.class_ids))),
            "complete_official_copy": report.complete,
            **listing.split_counts(),
        }
    )
    if "source_bytes" not in out:
        out["source_bytes"] = sum((listing.base / p).stat().st_size for p in listing.paths)
        out["mean_jpeg_bytes"] = out["source_bytes"] / len(listing.paths)
    cache_dir = root / "nirbench_rehearsal_caches"
    shutil.rmtree(cache_dir, ignore_errors=True)  # a build timed from scratch, every run
    try:
        out.update(_rehearse_caches(listing, cache_dir, workers, batch, batches, rounds, seed, say))
    finally:
        if not keep_caches:
            shutil.rmtree(cache_dir, ignore_errors=True)
    if train:
        out["train_epoch"] = _train_epoch(root, train_images, test_images, say)
    out["load_average_after"] = _load_average()  # other work on the machine skews every timing
    out["machine"] = machine_description()
    return out


def _rehearse_caches(
    listing,
    cache_dir: Path,
    workers: int,
    batch: int,
    batches: int,
    rounds: int,
    seed: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Both caches built by ``cache.open_or_build`` exactly as a run builds them, then the
    per-worker rates (one process, one torch thread) of: bare PIL decode, the per-sample PIL +
    torchvision reference, and the batched pipeline on each cache."""
    from nirbench.harness.data.real.cache import open_or_build
    from nirbench.harness.data.real.split import CachedImageSplit

    out: dict[str, Any] = {
        "cache_workers": workers,
        "disk_bytes": {},
        "cache_build_s": {},
        "cache_build_img_s": {},
    }
    stores = {}
    for kind in CACHES:
        say(
            f"building the {kind} cache of {len(listing.paths):,} images with {workers} "
            f"processes (cache.open_or_build, as a run does)"
        )
        started = time.perf_counter()
        stores[kind], _ = open_or_build(
            listing.dataset,
            listing.layout,
            listing.base,
            listing.paths,
            cache_dir,
            workers=workers,
            progress=False,
            kind=kind,
        )
        out["cache_build_s"][kind] = time.perf_counter() - started
        out["cache_build_img_s"][kind] = len(listing.paths) / out["cache_build_s"][kind]
        out["disk_bytes"][kind] = _disk_bytes(stores[kind].directory)
    files = [listing.base / p for p in listing.paths]
    timed = batch * batches
    sample = [
        files[i] for i in np.linspace(0, len(files) - 1, min(timed, len(files))).round().astype(int)
    ]
    labels = torch.zeros(len(files), dtype=torch.int64)
    cpu = torch.device("cpu")
    previous = torch.get_num_threads()
    pil, reference_ips = [], []
    ours: dict[str, list[float]] = {kind: [] for kind in CACHES}
    try:
        torch.set_num_threads(1)  # one loader worker = one process on one core
        reference = _reference_rounds(files, 0, batch, batches, cpu, seed)
        pipelines = {
            kind: _our_rounds(
                CachedImageSplit(store, np.arange(len(files)), labels), 1, batch, batches, cpu, seed
            )
            for kind, store in stores.items()
        }
        for r in range(rounds):
            say(f"round {r + 1}/{rounds}: bare PIL decode of {len(sample)} JPEGs")
            pil.append(len(sample) / _pil_decode_s(sample))
            say(f"round {r + 1}/{rounds}: per-sample PIL + torchvision, 1 worker")
            torch.set_num_threads(1)
            reference_ips.append(timed / next(reference))
            for kind, rounds_of in pipelines.items():
                say(f"round {r + 1}/{rounds}: {kind} cache + batched augmentation, 1 thread")
                ours[kind].append(timed / next(rounds_of))
                torch.set_num_threads(1)
        reference.close()
        for rounds_of in pipelines.values():
            rounds_of.close()
    finally:
        torch.set_num_threads(previous)
    rates = {kind: max(v) for kind, v in ours.items()}
    reference_best = max(reference_ips)
    out.update(
        {
            "timed_images_per_round": timed,
            "rounds": rounds,
            "batch": batch,
            "pil_decode_img_s": max(pil),
            "reference_decode_aug_img_s_per_worker": reference_best,
            "decode_aug_img_s_per_worker": rates,
            "step_rate_img_s": STEP_RATE,
            "workers_for_2500_img_s": {
                **{kind: math.ceil(STEP_RATE / rate) for kind, rate in rates.items()},
                "reference": math.ceil(STEP_RATE / reference_best),
            },
            "round_img_s": {"pil_decode": pil, "reference": reference_ips, **ours},
        }
    )
    return out


def _pil_decode_s(files: list[Path]) -> float:
    """Seconds to open, decode and convert to RGB every file with PIL: the floor any
    per-sample JPEG pipeline pays before its first transform."""
    from PIL import Image

    started = time.perf_counter()
    for path in files:
        with Image.open(path) as image:
            image.convert("RGB").load()
    return time.perf_counter() - started


def _disk_bytes(folder: Path) -> int:
    """Bytes the files below ``folder`` occupy on disk (allocated blocks, as ``du`` counts)."""
    return sum(p.stat().st_blocks * 512 for p in Path(folder).rglob("*") if p.is_file())


def _train_epoch(
    root: Path, train_images: int, test_images: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """One epoch of ResNet18 on a subset of the copy, through the real command line: ``nirbench
    run`` (the real-layout loader, its cache build, training, evaluation, MLflow), ``nirbench
    aggregate`` and ``nirbench report``, each timed, into ``root/rehearsal_results``."""
    import csv
    import subprocess

    from nirbench.harness.bench.robustness import nirbench_command
    from nirbench.harness.data.real import rehearsal

    subset_root = root / f"subset_{train_images}_{test_images}"
    results = root / "rehearsal_results"
    shutil.rmtree(results, ignore_errors=True)  # a fresh run, never a skipped finished one
    counts = rehearsal.write_subset(
        root, subset_root, train_images=train_images, test_images=test_images
    )
    # the protocol's 64 (32 classes x 2), fewer where a miniature subset has fewer classes
    batch = min(64, 2 * counts["train_classes"], train_images - train_images % 2)
    overrides = [*REHEARSAL_CONFIG, f"dataset.root={subset_root}", f"train.batch_size={batch}"]
    out: dict[str, Any] = {
        "subset_root": str(subset_root),
        "results_dir": str(results),
        **counts,
        "backbone": "resnet18",
        "pretrained": False,
        "pretrained_note": "random initialisation: this machine has no "
        "internet for the ImageNet weights",
        "crop_px": 224,
        "batch_size": batch,
        "device": "cpu",
        "overrides": overrides,
    }
    steps = (
        (
            "run",
            [
                "run",
                "--results-dir",
                str(results),
                "--no-progress",
                *[a for o in overrides for a in ("--set", o)],
            ],
        ),
        ("aggregate", ["aggregate", "--results-dir", str(results), "--quiet"]),
        ("report", ["report", "--results-dir", str(results), "--quiet"]),
    )
    # the local store under results, whatever MLFLOW_TRACKING_URI this shell points at
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    for name, argv in steps:
        say(f"train epoch: nirbench {' '.join(argv)}")
        started = time.perf_counter()
        done = subprocess.run(nirbench_command(*argv), capture_output=True, text=True, env=env)
        out[f"{name}_wall_s"] = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(
                f"nirbench {name} failed (exit {done.returncode}) in the "
                f"rehearsal:\n{done.stderr[-3000:]}"
            )
    out["report_html"] = str(results / "report" / "index.html")
    if not (results / "report" / "index.html").is_file():
        raise RuntimeError(f"nirbench report exited 0 but wrote no {out['report_html']}")
    with open(results / "tables" / "epochs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) != 1:
        raise RuntimeError(
            f"{results / 'tables' / 'epochs.csv'} should hold the one epoch "
            f"trained, has {len(rows)} rows"
        )
    row = rows[0]
    timings = _run_metrics(
        results / "mlflow.db", row["run_id"], ("time/train_epoch_s", "time/eval_s")
    )
    train_s = timings["time/train_epoch_s"]
    out.update(
        {
            "run_id": row["run_id"],
            "train_epoch_s": train_s,
            "eval_s": timings["time/eval_s"],
            "epoch_s": float(row["time/epoch_s"]),
            "train_img_s": train_images / train_s,
            "run_img_s": train_images / out["run_wall_s"],
            "test_recall_at_1": _float_or_none(row.get("test/recall@1")),
        }
    )
    return out


def _run_metrics(db: Path, run_id: str, keys: tuple[str, ...]) -> dict[str, float]:
    """The latest value of each metric ``keys`` of one run, read from the local MLflow sqlite
    store (the epochs table keeps only time/epoch_s, not the training share of it)."""
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        found = dict(
            connection.execute(
                f"SELECT key, value FROM latest_metrics WHERE run_uuid = ? AND key IN "
                f"({', '.join('?' * len(keys))})",
                (run_id, *keys),
            ).fetchall()
        )
    missing = [k for k in keys if k not in found]
    if missing:
        raise RuntimeError(f"run {run_id} in {db} logged no {missing}")
    return {k: float(found[k]) for k in keys}


def _float_or_none(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None
