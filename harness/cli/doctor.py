"""`nirbench doctor`: can this machine run the paper profile? Parsing and printing only; the
checks are in harness/doctor.py."""

from __future__ import annotations

import argparse
import json

from nirbench.harness.cli.common import results_dir_arg

DESCRIPTION = """\
Can this machine run the paper profile? Checks, one line each, OK or what to do:
  torch, cuda, cudnn, gpu (model, memory), bf16          the GPU stack
  faiss_gpu          a tiny search on the GPU must give the CPU's neighbours
  imagenet_weights   the ResNets' ImageNet weights in the torch hub cache (path, checksum)
  dataset:cub200, dataset:cars196, dataset:sop   found under --data-root, complete or partial
                     (official ids and image counts; images are not decoded: 'data check' does)
  tracking           the MLflow store reachable and writable
  disk               free space against the cache size each found dataset needs
  chromium           for the report's browser test
Status: ok, warn (cannot run the profile as it stands, nothing broken: no GPU, no data yet),
fail (something present is broken). Exit status 1 if any check fails, else 0. --json prints
{"ok", "ready", "counts", "data_root", "results_dir", "tracking_uri", "checks": [{"name",
"status", "message", "fix", "details", "seconds"}]}.
Why: everything a researcher meets in the first hour on a GPU server should be found in seconds,
not after the first epoch.
"""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``doctor`` to the nirbench command line."""
    p = subparsers.add_parser(
        "doctor",
        parents=[common],
        help="can this machine run the paper "
        "profile? GPU stack, faiss, weights, datasets, store, disk",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="folder holding the datasets (default: $NIRBENCH_DATA or ./data)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from nirbench.harness.doctor import run

    report = run(args.data_root, results_dir_arg(args.results_dir))
    if args.json:
        print(json.dumps(report))
    else:
        width = max(len(c["name"]) for c in report["checks"])
        for c in report["checks"]:
            print(f"{c['status'].upper():4}  {c['name'].ljust(width)}  {c['message']}")
            if c["fix"] and c["status"] != "ok":
                print(f"{'':4}  {'':{width}}  -> {c['fix']}")
        counts = report["counts"]
        verdict = (
            "ready for the paper profile"
            if report["ready"]
            else "not ready: fix the lines above"
            if not report["ok"]
            else "no failures, but not ready for the paper profile (see the warnings)"
        )
        print(f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail: {verdict}")
    return 0 if report["ok"] else 1
