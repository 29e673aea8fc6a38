"""Is the regularizer still doing anything? Cells whose runs' NIR term died, for the marks.

The runner tags each NIR run with ``nir.inactive_from_epoch``: the first epoch from which the
unweighted term stays below 1e-3 of its epoch-1 value (or ``never``). A cell with such runs is
marked in every table: from that epoch on the arm trains (almost) without the regularizer, so a
difference from the baseline comes from what else differs between the arms (issue 14: the loss
scale against the weight decay, the alignment term), not from the flow.
"""
from __future__ import annotations

import pandas as pd

from nirbench.harness.results.frames import CELL

TAG_SUFFIX = ".inactive_from_epoch"
INACTIVE_MARK = "‡"
RULE = (f"{INACTIVE_MARK} NIR inactive: in at least one run of the cell the unweighted NIR term "
        f"fell below 1e-3 of its epoch-1 value and stayed there (tag nir.inactive_from_epoch; "
        f"the earliest such epoch is given); after it the arm trains almost without the flow")


def activity_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell with a regularizer activity tag: ``inactive_runs`` (runs whose term
    died), ``tagged_runs`` and ``inactive_from`` (the earliest epoch, or None)."""
    columns = CELL + ["inactive_runs", "tagged_runs", "inactive_from"]
    tag_columns = [c for c in runs.columns if c.endswith(TAG_SUFFIX)]
    if runs.empty or not tag_columns:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, group in runs.groupby(CELL):
        values = [v for c in tag_columns for v in group[c] if isinstance(v, str) and v]
        if not values:
            continue
        epochs = [int(v) for v in values if v.isdigit()]
        rows.append(dict(zip(CELL, key), inactive_runs=len(epochs), tagged_runs=len(values),
                         inactive_from=min(epochs) if epochs else None))
    return pd.DataFrame(rows, columns=columns)


def inactive_cells(runs: pd.DataFrame) -> dict[tuple[str, str, str], int]:
    """(dataset, method, arm) -> the earliest epoch from which some run's NIR term was dead."""
    table = activity_table(runs)
    return {tuple(r[c] for c in CELL): int(r["inactive_from"]) for _, r in table.iterrows()
            if r["inactive_runs"] > 0}
