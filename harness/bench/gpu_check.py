"""``nirbench bench gpu-check``: everything a session with a lent GPU should measure, in one
command that writes one JSON, within a time budget (default 540 s on an H200).

Every part is timed and guarded: an exception is recorded with its traceback and the check goes
on; a part that would start after the budget is recorded as skipped. The JSON is rewritten after
every part, so a check that is killed keeps what it measured. Parts, in order of value per second:

  doctor          ``nirbench doctor`` (GPU stack, faiss GPU, weights, datasets, store, disk)
  augment_match   the CUDA augmentation's pixels against the CPU path for the same crop boxes
                  (uint8 and JPEG caches); on a CPU, the CPU path against PIL
  bench_train     ResNet50, batch 90, 224 px: e2e vs model, NIR on/off x fp32/bf16 x
                  channels_last on/off
  bench_data      cached pipeline on CUDA (uint8 and JPEG caches) vs the per-sample PIL reference
  bench_eval_sop  our kNN metrics + NMI with the faiss GPU engine at SOP size (60,502 x 128)
  paper_run       50 steps of the cub200 NIR paper preset (ResNet50, batch 90) on a generated
                  CUB-layout folder (50 + 50 classes with official ids), through MLflow
  pytest_gpu      ``pytest -m gpu`` (the gpu-marked tests)
  bench_eval_1m   our kNN metrics with the faiss GPU engine at 1,000,000 embeddings

``--device cpu --quick`` runs every part at toy sizes on a CPU: what the tests exercise here.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
PARTS = (
    "doctor",
    "augment_match",
    "bench_train",
    "bench_data",
    "bench_eval_sop",
    "paper_run",
    "pytest_gpu",
    "bench_eval_1m",
)
# Pixel tolerance of the CUDA augmentation against the CPU path, in grey levels: the CPU path
# resizes on uint8 (rounding every output pixel to an integer), the CUDA path in float32. The
# JPEG cache adds the decoders' difference (nvjpeg on CUDA, libjpeg-turbo on the CPU may round
# the IDCT and chroma upsampling differently), so there only the mean is bounded.
MAX_LEVELS = 1.0
MEAN_LEVELS = 0.5
JPEG_MEAN_LEVELS = 1.0


class Context:
    def __init__(self, device: torch.device, quick: bool, results_dir: Path, scratch: Path) -> None:
        self.device, self.quick, self.results_dir, self.scratch = (
            device,
            quick,
            results_dir,
            scratch,
        )
        self.deadline = float("inf")

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()


# ------------------------------------------------------------------------------------- parts


def part_doctor(ctx: Context) -> tuple[dict[str, Any], str]:
    from nirbench.harness import doctor

    report = doctor.run(os.environ.get(doctor.ENV_DATA), ctx.results_dir)
    c = report["counts"]
    return report, f"{c['ok']} ok, {c['warn']} warn, {c['fail']} fail"


def part_augment_match(ctx: Context) -> tuple[dict[str, Any], str]:
    from nirbench.harness.bench.data import generate_jpegs
    from nirbench.harness.data.real.cache import open_or_build
    from nirbench.harness.data.real.split import CachedImageSplit
    from nirbench.harness.data.real.transforms import IMAGENET_STD

    level = 1.0 / (255.0 * min(IMAGENET_STD))  # one grey level in normalised units
    n = 8 if ctx.quick else 64
    size = (120, 90) if ctx.quick else (500, 375)
    files = generate_jpegs(ctx.scratch / "match", images=n, classes=4, size=size)
    rel = [f.relative_to(ctx.scratch / "match").as_posix() for f in files]
    out: dict[str, Any] = {
        "images": n,
        "tolerance_levels": {
            "max": MAX_LEVELS,
            "mean": MEAN_LEVELS,
            "jpeg_cuda_mean": JPEG_MEAN_LEVELS,
        },
    }
    ok = True
    cpu = torch.device("cpu")
    idx = torch.arange(n)
    for kind in ("uint8", "jpeg"):
        store, _ = open_or_build(
            "match",
            "generated",
            ctx.scratch / "match",
            rel,
            ctx.scratch / "match-cache",
            progress=False,
            kind=kind,
        )
        split = CachedImageSplit(store, np.arange(n), torch.zeros(n, dtype=torch.int64))
        ours = split.train_batch(idx, cpu, torch.Generator().manual_seed(4))
        if ctx.device.type == "cuda":
            other = split.train_batch(idx, ctx.device, torch.Generator().manual_seed(4)).cpu()
            e_diff = split.eval_batch(0, n, ctx.device).cpu() - split.eval_batch(0, n, cpu)
            against = "cuda vs cpu"
        else:  # no GPU: the CPU path against PIL's crop + resize + flip for the same boxes
            other = _pil_reference(split, idx, torch.Generator().manual_seed(4))
            e_diff = torch.zeros(1)
            against = "cpu vs PIL"
        diff = (ours - other).abs() / level
        row = {
            "compared": against,
            "max_levels": diff.max().item(),
            "mean_levels": diff.mean().item(),
            "eval_max_abs": e_diff.abs().max().item(),
        }
        if kind == "uint8" or against == "cpu vs PIL":
            row["within_tolerance"] = (
                row["max_levels"] <= MAX_LEVELS + 1e-3
                and row["mean_levels"] < MEAN_LEVELS
                and row["eval_max_abs"] < 1e-4
            )
        else:  # two JPEG decoders: bound the mean only (their max is recorded)
            row["eval_mean_levels"] = (e_diff.abs() / level).mean().item()
            row["within_tolerance"] = (
                row["mean_levels"] < JPEG_MEAN_LEVELS and row["eval_mean_levels"] < JPEG_MEAN_LEVELS
            )
        ok &= row["within_tolerance"]
        out[kind] = row
    out["within_tolerance"] = ok
    if not ok:
        raise AssertionError(f"augmentation pixels outside the tolerance: {out}")
    return out, (
        f"{out['uint8']['compared']}: max {out['uint8']['max_levels']:.2f}, mean "
        f"{out['uint8']['mean_levels']:.3f} levels (uint8); max "
        f"{out['jpeg']['max_levels']:.2f} (jpeg)"
    )


def _pil_reference(split, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    import torchvision.transforms.functional as TF
    from PIL import Image

    from nirbench.harness.data.real.transforms import IMAGENET_MEAN, IMAGENET_STD

    boxes, flips = split.train_boxes(idx, generator)
    out = []
    for k, ((i, j, h, w), flip) in enumerate(zip(boxes.tolist(), flips.tolist())):
        crop = TF.resized_crop(
            Image.fromarray(np.ascontiguousarray(split.image(k))),
            i,
            j,
            h,
            w,
            [224, 224],
            TF.InterpolationMode.BILINEAR,
        )
        crop = TF.hflip(crop) if flip else crop
        out.append(TF.normalize(TF.to_tensor(crop), IMAGENET_MEAN, IMAGENET_STD))
    return torch.stack(out)


def part_bench_train(ctx: Context) -> tuple[dict[str, Any], str]:
    from nirbench.harness.bench import train

    if ctx.quick:  # a smoke test: both arms, one precision and layout
        result = train.run(
            device=ctx.device.type, quick=True, precisions=("fp32",), channels_last=(False,)
        )
    else:
        result = train.run(device=ctx.device.type)
    worst = result["ratio_min"]
    return result, (
        f"ratio_min {worst:.3f} (target {result['target_ratio']}), "
        + ", ".join(
            f"{v['backbone']}/{'nir' if v['nir'] else 'base'}/"
            f"{v['precision']}{'/cl' if v['channels_last'] else ''} "
            f"{v.get('e2e_ips', 0):.0f} img/s"
            for v in result["variants"]
        )
    )


def part_bench_data(ctx: Context) -> tuple[dict[str, Any], str]:
    from nirbench.harness.bench import data

    if ctx.quick:
        result = data.run(
            images=16, batch=4, batches=2, rounds=1, workers=1, device=ctx.device.type
        )
    else:
        result = data.run(
            images=900,
            batch=90,
            batches=8,
            rounds=2,
            workers=min(8, os.cpu_count() or 2),
            device=ctx.device.type,
        )
    return result, (
        f"uint8 {result['ours_ips']:.0f} img/s (ratio {result['ratio']:.1f}), jpeg "
        f"{result['jpeg_ips']:.0f} img/s (ratio {result['jpeg_ratio']:.1f}), "
        f"reference {result['reference_ips']:.0f} img/s"
    )


@contextmanager
def _knn_engine(name: str | None) -> Iterator[None]:
    previous = os.environ.get("NIRBENCH_KNN_ENGINE")
    if name:
        os.environ["NIRBENCH_KNN_ENGINE"] = name
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("NIRBENCH_KNN_ENGINE", None)
        else:
            os.environ["NIRBENCH_KNN_ENGINE"] = previous


def _eval(ctx: Context, n: int, classes: int, *, nmi: bool, full: bool) -> dict[str, Any]:
    from nirbench.harness.bench import eval as bench_eval

    engine = "faiss-gpu" if ctx.device.type == "cuda" else None
    with _knn_engine(engine):
        return bench_eval.run(n, 128, classes, pml=False, nmi=nmi, full=full)


def part_bench_eval_sop(ctx: Context) -> tuple[dict[str, Any], str]:
    n, classes = (600, 100) if ctx.quick else (60502, 11316)
    r = _eval(ctx, n, classes, nmi=True, full=True)
    return r, (
        f"{r['knn_engine']}: kNN metrics {r['ours_knn_s']:.2f} s (bare search "
        f"{r['knn_s']:.2f} s), full suite {r['full_suite_s']:.2f} s, NMI "
        f"{r['ours_nmi_s']:.2f} s, n = {n}"
    )


def part_bench_eval_1m(ctx: Context) -> tuple[dict[str, Any], str]:
    n, classes = (2000, 400) if ctx.quick else (1_000_000, 200_000)
    r = _eval(ctx, n, classes, nmi=False, full=False)
    return r, (
        f"{r['knn_engine']}: kNN metrics {r['ours_knn_s']:.2f} s (bare search "
        f"{r['knn_s']:.2f} s), n = {n:,}, peak RSS {r['peak_rss_mb']:.0f} MB"
    )


def part_paper_run(ctx: Context) -> tuple[dict[str, Any], str]:
    from nirbench.harness.config import load_config
    from nirbench.harness.train.models import imagenet_weights_path
    from nirbench.harness.train.runner import execute
    from nirbench.harness.tracking.store import Tracker

    if ctx.quick:
        classes, train_per, test_per, size, epochs, batch = 4, 4, 3, (96, 72), 2, 8
    else:  # 45 classes per batch of 90; 900 training images = 10 steps per epoch, 5 epochs
        classes, train_per, test_per, size, epochs, batch = 50, 18, 6, (500, 375), 5, 90
    root = ctx.scratch / "paper-data"
    make_cub_layout(
        root,
        train_ids=range(1, classes + 1),
        test_ids=range(101, 101 + classes),
        train_per_class=train_per,
        test_per_class=test_per,
        size=size,
    )
    weights = imagenet_weights_path("resnet50")[0].is_file()
    overrides = [
        f"dataset.root={root}",
        "dataset.allow_partial=true",
        f"train.epochs={epochs}",
        f"train.batch_size={batch}",
        f"train.device={ctx.device.type}",
    ]
    if ctx.quick:
        overrides += [
            "backbone.name=small_cnn",
            "backbone.pretrained=false",
            "backbone.freeze_bn=false",
            "eval.batch_size=16",
        ]
    elif not weights:
        overrides.append("backbone.pretrained=false")
    cfg = load_config(REPO / "harness/configs/presets/paper/cub200-nir.yaml", overrides)
    results = ctx.scratch / "paper-results"
    started = time.perf_counter()
    outcome = execute(cfg, Tracker(results), results, grid="gpu-check")
    seconds = time.perf_counter() - started
    steps = epochs * (classes * train_per // batch)
    record = {
        "run_id": outcome.run_id,
        "status": outcome.status,
        "steps": steps,
        "epochs": epochs,
        "batch": batch,
        "backbone": cfg.backbone.name,
        "pretrained": cfg.backbone.pretrained,
        "seconds": seconds,
        "metrics": {
            k: v for k, v in outcome.metrics.items() if k.startswith(("test/", "loss/", "time/"))
        },
    }
    r1 = outcome.metrics.get("test/recall@1", float("nan"))
    return record, (
        f"{steps} steps of {cfg.backbone.name} (pretrained={cfg.backbone.pretrained})"
        f" in {seconds:.1f} s, R@1 {r1:.3f}, {outcome.status}"
    )


def make_cub_layout(
    root: Path,
    *,
    train_ids,
    test_ids,
    train_per_class: int,
    test_per_class: int,
    size: tuple[int, int] = (500, 375),
    seed: int = 0,
) -> Path:
    """A generated copy in the official CUB_200_2011 layout (images.txt, image_class_labels.txt,
    classes.txt with all 200 classes, images/<NNN.name>/<file>.jpg) holding the given official
    class ids: a partial copy, so runs on it need dataset.allow_partial=true."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = root / "CUB_200_2011"
    images, labels = [], []
    w, h = size
    image_id = 0
    for ids, per in ((train_ids, train_per_class), (test_ids, test_per_class)):
        for c in ids:
            for k in range(per):
                image_id += 1
                rel = f"{c:03d}.Bird_{c}/Bird_{c}_{k:04d}.jpg"
                low = rng.integers(0, 256, (max(2, h // 24), max(2, w // 24), 3), dtype=np.uint8)
                scene = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC))
                path = folder / "images" / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(scene).save(path, quality=90)
                images.append(f"{image_id} {rel}")
                labels.append(f"{image_id} {c}")
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "classes.txt").write_text(
        "\n".join(f"{c} {c:03d}.Bird_{c}" for c in range(1, 201)) + "\n"
    )
    return root


def part_pytest_gpu(ctx: Context) -> tuple[dict[str, Any], str]:
    timeout = max(30.0, min(300.0, ctx.remaining()))
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    tail = (done.stdout + done.stderr)[-4000:]
    counts = {
        key: int(num)
        for num, key in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)", tail)
    }
    result = {
        "returncode": done.returncode,
        "counts": counts,
        "output_tail": tail,
        "command": " ".join(command),
    }
    if done.returncode not in (0, 5):  # 5: no test collected
        raise AssertionError(f"pytest -m gpu failed ({counts}):\n{tail[-1500:]}")
    return result, ", ".join(f"{v} {k}" for k, v in counts.items()) or "no tests"


PART_FUNCS: dict[str, Callable[[Context], tuple[dict[str, Any], str]]] = {
    "doctor": part_doctor,
    "augment_match": part_augment_match,
    "bench_train": part_bench_train,
    "bench_data": part_bench_data,
    "bench_eval_sop": part_bench_eval_sop,
    "paper_run": part_paper_run,
    "pytest_gpu": part_pytest_gpu,
    "bench_eval_1m": part_bench_eval_1m,
}


# ------------------------------------------------------------------------------------ running


def run(
    *,
    out: str | Path = "results/gpu_check.json",
    device: str = "auto",
    quick: bool = False,
    budget_s: float = 540.0,
    only: str | None = None,
    results_dir: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    from nirbench.harness.bench.eval import machine_description
    from nirbench.harness.train.engine import resolve_device
    from nirbench.harness.tracking.store import git_state

    say = progress or (lambda message: None)
    dev = resolve_device(device)
    names = [p.strip() for p in only.split(",")] if only else list(PARTS)
    unknown = [n for n in names if n not in PART_FUNCS]
    if unknown:
        raise ValueError(f"unknown parts {unknown}; valid: {', '.join(PARTS)}")
    out_path = Path(out)
    scratch = Path(tempfile.mkdtemp(prefix="nirbench-gpu-check-"))
    results = Path(results_dir or os.environ.get("NIRBENCH_RESULTS") or "results")
    ctx = Context(dev, quick, results, scratch)
    started = time.perf_counter()
    ctx.deadline = started + budget_s
    sha, dirty = git_state()
    report: dict[str, Any] = {
        "device": dev.type,
        "quick": quick,
        "budget_s": budget_s,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_sha": sha,
        "git_dirty": dirty,
        "machine": machine_description(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "out": str(out_path),
        "parts": {},
    }
    try:
        for name in names:
            if ctx.remaining() <= 0:
                report["parts"][name] = {
                    "status": "skipped",
                    "seconds": 0.0,
                    "summary": f"time budget of {budget_s:.0f} s spent",
                }
                continue
            say(f"{name} ...")
            t0 = time.perf_counter()
            try:
                result, summary = PART_FUNCS[name](ctx)
                part = {"status": "ok", "summary": summary, "result": result}
            except Exception as err:  # noqa: BLE001 - record it and go on with the next part
                part = {
                    "status": "error",
                    "error": f"{type(err).__name__}: {err}"[:2000],
                    "traceback": traceback.format_exc()[-4000:],
                }
            part["seconds"] = time.perf_counter() - t0
            say(
                f"{name}: {part['status']} in {part['seconds']:.1f} s  "
                f"{part.get('summary', part.get('error', ''))[:200]}"
            )
            report["parts"][name] = part
            report["total_s"] = time.perf_counter() - started
            _write(out_path, report)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report["total_s"] = time.perf_counter() - started
    _write(out_path, report)
    return report


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    os.replace(tmp, path)
