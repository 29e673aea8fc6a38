"""The class-disjoint validation split of the training classes, its config section, and a run
that uses it: trains on the remaining classes, logs val/<metric>, never evaluates on test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nirbench.harness.train import engine
from nirbench.harness.config import ConfigError, build_config, load_config
from nirbench.harness.config_identity import identity_tree
from nirbench.harness.data import load_dataset
from nirbench.harness.data.base import DatasetBundle, ImageSplit
from nirbench.harness.data.validation import ValidationSplitError, heldout_classes, split_validation
from nirbench.harness.train.runner import execute
from nirbench.harness.tracking.store import Tracker
from tests.conftest import TINY


def make_bundle(num_classes: int = 10, per_class: int = 3) -> DatasetBundle:
    # Every image is unique and encodes (class, index) so a subset can be traced back.
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    images = torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = labels.to(torch.uint8)
    images[:, 0, 0, 1] = torch.arange(len(labels)).to(torch.uint8)
    test = ImageSplit(images[:6].clone() + 200, torch.tensor([0, 0, 0, 1, 1, 1]))
    return DatasetBundle("toy", ImageSplit(images, labels), test)


def test_split_is_class_disjoint_contiguous_and_only_uses_training_images():
    bundle = make_bundle()
    out = split_validation(bundle, fraction=0.3, seed=0)
    held = out.info["validation"]["heldout_train_classes"]
    kept = out.info["validation"]["train_classes"]
    assert len(held) == 3 and sorted(held + kept) == list(range(10)) and not set(held) & set(kept)
    for split, classes in ((out.test, held), (out.train, kept)):
        assert split.labels.unique().tolist() == list(range(len(classes)))  # contiguous
        original = split.images[:, 0, 0, 0].long()  # the class each image came from
        assert torch.equal(original, torch.as_tensor(classes)[split.labels])  # order preserved
        assert len(split) == 3 * len(classes)
    # Nothing of the original test split survives: the validation images are training images.
    assert int(out.test.images.max()) < 200 and len(out.train) + len(out.test) == len(bundle.train)


def test_split_depends_on_its_seed_only_and_folds_partition_the_classes():
    a = heldout_classes(40, fraction=0.25, seed=0)
    assert np.array_equal(a, heldout_classes(40, fraction=0.25, seed=0))
    assert not np.array_equal(a, heldout_classes(40, fraction=0.25, seed=1))
    folds = [heldout_classes(10, folds=4, fold=i, seed=3) for i in range(4)]
    assert sorted(np.concatenate(folds).tolist()) == list(range(10))
    assert [len(f) for f in folds] == [3, 3, 2, 2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fraction": 0.2, "folds": 4}, "exactly one"),
        ({}, "exactly one"),
        ({"folds": 4, "fold": 4}, "0 <= fold < folds"),
        ({"fraction": 0.95}, "at least 2"),
        ({"folds": 20}, "need at least 20"),
    ],
)
def test_impossible_splits_are_refused(kwargs, match):
    with pytest.raises(ValidationSplitError, match=match):
        heldout_classes(10, **kwargs)


def test_validation_section_is_validated_and_inactive_keeps_old_hashes():
    base = load_config()
    raw = base.to_dict()
    assert raw["validation"]["fraction"] == 0.0  # shown ...
    assert "validation" not in identity_tree(base)  # ... inactive: not part of the identity
    assert build_config({**raw, "validation": {"fraction": 0.0}}).config_hash == base.config_hash
    active = build_config({**raw, "validation": {"fraction": 0.2}})
    assert active.config_hash != base.config_hash
    assert active.to_dict()["validation"]["fraction"] == 0.2
    assert build_config(active.to_dict()) == active  # round trip
    for bad, match in (
        ({"fraction": 1.0}, "fraction must be in"),
        ({"folds": 1}, "folds must be"),
        ({"fraction": 0.2, "folds": 4}, "not both"),
        ({"folds": 4, "fold": 5}, "fold must be in"),
        ({"fold": 2}, "needs validation.folds"),
        ({"frac": 0.2}, "fraction"),
    ):
        with pytest.raises(ConfigError, match=match):
            build_config({**raw, "validation": bad})


def test_a_validation_run_trains_on_remaining_classes_and_never_sees_test(
    tiny_overrides, results_dir, monkeypatch
):
    bundle = load_dataset(TINY, None, results_dir)
    train_rows = {bytes(img.numpy().tobytes()) for img in bundle.train.images}
    test_rows = {bytes(img.numpy().tobytes()) for img in bundle.test.images}
    seen, trained_classes = [], []
    real_evaluate, real_build = engine.evaluate, engine.build_trainer

    def spy_evaluate(trainer, split, full=True):
        seen.extend(bytes(img.numpy().tobytes()) for img in split.images)
        return real_evaluate(trainer, split, full)

    def spy_build(cfg, data, device, *weights):
        trained_classes.append(data.train.num_classes)
        return real_build(cfg, data, device, *weights)

    monkeypatch.setattr(engine, "evaluate", spy_evaluate)
    monkeypatch.setattr("nirbench.harness.train.runner.build_trainer", spy_build)
    cfg = load_config(
        overrides=tiny_overrides
        + ["train.epochs=1", "train.warmup_epochs=0", "validation.fraction=0.25"]
    )
    tracker = Tracker(results_dir)
    outcome = execute(cfg, tracker, results_dir)
    assert seen and set(seen) <= train_rows and not set(seen) & test_rows
    assert trained_classes == [6]  # 8 training classes minus 2 held out
    assert any(k.startswith("val/") for k in outcome.metrics)
    assert not any(k.startswith("test/") for k in outcome.metrics)
    run = tracker.runs()[0]
    assert "val/map_at_r" in run.metrics and not any(k.startswith("test/") for k in run.metrics)
    assert run.tags["validation"] == "fraction=0.25 folds=0 fold=0 seed=0"
