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


# What the runs' numbers were computed with (harness/train/numerics.py): ATen kernel set, threads,
# CPU, CUDA/cuDNN, device, the k-means engine of NMI. The report lists their distinct values.
NUMERICS_TAGS = ("numerics.cpu_capability", "numerics.threads", "numerics.cpu_model",
                 "numerics.cuda", "numerics.cudnn", "numerics.device",
                 "numerics.aten_cpu_capability_env", "nmi.kmeans_engine",
                 "numerics.changed_on_resume")


def numerics_values(runs: pd.DataFrame) -> dict[str, list[tuple[str, int]]]:
    """Tag -> [(distinct value, number of runs)] over ``runs`` for each numerics tag (a run
    without the tag counts as "(not recorded)"; a tag no run has is left out;
    ``numerics.changed_on_resume`` lists only the runs that have it)."""
    out = {}
    for tag in NUMERICS_TAGS:
        if tag not in runs.columns or not runs[tag].notna().any():
            continue
        values = runs[tag]
        if tag == "numerics.changed_on_resume":
            values = values.dropna()
            values = values[values.astype(str) != ""]
        else:
            values = values.map(lambda v: "(not recorded)" if pd.isna(v) else str(v))
        counts = values.astype(str).value_counts()
        out[tag] = sorted(((str(v), int(n)) for v, n in counts.items()), key=lambda p: (-p[1], p[0]))
    return out


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
           "NUMERICS_TAGS", "metric_columns", "numerics_values", "with_arms"]
