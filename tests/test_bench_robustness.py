"""bench robustness: the side-by-side comparison of two results folders' headline verdicts."""

from __future__ import annotations

import pytest

from nirbench.harness.bench import robustness

HEADER = "dataset,method,reference,arm,metric,verdict,mean_diff,t_lo,t_hi\n"


def _csv(path, rows):
    path.write_text(HEADER + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_compare_matches_verdicts_by_comparison_and_flags_a_flip(tmp_path):
    a = _csv(
        tmp_path / "a.csv",
        [
            (
                "synth-cub",
                "proxy_anchor",
                "none",
                "nir",
                "recall@1",
                "equivalent",
                -0.002,
                -0.008,
                0.004,
            ),
            (
                "synth-sop",
                "proxy_anchor",
                "none",
                "nir",
                "recall@1",
                "equivalent",
                -0.001,
                -0.005,
                0.003,
            ),
            ("synth-sop", "proxy_anchor", "none", "nir", "nmi", "hurts", -0.02, -0.03, -0.01),
        ],
    )
    b = _csv(
        tmp_path / "b.csv",
        [
            (
                "synth-cub",
                "proxy_anchor",
                "none",
                "nir",
                "recall@1",
                "equivalent",
                -0.001,
                -0.007,
                0.005,
            ),
            (
                "synth-sop",
                "proxy_anchor",
                "none",
                "nir",
                "recall@1",
                "hurts",
                -0.010,
                -0.012,
                -0.008,
            ),
        ],
    )
    rows = robustness.compare(robustness.read_headline(a), robustness.read_headline(b))
    assert [(r["dataset"], r["same"]) for r in rows] == [("synth-cub", True), ("synth-sop", False)]
    flip = rows[1]
    assert (flip["verdict"], flip["verdict_other"]) == ("equivalent", "hurts")
    assert flip["diff_other"] == pytest.approx(-0.010) and flip["ci_other"] == [-0.012, -0.008]


def test_a_comparison_missing_on_one_side_is_not_the_same(tmp_path):
    a = _csv(
        tmp_path / "a.csv",
        [("synth-cub", "proxy_anchor", "none", "nir", "recall@1", "helps", 0.02, 0.01, 0.03)],
    )
    b = _csv(tmp_path / "b.csv", [])
    rows = robustness.compare(robustness.read_headline(a), robustness.read_headline(b))
    assert len(rows) == 1 and not rows[0]["same"] and rows[0]["verdict_other"] is None


def test_missing_tables_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="nirbench aggregate"):
        robustness.read_headline(tmp_path / "nope.csv")
