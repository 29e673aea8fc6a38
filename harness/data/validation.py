"""A class-disjoint validation split carved out of the TRAINING classes.

Hyperparameter search and honest model selection must never look at the test classes
(PEERS.md, Reality Check). ``split_validation`` turns a bundle into a new one whose

- ``train`` holds the remaining training classes, and
- ``test`` holds the held-out training classes (the validation set),

both with labels re-made contiguous (0..C-1, ascending original class id), so the engine can run
unchanged: it never sees the original test split. Which classes are held out depends only on
(number of training classes, fraction or folds/fold, seed), never on the run seed, so every trial
of a search and both arms of a comparison validate on the same classes.

Two ways to choose the held-out classes (exactly one):
- ``fraction`` f in (0, 1): round(f * C) classes (at least 1) of a seeded permutation;
- ``folds`` k >= 2 with ``fold`` i in [0, k): the permutation cut into k near-equal folds
  (``numpy.array_split``), fold i held out (Reality Check used 4 folds).
"""

from __future__ import annotations

import numpy as np
import torch

from nirbench.harness.data.base import DatasetBundle, ImageSplit

MIN_CLASSES = 2  # each side needs at least two classes for retrieval metrics to mean anything


class ValidationSplitError(ValueError):
    """The requested validation split cannot be made from this dataset's training classes."""


def heldout_classes(
    num_classes: int, *, fraction: float = 0.0, folds: int = 0, fold: int = 0, seed: int = 0
) -> np.ndarray:
    """Sorted ids (0..num_classes-1) of the training classes held out for validation."""
    if (fraction > 0) == (folds > 0):
        raise ValidationSplitError(
            "give exactly one of fraction (0 < f < 1) or folds (k >= 2), "
            f"got fraction={fraction}, folds={folds}"
        )
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A1])).permutation(
        num_classes
    )
    if fraction > 0:
        if not 0 < fraction < 1:
            raise ValidationSplitError(f"fraction must be in (0, 1), got {fraction}")
        held = order[: max(1, int(round(fraction * num_classes)))]
    else:
        if folds < 2 or not 0 <= fold < folds:
            raise ValidationSplitError(
                f"folds must be >= 2 and 0 <= fold < folds, got folds={folds}, fold={fold}"
            )
        if folds > num_classes:
            raise ValidationSplitError(
                f"{folds} folds need at least {folds} training classes, "
                f"the dataset has {num_classes}"
            )
        held = np.array_split(order, folds)[fold]
    kept = num_classes - len(held)
    if len(held) < MIN_CLASSES or kept < MIN_CLASSES:
        raise ValidationSplitError(
            f"a validation split of {len(held)} of {num_classes} training classes leaves "
            f"{len(held)} validation and {kept} training classes; both need at least "
            f"{MIN_CLASSES}. Change validation.fraction / validation.folds."
        )
    return np.sort(held)


def _subset(split: ImageSplit, classes: np.ndarray) -> ImageSplit:
    """The images of ``classes`` (original ids) with labels mapped to 0..len(classes)-1."""
    classes_t = torch.as_tensor(classes, dtype=torch.int64)
    mask = torch.isin(split.labels, classes_t)
    remap = torch.full((split.num_classes,), -1, dtype=torch.int64)
    remap[classes_t] = torch.arange(len(classes_t))
    return split.subset(mask, remap[split.labels[mask]])


def split_validation(
    bundle: DatasetBundle, *, fraction: float = 0.0, folds: int = 0, fold: int = 0, seed: int = 0
) -> DatasetBundle:
    """train = remaining training classes, test = held-out training classes (the validation set).
    The bundle's own test split is dropped: nothing built from the result can evaluate on it."""
    num = bundle.train.num_classes
    held = heldout_classes(num, fraction=fraction, folds=folds, fold=fold, seed=seed)
    kept = np.setdiff1d(np.arange(num), held)
    val = _subset(bundle.train, held)
    train = _subset(bundle.train, kept)
    if len(val) and int(torch.bincount(val.labels).min()) < 2:
        raise ValidationSplitError(
            "a validation class has fewer than 2 images; retrieval "
            "metrics need a second image of the query's class"
        )
    info = {
        **bundle.info,
        "validation": {
            "fraction": fraction,
            "folds": folds,
            "fold": fold,
            "seed": seed,
            "heldout_train_classes": held.tolist(),
            "train_classes": kept.tolist(),
            "images_train": len(train),
            "images_val": len(val),
        },
    }
    return DatasetBundle(f"{bundle.name}:val", train, val, info)


__all__ = ["split_validation", "heldout_classes", "ValidationSplitError"]
