"""One start of a grid, whatever runs it: plan -> skip finished -> run/resume -> collect status.

``GridSession.open`` expands and validates the grid (a bad entry fails before any run), keeps the
``--only`` slice and reads every configuration's state from the MLflow store and its lock file
(grid/plan.py). The policy is the same for every executor:

- FINISHED in MLflow: skipped.
- held by a live process (its lock file): skipped, "running elsewhere".
- interrupted or killed (RUNNING with no live holder, KILLED): resumed from its last checkpoint
  in the same MLflow run.
- FAILED: reported and not rerun, unless ``retry_failed``.

``jobs`` turns the configurations to run into ``Job``s, ``settings`` what they share; ``run``
hands them to a pool executor (local, Ray, inline) and waits, the Slurm path submits them and
``follow``s the array (executors/slurm.py); ``collect`` sorts what came back by status. The CLI
(cli/grid.py, cli/slurm.py) parses, calls this and prints.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nirbench.harness.grid.executors.job import Job, JobResult, JobSettings, default_imports
from nirbench.harness.grid.plan import (
    ConfigState,
    GridPlan,
    config_states,
    load_grid,
    select_configs,
    write_plan_record,
)
from nirbench.harness.grid.progress import GridProgress
from nirbench.harness.grid.status import (
    CONFIG_STATES,
    ELSEWHERE,
    FAILED,
    FINISHED,
    Status,
    runnable_states,
)


@dataclass(frozen=True)
class SessionOutcome:
    """What the jobs of one start came to, and how long the start took."""

    results: list[JobResult]
    wall_s: float = 0.0

    def with_status(self, status: Status) -> list[JobResult]:
        return [r for r in self.results if r.status == status]

    @property
    def finished(self) -> list[JobResult]:
        return self.with_status(FINISHED)

    @property
    def failed(self) -> list[JobResult]:
        return self.with_status(FAILED)

    @property
    def elsewhere(self) -> list[JobResult]:
        return self.with_status(ELSEWHERE)


@dataclass
class GridSession:
    grid_file: str
    plan: GridPlan
    results_dir: Path
    tracker: Any  # tracking.store.Tracker
    states: list[ConfigState]
    retry_failed: bool = False

    @classmethod
    def open(
        cls,
        grid_file: str,
        overrides: list[str],
        only: list[str],
        results_dir: Path,
        *,
        retry_failed: bool = False,
        record: bool = False,
    ) -> GridSession:
        """Plan the grid and read the state of each configuration; ``record``: write the plan
        record the tables read (RESULTS/grids/<name>.json) first."""
        from nirbench.harness.tracking.store import Tracker

        plan = load_grid(grid_file, overrides)  # a bad entry fails here, before any run
        plan.configs = select_configs(plan.configs, only)
        results_dir = Path(results_dir).resolve()
        if record:
            write_plan_record(results_dir, plan, grid_file)
        tracker = Tracker(results_dir)
        return cls(
            grid_file,
            plan,
            results_dir,
            tracker,
            config_states(plan, tracker, results_dir),
            retry_failed,
        )

    # ------------------------------------------------------------------ the plan's states
    @property
    def name(self) -> str:
        return self.plan.name

    def count(self) -> dict[Status, int]:
        """How many configurations are in each state (every state listed, zeros included)."""
        return {s: sum(st.state == s for st in self.states) for s in CONFIG_STATES}

    @property
    def runnable(self) -> frozenset[Status]:
        return runnable_states(self.retry_failed)

    def to_run(self) -> list[ConfigState]:
        """The configurations this start runs or resumes, in the grid's order."""
        return [st for st in self.states if st.state in self.runnable]

    def not_run(self) -> list[ConfigState]:
        """The configurations this start skips: finished, running elsewhere, and FAILED ones
        unless ``retry_failed``, in the grid's order."""
        return [st for st in self.states if st.state not in self.runnable]

    def failed_before(self) -> list[ConfigState]:
        """FAILED configurations this start leaves alone (none with ``retry_failed``)."""
        return [] if self.retry_failed else [st for st in self.states if st.state == FAILED]

    # ------------------------------------------------------------------ the jobs
    @staticmethod
    def jobs(states: Iterable[ConfigState]) -> list[Job]:
        return [
            Job(st.cfg.to_yaml(), st.cfg.config_hash, st.label, st.cfg.train.epochs)
            for st in states
        ]

    def settings(self) -> JobSettings:
        from nirbench.harness.train.runner import command_line

        return JobSettings(
            results_dir=str(self.results_dir),
            tracking_uri=self.tracker.uri,
            grid=self.plan.name,
            command=command_line(),
            imports=default_imports(),
        )

    def progress(self, jobs: list[Job], parallel: int) -> GridProgress:
        """The grid-level display; the configurations not run count as done already."""
        return GridProgress(jobs, parallel=parallel, already_done=len(self.states) - len(jobs))

    def record_crash(self, job: Job, cause: str) -> None:
        """A worker died mid-run: its MLflow run would stay RUNNING; record why it stopped."""
        run = self.tracker.find(job.config_hash, ("RUNNING",))
        if run is not None:
            self.tracker.fail_with(run.run_id, cause)

    def run(self, executor: Any, jobs: list[Job]) -> SessionOutcome:
        """Run ``jobs`` on a pool executor (local, Ray, inline) with the progress display; a
        scheduler's SIGTERM stops the grid as Ctrl-C does (the runs end KILLED, resumable)."""
        started = time.perf_counter()
        progress = self.progress(jobs, executor.parallel)
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            results = executor.run(jobs, self.settings(), progress, on_crash=self.record_crash)
        finally:
            signal.signal(signal.SIGTERM, previous)
        return SessionOutcome(results, time.perf_counter() - started)

    def exit_status(self, outcome: SessionOutcome | None = None) -> int:
        """1 when a configuration failed in this start or FAILED earlier and was left alone."""
        failed_now = outcome.failed if outcome is not None else []
        return 1 if failed_now or self.failed_before() else 0

    def label_of(self, config_hash: str) -> str:
        return next(st.label for st in self.states if st.cfg.config_hash == config_hash)


def _say(line: str) -> None:
    print(line, flush=True)


def prepare_pretrained(
    states: Iterable[ConfigState], results_dir: Path, echo: Callable[[str], None] = _say
) -> None:
    """Build the embedded pretraining weights the runs of ``states`` start from before any
    worker starts (cached: a no-op after the first time), so that no run waits on another for
    them; ``echo`` says so when it took a while."""
    from nirbench.harness.train.runner import pretrained_weights

    for cfg in {
        st.cfg.backbone.weights: st.cfg for st in states if st.cfg.backbone.weights is not None
    }.values():
        started = time.perf_counter()
        path = pretrained_weights(cfg, results_dir)
        spent = time.perf_counter() - started
        if spent > 1:
            echo(f"pretrained small_cnn (width {cfg.backbone.width:g}) in {spent:.0f}s: {path}")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


__all__ = ["GridSession", "SessionOutcome", "prepare_pretrained"]
