"""`nirbench aggregate`: MLflow -> results/tables/.
Parsing and printing only; the work is in the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nirbench.harness.cli.common import results_dir_arg


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "aggregate",
        parents=[common],
        help="write results/tables from MLflow",
        description="Build results/tables/ from the FINISHED runs in MLflow: the tidy runs and "
        "epochs tables (CSV + Parquet), the paper's Table 1 layout and an extended "
        "table (mean ± std, t 95% CI over seeds), each arm minus its baseline paired "
        "by seed (paired t 95% CI; verdict at the margin δ: helps, hurts, equivalent "
        "or inconclusive; MDE, seeds needed, Holm over the headline comparisons; "
        "docs/statistics.md), published vs reproduced for cub200/cars196/sop, in "
        "Markdown, LaTeX, HTML and CSV. The last-epoch policy writes at the top of "
        "the folder, best-test/ and best-val/ hold the others.",
    )
    p.add_argument("--grid", default=None, help="only runs of this grid (tag 'grid')")
    p.add_argument("--out", default=None, help="output folder (default: RESULTS/tables)")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=10_000,
        metavar="N",
        help="bootstrap resamples for the paired intervals, shown from 10 seed "
        "pairs on (default 10000)",
    )
    p.add_argument(
        "--bootstrap-seed",
        type=int,
        default=0,
        metavar="SEED",
        help="seed of the bootstrap resampling (default 0): same seed, same intervals",
    )
    add_margin_argument(p)
    p.set_defaults(func=cmd_aggregate)


MARGIN_HELP = (
    "equivalence margin δ in points of R@1, MAP@R and the other %% metrics: "
    "'equivalent' needs the whole paired t 95%% CI of Δ inside ±δ. Default: {default}. "
    "It is an analysis setting, not a run's: changing it re-decides the verdicts "
    "without retraining or changing any config hash (the smallest difference that "
    "matters is the reader's question; the runs do not depend on it)"
)
GRID_MARGIN = (
    "stats.margin of the grid's base config (harness/configs/protocol.yaml: 1.0), else 1.0"
)


def add_margin_argument(p: argparse.ArgumentParser, default: str = GRID_MARGIN) -> None:
    p.add_argument(
        "--margin",
        type=_margin,
        default=None,
        metavar="POINTS",
        help=MARGIN_HELP.format(default=default),
    )


def _margin(value: str) -> float:
    import math

    try:
        margin = float(value)
    except ValueError:
        margin = math.nan
    if not (math.isfinite(margin) and margin > 0):
        raise argparse.ArgumentTypeError(
            f"--margin must be a number of points > 0, e.g. 1.0 or 0.5, got {value!r}"
        )
    return margin


def cmd_aggregate(args: argparse.Namespace) -> int:
    import shlex

    from nirbench.harness.results import write_tables
    from nirbench.harness.tracking.store import Tracker

    results = results_dir_arg(args.results_dir)
    out = Path(args.out) if args.out else results / "tables"
    if args.bootstrap < 100:
        raise ValueError(f"--bootstrap must be at least 100 resamples, got {args.bootstrap}")
    command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
    files = write_tables(
        Tracker(results),
        out,
        grid=args.grid,
        resamples=args.bootstrap,
        seed=args.bootstrap_seed,
        command=command,
        margin=args.margin,
    )
    print(files.markdown)
    print(
        f"tables written to {out}/ (table1.md/.tex/.html/.csv, extended.*, comparison.*, "
        f"runs.csv/.parquet, epochs.csv/.parquet, summary.csv; {len(files.written)} files)"
    )
    return 0
