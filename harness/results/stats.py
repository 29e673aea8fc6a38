"""Statistics over seeds: t confidence intervals, the paired arm-B-minus-arm-A comparison and its
verdict, power (minimum detectable effect, seeds needed) and Holm's correction.

Pure numpy/scipy on plain arrays; nothing here knows about MLflow, tables or metric names. The
rule is written out for readers in docs/statistics.md.

The verdict rule (every table, plot and line that says "helps", "hurts", "equivalent" or
"inconclusive"): the interval is the paired t 95% confidence interval of the mean difference
Δ = B − A over seed pairs, and ``margin`` δ is the equivalence margin (the same units as Δ).

- ``helps``: the interval lies above 0 (``hurts`` where lower is better);
- ``hurts``: the interval lies below 0;
- ``equivalent``: the whole interval lies strictly inside (−δ, +δ): the two one-sided tests
  (TOST) each reject at 2.5%, so equality within δ is shown, not assumed;
- ``inconclusive``: anything else (the interval straddles 0 and reaches past ±δ, or there is no
  interval: fewer than 2 pairs, a non-finite value). More seeds decide: ``seeds_needed``.

A difference that is detected but smaller than δ (the interval inside (0, δ)) reads ``helps``:
the sign is established; the interval beside it says it is small. Metrics without a "better"
direction (structure metrics) have no margin and read ``higher`` / ``lower`` / ``inconclusive``.

The percentile bootstrap is computed only from ``BOOTSTRAP_MIN_PAIRS`` (10) pairs on: over 3
values it has 10 distinct resamples and is far narrower than the t interval. The Wilcoxon
signed-rank test is reported beside the t-test but is not part of the rule: with n pairs its
smallest two-sided exact p-value is 2 / 2**n (0.0625 for n = 5).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

ALPHA = 0.05
CONFIDENCE = 1 - ALPHA      # the interval that decides: 95%
POWER = 0.80                # the power of the minimum detectable effect
DEFAULT_MARGIN = 1.0        # δ in points (R@1, MAP@R and every other % metric); stats.margin
BOOTSTRAP_MIN_PAIRS = 10    # fewer pairs: no bootstrap interval (NaN; '—' in tables)
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

HELPS, HURTS, EQUIVALENT, INCONCLUSIVE = "helps", "hurts", "equivalent", "inconclusive"
# For metrics without a "better" direction (structure metrics such as spectral decay) the same
# interval says whether the regularizer raises or lowers the value.
RAISES, LOWERS = "higher", "lower"
VERDICTS = (HELPS, HURTS, EQUIVALENT, INCONCLUSIVE, RAISES, LOWERS)
DECIDED = (HELPS, HURTS, EQUIVALENT, RAISES, LOWERS)  # everything but inconclusive


@dataclass(frozen=True)
class Interval:
    """Mean, sample std (ddof=1) and a two-sided t interval over ``n`` values (NaN when n < 2)."""
    mean: float
    std: float
    n: int
    lo: float
    hi: float

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def t_interval(values, confidence: float = CONFIDENCE) -> Interval:
    x = _finite_1d(values)
    n = len(x)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, 1, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = _t_quantile(confidence, n) * std / math.sqrt(n)
    return Interval(mean, std, n, mean - half, mean + half)


def decide(lo: float, hi: float, margin: float, higher_is_better: bool | None = True) -> str:
    """The verdict of an interval [lo, hi] of Δ (module docstring). ``margin`` NaN: no
    equivalence margin (structure metrics); ``higher_is_better=None``: 'higher'/'lower'."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE
    up, down = ((RAISES, LOWERS) if higher_is_better is None else
                (HELPS, HURTS) if higher_is_better else (HURTS, HELPS))
    if lo > 0:
        return up
    if hi < 0:
        return down
    if math.isfinite(margin) and -margin < lo and hi < margin:
        return EQUIVALENT
    return INCONCLUSIVE


def bootstrap_mean_interval(values, *, resamples: int = BOOTSTRAP_RESAMPLES,
                            seed: int = BOOTSTRAP_SEED,
                            confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: ``resamples`` resamples with replacement drawn
    from ``numpy.random.default_rng(seed)``, so the same input and seed give the same interval.
    Percentile rather than BCa because BCa's jackknife is undefined for tied values."""
    x = _finite_1d(values)
    if len(x) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


# ---------------------------------------------------------------- power and planning
def power_paired_t(effect_size: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with ``n`` pairs at level ``alpha`` against a true
    standardized effect ``effect_size`` = Δ / sd (the noncentral t, as statsmodels' TTestPower)."""
    df = n - 1
    crit = float(sps.t.ppf(1 - alpha / 2, df))
    nc = effect_size * math.sqrt(n)
    # the lower tail P(T_nc <= -crit) as P(T_-nc >= crit): nct.cdf gives NaN far in that tail
    return float(sps.nct.sf(crit, df, nc) + sps.nct.sf(crit, df, -nc))


def min_detectable_effect(sd: float, n: int, *, alpha: float = ALPHA,
                          power: float = POWER) -> float:
    """The smallest true |Δ| the two-sided paired t-test at ``alpha`` detects with ``power``
    given ``n`` pairs whose differences have standard deviation ``sd`` (in the units of sd).
    NaN below 2 pairs or for an unknown sd; 0 when the differences do not vary."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    hi = 1.0
    while power_paired_t(hi, n, alpha) < power:  # the power rises to 1 with the effect
        hi *= 2
    d = optimize.brentq(lambda e: power_paired_t(e, n, alpha) - power, 0.0, hi, xtol=1e-12)
    return float(d * sd)


def seeds_needed(sd: float, margin: float, confidence: float = CONFIDENCE) -> float:
    """The smallest n >= 2 with t_{(1+confidence)/2, n-1} * sd / sqrt(n) <= margin: the seed
    pairs whose interval would be no wider than ±δ if the differences kept the observed sd (a
    planning estimate: with few seeds the sd is itself uncertain). NaN without a margin or sd."""
    if not (math.isfinite(sd) and math.isfinite(margin)) or margin <= 0:
        return math.nan
    if sd == 0:
        return 2
    z = float(sps.norm.ppf((1 + confidence) / 2))
    # t > z, so no n below (z sd / δ)^2 is wide enough; t_{n-1} <= t_{lo-1} above lo.
    lo = max(2, math.ceil((z * sd / margin) ** 2))
    hi = max(lo, math.ceil((_t_quantile(confidence, lo) * sd / margin) ** 2))
    while lo < hi:  # the half-width falls with n: bisect for the first n that fits
        mid = (lo + hi) // 2
        if _t_quantile(confidence, mid) * sd / math.sqrt(mid) <= margin:
            hi = mid
        else:
            lo = mid + 1
    return lo


# ---------------------------------------------------------------- multiplicity
def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control at any level): sort the m
    p-values ascending, p_adj(i) = max over j <= i of min(1, (m - j + 1) p(j)). NaN p-values are
    not tests: they stay NaN and do not count in m."""
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    steps = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return out


def decide_by_p(p_difference: float, p_tost: float, mean: float,
                higher_is_better: bool | None = True, alpha: float = ALPHA) -> str:
    """The verdict from p-values (used for the Holm-adjusted ones): a difference where the
    two-sided t p < alpha (its sign from ``mean``), else equivalent where the TOST p < alpha / 2
    (each one-sided test at 2.5%, the same as the 95% interval inside ±δ), else inconclusive. On
    unadjusted p-values this is ``decide`` on the interval."""
    if math.isfinite(p_difference) and p_difference < alpha and mean != 0:
        return decide(mean, mean, math.nan, higher_is_better)
    if math.isfinite(p_tost) and p_tost < alpha / 2:
        return EQUIVALENT
    return INCONCLUSIVE


# ---------------------------------------------------------------- the paired comparison
@dataclass(frozen=True)
class PairedComparison:
    """B − A over seed pairs, with the tests, the verdict of the module rule and its planning
    numbers; every Δ-scale field in the units of the values (fractions for % metrics)."""
    n: int
    mean_diff: float
    std_diff: float
    t_lo: float          # paired t 95% interval of the mean difference: THE interval
    t_hi: float
    ci_half_width: float
    margin: float        # δ; NaN: no margin (structure metrics)
    boot_lo: float       # percentile bootstrap interval, only from BOOTSTRAP_MIN_PAIRS pairs on
    boot_hi: float
    t_stat: float        # paired t-test (scipy.stats.ttest_rel), two-sided
    t_p: float
    p_tost: float        # two one-sided tests against ±δ: the larger one-sided p
    wilcoxon_stat: float  # Wilcoxon signed-rank (scipy.stats.wilcoxon, defaults), two-sided
    wilcoxon_p: float
    mde_80: float        # minimum detectable effect, 80% power, two-sided 5%, from std_diff
    seeds_needed: float  # smallest n whose 95% half-width is <= δ at std_diff (NaN: unknown)
    verdict: str
    reason: str          # why inconclusive, when it is

    def as_dict(self) -> dict:
        return asdict(self)


def paired_comparison(baseline, treated, *, margin: float = math.nan,
                      higher_is_better: bool | None = True,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                      alpha: float = ALPHA) -> PairedComparison:
    """Compare ``treated[i]`` with ``baseline[i]`` (the same seed i): ``compare_differences`` of
    treated − baseline."""
    a, b = np.asarray(baseline, dtype=float), np.asarray(treated, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need two 1-D arrays of equal length, got shapes "
                         f"{a.shape} and {b.shape}")
    return compare_differences(b - a, margin=margin, higher_is_better=higher_is_better,
                               resamples=resamples, seed=seed, alpha=alpha)


def compare_differences(differences, *, margin: float = math.nan,
                        higher_is_better: bool | None = True,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                        alpha: float = ALPHA) -> PairedComparison:
    """The comparison of paired differences ``differences`` (B − A per seed). Every input has a
    verdict: no pair, one pair or a non-finite difference read 'inconclusive' with the reason;
    differences that do not vary give the interval [mean, mean]."""
    d = np.asarray(differences, dtype=float).ravel()
    margin = float(margin)
    if math.isfinite(margin) and margin <= 0:
        raise ValueError(f"the equivalence margin must be > 0 (or NaN for none), got {margin}")
    n = len(d)
    nan = math.nan
    if n == 0 or not np.isfinite(d).all():
        bad = [i for i, x in enumerate(d) if not math.isfinite(x)]
        reason = ("no seed pairs" if n == 0 else
                  f"non-finite difference at pair(s) {bad} (a run lacks the metric or diverged)")
        return PairedComparison(n, float(d.mean()) if n and not bad else nan, nan, nan, nan,
                                nan, margin, nan, nan, nan, nan, nan, nan, nan, nan, nan,
                                INCONCLUSIVE, reason)
    interval = t_interval(d, confidence=1 - alpha)
    boot = (bootstrap_mean_interval(d, resamples=resamples, seed=seed, confidence=1 - alpha)
            if n >= BOOTSTRAP_MIN_PAIRS else (nan, nan))
    t_stat, t_p = _paired_t(d)
    p_tost = _tost(d, margin)
    w_stat, w_p = _wilcoxon(d)
    verdict = decide(interval.lo, interval.hi, margin, higher_is_better)
    reason = ""
    if n < 2:
        reason = "1 seed pair: a t interval needs 2"
    elif verdict == INCONCLUSIVE:
        reason = ("the interval contains 0" if not math.isfinite(margin) else
                  "the interval contains 0 and reaches past ±δ")
    return PairedComparison(
        n, interval.mean, interval.std, interval.lo, interval.hi, interval.half_width, margin,
        boot[0], boot[1], t_stat, t_p, p_tost, w_stat, w_p,
        min_detectable_effect(interval.std, n, alpha=alpha),
        seeds_needed(interval.std, margin, 1 - alpha), verdict, reason)


def _paired_t(d: np.ndarray) -> tuple[float, float]:
    if len(d) < 2:
        return math.nan, math.nan
    if np.ptp(d) == 0:
        # Identical differences: the t statistic is x/0. scipy answers the same limits
        # (inf, p=0; or nan for 0/0) but with a precision warning; say it directly.
        return (0.0, 1.0) if d[0] == 0 else (math.copysign(math.inf, d[0]), 0.0)
    result = sps.ttest_rel(d, np.zeros_like(d))
    return float(result.statistic), float(result.pvalue)


def _tost(d: np.ndarray, margin: float) -> float:
    """max(P(T >= (m + δ)/se), P(T <= (m − δ)/se)): < 0.025 exactly when the 95% interval lies
    strictly inside ±δ."""
    if len(d) < 2 or not math.isfinite(margin):
        return math.nan
    mean = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(len(d))
    if se == 0:  # the interval is the point: inside or not
        return 0.0 if abs(mean) < margin else 1.0
    df = len(d) - 1
    return float(max(sps.t.sf((mean + margin) / se, df), sps.t.cdf((mean - margin) / se, df)))


def _wilcoxon(d: np.ndarray) -> tuple[float, float]:
    if len(d) < 2:
        return math.nan, math.nan
    if not d.any():  # every pair tied: nothing to rank, no evidence of a difference
        return 0.0, 1.0
    result = sps.wilcoxon(d)
    return float(result.statistic), float(result.pvalue)


def _t_quantile(confidence: float, n: int) -> float:
    return float(sps.t.ppf(0.5 + confidence / 2, df=n - 1))


def _finite_1d(values) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    if not np.isfinite(x).all():  # callers drop runs that lack a metric; a NaN here is a bug
        raise ValueError(f"values must be finite, got {x.tolist()}")
    return x


__all__ = [
    "ALPHA",
    "BOOTSTRAP_MIN_PAIRS",
    "CONFIDENCE",
    "DECIDED",
    "DEFAULT_MARGIN",
    "EQUIVALENT",
    "HELPS",
    "HURTS",
    "INCONCLUSIVE",
    "LOWERS",
    "POWER",
    "RAISES",
    "VERDICTS",
    "Interval",
    "PairedComparison",
    "bootstrap_mean_interval",
    "compare_differences",
    "decide",
    "decide_by_p",
    "holm",
    "min_detectable_effect",
    "paired_comparison",
    "power_paired_t",
    "seeds_needed",
    "t_interval",
]
