"""Grids and searches on Slurm through submitit.

Without a cluster: the time and option parsing, the squeue/sacct readers, the sbatch script that
--dry-run prints, and the lock hand-over between a requeued task and its previous incarnation.

With a real one-node cluster (tests/slurm_cluster.py: munged, slurmctld and slurmd on localhost)
and the README's recipe (an MLflow server on PostgreSQL, a shared results folder): a 4-config
grid with 2 configs finished beforehand goes to Slurm as one 2-task array; one task is cancelled
with scancel after its first epoch, the other is sent USR2 (what Slurm sends before a time limit,
and submitit's preemption signal) so that submitit checkpoints and requeues it. The requeued task
resumes by itself; a second submission resumes the cancelled one. In MLflow every configuration
is FINISHED exactly once, and each interrupted one continued in its own run with epochs 1..E
once each. Skipped, with the reason, where the daemons cannot run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nirbench.harness.cli import slurm as slurm_cli
from nirbench.harness.cli.main import main
from nirbench.harness.config import load_config
from nirbench.harness.grid.executors import ELSEWHERE, FINISHED, Job, JobSettings
from nirbench.harness.grid.executors import slurm as slurm_mod
from nirbench.harness.grid.executors.slurm import SlurmTask, parse_extra, parse_time
from nirbench.harness.grid.executors.slurm_status import (
    expand_ids,
    parse_sacct,
    parse_squeue,
    query,
    restarts,
)
from nirbench.harness.train.runner import run_dir
from nirbench.harness.tracking.store import Tracker
from tests.grid_datasets import write_grid
from tests.slurm_cluster import ClusterUnavailable, start_cluster, wait_for_empty_queue

submitit = pytest.importorskip(
    "submitit", reason="submitit is not installed (pip install 'nirbench[cluster]')"
)
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- no cluster needed
@pytest.mark.parametrize(
    "text, minutes",
    [
        ("90", 90),
        ("1:30", 2),
        ("24:00:00", 1440),
        ("0:00:30", 1),
        ("2-00", 2880),
        ("1-02:03", 1563),
        ("1-00:00:01", 1441),
    ],
)
def test_slurm_time_limits_become_whole_minutes(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "abc", "1:2:3:4", "-5", "0"])
def test_bad_time_limits_are_refused(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_extra_sbatch_options_and_the_ones_the_harness_owns():
    assert parse_extra(["account=proj", "qos=high", "--constraint=a100", "exclusive"]) == {
        "account": "proj",
        "qos": "high",
        "constraint": "a100",
        "exclusive": True,
    }
    with pytest.raises(ValueError, match="--time"):
        parse_extra(["time=10"])
    with pytest.raises(ValueError, match="--cpus-per-run"):
        parse_extra(["cpus_per_task=4"])


def test_squeue_and_sacct_lines_are_read_per_array_task():
    assert expand_ids("12_[1-3,7%2]") == ["12_1", "12_2", "12_3", "12_7"]
    assert expand_ids("12_4") == ["12_4"]
    queue = parse_squeue("12_0|RUNNING|node1|None\n12_[1-2]|PENDING||Resources\n")
    assert queue["12_0"].live and queue["12_0"].node == "node1"
    assert (
        queue["12_2"].state == "PENDING" and queue["12_2"].describe() == "12_2 PENDING (Resources)"
    )
    done = parse_sacct(
        "12_0|CANCELLED by 0|node1|0:15\n12_0.batch|CANCELLED||0:15\n12_1|TIMEOUT|node2|0:0\n"
    )
    assert done["12_0"].state == "CANCELLED" and not done["12_0"].live
    assert done["12_1"].state == "TIMEOUT" and set(done) == {"12_0", "12_1"}


def test_dry_run_prints_the_sbatch_script_of_the_array(tmp_path, results_dir, capsys):
    grid = write_grid(tmp_path, regularizers=("null", "nir"), seeds=(0, 1), name="dry")
    argv = [
        "grid",
        str(grid),
        "--results-dir",
        str(results_dir),
        "--executor",
        "slurm",
        "--partition",
        "gpu",
        "--gpus-per-run",
        "1",
        "--cpus-per-run",
        "8",
        "--mem",
        "32G",
        "--time",
        "24:00:00",
        "--array-parallelism",
        "3",
        "--slurm-extra",
        "account=proj",
        "--dry-run",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "4 new; would submit 4 task(s) as one array" in out
    script = out.split("rendered by submitit:\n", 1)[1]
    for line in (
        "#SBATCH --array=0-3%3",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH --time=1440",
        "#SBATCH --signal=USR2@90",
        "#SBATCH --account=proj",
        "#SBATCH --job-name=nirbench-dry",
        "-m submitit.core._submit",
    ):
        assert line in script, line
    assert "wckey" not in script
    assert not (results_dir / "slurm" / "grid" / "dry").exists()  # nothing submitted


def test_tune_dry_run_prints_the_workers_array(tmp_path, results_dir, capsys):
    argv = [
        "tune",
        "--results-dir",
        str(results_dir),
        "--set",
        "dataset.name=test-tiny",
        "--executor",
        "slurm",
        "--workers",
        "3",
        "--time",
        "2:00:00",
        "--dry-run",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "shared by 3 Slurm task(s)" in out and ".journal" in out
    assert "#SBATCH --array=0-2%3" in out and "#SBATCH --time=120" in out
    assert main(["tune", "--results-dir", str(results_dir), "--workers", "2"]) == 2  # local: 1


HOLD = """
import os, sys, time
from nirbench.harness.tracking.run_lock import RunLock
lock = RunLock(sys.argv[1]); lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_requeued_task_waits_for_its_previous_incarnation_but_not_for_another_job(
    tmp_path, results_dir, tiny_overrides, monkeypatch
):
    cfg = load_config(overrides=tiny_overrides)
    job = Job(cfg.to_yaml(), cfg.config_hash, "tiny")
    settings = JobSettings(
        results_dir=str(results_dir),
        tracking_uri=f"sqlite:///{results_dir}/mlflow.db",
        grid="t",
        command="test",
    )
    lock = run_dir(results_dir, cfg) / "lock"
    monkeypatch.setattr(slurm_mod, "LOCK_POLL_S", 0.2)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")

    def hold(seconds: float, job_id: str | None) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("SLURM_ARRAY_JOB_ID"), env.pop("SLURM_ARRAY_TASK_ID")
        if job_id:
            env["SLURM_JOB_ID"] = job_id
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(lock), str(seconds)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout.readline().strip() == "held"
        return holder

    # Another live Slurm job holds it: leave it alone at once.
    monkeypatch.setattr(slurm_mod, "slurm_job_live", lambda job_id: True)
    other = hold(120, "55")
    try:
        result = SlurmTask(settings)(job)
        assert result.status == ELSEWHERE and "(slurm job 55)" in result.error
        assert other.poll() is None  # it did not wait for the holder to end
    finally:
        other.kill(), other.wait()

    # Its own previous incarnation (same array task 77_3) still holds it: wait, then train.
    previous = hold(2, "77_3")
    started = time.monotonic()
    result = SlurmTask(settings)(job)
    previous.wait()
    assert result.status == FINISHED and time.monotonic() - started >= 1.5
    assert Tracker(results_dir).find(cfg.config_hash, ("FINISHED",)).run_id == result.run_id


# ---------------------------------------------------------------------------- a real cluster
@pytest.fixture
def slurm(monkeypatch):
    try:
        cluster = start_cluster()
    except ClusterUnavailable as err:
        pytest.skip(f"no one-node Slurm cluster here: {err}")
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    monkeypatch.setattr(slurm_cli, "POLL_S", 1.0)
    try:
        yield cluster
    finally:
        wait_for_empty_queue(cluster)
        cluster.stop()


def wait_until(condition, timeout_s: float, what: str, cluster=None, poll_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            logs = cluster.logs() if cluster is not None else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{logs}")
        time.sleep(poll_s)


def task_state(task: str):
    return query([task.split("_")[0]])[0].get(task)


def held(state) -> bool:
    return state is not None and state.state == "PENDING" and state.reason == "BeginTime"


# The README's recipe: an MLflow server on PostgreSQL (tests/test_postgres_store.py starts a
# throwaway one) and a results folder every node sees.
from tests.test_postgres_store import mlflow_server, postgres  # noqa: E402,F401

# A task must outlive scancel's SIGTERM + KillWait (1 s here, about 2 s in all) after its first
# epoch: 99 more epochs of 0.05-0.2 s each (a quiet machine runs test-tiny epochs fast).
EPOCHS = 100


# mlflow_server is the fixture imported above: a parameter of that name is how pytest passes it.
def test_grid_on_slurm_skips_finished_resumes_cancelled_and_requeues_preempted(
    slurm,
    mlflow_server,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    url, _, _ = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    clock = time.monotonic()
    phases: list[str] = []

    def phase(name: str) -> None:
        phases.append(f"{name} {time.monotonic() - clock:.0f}s")

    results = tmp_path / "shared"
    grid = write_grid(tmp_path, name="slurm-tiny")  # its base config; the grid is this one:
    # the 2 configurations finished beforehand are short, the 2 that go to Slurm long enough.
    grid.write_text(f"""
name: slurm-tiny
config: base.yaml
datasets: [test-tiny]
methods: [proxy_anchor]
regularizers: [null, nir]
overrides: [train.batch_size=8, backbone.embed_dim=16, "eval.recall_at=[1, 2]"]
blocks:
  - {{seeds: [0], overrides: [train.epochs=2]}}
  - {{seeds: [1], overrides: [train.epochs={EPOCHS}]}}
""")
    base = ["grid", str(grid), "--results-dir", str(results)]
    on_slurm = [
        "--executor",
        "slurm",
        "--partition",
        slurm.partition,
        "--cpus-per-run",
        "1",
        "--mem",
        "1G",
        "--time",
        "30",
    ]
    folder = results / "slurm" / "grid" / "slurm-tiny"

    # Two of the four configurations are finished beforehand, on this machine.
    assert main(base + ["--only", "seed=0", "--executor", "inline"]) == 0
    tracker = Tracker(results)
    assert tracker.uri == url
    before = {r.tags["config_hash"]: r.run_id for r in tracker.runs()}
    assert len(before) == 2
    phase("pre-finished 2 locally")

    # --dry-run prints the script; the submission writes exactly that script.
    capsys.readouterr()
    assert main(base + on_slurm + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 finished" in out and "would submit 2 task(s) as one array" in out
    script = out.split("rendered by submitit:\n", 1)[1].strip()
    assert main(base + on_slurm) == 0
    out = capsys.readouterr().out
    array = re.search(r"submitted job array (\d+) \(2 tasks\)", out).group(1)
    tasks = {
        label: (task, h)
        for task, label, h in re.findall(r"^  (\d+_\d+)  (.+?)  \(config (\w+)\)$", out, re.M)
    }
    assert (folder / f"{array}_submission.sh").read_text().strip() == script
    assert set(tasks) == {"test-tiny proxy_anchor seed=1", "test-tiny proxy_anchor+nir seed=1"}
    cancel_task, cancel_hash = tasks["test-tiny proxy_anchor seed=1"]
    requeue_task, requeue_hash = tasks["test-tiny proxy_anchor+nir seed=1"]
    assert not {cancel_hash, requeue_hash} & set(before)

    # As soon as each has checkpointed an epoch: scancel one, USR2 the other.
    actions = {
        cancel_hash: ["scancel", cancel_task],
        requeue_hash: ["scancel", "--signal=USR2", requeue_task],
    }
    interrupted: dict[str, str] = {}
    deadline = time.monotonic() + 600  # generous: only a broken run ever waits this long
    while actions:
        for h, argv in list(actions.items()):
            if (results / "runs" / h / "checkpoint.pt").is_file():
                slurm.run(*argv)
                del actions[h]
        assert time.monotonic() < deadline, f"no checkpoint after 600 s\n{slurm.logs()}"
        time.sleep(0.05)
    phase("first epochs checkpointed, scancel + USR2 sent")
    for h in (cancel_hash, requeue_hash):
        run = tracker.find(h, ("RUNNING", "KILLED"))
        assert run is not None, f"{h} finished before it could be interrupted"
        interrupted[h] = run.run_id

    wait_until(
        lambda: not (task_state(cancel_task) and task_state(cancel_task).live),
        300,
        f"{cancel_task} to end",
        slurm,
    )
    # Requeued: back to PENDING once its previous run has completed, held until BeginTime.
    wait_until(
        lambda: restarts(requeue_task) >= 1 and held(task_state(requeue_task)),
        300,
        f"{requeue_task} to be requeued",
        slurm,
    )
    phase("cancelled one gone, the other requeued")
    for h in (cancel_hash, requeue_hash):  # really stopped mid-run
        assert tracker.client.get_run(interrupted[h]).info.status != "FINISHED"
        assert torch_epoch(results / "runs" / h) < EPOCHS

    # The status view joins MLflow and Slurm.
    capsys.readouterr()
    assert main(base + ["--status"]) == 0
    status = capsys.readouterr().out
    line = {
        h: next(ln for ln in status.splitlines() if ln.startswith(h))
        for h in (cancel_hash, requeue_hash)
    }
    assert (
        "mlflow: resumable" in line[cancel_hash] and f"{cancel_task} CANCELLED" in line[cancel_hash]
    )
    assert "requeued 1x" in line[requeue_hash]
    assert "2 finished" in status

    # Slurm holds a requeued job for about two minutes before it may start again (it sets that
    # BeginTime once the previous run has completed, hence the wait above); a test need not.
    slurm.run("scontrol", "update", f"jobid={requeue_task}", "StartTime=now")
    # The second submission leaves the requeued task alone and resumes the cancelled one.
    assert main(base + on_slurm + ["--wait"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"submitted job array \d+ \(1 tasks\)", out), out
    assert "proxy_anchor seed=1: done in" in out
    assert requeue_task in out or "running elsewhere" in out
    wait_until(
        lambda: not (task_state(requeue_task) and task_state(requeue_task).live),
        600,
        f"{requeue_task} to finish after its requeue",
        slurm,
        poll_s=1.0,
    )
    phase("both resumed and finished")

    runs = tracker.runs()
    assert len(runs) == 4 and {r.status for r in runs} == {"FINISHED"}
    assert sorted(r.tags["config_hash"] for r in runs) == sorted(
        set(before) | {cancel_hash, requeue_hash}
    )  # each configuration exactly once
    for r in runs:
        if r.tags["config_hash"] in before:
            assert r.run_id == before[r.tags["config_hash"]]  # skipped, not retrained
            continue
        assert r.run_id == interrupted[r.tags["config_hash"]]  # resumed in its own run
        assert r.tags["resumed"] == "true"
        # Every per-epoch curve: epochs 1..E, each exactly once (no gap, no repeat).
        keys = set(tracker.client.get_run(r.run_id).data.metrics) - {"time/train_total_s"}
        assert {"test/recall_at_1", "loss/total", "loss/method"} <= keys
        for key in keys:
            steps = [m.step for m in tracker.client.get_metric_history(r.run_id, key)]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), (key, sorted(steps))
    assert main(base + ["--status"]) == 0
    assert "4 finished" in capsys.readouterr().out
    print("phases:", "; ".join(phases))


def torch_epoch(folder: Path) -> int:
    import torch

    path = folder / "checkpoint.pt"
    return (
        int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
        if path.is_file()
        else 0
    )


def test_tune_on_slurm_runs_workers_that_share_one_study(slurm, tmp_path, results_dir, capsys):
    """Two array tasks work on one study (journal file in the shared results folder, MLflow in
    its SQLite store under the serialised-write lock): the study reaches its target exactly, no
    point is tried twice, and only worker 0 trains the final seed."""
    import optuna

    from nirbench.harness.search.storage import open_storage
    from nirbench.harness.search.tune_file import load_tune_config
    from tests.test_search import tune_file

    path = tune_file(
        tmp_path,
        "n_trials: 3\nfinal_seeds: 1\nvalidation: {fraction: 0.25}\n"
        "sampler: {name: tpe, n_startup_trials: 2}\n",
    )
    argv = [
        "tune",
        "--config",
        str(path),
        "--results-dir",
        str(results_dir),
        "--executor",
        "slurm",
        "--workers",
        "2",
        "--partition",
        slurm.partition,
        "--time",
        "30",
        "--no-plots",
        "--wait",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    array = re.search(r"submitted job array (\d+) \(2 tasks\)", out).group(1)
    assert f"{array}_0: worker 0 ran" in out and f"{array}_1: worker 1 ran" in out
    assert "1 final run(s)" in out

    tc = load_tune_config(path)
    study = optuna.load_study(study_name=tc.study, storage=open_storage(tc, results_dir))
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 3 and len({tuple(sorted(t.params.items())) for t in done}) == 3
    final = [r for r in Tracker(results_dir).runs() if r.tags.get("stage") == "final"]
    assert len(final) == 1 and final[0].status == "FINISHED"
