"""`nirbench bench data` end to end on tiny sizes: it runs (generated JPEGs or a given folder),
prints the public JSON keys, and its numbers are consistent. No speed assertion: the ratio is
what the command measures (README), not what a test on a shared machine can promise."""
from __future__ import annotations

import json

import pytest
from PIL import Image

import real_fixtures as rf
from nirbench.harness.bench.data import generate_jpegs, image_folder_files

KEYS = {"ours_ips", "reference_ips", "ratio", "images", "workers", "batch", "device",
        "cache_build_s"}


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
    result = run_json(["bench", "data", "--images", "12", "--batch", "4", "--batches", "2",
                       "--rounds", "2", "--workers", "1", "--device", "cpu", "--json"], capsys)
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
    result = run_json(["bench", "data", "--root", str(tmp_path / "folder"), "--batch", "2",
                       "--batches", "1", "--rounds", "1", "--workers", "0", "--json"], capsys)
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
