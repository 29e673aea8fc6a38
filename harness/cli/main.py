"""`nirbench ...`: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from nirbench.harness.cli.common import common_options

log = logging.getLogger("nirbench")

DESCRIPTION = """\
nirbench: does Non-isotropy Regularization (NIR, CVPR 2022) improve proxy-based deep metric
learning, and by how much? Runs DML methods with and without NIR over datasets and seeds, tracks
every run in MLflow and writes paper-style tables.

Typical use:
  nirbench grid harness/configs/grids/default.yaml   # the default grid (skips finished runs)
  nirbench aggregate --grid default                  # results/tables/table1.md
  nirbench run --config harness/configs/default.yaml --set regularizer=nir --set seed=3
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # MLflow, alembic and faiss's loader are chatty at INFO; their warnings still show.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    for noisy in ("alembic", "mlflow", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(
            "interrupted; finished runs are kept, the interrupted one resumes on the next start",
            file=sys.stderr,
        )
        return 130
    except Exception as err:  # a clear one-line error; the traceback only with --debug
        if getattr(args, "debug", False):
            raise
        from nirbench.harness.config import ConfigError

        kind = "config error" if isinstance(err, ConfigError) else type(err).__name__
        print(f"nirbench: {kind}: {err}", file=sys.stderr)
        return 2


# One module per subcommand, each with register(sub, common); the order is the --help order.
SUBCOMMANDS = (
    "run",
    "grid",
    "tune",
    "aggregate",
    "report",
    "evaluate",
    "listing",
    "show_config",
    "ui",
    "bench",
    "data",
    "weights",
    "doctor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nirbench",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = common_options()
    for name in SUBCOMMANDS:
        importlib.import_module(f"nirbench.harness.cli.{name}").register(sub, common)
    return parser


if __name__ == "__main__":
    sys.exit(main())
