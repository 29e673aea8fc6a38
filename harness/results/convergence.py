"""Is a cell converged? The "still rising" rule, the same for every table, summary and figure.

A run's *rise* is how much its test R@1 still climbed over the last 20% of its epochs: the
least-squares slope of test R@1 (in percentage points per epoch) over the evaluated epochs in that
window (epochs E - ceil(0.2 E) ... E; the last two evaluations when fewer fall in it), times the
window's length ceil(0.2 E). A slope, not last-minus-first, so one noisy epoch neither raises
nor hides the flag. A cell (dataset x method x arm) is *still rising* when the mean rise of its
runs exceeds ``RISE_MARGIN_PP``: its numbers may describe how fast the arm starts, not what it
reaches. The mark is a warning, not the protocol's budget rule: measured on the embedded
protocol (cosine schedule), runs within 0.5-1.3 points of what twice the epochs reach still rose
by about 1 point over their last fifth (the annealing), and one run's rise varies by about
±1 point between seeds (README, "The answer on the embedded data").
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.evaluation.cadence import RISE_WINDOW, rise_window_start
from harness.results.frames import CELL

RISE_MARGIN_PP = 1.0  # percentage points of test R@1
RISE_METRIC = "test/recall@1"
STILL_RISING_MARK = "†"
RULE = (f"{STILL_RISING_MARK} still rising at the last epoch: test R@1 rose by more than "
        f"{RISE_MARGIN_PP:g} point over the last {int(100 * RISE_WINDOW)}% of the epochs "
        f"(least-squares slope over those epochs x their span, mean over the cell's seeds): the "
        f"runs may not have converged, and then their numbers measure speed, not the level "
        f"reached. Under a cosine schedule converged runs still settle upward by about a point "
        f"in their last fifth; check such a cell against twice the epochs (nirbench bench "
        f"convergence)")


def run_rise(epochs: pd.DataFrame, last_epoch: int | None = None,
             metric: str = RISE_METRIC) -> float:
    """The rise (percentage points) of one run's ``metric`` over the last 20% of its epochs;
    nan with fewer than two evaluations."""
    curve = epochs.dropna(subset=[metric]).sort_values("epoch") if metric in epochs else None
    if curve is None or len(curve) < 2:
        return math.nan
    last = int(last_epoch if last_epoch is not None else curve["epoch"].max())
    span = last - rise_window_start(last)
    window = curve[curve["epoch"] >= last - span]
    if len(window) < 2:  # evaluated too rarely: the slope of the last two evaluations
        window = curve.tail(2)
    x = window["epoch"].to_numpy(dtype=float)
    y = 100.0 * window[metric].to_numpy(dtype=float)
    slope = np.polyfit(x, y, 1)[0] if np.ptp(x) > 0 else 0.0
    return float(slope * span)


def convergence_table(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: ``rise`` (mean over its runs, pp), ``n`` runs with a rise, and
    ``still_rising`` (rise > RISE_MARGIN_PP). Empty without per-epoch R@1."""
    columns = CELL + ["rise", "n", "still_rising"]
    if epochs.empty or RISE_METRIC not in epochs.columns:
        return pd.DataFrame(columns=columns)
    by_run = dict(tuple(epochs.groupby("run_id")))
    rises = runs[CELL + ["run_id"]].copy()
    last = runs.set_index("run_id")["epochs"] if "epochs" in runs else None
    rises["rise"] = [run_rise(by_run[r], int(last[r]) if last is not None and last[r] else None)
                     if r in by_run else math.nan for r in rises["run_id"]]
    rises = rises.dropna(subset=["rise"])
    if rises.empty:
        return pd.DataFrame(columns=columns)
    table = rises.groupby(CELL)["rise"].agg(["mean", "count"]).reset_index()
    table = table.rename(columns={"mean": "rise", "count": "n"})
    table["still_rising"] = table["rise"] > RISE_MARGIN_PP
    return table[columns]
