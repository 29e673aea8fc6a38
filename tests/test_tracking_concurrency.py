"""Several processes writing to the default SQLite store at once lose nothing and never fail with
"database is locked": 4 writer processes, each a full run (start, params, artifacts, 30 epochs x
24 metrics, finish), then every logged metric is counted and compared value by value. Plus the two
mechanisms behind it: every call holds the store's lock, and SQLite's own lock errors are
retried while other errors are not."""

from __future__ import annotations

import fcntl
import multiprocessing
from pathlib import Path

import pytest

from nirbench.harness.tracking import store as tracking
from nirbench.harness.config import load_config
from nirbench.harness.tracking.store import SerializedClient, Tracker, mlflow_key, with_lock_retries

WRITERS, EPOCHS, METRICS = 4, 30, 24


def expected(writer: int, epoch: int) -> dict[str, float]:
    return {f"test/m{k}": writer + epoch / 100 + k / 10_000 for k in range(METRICS)}


def write_one_run(results: str, writer: int, start: multiprocessing.synchronize.Event) -> None:
    cfg = load_config(overrides=[f"seed={writer}"])
    start.wait()  # all four hit the store at the same moment
    tracker = Tracker(Path(results))
    run_id = tracker.start(cfg, "concurrency", command=f"writer {writer}")
    for epoch in range(1, EPOCHS + 1):
        tracker.log_epoch(run_id, epoch, expected(writer, epoch))
    tracker.finish(run_id, {"time/train_total_s": 1.0})


def test_four_concurrent_writers_lose_no_metric(results_dir):
    Tracker(results_dir)  # the store exists; its creation is serialised too, but not under test
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    writers = [
        ctx.Process(target=write_one_run, args=(str(results_dir), w, start)) for w in range(WRITERS)
    ]
    for p in writers:
        p.start()
    start.set()
    for p in writers:
        p.join(timeout=180)
    assert [p.exitcode for p in writers] == [0] * WRITERS  # none crashed ("database is locked")

    tracker = Tracker(results_dir)
    runs = tracker.runs()
    assert len(runs) == WRITERS and {r.status for r in runs} == {"FINISHED"}
    total = 0
    for run in runs:
        writer = int(run.tags["seed"])
        for k in range(METRICS):
            key = f"test/m{k}"
            history = sorted(
                (m.step, m.value)
                for m in tracker.client.get_metric_history(run.run_id, mlflow_key(key))
            )
            assert history == [(e, expected(writer, e)[key]) for e in range(1, EPOCHS + 1)]
            total += len(history)
    assert total == WRITERS * EPOCHS * METRICS


class RecordingClient:
    """Stands in for MlflowClient: says whether the store lock was held during each call."""

    def __init__(self, lock_file: Path, failures: list[Exception]) -> None:
        self.lock_file, self.failures, self.calls = lock_file, failures, 0
        self.held = []

    def log_batch(self, *args, **kwargs) -> str:
        self.calls += 1
        with open(self.lock_file, "a") as other:  # another open file = another process's view
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(other, fcntl.LOCK_UN)
                self.held.append(False)
            except BlockingIOError:
                self.held.append(True)
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_every_call_holds_the_store_lock_and_lock_errors_are_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "RETRY_FIRST_S", 0.001)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    fake = RecordingClient(
        tmp_path / "mlflow.db.lock",
        [RuntimeError("(sqlite3.OperationalError) database is locked")] * 2,
    )
    assert SerializedClient(fake, uri).log_batch("run") == "ok"
    assert fake.calls == 3 and fake.held == [True, True, True]

    fake = RecordingClient(tmp_path / "mlflow.db.lock", [ValueError("bad metric name")])
    with pytest.raises(ValueError, match="bad metric name"):  # not a lock error: not retried
        SerializedClient(fake, uri).log_batch("run")
    assert fake.calls == 1

    monkeypatch.setattr(tracking, "RETRY_TOTAL_S", 0.0)
    with pytest.raises(RuntimeError, match="database is locked"):  # retries are bounded
        with_lock_retries(lambda: (_ for _ in ()).throw(RuntimeError("database is locked")))
