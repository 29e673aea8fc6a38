"""harness.results.stats against scipy on known inputs, and the verdict rule on clear-cut cases
(the rule's edge cases, power and Holm: tests/test_verdict_rules.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from nirbench.harness.results import stats

VALUES = np.array([0.612, 0.634, 0.598, 0.641, 0.620])
BASE = np.array([0.600, 0.615, 0.590, 0.622, 0.605])
TREATED = np.array([0.618, 0.629, 0.611, 0.640, 0.615])  # +0.018 +0.014 +0.021 +0.018 +0.010


def test_t_interval_matches_scipy():
    got = stats.t_interval(VALUES)
    lo, hi = sps.t.interval(0.95, df=len(VALUES) - 1, loc=VALUES.mean(), scale=sps.sem(VALUES))
    assert got.mean == pytest.approx(VALUES.mean())
    assert got.std == pytest.approx(VALUES.std(ddof=1))
    assert got.n == 5
    assert (got.lo, got.hi) == (pytest.approx(lo), pytest.approx(hi))
    lo90, hi90 = sps.t.interval(0.90, df=4, loc=VALUES.mean(), scale=sps.sem(VALUES))
    got90 = stats.t_interval(VALUES, confidence=0.90)
    assert (got90.lo, got90.hi) == (pytest.approx(lo90), pytest.approx(hi90))


def test_t_interval_edge_cases():
    single = stats.t_interval([0.5])
    assert single.mean == 0.5 and single.n == 1
    assert math.isnan(single.std) and math.isnan(single.lo) and math.isnan(single.hi)
    with pytest.raises(ValueError, match="at least one"):
        stats.t_interval([])
    with pytest.raises(ValueError, match="finite"):  # a missing metric must be dropped upstream
        stats.t_interval([0.5, float("nan")])


def test_paired_tests_match_scipy():
    result = stats.paired_comparison(BASE, TREATED)
    t = sps.ttest_rel(TREATED, BASE)
    w = sps.wilcoxon(TREATED - BASE)
    assert result.n == 5
    assert result.mean_diff == pytest.approx((TREATED - BASE).mean())
    assert result.std_diff == pytest.approx((TREATED - BASE).std(ddof=1))
    assert result.t_stat == pytest.approx(t.statistic)
    assert result.t_p == pytest.approx(t.pvalue)
    assert result.wilcoxon_stat == pytest.approx(w.statistic)
    assert result.wilcoxon_p == pytest.approx(w.pvalue)  # exact: 2/2**5
    assert result.wilcoxon_p == pytest.approx(0.0625)
    ci = sps.t.interval(0.95, df=4, loc=(TREATED - BASE).mean(), scale=sps.sem(TREATED - BASE))
    assert (result.t_lo, result.t_hi) == (pytest.approx(ci[0]), pytest.approx(ci[1]))


def test_bootstrap_is_deterministic_with_a_seed_and_agrees_with_scipy():
    d = TREATED - BASE
    a = stats.bootstrap_mean_interval(d, seed=7)
    assert a == stats.bootstrap_mean_interval(d, seed=7)
    # With 5 values the resampled means are few and discrete; 40 values show the seed matters.
    many = np.random.default_rng(1).normal(size=40)
    assert stats.bootstrap_mean_interval(many, seed=7) != stats.bootstrap_mean_interval(
        many, seed=8
    )
    assert stats.paired_comparison(BASE, TREATED, seed=3) == stats.paired_comparison(
        BASE, TREATED, seed=3
    )
    reference = sps.bootstrap(
        (d,), np.mean, method="percentile", n_resamples=10_000, rng=np.random.default_rng(0)
    ).confidence_interval
    # Different resample streams: agreement to Monte-Carlo precision, not bit for bit.
    assert a[0] == pytest.approx(reference.low, abs=6e-4)
    assert a[1] == pytest.approx(reference.high, abs=6e-4)
    assert d.min() <= a[0] < d.mean() < a[1] <= d.max()
    assert all(math.isnan(x) for x in stats.bootstrap_mean_interval([0.1]))


def test_verdicts():
    margin = 0.01  # one point
    assert stats.paired_comparison(BASE, TREATED, margin=margin).verdict == stats.HELPS
    assert stats.paired_comparison(TREATED, BASE, margin=margin).verdict == stats.HURTS
    # Lower is better: the same increase hurts.
    assert stats.paired_comparison(BASE, TREATED, higher_is_better=False).verdict == stats.HURTS
    # No direction (structure metrics): say which way it moved.
    assert stats.paired_comparison(BASE, TREATED, higher_is_better=None).verdict == stats.RAISES
    assert stats.paired_comparison(TREATED, BASE, higher_is_better=None).verdict == stats.LOWERS
    # Two pairs: t with 1 degree of freedom, a wide interval, still a verdict.
    two = stats.paired_comparison(BASE[:2], TREATED[:2], margin=margin)
    assert two.verdict == stats.INCONCLUSIVE and two.n == 2 and two.t_lo < 0 < two.t_hi
    # Differences of both signs, ±3 points: neither a difference nor equality within 1 point.
    noisy = stats.paired_comparison(
        BASE, BASE + np.array([0.02, -0.03, 0.01, -0.01, 0.015]), margin=margin
    )
    assert noisy.verdict == stats.INCONCLUSIVE and noisy.seeds_needed > 5
    # The same spread a tenth as large: equal within a point.
    calm = stats.paired_comparison(
        BASE, BASE + np.array([0.002, -0.003, 0.001, -0.001, 0.0015]), margin=margin
    )
    assert calm.verdict == stats.EQUIVALENT
    # Without a margin, equality cannot be shown.
    assert (
        stats.paired_comparison(
            BASE, BASE + np.array([0.002, -0.003, 0.001, -0.001, 0.0015])
        ).verdict
        == stats.INCONCLUSIVE
    )


def test_identical_differences_without_warnings(recwarn):
    same = stats.paired_comparison(BASE[:3], BASE[:3], margin=0.01)
    assert (same.t_stat, same.t_p, same.wilcoxon_p) == (0.0, 1.0, 1.0)
    assert same.verdict == stats.EQUIVALENT  # the interval [0, 0]
    shifted = stats.paired_comparison([0.5, 0.6, 0.7], [0.51, 0.61, 0.71], margin=0.005)
    assert shifted.t_p == 0.0 and shifted.t_stat == math.inf
    assert shifted.verdict == stats.HELPS
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_bad_input_is_refused_and_a_nan_is_inconclusive():
    with pytest.raises(ValueError, match="equal length"):
        stats.paired_comparison([1.0, 2.0], [1.0])
    got = stats.paired_comparison([1.0, float("nan"), 2.0], [1.0, 2.0, 3.0])
    assert got.verdict == stats.INCONCLUSIVE and "non-finite" in got.reason
