"""The verdict rule of issue 23 (harness/results/stats.py, docs/statistics.md) on hand-made
differences, its interval against scipy, the minimum detectable effect and the seeds needed
against statsmodels' power functions and the closed form, Holm against a hand computation and
statsmodels, and the margin's way from protocol.yaml to the tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from nirbench.harness import results as agg
from nirbench.harness.config import DEFAULT_CONFIG
from nirbench.harness.results import stats
from nirbench.harness.results.analysis import is_headline, published_gain, with_holm
from nirbench.harness.results.export import grid_margin, parse_stats_section

DELTA = 0.01  # one point, as a fraction (the units of the stored metrics)
SHIPPED = Path(DEFAULT_CONFIG).parent / "protocol.yaml"


def verdict(d, margin=DELTA, **kw) -> stats.PairedComparison:
    return stats.compare_differences(np.asarray(d, dtype=float), margin=margin, **kw)


# ---------------------------------------------------------------- the four verdicts
def test_equivalent_when_the_whole_interval_is_inside_the_margin():
    d = [0.001, -0.002, 0.0015, -0.0005, 0.0, 0.001]  # ±0.1 point around 0
    got = verdict(d)
    assert got.verdict == stats.EQUIVALENT
    assert -DELTA < got.t_lo < 0 < got.t_hi < DELTA
    assert got.p_tost < 0.025 and got.t_p > 0.05 and got.reason == ""


def test_helps_and_hurts_when_the_interval_excludes_zero():
    d = np.array([0.018, 0.014, 0.021, 0.018, 0.010])
    assert verdict(d).verdict == stats.HELPS and verdict(d).t_lo > 0
    assert verdict(-d).verdict == stats.HURTS and verdict(-d).t_hi < 0
    # lower is better: the same increase hurts; no direction: 'higher' / 'lower'
    assert verdict(d, higher_is_better=False).verdict == stats.HURTS
    assert verdict(d, margin=math.nan, higher_is_better=None).verdict == stats.RAISES
    assert verdict(-d, margin=math.nan, higher_is_better=None).verdict == stats.LOWERS
    # detected but smaller than δ: the sign is established, so it reads helps, not equivalent
    small = np.array([0.002, 0.0021, 0.0019, 0.002])
    assert verdict(small).verdict == stats.HELPS and verdict(small).t_hi < DELTA


def test_inconclusive_when_the_interval_straddles_zero_and_reaches_past_the_margin():
    # the synth-cub numbers: 3 seeds, t-CI [-4.37, +2.55] points
    d = np.array([-0.035, 0.012, -0.006])
    got = verdict(d)
    assert got.verdict == stats.INCONCLUSIVE and got.t_lo < -DELTA and got.t_hi > 0
    assert "contains 0" in got.reason
    assert got.seeds_needed > 3  # more seeds would decide
    # without a margin (structure metrics) an interval around 0 cannot be 'equivalent'
    tight = [0.0001, -0.0001, 0.0002, -0.0002]
    assert verdict(tight, margin=math.nan, higher_is_better=None).verdict == stats.INCONCLUSIVE
    assert verdict(tight).verdict == stats.EQUIVALENT


def test_two_pairs_use_t_with_one_degree_of_freedom():
    d = np.array([0.004, 0.006])
    got = verdict(d)
    half = 12.7062047 * 0.00141421356 / math.sqrt(2)  # t(0.975, 1) * sd / sqrt(2) = 0.0127
    assert got.n == 2 and got.ci_half_width == pytest.approx(half)
    assert (got.t_lo, got.t_hi) == (pytest.approx(0.005 - half), pytest.approx(0.005 + half))
    assert got.verdict == stats.INCONCLUSIVE  # [-0.77, +1.77] points: past +δ, around 0
    tight = verdict([0.0005, 0.0010])  # [-0.24, +0.39] points: inside ±1
    assert tight.verdict == stats.EQUIVALENT and tight.n == 2


def test_one_pair_and_no_pair_are_inconclusive_with_a_reason():
    one = verdict([0.05])
    assert one.verdict == stats.INCONCLUSIVE and one.n == 1 and "needs 2" in one.reason
    assert math.isnan(one.t_lo) and math.isnan(one.mde_80) and math.isnan(one.seeds_needed)
    none = verdict([])
    assert none.verdict == stats.INCONCLUSIVE and none.reason == "no seed pairs"


def test_zero_variance_gives_a_point_interval(recwarn):
    zero = verdict([0.0, 0.0, 0.0])
    assert (zero.t_lo, zero.t_hi, zero.ci_half_width) == (0.0, 0.0, 0.0)
    assert zero.verdict == stats.EQUIVALENT and zero.p_tost == 0.0 and zero.t_p == 1.0
    up = verdict([0.02, 0.02, 0.02])
    assert up.verdict == stats.HELPS and up.t_lo == up.t_hi == pytest.approx(0.02)
    assert verdict([-0.02] * 3).verdict == stats.HURTS
    assert zero.seeds_needed == 2 and zero.mde_80 == 0.0
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_nan_is_inconclusive_with_the_reason():
    got = verdict([0.01, math.nan, 0.02])
    assert got.verdict == stats.INCONCLUSIVE and "pair(s) [1]" in got.reason
    assert math.isnan(got.t_lo) and got.n == 3
    assert stats.decide(math.nan, 0.1, DELTA) == stats.INCONCLUSIVE


def test_decide_is_strict_at_the_bounds():
    assert stats.decide(0.0, 0.5, 1.0) == stats.EQUIVALENT
    assert stats.decide(-1.0, 0.5, 1.0) == stats.INCONCLUSIVE  # touching -δ is not inside
    assert stats.decide(0.0, 2.0, 1.0) == stats.INCONCLUSIVE  # touching 0 is not above it
    assert stats.decide(1e-9, 2.0, 1.0) == stats.HELPS
    with pytest.raises(ValueError, match="margin must be > 0"):
        verdict([0.1, 0.2], margin=0.0)


# ---------------------------------------------------------------- the interval and the tests
def test_interval_and_p_values_match_scipy():
    rng = np.random.default_rng(3)
    base, treated = rng.normal(0.6, 0.01, 7), rng.normal(0.605, 0.01, 7)
    got = stats.paired_comparison(base, treated, margin=DELTA)
    d = treated - base
    lo, hi = sps.t.interval(0.95, df=6, loc=d.mean(), scale=sps.sem(d))
    assert (got.t_lo, got.t_hi) == (pytest.approx(lo), pytest.approx(hi))
    assert got.ci_half_width == pytest.approx((hi - lo) / 2)
    t = sps.ttest_rel(treated, base)
    assert (got.t_stat, got.t_p) == (pytest.approx(t.statistic), pytest.approx(t.pvalue))
    # TOST: the two one-sided paired t-tests against -δ and +δ (scipy's 'alternative')
    lower = sps.ttest_1samp(d, -DELTA, alternative="greater").pvalue
    upper = sps.ttest_1samp(d, DELTA, alternative="less").pvalue
    assert got.p_tost == pytest.approx(max(lower, upper))
    # the verdict read from the p-values is the verdict read from the interval
    assert stats.decide_by_p(got.t_p, got.p_tost, got.mean_diff) == got.verdict


def test_bootstrap_only_from_ten_pairs():
    few = verdict(np.linspace(-0.01, 0.01, 9))
    assert math.isnan(few.boot_lo) and math.isnan(few.boot_hi)
    many = verdict(np.linspace(-0.01, 0.01, 10))
    assert many.boot_lo < 0 < many.boot_hi


# ---------------------------------------------------------------- power and planning
@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_minimum_detectable_effect_matches_statsmodels(n):
    sd = 0.012
    effect = TTestPower().solve_power(
        effect_size=None, nobs=n, alpha=0.05, power=0.8, alternative="two-sided"
    )
    assert stats.min_detectable_effect(sd, n) == pytest.approx(effect * sd, rel=1e-4)
    assert stats.power_paired_t(effect, n) == pytest.approx(0.8, abs=1e-6)
    assert stats.power_paired_t(0.7, n) == pytest.approx(
        TTestPower().power(effect_size=0.7, nobs=n, alpha=0.05, alternative="two-sided")
    )


def test_minimum_detectable_effect_near_the_normal_closed_form_for_many_pairs():
    # large n: (z_0.975 + z_0.8) sd / sqrt(n)
    n, sd = 400, 1.0
    closed = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * sd / math.sqrt(n)
    assert stats.min_detectable_effect(sd, n) == pytest.approx(closed, rel=0.01)


@pytest.mark.parametrize(
    "sd,margin", [(0.5, 1.0), (1.0, 1.0), (2.3, 1.0), (1.0, 0.25), (10.0, 1.0)]
)
def test_seeds_needed_is_the_first_n_whose_half_width_fits(sd, margin):
    n = stats.seeds_needed(sd, margin)

    def half(k):
        return sps.t.ppf(0.975, k - 1) * sd / math.sqrt(k)

    assert half(n) <= margin and (n == 2 or half(n - 1) > margin)
    brute = next(k for k in range(2, 100_000) if half(k) <= margin)
    assert n == brute


def test_seeds_needed_edge_cases():
    assert stats.seeds_needed(0.0, 1.0) == 2
    assert math.isnan(stats.seeds_needed(math.nan, 1.0))
    assert math.isnan(stats.seeds_needed(1.0, math.nan))  # no margin, no target


# ---------------------------------------------------------------- Holm
def test_holm_against_a_hand_computation_and_statsmodels():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06)
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    with_nan = stats.holm([0.01, math.nan, 0.02])  # NaN is no test: m = 2
    assert with_nan[[0, 2]] == pytest.approx([0.02, 0.02]) and math.isnan(with_nan[1])
    rng = np.random.default_rng(0)
    many = rng.uniform(0, 0.2, 12)
    assert stats.holm(many) == pytest.approx(multipletests(many, method="holm")[1])


def comparisons(rows) -> pd.DataFrame:
    keys = ("dataset", "method", "reference", "arm", "metric", "t_p", "p_tost", "mean_diff")
    return pd.DataFrame([dict(zip(keys, r)) for r in rows])


def test_holm_adjusts_the_headline_family_only():
    frame = with_holm(
        comparisons(
            [
                ("synth-cub", "proxy_anchor", "none", "nir", "recall@1", 0.02, 0.9, 0.03),
                ("synth-cars", "proxy_anchor", "none", "nir", "recall@1", 0.04, 0.9, 0.02),
                ("synth-sop", "proxy_anchor", "none", "nir", "recall@1", 0.9, 0.006, 0.001),
                ("synth-cub", "proxy_anchor", "none", "nir", "map@r", 0.001, 0.9, 0.03),
                (
                    "synth-cub",
                    "proxy_anchor",
                    "none",
                    "nir[flow=false]",
                    "recall@1",
                    0.001,
                    0.9,
                    0.03,
                ),
                (
                    "synth-cub",
                    "proxy_anchor",
                    "nir[flow=false]",
                    "nir",
                    "recall@1",
                    0.001,
                    0.9,
                    0.03,
                ),
            ]
        )
    )
    assert frame["headline"].tolist() == [True, True, True, False, False, False]
    # t p: 0.02 x3 = 0.06, 0.04 x2 = 0.08, 0.9; TOST p: 0.006 x3 = 0.018 < 0.025
    assert frame["p_holm"][:3].tolist() == pytest.approx([0.06, 0.08, 0.9])
    assert frame["verdict_holm"].tolist() == [
        "inconclusive",
        "inconclusive",
        "equivalent",
        "",
        "",
        "",
    ]
    assert frame["p_holm"][3:].isna().all()
    assert is_headline("recall@1", "none", "nir") and not is_headline("recall@1", "none", "none")


# ---------------------------------------------------------------- the paper's gain
def test_published_gain_and_whether_the_interval_contains_it():
    assert published_gain("cub200", "proxy_anchor", "none", "nir", "recall@1") == 1.6
    assert published_gain("cars196", "proxy_anchor", "none", "nir", "recall@1") == 2.8
    assert published_gain("sop", "proxy_anchor", "none", "nir", "recall@1") == 0.9
    assert published_gain("synth-cub", "proxy_anchor", "none", "nir", "recall@1") is None
    assert published_gain("cub200", "proxy_anchor", "none", "nir[flow=false]", "recall@1") is None
    rows = []
    for seed, (base, nir) in enumerate([(0.640, 0.655), (0.645, 0.662), (0.642, 0.657)]):
        for reg, value in (("none", base), ("nir", nir)):
            rows.append(
                {
                    "run_id": f"{reg}{seed}",
                    "dataset": "cub200",
                    "method": "proxy_anchor",
                    "regularizer": reg,
                    "arm": reg,
                    "seed": seed,
                    "arm_hash": reg,
                    "recall@1": value,
                }
            )
    row = agg.compare_arms(pd.DataFrame(rows)).iloc[0]
    d = np.array([0.015, 0.017, 0.015])
    lo, hi = 100 * np.array(sps.t.interval(0.95, df=2, loc=d.mean(), scale=sps.sem(d)))
    assert row["published_gain"] == 1.6 and lo < 1.6 < hi  # [+1.38, +1.95] points
    assert bool(row["contains_published_gain"])
    cars = agg.compare_arms(pd.DataFrame(rows).assign(dataset="cars196")).iloc[0]
    assert cars["published_gain"] == 2.8 and not bool(cars["contains_published_gain"])
    synth = agg.compare_arms(pd.DataFrame(rows).assign(dataset="synth-cub")).iloc[0]
    assert synth["contains_published_gain"] is None and math.isnan(synth["published_gain"])


# ---------------------------------------------------------------- the margin: config to tables
def test_stats_section_is_parsed_and_checked():
    assert parse_stats_section({"margin": 0.5}, "x.yaml") == 0.5
    assert parse_stats_section(None, "x.yaml") is None
    for bad in ({"margin": 0}, {"margin": "one"}, {"margin": True}, {"delta": 1.0}, [1.0]):
        with pytest.raises(agg.AggregationError, match="x.yaml: stats"):
            parse_stats_section(bad, "x.yaml")


def test_the_grid_margin_comes_from_its_base_config(tmp_path):
    from nirbench.harness.config import load_config
    from nirbench.harness.grid.plan import load_grid, write_plan_record

    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(SHIPPED.read_text().replace("margin: 1.0", "margin: 0.5"))
    grid = tmp_path / "g.yaml"
    grid.write_text(
        "name: g\nconfig: protocol.yaml\ndatasets: [synth-cub]\n"
        "methods: [proxy_anchor]\nregularizers: [null]\nseeds: [0]\n"
    )
    plan = load_grid(grid)  # the stats section is no run's: the grid expands as before
    assert plan.configs[0].config_hash == load_grid(grid).configs[0].config_hash
    assert load_config(protocol).config_hash == load_config(SHIPPED).config_hash
    assert grid_margin(tmp_path, "g").points == stats.DEFAULT_MARGIN  # not run here yet
    write_plan_record(tmp_path, plan, str(grid))
    got = grid_margin(tmp_path, "g")
    assert got.points == 0.5 and str(protocol) in got.source
    assert grid_margin(tmp_path, None).source == "default"
    record = json.loads((tmp_path / "grids" / "g.json").read_text())
    assert "stats" not in json.dumps(record)  # the runs' record knows nothing of it


def test_the_shipped_protocol_sets_the_default_margin():
    from nirbench.harness.config import read_yaml

    margin = parse_stats_section(read_yaml(SHIPPED)["stats"], str(SHIPPED))
    assert margin == stats.DEFAULT_MARGIN
