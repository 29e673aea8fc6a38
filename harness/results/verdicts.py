"""The answer, first: one line per dataset, method and comparison, e.g.

    synth-cub, ProxyAnchor: + NIR vs baseline: equivalent (Δ R@1 -0.41 pp, 95% CI ±0.62,
    δ = 1.0; 10 seeds); Holm over 3 headline comparisons: equivalent

what the console summary (the end of ./run_all.sh) and the report lead with: the verdict, Δ, the
half-width of its paired t 95% interval and the margin δ it was judged against; the tables and
figures hold the rest. docs/statistics.md explains the rule."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from nirbench.harness.results import stats
from nirbench.harness.results.analysis import HEADLINE_METRIC, Analysis
from nirbench.harness.results.arms import arm_order
from nirbench.harness.results.display import (
    METHOD_TITLES,
    dataset_rank,
    fmt,
    method_rank,
    pair_title,
)
from nirbench.harness.results.layouts import NO_MARKS, Marks, margin_text
from nirbench.harness.results.policies import LAST, Policy


@dataclass(frozen=True)
class Verdict:
    dataset: str
    method: str
    reference: str
    arm: str
    verdict: str
    diff: float        # mean paired difference (fraction; shown in percentage points)
    lo: float          # paired t 95% CI of the difference
    hi: float
    n: int
    marks: str
    run_ids: tuple[str, ...]
    margin: float = stats.DEFAULT_MARGIN  # δ in points
    seeds_needed: float = math.nan        # seeds whose half-width would be <= δ
    headline: bool = False
    verdict_holm: str = ""                # Holm-adjusted over the headline family
    family: int = 0                       # how many headline comparisons Holm adjusts over
    reason: str = ""                      # why inconclusive, when it is

    @property
    def subject(self) -> str:
        return f"{self.dataset}, {METHOD_TITLES.get(self.method, self.method)}"

    @property
    def comparison(self) -> str:
        return pair_title(self.reference, self.arm)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    @property
    def evidence(self) -> str:
        m = HEADLINE_METRIC
        ci = (f"95% CI ±{fmt(self.half_width, m, 2)}" if math.isfinite(self.half_width)
              else f"no 95% CI ({self.reason})" if self.reason else "no 95% CI")
        seeds = f"{self.n} seed{'s' if self.n != 1 else ''}"
        plan = ""
        if self.verdict == stats.INCONCLUSIVE and _known(self.seeds_needed):
            plan = f"; ±δ needs {int(self.seeds_needed)} seeds"
        return (f"Δ R@1 {fmt(self.diff, m, 2, True)} pp, {ci}, δ = {margin_text(self.margin)}; "
                f"{seeds}{plan}")

    @property
    def holm_label(self) -> str:
        return f"Holm over {self.family} headline comparison{'s' if self.family != 1 else ''}"

    @property
    def holm(self) -> str:
        """Holm's verdict, stated beside the headline ones (empty for the others)."""
        return f"{self.holm_label}: {self.verdict_holm}" if self.headline else ""

    def line(self) -> str:
        marks = f" {self.marks}" if self.marks else ""
        holm = f"; {self.holm}" if self.holm else ""
        return (f"{self.subject}: {self.comparison}: {self.verdict} ({self.evidence}){holm}"
                f"{marks}")


def verdicts(analysis: Analysis, policy: Policy = LAST, marks: Marks = NO_MARKS) -> list[Verdict]:
    """Every comparison of ``policy`` on the headline metric, datasets and methods in table
    order; empty when the policy is unavailable or nothing was compared."""
    result = analysis.policy(policy.name)
    if not result.available or result.comparisons.empty:
        return []
    part = result.comparisons[result.comparisons["metric"] == HEADLINE_METRIC]
    family = int(result.comparisons["headline"].sum())
    out = [Verdict(r.dataset, r.method, r.reference, r.arm, r.verdict, r.mean_diff, r.t_lo,
                   r.t_hi, int(r.n), marks.of_pair(r.dataset, r.method, r.reference, r.arm),
                   tuple(r.baseline_run_ids.split() + r.treated_run_ids.split()),
                   result.margin, r.seeds_needed, bool(r.headline), r.verdict_holm, family,
                   r.reason)
           for r in part.itertuples(index=False)]
    return sorted(out, key=lambda v: (dataset_rank(v.dataset), method_rank(v.method),
                                      arm_order(v.arm), arm_order(v.reference)))


def tally(found: list[Verdict], holm: bool = False) -> str:
    """'2 equivalent, 1 inconclusive': the verdicts of the headline comparisons, counted
    (Holm-adjusted with ``holm``); '' when there is none."""
    counts = Counter(v.verdict_holm if holm else v.verdict for v in found if v.headline)
    return ", ".join(f"{counts[k]} {k}" for k in stats.VERDICTS if counts[k])


def _known(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):  # pandas.NA
        return False
