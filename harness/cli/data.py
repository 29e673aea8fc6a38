"""``nirbench data check``: argument parsing and printing only; the work is in
harness.data.real.check."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DATA_DESCRIPTION = """\
The real benchmarks (CUB200-2011, Cars196, Stanford Online Products) live outside the repository;
'data check' says whether a copy is usable before any training starts.
"""

CHECK_DESCRIPTION = """\
Validate a copy of a real dataset: find its layout under --root (CUB: the official CUB_200_2011/
archive or the flat cub200/images/<class>/; Cars196: cars_annos.mat + car_ims/ or class folders;
SOP: Stanford_Online_Products/Ebay_train.txt + Ebay_test.txt), apply the standard class-disjoint
split and decode every image. Prints train_classes, train_images, test_classes, test_images (the
JSON keys with --json), the layout found, and the unreadable images (the first 10 paths and the
count). Exit status 0 when every image decodes, 1 when some do not, 2 when the layout is wrong
(the message names the missing file, the expected layout and where to download the dataset).
Why: a missing or truncated file should fail here in seconds, not in epoch 37, and must never be
silently dropped (the benchmark's numbers depend on every image).
"""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``data`` with ``check`` to the nirbench command line."""
    data = subparsers.add_parser("data", parents=[common], help="real datasets: validate a copy",
                                 description=DATA_DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    which = data.add_subparsers(dest="data_command", required=True)

    p = which.add_parser("check", parents=[common], help="validate the layout, split sizes and "
                         "images of a dataset copy", description=CHECK_DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=("cub200", "cars196", "sop"))
    p.add_argument("--root", required=True, help="folder holding the dataset (or the dataset "
                   "folder itself)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default: $NIRBENCH_DECODE_WORKERS or min(8, CPUs))")
    p.add_argument("--no-decode", action="store_true",
                   help="check layout and split sizes only, do not decode the images")
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_data_check)


def cmd_data_check(args: argparse.Namespace) -> int:
    from harness.data.real.check import check_dataset

    quiet = args.json or getattr(args, "quiet", False)
    report = check_dataset(args.dataset, args.root, decode=not args.no_decode,
                           workers=args.workers, progress=not quiet)
    _print(report, args.json)
    if not report["ok"]:
        print(f"nirbench data check: {report['unreadable_count']} unreadable images in "
              f"{args.dataset} under {report['root']}; re-download or replace them",
              file=sys.stderr)
        return 1
    return 0


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report))
        return
    width = max(len(key) for key in report)
    for key, value in report.items():
        if key == "unreadable":
            continue
        print(f"{key.ljust(width)}  {value}")
    for line in report["unreadable"]:
        print(f"  unreadable: {line}")
    if report["unreadable_count"] > len(report["unreadable"]):
        print(f"  ... and {report['unreadable_count'] - len(report['unreadable'])} more")
