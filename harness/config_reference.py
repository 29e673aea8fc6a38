"""The configuration reference (docs/configuration.md), generated from the schema.

Every key with its dotted name, type, default, bounds and description, read from the pydantic
models of harness/config_schema.py and the method and regularizer registries, so the page cannot
drift from the code (tests/test_config_reference.py fails when the committed page is stale).
Regenerate it with ``python -m nirbench.harness.config_reference > docs/configuration.md``.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from nirbench.harness.config_errors import bounds_text
from nirbench.harness.config_schema import SECTIONS, RunConfig

REGENERATE = "python -m nirbench.harness.config_reference > docs/configuration.md"

INTRO = f"""# Configuration reference

<!-- Generated from the schema (harness/config_schema.py); do not edit by hand.
     Regenerate: {REGENERATE} -->

A run is one config: a YAML file (`nirbench run --config FILE`) plus `--set key=value`
overrides, whose values are read as YAML (`--set train.epochs=20`, `--set eval.recall_at=1,10`,
`--set regularizer=nir`). Every key is checked when the config is built: an unknown key names
the closest valid one, a bad value names the key, the value and what is allowed.
`nirbench config --all` prints every key with the value a run would use, and config.yaml and the
MLflow params of every run hold the same keys. `nirbench config --reference` prints this page.

The run's identity (its config hash, by which finished runs are found and skipped) is computed
from these keys by a separate, versioned function (harness/config_identity.py); it leaves out a
key only while it holds the value that runs recorded before the key existed implicitly had.

Beside the run keys, a protocol file (harness/configs/protocol.yaml) may hold two sections that
are not part of a run: `budgets:` (the epoch budget per dataset and method; a single run loaded
from the file takes its budget unless `train.epochs` is given) and `stats:` (the aggregation's
settings, such as `stats.margin`, the equivalence margin of the verdicts).
"""


def reference_markdown() -> str:
    parts = [INTRO, _table("Top level", "", RunConfig, skip=set(SECTIONS) | {"method"})]
    for section in SECTIONS:
        model = RunConfig.model_fields[section].annotation
        parts.append(_table(f"`{section}`", section + ".", model, doc=model.__doc__))
    parts.append(_named("method"))
    parts.append(_named("regularizer"))
    return "\n".join(parts)


def _table(
    title: str,
    prefix: str,
    model: type[BaseModel],
    skip: set[str] = frozenset(),
    doc: str | None = None,
) -> str:
    lines = [f"## {title}", ""]
    if doc and model.__doc__ != BaseModel.__doc__ and "\n" in doc:
        lines += [" ".join(doc.split()), ""]
    lines += ["| key | type | default | bounds | description |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        default = "" if field.default is PydanticUndefined else f"`{_yaml(field.default)}`"
        lines.append(
            f"| `{prefix}{name}` | {_type(field.annotation)} | {default} | "
            f"{bounds_text(field) or ''} | {field.description or ''} |"
        )
    return "\n".join(lines) + "\n"


def _named(kind: str) -> str:
    """The method (or regularizer) key and every registered entry's params, typed by their
    registered defaults."""
    from nirbench.methods import METHODS, REGULARIZERS

    registry = METHODS if kind == "method" else REGULARIZERS
    field = RunConfig.model_fields[kind]
    lines = [
        f"## `{kind}`",
        "",
        field.description or "",
        "",
        f"`{kind}.name` picks one of the registered names below; its params are written "
        f"inline (`{kind}: {{name: NAME, PARAM: VALUE}}` or `--set {kind}.PARAM=VALUE`), "
        f"and a param not given takes its registered default. A param is typed by its "
        f"default (a float takes integers too).",
        "",
    ]
    if kind == "regularizer":
        lines += ["`regularizer: null` (the default) trains without one.", ""]
    for name, info in registry.items():
        lines += [
            f"### `{kind}: {name}`",
            "",
            f"{info.paper}.",
            "",
            "| key | type | default |",
            "|---|---|---|",
        ]
        for param, default in info.defaults.items():
            kind_name = type(default).__name__ if default is not None else "any"
            lines.append(f"| `{kind}.{param}` | {kind_name} | `{_yaml(default)}` |")
        lines.append("")
    return "\n".join(lines)


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{c}`" for c in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in typing.get_args(annotation))
    if origin is tuple:
        return f"list of {_type(typing.get_args(annotation)[0])}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


if __name__ == "__main__":
    print(reference_markdown(), end="")
