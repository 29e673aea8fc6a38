"""`nirbench list`: what is registered (methods, regularizers, datasets).
Parsing and printing only; the work is in the library."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("list", parents=[common], help="list methods, regularizers or datasets")
    p.add_argument("what", choices=("methods", "regularizers", "datasets"))
    p.add_argument("--json", action="store_true", help="machine-readable JSON list")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    rows = list_entries(args.what)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        return 0
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for row in rows:
        print("  ".join(str(row[k]).ljust(widths[k]) for k in keys))
    return 0


def list_entries(what: str) -> list[dict]:
    if what == "datasets":
        from nirbench.harness.data import DATASETS

        return [
            {
                "name": n,
                "recall_at": ",".join(map(str, i.recall_at)),
                "needs_root": i.needs_root,
                "description": i.description,
            }
            for n, i in DATASETS.items()
        ]
    from nirbench.methods import METHODS, REGULARIZERS

    if what == "regularizers":
        return [
            {"name": n, "needs_proxies": i.needs_proxies, "paper": i.paper}
            for n, i in REGULARIZERS.items()
        ]
    # nir_compatible: NIR conditions on the method's OWN proxies (the default proxy_source).
    # nir_proxy_source: the mode `regularizer.proxy_source=auto` resolves to; "own" = NIR brings
    # its own proxies and ProxyAnchor alignment (the published code's way for pair methods).
    nir = REGULARIZERS.get("nir")
    return [
        {
            "name": n,
            "family": i.family,
            "provides_proxies": i.provides_proxies,
            "nir_compatible": i.provides_proxies or not nir.needs_proxies,
            "nir_proxy_source": "method" if i.provides_proxies else "own",
            "paper": i.paper,
        }
        for n, i in sorted(METHODS.items(), key=lambda item: (item[1].family != "proxy", item[0]))
    ]
