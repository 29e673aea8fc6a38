"""``nirbench bench protocol``: where an embedded run's time goes, before and after the converged
protocol, measured in one process.

For each embedded dataset it builds the ProxyAnchor baseline twice, as a grid worker would on a
2-core machine (one torch thread):

* ``before``: the old default's step and evaluation: the 32 px images at full size, NCHW, Adam
  tensor by tensor, every metric, NMI and the structure metrics after every epoch in batches of
  512 (what ``BEFORE_OVERRIDES`` sets back). Not in it: the old synth-sop had twice the classes
  (2000, dataset version 1), so its epochs were twice as long again;
* ``after``: the configuration the default grid (``harness/configs/grids/default.yaml``) runs now
  for that dataset (evaluation every ``eval.every`` epochs and after the last; every metric on
  the last only, the curve metrics on the others: ``eval.full_every``).

The larger saving is not per epoch: pretrained, a run reaches its plateau in 12-16 epochs instead
of the hundreds a from-scratch small CNN needs (README, "The embedded protocol").

and times one training epoch (after the warmup, so the backbone trains), one full evaluation
(``eval_s``) and one of the curve metrics only (``curve_eval_s``) of each. ``epoch_s`` is the
training epoch plus the evaluations of a run at that budget amortised over its epochs, the cost
of one epoch of a run; ``ratio_epoch`` = before / after. ``run_s`` multiplies it by the epochs of
the default grid (an estimate: no start-up, tracking or checkpoints). One epoch is one sample, so
the numbers wobble by a few percent; the load average says how busy the machine was.

``phases`` (unless ``--no-phases``) splits one protocol epoch of the baseline and the NIR arm into
data, forward, objective, backward, optimizer, the NIR flow's extra cost, embedding and kNN
(harness/bench/phases.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

BEFORE_OVERRIDES = {
    "backbone.width": 1.0,
    "backbone.input_px": None,
    "backbone.pretrained": False,
    "backbone.weights": None,
    "train.channels_last": False,
    "train.fused_optimizer": False,
    "eval.every": 1,
    "eval.full_every": 1,
    "eval.batch_size": 512,
    "eval.nmi": True,
    "eval.structure": True,
}
DEFAULT_GRID = Path(__file__).resolve().parents[1] / "configs" / "grids" / "default.yaml"
DATASETS = ("synth-cub", "synth-cars", "synth-sop")


def protocol_config(dataset: str, method: str = "proxy_anchor") -> Any:
    """The default grid's baseline configuration of ``method`` on ``dataset`` (seed 0)."""
    from nirbench.harness.grid.plan import load_grid

    plan = load_grid(DEFAULT_GRID)
    for cfg in plan.configs:
        if (cfg.dataset.name, cfg.method.name, cfg.regularizer, cfg.seed) == (
            dataset,
            method,
            None,
            0,
        ):
            return cfg
    raise ValueError(f"the default grid has no {method} baseline on {dataset} with seed 0")


def old_default_config(cfg: Any) -> Any:
    """``cfg`` with the old default's step and evaluation settings (``BEFORE_OVERRIDES``)."""
    from nirbench.harness.config import build_config, set_dotted

    raw = cfg.to_dict()
    for key, value in BEFORE_OVERRIDES.items():
        set_dotted(raw, key, value)
    return build_config(raw)


def time_epoch(cfg: Any, cache_dir: Path) -> dict[str, float]:
    """One training epoch and one evaluation of ``cfg`` on the CPU, in seconds. Pretrained
    weights change no cost, so the timing builds the same network from scratch (and never waits
    for a pretraining)."""
    from nirbench.harness.data import load_dataset
    from nirbench.harness.data.sampler import ClassBalancedBatchSampler
    from nirbench.harness.evaluation.cadence import is_eval_epoch, is_full_eval_epoch
    from nirbench.harness.train.engine import build_trainer, evaluate, train_one_epoch

    cfg = cfg.model_copy(
        update={"backbone": cfg.backbone.model_copy(update={"pretrained": False, "weights": None})}
    )
    bundle = load_dataset(cfg.dataset.name, cfg.dataset.root, cache_dir)
    trainer = build_trainer(cfg, bundle, torch.device("cpu"))
    sampler = ClassBalancedBatchSampler(
        bundle.train.labels, cfg.train.batch_size, cfg.train.samples_per_class, cfg.seed
    )
    epoch = cfg.train.warmup_epochs  # the first epoch whose backbone trains
    started = time.perf_counter()
    train_one_epoch(trainer, bundle.train, sampler, epoch)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    evaluate(trainer, bundle.test)
    eval_s = time.perf_counter() - started
    started = time.perf_counter()
    evaluate(trainer, bundle.test, full=False)
    curve_eval_s = time.perf_counter() - started
    epochs = range(1, cfg.train.epochs + 1)
    evaluated = [e for e in epochs if is_eval_epoch(e, cfg)]
    full = sum(is_full_eval_epoch(e, cfg) for e in evaluated)
    eval_per_epoch = (full * eval_s + (len(evaluated) - full) * curve_eval_s) / len(epochs)
    return {
        "train_epoch_s": train_s,
        "eval_s": eval_s,
        "curve_eval_s": curve_eval_s,
        "eval_every": cfg.eval.every,
        "eval_full_every": cfg.eval.full_every,
        "epoch_s": train_s + eval_per_epoch,
        "steps": sampler.iterations_per_epoch,
        "width": cfg.backbone.width,
    }


def run(
    datasets: tuple[str, ...] = DATASETS,
    *,
    threads: int = 1,
    cache_dir: Path = Path("results/cache/data"),
    phases: bool = True,
) -> dict[str, Any]:
    from nirbench.harness.bench import phases as bench_phases

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out: dict[str, Any] = {"threads": threads, "load_average_before": os.getloadavg()[0]}
        for dataset in datasets:
            after_cfg = protocol_config(dataset)
            before_cfg = old_default_config(after_cfg)
            before = time_epoch(before_cfg, cache_dir)
            after = time_epoch(after_cfg, cache_dir)
            out[dataset] = {
                "before": before,
                "after": after,
                "ratio_epoch": before["epoch_s"] / after["epoch_s"],
                "epochs": after_cfg.train.epochs,
                "run_s": after["epoch_s"] * after_cfg.train.epochs,
            }
            if phases:  # the protocol's epoch split into its parts (harness/bench/phases.py)
                out[dataset]["phases"] = bench_phases.run(after_cfg, cache_dir)
        out["load_average_after"] = os.getloadavg()[0]
        return out
    finally:
        torch.set_num_threads(previous)
