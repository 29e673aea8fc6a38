"""Where a grid's configurations run: ``local`` (worker processes on this machine, the default),
``ray`` (tasks on a Ray cluster), ``slurm`` (one job array through submitit) or ``inline`` (in
the grid process, for debugging). Every
executor runs ``job.run_job`` on each ``Job`` and reports to a ``GridProgress``."""

from __future__ import annotations

from nirbench.harness.grid.executors.job import (
    Job,
    JobResult,
    JobSettings,
    default_imports,
    run_job,
)
from nirbench.harness.grid.status import ELSEWHERE, FAILED, FINISHED, SKIPPED

EXECUTORS = ("local", "ray", "slurm", "inline")

__all__ = [
    "EXECUTORS",
    "ELSEWHERE",
    "FAILED",
    "FINISHED",
    "SKIPPED",
    "Job",
    "JobResult",
    "JobSettings",
    "default_imports",
    "run_job",
]
