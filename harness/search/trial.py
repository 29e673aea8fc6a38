"""One trial: train its config on the validation split, report every epoch to the pruner, record
the outcome in the study (COMPLETE, PRUNED, FAIL or surplus)."""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import Trial, TrialState

from nirbench.harness.search.attributes import (
    DONE,
    ERROR_ATTR,
    HEARTBEAT_ATTR,
    SURPLUS_ATTR,
    WORKER_ATTR,
    SearchError,
)
from nirbench.harness.search.heartbeat import Heartbeat, this_worker
from nirbench.harness.search.outcomes import TrialReport
from nirbench.harness.search.sampling import suggest
from nirbench.harness.search.storage import display_location, native_heartbeat
from nirbench.harness.search.tune_file import TuneConfig
from nirbench.harness.tracking.store import Tracker
from nirbench.harness.train.engine import RunPruned
from nirbench.harness.train.runner import execute

log = logging.getLogger(__name__)


class TrialPrunedRun(RunPruned, optuna.TrialPruned):
    """Raised from the engine's epoch callback: the runner records the MLflow run as pruned
    (KILLED, ``pruned=true``) and Optuna records the trial as PRUNED."""


class Objective:
    """Trains one trial's config on the validation split and returns its last-epoch
    validation metric; reports every epoch to the pruner."""

    def __init__(
        self,
        tc: TuneConfig,
        results_dir: Path,
        tracker: Tracker,
        parent: Callable[[], str],
        location: str,
        progress: bool = False,
    ) -> None:
        self.tc, self.results_dir, self.tracker = tc, results_dir, tracker
        self.parent, self.progress = parent, progress
        self.storage_tag = display_location(location)

    def __call__(self, trial: Trial) -> float:
        tc = self.tc
        params = suggest(trial, tc.space)
        cfg = tc.trial_config(params)
        key = f"val/{tc.metric}"

        def report(epoch: int, record: dict[str, float]) -> None:
            value = record.get(key)
            if value is None or not math.isfinite(value):
                return
            trial.report(value, epoch)
            # After the last epoch the trial is complete: pruning it then saves nothing and
            # would only hide its final value from the sampler.
            if epoch < cfg.train.epochs and trial.should_prune():
                raise TrialPrunedRun(epoch, f"pruned after epoch {epoch} ({tc.metric} {value:.4f})")

        tags = {
            "stage": "trial",
            "study": tc.study,
            "trial": str(trial.number),
            "arm": tc.arm,
            "search.metric": tc.metric,
            "search.storage": self.storage_tag,
            "mlflow.runName": f"{tc.study}-t{trial.number}",
        }
        outcome = execute(
            cfg,
            self.tracker,
            self.results_dir,
            tags=tags,
            parent_run_id=self.parent(),
            on_epoch_end=report,
            reuse=False,
            progress=self.progress,
        )
        trial.set_user_attr("mlflow_run_id", outcome.run_id)
        trial.set_user_attr("config_hash", cfg.config_hash)
        value = outcome.metrics.get(key)
        if value is None or not math.isfinite(value):
            raise SearchError(f"trial {trial.number} produced no finite {key}")
        return float(value)


def run_one(
    study: optuna.Study, storage: BaseStorage, tc: TuneConfig, objective: Objective
) -> TrialReport:
    with warnings.catch_warnings():  # the heartbeat thread below is ours, not optimize()'s
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        trial = study.ask()
    started = time.perf_counter()
    # Surplus check: trials done, or running/queued with a smaller number, already fill the target.
    ahead = sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state in DONE
        or (t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number < trial.number)
    )
    if ahead >= tc.n_trials:
        trial.set_user_attr(SURPLUS_ATTR, True)
        study.tell(trial, state=TrialState.FAIL)
        return TrialReport(
            trial.number, "SURPLUS", None, {}, 0.0, "the target was reached by other workers"
        )
    if not native_heartbeat(storage):  # a fresh beat before the worker claim: a re-queued copy
        trial.set_user_attr(HEARTBEAT_ATTR, time.time())  # carries its dead original's beat
    trial.set_user_attr(WORKER_ATTR, this_worker(trial.number))
    if native_heartbeat(storage):
        beat = lambda: storage.record_heartbeat(trial._trial_id)  # noqa: E731
        interval = float(storage.get_heartbeat_interval() or tc.heartbeat_s)
    else:
        beat = lambda: trial.set_user_attr(HEARTBEAT_ATTR, time.time())  # noqa: E731
        interval = float(tc.heartbeat_s)
    state, value, note = TrialState.FAIL, None, ""
    try:
        with Heartbeat(beat, interval):
            try:
                value = objective(trial)
                state = TrialState.COMPLETE
            except optuna.TrialPruned as err:
                state, note = TrialState.PRUNED, str(err)
            except KeyboardInterrupt:
                trial.set_user_attr("interrupted", True)
                raise
            except Exception as err:  # recorded (FAILED run in MLflow, error attr); search goes on
                note = f"{type(err).__name__}: {err}"
                trial.set_user_attr(ERROR_ATTR, note[:2000])
    except KeyboardInterrupt:
        _tell(study, trial, TrialState.FAIL, None)
        raise
    except UpdateFinishedTrialError:
        note = "another worker declared this trial dead; its re-queued copy runs it again"
        return TrialReport(
            trial.number, "FAIL", None, dict(trial.params), time.perf_counter() - started, note
        )
    _tell(study, trial, state, value)
    return TrialReport(
        trial.number, state.name, value, dict(trial.params), time.perf_counter() - started, note
    )


def _tell(study: optuna.Study, trial: Trial, state: TrialState, value: float | None) -> None:
    try:
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
    except UpdateFinishedTrialError:
        log.warning("trial %d was already finished by another worker (declared dead)", trial.number)
