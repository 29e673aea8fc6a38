"""What every subcommand shares: the results folder and the common options. It sits below every
subcommand module, so none of them imports another (no cycles)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def results_dir_arg(value: str | None) -> Path:
    return Path(value or os.environ.get("NIRBENCH_RESULTS") or "results")


def common_options() -> argparse.ArgumentParser:
    """The parent parser of every subcommand: --results-dir, --debug, --quiet, --offline."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--results-dir",
        default=None,
        help="where the MLflow store, caches and tables live (default: "
        "$NIRBENCH_RESULTS or ./results). MLFLOW_TRACKING_URI, when set, "
        "overrides the store.",
    )
    common.add_argument("--debug", action="store_true", help="show full tracebacks")
    common.add_argument("--quiet", action="store_true", help="only warnings and errors")
    common.add_argument(
        "--offline",
        action=_OfflineAction,
        help="never download (pretrained weights): a missing file is an error "
        "that says where to put it; the same as NIRBENCH_OFFLINE=1",
    )
    return common


class _OfflineAction(argparse.Action):
    """``--offline`` sets NIRBENCH_OFFLINE=1 when parsed: the weights code deep inside a run reads
    that, and the grid's worker processes and Slurm jobs inherit it (a Ray cluster's nodes need it
    in their own environment)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        os.environ["NIRBENCH_OFFLINE"] = "1"
        setattr(namespace, self.dest, True)


def progress_bars(no_progress: bool) -> bool:
    """Per-batch bars only on a terminal: redirected to a file (CI, nohup, 2>log) their carriage-
    return redraws are noise, and the per-epoch log line already says how the run goes."""
    return not no_progress and sys.stderr.isatty()
