"""The status names of a grid, defined once: what a configuration is before a start (the plan's
state, from the MLflow store and its lock file) and what one job of a start came to (its result).

Both read as the words the grid prints ("finished", "running elsewhere", ...): ``Status`` is a
``StrEnum``, so a status formats, compares and sorts as its text, and a result pickled by a worker
(a spawned process, a Ray task, a Slurm task) reads the same in the grid process.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    # A configuration's state before a start (grid/plan.py ``config_states``) ...
    FINISHED = "finished"  # FINISHED in MLflow: skipped
    FAILED = "failed"  # FAILED in MLflow: not rerun unless --retry-failed
    ELSEWHERE = "running elsewhere"  # a live process holds its lock: skipped
    RESUMABLE = "resumable"  # interrupted or killed: resumed from its last epoch checkpoint
    NEW = "would run"  # never started
    # ... and, with FINISHED, FAILED and ELSEWHERE, what one job came to (executors/job.py):
    SKIPPED = "skipped"  # its worker found it finished already (another grid trained it first)


FINISHED, FAILED, ELSEWHERE = Status.FINISHED, Status.FAILED, Status.ELSEWHERE
RESUMABLE, NEW, SKIPPED = Status.RESUMABLE, Status.NEW, Status.SKIPPED

# The states of a plan, in the order the grid counts them ("3 finished, 1 failed, ...").
CONFIG_STATES = (FINISHED, FAILED, ELSEWHERE, RESUMABLE, NEW)
# What a job can come to.
JOB_RESULTS = (FINISHED, SKIPPED, FAILED, ELSEWHERE)


def runnable_states(retry_failed: bool) -> frozenset[Status]:
    """The states a start runs: new and resumable configurations, and FAILED ones when asked
    (``--retry-failed``); a deterministic crash is otherwise not rerun at every start."""
    return frozenset({NEW, RESUMABLE} | ({FAILED} if retry_failed else set()))


__all__ = [
    "CONFIG_STATES",
    "ELSEWHERE",
    "FAILED",
    "FINISHED",
    "JOB_RESULTS",
    "NEW",
    "RESUMABLE",
    "SKIPPED",
    "Status",
    "runnable_states",
]
