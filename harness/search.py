"""Hyperparameter search with Optuna (the only module that imports optuna), honest and distributed.

Honest: every trial trains on the training classes minus a class-disjoint validation split and is
scored on that split only (``val/<metric>``, harness/data/validation.py); the test classes are
never loaded into a trial. Only the final runs (``--final-seeds``) of the best configuration
train on all training classes and see the test split, after the search is over.

Distributed: a study lives in an Optuna storage, a JournalStorage file under
``RESULTS/optuna/<study>.journal`` by default (safe for several processes on one machine or an
NFS share) or an RDB URL (PostgreSQL) for many machines. Any number of ``nirbench tune``
processes on the same study cooperate:

- ``n_trials`` is the target number of COMPLETE + PRUNED trials of the study, whoever ran them;
  a re-started command resumes the study and only runs what is missing. After ``ask()`` a worker
  checks that fewer than ``n_trials`` trials are done or ahead of it (by trial number); if not,
  its trial is surplus (FAIL, user attribute ``surplus``), so racing workers never overshoot.
- Killed workers: RDB storages use Optuna's heartbeat. Optuna 5's JournalStorage has none, so
  this module keeps one: each running trial records its worker (host, pid, process start time)
  and a heartbeat timestamp in user attributes; a RUNNING trial whose process is gone (same
  host) or whose heartbeat is older than ``grace_s`` is failed and re-queued with the same
  parameters by ``optuna.storages.RetryHeartbeatStaleTrialCallback`` (the non-deprecated name of
  ``RetryFailedTrialCallback`` in Optuna 5), and its MLflow run is marked KILLED.
- Each trial samples with a sampler seeded by (seed, trial number): one worker replays a study
  exactly; several workers never draw the same random numbers.

Tracking: one MLflow parent run per study and one nested run per trial (``mlflow.parentRunId``
set explicitly, so nesting works across processes), in the experiment ``nirbench-search`` so
that validation runs never reach the tables. A pruned trial's run ends KILLED with tag
``pruned=true``. The best parameters are exported as a complete run config
(``RESULTS/optuna/<study>-best.yaml``), plots are drawn next to it, and ``final_seeds`` runs of
the best config land in the ``nirbench`` experiment with tags ``stage=final``, ``study`` and
``grid=<final_grid>`` (``nirbench aggregate --grid <final_grid>``).
"""
from __future__ import annotations

import csv
import logging
import math
import os
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlparse, urlunparse

import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from harness.config import ConfigError
from harness.engine import RunPruned
from harness.runner import execute
from harness.tracking import SEARCH_EXPERIMENT, Tracker
from harness.tune_config import ParamSpec, TuneConfig, flat_params

log = logging.getLogger(__name__)

SEARCH_DIR = "optuna"
PARENT_ATTR = "mlflow_parent_run_id"
WORKER_ATTR = "nirbench.worker"  # {"host", "pid", "start", "trial"} of the process running it
HEARTBEAT_ATTR = "nirbench.heartbeat"  # unix time of the last sign of life
ERROR_ATTR = "error"
SURPLUS_ATTR = "surplus"
POLL_S = 2.0  # how often a worker waiting for other workers' trials looks again
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


class SearchError(RuntimeError):
    """The search cannot go on (too many failed trials, a study set up differently)."""


class TrialPrunedRun(RunPruned, optuna.TrialPruned):
    """Raised from the engine's epoch callback: the runner records the MLflow run as pruned
    (KILLED, ``pruned=true``) and Optuna records the trial as PRUNED."""


# ============================================================================ storage
def storage_location(tc: TuneConfig, results_dir: Path) -> str:
    if tc.storage:
        return tc.storage
    return str((results_dir / SEARCH_DIR / f"{tc.study}.journal").resolve())


def is_url(location: str) -> bool:
    return "://" in location


def display_location(location: str) -> str:
    """The storage as it may be printed and logged: an RDB URL without its password."""
    if not is_url(location):
        return location
    parsed = urlparse(location)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
        return urlunparse(parsed._replace(netloc=netloc))
    return location


def open_storage(tc: TuneConfig, results_dir: Path) -> BaseStorage:
    location = storage_location(tc, results_dir)
    if is_url(location):
        if location.startswith("sqlite"):
            log.warning("SQLite storage: fine for one worker, 'database is locked' for several; "
                        "use the default journal file or PostgreSQL for parallel workers")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(location, heartbeat_interval=tc.heartbeat_s,
                              grace_period=tc.grace_s,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                  max_retry=tc.max_retry))
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The default lock (JournalFileSymlinkLock) is safe across processes and on NFS.
    return JournalStorage(JournalFileBackend(str(path)))


def native_heartbeat(storage: BaseStorage) -> bool:
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def dashboard_command(location: str) -> str:
    """How to open the study in optuna-dashboard (a journal file is recognised by its path)."""
    return f"optuna-dashboard {display_location(location)}"


# ============================================================================ sampler, pruner
class TrialSeededSampler(BaseSampler):
    """Delegates each trial to a sampler seeded by (seed, trial number).

    One seeded sampler shared by several worker processes would hand each of them the same
    random stream, and so the same "random" start-up points. Seeding per trial number keeps a
    one-worker study exactly reproducible and makes parallel workers draw different numbers."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self._make = make
        self._seed = seed
        self._samplers: dict[int, BaseSampler] = {}

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        sampler = self._samplers.get(trial.number)
        if sampler is None:
            if len(self._samplers) > 16:
                self._samplers.clear()
            sampler = self._make((self._seed * 1_000_003 + trial.number) % (2**31 - 1))
            self._samplers[trial.number] = sampler
        return sampler

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        self._samplers.pop(trial.number, None)

    def reseed_rng(self) -> None:  # the seeds are a function of the trial number
        pass


def make_sampler(tc: TuneConfig) -> BaseSampler:
    options = dict(tc.sampler_options)

    def make(seed: int) -> BaseSampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            if tc.sampler == "tpe":
                return optuna.samplers.TPESampler(seed=seed, **options)
            if tc.sampler == "gp":
                return optuna.samplers.GPSampler(seed=seed, **options)
            return optuna.samplers.RandomSampler(seed=seed)

    return TrialSeededSampler(make, tc.seed)


def make_pruner(tc: TuneConfig) -> optuna.pruners.BasePruner:
    options = dict(tc.pruner_options)
    if tc.pruner == "median":
        return optuna.pruners.MedianPruner(**options)
    if tc.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(max_resource=tc.base.train.epochs, **options)
    return optuna.pruners.NopPruner()


def suggest(trial: Trial, space: Sequence[ParamSpec]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for p in space:
        if p.type == "categorical":
            params[p.key] = trial.suggest_categorical(p.key, list(p.choices))
        elif p.type == "int":
            params[p.key] = trial.suggest_int(p.key, int(p.low), int(p.high),
                                              step=int(p.step or 1), log=p.log)
        else:
            params[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return params


def distributions(space: Sequence[ParamSpec]) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for p in space:
        if p.type == "categorical":
            out[p.key] = CategoricalDistribution(list(p.choices))
        elif p.type == "int":
            out[p.key] = IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            out[p.key] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
    return out


# ============================================================================ liveness
def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against a recycled pid); None if unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_worker(trial_number: int) -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid),
            "trial": trial_number}


def _worker_alive(worker: dict[str, Any]) -> bool | None:
    """True/False for a worker on this host, None for one elsewhere (only its heartbeat tells)."""
    if worker.get("host") != socket.gethostname():
        return None
    pid = int(worker.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = _process_start(pid)
    return start is None or worker.get("start") in (None, start)


class Heartbeat:
    """Calls ``beat`` now and every ``interval`` seconds until the block ends."""

    def __init__(self, beat: Callable[[], None], interval: float) -> None:
        self._beat, self._interval = beat, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nirbench-heartbeat", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self._beat()
            except UpdateFinishedTrialError:
                return  # the trial ended (or another worker declared it dead)
            except Exception as err:  # a missed beat is not worth killing the trial
                log.warning("heartbeat failed: %s", err)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def stale_trials(trials: Sequence[FrozenTrial], grace_s: float,
                 now: float | None = None) -> list[FrozenTrial]:
    """RUNNING trials whose worker process is gone (same host) or silent for ``grace_s``."""
    now = time.time() if now is None else now
    out = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        worker = t.user_attrs.get(WORKER_ATTR) or {}
        if worker.get("trial") == t.number:
            alive = _worker_alive(worker)
            if alive is False:
                out.append(t)
                continue
            last = float(t.user_attrs.get(HEARTBEAT_ATTR, 0.0))
        else:  # just started (attributes not written yet) or a re-queued copy of a dead trial
            last = t.datetime_start.timestamp() if t.datetime_start else now
        if now - last > grace_s:
            out.append(t)
    return out


def fail_stale_trials(study: optuna.Study, storage: BaseStorage, tc: TuneConfig,
                      tracker: Tracker) -> list[int]:
    """Fail the trials of dead workers, re-queue them (same parameters) and mark their MLflow
    runs KILLED. Returns the failed trial numbers."""
    running = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running:
        return []
    failed: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if native_heartbeat(storage):
            optuna.storages.fail_stale_trials(study)  # runs the storage's retry callback
            states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
            failed = [n for n in running if states.get(n) == TrialState.FAIL]
        else:
            retry = RetryHeartbeatStaleTrialCallback(max_retry=tc.max_retry)
            for t in stale_trials(list(running.values()), tc.grace_s):
                try:
                    storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                except UpdateFinishedTrialError:
                    continue  # it finished, or another worker failed it first
                failed.append(t.number)
                retry(study, storage.get_trial(t._trial_id))
    shown = display_location(storage_location(tc, tracker.results_dir))
    for number in failed:
        for run in tracker.runs(f"tags.study = '{tc.study}' and tags.trial = '{number}'",
                                statuses=("RUNNING",)):
            if run.tags.get("search.storage") != shown:
                continue
            tracker.killed(run.run_id, f"the worker running trial {number} died; the trial "
                                       f"was re-queued")
        log.warning("trial %d of %s: its worker died; failed and re-queued", number, tc.study)
    return failed


# ============================================================================ study + parent run
def open_study(tc: TuneConfig, storage: BaseStorage) -> optuna.Study:
    study = optuna.create_study(study_name=tc.study, storage=storage, direction=tc.direction,
                                sampler=make_sampler(tc), pruner=make_pruner(tc),
                                load_if_exists=True)
    attrs = study.user_attrs
    known = attrs.get("fingerprint")
    if known is None:
        for key, value in tc.summary().items():
            study.set_user_attr(key, value)
    elif known != tc.fingerprint:
        before = {k: attrs.get(k) for k in ("arm", "metric", "direction", "validation", "space")}
        now = {k: tc.summary()[k] for k in before}
        diff = [f"{k}: {before[k]!r} -> {now[k]!r}" for k in before if before[k] != now[k]]
        raise ConfigError(
            f"study {tc.study!r} was created with a different search setup "
            f"({'; '.join(diff) or 'the base run config differs'}); its trials would not be "
            f"comparable. Use a new --study name, or the original tune file.")
    study.set_user_attr("n_trials", tc.n_trials)  # the target may grow between starts
    return study


def parent_tags(tc: TuneConfig, location: str) -> dict[str, str]:
    base = tc.base
    return {"stage": "search", "study": tc.study, "arm": tc.arm, "dataset": base.dataset.name,
            "method": base.method.name, "regularizer": base.regularizer_name,
            "backbone": base.backbone.name, "search.metric": tc.metric,
            "search.direction": tc.direction, "search.sampler": tc.sampler,
            "search.pruner": tc.pruner, "search.n_trials": str(tc.n_trials),
            "search.fingerprint": tc.fingerprint, "search.storage": display_location(location),
            "nir.weight_convention": str(tc.weight_convention), "grid": ""}


def ensure_parent(study: optuna.Study, tracker: Tracker, tc: TuneConfig, location: str) -> str:
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id and tracker.status(run_id) is not None:
        if tracker.status(run_id) != "RUNNING":
            tracker.set_status(run_id, "RUNNING")
        return run_id
    run_id = tracker.start_plain(parent_tags(tc, location), flat_params(tc),
                                 run_name=f"search-{tc.study}")
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def reconcile_parent(study: optuna.Study, tracker: Tracker, tc: TuneConfig,
                     location: str) -> str:
    """Workers that start at the same moment may each create a parent run; the study attribute
    keeps the last one written. Re-point the trial runs of the others at it, delete them."""
    parent = study.user_attrs[PARENT_ATTR]
    shown = display_location(location)
    runs = [r for r in tracker.runs(f"tags.study = '{tc.study}'")
            if r.tags.get("search.storage") == shown]  # a namesake in another storage is not ours
    for run in runs:
        if run.tags.get("stage") == "trial" and run.tags.get("mlflow.parentRunId") != parent:
            tracker.set_tags(run.run_id, {"mlflow.parentRunId": parent})
    for run in runs:
        if run.tags.get("stage") == "search" and run.run_id != parent:
            tracker.delete(run.run_id)
    return parent


# ============================================================================ one trial
@dataclass
class TrialReport:
    number: int
    state: str  # COMPLETE | PRUNED | FAIL | SURPLUS
    value: float | None
    params: dict[str, Any]
    seconds: float
    note: str = ""


class Objective:
    """Trains one trial's config on the validation split and returns its last-epoch
    validation metric; reports every epoch to the pruner."""

    def __init__(self, tc: TuneConfig, results_dir: Path, tracker: Tracker,
                 parent: Callable[[], str], location: str, progress: bool = False) -> None:
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
                raise TrialPrunedRun(epoch, f"pruned after epoch {epoch} ({tc.metric} "
                                            f"{value:.4f})")

        tags = {"stage": "trial", "study": tc.study, "trial": str(trial.number), "arm": tc.arm,
                "search.metric": tc.metric, "search.storage": self.storage_tag,
                "mlflow.runName": f"{tc.study}-t{trial.number}"}
        outcome = execute(cfg, self.tracker, self.results_dir, tags=tags,
                          parent_run_id=self.parent(), on_epoch_end=report, reuse=False,
                          progress=self.progress)
        trial.set_user_attr("mlflow_run_id", outcome.run_id)
        trial.set_user_attr("config_hash", cfg.config_hash)
        value = outcome.metrics.get(key)
        if value is None or not math.isfinite(value):
            raise SearchError(f"trial {trial.number} produced no finite {key}")
        return float(value)


def _run_one(study: optuna.Study, storage: BaseStorage, tc: TuneConfig,
             objective: Objective) -> TrialReport:
    with warnings.catch_warnings():  # the heartbeat thread below is ours, not optimize()'s
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        trial = study.ask()
    started = time.perf_counter()
    # Surplus check: trials done, or running/queued with a smaller number, already fill the target.
    ahead = sum(1 for t in study.get_trials(deepcopy=False)
                if t.state in DONE or (t.state in (TrialState.RUNNING, TrialState.WAITING)
                                       and t.number < trial.number))
    if ahead >= tc.n_trials:
        trial.set_user_attr(SURPLUS_ATTR, True)
        study.tell(trial, state=TrialState.FAIL)
        return TrialReport(trial.number, "SURPLUS", None, {}, 0.0,
                           "the target was reached by other workers")
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
        return TrialReport(trial.number, "FAIL", None, dict(trial.params),
                           time.perf_counter() - started, note)
    _tell(study, trial, state, value)
    return TrialReport(trial.number, state.name, value, dict(trial.params),
                       time.perf_counter() - started, note)


def _tell(study: optuna.Study, trial: Trial, state: TrialState, value: float | None) -> None:
    try:
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
    except UpdateFinishedTrialError:
        log.warning("trial %d was already finished by another worker (declared dead)",
                    trial.number)


# ============================================================================ the search
@dataclass
class FinalRun:
    seed: int
    run_id: str
    status: str  # finished | skipped
    metrics: dict[str, float]
    grid: str


@dataclass
class SearchOutcome:
    study: str
    storage: str
    n_complete: int
    n_pruned: int
    n_failed: int
    ran: list[TrialReport]
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_yaml: Path | None = None
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    final: list[FinalRun] = field(default_factory=list)
    parent_run_id: str = ""
    seconds: float = 0.0


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {"done": sum(t.state in DONE for t in trials),
            "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "running": sum(t.state == TrialState.RUNNING for t in trials),
            "errors": sum(t.state == TrialState.FAIL and ERROR_ATTR in t.user_attrs
                          for t in trials),
            "failed": sum(t.state == TrialState.FAIL for t in trials)}


def run_search(tc: TuneConfig, results_dir: Path, *, progress: bool = False,
               echo: Callable[[str], None] = print, plots: bool = True) -> SearchOutcome:
    """Run (or resume, or join) the study until it holds ``tc.n_trials`` COMPLETE + PRUNED
    trials; then export the best config, draw the plots, run the final seeds."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    results_dir = Path(results_dir)
    location = storage_location(tc, results_dir)
    storage = open_storage(tc, results_dir)
    study = open_study(tc, storage)
    tracker = Tracker(results_dir, experiment=SEARCH_EXPERIMENT)
    ensure_parent(study, tracker, tc, location)
    objective = Objective(tc, results_dir, tracker, lambda: study.user_attrs[PARENT_ATTR],
                          location, progress=progress)
    ran: list[TrialReport] = []
    waiting_said = False
    while True:
        fail_stale_trials(study, storage, tc, tracker)
        c = counts(study)
        if c["done"] >= tc.n_trials:
            break
        if c["errors"] >= tc.max_failed:
            raise SearchError(f"study {tc.study}: {c['errors']} trials failed (search.max_failed "
                              f"= {tc.max_failed}); see their 'error' attribute / MLflow runs")
        if c["done"] + c["running"] >= tc.n_trials:  # the rest is running in other workers
            if not waiting_said:
                echo(f"waiting for {c['running']} trial(s) of other workers to end")
                waiting_said = True
            time.sleep(POLL_S)
            continue
        report = _run_one(study, storage, tc, objective)
        ran.append(report)
        echo(describe(report, tc, c["done"] + (report.state in ("COMPLETE", "PRUNED"))))
    reconcile_parent(study, tracker, tc, location)
    outcome = finalize(study, tc, results_dir, tracker, location, ran, plots=plots)
    if tc.final_seeds:
        outcome.final = run_final(tc, outcome, results_dir, progress=progress, echo=echo)
    outcome.seconds = time.perf_counter() - started
    return outcome


def describe(r: TrialReport, tc: TuneConfig, done: int) -> str:
    params = " ".join(f"{k.split('.', 1)[-1]}={_fmt(v)}" for k, v in r.params.items())
    head = f"[{done}/{tc.n_trials}] trial {r.number}"
    if r.state == "COMPLETE":
        return f"{head}: {params} -> val {tc.metric} {r.value:.4f} ({r.seconds:.1f}s)"
    if r.state == "PRUNED":
        return f"{head}: {params} -> {r.note} ({r.seconds:.1f}s)"
    if r.state == "SURPLUS":
        return f"trial {r.number}: not run, {r.note}"
    return f"{head}: {params} -> FAILED: {r.note}"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ============================================================================ results
def finalize(study: optuna.Study, tc: TuneConfig, results_dir: Path, tracker: Tracker,
             location: str, ran: list[TrialReport], *, plots: bool = True) -> SearchOutcome:
    c = counts(study)
    parent = study.user_attrs[PARENT_ATTR]
    outcome = SearchOutcome(tc.study, location, c["complete"], c["pruned"], c["failed"], ran,
                            parent_run_id=parent)
    out_dir = results_dir / SEARCH_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    outcome.files.append(write_trials_csv(trials, tc, tracker, out_dir / f"{tc.study}-trials.csv"))
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    if not completed:
        outcome.notes.append("no completed trial: nothing to export (all pruned or failed)")
        return outcome
    best = study.best_trial
    outcome.best_trial, outcome.best_value = best.number, best.value
    outcome.best_params = dict(best.params)
    outcome.best_yaml = export_best(tc, best, out_dir / f"{tc.study}-best.yaml", location)
    outcome.files.append(outcome.best_yaml)
    if plots:
        drawn, notes = draw_plots(study, tc, out_dir)
        outcome.files += drawn
        outcome.notes += notes
    metrics = {f"best/val_{tc.metric}": best.value, "trials/complete": c["complete"],
               "trials/pruned": c["pruned"], "trials/failed": c["failed"]}
    tracker.log_metrics(parent, metrics)
    tracker.set_tags(parent, {"best_trial": str(best.number),
                              **{f"best.{k}": _fmt(v) for k, v in best.params.items()},
                              "best_config_hash": tc.final_config(best.params,
                                                                  tc.base.seed).arm_hash})
    for path in outcome.files:
        tracker.log_artifact(parent, path)
    if c["running"] == 0:
        tracker.set_status(parent, "FINISHED")
    return outcome


def export_best(tc: TuneConfig, best: FrozenTrial, path: Path, location: str) -> Path:
    """The best parameters as a complete run config (validation off, the base seed):
    ``nirbench run --config <this file>`` trains it on all training classes and tests it."""
    cfg = tc.final_config(best.params, tc.base.seed)
    conv = tc.weight_convention
    header = [
        f"# Best configuration of Optuna study {tc.study!r} (arm {tc.arm}), trial {best.number}:",
        f"# validation {tc.metric} = {best.value:.6f} on held-out TRAINING classes "
        f"(validation {dict(vars(tc.validation))}); the test classes never entered the search.",
        "# Searched: " + ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()),
    ]
    if conv is not None:
        header.append(f"# NIR weight convention: {conv} "
                      + ("(total = NIR + weight x method loss)" if conv == "w_align"
                         else "(total = method loss + weight x NIR)"))
    header += [f"# Storage: {display_location(location)}   source: {tc.source}",
               f"# Run it: nirbench run --config {path}   (arm_hash {cfg.arm_hash})", ""]
    path.write_text("\n".join(header) + cfg.to_yaml())
    return path


def write_trials_csv(trials: Sequence[FrozenTrial], tc: TuneConfig, tracker: Tracker,
                     path: Path) -> Path:
    shown = display_location(storage_location(tc, tracker.results_dir))
    runs = {r.tags.get("trial"): r.run_id
            for r in tracker.runs(f"tags.study = '{tc.study}' and tags.stage = 'trial'")
            if r.tags.get("search.storage") == shown}
    keys = [p.key for p in tc.space]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["number", "state", f"val_{tc.metric}", "last_epoch", *keys,
                         "seconds", "mlflow_run_id", "note"])
        for t in trials:
            seconds = ((t.datetime_complete - t.datetime_start).total_seconds()
                       if t.datetime_complete and t.datetime_start else "")
            note = t.user_attrs.get(ERROR_ATTR) or ("surplus" if t.user_attrs.get(SURPLUS_ATTR)
                                                    else "")
            writer.writerow([t.number, t.state.name, "" if t.value is None else t.value,
                             t.last_step if t.last_step is not None else "",
                             *[t.params.get(k, "") for k in keys], seconds,
                             runs.get(str(t.number), ""), note])
    return path


def _plot_value(t: FrozenTrial) -> float | None:
    """A completed trial's value; a pruned one's last reported value."""
    if t.state == TrialState.COMPLETE:
        return t.value
    if t.state == TrialState.PRUNED and t.last_step is not None:
        return t.intermediate_values[t.last_step]
    return None


def draw_plots(study: optuna.Study, tc: TuneConfig, out_dir: Path) -> tuple[list[Path], list[str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in study.get_trials(deepcopy=False) if _plot_value(t) is not None]
    files, notes = [], []
    label = f"validation {tc.metric}"
    maximize = tc.direction == "maximize"

    # 1. optimisation history
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    ax.scatter([t.number for t in done], [t.value for t in done], label="complete", zorder=3)
    if pruned:
        ax.scatter([t.number for t in pruned], [_plot_value(t) for t in pruned], marker="x",
                   color="grey", label="pruned (last reported)", zorder=2)
    best, xs, ys = None, [], []
    for t in sorted(done, key=lambda t: t.number):
        if best is None or (t.value > best if maximize else t.value < best):
            best = t.value
        xs.append(t.number)
        ys.append(best)
    ax.step(xs, ys, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.set_title(f"{tc.study}: optimisation history")
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(_save(fig, out_dir / f"{tc.study}-history.png"))

    # 2. validation metric against each searched parameter, the NIR weight first
    specs = sorted(tc.space, key=lambda p: p.key != "regularizer.weight")
    fig, axes = plt.subplots(1, len(specs), figsize=(4.2 * len(specs), 3.8), squeeze=False)
    for ax, spec in zip(axes[0], specs):
        for group, style in ((done, {}), (pruned, {"marker": "x", "color": "grey"})):
            pts = [(t.params[spec.key], _plot_value(t)) for t in group if spec.key in t.params]
            if pts:
                ax.scatter([str(x) if spec.type == "categorical" else x for x, _ in pts],
                           [y for _, y in pts], **style)
        if spec.log:
            ax.set_xscale("log")
        name = spec.key
        if spec.key == "regularizer.weight" and tc.weight_convention:
            name = f"NIR weight ({tc.weight_convention})"
        ax.set_xlabel(name)
        ax.set_ylabel(label)
    fig.suptitle(f"{tc.study}: {label} against the searched parameters (x = pruned)",
                 fontsize=10)
    fig.tight_layout()
    files.append(_save(fig, out_dir / f"{tc.study}-params.png"))

    # 3. parameter importances (fANOVA, seeded)
    if len(done) < 2 or len(tc.space) < 2:
        notes.append(f"parameter importances not drawn: {len(done)} completed trial(s) and "
                     f"{len(tc.space)} parameter(s); they need at least 2 of each")
    else:
        try:
            from optuna.importance import FanovaImportanceEvaluator, get_param_importances

            imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=tc.seed))
        except Exception as err:  # e.g. every completed trial has the same value
            notes.append(f"parameter importances not drawn: {type(err).__name__}: {err}")
        else:
            fig, ax = plt.subplots(figsize=(6.4, 0.6 + 0.5 * len(imp)))
            names = list(imp)[::-1]
            ax.barh(names, [imp[n] for n in names])
            ax.set_xlabel(f"importance for {label} (fANOVA, seed {tc.seed})")
            ax.set_title(f"{tc.study}: parameter importances ({len(done)} trials)")
            fig.tight_layout()
            files.append(_save(fig, out_dir / f"{tc.study}-importances.png"))
    plt.close("all")
    return files, notes


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


# ============================================================================ final runs
def run_final(tc: TuneConfig, outcome: SearchOutcome, results_dir: Path, *,
              progress: bool = False, echo: Callable[[str], None] = print) -> list[FinalRun]:
    """Train the best configuration on ALL training classes (validation off) for the final seeds
    and evaluate on the test classes: the numbers that go into the tables."""
    if outcome.best_trial is None:
        echo("final runs skipped: the study has no completed trial")
        return []
    tracker = Tracker(results_dir)  # the tables' experiment
    out = []
    for seed in tc.final_seed_list:
        cfg = tc.final_config(outcome.best_params, seed)
        tags = {"stage": "final", "study": tc.study, "search_arm": tc.arm,
                "search_trial": str(outcome.best_trial),
                "search_parent_run": outcome.parent_run_id}
        echo(f"final run seed={seed} (config {cfg.config_hash}, grid {tc.final_grid})")
        result = execute(cfg, tracker, results_dir, grid=tc.final_grid, tags=tags,
                         progress=progress)
        grid = tracker.tags(result.run_id).get("grid", "")
        if grid != tc.final_grid:
            echo(f"  note: this config already finished as run {result.run_id} of grid "
                 f"{grid!r}; `aggregate --grid {tc.final_grid}` will not include it")
        metrics = {k.split("/", 1)[1].replace("_at_", "@"): v for k, v in result.metrics.items()
                   if k.startswith("test/")}
        out.append(FinalRun(seed, result.run_id, result.status, metrics, grid))
    return out


def final_metric(final: list[FinalRun], metric: str = "recall@1") -> float | None:
    values = [f.metrics[metric] for f in final if metric in f.metrics]
    return sum(values) / len(values) if values else None


__all__ = ["run_search", "SearchOutcome", "TrialSeededSampler", "dashboard_command",
           "storage_location", "stale_trials", "fail_stale_trials", "open_storage",
           "open_study", "SearchError"]
