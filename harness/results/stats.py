"""Statistics over seeds: t confidence intervals and the paired NIR-minus-baseline comparison.

Pure numpy/scipy on plain arrays; nothing here knows about MLflow, tables or metric names.

The verdict rule (used in every table and plot that says "helps" or "hurts"):

- fewer than ``MIN_PAIRS`` (3) seed pairs: "too few seeds" (a t-test on 1 degree of freedom and
  a bootstrap over 2 values say nothing useful);
- otherwise "helps" (mean difference > 0) or "hurts" (< 0) when BOTH the percentile bootstrap 95%
  interval of the mean difference excludes 0 AND the paired t-test gives p < 0.05;
- otherwise "no detectable difference".

The Wilcoxon signed-rank test is reported beside the t-test but is not part of the rule: with n
pairs its smallest possible two-sided exact p-value is 2 / 2**n, so with the 3-5 seeds DML papers
use it can never fall below 0.05 (n = 5 gives 0.0625) and would veto every verdict.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

MIN_PAIRS = 3
ALPHA = 0.05
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

HELPS, HURTS, NO_DIFFERENCE, TOO_FEW = "helps", "hurts", "no detectable difference", "too few seeds"
# For metrics without a "better" direction (structure metrics such as spectral decay) the same
# rule says whether the regularizer raises or lowers the value.
RAISES, LOWERS = "higher", "lower"


@dataclass(frozen=True)
class Interval:
    """Mean, sample std (ddof=1) and a two-sided t interval over ``n`` values (NaN when n < 2)."""
    mean: float
    std: float
    n: int
    lo: float
    hi: float


def t_interval(values, confidence: float = CONFIDENCE) -> Interval:
    x = _finite_1d(values)
    n = len(x)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, 1, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / math.sqrt(n)
    return Interval(mean, std, n, mean - half, mean + half)


def bootstrap_mean_interval(values, *, resamples: int = BOOTSTRAP_RESAMPLES,
                            seed: int = BOOTSTRAP_SEED,
                            confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: ``resamples`` resamples with replacement drawn
    from ``numpy.random.default_rng(seed)``, so the same input and seed give the same interval.
    Percentile rather than BCa because BCa's jackknife is undefined for the 3-5 values we have."""
    x = _finite_1d(values)
    if len(x) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedComparison:
    """treated - baseline over seed pairs, with the tests and the verdict of the module rule."""
    n: int
    mean_diff: float
    std_diff: float
    t_lo: float          # t interval of the mean difference
    t_hi: float
    boot_lo: float       # percentile bootstrap interval of the mean difference
    boot_hi: float
    t_stat: float        # paired t-test (scipy.stats.ttest_rel), two-sided
    t_p: float
    wilcoxon_stat: float  # Wilcoxon signed-rank (scipy.stats.wilcoxon, defaults), two-sided
    wilcoxon_p: float
    verdict: str

    def as_dict(self) -> dict:
        return asdict(self)


def paired_comparison(baseline, treated, *, higher_is_better: bool | None = True,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                      alpha: float = ALPHA) -> PairedComparison:
    """Compare ``treated[i]`` with ``baseline[i]`` (the same seed i). ``higher_is_better=None``
    words the verdict as "higher"/"lower" instead of "helps"/"hurts"."""
    a, b = np.asarray(baseline, dtype=float), np.asarray(treated, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need two 1-D arrays of equal length, got shapes "
                         f"{a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired values must be finite (a NaN means a run lacks the metric)")
    d = b - a
    n = len(d)
    if n == 0:
        raise ValueError("paired_comparison needs at least one pair")
    interval = t_interval(d)
    boot = bootstrap_mean_interval(d, resamples=resamples, seed=seed)
    t_stat, t_p = _paired_t(d)
    w_stat, w_p = _wilcoxon(d)
    if n < MIN_PAIRS:
        verdict = TOO_FEW
    elif boot[0] > 0 and t_p < alpha:
        verdict = RAISES if higher_is_better is None else (HELPS if higher_is_better else HURTS)
    elif boot[1] < 0 and t_p < alpha:
        verdict = LOWERS if higher_is_better is None else (HURTS if higher_is_better else HELPS)
    else:
        verdict = NO_DIFFERENCE
    return PairedComparison(n, interval.mean, interval.std, interval.lo, interval.hi, boot[0],
                            boot[1], t_stat, t_p, w_stat, w_p, verdict)


def _paired_t(d: np.ndarray) -> tuple[float, float]:
    if len(d) < 2:
        return math.nan, math.nan
    if np.ptp(d) == 0:
        # Identical differences: the t statistic is x/0. scipy answers the same limits
        # (inf, p=0; or nan for 0/0) but with a precision warning; say it directly.
        return (0.0, 1.0) if d[0] == 0 else (math.copysign(math.inf, d[0]), 0.0)
    result = sps.ttest_rel(d, np.zeros_like(d))
    return float(result.statistic), float(result.pvalue)


def _wilcoxon(d: np.ndarray) -> tuple[float, float]:
    if len(d) < 2:
        return math.nan, math.nan
    if not d.any():  # every pair tied: nothing to rank, no evidence of a difference
        return 0.0, 1.0
    result = sps.wilcoxon(d)
    return float(result.statistic), float(result.pvalue)


def _finite_1d(values) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    if not np.isfinite(x).all():  # callers drop runs that lack a metric; a NaN here is a bug
        raise ValueError(f"values must be finite, got {x.tolist()}")
    return x


__all__ = ["Interval", "PairedComparison", "t_interval", "bootstrap_mean_interval",
           "paired_comparison", "MIN_PAIRS", "HELPS", "HURTS", "NO_DIFFERENCE", "TOO_FEW",
           "RAISES", "LOWERS"]
