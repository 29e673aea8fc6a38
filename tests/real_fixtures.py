"""Builders of miniature copies of the real datasets' layouts, for the tests: a few classes of
tiny random-texture JPEGs (PIL), a real ``cars_annos.mat`` (scipy.io.savemat, the official struct
array), and corrupt files. Each builder returns the folder a user would pass as --root and the
truth the loaders must recover (``Truth``)."""
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


def write_jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int] = (40, 30),
               quality: int = 90) -> None:
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
    return (int(rng.integers(36, 60)), int(rng.integers(28, 44))) if rng.random() < 0.7 else (
        int(rng.integers(28, 40)), int(rng.integers(40, 64)))


def make_cub_official(base: Path, per_class=(3, 2, 2, 3), seed: int = 0) -> Truth:
    """base/CUB_200_2011/{images.txt, image_class_labels.txt, classes.txt, images/...}; image
    ids interleave the classes, as in the real archive's text files they need not be grouped."""
    rng = np.random.default_rng(seed)
    folder = base / "CUB_200_2011"
    names = [f"{c:03d}.Bird_{chr(ord('A') + c)}" for c in range(1, len(per_class) + 1)]
    entries = [(c, k) for c, n in enumerate(per_class, 1) for k in range(n)]
    order = rng.permutation(len(entries))
    images, labels, paths = [], [], []
    for image_id, e in enumerate(order, 1):
        c, k = entries[e]
        rel = f"{names[c - 1]}/{names[c - 1][4:]}_{k:04d}_{image_id}.jpg"
        write_jpeg(folder / "images" / rel, rng, _size(rng))
        images.append(f"{image_id} {rel}")
        labels.append(f"{image_id} {c}")
        paths.append(f"images/{rel}")
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "classes.txt").write_text(
        "\n".join(f"{c} {n}" for c, n in enumerate(names, 1)) + "\n")
    half = len(per_class) // 2
    return Truth(base, folder, set(range(1, half + 1)), set(range(half + 1, len(per_class) + 1)),
                 sum(per_class[:half]), sum(per_class[half:]), paths)


def make_cub_flat(base: Path, per_class=(2, 3, 2, 2), seed: int = 1) -> Truth:
    """base/cub200/images/<NNN.Name>/<file>.jpg (ids in the folder names)."""
    rng = np.random.default_rng(seed)
    folder = base / "cub200"
    paths = []
    for c, n in enumerate(per_class, 1):
        for k in range(n):
            rel = f"images/{c:03d}.Bird_{c}/bird_{c}_{k}.jpg"
            write_jpeg(folder / rel, rng, _size(rng))
            paths.append(rel)
    half = len(per_class) // 2
    return Truth(base, folder, set(range(1, half + 1)), set(range(half + 1, len(per_class) + 1)),
                 sum(per_class[:half]), sum(per_class[half:]), paths)


# Official ids 1..4; alphabetical order of the names is Alpha, Beta, Mid, Zeta, i.e. ids
# 2, 4, 3, 1: an alphabetical split would train on Alpha + Beta instead of Zeta + Alpha.
CAR_NAMES = ["Zeta Roadster 2012", "Alpha C/V Van 2007", "Mid Sedan 1999", "Beta Coupe 2010"]


def make_cars_official(base: Path, per_class=(3, 2, 2, 3), seed: int = 2) -> Truth:
    """base/cars196/{cars_annos.mat, car_ims/000001.jpg, ...}. File numbers do not follow the
    class ids, and the ``test`` flag (the classification split) deliberately disagrees with the
    class-id split, so a loader using either gets the wrong answer."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    folder = base / "cars196"
    classes = np.concatenate([[c] * n for c, n in enumerate(per_class, 1)])
    classes = classes[rng.permutation(len(classes))]
    dtype = [(f, object) for f in ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2",
                                   "bbox_y2", "class", "test")]
    annotations = np.zeros((1, len(classes)), dtype=dtype)
    paths = []
    for k, c in enumerate(classes):
        rel = f"car_ims/{k + 1:06d}.jpg"
        size = _size(rng)
        write_jpeg(folder / rel, rng, size)
        annotations[0, k] = (rel, np.array([[1]], np.uint16), np.array([[2]], np.uint16),
                             np.array([[size[0] - 1]], np.uint16),
                             np.array([[size[1] - 1]], np.uint16),
                             np.array([[c]], np.uint8), np.array([[k % 2]], np.uint8))
        paths.append(rel)
    class_names = np.empty((1, len(per_class)), dtype=object)
    for k in range(len(per_class)):
        class_names[0, k] = CAR_NAMES[k % len(CAR_NAMES)]
    savemat(folder / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    half = len(per_class) // 2
    return Truth(base, folder, set(range(1, half + 1)), set(range(half + 1, len(per_class) + 1)),
                 sum(per_class[:half]), sum(per_class[half:]), paths)


def make_cars_flat(base: Path, per_class=(2, 2, 3, 2), seed: int = 3, *,
                   style: str = "names") -> Truth:
    """Class-folder Cars layouts whose alphabetical folder order disagrees with the ids:
    ``names``: base/cars196/images/<class name>/ + names.csv in official order;
    ``ids``: base/cars196/images/<id>.<name>/ with ids 9 and 10 (string order "10" < "9") and
    2, 3; ``kaggle``: base/cars196/names.csv + car_data/car_data/{train,test}/<class name>/
    ('/' in a name becomes '-' in its folder, as in the Kaggle mirror)."""
    rng = np.random.default_rng(seed)
    folder = base / "cars196"
    paths = []
    if style == "ids":
        ids = [2, 3, 9, 10]
        folders = [f"{i}.{n.replace('/', '-')}" for i, n in zip(ids, CAR_NAMES)]
    else:
        ids = [1, 2, 3, 4]
        folders = [n.replace("/", "-") for n in CAR_NAMES]
        (folder).mkdir(parents=True, exist_ok=True)
        (folder / "names.csv").write_text("\n".join(CAR_NAMES) + "\n")
    for f, n in zip(folders, per_class):
        for k in range(n):
            sub = ("car_data/car_data/" + ("train" if k % 2 == 0 else "test")
                   if style == "kaggle" else "images")
            rel = f"{sub}/{f}/{k:05d}.jpg"
            write_jpeg(folder / rel, rng, _size(rng))
            paths.append(rel)
    half = len(per_class) // 2
    train = {ids[k] for k in range(half)}
    counts = {ids[k]: per_class[k] for k in range(len(ids))}
    return Truth(base, folder, train, set(ids) - train,
                 sum(counts[i] for i in train), sum(counts[i] for i in set(ids) - train), paths)


SOP_SUPERS = {1: "bicycle_final", 2: "chair_final", 3: "toaster_final"}


def make_sop(base: Path, seed: int = 4) -> Truth:
    """base/Stanford_Online_Products/{Ebay_train.txt, Ebay_test.txt, <super>_final/...}: 3
    train and 2 test classes of 2-3 images over 3 super-classes."""
    rng = np.random.default_rng(seed)
    folder = base / "Stanford_Online_Products"
    # class id -> (super id, images); train ids 1..3, test ids 4..5 as in the real files' order
    classes = {1: (1, 2), 2: (2, 3), 3: (1, 2), 4: (3, 2), 5: (2, 3)}
    rows = {True: [], False: []}
    paths = []
    image_id = 0
    for c, (s, n) in classes.items():
        for k in range(n):
            image_id += 1
            rel = f"{SOP_SUPERS[s]}/{111000 + c}_{k}.JPG"
            write_jpeg(folder / rel, rng, _size(rng))
            rows[c <= 3].append(f"{image_id} {c} {s} {rel}")
            paths.append(rel)
    header = "image_id class_id super_class_id path"
    (folder / "Ebay_train.txt").write_text("\n".join([header, *rows[True]]) + "\n")
    (folder / "Ebay_test.txt").write_text("\n".join([header, *rows[False]]) + "\n")
    return Truth(base, folder, {1, 2, 3}, {4, 5}, 7, 5, paths,
                 {c: s for c, (s, _) in classes.items()})


def make_image_folder(base: Path, classes: int = 3, per_class: int = 4, size=(64, 48),
                      seed: int = 5) -> list[Path]:
    """ImageFolder-style base/<class>/<file>.jpg; returns the files."""
    rng = np.random.default_rng(seed)
    files = []
    for c in range(classes):
        for k in range(per_class):
            path = base / f"class_{c}" / f"{k}.jpg"
            write_jpeg(path, rng, size)
            files.append(path)
    return files
