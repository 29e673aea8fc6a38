"""docs/configuration.md is generated from the schema; this fails when the committed page is
stale (a key, a default, a bound or a description changed) and says how to regenerate it."""

from __future__ import annotations

from pathlib import Path

from nirbench.harness.config_reference import REGENERATE, reference_markdown
from nirbench.harness.config_schema import SECTIONS, RunConfig

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_the_committed_reference_is_the_generated_one():
    assert PAGE.is_file(), f"docs/configuration.md is missing; generate it: {REGENERATE}"
    assert PAGE.read_text() == reference_markdown(), (
        f"docs/configuration.md is stale (the config schema changed); regenerate it: {REGENERATE}"
    )


def test_the_reference_lists_every_key_with_its_description():
    page = reference_markdown()
    keys = ["seed", "regularizer"] + [
        f"{s}.{k}" for s in SECTIONS for k in RunConfig.model_fields[s].annotation.model_fields
    ]
    for key in keys:
        assert f"| `{key}` |" in page, key
    for section in SECTIONS:  # every field says what it is
        for name, field in RunConfig.model_fields[section].annotation.model_fields.items():
            assert field.description, f"{section}.{name} has no description"
    assert "| `backbone.width` | float | `1.0` | in [0.125, 4] |" in page
    assert "| `method.margin` | float | `0.1` |" in page  # registered params too
    assert "| `regularizer.flow` | bool | `true` |" in page
