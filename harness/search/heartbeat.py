"""Killed workers: RDB storages use Optuna's heartbeat; Optuna 5's JournalStorage has none, so this
module keeps one (the worker's host, pid and process start time plus a heartbeat timestamp in the
trial's user attributes) and fails and re-queues the trials of dead workers."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from nirbench.harness.search.attributes import HEARTBEAT_ATTR, WORKER_ATTR
from nirbench.harness.search.storage import display_location, native_heartbeat, storage_location
from nirbench.harness.search.tune_file import TuneConfig
from nirbench.harness.tracking.store import Tracker

log = logging.getLogger(__name__)


# ============================================================================ liveness
def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against a recycled pid); None if unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_worker(trial_number: int) -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "start": _process_start(pid),
        "trial": trial_number,
    }


def _worker_alive(worker: dict[str, Any]) -> bool | None:
    """True/False for a worker on this host, None for one elsewhere (only its heartbeat tells)."""
    if worker.get("host") != socket.gethostname():
        return None
    pid = int(worker.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = _process_start(pid)
    return start is None or worker.get("start") in (None, start)


class Heartbeat:
    """Calls ``beat`` now and every ``interval`` seconds until the block ends."""

    def __init__(self, beat: Callable[[], None], interval: float) -> None:
        self._beat, self._interval = beat, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nirbench-heartbeat", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self._beat()
            except UpdateFinishedTrialError:
                return  # the trial ended (or another worker declared it dead)
            except Exception as err:  # a missed beat is not worth killing the trial
                log.warning("heartbeat failed: %s", err)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def stale_trials(
    trials: Sequence[FrozenTrial], grace_s: float, now: float | None = None
) -> list[FrozenTrial]:
    """RUNNING trials whose worker process is gone (same host) or silent for ``grace_s``."""
    now = time.time() if now is None else now
    out = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        worker = t.user_attrs.get(WORKER_ATTR) or {}
        if worker.get("trial") == t.number:
            alive = _worker_alive(worker)
            if alive is False:
                out.append(t)
                continue
            last = float(t.user_attrs.get(HEARTBEAT_ATTR, 0.0))
        else:  # just started (attributes not written yet) or a re-queued copy of a dead trial
            last = t.datetime_start.timestamp() if t.datetime_start else now
        if now - last > grace_s:
            out.append(t)
    return out


def fail_stale_trials(
    study: optuna.Study, storage: BaseStorage, tc: TuneConfig, tracker: Tracker
) -> list[int]:
    """Fail the trials of dead workers, re-queue them (same parameters) and mark their MLflow
    runs KILLED. Returns the failed trial numbers."""
    running = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running:
        return []
    failed: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if native_heartbeat(storage):
            optuna.storages.fail_stale_trials(study)  # runs the storage's retry callback
            states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
            failed = [n for n in running if states.get(n) == TrialState.FAIL]
        else:
            retry = RetryHeartbeatStaleTrialCallback(max_retry=tc.max_retry)
            for t in stale_trials(list(running.values()), tc.grace_s):
                try:
                    storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                except UpdateFinishedTrialError:
                    continue  # it finished, or another worker failed it first
                failed.append(t.number)
                retry(study, storage.get_trial(t._trial_id))
    shown = display_location(storage_location(tc, tracker.results_dir))
    for number in failed:
        for run in tracker.runs(
            f"tags.study = '{tc.study}' and tags.trial = '{number}'", statuses=("RUNNING",)
        ):
            if run.tags.get("search.storage") != shown:
                continue
            tracker.killed(
                run.run_id, f"the worker running trial {number} died; the trial was re-queued"
            )
        log.warning("trial %d of %s: its worker died; failed and re-queued", number, tc.study)
    return failed
