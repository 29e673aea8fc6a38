"""Is a cell converged? The "still rising" rule, the same for every table, summary and figure.

A run's *rise* is how much its test R@1 still climbed over the last 20% of its epochs: the
least-squares slope of test R@1 (in percentage points per epoch) over the evaluated epochs in that
window (epochs E - ceil(0.2 E) ... E; the last two evaluations when fewer fall in it), times the
window's length ceil(0.2 E). A slope, not last-minus-first, so one noisy epoch neither raises
nor hides the flag (the protocol evaluates every epoch of the window: ``eval.dense_tail``). A
cell (dataset x method x arm) is *still rising* when the mean rise of its runs exceeds
``RISE_MARGIN_PP``: its numbers may describe how fast the arm starts, not what it reaches.

The margin is the budget rule's tolerance (2 points: R@1 at B within 2 points of 2B counts as
plateaued, harness/bench/convergence.py): a cell that still gained more than that in its last
fifth alone cannot be on its plateau. It was 1 point until the embedded protocol's calibration
runs (README, "What the still-rising mark can and cannot tell") showed cells that the 2B rule
finds converged rising by up to 1.25 points in their last fifth under the cosine schedule, so a
1-point mark fell on converged cells. The mark is a warning, not a certificate: under a schedule
that anneals to zero the last fifth is flat by construction (the learning rate is about a tenth
of its peak or less there), so runs stopped at a third to a half of their budget rose by only
0.4-2.6 points there. Under an annealed schedule only the 2B comparison (``nirbench bench
convergence``) certifies convergence.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from nirbench.harness.evaluation.cadence import RISE_WINDOW, rise_window_start
from nirbench.harness.results.display import cell_title, in_reading_order
from nirbench.harness.results.frames import CELL

RISE_MARGIN_PP = 2.0  # percentage points of test R@1: the budget rule's tolerance
RISE_METRIC = "test/recall@1"
STILL_RISING_MARK = "†"
RULE = (f"{STILL_RISING_MARK} still rising at the last epoch: test R@1 rose by more than "
        f"{RISE_MARGIN_PP:g} points over the last {int(100 * RISE_WINDOW)}% of the epochs "
        f"(least-squares slope over those epochs x their span, mean over the cell's seeds; the "
        f"budget rule's tolerance): the runs have not converged, and their numbers measure "
        f"speed, not the level reached. No mark is no proof: a schedule that anneals to zero "
        f"flattens the last epochs of any run, so only a run with twice the epochs certifies a "
        f"plateau (nirbench bench convergence)")


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


def convergence_table(runs: pd.DataFrame, epochs: pd.DataFrame,
                      by: list[str] | None = None) -> pd.DataFrame:
    """One row per cell (or per group of ``by``, columns of ``runs``): ``rise`` (mean over its
    runs, pp), ``n`` runs with a rise, and ``still_rising`` (rise > RISE_MARGIN_PP). Empty
    without per-epoch R@1."""
    by = list(by or CELL)
    columns = by + ["rise", "n", "still_rising"]
    if epochs.empty or RISE_METRIC not in epochs.columns:
        return pd.DataFrame(columns=columns)
    by_run = dict(tuple(epochs.groupby("run_id")))
    rises = runs[by + ["run_id"]].copy()
    last = runs.set_index("run_id")["epochs"] if "epochs" in runs else None
    rises["rise"] = [run_rise(by_run[r], int(last[r]) if last is not None and last[r] else None)
                     if r in by_run else math.nan for r in rises["run_id"]]
    rises = rises.dropna(subset=["rise"])
    if rises.empty:
        return pd.DataFrame(columns=columns)
    table = rises.groupby(by)["rise"].agg(["mean", "count"]).reset_index()
    table = table.rename(columns={"mean": "rise", "count": "n"})
    table["still_rising"] = table["rise"] > RISE_MARGIN_PP
    return table[columns]


def status_line(table: pd.DataFrame) -> str:
    """One sentence on the rule's outcome for every cell, said also when no cell is marked (a
    reader cannot tell a passed check from a check that never ran otherwise); "" without
    per-epoch R@1."""
    if table.empty:
        return ""
    marked = in_reading_order(table[table["still_rising"]])
    top = table.loc[table["rise"].idxmax()]
    largest = (f"the largest rise is {top['rise']:.2f} points ({top['dataset']}, "
               f"{cell_title(top['method'], top['arm'])})")
    if marked.empty:
        return (f"Still rising ({STILL_RISING_MARK}): none of {len(table)} cells; {largest}, "
                f"against the {RISE_MARGIN_PP:g}-point margin.")
    names = "; ".join(f"{r.dataset}, {cell_title(r.method, r.arm)} ({r.rise:.2f})"
                      for r in marked.itertuples())
    return (f"Still rising ({STILL_RISING_MARK}): {len(marked)} of {len(table)} cells: "
            f"{names}; margin {RISE_MARGIN_PP:g} points.")
