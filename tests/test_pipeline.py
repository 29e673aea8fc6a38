"""End to end on a tiny dataset: config -> training -> MLflow -> grid skip -> tables.
Also the properties a fair comparison rests on: identical arms, determinism, loud failures,
resume without gaps."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from nirbench.harness.train import engine
from nirbench.harness.results import AggregationError, runs_frame, summarize, write_tables
from nirbench.harness.cli.main import main
from nirbench.harness.config import load_config
from nirbench.harness.data import load_dataset
from nirbench.harness.train.engine import TrainingDiverged, build_trainer
from nirbench.harness.train.runner import execute
from nirbench.harness.tracking.store import Tracker, mlflow_key
from tests.conftest import TINY


def untimed(metrics: dict[str, float]) -> dict[str, float]:
    kept = {k: v for k, v in metrics.items() if not k.startswith("time/")}
    assert any(k.startswith("test/") for k in kept) and any(k.startswith("loss/") for k in kept)
    return kept


def write_grid(tmp_path: Path, seeds=(0, 1)) -> Path:
    base = tmp_path / "base.yaml"
    base.write_text(load_config(overrides=[f"dataset.name={TINY}"]).to_yaml())
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"""
name: tiny
config: base.yaml
datasets: [{TINY}]
methods: [proxy_anchor, multi_similarity]
regularizers: [null, {{name: nir, proxy_source: method}}]  # explicit: MS + NIR is incompatible
seeds: [{", ".join(map(str, seeds))}]
overrides: [train.epochs=2, train.batch_size=8, backbone.embed_dim=16, "eval.recall_at=[1, 2]"]
""")
    return grid


def test_grid_tracks_every_run_skips_finished_and_aggregates(tmp_path, results_dir, capsys):
    grid = write_grid(tmp_path)
    argv = [str(grid), "--results-dir", str(results_dir), "--no-progress", "--quiet"]
    assert main(["grid", *argv]) == 0
    out = capsys.readouterr().out
    assert "multi_similarity + nir" in out  # the incompatible pair is named, not silently dropped

    tracker = Tracker(results_dir)
    runs = tracker.runs(statuses=("FINISHED",))
    assert len(runs) == 6  # (PA, PA+NIR, MS) x 2 seeds
    for run in runs:
        tags = run.tags
        for key in (
            "method",
            "regularizer",
            "dataset",
            "backbone",
            "seed",
            "config_hash",
            "git_sha",
            "git_dirty",
            "grid",
        ):
            assert tags[key], key
        assert tags["grid"] == "tiny"
        steps = [s for s, _ in tracker.history(run.run_id, "test/recall@1")]
        assert steps == [1, 2]  # one point per epoch: the convergence curve
        assert tracker.history(run.run_id, "loss/total")
        if tags["regularizer"] == "nir":
            assert tracker.history(run.run_id, "loss/nir")
            assert tags["nir.form"] == "exp" and tags["nir.weight_convention"] == "w_align"
        artifacts = {a.path for a in tracker.client.list_artifacts(run.run_id)}
        assert {"config.yaml", "environment.json", "checkpoint"} <= artifacts
        params = tracker.client.get_run(run.run_id).data.params
        assert params["train.epochs"] == "2" and params["method.name"] == tags["method"]

    # A second start runs nothing new.
    assert main(["grid", *argv]) == 0
    assert "already finished, skipped" in capsys.readouterr().out
    assert len(tracker.runs()) == 6

    assert main(["aggregate", "--results-dir", str(results_dir), "--grid", "tiny", "--quiet"]) == 0
    table = (results_dir / "tables" / "table1.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in lines[1:]] == [
        "| Multisimilarity",  # paper order
        "| ProxyAnchor",
        "| + NIR",
    ]
    assert f"{TINY} R@1" in lines[0] and f"{TINY} mAP@1000" in lines[0]
    assert " - " not in table  # every cell has a number
    runs_csv = pd.read_csv(results_dir / "tables" / "runs.csv")
    assert len(runs_csv) == 6 and runs_csv["recall@1"].between(0, 1).all()
    summary = pd.read_csv(results_dir / "tables" / "summary.csv")
    cell = summary[
        (summary.method == "proxy_anchor")
        & (summary.regularizer == "none")
        & (summary.metric == "recall@1")
    ].iloc[0]
    values = runs_csv[(runs_csv.method == "proxy_anchor") & (runs_csv.regularizer == "none")]
    assert cell["mean"] == pytest.approx(values["recall@1"].mean())
    assert cell["std"] == pytest.approx(values["recall@1"].std(ddof=1))
    assert cell["n"] == 2


def test_same_config_and_seed_give_identical_metrics(tiny_overrides, tmp_path):
    outcomes = []
    for name in ("a", "b"):
        results = tmp_path / name
        cfg = load_config(overrides=tiny_overrides + ["regularizer=nir"])
        outcomes.append(execute(cfg, Tracker(results), results))
    assert untimed(outcomes[0].metrics) == untimed(outcomes[1].metrics)


def test_both_arms_start_from_identical_weights_and_batches(tiny_overrides, tmp_path):
    base = load_config(overrides=tiny_overrides)
    nir = load_config(overrides=tiny_overrides + ["regularizer=nir"])
    bundle = load_dataset(TINY, None, tmp_path)
    a, b = (
        build_trainer(base, bundle, torch.device("cpu")),
        build_trainer(nir, bundle, torch.device("cpu")),
    )
    for (name, p), (_, q) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(p, q), name
    assert torch.equal(a.objective.method.class_proxies(), b.objective.method.class_proxies())
    # Batches and augmentation depend on (seed, epoch) only, never on the arm.
    from nirbench.harness.data.sampler import ClassBalancedBatchSampler

    s1 = ClassBalancedBatchSampler(bundle.train.labels, 8, 2, base.seed)
    s2 = ClassBalancedBatchSampler(bundle.train.labels, 8, 2, nir.seed)
    assert all(torch.equal(x, y) for x, y in zip(s1.batches(0), s2.batches(0)))


def test_optimizer_groups_cover_every_trainable_parameter_once(tiny_overrides, tmp_path):
    cfg = load_config(overrides=tiny_overrides + ["regularizer=nir"])
    trainer = build_trainer(cfg, load_dataset(TINY, None, tmp_path), torch.device("cpu"))
    grouped = [id(p) for g in trainer.optimizer.param_groups for p in g["params"]]
    trainable = [
        id(p) for m in (trainer.model, trainer.objective) for p in m.parameters() if p.requires_grad
    ]
    assert sorted(grouped) == sorted(trainable) and len(set(grouped)) == len(grouped)
    by_name = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert by_name["proxies"]["lr"] == pytest.approx(cfg.train.lr * 100)
    assert by_name["flow"]["lr"] == pytest.approx(cfg.train.lr * 0.5)
    assert by_name["proxies"]["weight_decay"] == by_name["flow"]["weight_decay"] == 0.0
    assert by_name["body"]["weight_decay"] == cfg.train.weight_decay


def test_warmup_freezes_the_body_but_trains_head_and_proxies(tiny_overrides, tmp_path):
    cfg = load_config(overrides=tiny_overrides + ["train.warmup_epochs=1"])
    bundle = load_dataset(TINY, None, tmp_path)
    trainer = build_trainer(cfg, bundle, torch.device("cpu"))
    body = [p.detach().clone() for p in trainer.model.body.parameters()]
    head = trainer.model.head.weight.detach().clone()
    proxies = trainer.objective.method.class_proxies().detach().clone()
    from nirbench.harness.data.sampler import ClassBalancedBatchSampler

    sampler = ClassBalancedBatchSampler(bundle.train.labels, 8, 2, 0)
    engine.train_one_epoch(trainer, bundle.train, sampler, epoch=0)
    assert all(torch.equal(a, b) for a, b in zip(body, trainer.model.body.parameters()))
    assert not torch.equal(head, trainer.model.head.weight)
    assert not torch.equal(proxies, trainer.objective.method.class_proxies())
    engine.train_one_epoch(trainer, bundle.train, sampler, epoch=1)
    assert not all(torch.equal(a, b) for a, b in zip(body, trainer.model.body.parameters()))


def test_non_finite_loss_fails_the_run_loudly_and_marks_it_failed(
    tiny_overrides, results_dir, monkeypatch
):
    cfg = load_config(overrides=tiny_overrides)
    original = engine.Objective.forward

    def nan_loss(self, embeddings, labels):
        terms = original(self, embeddings, labels)
        terms["loss/total"] = terms["loss/total"] * float("nan")
        return terms

    monkeypatch.setattr(engine.Objective, "forward", nan_loss)
    tracker = Tracker(results_dir)
    with pytest.raises(TrainingDiverged, match="non-finite loss at epoch 1, step 1"):
        execute(cfg, tracker, results_dir)
    failed = tracker.runs(statuses=("FAILED",))
    assert len(failed) == 1 and "non-finite loss" in failed[0].tags["error"]


def test_interrupted_run_resumes_in_the_same_mlflow_run_without_gaps(
    tiny_overrides, tmp_path, monkeypatch
):
    overrides = tiny_overrides + ["train.epochs=3", "regularizer=nir"]
    cfg = load_config(overrides=overrides)
    reference = execute(cfg, Tracker(tmp_path / "ref"), tmp_path / "ref")

    results = tmp_path / "interrupted"
    tracker = Tracker(results)
    real_log = Tracker.log_epoch

    def die_at_epoch_2(self, run_id, epoch, record):
        if epoch == 2:  # checkpoint of epoch 2 is written, its metrics are not: the worst moment
            raise KeyboardInterrupt
        real_log(self, run_id, epoch, record)

    monkeypatch.setattr(Tracker, "log_epoch", die_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, tracker, results)
    monkeypatch.setattr(Tracker, "log_epoch", real_log)

    resumed = execute(cfg, tracker, results)
    assert len(tracker.runs()) == 1 and resumed.run_id == tracker.runs()[0].run_id
    steps = [s for s, _ in tracker.history(resumed.run_id, "test/recall@1")]
    assert sorted(steps) == [1, 2, 3]
    assert untimed(resumed.metrics) == untimed(reference.metrics)  # as if never interrupted


def test_aggregate_refuses_to_mix_configurations(tiny_overrides, results_dir):
    tracker = Tracker(results_dir)
    execute(load_config(overrides=tiny_overrides), tracker, results_dir)
    execute(load_config(overrides=tiny_overrides + ["train.lr=0.002"]), tracker, results_dir)
    with pytest.raises(AggregationError, match="different configurations"):
        summarize(runs_frame(tracker))
    with pytest.raises(AggregationError, match="no finished runs"):
        write_tables(tracker, results_dir / "t", grid="nope")


def test_evaluate_cli_prints_the_contract_keys(tmp_path, capsys):
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 5)
    emb = rng.normal(size=(50, 8)) + 3 * np.eye(10, 8)[labels]
    np.save(tmp_path / "e.npy", emb)
    np.save(tmp_path / "l.npy", labels)
    assert (
        main(
            [
                "evaluate",
                "--embeddings",
                str(tmp_path / "e.npy"),
                "--labels",
                str(tmp_path / "l.npy"),
                "--recall-at",
                "1,2,4,8",
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {
        "recall@1",
        "recall@2",
        "recall@4",
        "recall@8",
        "map@r",
        "r_precision",
        "map@1000",
        "nmi",
    }


def test_unreachable_tracking_server_fails_fast(monkeypatch, results_dir):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(ConnectionError, match="unreachable"):
        Tracker(results_dir)


def test_mlflow_metric_names_are_valid():
    assert mlflow_key("test/recall@1") == "test/recall_at_1"
    assert mlflow_key("test/map@r") == "test/map_at_r"
