"""Real-dataset layouts on miniature copies (tests/real_fixtures.py, real class ids with gaps):
every layout gives the official class-disjoint split by class id with the right counts and
classes, Cars196 splits by official class id (never folder order or the .mat's classification
flag), SOP keeps its super-classes, labels are contiguous per split, wrong layouts name the
missing file and the expected layout, unreadable images are listed and refused, and ``nirbench
data check`` prints the public keys. Partial copies: tests/test_official_ids.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import real_fixtures as rf
from nirbench.harness.data import DATASETS
from nirbench.harness.data.real import (
    CachedImageSplit,
    DatasetLayoutError,
    PartialDatasetError,
    UnreadableImagesError,
    list_dataset,
    load_real,
)
from nirbench.harness.data.real.cars196 import read_annotations
from nirbench.harness.data.real.check import check_dataset

LAYOUTS = {
    "cub200-official": ("cub200", "official", rf.make_cub_official),
    "cub200-flat": ("cub200", "flat", rf.make_cub_flat),
    "cars196-official": ("cars196", "official", rf.make_cars_official),
    "cars196-flat-names": ("cars196", "flat", lambda b: rf.make_cars_flat(b, style="names")),
    "cars196-flat-ids": ("cars196", "flat", lambda b: rf.make_cars_flat(b, style="ids")),
    "cars196-kaggle": (
        "cars196",
        "flat-train-test",
        lambda b: rf.make_cars_flat(b, style="kaggle"),
    ),
    "sop": ("sop", "official", rf.make_sop),
}
COUNT_KEYS = {"train_classes", "train_images", "test_classes", "test_images"}


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> dict[str, rf.Truth]:
    """One miniature copy per layout, shared by the read-only tests of this module."""
    base = tmp_path_factory.mktemp("layouts")
    return {key: make(base / key) for key, (_, _, make) in LAYOUTS.items()}


def expected_counts(truth: rf.Truth) -> dict[str, int]:
    return {
        "train_classes": len(truth.train_classes),
        "train_images": truth.train_images,
        "test_classes": len(truth.test_classes),
        "test_images": truth.test_images,
    }


@pytest.mark.parametrize("key", sorted(LAYOUTS))
def test_layout_split_counts_and_classes(key, copies):
    dataset, layout, _ = LAYOUTS[key]
    truth = copies[key]
    listing = list_dataset(dataset, truth.root)
    assert listing.layout == layout and listing.base == truth.folder
    assert listing.split_counts() == expected_counts(truth)
    assert set(listing.class_ids[listing.train].tolist()) == truth.train_classes
    assert set(listing.class_ids[~listing.train].tolist()) == truth.test_classes
    assert sorted(listing.paths) == sorted(truth.paths)
    # forgiving root: the dataset folder itself works as well as the folder holding it
    assert list_dataset(dataset, truth.folder).split_counts() == expected_counts(truth)


@pytest.mark.parametrize("key", sorted(LAYOUTS))
def test_loaded_splits_have_contiguous_labels_mapped_to_official_ids(key, copies, tmp_path):
    dataset, _, _ = LAYOUTS[key]
    truth = copies[key]
    bundle = DATASETS.get(dataset).load(
        str(truth.root), str(tmp_path / "cache"), allow_partial=True
    )
    listing = list_dataset(dataset, truth.root)
    for tag, split, classes in (
        ("train", bundle.train, truth.train_classes),
        ("test", bundle.test, truth.test_classes),
    ):
        assert isinstance(split, CachedImageSplit)
        assert split.labels.dtype == torch.int64
        assert sorted(split.labels.unique().tolist()) == list(range(len(classes)))
        official = bundle.info[f"global_class_{tag}"]
        assert official.tolist() == sorted(classes)
        # label k of every image maps back to that image's own official class id
        mask = listing.train if tag == "train" else ~listing.train
        assert official[split.labels.numpy()].tolist() == listing.class_ids[mask].tolist()
    assert {k: bundle.info[k] for k in COUNT_KEYS} == expected_counts(truth)


def test_registry_entries():
    for name, recall in (
        ("cub200", (1, 2, 4, 8)),
        ("cars196", (1, 2, 4, 8)),
        ("sop", (1, 10, 100, 1000)),
    ):
        info = DATASETS.get(name)
        assert info.needs_root and info.recall_at == recall


def test_cars_official_splits_by_class_id_not_file_order_or_test_flag(copies):
    truth = copies["cars196-official"]
    from scipy.io import loadmat  # independent read of the .mat the fixture wrote

    raw = loadmat(truth.folder / "cars_annos.mat")["annotations"][0]
    by_class = {str(a["relative_im_path"][0]): int(a["class"][0][0]) for a in raw}
    flag = {str(a["relative_im_path"][0]): int(a["test"][0][0]) for a in raw}
    listing = list_dataset("cars196", truth.root)
    train = {p for p, t in zip(listing.paths, listing.train) if t}
    assert train == {p for p, c in by_class.items() if c <= 98}
    assert train != {p for p, t in flag.items() if t == 0}  # the classification split differs
    # and the fixture really interleaves classes over file numbers
    ordered = [by_class[p] for p in sorted(by_class)]
    assert ordered != sorted(ordered)


def test_cars_mat_reader_round_trip(copies):
    truth = copies["cars196-official"]
    paths, classes, names = read_annotations(truth.folder / "cars_annos.mat")
    assert paths == truth.paths
    assert names == rf.car_names_196() and classes.dtype == np.int64
    assert {int(c): int(n) for c, n in zip(*np.unique(classes, return_counts=True))} == dict(
        zip(rf.CAR_IDS, (3, 2, 2, 3))
    )


@pytest.mark.parametrize("key", ["cars196-flat-names", "cars196-kaggle", "cars196-flat-ids"])
def test_cars_flat_split_follows_official_ids_not_alphabetical_folders(key, copies, tmp_path):
    truth = copies[key]
    listing = list_dataset("cars196", truth.root)
    # which folders the training images come from, read off the paths themselves
    train_folders = {Path(p).parent.name for p, t in zip(listing.paths, listing.train) if t}
    folders = sorted({Path(p).parent.name for p in truth.paths})
    alphabetical_first_half = set(folders[: len(folders) // 2])
    if key == "cars196-flat-ids":  # ids 2, 3 train; string order would put "100" first
        assert train_folders == {"2.Zeta Roadster 2012", "3.Alpha C-V Van 2007"}
    else:  # names.csv order: Zeta is id 1, Alpha id 2 ('/' is '-' in the folder name)
        assert train_folders == {"Zeta Roadster 2012", "Alpha C-V Van 2007"}
    assert train_folders != alphabetical_first_half
    bundle = load_real(
        "cars196", truth.root, tmp_path / "cache", allow_partial=True, progress=False
    )
    names = bundle.info["class_names"]
    assert {
        names[int(i)].replace("/", "-") for i in bundle.info["global_class_train"]
    } == train_folders


def test_sop_keeps_super_class_ids(copies, tmp_path):
    truth = copies["sop"]
    bundle = load_real("sop", truth.root, tmp_path / "cache", allow_partial=True, progress=False)
    listing = list_dataset("sop", truth.root)
    for tag, mask in (("train", listing.train), ("test", ~listing.train)):
        official = bundle.info[f"global_class_{tag}"]
        per_label = bundle.info[f"super_class_{tag}"]
        assert per_label.tolist() == [truth.super_of_class[int(c)] for c in official]
        assert bundle.info[f"super_label_{tag}"].tolist() == listing.super_class_ids[mask].tolist()
    assert bundle.info["super_class_names"] == rf.SOP_SUPERS
    assert check_dataset("sop", truth.root, progress=False)["super_classes"] == 3


@pytest.mark.parametrize(
    "dataset,make,remove,expected",
    [
        (
            "cub200",
            rf.make_cub_official,
            "CUB_200_2011/image_class_labels.txt",
            "image_class_labels.txt is missing; the official CUB_200_2011 layout needs",
        ),
        ("cub200", rf.make_cub_official, "CUB_200_2011/classes.txt", "classes.txt is missing"),
        (
            "cars196",
            rf.make_cars_official,
            "cars196/cars_annos.mat",
            "cars_annos.mat is missing; the official layout needs cars_annos.mat and car_ims",
        ),
        (
            "sop",
            rf.make_sop,
            "Stanford_Online_Products/Ebay_test.txt",
            "Ebay_test.txt is missing; the SOP layout needs Ebay_train.txt and Ebay_test.txt",
        ),
    ],
)
def test_missing_file_is_named_with_expected_layout(dataset, make, remove, expected, tmp_path):
    truth = make(tmp_path / "copy")
    os.remove(tmp_path / "copy" / remove)
    with pytest.raises(DatasetLayoutError) as err:
        list_dataset(dataset, truth.root)
    message = str(err.value)
    assert expected in message
    assert "Expected layout" in message  # the full tree and the download address follow
    assert {
        "cub200": "data.caltech.edu",
        "cars196": "ai.stanford.edu/~jkrause/cars",
        "sop": "cvgl.stanford.edu",
    }[dataset] in message


@pytest.mark.parametrize("dataset", ["cub200", "cars196", "sop"])
def test_no_dataset_says_what_to_download(dataset, tmp_path):
    (tmp_path / "unrelated").mkdir()
    with pytest.raises(DatasetLayoutError, match="Expected layout") as err:
        load_real(dataset, tmp_path, tmp_path / "cache")
    assert str(tmp_path) in str(err.value) and "http" in str(err.value)
    with pytest.raises(DatasetLayoutError, match="needs a root folder"):
        load_real(dataset, None, tmp_path / "cache")


def test_flat_cars_without_ids_or_names_refuses_alphabetical_order(tmp_path):
    truth = rf.make_cars_flat(tmp_path / "copy", style="names")
    os.remove(truth.folder / "names.csv")
    with pytest.raises(DatasetLayoutError, match="alphabetical folder order is not it"):
        list_dataset("cars196", truth.root)


@pytest.fixture
def broken_cub(tmp_path) -> tuple[rf.Truth, list[str], str]:
    """CUB official copy with one truncated JPEG and one text file named .jpg (unreadable), and
    one listed file missing on disk (absent: a partial copy)."""
    truth = rf.make_cub_official(tmp_path / "copy", per_class=(3, 3, 2, 2))
    bad = [truth.paths[1], truth.paths[4]]
    rf.corrupt(truth.folder / bad[0])
    (truth.folder / bad[1]).write_text("not an image")
    os.remove(truth.folder / truth.paths[7])
    return truth, bad, truth.paths[7]


def test_unreadable_images_are_listed_and_refused(broken_cub, tmp_path):
    truth, bad, absent = broken_cub
    report = check_dataset("cub200", truth.root, progress=False)
    assert report["ok"] is False and report["unreadable_count"] == 2
    assert sorted(line.split(":")[0] for line in report["unreadable"]) == sorted(bad)
    assert report["absent_count"] == 1 and report["absent"] == [absent]
    assert report["train_images"] + report["test_images"] == 9  # counted, not dropped
    cache = tmp_path / "cache"
    # a partial copy is refused before anything is decoded; allowed, the broken files still are
    with pytest.raises(PartialDatasetError, match="1 image files listed in the annotations"):
        load_real("cub200", truth.root, cache, progress=False)
    with pytest.raises(UnreadableImagesError) as err:
        load_real("cub200", truth.root, cache, allow_partial=True, progress=False)
    assert len(err.value.failures) == 2 and "2 of 9 images of cub200" in str(err.value)
    assert all(path in str(err.value) for path in bad)
    assert not any(cache.iterdir())  # no partial cache is left to be mistaken for a good one


def test_unreadable_listing_is_capped_but_counted(tmp_path):
    truth = rf.make_cub_flat(tmp_path / "copy", per_class=(7, 6, 2, 2))
    for rel in truth.paths[:12]:
        rf.corrupt(truth.folder / rel)
    report = check_dataset("cub200", truth.root, progress=False)
    assert report["unreadable_count"] == 12 and len(report["unreadable"]) == 10
    with pytest.raises(UnreadableImagesError, match="and 2 more"):
        load_real("cub200", truth.root, tmp_path / "cache", allow_partial=True, progress=False)


def nirbench(argv: list[str]) -> int:
    """The real nirbench command line (harness.cli.main.build_parser), without main()'s error
    handling, so an exception fails the test with its traceback."""
    from nirbench.harness.cli.main import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize("key", ["cub200-official", "cars196-official", "sop"])
def test_data_check_json(key, copies, capsys):
    dataset, layout, _ = LAYOUTS[key]
    truth = copies[key]
    assert (
        nirbench(["data", "check", "--dataset", dataset, "--root", str(truth.root), "--json"]) == 3
    )  # a miniature copy is partial
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    assert len(out) == 1
    report = json.loads(out[0])
    assert COUNT_KEYS <= set(report)
    assert {k: report[k] for k in COUNT_KEYS} == expected_counts(truth)
    assert report["layout"] == layout and report["ok"] and report["unreadable_count"] == 0
    assert report["complete"] is False and "partial copy" in captured.err
    assert "--set dataset.allow_partial=true" in captured.err
    assert (
        nirbench(
            [
                "data",
                "check",
                "--dataset",
                dataset,
                "--root",
                str(truth.root),
                "--json",
                "--allow-partial",
                "--no-decode",
            ]
        )
        == 0
    )


def test_data_check_human_output_and_exit_status(broken_cub, capsys):
    truth, bad, absent = broken_cub
    assert nirbench(["data", "check", "--dataset", "cub200", "--root", str(truth.root)]) == 1
    captured = capsys.readouterr()
    assert "train_images" in captured.out and "unreadable_count" in captured.out
    assert all(f"unreadable: {path}" in captured.out for path in bad)
    assert f"absent: {absent}" in captured.out
    assert "2 unreadable images" in captured.err
    # --no-decode checks the layout, ids and counts only
    assert (
        nirbench(
            [
                "data",
                "check",
                "--dataset",
                "cub200",
                "--root",
                str(truth.root),
                "--no-decode",
                "--json",
                "--allow-partial",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["decoded"] is False


def test_data_check_wrong_layout_raises_clear_error(tmp_path):
    with pytest.raises(DatasetLayoutError, match="no Stanford Online Products layout"):
        nirbench(["data", "check", "--dataset", "sop", "--root", str(tmp_path)])


def test_data_check_help_says_why(capsys):
    with pytest.raises(SystemExit) as exit_info:
        nirbench(["data", "check", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Why:" in text and "--json" in text and "train_classes" in text
