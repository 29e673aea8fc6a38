"""``nirbench bench robustness GRID``: do the grid's verdicts survive other CPU numerics?

A CPU run is bitwise reproducible for one ATen kernel set and one thread count only; another
machine moves every number like another seed would. This re-runs GRID in a second results folder
under another kernel set (``ATEN_CPU_CAPABILITY=default`` unless told otherwise: the portable
kernels every x86-64 CPU has, the furthest from AVX2/AVX-512), aggregates both folders with the
same command, and compares every comparison of the headline metric side by side: the two
verdicts, the two Δ and their intervals. ``same_verdicts`` is true when every verdict matches.

Both folders are ordinary results folders: the re-run is resumable, and runs already finished in
the second folder are skipped (same config hash), so a second call only re-compares.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HEADLINE = "recall@1"
KEY = ("dataset", "method", "reference", "arm")


def nirbench_command(*args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from nirbench.harness.cli.main import main; sys.exit(main(sys.argv[1:]))",
        *args,
    ]


def rerun(grid: str, other: Path, capability: str, workers: str = "auto") -> None:
    """Run ``grid`` into ``other`` under ``ATEN_CPU_CAPABILITY=capability``, then aggregate it."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    subprocess.run(
        nirbench_command(
            "grid", grid, "--results-dir", str(other), "--workers", workers, "--no-progress"
        ),
        check=True,
        env=env,
    )


def aggregate(results: Path, grid_name: str) -> Path:
    subprocess.run(
        nirbench_command(
            "aggregate", "--grid", grid_name, "--results-dir", str(results), "--quiet"
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return results / "tables" / "comparison.csv"


def read_headline(path: Path) -> dict[tuple[str, ...], dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: did the grid's runs finish? (nirbench aggregate writes it)"
        )
    with path.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("metric") == HEADLINE]
    return {tuple(r[k] for k in KEY): r for r in rows}


def compare(reference: dict, other: dict) -> list[dict[str, Any]]:
    out = []
    for key in sorted(set(reference) | set(other)):
        a, b = reference.get(key, {}), other.get(key, {})
        out.append(
            {
                **dict(zip(KEY, key)),
                "verdict": a.get("verdict"),
                "verdict_other": b.get("verdict"),
                "diff": _num(a.get("mean_diff")),
                "diff_other": _num(b.get("mean_diff")),
                "ci": [_num(a.get("t_lo")), _num(a.get("t_hi"))],
                "ci_other": [_num(b.get("t_lo")), _num(b.get("t_hi"))],
                "same": bool(a) and bool(b) and a.get("verdict") == b.get("verdict"),
            }
        )
    return out


def run(
    grid: str,
    results: Path,
    other: Path,
    *,
    capability: str = "default",
    skip_run: bool = False,
    workers: str = "auto",
) -> dict[str, Any]:
    from nirbench.harness.grid.plan import load_grid

    name = load_grid(grid).name
    if not skip_run:
        rerun(grid, other, capability, workers)
    rows = compare(read_headline(aggregate(results, name)), read_headline(aggregate(other, name)))
    return {
        "grid": name,
        "results": str(results),
        "other_results": str(other),
        "capability_other": capability,
        "metric": HEADLINE,
        "comparisons": rows,
        "same_verdicts": bool(rows) and all(r["same"] for r in rows),
    }


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
