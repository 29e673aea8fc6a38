"""Run a grid's jobs one after another inside the grid process: no isolation (a crash ends the
grid), but breakpoints, ``--debug`` tracebacks and profilers see the run. For debugging."""

from __future__ import annotations

from nirbench.harness.grid.executors.job import Job, JobResult, JobSettings, run_job


class InlineExecutor:
    name = "inline"
    parallel = 1

    def describe(self) -> str:
        return "inline executor: runs one by one in this process (debugging; no isolation)"

    def run(
        self, jobs: list[Job], settings: JobSettings, progress, on_crash=None
    ) -> list[JobResult]:
        results = []
        for job in jobs:
            progress.started(job, "this process")
            results.append(run_job(job, settings))
            progress.finished(job, results[-1])
        return results
