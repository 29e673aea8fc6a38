"""`nirbench bench data` end to end on tiny sizes: it runs (generated JPEGs or a given folder),
prints the public JSON keys, and its numbers are consistent. No speed assertion: the ratio is
what the command measures (README), not what a test on a shared machine can promise."""

from __future__ import annotations

import json

import pytest
from PIL import Image

import real_fixtures as rf
from nirbench.harness.bench.data import generate_jpegs, image_folder_files

KEYS = {
    "ours_ips",
    "reference_ips",
    "ratio",
    "images",
    "workers",
    "batch",
    "device",
    "cache_build_s",
}


def nirbench(argv: list[str]) -> int:
    """The real nirbench command line (harness.cli.main.build_parser), without main()'s error
    handling, so an exception fails the test with its traceback."""
    from nirbench.harness.cli.main import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)


def run_json(argv: list[str], capsys) -> dict:
    assert nirbench(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return json.loads(out[0])


def test_bench_data_generated_folder(capsys):
    result = run_json(
        [
            "bench",
            "data",
            "--images",
            "12",
            "--batch",
            "4",
            "--batches",
            "2",
            "--rounds",
            "2",
            "--workers",
            "1",
            "--device",
            "cpu",
            "--json",
        ],
        capsys,
    )
    assert KEYS <= set(result)
    assert result["generated"] is True and result["images"] == 12
    assert result["workers"] == 1 and result["batch"] == 4 and result["device"] == "cpu"
    assert result["ours_ips"] > 0 and result["reference_ips"] > 0 and result["cache_build_s"] > 0
    assert result["ratio"] == pytest.approx(result["ours_ips"] / result["reference_ips"])
    assert result["ours_ips"] == max(result["ours_round_ips"])
    assert result["reference_ips"] == max(result["reference_round_ips"])
    assert result["source_image_wh"] == [500, 375] and result["cached_image_hw"] == [256, 341]


def test_bench_data_given_root(tmp_path, capsys):
    files = rf.make_image_folder(tmp_path / "folder", classes=2, per_class=3)
    result = run_json(
        [
            "bench",
            "data",
            "--root",
            str(tmp_path / "folder"),
            "--batch",
            "2",
            "--batches",
            "1",
            "--rounds",
            "1",
            "--workers",
            "0",
            "--json",
        ],
        capsys,
    )
    assert result["generated"] is False and result["images"] == len(files)
    assert result["root"] == str(tmp_path / "folder") and result["source_image_wh"] == [64, 48]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        nirbench(["bench", "data", "--root", str(tmp_path / "empty")])
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        nirbench(["bench", "data", "--root", str(tmp_path / "missing")])


def test_generated_jpegs_are_cub_like(tmp_path):
    files = generate_jpegs(tmp_path, images=3)
    assert len(files) == 3 and all(f.suffix == ".jpg" for f in files)
    with Image.open(files[0]) as image:
        assert image.size == (500, 375) and image.format == "JPEG"
    assert files[0].stat().st_size > 20_000  # textured, not a flat colour
    assert image_folder_files(tmp_path, limit=2) == [files[0], files[2]]


def test_bench_data_help_says_why(capsys):
    with pytest.raises(SystemExit) as exit_info:
        nirbench(["bench", "data", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Why:" in text and "--json" in text and "reference_ips" in text


# --- the full-size rehearsal (issue 25): the generator and `bench data --generate` -----------

REHEARSAL_KEYS = {
    "mode",
    "generated",
    "generate_s",
    "images",
    "classes",
    "source_bytes",
    "mean_jpeg_bytes",
    "disk_bytes",
    "cache_build_s",
    "cache_build_img_s",
    "pil_decode_img_s",
    "reference_decode_aug_img_s_per_worker",
    "decode_aug_img_s_per_worker",
    "step_rate_img_s",
    "workers_for_2500_img_s",
    "round_img_s",
    "load_average_before",
    "load_average_after",
    "machine",
}
TRAIN_EPOCH_KEYS = {
    "train_images",
    "test_images",
    "backbone",
    "pretrained",
    "pretrained_note",
    "crop_px",
    "run_wall_s",
    "aggregate_wall_s",
    "report_wall_s",
    "report_html",
    "train_epoch_s",
    "eval_s",
    "train_img_s",
    "run_img_s",
    "test_recall_at_1",
}
OFFICIAL_FILES = (
    "images.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "classes.txt",
    "bounding_boxes.txt",
)


def test_full_size_counts_are_cubs():
    from nirbench.harness.data.real.rehearsal import full_size_counts

    counts = full_size_counts()
    # CUB_200_2011's published figures, written out rather than read from official_ids.py
    assert sorted(counts) == list(range(1, 201)) and sum(counts.values()) == 11_788
    assert sum(counts[c] for c in range(1, 101)) == 5_864
    assert sum(counts[c] for c in range(101, 201)) == 5_924
    assert set(counts.values()) <= {58, 59, 60}


def test_generator_writes_the_official_layout_the_loader_and_doctor_accept(tmp_path):
    from nirbench.harness.data.real import rehearsal
    from nirbench.harness.data.real.datasets import list_dataset
    from nirbench.harness.doctor import Context, _dataset_check

    made = rehearsal.generate(tmp_path, counts=rehearsal.small_counts(4, 12), workers=1)
    folder = tmp_path / "CUB_200_2011"
    assert all((folder / name).is_file() for name in OFFICIAL_FILES)
    assert made["images"] == 12 and made["classes"] == 4 and made["reused"] is False
    listing = list_dataset("cub200", tmp_path)
    assert listing.layout == "official" and len(listing.paths) == 12
    assert listing.split_counts() == {
        "train_classes": 2,
        "train_images": 6,
        "test_classes": 2,
        "test_images": 6,
    }
    assert sorted(set(listing.class_ids.tolist())) == [1, 2, 101, 102]
    assert (folder / "images" / "001.Synthetic_bird_001").is_dir()
    sizes = []
    for path in listing.paths:
        with Image.open(folder / path) as image:
            assert image.format == "JPEG" and max(image.size) <= 500
            sizes.append((folder / path).stat().st_size)
    assert made["bytes"] == sum(sizes) and min(sizes) > 10_000  # structured, not flat
    boxes = (folder / "bounding_boxes.txt").read_text().splitlines()
    assert len(boxes) == 12 and len(boxes[0].split()) == 5
    ctx = Context(
        data_root=tmp_path,
        results_dir=tmp_path / "results",
        tracking_uri=f"sqlite:///{tmp_path}/results/mlflow.db",
    )
    check = _dataset_check("cub200")(ctx)
    # a miniature copy is found in the official layout, and called partial (not broken)
    assert check.status == "warn" and check.details["found"] is True
    assert check.details["layout"] == "official" and "partial copy" in check.message


def test_generator_is_deterministic_and_reuses_or_refuses(tmp_path):
    from nirbench.harness.data.real import rehearsal

    counts = rehearsal.small_counts(2, 4)
    one = rehearsal.generate(tmp_path / "a", counts=counts, seed=3, workers=1)
    two = rehearsal.generate(tmp_path / "b", counts=counts, seed=3, workers=2)
    files = sorted((tmp_path / "a" / "CUB_200_2011" / "images").rglob("*.jpg"))
    assert len(files) == 4 and one["bytes"] == two["bytes"]
    for path in files:  # same seed, same bytes, whatever the number of processes
        twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
        assert path.read_bytes() == twin.read_bytes()
    assert rehearsal.generate(tmp_path / "a", counts=counts, seed=3)["reused"] is True
    with pytest.raises(FileExistsError, match="other counts or seed"):
        rehearsal.generate(tmp_path / "a", counts=counts, seed=4)
    (tmp_path / "c" / "CUB_200_2011").mkdir(parents=True)
    (tmp_path / "c" / "CUB_200_2011" / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not written by the rehearsal"):
        rehearsal.generate(tmp_path / "c", counts=counts)
    with pytest.raises(ValueError, match="workers must be 1-2"):
        rehearsal.generate(tmp_path / "d", counts=counts, workers=3)


def test_subset_lists_an_even_share_of_each_split(tmp_path):
    from nirbench.harness.data.real import rehearsal
    from nirbench.harness.data.real.datasets import list_dataset

    rehearsal.generate(tmp_path / "full", counts=rehearsal.small_counts(4, 16), workers=1)
    got = rehearsal.write_subset(tmp_path / "full", tmp_path / "sub", train_images=4, test_images=2)
    sub = list_dataset("cub200", tmp_path / "sub")
    assert got == {"train_images": 4, "test_images": 2, "classes": 4, "train_classes": 2}
    assert sub.split_counts() == {
        "train_classes": 2,
        "train_images": 4,
        "test_classes": 2,
        "test_images": 2,
    }
    assert (tmp_path / "sub" / "CUB_200_2011" / "images").is_symlink()
    with pytest.raises(ValueError, match="choose 1-8"):
        rehearsal.write_subset(tmp_path / "full", tmp_path / "sub", train_images=9, test_images=1)


def test_rehearsal_json_without_training(tmp_path, capsys):
    import math

    result = run_json(
        [
            "bench",
            "data",
            "--generate",
            "--root",
            str(tmp_path),
            "--classes",
            "4",
            "--images",
            "12",
            "--batch",
            "4",
            "--batches",
            "2",
            "--rounds",
            "1",
            "--workers",
            "1",
            "--no-train",
            "--json",
        ],
        capsys,
    )
    assert REHEARSAL_KEYS <= set(result) and "train_epoch" not in result
    assert result["generated"] is True and result["images"] == 12
    for kind in ("uint8", "jpeg"):
        rate = result["decode_aug_img_s_per_worker"][kind]
        assert result["workers_for_2500_img_s"][kind] == math.ceil(2500 / rate)
        assert result["disk_bytes"][kind] > 0 and result["cache_build_s"][kind] > 0
    assert result["disk_bytes"]["uint8"] > result["disk_bytes"]["jpeg"]
    assert not (tmp_path / "nirbench_rehearsal_caches").exists()  # removed unless --keep-caches
    # the same root again: recognised as a CUB copy, so the rehearsal runs without --generate
    again = run_json(
        [
            "bench",
            "data",
            "--root",
            str(tmp_path),
            "--batch",
            "4",
            "--batches",
            "1",
            "--rounds",
            "1",
            "--workers",
            "1",
            "--no-train",
            "--json",
        ],
        capsys,
    )
    assert again["mode"] == "rehearsal" and again["generated"] is False


@pytest.mark.slow
def test_rehearsal_trains_one_epoch_and_renders_the_report(tmp_path, capsys):
    result = run_json(
        [
            "bench",
            "data",
            "--generate",
            "--root",
            str(tmp_path),
            "--classes",
            "4",
            "--images",
            "24",
            "--train-images",
            "8",
            "--test-images",
            "8",
            "--batch",
            "4",
            "--batches",
            "1",
            "--rounds",
            "1",
            "--workers",
            "1",
            "--json",
        ],
        capsys,
    )
    epoch = result["train_epoch"]
    assert TRAIN_EPOCH_KEYS <= set(epoch)
    assert epoch["backbone"] == "resnet18" and epoch["pretrained"] is False
    assert epoch["crop_px"] == 224 and epoch["train_images"] == 8
    assert epoch["train_img_s"] == pytest.approx(8 / epoch["train_epoch_s"])
    assert (tmp_path / "rehearsal_results" / "report" / "index.html").is_file()
