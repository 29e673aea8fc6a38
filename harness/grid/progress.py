"""What a running grid prints: one line per state change of a run, each ending in the grid's
counts and an ETA, e.g.

    [3/18] synth-cub proxy_anchor+nir seed=0: done in 21.3s, test R@1 35.2
           | done 5, running 2, failed 0, remaining 11 | ETA 2m10s

The ETA is the wall time per epoch of the runs that finished in this session times the epochs
still to go (a running run counts half), divided by how many run at once; no ETA before the first
run ends. Per epoch, not per run: the grid starts its longest runs first, so the first runs to
finish are the slowest. Lines, not a redrawn
bar: they read the same in a terminal, a log file and CI.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from nirbench.harness.grid.executors.job import Job, JobResult
from nirbench.harness.grid.status import ELSEWHERE, FAILED, FINISHED, SKIPPED


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class GridProgress:
    def __init__(
        self,
        jobs: list[Job],
        *,
        parallel: int,
        already_done: int = 0,
        stream: TextIO | None = None,
        clock=time.monotonic,
    ) -> None:
        self.total = len(jobs) + already_done
        self.index = {job.config_hash: i for i, job in enumerate(jobs, already_done + 1)}
        self.parallel = max(1, parallel)
        self.done = already_done  # finished, now or earlier
        self.failed = 0
        self.elsewhere = 0
        self.running: set[str] = set()
        self.remaining = len(jobs)  # not yet started
        self.epochs = {job.config_hash: max(1, job.epochs) for job in jobs}
        self.remaining_epochs = sum(self.epochs.values())
        self.durations: list[float] = []
        self.finished_epochs = 0
        self.stream = stream or sys.stdout
        self.clock = clock
        self.started_at = clock()

    # ------------------------------------------------------------------ events
    def started(self, job: Job, where: str = "") -> None:
        if job.config_hash in self.running:
            return
        self.running.add(job.config_hash)
        self.remaining -= 1
        self.remaining_epochs -= self._epochs_of(job)
        self._line(job, f"running{' on ' + where if where else ''} (config {job.config_hash})")

    def finished(self, job: Job, result: JobResult) -> None:
        if job.config_hash in self.running:
            self.running.discard(job.config_hash)
        else:  # never reported as started (it failed before its worker said so)
            self.remaining -= 1
            self.remaining_epochs -= self._epochs_of(job)
        if result.status == FINISHED:
            self.done += 1
            self.durations.append(result.seconds)
            self.finished_epochs += self._epochs_of(job)
            r1 = result.metrics.get("test/recall@1", result.metrics.get("test/recall_at_1"))
            score = f", test R@1 {100 * r1:.1f}" if r1 is not None else ""
            self._line(job, f"done in {result.seconds:.1f}s{score}")
        elif result.status == SKIPPED:
            self.done += 1
            self._line(job, "already finished, skipped")
        elif result.status == ELSEWHERE:
            self.elsewhere += 1
            self._line(job, f"running elsewhere, skipped: {result.error}")
        else:
            assert result.status == FAILED, result.status
            self.failed += 1
            self._line(job, f"FAILED: {result.error}")

    def _epochs_of(self, job: Job) -> int:
        return self.epochs.get(job.config_hash, 1)

    # ------------------------------------------------------------------ summary
    def eta_s(self) -> float | None:
        if not self.durations:
            return None
        per_epoch = sum(self.durations) / self.finished_epochs
        running = sum(self.epochs.get(h, 1) for h in self.running)  # hashes, not jobs
        to_go = self.remaining_epochs + 0.5 * running  # a running run is half done on average
        return per_epoch * to_go / self.parallel

    def counts(self) -> str:
        eta = self.eta_s()
        text = (
            f"done {self.done}, running {len(self.running)}, failed {self.failed}, "
            f"remaining {self.remaining}"
        )
        if self.elsewhere:
            text += f", elsewhere {self.elsewhere}"
        if eta is not None and (self.remaining or self.running):
            text += f" | ETA {format_duration(eta)}"
        return text

    def _line(self, job: Job, what: str) -> None:
        position = f"[{self.index.get(job.config_hash, '?')}/{self.total}]"
        print(f"{position} {job.label}: {what}  | {self.counts()}", file=self.stream, flush=True)
