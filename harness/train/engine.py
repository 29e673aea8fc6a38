"""Training and evaluation: ``fit`` -> ``train_one_epoch`` / ``evaluate``.

No ``if method == ...`` anywhere: the objective hides the method and the regularizer. The engine
knows nothing about MLflow either; it reports each finished epoch to a callback.

Fair arms: the backbone, the method's proxies and then the regularizer are built in that order
right after seeding, and batches and augmentations are drawn from generators seeded by
(seed, epoch) alone, so a run with NIR sees exactly the data and initial weights of the run without.

After each epoch the objective may probe one fixed batch (``Objective.probe_diagnostics``, e.g.
``nir/grad_share``); harness/train/diagnostics.py runs it without side effects on the run.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nirbench.harness.config import RunConfig
from nirbench.harness.data.base import DatasetBundle, ImageSplit
from nirbench.harness.data.sampler import ClassBalancedBatchSampler
from nirbench.harness.evaluation.cadence import is_eval_epoch, is_full_eval_epoch
from nirbench.harness.evaluation.clustering import resolve_kmeans_engine
from nirbench.harness.evaluation.metrics import (
    SHALLOW_RANKING_METRICS,
    compute_metrics,
    retrieval_metrics,
)
from nirbench.harness.evaluation.structure import structure_metrics
from nirbench.harness.train.diagnostics import (
    PROBE_AUGMENT_STREAM,
    PROBE_EPOCH,
    probe_batch,
    run_probe,
)
from nirbench.harness.train.models import EmbeddingModel, build_model
from nirbench.harness.train.objective import Objective, build_objective

log = logging.getLogger(__name__)


class TrainingDiverged(FloatingPointError):
    """A non-finite loss. The run fails loudly; a skipped step would bias the comparison."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "train.device=cuda but no CUDA device is visible; use train.device=cpu or auto"
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def data_seed(cfg: RunConfig) -> int:
    """The seed of the batch order and augmentation: ``train.data_seed``, else the run seed. The
    initial weights always follow the run seed, so a run with another data seed differs from its
    twin in the data order alone (bench variance's data-order part)."""
    return cfg.seed if cfg.train.data_seed is None else cfg.train.data_seed


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A generator that depends only on (seed, epoch, stream): resumable and identical across arms."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch * 7919 + stream) % (2**63))
    return g


@dataclass
class Trainer:
    """Everything that changes during training, and so everything a checkpoint must hold."""

    cfg: RunConfig
    model: EmbeddingModel
    objective: Objective
    optimizer: torch.optim.Optimizer
    device: torch.device
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # stepped once per epoch
    epoch: int = 0  # number of finished epochs
    history: list[dict[str, float]] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "history": self.history,
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
            "config": self.cfg.to_dict(),
            "config_hash": self.cfg.config_hash,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config_hash"] != self.cfg.config_hash:
            raise ValueError(
                f"checkpoint belongs to config {state['config_hash']}, not {self.cfg.config_hash}"
            )
        self.epoch = state["epoch"]
        self.history = state["history"]
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)  # atomic: a kill mid-write never corrupts the last good checkpoint


def build_trainer(
    cfg: RunConfig, bundle: DatasetBundle, device: torch.device, weights_file: Path | None = None
) -> Trainer:
    """``weights_file``: the pretrained small_cnn body (``pretrain.ensure_weights``), if any."""
    seed_everything(cfg.seed)
    # Autotuned cudnn kernels are faster but not bitwise reproducible; off unless asked for.
    torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
    model = build_model(
        cfg.backbone.name,
        cfg.backbone.embed_dim,
        cfg.backbone.pretrained,
        cfg.backbone.freeze_bn,
        cfg.backbone.pooling,
        cfg.backbone.width,
        weights_file,
        cfg.backbone.input_px,
    ).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    objective = build_objective(
        cfg.method.name,
        cfg.method.params,
        cfg.regularizer.name if cfg.regularizer else None,
        cfg.regularizer.params if cfg.regularizer else {},
        num_classes=bundle.train.num_classes,
        embed_dim=cfg.backbone.embed_dim,
    ).to(device)
    # foreach: one multi-tensor update instead of a Python loop per tensor (CUDA's default),
    # bitwise the same parameters (tests/test_training_options.py). fused (train.fused_optimizer):
    # one vectorised kernel per tensor, several times faster on a CPU, not bitwise the same.
    fused = cfg.train.fused_optimizer
    optimizer = torch.optim.Adam(
        param_groups(
            model, objective, cfg.train.lr, cfg.train.weight_decay, cfg.train.proxy_lr_mult
        ),
        foreach=None if fused else True,
        fused=fused or None,
    )
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    if cfg.train.lr_milestones:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(cfg.train.lr_milestones), gamma=cfg.train.lr_gamma
        )
    elif cfg.train.lr_schedule == "cosine":
        warmup, total = cfg.train.warmup_epochs, cfg.train.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: cosine_factor(epoch, warmup, total)
        )
    return Trainer(cfg, model, objective, optimizer, device, scheduler)


def cosine_factor(epoch: int, warmup: int, total: int) -> float:
    """The lr factor of 0-based ``epoch``: 1 during the warmup, then a half cosine over the
    remaining epochs (the last epoch trains at a small positive lr, never 0)."""
    if epoch < warmup:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / (total - warmup)))


PROXY_GROUPS = ("proxies", "nir_proxies")  # the names methods/NIR give their proxy tables


def param_groups(
    model: EmbeddingModel,
    objective: Objective,
    lr: float,
    weight_decay: float,
    proxy_lr_mult: float | None = None,
) -> list[dict[str, Any]]:
    """Backbone and head decay; loss-owned parameters get their own lr multiplier, no decay.
    ``proxy_lr_mult`` (train.proxy_lr_mult) replaces the multiplier of every proxy group."""
    groups = [
        {
            "name": "body",
            "params": list(model.body.parameters()),
            "lr": lr,
            "weight_decay": weight_decay,
        },
        {
            "name": "head",
            "params": list(model.head.parameters()),
            "lr": lr,
            "weight_decay": weight_decay,
        },
    ]
    for group in objective.param_groups():
        mult = group["lr_mult"]
        if proxy_lr_mult is not None and group.get("name") in PROXY_GROUPS:
            mult = proxy_lr_mult
        groups.append(
            {
                "name": group.get("name", "loss"),
                "params": list(group["params"]),
                "lr": lr * mult,
                "weight_decay": 0.0,
            }
        )
    owned = {id(p) for g in groups for p in g["params"]}
    stray = [n for n, p in objective.named_parameters() if p.requires_grad and id(p) not in owned]
    if stray:  # a parameter no group covers would silently never train
        raise RuntimeError(f"objective parameters not in any optimizer group: {stray}")
    return groups


def train_one_epoch(
    trainer: Trainer,
    split: ImageSplit,
    sampler: ClassBalancedBatchSampler,
    epoch: int,
    progress: bool = False,
    lagged: bool | None = None,
) -> dict[str, float]:
    """One pass of ``sampler.iterations_per_epoch`` batches; returns mean loss terms.
    ``lagged``: check and record each step's loss one step late (default: on CUDA only)."""
    cfg, model, objective = trainer.cfg, trainer.model, trainer.objective
    warmup = epoch < cfg.train.warmup_epochs
    model.set_body_trainable(not warmup)
    model.train()
    objective.train()
    aug_gen = epoch_generator(data_seed(cfg), epoch, stream=1)
    sums: dict[str, float] = {}
    batches = sampler.batches(epoch)
    bar = _progress(batches, f"epoch {epoch + 1}/{cfg.train.epochs}", progress)
    autocast = torch.autocast(
        trainer.device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16"
    )
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    # On CUDA the finite check and the loss bookkeeping read each step's values one step late,
    # so the CPU never waits for the GPU inside an epoch and prepares the next batch while the GPU
    # computes (nirbench bench train measures the difference). The error still names the step
    # whose loss was not finite; its optimizer update has been applied by then, but the run fails
    # before this epoch's checkpoint is written. On the CPU nothing runs ahead: checked at once.
    if lagged is None:
        lagged = trainer.device.type == "cuda"
    pending: tuple[int, dict[str, torch.Tensor]] | None = None
    for step, idx in enumerate(bar):
        images = split.train_batch(idx, trainer.device, aug_gen)
        images = images.contiguous(memory_format=memory_format)
        labels = split.labels[idx].to(trainer.device)
        try:
            with autocast:  # only the backbone runs in bf16: losses and the flow get fp32
                embeddings = model(images)
            terms = objective(embeddings.float(), labels)
        except FloatingPointError as err:
            if pending is not None:  # a non-finite previous step is the cause: name it first
                _account(*pending, epoch, sums)
            raise TrainingDiverged(f"epoch {epoch + 1}, step {step + 1}: {err}") from err
        total = terms["loss/total"]
        detached = {k: v.detach() for k, v in terms.items()}
        if lagged:
            if pending is not None:
                _account(*pending, epoch, sums)
            pending = (step, detached)
        else:
            _account(step, detached, epoch, sums)
        trainer.optimizer.zero_grad(set_to_none=True)
        total.backward()
        trainer.optimizer.step()
        if progress and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{float(total.detach()):.4f}")
    if pending is not None:
        _account(*pending, epoch, sums)
    model.set_body_trainable(True)
    return {key: value / len(batches) for key, value in sums.items()}


def _account(step: int, terms: dict[str, torch.Tensor], epoch: int, sums: dict[str, float]) -> None:
    """Fail on a non-finite total loss of ``step``, else add its loss terms to ``sums``."""
    if not torch.isfinite(terms["loss/total"]):
        values = {k: float(v) for k, v in terms.items()}
        raise TrainingDiverged(
            f"non-finite loss at epoch {epoch + 1}, step {step + 1}: "
            f"{values}; lower train.lr or the loss-owned lr multipliers"
        )
    for key, value in terms.items():
        sums[key] = sums.get(key, 0.0) + float(value)


@torch.no_grad()
def embed(
    model: EmbeddingModel,
    split: ImageSplit,
    device: torch.device,
    batch_size: int = 512,
    precision: str = "fp32",
    channels_last: bool = False,
) -> np.ndarray:
    """Embeddings of the whole split, float32, in order. With ``precision="bf16"`` the backbone
    runs under bf16 autocast as in training; ``channels_last`` feeds NHWC batches, as training
    does."""
    model.eval()
    out = []
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for start in range(0, len(split), batch_size):
        images = split.eval_batch(start, min(start + batch_size, len(split)), device)
        images = images.contiguous(memory_format=memory_format)
        if precision == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out.append(model(images).float().cpu())
        else:
            out.append(model(images).float().cpu())
    return torch.cat(out).numpy()


def evaluate(trainer: Trainer, split: ImageSplit, full: bool = True) -> dict[str, float]:
    """The test metrics of the model on ``split``: all of them when ``full``, else the curve
    metrics only (Recall@k, MAP@R, R-Precision; ``eval.full_every``)."""
    cfg = trainer.cfg
    embeddings = embed(
        trainer.model,
        split,
        trainer.device,
        cfg.eval.batch_size,
        cfg.train.precision,
        cfg.train.channels_last,
    )
    recall_at = tuple(k for k in cfg.recall_at if k <= len(split) - 1)
    labels = split.labels.numpy()
    if not full:
        return retrieval_metrics(embeddings, labels, recall_at, include=SHALLOW_RANKING_METRICS)
    metrics = compute_metrics(
        embeddings,
        labels,
        recall_at,
        nmi=cfg.eval.nmi,
        nmi_seed=cfg.seed,
        nmi_engine=resolve_kmeans_engine(cfg.eval.kmeans_engine, trainer.device.type),
    )
    if cfg.eval.structure:
        # The paper's structure analysis, per epoch. seed stays 0 so the (SOP-size) g2 subsample
        # is the same every epoch and in every run: the curves stay comparable.
        metrics.update(structure_metrics(embeddings, labels, seed=0))
    return metrics


EpochCallback = Callable[[int, dict[str, float]], None]


class RunPruned(Exception):
    """Raised by an ``on_epoch_end`` callback to end a run early on purpose (a search pruner
    judged it hopeless). Not a failure: the runner records the run as stopped early and
    re-raises, so the caller (e.g. Optuna, through a subclass that is also ``TrialPruned``)
    can record it as pruned."""

    def __init__(self, epoch: int, message: str = "") -> None:
        super().__init__(message or f"pruned after epoch {epoch}")
        self.epoch = epoch


def fit(
    trainer: Trainer,
    bundle: DatasetBundle,
    *,
    checkpoint_path: Path | None = None,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = False,
    eval_prefix: str = "test",
) -> dict[str, float]:
    """Train from ``trainer.epoch`` to ``cfg.train.epochs``; evaluate on ``bundle.test`` after
    every ``eval.every``-th epoch and the last (the convergence curve); after each evaluated epoch
    write the checkpoint, then report every epoch since the previous one to ``on_epoch_end``
    (in order). Returns the last epoch's record.

    ``eval_prefix`` names what ``bundle.test`` is: ``test`` (the benchmark's test classes) or
    ``val`` (held-out training classes, see harness/data/validation.py); metrics are recorded as
    ``<prefix>/<metric>``."""
    if eval_prefix not in ("test", "val"):
        raise ValueError(f"eval_prefix must be 'test' or 'val', got {eval_prefix!r}")
    cfg = trainer.cfg
    sampler = ClassBalancedBatchSampler(
        bundle.train.labels, cfg.train.batch_size, cfg.train.samples_per_class, data_seed(cfg)
    )
    pending: list[tuple[int, dict[str, float]]] = []  # epochs trained since the last checkpoint
    # The objective's per-epoch probe (NIR: nir/grad_share) on one fixed batch of the run seed;
    # harness/train/diagnostics.py says why it cannot change the run. None: nothing to probe.
    probe = (
        probe_batch(
            bundle.train,
            sampler,
            epoch_generator(cfg.seed, PROBE_EPOCH, PROBE_AUGMENT_STREAM),
            trainer.device,
        )
        if trainer.objective.wants_probe
        else None
    )
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    for epoch in range(trainer.epoch, cfg.train.epochs):
        started = time.perf_counter()
        lr_used = trainer.optimizer.param_groups[0]["lr"]
        terms = train_one_epoch(trainer, bundle.train, sampler, epoch, progress)
        if trainer.scheduler is not None:
            trainer.scheduler.step()
        train_s = time.perf_counter() - started
        if probe is not None:
            terms.update(
                run_probe(
                    trainer.model,
                    trainer.objective,
                    *probe,
                    device=trainer.device,
                    precision=cfg.train.precision,
                    memory_format=memory_format,
                )
            )
        metrics = (
            evaluate(trainer, bundle.test, full=is_full_eval_epoch(epoch + 1, cfg))
            if is_eval_epoch(epoch + 1, cfg)
            else {}
        )
        record = {
            **{f"{eval_prefix}/{k}": v for k, v in metrics.items()},
            **terms,
            "lr/body": lr_used,  # the backbone lr this epoch trained with (the schedule)
            "time/train_epoch_s": train_s,
            "time/eval_s": time.perf_counter() - started - train_s,
            "time/epoch_s": time.perf_counter() - started,
        }
        trainer.epoch = epoch + 1
        trainer.history.append(record)
        pending.append((trainer.epoch, record))
        if is_eval_epoch(trainer.epoch, cfg):
            # Durable first, then reported: whoever records the epochs (MLflow) never gets ahead
            # of the checkpoint a resume starts from, so a resumed run repeats no logged epoch.
            # Checkpointing at evaluated epochs only saves a checkpoint write per epoch.
            if checkpoint_path is not None:
                trainer.save(checkpoint_path)
            for done, done_record in pending:
                if on_epoch_end is not None:
                    on_epoch_end(done, done_record)
            pending.clear()
        evaluated = (
            f"{eval_prefix} R@1 {metrics['recall@1']:.4f}"
            if "recall@1" in metrics
            else f"not evaluated (eval.every={cfg.eval.every})"
        )
        log.info(
            "epoch %d/%d  loss %.4f  %s  (%.1fs)",
            trainer.epoch,
            cfg.train.epochs,
            terms["loss/total"],
            evaluated,
            record["time/epoch_s"],
        )
    return trainer.history[-1]


def _progress(items: list, desc: str, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False, dynamic_ncols=True)
