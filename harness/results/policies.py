"""Model-selection policies: which epoch of a run a table reports.

Last epoch (the default: no selection), best test epoch (what the paper did: optimistic, the test
set picks the epoch) and best validation epoch (honest, when runs logged ``val/`` metrics)."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from nirbench.harness.results.frames import AggregationError


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
                   "optimistic, because the test set chose the model. Metrics not measured at "
                   "every evaluation (eval.full_every: mAP@1000, NMI and the structure metrics "
                   "after the last epoch only) are left out")

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
        # A metric some evaluations skipped (eval.full_every) exists only where the picked epoch
        # happens to be a full one: a cell would average whichever runs that was. Left out.
        partial = [c for c in tests if usable[c].isna().any()]
        picked = picked.assign(**{c: float("nan") for c in partial})
    out = picked[["run_id", "epoch"] + tests].rename(
        columns={"epoch": "selected_epoch", **{c: c.split("/", 1)[1] for c in tests}})
    return out.reset_index(drop=True)
