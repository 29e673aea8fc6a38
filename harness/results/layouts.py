"""Analysis -> ``Table`` layouts: the paper's Table 1, the extended per-dataset tables, the
regularized-minus-baseline comparison and published-vs-reproduced."""
from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from harness.results import published as paper
from harness.results import stats
from harness.results.analysis import PolicyResult
from harness.results.display import (
    KEY_METRICS,
    METHOD_TITLES,
    STRUCTURE_METRICS,
    TABLE1_METRICS,
    dataset_rank,
    fmt,
    fmt_p,
    is_percent,
    method_title,
    metric_order,
    metric_title,
)
from harness.results.frames import BASELINE, CELL
from harness.results.policies import BEST_TEST, Policy
from harness.results.table import MISSING, Cell, Column, Table


def _arm_rows(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """A method, then its regularized arms under it; methods in the paper's (alphabetic) order."""
    index = []
    for method in sorted(summary["method"].unique(), key=lambda m: METHOD_TITLES.get(m, m)):
        regs = sorted(summary.loc[summary["method"] == method, "regularizer"].unique(),
                      key=lambda r: (r != BASELINE, r))
        index += [(method, reg) for reg in regs]
    return index


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
