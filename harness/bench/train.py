"""``nirbench bench train``: end-to-end training throughput against the bare model, measured in
the same run.

- e2e: images per second of ``harness.train.engine.train_one_epoch`` itself, the function every run
  trains with: class-balanced batches from the cached data (a ``CachedImageSplit`` over the
  memory-mapped uint8 cache of generated photographs), the batched augmentation, forward, method
  loss, NIR, the finite-loss check, backward, the optimizer step and the per-step loss logging.
  The cache is built before timing (a run builds it once).
- model: the same model object's forward + backward on a random tensor of the batch's shape,
  in the same precision (bf16 autocast or fp32) and memory format: what the network itself costs.
- ratio = e2e_ips / model_ips. Target: >= 0.9, i.e. the harness adds at most 10% to the model.
  On a CPU shared with other jobs their load moves the wall-clock rates of one variant by a
  factor of several between rounds (every round is in the JSON): read single ratios there with
  care. (Images per CPU-second of this process were tried and tracked the wall ratio closely:
  torch's worker threads burn CPU time while they wait, so they are no steadier.)

Every variant of NIR on/off x fp32/bf16 x channels_last on/off is measured per backbone. Rounds
alternate e2e and model after a warm-up (cudnn autotuning, allocator, page cache); the best round
of each is reported, so a burst of other work on a shared machine does not decide the ratio.

Settings: on a GPU the paper's ResNet50, batch 90 (45 classes x 2) at 224 px, cudnn benchmark on;
on a CPU the small CNN and ResNet18 at 32 px, batch 32 (224 px ResNets are not a CPU workload;
16 variants must fit in about two minutes on 2 cores), with a cache whose shorter side is scaled
like the paper's 256 / 224.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

GPU_SETTING = {
    "backbones": ("resnet50",),
    "batch": 90,
    "image_px": 224,
    "steps": 10,
    "rounds": 3,
    "source_wh": (500, 375),
}
CPU_SETTING = {
    "backbones": ("small_cnn", "resnet18"),
    "batch": 32,
    "image_px": 32,
    "steps": 4,
    "rounds": 3,
    "source_wh": (120, 90),
}
QUICK_SETTING = {
    "backbones": ("small_cnn",),
    "batch": 8,
    "image_px": 32,
    "steps": 2,
    "rounds": 1,
    "source_wh": (48, 40),
}
TARGET_RATIO = 0.9


def run(
    *,
    device: str = "auto",
    backbones: tuple[str, ...] | None = None,
    batch: int | None = None,
    image_px: int | None = None,
    steps: int | None = None,
    rounds: int | None = None,
    nir: tuple[bool, ...] = (False, True),
    precisions: tuple[str, ...] = ("fp32", "bf16"),
    channels_last: tuple[bool, ...] = (False, True),
    quick: bool = False,
    seed: int = 0,
    threads: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    from nirbench.harness.bench.eval import _load_average, machine_description
    from nirbench.harness.train.engine import resolve_device

    say = progress or (lambda message: None)
    if threads > 0:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    setting = dict(QUICK_SETTING if quick else GPU_SETTING if dev.type == "cuda" else CPU_SETTING)
    for key, value in (
        ("backbones", backbones),
        ("batch", batch),
        ("image_px", image_px),
        ("steps", steps),
        ("rounds", rounds),
    ):
        if value is not None:
            setting[key] = value
    if setting["batch"] < 4 or setting["batch"] % 2:
        raise ValueError(
            f"batch must be even and >= 4 (2 images per class), got {setting['batch']}"
        )
    if setting["steps"] < 1 or setting["rounds"] < 1:
        raise ValueError("steps and rounds must be >= 1")
    scratch = Path(tempfile.mkdtemp(prefix="nirbench-bench-train-"))
    out: dict[str, Any] = {
        "device": dev.type,
        **{k: v for k, v in setting.items() if k != "source_wh"},
        "target_ratio": TARGET_RATIO,
        "load_average_before": _load_average(),
    }
    try:
        say(f"generating and caching {setting['steps'] * setting['batch']} images")
        split, cache_s = _cached_split(scratch, setting, seed)
        out["cache_build_s"] = cache_s
        variants = []
        for backbone, use_nir, precision, cl in itertools.product(
            setting["backbones"], nir, precisions, channels_last
        ):
            label = (
                f"{backbone} {'nir' if use_nir else 'baseline'} {precision} "
                f"{'channels_last' if cl else 'contiguous'}"
            )
            say(label)
            row = {
                "backbone": backbone,
                "nir": use_nir,
                "precision": precision,
                "channels_last": cl,
            }
            try:
                row.update(_measure(split, setting, dev, backbone, use_nir, precision, cl, seed))
            except Exception as err:  # noqa: BLE001 - e.g. bf16 unsupported: record, go on
                row["error"] = f"{type(err).__name__}: {err}"
            variants.append(row)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    measured = [v for v in variants if "ratio" in v]
    out["variants"] = variants
    out["ratio_min"] = min((v["ratio"] for v in measured), default=None)
    out["meets_target"] = bool(measured) and all(v["ratio"] >= TARGET_RATIO for v in measured)
    out["threads"] = torch.get_num_threads()
    out["load_average_after"] = _load_average()  # other work on the machine skews every timing
    out["machine"] = machine_description()
    return out


def _cached_split(scratch: Path, setting: dict[str, Any], seed: int):
    """A CachedImageSplit of steps x batch generated photographs in batch / 2 classes, so one
    epoch of the class-balanced sampler is exactly ``steps`` batches."""
    from nirbench.harness.bench.data import generate_jpegs
    from nirbench.harness.data.real.cache import open_or_build
    from nirbench.harness.data.real.split import CachedImageSplit

    n = setting["steps"] * setting["batch"]
    classes = setting["batch"] // 2
    files = generate_jpegs(
        scratch / "images", images=n, classes=classes, size=tuple(setting["source_wh"]), seed=seed
    )
    rel = [f.relative_to(scratch / "images").as_posix() for f in files]
    short_side = round(setting["image_px"] * 256 / 224)
    started = time.perf_counter()
    store, _ = open_or_build(
        "bench-train",
        "generated",
        scratch / "images",
        rel,
        scratch / "cache",
        short_side=short_side,
        progress=False,
    )
    labels = torch.tensor([int(Path(r).parent.name.split("_")[1]) for r in rel])
    return (
        CachedImageSplit(store, np.arange(n), labels, crop=setting["image_px"]),
        time.perf_counter() - started,
    )


def _measure(
    split,
    setting: dict[str, Any],
    dev: torch.device,
    backbone: str,
    use_nir: bool,
    precision: str,
    channels_last: bool,
    seed: int,
) -> dict[str, Any]:
    from nirbench.harness.config import load_config
    from nirbench.harness.data.sampler import ClassBalancedBatchSampler
    from nirbench.harness.train.engine import build_trainer, train_one_epoch

    batch, steps = setting["batch"], setting["steps"]
    cfg = load_config(
        None,
        [
            f"backbone.name={backbone}",
            "backbone.pretrained=false",
            f"backbone.freeze_bn={str(backbone != 'small_cnn').lower()}",
            f"train.batch_size={batch}",
            "train.samples_per_class=2",
            "train.warmup_epochs=0",
            "train.epochs=1000",
            f"train.precision={precision}",
            f"train.channels_last={str(channels_last).lower()}",
            f"train.cudnn_benchmark={str(dev.type == 'cuda').lower()}",
            f"train.device={dev.type}",
            f"seed={seed}",
            "regularizer=" + ("nir" if use_nir else "null"),
        ],
    )
    bundle = type("Bundle", (), {"train": split})()
    trainer = build_trainer(cfg, bundle, dev)
    sampler = ClassBalancedBatchSampler(split.labels, batch, 2, seed)
    if sampler.iterations_per_epoch != steps:  # one epoch must be exactly the timed steps
        raise RuntimeError(f"sampler gives {sampler.iterations_per_epoch} batches, not {steps}")

    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (
        torch.randn(
            batch,
            3,
            setting["image_px"],
            setting["image_px"],
            generator=torch.Generator().manual_seed(seed),
        )
        .to(dev)
        .contiguous(memory_format=fmt)
    )
    model = trainer.model

    def model_work() -> None:
        model.train()
        for _ in range(steps):
            model.zero_grad(set_to_none=True)
            with autocast:
                out = model(x)
            out.float().sum().backward()

    epoch = iter(range(10**6))

    def e2e_work() -> None:
        train_one_epoch(trainer, split, sampler, next(epoch))

    def timed(work: Callable[[], None]) -> float:
        """Images per second of one round of ``work``."""
        _sync(dev)
        started = time.perf_counter()
        work()
        _sync(dev)
        return steps * batch / (time.perf_counter() - started)

    timed(e2e_work), timed(model_work)  # warm-up: autotuning, allocator, page cache
    e2e, bare = [], []
    for _ in range(setting["rounds"]):
        e2e.append(timed(e2e_work))
        bare.append(timed(model_work))
    return {
        "e2e_ips": max(e2e),
        "model_ips": max(bare),
        "ratio": max(e2e) / max(bare),
        "e2e_round_ips": e2e,
        "model_round_ips": bare,
    }


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
