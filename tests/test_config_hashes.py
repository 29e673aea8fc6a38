"""A run's identity is its config hash: finished runs are found and skipped by it. These hashes
were recorded from every shipped grid before the configuration code changed (issue 24); a change
to the config code that moves any of them would silently retrain every finished run of a results
folder. If a config is meant to change (a new protocol), regenerate the pins with
``python tests/test_config_hashes.py`` and say why in the commit."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / "tests" / "data" / "pinned_config_hashes.json"
GRIDS = ROOT / "harness" / "configs" / "grids"


def _key(c) -> str:
    params = json.dumps(c.regularizer.params if c.regularizer else {}, sort_keys=True)
    return (
        f"{c.dataset.name}|{c.method.name}|{c.regularizer_name}|{params}|{c.train.epochs}|{c.seed}"
    )


@functools.lru_cache(maxsize=1)
def current_hashes() -> dict[str, dict[str, str]]:
    from nirbench.harness.config import load_config
    from nirbench.harness.grid.plan import load_grid

    out = {}
    for path in sorted(GRIDS.rglob("*.yaml")):
        real = path.parent.name in ("paper", "fair")  # these need a data root, part of the hash
        plan = load_grid(path, ["dataset.root=/data"] if real else None)
        out[str(path.relative_to(ROOT))] = {_key(c): c.config_hash for c in plan.configs}
    out["harness/configs/default.yaml"] = {"default": load_config().config_hash}
    return out


def _pinned() -> dict[str, dict[str, str]]:
    return json.loads(PINS.read_text())


@pytest.mark.parametrize("grid", sorted(_pinned()))
def test_shipped_config_hashes_are_pinned(grid):
    now = current_hashes()
    assert grid in now, f"{grid} is pinned but no longer shipped"
    assert now[grid] == _pinned()[grid], f"config hashes of {grid} moved"


def test_every_shipped_grid_is_pinned():
    assert sorted(current_hashes()) == sorted(_pinned())


if __name__ == "__main__":
    PINS.write_text(json.dumps(dict(current_hashes()), indent=1, sort_keys=True) + "\n")
    print(f"wrote {PINS}", file=sys.stderr)
