"""`nirbench bench eval` and `nirbench bench step` end to end on tiny sizes: they run, print the
public JSON keys, and their numbers are consistent. No timing assertions: speed is what the
commands measure, not what tests check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nirbench.harness.bench.eval import synthetic_embeddings

EVAL_KEYS = {
    "ours_knn_s",
    "pml_knn_s",
    "ratio_knn_vs_pml",
    "ours_nmi_s",
    "pml_nmi_s",
    "ratio_nmi_vs_pml",
    "knn_s",
    "ratio_vs_knn",
    "max_abs_diff",
    "peak_rss_mb",
    "full_suite_s",
    "knn_k1000_s",
    "ratio_full_vs_knn_k1000",
}
STEP_KEYS = {
    "step_s_baseline",
    "step_s_nir",
    "ratio_nir_vs_baseline",
    "device",
    "backbone",
    "batch",
    "gpu_measured",
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
    assert len(out) == 1, out  # --json: exactly one JSON object on stdout
    return json.loads(out[0])


def test_bench_eval_end_to_end(capsys):
    result = run_json(["bench", "eval", "--n", "2000", "--classes", "300", "--json"], capsys)
    assert EVAL_KEYS <= set(result)
    assert all(isinstance(result[k], float) and result[k] > 0 for k in EVAL_KEYS - {"max_abs_diff"})
    assert result["max_abs_diff"] <= 1e-6  # our metrics equal PML's on the same data
    assert result["ratio_knn_vs_pml"] == pytest.approx(result["pml_knn_s"] / result["ours_knn_s"])
    assert result["ratio_vs_knn"] == pytest.approx(result["ours_knn_s"] / result["knn_s"])
    assert result["ratio_full_vs_knn_k1000"] == pytest.approx(
        result["full_suite_s"] / result["knn_k1000_s"]
    )
    assert result["ours/recall@1"] == result["full/recall@1"]
    assert 0.0 < result["full/map@1000"] <= 1.0
    assert result["n"] == 2000 and result["classes"] == 300 and result["knn_engine"]


def test_bench_eval_skips_and_approximate(capsys):
    result = run_json(
        [
            "bench",
            "eval",
            "--n",
            "1500",
            "--classes",
            "200",
            "--no-pml",
            "--no-nmi",
            "--no-full",
            "--approximate",
            "ivf",
            "--json",
        ],
        capsys,
    )
    assert result["pml_knn_s"] is None and result["ratio_knn_vs_pml"] is None
    assert result["ours_nmi_s"] is None and result["full_suite_s"] is None
    assert result["ours_knn_s"] > 0 and result["knn_s"] > 0
    assert result["approx_method"] == "ivf"
    assert "approx_suite/approx/recall@1_deviation" in result


def test_bench_eval_human_output(capsys):
    assert (
        nirbench(
            ["bench", "eval", "--n", "600", "--classes", "100", "--no-pml", "--no-nmi", "--no-full"]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "ours_knn_s" in captured.out and "ratio_vs_knn" in captured.out
    assert "..." in captured.err  # progress lines go to stderr


def test_bench_step_end_to_end(capsys):
    result = run_json(
        [
            "bench",
            "step",
            "--device",
            "cpu",
            "--batch",
            "8",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--json",
        ],
        capsys,
    )
    assert STEP_KEYS <= set(result)
    assert result["device"] == "cpu" and result["backbone"] == "small_cnn"
    assert result["batch"] == 8 and result["gpu_measured"] is False
    assert "not measured" in result["note"]
    assert result["ratio_nir_vs_baseline"] == pytest.approx(
        result["step_s_nir"] / result["step_s_baseline"]
    )


@pytest.mark.parametrize("command", ["eval", "step"])
def test_bench_help_says_why(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        nirbench(["bench", command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Why:" in text and "--json" in text


def test_synthetic_embeddings_have_sop_like_classes():
    x, labels = synthetic_embeddings(6000, 32, 1100, seed=3)
    sizes = np.bincount(labels)
    assert x.shape == (6000, 32) and x.dtype == np.float32
    assert len(sizes) == 1100 and sizes.min() >= 2 and sizes.max() <= 12
    with pytest.raises(ValueError, match="2 x classes"):
        synthetic_embeddings(100, 8, 60)


def test_nirbench_cli_wires_bench(capsys):
    from nirbench.harness.cli.main import main

    assert (
        main(
            [
                "bench",
                "eval",
                "--n",
                "600",
                "--classes",
                "100",
                "--no-pml",
                "--no-nmi",
                "--no-full",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["ours_knn_s"] > 0 and result["peak_rss_mb"] > 0
