"""Arms in the tables: the rows of one method, and which arms are compared with which.

What an arm is and how it is named (``none``, ``nir``, ``nir[flow=false]``) is harness/grid/arms.py:
the grid records and validates arms before anything trains, the tables group runs by the same
names. This module adds what only tables need: a row's title, read from the regularizer's
registration (its ``title`` and ``variant_title``), and the default comparisons.

Comparisons pair two arms of the same dataset and method by seed. By default every arm is
compared with the baseline, and a control arm (the regularizer's registered ``control_variant``,
NIR's ``flow=false``) with the arm it controls for, so the attribution ladder baseline -> NIR
without the flow -> NIR appears whenever a grid ran it; a grid may declare more pairs
(``compare:``).
"""
from __future__ import annotations

from collections.abc import Iterable

from nirbench.harness.grid.arms import (
    BASELINE,
    arm_key,
    arm_of_config,
    arm_order,
    controlled_arm,
    format_arm,
    is_control,
    parse_arm,
    registered,
)


def arm_title(arm: str, method_title: str) -> str:
    """A table row: the method's name for its baseline, ``+ NIR (no flow)`` for an arm."""
    if arm == BASELINE:
        return method_title
    name, variant = parse_arm(arm)
    info = registered(name)
    title = info.display_title if info is not None else name.upper()
    detail = ", ".join(info.variant_title(k, v) if info is not None else f"{k}={v}"
                       for k, v in variant.items())
    return f"+ {title}" + (f" ({detail})" if detail else "")


def default_pairs(arms: Iterable[str]) -> list[tuple[str, str]]:
    """(reference, arm) pairs compared by default among the arms of one dataset and method."""
    present = sorted(set(arms), key=arm_order)
    pairs = []
    for arm in present:
        if arm != BASELINE and BASELINE in present:
            pairs.append((BASELINE, arm))
        if is_control(arm) and controlled_arm(arm) in present:
            pairs.append((arm, controlled_arm(arm)))
    return pairs


def ladders(arms: Iterable[str]) -> list[tuple[str, str, str]]:
    """(baseline, control, full) triples present among the arms of one dataset and method."""
    present = set(arms)
    if BASELINE not in present:
        return []
    return [(BASELINE, arm, controlled_arm(arm)) for arm in sorted(present, key=arm_order)
            if is_control(arm) and controlled_arm(arm) in present]


__all__ = ["BASELINE", "arm_key", "arm_of_config", "arm_order", "arm_title", "controlled_arm",
           "default_pairs", "format_arm", "is_control", "ladders", "parse_arm"]
