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
    """The parent parser of every subcommand: --results-dir, --debug, --quiet."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--results-dir", default=None,
                        help="where the MLflow store, caches and tables live (default: "
                             "$NIRBENCH_RESULTS or ./results). MLFLOW_TRACKING_URI, when set, "
                             "overrides the store.")
    common.add_argument("--debug", action="store_true", help="show full tracebacks")
    common.add_argument("--quiet", action="store_true", help="only warnings and errors")
    return common


def progress_bars(no_progress: bool) -> bool:
    """Per-batch bars only on a terminal: redirected to a file (CI, nohup, 2>log) their carriage-
    return redraws are noise, and the per-epoch log line already says how the run goes."""
    return not no_progress and sys.stderr.isatty()
