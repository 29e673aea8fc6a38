"""One grid configuration as a unit of work that any executor can run in any process.

A ``Job`` carries the resolved config as YAML text (plain data: it pickles to a spawned process,
a Ray worker or a Slurm job alike) and the hash it must resolve to. ``run_job`` rebuilds the
config, refuses to run if the hash differs (a worker on another code version would silently
train something else), calls ``runner.execute`` and turns every outcome into a ``JobResult``:
failures are results, not exceptions, so one bad run never stops a grid. An interrupt
(``KeyboardInterrupt``) still propagates: the worker is being stopped.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from nirbench.harness.grid.status import ELSEWHERE, FAILED, FINISHED, SKIPPED, Status

log = logging.getLogger(__name__)

# Result statuses (grid/status.py). FAILED runs are recorded FAILED in MLflow with their cause
# (tag ``error``).


@dataclass(frozen=True)
class Job:
    config_yaml: str
    config_hash: str
    label: str  # "synth-cub proxy_anchor+nir seed=0", for people
    epochs: int = 1  # its length, the progress ETA's unit of cost (runs of 15 to 64 epochs)


@dataclass(frozen=True)
class JobSettings:
    """What every job of one grid shares: where results and the MLflow store are, the grid's
    name and command line, and the modules that register extra datasets or methods."""

    results_dir: str
    tracking_uri: str
    grid: str
    command: str
    imports: tuple[str, ...] = ()
    threads: int = 0  # torch CPU threads per run (0: leave torch's default)


@dataclass(frozen=True)
class JobResult:
    config_hash: str
    status: Status  # one of status.JOB_RESULTS
    run_id: str = ""
    seconds: float = 0.0  # wall time of this job in its worker
    train_s: float = 0.0  # the run's own training time (sum of its epochs, as logged)
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""


def import_extensions(modules: tuple[str, ...]) -> None:
    """Import the modules that register datasets / methods / regularizers beyond the built-in
    ones, so a worker process knows every name the grid uses."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ImportError(
                f"worker cannot import {name!r}, which registers a dataset or "
                f"method the grid uses ({err}); make it importable (PYTHONPATH) on "
                f"every worker"
            ) from err


_trackers: dict[tuple[str, str], object] = {}


def _tracker(settings: JobSettings):
    """One Tracker per process and store: opening the store costs about a second."""
    from nirbench.harness.tracking.store import Tracker

    key = (settings.results_dir, settings.tracking_uri)
    if key not in _trackers:
        _trackers[key] = Tracker(Path(settings.results_dir), settings.tracking_uri)
    return _trackers[key]


def warm_up(settings: JobSettings) -> None:
    """Pay a worker's one-off costs (imports, opening the store) before its first job, so that
    a job's time is the run's. A failure here is only logged: the first job reports it."""
    try:
        import_extensions(settings.imports)
        import nirbench.harness.train.runner  # noqa: F401  (torch, the engine, the datasets)
        import nirbench.methods  # noqa: F401  (registers methods and regularizers)

        _tracker(settings)
    except Exception as err:
        log.warning(
            "worker warm-up failed (%s: %s); its first job will report it", type(err).__name__, err
        )


def run_job(job: Job, settings: JobSettings) -> JobResult:
    started = time.perf_counter()
    try:
        import_extensions(settings.imports)
        import yaml

        from nirbench.harness.config import build_config
        from nirbench.harness.tracking.run_lock import RunLockedElsewhere
        from nirbench.harness.train.runner import execute
        from nirbench.harness.tracking.store import mlflow_key

        cfg = build_config(yaml.safe_load(job.config_yaml))
        if cfg.config_hash != job.config_hash:
            raise RuntimeError(
                f"config resolves to hash {cfg.config_hash} in this worker but "
                f"{job.config_hash} in the grid process: the worker runs another nirbench "
                f"version ({Path(__file__).resolve().parent.parent}); install the same code "
                f"everywhere"
            )
        if settings.threads and not cfg.train.threads:
            import torch

            torch.set_num_threads(settings.threads)
        tracker = _tracker(settings)
        try:
            outcome = execute(
                cfg,
                tracker,
                Path(settings.results_dir),
                grid=settings.grid,
                command=settings.command,
            )
        except RunLockedElsewhere as err:
            return JobResult(
                job.config_hash, ELSEWHERE, error=str(err), seconds=time.perf_counter() - started
            )
        run = tracker.client.get_run(outcome.run_id)
        train_s = run.data.metrics.get(mlflow_key("time/train_total_s"), 0.0)
        metrics = {k: float(v) for k, v in outcome.metrics.items()}
        # The runner says "finished" (trained now) or "skipped" (finished earlier): the same words
        # as the job statuses.
        return JobResult(
            job.config_hash,
            FINISHED if outcome.status == FINISHED else SKIPPED,
            outcome.run_id,
            time.perf_counter() - started,
            train_s,
            metrics,
        )
    except Exception as err:  # recorded FAILED in MLflow by the runner (when it got that far)
        log.debug("job %s failed", job.label, exc_info=True)
        return JobResult(
            job.config_hash,
            FAILED,
            error=f"{type(err).__name__}: {err}",
            seconds=time.perf_counter() - started,
        )


def default_imports() -> tuple[str, ...]:
    """Modules that registered datasets, methods or regularizers in this process outside the
    nirbench packages (your own module, a test's conftest), plus ``$NIRBENCH_IMPORTS``
    (comma-separated): worker processes import them before running a job."""
    from nirbench.harness.data import DATASETS
    from nirbench.methods import METHODS, REGULARIZERS

    found: list[str] = []
    for registry in (DATASETS, METHODS, REGULARIZERS):
        for _, entry in registry.items():
            for value in (entry, *vars(entry).values()) if hasattr(entry, "__dict__") else (entry,):
                module = getattr(value, "__module__", None) if callable(value) else None
                if (
                    module
                    and module.split(".")[0] not in ("nirbench", "builtins", "__main__")
                    and module not in found
                ):
                    found.append(module)
    extra = [m.strip() for m in os.environ.get("NIRBENCH_IMPORTS", "").split(",") if m.strip()]
    return tuple(found + [m for m in extra if m not in found])
