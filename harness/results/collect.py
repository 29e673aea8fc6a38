"""MLflow -> two tidy frames joined by ``run_id``: ``runs`` (one row per FINISHED run: ids, tags,
last-epoch test metrics) and ``epochs`` (one row per run and epoch: every logged ``test/``,
``val/``, ``loss/`` value). The only part of harness/results/ that talks to the tracker; the
report reads the frames back with ``load_tidy``."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nirbench.harness.results.arms import arm_key
from nirbench.harness.results.frames import CELL, IDENTITY, AggregationError, with_arms
from nirbench.harness.tracking.store import Tracker, metric_name

# Per-epoch series kept in the epochs frame: evaluation, loss terms, regularizer activity.
EPOCH_PREFIXES = ("test", "val", "loss", "nir")
def runs_frame(tracker: Tracker, grid: str | None = None) -> pd.DataFrame:
    """One row per FINISHED run: ids, tags, final (last-epoch) test metrics (``recall@1``...).
    With ``grid``: the runs tagged with it, and the runs of every configuration the grid recorded
    (RESULTS/grids/<grid>.json) that another grid trained first."""
    from nirbench.harness.grid.plan import recorded_config_hashes

    hashes = recorded_config_hashes(tracker.results_dir, grid) if grid else set()
    filter_string = f"tags.grid = '{grid}'" if grid and not hashes else ""
    rows = []
    for run in tracker.runs(filter_string, statuses=("FINISHED",)):
        if grid and hashes and not (run.tags.get("grid") == grid
                                    or run.tags.get("config_hash") in hashes):
            continue
        if "superseded_by" in run.tags:
            continue
        row = {key: run.tags.get(key, "") for key in IDENTITY if key != "run_id"}
        row["run_id"] = run.run_id
        row.update(git_dirty=run.tags.get("git_dirty", ""), command=run.tags.get("command", ""),
                   reproduce=run.tags.get("reproduce", ""),
                   run_name=run.tags.get("mlflow.runName", ""),
                   experiment_id=str(tracker.experiment_id))
        # Which variant of a regularizer ran ('nir.form', 'nir.weight', ...): part of the story.
        row.update({k: v for k, v in run.tags.items()
                    if "." in k and not k.startswith("mlflow.")})
        for key, value in run.metrics.items():
            if key.startswith("test/"):
                row[metric_name(key)] = value
        row["train_s"] = run.metrics.get("time/train_total_s")
        row["arm"] = arm_key(row["regularizer"], run.tags)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(IDENTITY) if not rows else None)
    if len(frame):
        frame["seed"] = frame["seed"].astype(int)
        frame = frame.sort_values(CELL + ["seed"], ignore_index=True)
    return frame


def epochs_frame(tracker: Tracker, run_ids: Iterable[str]) -> pd.DataFrame:
    """One row per run and epoch with every per-epoch metric (``test/recall@1``, ``val/...``,
    ``loss/total``, the regularizer's activity ``nir/...``, ``time/epoch_s``). A step logged twice
    keeps its last value, as MLflow does."""
    rows = []
    for run_id in run_ids:
        keys = [k for k in tracker.client.get_run(run_id).data.metrics
                if k.split("/", 1)[0] in EPOCH_PREFIXES or k == "time/epoch_s"]
        per_epoch: dict[int, dict[str, float]] = {}
        for key in keys:
            column = key.split("/", 1)[0] + "/" + metric_name(key)
            for step, value in tracker.history(run_id, key):
                per_epoch.setdefault(step, {})[column] = value
        rows += [{"run_id": run_id, "epoch": step, **values}
                 for step, values in sorted(per_epoch.items())]
    return pd.DataFrame(rows, columns=None if rows else ["run_id", "epoch"])


def environments(tracker: Tracker, run_ids: Iterable[str]) -> dict[str, str | None]:
    """run_id -> the canonical JSON text of its ``environment.json`` artifact (None: not logged)."""
    # MLflow draws a progress bar per download; for one small JSON per run it is only noise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run_id in run_ids:
            names = {a.path for a in tracker.client.list_artifacts(run_id)}
            if "environment.json" not in names:
                out[run_id] = None
                continue
            local = tracker.client.download_artifacts(run_id, "environment.json", tmp)
            out[run_id] = json.dumps(json.loads(Path(local).read_text()), sort_keys=True)
    return out


@dataclass(frozen=True)
class Collected:
    runs: pd.DataFrame
    epochs: pd.DataFrame
    meta: dict


def collect(tracker: Tracker, grid: str | None = None) -> Collected:
    runs = runs_frame(tracker, grid)
    if runs.empty:
        where = f" of grid {grid!r}" if grid else ""
        raise AggregationError(
            f"no finished runs{where} in {tracker.uri}; run `nirbench grid "
            f"harness/configs/grids/default.yaml` (or ./run_all.sh) first")
    epochs = epochs_frame(tracker, runs["run_id"])
    counts = epochs.groupby("run_id")["epoch"].max() if len(epochs) else pd.Series(dtype=int)
    runs["epochs"] = runs["run_id"].map(counts).fillna(0).astype(int)
    envs = environments(tracker, runs["run_id"])
    ids = {text: hashlib.sha256(text.encode()).hexdigest()[:10] for text in envs.values() if text}
    runs["environment_id"] = runs["run_id"].map(lambda r: ids.get(envs[r], "") if envs[r] else "")
    meta = {"tracking_uri": tracker.uri, "experiment_id": str(tracker.experiment_id),
            "grid": grid, "environments": {i: json.loads(t) for t, i in ids.items()},
            "runs_without_environment": [r for r, t in envs.items() if t is None]}
    return Collected(runs, epochs, meta)


def load_tidy(tables_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The tidy frames and meta that ``write_tables`` saved (what the report and plots read)."""
    needed = [tables_dir / "runs.parquet", tables_dir / "epochs.parquet", tables_dir / "meta.json"]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        raise AggregationError(f"{', '.join(map(str, missing))} not found: run `nirbench "
                               f"aggregate` first (it writes the tidy tables the report reads)")
    runs = with_arms(pd.read_parquet(needed[0]))
    epochs = pd.read_parquet(needed[1])
    return runs, epochs, json.loads(needed[2].read_text())
