"""``nirbench aggregate``: collect, analyse, lay out and write every table of every policy to
RESULTS/tables/ (Markdown, LaTeX, HTML, CSV, Parquet) plus the terminal summary.

The equivalence margin δ of the verdicts is an analysis setting, not a run's: it lives in the
``stats:`` section of a grid's base config (harness/configs/protocol.yaml ``stats: {margin:
1.0}``), outside every RunConfig and so outside every config hash, and ``--margin`` overrides it.
The grid is found through the record ``nirbench grid`` leaves in RESULTS/grids/<name>.json."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from nirbench.harness.grid.plan import declared_pairs, plan_record_path
from nirbench.harness.results import convergence, stats
from nirbench.harness.results.analysis import Analysis, PolicyResult, analyse
from nirbench.harness.results.collect import collect
from nirbench.harness.results.frames import AggregationError
from nirbench.harness.results.layouts import NO_MARKS, Marks, layouts, margin_text
from nirbench.harness.results.policies import LAST, Policy
from nirbench.harness.results.render import html_page, to_html, to_latex, to_markdown
from nirbench.harness.results.table import Table
from nirbench.harness.results.verdicts import tally, verdicts
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


# ============================================================== the margin
STATS_KEYS = ("margin",)


@dataclass(frozen=True)
class Margin:
    points: float  # δ in points (R@1, MAP@R and every other % metric)
    source: str    # where it came from, for meta.json and the report


def parse_stats_section(raw, where: str) -> float | None:
    """The margin of a ``stats:`` section (None when the section or its margin is absent)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - set(STATS_KEYS):
        raise AggregationError(f"{where}: stats must be a mapping with the key 'margin' (the "
                               f"equivalence margin in points, e.g. stats: {{margin: 1.0}}), "
                               f"got {raw!r}")
    value = raw.get("margin")
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value <= 0):
        raise AggregationError(f"{where}: stats.margin must be a number of points > 0 (e.g. "
                               f"1.0), got {value!r}")
    return float(value)


def grid_margin(results_dir: Path, grid: str | None) -> Margin:
    """stats.margin of the base config of every file grid ``grid`` ran here (its record in
    RESULTS/grids/), else the default. Files that disagree are an error: pass --margin."""
    from nirbench.harness.config import read_yaml

    default = Margin(stats.DEFAULT_MARGIN, "default")
    if not grid:
        return default
    record = plan_record_path(results_dir, grid)
    if not record.is_file():
        return default
    found: dict[float, list[str]] = {}
    for grid_file in json.loads(record.read_text()).get("files", {}):
        path = Path(grid_file)
        if not path.is_file():
            continue  # a grid file moved since it ran: it says nothing about the margin now
        base = read_yaml(path).get("config")
        base_path = (path.parent / base).resolve() if base else None
        if base_path is None or not base_path.is_file():
            continue
        value = parse_stats_section(read_yaml(base_path).get("stats"), str(base_path))
        if value is not None:
            found.setdefault(value, []).append(str(base_path))
    if len(found) > 1:
        raise AggregationError(
            f"the config files of grid {grid!r} set different stats.margin values: "
            + "; ".join(f"{v:g} in {', '.join(p)}" for v, p in found.items())
            + ". Make them agree or pass --margin POINTS.")
    if not found:
        return default
    (value, paths), = found.items()
    return Margin(value, f"stats.margin of {paths[0]}")


def write_tables(tracker: Tracker, out_dir: Path, grid: str | None = None, *,
                 resamples: int = stats.BOOTSTRAP_RESAMPLES, seed: int = stats.BOOTSTRAP_SEED,
                 command: str = "", pairs: list[tuple[str, str]] | None = None,
                 margin: float | None = None) -> TableFiles:
    """Everything under ``out_dir``. ``pairs`` (arm A, arm B) are compared besides the default
    pairs; None: the pairs the grid declared (``compare:``, recorded when it ran), if any.
    ``margin``: δ in points; None: the grid's stats.margin (``grid_margin``)."""
    collected = collect(tracker, grid)
    if pairs is None:
        pairs = declared_pairs(tracker.results_dir, grid) if grid else []
    chosen = (grid_margin(tracker.results_dir, grid) if margin is None
              else Margin(float(margin), "--margin"))
    analysis = analyse(collected.runs, collected.epochs, grid, pairs=pairs,
                       margin=chosen.points, resamples=resamples, seed=seed)
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
            "bootstrap_min_pairs": stats.BOOTSTRAP_MIN_PAIRS, "stats_margin": chosen.points,
            "stats_margin_source": chosen.source,
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
    and comparison: verdict, Δ, its 95% CI half-width and δ; Holm's verdict beside the headline
    ones), then Table 1 and its notes, then where every policy's tables are."""
    found = verdicts(analysis, LAST, marks)
    lines = [v.line() for v in found]
    parts = []
    if lines:
        family = sum(v.headline for v in found)
        comparisons = len(analysis.policy(LAST.name).comparisons)
        parts += [(f"Answer (last epoch, test R@1, arms paired by seed, paired t 95% CI; margin "
                   f"δ = {margin_text(analysis.margin)} points; "
                   f"{family} headline comparison{'s' if family != 1 else ''}, Holm-adjusted: "
                   f"{tally(found, holm=True) or 'none'}; {comparisons} comparisons in all, "
                   f"comparison.csv):")]
        parts += [f"  {line}" for line in lines]
        used = "".join(lines)
        if marks.rules(used):
            parts += ["", "  " + marks.rules(used).strip()]
        parts += [("  helps/hurts: the CI lies above/below 0; equivalent: inside ±δ; "
                   "inconclusive: neither (more seeds decide); docs/statistics.md")]
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
