"""Shared fixtures: a tiny registered dataset so pipeline tests run in seconds, and an isolated
results folder so no test ever touches the user's MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nirbench.harness.data.base import DATASETS, DatasetBundle, DatasetInfo, ImageSplit

TINY = "test-tiny"


def _tiny_split(num_classes: int, per_class: int, seed: int) -> ImageSplit:
    """Each class: a colour plus a bright square at a class-specific place, with noise."""
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for c in range(num_classes):
        base = torch.zeros(3, 16, 16)
        base[c % 3] = 0.3 + 0.05 * c
        r, col = (c * 5) % 12, (c * 3) % 12
        base[:, r : r + 4, col : col + 4] = 1.0
        for _ in range(per_class):
            noisy = (base + 0.15 * torch.randn(3, 16, 16, generator=g)).clamp(0, 1)
            images.append((noisy * 255).to(torch.uint8))
            labels.append(c)
    return ImageSplit(torch.stack(images), torch.tensor(labels))


def _load_tiny(root: str | None, cache_dir: str) -> DatasetBundle:
    return DatasetBundle(TINY, _tiny_split(8, 6, seed=0), _tiny_split(8, 5, seed=1))


if TINY not in DATASETS:
    DATASETS.add(
        TINY,
        DatasetInfo(
            name=TINY,
            load=_load_tiny,
            recall_at=(1, 2, 4),
            description="8+8 classes of 16 px squares, tests only",
            needs_root=False,
        ),
    )


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("NIRBENCH_RESULTS", raising=False)


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    path = tmp_path / "results"
    path.mkdir()
    return path


@pytest.fixture
def tiny_overrides() -> list[str]:
    return [
        f"dataset.name={TINY}",
        "train.epochs=2",
        "train.batch_size=8",
        "train.samples_per_class=2",
        "backbone.embed_dim=16",
        "eval.recall_at=1,2",
        "seed=0",
    ]


def pytest_report_header(config: pytest.Config) -> str:
    return f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}"
