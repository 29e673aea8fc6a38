"""``nirbench weights fetch|list``: argument parsing and printing only; the work is in
harness.train.weights."""

from __future__ import annotations

import argparse
import json
import sys

WEIGHTS_DESCRIPTION = """\
Pretrained weights of the backbones that publish them (torchvision's ImageNet files of the
ResNets), in the torch hub cache ($TORCH_HOME/hub/checkpoints, default ~/.cache/torch/hub/
checkpoints). A run downloads missing weights itself unless --offline / NIRBENCH_OFFLINE=1;
every file is checked against the sha256 prefix in its official name before it is used.
NIRBENCH_MIRROR=BASE_URL fetches BASE_URL/<official file name> instead (same check).
"""

FETCH_DESCRIPTION = """\
Download (if missing or corrupt) and verify the weights of each named backbone, then print where
each file is and its sha256. For clusters whose compute nodes have no internet: run it on a login
node that shares the torch hub cache (or TORCH_HOME) with them, then train with --offline.
JSON keys (--json, one object): weights: [{backbone, path, sha256, bytes, url, downloaded}].
"""

LIST_DESCRIPTION = """\
Every backbone with published weights and the state of its cached file: cached (sha256 verified),
missing, or corrupt (its sha256 does not match the official name; nirbench weights fetch NAME
replaces it). JSON keys (--json): weights: [{backbone, status, path, url, sha256_prefix, sha256,
bytes, source}]. Exit status 1 when a cached file is corrupt, else 0.
"""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``weights`` with ``fetch`` and ``list`` to the nirbench command line."""
    weights = subparsers.add_parser(
        "weights",
        parents=[common],
        help="pretrained weights: fetch and verify them ahead of a run",
        description=WEIGHTS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = weights.add_subparsers(dest="weights_command", required=True)

    p = which.add_parser(
        "fetch",
        parents=[common],
        help="download and verify the weights of backbones",
        description=FETCH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "backbones",
        nargs="+",
        metavar="BACKBONE",
        help="registered backbone names, e.g. resnet50 resnet18",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_weights_fetch)

    p = which.add_parser(
        "list",
        parents=[common],
        help="each backbone's weights: cached, missing or corrupt",
        description=LIST_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_weights_list)


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from nirbench.harness.train import weights

    if weights.offline():
        raise weights.WeightsError(
            f"nirbench weights fetch downloads, but downloads are off "
            f"(--offline or {weights.OFFLINE_ENV}=1); drop --offline or "
            f"unset {weights.OFFLINE_ENV}"
        )
    for name in args.backbones:
        weights.downloadable(name)  # every name checked before the first download starts
    progress = not args.json and not getattr(args, "quiet", False) and sys.stderr.isatty()
    fetched = [
        weights.ensure(name, progress=progress, replace_corrupt=True) for name in args.backbones
    ]
    if args.json:
        print(json.dumps({"weights": [f.as_dict() for f in fetched]}, indent=2))
        return 0
    for f in fetched:
        how = "downloaded" if f.downloaded else "cached"
        print(f"{f.backbone}: {f.path} ({f.bytes / 1e6:.1f} MB, {how}), sha256 {f.sha256} verified")
    return 0


def cmd_weights_list(args: argparse.Namespace) -> int:
    from nirbench.harness.train import weights
    from nirbench.harness.config_backbones import BACKBONES, backbone_names

    rows = [weights.status(n) for n in backbone_names() if BACKBONES.get(n).weights is not None]
    if args.json:
        print(json.dumps({"weights": rows}, indent=2))
        return 0
    for row in rows:
        state = {
            "cached": f"cached, sha256 {row['sha256']} verified",
            "missing": f"missing (nirbench weights fetch {row['backbone']}, or a run "
            f"downloads it; from {row['url']})",
            "corrupt": f"CORRUPT: sha256 {row['sha256']} does not start with "
            f"{row['sha256_prefix']}; nirbench weights fetch {row['backbone']} "
            f"replaces it",
        }[row["status"]]
        print(f"{row['backbone']:<10} {row['path']}  {state}")
    return 1 if any(row["status"] == "corrupt" for row in rows) else 0
