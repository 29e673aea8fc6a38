"""What a search reports: one trial, the final runs of the best configuration, the whole search."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


# ============================================================================ one trial
@dataclass
class TrialReport:
    number: int
    state: str  # COMPLETE | PRUNED | FAIL | SURPLUS
    value: float | None
    params: dict[str, Any]
    seconds: float
    note: str = ""


# ============================================================================ the search
@dataclass
class FinalRun:
    seed: int
    run_id: str
    status: str  # finished | skipped
    metrics: dict[str, float]
    grid: str


@dataclass
class SearchOutcome:
    study: str
    storage: str
    n_complete: int
    n_pruned: int
    n_failed: int
    ran: list[TrialReport]
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_yaml: Path | None = None
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    final: list[FinalRun] = field(default_factory=list)
    parent_run_id: str = ""
    seconds: float = 0.0


def format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
