"""`./run_all.sh --profile paper` end to end on a miniature CUB200-2011 copy (real class ids with
gaps, so a partial copy: `--set dataset.allow_partial=true` makes the data check and the runs
accept it): the real loader, the paper presets of both arms (ResNet18 from scratch and two short
epochs instead of ImageNet ResNet50 for 100, via the profile's pass-through arguments), the
parallel grid, MLflow, tables."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

from real_fixtures import make_cub_official

REPO = Path(__file__).resolve().parent.parent


def _profile(args: list[str], results: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NIRBENCH_RESULTS": str(results)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        ["bash", str(REPO / "run_all.sh"), "--profile", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_paper_profile_trains_both_arms_and_the_control_of_a_miniature_cub(tmp_path):
    truth = make_cub_official(tmp_path / "data", per_class=(4, 4, 3, 3))
    results = tmp_path / "results"
    done = _profile(
        [
            "paper",
            "--data-root",
            str(truth.root),
            "--datasets",
            "cub200",
            "--only",
            "seed=0",
            "--only",
            "method=proxy_anchor",
            "--set",
            "backbone.name=resnet18",
            "--set",
            "backbone.pretrained=false",
            "--set",
            "train.epochs=2",
            "--set",
            "train.batch_size=4",
            "--set",
            "eval.batch_size=8",
            "--set",
            "dataset.allow_partial=true",
            "--controls",
            "--workers",
            "1",
        ],
        results,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "train_classes" in done.stdout  # the data check ran first

    db = sqlite3.connect(results / "mlflow.db")
    runs = db.execute("SELECT run_uuid, status FROM runs").fetchall()
    assert len(runs) == 3 and {status for _, status in runs} == {"FINISHED"}
    tags = {}
    for run_id, _ in runs:
        tags[run_id] = dict(
            db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall()
        )
    assert {t["grid"] for t in tags.values()} == {"paper"}
    assert {t["dataset"] for t in tags.values()} == {"cub200"}
    assert {t["dataset.partial"] for t in tags.values()} == {"true"}
    assert sorted(t["regularizer"] for t in tags.values()) == ["nir", "nir", "none"]
    # --controls: the NIR arm exactly, without its flow (the attribution ladder's middle step)
    assert sorted(t.get("nir.flow", "-") for t in tags.values()) == ["-", "false", "true"]
    for run_id, _ in runs:
        steps = [
            s
            for (s,) in db.execute(
                "SELECT step FROM metrics WHERE run_uuid = ? AND key = 'test/recall_at_1' "
                "ORDER BY step",
                (run_id,),
            )
        ]
        assert steps == [1, 2]
        params = dict(
            db.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)).fetchall()
        )
        assert params["train.lr"] == "1e-05" and params["train.batch_size"] == "4"
    assert (results / "tables" / "table1.md").is_file()
    ladder = (results / "tables" / "ladder.md").read_text()
    assert "+ NIR (no flow) vs baseline" in ladder and "+ NIR vs + NIR (no flow)" in ladder


def test_paper_profile_refuses_a_partial_copy_before_training(tmp_path):
    truth = make_cub_official(tmp_path / "data", per_class=(2, 2, 2, 2))
    done = _profile(
        ["paper", "--data-root", str(truth.root), "--datasets", "cub200"], tmp_path / "r"
    )
    assert done.returncode == 2
    assert "partial copy" in done.stderr and "dataset.allow_partial=true" in done.stderr
    assert not (tmp_path / "r" / "mlflow.db").exists()


def test_paper_profile_without_data_stops_at_once_saying_what_to_download(tmp_path):
    done = _profile(["paper", "--data-root", str(tmp_path / "nothing-here")], tmp_path / "r")
    assert done.returncode == 2
    for url in ("data.caltech.edu", "ai.stanford.edu/~jkrause/cars", "cvgl.stanford.edu"):
        assert url in done.stderr
    assert "CUB_200_2011/" in done.stderr and not (tmp_path / "r" / "mlflow.db").exists()
