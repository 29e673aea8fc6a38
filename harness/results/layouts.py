"""Analysis -> ``Table`` layouts: the paper's Table 1, the extended per-dataset tables, the
arm-minus-arm comparisons, the attribution ladder and published-vs-reproduced.

Rows list the methods in the paper's order (Multi-Similarity, ProxyAnchor, ProxyNCA, SoftTriple,
then the others), each method's baseline first and its arms under it. Cells that are still rising
at the last epoch (``convergence``) or whose NIR term died (``activity``) carry a mark, and the
table's note states the rule behind each mark it uses."""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
from nirbench.harness.results import activity, convergence, stats
from nirbench.harness.results import published as paper
from nirbench.harness.results.analysis import Analysis, PolicyResult
from nirbench.harness.results.arms import arm_order, ladders
from nirbench.harness.results.display import (
    KEY_METRICS,
    METHOD_TITLES,
    STRUCTURE_METRICS,
    TABLE1_METRICS,
    dataset_rank,
    fmt,
    fmt_p,
    is_percent,
    method_rank,
    method_title,
    metric_order,
    metric_title,
    pair_title,
)
from nirbench.harness.results.frames import CELL
from nirbench.harness.results.policies import BEST_TEST, Policy
from nirbench.harness.results.table import MISSING, Cell, Column, Table


@dataclass(frozen=True)
class Marks:
    """Which cells carry which mark: still rising (†), NIR inactive (‡)."""

    rising: frozenset[tuple[str, str, str]] = frozenset()
    inactive: dict[tuple[str, str, str], int] = field(default_factory=dict)

    @classmethod
    def of(cls, analysis: Analysis) -> Marks:
        conv = analysis.convergence
        rising = frozenset(tuple(r[c] for c in CELL) for _, r in conv.iterrows()
                           if r["still_rising"]) if not conv.empty else frozenset()
        return cls(rising, activity.inactive_cells(analysis.runs))

    def of_cell(self, key: tuple[str, str, str]) -> str:
        return ((convergence.STILL_RISING_MARK if key in self.rising else "")
                + (activity.INACTIVE_MARK if key in self.inactive else ""))

    def of_pair(self, dataset: str, method: str, *arms: str) -> str:
        marks = "".join(self.of_cell((dataset, method, a)) for a in arms)
        return "".join(m for m in (convergence.STILL_RISING_MARK, activity.INACTIVE_MARK)
                       if m in marks)

    def rules(self, used: str) -> str:
        """The footnotes for the marks that appear in ``used`` (a table's texts)."""
        notes = [rule for mark, rule in ((convergence.STILL_RISING_MARK, convergence.RULE),
                                         (activity.INACTIVE_MARK, activity.RULE))
                 if mark in used]
        return (" " + ". ".join(notes) + ".") if notes else ""


NO_MARKS = Marks()


def arm_rows(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """(method, arm) rows: methods in the paper's order, each baseline first, arms under it."""
    index = []
    for method in sorted(summary["method"].unique(), key=method_rank):
        arms = sorted(summary.loc[summary["method"] == method, "arm"].unique(), key=arm_order)
        index += [(method, arm) for arm in arms]
    return index


def _summary_cell(row: pd.Series, metric: str, with_ci: bool, mark: str = "") -> Cell:
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
    return Cell(text + (f" {mark}" if mark else ""), scale * row["mean"], ids, title,
                detail=detail)


def table1_layout(summary: pd.DataFrame, policy: Policy, n_runs: int, grid: str | None,
                  marks: Marks = NO_MARKS) -> Table:
    """Rows: a method, then its arms ('+ NIR') under it; columns: dataset x (R@1, NMI, mAP@1000,
    MAP@R). The marks sit on the R@1 cell."""
    datasets = sorted(summary["dataset"].unique(), key=dataset_rank)
    index = arm_rows(summary)
    lookup = summary.set_index(CELL + ["metric"])
    columns, cells = [], [[] for _ in index]
    for dataset in datasets:
        for metric, title in TABLE1_METRICS:
            columns.append(Column(dataset, title, bold_best=True))
            for i, (method, arm) in enumerate(index):
                key = (dataset, method, arm, metric)
                mark = marks.of_cell((dataset, method, arm)) if metric == "recall@1" else ""
                cells[i].append(_summary_cell(lookup.loc[key], metric, False, mark)
                                if key in lookup.index else MISSING)
    n = summary.groupby(CELL)["n"].max()
    per_cell = f"{n.min()}" if n.min() == n.max() else f"{n.min()}-{n.max()}"
    used = "".join(c.text for row in cells for c in row)
    note = (f"{policy.title.capitalize()} test metrics in %, mean ± std over seeds "
            f"({per_cell} per cell); {n_runs} runs"
            f"{f' of grid {grid!r}' if grid else ''}. MAP@R added to the paper's columns."
            + marks.rules(used))
    return Table("table1", f"Table 1 layout ({policy.title})", ("Method",),
                 tuple((method_title(m, a),) for m, a in index), tuple(columns),
                 tuple(tuple(r) for r in cells), note)


def extended_layout(summary: pd.DataFrame, policy: Policy,
                    marks: Marks = NO_MARKS) -> list[Table]:
    """Per dataset: every retrieval/clustering metric, mean ± std [t 95% CI]."""
    tables = []
    for dataset in sorted(summary["dataset"].unique(), key=dataset_rank):
        part = summary[summary["dataset"] == dataset]
        metrics = sorted((m for m in part["metric"].unique() if is_percent(m)), key=metric_order)
        index = arm_rows(part)
        lookup = part.set_index(CELL + ["metric"])
        cells = [[_summary_cell(lookup.loc[(dataset, m, a, metric)], metric, True,
                                marks.of_cell((dataset, m, a)) if metric == "recall@1" else "")
                  if (dataset, m, a, metric) in lookup.index else MISSING for metric in metrics]
                 for m, a in index]
        used = "".join(c.text for row in cells for c in row)
        tables.append(Table(
            f"extended-{dataset}", f"{dataset}: all metrics ({policy.title})", ("Method",),
            tuple((method_title(m, a),) for m, a in index),
            tuple(Column(dataset, metric_title(m), bold_best=True) for m in metrics),
            tuple(tuple(r) for r in cells),
            "in %, mean ± std [t-based 95% confidence interval of the mean] over seeds."
            + marks.rules(used)))
    return tables


def _ordered_comparisons(comparisons: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    part = comparisons[comparisons["metric"].isin(metrics)].copy()
    part["_order"] = part["metric"].map(metrics.index)
    part["_rank"] = part["dataset"].map(dataset_rank)
    part["_method"] = part["method"].map(method_rank)
    part["_arm"] = part["arm"].map(arm_order)
    part["_ref"] = part["reference"].map(arm_order)
    return part.sort_values(["_rank", "_method", "_arm", "_ref", "_order"])


def margin_text(margin: float) -> str:
    """δ as printed beside a verdict: 1.0, 0.5, 0.25 (points)."""
    text = f"{margin:g}"
    return text if "." in text or "e" in text else text + ".0"


def verdict_rule(margin: float = stats.DEFAULT_MARGIN) -> str:
    """The rule in one paragraph (docs/statistics.md has it in full)."""
    return (f"Verdict, from the paired t 95% CI of Δ and the margin "
            f"δ = {margin_text(margin)} points (% metrics): 'helps'/'hurts' when the CI lies "
            f"above/below 0; 'equivalent' when it lies inside ±δ (two one-sided tests at 2.5% each); otherwise 'inconclusive': more "
            f"seeds decide ('seeds for ±δ': the smallest n whose half-width t·sd/√n ≤ δ at the "
            f"observed sd). MDE: the smallest true Δ the paired t-test (two-sided, "
            f"α = {stats.ALPHA}) detects with {stats.POWER:.0%} power at these pairs and sd. "
            f"Percentile bootstrap CI shown from {stats.BOOTSTRAP_MIN_PAIRS} pairs on, '—' below. "
            f"Wilcoxon reported, not used (it cannot reach p < 0.05 with fewer than 6 pairs).")


def holm_rule(comparisons: pd.DataFrame) -> str:
    """How many comparisons a table makes and what Holm's correction covers."""
    family = int(comparisons["headline"].sum()) if "headline" in comparisons else 0
    text = f"{len(comparisons)} comparisons"
    if not family:
        return text + "; none is a headline comparison (R@1, an arm against its baseline)."
    which = (f"the {family} headline comparisons (R@1, each regularizer arm against its "
             f"baseline) are Holm-adjusted as one family" if family != 1 else
             "the one headline comparison (R@1, a regularizer arm against its baseline) is its "
             "own Holm family")
    return (text + f"; {which}: "
            f"'verdict (Holm)' says helps/hurts where p (Holm) < {stats.ALPHA}, equivalent where "
            f"the TOST p, Holm-adjusted, < {stats.ALPHA / 2}; the other rows are unadjusted.")


def _margin_text(r, m: str, d: int) -> str:
    return f"±{fmt(r.margin, m, d)}" if math.isfinite(r.margin) else "none"


def _seeds_text(value) -> str:
    return "–" if value is None or pd.isna(value) else str(int(value))


def _bootstrap_text(r, m: str, d: int) -> str:
    if not (math.isfinite(r.boot_lo) and math.isfinite(r.boot_hi)):
        return "—"
    return f"[{fmt(r.boot_lo, m, d, True)}, {fmt(r.boot_hi, m, d, True)}]"


def _contains_text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return "yes" if value in (True, "True", "true") else "no"


def comparison_layout(comparisons: pd.DataFrame, policy: Policy,
                      metrics: Iterable[str] = KEY_METRICS + STRUCTURE_METRICS,
                      marks: Marks = NO_MARKS, margin: float = stats.DEFAULT_MARGIN) -> Table:
    part = _ordered_comparisons(comparisons, list(metrics))
    published = ("contains_published_gain" in part
                 and part["contains_published_gain"].map(_contains_text).ne("–").any())
    titles = ("pairs", "A", "B", "Δ = B − A", "95% t CI", "δ", "MDE (80%)", "seeds for ±δ",
              f"95% bootstrap CI (n ≥ {stats.BOOTSTRAP_MIN_PAIRS})", "p (paired t)",
              "p (Wilcoxon)", "verdict", "p (Holm)", "verdict (Holm)")
    if published:
        titles += ("paper's gain", "CI contains it")
    rows, cells = [], []
    for r in part.itertuples(index=False):
        ids = tuple(r.baseline_run_ids.split() + r.treated_run_ids.split())
        title = (f"seeds {r.seeds}; A runs {r.baseline_run_ids}; B runs {r.treated_run_ids}"
                 + (f"; unpaired seeds {r.unpaired_seeds}" if r.unpaired_seeds else "")
                 + (f"; inconclusive: {r.reason}" if r.reason else ""))
        m = r.metric
        d = 2 if is_percent(m) else 3
        mark = marks.of_pair(r.dataset, r.method, r.reference, r.arm) if m == "recall@1" else ""
        texts = [str(r.n), fmt(r.baseline_mean, m), fmt(r.treated_mean, m),
                 fmt(r.mean_diff, m, d, sign=True),
                 f"[{fmt(r.t_lo, m, d, True)}, {fmt(r.t_hi, m, d, True)}]",
                 _margin_text(r, m, d), fmt(r.mde_80, m, d), _seeds_text(r.seeds_needed),
                 _bootstrap_text(r, m, d), fmt_p(r.t_p), fmt_p(r.wilcoxon_p),
                 r.verdict + (f" {mark}" if mark else ""),
                 fmt_p(r.p_holm) if r.headline else "", r.verdict_holm]
        if published:
            texts += ["–" if pd.isna(r.published_gain) else f"{r.published_gain:+.1f}",
                      _contains_text(r.contains_published_gain)]
        rows.append((r.dataset, METHOD_TITLES.get(r.method, r.method),
                     pair_title(r.reference, r.arm), metric_title(m)))
        verdict_at = {titles.index("verdict"): r.verdict, titles.index("verdict (Holm)"):
                      r.verdict_holm}
        cells.append(tuple(Cell(t, None, ids, title,
                                f"verdict-{verdict_at[k]}" if verdict_at.get(k) else "")
                           for k, t in enumerate(texts)))
    used = "".join(c.text for row in cells for c in row)
    note = (f"{policy.title.capitalize()}. Δ = B − A, paired by seed, in percentage points for % "
            f"metrics (A = the reference arm, B = the arm compared with it). {verdict_rule(margin)}"
            f" Structure metrics have no margin: 'higher'/'lower'/'inconclusive'. "
            f"{holm_rule(part)}"
            + (" Paper's gain: Table 1's + NIR minus its method (points; the paper reports the "
               "best test epoch)." if published else "") + marks.rules(used))
    return Table("comparison", f"Arm comparisons, paired by seed ({policy.title})",
                 ("Dataset", "Method", "Comparison", "Metric"), tuple(rows),
                 tuple(Column("", t) for t in titles), tuple(cells), note)


LADDER_METRICS = ("recall@1", "map@r")


def ladder_layout(comparisons: pd.DataFrame, policy: Policy,
                  marks: Marks = NO_MARKS, margin: float = stats.DEFAULT_MARGIN) -> Table | None:
    """Where a grid ran the control arm: per dataset x method, the steps baseline -> NIR without
    the flow (what the loss scale, weight decay and alignment term do) -> NIR (what the flow adds),
    and the whole way, each with Δ, paired t 95% CI and verdict for R@1 and MAP@R."""
    if comparisons.empty:
        return None
    by = {(r.dataset, r.method, r.reference, r.arm, r.metric): r
          for r in comparisons.itertuples(index=False)}
    rows, cells = [], []
    keys = comparisons[["dataset", "method"]].drop_duplicates()
    keys = sorted(map(tuple, keys.to_numpy()), key=lambda k: (dataset_rank(k[0]),
                                                              method_rank(k[1])))
    for dataset, method in keys:
        arms = set(comparisons.loc[(comparisons["dataset"] == dataset)
                                   & (comparisons["method"] == method), "arm"])
        arms |= set(comparisons.loc[(comparisons["dataset"] == dataset)
                                    & (comparisons["method"] == method), "reference"])
        for base, control, full in ladders(arms):
            for step, (a, b) in (("1. scale, decay, alignment", (base, control)),
                                 ("2. the flow", (control, full)),
                                 ("1 + 2: the whole arm", (base, full))):
                row = []
                for metric in LADDER_METRICS:
                    r = by.get((dataset, method, a, b, metric))
                    if r is None:
                        row += [MISSING] * 3
                        continue
                    ids = tuple(r.baseline_run_ids.split() + r.treated_run_ids.split())
                    mark = marks.of_pair(dataset, method, a, b) if metric == "recall@1" else ""
                    row += [Cell(fmt(r.mean_diff, metric, 2, sign=True), None, ids,
                                 f"seeds {r.seeds}"),
                            Cell(f"[{fmt(r.t_lo, metric, 2, True)}, "
                                 f"{fmt(r.t_hi, metric, 2, True)}]", None, ids),
                            Cell(r.verdict + (f" {mark}" if mark else ""), None, ids,
                                 css=f"verdict-{r.verdict}")]
                rows.append((dataset, METHOD_TITLES.get(method, method), step,
                             pair_title(a, b)))
                cells.append(tuple(row))
    if not rows:
        return None
    used = "".join(c.text for row in cells for c in row)
    columns = tuple(Column(metric_title(m), t) for m in LADDER_METRICS
                    for t in ("Δ", "95% t CI", "verdict"))
    note = (f"{policy.title.capitalize()}. Where does the NIR arm's difference come from? Step 1 "
            f"turns on everything the NIR arm changes except the flow (the method loss weighted "
            f"as in the NIR arm, so the same loss scale against the weight decay; for pair methods "
            f"also NIR's own proxies and their alignment term); step 2 adds the flow. Δ in "
            f"percentage points, paired by seed. {verdict_rule(margin)}" + marks.rules(used))
    return Table("ladder", f"Attribution ladder ({policy.title})",
                 ("Dataset", "Method", "Step", "Comparison"), tuple(rows), columns,
                 tuple(cells), note)


def published_layout(pub: pd.DataFrame, policy: Policy) -> list[Table]:
    tables = []
    for dataset in sorted(pub["dataset"].unique(), key=dataset_rank):
        part = pub[pub["dataset"] == dataset]
        index = arm_rows(part)
        lookup = part.set_index(CELL + ["metric"])
        columns = [Column(metric_title(m), t) for m in paper.METRICS
                   for t in ("ours", "paper", "Δ")]
        cells = []
        for method, arm in index:
            row = []
            for metric in paper.METRICS:
                key = (dataset, method, arm, metric)
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
            ("Method",), tuple((method_title(m, a),) for m, a in index), tuple(columns),
            tuple(cells), f"in %; published: {paper.SOURCE}. Δ = ours − paper."
            + ("" if policy is BEST_TEST else " The paper picked the best test epoch: compare "
               "with the best-test policy for like for like.")))
    return tables


def layouts(result: PolicyResult, n_runs: int, grid: str | None,
            marks: Marks = NO_MARKS) -> dict[str, list[Table]]:
    """The tables of one policy by export name; 'ladder' only where a grid ran the control arm,
    'published' only for the real datasets."""
    ladder = ladder_layout(result.comparisons, result.policy, marks, result.margin)
    out = {"table1": [table1_layout(result.summary, result.policy, n_runs, grid, marks)],
           "extended": extended_layout(result.summary, result.policy, marks),
           "comparison": [comparison_layout(result.comparisons, result.policy, marks=marks,
                                            margin=result.margin)]
           if not result.comparisons.empty else [],
           "ladder": [ladder] if ladder is not None else []}
    if not result.published.empty:
        out["published"] = published_layout(result.published, result.policy)
    return out
