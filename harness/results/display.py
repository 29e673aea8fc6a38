"""How datasets, methods and metrics are named, ordered and printed in every table and figure.

Percent metrics (Recall@k, MAP@R, mAP@1000, R-Precision, NMI) are shown x100; structure metrics
as they are."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from nirbench.harness.results.arms import BASELINE, arm_order, arm_title

if TYPE_CHECKING:
    import pandas as pd

# Table 1 of the paper, plus MAP@R (the metric Reality Check argues for).
TABLE1_METRICS = (("recall@1", "R@1"), ("nmi", "NMI"), ("map@1000", "mAP@1000"), ("map@r", "MAP@R"))

# The NIR gain shown in terminal, comparison tables and bar plots (the CSVs hold every metric).
KEY_METRICS = ("recall@1", "map@r", "map@1000", "nmi")

STRUCTURE_METRICS = ("rho", "pi_density", "sigma2_kappa", "g2")

DATASET_ORDER = ("synth-cub", "synth-cars", "synth-sop", "cub200", "cars196", "sop")

class _MethodTitles(Mapping):
    """method name -> its registered title (MethodInfo.title); unregistered names are absent, so
    ``METHOD_TITLES.get(name, name)`` falls back to the name."""

    def _titles(self) -> dict[str, str]:
        from nirbench.methods import METHODS

        return {n: info.title or n for n, info in METHODS.items()}

    def __getitem__(self, name: str) -> str:
        return self._titles()[name]

    def __iter__(self):
        return iter(self._titles())

    def __len__(self) -> int:
        return len(self._titles())


METHOD_TITLES: Mapping[str, str] = _MethodTitles()


METRIC_TITLES = {"map@r": "MAP@R", "r_precision": "R-Prec", "nmi": "NMI", "map@1000": "mAP@1000",
                 "rho": "ρ", "pi_density": "π density", "sigma2_kappa": "σ²κ", "g2": "G2"}


def is_percent(metric: str) -> bool:
    return metric.startswith(("recall@", "map@")) or metric in ("r_precision", "nmi")


def higher_is_better(metric: str) -> bool | None:
    """True for retrieval/clustering scores; None (no "better") for structure metrics."""
    return True if is_percent(metric) else None


def method_rank(method: str) -> tuple[int, str]:
    """The paper's Table 1 order (Multi-Similarity, ProxyAnchor, ProxyNCA, SoftTriple), then the
    other methods by name."""
    from nirbench.methods import METHODS

    rank = METHODS.get(method).table_rank if method in METHODS else None
    return (rank if rank is not None else 1_000_000, METHOD_TITLES.get(method, method))


def method_title(method: str, arm: str = BASELINE) -> str:
    """The row title: the method's name for its baseline, ``+ NIR (no flow)`` for an arm."""
    return arm_title(arm, METHOD_TITLES.get(method, method))


def pair_title(reference: str, arm: str) -> str:
    """``+ NIR vs baseline``, ``+ NIR vs + NIR (no flow)``: what a comparison compares."""
    ref = "baseline" if reference == BASELINE else arm_title(reference, "")
    return f"{arm_title(arm, 'baseline')} vs {ref}"


def metric_title(metric: str) -> str:
    if metric.startswith("recall@"):
        return "R@" + metric.split("@", 1)[1]
    return METRIC_TITLES.get(metric, metric)


def metric_order(metric: str) -> tuple:
    """Recall@k by k, then MAP@R, R-Precision, NMI, mAP@1000, then anything else by name."""
    if metric.startswith("recall@") and metric.split("@")[1].isdigit():
        return (0, int(metric.split("@")[1]), "")
    fixed = ("map@r", "r_precision", "nmi", "map@1000")
    return (1, fixed.index(metric), "") if metric in fixed else (2, 0, metric)


def dataset_rank(name: str) -> tuple[int, str]:
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


def fmt(value: float, metric: str, decimals: int | None = None, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–" if value is None or math.isnan(value) else ("+∞" if value > 0 else "−∞")
    scale = 100.0 if is_percent(metric) else 1.0
    d = decimals if decimals is not None else (1 if is_percent(metric) else 3)
    return f"{scale * value:{'+' if sign else ''}.{d}f}"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def cell_title(method: str, arm: str) -> str:
    """``ProxyAnchor + NIR``: a cell named outside a table, where a bare ``+ NIR`` means nothing."""
    name = METHOD_TITLES.get(method, method)
    return name if arm == BASELINE else f"{name} {arm_title(arm, '')}"


def in_reading_order(table: pd.DataFrame) -> pd.DataFrame:
    """The cells as the tables list them: datasets, then the paper's method order, then arms."""
    key = [(dataset_rank(d), method_rank(m), arm_order(a))
           for d, m, a in zip(table["dataset"], table["method"], table["arm"])]
    order = sorted(range(len(table)), key=key.__getitem__)
    return table.iloc[order].reset_index(drop=True)
