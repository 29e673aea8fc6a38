"""``nirbench data check`` and ``nirbench data fetch``: argument parsing and printing only; the
work is in harness.data.real.check and harness.data.real.fetch."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DATA_DESCRIPTION = """\
The real benchmarks (CUB200-2011, Cars196, Stanford Online Products) live outside the repository;
'data fetch' downloads and verifies them where an official URL exists (and says where to get
them where none does); 'data check' says whether a copy is usable before any training starts.
"""

CHECK_DESCRIPTION = """\
Validate a copy of a real dataset: find its layout under --root (CUB: the official CUB_200_2011/
archive or the flat cub200/images/<class>/; Cars196: cars_annos.mat + car_ims/ or class folders;
SOP: Stanford_Online_Products/Ebay_train.txt + Ebay_test.txt), split it by official class id
(CUB 1-100 / 101-200, Cars196 1-98 / 99-196, SOP by Ebay_train.txt / Ebay_test.txt), compare it
with the official dataset and decode every image. Prints (JSON keys with --json):
  train_classes, train_images, test_classes, test_images   what this copy holds, per split
  complete, missing_class_count, missing_class_ids, unexpected_class_count,
  unexpected_class_ids, absent_count, absent                against the official dataset
  official_classes, official_images, official_train_images, official_test_images
  unreadable_count, unreadable (first 10), ok               images that do not decode
  cache_uint8_bytes/_gb, cache_jpeg_bytes/_gb, cache_size_source   disk the cache will take
plus layout, root, images, decoded. Exit status 0 when the copy is complete and every image
decodes, 1 when some images do not decode, 2 when the layout is wrong (the message names the
missing file, the expected layout and where to download the dataset), 3 when the copy is partial
(missing or unexpected class ids, other image counts) unless --allow-partial.
Why: a missing class silently moves the split of a loader that takes "the first half of the
classes present"; a missing or truncated file should fail here in seconds, not in epoch 37; and
neither must ever be silently dropped (the benchmark's numbers depend on every image).
"""

FETCH_DESCRIPTION = """\
Download a real dataset's official archive into --root, verify its size and md5, extract it, and
end with the doctor's dataset check. The URLs and checksums are one table,
harness/data/real/downloads.py (listed in docs/downloads.md).
  cub200   CUB_200_2011.tgz from CaltechDATA (1.15 GB)
  sop      Stanford_Online_Products.zip from Stanford CVGL
  cars196  no stable official URL (the original host is gone): prints where the field gets it
           and the layouts nirbench reads, then verifies what you put under --root
Why this way: a download interrupted half-way resumes from <root>/<file>.part (or restarts when
the server ignores ranges) instead of starting over on a 1-3 GB file; a file whose size or md5 is
wrong is deleted, never extracted; extraction goes to <root>/.nirbench-partial-<dataset>/ and is
moved into place only when complete, so a failure never leaves a half-made dataset where the
loaders look; nothing without a checksum is downloaded.
Environment:
  NIRBENCH_MIRROR=BASE_URL   fetch every file as BASE_URL/<official file name> (same checksum)
  NIRBENCH_OFFLINE=1         never download (same as --offline): say what to download, from where
                             and where to put it, then verify what is there
Exit status 0 when the doctor's check is ok, 1 when a download or checksum failed, 2 when the
dataset is still missing or its layout is wrong, 3 when the copy is partial.
"""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``data`` with ``check`` to the nirbench command line."""
    data = subparsers.add_parser(
        "data",
        parents=[common],
        help="real datasets: validate a copy",
        description=DATA_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = data.add_subparsers(dest="data_command", required=True)

    p = which.add_parser(
        "check",
        parents=[common],
        help="validate the layout, split sizes and images of a dataset copy",
        description=CHECK_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, choices=("cub200", "cars196", "sop"))
    p.add_argument(
        "--root", required=True, help="folder holding the dataset (or the dataset folder itself)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: $NIRBENCH_DECODE_WORKERS or min(8, CPUs))",
    )
    p.add_argument(
        "--no-decode",
        action="store_true",
        help="check layout and split sizes only, do not decode the images",
    )
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="exit 0 on a partial copy (a miniature or filtered one you mean to train "
        "on with dataset.allow_partial=true); the report still lists what is "
        "missing",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_data_check)

    f = which.add_parser(
        "fetch",
        parents=[common],
        help="download, verify and extract a dataset's official archive",
        description=FETCH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("dataset", choices=("cub200", "cars196", "sop"))
    f.add_argument("--root", required=True, help="folder to put the dataset in (created)")
    if not any("--offline" in a.option_strings for a in common._actions):
        # the shared options may already carry --offline (it sets NIRBENCH_OFFLINE=1)
        f.add_argument(
            "--offline",
            action="store_true",
            help="never download (as NIRBENCH_OFFLINE=1): say what to place where, then verify it",
        )
    f.add_argument("--json", action="store_true", help="print one JSON object at the end")
    f.set_defaults(func=cmd_data_fetch)


def cmd_data_check(args: argparse.Namespace) -> int:
    from nirbench.harness.data.real.check import check_dataset

    quiet = args.json or getattr(args, "quiet", False)
    report = check_dataset(
        args.dataset, args.root, decode=not args.no_decode, workers=args.workers, progress=not quiet
    )
    _print(report, args.json)
    if not report["ok"]:
        print(
            f"nirbench data check: {report['unreadable_count']} unreadable images in "
            f"{args.dataset} under {report['root']}; re-download or replace them",
            file=sys.stderr,
        )
        return 1
    if not report["complete"]:
        verdict = (
            "accepted (--allow-partial): train with --set dataset.allow_partial=true"
            if args.allow_partial
            else "training refuses it; complete the copy, or pass --allow-partial here and "
            "--set dataset.allow_partial=true to the run"
        )
        print(
            f"nirbench data check: {args.dataset} under {report['root']} is a partial copy "
            f"({report['missing_class_count']} missing and {report['unexpected_class_count']} "
            f"unexpected class ids, {report['images']:,} of {report['official_images']:,} "
            f"images); {verdict}",
            file=sys.stderr,
        )
        return 0 if args.allow_partial else 3
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from nirbench.harness.data.real.fetch import FetchError

    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    try:
        offline = True if getattr(args, "offline", False) else None  # None: NIRBENCH_OFFLINE
        result = fetch_and_check(
            args.dataset,
            args.root,
            offline_mode=offline,
            progress=False if getattr(args, "quiet", False) else None,
            say=say,
        )
    except FetchError as err:
        print(f"nirbench data fetch: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    check = result["check"]
    if check["status"] == "ok":
        return 0
    return 3 if check["details"].get("found") else 2


def fetch_and_check(dataset: str, root: str, *, say=print, **options) -> dict[str, Any]:
    """harness.data.real.fetch.fetch, then the doctor's own ``dataset:<name>`` check on the root
    (called, not copied); its row is added as ``check`` and its verdict printed."""
    from nirbench.harness import doctor
    from nirbench.harness.data.real.fetch import fetch

    result = fetch(dataset, root, say=say, **options)
    checks = [c for c in doctor.CHECKS if c.__name__ == f"check_dataset_{dataset}"]
    check = doctor.run(data_root=result["root"], checks=checks)["checks"][0]
    say(
        f"doctor dataset:{dataset}: {check['status']}: {check['message']}"
        + (f"\n  fix: {check['fix']}" if check["fix"] else "")
    )
    return {**result, "check": check}


def _print(report: dict[str, Any], as_json: bool) -> None:
    from nirbench.harness.data.real.official_ids import format_ids

    if as_json:
        print(json.dumps(report))
        return
    width = max(len(key) for key in report)
    for key, value in report.items():
        if key in ("unreadable", "absent"):
            continue
        if key in ("missing_class_ids", "unexpected_class_ids"):
            value = format_ids(value)
        print(f"{key.ljust(width)}  {value}")
    for line in report["absent"]:
        print(f"  absent: {line}")
    if report["absent_count"] > len(report["absent"]):
        print(f"  ... and {report['absent_count'] - len(report['absent'])} more absent")
    for line in report["unreadable"]:
        print(f"  unreadable: {line}")
    if report["unreadable_count"] > len(report["unreadable"]):
        print(f"  ... and {report['unreadable_count'] - len(report['unreadable'])} more")
