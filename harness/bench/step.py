"""``nirbench bench step``: what NIR costs per training step.

Same method (proxy_anchor, its registered defaults), same backbone, same batch and the same
optimizer as a real run (``harness.train.engine.build_trainer``: Adam with the loss-owned learning-rate
multipliers), with ``regularizer: null`` versus ``regularizer: nir`` (NIR's registered defaults).
One step = forward + objective + backward + optimizer step on a fixed random batch (the data
pipeline is identical in both arms and left out). The arms alternate in rounds after a warm-up;
the reported time is the median step.

Default setting per device: on a CUDA machine the paper's ResNet50, batch 90 at 224 px; on a CPU
the ``small_cnn`` backbone, batch 64 at 32 px (ResNet50 at 224 px is not a CPU workload). The JSON
says which ran (``device``, ``backbone``, ``batch``, ``image_px``) and whether a GPU was measured
(``gpu_measured``).
"""

from __future__ import annotations

import statistics
import time
from types import SimpleNamespace
from typing import Any, Callable

import torch

GPU_SETTING = {"backbone": "resnet50", "batch": 90, "image_px": 224}
CPU_SETTING = {"backbone": "small_cnn", "batch": 64, "image_px": 32}


def run(
    *,
    device: str = "auto",
    backbone: str | None = None,
    batch: int | None = None,
    image_px: int | None = None,
    classes: int = 100,
    steps: int = 20,
    warmup: int = 3,
    rounds: int = 4,
    threads: int = 0,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    from nirbench.harness.train.engine import resolve_device

    say = progress or (lambda message: None)
    if threads > 0:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    setting = dict(GPU_SETTING if dev.type == "cuda" else CPU_SETTING)
    setting.update(
        {
            k: v
            for k, v in (("backbone", backbone), ("batch", batch), ("image_px", image_px))
            if v is not None
        }
    )
    if setting["batch"] < 2 or setting["batch"] % 2:
        raise ValueError(
            f"batch must be even and >= 2 (2 samples per class), got {setting['batch']}"
        )

    g = torch.Generator().manual_seed(seed)
    images = torch.randn(setting["batch"], 3, setting["image_px"], setting["image_px"], generator=g)
    labels = torch.arange(setting["batch"]) // 2 % classes
    images, labels = images.to(dev), labels.to(dev)

    load_before = _load_average()
    arms = {
        name: _make_step(name, setting, classes, seed, dev, images, labels)
        for name in ("baseline", "nir")
    }
    for name, step in arms.items():
        say(f"warm-up {name} ({warmup} steps)")
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in arms}
    per_round = max(1, -(-steps // max(1, rounds)))
    while min(len(t) for t in times.values()) < steps:
        for name, step in arms.items():
            for _ in range(per_round):
                if len(times[name]) < steps:
                    times[name].append(_timed_step(step, dev))
    say("done")
    baseline, nir = statistics.median(times["baseline"]), statistics.median(times["nir"])
    return {
        "step_s_baseline": baseline,
        "step_s_nir": nir,
        "ratio_nir_vs_baseline": nir / baseline,
        "device": dev.type,
        "backbone": setting["backbone"],
        "batch": setting["batch"],
        "image_px": setting["image_px"],
        "method": "proxy_anchor",
        "classes": classes,
        "steps": steps,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
        "gpu_measured": dev.type == "cuda",
        "gpu_setting": GPU_SETTING,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "load_average_before": load_before,
        "load_average_after": _load_average(),  # other work on the machine skews step times
    }


def _make_step(
    arm: str,
    setting: dict[str, Any],
    classes: int,
    seed: int,
    dev: torch.device,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> Callable[[], None]:
    from nirbench.harness.config import load_config
    from nirbench.harness.train.engine import build_trainer

    overrides = [
        f"backbone.name={setting['backbone']}",
        "backbone.pretrained=false",
        f"train.batch_size={setting['batch']}",
        "train.samples_per_class=2",
        f"seed={seed}",
        "regularizer=" + ("nir" if arm == "nir" else "null"),
    ]
    cfg = load_config(None, overrides)
    bundle = SimpleNamespace(train=SimpleNamespace(num_classes=classes))
    trainer = build_trainer(cfg, bundle, dev)
    trainer.model.train()
    trainer.objective.train()

    def step() -> None:
        terms = trainer.objective(trainer.model(images), labels)
        trainer.optimizer.zero_grad(set_to_none=True)
        terms["loss/total"].backward()
        trainer.optimizer.step()

    return step


def _timed_step(step: Callable[[], None], dev: torch.device) -> float:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    started = time.perf_counter()
    step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - started


def _load_average() -> float | None:
    from nirbench.harness.bench.eval import _load_average as load_average

    return load_average()


def _cpu_name() -> str:
    from nirbench.harness.bench.eval import machine_description

    return machine_description()
