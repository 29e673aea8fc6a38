"""Splits by official class id, whatever the copy holds: miniature copies with gaps and uneven
halves follow the ids (the old "first half of the ids present" rule would not), ``data check``
lists missing and unexpected ids against the official totals, training refuses a partial copy
with that list and the fix, ``dataset.allow_partial`` lets it run tagged ``dataset.partial=true``,
and the new config field leaves every existing config hash unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest

import real_fixtures as rf
from nirbench.harness.config import ConfigError, load_config
from nirbench.harness.data.real import PartialDatasetError, list_dataset, load_real
from nirbench.harness.data.real import official_ids
from nirbench.harness.data.real.check import check_dataset
from nirbench.harness.data.real.official_ids import OFFICIAL, OfficialSplit, format_ids

# Uneven halves: 4 train ids and 2 test ids. "The first half of the ids present" would train on
# 2, 7, 60 and test on 100 too: a training class in the test split.
CUB_GAPS = (2, 7, 60, 100, 101, 180)
CARS_GAPS = (5, 60, 97, 98, 99, 196)


def old_rule_train(ids) -> set[int]:
    ids = sorted(set(ids))
    return set(ids[: len(ids) // 2])


@pytest.mark.parametrize(
    "dataset,make,ids,last_train",
    [
        ("cub200", rf.make_cub_official, CUB_GAPS, 100),
        ("cub200", rf.make_cub_flat, CUB_GAPS, 100),
        ("cars196", rf.make_cars_official, CARS_GAPS, 98),
    ],
)
def test_gap_copies_split_by_official_id(dataset, make, ids, last_train, tmp_path):
    truth = make(tmp_path / "copy", per_class=(2,) * len(ids), ids=ids)
    listing = list_dataset(dataset, truth.root)
    train = set(listing.class_ids[listing.train].tolist())
    assert train == {i for i in ids if i <= last_train} == truth.train_classes
    assert train != old_rule_train(ids)  # the copy really tells the two rules apart
    report = check_dataset(dataset, truth.root, decode=False, progress=False)
    official = OFFICIAL[dataset]
    assert report["missing_class_ids"] == sorted(set(range(1, official.classes + 1)) - set(ids))
    assert report["missing_class_count"] == official.classes - len(ids)
    assert report["unexpected_class_ids"] == [] and report["complete"] is False
    assert report["official_images"] == official.images
    # training follows the same ids: the official id of every training label is a train id
    bundle = load_real(dataset, truth.root, tmp_path / "cache", allow_partial=True, progress=False)
    assert set(bundle.info["global_class_train"].tolist()) == truth.train_classes
    assert set(bundle.info["global_class_test"].tolist()) == truth.test_classes
    assert bundle.info["partial"] is True
    assert bundle.info["missing_class_count"] == official.classes - len(ids)


def test_sop_split_follows_the_files_and_flags_ids_in_the_wrong_file(tmp_path):
    truth = rf.make_sop(tmp_path / "copy")
    listing = list_dataset("sop", truth.root)
    assert set(listing.class_ids[listing.train].tolist()) == set(rf.SOP_TRAIN_IDS)
    report = check_dataset("sop", truth.root, decode=False, progress=False)
    assert report["unexpected_class_ids"] == []
    assert report["missing_class_count"] == 22634 - 5
    # a test id listed in Ebay_train.txt is not an official train id: unexpected
    train_file = truth.folder / "Ebay_train.txt"
    lines = train_file.read_text().splitlines()
    first = lines[1].split()
    lines.append(f"999 11500 {first[2]} {first[3]}")
    train_file.write_text("\n".join(lines) + "\n")
    report = check_dataset("sop", truth.root, decode=False, progress=False)
    assert report["unexpected_class_ids"] == [11500] and report["unexpected_class_count"] == 1


def test_unexpected_folder_is_reported_and_stays_on_its_side_of_the_boundary(tmp_path):
    truth = rf.make_cub_flat(tmp_path / "copy", per_class=(2, 2, 2, 2), ids=(1, 3, 101, 201))
    listing = list_dataset("cub200", truth.root)
    assert 201 in set(listing.class_ids[~listing.train].tolist())
    report = check_dataset("cub200", truth.root, decode=False, progress=False)
    assert report["unexpected_class_ids"] == [201]
    assert 201 not in report["missing_class_ids"] and 104 in report["missing_class_ids"]


def test_partial_copy_is_refused_naming_the_missing_ids_and_the_fix(tmp_path):
    truth = rf.make_cub_flat(tmp_path / "copy", per_class=(2, 2, 2, 2))
    with pytest.raises(PartialDatasetError) as err:
        load_real("cub200", truth.root, tmp_path / "cache", progress=False)
    message = str(err.value)
    assert "196 of 200 official class ids are missing (98 train, 98 test)" in message
    assert "2, 4-100, 102-103, 105-200" in message  # ids 1, 3, 101, 104 are present
    assert "--set dataset.allow_partial=true" in message and "dataset.partial=true" in message
    assert "8 images instead of 11,788" in message
    assert not (tmp_path / "cache").exists()  # refused before anything was decoded


@pytest.fixture
def tiny_official(monkeypatch):
    """The official CUB made tiny (ids 1, 2 / 101, 102, 2 images each), so a test can build a
    complete copy."""
    monkeypatch.setitem(
        OFFICIAL,
        "cub200",
        OfficialSplit(
            "cub200", range(1, 3), range(101, 103), 4, 4, "tiny: 1-2 train, 101-102 test"
        ),
    )


def test_complete_copy_loads_without_allow_partial_and_a_removed_image_makes_it_partial(
    tiny_official, tmp_path
):
    truth = rf.make_cub_official(tmp_path / "copy", per_class=(2, 2, 2, 2), ids=(1, 2, 101, 102))
    report = check_dataset("cub200", truth.root, progress=False)
    assert report["complete"] is True and report["missing_class_ids"] == []
    bundle = load_real("cub200", truth.root, tmp_path / "cache", progress=False)
    assert bundle.info["partial"] is False and bundle.info["missing_class_count"] == 0
    # one file gone from disk: absent, counts off, refused
    (truth.folder / truth.paths[0]).unlink()
    report = check_dataset("cub200", truth.root, progress=False)
    assert report["complete"] is False and report["absent"] == [truth.paths[0]]
    assert report["train_images"] + report["test_images"] == 7
    with pytest.raises(PartialDatasetError, match="not on disk"):
        load_real("cub200", truth.root, tmp_path / "cache", progress=False)


def test_data_check_exit_status_and_human_listing(tmp_path, capsys):
    from nirbench.harness.cli.main import build_parser

    truth = rf.make_cub_flat(tmp_path / "copy", per_class=(2, 2, 2, 2))
    argv = ["data", "check", "--dataset", "cub200", "--root", str(truth.root), "--no-decode"]
    args = build_parser().parse_args(argv)
    assert args.func(args) == 3
    out = capsys.readouterr()
    assert "2, 4-100, 102-103, 105-200" in out.out  # ranges, not 196 numbers
    assert "partial copy" in out.err
    args = build_parser().parse_args(argv + ["--allow-partial", "--json"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    for key in (
        "complete",
        "missing_class_count",
        "missing_class_ids",
        "unexpected_class_count",
        "unexpected_class_ids",
        "absent_count",
        "official_images",
        "official_train_images",
        "official_test_images",
        "cache_uint8_bytes",
        "cache_jpeg_bytes",
        "cache_size_source",
    ):
        assert key in report, key


def test_data_check_cache_size_is_exact_after_decoding(tmp_path):
    from PIL import Image

    from nirbench.harness.data.real.cache import resized_size

    truth = rf.make_cub_flat(tmp_path / "copy", per_class=(2, 3, 2, 2))
    report = check_dataset("cub200", truth.root, progress=False)
    expected = 0
    for rel in truth.paths:
        with Image.open(truth.folder / rel) as image:
            w, h = resized_size(*image.size)
        expected += 3 * w * h
    assert report["cache_uint8_bytes"] == expected
    assert report["cache_size_source"].startswith("image sizes (exact)")
    estimate = check_dataset("cub200", truth.root, decode=False, progress=False)
    assert estimate["cache_size_source"].startswith("estimate")
    # the estimate at the official size: 11,788 images at aspect 1.36, about 3.2 GB
    from nirbench.harness.data.real.cache_size import estimate as full

    assert 3.0 < full("cub200")["cache_uint8_gb"] < 3.4
    assert 20 < full("sop")["cache_uint8_gb"] < 32


def test_format_ids():
    assert format_ids([]) == "none"
    assert format_ids([5, 1, 2, 3, 9]) == "1-3, 5, 9"
    assert format_ids(list(range(0, 100, 2)), limit=3) == "0, 2, 4, ... (47 more runs)"


def test_official_totals_are_the_papers():
    """PAPER.md section 5."""
    assert (OFFICIAL["cub200"].images, OFFICIAL["cars196"].images, OFFICIAL["sop"].images) == (
        11788,
        16185,
        120053,
    )
    assert (
        OFFICIAL["cub200"].train_images,
        OFFICIAL["cars196"].train_images,
        OFFICIAL["sop"].train_images,
    ) == (5864, 8054, 59551)
    assert len(OFFICIAL["sop"].train_ids) == 11318 and len(OFFICIAL["sop"].test_ids) == 11316
    assert official_ids.official_train_mask("cars196", np.array([98, 99])).tolist() == [True, False]


# ------------------------------------------------------------------ config and the training run


def test_allow_partial_leaves_existing_config_hashes_unchanged():
    """Hashes of the embedded default and of real-dataset configs from before the field
    existed: finished runs must still be found and skipped."""
    assert load_config(None).config_hash == "f4b6b1e85d6a725a"
    cub = ["dataset.name=cub200", "dataset.root=/data"]
    assert load_config(None, cub).config_hash == "ed46d90e71a147e4"
    assert (
        load_config(None, cub + ["dataset.allow_partial=false"]).config_hash == "ed46d90e71a147e4"
    )
    assert (
        load_config(
            "harness/configs/presets/paper/cars196-nir.yaml", ["dataset.root=/data"]
        ).config_hash
        == "e89b58bab9239e8e"
    )
    partial = load_config(None, cub + ["dataset.allow_partial=true"])
    assert partial.config_hash != "ed46d90e71a147e4"
    assert partial.to_dict()["dataset"]["allow_partial"] is True
    with pytest.raises(ConfigError, match="real datasets only"):
        load_config(None, ["dataset.allow_partial=true"])


def _run_config(root, allow_partial: bool):
    return load_config(
        None,
        [
            "dataset.name=cub200",
            f"dataset.root={root}",
            f"dataset.allow_partial={str(allow_partial).lower()}",
            "backbone.name=small_cnn",
            "backbone.embed_dim=8",
            "train.epochs=1",
            "train.warmup_epochs=0",
            "train.batch_size=4",
            "train.samples_per_class=2",
            "train.device=cpu",
            "eval.recall_at=1,2",
            "eval.nmi=false",
            "eval.structure=false",
        ],
    )


def test_training_refuses_a_partial_copy_and_allow_partial_runs_tagged(tmp_path, results_dir):
    from nirbench.harness.train.runner import execute
    from nirbench.harness.tracking.store import Tracker

    truth = rf.make_cub_flat(tmp_path / "copy", per_class=(3, 3, 2, 2))
    tracker = Tracker(results_dir)
    with pytest.raises(PartialDatasetError):
        execute(_run_config(truth.root, False), tracker, results_dir)
    outcome = execute(_run_config(truth.root, True), tracker, results_dir)
    assert outcome.status == "finished"
    run = tracker.client.get_run(outcome.run_id)
    assert run.data.tags["dataset.partial"] == "true"
    assert run.data.tags["dataset.missing_classes"] == "196"
    assert run.data.params["dataset.allow_partial"] == "True"
