"""`nirbench evaluate`: metrics for saved embeddings.
Parsing and printing only; the work is in the library."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "evaluate",
        parents=[common],
        help="metrics for saved embeddings",
        description="Recall@k, MAP@R, R-Precision, mAP@1000 and NMI from one exact kNN "
        "pass (the query excluded from its own ranking), as one JSON "
        "object; with --structure also the embedding-structure metrics "
        "rho, pi_density, sigma2_kappa and g2 (harness/evaluation/structure.py).",
    )
    p.add_argument("--embeddings", required=True, help=".npy float array (N, D)")
    p.add_argument("--labels", required=True, help=".npy int array (N,)")
    p.add_argument("--recall-at", default="1,2,4,8", help="comma-separated ks (default 1,2,4,8)")
    p.add_argument("--no-nmi", action="store_true", help="skip k-means NMI")
    p.add_argument(
        "--structure",
        action="store_true",
        help="add the structure metrics of the paper's analysis table: rho (spectral "
        "decay), pi_density, sigma2_kappa, g2 (g2 on a seeded 10,000-sample "
        "subset above that size)",
    )
    p.add_argument("--json", action="store_true", help="print JSON (the default output anyway)")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from nirbench.harness.evaluation.metrics import compute_metrics

    embeddings = np.load(args.embeddings)
    labels = np.load(args.labels)
    try:
        recall_at = tuple(int(k) for k in args.recall_at.split(",") if k.strip())
    except ValueError:
        raise ValueError(f"--recall-at must be comma-separated integers, got {args.recall_at!r}")
    metrics = compute_metrics(embeddings, labels, recall_at, nmi=not args.no_nmi)
    if args.structure:
        from nirbench.harness.evaluation.structure import structure_metrics

        metrics.update(structure_metrics(embeddings, labels))
    print(json.dumps(metrics))
    return 0
