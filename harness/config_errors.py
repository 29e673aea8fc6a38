"""Config errors, and pydantic's ValidationError turned into one: the dotted key, the bad value,
the closest valid key for an unknown one, and what to write instead.

The schema (harness/config_schema.py) states every type, choice and bound once; this module words
its failures the way the old hand-written checks did, so a user reads ``train.epochs must be
>= 1, got 0`` rather than pydantic's ``Input should be greater than or equal to 1``.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ValidationError

from nirbench.harness.registry import closest_match_hint


class ConfigError(ValueError):
    """A config that cannot run; the message names the key, the bad value and the fix."""


class IncompatiblePairError(ConfigError):
    """The method and the regularizer cannot work together (NIR on the proxies of a method that
    has none). A grid lists such pairs as skipped instead of failing."""


_KINDS = {"int": "int", "float": "float", "bool": "bool", "string": "str"}


def config_error(
    err: ValidationError,
    model: type[BaseModel],
    prefix: str = "",
    *,
    unknown: str = "unknown config key",
) -> ConfigError:
    """The ConfigError for ``err``, raised while validating ``model`` at dotted ``prefix``. A
    ConfigError raised by a validator comes back as itself (its class kept: a grid skips an
    IncompatiblePairError); several problems come back as one message, one line each."""
    problems = err.errors()
    raised = [
        p["ctx"]["error"]
        for p in problems
        if p["type"] == "value_error" and isinstance(p.get("ctx", {}).get("error"), ConfigError)
    ]
    if len(problems) == 1 and raised:
        return raised[0]
    lines = list(dict.fromkeys(_describe(p, model, prefix, unknown) for p in problems))
    return ConfigError(
        lines[0]
        if len(lines) == 1
        else f"{len(lines)} problems in the config:\n  " + "\n  ".join(lines)
    )


def _describe(problem: dict[str, Any], model: type[BaseModel], prefix: str, unknown: str) -> str:
    loc = [part for part in problem["loc"] if part != "__root__"]
    key = prefix + "".join(
        f"[{p}]" if isinstance(p, int) else ("." if i else "") + str(p) for i, p in enumerate(loc)
    )
    value, kind = problem.get("input"), problem["type"]
    if kind == "value_error" and "error" in problem.get("ctx", {}):
        return str(problem["ctx"]["error"])
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        valid = list(parent.model_fields) if parent else []
        hint = closest_match_hint(str(loc[-1]), valid)
        if unknown == "unknown parameter":
            return f"unknown parameter {key}; valid: {', '.join(valid) or 'none'}.{hint}"
        where = (prefix + ".".join(str(p) for p in loc[:-1])).rstrip(".")
        return (
            f"{unknown} {key!r}; valid keys under {where + '.' if where else 'the top level'}: "
            f"{', '.join(valid) or 'none'}.{hint}"
        )
    field = _field_at(model, loc)
    about = f" ({key}: {field.description})" if field is not None and field.description else ""
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{key} must be a mapping, got {value!r}"
    if kind == "literal_error" and field is not None:
        choices = _choices(field.annotation)
        hint = closest_match_hint(str(value), choices)
        if loc[-1] == "name":
            return f"{key} {value!r} is unknown; valid: {', '.join(choices)}.{hint}"
        return f"{key} must be one of {', '.join(choices)}, got {value!r}.{hint}{about}"
    if kind in ("too_short", "tuple_type", "list_type"):
        return f"{key} must be a non-empty list of integers, got {value!r}{about}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bounds = bounds_text(field) if field is not None else ""
        return f"{key} must be {bounds or _bound_from_ctx(problem)}, got {value!r}{about}"
    for head, name in _KINDS.items():
        if kind.startswith(head):
            return f"{key} must be {name}, got {value!r} ({type(value).__name__}){about}"
    return f"{key}: {problem['msg']}, got {value!r}{about}"


def bounds_text(field: Any) -> str:
    """A field's bounds as a user writes them: ``>= 1``, ``in [0, 1)``, ``in (0, 1]``."""
    low = high = None
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge):
            low = ("[", rule.ge)
        elif isinstance(rule, annotated_types.Gt):
            low = ("(", rule.gt)
        elif isinstance(rule, annotated_types.Le):
            high = ("]", rule.le)
        elif isinstance(rule, annotated_types.Lt):
            high = (")", rule.lt)
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    if high:
        return f"{'<=' if high[0] == ']' else '<'} {high[1]:g}"
    return ""


def _bound_from_ctx(problem: dict[str, Any]) -> str:
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{signs[k]} {v}" for k, v in problem.get("ctx", {}).items() if k in signs)


def _choices(annotation: Any) -> list[str]:
    for arg in _members(annotation):
        if typing.get_origin(arg) is Literal:
            return [str(c) for c in typing.get_args(arg)]
    return []


def _members(annotation: Any) -> list[Any]:
    """``A | None`` -> [A, None]; ``Annotated[A, ...]`` -> [A]; anything else -> [it]."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _submodel(annotation: Any) -> type[BaseModel] | None:
    for arg in _members(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _model_at(model: type[BaseModel] | None, loc: list[Any]) -> type[BaseModel] | None:
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        model = _submodel(model.model_fields[part].annotation)
    return model


def _field_at(model: type[BaseModel], loc: list[Any]) -> Any:
    names = [p for p in loc if isinstance(p, str)]
    parent = _model_at(model, names[:-1]) if names else None
    return parent.model_fields.get(names[-1]) if parent is not None else None
