"""The answer, first: one line per dataset, method and comparison, e.g.

    synth-cub, ProxyAnchor: + NIR vs baseline: no detectable difference (Δ R@1 -0.41 pp,
    95% CI [-1.20, +0.52], 3 seeds)

what the console summary and the report lead with; the tables and figures hold the rest."""
from __future__ import annotations

from dataclasses import dataclass

from nirbench.harness.results.analysis import Analysis
from nirbench.harness.results.arms import arm_order
from nirbench.harness.results.display import METHOD_TITLES, dataset_rank, fmt, method_rank, pair_title
from nirbench.harness.results.layouts import NO_MARKS, Marks
from nirbench.harness.results.policies import LAST, Policy

HEADLINE_METRIC = "recall@1"


@dataclass(frozen=True)
class Verdict:
    dataset: str
    method: str
    reference: str
    arm: str
    verdict: str
    diff: float  # mean paired difference (fraction; shown in percentage points)
    lo: float    # percentile bootstrap 95% CI of the difference
    hi: float
    n: int
    marks: str
    run_ids: tuple[str, ...]

    @property
    def subject(self) -> str:
        return f"{self.dataset}, {METHOD_TITLES.get(self.method, self.method)}"

    @property
    def comparison(self) -> str:
        return pair_title(self.reference, self.arm)

    @property
    def evidence(self) -> str:
        m = HEADLINE_METRIC
        ci = (f", 95% CI [{fmt(self.lo, m, 2, True)}, {fmt(self.hi, m, 2, True)}]"
              if self.n >= 2 else "")
        return (f"Δ R@1 {fmt(self.diff, m, 2, True)} pp{ci}, {self.n} seed"
                f"{'s' if self.n != 1 else ''}")

    def line(self) -> str:
        marks = f" {self.marks}" if self.marks else ""
        return f"{self.subject}: {self.comparison}: {self.verdict} ({self.evidence}){marks}"


def verdicts(analysis: Analysis, policy: Policy = LAST, marks: Marks = NO_MARKS) -> list[Verdict]:
    """Every comparison of ``policy`` on the headline metric, datasets and methods in table
    order; empty when the policy is unavailable or nothing was compared."""
    result = analysis.policy(policy.name)
    if not result.available or result.comparisons.empty:
        return []
    part = result.comparisons[result.comparisons["metric"] == HEADLINE_METRIC]
    out = [Verdict(r.dataset, r.method, r.reference, r.arm, r.verdict, r.mean_diff, r.boot_lo,
                   r.boot_hi, int(r.n), marks.of_pair(r.dataset, r.method, r.reference, r.arm),
                   tuple(r.baseline_run_ids.split() + r.treated_run_ids.split()))
           for r in part.itertuples(index=False)]
    return sorted(out, key=lambda v: (dataset_rank(v.dataset), method_rank(v.method),
                                      arm_order(v.arm), arm_order(v.reference)))
