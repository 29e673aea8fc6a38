"""Epoch budgets, written once: the ``budgets:`` section of a grid's base config
(harness/configs/protocol.yaml) gives each dataset's measured budget and per-method exceptions,
and every grid built on that config reads them from there instead of restating them.

    budgets:
      datasets: {synth-cub: 15, synth-cars: 32, synth-sop: 24}
      methods: {multi_similarity: {synth-cars: 64}}   # a method that needs longer

A grid (or a block) may scale them with ``budget_scale: 2`` (the 2B runs of the convergence
rule); an explicit ``train.epochs`` override still wins (the calibration grid's short runs).

It imports nothing from the harness (config.py and grid/plan.py both read it); a bad section
raises BudgetError, a ValueError whose message names the key and the fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class BudgetError(ValueError):
    """A malformed ``budgets:`` section or ``budget_scale``."""


@dataclass(frozen=True)
class Budgets:
    datasets: dict[str, int] = field(default_factory=dict)
    methods: dict[str, dict[str, int]] = field(default_factory=dict)

    def epochs(self, dataset: str, method: str) -> int | None:
        """The budget of ``method`` on ``dataset``; None where the protocol sets none."""
        own = self.methods.get(method, {})
        return own.get(dataset, self.datasets.get(dataset))


def parse_budgets(raw: Any, where: str) -> Budgets:
    if raw is None:
        return Budgets()
    if not isinstance(raw, dict) or set(raw) - {"datasets", "methods"}:
        raise BudgetError(
            f"{where}: budgets must be a mapping with 'datasets' (dataset: epochs) "
            f"and optionally 'methods' (method: {{dataset: epochs}}), got {raw!r}"
        )
    datasets = raw.get("datasets") or {}
    methods = raw.get("methods") or {}
    for name, table in [
        ("budgets.datasets", datasets),
        *((f"budgets.methods.{m}", t) for m, t in methods.items()),
    ]:
        if not isinstance(table, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in table.values()
        ):
            raise BudgetError(
                f"{where}: {name} must map dataset names to epochs >= 1, got {table!r}"
            )
    return Budgets(dict(datasets), {m: dict(t) for m, t in methods.items()})


def budget_scale(raw: Any, where: str) -> int:
    if raw is None:
        return 1
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
        raise BudgetError(
            f"{where}: budget_scale must be an integer >= 1 (2 = twice the "
            f"protocol's budgets), got {raw!r}"
        )
    return raw
