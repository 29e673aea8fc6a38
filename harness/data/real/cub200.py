"""CUB200-2011: the official archive layout and the flat ``cub200/images/<class>/`` layout.

Split (PAPER.md section 5): class ids 1-100 train (5,864 images), 101-200 test (5,924 images),
by id whatever the copy holds (``official_ids.py``). The archive's ``train_test_split.txt`` is the
classification split and is deliberately ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nirbench.harness.data.real.layouts import (
    DatasetLayoutError,
    Listing,
    candidate_dirs,
    class_folder_listing,
    drop_absent,
    parse_int,
    read_names_file,
    read_table,
    require_root,
)
from nirbench.harness.data.real.official_ids import official_train_mask

NAME = "cub200"
URL = "https://data.caltech.edu/records/65de6-vp158"
OFFICIAL_FILES = ("images.txt", "image_class_labels.txt", "classes.txt")
HELP = f"""\
CUB200-2011: download CUB_200_2011.tgz from {URL} and extract it; --root / dataset.root may
point at the folder holding CUB_200_2011/ or at CUB_200_2011/ itself. Expected layouts:
  official  CUB_200_2011/
              images.txt               <image id> <class folder>/<file>.jpg
              image_class_labels.txt   <image id> <class id 1-200>
              classes.txt              <class id> <class folder>
              images/<class folder>/<file>.jpg
  flat      cub200/images/<id>.<name>/<file>.jpg   (e.g. images/001.Black_footed_Albatross/),
            or class folders without ids plus cub200/classes.txt listing them in official order
Split: classes 1-100 train, 101-200 test."""
OFFICIAL_HINT = (
    "the official CUB_200_2011 layout needs images.txt, image_class_labels.txt, "
    "classes.txt and images/<class>/<file>.jpg"
)
FLAT_HINT = "the flat layout is cub200/images/<id>.<class name>/<file>.jpg"


def list_images(root: str | Path | None) -> Listing:
    base = require_root(NAME, root, HELP)
    candidates = candidate_dirs(base, ("CUB_200_2011", "cub200", "CUB200"))
    for folder in candidates:
        if any((folder / f).exists() for f in OFFICIAL_FILES):
            return _official(folder)
    for folder in candidates:
        if (folder / "images").is_dir():
            return _flat(folder)
    raise DatasetLayoutError(
        f"no CUB200-2011 layout under {base} (looked in "
        f"{', '.join(str(c) for c in candidates)}).\n{HELP}"
    )


def _official(folder: Path) -> Listing:
    for required in OFFICIAL_FILES:
        if not (folder / required).is_file():
            raise DatasetLayoutError(f"{folder / required} is missing; {OFFICIAL_HINT}.\n{HELP}")
    if not (folder / "images").is_dir():
        raise DatasetLayoutError(f"{folder / 'images'} is missing; {OFFICIAL_HINT}.\n{HELP}")
    hint = OFFICIAL_HINT
    images = {
        parse_int(i, folder / "images.txt", "image id"): p
        for i, p in read_table(folder / "images.txt", 2, hint)
    }
    labels_file = folder / "image_class_labels.txt"
    labels = {
        parse_int(i, labels_file, "image id"): parse_int(c, labels_file, "class id")
        for i, c in read_table(labels_file, 2, hint)
    }
    classes_file = folder / "classes.txt"
    names = {
        parse_int(c, classes_file, "class id"): n for c, n in read_table(classes_file, 2, hint)
    }
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        raise DatasetLayoutError(
            f"{labels_file} has no class for image ids {unlabelled[:5]} "
            f"listed in {folder / 'images.txt'}"
        )
    unknown = sorted({labels[i] for i in images} - set(names))
    if unknown:
        raise DatasetLayoutError(f"{classes_file} does not define class ids {unknown[:5]}")
    order = sorted(images)
    paths, (class_ids,), absent = drop_absent(
        NAME,
        folder,
        [f"images/{images[i]}" for i in order],
        np.asarray([labels[i] for i in order], dtype=np.int64),
    )
    return Listing(
        NAME,
        "official",
        folder,
        paths,
        class_ids,
        official_train_mask(NAME, class_ids),
        names,
        absent=absent,
    )


def _flat(folder: Path) -> Listing:
    names_file = folder / "classes.txt"
    names = read_names_file(names_file) if names_file.is_file() else None
    return class_folder_listing(
        NAME, "flat", folder, [folder / "images"], names, f"{FLAT_HINT}.\n{HELP}"
    )
