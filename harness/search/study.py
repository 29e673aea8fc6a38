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
``grid=<final_grid>`` (``nirbench aggregate --grid <final_grid>``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import optuna
from optuna.storages import BaseStorage

from nirbench.harness.config import ConfigError
from nirbench.harness.search.attributes import PARENT_ATTR, SearchError, counts
from nirbench.harness.search.export import finalize
from nirbench.harness.search.final import run_final
from nirbench.harness.search.heartbeat import fail_stale_trials
from nirbench.harness.search.outcomes import SearchOutcome, TrialReport, format_value
from nirbench.harness.search.parent_run import ensure_parent, reconcile_parent
from nirbench.harness.search.sampling import make_pruner, make_sampler
from nirbench.harness.search.storage import open_storage, storage_location
from nirbench.harness.search.trial import Objective, run_one
from nirbench.harness.search.tune_file import TuneConfig
from nirbench.harness.tracking.store import SEARCH_EXPERIMENT, Tracker


POLL_S = 2.0  # how often a worker waiting for other workers' trials looks again


# ============================================================================ study + parent run
def open_study(tc: TuneConfig, storage: BaseStorage) -> optuna.Study:
    study = optuna.create_study(
        study_name=tc.study,
        storage=storage,
        direction=tc.direction,
        sampler=make_sampler(tc),
        pruner=make_pruner(tc),
        load_if_exists=True,
    )
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
            f"comparable. Use a new --study name, or the original tune file."
        )
    study.set_user_attr("n_trials", tc.n_trials)  # the target may grow between starts
    return study


def run_search(
    tc: TuneConfig,
    results_dir: Path,
    *,
    progress: bool = False,
    echo: Callable[[str], None] = print,
    plots: bool = True,
) -> SearchOutcome:
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
    objective = Objective(
        tc, results_dir, tracker, lambda: study.user_attrs[PARENT_ATTR], location, progress=progress
    )
    ran: list[TrialReport] = []
    waiting_said = False
    while True:
        fail_stale_trials(study, storage, tc, tracker)
        c = counts(study)
        if c["done"] >= tc.n_trials:
            break
        if c["errors"] >= tc.max_failed:
            raise SearchError(
                f"study {tc.study}: {c['errors']} trials failed (search.max_failed "
                f"= {tc.max_failed}); see their 'error' attribute / MLflow runs"
            )
        if c["done"] + c["running"] >= tc.n_trials:  # the rest is running in other workers
            if not waiting_said:
                echo(f"waiting for {c['running']} trial(s) of other workers to end")
                waiting_said = True
            time.sleep(POLL_S)
            continue
        report = run_one(study, storage, tc, objective)
        ran.append(report)
        echo(describe(report, tc, c["done"] + (report.state in ("COMPLETE", "PRUNED"))))
    reconcile_parent(study, tracker, tc, location)
    outcome = finalize(study, tc, results_dir, tracker, location, ran, plots=plots)
    if tc.final_seeds:
        outcome.final = run_final(tc, outcome, results_dir, progress=progress, echo=echo)
    outcome.seconds = time.perf_counter() - started
    return outcome


def describe(r: TrialReport, tc: TuneConfig, done: int) -> str:
    params = " ".join(f"{k.split('.', 1)[-1]}={format_value(v)}" for k, v in r.params.items())
    head = f"[{done}/{tc.n_trials}] trial {r.number}"
    if r.state == "COMPLETE":
        return f"{head}: {params} -> val {tc.metric} {r.value:.4f} ({r.seconds:.1f}s)"
    if r.state == "PRUNED":
        return f"{head}: {params} -> {r.note} ({r.seconds:.1f}s)"
    if r.state == "SURPLUS":
        return f"trial {r.number}: not run, {r.note}"
    return f"{head}: {params} -> FAILED: {r.note}"
