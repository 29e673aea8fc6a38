"""The Ray executor for real: the grid starts a local Ray cluster (``--address local``), every
configuration runs as a Ray task in a Ray worker process, and both runs end FINISHED in MLflow,
once each, with their curves and tags."""

from __future__ import annotations

import pytest

from nirbench.harness.cli.main import main
from nirbench.harness.tracking.store import Tracker
from tests.grid_datasets import write_grid

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'nirbench[cluster]')")


def test_ray_executor_runs_every_configuration_as_a_ray_task(tmp_path, results_dir, capsys):
    grid = write_grid(tmp_path, regularizers=("null", "nir"), name="tiny-ray")
    argv = [
        "grid",
        str(grid),
        "--results-dir",
        str(results_dir),
        "--executor",
        "ray",
        "--address",
        "local",
        "--cpus-per-run",
        "1",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ray executor at local" in out and "2 finished, 0 failed" in out
    assert not ray.is_initialized()  # the cluster the grid started is shut down

    tracker = Tracker(results_dir)
    runs = tracker.runs()
    assert len(runs) == 2 and {r.status for r in runs} == {"FINISHED"}
    assert {r.tags["regularizer"] for r in runs} == {"none", "nir"}
    for run in runs:
        assert run.tags["grid"] == "tiny-ray"
        assert [s for s, _ in tracker.history(run.run_id, "test/recall@1")] == [1, 2]
        # The task ran in a Ray worker, not in the grid process: the environment it logged says
        # the worker had the one CPU its task asked for.
        env = tracker.client.download_artifacts(run.run_id, "environment.json", str(tmp_path))
        assert '"torch_threads": 1' in open(env).read()

    assert main(argv[:4] + ["--dry-run"]) == 0
    assert "2 finished" in capsys.readouterr().out
