"""The study's MLflow parent run (experiment ``nirbench-search``): found or created once per study,
whatever the number of workers; each trial's run nests under it (``mlflow.parentRunId``)."""

from __future__ import annotations


import optuna

from nirbench.harness.search.attributes import PARENT_ATTR
from nirbench.harness.search.storage import display_location
from nirbench.harness.search.tune_file import TuneConfig, flat_params
from nirbench.harness.tracking.store import Tracker


def parent_tags(tc: TuneConfig, location: str) -> dict[str, str]:
    base = tc.base
    return {
        "stage": "search",
        "study": tc.study,
        "arm": tc.arm,
        "dataset": base.dataset.name,
        "method": base.method.name,
        "regularizer": base.regularizer_name,
        "backbone": base.backbone.name,
        "search.metric": tc.metric,
        "search.direction": tc.direction,
        "search.sampler": tc.sampler,
        "search.pruner": tc.pruner,
        "search.n_trials": str(tc.n_trials),
        "search.fingerprint": tc.fingerprint,
        "search.storage": display_location(location),
        "nir.weight_convention": str(tc.weight_convention),
        "grid": "",
    }


def ensure_parent(study: optuna.Study, tracker: Tracker, tc: TuneConfig, location: str) -> str:
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id and tracker.status(run_id) is not None:
        if tracker.status(run_id) != "RUNNING":
            tracker.set_status(run_id, "RUNNING")
        return run_id
    run_id = tracker.start_plain(
        parent_tags(tc, location), flat_params(tc), run_name=f"search-{tc.study}"
    )
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def reconcile_parent(study: optuna.Study, tracker: Tracker, tc: TuneConfig, location: str) -> str:
    """Workers that start at the same moment may each create a parent run; the study attribute
    keeps the last one written. Re-point the trial runs of the others at it, delete them."""
    parent = study.user_attrs[PARENT_ATTR]
    shown = display_location(location)
    runs = [
        r
        for r in tracker.runs(f"tags.study = '{tc.study}'")
        if r.tags.get("search.storage") == shown
    ]  # a namesake in another storage is not ours
    for run in runs:
        if run.tags.get("stage") == "trial" and run.tags.get("mlflow.parentRunId") != parent:
            tracker.set_tags(run.run_id, {"mlflow.parentRunId": parent})
    for run in runs:
        if run.tags.get("stage") == "search" and run.run_id != parent:
            tracker.delete(run.run_id)
    return parent
