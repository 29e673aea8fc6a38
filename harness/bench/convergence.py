"""``nirbench bench convergence``: has every baseline of the default grid plateaued at its epoch
budget? The protocol's rule (issue 17): test R@1 at the budget B is within ``MAX_GAP_PP`` of what
the same configuration reaches with 2B epochs.

``harness/configs/grids/convergence.yaml`` runs every baseline of the default grid at B and at 2B
(seed 0); this module reads those runs from MLflow, pairs them by dataset and method, prints the
gaps as JSON and draws the curves (R@1 against epoch, B solid, 2B dashed) as one figure. Both
budgets use the protocol's cosine schedule over their own length, so 2B is "the same recipe,
trained twice as long", not B continued.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

MAX_GAP_PP = 2.0
GRID = "convergence"


def budgets(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset x method: budget, R@1 at B and at 2B, gap (2B − B, points)."""
    rows = []
    for (dataset, method), part in runs.groupby(["dataset", "method"]):
        by_epochs = part.set_index("epochs")["recall@1"]
        short = int(by_epochs.index.min())
        long = 2 * short
        if long not in by_epochs.index:
            continue
        at_b, at_2b = float(by_epochs.loc[short]), float(by_epochs.loc[long])
        gap = 100 * (at_2b - at_b)
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "budget": short,
                "r1_at_budget": 100 * at_b,
                "r1_at_double": 100 * at_2b,
                "gap_pp": gap,
                "converged": gap <= MAX_GAP_PP,
            }
        )
    return pd.DataFrame(rows)


def check(results_dir: Path, grid: str = GRID, figure: Path | None = None) -> dict[str, Any]:
    from nirbench.harness.results.collect import collect

    from nirbench.harness.tracking.store import Tracker

    from nirbench.harness.grid.plan import recorded_config_hashes

    from nirbench.harness.results.convergence import RISE_MARGIN_PP, convergence_table
    from nirbench.harness.results.frames import CELL

    collected = collect(Tracker(results_dir), grid)
    every_arm = collected.runs
    planned = recorded_config_hashes(results_dir, grid)
    if planned:  # the grid as it last ran here: older budgets or recipes of the same name are out
        every_arm = every_arm[every_arm["config_hash"].isin(planned)]
    runs = every_arm[every_arm["arm"] == "none"]
    table = budgets(runs)
    if figure is not None and not table.empty:
        draw(runs, collected.epochs, table, figure)
    # The still-rising rule on every arm and budget of the grid: what the mark says about runs
    # whose convergence the 2B pairs establish (its calibration, grids/rise_calibration.yaml).
    rises = convergence_table(every_arm, collected.epochs, by=CELL + ["epochs"])
    level = (100 * every_arm.groupby(CELL + ["epochs"])["recall@1"].mean()).rename("r1")
    rises = (
        rises.join(level, on=CELL + ["epochs"])
        .rename(columns={"rise": "rise_pp", "r1": "r1_at_last"})
        .sort_values(CELL + ["epochs"], ignore_index=True)
    )
    return {
        "grid": grid,
        "max_gap_pp": MAX_GAP_PP,
        "all_converged": bool(len(table)) and bool(table["converged"].all()),
        "cells": table.to_dict("records"),
        "rise_margin_pp": RISE_MARGIN_PP,
        "rises": [
            {
                **row,
                "still_rising": bool(row["still_rising"]),
                "epochs": int(row["epochs"]),
                "n": int(row["n"]),
            }
            for row in rises.to_dict("records")
        ],
    }


def draw(runs: pd.DataFrame, epochs: pd.DataFrame, table: pd.DataFrame, path: Path) -> Path:
    from matplotlib.figure import Figure

    from nirbench.harness.results.display import METHOD_TITLES, dataset_rank, method_rank

    datasets = sorted(table["dataset"].unique(), key=dataset_rank)
    fig = Figure(figsize=(4.2 * len(datasets), 3.4), layout="constrained")
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    colors = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")
    for ax, dataset in zip(axes, datasets):
        part = table[table["dataset"] == dataset]
        for k, method in enumerate(sorted(part["method"], key=method_rank)):
            row = part[part["method"] == method].iloc[0]
            for budget, style in ((row["budget"], "-"), (2 * row["budget"], "--")):
                ids = runs[
                    (runs["dataset"] == dataset)
                    & (runs["method"] == method)
                    & (runs["epochs"] == budget)
                ]["run_id"]
                curve = epochs[epochs["run_id"].isin(ids)].dropna(subset=["test/recall@1"])
                curve = curve.groupby("epoch")["test/recall@1"].mean() * 100
                label = f"{METHOD_TITLES.get(method, method)} ({budget} ep)"
                ax.plot(
                    curve.index,
                    curve.values,
                    style,
                    marker="o",
                    ms=2.5,
                    color=colors[k % len(colors)],
                    label=label,
                )
            ax.axvline(row["budget"], color="#999", lw=0.6, ls=":")
        budgets = sorted({int(b) for b in part["budget"]})
        ax.set_title(f"{dataset}: budget {' / '.join(map(str, budgets))} epochs", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test R@1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(
        "Embedded protocol: each baseline at its budget B (solid) and at 2B (dashed)", fontsize=11
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
