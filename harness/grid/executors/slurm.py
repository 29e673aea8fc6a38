"""Run a grid's configurations (or the workers of a search) as one Slurm job array, through
submitit, the library the field uses for this (powerful-benchmarker launched its experiment
groups with it).

    nirbench grid GRID.yaml --executor slurm --partition gpu --gpus-per-run 1 --cpus-per-run 8 \\
        --mem 32G --time 24:00:00 --results-dir /shared/results

One array, one task per configuration that is not finished. A task is a ``SlurmTask`` that runs
``job.run_job`` on a compute node against the shared results folder, so it skips, locks and
resumes exactly as a local worker does: the epoch checkpoint under ``results/runs/<hash>/`` and
the MLflow run are the state, nothing else.

Preemption and time limits: every task asks Slurm for ``USR2`` ``signal_delay_s`` seconds before
its time limit (``#SBATCH --signal=USR2@90``). submitit's handler then calls the task's
``checkpoint()``, which hands submitit the same task again (``DelayedSubmission``), requeues the
array task (``scontrol requeue``) and exits; the run is recorded KILLED and the requeued task
resumes it from its last epoch checkpoint in the same MLflow run. At most one epoch of work is
lost. submitit ignores ``SIGTERM`` on purpose (some clusters send it before ``USR2`` on
preemption), so a plain ``scancel`` ends a task with ``SIGKILL`` after ``KillWait``: its run stays
RUNNING in MLflow and the next submission resumes it. A timed-out task is requeued at most
``max_num_timeout`` (3) times; preemptions do not count.

Locks: a requeued task can start while its previous incarnation, or a dead node's lock on an NFS
share, still holds the configuration's lock. The task then waits (``lock_wait_s``) instead of
giving up, unless the holder is another live Slurm job or a process outside Slurm.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nirbench.harness.grid.executors.job import Job, JobResult, JobSettings, run_job
from nirbench.harness.grid.status import ELSEWHERE, FAILED, FINISHED

try:  # an extra: without it this module still imports and the CLI says what to install
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover
    Checkpointable = object  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

LOCK_WAIT_S = 300.0  # a dead holder's NFS lock is freed when its lease expires (about 90 s)
OUTSIDE_GRACE_S = 10.0  # a status probe holds a lock for microseconds; a real run for minutes
LOCK_POLL_S = 2.0
# Options of our own CLI that would collide with the same sbatch option given in --slurm-extra.
OWNED = {
    "partition": "--partition",
    "time": "--time",
    "cpus-per-task": "--cpus-per-run",
    "mem": "--mem",
    "gpus-per-node": "--gpus-per-run",
    "array": "--array-parallelism",
    "job-name": "(set from the grid name)",
    "output": "(set by submitit)",
    "error": "(set by submitit)",
    "signal": "(USR2, set by submitit)",
    "open-mode": "(set by submitit)",
}


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ImportError(
            "the Slurm executor needs submitit: pip install 'nirbench[cluster]' "
            "(or pip install submitit)"
        ) from None
    return submitit


# ============================================================================ options
def parse_time(value: str | int) -> int:
    """A Slurm time limit (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``,
    ``D-HH:MM:SS``) in whole minutes, rounded up: submitit needs minutes to tell a time-out from a
    preemption."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise ValueError(f"--time {value!r}: use a Slurm time such as 90, 24:00:00 or 2-00:00:00")
    days, a, b, c = (int(g) if g is not None else None for g in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        h, m, sec = a, b or 0, c or 0
    elif c is not None:  # HH:MM:SS
        h, m, sec = a, b, c
    else:  # MM[:SS]
        h, m, sec = 0, a, b or 0
    minutes = (days or 0) * 1440 + h * 60 + m + (1 if sec else 0)
    if minutes < 1:
        raise ValueError(f"--time {value!r} is under a minute")
    return minutes


def parse_extra(items: list[str]) -> dict[str, Any]:
    """``--slurm-extra KEY=VALUE`` (or a bare ``KEY`` for a flag such as ``exclusive``) as
    sbatch options; refuses the options the harness sets itself."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not key:
            raise ValueError(
                f"--slurm-extra {item!r} must look like KEY=VALUE (an sbatch option "
                f"without its dashes, e.g. account=myproj, qos=high)"
            )
        if key in OWNED:
            raise ValueError(f"--slurm-extra {key}: use {OWNED[key]} instead")
        out[key] = value if sep else True
    return out


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem: str | None = None  # as sbatch takes it: 32G, 4000M
    time_min: int = 24 * 60
    array_parallelism: int | None = None  # default: all tasks at once
    extra: dict[str, Any] = field(default_factory=dict)
    signal_delay_s: int = 90
    max_num_timeout: int = 3
    lock_wait_s: float = LOCK_WAIT_S

    def __post_init__(self) -> None:
        if self.cpus_per_run < 1:
            raise ValueError(f"--cpus-per-run must be at least 1 on Slurm, got {self.cpus_per_run}")
        if self.gpus_per_run < 0:
            raise ValueError(f"--gpus-per-run must be >= 0, got {self.gpus_per_run}")
        if self.array_parallelism is not None and self.array_parallelism < 1:
            raise ValueError(
                f"--array-parallelism must be at least 1, got {self.array_parallelism}"
            )


def _own_import_path() -> str:
    """This interpreter's import path entries outside its installation (a source checkout, a
    test folder), which the compute node's Python must see to import the same modules."""
    own = [
        os.path.abspath(p)
        for p in sys.path
        if p and not p.startswith((sys.prefix, sys.base_prefix)) and os.path.isdir(p)
    ]
    return os.pathsep.join(dict.fromkeys(own))


def job_name(name: str) -> str:
    return "nirbench-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:60]


def sbatch_parameters(options: SlurmOptions, name: str) -> dict[str, Any]:
    """The parameters of submitit's ``SlurmExecutor.update_parameters`` (sbatch names)."""
    # wckey None: submitit's default wckey "submitit" is refused where wckeys are enforced.
    params: dict[str, Any] = {
        "job_name": job_name(name),
        "time": options.time_min,
        "cpus_per_task": options.cpus_per_run,
        "signal_delay_s": options.signal_delay_s,
        "wckey": None,
    }
    if options.partition:
        params["partition"] = options.partition
    if options.gpus_per_run:
        params["gpus_per_node"] = options.gpus_per_run
    if options.mem:
        params["mem"] = options.mem
    if options.array_parallelism:
        params["array_parallelism"] = options.array_parallelism
    if options.extra:
        params["additional_parameters"] = dict(options.extra)
    path = _own_import_path()
    if path:
        params["setup"] = [f"export PYTHONPATH={shlex.quote(path)}${{PYTHONPATH:+:$PYTHONPATH}}"]
    return params


def submitit_command(folder: Path) -> str:
    """What the sbatch script runs: the same command string submitit's SlurmExecutor builds."""
    return " ".join(
        [shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))]
    )


def render_sbatch(options: SlurmOptions, name: str, folder: Path, tasks: int) -> str:
    """The sbatch script an array of ``tasks`` tasks would be submitted with, rendered by
    submitit itself (needs no Slurm on this machine)."""
    _submitit()
    from submitit.slurm.slurm import _make_sbatch_string  # submitit's own renderer

    folder = Path(folder).expanduser().absolute()
    return _make_sbatch_string(
        command=submitit_command(folder),
        folder=folder,
        map_count=max(1, tasks),
        **sbatch_parameters(options, name),
    )


# ============================================================================ the task
_HOLDER_JOB = re.compile(r"\(slurm job ([0-9_]+)\)")


def this_slurm_job() -> str | None:
    """The array task id (``123_4``) or job id of this process's Slurm job, if any."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return os.environ.get("SLURM_JOB_ID")


def slurm_job_live(job_id: str) -> bool | None:
    """Whether Slurm still runs (or queues) ``job_id``; None when squeue cannot tell."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return False if "Invalid job id" in out.stderr else None
    from nirbench.harness.grid.executors.slurm_status import LIVE

    return any(s.strip() in LIVE for s in out.stdout.splitlines())


def _task_logging() -> None:
    """Per-epoch lines in the task's log (``<task>_0_log.err``), without the libraries' chatter."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("alembic", "mlflow", "faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class SlurmTask(Checkpointable):
    """One array task: run a grid configuration, waiting for its lock when the holder is this
    task's own previous incarnation or a dead Slurm job. A FAILED run fails the task (Slurm and
    ``sacct`` show FAILED); a configuration trained by another live job ends the task quietly.

    Checkpointable for submitit: on preemption or time-out it is resubmitted as it is, and the
    runner resumes the configuration from its epoch checkpoint in the same MLflow run."""

    def __init__(self, settings: JobSettings, lock_wait_s: float = LOCK_WAIT_S) -> None:
        self.settings = settings
        self.lock_wait_s = lock_wait_s

    def __call__(self, job: Job) -> JobResult:
        _task_logging()
        me = this_slurm_job()
        print(f"nirbench slurm task {me}: {job.label} (config {job.config_hash})", flush=True)
        started = time.monotonic()
        outside_since: float | None = None
        while True:
            result = run_job(job, self.settings)
            if result.status != ELSEWHERE:
                break
            match = _HOLDER_JOB.search(result.error)
            holder = match.group(1) if match else None
            waited = time.monotonic() - started
            if holder is None:  # a process outside Slurm: a short grace for a status probe
                outside_since = outside_since if outside_since is not None else time.monotonic()
                if time.monotonic() - outside_since >= OUTSIDE_GRACE_S:
                    break
            elif holder != me and slurm_job_live(holder) is not False:
                break  # another live job trains it (a duplicate submission): leave it alone
            if waited >= self.lock_wait_s:
                raise RuntimeError(
                    f"{job.label}: its lock is still held after {waited:.0f} s by "
                    f"a Slurm job that has ended ({result.error}); a lock on an "
                    f"NFS share is freed when the dead node's lease expires: "
                    f"submit the grid again later"
                )
            log.info("waiting for the lock of %s (%s)", job.label, result.error)
            time.sleep(LOCK_POLL_S)
        print(
            f"nirbench slurm task {me}: {result.status}"
            f"{': ' + result.error if result.error else ''}",
            flush=True,
        )
        if result.status == FAILED:
            raise RuntimeError(f"{job.label} FAILED: {result.error}")
        return result

    def checkpoint(self, job: Job) -> Any:
        """Called by submitit on USR2 (preemption or the time limit): the state is already on the
        shared disk (epoch checkpoint + MLflow run), so resubmit the same task."""
        print(
            f"nirbench slurm task {this_slurm_job()}: preempted or timed out; requeued, "
            f"{job.label} resumes from its last epoch checkpoint",
            flush=True,
        )
        return _submitit().helpers.DelayedSubmission(self, job)


class SearchTask(Checkpointable):
    """One worker of a shared Optuna study on a compute node. Worker 0 also runs the final seeds
    once the study is complete (the others stop after the search, so no final run is trained
    twice). Checkpointable: a preempted worker is requeued; its interrupted trial is failed and
    re-queued with the same parameters by whichever worker looks next (harness/search.py)."""

    def __init__(
        self, tc: Any, results_dir: str, plots: bool = True, imports: tuple[str, ...] = ()
    ) -> None:
        self.tc, self.results_dir, self.plots, self.imports = tc, results_dir, plots, imports

    def __call__(self, worker: int) -> dict[str, Any]:
        from nirbench.harness.grid.executors.job import import_extensions
        from nirbench.harness.search.study import run_search

        _task_logging()
        import_extensions(self.imports)  # modules registering the datasets / methods it names
        tc = self.tc if worker == 0 else dataclasses.replace(self.tc, final_seeds=0)
        print(f"nirbench tune worker {worker} of study {tc.study}", flush=True)
        outcome = run_search(
            tc,
            Path(self.results_dir),
            progress=False,
            echo=lambda line: print(line, flush=True),
            plots=self.plots,
        )
        return {
            "worker": worker,
            "study": outcome.study,
            "ran": len(outcome.ran),
            "complete": outcome.n_complete,
            "pruned": outcome.n_pruned,
            "failed": outcome.n_failed,
            "best_trial": outcome.best_trial,
            "best_value": outcome.best_value,
            "best_params": dict(outcome.best_params),
            "final": [dataclasses.asdict(f) for f in outcome.final],
        }

    def checkpoint(self, worker: int) -> Any:
        print(f"nirbench tune worker {worker}: preempted or timed out; requeued", flush=True)
        return _submitit().helpers.DelayedSubmission(self, worker)


# ============================================================================ submission
@dataclass(frozen=True)
class Submission:
    job_id: str  # the array's job id
    tasks: list[tuple[str, str, str]]  # (array task id, config hash or worker, label)
    sbatch: Path
    folder: Path


def slurm_folder(results_dir: Path, kind: str, name: str) -> Path:
    """Where submitit keeps a grid's (or study's) sbatch scripts, pickles and logs: under the
    shared results folder, which every node sees."""
    return Path(results_dir).resolve() / "slurm" / kind / re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def manifest_path(folder: Path) -> Path:
    return folder / "submissions.jsonl"


class SlurmExecutor:
    name = "slurm"

    def __init__(self, options: SlurmOptions, folder: Path, name: str) -> None:
        self.options = options
        self.folder = Path(folder).expanduser().absolute()
        self.grid = name
        self.parallel = options.array_parallelism or 0

    def describe(self) -> str:
        o = self.options
        where = f"partition {o.partition}" if o.partition else "the default partition"
        return (
            f"slurm executor: one job array on {where}; each task asks for "
            f"{o.cpus_per_run} CPU(s), {o.gpus_per_run} GPU(s)"
            f"{', ' + o.mem if o.mem else ''} and {o.time_min} min"
            + (f", at most {o.array_parallelism} at once" if o.array_parallelism else "")
        )

    def sbatch_script(self, tasks: int) -> str:
        return render_sbatch(self.options, self.grid, self.folder, tasks)

    def _executor(self):
        submitit = _submitit()
        self.folder.mkdir(parents=True, exist_ok=True)
        ex = submitit.SlurmExecutor(
            folder=self.folder, max_num_timeout=self.options.max_num_timeout
        )
        ex.update_parameters(**sbatch_parameters(self.options, self.grid))
        return ex

    def submit(self, jobs: list[Job], settings: JobSettings) -> Submission:
        """Submit one array with one task per job; record which task runs which config."""
        settings = dataclasses.replace(settings, threads=self.options.cpus_per_run)
        task = SlurmTask(settings, lock_wait_s=self.options.lock_wait_s)
        submitted = self._executor().map_array(task, jobs)
        return self._record(submitted, [(j.config_hash, j.label) for j in jobs])

    def submit_calls(self, fn: Any, args: list[Any], labels: list[tuple[str, str]]) -> Submission:
        """Submit one array running ``fn(arg)`` per argument (the workers of a search)."""
        return self._record(self._executor().map_array(fn, args), labels)

    def _record(self, submitted: list[Any], labels: list[tuple[str, str]]) -> Submission:
        array_id = submitted[0].job_id.split("_")[0]
        tasks = [(j.job_id, key, label) for j, (key, label) in zip(submitted, labels)]
        sbatch = submitted[0].paths.submission_file
        with manifest_path(self.folder).open("a") as f:
            f.write(
                json.dumps(
                    {
                        "job": array_id,
                        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "sbatch": str(sbatch),
                        "tasks": [{"task": t, "key": k, "label": lbl} for t, k, lbl in tasks],
                    }
                )
                + "\n"
            )
        return Submission(array_id, tasks, sbatch, self.folder)


def read_manifest(folder: Path) -> list[dict[str, Any]]:
    path = manifest_path(folder)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a full disk: the others still count
            continue
    return out


def latest_tasks(folder: Path) -> dict[str, str]:
    """config hash (or worker key) -> its most recently submitted array task id."""
    latest: dict[str, str] = {}
    for entry in read_manifest(folder):
        for task in entry.get("tasks", []):
            latest[task["key"]] = task["task"]
    return latest


def task_result(folder: Path, task_id: str) -> tuple[str, Any] | None:
    """submitit's result pickle of an array task: ("success", JobResult) or ("error", text)."""
    path = Path(folder) / f"{task_id}_0_result.pkl"
    if not path.is_file():
        return None
    import pickle

    try:
        with path.open("rb") as f:
            return pickle.load(f)
    except Exception as err:  # a foreign or torn pickle: say so instead of crashing the status
        return ("error", f"unreadable result {path}: {err}")


# ============================================================================ following a grid
@dataclass(frozen=True)
class SlurmView:
    """Where each configuration of a grid stands in Slurm: its latest submitted task and what
    squeue / sacct say about it (MLflow stays the authority on whether it is done)."""

    folder: Path  # the grid's submissions and logs
    latest: dict[str, str]  # config hash -> its most recently submitted array task id
    task_of: dict[str, Any]  # config hash -> its latest task's slurm_status.TaskState, or None
    notes: list[str]  # what could not be asked (no squeue here, accounting disabled)

    def live(self, config_hash: str) -> bool:
        """Whether the configuration's latest task may still run (queued, running, requeued):
        it is not submitted again."""
        task = self.task_of.get(config_hash)
        return bool(task and task.live)


def slurm_view(results_dir: Path, grid: str, config_hashes: list[str]) -> SlurmView:
    from nirbench.harness.grid.executors.slurm_status import query

    folder = slurm_folder(results_dir, "grid", grid)
    latest = latest_tasks(folder)
    arrays = sorted({t.split("_")[0] for t in latest.values()}, key=int)
    slurm, notes = query(arrays) if arrays else ({}, [])
    return SlurmView(
        folder, latest, {h: slurm.get(latest.get(h, "")) for h in config_hashes}, notes
    )


def follow(
    sub: Submission, jobs: list[Job], tracker: Any, folder: Path, progress: Any, *, poll_s: float
) -> list[JobResult]:
    """Wait for every task of ``sub`` to leave the queue, telling ``progress`` (a GridProgress)
    of each start, requeue and end; each task's result comes from submitit's result file, else
    from MLflow (a cancelled or killed task)."""
    from nirbench.harness.grid.executors.slurm_status import query

    by_task = {task: job for (task, _, _), job in zip(sub.tasks, jobs)}
    running: set[str] = set()
    seen: set[str] = set()
    started = time.monotonic()
    results = []
    while by_task:
        states, _ = query([sub.job_id])
        for task, job in list(by_task.items()):
            st = states.get(task)
            if st is not None:
                seen.add(task)
            if st is not None and st.live:
                if st.state == "RUNNING" and task not in running:
                    running.add(task)
                    progress.started(job, f"{task} on {st.node}")
                elif st.state == "PENDING" and task in running:  # requeued (preempted, time-out)
                    running.discard(task)
                    print(
                        f"{job.label}: task {task} requeued ({st.reason}); it resumes from "
                        f"its last epoch checkpoint",
                        flush=True,
                    )
                continue
            if st is None and task not in seen and time.monotonic() - started < 60:
                continue  # not visible to squeue yet
            result = _ended_task_result(folder, task, job, st, tracker)
            progress.finished(job, result)
            results.append(result)
            del by_task[task]
        if by_task:
            time.sleep(poll_s)
    return results


def _ended_task_result(folder: Path, task: str, job: Job, st: Any, tracker: Any) -> JobResult:
    outcome = task_result(folder, task)
    if outcome is not None and outcome[0] == "success":
        return outcome[1]
    done = tracker.find(job.config_hash, ("FINISHED",))
    if done is not None:
        return JobResult(job.config_hash, FINISHED, done.run_id)
    if outcome is not None:
        last = [ln for ln in str(outcome[1]).strip().splitlines() if ln.strip()]
        return JobResult(
            job.config_hash, FAILED, error=f"task {task}: {last[-1] if last else 'error'}"
        )
    how = st.state if st is not None else "no longer known to Slurm"
    return JobResult(
        job.config_hash,
        FAILED,
        error=f"task {task} ended {how} before its run finished; the next submission resumes it",
    )


def ended_tasks(
    sub: Submission, folder: Path, *, poll_s: float
) -> Iterator[tuple[str, tuple[str, Any] | None, Any]]:
    """Wait for the tasks of ``sub`` (the workers of a search) to leave the queue; yield each as
    it ends: (task id, its ``task_result`` or None, its last slurm_status.TaskState or None)."""
    from nirbench.harness.grid.executors.slurm_status import query

    left = {task for task, _, _ in sub.tasks}
    started = time.monotonic()
    while left:
        states, _ = query([sub.job_id])
        for task in sorted(left):
            st = states.get(task)
            if st is not None and st.live:
                continue
            if st is None and time.monotonic() - started < 60:
                continue  # not visible to squeue yet
            yield task, task_result(folder, task), st
            left.discard(task)
        if left:
            time.sleep(poll_s)


__all__ = [
    "SearchTask",
    "SlurmExecutor",
    "SlurmOptions",
    "SlurmTask",
    "SlurmView",
    "Submission",
    "ended_tasks",
    "follow",
    "parse_time",
    "parse_extra",
    "render_sbatch",
    "slurm_folder",
    "slurm_view",
    "latest_tasks",
    "read_manifest",
    "task_result",
]
