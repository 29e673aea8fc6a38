"""A rendered-agnostic table: rows of labelled cells, each cell with its display text, the value
that ranks it, and the MLflow run ids behind it (so every number can be traced)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd


# ============================================================== 3. layouts
@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None = None   # what "best in column" compares (display units); None: no rank
    run_ids: tuple[str, ...] = ()
    title: str = ""              # hover text in HTML
    css: str = ""                # extra HTML class (the verdict colour)
    detail: str = ""             # secondary text (a CI): same line in md/csv, smaller in tex/html

    @property
    def full(self) -> str:
        return f"{self.text} {self.detail}" if self.detail else self.text


@dataclass(frozen=True)
class Column:
    group: str
    title: str
    bold_best: bool = False
    decimals: int = 1


@dataclass(frozen=True)
class Table:
    name: str
    caption: str
    label_names: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    columns: tuple[Column, ...]
    cells: tuple[tuple[Cell, ...], ...]
    note: str = ""

    def best(self) -> set[tuple[int, int]]:
        """(row, column) of the best cell of every ``bold_best`` column, compared as displayed
        (so two values that print the same are both bold); none when fewer than two values."""
        out = set()
        for j, column in enumerate(self.columns):
            if not column.bold_best:
                continue
            shown = {i: round(row[j].value, column.decimals) for i, row in enumerate(self.cells)
                     if row[j].value is not None and math.isfinite(row[j].value)}
            if len(shown) >= 2:
                top = max(shown.values())
                out |= {(i, j) for i, v in shown.items() if v == top}
        return out

    def header(self) -> list[str]:
        return list(self.label_names) + [f"{c.group} {c.title}".strip() for c in self.columns]

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame([[c.full for c in row] for row in self.cells],
                             columns=self.header()[len(self.label_names):])
        labels = pd.DataFrame(list(self.rows), columns=list(self.label_names))
        return pd.concat([labels, frame], axis=1).set_index(list(self.label_names))


MISSING = Cell("-")
