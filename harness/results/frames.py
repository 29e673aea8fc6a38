"""The tidy frames' schema: which columns identify a run, which hold metrics, what one table cell
groups (dataset x method x regularizer; a cell averages the runs of one arm over seeds)."""
from __future__ import annotations

import pandas as pd

IDENTITY = ("run_id", "dataset", "method", "regularizer", "seed", "backbone", "config_hash",
            "arm_hash", "grid", "git_sha")

PROVENANCE = ("git_dirty", "command", "reproduce", "run_name", "experiment_id", "environment_id")

# Columns of the run frames that are not metrics; metric columns are all the others (their names
# come from MLflow keys and never contain a '.', unlike the regularizer variant tags 'nir.form').
NON_METRIC = frozenset(IDENTITY + PROVENANCE + ("train_s", "epochs", "selected_epoch", "policy"))

CELL = ["dataset", "method", "regularizer"]

BASELINE = "none"


class AggregationError(ValueError):
    pass


# ============================================================== 2. analysis (pure)
def metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in NON_METRIC and "." not in c]
