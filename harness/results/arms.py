"""Arms: the rows of one method in a table, and which arms are compared with which.

An arm is the baseline (``none``) or a regularizer together with its *variant* (the parameters a
regularizer registers as ``variant_keys``: for NIR ``flow``, ``form`` and ``weight_convention``),
read from the run's tags. Its key names the regularizer and every variant value that differs from
the registered default: ``nir``, ``nir[flow=false]``, ``nir[form=nll]``,
``nir[weight_convention=lambda]``. Tuned values such as the weight are not part of the key: two
weights of one variant in one grid are two configurations that a cell refuses to average.

Comparisons pair two arms of the same dataset and method by seed. By default every arm is
compared with the baseline, and a control arm (``flow=false``) with the arm it controls for, so
the attribution ladder baseline -> NIR without the flow -> NIR appears whenever a grid ran it;
a grid may declare more pairs (``compare:``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nirbench.harness.config import RunConfig

BASELINE = "none"
CONTROL_VARIANT = ("flow", "false")  # the control arm of issue 14: everything but the flow

# How a variant value reads in a table row ("+ NIR (no flow)"); anything else as key=value.
VARIANT_TITLES = {("flow", "false"): "no flow", ("form", "nll"): "nll form",
                  ("form", "exp"): "exp form", ("weight_convention", "lambda"): "λ on NIR",
                  ("weight_convention", "w_align"): "w_align on the method"}


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def arm_key(regularizer: str, tags: Mapping[str, str]) -> str:
    """The arm of a run from its ``regularizer`` tag and its ``<regularizer>.<key>`` tags."""
    if not regularizer or regularizer == BASELINE:
        return BASELINE
    from nirbench.methods import REGULARIZERS

    if regularizer not in REGULARIZERS:  # a run of a regularizer this code no longer knows
        return regularizer
    info = REGULARIZERS.get(regularizer)
    parts = []
    for key in info.variant_keys:
        value = tags.get(f"{regularizer}.{key}")
        if value is not None and value.lower() != _text(info.defaults.get(key)).lower():
            parts.append(f"{key}={value}")
    return regularizer + (f"[{','.join(parts)}]" if parts else "")


def arm_of_config(cfg: "RunConfig") -> str:
    """The arm a run of ``cfg`` will be tabled under (the same rule as for its tags)."""
    from nirbench.harness.tracking.store import run_tags

    return arm_key(cfg.regularizer_name, run_tags(cfg, grid=""))


def parse_arm(arm: str) -> tuple[str, dict[str, str]]:
    """``nir[flow=false,form=nll]`` -> ("nir", {"flow": "false", "form": "nll"})."""
    name, _, rest = arm.partition("[")
    variant = dict(p.split("=", 1) for p in rest.rstrip("]").split(",") if "=" in p)
    return name, variant


def format_arm(name: str, variant: Mapping[str, str]) -> str:
    return name + (f"[{','.join(f'{k}={v}' for k, v in variant.items())}]" if variant else "")


def arm_title(arm: str, method_title: str) -> str:
    """A table row: the method's name for its baseline, ``+ NIR (no flow)`` for an arm."""
    if arm == BASELINE:
        return method_title
    name, variant = parse_arm(arm)
    detail = ", ".join(VARIANT_TITLES.get((k, v), f"{k}={v}") for k, v in variant.items())
    return f"+ {name.upper()}" + (f" ({detail})" if detail else "")


def is_control(arm: str) -> bool:
    return parse_arm(arm)[1].get(CONTROL_VARIANT[0]) == CONTROL_VARIANT[1]


def controlled_arm(arm: str) -> str:
    """The arm a control arm controls for: the same arm with the flow on."""
    name, variant = parse_arm(arm)
    return format_arm(name, {k: v for k, v in variant.items() if k != CONTROL_VARIANT[0]})


def arm_order(arm: str) -> tuple:
    """Baseline first, then each regularizer's control arm before its full arm, then variants."""
    name, variant = parse_arm(arm)
    return (arm != BASELINE, name, not is_control(arm), len(variant), arm)


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
