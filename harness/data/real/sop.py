"""Stanford Online Products: ``Stanford_Online_Products/Ebay_train.txt`` and ``Ebay_test.txt``
(header ``image_id class_id super_class_id path``) with the image folders next to them.

Split (PAPER.md section 5): Ebay_train.txt, 11,318 classes (ids 1-11318) / 59,551 images;
Ebay_test.txt, 11,316 classes (ids 11319-22634) / 60,502 images. The split follows the file; an id
in the wrong file is reported as unexpected by ``official_ids.completeness``. The 12 super-classes
(bicycle, cabinet, ... toaster) are kept: their ids as in the files (1-12) and their names from the
image folders (``bicycle_final``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nirbench.harness.data.real.layouts import (
    DatasetLayoutError,
    Listing,
    candidate_dirs,
    drop_absent,
    parse_int,
    read_table,
    require_root,
)

NAME = "sop"
URL = "https://cvgl.stanford.edu/projects/lifted_struct/"
HEADER = ("image_id", "class_id", "super_class_id", "path")
SPLIT_FILES = ("Ebay_train.txt", "Ebay_test.txt")
HELP = f"""\
Stanford Online Products: download Stanford_Online_Products.zip from {URL} and extract it;
--root / dataset.root may point at the folder holding Stanford_Online_Products/ or at it.
Expected layout:
  Stanford_Online_Products/
    Ebay_train.txt     image_id class_id super_class_id path   (header line, then one row per image)
    Ebay_test.txt      same columns
    <super class>_final/<class id>_<n>.JPG   (e.g. bicycle_final/111085122871_0.JPG)
Split: Ebay_train.txt classes train, Ebay_test.txt classes test."""
HINT = (
    "the SOP layout needs Ebay_train.txt and Ebay_test.txt (header 'image_id class_id "
    "super_class_id path') next to the <super class>_final/ image folders"
)


def list_images(root: str | Path | None) -> Listing:
    base = require_root(NAME, root, HELP)
    candidates = candidate_dirs(base, ("Stanford_Online_Products", "sop", "SOP"))
    for folder in candidates:
        present = [f for f in SPLIT_FILES if (folder / f).is_file()]
        if present:
            for required in SPLIT_FILES:
                if required not in present:
                    raise DatasetLayoutError(f"{folder / required} is missing; {HINT}.\n{HELP}")
            return _listing(folder)
    raise DatasetLayoutError(
        f"no Stanford Online Products layout under {base} (looked in "
        f"{', '.join(str(c) for c in candidates)}).\n{HELP}"
    )


def _listing(folder: Path) -> Listing:
    paths: list[str] = []
    class_ids, super_ids, train = [], [], []
    super_names: dict[int, str] = {}
    for file_name, is_train in zip(SPLIT_FILES, (True, False)):
        file = folder / file_name
        for _, class_id, super_id, path in read_table(file, 4, HINT, header=HEADER):
            paths.append(path)
            class_ids.append(parse_int(class_id, file, "class_id"))
            sid = parse_int(super_id, file, "super_class_id")
            super_ids.append(sid)
            super_names.setdefault(sid, path.split("/", 1)[0] if "/" in path else str(sid))
            train.append(is_train)
    paths, (ids, is_train, supers), absent = drop_absent(
        NAME,
        folder,
        paths,
        np.asarray(class_ids, dtype=np.int64),
        np.asarray(train, dtype=bool),
        np.asarray(super_ids, dtype=np.int64),
    )
    return Listing(
        NAME, "official", folder, paths, ids, is_train, {}, supers, super_names, absent=absent
    )
