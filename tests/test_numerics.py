"""Issue 23 part 4: every run records what its numbers were computed with (numerics.* tags, the
NMI k-means engine), eval.kmeans_engine picks one engine per run, and a resume on other numerics
warns and says what changed."""

from __future__ import annotations

import logging

import pytest
import torch

from nirbench.harness.config import ConfigError, load_config
from nirbench.harness.config_identity import identity_tree
from nirbench.harness.evaluation.clustering import resolve_kmeans_engine
from nirbench.harness.evaluation.knn import Capabilities
from nirbench.harness.train import numerics
from nirbench.harness.train.runner import execute
from nirbench.harness.tracking.store import Tracker


def test_a_run_carries_the_numerics_tags(tiny_overrides, results_dir):
    tracker = Tracker(results_dir)
    run = execute(
        load_config(overrides=tiny_overrides + ["train.epochs=1", "train.warmup_epochs=0"]),
        tracker,
        results_dir,
    )
    tags = tracker.tags(run.run_id)
    for key in numerics.NUMERICS_TAGS:
        assert key in tags, key
    assert tags["numerics.cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert tags["numerics.threads"] == str(torch.get_num_threads())
    assert tags["numerics.device"] == "cpu" and tags["numerics.cpu_model"]
    assert tags["numerics.cuda"] == (torch.version.cuda or "none")
    assert tags["nmi.kmeans_engine"] == "torch-cpu"  # auto on a CPU run
    assert numerics.CHANGED_TAG not in tags


def test_kmeans_engine_choice_is_the_tag(tiny_overrides, results_dir):
    tracker = Tracker(results_dir)
    cfg = load_config(
        overrides=tiny_overrides
        + ["train.epochs=1", "train.warmup_epochs=0", "eval.kmeans_engine=faiss"]
    )
    run = execute(cfg, tracker, results_dir)
    assert tracker.tags(run.run_id)["nmi.kmeans_engine"] == "faiss-cpu"


def test_kmeans_engine_is_validated_and_auto_keeps_the_hash(tiny_overrides):
    with pytest.raises(ConfigError, match="eval.kmeans_engine must be one of auto, torch, faiss"):
        load_config(overrides=tiny_overrides + ["eval.kmeans_engine=sklearn"])
    auto = load_config(overrides=tiny_overrides + ["eval.kmeans_engine=auto"])
    assert auto.config_hash == load_config(overrides=tiny_overrides).config_hash
    assert auto.to_dict()["eval"]["kmeans_engine"] == "auto"  # shown ...
    assert "kmeans_engine" not in identity_tree(auto)["eval"]  # ... but not part of the identity
    assert (
        load_config(overrides=tiny_overrides + ["eval.kmeans_engine=torch"]).config_hash
        != auto.config_hash
    )


def test_resolve_kmeans_engine():
    gpu = Capabilities(cuda=True, faiss_gpus=1, faiss_gpu_works=True)
    cpu = Capabilities(cuda=False, faiss_gpus=0, faiss_gpu_works=False)
    assert resolve_kmeans_engine("auto", "cpu", caps=cpu) == "torch-cpu"
    assert resolve_kmeans_engine("auto", "cuda", caps=gpu) == "faiss-gpu"
    assert resolve_kmeans_engine("torch", "cuda", caps=gpu) == "torch-cuda"
    assert resolve_kmeans_engine("torch", "cpu", caps=gpu) == "torch-cpu"
    assert resolve_kmeans_engine("faiss", "cuda", caps=gpu) == "faiss-gpu"
    assert resolve_kmeans_engine("faiss", "cpu", caps=gpu) == "faiss-cpu"


def test_changes_on_resume_lists_old_and_new():
    old = {"numerics.cpu_capability": "AVX2", "numerics.threads": "2", "numerics.device": "cpu"}
    new = {**old, "numerics.cpu_capability": "DEFAULT"}
    assert numerics.changes_on_resume(old, new) == ["cpu_capability: AVX2 -> DEFAULT"]
    assert numerics.changes_on_resume({}, new) == []


def test_resume_on_other_numerics_warns_and_tags(tiny_overrides, results_dir, monkeypatch, caplog):
    cfg = load_config(overrides=tiny_overrides + ["train.epochs=2"])
    tracker = Tracker(results_dir)
    real_log = Tracker.log_epoch

    def die_at_epoch_2(self, run_id, epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt
        real_log(self, run_id, epoch, record)

    monkeypatch.setattr(Tracker, "log_epoch", die_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, tracker, results_dir)
    monkeypatch.setattr(Tracker, "log_epoch", real_log)
    began = tracker.runs()[0].tags

    real_collect = numerics.collect_numerics

    def elsewhere(device, engine):
        return {
            **real_collect(device, engine),
            "numerics.cpu_capability": "DEFAULT",
            "numerics.threads": "7",
        }

    monkeypatch.setattr(numerics, "collect_numerics", elsewhere)
    with caplog.at_level(logging.WARNING, logger="nirbench.harness.train.runner"):
        resumed = execute(cfg, tracker, results_dir)
    tags = tracker.tags(resumed.run_id)
    expected = (
        f"cpu_capability: {began['numerics.cpu_capability']} -> DEFAULT; "
        f"threads: {began['numerics.threads']} -> 7"
    )
    assert tags[numerics.CHANGED_TAG] == expected
    assert tags["numerics.cpu_capability"] == began["numerics.cpu_capability"]  # as it began
    assert any(expected in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_report_provenance_lists_the_distinct_numerics(tiny_overrides, results_dir):
    import pandas as pd

    from nirbench.dashboards.report import _numerics
    from nirbench.harness.results import runs_frame
    from nirbench.harness.results.frames import numerics_values

    tracker = Tracker(results_dir)
    execute(
        load_config(overrides=tiny_overrides + ["train.epochs=1", "train.warmup_epochs=0"]),
        tracker,
        results_dir,
    )
    recorded = runs_frame(tracker)
    assert recorded["nmi.kmeans_engine"].tolist() == ["torch-cpu"]  # tags reach the runs frame
    older = pd.DataFrame({"run_id": ["old"]})  # a run from before the tags existed
    runs = pd.concat(
        [
            recorded,
            older,
            recorded.assign(
                **{
                    "numerics.cpu_capability": "DEFAULT",
                    "numerics.threads": "7",
                    "numerics.changed_on_resume": "threads: 2 -> 7",
                }
            ),
        ],
        ignore_index=True,
    )
    values = numerics_values(runs)
    capability = torch.backends.cpu.get_cpu_capability()
    assert sorted(values["numerics.cpu_capability"]) == sorted(
        [(capability, 1), ("DEFAULT", 1), ("(not recorded)", 1)]
    )
    assert values["nmi.kmeans_engine"] == [("torch-cpu", 2), ("(not recorded)", 1)]
    assert values["numerics.changed_on_resume"] == [("threads: 2 -> 7", 1)]
    page = _numerics(runs)
    for text in (
        "numerics.cpu_capability",
        "DEFAULT",
        "torch-cpu",
        "numerics.cpu_model",
        "threads: 2 -&gt; 7",
    ):
        assert text in page, text
    assert "No run recorded" in _numerics(older)


def test_bench_kmeans_prints_the_engine_difference(capsys, tmp_path):
    import json

    import numpy as np

    from nirbench.harness.bench.eval import synthetic_embeddings
    from nirbench.harness.cli.main import main

    assert (
        main(
            [
                "bench",
                "kmeans",
                "--n",
                "400",
                "--classes",
                "40",
                "--dim",
                "16",
                "--kmeans-seeds",
                "2",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert set(result["cpu"]) == {"torch-cpu", "faiss-cpu"} and result["classes"] == 40
    diff = np.subtract(result["cpu"]["torch-cpu"]["nmi"], result["cpu"]["faiss-cpu"]["nmi"])
    assert result["difference"]["torch_minus_faiss"] == pytest.approx(diff.tolist())
    assert result["difference"]["max_abs"] == pytest.approx(float(np.abs(diff).max()))
    if not torch.cuda.is_available():
        assert result["gpu"] is None and "no CUDA" in result["gpu_note"]
    assert result["numerics"]["numerics.cpu_capability"]

    x, y = synthetic_embeddings(300, 8, 30, seed=1)
    np.savez(tmp_path / "emb.npz", embeddings=x, labels=y)
    assert (
        main(
            [
                "bench",
                "kmeans",
                "--embeddings",
                str(tmp_path / "emb.npz"),
                "--kmeans-seeds",
                "1",
                "--json",
            ]
        )
        == 0
    )
    real = json.loads(capsys.readouterr().out)
    assert real["n"] == 300 and real["embedding"].endswith("emb.npz")


def test_bench_kmeans_reports_both_cpu_engines_and_their_difference():
    from nirbench.harness.bench import kmeans as bench_kmeans

    out = bench_kmeans.run(n=300, classes=10, dim=16, kmeans_seeds=2)
    torch_nmi, faiss_nmi = out["cpu"]["torch-cpu"]["nmi"], out["cpu"]["faiss-cpu"]["nmi"]
    assert len(torch_nmi) == len(faiss_nmi) == 2
    assert all(0.0 <= v <= 1.0 for v in torch_nmi + faiss_nmi)
    expected = [a - b for a, b in zip(torch_nmi, faiss_nmi)]
    assert out["difference"]["torch_minus_faiss"] == pytest.approx(expected)
    assert out["difference"]["max_abs"] == pytest.approx(max(abs(d) for d in expected))
    assert out["numerics"]["nmi.kmeans_engine"] == "torch-cpu"
