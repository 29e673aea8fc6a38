"""The NIR paper's published Table 1 (Roth, Vinyals, Akata, CVPR 2022; ResNet50, dim 128), as data.

Values are percentages, mean and std over the paper's seeds, copied from shared/PAPER.md section 7.
The paper selected the best TEST epoch, so the like-for-like reproduced column is the
``best-test`` selection policy; the other policies are honest but not comparable one to one.
"""
from __future__ import annotations

import pandas as pd

SOURCE = ("Roth, Vinyals, Akata: Non-isotropy Regularization for Proxy-based Deep Metric Learning, "
          "CVPR 2022, Table 1 (ResNet50, embedding dim 128, best test epoch, mean ± std)")
DATASETS = ("cub200", "cars196", "sop")
METRICS = ("recall@1", "nmi", "map@1000")

# (method, regularizer) -> dataset -> (R@1, NMI, mAP@1000), each (mean, std) in %.
_TABLE1: dict[tuple[str, str], dict[str, tuple[tuple[float, float], ...]]] = {
    ("multi_similarity", "none"): {
        "cub200": ((62.8, 0.2), (67.8, 0.4), (31.1, 0.3)),
        "cars196": ((81.6, 0.3), (69.6, 0.5), (31.7, 0.1)),
        "sop": ((76.0, 0.1), (89.4, 0.1), (43.3, 0.1))},
    ("proxy_anchor", "none"): {
        "cub200": ((64.4, 0.3), (68.4, 0.2), (33.2, 0.3)),
        "cars196": ((82.4, 0.4), (69.0, 0.3), (34.2, 0.3)),
        "sop": ((78.0, 0.1), (90.1, 0.1), (45.5, 0.1))},
    ("proxy_anchor", "nir"): {
        "cub200": ((66.0, 0.3), (69.6, 0.1), (34.2, 0.2)),
        "cars196": ((85.2, 0.3), (71.6, 0.3), (36.4, 0.2)),
        "sop": ((78.9, 0.1), (90.4, 0.1), (46.5, 0.1))},
    ("proxy_nca", "none"): {
        "cub200": ((64.2, 0.2), (68.6, 0.3), (33.1, 0.2)),
        "cars196": ((82.1, 0.4), (68.2, 0.2), (32.4, 0.5)),
        "sop": ((78.3, 0.1), (90.0, 0.1), (45.5, 0.1))},
    ("proxy_nca", "nir"): {
        "cub200": ((66.1, 0.2), (69.8, 0.2), (34.3, 0.1)),
        "cars196": ((84.3, 0.3), (70.6, 0.6), (34.5, 0.3)),
        "sop": ((79.1, 0.1), (90.2, 0.1), (46.2, 0.1))},
    ("soft_triple", "none"): {
        "cub200": ((62.3, 0.3), (68.2, 0.2), (31.6, 0.2)),
        "cars196": ((80.7, 0.2), (66.4, 0.3), (30.4, 0.2)),
        "sop": ((76.9, 0.2), (89.6, 0.1), (43.5, 0.1))},
    ("soft_triple", "nir"): {
        "cub200": ((63.8, 0.4), (68.5, 0.2), (34.0, 0.4)),
        "cars196": ((83.4, 0.4), (68.8, 0.5), (35.5, 0.2)),
        "sop": ((77.6, 0.1), (90.0, 0.1), (44.9, 0.1))},
}


def published(method: str, regularizer: str, dataset: str,
              metric: str) -> tuple[float, float] | None:
    """(mean, std) in % as published, or None when the paper has no such cell."""
    row = _TABLE1.get((method, regularizer), {}).get(dataset)
    if row is None or metric not in METRICS:
        return None
    return row[METRICS.index(metric)]


def published_frame() -> pd.DataFrame:
    """Long format: dataset, method, regularizer, metric, mean, std (in %)."""
    rows = [{"dataset": dataset, "method": method, "regularizer": reg, "metric": metric,
             "mean": values[i][0], "std": values[i][1]}
            for (method, reg), per_dataset in _TABLE1.items()
            for dataset, values in per_dataset.items()
            for i, metric in enumerate(METRICS)]
    return pd.DataFrame(rows)


__all__ = ["SOURCE", "DATASETS", "METRICS", "published", "published_frame"]
