"""`nirbench report`: the HTML report with figures.
Parsing and printing only; the work is in the library."""

from __future__ import annotations

import argparse
from pathlib import Path

from nirbench.harness.cli.aggregate import add_margin_argument
from nirbench.harness.cli.common import results_dir_arg


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "report",
        parents=[common],
        help="build the HTML report with figures",
        description="Build RESULTS/report/index.html from the tables of `nirbench "
        "aggregate`: tables, NIR-vs-baseline statistics, convergence and "
        "gain figures (PNG + PDF in figures/), structure and tuning plots "
        "when their data exist, every number linked to its MLflow run, "
        "and the provenance. Opens offline.",
    )
    p.add_argument("--tables", default=None, help="tables folder to read (default: RESULTS/tables)")
    p.add_argument("--out", default=None, help="output folder (default: RESULTS/report)")
    p.add_argument(
        "--study",
        dest="studies",
        action="append",
        default=None,
        metavar="FILE",
        help="Optuna storage file to plot (journal file or .db); repeatable "
        "(default: the files under RESULTS/optuna/, if any)",
    )
    add_margin_argument(p, "the margin `nirbench aggregate` used (tables/meta.json)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from nirbench.dashboards.mlflow_ui import ui_command
    from nirbench.dashboards.report import build_report, command_line

    results = results_dir_arg(args.results_dir)
    report = build_report(
        results,
        tables_dir=Path(args.tables) if args.tables else None,
        out_dir=Path(args.out) if args.out else None,
        studies=[Path(p) for p in args.studies] if args.studies else None,
        command=command_line(),
        margin=args.margin,
    )
    for skipped in report.skipped:
        print(f"not drawn: {skipped.title}: {skipped.reason}")
    print(
        f"report: {report.index} ({len(report.figures)} figures, PNG + PDF in "
        f"{report.index.parent / 'figures'}/)"
    )
    print(f"MLflow UI: {' '.join(ui_command(results))}   then open http://127.0.0.1:5000")
    return 0
