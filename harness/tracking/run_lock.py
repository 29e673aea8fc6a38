"""Nothing trains twice: one lock file per configuration, ``results/runs/<hash>/lock``.

The process that trains a configuration holds an exclusive ``fcntl`` lock on it for the whole
run; a second process (another grid, another ``nirbench run``, a second worker) finds it held and
skips the configuration as "running elsewhere" instead of training it again. The kernel drops the
lock when its holder dies, SIGKILL included, so a killed run never leaves a stale lock and is
resumed by the next start. The lock is per machine (it lives in the results folder): runs on
several machines need one scheduler (a Ray driver) or a results folder on a file system with
working ``flock`` (NFSv4, Lustre with ``-o flock``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import TracebackType


class RunLockedElsewhere(RuntimeError):
    """Another live process holds this configuration's lock."""


class RunLock:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._handle = None

    def acquire(self) -> None:
        """Take the lock without waiting; ``RunLockedElsewhere`` names its holder if it is held."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            handle.close()
            raise RunLockedElsewhere(
                f"{self.path.parent.name} is being trained by {holder} (lock {self.path})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}{_slurm_note()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is None:
            return
        import fcntl

        self._handle.truncate(0)
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _slurm_note() -> str:
    """Which Slurm (array) task holds the lock: a requeued task recognises its own previous
    incarnation, and a dead job's lock on another node, by it (harness/executors/slurm.py)."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array}_{index}" if array and index else os.environ.get("SLURM_JOB_ID")
    return f" (slurm job {job})" if job else ""


def held_elsewhere(path: Path) -> str | None:
    """Who holds the lock at ``path`` (e.g. "pid 12 on host"), or None if nobody does."""
    if not Path(path).is_file():
        return None
    try:
        probe = RunLock(path)
        probe.acquire()
    except RunLockedElsewhere as err:
        return str(err).split(" is being trained by ", 1)[-1].split(" (lock ", 1)[0]
    probe.release()
    return None
