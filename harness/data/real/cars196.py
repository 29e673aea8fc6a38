"""Cars196 (Stanford Cars): the official ``cars_annos.mat`` + ``car_ims/`` layout and the flat
class-folder layout (including the Kaggle mirror's ``car_data/car_data/{train,test}/<class>/``).

Split (PAPER.md section 5): class ids 1-98 train (8,054 images), 99-196 test (8,131 images), by
id whatever the copy holds (``official_ids.py``). The
class id comes from the annotations: ``class`` (1-based) in ``cars_annos.mat``, or for the flat
layout a leading id in the folder name or a class-names file in official order. The ``test`` flag
in ``cars_annos.mat`` is the classification split and is deliberately ignored; so are the Kaggle
mirror's train/ and test/ folders (merged). Alphabetical folder order is NOT the official order
(e.g. official id 1 is "AM General Hummer SUV 2000", and "Audi S4 Sedan 2012" precedes "Audi S4
Sedan 2007").
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
    read_names_file,
    require_root,
)
from nirbench.harness.data.real.official_ids import official_train_mask

NAME = "cars196"
URL = "http://ai.stanford.edu/~jkrause/cars/car_dataset.html"
KAGGLE = "https://www.kaggle.com/datasets/jutrera/stanford-car-dataset-by-classes-folder"
NAMES_FILES = ("names.csv", "class_names.txt", "classes.txt")
HELP = f"""\
Cars196: download car_ims.tgz and cars_annos.mat from {URL} (or the Kaggle mirror
{KAGGLE}); --root / dataset.root may point at the folder holding them or one level above.
Expected layouts:
  official  cars_annos.mat   (struct array 'annotations': relative_im_path, bbox_x1..bbox_y2,
                              class (1-based id), test; cell array 'class_names')
            car_ims/<file>.jpg
  flat      images/<id>.<class name>/<file>.jpg   (e.g. images/001.AM General Hummer SUV 2000/),
            or class folders named by class name plus names.csv (one class name per line, in
            official id order), as in the Kaggle mirror: names.csv +
            car_data/car_data/{{train,test}}/<class name>/<file>.jpg (train/ and test/ are merged)
Split: class ids 1-98 train, 99-196 test (by official class id, not folder order)."""
OFFICIAL_HINT = "the official layout needs cars_annos.mat and car_ims/<file>.jpg next to it"
FLAT_HINT = (
    "the flat layout is images/<id>.<class name>/<file>.jpg, or class-name folders "
    "plus names.csv in official id order"
)
KAGGLE_CONTAINERS = ("car_data/car_data", "car_data", ".")


def list_images(root: str | Path | None) -> Listing:
    base = require_root(NAME, root, HELP)
    candidates = candidate_dirs(base, ("cars196", "Cars196", "stanford_cars", "car_dataset"))
    for folder in candidates:
        if (folder / "cars_annos.mat").is_file():
            return _official(folder)
    for folder in candidates:
        if (folder / "car_ims").is_dir():
            raise DatasetLayoutError(
                f"{folder / 'cars_annos.mat'} is missing; {OFFICIAL_HINT}.\n{HELP}"
            )
    for folder in candidates:
        containers = _flat_containers(folder)
        if containers:
            return _flat(folder, containers)
    raise DatasetLayoutError(
        f"no Cars196 layout under {base} (looked in "
        f"{', '.join(str(c) for c in candidates)}).\n{HELP}"
    )


def read_annotations(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(relative_im_path per image, 1-based class per image, class names) from cars_annos.mat."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=True)
    except Exception as err:  # noqa: BLE001 - any unreadable .mat gets one clear message
        raise DatasetLayoutError(
            f"{path} is not a readable MATLAB file ({type(err).__name__}: {err}); {OFFICIAL_HINT}"
        ) from err
    if "annotations" not in mat:
        raise DatasetLayoutError(
            f"{path} has no 'annotations' struct array (found "
            f"{sorted(k for k in mat if not k.startswith('__'))}); "
            f"{OFFICIAL_HINT}"
        )
    annotations = np.atleast_1d(mat["annotations"])
    fields = annotations.dtype.names or ()
    missing = [f for f in ("relative_im_path", "class") if f not in fields]
    if missing:
        raise DatasetLayoutError(
            f"{path}: 'annotations' lacks the fields {missing} (has "
            f"{list(fields)}); {OFFICIAL_HINT}"
        )
    paths = [str(a["relative_im_path"]).strip() for a in annotations]
    classes = np.asarray([int(a["class"]) for a in annotations], dtype=np.int64)
    names = [str(n) for n in np.atleast_1d(mat["class_names"])] if "class_names" in mat else []
    return paths, classes, names


def _official(folder: Path) -> Listing:
    if not (folder / "car_ims").is_dir():
        raise DatasetLayoutError(f"{folder / 'car_ims'} is missing; {OFFICIAL_HINT}.\n{HELP}")
    listed, listed_ids, names = read_annotations(folder / "cars_annos.mat")
    paths, (class_ids,), absent = drop_absent(NAME, folder, listed, listed_ids)
    class_names = {i: n for i, n in enumerate(names, 1)}
    return Listing(
        NAME,
        "official",
        folder,
        paths,
        class_ids,
        official_train_mask(NAME, class_ids),
        class_names,
        absent=absent,
    )


def _flat_containers(folder: Path) -> list[Path]:
    if (folder / "images").is_dir():
        return [folder / "images"]
    for sub in KAGGLE_CONTAINERS:
        pair = [folder / sub / "train", folder / sub / "test"]
        if all(p.is_dir() for p in pair):
            return pair
    return []


def _flat(folder: Path, containers: list[Path]) -> Listing:
    names = None
    for candidate in NAMES_FILES:
        if (folder / candidate).is_file():
            names = read_names_file(folder / candidate)
            break
    layout = "flat" if containers[0].name == "images" else "flat-train-test"
    return class_folder_listing(NAME, layout, folder, containers, names, f"{FLAT_HINT}.\n{HELP}")
