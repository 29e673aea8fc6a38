"""Arms, comparisons between any two arms, the attribution ladder, the "still rising" rule, the
NIR-inactive marks and the verdict lines, on hand-made frames (no training, no MLflow)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from nirbench.harness import results as agg
from nirbench.harness.config import ConfigError
from nirbench.harness.grid.plan import declared_pairs, load_grid, write_plan_record
from nirbench.harness.results import activity, arms, convergence
from nirbench.harness.results.layouts import Marks, ladder_layout, table1_layout
from nirbench.harness.results.policies import LAST


# ---------------------------------------------------------------- arm keys and pairs
def test_arm_key_names_only_variants_that_differ_from_the_default():
    assert arms.arm_key("none", {}) == "none"
    assert arms.arm_key("nir", {"nir.form": "exp", "nir.weight": "0.0075"}) == "nir"
    assert arms.arm_key("nir", {"nir.flow": "false"}) == "nir[flow=false]"
    assert (
        arms.arm_key(
            "nir", {"nir.form": "nll", "nir.weight_convention": "lambda", "nir.weight": "100"}
        )
        == "nir[form=nll,weight_convention=lambda]"
    )
    assert arms.arm_key("nir", {"nir.flow": "True"}) == "nir"  # bools compare case-blind


def test_default_pairs_put_the_control_arm_between_baseline_and_nir():
    present = ["nir", "none", "nir[flow=false]", "nir[form=nll]"]
    pairs = arms.default_pairs(present)
    assert ("none", "nir") in pairs and ("none", "nir[flow=false]") in pairs
    assert ("nir[flow=false]", "nir") in pairs and ("none", "nir[form=nll]") in pairs
    assert len(pairs) == 4
    assert arms.ladders(present) == [("none", "nir[flow=false]", "nir")]
    assert arms.ladders(["none", "nir"]) == []
    assert sorted(present, key=arms.arm_order) == [
        "none",
        "nir[flow=false]",
        "nir",
        "nir[form=nll]",
    ]


def test_arm_titles_read_as_table_rows():
    assert arms.arm_title("none", "ProxyAnchor") == "ProxyAnchor"
    assert arms.arm_title("nir", "ProxyAnchor") == "+ NIR"
    assert arms.arm_title("nir[flow=false]", "x") == "+ NIR (no flow)"
    assert agg.arm_title("nir[weight_convention=lambda]", "x") == "+ NIR (λ on NIR)"


# ---------------------------------------------------------------- comparisons between any arms
def selected_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        for arm, shift in (("none", 0.0), ("nir[flow=false]", 0.05), ("nir", 0.051)):
            reg = "none" if arm == "none" else "nir"
            rows.append(
                {
                    "run_id": f"{arm}-{seed}",
                    "dataset": "synth-cub",
                    "method": "proxy_anchor",
                    "regularizer": reg,
                    "arm": arm,
                    "seed": seed,
                    "arm_hash": arm,
                    "recall@1": 0.5 + shift + 0.01 * rng.standard_normal(),
                }
            )
    return pd.DataFrame(rows)


def test_compare_arms_pairs_any_two_arms_by_seed_like_scipy():
    frame = selected_frame()
    out = agg.compare_arms(frame, [("nir[flow=false]", "none")], resamples=500)
    got = {(r.reference, r.arm): r for r in out.itertuples()}
    assert set(got) == {
        ("none", "nir[flow=false]"),
        ("nir[flow=false]", "nir"),
        ("none", "nir"),
        ("nir[flow=false]", "none"),
    }
    a = frame[frame.arm == "nir[flow=false]"].sort_values("seed")["recall@1"].to_numpy()
    b = frame[frame.arm == "nir"].sort_values("seed")["recall@1"].to_numpy()
    step = got[("nir[flow=false]", "nir")]
    assert step.mean_diff == pytest.approx((b - a).mean())
    assert step.t_p == pytest.approx(sps.ttest_rel(b, a).pvalue)
    reverse = got[("nir[flow=false]", "none")]
    assert reverse.mean_diff == pytest.approx(-got[("none", "nir[flow=false]")].mean_diff)


def test_ladder_table_shows_each_step_with_its_verdict():
    comparisons = agg.compare_arms(selected_frame(), resamples=500)
    table = ladder_layout(comparisons, LAST)
    steps = [row[2] for row in table.rows]
    assert steps == ["1. scale, decay, alignment", "2. the flow", "1 + 2: the whole arm"]
    assert [row[3] for row in table.rows] == [
        "+ NIR (no flow) vs baseline",
        "+ NIR vs + NIR (no flow)",
        "+ NIR vs baseline",
    ]
    verdicts = [row[2].text for row in table.cells]
    assert verdicts[0] == "helps"  # +5 points, tiny noise, 4 seeds
    assert (
        ladder_layout(
            agg.compare_arms(selected_frame()[lambda f: f.arm != "nir[flow=false]"], resamples=200),
            LAST,
        )
        is None
    )


# ---------------------------------------------------------------- still rising
def curve(values, run_id="r"):
    return pd.DataFrame(
        {"run_id": run_id, "epoch": np.arange(1, len(values) + 1), "test/recall@1": values}
    )


def test_rise_is_the_least_squares_rise_over_the_last_fifth():
    flat = curve([0.1, 0.3, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6])
    assert convergence.run_rise(flat) == pytest.approx(0.0, abs=1e-9)
    rising = curve(list(np.linspace(0.1, 0.6, 10)))  # +5.56 points per epoch
    window = 10 - math.ceil(0.2 * 10)  # epochs 8..10: slope x 2 epochs
    assert convergence.run_rise(rising) == pytest.approx(100 * 0.5 / 9 * (10 - window))
    noisy = curve([0.1, 0.3, 0.5, 0.6, 0.6, 0.6, 0.6, 0.62, 0.58, 0.61])
    assert abs(convergence.run_rise(noisy)) < convergence.RISE_MARGIN_PP
    assert math.isnan(convergence.run_rise(curve([0.3])))
    # eval.every: only every 3rd epoch evaluated, the last always
    sparse = pd.DataFrame(
        {"run_id": "r", "epoch": [3, 6, 9, 12, 15], "test/recall@1": [0.2, 0.4, 0.5, 0.55, 0.60]}
    )
    assert convergence.run_rise(sparse) == pytest.approx(100 * 0.05 / 3 * 3)


def test_convergence_table_flags_cells_by_their_mean_rise():
    runs = pd.DataFrame(
        {
            "run_id": ["a", "b", "c"],
            "dataset": "d",
            "method": "m",
            "arm": ["none", "none", "nir"],
            "epochs": [10, 10, 10],
        }
    )
    epochs = pd.concat(
        [
            curve([0.5] * 10, "a"),
            curve(list(np.linspace(0.1, 0.6, 10)), "b"),
            curve([0.5] * 10, "c"),
        ]
    )
    table = convergence.convergence_table(runs, epochs).set_index("arm")
    assert table.loc["none", "n"] == 2 and table.loc["none", "still_rising"]  # mean 5.6 / 2
    assert not table.loc["nir", "still_rising"]


# ---------------------------------------------------------------- marks and verdict lines
def summary_frame() -> pd.DataFrame:
    rows = []
    for arm in ("none", "nir"):
        rows.append(
            {
                "dataset": "synth-cub",
                "method": "proxy_anchor",
                "arm": arm,
                "regularizer": "none" if arm == "none" else "nir",
                "metric": "recall@1",
                "mean": 0.5,
                "std": 0.01,
                "n": 3,
                "ci95_lo": 0.48,
                "ci95_hi": 0.52,
                "seeds": "0 1 2",
                "run_ids": f"{arm}0 {arm}1 {arm}2",
            }
        )
    return pd.DataFrame(rows)


def test_marks_sit_on_r_at_1_and_the_note_states_their_rules():
    marks = Marks(
        frozenset({("synth-cub", "proxy_anchor", "none")}),
        {("synth-cub", "proxy_anchor", "nir"): 2},
    )
    table = table1_layout(summary_frame(), LAST, 6, None, marks)
    r1 = [row[0].text for row in table.cells]
    assert r1 == ["50.0 ± 1.0 †", "50.0 ± 1.0 ‡"]
    assert "still rising at the last epoch" in table.note and "NIR inactive" in table.note
    assert "†" not in table1_layout(summary_frame(), LAST, 6, None).note


def test_activity_table_reads_the_inactivity_tag():
    runs = pd.DataFrame(
        {
            "run_id": list("abcd"),
            "dataset": "d",
            "method": "m",
            "arm": ["nir", "nir", "nir", "none"],
            "nir.inactive_from_epoch": ["2", "3", "never", None],
        }
    )
    table = activity.activity_table(runs).set_index("arm")
    assert table.loc["nir", "inactive_runs"] == 2 and table.loc["nir", "inactive_from"] == 2
    assert "none" not in table.index
    assert activity.inactive_cells(runs) == {("d", "m", "nir"): 2}


def test_verdict_lines_lead_with_the_answer():
    frame = selected_frame()
    frame["epoch"] = 1
    epochs = frame[["run_id", "epoch"]].assign(**{"test/recall@1": frame["recall@1"]})
    runs = frame.drop(columns=["epoch"]).assign(epochs=1)
    analysis = agg.analyse(runs, epochs, resamples=500)
    found = agg.verdicts(analysis)
    lines = [v.line() for v in found]
    assert lines[0].startswith(
        "synth-cub, ProxyAnchor: + NIR (no flow) vs baseline: helps (Δ R@1 +"
    )
    assert "95% CI ±" in lines[0] and lines[0].endswith("δ = 1.0; 4 seeds)")
    # the half-width printed is the paired t interval's, in points
    step = next(v for v in found if v.arm == "nir" and v.reference == "nir[flow=false]")
    a = frame[frame.arm == "nir[flow=false]"].sort_values("seed")["recall@1"].to_numpy()
    b = frame[frame.arm == "nir"].sort_values("seed")["recall@1"].to_numpy()
    half = 100 * sps.t.ppf(0.975, 3) * sps.sem(b - a)
    assert step.line() == (
        f"synth-cub, ProxyAnchor: + NIR vs + NIR (no flow): inconclusive (Δ R@1 "
        f"{100 * (b - a).mean():+.2f} pp, 95% CI ±{half:.2f}, δ = 1.0; 4 seeds; ±δ needs "
        f"{step.seeds_needed} seeds)"
    )
    # the headline comparison (+ NIR vs baseline) states Holm's verdict beside its own
    headline = next(v for v in found if v.headline)
    assert (headline.arm, headline.reference) == ("nir", "none")
    assert headline.line().endswith("; Holm over 1 headline comparison: helps")
    # a wider margin re-decides the same runs without retraining: 5 points make the flow step
    # equivalent (its CI ±1.9 lies inside ±5)
    wide = agg.verdicts(agg.analyse(runs, epochs, resamples=500, margin=5.0))
    assert next(v for v in wide if v.reference == "nir[flow=false]").verdict == "equivalent"
    with pytest.raises(agg.AggregationError, match="margin must be a number of points > 0"):
        agg.analyse(runs, epochs, margin=0.0)


def test_zero_and_one_seed_lines_say_why():
    frame = selected_frame()[lambda f: f.seed == 0]
    frame = frame.assign(epoch=1)
    epochs = frame[["run_id", "epoch"]].assign(**{"test/recall@1": frame["recall@1"]})
    analysis = agg.analyse(frame.drop(columns=["epoch"]).assign(epochs=1), epochs)
    line = agg.verdicts(analysis)[0].line()
    assert ": inconclusive (" in line and "no 95% CI (1 seed pair: a t interval needs 2)" in line
    assert line.endswith("δ = 1.0; 1 seed)")


# ---------------------------------------------------------------- grid: declared comparisons
GRID = """
name: {name}
config: {config}
datasets: [synth-cub]
methods: [proxy_anchor]
regularizers: [null, {{name: nir, form: nll}}, nir]
seeds: [0]
compare: {compare}
"""


def test_grid_declares_pairs_and_records_them(tmp_path):
    from nirbench.harness.config import DEFAULT_CONFIG

    path = tmp_path / "g.yaml"
    path.write_text(
        GRID.format(name="g", config=DEFAULT_CONFIG, compare='[[nir, "nir[form=nll]"]]')
    )
    plan = load_grid(path)
    assert plan.compare == [("nir", "nir[form=nll]")]
    assert plan.arms() == ["none", "nir", "nir[form=nll]"]
    write_plan_record(tmp_path, plan, str(path))
    assert declared_pairs(tmp_path, "g") == [("nir", "nir[form=nll]")]
    assert declared_pairs(tmp_path, "other") == []
    path.write_text(GRID.format(name="g", config=DEFAULT_CONFIG, compare="[[nir, nir-nope]]"))
    with pytest.raises(ConfigError, match="nir-nope.*its arms: none, nir, nir\\[form=nll\\]"):
        load_grid(path)


def test_the_still_rising_outcome_is_said_when_no_cell_is_marked():
    table = pd.DataFrame(
        {
            "dataset": ["synth-cars", "synth-cub", "synth-cub"],
            "method": ["multi_similarity", "proxy_anchor", "proxy_anchor"],
            "arm": ["none", "nir", "none"],
            "rise": [1.0, 0.9, 0.6],
            "n": 3,
            "still_rising": False,
        }
    )
    assert convergence.status_line(table) == (
        "Still rising (†): none of 3 cells; the largest rise is 1.00 points (synth-cars, "
        "Multisimilarity), against the 2-point margin."
    )
    table.loc[1, ["rise", "still_rising"]] = [2.5, True]
    assert convergence.status_line(table) == (
        "Still rising (†): 1 of 3 cells: synth-cub, ProxyAnchor + NIR (2.50); margin 2 points."
    )
    order = convergence.in_reading_order(table)
    assert list(zip(order["dataset"], order["arm"])) == [
        ("synth-cub", "none"),
        ("synth-cub", "nir"),
        ("synth-cars", "none"),
    ]
    assert convergence.status_line(table.iloc[:0]) == ""
