"""Pure pandas on the tidy frames: for each model-selection policy, pick one epoch per run,
summarise each table cell over seeds (mean, std, t 95% CI), pair arms by seed (each arm with the
baseline, a control arm with the arm it controls for, plus any declared pair;
``harness.results.stats``: paired t interval, verdict at the margin δ, power, Holm over the
headline comparisons) and, for the real datasets, set the published numbers beside ours.

A table cell averages the runs of one *arm* (same resolved config but the seed); if two arms would
land in one cell the analysis refuses rather than mixing them."""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
from nirbench.harness.results import published as paper
from nirbench.harness.results import stats
from nirbench.harness.results.activity import activity_table
from nirbench.harness.results.arms import default_pairs, parse_arm
from nirbench.harness.results.convergence import convergence_table
from nirbench.harness.results.display import higher_is_better, is_percent
from nirbench.harness.results.frames import (
    BASELINE,
    CELL,
    AggregationError,
    metric_columns,
    with_arms,
)
from nirbench.harness.results.policies import (
    LAST,
    POLICIES,
    Policy,
    PolicyUnavailable,
    select_epochs,
)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """mean, std, n, t 95% CI, seeds and run ids per dataset x method x arm x metric."""
    if runs.empty:
        raise AggregationError("no finished runs to aggregate; run `nirbench grid` first")
    runs = with_arms(runs)
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
    for (dataset, method, arm), group in runs.groupby(CELL):
        for metric in metric_columns(runs):
            kept = group.dropna(subset=[metric])  # a run without this metric is counted out (n)
            if kept.empty:
                continue
            interval = stats.t_interval(kept[metric])
            rows.append({"dataset": dataset, "method": method, "arm": arm,
                         "regularizer": group["regularizer"].iloc[0],
                         "metric": metric, "mean": interval.mean, "std": interval.std,
                         "n": interval.n, "ci95_lo": interval.lo, "ci95_hi": interval.hi,
                         "seeds": " ".join(map(str, kept["seed"])),
                         "run_ids": " ".join(kept["run_id"])})
    return pd.DataFrame(rows)


# The headline comparisons: test R@1 of each regularizer arm at its registered defaults (+ NIR)
# against the baseline of the same method and dataset (ProxyAnchor + NIR vs ProxyAnchor, and the
# other + NIR vs baseline rows). They answer the question the benchmark asks, so they are the
# family whose verdicts Holm's correction adjusts (p_holm, verdict_holm); every other row
# (other metrics, control arms, variants, declared pairs) is supporting detail and unadjusted.
HEADLINE_METRIC = "recall@1"


def is_headline(metric: str, reference: str, arm: str) -> bool:
    return (metric == HEADLINE_METRIC and reference == BASELINE and arm != BASELINE
            and not parse_arm(arm)[1])


def margin_of(metric: str, margin: float) -> float:
    """δ in the units of ``metric``'s values: ``margin`` points for a % metric (stored as a
    fraction), none (NaN) for a structure metric, whose scale is not points."""
    return margin / 100.0 if is_percent(metric) else math.nan


def published_gain(dataset: str, method: str, reference: str, arm: str,
                   metric: str) -> float | None:
    """The paper's Table 1 gain of the arm over the baseline in points (+ NIR minus its method),
    or None where the paper has no such pair (synthetic datasets, variants, other metrics)."""
    name, variant = parse_arm(arm)
    if reference != BASELINE or arm == BASELINE or variant:
        return None
    treated = paper.published(method, name, dataset, metric)
    base = paper.published(method, BASELINE, dataset, metric)
    if treated is None or base is None:
        return None
    return round(treated[0] - base[0], 6)


def compare_arms(selected: pd.DataFrame, pairs: Iterable[tuple[str, str]] = (), *,
                 margin: float = stats.DEFAULT_MARGIN,
                 resamples: int = stats.BOOTSTRAP_RESAMPLES,
                 seed: int = stats.BOOTSTRAP_SEED) -> pd.DataFrame:
    """Arm B minus arm A per dataset, method and metric, paired by seed, for every default pair
    of ``arms.default_pairs`` (each arm against the baseline; a control arm against the arm it
    controls for) and every extra ``pairs`` (A, B) present, each with its verdict at the
    equivalence margin ``margin`` (points, for % metrics). The columns keep their historical
    names: ``baseline_*`` describe arm A (``reference``), ``treated_*`` arm B (``arm``). Seeds
    present in only one arm are listed in ``unpaired_seeds``. The headline rows (``is_headline``)
    also get Holm-adjusted p-values and verdicts (``with_holm``)."""
    rows = []
    selected = with_arms(selected)
    for (dataset, method), part in selected.groupby(["dataset", "method"]):
        present = set(part["arm"])
        wanted = default_pairs(present) + [p for p in pairs if set(p) <= present]
        for reference, arm in dict.fromkeys(wanted):  # ordered, without repeats
            ref = part[part["arm"] == reference]
            treated = part[part["arm"] == arm]
            paired = ref.merge(treated, on="seed", suffixes=("_b", "_t"))
            unpaired = sorted(set(ref["seed"]) ^ set(treated["seed"]))
            for metric in metric_columns(selected):
                both = paired.dropna(subset=[f"{metric}_b", f"{metric}_t"])
                if both.empty:
                    continue
                result = stats.paired_comparison(both[f"{metric}_b"], both[f"{metric}_t"],
                                                 margin=margin_of(metric, margin),
                                                 higher_is_better=higher_is_better(metric),
                                                 resamples=resamples, seed=seed)
                gain = published_gain(dataset, method, reference, arm, metric)
                contains = (None if gain is None or not math.isfinite(result.t_lo) else
                            bool(100 * result.t_lo <= gain <= 100 * result.t_hi))
                rows.append({"dataset": dataset, "method": method, "reference": reference,
                             "arm": arm, "regularizer": treated["regularizer"].iloc[0],
                             "metric": metric, "baseline_mean": both[f"{metric}_b"].mean(),
                             "treated_mean": both[f"{metric}_t"].mean(), **result.as_dict(),
                             "published_gain": math.nan if gain is None else gain,
                             "contains_published_gain": contains,
                             "seeds": " ".join(map(str, both["seed"])),
                             "unpaired_seeds": " ".join(map(str, unpaired)),
                             "baseline_run_ids": " ".join(both["run_id_b"]),
                             "treated_run_ids": " ".join(both["run_id_t"])})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["seeds_needed"] = frame["seeds_needed"].astype("Int64")  # counts, NaN where unknown
    return with_holm(frame)


def with_holm(comparisons: pd.DataFrame, alpha: float = stats.ALPHA) -> pd.DataFrame:
    """``comparisons`` with ``headline`` (bool), and for the headline rows ``p_holm`` and
    ``p_tost_holm`` (Holm over the headline family, separately for the difference tests and for
    the equivalence tests) and ``verdict_holm`` (stats.decide_by_p on them: helps/hurts where
    p_holm < alpha, equivalent where p_tost_holm < alpha / 2, else inconclusive); empty
    elsewhere. Holm controls the chance of any false 'helps'/'hurts' (or 'equivalent') among
    the headline verdicts at alpha."""
    out = comparisons.copy()
    out["headline"] = [is_headline(m, r, a) for m, r, a in
                       zip(out["metric"], out["reference"], out["arm"])]
    head = out["headline"].to_numpy()
    out["p_holm"] = math.nan
    out["p_tost_holm"] = math.nan
    out.loc[head, "p_holm"] = stats.holm(out.loc[head, "t_p"])
    out.loc[head, "p_tost_holm"] = stats.holm(out.loc[head, "p_tost"])
    out["verdict_holm"] = [
        stats.decide_by_p(p, q, mean, higher_is_better(m), alpha) if h else ""
        for h, p, q, mean, m in zip(head, out["p_holm"], out["p_tost_holm"], out["mean_diff"],
                                    out["metric"])]
    return out


def compare_published(summary: pd.DataFrame) -> pd.DataFrame:
    """Ours beside the paper's Table 1 for the real datasets (in %); empty for synthetic ones."""
    rows = []
    for row in summary.itertuples(index=False):
        ref = paper.published(row.method, row.regularizer, row.dataset, row.metric)
        if ref is None:
            continue
        ours, ours_std = 100 * row.mean, 100 * row.std
        if row.arm != row.regularizer and row.arm != BASELINE:
            continue  # the paper published the default variant only
        rows.append({"dataset": row.dataset, "method": row.method, "arm": row.arm,
                     "regularizer": row.regularizer,
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
    margin: float = stats.DEFAULT_MARGIN  # δ in points, for % metrics

    @property
    def available(self) -> bool:
        return not self.selected.empty


@dataclass(frozen=True)
class Analysis:
    runs: pd.DataFrame
    epochs: pd.DataFrame
    results: tuple[PolicyResult, ...]
    grid: str | None = None
    # Per cell, whatever the policy: is it still rising (harness/results/convergence.py), did
    # its regularizer term die (harness/results/activity.py)?
    convergence: pd.DataFrame = field(default_factory=pd.DataFrame)
    activity: pd.DataFrame = field(default_factory=pd.DataFrame)
    margin: float = stats.DEFAULT_MARGIN  # δ in points, for % metrics

    def policy(self, name: str) -> PolicyResult:
        return next(r for r in self.results if r.policy.name == name)


def analyse(runs: pd.DataFrame, epochs: pd.DataFrame, grid: str | None = None, *,
            pairs: Iterable[tuple[str, str]] = (), margin: float = stats.DEFAULT_MARGIN,
            resamples: int = stats.BOOTSTRAP_RESAMPLES,
            seed: int = stats.BOOTSTRAP_SEED) -> Analysis:
    """Every policy's tables from the tidy frames; ``pairs`` adds (arm A, arm B) comparisons to
    the default ones (e.g. a grid's ``compare:``); ``margin``: the equivalence margin δ in
    points (stats.margin)."""
    if not (isinstance(margin, int | float) and math.isfinite(margin) and margin > 0):
        raise AggregationError(f"the equivalence margin must be a number of points > 0, got "
                               f"{margin!r} (stats.margin / --margin)")
    runs = with_arms(runs)
    summarize(runs)  # refuses empty input and mixed arms before anything else
    identity = runs[[c for c in runs.columns if c not in metric_columns(runs)]]
    results = []
    for policy in POLICIES:
        try:
            picked = select_epochs(epochs, policy)
        except PolicyUnavailable as err:
            if policy is LAST:  # every other table rests on it
                raise AggregationError(f"no run has a per-epoch test history: {err}") from None
            results.append(PolicyResult(policy, err.reason, margin=margin))
            continue
        selected = identity.merge(picked, on="run_id").sort_values(CELL + ["seed"],
                                                                   ignore_index=True)
        left_out = sorted(set(runs["run_id"]) - set(selected["run_id"]))
        note = (f"{len(left_out)} of {len(runs)} runs have no {policy.selector or 'test'} "
                f"history and are left out: {' '.join(left_out)}" if left_out else "")
        summary = summarize(selected)
        results.append(PolicyResult(policy, note, selected, summary,
                                    compare_arms(selected, pairs, margin=margin,
                                                 resamples=resamples, seed=seed),
                                    compare_published(summary), margin))
    return Analysis(runs, epochs, tuple(results), grid, convergence_table(runs, epochs),
                    activity_table(runs), margin)
