"""MLflow runs -> tidy tables -> the paper's tables, the NIR-minus-baseline statistics, exports.

Three layers, each usable alone:

1. ``collect``: MLflow -> two tidy frames joined by ``run_id``: ``runs`` (one row per FINISHED run:
   ids, tags, last-epoch test metrics) and ``epochs`` (one row per run and epoch: every logged
   ``test/``, ``val/``, ``loss/`` value). This is the only part that talks to the tracker.
2. ``analyse``: pure pandas on those frames. For each model-selection policy (last epoch, best test
   epoch as the paper did, best validation epoch when a validation split was logged) it picks one
   epoch per run, summarises each table cell over seeds (mean, std, t 95% CI), pairs NIR with its
   baseline by seed (``harness.stats``: paired t, Wilcoxon, bootstrap, verdict) and, for the real
   datasets, sets the published numbers beside ours.
3. Layouts (``Table``) rendered as Markdown, LaTeX (booktabs, best per column in bold), CSV, HTML.

A table cell averages the runs of one *arm* (same resolved config but the seed); if two arms would
land in one cell the aggregation refuses rather than mixing them. Percent metrics are shown x100.
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness import published as paper
from harness import stats
from harness.tracking import Tracker, metric_name

IDENTITY = ("run_id", "dataset", "method", "regularizer", "seed", "backbone", "config_hash",
            "arm_hash", "grid", "git_sha")
PROVENANCE = ("git_dirty", "command", "reproduce", "run_name", "experiment_id", "environment_id")
# Columns of the run frames that are not metrics; metric columns are all the others (their names
# come from MLflow keys and never contain a '.', unlike the regularizer variant tags 'nir.form').
NON_METRIC = frozenset(IDENTITY + PROVENANCE + ("train_s", "epochs", "selected_epoch", "policy"))
CELL = ["dataset", "method", "regularizer"]
BASELINE = "none"

# Table 1 of the paper, plus MAP@R (the metric Reality Check argues for).
TABLE1_METRICS = (("recall@1", "R@1"), ("nmi", "NMI"), ("map@1000", "mAP@1000"), ("map@r", "MAP@R"))
# The NIR gain shown in terminal, comparison tables and bar plots (the CSVs hold every metric).
KEY_METRICS = ("recall@1", "map@r", "map@1000", "nmi")
STRUCTURE_METRICS = ("rho", "pi_density", "sigma2_kappa", "g2")
DATASET_ORDER = ("synth-cub", "synth-cars", "synth-sop", "cub200", "cars196", "sop")
METHOD_TITLES = {"proxy_anchor": "ProxyAnchor", "multi_similarity": "Multisimilarity",
                 "proxy_nca": "ProxyNCA", "soft_triple": "SoftTriplet",
                 "normalized_softmax": "NormSoftmax", "arcface": "ArcFace", "cosface": "CosFace",
                 "contrastive": "Contrastive", "triplet": "Triplet", "margin": "Margin"}
METRIC_TITLES = {"map@r": "MAP@R", "r_precision": "R-Prec", "nmi": "NMI", "map@1000": "mAP@1000",
                 "rho": "ρ", "pi_density": "π density", "sigma2_kappa": "σ²κ", "g2": "G2"}


class AggregationError(ValueError):
    pass


# ============================================================== model-selection policies
@dataclass(frozen=True)
class Policy:
    name: str            # file/folder name
    title: str
    selector: str | None  # epochs-frame column whose maximum picks the epoch; None: last epoch
    description: str


LAST = Policy("last", "last epoch", None,
              "test metrics of the final epoch: no model selection (the harness default)")
BEST_TEST = Policy("best-test", "best test epoch", "test/recall@1",
                   "test metrics of the epoch with the highest test R@1, as the paper did: "
                   "optimistic, because the test set chose the model")
BEST_VAL = Policy("best-val", "best validation epoch", "val/recall@1",
                  "test metrics of the epoch with the highest validation R@1 (metrics logged as "
                  "val/<metric>): honest model selection")
POLICIES = (LAST, BEST_TEST, BEST_VAL)
NO_VALIDATION = "no validation split: no run logged val/recall_at_1"


class PolicyUnavailable(AggregationError):
    def __init__(self, policy: Policy, reason: str) -> None:
        super().__init__(f"{policy.title}: {reason}")
        self.reason = reason


def select_epochs(epochs: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """One row per run: ``run_id``, ``selected_epoch`` and that epoch's test metrics (unprefixed,
    ``recall@1``, ...). Ties go to the earliest epoch (deterministic, and the cheaper model).
    Runs that never logged the policy's selector are left out (``PolicyUnavailable`` if all are)."""
    tests = [c for c in epochs.columns if c.startswith("test/")]
    if not tests:
        raise AggregationError("the epoch table has no test/ metrics")
    selector = policy.selector or "test/recall@1"
    if selector not in epochs.columns or epochs[selector].isna().all():
        reason = NO_VALIDATION if policy is BEST_VAL else f"no run logged {selector}"
        raise PolicyUnavailable(policy, reason)
    # "last" picks the last epoch that has test metrics; the others the first maximum.
    usable = epochs.dropna(subset=[selector]).sort_values(["run_id", "epoch"], ignore_index=True)
    if policy.selector is None:
        picked = usable.groupby("run_id").tail(1)
    else:
        picked = usable.loc[usable.groupby("run_id")[selector].idxmax()]
    out = picked[["run_id", "epoch"] + tests].rename(
        columns={"epoch": "selected_epoch", **{c: c.split("/", 1)[1] for c in tests}})
    return out.reset_index(drop=True)


# ============================================================== 1. MLflow -> tidy frames
def runs_frame(tracker: Tracker, grid: str | None = None) -> pd.DataFrame:
    """One row per FINISHED run: ids, tags, final (last-epoch) test metrics (``recall@1``...)."""
    filter_string = f"tags.grid = '{grid}'" if grid else ""
    rows = []
    for run in tracker.runs(filter_string, statuses=("FINISHED",)):
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
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(IDENTITY) if not rows else None)
    if len(frame):
        frame["seed"] = frame["seed"].astype(int)
        frame = frame.sort_values(CELL + ["seed"], ignore_index=True)
    return frame


def epochs_frame(tracker: Tracker, run_ids: Iterable[str]) -> pd.DataFrame:
    """One row per run and epoch with every per-epoch metric (``test/recall@1``, ``val/...``,
    ``loss/total``, ``time/epoch_s``). A step logged twice keeps its last value, as MLflow does."""
    rows = []
    for run_id in run_ids:
        keys = [k for k in tracker.client.get_run(run_id).data.metrics
                if k.split("/", 1)[0] in ("test", "val", "loss") or k == "time/epoch_s"]
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


# ============================================================== 2. analysis (pure)
def metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in NON_METRIC and "." not in c]


def is_percent(metric: str) -> bool:
    return metric.startswith(("recall@", "map@")) or metric in ("r_precision", "nmi")


def higher_is_better(metric: str) -> bool | None:
    """True for retrieval/clustering scores; None (no "better") for structure metrics."""
    return True if is_percent(metric) else None


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """mean, std, n, t 95% CI, seeds and run ids per dataset x method x regularizer x metric."""
    if runs.empty:
        raise AggregationError("no finished runs to aggregate; run `nirbench grid` first")
    cells = runs.groupby(CELL)["arm_hash"].nunique()
    mixed = cells[cells > 1]
    if len(mixed):
        raise AggregationError(
            "these table cells hold runs of different configurations (not only different seeds): "
            + "; ".join(" / ".join(k) for k in mixed.index)
            + ". Aggregate one grid at a time with --grid NAME.")
    twins = runs[runs.duplicated(CELL + ["seed"], keep=False)]
    if len(twins):  # the runner never finishes one config twice; pairing by seed needs one run
        raise AggregationError(
            "several finished runs share a table cell and a seed: "
            + " ".join(twins["run_id"]) + ". Delete the extra ones in MLflow or use --grid NAME.")
    rows = []
    for (dataset, method, reg), group in runs.groupby(CELL):
        for metric in metric_columns(runs):
            kept = group.dropna(subset=[metric])  # a run without this metric is counted out (n)
            if kept.empty:
                continue
            interval = stats.t_interval(kept[metric])
            rows.append({"dataset": dataset, "method": method, "regularizer": reg,
                         "metric": metric, "mean": interval.mean, "std": interval.std,
                         "n": interval.n, "ci95_lo": interval.lo, "ci95_hi": interval.hi,
                         "seeds": " ".join(map(str, kept["seed"])),
                         "run_ids": " ".join(kept["run_id"])})
    return pd.DataFrame(rows)


def compare_arms(selected: pd.DataFrame, *, resamples: int = stats.BOOTSTRAP_RESAMPLES,
                 seed: int = stats.BOOTSTRAP_SEED) -> pd.DataFrame:
    """Regularized arm minus its baseline (regularizer 'none'), per dataset, method and metric,
    paired by seed. Seeds present in only one arm are listed in ``unpaired_seeds``."""
    rows = []
    base = selected[selected["regularizer"] == BASELINE]
    treated = selected[selected["regularizer"] != BASELINE]
    for (dataset, method, reg), arm in treated.groupby(CELL):
        ref = base[(base["dataset"] == dataset) & (base["method"] == method)]
        if ref.empty:
            continue
        pairs = ref.merge(arm, on="seed", suffixes=("_b", "_t"))
        unpaired = sorted(set(ref["seed"]) ^ set(arm["seed"]))
        for metric in metric_columns(selected):
            both = pairs.dropna(subset=[f"{metric}_b", f"{metric}_t"])
            if both.empty:
                continue
            result = stats.paired_comparison(both[f"{metric}_b"], both[f"{metric}_t"],
                                             higher_is_better=higher_is_better(metric),
                                             resamples=resamples, seed=seed)
            rows.append({"dataset": dataset, "method": method, "regularizer": reg,
                         "metric": metric, "baseline_mean": both[f"{metric}_b"].mean(),
                         "treated_mean": both[f"{metric}_t"].mean(), **result.as_dict(),
                         "seeds": " ".join(map(str, both["seed"])),
                         "unpaired_seeds": " ".join(map(str, unpaired)),
                         "baseline_run_ids": " ".join(both["run_id_b"]),
                         "treated_run_ids": " ".join(both["run_id_t"])})
    return pd.DataFrame(rows)


def compare_published(summary: pd.DataFrame) -> pd.DataFrame:
    """Ours beside the paper's Table 1 for the real datasets (in %); empty for synthetic ones."""
    rows = []
    for row in summary.itertuples(index=False):
        ref = paper.published(row.method, row.regularizer, row.dataset, row.metric)
        if ref is None:
            continue
        ours, ours_std = 100 * row.mean, 100 * row.std
        rows.append({"dataset": row.dataset, "method": row.method, "regularizer": row.regularizer,
                     "metric": row.metric, "ours_mean": ours, "ours_std": ours_std, "n": row.n,
                     "paper_mean": ref[0], "paper_std": ref[1], "difference": ours - ref[0],
                     "run_ids": row.run_ids})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class PolicyResult:
    policy: Policy
    note: str                      # why unavailable, or which runs were left out
    selected: pd.DataFrame = field(default_factory=pd.DataFrame)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)
    published: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def available(self) -> bool:
        return not self.selected.empty


@dataclass(frozen=True)
class Analysis:
    runs: pd.DataFrame
    epochs: pd.DataFrame
    results: tuple[PolicyResult, ...]
    grid: str | None = None

    def policy(self, name: str) -> PolicyResult:
        return next(r for r in self.results if r.policy.name == name)


def analyse(runs: pd.DataFrame, epochs: pd.DataFrame, grid: str | None = None, *,
            resamples: int = stats.BOOTSTRAP_RESAMPLES,
            seed: int = stats.BOOTSTRAP_SEED) -> Analysis:
    summarize(runs)  # refuses empty input and mixed arms before anything else
    identity = runs[[c for c in runs.columns if c not in metric_columns(runs)]]
    results = []
    for policy in POLICIES:
        try:
            picked = select_epochs(epochs, policy)
        except PolicyUnavailable as err:
            if policy is LAST:  # every other table rests on it
                raise AggregationError(f"no run has a per-epoch test history: {err}") from None
            results.append(PolicyResult(policy, err.reason))
            continue
        selected = identity.merge(picked, on="run_id").sort_values(CELL + ["seed"],
                                                                   ignore_index=True)
        left_out = sorted(set(runs["run_id"]) - set(selected["run_id"]))
        note = (f"{len(left_out)} of {len(runs)} runs have no {policy.selector or 'test'} "
                f"history and are left out: {' '.join(left_out)}" if left_out else "")
        summary = summarize(selected)
        results.append(PolicyResult(policy, note, selected, summary,
                                    compare_arms(selected, resamples=resamples, seed=seed),
                                    compare_published(summary)))
    return Analysis(runs, epochs, tuple(results), grid)


# ============================================================== 3. layouts
@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None = None   # what "best in column" compares (display units); None: no rank
    run_ids: tuple[str, ...] = ()
    title: str = ""              # hover text in HTML
    css: str = ""                # extra HTML class (the verdict colour)
    detail: str = ""             # secondary text (a CI): same line in md/csv, smaller in tex/html

    @property
    def full(self) -> str:
        return f"{self.text} {self.detail}" if self.detail else self.text


@dataclass(frozen=True)
class Column:
    group: str
    title: str
    bold_best: bool = False
    decimals: int = 1


@dataclass(frozen=True)
class Table:
    name: str
    caption: str
    label_names: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    columns: tuple[Column, ...]
    cells: tuple[tuple[Cell, ...], ...]
    note: str = ""

    def best(self) -> set[tuple[int, int]]:
        """(row, column) of the best cell of every ``bold_best`` column, compared as displayed
        (so two values that print the same are both bold); none when fewer than two values."""
        out = set()
        for j, column in enumerate(self.columns):
            if not column.bold_best:
                continue
            shown = {i: round(row[j].value, column.decimals) for i, row in enumerate(self.cells)
                     if row[j].value is not None and math.isfinite(row[j].value)}
            if len(shown) >= 2:
                top = max(shown.values())
                out |= {(i, j) for i, v in shown.items() if v == top}
        return out

    def header(self) -> list[str]:
        return list(self.label_names) + [f"{c.group} {c.title}".strip() for c in self.columns]

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame([[c.full for c in row] for row in self.cells],
                             columns=self.header()[len(self.label_names):])
        labels = pd.DataFrame(list(self.rows), columns=list(self.label_names))
        return pd.concat([labels, frame], axis=1).set_index(list(self.label_names))


MISSING = Cell("-")


def method_title(method: str, reg: str) -> str:
    return METHOD_TITLES.get(method, method) if reg == BASELINE else f"+ {reg.upper()}"


def metric_title(metric: str) -> str:
    if metric.startswith("recall@"):
        return "R@" + metric.split("@", 1)[1]
    return METRIC_TITLES.get(metric, metric)


def metric_order(metric: str) -> tuple:
    """Recall@k by k, then MAP@R, R-Precision, NMI, mAP@1000, then anything else by name."""
    if metric.startswith("recall@") and metric.split("@")[1].isdigit():
        return (0, int(metric.split("@")[1]), "")
    fixed = ("map@r", "r_precision", "nmi", "map@1000")
    return (1, fixed.index(metric), "") if metric in fixed else (2, 0, metric)


def dataset_rank(name: str) -> tuple[int, str]:
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


def _arm_rows(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """A method, then its regularized arms under it; methods in the paper's (alphabetic) order."""
    index = []
    for method in sorted(summary["method"].unique(), key=lambda m: METHOD_TITLES.get(m, m)):
        regs = sorted(summary.loc[summary["method"] == method, "regularizer"].unique(),
                      key=lambda r: (r != BASELINE, r))
        index += [(method, reg) for reg in regs]
    return index


def fmt(value: float, metric: str, decimals: int | None = None, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–" if value is None or math.isnan(value) else ("+∞" if value > 0 else "−∞")
    scale = 100.0 if is_percent(metric) else 1.0
    d = decimals if decimals is not None else (1 if is_percent(metric) else 3)
    return f"{scale * value:{'+' if sign else ''}.{d}f}"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _summary_cell(row: pd.Series, metric: str, with_ci: bool) -> Cell:
    text = fmt(row["mean"], metric)
    if math.isfinite(row["std"]):
        text += f" ± {fmt(row['std'], metric)}"
    detail = (f"[{fmt(row['ci95_lo'], metric)}, {fmt(row['ci95_hi'], metric)}]"
              if with_ci and math.isfinite(row["ci95_lo"]) else "")
    ids = tuple(row["run_ids"].split())
    ci = (f"; t 95% CI [{fmt(row['ci95_lo'], metric, 2)}, {fmt(row['ci95_hi'], metric, 2)}]"
          if math.isfinite(row["ci95_lo"]) else "")
    title = f"mean of {row['n']} run(s), seeds {row['seeds']}{ci}; MLflow runs: {' '.join(ids)}"
    scale = 100.0 if is_percent(metric) else 1.0
    return Cell(text, scale * row["mean"], ids, title, detail=detail)


def table1_layout(summary: pd.DataFrame, policy: Policy, n_runs: int, grid: str | None) -> Table:
    """Rows: a method, then '+ NIR' under it; columns: dataset x (R@1, NMI, mAP@1000, MAP@R)."""
    datasets = sorted(summary["dataset"].unique(), key=dataset_rank)
    index = _arm_rows(summary)
    lookup = summary.set_index(CELL + ["metric"])
    columns, cells = [], [[] for _ in index]
    for dataset in datasets:
        for metric, title in TABLE1_METRICS:
            columns.append(Column(dataset, title, bold_best=True))
            for i, (method, reg) in enumerate(index):
                key = (dataset, method, reg, metric)
                cells[i].append(_summary_cell(lookup.loc[key], metric, False)
                                if key in lookup.index else MISSING)
    n = summary.groupby(CELL)["n"].max()
    per_cell = f"{n.min()}" if n.min() == n.max() else f"{n.min()}-{n.max()}"
    note = (f"{policy.title.capitalize()} test metrics in %, mean ± std over seeds "
            f"({per_cell} per cell); {n_runs} runs"
            f"{f' of grid {grid!r}' if grid else ''}. MAP@R added to the paper's columns.")
    return Table("table1", f"Table 1 layout ({policy.title})", ("Method",),
                 tuple((method_title(m, r),) for m, r in index), tuple(columns),
                 tuple(tuple(r) for r in cells), note)


def extended_layout(summary: pd.DataFrame, policy: Policy) -> list[Table]:
    """Per dataset: every retrieval/clustering metric, mean ± std [t 95% CI]."""
    tables = []
    for dataset in sorted(summary["dataset"].unique(), key=dataset_rank):
        part = summary[summary["dataset"] == dataset]
        metrics = sorted((m for m in part["metric"].unique() if is_percent(m)), key=metric_order)
        index = _arm_rows(part)
        lookup = part.set_index(CELL + ["metric"])
        cells = [[_summary_cell(lookup.loc[(dataset, m, r, metric)], metric, True)
                  if (dataset, m, r, metric) in lookup.index else MISSING for metric in metrics]
                 for m, r in index]
        tables.append(Table(
            f"extended-{dataset}", f"{dataset}: all metrics ({policy.title})", ("Method",),
            tuple((method_title(m, r),) for m, r in index),
            tuple(Column(dataset, metric_title(m), bold_best=True) for m in metrics),
            tuple(tuple(r) for r in cells),
            "in %, mean ± std [t-based 95% confidence interval of the mean] over seeds"))
    return tables


def comparison_layout(comparisons: pd.DataFrame, policy: Policy,
                      metrics: Iterable[str] = KEY_METRICS + STRUCTURE_METRICS) -> Table:
    wanted = list(metrics)
    part = comparisons[comparisons["metric"].isin(wanted)].copy()
    part["_order"] = part["metric"].map(wanted.index)
    part["_rank"] = part["dataset"].map(dataset_rank)
    part = part.sort_values(["_rank", "method", "regularizer", "_order"])
    titles = ("pairs", "baseline", "regularized", "Δ", "95% t CI", "95% bootstrap CI",
              "p (paired t)", "p (Wilcoxon)", "verdict")
    rows, cells = [], []
    for r in part.itertuples(index=False):
        ids = tuple(r.baseline_run_ids.split() + r.treated_run_ids.split())
        title = (f"seeds {r.seeds}; baseline runs {r.baseline_run_ids}; regularized runs "
                 f"{r.treated_run_ids}" + (f"; unpaired seeds {r.unpaired_seeds}"
                                           if r.unpaired_seeds else ""))
        m = r.metric
        d = 2 if is_percent(m) else 3
        texts = (str(r.n), fmt(r.baseline_mean, m), fmt(r.treated_mean, m),
                 fmt(r.mean_diff, m, d, sign=True),
                 f"[{fmt(r.t_lo, m, d, True)}, {fmt(r.t_hi, m, d, True)}]",
                 f"[{fmt(r.boot_lo, m, d, True)}, {fmt(r.boot_hi, m, d, True)}]",
                 fmt_p(r.t_p), fmt_p(r.wilcoxon_p), r.verdict)
        rows.append((r.dataset, METHOD_TITLES.get(r.method, r.method), r.regularizer.upper(),
                     metric_title(m)))
        verdict_css = f"verdict-{r.verdict.replace(' ', '-')}"
        cells.append(tuple(Cell(t, None, ids, title, verdict_css if k == len(texts) - 1 else "")
                           for k, t in enumerate(texts)))
    note = (f"{policy.title.capitalize()}. Δ = regularized − baseline, paired by seed, in "
            f"percentage points for % metrics. Verdict: 'helps'/'hurts' when the bootstrap 95% CI "
            f"({stats.BOOTSTRAP_RESAMPLES} resamples) excludes 0 and the paired t-test p < "
            f"{stats.ALPHA}; 'too few seeds' below {stats.MIN_PAIRS} pairs; Wilcoxon reported, "
            f"not used (it cannot reach p < 0.05 with fewer than 6 pairs). Structure metrics say "
            f"'higher'/'lower' instead.")
    return Table("comparison", f"NIR minus baseline ({policy.title})",
                 ("Dataset", "Method", "Regularizer", "Metric"), tuple(rows),
                 tuple(Column("", t) for t in titles), tuple(cells), note)


def published_layout(pub: pd.DataFrame, policy: Policy) -> list[Table]:
    tables = []
    for dataset in sorted(pub["dataset"].unique(), key=dataset_rank):
        part = pub[pub["dataset"] == dataset]
        index = _arm_rows(part)
        lookup = part.set_index(CELL + ["metric"])
        columns = [Column(metric_title(m), t) for m in paper.METRICS
                   for t in ("ours", "paper", "Δ")]
        cells = []
        for method, reg in index:
            row = []
            for metric in paper.METRICS:
                key = (dataset, method, reg, metric)
                if key not in lookup.index:
                    row += [MISSING] * 3
                    continue
                r = lookup.loc[key]
                ids = tuple(r["run_ids"].split())
                ours = f"{r['ours_mean']:.1f}" + (f" ± {r['ours_std']:.1f}"
                                                  if math.isfinite(r["ours_std"]) else "")
                row += [Cell(ours, r["ours_mean"], ids, f"MLflow runs: {' '.join(ids)}"),
                        Cell(f"{r['paper_mean']:.1f} ± {r['paper_std']:.1f}", r["paper_mean"],
                             title=f"published: {paper.SOURCE}"),
                        Cell(f"{r['difference']:+.1f}", r["difference"], ids,
                             f"ours − paper; MLflow runs: {' '.join(ids)}")]
            cells.append(tuple(row))
        tables.append(Table(
            f"published-{dataset}", f"{dataset}: reproduced ({policy.title}) vs published",
            ("Method",), tuple((method_title(m, r),) for m, r in index), tuple(columns),
            tuple(cells), f"in %; published: {paper.SOURCE}. Δ = ours − paper."
            + ("" if policy is BEST_TEST else " The paper picked the best test epoch: compare "
               "with the best-test policy for like for like.")))
    return tables


def layouts(result: PolicyResult, n_runs: int, grid: str | None) -> dict[str, list[Table]]:
    """The tables of one policy by export name; 'published' only for the real datasets."""
    out = {"table1": [table1_layout(result.summary, result.policy, n_runs, grid)],
           "extended": extended_layout(result.summary, result.policy),
           "comparison": [comparison_layout(result.comparisons, result.policy)]
           if not result.comparisons.empty else []}
    if not result.published.empty:
        out["published"] = published_layout(result.published, result.policy)
    return out


# ============================================================== renderers
def to_markdown(table: Table) -> str:
    header = table.header()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for labels, row in zip(table.rows, table.cells):
        lines.append("| " + " | ".join(list(labels) + [c.full for c in row]) + " |")
    return "\n".join(lines)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
          "^": r"\textasciicircum{}", "±": r"$\pm$", "Δ": r"$\Delta$", "−": "--",
          "–": "--", "∞": r"$\infty$", "ρ": r"$\rho$", "π": r"$\pi$", "σ": r"$\sigma$",
          "κ": r"$\kappa$", "²": r"$^2$", "<": r"$<$", ">": r"$>$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); the best cell of each ranked column bold."""
    best = table.best()
    n_labels = len(table.label_names)
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{latex_escape(table.caption)}}}",
             rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:-]', '-', table.name)}}}",
             r"\begin{tabular}{" + "l" * n_labels + "c" * len(table.columns) + "}", r"\toprule"]
    spans = _group_spans(table.columns)
    if any(group for group, _, _ in spans):
        head, rules = [""] * n_labels, []
        for group, start, stop in spans:
            head.append(rf"\multicolumn{{{stop - start}}}{{c}}{{{latex_escape(group)}}}")
            if group:
                rules.append(rf"\cmidrule(lr){{{n_labels + start + 1}-{n_labels + stop}}}")
        lines += [" & ".join(head) + r" \\", " ".join(rules)]
    lines.append(" & ".join(latex_escape(t) for t in list(table.label_names)
                            + [c.title for c in table.columns]) + r" \\")
    lines.append(r"\midrule")
    for i, (labels, row) in enumerate(zip(table.rows, table.cells)):
        texts = [latex_escape(c.text) for c in row]
        texts = [rf"\textbf{{{t}}}" if (i, j) in best else t for j, t in enumerate(texts)]
        texts = [t + (rf" {{\scriptsize {latex_escape(c.detail)}}}" if c.detail else "")
                 for t, c in zip(texts, row)]
        lines.append(" & ".join([latex_escape(x) for x in labels] + texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.note:
        lines.append(rf"\par\smallskip{{\footnotesize {latex_escape(table.note)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines)


def to_html(table: Table, link: Callable[[tuple[str, ...]], str | None] | None = None) -> str:
    """A <table> fragment. Every number carries its MLflow run ids (title and data-runs);
    ``link`` turns run ids into an href (the report links to its runs section)."""
    best = table.best()
    e = html.escape
    spans = _group_spans(table.columns)
    grouped = any(group for group, _, _ in spans)
    out = [f'<div class="scroll"><table class="results" id="table-{e(table.name)}">',
           f"<caption>{e(table.caption)}</caption>", "<thead>"]
    if grouped:
        out.append("<tr>" + "".join(f'<th rowspan="2">{e(n)}</th>' for n in table.label_names)
                   + "".join(f'<th colspan="{b - a}" class="group">{e(g)}</th>'
                             for g, a, b in spans) + "</tr>")
        out.append("<tr>" + "".join(f"<th>{e(c.title)}</th>" for c in table.columns) + "</tr>")
    else:
        out.append("<tr>" + "".join(f"<th>{e(t)}</th>" for t in table.header()) + "</tr>")
    out.append("</thead><tbody>")
    for i, (labels, row) in enumerate(zip(table.rows, table.cells)):
        tds = []
        for j, cell in enumerate(row):
            cls = " ".join(filter(None, ("num", "best" if (i, j) in best else "", cell.css)))
            text = e(cell.text)
            if (i, j) in best:
                text = f"<b>{text}</b>"
            href = link(cell.run_ids) if (link and cell.run_ids) else None
            if href:
                text = f'<a href="{e(href)}">{text}</a>'
            if cell.detail:
                text += f'<br><small class="detail">{e(cell.detail)}</small>'
            attrs = f' title="{e(cell.title)}"' if cell.title else ""
            attrs += f' data-runs="{e(" ".join(cell.run_ids))}"' if cell.run_ids else ""
            tds.append(f'<td class="{cls}"{attrs}>{text}</td>')
        out.append("<tr>" + "".join(f'<th scope="row">{e(x)}</th>' for x in labels)
                   + "".join(tds) + "</tr>")
    out.append("</tbody></table></div>")
    if table.note:
        out.append(f'<p class="note">{e(table.note)}</p>')
    return "\n".join(out)


def _group_spans(columns: tuple[Column, ...]) -> list[tuple[str, int, int]]:
    spans: list[tuple[str, int, int]] = []
    for j, column in enumerate(columns):
        if spans and spans[-1][0] == column.group:
            spans[-1] = (column.group, spans[-1][1], j + 1)
        else:
            spans.append((column.group, j, j + 1))
    return spans


def html_page(title: str, body: str) -> str:
    """A standalone page for the HTML exports (no external resources)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>'
            f"{html.escape(title)}</title><style>{TABLE_CSS}</style></head><body>\n{body}\n"
            f"</body></html>\n")


TABLE_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em; color: #222; }
table.results { border-collapse: collapse; margin: 0.8em 0 0.2em; font-size: 0.88em; }
table.results caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
table.results th, table.results td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; }
table.results thead th { border-bottom: 2px solid #444; background: #f5f5f5; }
table.results td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.results td.best { background: #eef6ee; }
table.results th[scope=row] { text-align: left; font-weight: normal; white-space: nowrap; }
table.results a { color: inherit; text-decoration: none; border-bottom: 1px dotted #888; }
td.verdict-helps { color: #1d7a32; font-weight: 600; }
td.verdict-hurts { color: #b2262b; font-weight: 600; }
td.verdict-higher, td.verdict-lower { color: #1f4e9c; font-weight: 600; }
td.verdict-too-few-seeds, td.verdict-no-detectable-difference { color: #666; }
div.scroll { overflow-x: auto; max-width: 100%; }
table.results small.detail { color: #666; font-size: 0.82em; }
p.note { font-size: 0.8em; color: #555; max-width: 70em; margin-top: 0.2em; }
"""


# ============================================================== files
@dataclass(frozen=True)
class TableFiles:
    table_md: Path
    table_csv: Path
    runs_csv: Path
    summary_csv: Path
    markdown: str             # what `nirbench aggregate` prints
    written: tuple[Path, ...] = ()


def policy_dir(out_dir: Path, policy: Policy) -> Path:
    """The default policy (last epoch) writes at the top of the tables folder (the names the
    README promises); the others in a subfolder named after the policy."""
    return out_dir if policy is LAST else out_dir / policy.name


def write_tables(tracker: Tracker, out_dir: Path, grid: str | None = None, *,
                 resamples: int = stats.BOOTSTRAP_RESAMPLES, seed: int = stats.BOOTSTRAP_SEED,
                 command: str = "") -> TableFiles:
    collected = collect(tracker, grid)
    analysis = analyse(collected.runs, collected.epochs, grid, resamples=resamples, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save_frame(frame: pd.DataFrame, stem: Path) -> None:
        frame.to_csv(stem.with_suffix(".csv"), index=False)
        frame.to_parquet(stem.with_suffix(".parquet"), index=False)
        written.extend([stem.with_suffix(".csv"), stem.with_suffix(".parquet")])

    save_frame(analysis.runs, out_dir / "runs")
    save_frame(analysis.epochs, out_dir / "epochs")
    selected = [r.selected.assign(policy=r.policy.name) for r in analysis.results if r.available]
    save_frame(pd.concat(selected, ignore_index=True), out_dir / "selected")
    meta = {**collected.meta, "bootstrap_resamples": resamples, "bootstrap_seed": seed,
            "command": command, "created_utc": _now(),
            "policies": {r.policy.name: {"title": r.policy.title, "available": r.available,
                                         "description": r.policy.description, "note": r.note}
                         for r in analysis.results}}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    written.append(out_dir / "meta.json")

    for result in analysis.results:
        folder = policy_dir(out_dir, result.policy)
        folder.mkdir(parents=True, exist_ok=True)
        if not result.available:
            (folder / "README.md").write_text(f"# {result.policy.title}\n\n{result.note}\n")
            written.append(folder / "README.md")
            continue
        result.summary.to_csv(folder / "summary.csv", index=False)
        written.append(folder / "summary.csv")
        for name, tables in layouts(result, len(analysis.runs), grid).items():
            written += _export(folder, name, tables, result)

    last = analysis.policy(LAST.name)
    table = layouts(last, len(analysis.runs), grid)["table1"][0]
    markdown = terminal_summary(analysis, table, out_dir)
    return TableFiles(out_dir / "table1.md", out_dir / "table1.csv", out_dir / "runs.csv",
                      out_dir / "summary.csv", markdown, tuple(written))


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _export(folder: Path, name: str, tables: list[Table], result: PolicyResult) -> list[Path]:
    paths = [folder / f"{name}.{ext}" for ext in ("md", "tex", "html", "csv")]
    if not tables:  # e.g. no regularized arm with a baseline to compare with
        return []
    paths[0].write_text("\n\n".join(f"{to_markdown(t)}\n\n{t.note}" for t in tables) + "\n")
    paths[1].write_text("% generated by `nirbench aggregate`; needs \\usepackage{booktabs}\n"
                        + "\n\n".join(to_latex(t) for t in tables) + "\n")
    paths[2].write_text(html_page(f"nirbench {name} ({result.policy.title})",
                                  "\n".join(to_html(t) for t in tables)))
    # CSV: the numeric long tables where they exist (comparisons, published), else the layout.
    numeric = {"comparison": result.comparisons, "published": result.published}.get(name)
    if numeric is not None:
        numeric.to_csv(paths[3], index=False)
    elif len(tables) == 1:
        tables[0].to_frame().to_csv(paths[3])
    else:
        pd.concat({t.name: t.to_frame() for t in tables}, names=["table"]).to_csv(paths[3])
    return paths


def terminal_summary(analysis: Analysis, table1: Table, out_dir: Path) -> str:
    parts = [to_markdown(table1), "", table1.note]
    last = analysis.policy(LAST.name)
    if not last.comparisons.empty:
        shown = ("recall@1", "map@r")
        gains = last.comparisons[last.comparisons["metric"].isin(shown)].copy()
        gains["_order"] = list(zip(gains["dataset"].map(dataset_rank), gains["method"],
                                   gains["regularizer"], gains["metric"].map(shown.index)))
        parts += ["", "NIR minus baseline, paired by seed (last epoch, percentage points):"]
        for r in gains.sort_values("_order").itertuples(index=False):
            parts.append(f"  {r.dataset:10s} {METHOD_TITLES.get(r.method, r.method):16s} "
                         f"{metric_title(r.metric):6s} Δ {fmt(r.mean_diff, r.metric, 2, True):>7s}"
                         f"  bootstrap CI [{fmt(r.boot_lo, r.metric, 2, True)}, "
                         f"{fmt(r.boot_hi, r.metric, 2, True)}]  p(t) {fmt_p(r.t_p)}  "
                         f"n={r.n}: {r.verdict}")
    parts.append("")
    for result in analysis.results:
        where = policy_dir(out_dir, result.policy)
        state = f"{where}/" if result.available else "not available: " + result.note
        parts.append(f"policy {result.policy.title}: {state}")
    return "\n".join(parts) + "\n"


def load_tidy(tables_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The tidy frames and meta that ``write_tables`` saved (what the report and plots read)."""
    needed = [tables_dir / "runs.parquet", tables_dir / "epochs.parquet", tables_dir / "meta.json"]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        raise AggregationError(f"{', '.join(map(str, missing))} not found: run `nirbench "
                               f"aggregate` first (it writes the tidy tables the report reads)")
    runs = pd.read_parquet(needed[0])
    epochs = pd.read_parquet(needed[1])
    return runs, epochs, json.loads(needed[2].read_text())


__all__ = ["AggregationError", "Analysis", "Cell", "Column", "Policy", "POLICIES", "Table",
           "analyse", "collect", "compare_arms", "compare_published", "epochs_frame", "layouts",
           "load_tidy", "runs_frame", "select_epochs", "summarize", "to_html", "to_latex",
           "to_markdown", "write_tables"]
