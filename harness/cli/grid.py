"""`nirbench grid`: expand and validate a grid, say what is finished, failed, running elsewhere
or resumable, then run the rest on an executor with a grid-level progress display.

Policy (what a start of the grid does with each configuration):
- FINISHED in MLflow: skipped.
- held by a live process (its lock file): skipped, reported "running elsewhere".
- interrupted / killed (RUNNING with no live holder, KILLED): resumed from its last checkpoint in
  the same MLflow run, by default. A SIGKILLed run is RUNNING and unlocked: it resumes too.
- FAILED (an exception, a non-finite loss, out of memory, its worker died): reported and NOT rerun,
  so a deterministic crash does not burn hours at every start; ``--retry-failed`` resumes them.
The exit status is 1 when any configuration of the grid is FAILED at the end (now or earlier).
"""

from __future__ import annotations

import argparse
import logging
import sys

from nirbench.harness.cli.common import results_dir_arg

WORKERS_HELP = (
    "how many runs at once on this machine (local executor): an integer or auto "
    "(default): one per GPU x --runs-per-gpu on a GPU machine, 2 on a CPU with 2+ "
    "cores (measured on 2 cores: 16%% less wall time than 1), each with cores / "
    "workers torch threads"
)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "grid",
        parents=[common],
        help="run a grid of configurations (in parallel, resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Expand methods x {none, nir} x datasets x seeds from GRID.yaml, validate "
        "every entry before anything starts, skip finished configurations, resume "
        "interrupted ones in their MLflow run, and run the rest on an executor.\n\n"
        + (__doc__ or "").split("\n\n", 1)[1],
    )
    p.add_argument("grid_file", help="grid YAML, e.g. harness/configs/grids/default.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override applied to every run of the grid",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run a slice of the grid, repeatable: keys dataset, method, regularizer, "
        "seed; values comma-separated (--only seed=0 --only method=proxy_anchor,"
        "proxy_nca): a first look, or one shard per machine",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the configurations: finished, failed, running elsewhere, resumable "
        "or would run; run nothing",
    )
    p.add_argument(
        "--prepare-only",
        action="store_true",
        help="build what the grid's runs start from (the embedded pretraining "
        "weights, cached under RESULTS/cache/pretrained/; about 1 min on 2 cores, "
        "the stand-in for downloading ImageNet weights) and exit: ./run_all.sh "
        "does this in its set-up, before it times the main job",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="also rerun FAILED configurations (resumed from their last checkpoint)",
    )
    p.add_argument(
        "--executor",
        choices=("local", "ray", "slurm", "inline"),
        default="local",
        help="local: worker processes on this machine (default); ray: one Ray task "
        "per configuration on a Ray cluster; slurm: one Slurm job array with a "
        "task per configuration not yet finished, submitted through submitit "
        "(--dry-run prints its sbatch script); inline: one by one in this "
        "process (debugging)",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="print every configuration's MLflow state next to its latest Slurm task "
        "(squeue/sacct) and exit: what a Slurm grid is doing",
    )
    p.add_argument("--workers", default="auto", type=_workers, metavar="N|auto", help=WORKERS_HELP)
    p.add_argument(
        "--runs-per-gpu",
        type=int,
        default=1,
        metavar="K",
        help="local executor on a GPU machine: K runs share each GPU (default 1)",
    )
    p.add_argument(
        "--address",
        default="auto",
        help="ray executor: auto (this machine's cluster), HOST:PORT, "
        "ray://HOST:10001, or local (a private cluster for this grid)",
    )
    p.add_argument(
        "--gpus-per-run",
        type=float,
        default=None,
        metavar="G",
        help="ray executor: GPUs per run (default 1 if the cluster has GPUs, else 0; "
        "0.5 packs two runs per GPU); slurm: GPUs per task (default 0)",
    )
    p.add_argument(
        "--cpus-per-run",
        type=float,
        default=1.0,
        metavar="C",
        help="ray and slurm executors: CPUs per run (default 1; also its torch threads)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="accepted for compatibility; runs in workers never draw per-epoch bars",
    )
    from nirbench.harness.cli.slurm import add_slurm_arguments

    add_slurm_arguments(p, resources=False)
    p.set_defaults(func=cmd_grid)


def _workers(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers must be an integer or auto, got {value!r}")


def make_executor(args: argparse.Namespace):
    log_level = logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    if args.executor == "inline":
        from nirbench.harness.grid.executors.inline import InlineExecutor

        return InlineExecutor()
    if args.executor == "ray":
        from nirbench.harness.grid.executors.ray_executor import RayExecutor

        return RayExecutor(
            args.address, gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run
        )
    from nirbench.harness.grid.executors.local import LocalExecutor

    # Workers log warnings only: N runs' per-epoch INFO lines interleaved would bury the progress.
    return LocalExecutor(
        args.workers, runs_per_gpu=args.runs_per_gpu, log_level=max(log_level, logging.WARNING)
    )


def cmd_grid(args: argparse.Namespace) -> int:
    from nirbench.harness.grid.plan import longest_first
    from nirbench.harness.grid.progress import format_duration
    from nirbench.harness.grid.session import GridSession, SessionOutcome, prepare_pretrained
    from nirbench.harness.grid.status import ELSEWHERE, FAILED, FINISHED, NEW, RESUMABLE

    if args.executor == "slurm" or args.status:  # submit-and-return, or the status view
        from nirbench.harness.cli.slurm import cmd_grid_slurm

        return cmd_grid_slurm(args)
    session = GridSession.open(
        args.grid_file,
        args.overrides,
        args.only,
        results_dir_arg(args.results_dir),
        retry_failed=args.retry_failed,
        record=not args.dry_run,
    )
    for reason in session.plan.skipped:
        print(f"not in grid (incompatible): {reason}")
    states, count = session.states, session.count()
    if args.prepare_only:
        prepare_pretrained(session.to_run(), session.results_dir)
        return 0

    if args.dry_run:
        for st in states:
            cfg = st.cfg
            state = str(st.state)
            if st.state == FAILED:
                state += (
                    " (rerun by --retry-failed)"
                    if args.retry_failed
                    else " (skipped; --retry-failed reruns it)"
                )
            detail = f": {st.detail}" if st.detail else ""
            print(
                f"{cfg.config_hash}  {cfg.dataset.name:11s} {cfg.method.name:18s} "
                f"{cfg.regularizer_name:5s} seed={cfg.seed}  {state}{detail}"
            )
        print(
            f"{len(states)} configurations: {count[FINISHED]} finished, {count[FAILED]} failed, "
            f"{count[ELSEWHERE]} running elsewhere, {count[RESUMABLE]} resumable, "
            f"{count[NEW]} new; {len(session.to_run())} would run"
        )
        return 0

    for i, st in enumerate(states, 1):
        if st.state == FINISHED:
            print(f"[{i}/{len(states)}] {st.label}: already finished, skipped")
        elif st.state == ELSEWHERE:
            print(f"[{i}/{len(states)}] {st.label}: running elsewhere ({st.detail}), skipped")
        elif st.state == FAILED and not args.retry_failed:
            print(
                f"[{i}/{len(states)}] {st.label}: FAILED earlier, not rerun (--retry-failed "
                f"reruns it): {st.detail}"
            )
    todo = longest_first(session.to_run())
    jobs = session.jobs(todo)
    if jobs and args.executor in ("local", "inline"):
        prepare_pretrained(todo, session.results_dir)  # once, here, not in every worker at once
    outcome = SessionOutcome([])
    if jobs:
        executor = make_executor(args)
        print(
            f"grid {session.name!r}: {len(jobs)} to run ({count[RESUMABLE]} resumable"
            f"{', ' + str(count[FAILED]) + ' failed to retry' if args.retry_failed else ''}) on "
            f"{executor.describe()}",
            flush=True,
        )
        outcome = session.run(executor, jobs)
    wall = outcome.wall_s

    trained = outcome.finished
    train_total = sum(r.train_s for r in trained)
    summary = (
        f"grid {session.name!r}: {len(states)} configurations; ran {len(jobs)} in "
        f"{format_duration(wall)}: {len(trained)} finished, {len(outcome.failed)} failed, "
        f"{len(outcome.elsewhere) + count[ELSEWHERE]} running elsewhere"
    )
    if trained and wall > 0:
        summary += (
            f"; runs' own training time {format_duration(train_total)} "
            f"(sum of time/train_total_s), grid wall time / that = "
            f"{wall / train_total:.2f}"
        )
    print(summary)
    if trained and wall > 0 and jobs:
        print(overhead_line(outcome.results, wall, executor.parallel))
    for r in outcome.failed:
        print(f"  failed: {session.label_of(r.config_hash)}: {r.error}", file=sys.stderr)
    failed_before = session.failed_before()
    if failed_before:
        print(
            f"  {len(failed_before)} configuration(s) FAILED earlier and were not rerun: "
            f"nirbench grid {args.grid_file} --retry-failed",
            file=sys.stderr,
        )
    return session.exit_status(outcome)


def overhead_line(results: list, wall: float, workers: int) -> str:
    """Where the workers' time went: inside the runs' epochs, in each run's set-up and
    book-keeping (data, model, MLflow, checkpoint artifact), or idle (waiting for the last
    runs at the end of the grid)."""
    from nirbench.harness.grid.progress import format_duration
    from nirbench.harness.grid.status import FINISHED

    trained = [r for r in results if r.status == FINISHED]
    epochs = sum(r.train_s for r in trained)
    per_run = sum(max(0.0, r.seconds - r.train_s) for r in trained)
    capacity = workers * wall
    idle = max(0.0, capacity - sum(r.seconds for r in results))
    return (
        f"worker time {format_duration(capacity)} ({workers} x wall): epochs "
        f"{100 * epochs / capacity:.1f}%, per-run set-up and tracking "
        f"{100 * per_run / capacity:.1f}% ({per_run / max(1, len(trained)):.1f}s a run), idle "
        f"{100 * idle / capacity:.1f}% (the grid's tail)"
    )


__all__ = ["register", "cmd_grid", "make_executor"]
