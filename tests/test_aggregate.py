"""Aggregation: model-selection policies on hand-made histories, summaries and pairing against
scipy, published-vs-reproduced, table renderers (LaTeX bold-best), and the whole
MLflow -> tidy -> tables path on small synthetic MLflow stores logged directly with MlflowClient
(no training, so each store takes a second)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric
from scipy import stats as sps

from nirbench.harness import results as agg
from nirbench.harness.results import published
from nirbench.harness.cli.main import main
from nirbench.harness.tracking.store import Tracker

ENVIRONMENT = {
    "python": "3.11.9",
    "platform": "Linux-test",
    "processor": "x86_64",
    "cpu_count": 2,
    "torch_threads": 2,
    "gpus": [],
    "packages": {"torch": "2.14.1", "mlflow": "3.17.2"},
}
BASE_VALUES = {
    "recall_at_1": 0.50,
    "recall_at_2": 0.62,
    "map_at_r": 0.20,
    "r_precision": 0.28,
    "map_at_1000": 0.25,
    "nmi": 0.55,
}
STRUCTURE_VALUES = {"rho": 0.20, "pi_density": 0.60, "g2": 0.080}
# Test R@1 peaks at epoch 3 of 4, so "best test epoch" and "last epoch" differ; validation R@1
# peaks at epoch 2, so "best validation epoch" differs from both.
TEST_CURVE = (-0.06, -0.01, 0.01, 0.0)
VAL_CURVE = (-0.02, 0.02, 0.0, -0.01)


def synthetic_value(reg: str, seed: int, epoch: int, metric: str, curve=TEST_CURVE) -> float:
    base = {**BASE_VALUES, **STRUCTURE_VALUES}[metric]
    gain = (-0.05 if metric == "rho" else 0.03) if reg == "nir" else 0.0
    # Deterministic per-seed and per-arm wobble, so paired differences vary a little.
    noise = 0.002 * (((seed * 7 + (3 if reg == "nir" else 0)) % 5) - 2)
    return base + gain + noise + curve[epoch - 1]


def make_store(
    results_dir: Path,
    runs,
    *,
    epochs: int = 4,
    val: bool = False,
    structure: bool = False,
    grid: str = "synthetic",
) -> Tracker:
    """A Tracker whose experiment holds FINISHED runs with per-epoch histories, tags and an
    environment.json, as the runner would log them. ``runs``: (dataset, method, reg, seed)."""
    tracker = Tracker(results_dir, uri=f"sqlite:///{results_dir.resolve()}/mlflow.db")
    client = tracker.client
    now = int(time.time() * 1000)
    for dataset, method, reg, seed in runs:
        arm = f"{dataset}-{method}-{reg}"
        tags = {
            "dataset": dataset,
            "method": method,
            "regularizer": reg,
            "seed": str(seed),
            "backbone": "small_cnn",
            "config_hash": f"{arm}-{seed}",
            "arm_hash": arm,
            "grid": grid,
            "git_sha": "0123456789abcdef",
            "git_dirty": "false",
            "command": "nirbench grid synthetic.yaml",
            "reproduce": f"nirbench run --config runs/{arm}-{seed}/config.yaml",
            "mlflow.runName": f"{arm}-s{seed}",
        }
        if reg == "nir":
            tags["nir.form"] = "exp"
        run_id = client.create_run(tracker.experiment_id, tags=tags).info.run_id
        metrics = []
        for epoch in range(1, epochs + 1):
            names = list(BASE_VALUES) + (list(STRUCTURE_VALUES) if structure else [])
            metrics += [
                Metric(f"test/{m}", synthetic_value(reg, seed, epoch, m), now, epoch) for m in names
            ]
            metrics.append(Metric("loss/total", 1.0 / epoch, now, epoch))
            if val:
                metrics.append(
                    Metric(
                        "val/recall_at_1",
                        synthetic_value(reg, seed, epoch, "recall_at_1", VAL_CURVE),
                        now,
                        epoch,
                    )
                )
        metrics.append(Metric("time/train_total_s", 12.0, now, 0))
        client.log_batch(run_id, metrics=metrics)
        client.log_dict(run_id, ENVIRONMENT, "environment.json")
        client.set_terminated(run_id, "FINISHED")
    return tracker


def arms(datasets=("synth-cub",), seeds=(0, 1, 2), nir=True, ms=True):
    out = []
    for dataset in datasets:
        for seed in seeds:
            out.append((dataset, "proxy_anchor", "none", seed))
            if nir:
                out.append((dataset, "proxy_anchor", "nir", seed))
            if ms:
                out.append((dataset, "multi_similarity", "none", seed))
    return out


# ---------------------------------------------------------------- policies on hand-made histories
def history(rows):
    return pd.DataFrame(
        rows, columns=["run_id", "epoch", "test/recall@1", "test/map@r", "val/recall@1"]
    )


HAND = history(
    [
        ("a", 1, 0.40, 0.10, 0.30),
        ("a", 2, 0.55, 0.20, 0.50),
        ("a", 3, 0.55, 0.25, 0.45),
        ("a", 4, 0.50, 0.22, 0.35),
        ("b", 3, 0.70, 0.31, None),
        ("b", 1, 0.60, 0.30, None),
        ("b", 2, 0.65, 0.29, None),
    ]
)


def test_last_epoch_policy_takes_the_final_epoch():
    got = agg.select_epochs(HAND, agg.LAST).set_index("run_id")
    assert got.loc["a", "selected_epoch"] == 4 and got.loc["a", "recall@1"] == 0.50
    assert got.loc["b", "selected_epoch"] == 3  # rows out of order in the input
    assert set(got.columns) == {"selected_epoch", "recall@1", "map@r"}  # test metrics only


def test_best_test_policy_takes_the_max_test_recall_earliest_on_ties():
    got = agg.select_epochs(HAND, agg.BEST_TEST).set_index("run_id")
    assert got.loc["a", "selected_epoch"] == 2  # R@1 0.55 at epochs 2 and 3: the earlier one
    assert got.loc["a", "map@r"] == 0.20  # ... and that epoch's other metrics
    assert got.loc["b", "selected_epoch"] == 3


def test_best_test_leaves_out_metrics_only_some_evaluations_measured():
    """eval.full_every=0: NMI after the last epoch only. The best epoch is an intermediate one
    for run a, the last for run b: the column is left out for both, not averaged over b alone."""
    hand = HAND.assign(**{"test/nmi": [None, None, None, 0.5, 0.6, None, None]})
    got = agg.select_epochs(hand, agg.BEST_TEST).set_index("run_id")
    assert got["nmi"].isna().all() and got.loc["a", "map@r"] == 0.20
    last = agg.select_epochs(hand, agg.LAST).set_index("run_id")
    assert last.loc["a", "nmi"] == 0.5 and last.loc["b", "nmi"] == 0.6


def test_best_val_policy_selects_on_validation_and_reports_test():
    got = agg.select_epochs(HAND, agg.BEST_VAL).set_index("run_id")
    assert list(got.index) == ["a"]  # b has no validation history: left out, not guessed
    assert got.loc["a", "selected_epoch"] == 2 and got.loc["a", "recall@1"] == 0.55
    with pytest.raises(agg.PolicyUnavailable, match="no validation split"):
        agg.select_epochs(HAND.drop(columns="val/recall@1"), agg.BEST_VAL)
    with pytest.raises(agg.PolicyUnavailable, match="no validation split"):
        agg.select_epochs(HAND.assign(**{"val/recall@1": np.nan}), agg.BEST_VAL)


# ---------------------------------------------------------------- summaries and pairing
def selected_frame(values: dict[tuple[str, int], float], metric="recall@1") -> pd.DataFrame:
    rows = [
        {
            "run_id": f"{reg}-{seed}",
            "dataset": "synth-cub",
            "method": "proxy_anchor",
            "regularizer": reg,
            "seed": seed,
            "arm_hash": reg,
            metric: v,
        }
        for (reg, seed), v in values.items()
    ]
    return pd.DataFrame(rows)


def test_summary_has_t_intervals_and_run_ids():
    frame = selected_frame({("none", 0): 0.61, ("none", 1): 0.63, ("none", 2): 0.60})
    row = agg.summarize(frame).iloc[0]
    values = np.array([0.61, 0.63, 0.60])
    lo, hi = sps.t.interval(0.95, df=2, loc=values.mean(), scale=sps.sem(values))
    assert row["mean"] == pytest.approx(values.mean()) and row["n"] == 3
    assert (row["ci95_lo"], row["ci95_hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert row["run_ids"] == "none-0 none-1 none-2" and row["seeds"] == "0 1 2"


def test_summary_refuses_two_runs_of_one_arm_and_seed():
    frame = selected_frame({("none", 0): 0.61, ("none", 1): 0.63})
    frame.loc[1, "seed"] = 0
    with pytest.raises(agg.AggregationError, match="share a table cell and a seed"):
        agg.summarize(frame)


def test_comparison_pairs_by_seed_and_lists_unpaired_seeds():
    frame = selected_frame(
        {
            ("none", 0): 0.60,
            ("none", 1): 0.62,
            ("none", 2): 0.59,
            ("none", 3): 0.70,
            ("nir", 2): 0.62,
            ("nir", 1): 0.64,
            ("nir", 0): 0.63,
            ("nir", 5): 0.99,
        }
    )
    row = agg.compare_arms(frame).iloc[0]
    base, nir = np.array([0.60, 0.62, 0.59]), np.array([0.63, 0.64, 0.62])
    assert row["n"] == 3 and row["seeds"] == "0 1 2" and row["unpaired_seeds"] == "3 5"
    assert row["mean_diff"] == pytest.approx((nir - base).mean())
    assert row["t_p"] == pytest.approx(sps.ttest_rel(nir, base).pvalue)
    assert row["baseline_run_ids"] == "none-0 none-1 none-2"
    assert row["treated_run_ids"] == "nir-0 nir-1 nir-2"


# ---------------------------------------------------------------- published numbers
def test_published_values_are_the_papers_table1():
    assert published.published("proxy_anchor", "nir", "cars196", "recall@1") == (85.2, 0.3)
    assert published.published("soft_triple", "none", "sop", "map@1000") == (43.5, 0.1)
    assert published.published("multi_similarity", "none", "cub200", "nmi") == (67.8, 0.4)
    assert published.published("multi_similarity", "nir", "cub200", "recall@1") is None
    assert published.published("proxy_anchor", "none", "synth-cub", "recall@1") is None
    assert published.published("proxy_anchor", "none", "cub200", "map@r") is None
    frame = published.published_frame()
    assert len(frame) == 7 * 3 * 3 and set(frame["dataset"]) == set(published.DATASETS)


def test_published_vs_reproduced_difference():
    summary = agg.summarize(
        pd.concat(
            [
                selected_frame({("nir", 0): 0.66, ("nir", 1): 0.68}).assign(dataset="cub200"),
                selected_frame({("none", 0): 0.50}).assign(dataset="synth-cub"),
            ]
        )
    )
    got = agg.compare_published(summary)
    assert len(got) == 1  # the synthetic dataset has no published counterpart
    row = got.iloc[0]
    assert row["ours_mean"] == pytest.approx(67.0) and row["paper_mean"] == 66.0
    assert row["difference"] == pytest.approx(1.0) and row["run_ids"] == "nir-0 nir-1"


# ---------------------------------------------------------------- renderers
def small_table(values, bold=True) -> agg.Table:
    cells = tuple(
        (agg.Cell(f"{v:.1f}" if v is not None else "-", v, (f"run{i}",), f"runs run{i}"),)
        for i, v in enumerate(values)
    )
    return agg.Table(
        "t_1",
        "Caption with 50% & more_stuff",
        ("Method",),
        tuple((f"M_{i}",) for i in range(len(values))),
        (agg.Column("synth-cub", "R@1", bold_best=bold),),
        cells,
        "note ± 1",
    )


def test_latex_bolds_the_best_of_each_column_ties_included():
    tex = agg.to_latex(small_table([61.24, 61.16, 60.0, None]))  # 61.2 and 61.2 print the same
    assert r"\textbf{61.2}" in tex and tex.count(r"\textbf") == 2
    assert r"M\_0 & \textbf{61.2} \\" in tex and r"M\_2 & 60.0 \\" in tex
    for command in (
        r"\toprule",
        r"\midrule",
        r"\bottomrule",
        r"\multicolumn{1}{c}{synth-cub}",
        r"\cmidrule(lr){2-2}",
        r"\begin{tabular}{lc}",
    ):
        assert command in tex
    assert r"50\% \& more\_stuff" in tex and r"note $\pm$ 1" in tex
    assert r"\textbf" not in agg.to_latex(small_table([61.2, 60.0], bold=False))
    assert r"\textbf" not in agg.to_latex(small_table([61.2]))  # nothing to be best against


def test_html_cells_carry_their_run_ids_and_links():
    page = agg.to_html(small_table([61.2, 60.0]), link=lambda ids: f"#run-{ids[0]}")
    assert 'title="runs run0" data-runs="run0"><a href="#run-run0"><b>61.2</b></a>' in page
    assert 'class="num best"' in page and page.count("<b>") == 1
    assert "&amp; more_stuff" in page


def test_markdown_layout():
    md = agg.to_markdown(small_table([61.2, 60.0]))
    assert md.splitlines()[:3] == ["| Method | synth-cub R@1 |", "|---|---|", "| M_0 | 61.2 |"]


# ---------------------------------------------------------------- MLflow -> files
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Tracker, Path]:
    results = tmp_path_factory.mktemp("agg") / "results"
    tracker = make_store(results, arms(seeds=(0, 1, 2)), val=True)
    return tracker, results


def test_collect_builds_tidy_runs_and_epochs(store):
    tracker, _ = store
    collected = agg.collect(tracker)
    runs, epochs = collected.runs, collected.epochs
    assert len(runs) == 9 and runs["run_id"].is_unique
    assert (runs["epochs"] == 4).all() and (runs["environment_id"] != "").all()
    assert runs.loc[runs["regularizer"] == "nir", "nir.form"].eq("exp").all()
    expected = [
        synthetic_value(r, s, 4, "recall_at_1") for r, s in zip(runs["regularizer"], runs["seed"])
    ]
    assert runs["recall@1"].tolist() == pytest.approx(expected)
    assert len(epochs) == 9 * 4 and set(epochs["epoch"]) == {1, 2, 3, 4}
    assert {"test/recall@1", "test/map@1000", "val/recall@1", "loss/total"} <= set(epochs.columns)
    assert "time/train_total_s" not in epochs.columns  # logged once at step 0, not per epoch
    assert list(collected.meta["environments"].values()) == [ENVIRONMENT]


def test_write_tables_all_policies_and_formats(store):
    tracker, results = store
    out = results / "tables"
    files = agg.write_tables(tracker, out, resamples=2000, seed=0, command="nirbench aggregate")
    for name in ("runs", "epochs", "selected"):
        csv, parquet = pd.read_csv(out / f"{name}.csv"), pd.read_parquet(out / f"{name}.parquet")
        assert len(csv) == len(parquet) > 0
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 9 and runs["run_id"].is_unique
    for folder in (out, out / "best-test", out / "best-val"):
        for name in ("table1", "extended", "comparison"):
            for ext in ("md", "tex", "html", "csv"):
                assert (folder / f"{name}.{ext}").is_file(), folder / f"{name}.{ext}"
        assert (folder / "summary.csv").is_file()
    assert not (out / "published.md").exists()  # synthetic datasets only

    selected = pd.read_parquet(out / "selected.parquet")
    epoch = selected.groupby("policy")["selected_epoch"].unique()
    assert list(epoch["last"]) == [4] and list(epoch["best-test"]) == [3]
    assert list(epoch["best-val"]) == [2]
    best_val = pd.read_csv(out / "best-val" / "summary.csv")
    pa = best_val[
        (best_val.method == "proxy_anchor")
        & (best_val.regularizer == "none")
        & (best_val.metric == "recall@1")
    ].iloc[0]
    assert pa["mean"] == pytest.approx(
        np.mean([synthetic_value("none", s, 2, "recall_at_1") for s in (0, 1, 2)])
    )

    comparison = pd.read_csv(out / "comparison.csv")
    # the columns other code reads (bench robustness) keep their names; the new ones are added
    assert {
        "dataset",
        "method",
        "reference",
        "arm",
        "metric",
        "verdict",
        "mean_diff",
        "t_lo",
        "t_hi",
        "margin",
        "ci_half_width",
        "mde_80",
        "seeds_needed",
        "p_holm",
        "verdict_holm",
        "contains_published_gain",
    } <= set(comparison.columns)
    r1 = comparison[comparison.metric == "recall@1"].iloc[0]
    assert (
        r1["n"] == 3
        and r1["verdict"] == "helps"
        and r1["mean_diff"] == pytest.approx(0.03, abs=0.01)
    )
    assert r1["margin"] == pytest.approx(0.01) and r1["headline"]  # δ = 1 point, as a fraction
    assert r1["ci_half_width"] == pytest.approx((r1["t_hi"] - r1["t_lo"]) / 2)
    assert np.isnan(r1["boot_lo"])  # 3 pairs: no bootstrap interval
    assert comparison.loc[comparison.metric == "rho", "margin"].isna().all()  # no margin
    assert "helps" in files.markdown and "ProxyAnchor" in files.markdown
    assert "margin δ = 1.0 points" in files.markdown and "Holm-adjusted: 1 helps" in files.markdown
    assert "—" in (out / "comparison.md").read_text()  # the bootstrap column, below 10 pairs
    assert (out / "table1.tex").read_text().count(r"\textbf") >= 4
    meta = json.loads((out / "meta.json").read_text())
    assert meta["policies"]["best-val"]["available"] and meta["bootstrap_resamples"] == 2000
    assert meta["command"] == "nirbench aggregate"
    assert meta["stats_margin"] == 1.0 and meta["stats_margin_source"] == "default"


def test_no_validation_split_is_said_not_guessed(tmp_path):
    tracker = make_store(tmp_path / "r", arms(seeds=(0, 1), ms=False))
    files = agg.write_tables(tracker, tmp_path / "t", resamples=500)
    assert "no validation split" in (tmp_path / "t" / "best-val" / "README.md").read_text()
    assert not (tmp_path / "t" / "best-val" / "table1.md").exists()
    assert "best validation epoch: not available: no validation split" in files.markdown
    comparison = pd.read_csv(tmp_path / "t" / "comparison.csv")
    # two seeds: t with 1 degree of freedom (12.7 x the standard error) cannot decide a +3 point
    # gain that wobbles by 1 point; the table says how many seeds would
    assert set(comparison["verdict"]) == {"inconclusive"}
    r1 = comparison[comparison.metric == "recall@1"].iloc[0]
    d = np.array(
        [
            synthetic_value("nir", s, 4, "recall_at_1")
            - synthetic_value("none", s, 4, "recall_at_1")
            for s in (0, 1)
        ]
    )
    assert r1["ci_half_width"] == pytest.approx(sps.t.ppf(0.975, 1) * sps.sem(d))
    assert r1["seeds_needed"] > 2 and r1["verdict_holm"] == "inconclusive"

    # The real datasets get the published numbers beside ours.
    tracker = make_store(
        tmp_path / "real",
        [("cub200", "proxy_anchor", r, s) for r in ("none", "nir") for s in (0, 1)],
    )
    agg.write_tables(tracker, tmp_path / "rt", resamples=500)
    pub = pd.read_csv(tmp_path / "rt" / "published.csv")
    row = pub[(pub.regularizer == "nir") & (pub.metric == "recall@1")].iloc[0]
    ours = 100 * np.mean([synthetic_value("nir", s, 4, "recall_at_1") for s in (0, 1)])
    assert row["paper_mean"] == 66.0 and row["difference"] == pytest.approx(ours - 66.0)
    assert "66.0 ± 0.3" in (tmp_path / "rt" / "best-test" / "published.md").read_text()
    # ... and each comparison says whether its interval contains the paper's gain (+1.6)
    comparison = pd.read_csv(tmp_path / "rt" / "comparison.csv")
    head = comparison[comparison.headline].iloc[0]
    assert head["published_gain"] == 1.6
    assert head["contains_published_gain"] == bool(100 * head["t_lo"] <= 1.6 <= 100 * head["t_hi"])
    assert comparison.loc[comparison.metric == "map@r", "contains_published_gain"].isna().all()


def test_aggregate_cli_and_its_errors(tmp_path, capsys):
    make_store(tmp_path / "r", arms(seeds=(0, 1), ms=False), grid="g1")
    assert (
        main(
            [
                "aggregate",
                "--results-dir",
                str(tmp_path / "r"),
                "--grid",
                "g1",
                "--bootstrap",
                "500",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| ProxyAnchor |" in out and "tables written to" in out
    assert "δ = 1.0" in out
    assert (
        main(
            [
                "aggregate",
                "--results-dir",
                str(tmp_path / "r"),
                "--grid",
                "g1",
                "--bootstrap",
                "500",
                "--margin",
                "0.5",
                "--quiet",
            ]
        )
        == 0
    )
    assert "δ = 0.5" in capsys.readouterr().out
    meta = json.loads((tmp_path / "r" / "tables" / "meta.json").read_text())
    assert (meta["stats_margin"], meta["stats_margin_source"]) == (0.5, "--margin")
    with pytest.raises(SystemExit):
        main(["aggregate", "--results-dir", str(tmp_path / "r"), "--margin", "-1"])
    assert "--margin must be a number of points > 0" in capsys.readouterr().err
    assert main(["aggregate", "--results-dir", str(tmp_path / "r"), "--grid", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no finished runs of grid 'nope'" in err and "nirbench grid" in err
