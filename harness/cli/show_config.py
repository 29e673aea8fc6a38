"""`nirbench config`: a resolved config and its hash.
Parsing and printing only; the work is in the library."""
from __future__ import annotations

import argparse



def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("config", parents=[common], help="print a resolved config and its hash",
                       description="Resolve a config with its overrides and every default, validate "
                                   "it, and print it with its hash (the run identity).")
    p.add_argument("--config", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    from nirbench.harness.config import load_config

    cfg = load_config(args.config, args.overrides)
    print(cfg.to_yaml(), end="")
    print(f"# config_hash: {cfg.config_hash}")
    return 0
