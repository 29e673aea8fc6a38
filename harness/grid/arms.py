"""Arm names: which arm of the experiment a run or a configuration is, and their order.

An arm is the baseline (``none``) or a regularizer together with its *variant* (the parameters a
regularizer registers as ``variant_keys``: for NIR ``flow``, ``form`` and ``weight_convention``),
read from the run's tags. Its key names the regularizer and every variant value that differs from
the registered default: ``nir``, ``nir[flow=false]``, ``nir[form=nll]``,
``nir[weight_convention=lambda]``. Tuned values such as the weight are not part of the key: two
weights of one variant in one grid are two configurations that a cell refuses to average.

A regularizer may register a *control* variant (``RegularizerInfo.control_variant``; NIR's is
``flow=false``, everything but the flow): its control arm is compared with the arm it controls
for.

The names live here, in the grid stage, because a grid records the arms it runs and validates
the comparisons it declares (``compare:``) before anything trains; the tables (results/arms.py)
group runs by the same names, downstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nirbench.harness.config import RunConfig
    from nirbench.methods.base import RegularizerInfo

BASELINE = "none"


def text(value: object) -> str:
    """A variant value as a tag and an arm key spell it (booleans lower-case, as YAML)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def registered(regularizer: str) -> RegularizerInfo | None:
    """The registration of ``regularizer``; None for a name this code no longer knows (an old
    run's tag), whose arm is then its bare name."""
    from nirbench.methods import REGULARIZERS

    return REGULARIZERS.get(regularizer) if regularizer in REGULARIZERS else None


def arm_key(regularizer: str, tags: Mapping[str, str]) -> str:
    """The arm of a run from its ``regularizer`` tag and its ``<regularizer>.<key>`` tags."""
    if not regularizer or regularizer == BASELINE:
        return BASELINE
    info = registered(regularizer)
    if info is None:
        return regularizer
    parts = []
    for key in info.variant_keys:
        value = tags.get(f"{regularizer}.{key}")
        if value is not None and value.lower() != text(info.defaults.get(key)).lower():
            parts.append(f"{key}={value}")
    return regularizer + (f"[{','.join(parts)}]" if parts else "")


def arm_of_config(cfg: RunConfig) -> str:
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


def _control(name: str) -> tuple[str, Any] | None:
    info = registered(name) if name != BASELINE else None
    return info.control_variant if info is not None else None


def is_control(arm: str) -> bool:
    """Whether ``arm`` is its regularizer's registered control arm (NIR: ``flow=false``)."""
    name, variant = parse_arm(arm)
    control = _control(name)
    return control is not None and variant.get(control[0]) == text(control[1])


def controlled_arm(arm: str) -> str:
    """The arm a control arm controls for: the same arm without the control variant."""
    name, variant = parse_arm(arm)
    control = _control(name)
    key = control[0] if control is not None else None
    return format_arm(name, {k: v for k, v in variant.items() if k != key})


def arm_order(arm: str) -> tuple:
    """Baseline first, then each regularizer's control arm before its full arm, then variants."""
    name, variant = parse_arm(arm)
    return (arm != BASELINE, name, not is_control(arm), len(variant), arm)


__all__ = [
    "BASELINE",
    "arm_key",
    "arm_of_config",
    "arm_order",
    "controlled_arm",
    "format_arm",
    "is_control",
    "parse_arm",
    "registered",
    "text",
]
