"""`nirbench grid --executor slurm`, `nirbench grid --status` and `nirbench tune --executor slurm`:
parse, call the grid session (harness/grid/session.py, shared with the local and Ray executors)
and harness/grid/executors/slurm.py, print.

A grid goes to Slurm as one job array with one task per configuration that is neither finished,
nor FAILED (unless --retry-failed), nor running or queued already (its lock, or a live task of
an earlier submission). The command returns once the array is queued; --wait follows it to the
end like the other executors; --status joins MLflow's state of every configuration with its
latest task in squeue/sacct.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

POLL_S = 5.0  # how often --wait asks squeue


def add_slurm_arguments(p: argparse.ArgumentParser, *, resources: bool) -> None:
    """The Slurm options of a subcommand (``resources``: also --gpus-per-run / --cpus-per-run,
    which the grid command already has for Ray)."""
    g = p.add_argument_group(
        "Slurm (--executor slurm; needs submitit: pip install 'nirbench[cluster]')"
    )
    g.add_argument(
        "--partition",
        default=None,
        metavar="P",
        help="Slurm partition of the array (default: the cluster's default)",
    )
    if resources:
        g.add_argument(
            "--gpus-per-run",
            type=float,
            default=None,
            metavar="G",
            help="GPUs per task (default 0)",
        )
        g.add_argument(
            "--cpus-per-run",
            type=float,
            default=1.0,
            metavar="C",
            help="CPUs per task, also its torch threads (default 1)",
        )
    g.add_argument(
        "--mem",
        default=None,
        metavar="SIZE",
        help="memory per task as sbatch takes it (32G, 4000M; default: the partition's)",
    )
    g.add_argument(
        "--time",
        default="24:00:00",
        metavar="LIMIT",
        help="time limit per task (Slurm format: 90, 24:00:00, 2-00:00:00; default "
        "24:00:00). 90 s before it, the task is checkpointed and requeued "
        "(at most 3 time-outs per task): a grid's run resumes from its last "
        "epoch, a search's interrupted trial is retried",
    )
    g.add_argument(
        "--array-parallelism",
        type=int,
        default=None,
        metavar="N",
        help="at most N tasks of the array at once (sbatch --array=...%%N; default: "
        "all), to leave GPUs to others",
    )
    g.add_argument(
        "--slurm-extra",
        action="append",
        default=[],
        metavar="KEY=V",
        help="any other sbatch option, repeatable: --slurm-extra account=myproj "
        "--slurm-extra qos=high --slurm-extra constraint=a100",
    )
    g.add_argument(
        "--wait",
        action="store_true",
        help="stay until every task of the array has ended, printing each run's "
        "progress (default: return once the array is queued; follow it with "
        "--status)",
    )


def slurm_options(args: argparse.Namespace):
    from nirbench.harness.grid.executors.slurm import SlurmOptions, parse_extra, parse_time

    gpus = args.gpus_per_run or 0
    if gpus != int(gpus):
        raise ValueError(f"--gpus-per-run {gpus:g}: Slurm allocates whole GPUs per task")
    return SlurmOptions(
        partition=args.partition,
        gpus_per_run=int(gpus),
        cpus_per_run=max(1, math.ceil(args.cpus_per_run or 1)),
        mem=args.mem,
        time_min=parse_time(args.time),
        array_parallelism=args.array_parallelism,
        extra=parse_extra(args.slurm_extra),
    )


# ============================================================================ grid
def cmd_grid_slurm(args: argparse.Namespace) -> int:
    from nirbench.harness.cli.common import results_dir_arg
    from nirbench.harness.grid.executors.slurm import SlurmExecutor, follow, slurm_view
    from nirbench.harness.grid.session import GridSession, SessionOutcome
    from nirbench.harness.grid.status import ELSEWHERE, FAILED, FINISHED, NEW, RESUMABLE

    session = GridSession.open(
        args.grid_file,
        args.overrides,
        args.only,
        results_dir_arg(args.results_dir),
        retry_failed=args.retry_failed,
    )
    for reason in session.plan.skipped:
        print(f"not in grid (incompatible): {reason}")
    states, results = session.states, session.results_dir
    view = slurm_view(results, session.name, [st.cfg.config_hash for st in states])
    folder, task_of, latest = view.folder, view.task_of, view.latest

    if args.status:
        return print_status(states, task_of, latest, view.notes, folder)

    queued = [st for st in session.to_run() if view.live(st.cfg.config_hash)]
    todo = [st for st in session.to_run() if st not in queued]
    executor = SlurmExecutor(slurm_options(args), folder, session.name)
    count = session.count()
    if args.dry_run:
        print_states(states, task_of, latest)
        print(
            f"{len(states)} configurations: {count[FINISHED]} finished, {count[FAILED]} failed "
            f"({'retried' if args.retry_failed else 'not rerun; --retry-failed reruns them'}), "
            f"{count[ELSEWHERE]} running elsewhere, {len(queued)} queued in Slurm, "
            f"{count[RESUMABLE]} resumable, {count[NEW]} new; would submit {len(todo)} "
            f"task(s) as one array"
        )
        if todo:
            print(
                f"--- sbatch script ({executor.folder}/<array>_submission.sh), rendered by "
                f"submitit:"
            )
            print(executor.sbatch_script(len(todo)))
        return 0

    for st in states:
        if st.state == FINISHED:
            print(f"{st.label}: already finished, skipped")
        elif st.state == ELSEWHERE:
            print(f"{st.label}: running elsewhere ({st.detail}), skipped")
        elif st.state == FAILED and not args.retry_failed:
            print(f"{st.label}: FAILED earlier, not rerun (--retry-failed reruns it): {st.detail}")
    for st in queued:
        print(
            f"{st.label}: already queued in Slurm as "
            f"{task_of[st.cfg.config_hash].describe()}, not submitted again"
        )
    if not todo:
        print(
            f"grid {session.name!r}: nothing to submit ({count[FINISHED]} finished, "
            f"{len(queued)} queued in Slurm, {count[ELSEWHERE]} running elsewhere, "
            f"{len(session.failed_before())} failed)"
        )
        return session.exit_status()

    jobs = session.jobs(todo)
    print(
        f"grid {session.name!r}: submitting {len(jobs)} configuration(s) "
        f"({sum(st.state == RESUMABLE for st in todo)} resumable) on {executor.describe()}",
        flush=True,
    )
    sub = executor.submit(jobs, session.settings())
    print(f"submitted job array {sub.job_id} ({len(jobs)} tasks); sbatch script {sub.sbatch}")
    for task, key, label in sub.tasks:
        print(f"  {task}  {label}  (config {key})")
    print(
        f"follow: nirbench grid {args.grid_file} --status"
        + (f" --results-dir {results}" if args.results_dir else "")
        + f"   logs: {folder}/<task>_0_log.out/.err",
        flush=True,
    )
    if not args.wait:
        return session.exit_status()
    # Every task of the array counts as running at once; the configurations not submitted
    # (finished, elsewhere, queued already, failed before) as done.
    progress = session.progress(jobs, parallel=len(jobs))
    outcome = SessionOutcome(follow(sub, jobs, session.tracker, folder, progress, poll_s=POLL_S))
    print(
        f"grid {session.name!r}: job array {sub.job_id} ended: {len(outcome.finished)} "
        f"finished, {len(outcome.failed)} failed or interrupted, "
        f"{len(outcome.elsewhere)} running elsewhere"
    )
    for r in outcome.failed:
        print(f"  not finished: {session.label_of(r.config_hash)}: {r.error}", file=sys.stderr)
    return session.exit_status(outcome)


def print_states(states: list[Any], task_of: dict[str, Any], latest: dict[str, str]) -> None:
    for st in states:
        cfg = st.cfg
        task = task_of.get(cfg.config_hash)
        if task is not None:
            where = task.describe()
        elif cfg.config_hash in latest:
            where = f"{latest[cfg.config_hash]} not in the queue"
        else:
            where = "never submitted"
        detail = f" ({st.detail})" if st.detail else ""
        print(
            f"{cfg.config_hash}  {cfg.dataset.name:11s} {cfg.method.name:18s} "
            f"{cfg.regularizer_name:5s} seed={cfg.seed}  mlflow: {st.state}{detail}  "
            f"slurm: {where}"
        )


def print_status(
    states: list[Any],
    task_of: dict[str, Any],
    latest: dict[str, str],
    notes: list[str],
    folder: Path,
) -> int:
    from nirbench.harness.grid.executors.slurm_status import restarts
    from nirbench.harness.grid.status import FAILED

    # Only the controller knows the requeue count (scontrol), and only of tasks it still holds.
    task_of = {
        h: (
            dataclasses.replace(t, restarts=restarts(t.task))
            if t is not None and t.source == "squeue"
            else t
        )
        for h, t in task_of.items()
    }
    print_states(states, task_of, latest)
    by_state: dict[str, int] = {}
    for st in states:
        by_state[st.state] = by_state.get(st.state, 0) + 1
    tasks: dict[str, int] = {}
    for t in task_of.values():
        if t is not None:
            tasks[t.state] = tasks.get(t.state, 0) + 1
    print(
        f"{len(states)} configurations, mlflow: "
        + ", ".join(f"{n} {s}" for s, n in sorted(by_state.items()))
        + (
            "; slurm tasks: " + ", ".join(f"{n} {s}" for s, n in sorted(tasks.items()))
            if tasks
            else "; no task in Slurm's view"
        )
    )
    for note in notes:
        print(f"note: {note}")
    print(f"submissions and logs: {folder}/")
    return 1 if any(st.state == FAILED for st in states) else 0


# ============================================================================ tune
def cmd_tune_slurm(args: argparse.Namespace) -> int:
    from nirbench.harness.cli.common import results_dir_arg
    from nirbench.harness.grid.executors import default_imports
    from nirbench.harness.grid.executors.slurm import SearchTask, SlurmExecutor, slurm_folder
    from nirbench.harness.search.storage import (
        dashboard_command,
        display_location,
        is_url,
        storage_location,
    )
    from nirbench.harness.search.tune_file import load_tune_config

    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    tc = load_tune_config(
        args.config,
        args.overrides,
        arm=args.arm,
        n_trials=args.n_trials,
        study=args.study,
        storage=args.storage,
        final_seeds=args.final_seeds,
    )
    results = results_dir_arg(args.results_dir).resolve()
    location = storage_location(tc, results)
    if location.startswith("sqlite") or location.endswith((".db", ".sqlite")):
        raise ValueError(
            f"storage {location}: SQLite cannot be shared by parallel workers; use "
            f"the default journal file on the shared folder or postgresql://..."
        )
    if not is_url(location):
        location = str(Path(location).resolve())
        tc = dataclasses.replace(tc, storage=location)  # every node opens the same file
    folder = slurm_folder(results, "tune", tc.study)
    executor = SlurmExecutor(slurm_options(args), folder, f"tune-{tc.study}")
    print(
        f"study {tc.study} (arm {tc.arm}, {tc.base.dataset.name}, {tc.base.method.name}): "
        f"{tc.n_trials} trials shared by {args.workers} Slurm task(s); storage "
        f"{display_location(location)}"
        + (f"; worker 0 then trains {tc.final_seeds} final seed(s)" if tc.final_seeds else "")
    )
    if args.dry_run:
        print(f"--- sbatch script ({executor.folder}/<array>_submission.sh), rendered by submitit:")
        print(executor.sbatch_script(args.workers))
        return 0
    task = SearchTask(tc, str(results), plots=not args.no_plots, imports=default_imports())
    sub = executor.submit_calls(
        task,
        list(range(args.workers)),
        [(f"worker-{i}", f"{tc.study} worker {i}") for i in range(args.workers)],
    )
    print(f"submitted job array {sub.job_id} ({args.workers} tasks); sbatch script {sub.sbatch}")
    print(
        f"follow: squeue -r -j {sub.job_id}; logs {folder}/<task>_0_log.out; "
        f"dashboard: {dashboard_command(location)}",
        flush=True,
    )
    if not args.wait:
        return 0
    return wait_for_workers(sub, folder)


def wait_for_workers(sub: Any, folder: Path, poll_s: float | None = None) -> int:
    from nirbench.harness.grid.executors.slurm import ended_tasks

    status = 0
    for task, outcome, st in ended_tasks(sub, folder, poll_s=POLL_S if poll_s is None else poll_s):
        if outcome is not None and outcome[0] == "success":
            r = outcome[1]
            best = (
                f"best trial {r['best_trial']} ({r['best_value']:.4f})"
                if r["best_trial"] is not None
                else "no completed trial"
            )
            print(
                f"{task}: worker {r['worker']} ran {r['ran']} trial(s); study has "
                f"{r['complete']} complete, {r['pruned']} pruned, {r['failed']} failed; "
                f"{best}" + (f"; {len(r['final'])} final run(s)" if r["final"] else ""),
                flush=True,
            )
        else:
            status = 1
            why = (
                str(outcome[1]).strip().splitlines()[-1]
                if outcome
                else f"ended {st.state if st else 'unknown to Slurm'} without a result"
            )
            print(f"{task}: {why}", file=sys.stderr, flush=True)
    return status


__all__ = ["add_slurm_arguments", "cmd_grid_slurm", "cmd_tune_slurm"]
