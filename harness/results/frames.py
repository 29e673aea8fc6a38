"""The tidy frames' schema: which columns identify a run, which hold metrics, what one table cell
groups (dataset x method x arm; a cell averages the runs of one arm over seeds; harness/results/
arms.py says what an arm is)."""
from __future__ import annotations

import pandas as pd

from nirbench.harness.results.arms import BASELINE, arm_key

IDENTITY = ("run_id", "dataset", "method", "regularizer", "arm", "seed", "backbone",
            "config_hash", "arm_hash", "grid", "git_sha")

PROVENANCE = ("git_dirty", "command", "reproduce", "run_name", "experiment_id", "environment_id")

# Columns of the run frames that are not metrics; metric columns are all the others (their names
# come from MLflow keys and never contain a '.', unlike the regularizer variant tags 'nir.form').
NON_METRIC = frozenset(IDENTITY + PROVENANCE + ("train_s", "epochs", "selected_epoch", "policy",
                                                "rise", "still_rising"))

CELL = ["dataset", "method", "arm"]


class AggregationError(ValueError):
    pass


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in NON_METRIC and "." not in c]


def with_arms(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with its ``arm`` column (derived from the regularizer and its variant tags when a
    frame was saved before arms existed)."""
    if runs.empty or ("arm" in runs.columns and runs["arm"].astype(bool).all()):
        return runs if "arm" in runs.columns else runs.assign(arm=pd.Series(dtype=str))
    tags = [c for c in runs.columns if "." in c]
    arms = [arm_key(row["regularizer"], {k: row[k] for k in tags if isinstance(row[k], str)})
            for _, row in runs.iterrows()]
    return runs.assign(arm=arms)


__all__ = ["AggregationError", "BASELINE", "CELL", "IDENTITY", "NON_METRIC", "PROVENANCE",
           "metric_columns", "with_arms"]
