"""The run config: loaded from YAML, overridden with ``key=value``, validated against the schema.

The schema (every key, its type, default, bounds and description) is harness/config_schema.py;
the run's identity (the config hash) is harness/config_identity.py; the wording of errors is
harness/config_errors.py. Everything that can be wrong with a run (an unknown method, a bad type,
a batch size that does not split into classes, NIR on a method without proxies) is reported when
the config is built, before any work starts. The config is the first stage: it imports nothing
from train, grid or results.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml

from nirbench.harness.config_errors import ConfigError, IncompatiblePairError
from nirbench.harness.config_schema import (
    BACKBONES,
    CACHE_KINDS,
    DEVICES,
    KMEANS_ENGINES_CONFIG,
    LR_SCHEDULES,
    POOLINGS,
    PRECISIONS,
    BackboneConfig,
    DatasetConfig,
    EvalConfig,
    MethodConfig,
    RegularizerConfig,
    RunConfig,
    TrainConfig,
    ValidationConfig,
    flatten,
    validate_run_config,
    validate_section,
)

__all__ = [
    "BACKBONES",
    "CACHE_KINDS",
    "CONFIG_DIR",
    "DEFAULT_CONFIG",
    "DEVICES",
    "KMEANS_ENGINES_CONFIG",
    "LR_SCHEDULES",
    "POOLINGS",
    "PRECISIONS",
    "BackboneConfig",
    "ConfigError",
    "DatasetConfig",
    "EvalConfig",
    "IncompatiblePairError",
    "MethodConfig",
    "RegularizerConfig",
    "RunConfig",
    "TrainConfig",
    "ValidationConfig",
    "apply_overrides",
    "build_config",
    "build_validation",
    "flatten",
    "load_config",
    "read_yaml",
    "set_dotted",
]

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load ``path`` (default: the embedded default config), apply ``key=value`` overrides."""
    raw = read_yaml(path or DEFAULT_CONFIG)
    budgets = raw.pop("budgets", None)  # a protocol file's epoch budgets (harness/budgets.py)
    raw.pop("stats", None)  # the verdict margin (harness/results/export.py), not a run setting
    raw = apply_overrides(raw, overrides)
    if budgets is not None and not any(
        o.strip().startswith("train.epochs=") for o in overrides or []
    ):
        from nirbench.harness.budgets import BudgetError, parse_budgets

        method = raw.get("method") or "proxy_anchor"
        try:
            table = parse_budgets(budgets, str(path))
        except BudgetError as err:
            raise ConfigError(str(err)) from None
        epochs = table.epochs(
            (raw.get("dataset") or {}).get("name", "synth-cub"),
            method if isinstance(method, str) else method.get("name", "proxy_anchor"),
        )
        if epochs is not None:
            raw.setdefault("train", {})["epochs"] = epochs
    return build_config(raw)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key=value`` dotted overrides (values parsed as YAML) to a raw config dict."""
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.epochs=20")
        set_dotted(raw, key.strip(), yaml.safe_load(value))
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at top level")
    return data


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """``method.margin=0.2`` -> raw["method"]["margin"] = 0.2; ``regularizer=nir`` works too."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part in ("method", "regularizer"):
            child = {"name": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a mapping")
        node[part] = child
        node = child
    node[parts[-1]] = value


def build_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a plain dict into a RunConfig; every problem names its key."""
    return validate_run_config(copy.deepcopy(dict(raw)))


def build_validation(raw: Any) -> ValidationConfig:
    """A ``validation:`` section on its own (a tune file's split), validated as in a run."""
    return validate_section("validation", raw)
