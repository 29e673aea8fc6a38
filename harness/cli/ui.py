"""`nirbench ui`: the MLflow UI command for this store.
Parsing and printing only; the work is in the library."""

from __future__ import annotations

import argparse
import os

from nirbench.harness.cli.common import results_dir_arg


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ui", parents=[common], help="print (or start) the MLflow UI command")
    p.add_argument(
        "--start", action="store_true", help="start the UI instead of printing the command"
    )
    p.set_defaults(func=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    from nirbench.dashboards.mlflow_ui import ui_command

    command = ui_command(results_dir_arg(args.results_dir))
    if not args.start:
        print(" ".join(command))
        return 0
    os.execvp(command[0], command)
    return 0
