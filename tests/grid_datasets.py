"""Datasets that break on purpose, for the grid's failure-isolation tests. Registered on import;
grid worker processes import this module too (``default_imports`` finds it), so the failures
happen inside real workers: one raises, one kills its own process as the OOM killer would."""

from __future__ import annotations

import os
import signal

from nirbench.harness.data.base import DATASETS, DatasetInfo

RAISES, DIES = "test-raises", "test-dies"


def _raises(root: str | None, cache_dir: str):
    raise MemoryError("simulated out of memory while loading the data")


def _dies(root: str | None, cache_dir: str):
    os.kill(os.getpid(), signal.SIGKILL)


for _name, _load in ((RAISES, _raises), (DIES, _dies)):
    if _name not in DATASETS:
        DATASETS.add(
            _name,
            DatasetInfo(
                name=_name,
                load=_load,
                recall_at=(1, 2),
                description="breaks on purpose, tests only",
                needs_root=False,
            ),
        )


def write_grid(
    folder,
    *,
    name: str = "tiny",
    datasets=("test-tiny",),
    methods=("proxy_anchor",),
    regularizers=("null",),
    seeds=(0,),
    epochs: int = 2,
):
    """A grid file (and its base config) over the tiny test datasets; returns its path."""
    from pathlib import Path

    from nirbench.harness.config import load_config

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(load_config(overrides=["dataset.name=test-tiny"]).to_yaml())
    grid = folder / "grid.yaml"
    grid.write_text(f"""
name: {name}
config: base.yaml
datasets: [{", ".join(datasets)}]
methods: [{", ".join(methods)}]
regularizers: [{", ".join(regularizers)}]
seeds: [{", ".join(map(str, seeds))}]
overrides: [train.epochs={epochs}, train.batch_size=8, backbone.embed_dim=16,
            "eval.recall_at=[1, 2]"]
""")
    return grid
