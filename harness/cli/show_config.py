"""`nirbench config`: a resolved config and its hash; `--all` lists every key, `--reference` prints
the configuration reference (docs/configuration.md). Parsing and printing only; the work is in
the library."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "config",
        parents=[common],
        help="print a resolved config and its hash",
        description="Resolve a config with its overrides and every default, validate "
        "it, and print it with its hash (the run identity).",
    )
    p.add_argument("--config", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--all",
        action="store_true",
        help="every key, one per line (dotted name = value), marked '# set' where "
        "it differs from the default for the same dataset, backbone, method "
        "and regularizer",
    )
    shown.add_argument(
        "--reference",
        action="store_true",
        help="print the configuration reference generated from the schema "
        "(docs/configuration.md) and exit",
    )
    p.set_defaults(func=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    if args.reference:
        from nirbench.harness.config_reference import reference_markdown

        print(reference_markdown(), end="")
        return 0
    from nirbench.harness.config import load_config
    from nirbench.harness.config_identity import IDENTITY_VERSION

    cfg = load_config(args.config, args.overrides)
    if args.all:
        from nirbench.harness.config import build_config

        # "# set": differs from what the same dataset, backbone, method and regularizer default to
        defaults = build_config(
            {
                "dataset": {"name": cfg.dataset.name, "root": cfg.dataset.root},
                "backbone": {"name": cfg.backbone.name},
                "method": cfg.method.name,
                "regularizer": cfg.regularizer and cfg.regularizer.name,
            }
        ).flat()
        flat = cfg.flat()
        width = max(len(k) for k in flat)
        for key, value in flat.items():
            mark = "" if defaults.get(key) == value else "   # set"
            print(f"{key:{width}s} = {_shown(value)}{mark}")
    else:
        print(cfg.to_yaml(), end="")
    print(f"# config_hash: {cfg.config_hash}  (identity version {IDENTITY_VERSION})")
    return 0


def _shown(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
