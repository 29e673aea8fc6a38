"""The grid engine: N worker processes, failure isolation (an exception and a killed worker are
recorded FAILED with their cause and the grid goes on), FAILED runs not rerun without
--retry-failed, one MLflow run per configuration, a per-configuration lock against training
twice, --dry-run states, GPU pinning plans, the progress ETA and the exact reproduce command."""

from __future__ import annotations

import io
import shlex

import pytest

from nirbench.harness.cli.main import main
from nirbench.harness.grid.executors.job import FINISHED, Job, JobResult
from nirbench.harness.grid.executors.local import plan_slots
from nirbench.harness.grid.plan import NEW, ConfigState, load_grid, longest_first
from nirbench.harness.grid.progress import GridProgress
from nirbench.harness.tracking.run_lock import RunLock, RunLockedElsewhere
from nirbench.harness.train.runner import execute, run_dir
from nirbench.harness.tracking.store import Tracker
from tests.grid_datasets import DIES, RAISES, write_grid


def runs_by_dataset(tracker: Tracker) -> dict[str, list]:
    out: dict[str, list] = {}
    for run in tracker.runs():
        out.setdefault(run.tags["dataset"], []).append(run)
    return out


def test_parallel_grid_isolates_failures_and_records_their_cause(tmp_path, results_dir, capsys):
    grid = write_grid(tmp_path, datasets=("test-tiny", RAISES, DIES))
    argv = ["grid", str(grid), "--results-dir", str(results_dir), "--workers", "2"]
    assert main(argv) == 1  # failures are in the exit status
    out = capsys.readouterr().out
    assert "2 worker process(es)" in out
    assert "1 finished, 2 failed" in out

    tracker = Tracker(results_dir)
    runs = runs_by_dataset(tracker)
    assert [r.status for r in runs["test-tiny"]] == ["FINISHED"]
    for run in runs["test-tiny"]:
        steps = [s for s, _ in tracker.history(run.run_id, "test/recall@1")]
        assert steps == [1, 2]
    assert [r.status for r in runs[RAISES]] == ["FAILED"]
    assert all("MemoryError: simulated out of memory" in r.tags["error"] for r in runs[RAISES])
    assert [r.status for r in runs[DIES]] == ["FAILED"]  # marked by the grid process
    assert all("killed by SIGKILL" in r.tags["error"] for r in runs[DIES])

    # FAILED runs are listed and not rerun by a plain start; the exit status still says so.
    assert main(["grid", str(grid), "--results-dir", str(results_dir), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 finished, 2 failed, 0 running elsewhere, 0 resumable, 0 new; 0 would run" in out
    assert out.count("failed (skipped; --retry-failed reruns it)") == 2


def test_retry_failed_reruns_failed_runs_in_the_same_mlflow_run(tmp_path, results_dir, capsys):
    grid = write_grid(tmp_path, datasets=("test-tiny", RAISES))
    argv = ["grid", str(grid), "--results-dir", str(results_dir), "--executor", "inline"]
    assert main(argv) == 1
    tracker = Tracker(results_dir)
    (failed,) = runs_by_dataset(tracker)[RAISES]
    capsys.readouterr()

    assert main(argv) == 1  # nothing rerun, still reported
    out = capsys.readouterr()
    assert "FAILED earlier, not rerun" in out.out and "ran 0 in" in out.out
    assert "--retry-failed" in out.err

    assert main([*argv, "--retry-failed"]) == 1  # rerun: fails again, deterministically
    runs = runs_by_dataset(tracker)
    assert [r.run_id for r in runs[RAISES]] == [failed.run_id]  # no duplicate MLflow run
    assert len(tracker.runs()) == 2
    assert runs[RAISES][0].tags["resumed"] == "true"
    assert "simulated out of memory" in runs[RAISES][0].tags["previous_error"]


def test_bad_grid_entry_fails_before_anything_starts(tmp_path, results_dir, capsys):
    grid = write_grid(tmp_path, methods=("proxy_anchor", "proxy_anchr"))
    assert main(["grid", str(grid), "--results-dir", str(results_dir)]) == 2
    err = capsys.readouterr().err
    assert "method=proxy_anchr" in err and "Did you mean 'proxy_anchor'" in err
    assert not (results_dir / "runs").exists() and not (results_dir / "mlflow.db").exists()


def test_a_locked_configuration_is_never_trained_twice(
    tmp_path, results_dir, capsys, tiny_overrides
):
    grid = write_grid(tmp_path, seeds=(0, 1))
    plan = load_grid(grid)
    held = plan.configs[0]
    with RunLock(run_dir(results_dir.resolve(), held) / "lock"):
        with pytest.raises(RunLockedElsewhere, match=held.config_hash):
            execute(held, Tracker(results_dir), results_dir.resolve())
        assert main(["grid", str(grid), "--results-dir", str(results_dir), "--dry-run"]) == 0
        assert "running elsewhere: pid" in capsys.readouterr().out
        assert (
            main(["grid", str(grid), "--results-dir", str(results_dir), "--executor", "inline"])
            == 0
        )
        assert "running elsewhere" in capsys.readouterr().out
    tracker = Tracker(results_dir)
    (run,) = tracker.runs()
    assert run.tags["config_hash"] == plan.configs[1].config_hash  # only the unlocked one ran

    # The reproduce tag is an exact command: run as is, it names the same configuration.
    command = run.tags["reproduce"].split("  #")[0]
    assert main(shlex.split(command)[1:]) == 0
    assert "already finished" in capsys.readouterr().out
    assert len(tracker.runs()) == 1


def test_slots_pin_runs_to_gpus_and_share_cpu_threads():
    slots = plan_slots(None, gpus=["3", "5"], runs_per_gpu=2, cores=16)
    assert [s.gpu for s in slots] == ["3", "5", "3", "5"] and {s.threads for s in slots} == {4}
    assert [s.gpu for s in plan_slots(1, gpus=["0", "1"], cores=8)] == ["0"]
    with pytest.raises(ValueError, match="exceeds 2 GPU"):
        plan_slots(5, gpus=["0", "1"], runs_per_gpu=2)
    cpu = plan_slots(2, gpus=[], cores=2)
    assert [(s.gpu, s.threads) for s in cpu] == [(None, 1), (None, 1)]
    assert (
        len(plan_slots(None, gpus=[], cores=2)) == 2
        and len(plan_slots(None, gpus=[], cores=1)) == 1
    )


def test_progress_counts_and_eta():
    jobs = [Job("", f"h{i}", f"job {i}") for i in range(6)]
    now = [0.0]
    out = io.StringIO()
    progress = GridProgress(jobs, parallel=2, already_done=1, stream=out, clock=lambda: now[0])
    for job in jobs[:2]:
        progress.started(job)
    progress.finished(
        jobs[0], JobResult("h0", FINISHED, seconds=10.0, metrics={"test/recall@1": 0.5})
    )
    progress.started(jobs[2])
    progress.finished(jobs[1], JobResult("h1", FINISHED, seconds=20.0))
    # mean 15 s x (3 not started + 0.5 x 1 running) / 2 at once
    assert progress.eta_s() == pytest.approx(15 * 3.5 / 2)
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("[3/7] job 1: done in 20.0s")
    assert "done 3, running 1, failed 0, remaining 3 | ETA 26s" in last


def test_the_eta_counts_epochs_not_runs():
    """Longest runs first: a 60-epoch run that took 60 s says a 10-epoch one takes 10 s."""
    jobs = [
        Job("", "long", "long", 60),
        Job("", "short1", "short 1", 10),
        Job("", "short2", "short 2", 10),
    ]
    progress = GridProgress(jobs, parallel=1, stream=io.StringIO())
    progress.started(jobs[0])
    progress.finished(jobs[0], JobResult("long", FINISHED, seconds=60.0))
    assert progress.eta_s() == pytest.approx(20.0)
    progress.started(jobs[1])
    assert progress.eta_s() == pytest.approx(15.0)  # 10 to go + half of the running 10


def test_the_longest_runs_start_first():
    """Longest processing time first: the default grid's 32-epoch runs start before its 15-epoch
    ones, and equal budgets keep the grid's order."""
    plan = load_grid("harness/configs/grids/default.yaml")
    states = [ConfigState(cfg, NEW) for cfg in plan.configs]
    ordered = longest_first(states)
    epochs = [st.cfg.train.epochs for st in ordered]
    assert epochs == sorted(epochs, reverse=True) and epochs[0] == 32 and epochs[-1] == 15
    same = [st.cfg.config_hash for st in ordered if st.cfg.train.epochs == 24]
    assert same == [st.cfg.config_hash for st in states if st.cfg.train.epochs == 24]


def test_one_session_plans_skips_and_collects_for_every_executor(tmp_path, results_dir, capsys):
    """The grid session alone (harness/grid/session.py): states from MLflow, what a start runs
    with and without --retry-failed, the progress's count of configurations not run, what a
    run came to, and the exit status."""
    from nirbench.harness.grid.executors.inline import InlineExecutor
    from nirbench.harness.grid.session import GridSession
    from nirbench.harness.grid.status import FAILED

    grid = write_grid(tmp_path, datasets=("test-tiny", RAISES))
    assert main(["grid", str(grid), "--results-dir", str(results_dir), "--executor", "inline"]) == 1
    capsys.readouterr()

    session = GridSession.open(str(grid), [], [], results_dir)
    assert [str(st.state) for st in session.states] == ["finished", "failed"]
    assert session.count()[FAILED] == 1 and session.to_run() == []
    assert [st.cfg.dataset.name for st in session.not_run()] == ["test-tiny", RAISES]
    assert session.exit_status() == 1  # a FAILED configuration left alone still fails the grid

    retry = GridSession.open(str(grid), [], [], results_dir, retry_failed=True)
    assert [st.cfg.dataset.name for st in retry.to_run()] == [RAISES]
    assert retry.failed_before() == []
    jobs = retry.jobs(retry.to_run())
    assert retry.progress(jobs, parallel=1).done == 1  # the finished one counts as done
    outcome = retry.run(InlineExecutor(), jobs)
    assert [r.status for r in outcome.results] == [FAILED] and outcome.failed == outcome.results
    assert "simulated out of memory" in outcome.failed[0].error
    assert retry.label_of(outcome.failed[0].config_hash) == jobs[0].label
    assert retry.exit_status(outcome) == 1


def test_the_local_and_slurm_paths_open_the_same_session(
    tmp_path, results_dir, capsys, monkeypatch
):
    """Both commands plan through GridSession.open (the Slurm dry run renders its sbatch script
    with submitit alone, no cluster needed)."""
    pytest.importorskip("submitit")
    from nirbench.harness.grid import session as session_module

    opened = []
    real_open = session_module.GridSession.open.__func__

    def spy(cls, grid_file, *args, **kwargs):
        opened.append(grid_file)
        return real_open(cls, grid_file, *args, **kwargs)

    monkeypatch.setattr(session_module.GridSession, "open", classmethod(spy))
    grid = write_grid(tmp_path)
    for executor in ("local", "slurm"):
        argv = [
            "grid",
            str(grid),
            "--results-dir",
            str(results_dir),
            "--dry-run",
            "--executor",
            executor,
        ]
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert opened == [str(grid), str(grid)]
    assert "would submit 1 task(s) as one array" in out and "1 would run" in out
