"""Where one epoch of the embedded protocol goes, phase by phase (``nirbench bench protocol``).

For a dataset it builds the default grid's ProxyAnchor baseline and its NIR arm exactly as a grid
worker does (harness/train/engine.build_trainer, one torch thread by default) and runs one
training epoch of each (the first epoch whose backbone trains) with the same steps as
``train_one_epoch``, timing each phase of each step:

* ``data``: drawing the batch's images and augmenting them (``ImageSplit.train_batch``);
* ``forward``: the backbone and the embedding head;
* ``objective``: the method loss (and, in the NIR arm, the NIR term with its flow);
* ``backward`` and ``optimizer`` (zero_grad + Adam step);

then one evaluation split into ``embed`` (the test split through the network) and ``knn`` (the
retrieval metrics from the embeddings: the kNN pass and what is read off it). ``nir_flow`` is
what the NIR arm costs on top of the baseline, phase by phase (objective, backward, optimizer:
the flow's forward, its gradients and its 1.4 M parameters' Adam update), measured in the same
run. The sum of the timed phases is within a few percent of the epoch's wall time (Python
bookkeeping is the rest); ``shares`` gives each phase's part of the NIR arm's epoch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

TRAIN_PHASES = ("data", "forward", "objective", "backward", "optimizer")


def split_epoch(cfg: Any, cache_dir: Path) -> dict[str, float]:
    """One training epoch of ``cfg`` on the CPU, timed phase by phase (seconds per epoch)."""
    from nirbench.harness.data import load_dataset
    from nirbench.harness.data.sampler import ClassBalancedBatchSampler
    from nirbench.harness.train.engine import build_trainer, epoch_generator

    # Pretrained weights change no cost: time the same network built from scratch.
    cfg = cfg.model_copy(
        update={"backbone": cfg.backbone.model_copy(update={"pretrained": False, "weights": None})}
    )
    bundle = load_dataset(cfg.dataset.name, cfg.dataset.root, cache_dir)
    trainer = build_trainer(cfg, bundle, torch.device("cpu"))
    sampler = ClassBalancedBatchSampler(
        bundle.train.labels, cfg.train.batch_size, cfg.train.samples_per_class, cfg.seed
    )
    epoch = cfg.train.warmup_epochs
    trainer.model.set_body_trainable(True)
    trainer.model.train()
    trainer.objective.train()
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    aug_gen = epoch_generator(cfg.seed, epoch, stream=1)
    spent = dict.fromkeys(TRAIN_PHASES, 0.0)
    started = time.perf_counter()
    for idx in sampler.batches(epoch):
        t0 = time.perf_counter()
        images = bundle.train.train_batch(idx, trainer.device, aug_gen)
        images = images.contiguous(memory_format=memory_format)
        labels = bundle.train.labels[idx]
        t1 = time.perf_counter()
        embeddings = trainer.model(images)
        t2 = time.perf_counter()
        total = trainer.objective(embeddings.float(), labels)["loss/total"]
        t3 = time.perf_counter()
        trainer.optimizer.zero_grad(set_to_none=True)
        total.backward()
        t4 = time.perf_counter()
        trainer.optimizer.step()
        t5 = time.perf_counter()
        for phase, (a, b) in zip(TRAIN_PHASES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5))):
            spent[phase] += b - a
    spent["epoch"] = time.perf_counter() - started
    spent.update(_split_evaluation(trainer, bundle.test))
    spent["steps"] = sampler.iterations_per_epoch
    return spent


def _split_evaluation(trainer: Any, split: Any) -> dict[str, float]:
    from nirbench.harness.evaluation.metrics import SHALLOW_RANKING_METRICS, retrieval_metrics
    from nirbench.harness.train.engine import embed

    cfg = trainer.cfg
    started = time.perf_counter()
    embeddings = embed(
        trainer.model,
        split,
        trainer.device,
        cfg.eval.batch_size,
        cfg.train.precision,
        cfg.train.channels_last,
    )
    embedded = time.perf_counter()
    recall_at = tuple(k for k in cfg.recall_at if k <= len(split) - 1)
    retrieval_metrics(embeddings, split.labels.numpy(), recall_at, include=SHALLOW_RANKING_METRICS)
    return {"embed": embedded - started, "knn": time.perf_counter() - embedded}


def run(baseline_cfg: Any, cache_dir: Path) -> dict[str, Any]:
    """The baseline ``baseline_cfg`` (a default-grid cell: bench.protocol.protocol_config) and
    its NIR arm, phase by phase."""
    from nirbench.harness.config import build_config, set_dotted

    raw = baseline_cfg.to_dict()
    set_dotted(raw, "regularizer", {"name": "nir"})
    nir_cfg = build_config(raw)
    baseline = split_epoch(baseline_cfg, cache_dir)
    nir = split_epoch(nir_cfg, cache_dir)
    flow = {phase: nir[phase] - baseline[phase] for phase in ("objective", "backward", "optimizer")}
    timed = [*TRAIN_PHASES, "embed", "knn"]
    whole = sum(nir[p] for p in timed)
    return {
        "baseline": baseline,
        "nir": nir,
        "nir_flow": {**flow, "total": sum(flow.values())},
        "shares_nir_arm": {p: nir[p] / whole for p in timed},
    }
