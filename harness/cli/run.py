"""`nirbench run`: train and evaluate one configuration.
Parsing and printing only; the work is in the library."""

from __future__ import annotations

import argparse
import json

from nirbench.harness.cli.common import progress_bars, results_dir_arg


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="train and evaluate one configuration",
        description="Train one configuration and log it to MLflow. Skips it when a "
        "FINISHED run with the same config hash exists; resumes it from "
        "its checkpoint when it was interrupted.",
    )
    p.add_argument("--config", default=None, help="run config YAML (default: the embedded default)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, repeatable: --set method.margin=0.2 --set regularizer=nir",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no per-batch progress bars (they are drawn only when stderr is a "
        "terminal; otherwise one log line per epoch)",
    )
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from nirbench.harness.config import load_config
    from nirbench.harness.train.runner import execute
    from nirbench.harness.tracking.store import Tracker

    cfg = load_config(args.config, args.overrides)
    results = results_dir_arg(args.results_dir)
    outcome = execute(cfg, Tracker(results), results, progress=progress_bars(args.no_progress))
    verb = "already finished" if outcome.status == "skipped" else "finished"
    print(f"run {outcome.run_id} {verb} (config {cfg.config_hash})")
    print(
        json.dumps(
            {k: round(v, 6) for k, v in outcome.metrics.items() if k.startswith("test/")},
            indent=None,
        )
    )
    return 0
