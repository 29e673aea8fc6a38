"""``nirbench aggregate``: collect, analyse, lay out and write every table of every policy to
RESULTS/tables/ (Markdown, LaTeX, HTML, CSV, Parquet) plus the terminal summary."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nirbench.harness.grid.plan import declared_pairs
from nirbench.harness.results import convergence, stats
from nirbench.harness.results.analysis import Analysis, PolicyResult, analyse
from nirbench.harness.results.collect import collect
from nirbench.harness.results.layouts import NO_MARKS, Marks, layouts
from nirbench.harness.results.policies import LAST, Policy
from nirbench.harness.results.render import html_page, to_html, to_latex, to_markdown
from nirbench.harness.results.table import Table
from nirbench.harness.results.verdicts import verdicts
from nirbench.harness.tracking.store import Tracker


# ============================================================== files
@dataclass(frozen=True)
class TableFiles:
    table_md: Path
    table_csv: Path
    runs_csv: Path
    summary_csv: Path
    markdown: str             # what `nirbench aggregate` prints
    written: tuple[Path, ...] = ()


def policy_dir(out_dir: Path, policy: Policy) -> Path:
    """The default policy (last epoch) writes at the top of the tables folder (the names the
    README promises); the others in a subfolder named after the policy."""
    return out_dir if policy is LAST else out_dir / policy.name


def write_tables(tracker: Tracker, out_dir: Path, grid: str | None = None, *,
                 resamples: int = stats.BOOTSTRAP_RESAMPLES, seed: int = stats.BOOTSTRAP_SEED,
                 command: str = "", pairs: list[tuple[str, str]] | None = None) -> TableFiles:
    """Everything under ``out_dir``. ``pairs`` (arm A, arm B) are compared besides the default
    pairs; None: the pairs the grid declared (``compare:``, recorded when it ran), if any."""
    collected = collect(tracker, grid)
    if pairs is None:
        pairs = declared_pairs(tracker.results_dir, grid) if grid else []
    analysis = analyse(collected.runs, collected.epochs, grid, pairs=pairs, resamples=resamples,
                       seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save_frame(frame: pd.DataFrame, stem: Path) -> None:
        frame.to_csv(stem.with_suffix(".csv"), index=False)
        frame.to_parquet(stem.with_suffix(".parquet"), index=False)
        written.extend([stem.with_suffix(".csv"), stem.with_suffix(".parquet")])

    save_frame(analysis.runs, out_dir / "runs")
    save_frame(analysis.epochs, out_dir / "epochs")
    selected = [r.selected.assign(policy=r.policy.name) for r in analysis.results if r.available]
    save_frame(pd.concat(selected, ignore_index=True), out_dir / "selected")
    save_frame(analysis.convergence, out_dir / "convergence")
    save_frame(analysis.activity, out_dir / "activity")
    meta = {**collected.meta, "bootstrap_resamples": resamples, "bootstrap_seed": seed,
            "command": command, "created_utc": _now(), "compare": [list(p) for p in pairs],
            "policies": {r.policy.name: {"title": r.policy.title, "available": r.available,
                                         "description": r.policy.description, "note": r.note}
                         for r in analysis.results}}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    written.append(out_dir / "meta.json")

    marks = Marks.of(analysis)
    for result in analysis.results:
        folder = policy_dir(out_dir, result.policy)
        folder.mkdir(parents=True, exist_ok=True)
        if not result.available:
            (folder / "README.md").write_text(f"# {result.policy.title}\n\n{result.note}\n")
            written.append(folder / "README.md")
            continue
        result.summary.to_csv(folder / "summary.csv", index=False)
        written.append(folder / "summary.csv")
        for name, tables in layouts(result, len(analysis.runs), grid, marks).items():
            written += _export(folder, name, tables, result)

    last = analysis.policy(LAST.name)
    table = layouts(last, len(analysis.runs), grid, marks)["table1"][0]
    markdown = terminal_summary(analysis, table, out_dir, marks)
    return TableFiles(out_dir / "table1.md", out_dir / "table1.csv", out_dir / "runs.csv",
                      out_dir / "summary.csv", markdown, tuple(written))


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _export(folder: Path, name: str, tables: list[Table], result: PolicyResult) -> list[Path]:
    paths = [folder / f"{name}.{ext}" for ext in ("md", "tex", "html", "csv")]
    if not tables:  # e.g. no regularized arm with a baseline to compare with
        return []
    paths[0].write_text("\n\n".join(f"{to_markdown(t)}\n\n{t.note}" for t in tables) + "\n")
    paths[1].write_text("% generated by `nirbench aggregate`; needs \\usepackage{booktabs}\n"
                        + "\n\n".join(to_latex(t) for t in tables) + "\n")
    paths[2].write_text(html_page(f"nirbench {name} ({result.policy.title})",
                                  "\n".join(to_html(t) for t in tables)))
    # CSV: the numeric long tables where they exist (comparisons, published), else the layout.
    numeric = {"comparison": result.comparisons, "published": result.published}.get(name)
    if numeric is not None:
        numeric.to_csv(paths[3], index=False)
    elif len(tables) == 1:
        tables[0].to_frame().to_csv(paths[3])
    else:
        pd.concat({t.name: t.to_frame() for t in tables}, names=["table"]).to_csv(paths[3])
    return paths


def terminal_summary(analysis: Analysis, table1: Table, out_dir: Path,
                     marks: Marks = NO_MARKS) -> str:
    """What `nirbench aggregate` prints: the answer first (one verdict line per dataset, method
    and comparison), then Table 1 and its notes, then where every policy's tables are."""
    lines = [v.line() for v in verdicts(analysis, LAST, marks)]
    parts = []
    if lines:
        parts += [f"Answer (last epoch, test R@1, arms paired by seed; "
                  f"{sum(v.verdict in ('helps', 'hurts') for v in verdicts(analysis))} of "
                  f"{len(lines)} comparisons detect a difference):"]
        parts += [f"  {line}" for line in lines]
        used = "".join(lines)
        if marks.rules(used):
            parts += ["", "  " + marks.rules(used).strip()]
        still_rising = convergence.status_line(analysis.convergence)
        if still_rising:
            parts += ["  " + still_rising]
        parts.append("")
    parts += [to_markdown(table1), "", table1.note, ""]
    for result in analysis.results:
        where = policy_dir(out_dir, result.policy)
        state = f"{where}/" if result.available else "not available: " + result.note
        parts.append(f"policy {result.policy.title}: {state}")
    return "\n".join(parts) + "\n"
