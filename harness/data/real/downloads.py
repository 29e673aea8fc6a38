"""The one table of the real datasets' official files: name, URL, size and checksums, and what
each extracts to. ``nirbench data fetch`` downloads and verifies from it, docs/downloads.md is
generated from it (``downloads_markdown``; a test keeps the page current).

Where the facts come from (checked against public loader code, not guessed):
  CUB_200_2011.tgz              md5 as in every public CUB loader (e.g. avalanche, TDeVries'
                                cub2011_dataset); size 1,150,585,339 bytes as published by
                                fastai's checksums and loaders that check the length.
  Stanford_Online_Products.zip  md5 as in pytorch-metric-learning's StanfordOnlineProducts and
                                powerful-benchmarker; its size is not published by any loader we
                                found, so it is None (the md5 still covers every byte).
  Cars196                       the original host (ai.stanford.edu/~jkrause) is gone, so no URL.
                                The md5s of cars_train.tgz, cars_test.tgz, car_devkit.tgz and
                                cars_test_annos_withlabels.mat are torchvision's (its former
                                StanfordCars download); the files nirbench's official layout reads
                                (car_ims.tgz, cars_annos.mat) have no published checksum, so
                                they are verified by their layout and images (the doctor's check)
                                and never downloaded (nothing is downloaded without a checksum).
"""

from __future__ import annotations

from dataclasses import dataclass

CARS196_KAGGLE = "https://www.kaggle.com/datasets/jutrera/stanford-car-dataset-by-classes-folder"
CARS196_TORCHVISION_ISSUE = "https://github.com/pytorch/vision/issues/7545"


@dataclass(frozen=True)
class OfficialFile:
    """One official file of a dataset. ``extracts_to``: the top-level folder the archive creates
    (relative to --root), or None for a file used as it is (an annotation file). ``needed``: read
    by nirbench's official layout; the others are listed so a user's copy can be verified."""

    dataset: str
    file_name: str
    url: str | None
    size: int | None  # bytes; None where no public source states it
    md5: str | None
    extracts_to: str | None
    needed: bool = True
    source: str = ""  # where the URL / checksum was taken from

    @property
    def has_checksum(self) -> bool:
        return self.md5 is not None


OFFICIAL_FILES: tuple[OfficialFile, ...] = (
    OfficialFile(
        "cub200",
        "CUB_200_2011.tgz",
        "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
        1_150_585_339,
        "97eceeb196236b17998738112f37df78",
        "CUB_200_2011",
        source="CaltechDATA record 65de6-vp158",
    ),
    OfficialFile(
        "sop",
        "Stanford_Online_Products.zip",
        "http://ftp.cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip",
        None,
        "7f73d41a2f44250d4779881525aea32e",
        "Stanford_Online_Products",
        source="Stanford CVGL (historically ftp://cs.stanford.edu/cs/cvgl/)",
    ),
    OfficialFile(
        "cars196",
        "car_ims.tgz",
        None,
        None,
        None,
        "car_ims",
        source="ai.stanford.edu/~jkrause/car196/ (gone)",
    ),
    OfficialFile(
        "cars196",
        "cars_annos.mat",
        None,
        None,
        None,
        None,
        source="ai.stanford.edu/~jkrause/car196/ (gone)",
    ),
    OfficialFile(
        "cars196",
        "cars_train.tgz",
        None,
        None,
        "065e5b463ae28d29e77c1b4b166cfe61",
        "cars_train",
        needed=False,
        source="torchvision StanfordCars (former)",
    ),
    OfficialFile(
        "cars196",
        "cars_test.tgz",
        None,
        None,
        "4ce7ebf6a94d07f1952d94dd34c4d501",
        "cars_test",
        needed=False,
        source="torchvision StanfordCars (former)",
    ),
    OfficialFile(
        "cars196",
        "car_devkit.tgz",
        None,
        None,
        "c3b158d763b6e2245038c8ad08e45376",
        "devkit",
        needed=False,
        source="torchvision StanfordCars (former)",
    ),
    OfficialFile(
        "cars196",
        "cars_test_annos_withlabels.mat",
        None,
        None,
        "b0a2b23655a3edd16d84508592a98d10",
        None,
        needed=False,
        source="torchvision StanfordCars (former)",
    ),
)

DATASETS = ("cub200", "cars196", "sop")

CARS196_INSTRUCTIONS = f"""\
Cars196 has no stable official download: its original host (ai.stanford.edu/~jkrause/cars) is
gone, so torchvision's StanfordCars download fails ({CARS196_TORCHVISION_ISSUE}).
The field gets it from a copy of the original files or from the Kaggle mirror
{CARS196_KAGGLE}.
Put one of these layouts under --root (nirbench data check prints the full tree):
  official  cars_annos.mat + car_ims/<file>.jpg   (car_ims.tgz extracted; 196 classes, 16,185
            images; no published checksum: verified by layout and by decoding every image)
  Kaggle    names.csv + car_data/car_data/{{train,test}}/<class name>/<file>.jpg
  flat      images/<id>.<class name>/<file>.jpg
Split: class ids 1-98 train, 99-196 test (by official id, not by the folders' train/test).
torchvision's former files are not read by nirbench, but their md5s are checked when present:
  cars_train.tgz 065e5b463ae28d29e77c1b4b166cfe61   cars_test.tgz 4ce7ebf6a94d07f1952d94dd34c4d501
  car_devkit.tgz c3b158d763b6e2245038c8ad08e45376
  cars_test_annos_withlabels.mat b0a2b23655a3edd16d84508592a98d10
A car_ims.tgz placed under --root is extracted into place."""


def files_of(dataset: str) -> tuple[OfficialFile, ...]:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return tuple(f for f in OFFICIAL_FILES if f.dataset == dataset)


def downloads_markdown() -> str:
    """docs/downloads.md: the table above and the Cars196 instructions."""
    rows = [
        "| dataset | file | URL | size (bytes) | md5 | extracts to | read by nirbench |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in OFFICIAL_FILES:
        rows.append(
            f"| {f.dataset} | `{f.file_name}` | {f.url or 'none (host gone)'} | "
            f"{f'{f.size:,}' if f.size else 'not published'} | "
            f"{f'`{f.md5}`' if f.md5 else 'not published'} | "
            f"{f'`{f.extracts_to}/`' if f.extracts_to else 'used as is'} | "
            f"{'yes' if f.needed else 'no (verified if present)'} |"
        )
    return f"""\
# Dataset downloads

<!-- generated from harness/data/real/downloads.py by downloads_markdown(); a test keeps it
current: edit the table there, not here -->

`nirbench data fetch cub200|cars196|sop --root DIR` downloads the official archive where a URL
exists, checks its size and md5, extracts it into `DIR/.nirbench-partial-<dataset>/` and moves
the result into place only when the extraction is complete, then runs the doctor's dataset
check. An interrupted download resumes from `DIR/<file>.part` (HTTP Range) or restarts when the
server does not support ranges; a file whose checksum fails is deleted. Nothing is downloaded
without a checksum.

- `NIRBENCH_MIRROR=BASE_URL`: every file is fetched from `BASE_URL/<official file name>`
  (e.g. `BASE_URL/CUB_200_2011.tgz`) and checked against the same checksum.
- `NIRBENCH_OFFLINE=1` (or `--offline`): nothing is downloaded; the command says what to
  download, from where and where to put it, then verifies what is there.

## Files

{chr(10).join(rows)}

## Cars196

```text
{CARS196_INSTRUCTIONS}
```
"""
