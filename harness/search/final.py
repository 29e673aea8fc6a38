"""The final runs: the best configuration trained on ALL training classes for the final seeds and
tested, the numbers that go into the tables (tags ``stage=final``, ``study``, ``grid``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from nirbench.harness.search.outcomes import FinalRun, SearchOutcome
from nirbench.harness.search.tune_file import TuneConfig
from nirbench.harness.tracking.store import Tracker
from nirbench.harness.train.runner import execute


# ============================================================================ final runs
def run_final(
    tc: TuneConfig,
    outcome: SearchOutcome,
    results_dir: Path,
    *,
    progress: bool = False,
    echo: Callable[[str], None] = print,
) -> list[FinalRun]:
    """Train the best configuration on ALL training classes (validation off) for the final seeds
    and evaluate on the test classes: the numbers that go into the tables."""
    if outcome.best_trial is None:
        echo("final runs skipped: the study has no completed trial")
        return []
    tracker = Tracker(results_dir)  # the tables' experiment
    out = []
    for seed in tc.final_seed_list:
        cfg = tc.final_config(outcome.best_params, seed)
        tags = {
            "stage": "final",
            "study": tc.study,
            "search_arm": tc.arm,
            "search_trial": str(outcome.best_trial),
            "search_parent_run": outcome.parent_run_id,
        }
        echo(f"final run seed={seed} (config {cfg.config_hash}, grid {tc.final_grid})")
        result = execute(
            cfg, tracker, results_dir, grid=tc.final_grid, tags=tags, progress=progress
        )
        grid = tracker.tags(result.run_id).get("grid", "")
        if grid != tc.final_grid:
            echo(
                f"  note: this config already finished as run {result.run_id} of grid "
                f"{grid!r}; `aggregate --grid {tc.final_grid}` will not include it"
            )
        metrics = {
            k.split("/", 1)[1].replace("_at_", "@"): v
            for k, v in result.metrics.items()
            if k.startswith("test/")
        }
        out.append(FinalRun(seed, result.run_id, result.status, metrics, grid))
    return out


def final_metric(final: list[FinalRun], metric: str = "recall@1") -> float | None:
    values = [f.metrics[metric] for f in final if metric in f.metrics]
    return sum(values) / len(values) if values else None
