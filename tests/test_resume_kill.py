"""Kill a real `nirbench run` process with SIGKILL in the middle of training, start it again and
prove nothing was lost or repeated: the same MLflow run continues from the last checkpoint, every
per-epoch curve has exactly one point per epoch, and every epoch's metrics equal those of an
uninterrupted run of the same configuration (CPU, one thread: bitwise deterministic)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from nirbench.harness.config import load_config
from nirbench.harness.train.runner import execute, run_dir
from nirbench.harness.tracking.store import Tracker

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 6
# `nirbench run` in a fresh interpreter that also knows the tests' tiny dataset.
RUN = (
    "import sys; sys.path.insert(0, 'tests'); import conftest; "
    "from nirbench.harness.cli.main import main; sys.exit(main(sys.argv[1:]))"
)


def untimed(record: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in record.items() if not k.startswith("time/")}


def curves(tracker: Tracker, run_id: str) -> dict[str, list[tuple[int, float]]]:
    keys = [k for k in tracker.client.get_run(run_id).data.metrics if not k.startswith("time/")]
    return {
        k: sorted((m.step, m.value) for m in tracker.client.get_metric_history(run_id, k))
        for k in keys
    }


def start_run(config: Path, results: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            RUN,
            "run",
            "--config",
            str(config),
            "--results-dir",
            str(results),
            "--no-progress",
            "--quiet",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigkilled_run_resumes_in_the_same_mlflow_run_with_identical_results(
    tiny_overrides, tmp_path
):
    cfg = load_config(
        overrides=tiny_overrides + [f"train.epochs={EPOCHS}", "regularizer=nir", "train.threads=1"]
    )
    config = tmp_path / "config.yaml"
    config.write_text(cfg.to_yaml())

    threads = torch.get_num_threads()
    try:
        reference = tmp_path / "reference"
        ref_tracker = Tracker(reference)
        ref_run = execute(cfg, ref_tracker, reference).run_id
    finally:
        torch.set_num_threads(threads)

    results = tmp_path / "results"
    checkpoint = run_dir(results, cfg) / "checkpoint.pt"
    victim = start_run(config, results)
    deadline = time.monotonic() + 60
    while not checkpoint.is_file():  # the first epoch is done and checkpointed: kill it
        assert victim.poll() is None, (
            f"the run ended before it could be killed: {victim.communicate()[0]}"
        )
        assert time.monotonic() < deadline, "no checkpoint after 60 s"
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL

    tracker = Tracker(results)
    (killed,) = tracker.runs()
    assert killed.status == "RUNNING"  # SIGKILL: nothing could record anything
    epoch_at_kill = torch.load(checkpoint, weights_only=False)["epoch"]
    assert 1 <= epoch_at_kill < EPOCHS  # really killed mid-training

    again = start_run(config, results)
    out = again.communicate(timeout=120)[0]
    assert again.returncode == 0, out

    (run,) = tracker.runs()  # no duplicate run
    assert run.run_id == killed.run_id and run.status == "FINISHED"
    assert run.tags["resumed"] == "true"
    got, want = curves(tracker, run.run_id), curves(ref_tracker, ref_run)
    assert set(got) == set(want) and "loss/nir" in got
    for key, points in got.items():
        assert [s for s, _ in points] == list(range(1, EPOCHS + 1)), key  # no gap, no repeat
        assert points == want[key], key  # identical to the uninterrupted run, epoch by epoch
    assert untimed(run.metrics) == untimed(ref_tracker.runs()[0].metrics)
    assert not checkpoint.exists()  # finished: the checkpoint moved into MLflow
