"""What every real-dataset layout reader produces (a ``Listing``), and the helpers they share.

A reader (``cub200.py``, ``cars196.py``, ``sop.py``) only finds files and class ids; it decodes
nothing. Decoding happens once, in ``cache.py``; checking in ``check.py``. Keeping the listing
separate lets ``nirbench data check`` validate a copy without building a cache.

Class ids are the datasets' own (1-based) ids, so the class-disjoint split follows the official
annotations, never the alphabetical order of folders, and never the classes a copy happens to hold
(``official_ids.py``: the split is a property of the id).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nirbench.harness.data.real.official_ids import official_train_mask

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class DatasetLayoutError(FileNotFoundError):
    """The root does not hold a layout we know, or a file the layout needs is missing; the
    message names the missing file, the expected tree and where to download the dataset."""

    def __str__(self) -> str:  # FileNotFoundError would prefix errno noise
        return str(self.args[0])


class UnreadableImagesError(ValueError):
    """Some images of a dataset cannot be decoded (missing, truncated, not an image). Training
    on the rest would silently change the benchmark, so loading refuses and names them."""

    def __init__(
        self, dataset: str, total: int, failures: list[tuple[str, str]], shown: int = 10
    ) -> None:
        self.dataset, self.total, self.failures = dataset, total, failures
        listed = "\n".join(f"  {path}: {error}" for path, error in failures[:shown])
        more = f"\n  ... and {len(failures) - shown} more" if len(failures) > shown else ""
        super().__init__(
            f"{len(failures)} of {total} images of {dataset} cannot be read:\n{listed}{more}\n"
            f"Re-download or replace these files (nirbench data check --dataset {dataset} "
            f"--root ... lists them all); nothing is trained on a partial dataset."
        )


@dataclass
class Listing:
    """Every image of one dataset copy, in a fixed order, with its class and split."""

    dataset: str  # registry name: cub200, cars196, sop
    layout: str  # which layout was found, e.g. "official" or "flat"
    base: Path  # image paths are relative to this folder
    paths: list[str]  # relative POSIX paths, one per image
    class_ids: np.ndarray  # int64 (N,): the dataset's own class id of each image
    train: np.ndarray  # bool (N,): image belongs to the training split
    class_names: dict[int, str] = field(default_factory=dict)  # class id -> name (if known)
    super_class_ids: np.ndarray | None = None  # int64 (N,), SOP only: its super-class id
    super_class_names: dict[int, str] = field(default_factory=dict)
    # Files the annotations list that are not on disk: left out of ``paths``, reported by
    # ``official_ids.completeness`` (a partial copy), never decoded.
    absent: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.paths)
        if self.class_ids.shape != (n,) or self.train.shape != (n,):
            raise ValueError(
                f"listing of {self.dataset}: class_ids and train need one entry per image ({n})"
            )
        if n == 0:
            raise DatasetLayoutError(
                f"{self.dataset} ({self.layout} layout) under {self.base} lists no images"
            )
        for name, mask in (("training", self.train), ("test", ~self.train)):
            if not mask.any():
                raise DatasetLayoutError(
                    f"{self.dataset} ({self.layout} layout) under {self.base} has no {name} images"
                )
        overlap = np.intersect1d(self.class_ids[self.train], self.class_ids[~self.train])
        if len(overlap):
            raise ValueError(
                f"{self.dataset}: classes {overlap[:5].tolist()} are in both splits; "
                f"the benchmark's splits are class-disjoint"
            )

    def split_counts(self) -> dict[str, int]:
        return {
            "train_classes": int(len(np.unique(self.class_ids[self.train]))),
            "train_images": int(self.train.sum()),
            "test_classes": int(len(np.unique(self.class_ids[~self.train]))),
            "test_images": int((~self.train).sum()),
        }


def drop_absent(
    dataset: str,
    base: Path,
    paths: list[str],
    *columns: np.ndarray,
) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Split the files an annotation file lists into those on disk and those absent (a failed or
    partial extract): (present paths, the columns restricted to them, absent paths). One stat per
    file, so a missing half of car_ims/ is reported in a second instead of as thousands of
    decoding errors. Nothing on disk at all is a layout error: the images folder is elsewhere."""
    on_disk = np.fromiter(((base / p).is_file() for p in paths), dtype=bool, count=len(paths))
    if len(paths) and not on_disk.any():
        raise DatasetLayoutError(
            f"{dataset}: none of the {len(paths)} images listed by the "
            f"annotations is under {base} (first: {base / paths[0]}); "
            f"extract the images next to the annotation files"
        )
    absent = [p for p, ok in zip(paths, on_disk) if not ok]
    kept = [p for p, ok in zip(paths, on_disk) if ok]
    return kept, [np.asarray(c)[on_disk] for c in columns], absent


def candidate_dirs(root: Path, subfolders: tuple[str, ...]) -> list[Path]:
    """``root`` itself and the usual dataset folders inside it: users point --root either at the
    folder that holds ``CUB_200_2011/`` or at ``CUB_200_2011/`` itself."""
    out = [root]
    for name in subfolders:
        for candidate in (root / name, root / name.lower()):
            if candidate.is_dir() and candidate not in out:
                out.append(candidate)
    return out


def require_root(dataset: str, root: str | Path | None, help_text: str) -> Path:
    if root is None or str(root) == "":
        raise DatasetLayoutError(
            f"dataset {dataset} needs a root folder (dataset.root / --root).\n{help_text}"
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetLayoutError(f"{dataset}: root {path} is not a folder.\n{help_text}")
    return path


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_table(
    path: Path, columns: int, layout_hint: str, header: tuple[str, ...] | None = None
) -> list[list[str]]:
    """Whitespace-separated rows of exactly ``columns`` fields (the last may hold spaces)."""
    if not path.is_file():
        raise DatasetLayoutError(f"{path} is missing; {layout_hint}")
    rows = []
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    start = 0
    if header is not None:
        if not lines or tuple(lines[0].split()) != header:
            got = lines[0] if lines else "(empty file)"
            raise DatasetLayoutError(
                f"{path}: first line should be the header "
                f"{' '.join(header)!r}, got {got!r}; {layout_hint}"
            )
        start = 1
    for number, line in enumerate(lines[start:], start + 1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=columns - 1)
        if len(fields) != columns:
            raise DatasetLayoutError(
                f"{path}, line {number}: expected {columns} fields, got {line!r}; {layout_hint}"
            )
        rows.append(fields)
    return rows


def parse_int(value: str, path: Path, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetLayoutError(f"{path}: {what} must be an integer, got {value!r}") from None


_LEADING_ID = re.compile(r"^(\d+)(?:[._\- ]|$)")


def _normalised(name: str) -> str:
    # Class names that contain '/' ("Ram C/V Cargo Van Minivan 2012") become '-' in folder names.
    return re.sub(r"\s+", " ", name.replace("/", "-")).strip().lower()


def class_ids_of_folders(
    folders: list[str], names: list[str] | None, container: Path, layout_hint: str
) -> dict[str, int]:
    """Official 1-based class id of each class folder, from (in this order) a class-names file in
    official id order (``names``), or a leading number in every folder name (``001.Black_footed_
    Albatross``, ``17``, ``017_Acura...``). Alphabetical folder order is never used: for Cars196 it
    disagrees with the official ids."""
    if names is not None:
        by_name = {_normalised(n): i for i, n in enumerate(names, 1)}
        ids, unknown = {}, []
        for folder in folders:
            # "AM General Hummer SUV 2000" or "001.AM General Hummer SUV 2000"
            match = by_name.get(
                _normalised(folder), by_name.get(_normalised(_LEADING_ID.sub("", folder)))
            )
            if match is None:
                unknown.append(folder)
            else:
                ids[folder] = match
        if unknown:
            raise DatasetLayoutError(
                f"{container}: class folders {unknown[:5]} are not in the class-names file "
                f"({len(names)} names); {layout_hint}"
            )
        return ids
    ids = {}
    for folder in folders:
        found = _LEADING_ID.match(folder)
        if found is None:
            raise DatasetLayoutError(
                f"{container}: class folder {folder!r} has no leading class id, and no "
                f"class-names file was found, so the official class order is unknown "
                f"(alphabetical folder order is not it); {layout_hint}"
            )
        ids[folder] = int(found.group(1))
    return ids


def check_unique_ids(ids: dict[str, int], container: Path) -> None:
    seen: dict[int, str] = {}
    for folder, class_id in ids.items():
        if class_id in seen:
            raise DatasetLayoutError(
                f"{container}: folders {seen[class_id]!r} and {folder!r} "
                f"both map to class id {class_id}"
            )
        seen[class_id] = folder


def class_folder_listing(
    dataset: str,
    layout: str,
    base: Path,
    containers: list[Path],
    names: list[str] | None,
    layout_hint: str,
) -> Listing:
    """Images in ``<container>/<class folder>/<file>`` (several containers are merged, e.g. the
    Kaggle Cars mirror's train/ and test/), ids from ``class_ids_of_folders``, split by official
    id."""
    paths, ids, class_names = [], [], {}
    folder_ids: dict[str, int] = {}
    for container in containers:
        folders = sorted(p.name for p in container.iterdir() if p.is_dir())
        if not folders:
            raise DatasetLayoutError(f"{container} has no class folders; {layout_hint}")
        for folder, class_id in class_ids_of_folders(
            folders, names, container, layout_hint
        ).items():
            if folder_ids.setdefault(folder, class_id) != class_id:
                raise DatasetLayoutError(f"class folder {folder!r} maps to two ids")
            class_names[class_id] = names[class_id - 1] if names else folder
            for file in image_files(container / folder):
                paths.append(file.relative_to(base).as_posix())
                ids.append(class_id)
    check_unique_ids(folder_ids, base)
    class_ids = np.asarray(ids, dtype=np.int64)
    return Listing(
        dataset,
        layout,
        base,
        paths,
        class_ids,
        official_train_mask(dataset, class_ids),
        class_names,
    )


def read_names_file(path: Path) -> list[str]:
    """One class name per line, official id order; a CSV's first column; a leading id is kept
    out of the name (``1 001.Black_footed_Albatross`` -> ``001.Black_footed_Albatross``)."""
    names = []
    with open(path, encoding="utf-8", newline="") as fh:
        if path.suffix.lower() == ".csv":
            return [row[0].strip() for row in csv.reader(fh) if row and row[0].strip()]
        for line in fh:
            line = line.strip()
            first, _, rest = line.partition(" ")
            if line:
                names.append(rest.strip() if first.isdigit() and rest.strip() else line)
    return names
