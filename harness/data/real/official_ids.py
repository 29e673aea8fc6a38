"""The official class-id splits and image totals of the three benchmarks, and what a given copy
lacks against them.

Why ids and not "the first half of the classes present": the two agree only on a complete copy.
A copy missing one class (a failed extract, a filtered folder) would silently move a test class
into training, and every number trained on it would be off the benchmark without a trace. So the
split is a fixed property of the class id (CUB 1-100 / 101-200, Cars196 1-98 / 99-196; SOP by
file, Ebay_train.txt ids 1-11318 and Ebay_test.txt ids 11319-22634), and completeness is checked
separately (``completeness``): missing ids, unexpected ids, image counts against the official
totals, files the annotations list but the copy lacks. ``require_complete`` refuses a partial copy
unless ``dataset.allow_partial`` is set; then the split still follows the ids and the run is
tagged ``dataset.partial=true``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SHOWN_IDS = 20  # ids spelled out in an error message; reports carry every id


class ListedCopy(Protocol):
    """What completeness reads of a dataset copy: the fields of ``layouts.Listing`` it needs.
    Named here rather than imported, because ``layouts`` builds its split from this module's
    ids (``official_train_mask``): the ids come first, the listing after them."""

    dataset: str
    layout: str
    base: Path
    class_ids: np.ndarray
    train: np.ndarray
    absent: list[str]


@dataclass(frozen=True)
class OfficialSplit:
    dataset: str
    train_ids: range  # official class ids of the training split
    test_ids: range
    train_images: int  # official image counts
    test_images: int
    rule: str  # how the split is defined, in words

    @property
    def classes(self) -> int:
        return len(self.train_ids) + len(self.test_ids)

    @property
    def images(self) -> int:
        return self.train_images + self.test_images


OFFICIAL: dict[str, OfficialSplit] = {
    "cub200": OfficialSplit(
        "cub200",
        range(1, 101),
        range(101, 201),
        5864,
        5924,
        "class ids 1-100 train, 101-200 test (classes.txt)",
    ),
    "cars196": OfficialSplit(
        "cars196",
        range(1, 99),
        range(99, 197),
        8054,
        8131,
        "class ids 1-98 train, 99-196 test (cars_annos.mat)",
    ),
    "sop": OfficialSplit(
        "sop",
        range(1, 11319),
        range(11319, 22635),
        59551,
        60502,
        "Ebay_train.txt (class ids 1-11318) train, Ebay_test.txt (11319-22634) test",
    ),
}


def official(dataset: str) -> OfficialSplit:
    if dataset not in OFFICIAL:
        raise ValueError(f"no official split for {dataset!r}; known: {', '.join(OFFICIAL)}")
    return OFFICIAL[dataset]


def official_train_mask(dataset: str, class_ids: np.ndarray) -> np.ndarray:
    """True where the official split puts the class id into training: a property of the id alone,
    whatever else the copy holds. Ids outside the official range (reported as unexpected) follow
    the same threshold, so they can never leak across the boundary either."""
    split = official(dataset)
    return np.asarray(class_ids) <= split.train_ids[-1]


def format_ids(ids: list[int], limit: int = SHOWN_IDS) -> str:
    """Runs of consecutive ids as ranges ("1, 3-98, 150"), at most ``limit`` runs."""
    if not ids:
        return "none"
    runs: list[tuple[int, int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    shown = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit]]
    more = f", ... ({len(runs) - limit} more runs)" if len(runs) > limit else ""
    return ", ".join(shown) + more


@dataclass(frozen=True)
class Completeness:
    """A copy measured against the official dataset."""

    dataset: str
    official: OfficialSplit
    missing_train_ids: list[int]
    missing_test_ids: list[int]
    unexpected_ids: list[int]  # not an official id of the split it sits in
    train_images: int
    test_images: int
    absent: list[str]  # files the annotations list that are not on disk (not in the listing)

    @property
    def missing_ids(self) -> list[int]:
        return self.missing_train_ids + self.missing_test_ids

    @property
    def complete(self) -> bool:
        o = self.official
        return (
            not self.missing_ids
            and not self.unexpected_ids
            and not self.absent
            and self.train_images == o.train_images
            and self.test_images == o.test_images
        )

    def problems(self) -> list[str]:
        """One line per way this copy differs from the official one (empty when complete)."""
        o, out = self.official, []
        if self.missing_ids:
            out.append(
                f"{len(self.missing_ids)} of {o.classes} official class ids are missing "
                f"({len(self.missing_train_ids)} train, {len(self.missing_test_ids)} "
                f"test): {format_ids(self.missing_ids)}"
            )
        if self.unexpected_ids:
            out.append(
                f"{len(self.unexpected_ids)} class ids are not official ids of their "
                f"split: {format_ids(self.unexpected_ids)}"
            )
        if self.absent:
            shown = ", ".join(self.absent[:5]) + (" ..." if len(self.absent) > 5 else "")
            out.append(
                f"{len(self.absent)} image files listed in the annotations are not on disk: {shown}"
            )
        if (self.train_images, self.test_images) != (o.train_images, o.test_images):
            out.append(
                f"{self.train_images + self.test_images:,} images instead of "
                f"{o.images:,} (train {self.train_images:,} of {o.train_images:,}, "
                f"test {self.test_images:,} of {o.test_images:,})"
            )
        return out

    def report(self) -> dict[str, Any]:
        """The ``nirbench data check --json`` keys about completeness (a public contract)."""
        o = self.official
        return {
            "complete": self.complete,
            "official_split": o.rule,
            "official_classes": o.classes,
            "official_images": o.images,
            "official_train_images": o.train_images,
            "official_test_images": o.test_images,
            "missing_class_count": len(self.missing_ids),
            "missing_class_ids": self.missing_ids,
            "unexpected_class_count": len(self.unexpected_ids),
            "unexpected_class_ids": self.unexpected_ids,
            "absent_count": len(self.absent),
            "absent": self.absent[:10],
        }


def completeness(listing: ListedCopy) -> Completeness:
    o = official(listing.dataset)
    train_present = set(np.unique(listing.class_ids[listing.train]).tolist())
    test_present = set(np.unique(listing.class_ids[~listing.train]).tolist())
    unexpected = sorted((train_present - set(o.train_ids)) | (test_present - set(o.test_ids)))
    present = train_present | test_present
    return Completeness(
        dataset=listing.dataset,
        official=o,
        missing_train_ids=[i for i in o.train_ids if i not in present],
        missing_test_ids=[i for i in o.test_ids if i not in present],
        unexpected_ids=unexpected,
        train_images=int(listing.train.sum()),
        test_images=int((~listing.train).sum()),
        absent=list(listing.absent),
    )


class PartialDatasetError(ValueError):
    """The copy is not the complete official dataset and ``dataset.allow_partial`` is not set.
    The message lists what differs and both ways out."""

    def __init__(self, listing: ListedCopy, report: Completeness) -> None:
        self.completeness = report
        lines = "\n".join(f"  - {p}" for p in report.problems())
        super().__init__(
            f"{listing.dataset} under {listing.base} ({listing.layout} layout) is not the "
            f"complete official copy:\n{lines}\n"
            f"Training on it would move the benchmark without a trace. Complete the copy "
            f"(nirbench data check --dataset {listing.dataset} --root ... lists every missing id), "
            f"or, to train on it anyway (tests, debugging), set dataset.allow_partial=true "
            f"(--set dataset.allow_partial=true): the split stays by official class id "
            f"({report.official.rule}) and the run is tagged dataset.partial=true."
        )


def require_complete(listing: ListedCopy, allow_partial: bool) -> Completeness:
    """The listing's completeness; raises ``PartialDatasetError`` for a partial copy unless
    ``allow_partial``."""
    report = completeness(listing)
    if not report.complete and not allow_partial:
        raise PartialDatasetError(listing, report)
    return report
