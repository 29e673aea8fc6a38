"""``nirbench doctor``: every check reports ok / warn / fail with a fix, a crashing check is
reported and the others still run, the JSON keys are stable (README), and the checks that can be
exercised without a GPU do the right thing here (missing or damaged weights, partial datasets,
an unwritable store, too little disk)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import real_fixtures as rf
from nirbench.harness import doctor
from nirbench.harness.doctor import Check, Context

TOP_KEYS = {"ok", "ready", "counts", "data_root", "results_dir", "tracking_uri", "checks"}
CHECK_KEYS = {"name", "status", "message", "fix", "details", "seconds"}
NAMES = {
    "torch",
    "cuda",
    "cudnn",
    "gpu",
    "bf16",
    "faiss_gpu",
    "imagenet_weights",
    "dataset:cub200",
    "dataset:cars196",
    "dataset:sop",
    "tracking",
    "disk",
    "chromium",
}


def ctx(tmp_path: Path) -> Context:
    return Context(
        data_root=tmp_path / "data",
        results_dir=tmp_path / "results",
        tracking_uri=f"sqlite:///{tmp_path}/results/mlflow.db",
    )


def test_doctor_json_keys_and_dataset_lines(tmp_path, capsys, monkeypatch):
    from nirbench.harness.cli.main import build_parser

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    rf.make_cub_flat(tmp_path / "data")
    args = build_parser().parse_args(
        [
            "doctor",
            "--data-root",
            str(tmp_path / "data"),
            "--results-dir",
            str(tmp_path / "results"),
            "--json",
        ]
    )
    rc = args.func(args)
    report = json.loads(capsys.readouterr().out)
    assert TOP_KEYS <= set(report) and rc == (0 if report["ok"] else 1)
    assert {c["name"] for c in report["checks"]} == NAMES
    for c in report["checks"]:
        assert CHECK_KEYS <= set(c) and c["status"] in ("ok", "warn", "fail")
        assert c["status"] == "ok" or c["fix"], c  # every non-ok line says what to do
    by_name = {c["name"]: c for c in report["checks"]}
    cub = by_name["dataset:cub200"]
    assert cub["status"] == "warn" and "partial copy" in cub["message"]
    assert "dataset.allow_partial=true" in cub["fix"]
    assert cub["details"]["missing_class_count"] == 196
    assert by_name["dataset:sop"]["status"] == "warn"
    assert "cvgl.stanford.edu" in by_name["dataset:sop"]["fix"]
    assert by_name["tracking"]["status"] == "ok"
    assert not (tmp_path / "results").exists()  # the doctor only looks
    assert by_name["disk"]["details"]["datasets"] == ["cub200"]
    assert by_name["imagenet_weights"]["status"] == "warn"
    assert str(tmp_path / "torch") in by_name["imagenet_weights"]["details"]["path"]
    assert report["counts"]["ok"] + report["counts"]["warn"] + report["counts"]["fail"] == 13


def test_a_crashing_check_fails_and_the_others_still_run(tmp_path):
    def check_boom(ctx):
        raise RuntimeError("kaput")

    def check_fine(ctx):
        return Check("fine", "ok", "all good")

    def check_meh(ctx):
        return Check("meh", "warn", "not great", "do this")

    report = doctor.run(tmp_path, tmp_path / "results", checks=[check_boom, check_fine, check_meh])
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses == {"boom": "fail", "fine": "ok", "meh": "warn"}
    assert "kaput" in report["checks"][0]["message"]
    assert report["ok"] is False and report["ready"] is False
    assert report["counts"] == {"ok": 1, "warn": 1, "fail": 1}
    only_ok = doctor.run(tmp_path, tmp_path / "results", checks=[check_fine])
    assert only_ok["ok"] and only_ok["ready"]


def test_damaged_weights_fail_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from nirbench.harness.train.models import imagenet_weights_path

    path, url = imagenet_weights_path("resnet50")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated download")
    result = doctor.check_weights(ctx(tmp_path))
    assert result.status == "fail" and "damaged" in result.message and url in result.fix


def test_unwritable_store_fails(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be")
    c = Context(
        data_root=tmp_path, results_dir=blocker, tracking_uri=f"sqlite:///{blocker}/mlflow.db"
    )
    result = doctor.check_tracking(c)
    assert result.status == "fail" and "--results-dir" in result.fix
    broken = tmp_path / "r2"
    broken.mkdir()
    (broken / "mlflow.db").write_text("not sqlite")
    c = Context(
        data_root=tmp_path, results_dir=broken, tracking_uri=f"sqlite:///{broken}/mlflow.db"
    )
    assert doctor.check_tracking(c).status == "fail"


def test_disk_check_compares_free_space_with_the_caches(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    c = ctx(tmp_path)
    c.cache["sop"] = {"uint8_bytes": 28e9, "jpeg_bytes": 2.8e9, "cached_bytes": 0}
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100e9, 90e9, 10e9))
    result = doctor.check_disk(c)
    assert result.status == "warn" and "dataset.cache=jpeg" in result.fix
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100e9, 99e9, 1e9))
    assert doctor.check_disk(c).status == "fail"
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100e9, 10e9, 90e9))
    assert doctor.check_disk(c).status == "ok"


def test_gpu_checks_without_a_gpu_warn_and_say_why(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the gpu-marked checks cover it")
    for check in (
        doctor.check_cuda,
        doctor.check_cudnn,
        doctor.check_gpu,
        doctor.check_bf16,
        doctor.check_faiss_gpu,
    ):
        result = check(ctx(tmp_path))
        assert result.status == "warn" and result.fix, result


@pytest.mark.gpu
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA device")
def test_gpu_checks_on_a_gpu(tmp_path):
    for check in (doctor.check_cuda, doctor.check_cudnn, doctor.check_gpu, doctor.check_faiss_gpu):
        result = check(ctx(tmp_path))
        assert result.status == "ok", result
