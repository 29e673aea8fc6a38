"""The embedded protocol: the pretrained small CNN (built once, cached, reproducible, RNG-neutral,
part of the run identity), the evaluation cadence, the grids that use it, and the two benchmarks
that measure it (bench protocol, bench convergence)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from nirbench.harness.bench import convergence
from nirbench.harness.budgets import BudgetError, parse_budgets
from nirbench.harness.config import ConfigError, load_config, read_yaml
from nirbench.harness.config_identity import identity_tree
from nirbench.harness.evaluation.cadence import is_eval_epoch, rise_window_start
from nirbench.harness.grid.plan import load_grid
from nirbench.harness.train import pretrain
from nirbench.harness.train.engine import cosine_factor

GRIDS = "harness/configs/grids"


@pytest.fixture
def tiny_recipe(monkeypatch):
    """One epoch over 96 random images of 6 classes: seconds, same code path."""
    gen = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.arange(96) % 6
    monkeypatch.setattr(pretrain, "pretraining_data", lambda cache: (images, labels))
    monkeypatch.setitem(pretrain.RECIPE, "epochs", 1)
    monkeypatch.setitem(pretrain.RECIPE, "batch_size", 32)
    calls = []
    real = pretrain.pretrain

    def counting(width, cache, input_px=None):
        calls.append(width)
        return real(width, cache, input_px)

    monkeypatch.setattr(pretrain, "pretrain", counting)
    return calls


def test_pretrained_weights_are_built_once_reproducibly_and_leave_the_rng_alone(
    tmp_path, tiny_recipe
):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    path = pretrain.ensure_weights(tmp_path / "a", 0.25, tmp_path)
    assert torch.equal(torch.get_rng_state(), before)  # the calling run's stream is untouched
    assert pretrain.ensure_weights(tmp_path / "a", 0.25, tmp_path) == path
    assert tiny_recipe == [0.25]  # the second call read the cache
    again = pretrain.ensure_weights(tmp_path / "b", 0.25, tmp_path)
    first, second = torch.load(path), torch.load(again)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # bitwise, a fresh build
    assert path.name == f"small_cnn-{pretrain.recipe_id(0.25)}.pt"


def test_the_recipe_is_part_of_the_run_identity(monkeypatch):
    scratch = load_config(overrides=["backbone.pretrained=false"])
    pre = load_config(overrides=["backbone.pretrained=true"])
    assert scratch.backbone.weights is None and scratch.to_dict()["backbone"]["weights"] is None
    assert "weights" not in identity_tree(scratch)["backbone"]  # shown, not part of the identity
    assert pre.backbone.weights == pretrain.recipe_id(1.0)
    assert pre.config_hash != scratch.config_hash
    monkeypatch.setitem(pretrain.RECIPE, "epochs", 9)
    assert load_config(overrides=["backbone.pretrained=true"]).config_hash != pre.config_hash
    with pytest.raises(ConfigError, match="backbone.weights.*derived"):
        load_config(overrides=["backbone.pretrained=true", "backbone.weights=other"])


def test_a_pretrained_run_starts_from_the_cached_weights(tmp_path, tiny_recipe):
    from nirbench.harness.data import load_dataset
    from nirbench.harness.train.engine import build_trainer
    from nirbench.harness.train.runner import pretrained_weights

    cfg = load_config(
        overrides=["backbone.pretrained=true", "backbone.width=0.25", "dataset.name=test-tiny"]
    )
    path = pretrained_weights(cfg, tmp_path)
    bundle = load_dataset("test-tiny", None, tmp_path / "cache" / "data")
    trainer = build_trainer(cfg, bundle, torch.device("cpu"), path)
    stored = torch.load(path)
    assert all(torch.equal(trainer.model.body.state_dict()[k], v) for k, v in stored.items())
    with pytest.raises(ValueError, match="needs its embedded pretraining weights"):
        build_trainer(cfg, bundle, torch.device("cpu"))


def test_cosine_schedule_and_evaluation_cadence():
    assert cosine_factor(0, 1, 12) == 1.0 and cosine_factor(1, 1, 12) == 1.0
    assert cosine_factor(11, 1, 12) == pytest.approx(
        0.5 * (1 + torch.cos(torch.tensor(torch.pi * 10 / 11)).item())
    )
    assert all(cosine_factor(e, 1, 12) > cosine_factor(e + 1, 1, 12) for e in range(1, 11))
    cfg = load_config(overrides=["eval.every=3", "train.epochs=16"])
    assert [e for e in range(1, 17) if is_eval_epoch(e, cfg)] == [3, 6, 9, 12, 15, 16]
    # dense_tail: also every epoch of the still-rising rule's window (the last ceil(0.2 E) epochs
    # and the one before, where the slope starts)
    dense = load_config(overrides=["eval.every=3", "train.epochs=24", "eval.dense_tail=true"])
    assert [e for e in range(1, 25) if is_eval_epoch(e, dense)] == [
        3,
        6,
        9,
        12,
        15,
        18,
        19,
        20,
        21,
        22,
        23,
        24,
    ]
    assert rise_window_start(24) == 24 - 5 and rise_window_start(3) == 2


@pytest.mark.parametrize("grid", ["default", "variance", "attribution", "zoo", "convergence"])
def test_the_embedded_grids_run_the_protocol(grid):
    plan = load_grid(f"{GRIDS}/{grid}.yaml")
    # the budgets are written once, in protocol.yaml (harness/budgets.py reads them)
    table = parse_budgets(read_yaml(f"{GRIDS}/../protocol.yaml")["budgets"], "protocol.yaml")
    arm_epochs: dict = {}
    for cfg in plan.configs:
        assert cfg.backbone.weights == pretrain.recipe_id(1.0, 24) and cfg.train.channels_last
        assert cfg.train.lr_schedule == "cosine" and cfg.eval.every == 4
        assert cfg.eval.dense_tail and cfg.eval.full_every == 0
        budget = table.epochs(cfg.dataset.name, cfg.method.name)
        assert cfg.train.epochs in (budget, 2 * budget)
        arm_epochs.setdefault((cfg.dataset.name, cfg.method.name, cfg.seed), set()).add(
            (cfg.regularizer_name, cfg.train.epochs)
        )
    if grid != "convergence":  # the arms of one method and dataset share its budget
        for arms in arm_epochs.values():
            assert len({epochs for _, epochs in arms}) == 1, arms
    if grid in ("default", "variance"):  # the headline comparison on all three datasets
        rows = {(c.dataset.name, c.method.name, c.regularizer_name) for c in plan.configs}
        assert rows == {(d, "proxy_anchor", r) for d in table.datasets for r in ("none", "nir")}
        # seeds sized from the measured variance (the grid's comment, docs/numerics.md)
        assert {c.seed for c in plan.configs} == set(range(4 if grid == "default" else 10))


def test_the_attribution_grid_runs_the_ladder():
    plan = load_grid(f"{GRIDS}/attribution.yaml")
    assert plan.arms() == ["none", "nir[flow=false]", "nir"]
    assert ("nir[flow=false]", "nir") in plan.compare
    default = {c.config_hash for c in load_grid(f"{GRIDS}/default.yaml").configs}
    shared = [c for c in plan.configs if c.config_hash in default]
    assert len(shared) == 18  # PA and PA + NIR, seeds 0-2: the same runs as the default grid's


def test_convergence_rule_pairs_budget_and_double():
    runs = pd.DataFrame(
        {
            "dataset": ["d"] * 4,
            "method": ["a", "a", "b", "b"],
            "epochs": [12, 24, 12, 24],
            "recall@1": [0.70, 0.715, 0.60, 0.65],
        }
    )
    table = convergence.budgets(runs).set_index("method")
    assert table.loc["a", "converged"] and table.loc["a", "gap_pp"] == pytest.approx(1.5)
    assert not table.loc["b", "converged"] and table.loc["b", "budget"] == 12


def test_the_grid_says_where_the_workers_time_went():
    from nirbench.harness.cli.grid import overhead_line
    from nirbench.harness.grid.executors.job import JobResult

    results = [
        JobResult("a", "finished", seconds=50.0, train_s=45.0),
        JobResult("b", "finished", seconds=40.0, train_s=38.0),
    ]
    line = overhead_line(results, wall=50.0, workers=2)  # 100 s of worker time
    assert "epochs 83.0%" in line and "per-run set-up and tracking 7.0% (3.5s a run)" in line
    assert "idle 10.0%" in line


def test_bench_protocol_times_the_old_default_against_the_protocol():
    from nirbench.harness.bench.protocol import (
        BEFORE_OVERRIDES,
        old_default_config,
        protocol_config,
    )

    after = protocol_config("synth-sop")
    before = old_default_config(after)
    assert after.train.epochs == 24 and after.eval.every == 4 and after.backbone.input_px == 24
    assert before.backbone.input_px is None and not before.train.channels_last
    assert not before.train.fused_optimizer and before.eval.every == 1
    assert before.eval.batch_size == 512
    # nothing else differs: the same dataset, method, budget and seed
    changed = {
        k
        for k in BEFORE_OVERRIDES
        if before.to_dict().get(k.split(".")[0], {}).get(k.split(".")[1])
        != after.to_dict().get(k.split(".")[0], {}).get(k.split(".")[1])
    }
    assert changed == {
        "backbone.input_px",
        "backbone.pretrained",
        "backbone.weights",
        "train.channels_last",
        "train.fused_optimizer",
        "eval.every",
        "eval.full_every",
        "eval.batch_size",
    }
    assert (before.dataset, before.method, before.train.epochs, before.seed) == (
        after.dataset,
        after.method,
        after.train.epochs,
        after.seed,
    )


def test_bench_convergence_reports_the_rise_of_every_arm_and_budget(tmp_path):
    """The calibration of the still-rising mark: bench convergence gives every arm's mean rise per
    budget, next to the 2B gaps of the baselines."""
    from test_aggregate import arms, make_store

    from nirbench.harness.bench.convergence import check
    from nirbench.harness.results.convergence import RISE_MARGIN_PP

    make_store(tmp_path, arms(), grid="convergence")
    out = check(tmp_path)
    assert out["rise_margin_pp"] == RISE_MARGIN_PP == 2.0
    rises = {(r["method"], r["arm"]): r for r in out["rises"]}
    assert set(rises) == {
        ("proxy_anchor", "none"),
        ("proxy_anchor", "nir"),
        ("multi_similarity", "none"),
    }
    # TEST_CURVE ends 0.01 -> 0.0 over the window (epochs 3-4 of 4): -1 point
    none = rises[("proxy_anchor", "none")]
    assert none["rise_pp"] == pytest.approx(-1.0) and not none["still_rising"]
    assert (none["epochs"], none["n"]) == (4, 3)
    assert none["r1_at_last"] == pytest.approx(50.0, abs=0.5)  # BASE_VALUES' R@1, last epoch
    assert out["cells"] == []  # one budget only: no 2B pair to judge


def test_prepare_only_builds_the_pretraining_and_runs_nothing(tmp_path, tiny_recipe):
    """./run_all.sh's set-up: `nirbench grid GRID --prepare-only` builds the weights the grid's
    runs start from (once) and trains no run, so the main job's clock starts after it."""
    from nirbench.harness.cli.main import main
    from nirbench.harness.tracking.store import Tracker

    grid = tmp_path / "g.yaml"
    grid.write_text(
        "name: g\ndatasets: [test-tiny]\nmethods: [proxy_anchor]\nseeds: [0, 1]\n"
        "overrides: [backbone.pretrained=true, backbone.width=0.25, train.epochs=2]\n"
    )
    argv = ["grid", str(grid), "--results-dir", str(tmp_path / "results"), "--prepare-only"]
    assert main(argv) == 0
    weights = list((tmp_path / "results" / "cache" / "pretrained").glob("small_cnn-*.pt"))
    assert len(weights) == 1 and tiny_recipe == [0.25]
    assert Tracker(tmp_path / "results").runs() == []
    assert main(argv) == 0 and tiny_recipe == [0.25]  # cached: not built again


def test_budgets_are_read_once_and_scaled_and_explicit_epochs_win(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "budgets:\n  datasets: {synth-cub: 7, synth-cars: 9}\n"
        "  methods: {multi_similarity: {synth-cars: 11}}\n"
    )
    (tmp_path / "grid.yaml").write_text(
        "config: base.yaml\ndatasets: [synth-cub, synth-cars]\n"
        "methods: [proxy_anchor, multi_similarity]\nblocks:\n  - {}\n"
        "  - {budget_scale: 2}\n"
        "  - {datasets: [synth-cub], dataset_overrides: {synth-cub: [train.epochs=3]}}\n"
    )
    plan = load_grid(tmp_path / "grid.yaml")
    got = [(c.dataset.name, c.method.name, c.train.epochs) for c in plan.configs]
    assert got == [
        ("synth-cub", "proxy_anchor", 7),
        ("synth-cub", "multi_similarity", 7),
        ("synth-cars", "proxy_anchor", 9),
        ("synth-cars", "multi_similarity", 11),
        ("synth-cub", "proxy_anchor", 14),
        ("synth-cub", "multi_similarity", 14),
        ("synth-cars", "proxy_anchor", 18),
        ("synth-cars", "multi_similarity", 22),
        ("synth-cub", "proxy_anchor", 3),
        ("synth-cub", "multi_similarity", 3),
    ]
    with pytest.raises(BudgetError, match="budgets.datasets"):
        parse_budgets({"datasets": {"synth-cub": 0}}, "x")


def test_a_single_run_from_the_protocol_file_gets_its_budget():
    from nirbench.harness.config import load_config

    assert (
        load_config(
            f"{GRIDS}/../protocol.yaml", ["dataset.name=synth-cars", "method=multi_similarity"]
        ).train.epochs
        == 64
    )
    assert load_config(f"{GRIDS}/../protocol.yaml", ["dataset.name=synth-sop"]).train.epochs == 24
    assert load_config(f"{GRIDS}/../protocol.yaml", ["train.epochs=5"]).train.epochs == 5


def test_bench_protocol_splits_an_epoch_into_its_phases(tmp_path):
    """The phase split runs the real trainer of both arms; its phases add up to the epoch (Python
    bookkeeping aside) and the NIR flow's cost is the NIR arm minus the baseline, phase by
    phase."""
    from nirbench.harness.bench import phases
    from nirbench.harness.bench.protocol import protocol_config

    result = phases.run(protocol_config("synth-cub"), tmp_path)
    for arm in ("baseline", "nir"):
        t = result[arm]
        timed = sum(t[p] for p in phases.TRAIN_PHASES)
        assert 0.8 * t["epoch"] <= timed <= t["epoch"] and t["embed"] > 0 and t["knn"] > 0
    flow = result["nir_flow"]
    assert flow["objective"] == result["nir"]["objective"] - result["baseline"]["objective"]
    assert flow["total"] == flow["objective"] + flow["backward"] + flow["optimizer"]
    assert abs(sum(result["shares_nir_arm"].values()) - 1) < 1e-9
