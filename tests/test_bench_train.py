"""``nirbench bench train`` and ``nirbench bench gpu-check`` on toy sizes: the public JSON keys,
ratios consistent with the rates, a failing part recorded while the check goes on, and the CPU
parts of the GPU check running here. No speed assertion: the README quotes what they measure."""

from __future__ import annotations

import json

import pytest

from nirbench.harness.bench import gpu_check

VARIANT_KEYS = {"backbone", "nir", "precision", "channels_last", "e2e_ips", "model_ips", "ratio"}


def nirbench(argv: list[str]) -> int:
    from nirbench.harness.cli.main import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)


def test_bench_train_quick_json(capsys):
    assert (
        nirbench(["bench", "train", "--quick", "--device", "cpu", "--precisions", "fp32", "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert {
        "variants",
        "ratio_min",
        "target_ratio",
        "meets_target",
        "device",
        "batch",
        "image_px",
        "load_average_before",
    } <= set(result)
    assert result["device"] == "cpu" and result["target_ratio"] == 0.9
    variants = result["variants"]
    assert {(v["nir"], v["channels_last"]) for v in variants} == {
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    }
    for v in variants:
        assert VARIANT_KEYS <= set(v), v
        assert v["ratio"] == pytest.approx(v["e2e_ips"] / v["model_ips"])
        assert v["e2e_ips"] > 0 and v["model_ips"] > 0
    assert result["ratio_min"] == min(v["ratio"] for v in variants)


def test_bench_train_measures_the_engines_own_epoch(monkeypatch):
    """e2e goes through harness.train.engine.train_one_epoch, not a copy of it."""
    import nirbench.harness.train.engine as engine
    from nirbench.harness.bench import train

    calls = []
    original = engine.train_one_epoch

    def counting(*args, **kwargs):
        calls.append(args[3])
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", counting)
    result = train.run(
        device="cpu", quick=True, nir=(True,), precisions=("fp32",), channels_last=(False,)
    )
    assert len(calls) == 1 + result["rounds"]  # warm-up + timed rounds, epochs 0, 1, ...
    assert calls == list(range(len(calls)))


def test_gpu_check_cpu_parts_write_one_json(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = tmp_path / "gpu_check.json"
    assert (
        nirbench(
            [
                "bench",
                "gpu-check",
                "--device",
                "cpu",
                "--quick",
                "--out",
                str(out),
                "--only",
                "doctor,augment_match,bench_train",
                "--results-dir",
                str(tmp_path / "results"),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["quick"] is True
    assert list(report["parts"]) == ["doctor", "augment_match", "bench_train"]
    for part in report["parts"].values():
        assert part["status"] == "ok", part
        assert part["seconds"] >= 0 and part["summary"]
    match = report["parts"]["augment_match"]["result"]
    assert match["uint8"]["compared"] == "cpu vs PIL" and match["within_tolerance"]
    assert report["parts"]["bench_train"]["result"]["variants"]


def test_gpu_check_records_a_failing_part_and_goes_on(tmp_path, monkeypatch):
    def boom(ctx):
        raise RuntimeError("no such GPU")

    monkeypatch.setitem(gpu_check.PART_FUNCS, "bench_eval_1m", boom)
    monkeypatch.setitem(gpu_check.PART_FUNCS, "doctor", lambda ctx: ({"x": 1}, "fine"))
    report = gpu_check.run(
        out=tmp_path / "g.json", device="cpu", quick=True, only="bench_eval_1m,doctor"
    )
    assert report["parts"]["bench_eval_1m"]["status"] == "error"
    assert "no such GPU" in report["parts"]["bench_eval_1m"]["error"]
    assert report["parts"]["doctor"]["status"] == "ok"
    assert json.loads((tmp_path / "g.json").read_text())["parts"]["doctor"]["summary"] == "fine"
    # past the budget, parts are skipped, not started
    report = gpu_check.run(
        out=tmp_path / "h.json", device="cpu", quick=True, only="doctor", budget_s=0
    )
    assert report["parts"]["doctor"]["status"] == "skipped"
    with pytest.raises(ValueError, match="unknown parts"):
        gpu_check.run(out=tmp_path / "i.json", device="cpu", quick=True, only="nope")


@pytest.mark.slow
def test_gpu_check_every_part_quick_on_cpu(tmp_path, monkeypatch):
    """The whole check at toy sizes: every part runs (the gpu-marked tests are skipped here)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    report = gpu_check.run(
        out=tmp_path / "all.json", device="cpu", quick=True, results_dir=str(tmp_path / "results")
    )
    assert list(report["parts"]) == list(gpu_check.PARTS)
    assert {p["status"] for p in report["parts"].values()} == {"ok"}, {
        k: p.get("error") for k, p in report["parts"].items()
    }
    assert report["parts"]["paper_run"]["result"]["status"] == "finished"


def test_lagged_loss_check_names_the_failing_step_and_keeps_the_numbers(monkeypatch):
    """train_one_epoch's CUDA mode (loss checked and recorded one step late, so the CPU never
    waits for the GPU) gives the same mean loss terms as the immediate check, and a non-finite
    loss still fails naming its own step."""
    import torch

    import nirbench.harness.train.engine as engine
    from nirbench.harness.config import load_config
    from nirbench.harness.data import load_dataset
    from nirbench.harness.data.sampler import ClassBalancedBatchSampler

    cfg = load_config(
        overrides=[
            "dataset.name=test-tiny",
            "train.batch_size=8",
            "train.samples_per_class=2",
            "backbone.embed_dim=16",
            "regularizer=nir",
            "train.device=cpu",
        ]
    )
    bundle = load_dataset("test-tiny", None, "unused")
    sampler = ClassBalancedBatchSampler(bundle.train.labels, 8, 2, 0)
    records = []
    for lagged in (False, True):
        trainer = engine.build_trainer(cfg, bundle, torch.device("cpu"))
        records.append(engine.train_one_epoch(trainer, bundle.train, sampler, 0, lagged=lagged))
    assert records[0] == records[1]  # bit for bit

    original = engine.Objective.forward
    calls = []

    def nan_at_step_3(self, embeddings, labels):
        terms = original(self, embeddings, labels)
        calls.append(1)
        if len(calls) == 3:
            terms["loss/total"] = terms["loss/total"] * float("nan")
        return terms

    monkeypatch.setattr(engine.Objective, "forward", nan_at_step_3)
    trainer = engine.build_trainer(cfg, bundle, torch.device("cpu"))
    with pytest.raises(engine.TrainingDiverged, match="non-finite loss at epoch 1, step 3"):
        engine.train_one_epoch(trainer, bundle.train, sampler, 0, lagged=True)
