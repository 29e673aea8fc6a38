"""MLflow runs -> a tidy table (one row per run) -> the paper's Table 1 layout.

Numbers are the LAST epoch's test metrics (no test-set model selection), as percentages, mean +-
sample std over seeds. A table cell averages the runs of one *arm* (same resolved config but the
seed); if two different arms would land in one cell the aggregation refuses rather than mixing them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.tracking import Tracker, metric_name

IDENTITY = ("run_id", "dataset", "method", "regularizer", "seed", "backbone", "config_hash",
            "arm_hash", "grid", "git_sha")
# Table 1 of the paper, plus MAP@R (the metric Reality Check argues for).
TABLE1_METRICS = (("recall@1", "R@1"), ("nmi", "NMI"), ("map@1000", "mAP@1000"), ("map@r", "MAP@R"))
DATASET_ORDER = ("synth-cub", "synth-cars", "synth-sop", "cub200", "cars196", "sop")
METHOD_TITLES = {"proxy_anchor": "ProxyAnchor", "multi_similarity": "Multisimilarity",
                 "proxy_nca": "ProxyNCA", "soft_triple": "SoftTriplet"}


class AggregationError(ValueError):
    pass


def runs_frame(tracker: Tracker, grid: str | None = None) -> pd.DataFrame:
    """One row per FINISHED run: identity tags and final test metrics (``recall@1``, ...)."""
    filter_string = f"tags.grid = '{grid}'" if grid else ""
    rows = []
    for run in tracker.runs(filter_string, statuses=("FINISHED",)):
        row = {key: run.tags.get(key, "") for key in IDENTITY if key != "run_id"}
        row["run_id"] = run.run_id
        for key, value in run.metrics.items():
            if key.startswith("test/"):
                row[metric_name(key)] = value
        row["train_s"] = run.metrics.get("time/train_total_s")
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(IDENTITY) if not rows else None)
    if len(frame):
        frame["seed"] = frame["seed"].astype(int)
        frame = frame.sort_values(["dataset", "method", "regularizer", "seed"], ignore_index=True)
    return frame


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """mean, std, n and the run ids per dataset x method x regularizer (long format)."""
    if runs.empty:
        raise AggregationError("no finished runs to aggregate; run `nirbench grid` first")
    cells = runs.groupby(["dataset", "method", "regularizer"])["arm_hash"].nunique()
    mixed = cells[cells > 1]
    if len(mixed):
        raise AggregationError(
            "these table cells hold runs of different configurations (not only different seeds): "
            + "; ".join(" / ".join(k) for k in mixed.index)
            + ". Aggregate one grid at a time with --grid NAME.")
    metrics = [c for c in runs.columns if "@" in c or c in ("nmi", "r_precision")]
    rows = []
    for (dataset, method, reg), group in runs.groupby(["dataset", "method", "regularizer"]):
        for metric in metrics:
            values = group[metric].dropna()
            if values.empty:
                continue
            rows.append({"dataset": dataset, "method": method, "regularizer": reg,
                         "metric": metric, "mean": values.mean(),
                         "std": values.std(ddof=1) if len(values) > 1 else float("nan"),
                         "n": len(values), "run_ids": " ".join(group["run_id"])})
    return pd.DataFrame(rows)


def table1(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows: a method, then '+ NIR' under it; columns: dataset x (R@1, NMI, mAP@1000, MAP@R)."""
    datasets = sorted(summary["dataset"].unique(), key=_dataset_rank)
    index = []
    for method in sorted(summary["method"].unique(), key=lambda m: METHOD_TITLES.get(m, m)):
        regs = sorted(summary.loc[summary["method"] == method, "regularizer"].unique(),
                      key=lambda r: (r != "none", r))
        index += [(method, reg) for reg in regs]
    table = pd.DataFrame(index=pd.MultiIndex.from_tuples(index, names=["method", "regularizer"]))
    lookup = summary.set_index(["dataset", "method", "regularizer", "metric"])
    for dataset in datasets:
        for metric, title in TABLE1_METRICS:
            column = []
            for method, reg in index:
                key = (dataset, method, reg, metric)
                column.append(_cell(lookup.loc[key]) if key in lookup.index else "-")
            table[f"{dataset} {title}"] = column
    table.index = [_row_title(m, r) for m, r in index]
    table.index.name = "Method"
    return table


def to_markdown(table: pd.DataFrame) -> str:
    header = [table.index.name or ""] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for title, row in table.iterrows():
        lines.append("| " + " | ".join([str(title)] + [str(v) for v in row]) + " |")
    return "\n".join(lines)


def _cell(row: pd.Series) -> str:
    mean, std = 100 * row["mean"], 100 * row["std"]
    return f"{mean:.1f} ± {std:.1f}" if pd.notna(std) else f"{mean:.1f}"


def _row_title(method: str, reg: str) -> str:
    if reg == "none":
        return METHOD_TITLES.get(method, method)
    return f"+ {reg.upper()}"


def _dataset_rank(name: str) -> tuple[int, str]:
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


@dataclass(frozen=True)
class TableFiles:
    table_md: Path
    table_csv: Path
    runs_csv: Path
    summary_csv: Path
    markdown: str


def write_tables(tracker: Tracker, out_dir: Path, grid: str | None = None) -> TableFiles:
    runs = runs_frame(tracker, grid)
    summary = summarize(runs)
    table = table1(summary)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_seeds = runs.groupby(["dataset", "method", "regularizer"]).size()
    note = (f"Last-epoch test metrics in %, mean ± std over seeds ({n_seeds.min()}-{n_seeds.max()} "
            f"per cell); {len(runs)} runs{f' of grid {grid!r}' if grid else ''}. "
            f"MAP@R added to the paper's columns.")
    markdown = f"{to_markdown(table)}\n\n{note}\n"
    files = TableFiles(out_dir / "table1.md", out_dir / "table1.csv", out_dir / "runs.csv",
                       out_dir / "summary.csv", markdown)
    files.table_md.write_text(markdown)
    table.to_csv(files.table_csv)
    runs.to_csv(files.runs_csv, index=False)
    summary.to_csv(files.summary_csv, index=False)
    return files
