"""The embedded synthetic datasets: contract, sizes, determinism, cache, intra-class structure."""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from nirbench.harness.data import synthetic as S
from nirbench.harness.data.base import DATASETS, DatasetBundle

NAMES = ("synth-cub", "synth-cars", "synth-sop")
SIZES = {  # classes in total, images per class (inclusive)
    "synth-cub": (160, 24, 36),
    "synth-cars": (140, 28, 40),
    "synth-sop": (1000, 2, 12),
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synth-cache")


@pytest.fixture(scope="module")
def bundles(cache_dir: Path) -> dict[str, DatasetBundle]:
    """Each dataset generated once per session (through the registry, as the engine loads it)."""
    return {name: DATASETS.get(name).load(None, str(cache_dir)) for name in NAMES}


def _small(name: str, **kw: object) -> S.SynthParams:
    """A cheap variant of a dataset's generator (fewer classes) for tests that must regenerate."""
    p = S.SYNTH_PARAMS[name]
    return dataclasses.replace(
        p, num_classes=4 * p.num_families if p.kind != "product" else 120, **kw
    )


def test_registered() -> None:
    for name in NAMES:
        info = DATASETS.get(name)
        assert info.name == name and not info.needs_root and info.description
    assert DATASETS.get("synth-cub").recall_at == (1, 2, 4, 8)
    assert DATASETS.get("synth-cars").recall_at == (1, 2, 4, 8)
    assert DATASETS.get("synth-sop").recall_at == (1, 10, 100, 1000)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtypes(bundles: dict[str, DatasetBundle], name: str) -> None:
    b = bundles[name]
    assert b.name == name
    for split in (b.train, b.test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert tuple(split.images.shape[1:]) == (3, 32, 32)
        assert split.images.is_contiguous()
        assert torch.equal(split.labels.unique(), torch.arange(split.num_classes))
    # Not degenerate: the pixel range is used.
    assert b.train.images.float().std() > 20


@pytest.mark.parametrize("name", NAMES)
def test_split_halves_and_sizes(bundles: dict[str, DatasetBundle], name: str) -> None:
    b, (classes, lo, hi) = bundles[name], SIZES[name]
    assert b.train.num_classes == classes // 2 and b.test.num_classes == classes - classes // 2
    g_train, g_test = b.info["global_class_train"], b.info["global_class_test"]
    assert set(g_train.tolist()).isdisjoint(g_test.tolist())
    assert g_train.tolist() == list(range(classes // 2))  # first half trains
    assert g_test.tolist() == list(range(classes // 2, classes))
    for split in (b.train, b.test):
        counts = torch.bincount(split.labels)
        assert counts.min() >= lo and counts.max() <= hi
    assert b.info["num_train_images"] == len(b.train) and b.info["num_test_images"] == len(b.test)
    # No image is shared between the splits.
    train_keys = {
        bytes(x) for x in b.train.images[:500].numpy().reshape(min(500, len(b.train)), -1)
    }
    test_keys = {bytes(x) for x in b.test.images.numpy().reshape(len(b.test), -1)}
    assert train_keys.isdisjoint(test_keys)


def test_sop_shape(bundles: dict[str, DatasetBundle]) -> None:
    b = bundles["synth-sop"]
    assert len(b.test) > 1000  # Recall@1000 needs more than 1000 gallery items
    counts = torch.bincount(b.test.labels)
    assert (counts == 2).any() and (counts >= 10).any()  # SOP-like skewed class sizes
    assert 3.5 < counts.float().mean() < 7.0
    assert b.info["num_super_classes"] == 12
    for s in ("train", "test"):
        sup = b.info[f"super_class_{s}"]
        assert len(sup) == getattr(b, s).num_classes and set(sup.tolist()) == set(range(12))
        per_image = b.info[f"super_label_{s}"]
        assert np.array_equal(per_image, sup[getattr(b, s).labels.numpy()])


@pytest.mark.parametrize("name", NAMES)
def test_sub_mode_labels(bundles: dict[str, DatasetBundle], name: str) -> None:
    b = bundles[name]
    for s in ("train", "test"):
        split = getattr(b, s)
        sub, n_sub = b.info[f"sub_mode_{s}"], b.info[f"num_sub_modes_{s}"]
        assert sub.shape == (len(split),) and n_sub.shape == (split.num_classes,)
        counts = torch.bincount(split.labels).numpy()
        assert (
            (n_sub >= np.minimum(2, counts)).all()
            and (n_sub <= 4).all()
            and (n_sub <= counts).all()
        )
        # Every sub-mode of every class is present.
        pairs = set(zip(split.labels.tolist(), sub.tolist(), strict=True))
        assert len(pairs) == int(n_sub.sum())


def test_determinism_and_seed() -> None:
    p = _small("synth-cub")
    a1, m1 = S.generate("synth-cub", 0, p)
    a2, m2 = S.generate("synth-cub", 0, p)
    assert a1.keys() == a2.keys() and m1 == m2
    for k in a1:
        assert a1[k].dtype == a2[k].dtype and np.array_equal(a1[k], a2[k]), k
    a3, _ = S.generate("synth-cub", 1, p)
    assert not np.array_equal(a1["train_images"][:50], a3["train_images"][:50])


def test_full_dataset_bit_identical(bundles: dict[str, DatasetBundle]) -> None:
    arrays, _ = S.generate("synth-cars", S.DATA_SEED)
    b = bundles["synth-cars"]
    assert np.array_equal(arrays["train_images"], b.train.images.numpy())
    assert np.array_equal(arrays["test_images"], b.test.images.numpy())
    assert np.array_equal(arrays["test_labels"], b.test.labels.numpy())


def test_cache_hit(bundles: dict[str, DatasetBundle], cache_dir: Path) -> None:
    b = bundles["synth-cub"]
    path = Path(b.info["cache_file"])
    assert path.parent == cache_dir and path.name == f"synth-cub-{S.cache_key('synth-cub', 0)}.npz"
    again = S.load_synthetic("synth-cub", None, str(cache_dir))
    assert again.info["from_cache"]
    assert torch.equal(again.train.images, b.train.images) and torch.equal(
        again.test.labels, b.test.labels
    )
    assert np.array_equal(again.info["sub_mode_test"], b.info["sub_mode_test"])
    assert not [
        f for f in os.listdir(cache_dir) if f.endswith(".tmp")
    ]  # no leftovers of atomic writes


def test_cache_key_depends_on_inputs() -> None:
    k = S.cache_key("synth-cub", 0)
    assert k == S.cache_key("synth-cub", 0)
    assert k != S.cache_key("synth-cub", 1)
    assert k != S.cache_key("synth-cars", 0)
    assert k != S.cache_key(
        "synth-cub", 0, dataclasses.replace(S.SYNTH_PARAMS["synth-cub"], noise_std=0.1)
    )


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_cache_regenerates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    monkeypatch.setitem(S.SYNTH_PARAMS, "synth-cars", _small("synth-cars"))
    first = S.load_synthetic("synth-cars", None, str(tmp_path))
    path = Path(first.info["cache_file"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a zip file" * 100)
    with pytest.warns(RuntimeWarning, match="regenerating"):
        again = S.load_synthetic("synth-cars", None, str(tmp_path))
    assert not again.info["from_cache"]
    assert torch.equal(again.train.images, first.train.images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = S.load_synthetic(
            "synth-cars", None, str(tmp_path)
        )  # the rewritten cache is healthy
    assert third.info["from_cache"]


def test_root_overrides_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(S.SYNTH_PARAMS, "synth-sop", _small("synth-sop"))
    b = S.load_synthetic("synth-sop", str(tmp_path / "root"), str(tmp_path / "cache"))
    assert Path(b.info["cache_file"]).parent == tmp_path / "root"
    assert not (tmp_path / "cache").exists()


def test_datasets_differ(bundles: dict[str, DatasetBundle]) -> None:
    means = {n: bundles[n].train.images[:2000].float().mean(0) for n in NAMES}
    for i, a in enumerate(NAMES):
        for b in NAMES[i + 1 :]:
            assert not torch.equal(bundles[a].train.images[:100], bundles[b].train.images[:100])
            assert (means[a] - means[b]).abs().mean() > 1.0, (a, b)


@pytest.mark.parametrize("name", NAMES)
def test_sub_modes_are_real(name: str) -> None:
    """Without the nuisance (background, clutter, lighting, noise), images of one sub-mode are
    closer to each other than to the other sub-modes of their class, which are closer than other
    classes of the same family: family -> class -> sub-mode is visible in pixel space."""
    p = S.clean_params(_small(name))
    arrays, meta = S.generate(name, 0, p)
    x = arrays["train_images"].reshape(len(arrays["train_images"]), -1).astype(np.float32)
    y, sub, fam = (
        arrays["train_labels"],
        arrays["info_sub_mode_train"],
        arrays["info_super_class_train"],
    )
    same, cross, other = [], [], []
    for c in range(meta["num_train_classes"]):
        i = np.nonzero(y == c)[0]
        d = np.sqrt(((x[i, None] - x[None, i]) ** 2).sum(-1))
        eq = sub[i][:, None] == sub[i][None, :]
        off = ~np.eye(len(i), dtype=bool)
        if (eq & off).any():
            same.append(d[eq & off].mean())
        cross.append(d[~eq].mean())
        j = np.nonzero((fam[y] == fam[c]) & (y != c))[0][:40]
        if len(j):
            other.append(np.sqrt(((x[i, None] - x[None, j]) ** 2).sum(-1)).mean())
    assert np.mean(same) < 0.8 * np.mean(cross)
    assert np.mean(cross) < np.mean(other)
    # The clean variant keeps the structure: same classes, same sub-mode assignment.
    full, _ = S.generate(name, 0, _small(name))
    assert np.array_equal(full["info_sub_mode_train"], sub) and np.array_equal(
        full["train_labels"], y
    )
