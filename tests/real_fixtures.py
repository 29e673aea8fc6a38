"""Builders of miniature copies of the real datasets' layouts, for the tests: a few classes of
tiny random-texture JPEGs (PIL), a real ``cars_annos.mat`` (scipy.io.savemat, the official struct
array), and corrupt files. Each builder returns the folder a user would pass as --root and the
truth the loaders must recover (``Truth``).

The copies use the datasets' real class ids, with gaps, as a filtered copy of the real dataset
would (e.g. CUB ids 1, 3 train and 101, 104 test): they are partial copies, so loading them needs
``allow_partial``, and a loader that split "the first half of the ids present" instead of by
official id would get them wrong whenever the halves are uneven (``cub_ids``, ``cars_ids``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Truth:
    root: Path  # what --root points at
    folder: Path  # the dataset folder itself (paths are relative to it)
    train_classes: set  # class ids (or names) of the training split
    test_classes: set
    train_images: int
    test_images: int
    paths: list[str] = field(default_factory=list)  # every image, relative to folder
    super_of_class: dict = field(default_factory=dict)  # SOP: class id -> super-class id


def write_jpeg(
    path: Path, rng: np.random.Generator, size: tuple[int, int] = (40, 30), quality: int = 90
) -> None:
    """A random-texture RGB JPEG of size (width, height): blocky colour noise, so decode and
    resize produce non-trivial pixels."""
    w, h = size
    low = rng.integers(0, 256, (max(2, h // 6), max(2, w // 6), 3), dtype=np.uint8)
    image = Image.fromarray(low).resize((w, h), Image.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=quality)


def corrupt(path: Path) -> None:
    """Truncate a JPEG to a third of its bytes: the header still opens, decoding fails."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _size(rng: np.random.Generator) -> tuple[int, int]:
    # landscape and portrait, so shorter-side resizing is exercised both ways
    return (
        (int(rng.integers(36, 60)), int(rng.integers(28, 44)))
        if rng.random() < 0.7
        else (int(rng.integers(28, 40)), int(rng.integers(40, 64)))
    )


def _gapped_ids(n: int, first_test: int) -> tuple[int, ...]:
    """n official ids with gaps: the first n // 2 odd ids 1, 3, 5, ... train, the rest
    first_test, first_test + 3, ... test."""
    half = n // 2
    return tuple(1 + 2 * k for k in range(half)) + tuple(
        first_test + 3 * k for k in range(n - half)
    )


def cub_ids(n: int) -> tuple[int, ...]:
    return _gapped_ids(n, 101)


def cars_ids(n: int) -> tuple[int, ...]:
    return _gapped_ids(n, 99)


def _truth(base: Path, folder: Path, ids, per_class, last_train: int, paths) -> Truth:
    counts = dict(zip(ids, per_class))
    train = {i for i in ids if i <= last_train}
    test = set(ids) - train
    return Truth(
        base,
        folder,
        train,
        test,
        sum(counts[i] for i in train),
        sum(counts[i] for i in test),
        paths,
    )


def cub_name(class_id: int) -> str:
    return f"{class_id:03d}.Bird_{class_id}"


def make_cub_official(
    base: Path, per_class=(3, 2, 2, 3), seed: int = 0, *, ids: tuple[int, ...] | None = None
) -> Truth:
    """base/CUB_200_2011/{images.txt, image_class_labels.txt, classes.txt, images/...}: images of
    the official class ids ``ids`` (default ``cub_ids``), classes.txt with all 200 classes as in
    the real archive; image ids interleave the classes, as in the real archive's text files they
    need not be grouped."""
    rng = np.random.default_rng(seed)
    ids = ids or cub_ids(len(per_class))
    folder = base / "CUB_200_2011"
    entries = [(c, k) for c, n in zip(ids, per_class) for k in range(n)]
    order = rng.permutation(len(entries))
    images, labels, paths = [], [], []
    for image_id, e in enumerate(order, 1):
        c, k = entries[e]
        rel = f"{cub_name(c)}/{cub_name(c)[4:]}_{k:04d}_{image_id}.jpg"
        write_jpeg(folder / "images" / rel, rng, _size(rng))
        images.append(f"{image_id} {rel}")
        labels.append(f"{image_id} {c}")
        paths.append(f"images/{rel}")
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "classes.txt").write_text(
        "\n".join(f"{c} {cub_name(c)}" for c in range(1, 201)) + "\n"
    )
    return _truth(base, folder, ids, per_class, 100, paths)


def make_cub_flat(
    base: Path, per_class=(2, 3, 2, 2), seed: int = 1, *, ids: tuple[int, ...] | None = None
) -> Truth:
    """base/cub200/images/<NNN.Name>/<file>.jpg (official ids in the folder names)."""
    rng = np.random.default_rng(seed)
    ids = ids or cub_ids(len(per_class))
    folder = base / "cub200"
    paths = []
    for c, n in zip(ids, per_class):
        for k in range(n):
            rel = f"images/{cub_name(c)}/bird_{c}_{k}.jpg"
            write_jpeg(folder / rel, rng, _size(rng))
            paths.append(rel)
    return _truth(base, folder, ids, per_class, 100, paths)


# The four classes of the miniature Cars copies: official ids 1, 2 (train) and 99, 100 (test).
# Alphabetical order of the names is Alpha, Beta, Mid, Zeta, i.e. ids 2, 100, 99, 1: an
# alphabetical split would train on Alpha + Beta instead of Zeta + Alpha.
CAR_IDS = (1, 2, 99, 100)
CAR_NAMES = ["Zeta Roadster 2012", "Alpha C/V Van 2007", "Mid Sedan 1999", "Beta Coupe 2010"]


def car_names_196() -> list[str]:
    """All 196 class names in official id order, as cars_annos.mat and names.csv hold them;
    CAR_NAMES sit at CAR_IDS."""
    names = [f"Other Car {i} 2000" for i in range(1, 197)]
    for i, name in zip(CAR_IDS, CAR_NAMES):
        names[i - 1] = name
    return names


def make_cars_official(
    base: Path, per_class=(3, 2, 2, 3), seed: int = 2, *, ids: tuple[int, ...] | None = None
) -> Truth:
    """base/cars196/{cars_annos.mat, car_ims/000001.jpg, ...} with images of the official class
    ids ``ids`` (default CAR_IDS) and all 196 class names. File numbers do not follow the class
    ids, and the ``test`` flag (the classification split) deliberately disagrees with the
    class-id split, so a loader using either gets the wrong answer."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    ids = ids or (CAR_IDS if len(per_class) == 4 else cars_ids(len(per_class)))
    folder = base / "cars196"
    classes = np.concatenate([[c] * n for c, n in zip(ids, per_class)])
    classes = classes[rng.permutation(len(classes))]
    dtype = [
        (f, object)
        for f in ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
    ]
    annotations = np.zeros((1, len(classes)), dtype=dtype)
    paths = []
    for k, c in enumerate(classes):
        rel = f"car_ims/{k + 1:06d}.jpg"
        size = _size(rng)
        write_jpeg(folder / rel, rng, size)
        annotations[0, k] = (
            rel,
            np.array([[1]], np.uint16),
            np.array([[2]], np.uint16),
            np.array([[size[0] - 1]], np.uint16),
            np.array([[size[1] - 1]], np.uint16),
            np.array([[c]], np.uint8),
            np.array([[k % 2]], np.uint8),
        )
        paths.append(rel)
    names = car_names_196()
    class_names = np.empty((1, len(names)), dtype=object)
    for k, name in enumerate(names):
        class_names[0, k] = name
    savemat(folder / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    return _truth(base, folder, ids, per_class, 98, paths)


def make_cars_flat(
    base: Path, per_class=(2, 2, 3, 2), seed: int = 3, *, style: str = "names"
) -> Truth:
    """Class-folder Cars layouts whose alphabetical folder order disagrees with the ids:
    ``names``: base/cars196/images/<class name>/ + names.csv (all 196, official order);
    ``ids``: base/cars196/images/<id>.<name>/ with ids 2, 3 (train) and 99, 100 (string order
    "100" < "2" < "3" < "99"); ``kaggle``: base/cars196/names.csv +
    car_data/car_data/{train,test}/<class name>/ ('/' in a name becomes '-' in its folder, as in
    the Kaggle mirror)."""
    rng = np.random.default_rng(seed)
    folder = base / "cars196"
    paths = []
    if style == "ids":
        ids = [2, 3, 99, 100]
        folders = [f"{i}.{n.replace('/', '-')}" for i, n in zip(ids, CAR_NAMES)]
    else:
        ids = list(CAR_IDS)
        folders = [n.replace("/", "-") for n in CAR_NAMES]
        (folder).mkdir(parents=True, exist_ok=True)
        (folder / "names.csv").write_text("\n".join(car_names_196()) + "\n")
    for f, n in zip(folders, per_class):
        for k in range(n):
            sub = (
                "car_data/car_data/" + ("train" if k % 2 == 0 else "test")
                if style == "kaggle"
                else "images"
            )
            rel = f"{sub}/{f}/{k:05d}.jpg"
            write_jpeg(folder / rel, rng, _size(rng))
            paths.append(rel)
    return _truth(base, folder, ids, per_class, 98, paths)


SOP_SUPERS = {1: "bicycle_final", 2: "chair_final", 3: "toaster_final"}


SOP_TRAIN_IDS = (1, 2, 5)  # official train ids are 1-11318, test ids 11319-22634
SOP_TEST_IDS = (11319, 11400)


def make_sop(base: Path, seed: int = 4) -> Truth:
    """base/Stanford_Online_Products/{Ebay_train.txt, Ebay_test.txt, <super>_final/...}: 3
    train and 2 test classes (real ids with gaps) of 2-3 images over 3 super-classes."""
    rng = np.random.default_rng(seed)
    folder = base / "Stanford_Online_Products"
    # class id -> (super id, images), in the real files' order
    classes = {1: (1, 2), 2: (2, 3), 5: (1, 2), 11319: (3, 2), 11400: (2, 3)}
    rows = {True: [], False: []}
    paths = []
    image_id = 0
    for c, (s, n) in classes.items():
        for k in range(n):
            image_id += 1
            rel = f"{SOP_SUPERS[s]}/{111000 + c}_{k}.JPG"
            write_jpeg(folder / rel, rng, _size(rng))
            rows[c in SOP_TRAIN_IDS].append(f"{image_id} {c} {s} {rel}")
            paths.append(rel)
    header = "image_id class_id super_class_id path"
    (folder / "Ebay_train.txt").write_text("\n".join([header, *rows[True]]) + "\n")
    (folder / "Ebay_test.txt").write_text("\n".join([header, *rows[False]]) + "\n")
    return Truth(
        base,
        folder,
        set(SOP_TRAIN_IDS),
        set(SOP_TEST_IDS),
        7,
        5,
        paths,
        {c: s for c, (s, _) in classes.items()},
    )


def make_image_folder(
    base: Path, classes: int = 3, per_class: int = 4, size=(64, 48), seed: int = 5
) -> list[Path]:
    """ImageFolder-style base/<class>/<file>.jpg; returns the files."""
    rng = np.random.default_rng(seed)
    files = []
    for c in range(classes):
        for k in range(per_class):
            path = base / f"class_{c}" / f"{k}.jpg"
            write_jpeg(path, rng, size)
            files.append(path)
    return files
