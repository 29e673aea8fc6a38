"""`nirbench report`: the HTML report in results/report/index.html, from the tidy tables only.

It reads what `nirbench aggregate` saved (runs/epochs parquet + meta.json), recomputes the
statistics with the same code, margin and bootstrap seed, draws the figures
(``harness.results.plots``) and fills ``templates/report.html`` with ``string.Template``. Every
number links to its MLflow run (a title attribute with the run ids and a link to the runs
section, which links to the MLflow UI);
the provenance section says which code, packages, hardware and commands produced the numbers.
The page loads nothing from the network: figures are relative PNG files, CSS and JS are inline.
"""

from __future__ import annotations

import html
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

import pandas as pd

from nirbench.harness import results as agg
from nirbench.harness.results import convergence, plots, published, stats
from nirbench.harness.results.display import cell_title, in_reading_order
from nirbench.harness.results.layouts import margin_text
from nirbench.harness.results.verdicts import tally
from nirbench.harness.search.trials_table import load_trials

TEMPLATE = Path(__file__).with_name("templates") / "report.html"
UI_URL = "http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}"
STUDY_PATTERNS = ("*.journal", "*.log", "*.db", "*.sqlite3")
e = html.escape


@dataclass(frozen=True)
class Report:
    index: Path
    figures: tuple[plots.Figure, ...]
    skipped: tuple[plots.Skipped, ...]


# ---------------------------------------------------------------- Optuna studies (optional)
def find_studies(results_dir: Path, explicit: list[Path] | None = None) -> list[Path]:
    """Optuna storages to plot: the ones given, else files under RESULTS/optuna/."""
    if explicit:
        missing = [p for p in explicit if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"Optuna study file(s) not found: {', '.join(map(str, missing))}"
            )
        return list(explicit)
    folder = results_dir / "optuna"
    return sorted({p for pattern in STUDY_PATTERNS for p in folder.glob(pattern)})


# ---------------------------------------------------------------- build
def build_report(
    results_dir: Path,
    *,
    tables_dir: Path | None = None,
    out_dir: Path | None = None,
    studies: list[Path] | None = None,
    command: str = "",
    margin: float | None = None,
) -> Report:
    """``margin``: the verdicts' δ in points; None: the one the tables were aggregated with."""
    results_dir = Path(results_dir)
    tables_dir = Path(tables_dir or results_dir / "tables")
    out_dir = Path(out_dir or results_dir / "report")
    runs, epochs, meta = agg.load_tidy(tables_dir)
    if margin is not None:
        meta = {**meta, "stats_margin": margin, "stats_margin_source": "nirbench report --margin"}
    analysis = agg.analyse(
        runs,
        epochs,
        meta.get("grid"),
        pairs=[tuple(p) for p in meta.get("compare", [])],
        margin=meta.get("stats_margin", stats.DEFAULT_MARGIN),
        resamples=meta.get("bootstrap_resamples", stats.BOOTSTRAP_RESAMPLES),
        seed=meta.get("bootstrap_seed", stats.BOOTSTRAP_SEED),
    )
    marks = agg.Marks.of(analysis)
    runs = analysis.runs

    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for stale in (*figures_dir.glob("*.png"), *figures_dir.glob("*.pdf")):
        stale.unlink()  # ours from an earlier report; a figure that no longer applies must go

    drawn: dict[str, list[plots.Figure | plots.Skipped]] = {
        "convergence": plots.convergence(runs, epochs, figures_dir),
        "activity": plots.nir_activity(runs, epochs, figures_dir),
    }
    for result in analysis.results:
        if result.available:
            drawn[f"forest-{result.policy.name}"] = [
                plots.forest(
                    result.comparisons, result.policy.name, result.policy.title, figures_dir
                )
            ]
    last = analysis.policy(agg.LAST.name)
    drawn["structure"] = [plots.structure(last.selected, last.policy.title, figures_dir)]
    study_files = find_studies(results_dir, studies)
    drawn["tuning"] = (
        plots.tuning(load_trials(study_files), figures_dir)
        if study_files
        else [
            plots.Skipped(
                "Tuning",
                f"no Optuna study file under {results_dir / 'optuna'} (or pass --study FILE)",
            )
        ]
    )

    page = Template(TEMPLATE.read_text()).substitute(
        title=html.escape(_title(meta)),
        table_css=agg.TABLE_CSS,
        body=_body(analysis, meta, drawn, results_dir, out_dir, command, study_files, marks),
    )
    index = out_dir / "index.html"
    index.write_text(page)
    items = [x for group in drawn.values() for x in group]
    return Report(
        index,
        tuple(x for x in items if isinstance(x, plots.Figure)),
        tuple(x for x in items if isinstance(x, plots.Skipped)),
    )


def _title(meta: dict) -> str:
    grid = meta.get("grid")
    return "nirbench report" + (f" — grid {grid}" if grid else "")


# ---------------------------------------------------------------- HTML pieces
def _link(ids: tuple[str, ...]) -> str:
    return f"#run-{ids[0]}"


def _tables(tables: list[agg.Table]) -> str:
    return "\n".join(agg.to_html(t, link=_link) for t in tables)


def _figure(item: plots.Figure | plots.Skipped, out_dir: Path) -> str:
    if isinstance(item, plots.Skipped):
        return f'<p class="skipped"><b>{e(item.title)}</b>: not drawn: {e(item.reason)}.</p>'
    png = os.path.relpath(item.png, out_dir)
    pdf = os.path.relpath(item.pdf, out_dir)
    runs = " ".join(f'<a href="#run-{e(r)}">{e(r[:8])}</a>' for r in item.run_ids)
    return (
        f'<figure id="fig-{e(item.key)}"><img src="{e(png)}" alt="{e(item.title)}">'
        f"<figcaption><b>{e(item.title)}.</b> {e(item.caption)} "
        f'<a href="{e(pdf)}">PDF</a>.{f" MLflow runs: {runs}" if runs else ""}'
        f"</figcaption></figure>"
    )


def _verdict_class(verdict: str) -> str:
    return {"helps": "verdict-helps", "hurts": "verdict-hurts"}.get(verdict, "verdict-other")


def _headline(analysis: agg.Analysis, marks: agg.Marks) -> str:
    """The answer first: one line per dataset, method and comparison (last epoch, test R@1):
    the verdict, Δ, its 95% CI half-width, δ, and Holm's verdict beside the headline ones."""
    found = agg.verdicts(analysis, agg.LAST, marks)
    if not found:
        return "<p>No two arms of one dataset and method to compare.</p>"
    items = []
    for v in found:
        holm = (
            f'; {e(v.holm_label)}: <span class="{_verdict_class(v.verdict_holm)}">'
            f"{e(v.verdict_holm)}</span>"
            if v.headline
            else ""
        )
        items.append(
            f'<li><a href="#run-{e(v.run_ids[0])}" title="MLflow runs: {e(" ".join(v.run_ids))}">'
            f"{e(v.subject)}</a>: {e(v.comparison)}: "
            f'<span class="{_verdict_class(v.verdict)}">{e(v.verdict)}</span> '
            f"({e(v.evidence)}){holm}{' ' + e(v.marks) if v.marks else ''}</li>"
        )
    used = "".join(v.marks for v in found)
    rules = f'<p class="note">{e(marks.rules(used).strip())}</p>' if marks.rules(used) else ""
    family = sum(v.headline for v in found)
    total = len(analysis.policy(agg.LAST.name).comparisons)
    return (
        f"<p><b>The answer</b> (last epoch, test R@1, arms paired by seed, paired t 95% "
        f"CI, margin δ = {margin_text(analysis.margin)} points): {family} headline "
        f"comparison{'s' if family != 1 else ''}, Holm-adjusted: "
        f"{e(tally(found, holm=True) or 'none')}; unadjusted: {e(tally(found) or 'none')}. "
        f"{total} comparisons in all (every metric and pair, in the tables below).</p>"
        f'<ul class="verdicts">{"".join(items)}</ul>{rules}'
    )


def _still_rising(analysis: agg.Analysis) -> str:
    """The still-rising rule's outcome for every cell, marked or not, with the rule."""
    table = analysis.convergence
    if table.empty:
        return '<p class="skipped">No per-epoch test R@1: the still-rising rule cannot run.</p>'
    ids = {
        cell: " ".join(part["run_id"])
        for cell, part in analysis.runs.groupby(["dataset", "method", "arm"])
    }
    rows = []
    for r in in_reading_order(table).itertuples():
        runs = e(ids[(r.dataset, r.method, r.arm)])  # the rule's cells come from these runs
        rows.append(
            f"<tr><td>{e(r.dataset)}</td><td>{e(cell_title(r.method, r.arm))}</td>"
            f'<td class="num" title="runs {runs}" data-runs="{runs}">'
            f'<a href="#run-{runs.split()[0]}">{r.rise:+.2f}</a></td>'
            f'<td class="num" title="runs {runs}" data-runs="{runs}">{r.n}</td>'
            f"<td>{convergence.STILL_RISING_MARK if r.still_rising else ''}</td></tr>"
        )
    rows = "".join(rows)
    return (
        f"<p><b>{e(convergence.status_line(table))}</b></p>"
        f'<table class="results"><thead><tr><th>Dataset</th><th>Method</th>'
        f"<th>rise over the last 20% of epochs (points, mean over seeds)</th><th>runs</th>"
        f"<th>{convergence.STILL_RISING_MARK}</th></tr></thead><tbody>{rows}</tbody></table>"
        f'<p class="note">{e(convergence.RULE)}</p>'
    )


def _rule(margin: float) -> str:
    return (
        f"<p><b>How the verdict is decided.</b> For every dataset and method the run of seed "
        f"<i>s</i> of one arm is paired with the run of seed <i>s</i> of the other, and "
        f"Δ = B − A gets its paired t 95% confidence interval. The equivalence margin is "
        f"δ = {margin_text(margin)} points (<code>stats.margin</code> in protocol.yaml, "
        f"<code>--margin</code> overrides it). <i>helps</i> / <i>hurts</i>: the interval "
        f"lies above / below 0. <i>equivalent</i>: the whole interval lies inside ±δ (two "
        f"one-sided tests at 2.5% each). <i>inconclusive</i>: anything else; the run cannot "
        f"tell a difference of δ from none, and the table's <i>seeds for ±δ</i> says how "
        f"many seed pairs would (at the observed spread). The headline comparisons (R@1, "
        f"each regularizer arm against its baseline) are also Holm-adjusted as one family "
        f"(<i>verdict (Holm)</i>). The percentile bootstrap is shown only from "
        f"{stats.BOOTSTRAP_MIN_PAIRS} pairs on; the Wilcoxon signed-rank p is shown but not "
        f"used: with n pairs it cannot go below 2/2<sup>n</sup>, i.e. never below 0.05 with 5 "
        f"or fewer seeds. docs/statistics.md has the formulas.</p>"
    )


def _policies_intro(analysis: agg.Analysis) -> str:
    rows = []
    for r in analysis.results:
        state = ("available" + (f"; {r.note}" if r.note else "")) if r.available else r.note
        rows.append(
            f"<tr><td>{e(r.policy.title)}</td><td>{e(r.policy.description)}</td>"
            f"<td>{e(state)}</td></tr>"
        )
    return (
        '<table class="plain"><thead><tr><th>policy</th><th>which epoch is reported</th>'
        f"<th>status</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _runs_section(runs: pd.DataFrame, epochs: pd.DataFrame, meta: dict) -> str:
    best = agg.select_epochs(epochs, agg.BEST_TEST) if "test/recall@1" in epochs else None
    best_epoch = dict(zip(best["run_id"], best["selected_epoch"])) if best is not None else {}
    head = (
        "<tr><th>run id</th><th>dataset</th><th>method</th><th>arm</th><th>seed</th>"
        "<th>epochs</th><th>last R@1</th><th>last MAP@R</th><th>best test epoch</th>"
        "<th>git sha</th><th>MLflow UI</th><th>reproduce</th></tr>"
    )
    rows = []
    order = sorted(
        range(len(runs)),
        key=lambda i: (
            agg.dataset_rank(runs["dataset"].iloc[i]),
            agg.method_rank(runs["method"].iloc[i]),
            agg.arm_order(runs["arm"].iloc[i]),
            runs["seed"].iloc[i],
        ),
    )
    # Records, not itertuples: metric names such as 'recall@1' are not Python identifiers.
    for row in runs.iloc[order].to_dict("records"):
        run_id = row["run_id"]
        url = UI_URL.format(
            experiment_id=row.get("experiment_id") or meta.get("experiment_id"), run_id=run_id
        )
        values = [agg.fmt(row.get(m, float("nan")), m) for m in ("recall@1", "map@r")]
        sha = str(row.get("git_sha", ""))
        dirty = " (dirty)" if str(row.get("git_dirty", "")) == "true" else ""
        rows.append(
            f'<tr id="run-{e(run_id)}"><td><code>{e(run_id)}</code></td>'
            f"<td>{e(row['dataset'])}</td><td>{e(row['method'])}</td>"
            f"<td>{e(row['arm'])}</td><td>{row['seed']}</td>"
            f"<td>{row.get('epochs', '')}</td>"
            + "".join(f'<td class="num" title="run {e(run_id)}">{v}</td>' for v in values)
            + f"<td>{best_epoch.get(run_id, '–')}</td><td><code>{e(sha[:10])}</code>{dirty}</td>"
            f'<td><a href="{e(url)}">open</a></td>'
            f"<td><code>{e(str(row.get('reproduce', '')))}</code></td></tr>"
        )
    return (
        f'<table class="plain" id="runs-table"><thead>{head}</thead><tbody>{"".join(rows)}'
        f'</tbody></table><p class="note">MLflow UI links work while <code>nirbench ui '
        f"--start</code> (or the command in the provenance section) serves this store; the "
        f"pattern is <code>{e(UI_URL)}</code>.</p>"
    )


def _numerics(runs: pd.DataFrame) -> str:
    """The distinct values of the runs' numerics tags (harness/train/numerics.py): CPU results are
    bitwise reproducible only for one ATen kernel set and thread count, so runs that differ here
    differ like another seed would."""
    from nirbench.harness.results.frames import numerics_values

    values = numerics_values(runs)
    if not values:
        return "<p>No run recorded its numerics tags (runs of nirbench before issue 23).</p>"
    rows = "".join(
        f"<tr><td><code>{e(tag)}</code></td><td>"
        + "<br>".join(f"<code>{e(v or '(empty)')}</code>: {n} run(s)" for v, n in pairs)
        + "</td></tr>"
        for tag, pairs in values.items()
    )
    return (
        '<table class="plain"><thead><tr><th>tag</th><th>values over the reported runs</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>"
        '<p class="note">CPU results are bitwise reproducible only for one ATen kernel set '
        "(<code>numerics.cpu_capability</code>) and one thread count; across machines they "
        "move like another seed.</p>"
    )


def _provenance(
    runs: pd.DataFrame, meta: dict, results_dir: Path, command: str, studies: list[Path]
) -> str:
    analysis_margin = meta.get("stats_margin", stats.DEFAULT_MARGIN)
    from nirbench.dashboards.mlflow_ui import ui_command
    from nirbench.harness.tracking.store import git_state

    sha, dirty = git_state()
    shas = runs.groupby(["git_sha", "git_dirty"]).size() if "git_dirty" in runs else pd.Series()
    sha_items = "".join(
        f"<li><code>{e(s)}</code>{' (uncommitted changes)' if d == 'true' else ''}: {n} run(s)</li>"
        for (s, d), n in shas.items()
    )
    commands = runs["command"].value_counts() if "command" in runs else pd.Series()
    command_items = "".join(
        f"<li><code>{e(c or '(not recorded)')}</code>: {n} run(s)</li>" for c, n in commands.items()
    )
    envs = []
    for env_id, env in sorted(meta.get("environments", {}).items()):
        n = int((runs.get("environment_id") == env_id).sum())
        packages = ", ".join(f"{k} {v}" for k, v in sorted(env.get("packages", {}).items()))
        gpus = ", ".join(env.get("gpus") or []) or "none"
        hardware = (
            f"{env.get('processor', '')}, {env.get('cpu_count', '?')} CPUs, "
            f"{env.get('torch_threads', '?')} torch threads"
        )
        cells = [env.get("python", ""), env.get("platform", ""), hardware, gpus, packages]
        envs.append(
            f"<tr><td><code>{e(env_id)}</code></td><td>{n}</td>"
            + "".join(f"<td>{e(str(c))}</td>" for c in cells)
            + "</tr>"
        )
    numerics_html = _numerics(runs)
    missing = meta.get("runs_without_environment") or []
    env_table = (
        '<table class="plain"><thead><tr><th>environment</th><th>runs</th><th>python</th>'
        "<th>platform</th><th>hardware</th><th>GPUs</th><th>packages</th></tr></thead>"
        f"<tbody>{''.join(envs)}</tbody></table>"
        if envs
        else "<p>No run logged an <code>environment.json</code> artifact.</p>"
    )
    if missing:
        links = " ".join(f'<a href="#run-{e(r)}">{e(r[:8])}</a>' for r in missing)
        env_table += f'<p class="note">No environment.json for {len(missing)} run(s): {links}</p>'
    ui = " ".join(shlex.quote(a) for a in ui_command(results_dir))
    here = f"<code>{e(sha)}</code>" + (" (uncommitted changes)" if dirty == "true" else "")
    tables_cmd = e(meta.get("command") or "nirbench aggregate")
    created = e(str(meta.get("created_utc", "?")))
    store = e(str(meta.get("tracking_uri", "?")))
    experiment, grid = e(str(meta.get("experiment_id", "?"))), e(str(meta.get("grid")))
    studies_text = e(", ".join(str(p) for p in studies) or "none")
    return f"""
<h3>Code</h3>
<ul><li>runs were produced by: <ul>{sha_items or "<li>(no git_sha tag)</li>"}</ul></li>
<li>this report was built from {here}</li></ul>
<h3>Commands</h3>
<ul>{command_items or "<li>(no command tag)</li>"}
<li>tables: <code>{tables_cmd}</code> at {created}</li>
<li>this report: <code>{e(command or "nirbench report")}</code></li>
<li>each run's exact reproduction command: runs table, tag <code>reproduce</code></li></ul>
<h3>Environment and hardware</h3>
{env_table}
<h3>Numerics</h3>
{numerics_html}
<h3>Tracking</h3>
<ul><li>MLflow store: <code>{store}</code>, experiment id <code>{experiment}</code>,
grid <code>{grid}</code></li>
<li>open it: <code>{e(ui)}</code>, then <code>http://127.0.0.1:5000</code></li>
<li>verdict margin δ = {margin_text(analysis_margin)} points
({e(str(meta.get("stats_margin_source", "default")))}); bootstrap (from
{stats.BOOTSTRAP_MIN_PAIRS} pairs on): {meta.get("bootstrap_resamples")} resamples, seed
{meta.get("bootstrap_seed")};
Optuna studies: {studies_text}</li></ul>"""


def _datasets(runs: pd.DataFrame) -> str:
    return ", ".join(sorted(runs["dataset"].unique(), key=agg.dataset_rank))


def _body(
    analysis: agg.Analysis,
    meta: dict,
    drawn: dict,
    results_dir: Path,
    out_dir: Path,
    command: str,
    studies: list[Path],
    marks: agg.Marks,
) -> str:
    n_runs = len(analysis.runs)
    parts = [
        f"<h1>{e(_title(meta))}</h1>",
        f'<p class="subtitle">Does Non-isotropy Regularization (NIR, CVPR 2022) improve '
        f"proxy-based deep metric learning? {n_runs} finished runs, datasets "
        f"{e(_datasets(analysis.runs))}. "
        f"Tables built {e(str(meta.get('created_utc', '?')))}. Every number links to its "
        f"MLflow run(s) (hover for the run ids, click for the run list).</p>",
    ]
    last = analysis.policy(agg.LAST.name)
    last_tables = agg.layouts(last, n_runs, analysis.grid, marks)
    sections = [
        ("summary", "Summary"),
        ("comparison", "Arm comparisons"),
        ("attribution", "Attribution ladder"),
        ("activity", "NIR activity"),
        ("convergence", "Convergence"),
        ("all-metrics", "All metrics"),
        ("selection", "Other model-selection policies"),
        ("published", "Published vs reproduced"),
        ("structure", "Embedding structure"),
        ("tuning", "Tuning"),
        ("runs", "Runs"),
        ("provenance", "Provenance"),
    ]
    parts.append(
        '<nav class="toc"><ol>'
        + "".join(f'<li><a href="#{k}">{e(t)}</a></li>' for k, t in sections)
        + "</ol></nav>"
    )

    parts += ['<h2 id="summary">Summary</h2>', _headline(analysis, marks)]
    parts += [_figure(x, out_dir) for x in drawn.get(f"forest-{agg.LAST.name}", [])]
    parts += [_rule(analysis.margin), _tables(last_tables["table1"])]
    parts += ['<h2 id="comparison">Arm comparisons, paired by seed</h2>']
    for result in analysis.results:
        if not result.available:
            continue
        tables = agg.layouts(result, n_runs, analysis.grid, marks)["comparison"]
        parts.append(f"<h3>{e(result.policy.title.capitalize())}</h3>")
        parts.append(_tables(tables) if tables else "<p>No two arms to compare.</p>")
        if result.policy is not agg.LAST:
            parts += [_figure(x, out_dir) for x in drawn.get(f"forest-{result.policy.name}", [])]
    parts += ['<h2 id="attribution">Attribution ladder</h2>']
    parts.append(
        _tables(last_tables["ladder"])
        if last_tables["ladder"]
        else '<p class="skipped">Not run: no grid here ran the control arm '
        "(<code>regularizer: {name: nir, flow: false}</code>) next to its baseline and "
        "NIR arms; <code>harness/configs/grids/attribution.yaml</code> does.</p>"
    )
    parts += ['<h2 id="activity">NIR activity</h2>']
    parts += [_figure(x, out_dir) for x in drawn["activity"]]
    parts += ['<h2 id="convergence">Convergence</h2>', _still_rising(analysis)]
    parts += [_figure(x, out_dir) for x in drawn["convergence"]]
    parts += [
        '<h2 id="all-metrics">All metrics (last epoch)</h2>',
        _tables(last_tables["extended"]),
    ]

    parts += ['<h2 id="selection">Other model-selection policies</h2>', _policies_intro(analysis)]
    for result in analysis.results:
        if result.policy is agg.LAST:
            continue
        parts.append(f'<div class="policy"><h3>{e(result.policy.title.capitalize())}</h3>')
        if result.available:
            tables = agg.layouts(result, n_runs, analysis.grid, marks)
            parts += [_tables(tables["table1"]), _tables(tables["extended"])]
        else:
            parts.append(f'<p class="skipped">{e(result.note)}.</p>')
        parts.append("</div>")

    parts.append('<h2 id="published">Published vs reproduced</h2>')
    shown = False
    for result in analysis.results:
        if result.available and not result.published.empty:
            shown = True
            parts.append(f"<h3>{e(result.policy.title.capitalize())}</h3>")
            parts.append(_tables(agg.layouts(result, n_runs, analysis.grid)["published"]))
    if not shown:
        parts.append(
            f'<p class="skipped">Not applicable: the paper reports '
            f"{e(', '.join(published.DATASETS))}; these runs use "
            f"{e(_datasets(analysis.runs))}.</p>"
        )
    parts += ['<h2 id="structure">Embedding structure</h2>']
    parts += [_figure(x, out_dir) for x in drawn["structure"]]
    parts += ['<h2 id="tuning">Tuning</h2>']
    parts += [_figure(x, out_dir) for x in drawn["tuning"]]
    parts += ['<h2 id="runs">Runs</h2>', _runs_section(analysis.runs, analysis.epochs, meta)]
    parts += [
        '<h2 id="provenance">Provenance</h2>',
        _provenance(analysis.runs, meta, results_dir, command, studies),
    ]
    return "\n".join(parts)


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])


__all__ = ["Report", "build_report", "find_studies", "command_line", "UI_URL"]
