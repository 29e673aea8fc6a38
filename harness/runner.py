"""Run one configuration end to end: skip if finished, resume if interrupted, else train;
record everything in MLflow; a run that raises is marked FAILED with its error and re-raised
(a run a search pruner stops is marked KILLED with tag ``pruned=true``, not FAILED)."""
from __future__ import annotations

import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.config import RunConfig
from harness.data import load_dataset
from harness.data.validation import split_validation
from harness.engine import EpochCallback, RunPruned, build_trainer, fit, resolve_device
from harness.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str  # "finished" (trained now), "skipped" (already finished earlier)
    metrics: dict[str, float]
    seconds: float = 0.0


def run_dir(results_dir: Path, cfg: RunConfig) -> Path:
    return results_dir / "runs" / cfg.config_hash


def reproduce_command(cfg: RunConfig, results_dir: Path) -> str:
    """The exact command that reproduces this run (its resolved config is logged beside it)."""
    return (f"nirbench run --config {shlex.quote(str(run_dir(results_dir, cfg) / 'config.yaml'))}"
            f"  # config_hash={cfg.config_hash}")


def execute(cfg: RunConfig, tracker: Tracker, results_dir: Path, *, grid: str = "",
            progress: bool = False, tags: dict[str, str] | None = None,
            parent_run_id: str | None = None, on_epoch_end: EpochCallback | None = None,
            reuse: bool = True) -> RunOutcome:
    """Train ``cfg`` and record it in MLflow.

    ``reuse`` (the default): a FINISHED run with the same config hash is skipped, an interrupted
    one resumed from its last epoch checkpoint. ``reuse=False`` (search trials): always a new
    MLflow run without checkpoints; a trial is one attempt, identified by its study and number.
    ``tags`` are added to a new run, ``parent_run_id`` nests it (``mlflow.parentRunId``, which
    works across processes). ``on_epoch_end(epoch, record)`` runs after each epoch is logged; if
    it raises ``RunPruned`` the run ends as pruned (KILLED, tag ``pruned=true``) and the exception
    propagates. With an active ``cfg.validation`` the run trains on the remaining training classes
    and evaluates on the held-out ones only (``val/<metric>``); the test split is never used."""
    if reuse:
        done = tracker.find(cfg.config_hash, statuses=("FINISHED",))
        if done is not None:
            return RunOutcome(done.run_id, "skipped", done.metrics)

    workdir = run_dir(results_dir, cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(cfg.to_yaml())
    checkpoint = workdir / "checkpoint.pt" if reuse else None

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.use_deterministic_algorithms(cfg.train.deterministic)
    device = resolve_device(cfg.train.device)
    bundle = load_dataset(cfg.dataset.name, cfg.dataset.root, results_dir / "cache" / "data")
    eval_prefix = "test"
    if cfg.validation.active:
        v = cfg.validation
        bundle = split_validation(bundle, fraction=v.fraction, folds=v.folds, fold=v.fold,
                                  seed=v.seed)
        eval_prefix = "val"
    trainer = build_trainer(cfg, bundle, device)

    # An interrupted run (killed process, crash) continues in its own MLflow run from its last
    # checkpoint, so its curves have no gap and no repeat and nothing is trained twice.
    unfinished = (tracker.find(cfg.config_hash, statuses=("RUNNING", "FAILED", "KILLED"))
                  if reuse else None)
    if unfinished is not None and checkpoint is not None and checkpoint.is_file():
        run_id = unfinished.run_id
        trainer.load_state_dict(torch.load(checkpoint, map_location=device, weights_only=False))
        tracker.resume(run_id)
        # A kill between writing the checkpoint and logging its epoch leaves MLflow one epoch
        # behind: log what the checkpoint's history has and MLflow lacks, exactly once.
        logged = {step for step, _ in tracker.history(run_id, "loss/total")}
        for epoch, record in enumerate(trainer.history, 1):
            if epoch not in logged:
                tracker.log_epoch(run_id, epoch, record)
        log.info("resuming %s from epoch %d", run_id, trainer.epoch)
    else:
        command = " ".join(shlex.quote(a) for a in sys.argv) if sys.argv else ""
        run_id = tracker.start(cfg, grid, command=command, tags=tags, parent_run_id=parent_run_id)
        tracker.set_tags(run_id, {"reproduce": reproduce_command(cfg, results_dir)})

    def epoch_done(epoch: int, record: dict[str, float]) -> None:
        tracker.log_epoch(run_id, epoch, record)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    started = time.perf_counter()
    try:
        last = fit(trainer, bundle, checkpoint_path=checkpoint, progress=progress,
                   on_epoch_end=epoch_done, eval_prefix=eval_prefix)
        train_s = sum(r["time/epoch_s"] for r in trainer.history)
        if checkpoint is not None:
            tracker.log_artifact(run_id, checkpoint, "checkpoint")
        tracker.finish(run_id, {"time/train_total_s": train_s})
    except RunPruned as err:  # stopped on purpose by the caller: not a failure
        tracker.pruned(run_id, err.epoch,
                       {"time/train_total_s": sum(r["time/epoch_s"] for r in trainer.history)})
        raise
    except BaseException as err:  # KeyboardInterrupt too: the run must not stay RUNNING
        tracker.fail(run_id, err)
        raise
    # The final checkpoint is now an MLflow artifact; the local copy only served resumes.
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return RunOutcome(run_id, "finished", last, time.perf_counter() - started)
