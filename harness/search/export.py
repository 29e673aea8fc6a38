"""After the search: the trials CSV, the best parameters as a complete run config, the plots, and
the summary on the MLflow parent run."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from nirbench.harness.search.attributes import ERROR_ATTR, PARENT_ATTR, SURPLUS_ATTR, counts
from nirbench.harness.search.outcomes import SearchOutcome, TrialReport, format_value
from nirbench.harness.search.plots import draw_plots
from nirbench.harness.search.storage import SEARCH_DIR, display_location, storage_location
from nirbench.harness.search.tune_file import TuneConfig
from nirbench.harness.tracking.store import Tracker


# ============================================================================ results
def finalize(
    study: optuna.Study,
    tc: TuneConfig,
    results_dir: Path,
    tracker: Tracker,
    location: str,
    ran: list[TrialReport],
    *,
    plots: bool = True,
) -> SearchOutcome:
    c = counts(study)
    parent = study.user_attrs[PARENT_ATTR]
    outcome = SearchOutcome(
        tc.study, location, c["complete"], c["pruned"], c["failed"], ran, parent_run_id=parent
    )
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
    metrics = {
        f"best/val_{tc.metric}": best.value,
        "trials/complete": c["complete"],
        "trials/pruned": c["pruned"],
        "trials/failed": c["failed"],
    }
    tracker.log_metrics(parent, metrics)
    tracker.set_tags(
        parent,
        {
            "best_trial": str(best.number),
            **{f"best.{k}": format_value(v) for k, v in best.params.items()},
            "best_config_hash": tc.final_config(best.params, tc.base.seed).arm_hash,
        },
    )
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
        "# Searched: " + ", ".join(f"{k}={format_value(v)}" for k, v in best.params.items()),
    ]
    if conv is not None:
        header.append(
            f"# NIR weight convention: {conv} "
            + (
                "(total = NIR + weight x method loss)"
                if conv == "w_align"
                else "(total = method loss + weight x NIR)"
            )
        )
    header += [
        f"# Storage: {display_location(location)}   source: {tc.source}",
        f"# Run it: nirbench run --config {path}   (arm_hash {cfg.arm_hash})",
        "",
    ]
    path.write_text("\n".join(header) + cfg.to_yaml())
    return path


def write_trials_csv(
    trials: Sequence[FrozenTrial], tc: TuneConfig, tracker: Tracker, path: Path
) -> Path:
    shown = display_location(storage_location(tc, tracker.results_dir))
    runs = {
        r.tags.get("trial"): r.run_id
        for r in tracker.runs(f"tags.study = '{tc.study}' and tags.stage = 'trial'")
        if r.tags.get("search.storage") == shown
    }
    keys = [p.key for p in tc.space]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "number",
                "state",
                f"val_{tc.metric}",
                "last_epoch",
                *keys,
                "seconds",
                "mlflow_run_id",
                "note",
            ]
        )
        for t in trials:
            seconds = (
                (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete and t.datetime_start
                else ""
            )
            note = t.user_attrs.get(ERROR_ATTR) or (
                "surplus" if t.user_attrs.get(SURPLUS_ATTR) else ""
            )
            writer.writerow(
                [
                    t.number,
                    t.state.name,
                    "" if t.value is None else t.value,
                    t.last_step if t.last_step is not None else "",
                    *[t.params.get(k, "") for k in keys],
                    seconds,
                    runs.get(str(t.number), ""),
                    note,
                ]
            )
    return path
