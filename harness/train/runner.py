"""Run one configuration end to end: skip if finished, resume if interrupted, else train;
record everything in MLflow; a run that raises is marked FAILED with its error and re-raised
(a run a search pruner stops is marked KILLED with tag ``pruned=true``, an interrupted one KILLED
with tag ``killed``: neither is a failure). One MLflow run per configuration: a resumed or
restarted run continues in the same MLflow run; a per-configuration lock file stops two processes
from training the same configuration at once (harness/tracking/run_lock.py)."""

from __future__ import annotations

import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nirbench.harness.config import RunConfig
from nirbench.harness.data import load_dataset
from nirbench.harness.data.validation import split_validation
from nirbench.harness.train.diagnostics import inactivity_tags
from nirbench.harness.train import numerics
from nirbench.harness.train.engine import (
    EpochCallback,
    RunPruned,
    build_trainer,
    fit,
    resolve_device,
)
from nirbench.harness.tracking.run_lock import RunLock
from nirbench.harness.tracking.store import Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str  # "finished" (trained now), "skipped" (already finished earlier)
    metrics: dict[str, float]
    seconds: float = 0.0


def pretrained_weights(cfg: RunConfig, results_dir: Path) -> Path | None:
    """The embedded pretraining weights a small_cnn run starts from (built once, cached under
    RESULTS/cache/pretrained/); None when the backbone brings its own or starts from scratch."""
    if cfg.backbone.weights is None:
        return None
    from nirbench.harness.train.pretrain import ensure_weights

    cache = Path(results_dir) / "cache"
    return ensure_weights(
        cache / "pretrained", cfg.backbone.width, cache / "data", cfg.backbone.input_px
    )


def weights_line(cfg: RunConfig, results_dir: Path) -> str:
    """What the run starts from, for its first log line. Published weights (the ResNets') are
    fetched if needed and verified here, so the line names the file and hash that are used."""
    if cfg.backbone.weights is not None:  # small_cnn's embedded pretraining (the recipe id)
        from nirbench.harness.train.pretrain import weights_path

        path = weights_path(
            Path(results_dir) / "cache" / "pretrained", cfg.backbone.width, cfg.backbone.input_px
        )
        return (
            f"embedded pretraining {cfg.backbone.weights} from {path}"
            f"{'' if path.is_file() else ' (built first)'}"
        )
    from nirbench.harness.train.weights import describe

    return describe(cfg.backbone.name, cfg.backbone.pretrained)


def run_dir(results_dir: Path, cfg: RunConfig) -> Path:
    return results_dir / "runs" / cfg.config_hash


def reproduce_command(cfg: RunConfig, results_dir: Path, tracking_uri: str | None = None) -> str:
    """The exact command that reproduces this run: its resolved config (also an MLflow artifact of
    the run), the same results folder and, when it is not that folder's default store, the same
    tracking URI. The code version is the run's ``git_sha`` tag."""
    results_dir = Path(results_dir).resolve()
    config = run_dir(results_dir, cfg) / "config.yaml"
    command = (
        f"nirbench run --config {shlex.quote(str(config))}"
        f" --results-dir {shlex.quote(str(results_dir))}"
    )
    if tracking_uri and tracking_uri != f"sqlite:///{results_dir}/mlflow.db":
        command = f"MLFLOW_TRACKING_URI={shlex.quote(tracking_uri)} {command}"
    return f"{command}  # config_hash={cfg.config_hash}"


def command_line() -> str:
    """This process's command line as the user typed it (``nirbench ...`` for the entry point)."""
    if not sys.argv or not sys.argv[0]:
        return ""
    program = Path(sys.argv[0]).name
    argv = [
        "nirbench" if program in ("nirbench", "cli.py", "__main__.py") else sys.argv[0],
        *sys.argv[1:],
    ]
    return " ".join(shlex.quote(a) for a in argv)


def execute(
    cfg: RunConfig,
    tracker: Tracker,
    results_dir: Path,
    *,
    grid: str = "",
    progress: bool = False,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    on_epoch_end: EpochCallback | None = None,
    reuse: bool = True,
    command: str | None = None,
) -> RunOutcome:
    """Train ``cfg`` and record it in MLflow.

    ``reuse`` (the default): a FINISHED run with the same config hash is skipped, an interrupted
    one resumed from its last epoch checkpoint, and the configuration is locked for the whole run
    (``results/runs/<hash>/lock``): if another live process holds that lock this raises
    ``RunLockedElsewhere`` and trains nothing. ``reuse=False`` (search trials): always a new
    MLflow run without checkpoints or lock; a trial is one attempt, identified by its study and
    number. ``tags`` are added to a new run, ``parent_run_id`` nests it (``mlflow.parentRunId``,
    which works across processes). ``command`` is recorded as the run's ``command`` tag (default:
    this process's command line; a grid worker passes the grid's). ``on_epoch_end(epoch, record)``
    runs after each epoch is logged; if it raises ``RunPruned`` the run ends as pruned (KILLED, tag
    ``pruned=true``) and the exception propagates. An interrupt (Ctrl-C, SIGTERM turned into
    ``KeyboardInterrupt``) ends the run KILLED, any other exception FAILED with its cause; both
    propagate. With an active ``cfg.validation`` the run trains on the remaining training classes
    and evaluates on the held-out ones only (``val/<metric>``); the test split is never used."""
    if not reuse:
        return _train(
            cfg,
            tracker,
            results_dir,
            grid=grid,
            progress=progress,
            tags=tags,
            parent_run_id=parent_run_id,
            on_epoch_end=on_epoch_end,
            checkpoint=None,
            command=command,
        )
    done = tracker.find(cfg.config_hash, statuses=("FINISHED",))
    if done is not None:
        return RunOutcome(done.run_id, "skipped", done.metrics)
    workdir = run_dir(results_dir, cfg)
    with RunLock(workdir / "lock"):
        # Another process may have finished it between the check above and taking the lock.
        done = tracker.find(cfg.config_hash, statuses=("FINISHED",))
        if done is not None:
            return RunOutcome(done.run_id, "skipped", done.metrics)
        return _train(
            cfg,
            tracker,
            results_dir,
            grid=grid,
            progress=progress,
            tags=tags,
            parent_run_id=parent_run_id,
            on_epoch_end=on_epoch_end,
            checkpoint=workdir / "checkpoint.pt",
            command=command,
        )


def _record_numerics(
    tracker: Tracker, run_id: str, cfg: RunConfig, device: torch.device, *, resumed: bool
) -> None:
    """Tag the run with what its numbers are computed with (harness/train/numerics.py). A run
    resumed from a checkpoint keeps the tags it began with; where its CPU capability, thread count
    or device changed since, it gets a WARNING and ``numerics.changed_on_resume``."""
    now = numerics.collect_numerics(device, cfg.eval.kmeans_engine)
    if not resumed:
        tracker.set_tags(run_id, now)
        return
    original = tracker.tags(run_id)
    tags = {k: v for k, v in now.items() if k not in original}  # a run begun by older code
    changes = numerics.changes_on_resume(original, now)
    if changes:
        log.warning(
            "run %s resumes with other numerics than it began with (%s): the rest of "
            "its epochs may differ like another seed would",
            run_id,
            "; ".join(changes),
        )
        earlier = original.get(numerics.CHANGED_TAG, "")
        new = [c for c in changes if c not in earlier.split("; ")]
        tags[numerics.CHANGED_TAG] = "; ".join(filter(None, [earlier, *new]))[:5000]
    if tags:
        tracker.set_tags(run_id, tags)


def _train(
    cfg: RunConfig,
    tracker: Tracker,
    results_dir: Path,
    *,
    grid: str,
    progress: bool,
    tags: dict[str, str] | None,
    parent_run_id: str | None,
    on_epoch_end: EpochCallback | None,
    checkpoint: Path | None,
    command: str | None,
) -> RunOutcome:
    workdir = run_dir(results_dir, cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(cfg.to_yaml())

    # The MLflow run comes first, so that anything failing later (the data, the checkpoint, the
    # training) is recorded in it. An interrupted run (killed process, crash) continues in its own
    # MLflow run from its last checkpoint: its curves have no gap and no repeat.
    unfinished = (
        tracker.find(cfg.config_hash, statuses=("RUNNING", "FAILED", "KILLED"))
        if checkpoint is not None
        else None
    )
    logged = (
        {step for step, _ in tracker.history(unfinished.run_id, "loss/total")}
        if unfinished is not None
        else set()
    )
    resume_from = None
    if unfinished is not None and checkpoint is not None and checkpoint.is_file():
        run_id, resume_from = unfinished.run_id, checkpoint
        tracker.resume(run_id)
    elif unfinished is not None and not logged:
        # It died before its first epoch ended: nothing to keep, start over in the same run.
        run_id = unfinished.run_id
        tracker.resume(run_id)
        log.info("restarting %s from epoch 0 (it stopped before its first epoch ended)", run_id)
    else:
        run_id = tracker.start(
            cfg,
            grid,
            command=command if command is not None else command_line(),
            tags=tags,
            parent_run_id=parent_run_id,
        )
        tracker.set_tags(run_id, {"reproduce": reproduce_command(cfg, results_dir, tracker.uri)})
        if unfinished is not None:
            # Epochs were logged but their checkpoint is not here (deleted, or the run was on
            # another machine): continuing in that run would repeat steps in its curves.
            tracker.supersede(
                unfinished.run_id,
                run_id,
                f"checkpoint {checkpoint} missing; restarted as run {run_id}",
            )
            log.warning(
                "run %s has %d logged epochs but no checkpoint at %s: restarting as %s",
                unfinished.run_id,
                len(logged),
                checkpoint,
                run_id,
            )

    def epoch_done(epoch: int, record: dict[str, float]) -> None:
        tracker.log_epoch(run_id, epoch, record)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    trainer = None
    try:
        log.info("weights: %s", weights_line(cfg, results_dir))
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        torch.use_deterministic_algorithms(cfg.train.deterministic)
        device = resolve_device(cfg.train.device)
        _record_numerics(tracker, run_id, cfg, device, resumed=resume_from is not None)
        bundle = load_dataset(
            cfg.dataset.name,
            cfg.dataset.root,
            results_dir / "cache" / "data",
            allow_partial=cfg.dataset.allow_partial,
            cache=cfg.dataset.cache,
        )
        if "partial" in bundle.info:  # real datasets: say in the tags whether the copy was whole
            tracker.set_tags(
                run_id,
                {
                    "dataset.partial": str(bundle.info["partial"]).lower(),
                    "dataset.missing_classes": str(bundle.info.get("missing_class_count", 0)),
                },
            )
        eval_prefix = "test"
        if cfg.validation.active:
            v = cfg.validation
            bundle = split_validation(
                bundle, fraction=v.fraction, folds=v.folds, fold=v.fold, seed=v.seed
            )
            eval_prefix = "val"
        trainer = build_trainer(cfg, bundle, device, pretrained_weights(cfg, results_dir))
        if resume_from is not None:
            trainer.load_state_dict(
                torch.load(resume_from, map_location=device, weights_only=False)
            )
            # A kill between writing the checkpoint and logging its epoch leaves MLflow one
            # epoch behind: log what the checkpoint's history has and MLflow lacks, exactly once.
            for epoch, record in enumerate(trainer.history, 1):
                if epoch not in logged:
                    tracker.log_epoch(run_id, epoch, record)
            log.info("resuming %s from epoch %d", run_id, trainer.epoch)
        started = time.perf_counter()
        last = fit(
            trainer,
            bundle,
            checkpoint_path=checkpoint,
            progress=progress,
            on_epoch_end=epoch_done,
            eval_prefix=eval_prefix,
        )
        train_s = sum(r["time/epoch_s"] for r in trainer.history)
        # e.g. nir.inactive_from_epoch, from the whole history (a resumed run's too)
        activity = inactivity_tags(trainer.history)
        if activity:
            tracker.set_tags(run_id, activity)
        if checkpoint is not None:
            tracker.log_artifact(run_id, checkpoint, "checkpoint")
        tracker.finish(run_id, {"time/train_total_s": train_s})
    except RunPruned as err:  # stopped on purpose by the caller: not a failure
        tracker.pruned(
            run_id,
            err.epoch,
            {"time/train_total_s": sum(r["time/epoch_s"] for r in trainer.history)},
        )
        raise
    except (KeyboardInterrupt, SystemExit) as err:  # stopped from outside: resumable, no failure
        epoch = trainer.epoch if trainer is not None else 0
        tracker.killed(
            run_id,
            f"interrupted at epoch {epoch} "
            f"({type(err).__name__}{': ' + str(err) if str(err) else ''})",
        )
        raise
    except BaseException as err:
        tracker.fail(run_id, err)
        raise
    # The final checkpoint is now an MLflow artifact; the local copy only served resumes.
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return RunOutcome(run_id, "finished", last, time.perf_counter() - started)
